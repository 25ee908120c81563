"""No secret ever leaves: not in a log line, a page, an API answer, a header, an error
message, a command's output, a stage log, or the environment of repository code.

One realistic session with a recognisable value for every secret trainhook holds (the webhook
secret of each forge, the /rebuild token, each forge's API token, the database password, the
notification URLs and signing key, each person's token and its hash, a login cookie, its CSRF
token and the key that signs them) captures everything that is emitted and searches it for
each secret, raw and in its hex and base64 forms."""

from __future__ import annotations

import base64
import contextlib
import json
import logging
import re
import subprocess
import sys
import threading
import traceback
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import quote

import pytest
import sqlalchemy as sa
from starlette.testclient import TestClient

from service.app import create_app
from service.notifications import Notifier
from service.statusreporter import StatusReporter
from tests.reliability.security_support import (
    API_TOKEN,
    HOOK_SECRETS,
    KITS,
    repos_toml,
    same_length_wrong,
)
from tests.support.gitrepo import GitRepo
from tests.support.postgres import free_port
from tests.worker.conftest import toy_pipeline
from trainhook import cli
from trainhook.apitokens import add_token, hash_token
from trainhook.cli.commands import print_banner
from trainhook.cli.demo import DemoSession
from trainhook.models import api_tokens, metadata, service_keys
from trainhook.runtime import build_runtime
from trainhook.settings import load_settings
from worker.checkout import checkout_stage
from worker.loop import Worker
from worker.testcommand import repo_tests_stage

# Forge API tokens, in variables whose names do not say "token": nothing may rely on that.
FORGE_TOKENS = {
    "github": ("GH_PAT", "ghforgetok-Q7v6-ffffffffffffff"),
    "gitlab": ("GL_PAT", "glforgetok-Q7v7-gggggggggggggg"),
    "gitea": ("GITEA_PAT", "gtforgetok-Q7v8-hhhhhhhhhhhhhh"),
    "forgejo": ("FJ_PAT", "fjforgetok-Q7v9-iiiiiiiiiiiiii"),
}
DB_PASSWORD = "dbpassword-Q7va-jjjjjjjjjjjjjj"
# A notification URL is a credential (whoever has it can post to the channel): the secret
# part is its path, as in Slack's and Google Chat's incoming-webhook URLs.
NOTIFY_PATHS = {"webhook": "whpath-Q7vb-kkkkkkkkkkkkkkkk", "slack": "slpath-Q7vc-llllllllllllllll"}
NOTIFY_KEY = "notifykey-Q7vd-mmmmmmmmmmmmmm"
SECRETS = {
    **{f"{p} webhook secret": s for p, s in HOOK_SECRETS.items()},
    "API token": API_TOKEN,
    **{f"{p} API token": t for p, (_, t) in FORGE_TOKENS.items()},
    "database password": DB_PASSWORD,
    **{f"{kind} notification URL": path for kind, path in NOTIFY_PATHS.items()},
    "notification signing key": NOTIFY_KEY,
}
# The repository's tests print their whole environment and fail: a failing build whose log
# would show any secret handed to repository code.
ENV_DUMP = """
import json, os, sys
print("ENV " + json.dumps(dict(os.environ), sort_keys=True))
print("the model is too weak", file=sys.stderr)
sys.exit(3)
"""


def forms(secret: str) -> set[str]:
    raw = secret.encode()
    return {
        secret,
        raw.hex(),
        base64.b64encode(raw).decode().rstrip("="),
        base64.urlsafe_b64encode(raw).decode().rstrip("="),
        quote(secret, safe=""),
    }


def leaks(text: str, secrets: dict[str, str] = SECRETS) -> list[str]:
    return [f"{name} ({form})" for name, value in secrets.items() for form in forms(value)
            if form in text]  # fmt: skip


class Sink:
    """Everything emitted during the session, by where it was seen."""

    def __init__(self) -> None:
        self.parts: list[tuple[str, str]] = []
        # SECRETS, and those only made during the session (person tokens, sessions).
        self.secrets = dict(SECRETS)

    def secret(self, name: str, value: str) -> str:
        self.secrets[name] = value
        return value

    def add(self, where: str, text: Any) -> None:
        self.parts.append((where, text if isinstance(text, str) else repr(text)))

    def answer(self, where: str, response: Any) -> None:
        self.add(where, f"{response.status_code} {dict(response.headers)}\n{response.text}")

    def leaks(self) -> list[str]:
        return [f"{where}: {leak}" for where, text in self.parts
                for leak in leaks(text, self.secrets)]  # fmt: skip


