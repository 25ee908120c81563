"""Path filters: glob semantics, the webhook's fast path and the worker's decision from git."""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any

import pytest
from starlette.testclient import TestClient

from service.app import create_app
from service.forges.payloadfilter import payload_files
from tests.service.forge_kits import BEFORE, GITEA, GITHUB, GITLAB, KITS, ZERO, Kit, post
from tests.support.gitrepo import GitRepo, git
from tests.worker.conftest import build_view, stage_map, toy_pipeline
from trainhook.builds import BuildSpec, create_build
from trainhook.errors import ConfigError
from trainhook.pathglobs import PathFilter, PatternError, check_pattern
from trainhook.runtime import build_runtime
from worker.checkout import checkout_stage
from worker.loop import Worker

FILTERS = 'paths = ["src/**", "data/**", "*.toml"]\npaths_ignore = ["**/*.md", "docs/**"]'


# --- glob semantics ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("pattern", "path", "matches"),
    [
        ("*.md", "README.md", True),
        ("*.md", "docs/README.md", False),  # `*` never crosses a directory
        ("**.md", "docs/deep/README.md", True),  # `**` does
        ("docs/*", "docs/a.md", True),
        ("docs/*", "docs/sub/a.md", False),
        ("docs/**", "docs/sub/a.md", True),
        ("docs/**", "docsite/a.md", False),
        ("**/README.md", "README.md", True),  # `**/` also matches no directory at all
        ("**/README.md", "a/b/README.md", True),
        ("src/**/test_*.py", "src/test_a.py", True),
        ("src/**/test_*.py", "src/x/y/test_a.py", True),
        ("data/?.csv", "data/a.csv", True),
        ("data/?.csv", "data/ab.csv", False),
        ("data/[ab].csv", "data/b.csv", True),
        ("data/[!ab].csv", "data/b.csv", False),
        ("data/[!ab].csv", "data/c.csv", True),
        ("a[/]b", "a/b", False),  # no pattern but `**` crosses a slash
        ("file (1).txt", "file (1).txt", True),  # regex characters match themselves
        ("data/train.csv", "data/train.csv", True),
        ("data/train.csv", "data/train.csv.bak", False),  # the whole path must match
    ],
)
def test_glob_semantics_follow_github_actions(pattern: str, path: str, matches: bool):
    assert PathFilter(paths=(pattern,)).relevant(path) is matches


def test_paths_ignore_wins_over_paths():
    flt = PathFilter(paths=("src/**",), ignore=("**/*.md",))
    assert flt.relevant("src/model.py")
    assert not flt.relevant("src/README.md")
    assert not flt.relevant("app.py")  # not in `paths`


def test_only_ignore_patterns_make_everything_else_relevant():
    flt = PathFilter(ignore=("docs/**",))
    assert flt.relevant("app.py") and not flt.relevant("docs/index.md")


def test_a_push_builds_when_one_changed_file_is_relevant():
    flt = PathFilter(paths=("data/**",))
    assert flt.ignore_reason({"README.md", "data/train.csv"}) is None


def test_the_reason_names_the_files_and_the_rules():
    flt = PathFilter(paths=("data/**",), ignore=("**/*.md",))
    reason = flt.ignore_reason({f"docs/{i}.md" for i in range(7)})
    assert reason is not None and reason.startswith("only ignored paths changed: docs/0.md")
    assert "(7 files)" in reason
    assert "paths = ['data/**']" in reason and "paths_ignore = ['**/*.md']" in reason


def test_empty_commits_and_repositories_without_filters_always_build():
    assert PathFilter(paths=("data/**",)).ignore_reason(set()) is None
    assert PathFilter().ignore_reason({"README.md"}) is None


@pytest.mark.parametrize(
    ("pattern", "message"),
    [("!docs/**", "negation"), ("/src/**", "relative"), ("", "empty"), ("data/[ab", "']'")],
)
def test_patterns_that_cannot_mean_what_they_say_are_refused(pattern: str, message: str):
    with pytest.raises(PatternError, match=message):
        check_pattern(pattern)


def test_a_bad_pattern_in_the_repositories_file_names_file_repo_and_key(make_settings):
    with pytest.raises(ConfigError, match=r"trainhook.toml: repository .*key 'paths_ignore'"):
        make_settings(extra='paths_ignore = ["!docs/**"]')
    with pytest.raises(ConfigError, match="key 'paths' must be a list of non-empty strings"):
        make_settings(extra="paths = [1]")


