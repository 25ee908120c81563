"""The forge interface: every forge implements both directions, and nothing outside the forge
modules branches on a provider's name."""

from __future__ import annotations

import ast
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import pytest

from service.details import commit_url
from service.forges import ApiError, Delivery, Forge, ForgeApi
from service.forges.registry import FORGES, api_base, connect, forge_for, redelivering
from service.forges.statuses import KINDS
from trainhook.repos import RepoConfig

ROOT = Path(__file__).resolve().parents[2]
SCANNED = ("service", "worker", "trainhook")
NAMES = frozenset(FORGES)
# The forge modules, where a forge may name itself, and the registry, which maps the names.
FORGE_MODULES = frozenset(
    f"service/forges/{name}.py" for name in ("github", "gitlab", "gitea", "registry")
)
# Modules allowed to compare with a forge's name, each with its reason. Keep it empty: a new
# entry means a forge's behaviour lives outside its module.
ALLOWED: dict[str, str] = {}
SHA = "0123456789abcdef0123456789abcdef01234567"


def _names_a_forge(node: ast.AST) -> bool:
    if isinstance(node, ast.Constant):
        return node.value in NAMES
    if isinstance(node, ast.Tuple | ast.List | ast.Set):
        return any(_names_a_forge(element) for element in node.elts)
    return False


def provider_branches(source: str) -> list[int]:
    """Lines of `source` that compare with a forge's name (`== "github"`, `in ("gitlab", …)`),
    key a dict by one (a table per provider) or match a case on one."""
    lines = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Compare):
            if any(_names_a_forge(side) for side in (node.left, *node.comparators)):
                lines.append(node.lineno)
        elif isinstance(node, ast.Dict):
            if any(key is not None and _names_a_forge(key) for key in node.keys):
                lines.append(node.lineno)
        elif isinstance(node, ast.MatchValue) and _names_a_forge(node.value):
            lines.append(node.lineno)
    return lines


def _sources() -> list[tuple[str, Path]]:
    return [
        (path.relative_to(ROOT).as_posix(), path)
        for package in SCANNED
        for path in sorted((ROOT / package).rglob("*.py"))
    ]


def test_no_module_outside_the_forges_branches_on_a_provider_name():
    found = {
        name: lines
        for name, path in _sources()
        if name not in FORGE_MODULES and name not in ALLOWED
        if (lines := provider_branches(path.read_text()))
    }
    assert found == {}


def test_every_allowed_provider_branch_still_exists_and_has_a_reason():
    assert all(reason.strip() for reason in ALLOWED.values())
    assert [n for n in ALLOWED if not provider_branches((ROOT / n).read_text())] == []


def test_only_the_registry_picks_a_forge_module():
    concrete = {f"service.forges.{name}" for name in ("github", "gitlab", "gitea")}
    importers = []
    for name, path in _sources():
        if name in FORGE_MODULES:
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                picked = {alias.name for alias in node.names}
            elif isinstance(node, ast.ImportFrom) and node.module:
                picked = {node.module} | {f"{node.module}.{a.name}" for a in node.names}
            else:
                continue
            if picked & concrete:
                importers.append(name)
    assert importers == []


@pytest.mark.parametrize(
    ("source", "lines"),
    [
        ('if provider == "github":\n    pass\n', [1]),
        ('ok = api.provider != "gitlab"\n', [1]),
        ('ok = provider in ("gitea", "forgejo")\n', [1]),
        ('STATES = {"github": 1}\n', [1]),
        ('match provider:\n    case "gitlab":\n        pass\n', [2]),
    ],
)
def test_the_scan_sees_each_shape_of_a_provider_branch(source: str, lines: list[int]):
    assert provider_branches(source) == lines


def test_the_scan_leaves_other_strings_and_column_comparisons_alone():
    source = (
        'PROVIDERS = ("github", "gitlab")\n'
        'x = table.get("provider", "github")\n'
        "same = builds.c.provider == build.provider\n"
        'ok = name == "main"\n'
    )
    assert provider_branches(source) == []


