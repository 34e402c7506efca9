"""The exposure scheduler: a proportional controller on each merchant's exposure debt, paced.

FairCo (Morik et al., SIGIR 2020) closes the gap between the exposure an item deserves and the
exposure it got by boosting in proportion to that error; guaranteed-delivery ad servers (SHALE,
KDD 2012) pace a budget over its window instead of spending it at once. Here the error is the
ledger balance (earned − delivered − expired). Every tick the scheduler

- sets each indebted merchant's delivery rate to debt / `pacing_hours` (the proportional gain),
  so delivery per hour follows earning per hour with a lag of about `pacing_hours`;
- adds rate × elapsed time to the merchant's token bucket (capped at `burst_hours` of rate and at
  the debt itself), and
- publishes the plan (boost strength, relevance floor, page share cap) to Redis.

The feed's boost stage spends one token per boosted room shown, so no process can dump the debt
on a page, and every API process reads the same state (`rf:al:plan`, `rf:al:tokens`). Each
token spent leaves a grant (`rf:al:grant:<session>:<room>`, 6 h): the consumer counts a
`boosted: true` impression as delivered only against an unclaimed grant, so a client posting
fake boosted impressions cannot drain a competitor's debt.
Simulations pass `now`; servers tick from `run_forever`.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from dataclasses import asdict, dataclass

import asyncpg
import orjson
from redis.asyncio import Redis

from alliance.alliances import Terms
from alliance.ledger import Ledger
from roomfeed.leader import Leadership, always_lead

log = logging.getLogger("roomfeed.alliance")

PLAN_KEY = "rf:al:plan"
TOKENS_KEY = "rf:al:tokens"
TICK_KEY = "rf:al:tick"

# Add to each bucket, capped; drop buckets of merchants no longer owed anything.
_REFILL = """
local key = KEYS[1]
local keep = {}
for i = 1, #ARGV, 3 do
  local m, add, cap = ARGV[i], tonumber(ARGV[i + 1]), tonumber(ARGV[i + 2])
  local held = redis.call('HGET', key, m)
  -- A merchant newly owed exposure starts with one token: its first owed impression goes out at
  -- once, the rest at the paced rate (the cap keeps it within the debt).
  local v = (held and tonumber(held) or 1) + add
  if v > cap then v = cap end
  redis.call('HSET', key, m, tostring(v))
  keep[m] = true
end
for _, m in ipairs(redis.call('HKEYS', key)) do
  if not keep[m] then redis.call('HDEL', key, m) end
end
return 1
"""

# Spend one token per merchant asked for, when it has one, and record the grant for the room the
# page shows (KEYS[i + 1]); returns 1/0 per merchant. ARGV[1] is the grants' TTL in seconds.
_TAKE = """
local out = {}
for i = 2, #ARGV do
  local m = ARGV[i]
  local v = tonumber(redis.call('HGET', KEYS[1], m) or '0')
  if v >= 1 then
    redis.call('HSET', KEYS[1], m, tostring(v - 1))
    redis.call('SET', KEYS[i], '1', 'EX', tonumber(ARGV[1]))
    out[i - 1] = 1
  else
    out[i - 1] = 0
  end
end
return out
"""

# A boosted impression counts once: the grant of its (session, room) is claimed by one event id
# (the same id again, a replay, still finds it claimed by itself). Returns 1 when it counts.
_CLAIM = """
local v = redis.call('GET', KEYS[1])
if v == '1' then
  redis.call('SET', KEYS[1], 'used:' .. ARGV[1], 'KEEPTTL')
  return 1
end
if v == 'used:' .. ARGV[1] then return 1 end
return 0
"""
GRANT_TTL_S = 6 * 3600


def grant_key(session_id: str, room_id: str) -> str:
    """Where the boost stage records that it boosted this room on this session's page."""
    return f"rf:al:grant:{session_id}:{room_id}"


@dataclass(frozen=True)
class BoostPlan:
    merchant_id: str
    debt: float  # impressions owed now
    rate_per_h: float  # paced delivery target
    strength: float  # 0..1, scales the score bump within the relevance floor
    relevance_floor: float
    share_cap: float


