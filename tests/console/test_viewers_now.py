"""The console's marketplace-wide "viewers now": every live room's presence, asked of Redis in chunks so
the sweep never holds Redis for long (at 100,000 live rooms one script over all of them held it 107 ms)."""

from __future__ import annotations

import secrets
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from redis.asyncio import Redis

from console.http import PRESENCE_CHUNK, _sources
from events.live_stats import LiveStats
from events.realtime import RealtimeSink


@dataclass
class _Room:
    room_id: str


@dataclass
class _Snapshot:
    rooms: list[_Room]


class _LiveRooms:
    def __init__(self, room_ids: Sequence[str]) -> None:
        self.rooms = [_Room(r) for r in room_ids]

    async def snapshot(self) -> _Snapshot:
        return _Snapshot(self.rooms)


class _CountedPresence:
    """The real LiveStats presence, with the size of each call kept."""

    def __init__(self, stats: LiveStats) -> None:
        self.stats = stats
        self.calls: list[int] = []

    async def viewers_now(self, room_ids: Sequence[str]) -> list[int]:
        self.calls.append(len(room_ids))
        return await self.stats.viewers_now(room_ids)


class _NotAsked:
    """The sources this test does not ask (alliance accounts, consumer lag)."""

    async def by_group(self) -> dict[str, int]:
        raise AssertionError("not asked")


async def test_viewers_now_sums_every_live_rooms_presence_in_chunks(redis: Redis) -> None:
    now_ms = int(time.time() * 1000)
    tag = secrets.token_hex(3)
    rooms = [f"room_{tag}_{i}" for i in range(2 * PRESENCE_CHUNK + 7)]
    topic = f"t{tag}"
    # viewers in each room: 0, 1 or 2 (every third room empty)
    events: list[dict[str, Any]] = []
    for i, room in enumerate(rooms):
        for v in range(i % 3):
            events.append(
                {
                    "event_id": f"e{tag}{len(events)}",
                    "type": "enter",
                    "viewer_id": f"v{v}",
                    "session_id": "s",
                    "room_id": room,
                    "ts": now_ms,
                    "_topic": topic,
                    "_partition": 0,
                    "_offset": len(events),
                }
            )
    await RealtimeSink(redis).write(events)
    presence = _CountedPresence(LiveStats(redis))
    sources = _sources(
        live_stats=LiveStats(redis),
        live_index=_LiveRooms(rooms),
        presence=presence,
        accounts=_NotAsked(),  # type: ignore[arg-type]
        lag=_NotAsked(),  # type: ignore[arg-type]
    )
    assert sources.viewers_now is not None
    assert await sources.viewers_now() == len(events)
    assert presence.calls == [PRESENCE_CHUNK, PRESENCE_CHUNK, 7]


async def test_viewers_now_without_live_rooms_asks_nothing(redis: Redis) -> None:
    presence = _CountedPresence(LiveStats(redis))
    sources = _sources(LiveStats(redis), _LiveRooms([]), presence, _NotAsked(), _NotAsked())  # type: ignore[arg-type]
    assert sources.viewers_now is not None
    assert await sources.viewers_now() == 0 and presence.calls == []
