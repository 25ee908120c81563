"""What the stage details say, as facts for the pages: cache levels, reasons, data, metrics,
gate decision, digests, releases, links. Only reads text the worker wrote, and that text
carries what repositories control (test output, commit messages, error text): never markup
(the templates escape every value) and never a link. The links are trainhook's own: other
builds of this service, and the Cloud Build log URL the Cloud Build API returned, read from
the one event only the Cloud Build builder writes (`cloud_build_log`)."""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

from service.forges import Forge
from service.forges.registry import forge_for, forge_for_host
from trainhook.pullrequests import pull_number
from trainhook.releases import Releases
from trainhook.settings import Settings

CACHE_LEVELS = ("deps", "nltk", "model")
# `deps hit`, `nltk: miss`, `deps cache=hit` ... in the hash or train detail. The worker records
# the model level in the train stage's `cache` field; deps and nltk only when it writes them.
_LEVEL = re.compile(r"\b(deps|nltk|model)(?: cache)?\s*[:=]?\s*(hit|miss)\b", re.IGNORECASE)
# The record the Cloud Build builder writes once it has a Cloud Build (worker/cloudbuild.py,
# `record_detail`): the `build` stage's only `pending` event, whose whole detail is this line
# with the id, status and log URL the API returned. A stage's status is set by trainhook's
# code, never by text, so no repository output can produce such an event.
CLOUD_BUILD_RECORD = re.compile(r"Cloud Build id [\w-]+ [A-Z_]+; logs (https://\S+)")
CLOUD_CONSOLE = "console.cloud.google.com"
_SHA256 = re.compile(r"\bsha256:([0-9a-f]{12,64})\b")


@dataclass(frozen=True)
class Fact:
    """One labelled value shown beside a stage; `href` is a same-site path or an https URL."""

    label: str
    value: str
    href: str | None = None
    tone: str = ""  # "good" | "bad" | "warn" | "" for the badge colour


def cache_levels(build: dict[str, Any]) -> dict[str, str]:
    """{level: "hit"|"miss"} for the levels this build recorded, in deps, nltk, model order."""
    found: dict[str, str] = {}
    by_name = {s["name"]: s for s in build["stages"]}
    for name in ("hash", "train"):
        for level, result in _LEVEL.findall(by_name.get(name, {}).get("detail") or ""):
            found[level.lower()] = result.lower()
    train = by_name.get("train")
    if train and train.get("cache") in ("hit", "miss"):
        found["model"] = train["cache"]
    return {level: found[level] for level in CACHE_LEVELS if level in found}


def cloud_build_log(stage: str, status: str | None, detail: str | None) -> Fact | None:
    """The "Cloud Build log" link when this stage event is the Cloud Build builder's record of
    its build and the log URL is on the Cloud console; None for every other event."""
    if stage != "build" or status != "pending" or not detail:
        return None
    match = CLOUD_BUILD_RECORD.fullmatch(detail)
    if match is None:
        return None
    url = match[1]
    parts = urlsplit(url)
    # Belt and braces: even the builder's own record links nowhere but the console.
    if parts.hostname != CLOUD_CONSOLE or parts.port or parts.username or parts.password:
        return None
    return Fact("Cloud Build log", "open", url)


def _train(detail: str) -> list[Fact]:
    facts = []
    if m := re.search(r"cache hit: key (\w+) produced by build #(\d+)", detail):
        facts.append(Fact("model", f"reused from build #{m[2]}", f"/builds/{m[2]}", "good"))
        facts.append(Fact("model key", m[1]))
    elif "model cache hit" in detail:
        facts.append(Fact("model", "reused from the cache", None, "good"))
    elif m := re.search(r"trained \(([^)]*)\), stored as key (\w+)", detail):
        facts.append(Fact("model", f"retrained: {m[1]}", None, "warn"))
        facts.append(Fact("model key", m[2]))
    if m := re.search(r"macro F1 ([0-9.]+)", detail):
        facts.append(Fact("macro F1", m[1]))
    if m := re.search(r"quality gate refused: (.+)$", detail, re.MULTILINE):
        facts.append(Fact("quality gate", "refused: " + m[1].strip(), None, "bad"))
    elif m := re.search(r"gate: (.+)$", detail, re.MULTILINE):
        facts.append(Fact("quality gate", "passed: " + m[1].strip(), None, "good"))
    return facts


def _hash(detail: str) -> list[Fact]:
    facts = []
    if "NO DATA FILE FOUND" in detail:
        facts.append(Fact("data", "none found: trained on the generated sample", None, "bad"))
    elif m := re.search(r"\bdata (\S+)(?: \(via (\S+)\))?", detail):
        facts.append(Fact("data file", m[1] + (f" (via {m[2]})" if m[2] else "")))
    if m := re.search(r"\b([\d,]+) rows\b", detail):
        facts.append(Fact("rows", m[1]))
    for level in ("model", "deps", "nltk"):
        if m := re.search(rf"\b{level} ([0-9a-f]{{8,64}})\b", detail):
            facts.append(Fact(f"{level} key", m[1]))
    return facts


