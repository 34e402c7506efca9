"""Request rate limits: token buckets in Redis, shared by every API process.

This module owns the `rf:{rl}:*` Redis keys (one hash tag: a request's buckets, its viewer's and its
device's, are checked by one script, so on a Redis Cluster they all live on one slot). `auth.require()` charges one token per authenticated
request to the caller's buckets: a viewer's own bucket plus, when the app sends `X-Device-ID`, the
device's bucket (one phone farming many viewer accounts drains one bucket); a merchant key's
bucket. Operators are not limited (few, trusted, and they must be able to act during an incident).

One Lua script checks and charges every bucket of a request atomically, with Redis's clock, so
several API processes share one budget and never race. When Redis cannot answer the limiter
*degrades open*: the request goes through unlimited and the limiter stops asking Redis for
`OPEN_CIRCUIT_SECONDS`, so a Redis outage costs neither the feed's availability nor its latency.

The limits are module constants (see docs/reliability.md); they belong in `Settings` eventually.
Defaults are far above what a real app sends (a viewer's app posts a batch of events every few
seconds and prefetches the feed a page at a time), so only scripts and runaway clients meet them.
"""

from __future__ import annotations

import hashlib
import logging
import math
import re
import time
from dataclasses import dataclass
from typing import Any

from redis.asyncio import Redis
from redis.exceptions import RedisError

from roomfeed.errors import RateLimited
from roomfeed.lua import lua_script
from roomfeed.redis_lane import RedisLane
from roomfeed.settings import Settings

log = logging.getLogger("roomfeed.ratelimit")


@dataclass(frozen=True)
class Limit:
    """A token bucket: `burst` requests at once, refilled at `per_second`."""

    per_second: float
    burst: int


# Per viewer id, per device (X-Device-ID) and per merchant key: Settings' defaults until `configure`
# sets them from the process's Settings at start-up (ROOMFEED_RATE_* variables).
_DEFAULTS = Settings()
VIEWER_LIMIT = Limit(per_second=_DEFAULTS.rate_viewer_per_s, burst=_DEFAULTS.rate_viewer_burst)
DEVICE_LIMIT = Limit(per_second=_DEFAULTS.rate_device_per_s, burst=_DEFAULTS.rate_device_burst)
MERCHANT_KEY_LIMIT = Limit(per_second=_DEFAULTS.rate_merchant_per_s, burst=_DEFAULTS.rate_merchant_burst)


def configure(settings: Settings) -> None:
    """Adopt the process's limits (one Settings per process; called by the app at start-up)."""
    global VIEWER_LIMIT, DEVICE_LIMIT, MERCHANT_KEY_LIMIT
    VIEWER_LIMIT = Limit(per_second=settings.rate_viewer_per_s, burst=settings.rate_viewer_burst)
    DEVICE_LIMIT = Limit(per_second=settings.rate_device_per_s, burst=settings.rate_device_burst)
    MERCHANT_KEY_LIMIT = Limit(per_second=settings.rate_merchant_per_s, burst=settings.rate_merchant_burst)


# After Redis fails, stop asking it for this long (the limiter is open: nothing is limited).
OPEN_CIRCUIT_SECONDS = 2.0

KEY_PREFIX = "rf:{rl}:"
_DEVICE_ID = re.compile(r"[A-Za-z0-9_.:-]{1,64}")

_TOKEN_BUCKETS_LUA = lua_script(__file__, "token_buckets.lua")


def device_bucket_id(header: str) -> str:
    """The bucket name of an `X-Device-ID` value (hashed when it is not a plain id, so any value is safe)."""
    if _DEVICE_ID.fullmatch(header):
        return header
    return "h" + hashlib.sha256(header.encode("utf-8", "replace")).hexdigest()[:32]


class RateLimiter:
    """Charges requests to token buckets in Redis; refuses with 429 `rate_limited` and Retry-After."""

    def __init__(self, redis: Redis, lane: RedisLane | None = None) -> None:
        """`lane`: the process's pipelined connection (roomfeed.redis_lane), on which a charge is one
        hiredis round trip instead of redis-py's script call (~85 µs of CPU a request); without
        it (a Redis Cluster) redis-py's client charges."""
        self.redis = redis
        self.lane = lane
        self._script: Any = redis.register_script(_TOKEN_BUCKETS_LUA)
        self._open_until = 0.0

    @property
    def degraded(self) -> bool:
        """True while Redis is considered down and nothing is limited."""
        return time.monotonic() < self._open_until

    async def charge(self, buckets: list[tuple[str, Limit]], cost: int = 1) -> None:
        """Take `cost` tokens from every bucket, or raise RateLimited (taking none)."""
        if not buckets or self.degraded:
            return
        keys = [KEY_PREFIX + name for name, _ in buckets]
        args: list[float | int] = [cost]
        for _, limit in buckets:
            args += [limit.per_second, limit.burst]
        try:
            if self.lane is not None:
                pipe = self.lane.pipeline()
                pipe.eval(_TOKEN_BUCKETS_LUA, len(keys), *keys, *args)
                ((allowed, wait_ms),) = await pipe.execute()
            else:
                allowed, wait_ms = await self._script(keys=keys, args=args)
        except (RedisError, OSError, TimeoutError) as exc:
            self._open_until = time.monotonic() + OPEN_CIRCUIT_SECONDS
            log.warning("rate limits off for %.0fs: redis did not answer (%s)", OPEN_CIRCUIT_SECONDS, exc)
            return
        if int(allowed) != 1:
            retry_after = max(1, math.ceil(int(wait_ms) / 1000))
            raise RateLimited(
                f"too many requests; retry in {retry_after} s",
                headers={"Retry-After": str(retry_after)},
            )


def buckets_for(
    role: str, *, viewer_id: str | None, key_id: str | None, device_id: str | None
) -> list[tuple[str, Limit]]:
    """The buckets a request of this principal is charged to (none for operators)."""
    if role == "viewer" and viewer_id is not None:
        buckets = [("v:" + viewer_id, VIEWER_LIMIT)]
        if device_id:
            buckets.append(("d:" + device_bucket_id(device_id), DEVICE_LIMIT))
        return buckets
    if role in ("merchant", "order_system") and key_id is not None:
        return [("k:" + key_id, MERCHANT_KEY_LIMIT)]
    return []
