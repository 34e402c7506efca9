"""Evidence of a visit on the server's own clock: what a qualified visit is judged on.

A client can write any `dwell_ms` and any timestamp; it cannot make its requests arrive earlier or
later than they do. So a visit opens when its `enter` is *received* (ingest stamps `received_at`),
and its evidence runs to the arrival of the last heartbeat or leave that came within
`max_gap` of the previous one — the app posts a heartbeat every `heartbeat_s` while a room plays,
so a longer silence means it stopped playing. The dwell credited is the smaller of that server
dwell and what the client claims (a leave's `dwell_ms`, or the heartbeat's time since the enter):
a leave posted an hour late claims its real dwell; a 1 s visit that claims 12 s gets 1 s; a
heartbeat stamped 11 s after an enter but received 2 s after it proves 2 s.

A contributed visit must also be *reached through the feed*: the room was served to the viewer on
a feed page of that session (a `served` event, which only the feed writes; a session's entry room
does not count). So a farm cannot send viewers straight into chosen partner rooms by room id.

Three Redis round trips per batch (the served rooms, the visits' evidence in received order
through `alliance/lua/visit_evidence.lua`, the reach checks); replaying the same events rebuilds the
same evidence (arrival times travel in the events).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from redis.asyncio import Redis

from alliance.clock import AllianceClock
from events.vocabulary import ENTER, HEARTBEAT, LEAVE, SERVED

_SCRIPT = (Path(__file__).parent / "lua" / "visit_evidence.lua").read_text()
VISIT_KINDS = (ENTER, HEARTBEAT, LEAVE)
VISIT_TTL_S = 6 * 3600  # alliance seconds an open visit is remembered
SERVED_TTL_S = 24 * 3600  # alliance seconds a session's served rooms are remembered


@dataclass(frozen=True)
class VisitEvidence:
    visit_id: str  # the enter's event id ('' when no enter was received for this room)
    server_ms: int  # dwell proven by arrivals (in the alliance's ms)
    claimed_ms: int  # dwell the client claims (in the alliance's ms)

    from_feed: bool = False  # the room was served to the viewer on a feed page of the session

    @property
    def dwell_ms(self) -> int:
        """What is credited (the alliance's ms): the server's clock, never more than the client claims."""
        return max(0, min(self.server_ms, self.claimed_ms)) if self.visit_id else 0


def visit_key(viewer_id: str, room_id: str) -> str:
    return f"rf:{{al}}:visit:{viewer_id}:{room_id}"  # one script takes many: one slot


def served_key(viewer_id: str, session_id: str) -> str:
    return f"rf:al:served:{viewer_id}:{session_id}"


class EvidenceBook:
    def __init__(self, redis: Redis, clock: AllianceClock, heartbeat_s: float = 30.0) -> None:
        self.redis = redis
        self.clock = clock
        self.heartbeat_s = heartbeat_s
        self._script = redis.register_script(_SCRIPT)

    @property
    def max_gap_ms(self) -> int:
        """Two missed heartbeats and a half (network jitter, a backgrounded app coming back)."""
        return int(self.clock.wall_ms(2.5 * self.heartbeat_s * 1000))

    async def observe(self, events: list[dict[str, Any]]) -> dict[str, VisitEvidence]:
        """Record the feed's served rooms and fold enters, heartbeats and leaves (in order) into the
        visits' evidence; returns the evidence of every heartbeat and leave by event id."""
        served = [e for e in events if e.get("type") == SERVED and not e.get("entry")]
        if served:
            ttl = max(1, int(self.clock.wall(SERVED_TTL_S)))
            pipe = self.redis.pipeline(transaction=False)
            for e in served:
                key = served_key(str(e["viewer_id"]), str(e.get("session_id", "")))
                pipe.sadd(key, str(e["room_id"]))
                pipe.expire(key, ttl)
            await pipe.execute()
        visits = [e for e in events if e.get("type") in VISIT_KINDS and isinstance(e.get("room_id"), str)]
        if not visits:
            return {}
        keys: list[str] = []
        args: list[Any] = [self.max_gap_ms, max(1, int(self.clock.wall(VISIT_TTL_S)))]
        for e in visits:
            keys.append(visit_key(str(e["viewer_id"]), str(e["room_id"])))
            received = e.get("received_at")
            ts = int(e.get("ts", 0))
            dwell = e.get("dwell_ms") if e["type"] == LEAVE else -1
            args += [
                e["type"],
                int(received) if isinstance(received, int) else ts,
                ts,
                str(e["event_id"]),
                int(dwell) if isinstance(dwell, int) else 0,
            ]
        flat = await self._script(keys=keys, args=args)
        judged = [(i, e) for i, e in enumerate(visits) if e["type"] != ENTER]
        if not judged:
            return {}
        pipe = self.redis.pipeline(transaction=False)
        for _, e in judged:
            pipe.sismember(served_key(str(e["viewer_id"]), str(e.get("session_id", ""))), str(e["room_id"]))
        reached = await pipe.execute()
        found: dict[str, VisitEvidence] = {}
        for (i, e), from_feed in zip(judged, reached, strict=True):
            visit_id, server_ms, claimed_ms = flat[3 * i : 3 * i + 3]
            # Arrival gaps and client timestamps are wall time; a leave's dwell_ms is the viewer's
            # dwell as the app reports it (the alliance's time, as every consumer reads it).
            claimed = int(claimed_ms) if e["type"] == LEAVE else int(self.clock.alliance_s(int(claimed_ms)))
            found[str(e["event_id"])] = VisitEvidence(
                visit_id.decode() if isinstance(visit_id, bytes) else str(visit_id),
                int(self.clock.alliance_s(int(server_ms))),
                claimed,
                bool(from_feed),
            )
        return found
