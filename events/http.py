"""events in the API process: `POST /v1/events` (viewer batches) and `Events`, what the domain holds.

`Events.build` makes Ingest (enriching each event with its room's merchant through the directory
it is handed) and LiveStats; `start` makes sure the topics exist; the composition root adds the
consumer-lag refresher to `/metrics`.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from dataclasses import dataclass
from typing import Any

from aiokafka.errors import KafkaConnectionError
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Route

from events.ingest import Ingest, MerchantDirectory
from events.lag import ConsumerLag
from events.live_stats import LiveStats
from events.vocabulary import DEAD_LETTERS, VIEWER_EVENTS
from roomfeed.auth import require
from roomfeed.http import bound, json, read_json
from roomfeed.kafka import ensure_topics_patiently
from roomfeed.resources import Resources
from roomfeed.settings import Settings

log = logging.getLogger("roomfeed.events")


async def post_events(request: Request, events: Events) -> Response:
    """Record a batch of up to 500 viewer events; 202 once Kafka has every accepted one.
    ---
    summary: Post viewer events
    description: >
      Each event is checked on its own; bad ones come back in `rejected` with their index and
      reason, the rest are accepted. Every event's viewer_id must be the token's viewer
      (`viewer_mismatch`). 503 with Retry-After when Kafka does not acknowledge in time: nothing
      was accepted, retry with the same event ids (sinks dedupe by event_id).
    requestBody:
      required: true
      content:
        application/json:
          schema:
            type: array
            maxItems: 500
            description: "(also accepted: {events: [...]}) each event is checked on its own (events.schema)"
            items:
              type: object
              required: [event_id, viewer_id, session_id, room_id, type, ts]
              properties:
                event_id: {type: string, pattern: '^[A-Za-z0-9_.:-]{1,64}$', description: sinks dedupe by it}
                viewer_id: {type: string, pattern: '^[A-Za-z0-9_.:-]{1,64}$', description: the token's viewer}
                session_id: {type: string, pattern: '^[A-Za-z0-9_.:-]{1,64}$'}
                room_id: {type: string, pattern: '^[A-Za-z0-9_.:-]{1,64}$'}
                device_id: {type: string, pattern: '^[A-Za-z0-9_.:-]{1,64}$'}
                type:
                  type: string
                  enum: [impression, enter, heartbeat, leave, like, comment, follow, share, add_to_cart, purchase,
                         deal_claim]
                ts: {type: integer, minimum: 0, description: "epoch ms: at most 7 days old, 5 minutes ahead"}
                v: {type: integer, enum: [1], default: 1}
                position: {type: integer, minimum: 0, description: impression}
                page_token: {type: string, pattern: '^[A-Za-z0-9_.:-]{1,64}$', description: "impression: the page_token of the feed page the room came from (a boosted room is delivered only with it)"}
                boosted: {type: boolean, description: impression}
                variant: {type: string, maxLength: 64, description: impression}
                model_version: {type: string, maxLength: 64, description: impression}
                experiment_id: {type: string, maxLength: 64, description: impression}
                config_version: {oneOf: [{type: integer}, {type: string}], description: impression}
                source: {type: string, enum: [feed, code, deeplink, replay], description: enter}
                dwell_ms: {type: integer, minimum: 0, description: "leave (required there)"}
                text: {type: string, maxLength: 500, description: comment}
                product_id: {type: string, pattern: '^[A-Za-z0-9_.:-]{1,64}$', description: "add_to_cart, purchase (required there)"}
                order_id: {type: string, pattern: '^[A-Za-z0-9_.:-]{1,64}$', description: "purchase (required there)"}
                amount: {type: number, minimum: 0, exclusiveMinimum: true, description: "purchase (required there)"}
                currency: {type: string, pattern: '^[A-Z]{3}$', description: "purchase (required there)"}
                deal_id: {type: string, pattern: '^[A-Za-z0-9_.:-]{1,64}$', description: "deal_claim (required there)"}
          example: [{event_id: evt_01, viewer_id: v1, session_id: ses_0123456789abcdef, room_id: room_01,
                     type: leave, ts: 1790000000000, dwell_ms: 12000}]
    responses:
      202: {description: "{accepted, rejected: [{index, error: {code, message, field}}]}"}
      413: {description: more than 500 events}
      422: {description: the body is not a list of events}
      503: {description: Kafka unavailable; retry later}
    """
    principal = await require(request, "viewer")
    body: Any = await read_json(request)
    if isinstance(body, dict) and "events" in body:
        body = body["events"]
    assert principal.viewer_id is not None
    result = await events.ingest.submit(
        body, principal.viewer_id, device_id=request.headers.get("x-device-id")
    )
    return json(result.as_dict(), status=202)


def routes(events: Events) -> list[BaseRoute]:
    return [Route("/v1/events", bound(post_events, events), methods=["POST"])]


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
    def build(cls, resources: Resources, rooms: MerchantDirectory) -> Events:
        """`rooms` enriches events with the merchant behind their room (rooms.directory.RoomDirectory)."""
        return cls(
            settings=resources.settings,
            ingest=Ingest(
                _StartedProducer(resources, wait=2.0), rooms, topic=resources.settings.topic(VIEWER_EVENTS)
            ),
            live_stats=LiveStats(resources.redis),
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
