"""A merchant's pacing plan: what it is owed, when that will be delivered, what expires and why.

`GET /v1/merchants/{id}/alliance-plan` reads it. The figures come from the ledger (owed, held and
when it settles, delivered lately, what ages out), the scheduler's plan in Redis (the paced rate),
the grants outstanding (rooms shown whose impression may still come) and the boost stage's tally of
what became of the merchant on viewers' pages lately (alliance.boost: placed, not placed, below the
relevance floor, already on the page, filtered for that viewer, not live). The reasons are written
for the merchant, in the words the tally counts.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import asyncpg
import orjson
from redis.asyncio import Redis

from alliance.boost import OUTCOMES, hour_bucket, tally_key
from alliance.clock import AllianceClock
from alliance.grants import GrantBook
from alliance.ledger import EXPIRY_DAYS, OWED_SQL, Ledger
from alliance.scheduler import PACING_HOURS, PLAN_KEY, BoostPlan

WHY = {
    "not_live": "your rooms were not live: owed exposure is delivered while one of your rooms is live",
    "below_floor": "viewers were predicted to enter your room less than the alliance's relevance floor asks",
    "on_page": "your room was already on the page organically; it is repaid on pages where it is not",
    "filtered": "the viewers had already been shown or had skipped your room",
    "not_placed": "the page's share of boosts was taken, or the pace held it back",
}


def _ts(epoch_s: float) -> datetime:
    return datetime.fromtimestamp(epoch_s, UTC)


class PacingPlans:
    def __init__(
        self, pool: asyncpg.Pool, redis: Redis, clock: AllianceClock, pacing_hours: float = PACING_HOURS
    ) -> None:
        self.pool = pool
        self.redis = redis
        self.clock = clock
        self.ledger = Ledger(pool, clock)
        self.grants = GrantBook(redis, clock)
        self.pacing_hours = pacing_hours

    async def of(self, merchant_id: str, now: float) -> dict[str, Any]:
        balances = await self.ledger.balances(merchant_id)
        owed = sum(b.balance for b in balances)
        held = sum(b.held for b in balances)
        settles = await self.pool.fetch(
            """SELECT date_trunc('minute', hold_until) AS at, sum(amount) AS amount FROM alliance_visits
               WHERE contributor_id = $1 AND state = 'held' GROUP BY 1 ORDER BY 1 LIMIT 20""",
            merchant_id,
        )
        hour_ago = _ts(now - self.clock.wall(3600))
        delivered_hour = float(
            await self.pool.fetchval(
                """SELECT COALESCE(sum(amount), 0) FROM ledger_transactions
                   WHERE merchant_id = $1 AND kind = 'delivered' AND at >= $2""",
                merchant_id,
                hour_ago,
            )
        )
        expiring = await self._expiring(merchant_id, now)
        raw = await self.redis.hget(PLAN_KEY, merchant_id)
        plan = BoostPlan(**orjson.loads(raw)) if raw else None
        pending = (await self.grants.pending([merchant_id], now)).get(merchant_id, 0)
        tally = await self._tally(merchant_id, now)
        shown = sum(tally.values())
        reasons = [
            {"reason": k, "pages": n, "share": round(n / shown, 3), "why": WHY[k]}
            for k, n in sorted(tally.items(), key=lambda kv: -kv[1])
            if k in WHY and n > 0
        ]
        estimate = None
        if owed >= 0.5 and delivered_hour > 0:
            estimate = round(owed / delivered_hour, 2)
        return {
            "merchant_id": merchant_id,
            "owed": round(owed, 4),
            "held": round(held, 4),
            "held_settles": [
                {"at": r["at"].timestamp(), "amount": round(float(r["amount"]), 4)} for r in settles
            ],
            "outstanding_grants": pending,
            "pace_per_hour": round(plan.rate_per_h, 3) if plan else 0.0,
            "pacing_hours": self.pacing_hours,
            "delivered_last_hour": delivered_hour,
            # At last hour's delivery rate (a live hour's worth when the room was live): how long the
            # owed exposure takes. None when nothing was delivered lately (see `reasons`).
            "hours_to_deliver_at_recent_pace": estimate,
            "expiring": expiring,
            "last_hours": {"pages": shown, **{k: tally.get(k, 0) for k in OUTCOMES}},
            "reasons": reasons,
            "note": (
                "Owed exposure is delivered as boosted rooms viewers reach, paced over "
                f"{self.pacing_hours * 60:.0f} minutes, while one of your rooms is live. Held credit is "
                "advanced while you are live (in full for viewers with established accounts, in part for new "
                "accounts when they are more of your visits than usual, less once credit of yours was clawed "
                "back); credit clawed back after it was advanced leaves a negative `owed`, repaid from your "
                f"later earnings. What stays owed longer than {EXPIRY_DAYS} days expires."
            ),
        }

    async def _tally(self, merchant_id: str, now: float) -> dict[str, int]:
        hour = hour_bucket(self.clock, now)
        pipe = self.redis.pipeline(transaction=False)
        for h in (hour - 1, hour):
            pipe.hgetall(tally_key(merchant_id, h))
        out: dict[str, int] = {}
        for counts in await pipe.execute():
            for k, v in counts.items():
                name = k.decode() if isinstance(k, bytes) else str(k)
                out[name] = out.get(name, 0) + int(v)
        return out

    async def _expiring(self, merchant_id: str, now: float) -> list[dict[str, Any]]:
        """What will age out within the next day unless delivered: owed beyond what was confirmed in
        the last EXPIRY_DAYS - 1 days (FIFO, as Ledger.expire judges)."""
        since = _ts(now - self.clock.wall((EXPIRY_DAYS - 1) * 86_400))
        rows = await self.pool.fetch(
            f"""SELECT b.alliance_id, {OWED_SQL} AS owed,
                      COALESCE((SELECT sum(t.amount) FROM ledger_transactions t
                                WHERE t.merchant_id = b.merchant_id AND t.alliance_id = b.alliance_id
                                  AND t.kind IN ('earned', 'confirmed') AND t.at >= $2), 0) AS recent
               FROM ledger_balances b WHERE b.merchant_id = $1""",  # noqa: S608 (a fixed expression)
            merchant_id,
            since,
        )
        out = []
        for r in rows:
            excess = float(r["owed"] - r["recent"])
            if excess > 0.0001:
                out.append(
                    {
                        "alliance_id": r["alliance_id"],
                        "amount": round(excess, 4),
                        "within_hours": 24,
                        "why": f"owed more than {EXPIRY_DAYS - 1} days: unpaid exposure expires after {EXPIRY_DAYS}",
                    }
                )
        return out
