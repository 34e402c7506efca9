"""Viewer sessions: who owns a session, which rooms it was served, which merchants a viewer blocked.

Redis holds the hot state (`rf:feed:s:{<session>}` hash, `rf:feed:s:{<session>}:served` set and
`rf:feed:s:{<session>}:pages` (feed.pages): the session id is a hash tag, so on a Redis Cluster a
session's keys share one slot, as claim_page.lua needs, and sessions spread over the nodes;
`rf:feed:blocks:<viewer>` set); every write also lands in this process's memory (`LocalSessions`),
so when Redis is down a session this process has served keeps its served set and never repeats a
room. That memory is a bounded fallback, never the truth: the most recently used SESSION_CAPACITY
sessions and the blocks of the most recently seen BLOCKS_CAPACITY viewers who have any (a viewer
without blocks costs nothing), so a process serving viewers for days stays flat. PostgreSQL keeps the durable record (sessions with their entry and attribution, blocks) and is
written off the hot path; blocks are copied back into Redis whenever a session starts.
"""

from __future__ import annotations

import asyncio
import logging
import sys
import time
from collections import OrderedDict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

import asyncpg
from redis.asyncio import Redis

from feed.pages import CLAIM_PAGE, PAGES_KEPT, pages_key
from roomfeed.lua import lua_script
from roomfeed.owners import FieldOwners, OwnerIndex, OwnerLookup
from roomfeed.redis_lane import Part, Pipe, RedisLane, RoundTrip, round_trip

log = logging.getLogger("feed.sessions")

SESSION_TTL_S = 24 * 3600
BLOCKS_TTL_S = 30 * 24 * 3600
# Sessions kept in process memory: the ones in use right now. At 300 feed pages/s and 20 pages a
# session, 15 sessions start each second, so 2,000 is the last ~2 minutes of sessions; one with 100
# served rooms costs ~9 KB (room ids interned: one string per room, shared), ~18 MB at the bound.
# Measured in the soak: at 10,000 the API grew 17 MB a minute until the bound. A session evicted
# here is still whole in Redis; only a Redis outage meeting an evicted session loses its no-repeat
# memory (it is then answered from Redis once Redis is back).
SESSION_CAPACITY = 2_000
# Viewers whose blocks are kept in process memory (only viewers with at least one block).
BLOCKS_CAPACITY = 10_000
# Session owners kept in process memory for ingest (sessions of other processes; ~100 bytes each).
OWNERS_KEPT = 50_000


_SERVED = lua_script(__file__, "sessions_served.lua")


def session_key(session_id: str) -> str:
    return f"rf:feed:s:{{{session_id}}}"


def _session_owners(session_ids: Sequence[str]) -> FieldOwners:
    return FieldOwners(session_key, "viewer_id", session_ids)


_OWNERS_SQL = "SELECT session_id, viewer_id FROM feed_sessions WHERE session_id = ANY($1::text[])"


def served_key(session_id: str) -> str:
    return f"rf:feed:s:{{{session_id}}}:served"


def blocks_key(viewer_id: str) -> str:
    return f"rf:feed:blocks:{viewer_id}"


@dataclass
class SessionState:
    session_id: str
    viewer_id: str
    served: set[str] = field(default_factory=set)
    blocked: set[str] = field(default_factory=set)
    attribution: dict[str, Any] | None = None
    from_redis: bool = True
    # Rooms served while Redis was unreachable, to be written back once it answers.
    unsynced: set[str] = field(default_factory=set)
    # Pages made while Redis was unreachable (number → record) and the newest page's number.
    pages: dict[int, str] = field(default_factory=dict)
    last_page: int = -1


@dataclass(frozen=True)
class _SessionRead:
    """Part of the page's first round trip: who owns the session, its served set (only its size
    when this process's copy, `known` rooms, is the whole set), the owner's blocks."""

    session_id: str
    owner: str | None
    known: int

    def queue(self, pipe: Pipe) -> None:
        pipe.hget(session_key(self.session_id), "viewer_id")
        pipe.eval(_SERVED, 1, served_key(self.session_id), self.known)
        if self.owner is not None:
            pipe.smembers(blocks_key(self.owner))

    def read(self, replies: list[Any]) -> tuple[bytes | None, Any, list[bytes]]:
        return replies[0], replies[1], replies[2] if self.owner is not None else []


