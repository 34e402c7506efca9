"""The exposure ledger: append-only, double-entry, idempotent by source (PostgreSQL).

Accounts, per merchant and alliance: *held* (credit that is still provisional), *merchant* (credit
the scheduler pays back as exposure), and the alliance's *pool*.

| kind          | legs                                  | meaning                                              |
|---------------|---------------------------------------|------------------------------------------------------|
| `provisional` | pool → held                           | a qualified visit (or an order it led to), holding    |
| `confirmed`   | held → merchant                       | the holding period passed without evidence of farming |
| `clawed_back` | held → pool, or merchant → pool       | later evidence marked it farmed (the reason is on the visit) |
| `delivered`   | merchant → pool (1)                   | a boosted room the viewer reached (an app-reported impression against a grant) |
| `expired`     | merchant → pool                       | owed exposure that aged out unpaid                    |
| `earned`      | pool → merchant                       | credit recorded before holding existed (no new ones)  |

A merchant's balance (what it is owed now) is its *merchant* account: earned − held − clawed back
− delivered − expired. One transaction per (source id, kind): replaying an event changes nothing.
`ledger_balances` is a read model kept in the same database transaction as the postings.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any, Literal

import asyncpg

from alliance import orders as attributed  # a module: orders credit conversions through this ledger
from alliance.alliances import Terms
from alliance.clock import AllianceClock
from alliance.contribution import CLAWBACK_REASONS, REASONS

EXPIRY_DAYS = 7
Kind = Literal["earned", "provisional", "confirmed", "clawed_back", "delivered", "expired"]
Account = Literal["merchant", "held", "pool"]

# kind → (the account credited, the account debited), for the default direction.
_LEGS: dict[str, tuple[Account, Account]] = {
    "earned": ("merchant", "pool"),
    "provisional": ("held", "pool"),
    "confirmed": ("merchant", "held"),
    "clawed_back": ("pool", "held"),
    "delivered": ("pool", "merchant"),
    "expired": ("pool", "merchant"),
}

# kind → how the read model changes ($3 visits, $4 the amount).
_BALANCE_UPDATES = {
    "earned": """UPDATE ledger_balances SET visits = visits + $3, earned = earned + $4
                 WHERE merchant_id = $1 AND alliance_id = $2""",
    "provisional": """UPDATE ledger_balances SET visits = visits + $3, earned = earned + $4, held = held + $4
                      WHERE merchant_id = $1 AND alliance_id = $2""",
    "confirmed": """UPDATE ledger_balances SET visits = visits + $3, held = held - $4
                    WHERE merchant_id = $1 AND alliance_id = $2""",
    "clawed_back_held": """UPDATE ledger_balances SET visits = visits + $3, held = held - $4,
                               clawed_back = clawed_back + $4
                           WHERE merchant_id = $1 AND alliance_id = $2""",
    "clawed_back_merchant": """UPDATE ledger_balances SET visits = visits + $3, clawed_back = clawed_back + $4
                               WHERE merchant_id = $1 AND alliance_id = $2""",
    "delivered": """UPDATE ledger_balances SET visits = visits + $3, delivered = delivered + $4
                    WHERE merchant_id = $1 AND alliance_id = $2""",
    "expired": """UPDATE ledger_balances SET visits = visits + $3, expired = expired + $4
                  WHERE merchant_id = $1 AND alliance_id = $2""",
}


def _sales_json(s: attributed.AttributedSales) -> dict[str, Any]:
    return {
        "currency": s.currency,
        "orders": s.orders,
        "gross": float(s.gross),
        "reversed": float(s.reversed),
        "gmv": float(s.net),
    }


def _ts(epoch_s: float) -> datetime:
    return datetime.fromtimestamp(epoch_s, UTC)


async def post(
    conn: asyncpg.Connection,
    *,
    source_id: str,
    kind: Kind,
    merchant_id: str,
    alliance_id: str,
    amount: float,
    at: float,
    visits: int = 0,
    from_account: Account | None = None,
) -> bool:
    """Record one balanced transaction; False (and nothing written) when the source was already posted.

    `from_account` is for `clawed_back` only: "held" (the default, before confirmation) or
    "merchant" (after it). `visits` moves the read model's count of credited visits.
    Call inside a transaction: the balance check runs at commit.
    """
    value = Decimal(str(round(amount, 4)))
    txn_id = await conn.fetchval(
        """INSERT INTO ledger_transactions (source_id, kind, merchant_id, alliance_id, amount, at)
           VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT (source_id, kind) DO NOTHING RETURNING txn_id""",
        source_id,
        kind,
        merchant_id,
        alliance_id,
        value,
        _ts(at),
    )
    if txn_id is None:
        return False
    credit, debit = _LEGS[kind]
    balance_key: str = kind
    if kind == "clawed_back":
        debit = from_account or "held"
        balance_key = f"clawed_back_{debit}"
    await conn.executemany(
        "INSERT INTO ledger_postings (txn_id, account, alliance_id, merchant_id, amount) VALUES ($1, $2, $3, $4, $5)",
        [
            (txn_id, credit, alliance_id, None if credit == "pool" else merchant_id, value),
            (txn_id, debit, alliance_id, None if debit == "pool" else merchant_id, -value),
        ],
    )
    await conn.execute(
        """INSERT INTO ledger_balances (merchant_id, alliance_id) VALUES ($1, $2)
           ON CONFLICT (merchant_id, alliance_id) DO NOTHING""",
        merchant_id,
        alliance_id,
    )
    await conn.execute(
        _BALANCE_UPDATES[balance_key],
        merchant_id,
        alliance_id,
        visits,
        value,
    )
    return True


@dataclass(frozen=True)
class Balance:
    merchant_id: str
    alliance_id: str
    visits: int  # credited visits standing (clawed-back ones no longer count)
    earned: float  # every credit ever posted, provisional or not
    delivered: float
    expired: float
    held: float = 0.0  # provisional: waiting for its holding period
    clawed_back: float = 0.0

    @property
    def balance(self) -> float:
        """What the merchant is owed now (spendable): what the scheduler pays back."""
        return self.earned - self.held - self.clawed_back - self.delivered - self.expired


def _balance(r: asyncpg.Record) -> Balance:
    return Balance(
        r["merchant_id"],
        r["alliance_id"],
        int(r["visits"]),
        float(r["earned"]),
        float(r["delivered"]),
        float(r["expired"]),
        float(r["held"]),
        float(r["clawed_back"]),
    )


OWED_SQL = "b.earned - b.held - b.clawed_back - b.delivered - b.expired"


class Ledger:
    def __init__(self, pool: asyncpg.Pool, clock: AllianceClock | None = None) -> None:
        self.pool = pool
        self.clock = clock or AllianceClock()

    async def balances(self, merchant_id: str | None = None) -> list[Balance]:
        rows = await self.pool.fetch(
            """SELECT * FROM ledger_balances WHERE $1::text IS NULL OR merchant_id = $1
               ORDER BY merchant_id, alliance_id""",
            merchant_id,
        )
        return [_balance(r) for r in rows]

    async def transactions(
        self, merchant_id: str, after_txn: int = 0, limit: int = 5000
    ) -> list[dict[str, Any]]:
        """A merchant's ledger lines in order (`roomfeed export`): each earned, delivered or expired
        amount of exposure, in which alliance, when, and the event or tick it came from."""
        rows = await self.pool.fetch(
            """SELECT txn_id, kind, alliance_id, amount, extract(epoch FROM at)::float8 AS at, source_id
               FROM ledger_transactions WHERE merchant_id = $1 AND txn_id > $2 ORDER BY txn_id LIMIT $3""",
            merchant_id,
            after_txn,
            limit,
        )
        return [dict(r) for r in rows]

    async def balances_from_postings(self) -> list[Balance]:
        """Balances recomputed from the append-only postings (the truth the read model must equal)."""
        rows = await self.pool.fetch(
            """SELECT t.merchant_id, t.alliance_id,
                      count(*) FILTER (WHERE t.kind IN ('earned', 'provisional') AND t.source_id NOT LIKE 'order:%')
                        - count(*) FILTER (WHERE t.kind = 'clawed_back' AND t.source_id NOT LIKE 'order:%')
                        AS visits,
                      COALESCE(sum(t.amount) FILTER (WHERE t.kind IN ('earned', 'provisional')), 0) AS earned,
                      COALESCE(sum(t.amount) FILTER (WHERE t.kind = 'delivered'), 0) AS delivered,
                      COALESCE(sum(t.amount) FILTER (WHERE t.kind = 'expired'), 0) AS expired,
                      COALESCE(sum(t.amount) FILTER (WHERE t.kind = 'clawed_back'), 0) AS clawed_back,
                      COALESCE((SELECT sum(p.amount) FROM ledger_postings p JOIN ledger_transactions u USING (txn_id)
                                WHERE p.account = 'held' AND u.merchant_id = t.merchant_id
                                  AND u.alliance_id = t.alliance_id), 0) AS held
               FROM ledger_transactions t GROUP BY t.merchant_id, t.alliance_id
               ORDER BY t.merchant_id, t.alliance_id"""
        )
        return [_balance(r) for r in rows]

    async def unbalanced_transactions(self) -> int:
        return int(
            await self.pool.fetchval(
                "SELECT count(*) FROM (SELECT txn_id FROM ledger_postings GROUP BY txn_id HAVING sum(amount) <> 0) x"
            )
        )

    async def expire(self, now: float, max_age_days: int = EXPIRY_DAYS) -> int:
        """Expire owed exposure earned more than `max_age_days` ago and still unpaid; returns postings made.

        What may stay owed is what was earned within the window; anything above it ages out (FIFO).
        Idempotent per merchant, alliance and day.
        """
        since = _ts(now - self.clock.wall(max_age_days * 86_400))
        day = self.clock.day(now).isoformat()
        made = 0
        async with self.pool.acquire() as conn, conn.transaction():
            rows = await conn.fetch(
                f"""SELECT b.merchant_id, b.alliance_id, {OWED_SQL} AS owed,
                          COALESCE((SELECT sum(t.amount) FROM ledger_transactions t
                                    WHERE t.merchant_id = b.merchant_id AND t.alliance_id = b.alliance_id
                                      AND t.kind IN ('earned', 'confirmed') AND t.at >= $1), 0) AS recent
                   FROM ledger_balances b WHERE {OWED_SQL} > 0""",  # noqa: S608 (a fixed expression)
                since,
            )
            for r in rows:
                excess = float(r["owed"] - r["recent"])
                if excess > 0.0001:
                    made += await post(
                        conn,
                        source_id=f"expire:{r['merchant_id']}:{r['alliance_id']}:{day}",
                        kind="expired",
                        merchant_id=r["merchant_id"],
                        alliance_id=r["alliance_id"],
                        amount=excess,
                        at=now,
                    )
        return made

    async def statement(self, merchant_id: str) -> dict[str, Any]:
        """What `GET /v1/merchants/{id}/ledger` shows: exposure, attributed sales, revenue share."""
        balances = await self.balances(merchant_id)
        names = {
            r["alliance_id"]: (r["name"], r["commission_rate"])
            for r in await self.pool.fetch(
                """SELECT a.alliance_id, a.name, a.commission_rate FROM alliances a
                   JOIN alliance_members m USING (alliance_id) WHERE m.merchant_id = $1""",
                merchant_id,
            )
        }
        rate_row = await self.pool.fetchval(
            """SELECT a.commission_rate FROM alliances a JOIN alliance_members m USING (alliance_id)
               WHERE m.merchant_id = $1 AND m.status = 'active' ORDER BY m.joined_at LIMIT 1""",
            merchant_id,
        )
        commission_rate = float(rate_row) if rate_row is not None else Terms().commission_rate
        totals, by_store, by_staff = await attributed.AttributedOrders(self.pool).of_merchant(merchant_id)
        summary = {
            "contributed_visits": sum(b.visits for b in balances),
            "earned": round(sum(b.earned for b in balances), 4),
            "held": round(sum(b.held for b in balances), 4),
            "clawed_back": round(sum(b.clawed_back for b in balances), 4),
            "delivered": round(sum(b.delivered for b in balances), 4),
            "expired": round(sum(b.expired for b in balances), 4),
            "balance": round(sum(b.balance for b in balances), 4),
        }
        return {
            "merchant_id": merchant_id,
            **summary,
            "alliances": [
                {
                    "alliance_id": b.alliance_id,
                    "name": names.get(b.alliance_id, ("", 0))[0],
                    "contributed_visits": b.visits,
                    "earned": b.earned,
                    "held": b.held,
                    "clawed_back": b.clawed_back,
                    "delivered": b.delivered,
                    "expired": b.expired,
                    "balance": round(b.balance, 4),
                }
                for b in balances
            ],
            "visits": await self.visits(merchant_id),
            # From verified orders only (POST /v1/orders), net of refunds and cancellations.
            "attributed": {
                "orders": sum(t.orders for t in totals),
                "gmv": [_sales_json(t) for t in totals],
                "by_store": [
                    {"store_id": store_id, **_sales_json(s)}
                    for store_id in sorted(by_store)
                    for s in by_store[store_id]
                ],
                "by_staff": [
                    {"staff_id": staff_id, **_sales_json(s)}
                    for staff_id in sorted(by_staff)
                    for s in by_staff[staff_id]
                ],
            },
            "revenue_share": [
                {
                    "store_id": store_id,
                    "currency": s.currency,
                    "orders": s.orders,
                    "gross": float(s.gross),
                    "reversed": float(s.reversed),
                    "attributed_gmv": float(s.net),
                    "commission_rate": commission_rate,
                    "commission": float((s.net * Decimal(str(commission_rate))).quantize(Decimal("0.01"))),
                }
                for store_id in sorted(by_store)
                for s in by_store[store_id]
            ],
        }

    async def visits(self, merchant_id: str) -> dict[str, Any]:
        """The merchant's visits as it should read them: each visit once, under what became of it.

        `counted` visits earned credit and still stand (`held` ones are provisional until
        `held_until`); `clawed_back` ones earned and were taken back, by reason; `not_counted` ones
        never earned, by reason. A visit is one enter of one room, so a visit that qualified on a
        heartbeat is counted once, never also listed under its leave.
        """
        rows = await self.pool.fetch(
            """SELECT earned, state, reason, clawback_reason, count(*) AS n, COALESCE(sum(amount), 0) AS amount,
                      max(hold_until) AS until, count(*) FILTER (WHERE conversion_amount > 0) AS converted,
                      COALESCE(sum(conversion_amount), 0) AS conversion
               FROM alliance_visits WHERE contributor_id = $1
               GROUP BY earned, state, reason, clawback_reason""",
            merchant_id,
        )
        counted: dict[str, Any] = {
            "visits": 0,
            "confirmed": 0,
            "held": 0,
            "held_amount": 0.0,
            "held_until": None,
            "visit_credit": 0.0,
            "converted": 0,
            "conversion_credit": 0.0,
        }
        clawed: dict[str, dict[str, Any]] = {}
        not_counted: dict[str, dict[str, Any]] = {}
        for r in rows:
            n = int(r["n"])
            if not r["earned"]:
                not_counted[r["reason"]] = {"visits": n, "why": REASONS.get(r["reason"], r["reason"])}
            elif r["state"] == "clawed_back":
                reason = r["clawback_reason"] or "unknown"
                entry = clawed.setdefault(
                    reason, {"visits": 0, "amount": 0.0, "why": CLAWBACK_REASONS.get(reason, reason)}
                )
                entry["visits"] += n
                entry["amount"] = round(entry["amount"] + float(r["amount"]), 4)
            else:
                counted["visits"] += n
                counted["converted"] += int(r["converted"])
                conversion = float(r["conversion"])
                counted["conversion_credit"] = round(counted["conversion_credit"] + conversion, 4)
                counted["visit_credit"] = round(counted["visit_credit"] + float(r["amount"]) - conversion, 4)
                if r["state"] == "held":
                    counted["held"] += n
                    counted["held_amount"] = round(counted["held_amount"] + float(r["amount"]), 4)
                    counted["held_until"] = r["until"].timestamp() if r["until"] is not None else None
                else:
                    counted["confirmed"] += n
        return {"counted": counted, "clawed_back": clawed, "not_counted": not_counted}

    async def overview(self, now: float, hours: int = 48) -> dict[str, Any]:
        """Operators' view: per merchant earned, delivered, balance, and an hourly series."""
        merchants: dict[str, dict[str, Any]] = {}
        for b in await self.balances():
            m = merchants.setdefault(
                b.merchant_id,
                {
                    "merchant_id": b.merchant_id,
                    "contributed_visits": 0,
                    "earned": 0.0,
                    "delivered": 0.0,
                    "expired": 0.0,
                    "balance": 0.0,
                    "alliances": [],
                },
            )
            m["contributed_visits"] += b.visits
            m["earned"] += b.earned
            m["delivered"] += b.delivered
            m["expired"] += b.expired
            m["balance"] += b.balance
            m["alliances"].append(b.alliance_id)
        for m in merchants.values():
            m["delivery_ratio"] = round(m["delivered"] / m["earned"], 4) if m["earned"] > 0 else None
        rows = await self.pool.fetch(
            """SELECT merchant_id, date_trunc('hour', at) AS hour, kind, sum(amount) AS amount
               FROM ledger_transactions WHERE at >= $1
               GROUP BY merchant_id, hour, kind ORDER BY hour""",
            _ts(now) - timedelta(hours=hours),
        )
        series: dict[str, dict[float, dict[str, float]]] = {}
        for r in rows:
            point = series.setdefault(r["merchant_id"], {}).setdefault(
                r["hour"].timestamp(), {"earned": 0.0, "delivered": 0.0, "expired": 0.0}
            )
            point[r["kind"]] = float(r["amount"])
        for merchant_id, points in series.items():
            entry = merchants.setdefault(merchant_id, {"merchant_id": merchant_id})
            entry["series"] = [{"hour": h, **v} for h, v in sorted(points.items())]
        totals = {
            k: round(sum(m.get(k, 0.0) for m in merchants.values()), 4)
            for k in ("earned", "delivered", "expired", "balance")
        }
        return {
            "hours": hours,
            "totals": totals,
            "merchants": sorted(merchants.values(), key=lambda m: m["merchant_id"]),
        }