# The interface itself, over every forge.

FORGE_LIST = sorted(FORGES.items())


def _members(protocol: type) -> set[str]:
    own = set(vars(protocol)) | set(getattr(protocol, "__annotations__", {}))
    return {n for n in own if not n.startswith("_")}


@pytest.mark.parametrize(("name", "forge"), FORGE_LIST)
def test_each_forge_implements_both_directions_of_the_interface(name: str, forge: Forge):
    missing = {m for m in _members(Forge) if not hasattr(forge, m)}
    assert missing == set()
    assert forge.name == name and forge.title


@pytest.mark.parametrize(("name", "forge"), FORGE_LIST)
def test_each_forge_has_a_state_for_every_kind_of_build_status(name: str, forge: Forge):
    states = {kind: forge.status_state(kind) for kind in KINDS}
    assert all(isinstance(s, str) and s for s in states.values())
    assert states["succeeded"] == "success" and states["queued"] == "pending"
    # A push that changed only ignored paths must never block a merge.
    assert states["ignored"] in ("success", "skipped")


def _refusing_client() -> httpx.Client:
    def refuse(request: httpx.Request) -> httpx.Response:
        raise AssertionError(f"no request expected: {request.method} {request.url}")

    return httpx.Client(transport=httpx.MockTransport(refuse))


def _api(forge: Forge, base: str = "https://forge.example/api") -> ForgeApi:
    return ForgeApi(forge, base, "octo-org/api", "s3cr3t-token")


@pytest.mark.parametrize(("name", "forge"), [(n, f) for n, f in FORGE_LIST if not f.redelivers])
def test_a_forge_without_a_delivery_log_refuses_permanently_without_calling_it(
    name: str, forge: Forge
):
    api = _api(forge)
    delivery = Delivery("guid", 1, "push", 503, None, False)
    with _refusing_client() as http:
        for call in (
            lambda: forge.find_hook(http, api, "https://ci.example"),
            lambda: forge.deliveries(http, api, 1, datetime.now(UTC)),
            lambda: forge.redeliver(http, api, 1, delivery),
        ):
            with pytest.raises(ApiError, match="not supported") as raised:
                call()
            assert raised.value.retry_after is None  # never retried: it cannot pass


def test_github_alone_redelivers_and_reconcile_says_so():
    assert [n for n, f in FORGE_LIST if f.redelivers] == ["github"]
    assert redelivering() == "GitHub"


def test_github_deliveries_are_normalised_and_stop_at_since():
    now = datetime.now(UTC)
    stamp = lambda **d: (now - timedelta(**d)).strftime("%Y-%m-%dT%H:%M:%SZ")  # noqa: E731
    page: list[dict[str, object]] = [
        {"id": 9, "guid": "g9", "event": "push", "status_code": 503,
         "delivered_at": stamp(minutes=1), "redelivery": True},
        {"id": "x", "guid": None, "event": 3, "status_code": 0, "delivered_at": stamp(minutes=2)},
        {"id": 7, "guid": "old", "delivered_at": stamp(days=2)},
    ]  # fmt: skip
    seen: list[str] = []

    def answer(request: httpx.Request) -> httpx.Response:
        seen.append(f"{request.method} {request.url.path}")
        nxt = '<https://forge.example/api/next?cursor=2>; rel="next"'
        return httpx.Response(200, json=page, headers={"Link": nxt})

    forge = FORGES["github"]
    with httpx.Client(transport=httpx.MockTransport(answer)) as http:
        found = forge.deliveries(http, _api(forge), 5, now - timedelta(days=1))
        forge.redeliver(http, _api(forge), 5, found[0])
    assert found == [
        Delivery("g9", 9, "push", 503, page[0]["delivered_at"], True),
        Delivery("", None, None, 0, page[1]["delivered_at"], False),
    ]
    # An older delivery on the first page: the next page is never read.
    assert seen == [
        "GET /api/repos/octo-org/api/hooks/5/deliveries",
        "POST /api/repos/octo-org/api/hooks/5/deliveries/9/attempts",
    ]