@dataclass(frozen=True)
class _PageClaim:
    """Part of the page's second round trip: claim_page.lua (feed.pages) over the offered rooms."""

    keys: list[str]
    count: int
    mode: str
    at: int
    header: str
    boosted: str
    room_ids: list[str]

    def queue(self, pipe: Pipe) -> None:
        pipe.eval(
            CLAIM_PAGE,
            len(self.keys),
            *self.keys,
            self.count,
            SESSION_TTL_S,
            self.mode,
            self.at,
            PAGES_KEPT,
            self.header,
            self.boosted,
            *self.room_ids,
        )

    def read(self, replies: list[Any]) -> list[Any]:
        reply: list[Any] = replies[0]
        return reply


@dataclass(frozen=True)
class _VariantCount:
    """Part: the rooms a page served (and how many were boosted), on its experiment variant's hash."""

    key: str
    impressions: int
    boosted: int

    def queue(self, pipe: Pipe) -> None:
        pipe.execute_command("HINCRBY", self.key, "impressions", self.impressions)
        if self.boosted:
            pipe.execute_command("HINCRBY", self.key, "boosted", self.boosted)

    def read(self, replies: list[Any]) -> None:
        return None


@dataclass(frozen=True)
class _ServedSync:
    """Part: rooms served while Redis was unreachable, written back with the session's owner."""

    session_id: str
    viewer_id: str
    rooms: frozenset[str]

    def queue(self, pipe: Pipe) -> None:
        pipe.sadd(served_key(self.session_id), *self.rooms)
        pipe.hset(session_key(self.session_id), "viewer_id", self.viewer_id)
        pipe.expire(session_key(self.session_id), SESSION_TTL_S)

    def read(self, replies: list[Any]) -> None:
        return None


@dataclass(frozen=True)
class Claim:
    """What `SessionBook.claim` did: page `number` made with `accepted` rooms at positions `base`,
    `base + 1`, ... (`viewers`: viewers now per offered room, None when not read); or, for a page
    asked after a page that is no longer the newest, nothing claimed and `existing` = (the newest
    page's number, the record of the page asked for or None)."""

    number: int
    base: int
    accepted: list[str]
    viewers: list[int] | None
    existing: tuple[int, str | None] | None = None


class LocalBlocks:
    """Blocked merchants of the viewers this process saw most recently (LRU of `capacity` viewers).

    Only viewers with at least one block take an entry; the copy covers a block that has not reached
    Redis yet and a Redis outage. PostgreSQL and Redis hold every block, so eviction loses nothing."""

    def __init__(self, capacity: int = BLOCKS_CAPACITY) -> None:
        self.capacity = capacity
        self._viewers: OrderedDict[str, set[str]] = OrderedDict()

    def __len__(self) -> int:
        return len(self._viewers)

    def of(self, viewer_id: str) -> frozenset[str]:
        merchants = self._viewers.get(viewer_id)
        if merchants is None:
            return frozenset()
        self._viewers.move_to_end(viewer_id)
        return frozenset(merchants)

    def replace(self, viewer_id: str, merchants: set[str]) -> None:
        """The viewer's full set as read from PostgreSQL (empty: forget the viewer)."""
        if not merchants:
            self._viewers.pop(viewer_id, None)
            return
        self._viewers[viewer_id] = set(merchants)
        self._remember(viewer_id)

    def add(self, viewer_id: str, merchant_id: str) -> None:
        self._viewers.setdefault(viewer_id, set()).add(merchant_id)
        self._remember(viewer_id)

    def discard(self, viewer_id: str, merchant_id: str) -> None:
        merchants = self._viewers.get(viewer_id)
        if merchants is None:
            return
        merchants.discard(merchant_id)
        if not merchants:
            del self._viewers[viewer_id]

    def _remember(self, viewer_id: str) -> None:
        self._viewers.move_to_end(viewer_id)
        while len(self._viewers) > self.capacity:
            self._viewers.popitem(last=False)


