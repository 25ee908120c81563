"""Path filters: which changed files make a push build (`paths`, `paths_ignore`).

Glob syntax, matched against the whole path from the repository root (`/`-separated, no
leading `/`), as GitHub Actions' path filters do:

- `*` matches any run of characters except `/` (`*.md`: Markdown files at the root only);
- `**` matches any run of characters including `/` (`docs/**`: everything under `docs/`);
  `**/` also matches nothing (`**/README.md` matches `README.md` too);
- `?` matches one character except `/`; `[abc]`, `[a-z]`, `[!abc]` match one character of
  (or not of) the set;
- anything else matches itself. Negation (`!pattern`) is not supported: use `paths_ignore`.

A changed file is *relevant* when it matches at least one `paths` pattern (every file does
when `paths` is empty) and no `paths_ignore` pattern: `paths_ignore` wins. A push builds when
at least one changed file is relevant; a push that changed no file at all (an empty commit)
builds too, since no filter can say it is uninteresting.
"""

from __future__ import annotations

import re
from collections.abc import Collection, Iterable
from dataclasses import dataclass
from functools import cached_property

IGNORED = "only ignored paths changed"  # the start of every such reason (and build error)
SHOWN = 5  # how many files a reason names


class PatternError(ValueError):
    """A pattern this syntax cannot express; the message says why."""


def check_pattern(pattern: str) -> None:
    """Raise PatternError for a pattern that is empty, negated, absolute or unbalanced."""
    if not pattern:
        raise PatternError("a pattern must not be empty")
    if pattern.startswith("!"):
        raise PatternError(f"{pattern!r}: negation is not supported, use paths_ignore")
    if pattern.startswith("/") or pattern.startswith("./"):
        raise PatternError(f"{pattern!r}: patterns are relative to the repository root")
    try:
        re.compile(translate(pattern))
    except re.error as exc:
        raise PatternError(f"{pattern!r}: not a valid pattern ({exc})") from None


def translate(pattern: str) -> str:
    """The regular expression (for `re.fullmatch`) of one glob pattern."""
    out, i, n = [], 0, len(pattern)
    while i < n:
        c = pattern[i]
        if c == "*":
            if pattern.startswith("**", i):
                i += 2
                if pattern.startswith("/", i):
                    out.append("(?:.*/)?")
                    i += 1
                else:
                    out.append(".*")
                continue
            out.append("[^/]*")
        elif c == "?":
            out.append("[^/]")
        elif c == "[":
            end = pattern.find("]", i + 2 if pattern.startswith("[!", i) else i + 1)
            if end < 0:
                raise PatternError(f"{pattern!r}: '[' without a closing ']'")
            body = pattern[i + 1 : end]
            negate = body.startswith("!")
            body = body[1:] if negate else body
            escaped = "".join("\\" + ch if ch in "\\^[]" else ch for ch in body)
            out.append(f"(?!/)[{'^' if negate else ''}{escaped}]")
            i = end
        else:
            out.append(re.escape(c))
        i += 1
    return "".join(out)


def _compile(patterns: Iterable[str]) -> re.Pattern[str] | None:
    parts = [f"(?:{translate(p)})" for p in patterns]
    return re.compile("|".join(parts), re.DOTALL) if parts else None


@dataclass(frozen=True)
class PathFilter:
    """The `paths` / `paths_ignore` of one repository."""

    paths: tuple[str, ...] = ()
    ignore: tuple[str, ...] = ()

    @property
    def active(self) -> bool:
        """False when nothing is configured: every push builds, no diff is needed."""
        return bool(self.paths or self.ignore)

    @cached_property
    def _include(self) -> re.Pattern[str] | None:
        return _compile(self.paths)

    @cached_property
    def _exclude(self) -> re.Pattern[str] | None:
        return _compile(self.ignore)

    def relevant(self, path: str) -> bool:
        """True when a change to `path` should make the push build."""
        if self._exclude is not None and self._exclude.fullmatch(path):
            return False
        return self._include is None or self._include.fullmatch(path) is not None

    def ignore_reason(self, changed: Collection[str]) -> str | None:
        """Why a push that changed exactly `changed` builds nothing, or None when it builds."""
        if not self.active or not changed or any(self.relevant(p) for p in changed):
            return None
        files = sorted(changed)
        shown = ", ".join(files[:SHOWN]) + (
            f", … ({len(files)} files)" if len(files) > SHOWN else ""
        )
        rules = []
        if self.paths:
            rules.append(f"paths = {list(self.paths)}")
        if self.ignore:
            rules.append(f"paths_ignore = {list(self.ignore)}")
        return f"{IGNORED}: {shown} (filtered by {' and '.join(rules)})"
