"""Receiver fuzzing, shared by tests/reliability/test_fuzz_receivers.py and bench/fuzz/run.py.

Requests are made for one webhook route at a time from two sources: Hypothesis strategies
(arbitrary JSON, text, header values and bytes, drawn into pools once, with a fixed seed) and
mutations of the real published payloads under ../shared/fixtures/webhooks (byte flips,
truncation, deleted fields, changed types, huge values, unicode, NUL, deep nesting,
form-encoding), then signed well or badly and sent with mutated headers. A fraction carries a
VALID signature over the mutated body, so the parsing after verification is fuzzed too.

The requests go straight into the real ASGI app (create_app over a runtime on a SQLite file,
or a PostgreSQL database): no HTTP client, no sockets, many requests in flight at once so the
group-commit writer works as in production. Header names arrive lower-case, as every ASGI
server passes them, so "case-changed" headers change the case of values (hex signatures, event
names, content types). After each batch the rows written since the previous batch are checked
against the answers; `Harness.finish` checks the totals with one query.

What counts as a violation:
- an answer outside the contract (200, 202, 400, 401, 404, 413, 503) or an exception;
- a 503 (the database is up for the whole run: a 503 would tell the forge to retry for ever);
- a 2xx for a request that carries no valid signature/token (see `carries_valid_credential`);
- a row that no 2xx answer of a validly signed request in its batch accounts for, a build
  without its delivery, job or three opening stage events, a 202 without its build.
"""

from __future__ import annotations

import asyncio
import copy
import hmac
import json
import random
import tempfile
import time
import traceback
from collections import Counter, deque
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, quote_from_bytes

import orjson
import sqlalchemy as sa
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import seed as hypothesis_seed
from hypothesis import strategies as st
from starlette.types import ASGIApp, Message

from service.app import create_app
from service.forges import WebhookError
from service.webhooks import FORGES
from tests.conftest import SECRET, SHARED
from tests.service import gitea_payloads
from tests.service.forge_kits import KITS, REPO, Kit
from trainhook.db import make_engine, upgrade
from trainhook.runtime import Runtime, build_runtime
from trainhook.settings import load_settings

PROVIDERS = ("github", "gitlab", "gitea", "forgejo")
KIT: dict[str, Kit] = {k.route: k for k in KITS}
CONTRACT = frozenset({200, 202, 400, 401, 404, 413, 503})
FORM = gitea_payloads.FORM
JSON_TYPE = "application/json"
FIXTURES = SHARED / "fixtures" / "webhooks"
# Small enough that huge values cross it now and then (413), far above any real payload.
BODY_LIMIT = 256 * 1024
SECRET_ENV = "FUZZ_WEBHOOK_SECRET"
ANY_BRANCH = "octo-org/any-branch"  # branches = ["*"], no path filters
NO_SECRET = "octo-org/no-secret"  # its secret variable is unset: always 401
UNKNOWN = "someone/else"  # not configured: 404

REFS = (
    "refs/heads/main",
    "refs/heads/release/2.0",
    "refs/heads/feature/x",
    "refs/tags/v1.2",
    "refs/tags/nightly",
    "refs/pull/1/head",
    "main",
    "",
)
# Listed as changed by a push; the main repository builds for src/** and data/** only. The
# NUL and the very long name are no git paths (a forged, though signed, list).
FILES = (
    "src/app.py",
    "data/train.csv",
    "README.md",
    "docs/guide.md",
    "notes.md",
    "a/b/c.txt",
    "docs/\x00.md",
    "d" * 5000 + ".md",
)
CONTENT_TYPES = (
    "text/plain",
    "application/json; charset=utf-8",
    "APPLICATION/JSON",
    FORM,
    "multipart/form-data; boundary=x",
    "application/xml",
    "",
    ";",
    " application/json ",
)
CONTENT_LENGTHS = ("0", "-1", "1e3", " 12", "99999999999999", "²", "٣", "9" * 5000, "0x10")


# --- what Hypothesis contributes ------------------------------------------------------------

JSON_VALUES: st.SearchStrategy[Any] = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**63), max_value=2**64 - 1)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=40),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=10), inner),
    max_leaves=12,
)
TEXTS = st.text(max_size=80)
HEADER_VALUES = st.binary(max_size=80)
RAW_BODIES = st.binary(max_size=600)


@dataclass(frozen=True)
class Pools:
    """Values drawn from the Hypothesis strategies above; the generator picks among them."""

    json_values: Sequence[Any]
    texts: Sequence[str]
    header_values: Sequence[bytes]
    raw_bodies: Sequence[bytes]


def draw_pools(size: int, seed: int = 0) -> Pools:
    """`size` examples of each strategy, the same ones for the same seed.

    Drawing each of 100,000 requests from Hypothesis would cost more than sending it; a pool
    keeps Hypothesis's choice of edge cases (unicode, empty, huge ints, nesting) and the
    generator recombines them cheaply.
    """
    drawn: list[tuple[Any, str, bytes, bytes]] = []

    @hypothesis_seed(seed)
    @settings(
        max_examples=size,
        database=None,
        deadline=None,
        phases=[Phase.generate],
        suppress_health_check=list(HealthCheck),
    )
    @given(JSON_VALUES, TEXTS, HEADER_VALUES, RAW_BODIES)
    def collect(value: Any, text: str, header: bytes, raw: bytes) -> None:
        drawn.append((value, text, header, raw))

    collect()
    return Pools(*(tuple(column) for column in zip(*drawn, strict=True)))


