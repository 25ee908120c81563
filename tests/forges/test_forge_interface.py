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
    page = [
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
