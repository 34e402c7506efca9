"""Ingest: a viewer's batch of events → validated, enriched with merchant_id, durably on Kafka.

The answer lists what was accepted only after the broker acknowledged every accepted event
(idempotent producer, acks=all), so an accepted event is never lost. When Kafka does not answer
within `ack_timeout` the whole call fails with 503 and claims nothing; the client retries with the
same event ids, which is safe because every sink dedupes by event_id.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

import orjson
from aiokafka.partitioner import murmur2

from events.schema import ID, MAX_BATCH, Event, Rejection, validate
from events.vocabulary import SERVER_TYPES, VIEWER_EVENTS
from roomfeed.errors import PayloadTooLarge, Unavailable, ValidationFailed
from roomfeed.redis_lane import RoundTrip

log = logging.getLogger("roomfeed.events.ingest")

# The session of events outside a feed session (events.schema: `direct`).
DIRECT_SESSION = "direct"
NOT_YOUR_SESSION = Rejection("session_not_yours", "session_id names another viewer's session", "session_id")


class OwnerLookup(Protocol):
    """The owners of some ids, in steps (roomfeed.owners.OwnerLookup): what Redis must be asked rides
    a round trip the caller makes (`queue`); `finish` reads it and asks PostgreSQL for the rest."""

    def queue(self, trip: RoundTrip) -> None: ...

    async def finish(self) -> dict[str, str]: ...


class MerchantDirectory(Protocol):
    """Who owns a room (rooms.directory.RoomDirectory satisfies it); unknown rooms are left out."""

    def lookup(self, room_ids: Iterable[str]) -> OwnerLookup: ...


class SessionOwners(Protocol):
    """Who owns each feed session (feed.sessions.SessionBook satisfies it); unknown ones are left out."""

    def owners_lookup(self, session_ids: Iterable[str]) -> OwnerLookup: ...


class Producer(Protocol):
    """The part of aiokafka's AIOKafkaProducer that ingest uses: whole record batches per partition."""

    async def partitions_for(self, topic: str) -> set[int]: ...

    def create_batch(self) -> Any: ...

    async def send_batch(self, batch: Any, topic: str, *, partition: int) -> asyncio.Future[Any]: ...


@dataclass
class IngestResult:
    accepted: int
    rejected: list[dict[str, Any]] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        return {"accepted": self.accepted, "rejected": self.rejected}