# --- the published payloads -----------------------------------------------------------------


@dataclass(frozen=True)
class Fixture:
    payload: Any
    event: str
    repo: str  # the repository it names, configured for the route


def load_fixtures(provider: str, folder: Path = FIXTURES) -> tuple[Fixture, ...]:
    """The route's published payloads, each with its event; () when ../shared is absent."""
    kit = KIT[provider]
    directory = folder / kit.folder
    if not directory.is_dir():
        return ()
    seen: set[tuple[str, str]] = set()
    found = []
    for item in kit.fixtures:
        if (item.filename, item.event) in seen:
            continue
        seen.add((item.filename, item.event))
        payload = json.loads((directory / item.filename).read_bytes())
        try:
            repo = FORGES[provider].repo_name(payload)
        except WebhookError:
            repo = REPO  # an organization hook names none: refused, whatever it is given
        found.append(Fixture(payload, item.event, repo))
    return tuple(found)


# --- one request ----------------------------------------------------------------------------

Headers = tuple[tuple[bytes, bytes], ...]


@dataclass(frozen=True)
class Case:
    """One request to `/webhooks/<provider>` and how it is sent."""

    provider: str
    headers: Headers  # as an ASGI server passes them: names lower-case, values raw bytes
    body: bytes
    chunk: int = 0  # body sent in pieces of this many bytes (0: one message)
    disconnect: bool = False  # the client goes away before the body ends
    origin: str = ""  # which generator made it, for the statistics and the reproducer
    signed: bool = field(init=False)  # carries a valid signature/token for this body

    def __post_init__(self) -> None:
        valid = carries_valid_credential(self.provider, self.headers, self.body)
        object.__setattr__(self, "signed", valid)

    def reproducer(self, limit: int = 100_000) -> str:
        body = repr(self.body) if len(self.body) <= limit else repr(self.body[:limit]) + " …"
        lines = [
            f"provider: {self.provider}   (POST /webhooks/{self.provider}, origin {self.origin},"
            f" chunk {self.chunk}, disconnect {self.disconnect}, valid signature {self.signed})",
            "headers: [",
            *(f"    ({name!r}, {value!r})," for name, value in self.headers),
            "]",
            f"body ({len(self.body)} bytes): {body}",
        ]
        return "\n".join(lines)


def _values(headers: Headers, *names: bytes) -> list[bytes]:
    return [value for name, value in headers if name in names]


def _hmac(content: bytes) -> str:
    return hmac.digest(SECRET.encode(), content, "sha256").hex()


def carries_valid_credential(provider: str, headers: Headers, body: bytes) -> bool:
    """The oracle: does the request carry the right signature (or token) for its body?

    Written from the forges' documentation, not from service/: GitHub signs the raw body
    (`sha256=<hex>`), Gitea and Forgejo the raw body or the JSON in a form's `payload` field
    (bare hex, either fork's header), GitLab sends the secret itself. Lenient where the service
    is (any copy of the header, whitespace and hex case for Gitea): a request this says is
    unsigned must never get a 2xx.
    """
    if provider == "gitlab":
        return SECRET.encode() in _values(headers, b"x-gitlab-token")
    if provider == "github":
        return ("sha256=" + _hmac(body)).encode() in _values(headers, b"x-hub-signature-256")
    expected = {_hmac(body)}
    try:  # the slow part: only for bodies the service reads at all
        form = (
            parse_qs(body.decode("ascii"), strict_parsing=True) if len(body) <= BODY_LIMIT else {}
        )
        if len(form.get("payload", ())) == 1:
            expected.add(_hmac(form["payload"][0].encode()))
    except (UnicodeDecodeError, ValueError):
        pass
    sent = _values(headers, b"x-gitea-signature", b"x-forgejo-signature")
    return any(value.decode("latin-1").strip().lower() in expected for value in sent)


# --- the generator --------------------------------------------------------------------------


