"""Secrets are compared in constant time, everywhere.

The static half reads the source of trainhook/, service/ and worker/: any `==`, `!=`, `in` or
`not in` whose operands name something secret-looking (secret, token, signature, digest,
password, credential, authorization...) fails the test unless it is on the commented
allowlist below; and every function that checks a credential calls `hmac.compare_digest`.
The behavioural half sends each check a wrong value of the right length, differing in its
first or its last character only (what a timing attack guesses one character at a time):
each is refused and nothing is stored."""

from __future__ import annotations

import ast
import json
import re
from pathlib import Path

import pytest

from service import access
from tests.conftest import REPO_ROOT
from tests.reliability.security_support import (
    API_TOKEN,
    HOOK_SECRETS,
    KITS,
    counts,
    forge_settings,
    same_length_wrong,
    serving,
)
from tests.service.forge_kits import SHA
from trainhook.apitokens import add_token

PACKAGES = ("trainhook", "service", "worker")
SECRETISH = re.compile(
    r"secret|token|signature|(?<![a-z])sig(?![a-z])|digest|hmac|password|passwd|credential"
    r"|api_?key|authori[sz]ation|bearer",
    re.IGNORECASE,
)
COMPARISONS = (ast.Eq, ast.NotEq, ast.In, ast.NotIn)

# (file, the comparison as ast.unparse writes it): why it is not a secret compared with input.
# A stale entry fails the test too, so the list cannot silently grow old.
ALLOWED = {
    # Header *names* are filtered out of what is stored; no secret value is compared.
    ("service/ingest.py", "k.lower() not in SECRET_HEADERS"),
    # Content digests of a model bundle the worker wrote itself: integrity, not authentication,
    # and both sides are the worker's own values.
    ("worker/local/release.py", "old.get('digest') == bundle.digest"),
    ("worker/local/release.py", "file_digest(target) == bundle.digest"),
    ("worker/local/release.py", "_unpacked_digest(target) != digest"),
    ("worker/local/release.py", "_unpacked_digest(target) == digest"),
    # Image digests the registry returned, against the one serving: public, not secrets.
    ("worker/container/release.py", "current.get('digest') == record['digest']"),
    ("trainhook/cli/releases.py", "r.get('digest') == current.get('digest')"),
    # An index probe on the SHA-256 of a presented token (a value no client can steer); the
    # row found is then compared with compare_digest.
    ("trainhook/apitokens.py", "PEOPLE.c.token_hash == digest"),
}
# Functions that check a credential sent by a client: each must use hmac.compare_digest.
CHECKERS = {
    ("service/forges/github.py", "verify"),
    ("service/forges/gitlab.py", "verify"),
    ("service/forges/gitea.py", "verify"),
    ("service/rebuild.py", "authorised"),
    ("service/access.py", "bearer"),
    ("service/access.py", "cookie"),
    ("service/access.py", "writer"),
    ("trainhook/apitokens.py", "find_token"),
}


def _words(node: ast.AST) -> list[str]:
    """Identifiers and string constants in `node`: what a reader would call its names."""
    found: list[str] = []
    for part in ast.walk(node):
        if isinstance(part, ast.Name):
            found.append(part.id)
        elif isinstance(part, ast.Attribute):
            found.append(part.attr)
        elif isinstance(part, ast.Constant) and isinstance(part.value, str):
            found.append(part.value)
        elif isinstance(part, ast.arg):
            found.append(part.arg)
    return found


def secret_comparisons() -> set[tuple[str, str]]:
    found: set[tuple[str, str]] = set()
    for package in PACKAGES:
        for path in sorted((REPO_ROOT / package).rglob("*.py")):
            tree = ast.parse(path.read_text(encoding="utf-8"), str(path))
            rel = path.relative_to(REPO_ROOT).as_posix()
            for node in ast.walk(tree):
                if not isinstance(node, ast.Compare):
                    continue
                if not any(isinstance(op, COMPARISONS) for op in node.ops):
                    continue
                if any(SECRETISH.search(word) for word in _words(node)):
                    found.add((rel, ast.unparse(node)))
    return found


def test_no_secret_is_compared_with_a_plain_operator():
    found = secret_comparisons()
    assert found - ALLOWED == set(), "compare these with hmac.compare_digest (or allowlist why)"
    assert ALLOWED - found == set(), "stale allowlist entries: remove them"


def test_the_scan_finds_a_plain_comparison_of_a_token():
    # The control: the scanner flags the mistake it exists for.
    tree = ast.parse("if request_token == settings.api_token:\n    pass\n")
    compare = next(n for n in ast.walk(tree) if isinstance(n, ast.Compare))
    assert any(SECRETISH.search(word) for word in _words(compare))


@pytest.mark.parametrize(("rel", "function"), sorted(CHECKERS))
def test_every_credential_check_uses_compare_digest(rel: str, function: str):
    tree = ast.parse((REPO_ROOT / rel).read_text(encoding="utf-8"))
    defs = [n for n in ast.walk(tree) if isinstance(n, ast.FunctionDef) and n.name == function]
    assert defs, f"{rel} has no function {function!r}"
    calls = [
        n.func
        for d in defs
        for n in ast.walk(d)
        if isinstance(n, ast.Call) and isinstance(n.func, ast.Attribute)
    ]
    assert any(
        f.attr == "compare_digest"
        and isinstance(f.value, ast.Name)
        and f.value.id in ("hmac", "secrets")
        for f in calls
    )