class LocalSessions:
    """The in-process copy of recent sessions (LRU of `capacity`), the fallback when Redis is down,
    and the recent viewers' blocks (`blocks`, a `LocalBlocks`)."""

    def __init__(self, capacity: int = SESSION_CAPACITY, blocks_capacity: int = BLOCKS_CAPACITY) -> None:
        self.capacity = capacity
        self._sessions: OrderedDict[str, SessionState] = OrderedDict()
        self.blocks = LocalBlocks(blocks_capacity)

    def __len__(self) -> int:
        return len(self._sessions)

    def get(self, session_id: str) -> SessionState | None:
        state = self._sessions.get(session_id)
        if state is not None:
            self._sessions.move_to_end(session_id)
        return state

    def forget(self, session_id: str) -> None:
        self._sessions.pop(session_id, None)

    def put(self, state: SessionState) -> SessionState:
        known = self._sessions.get(state.session_id)
        if known is not None:
            known.served |= state.served
            known.blocked = state.blocked or known.blocked
            self._sessions.move_to_end(state.session_id)
            return known
        self._sessions[state.session_id] = state
        while len(self._sessions) > self.capacity:
            self._sessions.popitem(last=False)
        return state


class SessionBook:
    def __init__(
        self,
        redis: Redis,
        pool: asyncpg.Pool,
        local: LocalSessions | None = None,
        *,
        lane: RedisLane | None,
    ) -> None:
        """`lane`: the pipelined connection the two round trips of a page take (roomfeed.redis_lane);
        None on a Redis Cluster, where they take redis-py's cluster pipeline (same parts, same trip)."""
        self.redis = redis
        self.pool = pool
        self.local = local if local is not None else LocalSessions()
        self.lane = lane
        self._pending: set[asyncio.Task[Any]] = set()
        # Who owns a session never changes: owners read for ingest are kept (roomfeed.owners).
        self._owners = OwnerIndex(pool, _session_owners, _OWNERS_SQL, known_max=OWNERS_KEPT)

    def trip(self) -> RoundTrip:
        """A round trip on the lane that other owners add their parts to before `load` sends it."""
        return round_trip(self.redis, self.lane)

    def _background(self, coro: Any) -> None:
        task = asyncio.create_task(coro)
        self._pending.add(task)
        task.add_done_callback(self._pending.discard)

    async def create(
        self,
        session_id: str,
        viewer_id: str,
        entry: dict[str, Any],
        attribution: dict[str, Any] | None,
        part: Any = None,
    ) -> tuple[SessionState, bool]:
        """Record a new session; returns (state, degraded). Redis first, PostgreSQL in the background.
        `part` (queue(pipe) of one command, read(replies)) rides the same round trip."""
        blocked = await self._blocks_from_postgres(viewer_id)
        state = SessionState(session_id, viewer_id, blocked=blocked or set(), attribution=attribution)
        self.local.put(state)
        if blocked is not None:
            self.local.blocks.replace(viewer_id, blocked)
        degraded = False
        try:
            async with self.redis.pipeline(transaction=False) as pipe:
                pipe.hset(
                    session_key(session_id), mapping={"viewer_id": viewer_id, "created_at": time.time()}
                )
                pipe.expire(session_key(session_id), SESSION_TTL_S)
                if blocked:
                    pipe.sadd(blocks_key(viewer_id), *blocked)
                    pipe.expire(blocks_key(viewer_id), BLOCKS_TTL_S)
                if part is not None:
                    part.queue(pipe)
                replies = await pipe.execute()
            if part is not None:
                part.read(replies[-1:])
        except Exception as exc:
            log.warning("session %s kept in process only (Redis unavailable): %s", session_id, exc)
            degraded = True
        self._background(self._save(session_id, viewer_id, entry, attribution))
        return state, degraded

    def owners_lookup(self, session_ids: Iterable[str]) -> OwnerLookup:
        """Who owns each of these sessions, in steps (roomfeed.owners): this process's sessions and
        owners it has read, then a part of the caller's Redis round trip, then PostgreSQL for
        sessions past their Redis TTL in `finish()`. Events ingest asks it."""
        local = self.local
        mine: dict[str, str] = {}
        rest: list[str] = []
        for session_id in session_ids:
            state = local.get(session_id)
            if state is not None:
                mine[session_id] = state.viewer_id
            else:
                rest.append(session_id)
        lookup = self._owners.lookup(rest)
        lookup.found.update(mine)
        return lookup

    async def _blocks_from_postgres(self, viewer_id: str) -> set[str] | None:
        try:
            rows = await asyncio.wait_for(
                self.pool.fetch("SELECT merchant_id FROM feed_blocks WHERE viewer_id = $1", viewer_id), 1.0
            )
        except Exception as exc:
            log.warning("blocks of %s not read from PostgreSQL: %s", viewer_id, exc)
            return None
        return {r["merchant_id"] for r in rows}

    async def _save(
        self, session_id: str, viewer_id: str, entry: dict[str, Any], attribution: dict[str, Any] | None
    ) -> None:
        try:
            await self.pool.execute(
                "INSERT INTO feed_sessions (session_id, viewer_id, entry, attribution) VALUES ($1, $2, $3, $4)"
                " ON CONFLICT (session_id) DO NOTHING",
                session_id,
                viewer_id,
                entry,
                attribution,
            )
        except Exception as exc:  # the hot state is in Redis; the durable record is best effort
            log.warning("session %s not recorded in PostgreSQL: %s", session_id, exc)

    async def load(
        self, session_id: str, viewer_id: str | None = None, trip: RoundTrip | None = None
    ) -> SessionState | None:
        """The session with its served set and the viewer's blocks in one Redis round trip (memory as
        fallback). The round trip is `trip` when given: the parts other owners added ride along, and
        `trip.made` says whether their replies came (not when Redis is down).

        `viewer_id` (the token's viewer) lets blocks ride the same trip when this process has never
        seen the session (another API process started it)."""
        local = self.local.get(session_id)
        owner = viewer_id or (local.viewer_id if local is not None else None)
        known = len(local.served) if local is not None and not local.unsynced else -1
        trip = trip if trip is not None else self.trip()
        session = trip.add(_SessionRead(session_id, owner, known))
        try:
            await trip.send()
        except Exception as exc:
            log.warning("session %s read from process memory (Redis unavailable): %s", session_id, exc)
            if local is not None:
                local.from_redis = False
            return local
        raw_viewer, raw_served, raw_blocks = session.value
        if raw_viewer is None:
            if local is not None:  # Redis lost it (restart, flush): memory still knows
                local.from_redis = False
            return local
        stored_viewer = raw_viewer.decode()
        if isinstance(raw_served, int):  # this process's copy is the whole set
            served = local.served if local is not None else set()
        else:
            served = {sys.intern(m.decode()) for m in raw_served}
        if owner == stored_viewer:
            blocked = {m.decode() for m in raw_blocks}
        else:  # not the token's viewer (the caller answers 404) or an unknown owner: one more read
            members = await self.redis.smembers(blocks_key(stored_viewer))
            blocked = {m.decode() if isinstance(m, bytes) else m for m in members}
        blocked |= self.local.blocks.of(stored_viewer)
        if local is not None and local.viewer_id != stored_viewer:  # erased meanwhile (feed.erasure)
            self.local.forget(session_id)
            local = None
        if local is None:
            local = self.local.put(SessionState(session_id, stored_viewer, served=served, blocked=blocked))
        else:
            if served is not local.served:  # (the copy itself when Redis holds no more: nothing to add)
                local.served |= served
            local.blocked = blocked
        local.from_redis = True
        return local

    async def claim(
        self,
        state: SessionState,
        room_ids: list[str],
        count: int,
        variant_counters: str | None = None,
        boosted: set[str] | None = None,
        presence: Part[list[int]] | None = None,
        *,
        mode: str = "new",
        at: int = -1,
        header: str = "",
    ) -> Claim:
        """Serve the first `count` of `room_ids` (best first) that this session was never served, as a
        page of the session (`mode` and `at` as in claim_page.lua: "new", "after" page `at`, or "more"
        rooms on page `at`); `header` starts the page's record (feed.pages).

        One atomic script in Redis (SADD answers which rooms are new), so two concurrent requests of
        one session never get the same room, and of two requests after the same page only one makes
        it; the served rooms are then counted on the experiment variant's counters
        (`variant_counters`, a hash key), and the claim's round trip carries `presence` (events: viewers
        now in the offered rooms). When Redis is down the check runs against this process's memory.
        """
        keys = [served_key(state.session_id), pages_key(state.session_id)]
        trip = self.trip()
        claimed = trip.add(_PageClaim(keys, count, mode, at, header, "\n".join(boosted or ()), room_ids))
        seen = trip.add(presence) if presence is not None and room_ids else None
        if state.unsynced:
            trip.add(_ServedSync(state.session_id, state.viewer_id, frozenset(state.unsynced)))
        try:
            await trip.send()
        except Exception as exc:
            log.warning("served rooms of %s kept in process memory: %s", state.session_id, exc)
            return self._claim_in_memory(state, room_ids, count, boosted or set(), mode, at, header)
        state.unsynced.clear()
        reply = claimed.value
        number = int(reply[0])
        if number < 0:
            record = reply[2]
            return Claim(
                -1, 0, [], None, (int(reply[1]), record.decode() if isinstance(record, bytes) else record)
            )
        accepted = [sys.intern(r.decode() if isinstance(r, bytes) else str(r)) for r in reply[2:]]
        state.served.update(accepted)
        if variant_counters and accepted:
            await self._count(variant_counters, len(accepted), len((boosted or set()).intersection(accepted)))
        return Claim(number, int(reply[1]), accepted, seen.value if seen is not None else None)

    async def _count(self, counters: str, impressions: int, boosted: int) -> None:
        """The experiment variant's served and boosted counts, after the claim: its key lives on a
        slot of its own on a Redis Cluster, so claim_page.lua (the session's slot) cannot write it.
        A count lost to a Redis error is only a metric."""
        try:
            trip = self.trip()
            trip.add(_VariantCount(counters, impressions, boosted))
            await trip.send()
        except Exception as exc:
            log.warning("experiment counters of %s not written: %s", counters, exc)

    def _claim_in_memory(
        self,
        state: SessionState,
        room_ids: list[str],
        count: int,
        boosted: set[str],
        mode: str,
        at: int,
        header: str,
    ) -> Claim:
        """claim_page.lua against this process's copy of the session (Redis unreachable)."""
        if mode == "after" and state.last_page != at:
            return Claim(-1, 0, [], None, (state.last_page, state.pages.get(at + 1)))
        number = at if mode == "more" else state.last_page + 1
        base = len(state.served)
        accepted = [r for r in dict.fromkeys(room_ids) if r not in state.served][:count]
        state.served.update(accepted)
        state.unsynced.update(accepted)
        lines = [f"{r} {base + i}{' b' if r in boosted else ''}" for i, r in enumerate(accepted)]
        if mode == "more":
            state.pages[number] = "\n".join([state.pages.get(number, header), *lines])
        else:
            state.pages[number] = "\n".join([header, *lines])
            state.pages.pop(number - PAGES_KEPT, None)
            state.last_page = number
        return Claim(number, base, accepted, None)

    async def block(self, viewer_id: str, merchant_id: str) -> None:
        """Durable first (PostgreSQL), then the hot copy (Redis) and this process's memory."""
        await self.pool.execute(
            "INSERT INTO feed_blocks (viewer_id, merchant_id) VALUES ($1, $2) ON CONFLICT DO NOTHING",
            viewer_id,
            merchant_id,
        )
        self.local.blocks.add(viewer_id, merchant_id)
        try:
            async with self.redis.pipeline(transaction=False) as pipe:
                pipe.sadd(blocks_key(viewer_id), merchant_id)
                pipe.expire(blocks_key(viewer_id), BLOCKS_TTL_S)
                await pipe.execute()
        except Exception as exc:
            log.warning("block of %s by %s not yet in Redis: %s", merchant_id, viewer_id, exc)

    async def unblock(self, viewer_id: str, merchant_id: str) -> bool:
        status = await self.pool.execute(
            "DELETE FROM feed_blocks WHERE viewer_id = $1 AND merchant_id = $2", viewer_id, merchant_id
        )
        self.local.blocks.discard(viewer_id, merchant_id)
        try:
            await self.redis.srem(blocks_key(viewer_id), merchant_id)
        except Exception as exc:
            log.warning("unblock of %s by %s not yet in Redis: %s", merchant_id, viewer_id, exc)
        return bool(status.endswith(" 1"))

    async def blocks(self, viewer_id: str) -> list[str]:
        rows = await self.pool.fetch(
            "SELECT merchant_id FROM feed_blocks WHERE viewer_id = $1 ORDER BY created_at", viewer_id
        )
        return [r["merchant_id"] for r in rows]
