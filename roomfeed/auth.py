"""Who is calling: merchant and operator keys (stored hashed), viewer tokens (signed by the platform).

Every route makes one call, `await require(request, "merchant")` (or several roles), which answers
401 without valid credentials and 403 with credentials of another role. Keys are random 256-bit
secrets shown once at creation; PostgreSQL stores only their SHA-256, and verified keys are cached
in-process for `KEY_CACHE_SECONDS` so the hot path does not query the database on every request.

A viewer token is `rfv1.<base64url viewer id>.<expiry unix s>.<base64url HMAC-SHA256>`, signed with
the platform's login secret (`settings.viewer_token_secret`); roomfeed only verifies it.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import math
import secrets
import time
from dataclasses import dataclass
from typing import Any, Literal, Protocol

import asyncpg
from starlette.requests import Request

from roomfeed.errors import Forbidden, RateLimited, Unauthorized, Unavailable
from roomfeed.ratelimit import _TOKEN_BUCKETS_LUA, KEY_PREFIX, Limit, RateLimiter, buckets_for

Role = Literal["operator", "merchant", "viewer"]
KEY_CACHE_SECONDS = 30.0
VIEWER_TOKEN_PREFIX = "rfv1"
# Verified viewer tokens are remembered this long (never past their own expiry): a swiping viewer
# sends the same token many times a minute, and the HMAC check is a visible share of a feed page's CPU.
VIEWER_TOKEN_CACHE_SECONDS = 5.0
_VIEWER_TOKEN_CACHE_SIZE = 20_000


@dataclass(frozen=True)
class Principal:
    role: Role
    key_id: str | None = None
    merchant_id: str | None = None
    viewer_id: str | None = None


def hash_key(key: str) -> bytes:
    return hashlib.sha256(key.encode()).digest()


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


# --- keys -------------------------------------------------------------------------------------


async def create_key(
    pool: asyncpg.Pool, role: Literal["operator", "merchant"], merchant_id: str | None = None, label: str = ""
) -> tuple[str, str]:
    """Create a key; returns (key_id, key). The key is not stored and cannot be shown again."""
    if (role == "merchant") != (merchant_id is not None):
        raise ValueError("a merchant key needs a merchant_id, an operator key must not have one")
    key_id = secrets.token_hex(6)
    key = f"rfk_{key_id}_{secrets.token_urlsafe(32)}"
    await pool.execute(
        "INSERT INTO api_keys (key_id, key_hash, role, merchant_id, label) VALUES ($1, $2, $3, $4, $5)",
        key_id,
        hash_key(key),
        role,
        merchant_id,
        label,
    )
    return key_id, key


async def revoke_key(pool: asyncpg.Pool, key_id: str) -> bool:
    status = await pool.execute(
        "UPDATE api_keys SET revoked_at = now() WHERE key_id = $1 AND revoked_at IS NULL", key_id
    )
    KeyVerifier.forget_all()
    return bool(status.endswith(" 1"))


class KeyVerifier:
    """Verifies keys against PostgreSQL with a short in-process cache (also of misses)."""

    _cache: dict[bytes, tuple[float, Principal | None]] = {}

    def __init__(self, pool: asyncpg.Pool) -> None:
        self.pool = pool

    @classmethod
    def forget_all(cls) -> None:
        cls._cache.clear()

    async def verify(self, key: str) -> Principal | None:
        digest = hash_key(key)
        now = time.monotonic()
        cached = self._cache.get(digest)
        if cached is not None and cached[0] > now:
            return cached[1]
        try:
            row = await self.pool.fetchrow(
                "SELECT key_id, role, merchant_id FROM api_keys WHERE key_hash = $1 AND revoked_at IS NULL",
                digest,
            )
        except (OSError, asyncpg.PostgresError, TimeoutError) as exc:
            raise Unavailable("cannot verify keys right now", headers={"Retry-After": "1"}) from exc
        principal = (
            Principal(role=row["role"], key_id=row["key_id"], merchant_id=row["merchant_id"]) if row else None
        )
        if len(self._cache) > 10_000:
            self._cache.clear()
        self._cache[digest] = (now + KEY_CACHE_SECONDS, principal)
        return principal


# --- viewer tokens ----------------------------------------------------------------------------


def sign_viewer_token(secret: str, viewer_id: str, ttl_seconds: int = 30 * 24 * 3600) -> str:
    """What the platform's login does; roomfeed uses it only in the CLI, the demo and tests."""
    expires = int(time.time()) + ttl_seconds
    body = f"{VIEWER_TOKEN_PREFIX}.{_b64(viewer_id.encode())}.{expires}"
    signature = hmac.new(secret.encode(), body.encode(), hashlib.sha256).digest()
    return f"{body}.{_b64(signature)}"


def verify_viewer_token(secret: str, token: str, now: float | None = None) -> str | None:
    """The viewer id when the token is genuine and unexpired, else None."""
    parts = token.split(".")
    if len(parts) != 4 or parts[0] != VIEWER_TOKEN_PREFIX:
        return None
    body = ".".join(parts[:3])
    try:
        expected = hmac.new(secret.encode(), body.encode(), hashlib.sha256).digest()
        if not hmac.compare_digest(expected, _unb64(parts[3])):
            return None
        if int(parts[2]) < (now if now is not None else time.time()):
            return None
        viewer_id = _unb64(parts[1]).decode()
    except (ValueError, UnicodeDecodeError):
        return None
    return viewer_id if 0 < len(viewer_id) <= 64 else None


