"""Where model artifacts are stored: PostgreSQL large objects, written and read in chunks.

A `bytea` column stops at 1 GB, and one value that size has to pass whole through the protocol and
the server's memory. A large object (`lo_*`) has no such ceiling (4 TB) and is written and read
CHUNK bytes at a time, inside the registering transaction, so a registry row and its artifact
appear together or not at all. Every API process still loads models from the database it already
reaches: no shared filesystem to mount. The checksum (sha256) is computed as the chunks pass.
"""

from __future__ import annotations

import hashlib
from typing import Any

CHUNK = 32 * 1024 * 1024  # bytes per lo_put / lo_get call


async def write(conn: Any, blob: bytes | memoryview) -> tuple[int, str]:
    """Store `blob` as a new large object (inside the caller's transaction); its oid and sha256."""
    view = memoryview(blob)
    digest = hashlib.sha256()
    oid: int = await conn.fetchval("SELECT lo_from_bytea(0, $1)", bytes(view[:CHUNK]))
    digest.update(view[:CHUNK])
    for offset in range(CHUNK, len(view), CHUNK):
        chunk = view[offset : offset + CHUNK]
        await conn.execute("SELECT lo_put($1, $2, $3)", oid, offset, bytes(chunk))
        digest.update(chunk)
    return oid, digest.hexdigest()


async def read(conn: Any, oid: int, size: int) -> tuple[bytes, str]:
    """The large object's `size` bytes and their sha256 (a transaction of its own, as lo_get needs none)."""
    out = bytearray(size)
    digest = hashlib.sha256()
    for offset in range(0, size, CHUNK):
        chunk: bytes = await conn.fetchval(
            "SELECT lo_get($1, $2, $3)", oid, offset, min(CHUNK, size - offset)
        )
        out[offset : offset + len(chunk)] = chunk
        digest.update(chunk)
    return bytes(out), digest.hexdigest()