class Ingest:
    def __init__(
        self,
        producer: Producer,
        directory: MerchantDirectory,
        sessions: SessionOwners,
        *,
        topic: str = VIEWER_EVENTS,
        ack_timeout: float = 2.5,
        directory_timeout: float = 0.5,
        round_trips: Callable[[], RoundTrip] | None = None,
    ) -> None:
        """`directory` names each event's merchant, `sessions` who owns each session (an event in
        another viewer's session is refused); `round_trips` makes the Redis round trip a batch's
        session and room lookups share (the process's lane); without it they go to PostgreSQL."""
        self.producer = producer
        self.directory = directory
        self.sessions = sessions
        self.round_trips = round_trips
        self.topic = topic
        self.ack_timeout = ack_timeout
        self.directory_timeout = directory_timeout
        self._queues: dict[int, _PartitionQueue] = {}

    async def submit(
        self, events: Any, viewer_id: str, now_ms: int | None = None, device_id: str | None = None
    ) -> IngestResult:
        """Validate, enrich and publish; raises ValidationFailed/PayloadTooLarge/Unavailable.

        `device_id` is the device the request came from (its X-Device-ID header): it is what the
        events' `device_id` says from then on (what rate limits and the alliance's device rules
        read), whatever the events claim."""
        if not isinstance(events, list):
            raise ValidationFailed(
                "the body must be a JSON array of events", fields={"body": "must be a list"}
            )
        if len(events) > MAX_BATCH:
            raise PayloadTooLarge(
                f"a batch holds at most {MAX_BATCH} events, got {len(events)}",
                fields={"body": f"must have at most {MAX_BATCH} items"},
            )
        now = now_ms if now_ms is not None else int(time.time() * 1000)
        good: list[Event] = []
        positions: list[int] = []  # each good event's index in the batch
        rejected: list[dict[str, Any]] = []
        for index, raw in enumerate(events):
            result = validate(raw, now)
            if isinstance(result, Rejection):
                rejected.append({"index": index, "error": result.as_dict()})
            elif result["type"] in SERVER_TYPES:
                rejected.append(
                    {
                        "index": index,
                        "error": Rejection(
                            "server_only",
                            f"{result['type']} is recorded by the feed; an app reports what was on screen as impression",
                            "type",
                        ).as_dict(),
                    }
                )
            elif result["viewer_id"] != viewer_id:
                rejected.append(
                    {
                        "index": index,
                        "error": Rejection(
                            "viewer_mismatch", "viewer_id is not the viewer of this token", "viewer_id"
                        ).as_dict(),
                    }
                )
            else:
                good.append(result)
                positions.append(index)
        if good:
            owners, merchants = await self._look_up(good)
            good = self._own_sessions(good, positions, rejected, owners)
        if good:
            if device_id is not None and ID.match(device_id):
                for event in good:
                    event["device_id"] = device_id
            for event in good:
                event["merchant_id"] = merchants.get(event["room_id"])
                event["received_at"] = now
            await self.publish(good)
        return IngestResult(accepted=len(good), rejected=rejected)

    async def _look_up(self, good: list[Event]) -> tuple[dict[str, str], dict[str, str]]:
        """(session → its viewer, room → its merchant) for a batch's events: what process memory does
        not know is asked of Redis in one round trip for both, then of PostgreSQL. Unknown ids are
        left out. When a lookup fails the events go on unchecked and unenriched: they matter more
        (a session's owner is checked again on the next batch; merchant_id stays null)."""
        sessions = self.sessions.owners_lookup({e["session_id"] for e in good} - {DIRECT_SESSION})
        rooms = self.directory.lookup({e["room_id"] for e in good})
        if self.round_trips is not None:
            trip = self.round_trips()
            sessions.queue(trip)
            rooms.queue(trip)
            if len(trip):
                try:
                    await asyncio.wait_for(trip.send(), self.directory_timeout)
                except Exception as exc:  # PostgreSQL answers for all of them
                    log.warning("session and room owners not read from Redis: %s", exc)
        owners: dict[str, str] | BaseException
        merchants: dict[str, str] | BaseException
        try:
            owners, merchants = await asyncio.wait_for(
                asyncio.gather(sessions.finish(), rooms.finish(), return_exceptions=True),
                self.directory_timeout,
            )
        except TimeoutError as exc:
            owners = merchants = exc
        if isinstance(owners, BaseException):
            log.warning("session owners unavailable, events not checked: %s", owners)
            owners = {}
        if isinstance(merchants, BaseException):
            log.warning("room directory unavailable, events keep merchant_id null: %s", merchants)
            merchants = {}
        return owners, merchants

    def _own_sessions(
        self, good: list[Event], positions: list[int], rejected: list[dict[str, Any]], owners: dict[str, str]
    ) -> list[Event]:
        """Refuse events that name a session of another viewer (`session_not_yours`)."""
        if not owners:
            return good
        kept = []
        for event, index in zip(good, positions, strict=True):
            owner = owners.get(event["session_id"])
            if owner is None or owner == event["viewer_id"]:
                kept.append(event)
            else:
                rejected.append({"index": index, "error": NOT_YOUR_SESSION.as_dict()})
        if len(kept) != len(good):
            rejected.sort(key=lambda r: r["index"])
        return kept

    async def publish(self, events: list[Event]) -> None:
        """Send every event (key = viewer_id) and wait for all acks, or raise Unavailable.

        Events are grouped by partition exactly as aiokafka's DefaultPartitioner would place their
        key (murmur2 of viewer_id), and each group goes out as one record batch: per-viewer order
        holds, and there is one future per partition instead of one per event.
        """
        task = asyncio.ensure_future(self._send_batches(events))
        try:
            await asyncio.wait_for(asyncio.shield(task), self.ack_timeout)
        except TimeoutError:
            # Late acks are harmless: the client retries the same ids and sinks dedupe.
            task.add_done_callback(_swallow)
            raise _kafka_unavailable("Kafka did not acknowledge in time") from None
        except Exception as exc:
            log.warning("kafka send failed: %s", exc)
            raise _kafka_unavailable("Kafka refused the events") from exc

    async def _send_batches(self, events: list[Event]) -> None:
        producer = self.producer
        partitions = sorted(await producer.partitions_for(self.topic))
        groups: dict[int, list[tuple[bytes, bytes]]] = {}
        placed: dict[str, tuple[int, bytes]] = {}
        dumps = orjson.dumps
        for event in events:
            viewer = event["viewer_id"]
            where = placed.get(viewer)
            if where is None:
                key = viewer.encode()
                where = placed[viewer] = (partition_of(key, partitions), key)
            groups.setdefault(where[0], []).append((where[1], dumps(event)))
        await asyncio.gather(*(self._enqueue(partition, records) for partition, records in groups.items()))

    def _enqueue(self, partition: int, records: list[tuple[bytes, bytes]]) -> asyncio.Future[None]:
        """Add records to the partition's next batch; the future settles when the broker has acked
        the batch that carried them.

        The producer holds one batch per partition waiting for the broker. Batches are shared by
        the requests that arrive meanwhile (a group commit): with one batch per request, concurrent
        requests raced for that one slot and lost with KafkaTimeoutError well within the ack
        deadline once the broker (or this process) was slow (1,118 and ~10,000 refused batches in
        bench_alliance runs at load 8-15), though the broker itself acked in 11 ms."""
        queue = self._queues.get(partition)
        if queue is None:
            queue = self._queues[partition] = _PartitionQueue()
        if queue.acked is None:
            queue.acked = asyncio.get_running_loop().create_future()
        queue.records.extend(records)
        acked = queue.acked
        if queue.sender is None or queue.sender.done():
            queue.sender = asyncio.ensure_future(self._send_queued(partition, queue))
        return acked

    async def _send_queued(self, partition: int, queue: _PartitionQueue) -> None:
        """Send what the partition's queue holds, batch after batch, until it is empty."""
        while queue.records:
            records, acked = queue.records, queue.acked
            queue.records, queue.acked = [], None
            assert acked is not None
            try:
                acks: list[Awaitable[Any]] = []
                batch = self.producer.create_batch()
                for key, value in records:
                    if batch.append(key=key, value=value, timestamp=None) is None:
                        acks.append(await self.producer.send_batch(batch, self.topic, partition=partition))
                        batch = self.producer.create_batch()
                        if batch.append(key=key, value=value, timestamp=None) is None:
                            raise ValueError(f"an event of {len(value)} bytes does not fit in a record batch")
                acks.append(await self.producer.send_batch(batch, self.topic, partition=partition))
            except Exception as exc:  # every request whose records were in it hears why
                _settle(acked, exc)
                continue
            # The next batch waits for this one to leave (send_batch), not for its ack.
            asyncio.ensure_future(asyncio.gather(*acks)).add_done_callback(
                lambda done, acked=acked: _settle(
                    acked, RuntimeError("the batch was cancelled") if done.cancelled() else done.exception()
                )
            )


@dataclass
class _PartitionQueue:
    """Records waiting for a partition's next batch, and the future their requests wait on."""

    records: list[tuple[bytes, bytes]] = field(default_factory=list)
    acked: asyncio.Future[None] | None = None
    sender: asyncio.Future[None] | None = None


def _settle(acked: asyncio.Future[None], error: BaseException | None) -> None:
    if acked.done():
        return
    if error is None:
        acked.set_result(None)
    else:
        acked.set_exception(error)


def partition_of(key: bytes, partitions: Sequence[int]) -> int:
    """The partition aiokafka's DefaultPartitioner (and Kafka's Java client) picks for `key`."""
    return partitions[int(murmur2(key) & 0x7FFFFFFF) % len(partitions)]


def _swallow(task: asyncio.Future[Any]) -> None:
    if not task.cancelled():
        task.exception()


def _kafka_unavailable(message: str) -> Unavailable:
    return Unavailable(
        message + "; nothing in this batch was accepted, retry with the same event ids",
        headers={"Retry-After": "2"},
        code="kafka_unavailable",
    )
