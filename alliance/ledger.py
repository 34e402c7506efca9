"""The exposure ledger: append-only, double-entry, idempotent by source event (PostgreSQL).

Accounts: each merchant's exposure account within an alliance, and the alliance's pool.
- earned    credits the merchant (+amount) and debits the pool (−amount): exposure owed to it;
- delivered debits the merchant (−1) and credits the pool (+1): one boosted impression shown;
- expired   debits the merchant and credits the pool: owed exposure that aged out unpaid.
A merchant's balance (earned − delivered − expired) is its exposure debt, what the scheduler
pays back. One transaction per (source event id, kind): replaying an event changes nothing.
`ledger_balances` is a read model kept in the same database transaction as the postings.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import asyncpg

EXPIRY_DAYS = 7
_BALANCE_COLUMN = {"earned": "earned", "delivered": "delivered", "expired": "expired"}


def _ts(epoch_s: float) -> datetime:
    return datetime.fromtimestamp(epoch_s, UTC)


async def post(
    conn: asyncpg.Connection,
    *,
    source_id: str,
    kind: str,
    merchant_id: str,
    alliance_id: str,
    amount: float,
    at: float,
    visits: int = 0,
) -> bool:
    """Record one balanced transaction; False (and nothing written) when the source was already posted.

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
    merchant_leg = value if kind == "earned" else -value
    await conn.executemany(
        "INSERT INTO ledger_postings (txn_id, account, alliance_id, merchant_id, amount) VALUES ($1, $2, $3, $4, $5)",
        [
            (txn_id, "merchant", alliance_id, merchant_id, merchant_leg),
            (txn_id, "pool", alliance_id, None, -merchant_leg),
        ],
    )
    column = _BALANCE_COLUMN[kind]
    await conn.execute(
        f"""INSERT INTO ledger_balances (merchant_id, alliance_id, visits, {column})
            VALUES ($1, $2, $3, $4)
            ON CONFLICT (merchant_id, alliance_id) DO UPDATE
            SET visits = ledger_balances.visits + EXCLUDED.visits,
                {column} = ledger_balances.{column} + EXCLUDED.{column}""",  # noqa: S608 (column from a fixed map)
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
    visits: int
    earned: float
    delivered: float
    expired: float

    @property
    def balance(self) -> float:
        return self.earned - self.delivered - self.expired


def _balance(r: asyncpg.Record) -> Balance:
    return Balance(
        r["merchant_id"],
        r["alliance_id"],
        int(r["visits"]),
        float(r["earned"]),
        float(r["delivered"]),
        float(r["expired"]),
    )


class Ledger:
    def __init__(self, pool: asyncpg.Pool) -> None:
        self.pool = pool

    async def balances(self, merchant_id: str | None = None) -> list[Balance]:
        rows = await self.pool.fetch(
            """SELECT * FROM ledger_balances WHERE $1::text IS NULL OR merchant_id = $1
               ORDER BY merchant_id, alliance_id""",
            merchant_id,
        )
        return [_balance(r) for r in rows]

    async def balances_from_postings(self) -> list[Balance]:
        """Balances recomputed from the append-only postings (the truth the read model must equal)."""
        rows = await self.pool.fetch(
            """SELECT t.merchant_id, t.alliance_id,
                      count(*) FILTER (WHERE t.kind = 'earned' AND t.source_id NOT LIKE 'expire:%') AS visits,
                      COALESCE(sum(t.amount) FILTER (WHERE t.kind = 'earned'), 0) AS earned,
                      COALESCE(sum(t.amount) FILTER (WHERE t.kind = 'delivered'), 0) AS delivered,
                      COALESCE(sum(t.amount) FILTER (WHERE t.kind = 'expired'), 0) AS expired
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
        since = _ts(now) - timedelta(days=max_age_days)
        day = _ts(now).date().isoformat()
        made = 0
        async with self.pool.acquire() as conn, conn.transaction():
            rows = await conn.fetch(
                """SELECT b.merchant_id, b.alliance_id, b.earned - b.delivered - b.expired AS owed,
                          COALESCE((SELECT sum(t.amount) FROM ledger_transactions t
                                    WHERE t.merchant_id = b.merchant_id AND t.alliance_id = b.alliance_id
                                      AND t.kind = 'earned' AND t.at >= $1), 0) AS recent
                   FROM ledger_balances b WHERE b.earned - b.delivered - b.expired > 0""",
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
        from alliance.alliances import Terms

        commission_rate = float(rate_row) if rate_row is not None else Terms().commission_rate
        orders = await self.pool.fetch(
            """SELECT store_id, staff_id, currency, count(*) AS orders, sum(amount) AS gmv,
                      GROUPING(store_id) AS no_store, GROUPING(staff_id) AS no_staff
               FROM attributed_orders WHERE merchant_id = $1
               GROUP BY GROUPING SETS ((store_id, currency), (staff_id, currency), (currency))""",
            merchant_id,
        )
        by_store, by_staff, totals = [], [], []
        for r in orders:
            entry = {"currency": r["currency"], "orders": int(r["orders"]), "gmv": float(r["gmv"])}
            if r["no_store"] == 0:
                if r["store_id"] is not None:  # orders from merchant-level codes count in totals only
                    by_store.append({"store_id": r["store_id"], **entry})
            elif r["no_staff"] == 0:
                if r["staff_id"] is not None:
                    by_staff.append({"staff_id": r["staff_id"], **entry})
            else:
                totals.append(entry)
        rejected = await self.pool.fetch(
            """SELECT reason, count(*) AS n FROM alliance_visits WHERE contributor_id = $1 AND NOT earned
               GROUP BY reason ORDER BY reason""",
            merchant_id,
        )
        summary = {
            "contributed_visits": sum(b.visits for b in balances),
            "earned": round(sum(b.earned for b in balances), 4),
            "delivered": round(sum(b.delivered for b in balances), 4),
            "expired": round(sum(b.expired for b in balances), 4),
        }
        summary["balance"] = round(summary["earned"] - summary["delivered"] - summary["expired"], 4)
        return {
            "merchant_id": merchant_id,
            **summary,
            "alliances": [
                {
                    "alliance_id": b.alliance_id,
                    "name": names.get(b.alliance_id, ("", 0))[0],
                    "contributed_visits": b.visits,
                    "earned": b.earned,
                    "delivered": b.delivered,
                    "expired": b.expired,
                    "balance": round(b.balance, 4),
                }
                for b in balances
            ],
            "attributed": {
                "orders": sum(t["orders"] for t in totals),
                "gmv": [{"currency": t["currency"], "gmv": t["gmv"], "orders": t["orders"]} for t in totals],
                "by_store": sorted(by_store, key=lambda e: (e["store_id"], e["currency"])),
                "by_staff": sorted(by_staff, key=lambda e: (e["staff_id"], e["currency"])),
            },
            "revenue_share": [
                {
                    "store_id": s["store_id"],
                    "currency": s["currency"],
                    "orders": s["orders"],
                    "attributed_gmv": s["gmv"],
                    "commission_rate": commission_rate,
                    "commission": round(s["gmv"] * commission_rate, 2),
                }
                for s in sorted(by_store, key=lambda e: (e["store_id"], e["currency"]))
            ],
            "rejected_visits": {r["reason"]: int(r["n"]) for r in rejected},
        }

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