_verified_tokens: dict[str, tuple[float, str, str]] = {}


def verified_viewer(secret: str, token: str) -> str | None:
    """`verify_viewer_token` with a few seconds' memory of genuine tokens (misses are not remembered)."""
    now = time.time()
    cached = _verified_tokens.get(token)
    if cached is not None and cached[0] > now and cached[2] == secret:
        return cached[1]
    viewer_id = verify_viewer_token(secret, token, now)
    if viewer_id is not None:
        if len(_verified_tokens) >= _VIEWER_TOKEN_CACHE_SIZE:
            _verified_tokens.clear()
        # Keyed by the token, whose signature binds the viewer id and expiry; bounded by the expiry.
        _verified_tokens[token] = (
            min(now + VIEWER_TOKEN_CACHE_SECONDS, float(token.rsplit(".", 2)[1])),
            viewer_id,
            secret,
        )
    return viewer_id


# --- the one role check -----------------------------------------------------------------------


@dataclass(frozen=True)
class Guard:
    """What `require` checks a request against, one per API process: viewer tokens, keys, rate limits."""

    viewer_token_secret: str
    keys: KeyVerifier
    limiter: RateLimiter


class Guarded(Protocol):
    """The app a guarded request runs in (roomfeed.app.Api)."""

    guard: Guard


def _guard(request: Request) -> Guard:
    app: Guarded = request.app
    return app.guard


async def authenticate(request: Request) -> Principal | None:
    cached: Principal | None = request.scope.get("roomfeed.principal")
    if cached is not None:
        return cached
    header = request.headers.get("authorization", "")
    scheme, _, credential = header.partition(" ")
    if scheme.lower() != "bearer" or not credential:
        return None
    credential = credential.strip()
    principal: Principal | None = None
    if credential.startswith(VIEWER_TOKEN_PREFIX + "."):
        viewer_id = verified_viewer(_guard(request).viewer_token_secret, credential)
        if viewer_id is not None:
            principal = Principal(role="viewer", viewer_id=viewer_id)
    elif credential.startswith("rfk_") and len(credential) < 200:
        principal = await _guard(request).keys.verify(credential)
    if principal is not None:
        request.scope["roomfeed.principal"] = principal
    return principal


async def require(request: Request, *roles: Role) -> Principal:
    principal = await _authorize(request, roles)
    await _charge_rate_limits(request, principal)
    return principal


async def _authorize(request: Request, roles: tuple[Role, ...]) -> Principal:
    principal = await authenticate(request)
    if principal is None:
        raise Unauthorized(
            "a valid key or viewer token is required (Authorization: Bearer ...)",
            headers={"WWW-Authenticate": "Bearer"},
        )
    if principal.role not in roles:
        raise Forbidden(f"this route is for {' or '.join(roles)} credentials, not {principal.role}")
    return principal


@dataclass(frozen=True)
class RateCharge:
    """A request's rate-limit charge that rides the handler's own Redis pipeline (one round trip less).

    `queue(pipe)` adds the same atomic token-bucket script `RateLimiter.charge` runs; `settle(reply)`
    raises 429 `rate_limited` when a bucket was empty. The handler must settle before it writes
    anything. When the handler's pipeline cannot reach Redis the request goes through unlimited,
    as with `RateLimiter` (degrade open)."""

    keys: tuple[str, ...]
    args: tuple[float | int, ...]

    def queue(self, pipe: Any) -> None:
        pipe.eval(_TOKEN_BUCKETS_LUA, len(self.keys), *self.keys, *self.args)

    @staticmethod
    def settle(reply: Any) -> None:
        allowed, wait_ms = reply
        if int(allowed) != 1:
            retry_after = max(1, math.ceil(int(wait_ms) / 1000))
            raise RateLimited(
                f"too many requests; retry in {retry_after} s", headers={"Retry-After": str(retry_after)}
            )


async def require_with_charge(request: Request, *roles: Role) -> tuple[Principal, RateCharge | None]:
    """`require` for a handler that makes a Redis pipeline anyway: the rate-limit charge is returned
    (None when nothing is to be charged) for the handler to queue in that pipeline and settle."""
    principal = await _authorize(request, roles)
    buckets = _unpaid_buckets(request, principal)
    limiter = _guard(request).limiter
    if not buckets or limiter.degraded:
        return principal, None
    args: list[float | int] = [1]
    for _, limit in buckets:
        args += [limit.per_second, limit.burst]
    return principal, RateCharge(tuple(KEY_PREFIX + name for name, _ in buckets), tuple(args))


def _unpaid_buckets(request: Request, principal: Principal) -> list[tuple[str, Limit]]:
    """The caller's rate-limit buckets, once per request (a handler calling require() twice pays
    once): empty when this request was charged already."""
    if request.scope.get("roomfeed.rate_charged"):
        return []
    request.scope["roomfeed.rate_charged"] = True
    return buckets_for(
        principal.role,
        viewer_id=principal.viewer_id,
        key_id=principal.key_id,
        device_id=request.headers.get("x-device-id"),
    )


async def _charge_rate_limits(request: Request, principal: Principal) -> None:
    """One token per request from the caller's buckets (roomfeed.ratelimit); 429 when empty."""
    buckets = _unpaid_buckets(request, principal)
    if not buckets:
        return
    await _guard(request).limiter.charge(buckets)