class ForgeApi:
    """A forge API refusing every call (401 Bad credentials); records the headers it got.
    Also the notification receivers: the webhook's takes it, Slack's is down (500)."""

    def __init__(self) -> None:
        self.seen: list[dict[str, str]] = []
        self.notified: list[tuple[str, dict[str, str]]] = []
        seen, notified = self.seen, self.notified

        class Refuse(BaseHTTPRequestHandler):
            def _refuse(self) -> None:
                if self.path.startswith("/notify/"):
                    notified.append((self.path, dict(self.headers)))
                    self.rfile.read(int(self.headers.get("Content-Length") or 0))
                    ok = NOTIFY_PATHS["webhook"] in self.path
                    self.send_response(200 if ok else 500)
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                    return
                seen.append(dict(self.headers))
                body = b'{"message": "Bad credentials"}'
                self.send_response(401)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            do_GET = do_POST = _refuse

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Refuse)

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}"


@contextlib.contextmanager
def forge_api() -> Iterator[ForgeApi]:
    api = ForgeApi()
    thread = threading.Thread(target=api.server.serve_forever, daemon=True)
    thread.start()
    try:
        yield api
    finally:
        api.server.shutdown()
        api.server.server_close()
        thread.join()


def environment(tmp_path: Path, db_url: str, clone_url: str, api_base: str) -> dict[str, str]:
    extra = {
        p: f'forge_token_env = "{env}"\nforge_api_url = "{api_base}"\n'
        + (
            'test_command = "python env_dump.py"\nhook_id = 7\n'
            # The sandbox gives the tests an empty environment plus what the repository
            # declares: this marker proves the environment dump reached the log.
            'sandbox_env = { SAFE_MARKER = "visible-to-tests" }\n'
            '[[repos.notify]]\nkind = "webhook"\nurl_env = "HOOK_URL"\nsecret_env = "HOOK_KEY"\n'
            '[[repos.notify]]\nkind = "slack"\nurl_env = "CHAT_URL"\n'
            if p == "github"
            else ""
        )
        for p, (env, _) in FORGE_TOKENS.items()
    }
    config = tmp_path / "trainhook.toml"
    config.write_text(repos_toml(clone_url, extra))
    return {
        "TRAINHOOK_HOME": str(tmp_path / "home"),
        "TRAINHOOK_CONFIG": str(config),
        "TRAINHOOK_DATABASE_URL": db_url,
        "TRAINHOOK_API_TOKEN": API_TOKEN,
        "TRAINHOOK_PUBLIC_URL": "https://trainhook.example",
        "SAFE_MARKER": "visible-to-tests",  # proves the environment dump reached the log
        **{f"{p.upper()}_HOOK_KEY": s for p, s in HOOK_SECRETS.items()},
        **dict(FORGE_TOKENS.values()),
        "HOOK_URL": f"{api_base}/notify/{NOTIFY_PATHS['webhook']}",
        "CHAT_URL": f"{api_base}/notify/{NOTIFY_PATHS['slack']}",
        "HOOK_KEY": NOTIFY_KEY,
    }


def run_cli(sink: Sink, capsys: pytest.CaptureFixture[str], *argv: str) -> None:
    """`trainhook ARGV` in this process; what it prints, and any exception it lets out."""
    try:
        code: Any = cli.main(list(argv))
    except BaseException as exc:  # a crash prints its traceback: that is emitted too
        code = f"raised {type(exc).__name__}\n{traceback.format_exc()}"
    out, err = capsys.readouterr()
    sink.add(f"trainhook {' '.join(argv)}", f"exit {code}\n{out}\n{err}")


def drive_webhooks(sink: Sink, client: TestClient, sha: str) -> None:
    for provider, kit in KITS.items():
        secret = HOOK_SECRETS[provider]
        body, headers = kit.sign(kit.push(after=sha), secret=secret)
        sink.answer(f"{provider} push", client.post(kit.url, content=body, headers=headers))
        wrong = kit.sign(kit.push(after=sha), secret=same_length_wrong(secret))
        sink.answer(f"{provider} wrong secret", client.post(kit.url, content=wrong[0],
                                                            headers=wrong[1]))  # fmt: skip
        bare = {k: v for k, v in headers.items() if k not in kit.signature_headers}
        sink.answer(f"{provider} unsigned", client.post(kit.url, content=body, headers=bare))
        sink.answer(f"{provider} bad json", client.post(kit.url, content=b"{", headers=headers))
    pushed = [r for w, r in sink.parts if w.endswith(" push") and r.startswith("202")]
    assert len(pushed) == len(KITS), sink.parts[-16:]


