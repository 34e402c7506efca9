"""events in the API process: `POST /v1/events` (viewer batches) and `Events`, what the domain holds.

`Events.build` makes Ingest (enriching each event with its room's merchant through the directory
it is handed, refusing events in another viewer's session through the session owners it is handed)
and holds the LiveStats the root built; `start` makes sure the topics exist; the composition root
adds the consumer-lag refresher to `/metrics`.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
from dataclasses import dataclass
from typing import Any

import msgspec
from aiokafka.errors import KafkaConnectionError
from starlette.requests import Request
from starlette.routing import BaseRoute

from events.ingest import Ingest, MerchantDirectory, SessionOwners
from events.lag import ConsumerLag
from events.live_stats import LiveStats
from events.models import EventBatch, IngestAnswer
from events.vocabulary import DEAD_LETTERS, VIEWER_EVENTS
from roomfeed.auth import Principal
from roomfeed.http import read_json
from roomfeed.kafka import ensure_topics_patiently
from roomfeed.operations import operation
from roomfeed.redis_lane import round_trip
from roomfeed.resources import Resources
from roomfeed.settings import Settings

log = logging.getLogger("roomfeed.events")


class _StartedProducer:
    """The process's producer once Resources has started it (it retries in the background)."""

    def __init__(self, resources: Resources, wait: float) -> None:
        self.resources = resources
        self.wait = wait

    async def partitions_for(self, topic: str) -> set[int]:
        if not self.resources.producer_ready.is_set() and not await self.resources.wait_for_kafka(self.wait):
            raise KafkaConnectionError("the Kafka producer has not started")
        return set(await self.resources.producer.partitions_for(topic))

    def create_batch(self) -> Any:
        return self.resources.producer.create_batch()

    async def send_batch(self, batch: Any, topic: str, *, partition: int) -> asyncio.Future[Any]:
        sent: asyncio.Future[Any] = await self.resources.producer.send_batch(
            batch, topic, partition=partition
        )
        return sent


async def _ensure_topics(settings: Settings) -> None:
    await ensure_topics_patiently(settings, {VIEWER_EVENTS: settings.kafka_partitions, DEAD_LETTERS: 1})


@dataclass
class Events:
    """The events domain in one API process: ingest, live stats, consumer lag on /metrics."""

    settings: Settings
    ingest: Ingest
    live_stats: LiveStats
    consumer_lag: ConsumerLag
    topics: asyncio.Task[None] | None = None  # the topics are being made sure of (tests await it)

    @classmethod
    def build(
        cls, resources: Resources, rooms: MerchantDirectory, sessions: SessionOwners, live_stats: LiveStats
    ) -> Events:
        """`rooms` enriches events with the merchant behind their room (rooms.directory.RoomDirectory);
        `sessions` says who owns a feed session (feed.sessions.SessionBook); `live_stats` is built by
        the root before the feed, which reads it."""
        return cls(
            settings=resources.settings,
            ingest=Ingest(
                _StartedProducer(resources, wait=2.0),
                rooms,
                sessions,
                topic=resources.settings.topic(VIEWER_EVENTS),
                round_trips=functools.partial(round_trip, resources.redis, resources.redis_lane),
                ack_timeout=resources.settings.kafka_ack_timeout_s,
            ),
            live_stats=live_stats,
            consumer_lag=ConsumerLag(resources.settings),
        )

    async def start(self) -> None:
        self.topics = asyncio.create_task(_ensure_topics(self.settings))

    async def topics_made(self) -> None:
        """Wait until the topics exist."""
        if self.topics is not None:
            await asyncio.shield(self.topics)

    async def stop(self) -> None:
        if self.topics is not None:
            self.topics.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self.topics
        await self.consumer_lag.close()


@operation(
    "POST",
    "/v1/events",
    roles=("viewer",),
    status=202,
    tag="events",
    accepts=EventBatch,
    example=[
        {
            "event_id": "evt_01",
            "viewer_id": "v1",
            "session_id": "ses_0123456789abcdef",
            "room_id": "room_01",
            "type": "leave",
            "ts": 1790000000000,
            "dwell_ms": 12000,
        }
    ],
)
async def post_events(request: Request, events: Events, principal: Principal) -> IngestAnswer:
    """Record a batch of up to 500 viewer events; 202 once Kafka has every accepted one.

    Each event is checked on its own; bad ones come back in `rejected` with their index and reason,
    the rest are accepted. Every event's viewer_id must be the token's viewer (`viewer_mismatch`).
    413 past 500 events. 503 with Retry-After when Kafka does not acknowledge in time: nothing was
    accepted, retry with the same event ids (sinks dedupe by event_id)."""
    body: Any = await read_json(request)
    if isinstance(body, dict) and "events" in body:
        body = body["events"]
    result = await events.ingest.submit(
        body, principal.own_viewer(), device_id=request.headers.get("x-device-id")
    )
    return msgspec.convert(result.as_dict(), IngestAnswer)


def routes(events: Events) -> list[BaseRoute]:
    return [post_events.bound(events)]
