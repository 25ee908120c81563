"""Cloud Build's rules for a request, as the fake applies them: the substitution checks it
makes on create, and what a step's container sees once substitutions are applied."""

from __future__ import annotations

import re
from typing import Any

BUILT_IN = {"PROJECT_ID", "PROJECT_NUMBER", "BUILD_ID", "LOCATION", "SERVICE_ACCOUNT_EMAIL"}
REFERENCE = re.compile(r"\$(\$|\{(\w+)\}|(\w+))")
TAG_RE = re.compile(r"^[\w][\w.-]{0,127}$")


def _strings(value: Any) -> list[str]:
    if isinstance(value, dict):
        return [s for v in value.values() for s in _strings(v)]
    if isinstance(value, list):
        return [s for v in value for s in _strings(v)]
    return [value] if isinstance(value, str) else []


def invalid(body: dict[str, Any]) -> str | None:
    """Why Cloud Build would refuse `body` (the checks it makes on substitutions, step ids,
    waitFor and tags), or None."""
    template = {k: v for k, v in body.items() if k != "substitutions"}
    used = {
        m.group(2) or m.group(3)
        for text in _strings(template)
        for m in REFERENCE.finditer(text)
        if m.group(1) != "$"
    }
    defined = set(body.get("substitutions", {}))
    if missing := sorted(used - defined - BUILT_IN):
        return f'invalid build: key in the template "{missing[0]}" is not a valid substitution'
    if unused := sorted(defined - used):
        return f'invalid build: key "{unused[0]}" in the substitution data is not matched'
    seen: set[str] = set()
    for step in body.get("steps", []):
        if step.get("id") in seen:
            return f"invalid build: duplicate step id {step['id']!r}"
        if any(w not in seen and w != "-" for w in step.get("waitFor", [])):
            return f"invalid build: step {step.get('id')!r} waits for an unknown step"
        seen.add(step.get("id", ""))
    if bad := [t for t in body.get("tags", []) if not TAG_RE.match(t)]:
        return f"invalid build: invalid tag {bad[0]!r}"
    return None


def substitute(text: str, values: dict[str, str]) -> str:
    """`text` after Cloud Build's substitution: `$$` is a literal `$`, `$X`/`${X}` a value."""

    def one(match: re.Match[str]) -> str:
        if match.group(1) == "$":
            return "$"
        return values[match.group(2) or match.group(3)]

    return REFERENCE.sub(one, text)


def step_environment(
    request: dict[str, Any], step_id: str, project: str
) -> tuple[str, dict[str, str]]:
    """What a step's container sees: its script (args[-1]) and environment, substituted."""
    values = {**request.get("substitutions", {}), "PROJECT_ID": project}
    step = next(s for s in request["steps"] if s["id"] == step_id)
    env = dict(substitute(item, values).split("=", 1) for item in step.get("env", []))
    return substitute(step["args"][-1], values), env