@pytest.mark.parametrize(
    ("provider", "clone_url", "header", "value"),
    [
        ("github", "https://github.com/octo-org/api.git", "Authorization", "Bearer s3cr3t"),
        ("gitlab", "https://gitlab.example/octo-org/api.git", "PRIVATE-TOKEN", "s3cr3t"),
        ("gitea", "https://gitea.example/octo-org/api.git", "Authorization", "token s3cr3t"),
        ("forgejo", "https://codeberg.org/octo-org/api.git", "Authorization", "token s3cr3t"),
    ],
)
def test_connect_gives_each_forge_its_api_and_auth_header_and_hides_the_token(
    provider: str, clone_url: str, header: str, value: str
):
    repo = RepoConfig(name="octo-org/api", clone_url=clone_url, secret_env="S", provider=provider)
    api = connect(repo, "s3cr3t")
    assert api is not None and api.forge is forge_for(provider) and api.base == api_base(repo)
    headers = api.headers()
    assert headers[header] == value and headers["User-Agent"] == "trainhook"
    assert "s3cr3t" not in repr(api)
    assert connect(repo, None) is None and connect(repo, "") is None


def test_an_unknown_provider_has_no_forge_and_no_api():
    assert forge_for("bitbucket") is None and forge_for(None) is None
    repo = RepoConfig(name="o/r", clone_url="https://bitbucket.org/o/r.git", secret_env="S")
    object.__setattr__(repo, "provider", "bitbucket")
    assert api_base(repo) is None and connect(repo, "token") is None


def test_a_forgejo_commit_links_to_its_page_like_gitea():
    url = "https://codeberg.org/team/api.git"
    assert commit_url(url, "forgejo", SHA) == f"https://codeberg.org/team/api/commit/{SHA}"


def _hooks_client(answer: object, status: int = 200) -> httpx.Client:
    def hooks(request: httpx.Request) -> httpx.Response:
        assert request.method == "GET" and request.url.path == "/api/repos/octo-org/api/hooks"
        return httpx.Response(status, json=answer)

    return httpx.Client(transport=httpx.MockTransport(hooks))


def _hook(id_: int, url: str | None) -> dict[str, object]:
    return {"id": id_, "config": {"url": url} if url is not None else None}


def test_github_finds_the_one_hook_delivering_to_the_public_url_with_or_without_a_slash():
    forge = FORGES["github"]
    hooks = [
        _hook(1, "https://other.example/webhooks/github"),
        _hook(2, "https://ci.example/webhooks/github/"),
        _hook(3, None),
    ]
    with _hooks_client(hooks) as http:
        assert forge.find_hook(http, _api(forge), "https://ci.example") == 2


def test_github_without_a_public_url_finds_the_hook_by_its_route_alone():
    forge = FORGES["github"]
    hooks = [
        _hook(4, "https://ci.example/webhooks/gitlab"),
        _hook(5, "https://ci.example/webhooks/github"),
    ]
    with _hooks_client(hooks) as http:
        assert forge.find_hook(http, _api(forge), "") == 5


def test_github_refuses_to_guess_between_two_hooks_or_none_naming_what_it_found():
    forge = FORGES["github"]
    two = [
        _hook(6, "https://a.example/webhooks/github"),
        _hook(7, "https://b.example/webhooks/github"),
    ]
    with _hooks_client(two) as http, pytest.raises(ApiError, match=r"2 hooks \(\[6, 7\]\)"):
        forge.find_hook(http, _api(forge), "")
    answers: list[object] = [[], {"message": "not a list"}]
    for answer in answers:
        with _hooks_client(answer) as http, pytest.raises(ApiError, match="no hook delivering"):
            forge.find_hook(http, _api(forge), "https://ci.example")