# --- the webhook's fast path ------------------------------------------------------------

COUNT = {"github": None, "gitlab": "total_commits_count", "gitea": "total_commits"}


def pushed(kit: Kit, commits: list[list[str]], *, total: int | None = None, **extra: Any):
    """A push of len(commits) commits, each modifying the files given, in the kit's words."""
    payload = kit.push()
    payload["before"] = BEFORE
    payload["commits"] = [
        {"id": f"{i:040x}", "message": "m", "added": [], "removed": [], "modified": files}
        for i, files in enumerate(commits, 1)
    ]
    field = COUNT.get(kit.provider, "total_commits")
    if field:
        payload[field] = len(commits) if total is None else total
    payload.update(extra)
    return payload


@pytest.fixture
def serve(db_url, engine, make_settings) -> Callable[..., TestClient]:
    clients: list[TestClient] = []

    def start(kit: Kit, extra: str = FILTERS) -> TestClient:
        settings = make_settings(db_url, provider=kit.provider, extra=extra)
        client = TestClient(create_app(build_runtime(settings, engine)))
        clients.append(client.__enter__())
        return client

    yield start
    for client in clients:
        client.__exit__(None, None, None)


@pytest.mark.parametrize("kit", KITS, ids=[k.route for k in KITS])
def test_a_push_listing_only_ignored_paths_is_answered_ignored_with_the_reason(serve, kit):
    client = serve(kit)
    status, body = post(client, kit, kit.sign(pushed(kit, [["docs/a.md"], ["README.md"]])))
    assert status == 200 and body["status"] == "ignored"
    assert body["reason"].startswith("only ignored paths changed: README.md, docs/a.md")


@pytest.mark.parametrize("kit", KITS, ids=[k.route for k in KITS])
def test_a_push_listing_one_relevant_path_is_queued(serve, kit):
    client = serve(kit)
    status, body = post(client, kit, kit.sign(pushed(kit, [["docs/a.md"], ["data/train.csv"]])))
    assert (status, body["status"]) == (202, "queued")


@pytest.mark.parametrize(
    ("kit", "change"),
    [
        (GITLAB, {"total": 25}),  # GitLab lists the 20 newest commits only
        (GITEA, {"total": 9}),  # Gitea a few
        (GITHUB, {"forced": True}),  # dropped commits are in the diff, not in the list
        (GITHUB, {"before": ZERO}),  # a new branch: compared with the default branch later
    ],
    ids=["gitlab-truncated", "gitea-truncated", "github-forced", "new-branch"],
)
def test_a_push_whose_list_may_be_incomplete_is_queued_for_the_worker_to_decide(serve, kit, change):
    client = serve(kit)
    status, body = post(client, kit, kit.sign(pushed(kit, [["docs/a.md"]], **change)))
    assert (status, body["status"]) == (202, "queued")


def test_payload_without_file_lists_or_with_huge_lists_is_not_trusted():
    payload = pushed(GITHUB, [["docs/a.md"]])
    del payload["commits"][0]["added"]
    assert payload_files("github", payload) is None
    huge = pushed(GITHUB, [[f"docs/{i}.md" for i in range(1000)]])
    assert payload_files("github", huge) is None
    assert payload_files("github", pushed(GITHUB, [["a"], ["b"]])) == {"a", "b"}
    assert payload_files("bitbucket", pushed(GITLAB, [["a"]])) is None


def test_tags_are_never_path_filtered(serve):
    client = serve(GITHUB, FILTERS + '\ntags = ["v*"]')
    payload = pushed(GITHUB, [["docs/a.md"]], ref="refs/tags/v1")
    status, body = post(client, GITHUB, GITHUB.sign(payload))
    assert (status, body["status"]) == (202, "queued")


# --- the worker decides from the mirror --------------------------------------------------


@pytest.fixture
def origin(tmp_path) -> GitRepo:
    repo = GitRepo(tmp_path / "origin")
    repo.commit({"src/model.py": "v1\n", "docs/index.md": "v1\n", "README.md": "hi\n"})
    return repo


