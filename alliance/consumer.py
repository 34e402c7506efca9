"""`AllianceSink`: turns viewer-events into contributed visits, delivered exposure and attributed
orders, posted to the exposure ledger. Runs in `roomfeed worker` under events' SinkRunner.

Idempotent by event id: a visit row, an order row and a ledger transaction each have the source
event id as a unique key, so a replayed batch writes nothing new. One database transaction per
batch; a per-contributor advisory lock keeps daily caps exact when several partitions are
consumed at once. A boosted impression is delivered only against the grant the feed's boost
stage left for that session and room (`alliance.scheduler.GrantBook`). Dwell comes from `leave.dwell_ms`, or from heartbeats since the `enter`
(Redis `rf:al:start:<viewer>:<room>`), whichever qualifies first.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

import asyncpg
from redis.asyncio import Redis

from alliance import ledger
from alliance.alliances import Terms, partner_terms
from alliance.attribution import ViewerAttribution, attributions_at
from alliance.contribution import Limits, Verdict, VisitFacts, judge
from alliance.scheduler import GrantBook
from events.vocabulary import ENTER, HEARTBEAT, IMPRESSION, LEAVE, PURCHASE

log = logging.getLogger("roomfeed.alliance")

VISIT_START_TTL_S = 6 * 3600
_VISIT_TYPES = (LEAVE, HEARTBEAT)


def _ts(epoch_s: float) -> datetime:
    return datetime.fromtimestamp(epoch_s, UTC)


class AllianceSink:
    name = "alliance"

    def __init__(self, pool: asyncpg.Pool, redis: Redis | None = None, limits: Limits | None = None) -> None:
        self.pool = pool
        self.redis = redis
        self.limits = limits or Limits()
        self.grants = GrantBook(redis) if redis is not None else None

    async def write(self, batch: list[dict[str, Any]]) -> None:
        events = [e for e in batch if isinstance(e, dict) and e.get("event_id") and e.get("viewer_id")]
        if not events:
            return
        dwell_from_heartbeats = await self._heartbeat_dwell(events)
        async with self.pool.acquire() as conn, conn.transaction():
            terms, members = await partner_terms(conn)
            await self._remember_viewers(conn, events)
            relevant = [e for e in events if e.get("type") in (*_VISIT_TYPES, PURCHASE)]
            attributions: dict[str, list[ViewerAttribution]] = {}
            if relevant:
                times = [int(e.get("ts", 0)) / 1000 for e in relevant]
                attributions = await attributions_at(
                    conn, sorted({str(e["viewer_id"]) for e in relevant}), min(times), max(times)
                )
            burst_cache: dict[str, bool] = {}
            for event in events:
                kind = event.get("type")
                if kind == IMPRESSION and event.get("boosted") is True:
                    await self._delivered(conn, event)
                elif kind == PURCHASE:
                    await self._order(conn, event, attributions)
                elif kind == LEAVE and isinstance(event.get("dwell_ms"), int):
                    await self._visit(
                        conn,
                        event,
                        int(event["dwell_ms"]),
                        attributions,
                        terms,
                        members,
                        burst_cache,
                        final=True,
                    )
                elif kind == HEARTBEAT and event["event_id"] in dwell_from_heartbeats:
                    await self._visit(
                        conn,
                        event,
                        dwell_from_heartbeats[event["event_id"]],
                        attributions,
                        terms,
                        members,
                        burst_cache,
                        final=False,
                    )

    # --- dwell from heartbeats ------------------------------------------------------------------

    async def _heartbeat_dwell(self, events: list[dict[str, Any]]) -> dict[str, int]:
        if self.redis is None:
            return {}
        starts = [e for e in events if e.get("type") in (ENTER, HEARTBEAT) and e.get("room_id")]
        if not starts:
            return {}
        pipe = self.redis.pipeline(transaction=False)
        for e in starts:
            pipe.set(
                f"rf:al:start:{e['viewer_id']}:{e['room_id']}",
                int(e.get("ts", 0)),
                nx=True,
                ex=VISIT_START_TTL_S,
            )
        await pipe.execute()
        beats = [e for e in starts if e["type"] == HEARTBEAT]
        if not beats:
            return {}
        values = await self.redis.mget([f"rf:al:start:{e['viewer_id']}:{e['room_id']}" for e in beats])
        return {
            e["event_id"]: max(0, int(e.get("ts", 0)) - int(v))
            for e, v in zip(beats, values, strict=True)
            if v is not None
        }

    # --- viewers seen ------------------------------------------------------------------------------

    async def _remember_viewers(self, conn: asyncpg.Connection, events: Iterable[dict[str, Any]]) -> None:
        first: dict[str, tuple[str | None, float]] = {}
        for e in events:
            viewer, at = str(e["viewer_id"]), int(e.get("ts", 0)) / 1000
            device = e.get("device_id") if isinstance(e.get("device_id"), str) else None
            seen = first.get(viewer)
            if seen is None or at < seen[1]:
                first[viewer] = (device or (seen[0] if seen else None), at)
        await conn.executemany(
            """INSERT INTO alliance_viewers (viewer_id, device_id, first_seen_at) VALUES ($1, $2, $3)
               ON CONFLICT (viewer_id) DO UPDATE
               SET device_id = COALESCE(alliance_viewers.device_id, EXCLUDED.device_id),
                   first_seen_at = LEAST(alliance_viewers.first_seen_at, EXCLUDED.first_seen_at)""",
            [(v, d, _ts(at)) for v, (d, at) in first.items()],
        )

    async def _burst_viewer(self, conn: asyncpg.Connection, viewer_id: str, cache: dict[str, bool]) -> bool:
        if viewer_id in cache:
            return cache[viewer_id]
        lim = self.limits
        row = await conn.fetchrow(
            """SELECT
                 (SELECT count(*) FROM alliance_viewers o WHERE v.device_id IS NOT NULL AND o.device_id = v.device_id
                    AND o.first_seen_at BETWEEN v.first_seen_at - $2 * interval '1 second'
                                            AND v.first_seen_at + $2 * interval '1 second') AS same_device,
                 (SELECT count(*) FROM alliance_viewers o WHERE v.code IS NOT NULL AND o.code = v.code
                    AND o.first_seen_at BETWEEN v.first_seen_at - $3 * interval '1 second'
                                            AND v.first_seen_at + $3 * interval '1 second') AS same_code
               FROM alliance_viewers v WHERE v.viewer_id = $1""",
            viewer_id,
            lim.device_new_viewers_window_s,
            lim.code_new_viewers_window_s,
        )
        burst = row is not None and (
            row["same_device"] >= lim.device_new_viewers or row["same_code"] >= lim.code_new_viewers
        )
        cache[viewer_id] = burst
        return burst

    # --- contributed visits ----------------------------------------------------------------------

    async def _visit(
        self,
        conn: asyncpg.Connection,
        event: dict[str, Any],
        dwell_ms: int,
        attributions: dict[str, list[ViewerAttribution]],
        terms: dict[str, Terms],
        members: dict[str, set[str]],
        burst_cache: dict[str, bool],
        *,
        final: bool,
    ) -> None:
        viewer_id, room_id, host = str(event["viewer_id"]), event.get("room_id"), event.get("merchant_id")
        if not isinstance(room_id, str) or not isinstance(host, str):
            return
        at = int(event.get("ts", 0)) / 1000
        in_force = [a for a in attributions.get(viewer_id, []) if a.starts_at <= at < a.ends_at]
        if not in_force:
            return  # not private-domain traffic of anyone: nothing to judge
        contributor = in_force[0].merchant_id
        device = event.get("device_id") if isinstance(event.get("device_id"), str) else None
        device_key = device or f"viewer:{viewer_id}"
        day = _ts(at).date()
        shared = sorted(a for a, m in members.items() if contributor in m and host in m)
        alliance_id = shared[0] if shared else None
        alliance_terms = terms.get(alliance_id) if alliance_id else None
        if contributor == host or any(a.merchant_id == host for a in in_force) or alliance_id is None:
            verdict = judge(self._facts(contributor, host, in_force, alliance_id, alliance_terms, dwell_ms))
        else:
            await conn.execute("SELECT pg_advisory_xact_lock(hashtext($1))", "alliance:" + contributor)
            counts = await conn.fetchrow(
                """SELECT
                     EXISTS (SELECT 1 FROM alliance_visits WHERE earned AND contributor_id = $1 AND viewer_id = $2
                             AND room_id = $3 AND day = $4) AS this_room,
                     (SELECT count(*) FROM alliance_visits WHERE earned AND viewer_id = $2 AND day = $4) AS viewer_n,
                     (SELECT count(*) FROM alliance_visits WHERE earned AND device_id = $5 AND day = $4) AS device_n,
                     (SELECT count(*) FROM alliance_visits WHERE device_id = $5 AND dwell_ms < $6
                        AND at BETWEEN $7 AND $8) AS short_n,
                     (SELECT COALESCE(sum(amount), 0) FROM ledger_transactions WHERE kind = 'earned'
                        AND merchant_id = $1 AND alliance_id = $9 AND at >= $10 AND at < $10 + interval '1 day')
                        AS earned_today""",
                contributor,
                viewer_id,
                room_id,
                day,
                device_key,
                self.limits.short_dwell_ms,
                _ts(at - self.limits.zero_dwell_window_s),
                _ts(at),
                alliance_id,
                datetime(day.year, day.month, day.day, tzinfo=UTC),
            )
            assert counts is not None
            facts = VisitFacts(
                contributor_id=contributor,
                host_merchant_id=host,
                host_owns_viewer=False,
                alliance_id=alliance_id,
                terms=alliance_terms,
                dwell_ms=dwell_ms,
                burst_viewer=await self._burst_viewer(conn, viewer_id, burst_cache),
                device_short_visits=int(counts["short_n"]),
                earned_this_room_today=bool(counts["this_room"]),
                viewer_earned_today=int(counts["viewer_n"]),
                device_earned_today=int(counts["device_n"]),
                contributor_earned_today=float(counts["earned_today"]),
            )
            verdict = judge(facts, self.limits)
        if not final and not verdict.earned:
            return  # a heartbeat only ever completes a qualification; the leave records the visit
        await self._record_visit(
            conn,
            event,
            viewer_id,
            device_key,
            contributor,
            host,
            room_id,
            alliance_id,
            dwell_ms,
            day,
            at,
            verdict,
        )

    def _facts(
        self,
        contributor: str,
        host: str,
        in_force: list[ViewerAttribution],
        alliance_id: str | None,
        terms: Terms | None,
        dwell_ms: int,
    ) -> VisitFacts:
        return VisitFacts(
            contributor,
            host,
            any(a.merchant_id == host for a in in_force),
            alliance_id,
            terms,
            dwell_ms,
            False,
            0,
            False,
            0,
            0,
            0.0,
        )

    async def _record_visit(
        self,
        conn: asyncpg.Connection,
        event: dict[str, Any],
        viewer_id: str,
        device_key: str,
        contributor: str,
        host: str,
        room_id: str,
        alliance_id: str | None,
        dwell_ms: int,
        day: Any,
        at: float,
        verdict: Verdict,
    ) -> None:
        inserted = await conn.fetchval(
            """INSERT INTO alliance_visits (source_event_id, viewer_id, device_id, contributor_id,
                   host_merchant_id, room_id, alliance_id, dwell_ms, day, at, earned, reason)
               VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12)
               ON CONFLICT DO NOTHING RETURNING true""",
            str(event["event_id"]),
            viewer_id,
            device_key,
            contributor,
            host,
            room_id,
            alliance_id,
            min(dwell_ms, 2**31 - 1),
            day,
            _ts(at),
            verdict.earned,
            verdict.reason,
        )
        if inserted and verdict.earned and alliance_id is not None:
            await ledger.post(
                conn,
                source_id=str(event["event_id"]),
                kind="earned",
                merchant_id=contributor,
                alliance_id=alliance_id,
                amount=verdict.amount,
                at=at,
                visits=1,
            )

    # --- delivered exposure ----------------------------------------------------------------------

    async def _delivered(self, conn: asyncpg.Connection, event: dict[str, Any]) -> None:
        merchant_id = event.get("merchant_id")
        if not isinstance(merchant_id, str):
            return
        if self.grants is not None and not await self.grants.claim(
            str(event.get("session_id", "")), str(event.get("room_id", "")), str(event["event_id"])
        ):
            log.info("boosted impression without a grant ignored: %s", event["event_id"])
            return
        # Paid back against the alliance where the merchant is owed most.
        alliance_id = await conn.fetchval(
            """SELECT alliance_id FROM ledger_balances WHERE merchant_id = $1
               ORDER BY earned - delivered - expired DESC, alliance_id LIMIT 1""",
            merchant_id,
        )
        if alliance_id is None:
            log.warning("boosted impression of a merchant with no alliance account: %s", merchant_id)
            return
        await ledger.post(
            conn,
            source_id=str(event["event_id"]),
            kind="delivered",
            merchant_id=merchant_id,
            alliance_id=alliance_id,
            amount=1.0,
            at=int(event.get("ts", 0)) / 1000,
        )

    # --- attributed orders -----------------------------------------------------------------------

    async def _order(
        self,
        conn: asyncpg.Connection,
        event: dict[str, Any],
        attributions: dict[str, list[ViewerAttribution]],
    ) -> None:
        at = int(event.get("ts", 0)) / 1000
        in_force = [a for a in attributions.get(str(event["viewer_id"]), []) if a.starts_at <= at < a.ends_at]
        amount = event.get("amount")
        if not in_force or not isinstance(amount, (int, float)) or amount <= 0:
            return
        a = in_force[0]
        await conn.execute(
            """INSERT INTO attributed_orders (source_event_id, order_id, viewer_id, merchant_id, store_id, staff_id,
                   seller_merchant_id, room_id, product_id, amount, currency, at)
               VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12) ON CONFLICT DO NOTHING""",
            str(event["event_id"]),
            str(event.get("order_id", "")),
            a.viewer_id,
            a.merchant_id,
            a.store_id,
            a.staff_id,
            str(event.get("merchant_id", "")),
            str(event.get("room_id", "")),
            str(event.get("product_id", "")),
            Decimal(str(round(float(amount), 2))),
            str(event.get("currency", "CNY")),
            _ts(at),
        )