def test_github_says_which_call_failed_when_the_hooks_cannot_be_listed():
    forge = FORGES["github"]
    failed = "list the hooks of octo-org/api: HTTP 404 Not Found"
    with (
        _hooks_client({"message": "Not Found"}, 404) as http,
        pytest.raises(ApiError, match=failed),
    ):
        forge.find_hook(http, _api(forge), "https://ci.example")


@pytest.mark.parametrize(
    ("clone_url", "link"),
    [
        ("https://github.com/o/r.git", f"https://github.com/o/r/commit/{SHA}"),
        ("https://gitlab.example.com/o/r.git", f"https://gitlab.example.com/o/r/-/commit/{SHA}"),
        ("https://git.example.com/o/r.git", None),  # Gitea or Forgejo: only a provider says
        ("https://ungithub.com/o/r.git", None),
    ],
)
def test_without_a_provider_only_a_host_that_names_its_forge_gets_a_commit_link(
    clone_url: str, link: str | None
):
    assert commit_url(clone_url, None, SHA) == link


@pytest.mark.parametrize("name", ["github", "gitlab", "gitea"])
def test_a_push_listing_the_most_commits_a_payload_can_hold_is_never_taken_as_complete(name: str):
    from service.forges.github import MAX_COMMITS

    forge = FORGES[name]
    if name == "github":
        assert forge.lists_every_commit({"forced": False}, MAX_COMMITS - 1)
        assert not forge.lists_every_commit({"forced": False}, MAX_COMMITS)
        assert not forge.lists_every_commit({"forced": True}, 1)
        assert not forge.lists_every_commit({}, 1)
    else:
        total = "total_commits_count" if name == "gitlab" else "total_commits"
        assert forge.lists_every_commit({total: 3}, 3)
        assert not forge.lists_every_commit({total: 30}, 20)
        assert not forge.lists_every_commit({total: True}, 1)


def _status_client(seen: list[tuple[str, dict[str, object]]], status: int, message: str):
    def answer(request: httpx.Request) -> httpx.Response:
        import json

        seen.append((f"{request.method} {request.url}", json.loads(request.content)))
        return httpx.Response(status, json={"message": message})

    return httpx.Client(transport=httpx.MockTransport(answer))


@pytest.mark.parametrize(
    ("ref", "sent"),
    [
        ("refs/heads/main", "main"),
        ("refs/tags/v1.2", "v1.2"),
        ("refs/merge-requests/7/head", None),  # GitLab takes the commit's own ref then
    ],
)
def test_gitlab_statuses_name_the_branch_or_tag_and_no_other_ref(ref: str, sent: str | None):
    from service.forges import Report

    forge = FORGES["gitlab"]
    seen: list[tuple[str, dict[str, object]]] = []
    report = Report(1, SHA, ref, "running", "running", "training", None)
    with _status_client(seen, 201, "") as http:
        forge.send_status(http, _api(forge), report)
    [(call, body)] = seen
    assert call == f"POST https://forge.example/api/projects/octo-org%2Fapi/statuses/{SHA}"
    assert body.get("ref", None) == sent and ("ref" in body) == (sent is not None)


def test_gitlab_status_refused_for_another_reason_than_an_unchanged_state_is_an_error():
    from service.forges import Report

    forge = FORGES["gitlab"]
    report = Report(1, SHA, "refs/heads/main", "running", "running", "training", None)
    seen: list[tuple[str, dict[str, object]]] = []
    with _status_client(seen, 400, "Cannot transition status via :run from :running") as http:
        forge.send_status(http, _api(forge), report)  # already sent: fine
    refused = _status_client(seen, 400, "name is too long")
    with refused as http, pytest.raises(ApiError, match="name is too long"):
        forge.send_status(http, _api(forge), report)


