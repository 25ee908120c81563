"""`trainhook tokens add NAME [--read]`, `tokens list`, `tokens revoke NAME`: per-person
API tokens, stored hashed (trainhook/apitokens.py). A new token is printed once."""

from __future__ import annotations

import argparse

from trainhook.apitokens import TokenError, add_token, list_tokens, revoke_token
from trainhook.errors import TrainhookError
from trainhook.runtime import build_runtime
from trainhook.settings import load_settings


def cmd_tokens(args: argparse.Namespace) -> int:
    runtime = build_runtime(load_settings())
    try:
        if args.action == "add":
            try:
                token = add_token(runtime.engine, args.name, "read" if args.read else "write")
            except TokenError as exc:
                raise TrainhookError(str(exc)) from None
            scope = "read" if args.read else "read and write"
            # Printed once, to stdout only, so it can be piped into a secret store.
            print(token)
            print(f"token for {args.name} ({scope}); it is not stored and cannot be shown again")
        elif args.action == "revoke":
            if not revoke_token(runtime.engine, args.name):
                raise TrainhookError(f"no live token named {args.name!r}")
            print(f"revoked the token of {args.name}")
        else:
            for row in list_tokens(runtime.engine):
                state = f"revoked {row.revoked_at:%Y-%m-%d}" if row.revoked_at else "live"
                print(f"{row.name}\t{row.scope}\tcreated {row.created_at:%Y-%m-%d}\t{state}")
    finally:
        runtime.close()
    return 0
