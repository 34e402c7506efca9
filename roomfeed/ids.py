"""Identifiers: short, prefixed, URL-safe, unguessable (`room_4f9c2e...`)."""

from __future__ import annotations

import secrets


def new_id(prefix: str) -> str:
    return f"{prefix}_{secrets.token_hex(8)}"
