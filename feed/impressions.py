"""Served records: every room a feed response puts on a page becomes a `served` event on
viewer-events (what the feed offered, with its variant, model and whether the alliance boosted it).
What the viewer actually saw is not known here: the app reports it as `impression` events (see
docs/events.md), and every rate (enter rate, experiments, training negatives, alliance delivery)
counts those, never served rooms.

Publishing never blocks a response: a page's events are appended to an in-process queue and a
background task, woken by the first page after a flush, lingers `linger_s` (`LINGER_S`, 50 ms) so that
every page served meanwhile leaves in the same record batch per partition: under load one flush carries
many pages, and the request itself never awaits, allocates a task or touches the producer. When Kafka is down the queue holds up to `capacity` events and
then drops the oldest (counted in `roomfeed_feed_impressions_dropped_total`), because a feed that
stalls on Kafka is worse than an impression lost from the statistics.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets
from collections import deque
from typing import Any

import orjson
from prometheus_client import Counter

from events.ingest import partition_of
from events.vocabulary import SERVED
from roomfeed.kafka import encode
from roomfeed.tasks import cancel_and_wait

log = logging.getLogger("feed.impressions")
DROPPED = Counter(
    "roomfeed_feed_impressions_dropped_total", "impressions dropped while Kafka was unavailable"
)
PUBLISHED = Counter("roomfeed_feed_impressions_published_total", "impressions handed to Kafka")


def _not_handed(groups: dict[int, list[tuple[bytes, bytes]]], handed: int) -> list[dict[str, Any]]:
    """The events after the first `handed` of `groups` (in the order they were being sent)."""
    flat = [value for records in groups.values() for _, value in records]
    return [orjson.loads(value) for value in flat[handed:]]


def served_events(
    viewer_id: str,
    session_id: str,
    page: list[dict[str, Any]],
    meta: dict[str, Any],
    now_ms: int,
    displaced: dict[str, str] | None = None,
    page_token: str | None = None,
) -> list[dict[str, Any]]:
    """The served records of one page; ids are unique (page nonce + position) so sinks can
    deduplicate. A session's entry room says `entry: true`; a boosted room names the room it pushed
    off the page (`displaced_room_id`), so the boost's relevance cost can be measured."""
    nonce = secrets.token_hex(6)
    # What every record of the page shares, made once (each record is a copy with its room's fields).
    common = {
        "type": SERVED,
        "viewer_id": viewer_id,
        "session_id": session_id,
        "ts": now_ms,
        "received_at": now_ms,
        **meta,
    }
    if page_token is not None:
        common["page_token"] = page_token
    events = []
    for room in page:
        position = room["position"]
        event = {
            **common,
            "event_id": f"srv:{session_id}:{position}:{nonce}",
            "room_id": room["room_id"],
            "merchant_id": room["merchant_id"],
            "position": position,
            "boosted": room["boosted"],
        }
        if room.get("entry"):
            event["entry"] = True
        if displaced and room["room_id"] in displaced:
            event["displaced_room_id"] = displaced[room["room_id"]]
        events.append(event)
    return events


# How long the flush task waits after the first page of a flush, so the pages served meanwhile join it.
# A flush costs ~0.45 ms of CPU whatever it carries (aiokafka's produce request, its acknowledgement) and
# ~5 us per served record on top (measured, bench/bench_feed.py's stack: 3,000 pages of 10 records in
# flushes of 1 / 3 / 10 / 30 / 100 pages: 0.51-0.54 / 0.22-0.23 / 0.10-0.11 / 0.065-0.07 / 0.054-0.062 ms
# of CPU a page). At 5 ms (and the acknowledgement's wait) a flush carried ~3-8 pages at this host's
# 300-500 pages/s, so the flush overhead was 0.06-0.15 ms of a page; at 50 ms it is 15-30 pages, <= 0.03 ms.
# Served records are read by the archive, the experiments' reports and training: none needs them within
# 50 ms (the app's own impressions and enters, what every rate counts, go through ingest, not here).
LINGER_S = 0.05


class ImpressionPublisher:
    def __init__(
        self, resources: Any, topic: str, capacity: int = 100_000, linger_s: float = LINGER_S
    ) -> None:
        self.resources = resources
        self.topic = topic
        self.queue: deque[dict[str, Any]] = deque()
        self.capacity = capacity
        self.linger_s = linger_s
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    def publish(self, events: list[dict[str, Any]]) -> None:
        self.queue.extend(events)
        if len(self.queue) > self.capacity:
            over = len(self.queue) - self.capacity
            for _ in range(over):
                self.queue.popleft()
            DROPPED.inc(over)
        if not self._wake.is_set():
            self._wake.set()

    async def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="feed-impressions")

    async def stop(self, drain_seconds: float = 2.0) -> None:
        with contextlib.suppress(Exception):
            await asyncio.wait_for(self._drain_once(), drain_seconds)
        await cancel_and_wait(self._task)

    async def _drain_once(self) -> None:
        """Hand everything queued to Kafka as one record batch per partition (placed as aiokafka's
        DefaultPartitioner places the viewer key), then wait for the acknowledgements: ~5x less
        producer CPU per impression than one `send` per event."""
        if not self.resources.producer_ready.is_set() or not self.queue:
            return
        producer = self.resources.producer
        events = list(self.queue)
        self.queue.clear()
        partitions = sorted(await producer.partitions_for(self.topic))
        groups: dict[int, list[tuple[bytes, bytes]]] = {}
        placed: dict[str, tuple[bytes, int]] = {}  # a page's events share their viewer: hashed once
        for event in events:
            viewer = event["viewer_id"]
            where = placed.get(viewer)
            if where is None:
                key = viewer.encode()
                where = placed[viewer] = (key, partition_of(key, partitions))
            groups.setdefault(where[1], []).append((where[0], encode(event)))
        acks: list[tuple[int, Any]] = []
        handed = 0
        try:
            for partition, records in groups.items():
                batch, size = producer.create_batch(), 0
                for key, value in records:
                    if batch.append(key=key, value=value, timestamp=None) is None:
                        acks.append((size, await producer.send_batch(batch, self.topic, partition=partition)))
                        handed += size
                        batch, size = producer.create_batch(), 0
                        batch.append(key=key, value=value, timestamp=None)
                    size += 1
                acks.append((size, await producer.send_batch(batch, self.topic, partition=partition)))
                handed += size
        except Exception:
            # Not handed over: back to the queue (order within a viewer is kept: batches go in order).
            if handed < len(events):
                self.queue.extendleft(reversed(_not_handed(groups, handed)))
            raise
        finally:
            if acks:
                results = await asyncio.gather(*(ack for _, ack in acks), return_exceptions=True)
                failed = sum(n for (n, _), r in zip(acks, results, strict=True) if isinstance(r, Exception))
                PUBLISHED.inc(sum(n for n, _ in acks) - failed)
                if failed:
                    DROPPED.inc(failed)
                    log.warning("%d impressions not acknowledged by Kafka", failed)

    async def _run(self) -> None:
        while True:
            await self._wake.wait()
            if self.linger_s > 0:
                await asyncio.sleep(self.linger_s)  # the pages served meanwhile join this flush
            self._wake.clear()
            if not self.resources.producer_ready.is_set():
                await asyncio.sleep(0.5)
                self._wake.set()
                continue
            try:
                await self._drain_once()
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                log.warning("publishing impressions failed, retrying: %s", exc)
                await asyncio.sleep(0.5)
                self._wake.set()
