"""`AllianceSink`: turns viewer-events into contributed visits, delivered exposure and attributed
orders, posted to the exposure ledger. Runs in `roomfeed worker` under events' SinkRunner.

- Visits are judged on the server's evidence (alliance.evidence: arrival times, rooms served on feed
  pages) and the pure rule of alliance.contribution; a qualified visit's credit is *provisional*
  (held) until alliance.settlement confirms it or claws it back.
- A delivered impression is an impression the *app* reported (what was on screen) for a room the
  feed boosted for that viewer on that page: it counts only against the grant the boost stage left
  (alliance.grants), once. A forged `boosted: true` books nothing; the feed's own `served` records
  never count as delivered.

Idempotent by event id: a visit row (unique by source event and by visit), an order row and a ledger
transaction each have the source as a unique key, so a replayed batch writes nothing new. One
database transaction per batch; a per-contributor advisory lock keeps daily caps exact when
several partitions are consumed at once. Every time is the server's: `received_at`.
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
from alliance.clock import AllianceClock
from alliance.contribution import Policy, Verdict, VisitFacts, judge
from alliance.conversions import convert_visit
from alliance.evidence import EvidenceBook, VisitEvidence
from alliance.grants import GrantBook
from alliance.ledger import OWED_SQL
from events.vocabulary import HEARTBEAT, IMPRESSION, LEAVE
from roomfeed.logs import bound

log = logging.getLogger("roomfeed.alliance")

_JUDGED = (LEAVE, HEARTBEAT)


def _ts(epoch_s: float) -> datetime:
    return datetime.fromtimestamp(epoch_s, UTC)


def received_s(event: dict[str, Any]) -> float:
    """When the server received the event (epoch s): ingest's `received_at`, else its `ts`."""
    at = event.get("received_at")
    return int(at if isinstance(at, int) else event.get("ts", 0)) / 1000


