"""Getting committed room changes and deal claims out of PostgreSQL: into the Redis live index and onto Kafka.

Owns `Publisher` (what rooms needs from Kafka), `KafkaPublisher`, and `RoomRelay`. A room change is
committed to PostgreSQL together with a `room_changes` row (the outbox). Right after the commit the
writer calls `RoomRelay.deliver`, which applies the room to the live index and publishes the
`room-lifecycle` event; the row is marked as each lands. When the process dies between the commit
and those writes, or Redis/Kafka are down, the row stays pending and `RoomRelay.run_once` (run every
second by the API process, and at start) finishes the job. Deal claims work the same way through
`deal_claims.published_at`. Both sinks are idempotent: the index by `rooms.index_version`, events by
their ids (`change_id` is implied by room_id + version; claims carry `event_id = claim_id`).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Mapping
from typing import Any, Protocol

import asyncpg
from redis.asyncio import Redis

from events.vocabulary import VIEWER_EVENTS
from roomfeed.kafka import encode
from roomfeed.leader import Leadership, always_lead
from roomfeed.resources import Resources
from roomfeed.tasks import cancel_and_wait
from rooms.deals import CLAIM_COLUMNS, claim_event
from rooms.live_index import (
    KEY_EPOCH,
    NOT_BUILT,
    IndexWriter,
    live_room_of_row,
    rebuild_live_index,
    room_columns,
)

log = logging.getLogger("roomfeed.rooms")

LIFECYCLE_TOPIC = "room-lifecycle"


class Publisher(Protocol):
    async def send(self, topic: str, key: str, value: Mapping[str, Any]) -> bool:
        """Publish durably on the (unprefixed) topic; False when it could not be done now."""
        ...


class KafkaPublisher:
    """Publishes through the process's idempotent producer; never waits for a broker that is down."""

    def __init__(self, resources: Resources, timeout: float = 10.0) -> None:
        self.resources = resources
        self.timeout = timeout

    async def send(self, topic: str, key: str, value: Mapping[str, Any]) -> bool:
        if not self.resources.producer_ready.is_set():
            return False
        try:
            await asyncio.wait_for(
                self.resources.producer.send_and_wait(
                    self.resources.settings.topic(topic), key=key.encode(), value=encode(value)
                ),
                self.timeout,
            )
            return True
        except Exception as exc:
            log.warning("publish to %s failed: %s", topic, exc)
            return False


def lifecycle_event(row: Mapping[str, Any], status: str, at_ms: int) -> dict[str, Any]:
    return {
        "room_id": row["room_id"],
        "merchant_id": row["merchant_id"],
        "status": status,
        "at": at_ms,
        "room": live_room_of_row(row).as_dict(),
    }