def test_gitlab_reads_a_merge_requests_notes_oldest_first():
    forge = FORGES["gitlab"]
    seen: list[str] = []

    def answer(request: httpx.Request) -> httpx.Response:
        seen.append(str(request.url))
        return httpx.Response(200, json=[{"id": 11, "body": "<!-- trainhook --> ok"}])

    with httpx.Client(transport=httpx.MockTransport(answer)) as http:
        assert forge.find_comment(http, _api(forge), 7, "<!-- trainhook -->") == "11"
    assert seen == [
        "https://forge.example/api/projects/octo-org%2Fapi/merge_requests/7/notes"
        "?per_page=100&sort=asc&order_by=created_at"
    ]


@pytest.mark.parametrize(
    ("name", "own", "other", "title"),
    [("gitea", "X-Gitea", "X-Forgejo", "Gitea"), ("forgejo", "X-Forgejo", "X-Gitea", "Forgejo")],
)
def test_gitea_and_forgejo_read_their_own_headers_first_then_the_other_forks_and_name_both(
    name: str, own: str, other: str, title: str
):
    from service.forges import BadRequest, Unauthorized
    from service.forges.gitea import Gitea, signature

    forge = Gitea(name)  # a new adapter: the registry's were made at import
    assert (forge.name, forge.title) == (name, title)
    with _refusing_client() as http, pytest.raises(ApiError, match=f"^{title}: listing"):
        forge.find_hook(http, _api(forge), "")
    mine, theirs = own.lower(), other.lower()
    for prefix in (mine, theirs):
        event = forge.event({f"{prefix}-event": "ping", f"{prefix}-delivery": "d-1"}, {})
        assert (event.event, event.delivery_id, event.hook_id) == ("ping", "d-1", "")
        forge.verify({f"{prefix}-signature": signature("s", b"{}")}, b"{}", "s")
    both = {f"{mine}-event": "ping", f"{theirs}-event": "issues",
            f"{mine}-delivery": "a", f"{theirs}-delivery": "b"}  # fmt: skip
    assert (forge.event(both, {}).event, forge.event(both, {}).delivery_id) == ("ping", "a")
    with pytest.raises(BadRequest, match=rf"^missing {own}-Event \(or {other}-Event\) header$"):
        forge.event({}, {})
    with pytest.raises(BadRequest, match=rf"^missing {own}-Delivery \(or {other}-Delivery\) h"):
        forge.event({f"{mine}-event": "ping"}, {})
    with pytest.raises(Unauthorized, match=rf"^missing {own}-Signature \(or {other}-Signature\)"):
        forge.verify({}, b"{}", "s")


def test_a_gitea_adapter_is_only_gitea_or_forgejo():
    from service.forges.gitea import Gitea

    assert Gitea().name == "gitea"
    with pytest.raises(ValueError, match="must be 'gitea' or 'forgejo', not 'gogs'"):
        Gitea("gogs")


@pytest.mark.parametrize(
    ("provider", "headers"),
    [
        ("github", {"Accept": "application/vnd.github+json", "X-GitHub-Api-Version": "2022-11-28",
                    "Authorization": "Bearer t0k"}),
        ("gitlab", {"Accept": "application/json", "PRIVATE-TOKEN": "t0k"}),
        ("gitea", {"Accept": "application/json", "Authorization": "token t0k"}),
        ("forgejo", {"Accept": "application/json", "Authorization": "token t0k"}),
    ],
)  # fmt: skip
def test_each_forge_asks_for_its_documented_media_type_with_its_token(
    provider: str, headers: dict[str, str]
):
    assert FORGES[provider].api_headers("t0k") == headers


def test_a_created_comments_id_is_a_non_empty_number_or_text_and_nothing_else():
    from service.forges import comment_id

    assert comment_id({"id": 5}, "note") == "5" and comment_id({"id": "c-9"}, "note") == "c-9"
    for answer in ({"id": True}, {"id": ""}, {"id": None}, {"id": 1.5}, {}, [{"id": 5}], None):
        with pytest.raises(ApiError, match=r"^note on !7: the answer names no comment id$"):
            comment_id(answer, "note on !7")