class AllianceSink:
    name = "alliance"

    def __init__(
        self,
        pool: asyncpg.Pool,
        redis: Redis,
        clock: AllianceClock | None = None,
        policy: Policy | None = None,
    ) -> None:
        self.pool = pool
        self.redis = redis
        self.policy = policy or Policy()
        self.clock = clock or AllianceClock()
        self.evidence = EvidenceBook(redis, self.clock, self.policy.heartbeat_s)
        self.grants = GrantBook(redis, self.clock)

    async def write(self, batch: list[dict[str, Any]]) -> None:
        events = [e for e in batch if isinstance(e, dict) and e.get("event_id") and e.get("viewer_id")]
        if not events:
            return
        evidence = await self.evidence.observe(events)
        delivered = await self._grants_claimed(events)
        async with self.pool.acquire() as conn, conn.transaction():
            terms, members = await partner_terms(conn)
            await self._remember_viewers(conn, events)
            # A viewer's `purchase` is a funnel signal only: money comes from verified orders (alliance.orders).
            relevant = [e for e in events if e.get("type") in _JUDGED]
            attributions: dict[str, list[ViewerAttribution]] = {}
            if relevant:
                times = [received_s(e) for e in relevant]
                attributions = await attributions_at(
                    conn, sorted({str(e["viewer_id"]) for e in relevant}), min(times), max(times)
                )
            burst_cache: dict[str, bool] = {}
            for event in events:
                kind, event_id = event.get("type"), str(event["event_id"])
                if kind == IMPRESSION and event_id in delivered:
                    await self._delivered(conn, event, delivered[event_id])
                elif kind in _JUDGED and event_id in evidence:
                    await self._visit(
                        conn, event, evidence[event_id], attributions, terms, members, burst_cache
                    )

    # --- viewers seen ------------------------------------------------------------------------------

    async def _remember_viewers(self, conn: asyncpg.Connection, events: Iterable[dict[str, Any]]) -> None:
        first: dict[str, tuple[str | None, float]] = {}
        for e in events:
            viewer, at = str(e["viewer_id"]), received_s(e)
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
        burst = await burst_created(conn, [viewer_id], self.policy, self.clock)
        cache[viewer_id] = viewer_id in burst
        return cache[viewer_id]

    # --- contributed visits ----------------------------------------------------------------------

    async def _visit(
        self,
        conn: asyncpg.Connection,
        event: dict[str, Any],
        evidence: VisitEvidence,
        attributions: dict[str, list[ViewerAttribution]],
        terms: dict[str, Terms],
        members: dict[str, set[str]],
        burst_cache: dict[str, bool],
    ) -> None:
        viewer_id, room_id, host = str(event["viewer_id"]), event.get("room_id"), event.get("merchant_id")
        if not isinstance(room_id, str) or not isinstance(host, str):
            return
        final = event.get("type") == LEAVE
        at = received_s(event)
        in_force = [a for a in attributions.get(viewer_id, []) if a.starts_at <= at < a.ends_at]
        if not in_force:
            return  # not private-domain traffic of anyone: nothing to judge
        attribution = in_force[0]
        contributor = attribution.merchant_id
        device = event.get("device_id") if isinstance(event.get("device_id"), str) else None
        device_key = device or f"viewer:{viewer_id}"
        day = self.clock.day(at)
        shared = sorted(a for a, m in members.items() if contributor in m and host in m)
        alliance_id = shared[0] if shared else None
        alliance_terms = terms.get(alliance_id) if alliance_id else None
        dwell_ms = evidence.dwell_ms  # in the alliance's ms, as terms are
        base = VisitFacts(
            contributor_id=contributor,
            host_merchant_id=host,
            host_owns_viewer=any(a.merchant_id == host for a in in_force),
            alliance_id=alliance_id,
            terms=alliance_terms,
            dwell_ms=dwell_ms,
            entered=bool(evidence.visit_id),
            from_feed=evidence.from_feed,
        )
        verdict = judge(base, self.policy)
        if verdict.reason not in (
            "self_visit",
            "host_own_viewer",
            "not_partners",
            "no_enter",
            "not_from_feed",
        ):
            await conn.execute("SELECT pg_advisory_xact_lock(hashtext($1))", "alliance:" + contributor)
            day_start = self.clock.day_start_ts(at)
            counts = await conn.fetchrow(
                """SELECT
                     EXISTS (SELECT 1 FROM alliance_visits WHERE earned AND contributor_id = $1 AND viewer_id = $2
                             AND room_id = $3 AND day = $4) AS this_room,
                     (SELECT count(*) FROM alliance_visits WHERE earned AND viewer_id = $2 AND day = $4) AS viewer_n,
                     (SELECT COALESCE(array_agg(DISTINCT contributor_id), '{}') FROM alliance_visits
                        WHERE earned AND viewer_id = $2 AND day = $4) AS viewer_merchants,
                     (SELECT count(*) FROM alliance_visits WHERE earned AND device_id = $5 AND day = $4) AS device_n,
                     (SELECT count(*) FROM alliance_visits WHERE device_id = $5 AND dwell_ms < $6
                        AND at BETWEEN $7 AND $8) AS short_n,
                     (SELECT COALESCE(sum(amount), 0) FROM ledger_transactions WHERE kind IN ('earned', 'provisional')
                        AND merchant_id = $1 AND alliance_id = $9 AND at >= $10) AS earned_today""",
                contributor,
                viewer_id,
                room_id,
                day,
                device_key,
                self.policy.short_dwell_ms,
                _ts(at - self.clock.wall(self.policy.zero_dwell_window_s)),
                _ts(at),
                alliance_id,
                day_start,
            )
            assert counts is not None
            facts = VisitFacts(
                **{
                    **base.__dict__,
                    "burst_viewer": await self._burst_viewer(conn, viewer_id, burst_cache),
                    "device_short_visits": int(counts["short_n"]),
                    "earned_this_room_today": bool(counts["this_room"]),
                    "viewer_earned_today": int(counts["viewer_n"]),
                    "viewer_merchants_today": frozenset(counts["viewer_merchants"]),
                    "device_earned_today": int(counts["device_n"]),
                    "contributor_earned_today": float(counts["earned_today"]),
                }
            )
            verdict = judge(facts, self.policy)
        if not final and not verdict.earned:
            return  # a heartbeat only ever completes a qualification; the leave records the visit
        await self._record_visit(
            conn, event, evidence, attribution, device_key, host, room_id, alliance_id, dwell_ms, at, verdict
        )

    async def _record_visit(
        self,
        conn: asyncpg.Connection,
        event: dict[str, Any],
        evidence: VisitEvidence,
        attribution: ViewerAttribution,
        device_key: str,
        host: str,
        room_id: str,
        alliance_id: str | None,
        dwell_ms: int,
        at: float,
        verdict: Verdict,
    ) -> None:
        viewer_id = attribution.viewer_id
        young = False
        if verdict.earned:
            created = await conn.fetchval(
                "SELECT COALESCE(account_created_at, first_seen_at) FROM alliance_viewers WHERE viewer_id = $1",
                viewer_id,
            )
            young = created is None or at - created.timestamp() < self.clock.wall(self.policy.young_account_s)
        inserted = await conn.fetchval(
            """INSERT INTO alliance_visits (source_event_id, visit_id, viewer_id, device_id, contributor_id,
                   host_merchant_id, room_id, alliance_id, dwell_ms, declared_dwell_ms, day, at, earned, reason,
                   session_id, code, young_account, amount, state, hold_until)
               VALUES ($1, NULLIF($2, ''), $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17, $18,
                       $19, $20)
               ON CONFLICT DO NOTHING RETURNING true""",
            str(event["event_id"]),
            evidence.visit_id,
            viewer_id,
            device_key,
            attribution.merchant_id,
            host,
            room_id,
            alliance_id,
            min(dwell_ms, 2**31 - 1),
            min(max(0, evidence.claimed_ms), 2**31 - 1),
            self.clock.day(at),
            _ts(at),
            verdict.earned,
            verdict.reason,
            event.get("session_id"),
            attribution.code,
            young,
            Decimal(str(verdict.amount)),
            "held" if verdict.earned else None,
            _ts(at + self.clock.wall(self.policy.holding_s)) if verdict.earned else None,
        )
        if inserted and verdict.earned and alliance_id is not None:
            await ledger.post(
                conn,
                source_id=str(event["event_id"]),
                kind="provisional",
                merchant_id=attribution.merchant_id,
                alliance_id=alliance_id,
                amount=verdict.amount,
                at=at,
                visits=1,
            )
            # The order may have come first (a viewer buys while watching): conversion counts most.
            await convert_visit(conn, self.clock, str(event["event_id"]), at)

    # --- delivered exposure ----------------------------------------------------------------------

    async def _grants_claimed(self, events: list[dict[str, Any]]) -> dict[str, str]:
        """App-reported impressions that claim a grant: event id → the granted merchant."""
        seen = [e for e in events if e.get("type") == IMPRESSION and e.get("page_token")]
        if not seen:
            return {}
        return await self.grants.claim_many(seen)

    async def _delivered(self, conn: asyncpg.Connection, event: dict[str, Any], merchant_id: str) -> None:
        # Paid back against the alliance where the merchant is owed most.
        alliance_id = await conn.fetchval(
            f"""SELECT alliance_id FROM ledger_balances b WHERE merchant_id = $1
                ORDER BY {OWED_SQL} DESC, alliance_id LIMIT 1""",  # noqa: S608 (a fixed expression)
            merchant_id,
        )
        if alliance_id is None:
            with bound(event_id=event["event_id"]):
                log.warning("boosted impression of a merchant with no alliance account: %s", merchant_id)
            return
        await ledger.post(
            conn,
            source_id=str(event["event_id"]),
            kind="delivered",
            merchant_id=merchant_id,
            alliance_id=alliance_id,
            amount=1.0,
            at=received_s(event),
        )