class RoomRelay:
    def __init__(
        self, pool: asyncpg.Pool, redis: Redis, publisher: Publisher, *, settle_seconds: float = 2.0
    ) -> None:
        self.pool = pool
        self.redis = redis
        self.writer = IndexWriter(redis)
        self.publisher = publisher
        self.settle_seconds = settle_seconds
        self._tasks: set[asyncio.Task[Any]] = set()
        self._loop: asyncio.Task[None] | None = None

    # --- right after a commit ---------------------------------------------------------------

    async def index(self, room: Mapping[str, Any]) -> bool:
        """Apply the room's current row to the live index; False when Redis could not be written."""
        try:
            result = await self.writer.apply(
                live_room_of_row(room), int(room["index_version"]), room.get("ended_at")
            )
            if result == NOT_BUILT:
                # Redis has no index (first start, or it lost its data): build it from PostgreSQL,
                # which already holds this change.
                await rebuild_live_index(self.pool, self.redis)
            return True
        except Exception as exc:
            log.warning("live index write failed for %s (the relay will retry): %s", room["room_id"], exc)
            return False

    async def deliver(self, change_id: int, room: Mapping[str, Any], status: str, at_ms: int) -> None:
        """Index now (the caller's response reflects it); publish in the background."""
        if await self.index(room):
            with contextlib.suppress(Exception):
                await self.pool.execute(
                    "UPDATE room_changes SET indexed = true WHERE change_id = $1", change_id
                )
        self.background(self._publish_change(change_id, room, status, at_ms))

    async def _publish_change(self, change_id: int, room: Mapping[str, Any], status: str, at_ms: int) -> bool:
        if await self.publisher.send(LIFECYCLE_TOPIC, room["room_id"], lifecycle_event(room, status, at_ms)):
            await self.pool.execute(
                "UPDATE room_changes SET published = true WHERE change_id = $1", change_id
            )
            return True
        return False

    async def publish_claim(self, claim: Mapping[str, Any]) -> bool:
        event = claim_event(claim)
        if await self.publisher.send(VIEWER_EVENTS, claim["viewer_id"], event):
            await self.pool.execute(
                "UPDATE deal_claims SET published_at = now() WHERE claim_id = $1", claim["claim_id"]
            )
            return True
        return False

    def background(self, coro: Any) -> None:
        task = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def drain(self) -> None:
        """Wait for background publishes started so far (tests, shutdown)."""
        while self._tasks:
            await asyncio.gather(*list(self._tasks), return_exceptions=True)

    # --- the reconciler ----------------------------------------------------------------------

    async def run_once(self, settle_seconds: float | None = None) -> int:
        """Finish pending changes and claims older than `settle_seconds`; returns how many were finished."""
        settle = self.settle_seconds if settle_seconds is None else settle_seconds
        done = 0
        if not await self.redis.exists(KEY_EPOCH):
            # No index in Redis (first start, or Redis lost its data): build it from the truth.
            await rebuild_live_index(self.pool, self.redis)
            done += 1
        pending = await self.pool.fetch(
            f"""
            SELECT c.change_id, c.status AS change_status, c.indexed, c.published,
                   (extract(epoch FROM c.at) * 1000)::bigint AS at_ms, {room_columns("r")}
              FROM room_changes c JOIN rooms r ON r.room_id = c.room_id
             WHERE NOT (c.indexed AND c.published) AND c.at <= now() - make_interval(secs => $1)
             ORDER BY c.change_id LIMIT 1000
            """,  # noqa: S608
            settle,
        )
        indexed_rooms: set[str] = set()
        for row in pending:
            # The room's current row is applied (its version covers this change and any later one).
            if not row["indexed"] and (row["room_id"] in indexed_rooms or await self.index(row)):
                indexed_rooms.add(row["room_id"])
                await self.pool.execute(
                    "UPDATE room_changes SET indexed = true WHERE change_id = $1", row["change_id"]
                )
                done += 1
            if not row["published"] and await self._publish_change(
                row["change_id"], row, row["change_status"], row["at_ms"]
            ):
                done += 1
        claims = await self.pool.fetch(
            f"SELECT {CLAIM_COLUMNS} FROM deal_claims WHERE published_at IS NULL "  # noqa: S608
            "AND claimed_at <= now() - make_interval(secs => $1) ORDER BY claimed_at LIMIT 1000",
            settle,
        )
        for claim in claims:
            if await self.publish_claim(claim):
                done += 1
        await self.pool.execute("DELETE FROM room_changes WHERE indexed AND published")
        return done

    async def run(self, interval: float = 1.0, leadership: Leadership = always_lead) -> None:
        """Sweep every `interval` seconds in the process that leads (roomfeed.leader: once per cluster)."""
        while True:
            try:
                if await leadership():
                    await self.run_once()
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                log.warning("room relay pass failed: %s", exc)
            await asyncio.sleep(interval)

    def start(self, interval: float = 1.0, leadership: Leadership = always_lead) -> None:
        self._loop = asyncio.get_running_loop().create_task(self.run(interval, leadership))

    async def stop(self) -> None:
        await cancel_and_wait(self._loop)
        with contextlib.suppress(Exception):
            await asyncio.wait_for(self.drain(), 5)