def drive_api(sink: Sink, client: TestClient) -> None:
    right = {"Authorization": f"Bearer {API_TOKEN}"}
    wrong = {"Authorization": f"Bearer {same_length_wrong(API_TOKEN)}"}
    body = json.dumps({"repo": "octo-org/social-score-api", "ref": "main"})
    sink.answer("rebuild", client.post("/rebuild", content=body, headers=right))
    assert sink.parts[-1][1].startswith("202")
    sink.answer("rebuild wrong token", client.post("/rebuild", content=body, headers=wrong))
    sink.answer("rebuild bad body", client.post("/rebuild", content=b"[", headers=right))
    sink.answer("rebuild unknown repo", client.post("/rebuild", headers=right,
                                                     content=b'{"repo": "nope/nope"}'))  # fmt: skip
    sink.answer("cancel wrong token", client.post("/api/builds/1/cancel", headers=wrong))


def read_everything(sink: Sink, client: TestClient) -> None:
    ids = [b["id"] for b in client.get("/api/builds").json()["builds"]]
    paths = ["/", "/?status=failed", "/repos/octo-org/social-score-api/history", "/api/builds",
             "/api/builds.csv", "/api/builds.json", "/metrics", "/healthz", "/readyz",
             "/builds/999", "/api/builds/x", "/no/such/page"]  # fmt: skip
    for build_id in ids:
        paths += [f"/builds/{build_id}", f"/api/builds/{build_id}"]
    for path in paths:
        sink.answer(f"GET {path}", client.get(path))


# The columns that exist to hold a secret (a person token's hash, the session signing key):
# searched everywhere else, not where they belong.
HELD = {api_tokens.c.token_hash, service_keys.c.value}


def dump_database(sink: Sink, engine: sa.Engine) -> str:
    """Every row of every table, as text: stage logs, details, stored deliveries and all."""
    out = []
    with engine.connect() as conn:
        for table in metadata.sorted_tables:
            columns = [c for c in table.columns if c not in HELD]
            for row in conn.execute(sa.select(*columns)):
                out.append(f"{table.name}: {tuple(row)!r}")
    text = "\n".join(out)
    sink.add("database", text)
    return text


def drive_sessions(sink: Sink, engine: sa.Engine, monkeypatch: pytest.MonkeyPatch) -> None:
    """Person tokens, a login, the build page's CSRF token and writes with them, under
    `token` access (a second service on the same database)."""
    writer = sink.secret("person write token", add_token(engine, "ada"))
    reader = sink.secret("person read token", add_token(engine, "bob", "read"))
    sink.secret("person write token hash", hash_token(writer))
    sink.secret("person read token hash", hash_token(reader))
    monkeypatch.setenv("TRAINHOOK_DASHBOARD_ACCESS", "token")
    runtime = build_runtime(load_settings())
    body = json.dumps({"repo": "octo-org/social-score-api", "ref": "main"})
    with TestClient(create_app(runtime), base_url="https://testserver",
                    raise_server_exceptions=False) as client:  # fmt: skip
        wrong = client.post("/login", data={"token": same_length_wrong(writer)})
        sink.answer("login, wrong token", wrong)
        login = client.post("/login", data={"token": writer}, follow_redirects=False)
        cookie = sink.secret("session cookie", client.cookies["trainhook_session"])
        # The cookie belongs in its Set-Cookie, the CSRF token in the page: each answer is
        # searched for every other secret.
        sink.add("login", str(login.headers).replace(cookie, "<cookie>"))
        build_id = client.get("/api/builds").json()["builds"][0]["id"]
        page = client.get(f"/builds/{build_id}").text
        found = re.search(r'data-csrf="([0-9a-f]+)"', page)
        assert found, page
        csrf = sink.secret("CSRF token", found.group(1))
        sink.add("build page, signed in", page.replace(csrf, "<csrf>"))
        made = client.post("/rebuild", content=body, headers={"X-CSRF-Token": csrf})
        sink.answer("rebuild, session", made)
        assert made.status_code == 202, made.text
        forged = {"X-CSRF-Token": same_length_wrong(csrf)}
        sink.answer("rebuild, forged CSRF", client.post("/rebuild", content=body, headers=forged))
        cancel = f"/api/builds/{made.json()['build_id']}/cancel"
        sink.answer("cancel, session", client.post(cancel, headers={"X-CSRF-Token": csrf}))
        for path in ("/", "/api/builds", f"/api/builds/{build_id}", "/api/builds.csv"):
            sink.answer(f"GET {path}, signed in", client.get(path))
        sink.answer("logout", client.post("/logout", follow_redirects=False))
        person = {"Authorization": f"Bearer {writer}"}
        sink.answer("rebuild, person token", client.post("/rebuild", content=body, headers=person))
        assert sink.parts[-1][1].startswith("202")
        read_only = {"Authorization": f"Bearer {reader}"}
        sink.answer("rebuild, read token", client.post("/rebuild", content=body,
                                                        headers=read_only))  # fmt: skip
        sink.answer("cancel, wrong person token", client.post(
            cancel, headers={"Authorization": f"Bearer {same_length_wrong(writer)}"}))  # fmt: skip
    runtime.close()
    monkeypatch.delenv("TRAINHOOK_DASHBOARD_ACCESS")
    with engine.connect() as conn:
        sink.secret(
            "session signing key", conn.execute(sa.select(service_keys.c.value)).scalar_one()
        )


