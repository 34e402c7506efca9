"""Who is calling: merchant and operator keys (stored hashed), viewer tokens (signed by the platform).

Every route makes one call, `await require(request, "merchant")` (or several roles), which answers
401 without valid credentials and 403 with credentials of another role. Keys are random 256-bit
secrets shown once at creation; PostgreSQL stores only their SHA-256, and verified keys are cached
in-process for `KEY_CACHE_SECONDS` so the hot path does not query the database on every request.

A viewer token is signed by the platform's login; roomfeed only verifies it (`ViewerTokens`). Three
formats: `rfv2.<kid>.<base64url viewer id>.<expiry unix s>.<base64url HMAC-SHA256>` with a key of the
viewer-token keyring (`settings.viewer_token_keys`), the first format `rfv1.<viewer>.<expiry>.<HMAC>`
(no key id: verified with key `k0` while it is kept), and standard JWTs verified against a JWKS.
Secrets rotate through the keyrings (docs/security.md).
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import logging
import math
import re
import secrets
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, Protocol

import asyncpg
from starlette.requests import Request

from roomfeed.errors import Forbidden, NotFound, RateLimited, Unauthorized, Unavailable
from roomfeed.ratelimit import _TOKEN_BUCKETS_LUA, KEY_PREFIX, Limit, RateLimiter, buckets_for
from roomfeed.settings import Settings

log = logging.getLogger("roomfeed.auth")

Role = Literal["operator", "merchant", "order_system", "viewer"]
# Roles of keys stored in api_keys; every one but operator belongs to one merchant.
KeyRole = Literal["operator", "merchant", "order_system"]
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
    # A viewer's account creation time (epoch s) when its token says (JWT claim `account_created_at`).
    account_created_at: float | None = None

    def own_merchant(self) -> str:
        """The merchant these credentials act for: every merchant and order-system key names one (a
        route that takes only those keys asks this; other credentials are refused, 403)."""
        if self.merchant_id is None:
            raise Forbidden("these credentials act for no merchant")
        return self.merchant_id

    def check_scope(self, merchant_id: str) -> None:
        """404 unless these credentials may see this merchant's objects: a merchant key sees only its
        own (another merchant's is "not found", never "forbidden": that it exists is not told)."""
        if self.role == "merchant" and self.merchant_id != merchant_id:
            raise NotFound("no such merchant")

    def own_viewer(self) -> str:
        """The viewer a viewer token names (a route that takes only viewer tokens asks this)."""
        if self.viewer_id is None:
            raise Forbidden("these credentials are not a viewer's")
        return self.viewer_id

    def own_key(self) -> str:
        """The stored API key these credentials are (a route that takes only keys asks this)."""
        if self.key_id is None:
            raise Forbidden("these credentials are not an API key")
        return self.key_id


def hash_key(key: str) -> bytes:
    return hashlib.sha256(key.encode()).digest()


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


# --- keys -------------------------------------------------------------------------------------


async def create_key(
    pool: asyncpg.Pool, role: KeyRole, merchant_id: str | None = None, label: str = ""
) -> tuple[str, str]:
    """Create a key; returns (key_id, key). The key is not stored and cannot be shown again.

    An `order_system` key belongs to one merchant and may only report that merchant's orders."""
    if (role != "operator") != (merchant_id is not None):
        raise ValueError(
            "a merchant or order-system key needs a merchant_id, an operator key must not have one"
        )
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


async def list_keys(
    pool: asyncpg.Pool, *, role: str | None = None, merchant_id: str | None = None, revoked: bool = False
) -> list[dict[str, Any]]:
    """Keys by creation time, without their secrets (only hashes are stored anyway)."""
    rows = await pool.fetch(
        """SELECT key_id, role, merchant_id, label, created_at, revoked_at FROM api_keys
           WHERE ($1::text IS NULL OR role = $1) AND ($2::text IS NULL OR merchant_id = $2)
             AND ($3 OR revoked_at IS NULL)
           ORDER BY created_at, key_id""",
        role,
        merchant_id,
        revoked,
    )
    return [
        {
            "key_id": r["key_id"],
            "role": r["role"],
            "merchant_id": r["merchant_id"],
            "label": r["label"],
            "created_at": r["created_at"].isoformat(),
            "revoked_at": r["revoked_at"].isoformat() if r["revoked_at"] else None,
        }
        for r in rows
    ]


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


@dataclass(frozen=True)
class Keyring:
    """Named signing secrets: the first signs, every one verifies.

    Rotation: add the new key after the current one (every process verifies it), then put it first
    (new tokens and codes are signed with it), then, once what the old one signed has expired or
    been reprinted, remove the old one (it is retired: what it signed is refused)."""

    keys: tuple[tuple[str, bytes], ...]

    @classmethod
    def parse(cls, text: str, legacy_secret: str, legacy_kid: str) -> Keyring:
        """`kid:secret[,kid:secret...]`; empty: the one legacy secret under `legacy_kid`."""
        if not text.strip():
            return cls(((legacy_kid, legacy_secret.encode()),))
        keys: list[tuple[str, bytes]] = []
        for part in text.split(","):
            kid, sep, secret = part.strip().partition(":")
            if not sep or not kid or not secret or not KID.fullmatch(kid):
                raise ValueError("a keyring is kid:secret[,kid:secret...] with kids of [A-Za-z0-9_-]{1,32}")
            if any(kid == k for k, _ in keys):
                raise ValueError(f"kid {kid} appears twice in the keyring")
            keys.append((kid, secret.encode()))
        return cls(tuple(keys))

    @property
    def signing(self) -> tuple[str, bytes]:
        return self.keys[0]

    def get(self, kid: str) -> bytes | None:
        for k, secret in self.keys:
            if k == kid:
                return secret
        return None

    def kids(self) -> list[str]:
        return [k for k, _ in self.keys]


KID = re.compile(r"[A-Za-z0-9_-]{1,32}")
# Tokens of the first format carry no key id: they verify with the key of this id while it is kept.
LEGACY_VIEWER_KID = "k0"
VIEWER_TOKEN_PREFIX_V2 = "rfv2"


def viewer_keyring(settings: Settings) -> Keyring:
    return Keyring.parse(settings.viewer_token_keys, settings.viewer_token_secret, LEGACY_VIEWER_KID)


@dataclass(frozen=True)
class ViewerIdentity:
    """Who a viewer token names, and what the platform's login says of the account (when it says)."""

    viewer_id: str
    expires_at: float
    account_created_at: float | None = None  # epoch s; the alliance's viewer trust reads the account's age


def sign_viewer_token(secret: str, viewer_id: str, ttl_seconds: int = 30 * 24 * 3600) -> str:
    """A token of the first format (no key id), verified with the `k0` key; tests and benchmarks use it."""
    expires = int(time.time()) + ttl_seconds
    body = f"{VIEWER_TOKEN_PREFIX}.{_b64(viewer_id.encode())}.{expires}"
    signature = hmac.new(secret.encode(), body.encode(), hashlib.sha256).digest()
    return f"{body}.{_b64(signature)}"


def sign_viewer_token_with(ring: Keyring, viewer_id: str, ttl_seconds: int = 30 * 24 * 3600) -> str:
    """What the platform's login does: `rfv2.<kid>.<base64url viewer id>.<expiry s>.<HMAC>` with the
    keyring's signing key; roomfeed itself uses it only in the CLI, the demo and tests."""
    kid, secret = ring.signing
    expires = int(time.time()) + ttl_seconds
    body = f"{VIEWER_TOKEN_PREFIX_V2}.{kid}.{_b64(viewer_id.encode())}.{expires}"
    return f"{body}.{_b64(hmac.new(secret, body.encode(), hashlib.sha256).digest())}"


def verify_viewer_token(secret: str | Keyring, token: str, now: float | None = None) -> str | None:
    """The viewer id when the roomfeed-format token is genuine and unexpired, else None."""
    ring = secret if isinstance(secret, Keyring) else Keyring(((LEGACY_VIEWER_KID, secret.encode()),))
    identity = _verify_own(ring, token, now if now is not None else time.time())
    return identity.viewer_id if identity is not None else None


def _verify_own(ring: Keyring, token: str, now: float) -> ViewerIdentity | None:
    parts = token.split(".")
    if len(parts) == 4 and parts[0] == VIEWER_TOKEN_PREFIX:
        kid, viewer_part, expiry = LEGACY_VIEWER_KID, parts[1], parts[2]
    elif len(parts) == 5 and parts[0] == VIEWER_TOKEN_PREFIX_V2:
        kid, viewer_part, expiry = parts[1], parts[2], parts[3]
    else:
        return None
    secret = ring.get(kid)
    if secret is None:
        return None  # an unknown or retired key
    body = token.rsplit(".", 1)[0]
    try:
        expected = hmac.new(secret, body.encode(), hashlib.sha256).digest()
        if not hmac.compare_digest(expected, _unb64(parts[-1])):
            return None
        expires = int(expiry)
        if expires < now:
            return None
        viewer_id = _unb64(viewer_part).decode()
    except (ValueError, UnicodeDecodeError):
        return None
    return ViewerIdentity(viewer_id, float(expires)) if VIEWER_ID.fullmatch(viewer_id) else None


VIEWER_ID = re.compile(r"[A-Za-z0-9_.:\-]{1,64}")


class ViewerTokens:
    """Verifies viewer tokens: roomfeed's own (`rfv1`, `rfv2` with a key id) and standard JWTs.

    JWTs (EdDSA, RS256 or HS256; `kid` in the header required) are verified with PyJWT against the
    keys of a JWKS (`ROOMFEED_VIEWER_JWKS`: a file path or an http(s) URL; re-read when a token names
    a kid it does not know, at most every JWKS_REFRESH_S). Claims: `sub` the viewer id, `exp` required,
    `iss`/`aud` checked when configured, optional `account_created_at` (epoch s). Genuine tokens are
    remembered a few seconds (never past their expiry): a swiping viewer sends the same token many
    times a minute, and a signature check is a visible share of a feed page's CPU."""

    def __init__(self, settings: Settings) -> None:
        self.ring = viewer_keyring(settings)
        self.jwks_source = settings.viewer_jwks.strip()
        self.issuer = settings.viewer_jwt_issuer or None
        self.audience = settings.viewer_jwt_audience or None
        self.algorithms = [a.strip() for a in settings.viewer_jwt_algorithms.split(",") if a.strip()]
        self._jwks: dict[str, Any] = {}
        self._jwks_read_at = -math.inf
        self._jwks_lock = asyncio.Lock()
        self._cache: dict[str, tuple[float, ViewerIdentity]] = {}

    async def verify(self, token: str) -> ViewerIdentity | None:
        now = time.time()
        cached = self._cache.get(token)
        if cached is not None and cached[0] > now:
            return cached[1]
        if token.startswith(VIEWER_TOKEN_PREFIX + ".") or token.startswith(VIEWER_TOKEN_PREFIX_V2 + "."):
            identity = _verify_own(self.ring, token, now)
        elif self.jwks_source and token.count(".") == 2 and len(token) < 8192:
            identity = await self._verify_jwt(token, now)
        else:
            identity = None
        if identity is not None:
            if len(self._cache) >= _VIEWER_TOKEN_CACHE_SIZE:
                self._cache.clear()
            self._cache[token] = (min(now + VIEWER_TOKEN_CACHE_SECONDS, identity.expires_at), identity)
        return identity

    async def _verify_jwt(self, token: str, now: float) -> ViewerIdentity | None:
        import jwt

        try:
            header = jwt.get_unverified_header(token)
        except jwt.PyJWTError:
            return None
        kid, alg = header.get("kid"), header.get("alg")
        if not isinstance(kid, str) or alg not in self.algorithms:
            return None
        key = self._jwks.get(kid)
        if key is None and now - self._jwks_read_at >= JWKS_REFRESH_S:
            await self.refresh_jwks()
            key = self._jwks.get(kid)
        if key is None or (key.algorithm_name is not None and key.algorithm_name != alg):
            return None
        try:
            claims = jwt.decode(
                token,
                key.key,
                algorithms=[alg],
                issuer=self.issuer,
                audience=self.audience,
                options={"require": ["exp", "sub"], "verify_aud": self.audience is not None},
                leeway=30,
            )
        except jwt.PyJWTError:
            return None
        sub, created = claims.get("sub"), claims.get("account_created_at")
        if not isinstance(sub, str) or not VIEWER_ID.fullmatch(sub):
            return None
        if created is not None and (isinstance(created, bool) or not isinstance(created, (int, float))):
            return None
        return ViewerIdentity(sub, float(claims["exp"]), float(created) if created is not None else None)

    async def refresh_jwks(self) -> list[str]:
        """(Re-)read the JWKS; returns its kids. A source that cannot be read keeps the keys known."""
        import jwt

        async with self._jwks_lock:
            self._jwks_read_at = time.time()
            try:
                if self.jwks_source.startswith(("http://", "https://")):
                    import httpx

                    async with httpx.AsyncClient(timeout=5.0) as client:
                        response = await client.get(self.jwks_source)
                        response.raise_for_status()
                        text = response.text
                else:
                    text = await asyncio.to_thread(Path(self.jwks_source).read_text)
                keys = jwt.PyJWKSet.from_json(text).keys
            except Exception as exc:
                log.warning("viewer JWKS not read from %s: %s", self.jwks_source, exc)
                return list(self._jwks)
            self._jwks = {k.key_id: k for k in keys if k.key_id}
            return list(self._jwks)


JWKS_REFRESH_S = 30.0


# --- the one role check -----------------------------------------------------------------------


@dataclass(frozen=True)
class Guard:
    """What `require` checks a request against, one per API process: viewer tokens, keys, rate limits."""

    viewer_tokens: ViewerTokens
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
    if credential.startswith("rfk_"):
        if len(credential) < 200:
            principal = await _guard(request).keys.verify(credential)
    else:
        identity = await _guard(request).viewer_tokens.verify(credential)
        if identity is not None:
            principal = Principal(
                role="viewer", viewer_id=identity.viewer_id, account_created_at=identity.account_created_at
            )
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

    def read(self, replies: list[Any]) -> Any:
        """As a part of a round trip (roomfeed.redis_lane.Part): the reply `settle` takes."""
        return replies[0]

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