def run_push(settings, engine, before: str | None, after: str, ref: str = "refs/heads/main"):
    with engine.begin() as conn:
        spec = BuildSpec(provider="github", repo=settings.repos[0].name, ref=ref, sha=after,
                         before_sha=before)  # fmt: skip
        build_id = create_build(conn, spec)
    stages = toy_pipeline({"checkout": checkout_stage})
    Worker(build_runtime(settings, engine), pipeline=stages).run(threading.Event(), burst=True)
    return build_view(engine, build_id), stage_map(engine, build_id)


def test_a_push_changing_only_ignored_paths_ends_at_checkout_as_cancelled(
    origin, make_settings, db_url, engine
):
    settings = make_settings(db_url, clone_url=origin.url, extra=FILTERS)
    before = origin.head()
    after = origin.commit({"docs/index.md": "v2\n", "src/NOTES.md": "x\n"})

    build, stages = run_push(settings, engine, before, after)

    assert build["status"] == "cancelled"
    assert build["error"].startswith("only ignored paths changed: docs/index.md, src/NOTES.md")
    assert stages["checkout"]["status"] == "succeeded"
    assert "only ignored paths changed" in stages["checkout"]["detail"]
    for name in ("test", "hash", "train", "build", "push", "deploy", "vertex"):
        assert stages[name]["status"] == "skipped"
        assert stages[name]["detail"] == build["error"]
    assert not (settings.work_dir / settings.repos[0].slug).exists() or not any(
        (settings.work_dir / settings.repos[0].slug).iterdir()
    )  # nothing exported


def test_a_push_changing_a_relevant_path_runs_every_stage(origin, make_settings, db_url, engine):
    settings = make_settings(db_url, clone_url=origin.url, extra=FILTERS)
    before = origin.head()
    after = origin.commit({"docs/index.md": "v2\n", "src/model.py": "v2\n"})

    build, stages = run_push(settings, engine, before, after)

    assert build["status"] == "succeeded"
    assert {s["status"] for s in stages.values()} == {"succeeded"}


def test_the_diff_is_the_net_change_so_a_forced_push_counts_what_it_dropped(
    origin, make_settings, sqlite_url, sqlite_engine
):
    settings = make_settings(sqlite_url, clone_url=origin.url, extra=FILTERS)
    base = origin.head()
    dropped = origin.commit({"src/model.py": "v2\n"})
    git(origin.path, "reset", "-q", "--hard", base)
    rewritten = origin.commit({"docs/index.md": "v2\n"})  # only docs, but src/ is reverted
    git(origin.path, "branch", "-q", "keep", dropped)  # still fetchable by the mirror

    build, _ = run_push(settings, sqlite_engine, dropped, rewritten)
    assert build["status"] == "succeeded"


def test_a_new_branch_is_compared_with_the_default_branch(
    origin, make_settings, sqlite_url, sqlite_engine
):
    settings = make_settings(
        sqlite_url, clone_url=origin.url, branches=("main", "feature/*"), extra=FILTERS
    )
    git(origin.path, "checkout", "-q", "-b", "feature/docs")
    origin.commit({"docs/a.md": "a\n"})
    docs_only = origin.commit({"docs/b.md": "b\n"})
    git(origin.path, "checkout", "-q", "main")  # the origin's HEAD: its default branch
    build, _ = run_push(settings, sqlite_engine, ZERO, docs_only, "refs/heads/feature/docs")
    assert build["status"] == "cancelled"
    assert build["error"].startswith("only ignored paths changed: docs/a.md, docs/b.md")

    git(origin.path, "checkout", "-q", "-b", "feature/model", "main")
    model = origin.commit({"src/model.py": "v3\n"})
    git(origin.path, "checkout", "-q", "main")
    build, _ = run_push(settings, sqlite_engine, None, model, "refs/heads/feature/model")
    assert build["status"] == "succeeded"


def test_when_the_diff_cannot_be_read_the_push_builds(
    origin, make_settings, sqlite_url, sqlite_engine
):
    settings = make_settings(sqlite_url, clone_url=origin.url, extra=FILTERS)
    after = origin.commit({"docs/index.md": "v2\n"})
    build, _ = run_push(settings, sqlite_engine, "ab" * 20, after)  # unknown before
    assert build["status"] == "succeeded"


