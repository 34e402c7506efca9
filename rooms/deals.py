"""Flash deals and their claims: a limited quantity of a product at a price, in a room, for a time window.

Where the stock truth lives: PostgreSQL. `deals.remaining` only ever changes through
`UPDATE ... SET remaining = remaining - q WHERE remaining >= q` in the claim's transaction, and the
per-viewer limit through a conditional upsert on `deal_viewer_claims`, in the same transaction, so
a unit is sold exactly when its claim row is durable and stock cannot go negative (a CHECK also
forbids it). Why not Redis as the truth: a claim is money owed to a viewer; it must survive a Redis
restart and commit atomically with the claim record, which PostgreSQL does and Redis cannot.

Redis holds an admission gate in front of it (`rf:rooms:deal:{<id>}:gate`, a token count): a Lua
script takes tokens atomically, so when 5,000 viewers hit a 100-unit deal only about 100 claims
reach PostgreSQL and the rest are answered `sold_out` from Redis in well under a millisecond,
without queueing on the deal's row lock. The gate can only err safely: tokens are returned when
PostgreSQL refuses a claim for another reason (limit, error); if the gate is lost it is re-seeded
from `remaining`; if it had too many tokens PostgreSQL still refuses. A crash between taking a
token and committing loses that token (the deal may end with a unit unsold, never oversold);
`roomfeed rebuild` re-seeds gates from PostgreSQL.

A deal closes when its window ends or when its room ends (the room's end sets `ends_at`);
PostgreSQL checks the window in the claim's UPDATE too, so a process with stale cached terms
cannot sell from a closed deal.

A successful claim is published as a `deal_claim` event on `viewer-events` keyed by viewer_id
(event_id = claim_id, so consumers dedupe), by `RoomRelay` right after the commit and again by its
reconciler until Kafka has it.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import asyncpg
from redis.asyncio import Redis

from events.vocabulary import DEAL_CLAIM, SCHEMA_VERSION
from roomfeed.errors import Conflict, NotFound, ValidationFailed
from roomfeed.ids import new_id
from roomfeed.lua import lua_script

CLAIM_COLUMNS = (
    "claim_id, deal_id, room_id, merchant_id, viewer_id, session_id, quantity, "
    "(extract(epoch FROM claimed_at) * 1000)::bigint AS claimed_at_ms"
)
DEAL_COLUMNS = (
    "deal_id, room_id, merchant_id, product_id, price, currency, quantity, remaining, per_viewer_limit, "
    "extract(epoch FROM starts_at)::float8 AS starts_at, extract(epoch FROM ends_at)::float8 AS ends_at, "
    "extract(epoch FROM created_at)::float8 AS created_at"
)

CLAIMS_IN_FLIGHT = 48

_TAKE = lua_script(__file__, "deals_take.lua")

DIRECT_SESSION = "direct"


def gate_key(deal_id: str) -> str:
    # The deal's id as a hash tag: its gate and holdings share one Redis Cluster slot (one script
    # takes both), and deals spread over the cluster.
    return f"rf:rooms:deal:{{{deal_id}}}:gate"


def holdings_key(deal_id: str) -> str:
    """viewer_id → units the gate let through for that viewer (a mirror of deal_viewer_claims)."""
    return f"rf:rooms:deal:{{{deal_id}}}:held"


def claim_event(claim: Mapping[str, Any]) -> dict[str, Any]:
    """The `deal_claim` event (schema v1) for a committed claim."""
    ts = int(claim["claimed_at_ms"])
    return {
        "event_id": claim["claim_id"],
        "type": DEAL_CLAIM,
        "v": SCHEMA_VERSION,
        "viewer_id": claim["viewer_id"],
        # A claim made outside a feed session (a deal link) is recorded under the session "direct",
        # since every event on viewer-events names a session.
        "session_id": claim["session_id"] or DIRECT_SESSION,
        "room_id": claim["room_id"],
        "merchant_id": claim["merchant_id"],
        "deal_id": claim["deal_id"],
        "quantity": claim["quantity"],
        "ts": ts,
        "received_at": ts,
    }


def deal_json(row: Mapping[str, Any]) -> dict[str, Any]:
    return {
        "deal_id": row["deal_id"],
        "room_id": row["room_id"],
        "product_id": row["product_id"],
        "price": float(row["price"]),
        "currency": row["currency"],
        "quantity": row["quantity"],
        "remaining": row["remaining"],
        "per_viewer_limit": row["per_viewer_limit"],
        "starts_at": row["starts_at"],
        "ends_at": row["ends_at"],
        "created_at": row["created_at"],
    }


@dataclass(frozen=True)
class DealTerms:
    """What a claim needs to know of a deal; immutable once the deal exists, so cached in-process."""

    deal_id: str
    room_id: str
    merchant_id: str
    per_viewer_limit: int
    starts_at: float
    ends_at: float


class DealBook:
    def __init__(self, pool: asyncpg.Pool, redis: Redis) -> None:
        self.pool = pool
        self.redis = redis
        self._take = redis.register_script(_TAKE)
        self._terms: dict[str, asyncio.Future[DealTerms | None]] = {}
        # Claims in flight per process: a burst queues here instead of exhausting the Redis
        # connection pool (100 by default, and it raises rather than waits when full).
        self._in_flight = asyncio.Semaphore(CLAIMS_IN_FLIGHT)

    async def create(
        self,
        merchant_id: str,
        room_id: str,
        *,
        product_id: str,
        price: float,
        currency: str | None,
        quantity: int,
        per_viewer_limit: int,
        starts_at: float | None,
        ends_at: float,
        now: float | None = None,
    ) -> dict[str, Any]:
        now = time.time() if now is None else now
        starts = now if starts_at is None else starts_at
        if ends_at <= starts:
            raise ValidationFailed(
                "ends_at must be after starts_at", fields={"ends_at": "must be after starts_at"}
            )
        if ends_at <= now:
            raise ValidationFailed("ends_at is in the past", fields={"ends_at": "must be in the future"})
        if per_viewer_limit > quantity:
            per_viewer_limit = quantity
        async with self.pool.acquire() as conn:
            room = await conn.fetchrow(
                "SELECT status FROM rooms WHERE room_id = $1 AND merchant_id = $2", room_id, merchant_id
            )
            if room is None:
                raise NotFound("no such room")
            if room["status"] == "ended":
                raise Conflict("the room has ended; deals go in scheduled or live rooms", code="room_ended")
            product = await conn.fetchrow(
                "SELECT currency FROM products WHERE product_id = $1 AND merchant_id = $2",
                product_id,
                merchant_id,
            )
            if product is None:
                raise ValidationFailed("no such product", fields={"product_id": "no such product"})
            row = await conn.fetchrow(
                f"""
                INSERT INTO deals (deal_id, room_id, merchant_id, product_id, price, currency, quantity,
                                   remaining, per_viewer_limit, starts_at, ends_at)
                VALUES ($1, $2, $3, $4, $5, $6, $7, $7, $8, to_timestamp($9), to_timestamp($10))
                RETURNING {DEAL_COLUMNS}
                """,  # noqa: S608
                new_id("deal"),
                room_id,
                merchant_id,
                product_id,
                price,
                currency or product["currency"],
                quantity,
                per_viewer_limit,
                starts,
                ends_at,
            )
        await self.redis.set(gate_key(row["deal_id"]), quantity, exat=int(ends_at) + 86_400)
        return deal_json(row)

    async def get(self, merchant_id: str, deal_id: str) -> dict[str, Any]:
        row = await self.pool.fetchrow(
            f"SELECT {DEAL_COLUMNS} FROM deals WHERE deal_id = $1 AND merchant_id = $2",  # noqa: S608
            deal_id,
            merchant_id,
        )
        if row is None:
            raise NotFound("no such deal")
        return deal_json(row)

    async def of_room(self, merchant_id: str | None, room_id: str) -> list[dict[str, Any]]:
        """A room's deals; merchant_id None means any merchant's room (viewers see a room's deals)."""
        rows = await self.pool.fetch(
            f"SELECT {DEAL_COLUMNS} FROM deals WHERE room_id = $1 "  # noqa: S608
            "AND ($2::text IS NULL OR merchant_id = $2) ORDER BY created_at",
            room_id,
            merchant_id,
        )
        return [deal_json(r) for r in rows]

    async def terms(self, deal_id: str) -> DealTerms | None:
        """Cached per process with single flight: a burst of claims on a new deal reads it once."""
        future = self._terms.get(deal_id)
        if future is None:
            future = asyncio.get_running_loop().create_future()
            self._terms[deal_id] = future
            try:
                row = await self.pool.fetchrow(
                    "SELECT deal_id, room_id, merchant_id, per_viewer_limit, "
                    "extract(epoch FROM starts_at)::float8 AS starts_at, "
                    "extract(epoch FROM ends_at)::float8 AS ends_at FROM deals WHERE deal_id = $1",
                    deal_id,
                )
            except BaseException as exc:
                self._terms.pop(deal_id, None)
                future.set_exception(exc)
                future.exception()  # mark retrieved: waiters (if any) get it re-raised below
                raise
            future.set_result(DealTerms(**dict(row)) if row is not None else None)
            if row is None:
                self._terms.pop(deal_id, None)
            if len(self._terms) > 50_000:
                self._terms.clear()
        return await asyncio.shield(future)

    async def claim(
        self,
        deal_id: str,
        viewer_id: str,
        *,
        quantity: int = 1,
        session_id: str | None = None,
        now: float | None = None,
    ) -> dict[str, Any]:
        """Claim units of a deal for a viewer: the committed claim, or Conflict sold_out / limit_reached."""
        now = time.time() if now is None else now
        terms = await self.terms(deal_id)
        if terms is None:
            raise NotFound("no such deal")
        if now < terms.starts_at:
            raise Conflict("the deal has not started yet", code="deal_not_started")
        if now >= terms.ends_at:
            raise Conflict("the deal has ended", code="deal_ended")
        if quantity > terms.per_viewer_limit:
            raise Conflict(
                f"at most {terms.per_viewer_limit} per viewer",
                code="limit_reached",
                fields={"quantity": f"must be at most {terms.per_viewer_limit}"},
            )
        async with self._in_flight:
            await self._take_tokens(terms, viewer_id, quantity)
            try:
                return await self._commit(terms, viewer_id, quantity, session_id)
            except Conflict as refused:
                # PostgreSQL said no: the viewer holds nothing more. Stock tokens go back unless
                # PostgreSQL is sold out too; a limit PostgreSQL knows and Redis did not is mirrored.
                await self._release(
                    terms,
                    viewer_id,
                    quantity,
                    stock=refused.code != "sold_out",
                    held_now=terms.per_viewer_limit if refused.code == "limit_reached" else None,
                )
                raise
            except BaseException:
                # Not committed (or unknown): give the tokens back; PostgreSQL still guards the stock.
                await asyncio.shield(self._release(terms, viewer_id, quantity, stock=True))
                raise

    async def _take_tokens(self, terms: DealTerms, viewer_id: str, quantity: int) -> None:
        keys = [gate_key(terms.deal_id), holdings_key(terms.deal_id)]
        for _ in range(2):
            left = int(await self._take(keys=keys, args=[quantity, viewer_id, terms.per_viewer_limit]))
            if left >= 0:
                return
            if left == -1:
                raise Conflict("sold out", code="sold_out")
            if left == -3:
                raise Conflict(
                    f"this viewer already holds the limit of {terms.per_viewer_limit}", code="limit_reached"
                )
            # Gate unknown (Redis lost it, or it expired): seed it from the truth, once. Holdings
            # start empty then; PostgreSQL still enforces the limit and teaches the mirror.
            remaining = await self.pool.fetchval(
                "SELECT remaining FROM deals WHERE deal_id = $1", terms.deal_id
            )
            await self.redis.set(keys[0], int(remaining or 0), nx=True, ex=7 * 86_400)
        raise Conflict("sold out", code="sold_out")

    async def _release(
        self, terms: DealTerms, viewer_id: str, quantity: int, *, stock: bool, held_now: int | None = None
    ) -> None:
        async with self.redis.pipeline(transaction=True) as pipe:
            if stock:
                pipe.incrby(gate_key(terms.deal_id), quantity)
            if held_now is not None:
                pipe.hset(holdings_key(terms.deal_id), viewer_id, held_now)
            else:
                pipe.hincrby(holdings_key(terms.deal_id), viewer_id, -quantity)
            await pipe.execute()

    async def _commit(
        self, terms: DealTerms, viewer_id: str, quantity: int, session_id: str | None
    ) -> dict[str, Any]:
        async with self.pool.acquire() as conn, conn.transaction():
            # Lock order: the viewer's row, then the deal's row (no cycles, no deadlocks).
            held = await conn.fetchval(
                """
                INSERT INTO deal_viewer_claims AS c (deal_id, viewer_id, claimed) VALUES ($1, $2, $3)
                ON CONFLICT (deal_id, viewer_id) DO UPDATE SET claimed = c.claimed + EXCLUDED.claimed
                 WHERE c.claimed + EXCLUDED.claimed <= $4
                RETURNING claimed
                """,
                terms.deal_id,
                viewer_id,
                quantity,
                terms.per_viewer_limit,
            )
            if held is None:
                raise Conflict(
                    f"this viewer already holds the limit of {terms.per_viewer_limit}", code="limit_reached"
                )
            remaining = await conn.fetchval(
                "UPDATE deals SET remaining = remaining - $2 "
                "WHERE deal_id = $1 AND remaining >= $2 AND now() < ends_at RETURNING remaining",
                terms.deal_id,
                quantity,
            )
            if remaining is None:
                # Sold out, or closed since this process cached its terms (its room ended).
                if await conn.fetchval(
                    "SELECT now() >= ends_at FROM deals WHERE deal_id = $1", terms.deal_id
                ):
                    self._terms.pop(terms.deal_id, None)
                    raise Conflict("the deal has ended", code="deal_ended")
                raise Conflict("sold out", code="sold_out")
            row = await conn.fetchrow(
                f"""
                INSERT INTO deal_claims (claim_id, deal_id, room_id, merchant_id, viewer_id, session_id, quantity)
                VALUES ($1, $2, $3, $4, $5, $6, $7) RETURNING {CLAIM_COLUMNS}
                """,  # noqa: S608
                new_id("clm"),
                terms.deal_id,
                terms.room_id,
                terms.merchant_id,
                viewer_id,
                session_id,
                quantity,
            )
        claim = dict(row)
        claim["remaining"] = remaining
        claim["held"] = held
        return claim

    async def reseed_gates(self, now: float | None = None) -> int:
        """Set every running deal's gate to its PostgreSQL remaining (after a Redis loss or crash)."""
        now = time.time() if now is None else now
        rows = await self.pool.fetch(
            "SELECT deal_id, remaining, extract(epoch FROM ends_at)::float8 AS ends_at FROM deals "
            "WHERE ends_at > to_timestamp($1)",
            now,
        )
        async with self.redis.pipeline(transaction=False) as pipe:
            for r in rows:
                pipe.set(gate_key(r["deal_id"]), r["remaining"], exat=int(r["ends_at"]) + 86_400)
            await pipe.execute()
        return len(rows)


def claim_json(claim: Mapping[str, Any]) -> dict[str, Any]:
    return {
        "claim_id": claim["claim_id"],
        "deal_id": claim["deal_id"],
        "room_id": claim["room_id"],
        "viewer_id": claim["viewer_id"],
        "quantity": claim["quantity"],
        "held": claim.get("held"),
        "remaining": claim.get("remaining"),
        "claimed_at": claim["claimed_at_ms"] / 1000,
    }