async def burst_created(
    conn: asyncpg.Connection, viewer_ids: list[str], policy: Policy, clock: AllianceClock
) -> set[str]:
    """The viewer ids among these that were created in a burst: at least `device_new_viewers` new ids
    first seen on one device within the window, or `code_new_viewers` from one code within its
    window (counted on both sides of each id's first sighting, so the first ids of a burst are
    caught once the burst is seen: settlement re-asks for held visits)."""
    rows = await conn.fetch(
        """SELECT v.viewer_id,
             (SELECT count(*) FROM alliance_viewers o WHERE v.device_id IS NOT NULL AND o.device_id = v.device_id
                AND o.first_seen_at BETWEEN v.first_seen_at - $2 * interval '1 second'
                                        AND v.first_seen_at + $2 * interval '1 second') AS same_device,
             (SELECT count(*) FROM alliance_viewers o WHERE v.code IS NOT NULL AND o.code = v.code
                AND o.first_seen_at BETWEEN v.first_seen_at - $3 * interval '1 second'
                                        AND v.first_seen_at + $3 * interval '1 second') AS same_code
           FROM alliance_viewers v WHERE v.viewer_id = ANY($1::text[])""",
        viewer_ids,
        clock.wall(policy.device_new_viewers_window_s),
        clock.wall(policy.code_new_viewers_window_s),
    )
    return {
        r["viewer_id"]
        for r in rows
        if r["same_device"] >= policy.device_new_viewers or r["same_code"] >= policy.code_new_viewers
    }
