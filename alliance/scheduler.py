"""The exposure scheduler: a proportional controller on each merchant's exposure debt, paced.

FairCo (Morik et al., SIGIR 2020) closes the gap between the exposure an item deserves and the
exposure it got by boosting in proportion to that error; guaranteed-delivery ad servers (SHALE,
KDD 2012) pace a budget over its window instead of spending it at once. Here the error is what a
merchant is owed now: its confirmed credit less what was delivered, expired or clawed back, less
the grants still outstanding (boosted rooms shown whose impression may still be reported). Every tick

- settles held credit (alliance.settlement) and, hourly, expires credit owed too long;
- sets each indebted merchant's delivery rate to debt / `pacing_hours` (the proportional gain),
  so delivery per hour follows confirmation per hour with a lag of about `pacing_hours`;
- adds rate × elapsed time to the merchant's token bucket (capped at `burst_hours` of rate and at
  the debt itself), and
- publishes the plan (debt, rate) to Redis.

The feed's boost stage spends one token per boosted room it places, so no process can dump the
debt on a page, and every API process reads the same state (`rf:{al}:plan`, `rf:{al}:tokens`). Tokens
only go to merchants whose rooms are live and relevant, so debt waits for the merchant's next live
windows. Durations are in the alliance's hours (alliance.clock). Simulations pass `now`; servers
tick from `run_forever`, one process per tick (a Redis lock).

**Advances.** Credit holds for 2 h before it confirms, and a contributor earns while its own room is
live (its followers come by its code then): confirmed credit mostly arrives after the broadcast
ended, and waited for the next day's (issue 16: 82 % of an owed contributor's chances found its
room not live). So the debt the plan paces also counts part of the merchant's *held* credit, paid
ahead while its room is live (`Advance`). Delivery is booked from the merchant's account as before,
so an advance is a negative balance until the credit confirms; a clawback of advanced credit leaves
that negative balance — a deficit the merchant's statement shows and its later earnings repay — and
a deficit is netted against any further advance. The `trusted` policy sizes the advance by the
evidence already in: held credit of aged accounts in full; held credit of new accounts in
proportion to how far the merchant's share of new-account visits stays within the platform's
median (a farm of fresh ids, 100 % new, gets a fraction before a rule fires); all of it scaled by
the share of the merchant's credit that has stood so far (a merchant already clawed back gets
less, one clawed back entirely nothing).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import statistics
import time
from collections import deque
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path

import asyncpg
import orjson
from redis.asyncio import Redis

from alliance.alliances import Terms
from alliance.clock import AllianceClock
from alliance.grants import TOKENS_KEY, GrantBook
from alliance.ledger import Ledger
from alliance.settlement import Settlement
from roomfeed.leader import Leadership, always_lead
from roomfeed.settings import ALLIANCE_ADVANCE_MODES, AllianceAdvance

log = logging.getLogger("roomfeed.alliance")

# The controller's lag (alliance hours): an owed merchant's delivery rate is its debt / PACING_HOURS.
# Debt can only be paid while the contributor's room is live, and what is still owed when its broadcast
# ends waits for the next one (a day, for most): at 0.25 h a contributor earning while live ended each
# broadcast owing about a quarter hour of its earnings plus the grants on their way, and live owed
# merchants were short of tokens on 10-30x more pages than they were placed on (the boost stage's tally
# of a 2 h slice at scale 40). Tokens still go only to live, relevant rooms, within the page's share
# cap, and outstanding grants count against the debt, so a faster controller does not dump the debt.
PACING_HOURS = 0.1
BURST_HOURS = 0.05  # a bucket holds at most this much of its rate (half the debt at PACING_HOURS)
PLAN_KEY = "rf:{al}:plan"  # {al}: the alliance's slot (alliance.grants)
TICK_KEY = "rf:{al}:tick"
_REFILL = (Path(__file__).parent / "lua" / "refill_tokens.lua").read_text()


@dataclass(frozen=True)
class BoostPlan:
    merchant_id: str
    debt: float  # impressions owed now (less grants outstanding)
    rate_per_h: float  # paced delivery target, per alliance hour
    relevance_floor: float = 0.8  # the alliance's term (alliances.Terms), of the alliance owed most
    share_cap: float = 0.2


AdvanceMode = AllianceAdvance  # the one list of modes is roomfeed.settings'
ADVANCE_MODES = ALLIANCE_ADVANCE_MODES


def advance_mode(name: str) -> AdvanceMode:
    """The advance policy `name` names (Settings.alliance_advance, ROOMFEED_ALLIANCE_ADVANCE)."""
    for mode in ADVANCE_MODES:
        if mode == name:
            return mode
    raise ValueError(f"advance must be one of {', '.join(ADVANCE_MODES)}, got {name!r}")


# Per contributor: its held credit from aged and from new accounts, and its visits that earned in
# the trailing window ($1), from new accounts and in all (the evidence an advance is sized by).
HELD_SQL = """SELECT contributor_id AS merchant_id,
       COALESCE(sum(amount) FILTER (WHERE state = 'held' AND NOT young_account), 0) AS held_aged,
       COALESCE(sum(amount) FILTER (WHERE state = 'held' AND young_account), 0) AS held_young,
       count(*) FILTER (WHERE young_account) AS young, count(*) AS n