def test_rebuilds_and_replays_are_never_path_filtered(
    origin, make_settings, sqlite_url, sqlite_engine
):
    settings = make_settings(sqlite_url, clone_url=origin.url, extra=FILTERS)
    before = origin.head()
    after = origin.commit({"docs/index.md": "v2\n"})
    with sqlite_engine.begin() as conn:
        spec = BuildSpec(provider="github", repo=settings.repos[0].name, ref="refs/heads/main",
                         sha=after, before_sha=before, trigger="rebuild")  # fmt: skip
        build_id = create_build(conn, spec)
    runtime = build_runtime(settings, sqlite_engine)
    Worker(runtime, pipeline=toy_pipeline({"checkout": checkout_stage})).run(
        threading.Event(), burst=True
    )
    assert build_view(sqlite_engine, build_id)["status"] == "succeeded"


def test_the_checkout_log_lists_the_changed_files(origin, make_settings, sqlite_url, sqlite_engine):
    from tests.worker.conftest import logs

    settings = make_settings(sqlite_url, clone_url=origin.url, extra=FILTERS)
    before = origin.head()
    after = origin.commit({"docs/index.md": "v2\n"})
    build, _ = run_push(settings, sqlite_engine, before, after)
    text = logs(sqlite_engine, build["id"])["checkout"]
    assert "path filters: 1 file(s) changed in" in text and "  docs/index.md\n" in text


# --- pull/merge request builds: the request's new commits ---------------------------------


def request_heads(origin: GitRepo, ref: str, *changes: dict[str, str]) -> list[str]:
    """Commits on a request's head ref alone (as a forge keeps them), one per change."""
    main = origin.head()
    made = [origin.commit(files) for files in changes]
    git(origin.path, "update-ref", ref, made[-1])
    git(origin.path, "reset", "-q", "--hard", main)
    return made


def run_request(settings, engine, ref: str, before: str | None, after: str):
    with engine.begin() as conn:
        spec = BuildSpec(provider="github", repo=settings.repos[0].name, ref=ref, sha=after,
                         before_sha=before, trigger="pull_request")  # fmt: skip
        build_id = create_build(conn, spec)
    stages = toy_pipeline({"checkout": checkout_stage})
    Worker(build_runtime(settings, engine), pipeline=stages).run(threading.Event(), burst=True)
    return build_view(engine, build_id)


# GitHub, Gitea and Forgejo keep a request's head at refs/pull/N/head, GitLab at
# refs/merge-requests/N/head; only GitHub and GitLab events name the previous head.
REQUEST_REFS = ["refs/pull/7/head", "refs/merge-requests/7/head"]


@pytest.mark.parametrize("ref", REQUEST_REFS)
def test_new_request_commits_changing_only_ignored_paths_end_at_checkout_as_cancelled(
    origin, make_settings, sqlite_url, sqlite_engine, ref
):
    settings = make_settings(sqlite_url, clone_url=origin.url, extra=FILTERS)
    first, docs = request_heads(origin, ref, {"src/model.py": "v2\n"}, {"docs/index.md": "v2\n"})

    build = run_request(settings, sqlite_engine, ref, first, docs)

    assert build["status"] == "cancelled"
    assert build["error"].startswith("only ignored paths changed: docs/index.md")


@pytest.mark.parametrize("ref", REQUEST_REFS)
def test_new_request_commits_changing_a_relevant_path_build(
    origin, make_settings, sqlite_url, sqlite_engine, ref
):
    settings = make_settings(sqlite_url, clone_url=origin.url, extra=FILTERS)
    first, model = request_heads(origin, ref, {"docs/index.md": "v2\n"}, {"src/model.py": "v3\n"})

    assert run_request(settings, sqlite_engine, ref, first, model)["status"] == "succeeded"


@pytest.mark.parametrize("ref", REQUEST_REFS)
def test_a_request_event_naming_no_previous_head_builds(
    origin, make_settings, sqlite_url, sqlite_engine, ref
):
    # An opened or reopened request, or any Gitea/Forgejo event: no "new commits" to read.
    settings = make_settings(sqlite_url, clone_url=origin.url, extra=FILTERS)
    (docs,) = request_heads(origin, ref, {"docs/index.md": "v2\n"})

    assert run_request(settings, sqlite_engine, ref, None, docs)["status"] == "succeeded"