def test_no_secret_appears_in_anything_a_session_emits(
    tmp_path: Path,
    sqlite_url: str,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
    capsys: pytest.CaptureFixture[str],
):
    caplog.set_level(logging.DEBUG)  # every logger, every level
    sink = Sink()
    origin = GitRepo(tmp_path / "origin")
    sha = origin.commit({"env_dump.py": ENV_DUMP, "data/train.csv": "text,label\nx,pos\n"})
    with forge_api() as api:
        env = environment(tmp_path, sqlite_url, origin.url, api.base)
        for key, value in env.items():
            monkeypatch.setenv(key, value)
        settings = load_settings()
        sink.add("repr(settings): debug logs, tracebacks", repr(settings))
        runtime = build_runtime(settings)
        engine = runtime.engine

        # The service: webhooks (valid, wrong, unsigned, malformed), rebuilds, cancel.
        with TestClient(create_app(runtime), raise_server_exceptions=False) as client:
            drive_webhooks(sink, client, sha)
            drive_api(sink, client)

            # The worker: checkout, then the repository's tests, which dump their
            # environment and fail; every stage logs into the database.
            stages = {"checkout": checkout_stage, "test": repo_tests_stage}
            Worker(runtime, pipeline=toy_pipeline(stages)).run(threading.Event(), burst=True)

            # Commit statuses to a forge that refuses the token; notifications of the failed
            # build to a receiver that takes it and one that is down.
            reporter = StatusReporter(settings, engine)
            reporter.tick()
            reporter.stop()
            Notifier(settings, engine).tick()
            read_everything(sink, client)
        drive_sessions(sink, engine, monkeypatch)

        # The command line: what operators run and paste into tickets.
        for argv in (
            ("rebuild", "octo-org/social-score-api", "--ref", "main"),
            ("rebuild", "nope/nope"),
            ("replay", "--dry-run", "--since", "1d"),
            ("dead-letters",),
            ("reconcile", "--dry-run", "--since", "1d"),
            ("cloudbuild-config", "octo-org/social-score-api"),
            ("migrate",),
            ("tokens", "list"),
            ("tokens", "revoke", "bob"),
        ):
            run_cli(sink, capsys, *argv)
        print_banner(settings, "http://127.0.0.1:8000")
        sink.add("startup banner", capsys.readouterr().out)
        database = dump_database(sink, engine)
        runtime.close()
    # The control: the tokens were really used (sent to the forge), so they were there to leak.
    sent = {value for headers in api.seen for value in headers.values()}
    assert any(FORGE_TOKENS["github"][1] in value for value in sent), api.seen
    # And the notifications were sent, signed with the key, to both receivers.
    assert {path.split("/")[2] for path, _ in api.notified} == set(NOTIFY_PATHS.values())
    signed = [h for path, h in api.notified if NOTIFY_PATHS["webhook"] in path]
    assert signed[0]["X-Trainhook-Signature-256"].startswith("sha256="), api.notified

    # The database is down, and its URL carries a password.
    down = f"postgresql+psycopg://trainhook:{DB_PASSWORD}@127.0.0.1:{free_port()}/trainhook"
    monkeypatch.setenv("TRAINHOOK_DATABASE_URL", down)
    down_settings = load_settings()
    sink.add("repr(settings), database down", repr(down_settings))
    down_runtime = build_runtime(down_settings)
    with TestClient(create_app(down_runtime), raise_server_exceptions=False) as client:
        kit = KITS["github"]
        body, headers = kit.sign(kit.push(after=sha), secret=HOOK_SECRETS["github"])
        sink.answer("push, database down", client.post(kit.url, content=body, headers=headers))
        for path in ("/", "/builds/1", "/api/builds", "/readyz", "/metrics"):
            sink.answer(f"GET {path}, database down", client.get(path))
        bearer = {"Authorization": f"Bearer {API_TOKEN}"}
        rebuild = b'{"repo": "octo-org/social-score-api"}'
        sink.answer(
            "rebuild, database down", client.post("/rebuild", headers=bearer, content=rebuild)
        )
    down_runtime.close()
    for argv in (("rebuild", "octo-org/social-score-api"), ("replay", "--dry-run"), ("migrate",)):
        run_cli(sink, capsys, *argv)
    # And once as a real process: Python's own traceback printing included.
    done = subprocess.run(
        [sys.executable, "-m", "trainhook.cli", "migrate"],
        capture_output=True,
        text=True,
        timeout=60,
        env={**env, "TRAINHOOK_DATABASE_URL": down, "PATH": ""},
        check=False,
    )
    sink.add("trainhook migrate (process), database down", done.stdout + done.stderr)
    assert done.returncode != 0 and "OperationalError" in done.stderr, done.stderr[-2000:]

    sink.add("logs", caplog.text)
    sink.add("log records", [(r.name, r.getMessage(), r.exc_text) for r in caplog.records])

    # The session did what it claims: the failing tests dumped their environment.
    assert "ENV {" in database and "visible-to-tests" in database
    assert "the model is too weak" in database
    assert sink.leaks() == [], "\n".join(sorted(set(sink.leaks())))