FROM alliance_visits WHERE earned AND (state = 'held' OR at >= $1) GROUP BY contributor_id"""
MIN_VISITS_FOR_SHARE = 5  # contributors with fewer earned visits do not set the platform's median


@dataclass(frozen=True)
class HeldEvidence:
    held_aged: float  # held credit of visits from accounts older than the policy's young age
    held_young: float  # held credit of visits from new accounts
    young: int  # visits that earned in the trailing window from new accounts
    visits: int  # visits that earned in the trailing window


def advance_of(
    mode: AdvanceMode,
    held: float,
    earned: float,
    clawed_back: float,
    evidence: HeldEvidence | None,
    median_young_share: float,
) -> float:
    """How much of a merchant's held credit the scheduler pays ahead of confirmation (pure).

    `none`: nothing (credit is owed once it confirms). `held`: all of it. `trusted`: aged accounts'
    held credit in full, new accounts' in proportion min(1, platform median share / the merchant's
    share of new-account visits), the sum scaled by the merchant's standing share (earned credit not
    clawed back), never more than `held`."""
    if mode == "none" or held <= 0:
        return 0.0
    if mode == "held":
        return held
    if evidence is None:
        return 0.0
    share = evidence.young / evidence.visits if evidence.visits else 0.0
    young_trust = 1.0 if share <= median_young_share else median_young_share / share
    standing = max(0.0, (earned - clawed_back) / earned) if earned > 0 else 0.0
    return max(0.0, min(held, standing * (evidence.held_aged + young_trust * evidence.held_young)))


class ReachEstimate:
    """The share of boosted rooms placed whose impression came (their grants claimed, not lapsed), over
    the last `window_s` of wall time, pooled over merchants. Outstanding grants count against a debt
    at this share: a grant that lapses unreached blocked its debt for the grant's whole life (30
    alliance minutes), and with most boosted rooms low on their pages (never first) over half lapse,
    which capped delivery well under what a merchant earned while it was live. Until `min_outcomes`
    grants have ended in the window it is 1 (every outstanding grant counts in full)."""

    def __init__(self, window_s: float, min_outcomes: int = 20, floor: float = 0.1) -> None:
        self.window_s = window_s
        self.min_outcomes = min_outcomes
        self.floor = floor
        self._ticks: deque[tuple[float, float, int]] = deque()  # (now, delivered in all, lapsed at this tick)

    def add(self, now: float, delivered_total: float, lapsed: int) -> None:
        self._ticks.append((now, delivered_total, lapsed))
        while len(self._ticks) > 1 and self._ticks[0][0] < now - self.window_s:
            self._ticks.popleft()

    def value(self) -> float:
        if len(self._ticks) < 2:
            return 1.0
        delivered = max(0.0, self._ticks[-1][1] - self._ticks[0][1])
        lapsed = sum(n for _, _, n in list(self._ticks)[1:])
        if delivered + lapsed < self.min_outcomes:
            return 1.0
        return max(self.floor, delivered / (delivered + lapsed))


class ExposureScheduler:
    def __init__(
        self,
        pool: asyncpg.Pool,
        redis: Redis,
        *,
        clock: AllianceClock | None = None,
        settlement: Settlement | None = None,
        pacing_hours: float = PACING_HOURS,
        burst_hours: float = BURST_HOURS,
        max_tick_s: float = 900.0,
        advance: AdvanceMode = "trusted",
    ) -> None:
        self.advance = advance_mode(advance)
        self.clock = clock or AllianceClock()
        self.ledger = Ledger(pool, self.clock)
        self.settlement = settlement or Settlement(pool, self.clock)
        self.grants = GrantBook(redis, self.clock)
        self.pool = pool
        self.redis = redis
        self.pacing_hours = pacing_hours
        self.burst_hours = burst_hours
        self.max_tick_s = max_tick_s
        self._refill = redis.register_script(_REFILL)
        self.reach = ReachEstimate(window_s=self.clock.wall(3600.0))

    async def held_evidence(self, now: float) -> tuple[dict[str, HeldEvidence], float]:
        """Each contributor's held credit by account age and its new-account share of the trailing
        window's earned visits; and the platform's median share (contributors with enough visits)."""
        if self.advance != "trusted":
            return {}, 0.0
        since = datetime.fromtimestamp(now - self.clock.wall(self.settlement.policy.evidence_window_s), UTC)
        evidence = {
            r["merchant_id"]: HeldEvidence(
                float(r["held_aged"]), float(r["held_young"]), int(r["young"]), int(r["n"])
            )
            for r in await self.pool.fetch(HELD_SQL, since)
        }
        shares = [e.young / e.visits for e in evidence.values() if e.visits >= MIN_VISITS_FOR_SHARE]
        return evidence, statistics.median(shares) if shares else 0.0

    async def plans(self, now: float) -> dict[str, BoostPlan]:
        """Each indebted merchant's plan: what it is owed over its alliances, plus what of its held
        credit is advanced (`Advance`), less grants outstanding."""
        terms = {
            r["alliance_id"]: Terms.from_row(r) for r in await self.pool.fetch("SELECT * FROM alliances")
        }
        debt: dict[str, float] = {}
        main: dict[str, tuple[float, str]] = {}
        held: dict[str, tuple[float, float, float]] = {}
        balances = await self.ledger.balances()
        for b in balances:
            debt[b.merchant_id] = debt.get(b.merchant_id, 0.0) + b.balance
            h, e, c = held.get(b.merchant_id, (0.0, 0.0, 0.0))
            held[b.merchant_id] = (h + b.held, e + b.earned, c + b.clawed_back)
            if b.merchant_id not in main or b.balance + b.held > main[b.merchant_id][0]:
                main[b.merchant_id] = (b.balance + b.held, b.alliance_id)
        evidence, median_young = await self.held_evidence(now)
        for merchant_id, (h, e, c) in held.items():
            debt[merchant_id] += advance_of(self.advance, h, e, c, evidence.get(merchant_id), median_young)
        owed = [m for m, d in debt.items() if d >= 0.5]
        pending, lapsed = await self.grants.outstanding(owed, now)
        self.reach.add(now, sum(b.delivered for b in balances), lapsed)
        reach = self.reach.value()
        plans = {}
        for merchant_id in owed:
            # Outstanding grants are expected to deliver at the share recently reached (ReachEstimate).
            left = debt[merchant_id] - reach * pending.get(merchant_id, 0)
            if left < 0.5:  # less than one impression not already on its way
                continue
            t = terms.get(main[merchant_id][1], Terms())
            plans[merchant_id] = BoostPlan(
                merchant_id, round(left, 4), left / self.pacing_hours, t.relevance_floor, t.boost_share_cap
            )
        return plans

    async def recompute(self, now: float) -> dict[str, BoostPlan]:
        """One controller tick at `now` (epoch s): refill token buckets, publish the plan."""
        plans = await self.plans(now)
        last = await self.redis.get(TICK_KEY)
        elapsed = min(max(now - float(last), 0.0), self.max_tick_s) if last is not None else 0.0
        elapsed_h = self.clock.alliance_s(elapsed) / 3600.0
        args: list[str | float] = []
        for p in plans.values():
            cap = min(max(1.0, p.rate_per_h * self.burst_hours), p.debt)
            args += [p.merchant_id, p.rate_per_h * elapsed_h, cap]
        await self._refill(keys=[TOKENS_KEY], args=args)
        pipe = self.redis.pipeline(transaction=True)
        pipe.delete(PLAN_KEY)
        if plans:
            pipe.hset(PLAN_KEY, mapping={m: orjson.dumps(asdict(p)) for m, p in plans.items()})
        pipe.set(TICK_KEY, repr(now))
        await pipe.execute()
        return plans

    async def tick(self, now: float, expire: bool = False) -> dict[str, BoostPlan]:
        """Settle held credit, expire (when asked), then refill and publish."""
        await self.settlement.run(now)
        if expire:
            await self.ledger.expire(now)
        return await self.recompute(now)

    async def run_forever(
        self, every_s: float = 5.0, expire_every_s: float = 3600.0, leadership: Leadership = always_lead
    ) -> None:
        """The periodic tick for servers: the process that leads does it (roomfeed.leader: once per cluster)."""
        last_expiry = 0.0
        while True:
            try:
                if await leadership():
                    now = time.time()
                    expire = now - last_expiry >= self.clock.wall(expire_every_s)
                    await self.tick(now, expire)
                    if expire:
                        last_expiry = now
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # a dependency blip: the plan in Redis stays, try next tick
                log.warning("exposure scheduler tick failed: %s", exc)
            await asyncio.sleep(every_s)


async def read_plans(redis: Redis) -> dict[str, BoostPlan]:
    raw = await redis.hgetall(PLAN_KEY)
    plans = {}
    for key, value in raw.items():
        with contextlib.suppress(Exception):
            data = orjson.loads(value)
            plans[key.decode() if isinstance(key, bytes) else key] = BoostPlan(**data)
    return plans
