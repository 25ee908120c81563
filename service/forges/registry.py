"""The forges by name: the one place that picks a forge for a provider.

Everything else asks the forge it gets here (`forge_for`) and never compares a provider with a
forge's name; `tests/forges/test_forge_interface.py` checks that.
"""

from __future__ import annotations

from service.forges import Forge, ForgeApi
from service.forges.api import web_host
from service.forges.gitea import Gitea
from service.forges.github import GitHub
from service.forges.gitlab import GitLab
from trainhook.repos import RepoConfig

# The route picks the verifier: a header naming another forge never changes which one runs.
# Each route serves the repositories configured with the provider of the same name.
FORGES: dict[str, Forge] = {
    "github": GitHub(),
    "gitlab": GitLab(),
    "gitea": Gitea("gitea"),
    "forgejo": Gitea("forgejo"),
}


def forge_for(provider: str | None) -> Forge | None:
    """The forge a repository's `provider` names; None for an unknown one."""
    return FORGES.get(provider or "")


def forge_for_host(host: str) -> Forge | None:
    """The forge a web host name alone reveals (github.com, a host named gitlab…), else None."""
    return next((forge for forge in FORGES.values() if forge.serves_host(host)), None)


def api_base(repo: RepoConfig) -> str | None:
    """The API base URL of a repository's forge (no trailing slash); None when unknown."""
    if repo.forge_api_url:
        return repo.forge_api_url.rstrip("/")
    forge, found = forge_for(repo.provider), web_host(repo.clone_url)
    if forge is None or found is None:
        return None
    return forge.api_base(*found)


def connect(repo: RepoConfig, token: str | None) -> ForgeApi | None:
    """The repository's API with `token`; None without a token or a known API URL."""
    forge, base = forge_for(repo.provider), api_base(repo)
    if not token or forge is None or base is None:
        return None
    return ForgeApi(forge, base, repo.name, token)


def redelivering() -> str:
    """The titles of the forges whose API can redeliver a hook ("GitHub")."""
    return " and ".join(forge.title for forge in FORGES.values() if forge.redelivers)