# --- behaviour: a wrong value of the right length is refused at every check ----------------


def _push(provider: str) -> tuple[bytes, dict[str, str]]:
    kit = KITS[provider]
    return kit.sign(kit.push(), secret=HOOK_SECRETS[provider])


def _tamper(provider: str, headers: dict[str, str], at: int) -> dict[str, str]:
    """The same delivery with its credential changed in one character, length kept (in
    every header that carries it: Forgejo sends its signature under two names)."""
    tampered = dict(headers)
    for name in KITS[provider].signature_headers:
        if name in headers:
            # GitHub's value starts with "sha256=": change the hex, not the prefix.
            skip = len("sha256=") if headers[name].startswith("sha256=") and at >= 0 else 0
            tampered[name] = same_length_wrong(headers[name], at + skip)
            assert len(tampered[name]) == len(headers[name])
    assert tampered != headers
    return tampered


@pytest.mark.parametrize("at", [0, -1], ids=["first-char", "last-char"])
@pytest.mark.parametrize("provider", sorted(HOOK_SECRETS))
def test_a_webhook_credential_wrong_in_one_character_is_401_and_stores_nothing(
    provider: str, at: int, tmp_path: Path, sqlite_url: str, sqlite_engine
):
    settings = forge_settings(tmp_path, sqlite_url)
    with serving(settings, sqlite_engine) as (client, _):
        body, headers = _push(provider)
        wrong = _tamper(provider, headers, at)
        refused = client.post(KITS[provider].url, content=body, headers=wrong)
        assert refused.status_code == 401, refused.text
        assert counts(sqlite_engine)["deliveries"] == 0
        # The control: the untouched delivery is accepted.
        accepted = client.post(KITS[provider].url, content=body, headers=headers)
        assert accepted.status_code == 202, accepted.text


@pytest.mark.parametrize("at", [0, -1], ids=["first-char", "last-char"])
def test_a_bearer_token_wrong_in_one_character_is_401_for_rebuild_and_cancel(
    at: int, tmp_path: Path, sqlite_url: str, sqlite_engine
):
    settings = forge_settings(tmp_path, sqlite_url)
    wrong = {"Authorization": f"Bearer {same_length_wrong(API_TOKEN, at)}"}
    right = {"Authorization": f"Bearer {API_TOKEN}"}
    body = json.dumps({"repo": "octo-org/social-score-api", "sha": SHA})
    with serving(settings, sqlite_engine) as (client, _):
        refused = client.post("/rebuild", content=body, headers=wrong)
        assert refused.status_code == 401 and counts(sqlite_engine)["builds"] == 0
        queued = client.post("/rebuild", content=body, headers=right)
        assert queued.status_code == 202, queued.text
        build = queued.json()["build_id"]

        assert client.post(f"/api/builds/{build}/cancel", headers=wrong).status_code == 401
        assert client.get(f"/api/builds/{build}").json()["status"] == "queued"
        assert client.post(f"/api/builds/{build}/cancel", headers=right).status_code == 200


def _tamper_mac(cookie: str, at: int) -> str:
    """The cookie with its MAC (after the last dot) wrong in one character, length kept."""
    mac_start = cookie.rindex(".") + 1
    return cookie[:mac_start] + same_length_wrong(cookie[mac_start:], at)


@pytest.mark.parametrize("at", [0, -1], ids=["first-char", "last-char"])
def test_a_person_token_session_cookie_or_csrf_token_wrong_in_one_character_is_401(
    at: int, tmp_path: Path, sqlite_url: str, sqlite_engine
):
    settings = forge_settings(tmp_path, sqlite_url, env={"TRAINHOOK_DASHBOARD_ACCESS": "token"})
    body = json.dumps({"repo": "octo-org/social-score-api", "sha": SHA})
    person = add_token(sqlite_engine, "ada")
    gate = access.Gate(settings, sqlite_engine)
    cookie = gate.login(person)
    assert cookie is not None
    identity = gate.cookie(cookie)
    assert identity is not None
    csrf = gate.csrf_token(identity) or ""
    session = {"Cookie": f"{access.COOKIE}={cookie}"}
    with serving(settings, sqlite_engine) as (client, _):
        wrong_person = {"Authorization": f"Bearer {same_length_wrong(person, at)}"}
        assert client.post("/rebuild", content=body, headers=wrong_person).status_code == 401
        assert client.get("/api/builds", headers=wrong_person).status_code == 401
        forged = {**session, "X-CSRF-Token": same_length_wrong(csrf, at)}
        assert client.post("/rebuild", content=body, headers=forged).status_code == 401
        wrong_cookie = {"Cookie": f"{access.COOKIE}={_tamper_mac(cookie, at)}"}
        assert client.get("/api/builds", headers=wrong_cookie).status_code == 401
        answer = client.post(
            "/rebuild", content=body, headers={**wrong_cookie, "X-CSRF-Token": csrf}
        )
        assert answer.status_code == 401
        assert counts(sqlite_engine)["builds"] == 0
        # The controls: the untouched values are accepted.
        person_bearer = {"Authorization": f"Bearer {person}"}
        assert client.post("/rebuild", content=body, headers=person_bearer).status_code == 202
        right = {**session, "X-CSRF-Token": csrf}
        assert client.post("/rebuild", content=body, headers=right).status_code == 202
