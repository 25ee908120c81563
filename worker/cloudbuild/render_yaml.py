"""A small YAML writer for Cloud Build requests (JSON-like data), so `trainhook
cloudbuild-config` prints what a person reads in a cloudbuild.yaml: scripts as literal blocks,
everything else quoted exactly (strings as JSON strings, which YAML reads the same way)."""

from __future__ import annotations

import json
import re
from typing import Any

PLAIN_KEY = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
RESERVED = {"true", "false", "yes", "no", "on", "off", "y", "n", "null"}  # YAML 1.1 reads these
# Characters YAML will not read raw (or reads as line breaks): written as \u escapes.
UNSAFE = re.compile("[\x00-\x08\x0b-\x1f\x7f-\x9f\u2028\u2029\ud800-\udfff\ufeff\ufffe\uffff]")


def _quote(text: str) -> str:
    return UNSAFE.sub(lambda m: f"\\u{ord(m.group()):04x}", json.dumps(text, ensure_ascii=False))


def _key(key: str) -> str:
    plain = PLAIN_KEY.fullmatch(key) and key.lower() not in RESERVED
    return key if plain else _quote(key)


def _block(text: str) -> str | None:
    """The literal block indicator for `text`, or None when it must be quoted instead."""
    if "\n" not in text or UNSAFE.search(text) or text[:1] in (" ", "\n", "\t"):
        return None
    if any(line != line.rstrip(" \t") for line in text.split("\n")):
        return None
    if text.endswith("\n\n"):
        return None
    return "|" if text.endswith("\n") else "|-"


def _scalar(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return json.dumps(value)
    if isinstance(value, str):
        return _quote(value)
    if value == {} or value == []:
        return "{}" if isinstance(value, dict) else "[]"
    raise TypeError(f"cannot write {type(value).__name__} as YAML")


def _inline(value: Any) -> bool:
    return not isinstance(value, dict | list) or not value


def _value_lines(head: str, value: Any, indent: int) -> list[str]:
    """`head` (a `key:` or `-` prefix) followed by `value`, whose block lines sit at `indent`."""
    if isinstance(value, str) and (indicator := _block(value)):
        pad = " " * indent
        body = value[:-1] if value.endswith("\n") else value
        return [f"{head} {indicator}", *(pad + line if line else "" for line in body.split("\n"))]
    if _inline(value):
        return [f"{head} {_scalar(value)}"]
    return [head, *_lines(value, indent)]


def _lines(value: Any, indent: int) -> list[str]:
    pad = " " * indent
    out: list[str] = []
    if isinstance(value, dict):
        for key, item in value.items():
            out += _value_lines(f"{pad}{_key(str(key))}:", item, indent + 2)
    else:
        for item in value:
            if isinstance(item, dict) and item:
                nested = _lines(item, indent + 2)
                out += [f"{pad}- {nested[0].lstrip()}", *nested[1:]]
            else:
                out += _value_lines(f"{pad}-", item, indent + 2)
    return out


def to_yaml(value: dict[str, Any]) -> str:
    """`value` as a YAML document that `yaml.safe_load` reads back equal to `value`."""
    return "\n".join(_lines(value, 0)) + "\n"
