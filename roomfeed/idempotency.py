"""`Idempotency-Key` on creates, deal claims and bookings: the same key and the same request get the
same answer, stored; the same key with another request is refused.

A caller (its role and merchant, viewer or key id) names a request with `Idempotency-Key: <1 to 255
printable characters>`. The first request with that key runs and its 2xx answer (status, body,
`Location`) is kept for `TTL_HOURS`; a repeat with the same method, path and body gets that answer
again (`Idempotent-Replayed: true`) without running twice; a repeat with another request answers
422 `idempotency_key_reused`; one that arrives while the first is still running answers 409
`idempotency_key_in_use` (retry shortly). An answer that is not 2xx is not kept: the request may be
retried with the same key. Stored in PostgreSQL (`idempotency_keys`), so every API process agrees.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Awaitable, Callable
from typing import Any, Protocol

from starlette.requests import Request
from starlette.responses import Response

from roomfeed.auth import Principal
from roomfeed.errors import ApiError, Conflict, ValidationFailed

HEADER = "Idempotency-Key"
TTL_HOURS = 24
_KEY = re.compile(r"[\x21-\x7e]{1,255}")

PARAMETER: dict[str, Any] = {
    "name": HEADER,
    "in": "header",
    "required": False,
    "description": f"names this request: a retry with the same key and body gets the same answer (kept "
    f"{TTL_HOURS} h, `Idempotent-Replayed: true`); the same key with another body answers 422 "
    "`idempotency_key_reused`",
    "schema": {"type": "string", "minLength": 1, "maxLength": 255},
}
REPLAYED: dict[str, Any] = {
    "description": "true when this is the stored answer of an earlier request with the same key",
    "schema": {"type": "string", "enum": ["true"]},
}


class _Pooled(Protocol):
    """The app a request runs in (roomfeed.app.Api): its PostgreSQL pool."""

    resources: Any


def _scope(principal: Principal) -> str:
    who = principal.viewer_id or principal.merchant_id or principal.key_id or ""
    return f"{principal.role}:{who}"


async def once(
    request: Request, principal: Principal, body: bytes, answer: Callable[[], Awaitable[Response]]
) -> Response:
    """`answer()` unless this caller sent this request with this key before (see the module)."""
    key = request.headers.get(HEADER)
    if key is None:
        return await answer()
    if not _KEY.fullmatch(key):
        raise ValidationFailed(
            f"{HEADER} must be 1 to 255 printable ASCII characters",
            fields={HEADER: "must be 1 to 255 printable ASCII characters"},
        )
    app: _Pooled = request.app
    pool = app.resources.pool
    scope = _scope(principal)
    digest = hashlib.sha256(b"\n".join([request.method.encode(), request.url.path.encode(), body])).digest()
    async with pool.acquire() as conn:
        claimed = await conn.fetchval(
            f"""
            INSERT INTO idempotency_keys (scope, key, request_hash) VALUES ($1, $2, $3)
            ON CONFLICT (scope, key) DO UPDATE SET request_hash = $3, status = NULL, body = NULL,
                location = NULL, created_at = now()
              WHERE idempotency_keys.created_at < now() - interval '{TTL_HOURS} hours'
            RETURNING true
            """,  # noqa: S608 -- a constant is formatted in
            scope,
            key,
            digest,
        )
        if not claimed:
            row = await conn.fetchrow(
                "SELECT request_hash, status, body, location FROM idempotency_keys WHERE scope = $1 AND key = $2",
                scope,
                key,
            )
    if not claimed:
        if row is None:  # forgotten in between: answer it as new
            return await once(request, principal, body, answer)
        if bytes(row["request_hash"]) != digest:
            raise ApiError(
                f"this {HEADER} was used for another request",
                status=422,
                code="idempotency_key_reused",
                fields={HEADER: "was used for another request (method, path or body differ)"},
            )
        if row["status"] is None:
            raise Conflict(
                f"the first request with this {HEADER} is still being answered; retry shortly",
                code="idempotency_key_in_use",
                headers={"Retry-After": "1"},
            )
        headers = {"Idempotent-Replayed": "true"}
        if row["location"] is not None:
            headers["Location"] = row["location"]
        return Response(
            bytes(row["body"]), status_code=row["status"], headers=headers, media_type="application/json"
        )
    try:
        response = await answer()
    except BaseException:
        await pool.execute("DELETE FROM idempotency_keys WHERE scope = $1 AND key = $2", scope, key)
        raise
    if 200 <= response.status_code < 300:
        await pool.execute(
            "UPDATE idempotency_keys SET status = $3, body = $4, location = $5 WHERE scope = $1 AND key = $2",
            scope,
            key,
            response.status_code,
            bytes(response.body),
            response.headers.get("location"),
        )
    else:
        await pool.execute("DELETE FROM idempotency_keys WHERE scope = $1 AND key = $2", scope, key)
    return response