def test_the_marked_comment_is_the_first_with_the_marker_and_an_id_in_a_list_answer():
    from service.forges import marked

    answer = ["not a comment", {"body": "<!-- m --> no id"}, {"id": 2, "body": "other"},
              {"id": 3, "body": "x <!-- m --> y"}, {"id": 4, "body": "<!-- m -->"}]  # fmt: skip
    assert marked(answer, "<!-- m -->") == "3"
    assert marked({"id": 3, "body": "<!-- m -->"}, "<!-- m -->") is None
    assert marked(None, "<!-- m -->") is None  # a forge answering `null`


def test_gitlab_comment_calls_name_the_request_and_encode_the_note_id():
    forge = FORGES["gitlab"]
    seen: list[str] = []

    def refuse(request: httpx.Request) -> httpx.Response:
        seen.append(f"{request.method} {request.url.raw_path.decode()}")
        return httpx.Response(403, json={"message": "403 Forbidden"})

    base = "/api/projects/octo-org%2Fapi/merge_requests/7/notes"
    with httpx.Client(transport=httpx.MockTransport(refuse)) as http:
        with pytest.raises(ApiError, match=r"^note on !7 of octo-org/api: HTTP 403"):
            forge.create_comment(http, _api(forge), 7, "hello")
        with pytest.raises(ApiError, match=r"^edit note a/b on !7 of octo-org/api: HTTP 403"):
            forge.edit_comment(http, _api(forge), 7, "a/b", "hello")
        with pytest.raises(ApiError, match=r"^list the notes on !7 of octo-org/api: HTTP 403"):
            forge.find_comment(http, _api(forge), 7, "<!-- m -->")
    assert seen == [
        f"POST {base}",
        f"PUT {base}/a%2Fb",
        f"GET {base}?per_page=100&sort=asc&order_by=created_at",
    ]


def test_github_deliveries_keep_one_at_since_and_read_a_last_page_without_a_link():
    now = datetime.now(UTC).replace(microsecond=0)
    since = now - timedelta(hours=1)
    at = since.strftime("%Y-%m-%dT%H:%M:%SZ")
    page = [{"id": 1, "guid": "g1", "delivered_at": at}]

    def answer(request: httpx.Request) -> httpx.Response:
        return httpx.Response(200, json=page)  # no Link header: the last page

    forge = FORGES["github"]
    with httpx.Client(transport=httpx.MockTransport(answer)) as http:
        assert [d.guid for d in forge.deliveries(http, _api(forge), 5, since)] == ["g1"]


def test_github_delivery_log_calls_that_fail_say_which_hook_and_delivery():
    forge = FORGES["github"]

    def answer(request: httpx.Request) -> httpx.Response:
        if request.method == "GET":
            return httpx.Response(200, json={"message": "not a list"})
        return httpx.Response(404, json={"message": "Not Found"})

    with httpx.Client(transport=httpx.MockTransport(answer)) as http:
        with pytest.raises(ApiError, match=r"^hook 5: the deliveries answer is not a list$"):
            forge.deliveries(http, _api(forge), 5, datetime.now(UTC))
        delivery = Delivery("g9", 9, "push", 503, None, False)
        with pytest.raises(ApiError, match=r"^redeliver g9: HTTP 404 Not Found$"):
            forge.redeliver(http, _api(forge), 5, delivery)


def test_a_gitlab_note_created_without_an_id_is_an_error_naming_the_note():
    forge = FORGES["gitlab"]

    def answer(request: httpx.Request) -> httpx.Response:
        return httpx.Response(201, json={"body": "hello"})

    no_id = r"^note on !7 of octo-org/api: the answer names no comment id$"
    with (
        httpx.Client(transport=httpx.MockTransport(answer)) as http,
        pytest.raises(ApiError, match=no_id),
    ):
        forge.create_comment(http, _api(forge), 7, "hello")
