"""`roomfeed keys`: API keys (create, list, revoke), the signing keyrings' ids, and viewer tokens.

    roomfeed keys create --role operator|merchant|order_system [--merchant-id M] [--label L] [--json]
    roomfeed keys list [--role R] [--merchant-id M] [--revoked] [--json]
    roomfeed keys revoke KEY_ID [--json]
    roomfeed keys viewer-token VIEWER [--ttl S]

Keys are shown once at creation; PostgreSQL keeps only their SHA-256. A revoked key is refused by
every API process within `KEY_CACHE_SECONDS`. `list` also shows the key ids of the viewer-token and
attribution-code keyrings (which one signs) and of the viewer JWKS, never a secret.
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any, get_args

import asyncpg

from roomfeed.auth import (
    KEY_CACHE_SECONDS,
    Keyring,
    KeyRole,
    ViewerTokens,
    create_key,
    list_keys,
    revoke_key,
    sign_viewer_token_with,
)
from roomfeed.settings import Settings

KEY_ROLES: tuple[str, ...] = get_args(KeyRole)


def add_keys_args(parser: argparse.ArgumentParser) -> None:
    verbs = parser.add_subparsers(dest="keys_verb", required=True)
    c = verbs.add_parser("create", help="create a key (shown once)")
    c.add_argument("--role", choices=KEY_ROLES, required=True)
    c.add_argument("--merchant-id")
    c.add_argument("--label", default="")
    c.add_argument("--json", action="store_true", help="print JSON")
    ls = verbs.add_parser("list", help="list keys (never their secrets) and signing key ids")
    ls.add_argument("--role", choices=KEY_ROLES)
    ls.add_argument("--merchant-id")
    ls.add_argument("--revoked", action="store_true", help="include revoked keys")
    ls.add_argument("--json", action="store_true", help="print JSON")
    r = verbs.add_parser("revoke", help="revoke a key by its id")
    r.add_argument("key_id")
    r.add_argument("--json", action="store_true", help="print JSON")
    t = verbs.add_parser("viewer-token", help="sign a viewer token (what the platform login does)")
    t.add_argument("viewer_id")
    t.add_argument("--ttl", type=int, default=30 * 24 * 3600)


async def _pool(settings: Settings) -> asyncpg.Pool:
    from roomfeed.db import migrate

    await migrate(settings.database_url)
    pool: asyncpg.Pool = await asyncpg.create_pool(settings.database_url, min_size=1, max_size=1)
    return pool


async def run(settings: Settings, args: argparse.Namespace) -> int:
    if args.keys_verb == "viewer-token":
        print(sign_viewer_token_with(ViewerTokens(settings).ring, args.viewer_id, ttl_seconds=args.ttl))
        return 0
    if args.keys_verb == "create" and (args.role != "operator") != (args.merchant_id is not None):
        print(
            f"roomfeed keys: --role {args.role} "
            + ("needs --merchant-id" if args.merchant_id is None else "takes no --merchant-id"),
            file=sys.stderr,
        )
        return 2
    pool = await _pool(settings)
    try:
        if args.keys_verb == "create":
            key_id, key = await create_key(pool, args.role, args.merchant_id, args.label)
            if args.json:
                print(
                    json.dumps(
                        {"key_id": key_id, "key": key, "role": args.role, "merchant_id": args.merchant_id}
                    )
                )
            else:
                print(
                    f"key_id: {key_id}\nkey:    {key}\n(the key is shown once; roomfeed stores only its hash)"
                )
            return 0
        if args.keys_verb == "list":
            keys = await list_keys(pool, role=args.role, merchant_id=args.merchant_id, revoked=args.revoked)
            signing = await signing_keys(settings)
            if args.json:
                print(json.dumps({"keys": keys, "signing": signing}))
            else:
                _print_table(keys, signing)
            return 0
        revoked = await revoke_key(pool, args.key_id)
        if args.json:
            print(json.dumps({"key_id": args.key_id, "revoked": revoked}))
        elif revoked:
            print(f"revoked {args.key_id} (refused by every API process within {KEY_CACHE_SECONDS:.0f} s)")
        else:
            print(f"no active key {args.key_id}")
        return 0 if revoked else 1
    finally:
        await pool.close()


async def signing_keys(settings: Settings) -> dict[str, Any]:
    tokens = ViewerTokens(settings)
    # The alliance checks its code keyring (kids 0..255) when it starts; here only the ids are shown.
    codes = Keyring.parse(settings.code_keys, settings.code_secret, "0")
    jwks = await tokens.refresh_jwks() if tokens.jwks_source else []
    return {
        "viewer_tokens": {"signing": tokens.ring.signing[0], "verifying": tokens.ring.kids()},
        "codes": {"signing": str(codes.signing[0]), "verifying": [str(k) for k in codes.kids()]},
        "viewer_jwks": {"source": tokens.jwks_source, "kids": sorted(jwks)},
    }


def _print_table(keys: list[dict[str, Any]], signing: dict[str, Any]) -> None:
    print(f"{'key_id':<14} {'role':<13} {'merchant_id':<22} {'created_at':<20} {'revoked_at':<20} label")
    for k in keys:
        print(
            f"{k['key_id']:<14} {k['role']:<13} {k['merchant_id'] or '-':<22} {k['created_at'][:19]:<20} "
            f"{(k['revoked_at'] or '-')[:19]:<20} {k['label']}"
        )
    for name, ring in signing.items():
        if name == "viewer_jwks":
            if ring["source"]:
                print(f"viewer JWKS {ring['source']}: kids {', '.join(ring['kids']) or '(none read)'}")
        else:
            print(f"{name}: signs with {ring['signing']}, verifies {', '.join(ring['verifying'])}")