class ExposureScheduler:
    def __init__(
        self,
        pool: asyncpg.Pool,
        redis: Redis,
        *,
        pacing_hours: float = 0.25,
        burst_hours: float = 0.1,
        max_tick_s: float = 900.0,
    ) -> None:
        self.ledger = Ledger(pool)
        self.pool = pool
        self.redis = redis
        self.pacing_hours = pacing_hours
        self.burst_hours = burst_hours
        self.max_tick_s = max_tick_s
        self._refill = redis.register_script(_REFILL)

    async def plans(self) -> dict[str, BoostPlan]:
        """Each indebted merchant's plan: debt summed over its alliances, terms of the one owed most."""
        balances = await self.ledger.balances()
        terms = {
            r["alliance_id"]: Terms.from_row(r) for r in await self.pool.fetch("SELECT * FROM alliances")
        }
        debt: dict[str, float] = {}
        main: dict[str, tuple[float, str]] = {}
        for b in balances:
            debt[b.merchant_id] = debt.get(b.merchant_id, 0.0) + b.balance
            if b.merchant_id not in main or b.balance > main[b.merchant_id][0]:
                main[b.merchant_id] = (b.balance, b.alliance_id)
        plans = {}
        for merchant_id, owed in debt.items():
            if owed < 0.5:  # less than one impression: nothing to deliver
                continue
            t = terms.get(main[merchant_id][1], Terms())
            plans[merchant_id] = BoostPlan(
                merchant_id,
                round(owed, 4),
                owed / self.pacing_hours,
                min(1.0, 0.5 + owed / 20.0),
                t.relevance_floor,
                t.boost_share_cap,
            )
        return plans

    async def recompute(self, now: float) -> dict[str, BoostPlan]:
        """One controller tick at `now` (epoch s): refill token buckets, publish the plan."""
        plans = await self.plans()
        last = await self.redis.get(TICK_KEY)
        elapsed = min(max(now - float(last), 0.0), self.max_tick_s) if last is not None else 0.0
        args: list[str | float] = []
        for p in plans.values():
            cap = min(max(1.0, p.rate_per_h * self.burst_hours), p.debt)
            args += [p.merchant_id, p.rate_per_h * elapsed / 3600.0, cap]
        await self._refill(keys=[TOKENS_KEY], args=args)
        pipe = self.redis.pipeline(transaction=True)
        pipe.delete(PLAN_KEY)
        if plans:
            pipe.hset(PLAN_KEY, mapping={m: orjson.dumps(asdict(p)) for m, p in plans.items()})
        pipe.set(TICK_KEY, repr(now))
        await pipe.execute()
        return plans

    async def run_forever(
        self, every_s: float = 5.0, expire_every_s: float = 3600.0, leadership: Leadership = always_lead
    ) -> None:
        """The periodic tick for servers: the process that leads does it (roomfeed.leader: once per cluster)."""
        last_expiry = 0.0
        while True:
            try:
                if await leadership():
                    now = time.time()
                    if now - last_expiry >= expire_every_s:
                        await self.ledger.expire(now)
                        last_expiry = now
                    await self.recompute(now)
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # a dependency blip: the plan in Redis stays, try next tick
                log.warning("exposure scheduler tick failed: %s", exc)
            await asyncio.sleep(every_s)


class TokenBucket:
    """The boost stage's side of the tokens: spend one per boosted room shown (one round trip)."""

    def __init__(self, redis: Redis) -> None:
        self.redis = redis
        self._take = redis.register_script(_TAKE)

    async def take(self, merchant_ids: list[str], grants: list[str]) -> list[bool]:
        """Spend a token per merchant; for each one spent, record its grant key (`grant_key`)."""
        if not merchant_ids:
            return []
        granted = await self._take(keys=[TOKENS_KEY, *grants], args=[GRANT_TTL_S, *merchant_ids])
        return [bool(int(g)) for g in granted]


class GrantBook:
    """The sink's side of the grants: a boosted impression is delivered only if the feed granted it."""

    def __init__(self, redis: Redis) -> None:
        self._claim = redis.register_script(_CLAIM)

    async def claim(self, session_id: str, room_id: str, event_id: str) -> bool:
        return bool(int(await self._claim(keys=[grant_key(session_id, room_id)], args=[event_id])))


async def read_plans(redis: Redis) -> dict[str, BoostPlan]:
    raw = await redis.hgetall(PLAN_KEY)
    plans = {}
    for key, value in raw.items():
        with contextlib.suppress(Exception):
            data = orjson.loads(value)
            plans[key.decode() if isinstance(key, bytes) else key] = BoostPlan(**data)
    return plans
