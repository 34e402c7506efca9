"""Grants: the only way a boosted impression is booked as delivered.

When the boost stage places an owed room on a viewer's page it spends a token and leaves a grant
for *that viewer, that page and that room*: `rf:{al}:grant:<viewer>:<session>:<room>`, holding the
merchant owed. A session never serves a room twice, so its session and room name exactly one page.
Delivered means the viewer reached the room: the app reports an impression for it with the page's
token (`page_token`; an impression without one books nothing), and the alliance sink claims the
grant, once. An impression without a grant (a forged `boosted: true`, a room the feed served
unboosted, another viewer's or another session's page) books nothing, and the feed's own `served`
records are never impressions. Grants not claimed within `GRANT_TTL_S`
lapse: the debt stays owed and the scheduler pays it again.

While a grant is outstanding it sits in its merchant's pending set, so the scheduler does not
hand out tokens for exposure that may still be reported (no overshoot).
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from redis.asyncio import Redis

from alliance.clock import AllianceClock

_LUA = Path(__file__).parent / "lua"
# The keys the boost stage's scripts take together (tokens, grants, pending sets) share the hash
# tag {al}: one Redis Cluster slot, as a script needs (alliance.scheduler and .evidence use it too).
TOKENS_KEY = "rf:{al}:tokens"
GRANT_TTL_S = 30 * 60  # alliance seconds an app has to report a boosted room it showed


def grant_key(viewer_id: str, session_id: str, room_id: str) -> str:
    return f"rf:{{al}}:grant:{viewer_id}:{session_id}:{room_id}"


def pending_key(merchant_id: str) -> str:
    return f"rf:{{al}}:pending:{merchant_id}"


class TokenBucket:
    """The boost stage's side: spend one token per boosted room and leave its grant (one round trip)."""

    def __init__(self, redis: Redis, clock: AllianceClock | None = None) -> None:
        self.redis = redis
        self.clock = clock or AllianceClock()
        self._take = redis.register_script((_LUA / "take_tokens.lua").read_text())

    async def take(
        self, viewer_id: str, session_id: str, boosts: list[tuple[str, str]], limit: int
    ) -> list[bool]:
        """Spend a token for up to `limit` of these (merchant, room), in order, skipping merchants out
        of tokens; leave a grant for each room placed."""
        if not boosts:
            return []
        keys = [TOKENS_KEY]
        for merchant_id, room_id in boosts:
            keys += [grant_key(viewer_id, session_id, room_id), pending_key(merchant_id)]
        ttl = max(1, int(self.clock.wall(GRANT_TTL_S)))
        granted = await self._take(keys=keys, args=[ttl, time.time(), limit, *(m for m, _ in boosts)])
        return [bool(int(g)) for g in granted]

    async def release(self, viewer_id: str, session_id: str, boosts: list[tuple[str, str]]) -> None:
        """Withdraw the grants of boosted rooms the page did not keep (a concurrent request of the
        session served them first); their tokens are not returned: the debt stays owed and the next
        tick pays it."""
        if not boosts:
            return
        pipe = self.redis.pipeline(transaction=False)
        for merchant_id, room_id in boosts:
            key = grant_key(viewer_id, session_id, room_id)
            pipe.delete(key)
            pipe.zrem(pending_key(merchant_id), key)
        await pipe.execute()


class GrantBook:
    """The sink's side: an app-reported impression is delivered only if it claims its grant."""

    def __init__(self, redis: Redis, clock: AllianceClock | None = None) -> None:
        self.redis = redis
        self.clock = clock or AllianceClock()
        self._claim = redis.register_script((_LUA / "claim_grants.lua").read_text())

    async def claim_many(self, impressions: list[dict[str, Any]]) -> dict[str, str]:
        """Event id → the merchant whose grant the impression claimed (impressions claiming nothing left out)."""
        keys = [
            grant_key(str(e["viewer_id"]), str(e.get("session_id", "")), str(e.get("room_id", "")))
            for e in impressions
        ]
        found = await self._claim(keys=keys, args=[str(e["event_id"]) for e in impressions])
        claimed = {}
        pipe = self.redis.pipeline(transaction=False)
        for e, key, merchant in zip(impressions, keys, found, strict=True):
            m = merchant.decode() if isinstance(merchant, bytes) else str(merchant)
            if m:
                claimed[str(e["event_id"])] = m
                pipe.zrem(pending_key(m), key)  # no longer outstanding
        if claimed:
            await pipe.execute()
        return claimed

    async def pending(self, merchant_ids: list[str], now: float) -> dict[str, int]:
        """Grants outstanding per merchant (expired ones dropped first)."""
        return (await self.outstanding(merchant_ids, now))[0]

    async def outstanding(self, merchant_ids: list[str], now: float) -> tuple[dict[str, int], int]:
        """Grants outstanding per merchant, and how many lapsed unclaimed (dropped by this call: a
        boosted room whose impression never came)."""
        if not merchant_ids:
            return {}, 0
        pipe = self.redis.pipeline(transaction=False)
        for m in merchant_ids:
            pipe.zremrangebyscore(pending_key(m), "-inf", now)
            pipe.zcard(pending_key(m))
        replies = await pipe.execute()
        lapsed = sum(int(replies[2 * i]) for i in range(len(merchant_ids)))
        return {m: int(replies[2 * i + 1]) for i, m in enumerate(merchant_ids)}, lapsed