def _release(stage: str, detail: str) -> list[Fact]:
    facts = []
    if m := _SHA256.search(detail):
        facts.append(Fact("image digest" if stage != "deploy" else "digest", "sha256:" + m[1]))
    if stage == "push" and (m := re.search(r"\b(pushed|replaced|already in registry)\b", detail)):
        facts.append(Fact("registry", m[1]))
    if stage == "deploy" and (m := re.search(r"(\S+) is current \(was ([^)]*)\)", detail)):
        facts.append(Fact("deployed release", m[1], None, "good"))
        facts.append(Fact("previous release", m[2]))
    # The container builder's detail (worker/container/release.py, `deliver`).
    if stage == "deploy" and (
        m := re.search(r" in container ([0-9a-f]{12}) \(was ([^)]*)\)", detail)
    ):
        facts.append(Fact("container", m[1]))
        facts.append(Fact("previous release", m[2]))
    if stage == "deploy" and (
        m := re.search(r"health (/\S*) and smoke test (/\S*) passed", detail)
    ):
        facts.append(Fact("checks", f"health {m[1]} and smoke test {m[2]} passed", None, "good"))
    return facts


def stage_facts(stage: dict[str, Any]) -> list[Fact]:
    """Facts read from one stage's detail (and cache field), for the build page. URLs in the
    detail stay text; the Cloud Build log is linked only when `stage` is the builder's record
    (a single event, with its `status`, as the live updates send them)."""
    detail = stage.get("detail") or ""
    name = stage["name"]
    facts: list[Fact] = []
    if name == "train":
        facts += _train(detail)
    elif name == "hash":
        facts += _hash(detail)
    elif name in ("build", "push", "deploy"):
        facts += _release(name, detail)
    if m := re.search(r"\bcancel(?:led| requested)[^;\n]*", detail):
        facts.append(Fact("cancel", m[0], None, "warn"))
    log = cloud_build_log(name, stage.get("status"), detail)
    return facts + ([log] if log else [])


def _web(clone_url: str | None, provider: str | None) -> tuple[Forge, str] | None:
    """(forge, https://host/path) of a repository cloned over https from a known forge;
    None otherwise (ssh, local paths, credentials in the URL, an unknown forge)."""
    if not clone_url:
        return None
    parts = urlsplit(clone_url)
    if parts.scheme != "https" or not parts.hostname or parts.username or parts.password:
        return None
    path = parts.path.rstrip("/").removesuffix(".git").strip("/")
    if not re.fullmatch(r"[A-Za-z0-9._~-]+(?:/[A-Za-z0-9._~-]+)+", path):
        return None
    port = f":{parts.port}" if parts.port else ""
    # An unknown provider: judge by the host name.
    forge = forge_for(provider) or forge_for_host(parts.hostname.lower())
    return (forge, f"https://{parts.hostname}{port}/{path}") if forge else None


def commit_url(clone_url: str | None, provider: str | None, sha: str) -> str | None:
    """The web page of a commit when the repository is cloned over https from a forge whose
    commit URL shape is known (GitHub, GitLab, Gitea/Forgejo: each forge says it); None
    otherwise."""
    if not re.fullmatch(r"[0-9a-f]{7,64}", sha or ""):
        return None
    found = _web(clone_url, provider)
    return found[0].commit_url(found[1], sha) if found else None


def pull_request_link(settings: Settings, build: dict[str, Any]) -> dict[str, Any] | None:
    """`{"number": N, "url": …}` for a build of a pull/merge request head ref (the url is
    the request's page on its forge, None when the repository's web address is unknown);
    None for any other build."""
    number = pull_number(build["ref"])
    if number is None:
        return None
    repo = settings.repo(build["repo"], build["provider"])
    found = _web(repo.clone_url if repo else None, build["provider"])
    return {"number": number, "url": found[0].pull_url(found[1], number) if found else None}


def release_link(settings: Settings, build: dict[str, Any]) -> dict[str, Any] | None:
    """`{"url": …, "serving": bool, "current": version | None}` for a build whose image a
    container builder pushed on this machine: its repository's stable URL (built from the
    port trainhook chose, never from a stage detail) and whether this build's release is the
    one serving now. None for any other build, or where this service does not share the
    worker's TRAINHOOK_HOME."""
    repo = settings.repo(build["repo"], build["provider"])
    if repo is None:
        return None
    releases = Releases(settings.home, repo.slug)
    url = releases.known_url()
    mine = [r for r in releases.records() if r.get("build_id") == build["id"]]
    if url is None or not mine:
        return None
    current = releases.current() or {}
    return {
        "url": url,
        "serving": current.get("build_id") == build["id"],
        "current": current.get("version"),
    }