def test_repository_code_never_sees_a_forge_token_whatever_its_variable_is_called(
    tmp_path: Path, sqlite_url: str, sqlite_engine: sa.Engine, monkeypatch: pytest.MonkeyPatch
):
    # Focused twin of the session above: the test command's environment, nothing else.
    from tests.worker.conftest import context_for, new_build

    origin = GitRepo(tmp_path / "origin")
    sha = origin.commit({"env_dump.py": ENV_DUMP})
    env = environment(tmp_path, sqlite_url, origin.url, "https://forge.example/api")
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    settings = load_settings()
    ctx = context_for(settings, sqlite_engine, new_build(sqlite_engine, sha))
    checkout_stage(ctx)
    with pytest.raises(Exception, match="exited with 3") as failure:
        repo_tests_stage(ctx)
    seen = json.loads(str(failure.value).split("ENV ", 1)[1].splitlines()[0])
    assert seen["SAFE_MARKER"] == "visible-to-tests"
    names = {env for env, _ in FORGE_TOKENS.values()} | {f"{p.upper()}_HOOK_KEY" for p in KITS}
    assert names & set(seen) == set()
    assert leaks(json.dumps(seen)) == []
    ctx.cleanup.close()


def test_the_startup_banner_says_how_to_get_the_token_never_the_token(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
):
    settings = load_settings(
        {
            "TRAINHOOK_HOME": str(tmp_path / "home"),
            "TRAINHOOK_API_TOKEN": API_TOKEN,
            "TRAINHOOK_CONFIG": str(tmp_path / "none.toml"),
        },
        require_repos=False,
    )
    # `trainhook up --demo` generated the token into a file: the banner names the file.
    token_file = tmp_path / "demo dir" / "api-token"
    token_file.parent.mkdir()
    token_file.write_text(API_TOKEN + "\n")
    demo = DemoSession(repo_dir=tmp_path, secret="s", token_file=token_file)
    for hint in (DemoSession(repo_dir=tmp_path, secret="s").token_hint, demo.token_hint):
        print_banner(settings, "http://127.0.0.1:8000", hint)
        out = capsys.readouterr().out
        assert leaks(out) == []
        # Pasted into a shell, the curl line still carries the right token.
        header = next(p for p in out.split(" -H ") if p.startswith('"Authorization'))
        shell_env = {"TRAINHOOK_API_TOKEN": API_TOKEN, "PATH": "/usr/bin:/bin"}
        said = subprocess.run(["sh", "-c", f"printf %s {header}"], env=shell_env,
                              capture_output=True, text=True, check=True).stdout  # fmt: skip
        assert said == f"Authorization: Bearer {API_TOKEN}"