class Generator:
    """Requests for one route: `case()` makes the next one from `rng`, `pools` and `fixtures`."""

    def __init__(
        self,
        provider: str,
        pools: Pools,
        fixtures: Sequence[Fixture] = (),
        rng: random.Random | None = None,
        *,
        generated: bool = True,
    ) -> None:
        self.provider = provider
        self.kit = KIT[provider]
        self.pools = pools
        self.fixtures = tuple(fixtures)
        self.rng = rng or random.Random(0)
        self.generated = generated  # False: only mutations of the published payloads
        self.serial = 0
        self.sent: list[Case] = []  # a few validly signed cases, to redeliver
        if not generated and not self.fixtures:
            raise ValueError("no fixtures to mutate and generated requests are off")

    # small pickers
    def chance(self, p: float) -> bool:
        return self.rng.random() < p

    def text(self) -> str:
        return self.rng.choice(self.pools.texts)

    def repo(self) -> str:
        r = self.rng.random()
        if r < 0.62:
            return REPO
        if r < 0.77:
            return ANY_BRANCH
        if r < 0.82:
            return NO_SECRET
        if r < 0.87:
            return UNKNOWN
        if r < 0.92 and self.fixtures:
            return self.rng.choice(self.fixtures).repo
        return self.text()

    def sha(self) -> str:
        r = self.rng.random()
        if r < 0.8:
            return f"{self.rng.getrandbits(160):040x}"
        return self.rng.choice(
            ("0" * 40, f"{self.rng.getrandbits(256):064x}", "not-a-sha", "ABCDEF" * 7, "")
        )

    def ref(self) -> str:
        return self.rng.choice(REFS) if self.chance(0.9) else self.text()

    def huge(self) -> str:
        # Around the body limit once serialized: some pass (huge fields are parsed), some 413.
        unit = self.rng.choice(("x", "é", "\x00", "😀", "\\", '"', self.text() or "y"))
        return unit * (self.rng.randint(2_000, 150_000) // max(1, len(unit.encode())))

    def odd_value(self) -> Any:
        """A value of the wrong type, size or content for whatever field it replaces."""
        r = self.rng.random()
        if r < 0.35:
            return clone(self.rng.choice(self.pools.json_values))
        if r < 0.55:
            return self.text()
        if r < 0.57:
            return self.huge()
        if r < 0.70:
            return self.rng.choice(
                (None, True, False, 0, -1, 2**63, 10**30, 1.5, -0.0, "", [], {}, "\x00")
            )
        if r < 0.80:
            return self.text() + "\x00" + self.text()
        if r < 0.90:
            return clone([self.rng.choice(self.pools.json_values) for _ in range(5)])
        return "@@NEST@@"  # replaced by deeply nested raw JSON once serialized

    # payloads
    def push(self) -> tuple[Any, str]:
        kit = self.kit
        ref = self.ref()
        name = self.repo()
        payload = kit.push(
            ref=ref,
            after=self.sha(),
            repo=name if "/" in name else REPO,
            message=self.text(),
            author=self.text(),
        )
        if "/" not in name:  # the builders split the name; set it afterwards
            self.rename(payload, name)
        if self.chance(0.4):
            self.list_files(payload)
        tag = ref.startswith("refs/tags/")
        return payload, kit.tag_event if tag and self.chance(0.9) else kit.push_event

    def list_files(self, payload: dict[str, Any]) -> None:
        """Commits listing their files, complete or not: the service's path-filter shortcut."""
        commits = []
        for _ in range(self.rng.randint(1, 3)):
            files = [self.rng.choice(FILES) if self.chance(0.9) else self.text() for _ in range(3)]
            commits.append(
                {
                    "id": self.sha(),
                    "message": self.text(),
                    "added": files[:1],
                    "removed": files[1:2],
                    "modified": files[2:],
                }
            )
        payload["commits"] = commits
        payload["before"] = f"{self.rng.getrandbits(160):040x}"
        count = len(commits) if self.chance(0.8) else self.rng.choice((0, 99, "3", None))
        payload.update({"forced": False, "total_commits_count": count, "total_commits": count})

    @staticmethod
    def rename(payload: dict[str, Any], name: str) -> None:
        for key in ("repository", "project"):
            if isinstance(payload.get(key), dict):
                payload[key] = {**payload[key], "full_name": name, "path_with_namespace": name}

    def other_event(self) -> tuple[Any, str]:
        event, build = self.rng.choice(self.kit.ignorable)
        payload = build()
        if self.chance(0.5) and isinstance(payload, dict):
            self.rename(payload, self.repo())
        return payload, event if self.chance(0.85) else self.text()

    def hypothesis_payload(self) -> tuple[Any, str]:
        value = clone(self.rng.choice(self.pools.json_values))
        if self.chance(0.6):
            # Name a configured repository, so that the value gets past the secret lookup.
            name = self.repo()
            value = dict(value) if isinstance(value, dict) else {"value": value}
            value["repository"] = {"full_name": name}
            value["project"] = {"path_with_namespace": name}
            for key in ("ref", "after", "before", "checkout_sha"):
                if self.chance(0.5):
                    value[key] = self.rng.choice((self.ref(), self.sha(), self.odd_value()))
        return value, self.kit.push_event if self.chance(0.7) else self.text()

    # mutations
    def mutate_json(self, payload: Any) -> Any:
        """A copy of `payload` with 1-3 fields deleted, retyped, blown up or added."""
        payload = clone(payload)
        for _ in range(self.rng.randint(1, 3)):
            node, key = self.walk(payload)
            if node is None:
                payload = self.odd_value() if self.chance(0.3) else {"wrapped": payload}
                continue
            op = self.rng.random()
            if op < 0.3 and key is not None and isinstance(node, dict):
                del node[key]
            elif op < 0.85 and key is not None:
                node[key] = self.odd_value()
            elif isinstance(node, dict):
                node[self.text()] = self.odd_value()
            elif isinstance(node, list):
                node.append(self.odd_value())
        return payload

    def walk(self, payload: Any) -> tuple[Any, Any]:
        """A random (container, key) inside `payload`; (None, None) for the top itself."""
        if not isinstance(payload, dict | list) or not payload or self.chance(0.05):
            return None, None
        node: Any = payload
        while True:
            key = (
                self.rng.choice(list(node))
                if isinstance(node, dict)
                else (self.rng.randrange(len(node)))
            )
            child = node[key]
            if isinstance(child, dict | list) and child and self.chance(0.6):
                node = child
                continue
            return node, key

    def nested(self) -> bytes:
        depth = self.rng.choice((10, 500, 1023, 1024, 1025, 3000, 20_000))
        opener, closer = (b"[", b"]") if self.chance(0.5) else (b'{"a":', b"}")
        return opener * depth + b"1" + closer * depth

    def mutate_bytes(self, raw: bytes) -> bytes:
        data = bytearray(raw)
        op = self.rng.random()
        if op < 0.35 and data:
            for _ in range(self.rng.randint(1, 8)):
                data[self.rng.randrange(len(data))] ^= 1 << self.rng.randrange(8)
        elif op < 0.6:
            del data[self.rng.randint(0, len(data)) :]
        elif op < 0.75 and data:
            at = self.rng.randrange(len(data))
            data[at:at] = self.rng.choice(self.pools.raw_bodies)
        elif op < 0.85:
            data[0:0] = self.rng.choice((b"\xef\xbb\xbf", b" \n\t", b"\x00", b"\xff\xfe"))
        elif op < 0.95 and data:
            at = self.rng.randrange(len(data))
            data[at:at] = data[: self.rng.randrange(len(data))]  # a slice repeated
        else:
            return self.rng.choice(self.pools.raw_bodies)
        return bytes(data)

    def form(self, content: bytes) -> bytes:
        raw = b"payload=" + quote_from_bytes(content, safe=b"").encode()
        r = self.rng.random()
        if r < 0.1:
            return raw + b"&payload=" + quote_from_bytes(content[:10]).encode()
        if r < 0.15:
            return b"other=1&" + raw
        if r < 0.2:
            return raw.replace(b"%", b"%z", 1)
        if r < 0.25:
            return b"payload=" + content  # not url-encoded at all
        return raw

    # the request
    def payload(self) -> tuple[Any, str, str]:
        """(payload, event, origin): a generated or a published payload, maybe mutated."""
        r = self.rng.random()
        if self.fixtures and (not self.generated or r < 0.3):
            fixture = self.rng.choice(self.fixtures)
            payload, event = fixture.payload, fixture.event
            if self.chance(0.15):
                event = self.rng.choice((self.kit.push_event, self.text()))
            if self.chance(0.7):
                return self.mutate_json(payload), event, "fixture-mutated"
            return payload, event, "fixture"
        if r < 0.75:
            payload, event = self.push()
            origin = "push"
        elif r < 0.85:
            payload, event = self.other_event()
            origin = "event"
        else:
            payload, event = self.hypothesis_payload()
            origin = "hypothesis-json"
        if self.chance(0.5):
            return self.mutate_json(payload), event, origin + "-mutated"
        return payload, event, origin

    def serialize(self, payload: Any) -> bytes:
        try:
            if self.chance(0.1):
                raise TypeError("another spelling")
            raw = orjson.dumps(payload)
        except TypeError:  # escaped unicode, spaces, integers beyond 64 bits
            raw = json.dumps(payload, ensure_ascii=self.chance(0.5), indent=2).encode()
        if b'"@@NEST@@"' in raw:
            raw = raw.replace(b'"@@NEST@@"', self.nested(), 1)
        return raw

    def case(self) -> Case:
        """The next request."""
        if self.sent and self.chance(0.01):
            # A redelivery of an earlier validly signed request: duplicate or ignored.
            again = self.rng.choice(self.sent)
            return Case(self.provider, again.headers, again.body, origin="redelivery")
        self.serial += 1
        delivery = f"fuzz-{self.provider}-{self.serial}"
        if self.generated and self.chance(0.04):
            content, event, origin = self.rng.choice(self.pools.raw_bodies), self.text(), "raw"
        else:
            payload, event, origin = self.payload()
            content = self.serialize(payload)
        stale = content
        if self.chance(0.12):
            content = self.mutate_bytes(content)
            origin += "+bytes"
        # Form-encoding is slow to make (and to parse) for big bodies: small ones only.
        form = len(content) < 20_000 and (
            (self.provider != "gitlab" and self.chance(0.12)) or self.chance(0.01)
        )
        body = self.form(content) if form else content
        # Sign as the forge would, over what the forge signs: the body, or for Gitea's form
        # the JSON inside it (GitHub signs the form body itself).
        gitea = self.provider in ("gitea", "forgejo")
        signed_over = content if gitea and form else body
        mode = self.rng.choices(
            ("valid", "stale", "wrong-secret", "missing", "garbage", "empty", "foreign", "case"),
            weights=(50, 8, 8, 10, 10, 4, 5, 5),
        )[0]
        secret = "not the secret" if mode == "wrong-secret" else SECRET
        if mode == "stale":
            signed_over = stale  # signed before the bytes were mutated
        _, named = self.kit.sign(signed_over, event=event, delivery=delivery, secret=secret)
        named["Content-Type"] = FORM if form else JSON_TYPE
        headers = [(k.lower().encode(), _latin1(v)) for k, v in named.items()]
        headers = self.sign_badly(mode, headers, body)
        if self.chance(0.35):
            for _ in range(self.rng.randint(1, 3)):
                headers = self.mutate_headers(headers)
        chunk = 0
        if self.chance(0.05):  # in pieces, at most ~64 of them
            chunk = max(self.rng.choice((1, 7, 100, 4096)), len(body) // 64)
        disconnect = self.chance(0.005)
        case = Case(self.provider, tuple(headers), body, chunk, disconnect, f"{origin}/{mode}")
        if case.signed and len(self.sent) < 200 and self.chance(0.1):
            self.sent.append(case)
        return case

    def sign_badly(
        self, mode: str, headers: list[tuple[bytes, bytes]], body: bytes
    ) -> list[tuple[bytes, bytes]]:
        names = {n.lower().encode() for n in self.kit.signature_headers}
        if mode in ("valid", "stale", "wrong-secret"):
            return headers
        kept = [(k, v) for k, v in headers if k not in names]
        own = next(iter(sorted(names)))
        if mode == "missing":
            return kept
        if mode == "garbage":
            return [*kept, (own, self.rng.choice(self.pools.header_values))]
        if mode == "empty":
            return [*kept, (own, b"")]
        if mode == "case":
            return [(k, v.upper() if k in names else v) for k, v in headers]
        # foreign: another forge's valid signature header for this body, ours removed
        foreign = {
            b"x-hub-signature-256": ("sha256=" + _hmac(body)).encode(),
            b"x-gitea-signature": _hmac(body).encode(),
            b"x-gitlab-token": SECRET.encode(),
        }
        name = self.rng.choice([n for n in foreign if n not in names])
        return [*kept, (name, foreign[name])]

    def mutate_headers(self, headers: list[tuple[bytes, bytes]]) -> list[tuple[bytes, bytes]]:
        r = self.rng.random()
        if r < 0.2 and headers:
            del headers[self.rng.randrange(len(headers))]
        elif r < 0.35 and headers:
            name, value = self.rng.choice(headers)
            other = value if self.chance(0.5) else self.rng.choice(self.pools.header_values)
            headers.insert(self.rng.randint(0, len(headers)), (name, other))
        elif r < 0.5 and headers:
            at = self.rng.randrange(len(headers))
            name, value = headers[at]
            headers[at] = (name, value.swapcase() if self.chance(0.5) else value.upper())
        elif r < 0.65:
            headers = [(k, v) for k, v in headers if k != b"content-type"]
            headers.append((b"content-type", _latin1(self.rng.choice(CONTENT_TYPES))))
        elif r < 0.8 and headers:
            at = self.rng.randrange(len(headers))
            headers[at] = (headers[at][0], self.rng.choice(self.pools.header_values))
        elif r < 0.9:
            headers.append((b"content-length", self.rng.choice(CONTENT_LENGTHS).encode()))
        else:
            name = self.rng.choice(
                (
                    b"x-github-delivery",
                    b"x-github-event",
                    b"x-gitlab-event",
                    b"idempotency-key",
                    b"x-gitea-delivery",
                    b"x-forgejo-event",
                    b"x-github-hook-id",
                )
            )
            value = self.rng.choice((b"y" * 200, b"\x00", b"push", b"Push Hook", b"ping"))
            headers.append((name, value))
        return headers


def clone(value: Any) -> Any:
    """A deep copy: the pools are shared, and a mutation must never reach into them."""
    try:
        return orjson.loads(orjson.dumps(value))  # fast for the common case
    except TypeError:  # an integer beyond 64 bits
        return copy.deepcopy(value)


def _latin1(value: str) -> bytes:
    """A header value as bytes on the wire: latin-1 when it fits, else its UTF-8 bytes."""
    try:
        return value.encode("latin-1")
    except UnicodeEncodeError:
        return value.encode("utf-8")


# --- the app, called directly ---------------------------------------------------------------


@dataclass
class Outcome:
    status: int
    body: bytes
    error: str | None = None  # the traceback when the app raised

    @property
    def answer(self) -> Any:
        """The JSON answer (None when it is not JSON), parsed once."""
        if not hasattr(self, "_answer"):
            try:
                self._answer = orjson.loads(self.body)
            except orjson.JSONDecodeError:
                self._answer = None
        return self._answer


async def call(app: ASGIApp, case: Case) -> Outcome:
    """POST `case` to the app as an ASGI server would; the answer, or the exception."""
    path = f"/webhooks/{case.provider}"
    scope = {
        "type": "http",
        "asgi": {"version": "3.0", "spec_version": "2.3"},
        "http_version": "1.1",
        "method": "POST",
        "scheme": "http",
        "path": path,
        "raw_path": path.encode(),
        "query_string": b"",
        "root_path": "",
        "headers": list(case.headers),
        "client": ("127.0.0.1", 40000),
        "server": ("127.0.0.1", 8000),
        "state": {},
    }
    body = case.body
    step = case.chunk or max(1, len(body))
    pieces = [body[i : i + step] for i in range(0, len(body), step)] or [b""]
    if case.disconnect:
        pieces = pieces[: max(1, len(pieces) // 2)]
    messages: deque[Message] = deque(
        {"type": "http.request", "body": piece, "more_body": i < len(pieces) - 1}
        for i, piece in enumerate(pieces)
    )
    if case.disconnect:
        messages[-1]["more_body"] = True
        messages.append({"type": "http.disconnect"})

    async def receive() -> Message:
        # Once the body is read, the next message an ASGI server gives is the disconnect.
        return messages.popleft() if messages else {"type": "http.disconnect"}

    status, chunks = 0, []

    async def send(message: Message) -> None:
        nonlocal status
        if message["type"] == "http.response.start":
            status = message["status"]
        elif message["type"] == "http.response.body":
            chunks.append(message.get("body", b""))

    try:
        await app(scope, receive, send)
    except Exception:
        return Outcome(status or 500, b"".join(chunks), traceback.format_exc())
    return Outcome(status, b"".join(chunks))


class Lifespan:
    """The app's startup and shutdown, run over the ASGI lifespan protocol as a server does."""

    def __init__(self, app: ASGIApp, loop: asyncio.AbstractEventLoop) -> None:
        self.app, self.loop = app, loop
        self.inbox: asyncio.Queue[Message] = asyncio.Queue()
        self.started: asyncio.Future[Message] = loop.create_future()
        self.stopped: asyncio.Future[Message] = loop.create_future()

    async def _receive(self) -> Message:
        return await self.inbox.get()

    async def _send(self, message: Message) -> None:
        target = self.started if "startup" in message["type"] else self.stopped
        if not target.done():
            target.set_result(message)

    def start(self) -> None:
        scope = {"type": "lifespan", "asgi": {"version": "3.0"}, "state": {}}

        async def run() -> None:
            await self.app(scope, self._receive, self._send)

        self.task: asyncio.Task[None] = self.loop.create_task(run())
        self.inbox.put_nowait({"type": "lifespan.startup"})
        message = self.loop.run_until_complete(self.started)
        if message["type"] != "lifespan.startup.complete":
            raise RuntimeError(f"app startup failed: {message}")

    def stop(self) -> None:
        self.inbox.put_nowait({"type": "lifespan.shutdown"})
        self.loop.run_until_complete(self.stopped)
        self.loop.run_until_complete(self.task)


# --- the checks -----------------------------------------------------------------------------


@dataclass
class Violation:
    message: str
    case: Case | None = None
    outcome: Outcome | None = None

    def report(self) -> str:
        lines = [f"VIOLATION: {self.message}"]
        if self.outcome is not None:
            lines.append(f"answer: {self.outcome.status} {self.outcome.body[:500]!r}")
            if self.outcome.error:
                lines.append(self.outcome.error.rstrip())
        if self.case is not None:
            lines.append("reproducer:")
            lines.append(self.case.reproducer())
        return "\n".join(lines)


@dataclass
class Stats:
    """What one route got, for the bench output and the test's messages."""

    provider: str
    requests: int = 0
    signed: int = 0
    statuses: Counter[int] = field(default_factory=Counter)
    answers: Counter[str] = field(default_factory=Counter)  # 2xx answer kinds
    origins: Counter[str] = field(default_factory=Counter)
    rows: Counter[str] = field(default_factory=Counter)  # rows stored, per table
    violations: list[Violation] = field(default_factory=list)
    seconds: float = 0.0
    cpu_seconds: float = 0.0  # of the whole process (the writer thread included)

    @property
    def server_errors(self) -> int:
        return sum(n for code, n in self.statuses.items() if code >= 500)


def check_answer(case: Case, outcome: Outcome) -> str | None:
    """Why this answer breaks the contract, or None."""
    if outcome.error is not None:
        return "the app raised"
    if outcome.status not in CONTRACT:
        return f"status {outcome.status} is not a contract answer"
    if outcome.status == 503:
        return "503 while the database is up"
    answer = outcome.answer
    if not isinstance(answer, dict):
        return "the answer is not a JSON object"
    if outcome.status in (200, 202):
        if not case.signed:
            return "a 2xx for a request without a valid signature/token"
        expected = {202: ("queued",), 200: ("ignored", "duplicate")}[outcome.status]
        if answer.get("status") not in expected:
            return f"a {outcome.status} whose status is {answer.get('status')!r}"
        if answer["status"] != "ignored" and not isinstance(answer.get("build_id"), int):
            return "no build id in the answer"
    elif not isinstance(answer.get("error"), str) or not answer["error"]:
        return "a refusal without an error message"
    return None


TABLES = ("deliveries", "builds", "jobs", "stage_events")


class Harness:
    """One app, one runtime and one database for every route; many requests in flight.

    The database is a SQLite file in `workdir` unless `database_url` names another one
    (migrated and empty).
    """

    def __init__(
        self,
        workdir: Path,
        fixtures: Mapping[str, Sequence[Fixture]] | None = None,
        database_url: str | None = None,
    ) -> None:
        workdir.mkdir(parents=True, exist_ok=True)
        config = workdir / "trainhook.toml"
        config.write_text(repositories_file(fixtures or {}))
        db = database_url or f"sqlite:///{workdir / 'fuzz.db'}"
        if database_url is None:
            upgrade(db)
        env = {
            "TRAINHOOK_HOME": str(workdir / "home"),
            "TRAINHOOK_CONFIG": str(config),
            "TRAINHOOK_DATABASE_URL": db,
            "TRAINHOOK_BODY_LIMIT": str(BODY_LIMIT),
            SECRET_ENV: SECRET,
        }
        self.runtime: Runtime = build_runtime(load_settings(env), make_engine(db))
        self.app = create_app(self.runtime)
        self.loop = asyncio.new_event_loop()
        self.lifespan = Lifespan(self.app, self.loop)
        self.lifespan.start()
        self.last = dict.fromkeys(TABLES, 0)  # highest row id checked, per table
        # Rows the batch checks accounted for (ids may have gaps: a rolled-back insert on
        # PostgreSQL still uses up its sequence values).
        self.counted = dict.fromkeys(TABLES, 0)

    def send(self, cases: Sequence[Case]) -> list[Outcome]:
        """Every case in flight at once (the writer groups their commits); their answers."""

        async def all_of() -> list[Outcome]:
            return list(await asyncio.gather(*(call(self.app, c) for c in cases)))

        return self.loop.run_until_complete(all_of())

    def run(
        self,
        generator: Generator,
        count: int,
        stats: Stats,
        batch: int = 64,
        progress: Callable[[int], None] | None = None,
    ) -> Stats:
        """Send `count` requests from `generator` in batches, checking answers and rows."""
        done = 0
        while done < count:
            cases = [generator.case() for _ in range(min(batch, count - done))]
            outcomes = self.send(cases)
            self.account(cases, outcomes, stats)
            done += len(cases)
            if progress is not None:
                progress(done)
        return stats

    def account(self, cases: Sequence[Case], outcomes: Sequence[Outcome], stats: Stats) -> None:
        for case, outcome in zip(cases, outcomes, strict=True):
            stats.requests += 1
            stats.signed += case.signed
            stats.statuses[outcome.status] += 1
            stats.origins[case.origin.split("/")[0]] += 1
            problem = check_answer(case, outcome)
            if problem is not None:
                stats.violations.append(Violation(problem, case, outcome))
            elif outcome.status in (200, 202):
                stats.answers[outcome.answer["status"]] += 1
        stats.violations.extend(self.check_rows(cases, outcomes, stats))

    def check_rows(
        self, cases: Sequence[Case], outcomes: Sequence[Outcome], stats: Stats
    ) -> list[Violation]:
        """The rows written since the last check, against this batch's answers."""
        with self.runtime.engine.connect() as conn:
            top = conn.execute(
                sa.text(
                    "SELECT " + ", ".join(f"(SELECT coalesce(max(id), 0) FROM {t})" for t in TABLES)
                )
            ).one()
            tops = dict(zip(TABLES, top, strict=True))
            if tops == self.last:
                new = None
            else:
                new = {
                    "deliveries": conn.execute(
                        sa.text("SELECT id, provider, outcome, body FROM deliveries WHERE id > :i"),
                        {"i": self.last["deliveries"]},
                    ).all(),
                    "builds": conn.execute(
                        sa.text("SELECT id, delivery_id, provider FROM builds WHERE id > :i"),
                        {"i": self.last["builds"]},
                    ).all(),
                    "jobs": conn.execute(
                        sa.text("SELECT build_id FROM jobs WHERE id > :i"),
                        {"i": self.last["jobs"]},
                    ).all(),
                    "stage_events": conn.execute(
                        sa.text("SELECT build_id FROM stage_events WHERE id > :i"),
                        {"i": self.last["stage_events"]},
                    ).all(),
                }
        answered = [
            (case, outcome.answer)
            for case, outcome in zip(cases, outcomes, strict=True)
            if outcome.status in (200, 202) and outcome.error is None and case.signed
        ]
        queued = {a["build_id"]: c for c, a in answered if a.get("status") == "queued"}
        problems: list[Violation] = []
        if new is None:
            if queued:
                case = next(iter(queued.values()))
                problems.append(Violation("a 202 whose build was not stored", case))
            return problems
        for table in TABLES:
            stats.rows[table] += len(new[table])
            self.counted[table] += len(new[table])
        self.last = tops
        # Every new delivery is the body of a 2xx answer of a validly signed request.
        unclaimed = Counter((c.provider, c.body) for c, a in answered if a["status"] != "duplicate")
        for row in new["deliveries"]:
            key = (row.provider, bytes(row.body))
            if unclaimed[key] <= 0:
                culprit = next((c for c in cases if (c.provider, c.body) == key), None)
                problems.append(Violation("a stored delivery no 2xx answer accounts for", culprit))
            unclaimed[key] -= 1
        queued_deliveries = {r.id for r in new["deliveries"] if r.outcome == "queued"}
        builds = {r.id: r for r in new["builds"]}
        if set(builds) != set(queued):
            problems.append(
                Violation(f"new builds {sorted(builds)} are not the 202s {sorted(queued)}")
            )
        if {r.delivery_id for r in builds.values()} != queued_deliveries:
            problems.append(Violation("a queued delivery without its build, or the reverse"))
        jobs = Counter(r.build_id for r in new["jobs"])
        events = Counter(r.build_id for r in new["stage_events"])
        for build_id in builds:
            if jobs[build_id] != 1 or events[build_id] != 3:
                problems.append(
                    Violation(
                        f"build {build_id} has {jobs[build_id]} jobs, {events[build_id]} events",
                        queued.get(build_id),
                    )
                )
        if set(jobs) - set(builds) or set(events) - set(builds):
            problems.append(Violation("jobs or stage events for a build of an earlier batch"))
        return problems

    def finish(self) -> list[Violation]:
        """One query at the end: the totals are what the batch checks accounted for, and no
        build lacks its job or its delivery anywhere in the database."""
        with self.runtime.engine.connect() as conn:
            row = conn.execute(
                sa.text(
                    "SELECT (SELECT count(*) FROM deliveries), (SELECT count(*) FROM builds),"
                    " (SELECT count(*) FROM jobs), (SELECT count(*) FROM stage_events),"
                    " (SELECT count(*) FROM builds b WHERE NOT EXISTS"
                    "   (SELECT 1 FROM jobs j WHERE j.build_id = b.id)"
                    "   OR NOT EXISTS (SELECT 1 FROM deliveries d WHERE d.id = b.delivery_id"
                    "   AND d.outcome = 'queued')),"
                    " (SELECT count(*) FROM deliveries d WHERE d.outcome = 'queued' AND NOT EXISTS"
                    "   (SELECT 1 FROM builds b WHERE b.delivery_id = d.id))"
                )
            ).one()
        totals = dict(zip(TABLES, row[:4], strict=True))
        problems = []
        if totals != self.counted:
            problems.append(Violation(f"rows in the database {totals} != accounted {self.counted}"))
        if row[4] or row[5]:
            problems.append(
                Violation(
                    f"{row[4]} builds without job/delivery, {row[5]} queued "
                    "deliveries without build"
                )
            )
        return problems

    def close(self) -> None:
        self.lifespan.stop()
        self.loop.close()
        self.runtime.close()


def repositories_file(fixtures: Mapping[str, Sequence[Fixture]]) -> str:
    """Per route: the main repository with tags and path filters (so the payload's file lists
    are read), one building every branch, one whose secret is unset, and the repositories the
    published payloads name."""
    tables = []
    for provider in PROVIDERS:
        names = {f.repo for f in fixtures.get(provider, ())} - {REPO, ANY_BRANCH, NO_SECRET}
        repos: list[tuple[str, str]] = [
            (
                REPO,
                'branches = ["main", "release/*"]\ntags = ["v*"]\n'
                'paths = ["src/**", "data/**"]\npaths_ignore = ["**/*.md"]',
            ),
            (ANY_BRANCH, 'branches = ["*"]'),
            (NO_SECRET, 'branches = ["*"]\nsecret_env = "FUZZ_UNSET_SECRET"'),
            *((name, 'branches = ["*"]\ntags = ["*"]') for name in sorted(names)),
        ]
        for name, extra in repos:
            secret = "" if "secret_env" in extra else f'secret_env = "{SECRET_ENV}"\n'
            tables.append(
                f'[[repos]]\nname = {json.dumps(name)}\nprovider = "{provider}"\n'
                f'clone_url = "https://example.invalid/{name}.git"\n{secret}{extra}\n'
            )
    return "\n".join(tables)


def fuzz(
    harness: Harness,
    provider: str,
    count: int,
    pools: Pools,
    *,
    seed: int = 0,
    fixtures: Sequence[Fixture] = (),
    generated: bool = True,
    batch: int = 64,
    progress: Callable[[int], None] | None = None,
) -> Stats:
    """`count` requests to one route; their statistics and every violation found."""
    generator = Generator(
        provider, pools, fixtures, random.Random(f"{seed}-{provider}"), generated=generated
    )
    stats = Stats(provider)
    started, cpu = time.perf_counter(), time.process_time()
    harness.run(generator, count, stats, batch=batch, progress=progress)
    stats.seconds = time.perf_counter() - started
    stats.cpu_seconds = time.process_time() - cpu
    return stats


def fuzz_alone(provider: str, count: int, pools: Pools, seed: int = 0, batch: int = 64) -> Stats:
    """`fuzz` in a process of its own: its own app and SQLite file (in a temporary
    directory), the route's published payloads when present, the final totals checked.
    For running the routes side by side (one process each) on a machine with the cores."""
    with tempfile.TemporaryDirectory(prefix=f"trainhook-fuzz-{provider}-") as workdir:
        fixtures = load_fixtures(provider)
        harness = Harness(Path(workdir), {provider: fixtures})
        try:
            stats = fuzz(harness, provider, count, pools, seed=seed, fixtures=fixtures, batch=batch)
            stats.violations += harness.finish()
        finally:
            harness.close()
    del stats.violations[20:]  # enough to report; the rest would only be pickled
    return stats
