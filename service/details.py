"""What the stage details say, as facts for the pages: cache levels, reasons, data, metrics,
gate decision, digests, releases, links. Only reads text the worker wrote; never trusts it as
markup (the templates escape every value) or as a link unless it is a plain https URL."""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

CACHE_LEVELS = ("deps", "nltk", "model")
# `deps hit`, `nltk: miss`, `deps cache=hit` ... in the hash or train detail. The worker records
# the model level in the train stage's `cache` field; deps and nltk only when it writes them.
_LEVEL = re.compile(r"\b(deps|nltk|model)(?: cache)?\s*[:=]?\s*(hit|miss)\b", re.IGNORECASE)
_HTTPS = re.compile(r"https://[A-Za-z0-9.-]+(?::\d+)?(?:/[A-Za-z0-9\-._~/?#@!$&'()*+,;=%:]*)?")
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


def _links(detail: str) -> list[Fact]:
    facts = []
    for url in dict.fromkeys(_HTTPS.findall(detail)):
        url = url.rstrip(".,;)")
        host = urlsplit(url).hostname or ""
        if "cloud-build" in url or "cloudbuild" in url:
            facts.append(Fact("Cloud Build log", "open", url))
        elif host:
            facts.append(Fact("link", host, url))
    return facts


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
    return facts


def stage_facts(stage: dict[str, Any]) -> list[Fact]:
    """Facts read from one stage's detail (and cache field), for the build page."""
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
    return facts + _links(detail)


def commit_url(clone_url: str | None, provider: str | None, sha: str) -> str | None:
    """The web page of a commit when the repository is cloned over https from a forge whose
    commit URL shape is known (GitHub, GitLab, Gitea/Forgejo); None otherwise."""
    if not clone_url or not re.fullmatch(r"[0-9a-f]{7,64}", sha or ""):
        return None
    parts = urlsplit(clone_url)
    if parts.scheme != "https" or not parts.hostname or parts.username or parts.password:
        return None
    path = parts.path.rstrip("/").removesuffix(".git").strip("/")
    if not re.fullmatch(r"[A-Za-z0-9._~-]+(?:/[A-Za-z0-9._~-]+)+", path):
        return None
    port = f":{parts.port}" if parts.port else ""
    base = f"https://{parts.hostname}{port}/{path}"
    host = parts.hostname.lower()
    if provider not in ("github", "gitlab", "gitea"):  # unknown: judge by the host name
        provider = "github" if host == "github.com" else "gitlab" if "gitlab" in host else None
    if provider == "gitlab":
        return f"{base}/-/commit/{sha}"
    return f"{base}/commit/{sha}" if provider else None
