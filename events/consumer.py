"""Consumers: the Sink protocol and SinkRunner, one Kafka consumer group per sink.

A SinkRunner polls a batch, checks each record (undecodable or malformed records go to the
dead-letter topic with the error and are skipped), hands the rest to the sink, and commits the
offsets only after the sink has written. A sink failure that looks transient (connection,
timeout) is retried with backoff without committing; any other failure is narrowed down event by
event, and the events that still fail are dead-lettered so the partition moves on.

Records reach the sink as the event dict plus `_topic`, `_partition`, `_offset` (the realtime
sink uses them to make replays no-ops; other sinks ignore them).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import Any, Protocol

import orjson
from aiokafka import (
    AIOKafkaConsumer,
    AIOKafkaProducer,
    ConsumerRebalanceListener,
    ConsumerRecord,
    TopicPartition,
)
from aiokafka.errors import CommitFailedError, KafkaError
from prometheus_client import Counter, Gauge

from events.ingest import DEAD_LETTERS
from events.schema import Rejection, validate_stored
from roomfeed.kafka import make_consumer, make_producer
from roomfeed.settings import Settings

log = logging.getLogger("roomfeed.events.consumer")

SINK_EVENTS = Counter("roomfeed_sink_events_total", "Records handled by sinks", ["sink", "outcome"])
CONSUMER_LAG = Gauge(
    "roomfeed_consumer_lag", "Records not yet committed by a consumer group", ["group", "topic", "partition"]
)


MAX_RECORDS = 4000  # records per poll and sink write


class Sink(Protocol):
    name: str

    async def write(self, batch: list[dict[str, Any]]) -> Any: ...


def _transient(exc: BaseException) -> bool:
    import asyncpg
    from redis.exceptions import ConnectionError as RedisConnectionError
    from redis.exceptions import TimeoutError as RedisTimeout

    return isinstance(
        exc,
        OSError
        | TimeoutError
        | RedisConnectionError
        | RedisTimeout
        | asyncpg.exceptions.ConnectionDoesNotExistError
        | asyncpg.exceptions.CannotConnectNowError
        | asyncpg.exceptions.TooManyConnectionsError
        | asyncpg.exceptions.InterfaceError
        | asyncpg.exceptions.InternalClientError
        | asyncpg.exceptions.DeadlockDetectedError
        | asyncpg.exceptions.SerializationError
        | KafkaError,
    )


class _Assignments(ConsumerRebalanceListener):  # type: ignore[misc]
    """Logs which partitions this member holds, so operators (and tests) see the split."""

    def __init__(self, runner: SinkRunner) -> None:
        self.runner = runner
        self.held: set[TopicPartition] = set()

    async def on_partitions_revoked(self, revoked: Any) -> None:
        self.held -= set(revoked)

    async def on_partitions_assigned(self, assigned: Any) -> None:
        self.held = set(assigned)
        log.info(
            "partitions assigned",
            extra={"fields": {"group": self.runner.settings.group(self.runner.group),
                              "partitions": sorted(f"{tp.topic}:{tp.partition}" for tp in assigned)}},
        )


class SinkRunner:
    def __init__(
        self,
        settings: Settings,
        sink: Sink,
        topics: tuple[str, ...] = ("viewer-events",),
        *,
        group: str | None = None,
        max_records: int = MAX_RECORDS,
        consumer_options: dict[str, Any] | None = None,
    ) -> None:
        self.settings = settings
        self.sink = sink
        self.topics = topics
        self.group = group or f"sink-{sink.name}"
        self.max_records = max_records
        self.consumer_options = consumer_options or {}
        self.consumer: AIOKafkaConsumer | None = None
        self.dead_letters: AIOKafkaProducer | None = None
        self.processed = 0
        self._stopping = asyncio.Event()

    async def start(self) -> None:
        self.consumer = make_consumer(self.settings, self.group, **self.consumer_options)
        self.consumer.subscribe([self.settings.topic(t) for t in self.topics], listener=_Assignments(self))
        self.dead_letters = make_producer(self.settings)
        await self.consumer.start()
        await self.dead_letters.start()

    async def stop(self) -> None:
        self._stopping.set()
        if self.consumer is not None:
            with contextlib.suppress(Exception):
                await self.consumer.stop()
        if self.dead_letters is not None:
            with contextlib.suppress(Exception):
                await self.dead_letters.stop()

    async def run(self) -> None:
        """Poll, write, commit until stop(); start() first.

        One batch is written while the next is polled and decoded (two stages, so the sink's
        round trips overlap the consumer's CPU work); writes stay in poll order, and each batch's
        offsets are committed right after its own write.
        """
        assert self.consumer is not None
        writing: asyncio.Task[None] | None = None
        try:
            while not self._stopping.is_set():
                try:
                    polled = await self.consumer.getmany(timeout_ms=500, max_records=self.max_records)
                except KafkaError as exc:
                    log.warning("poll failed, retrying: %s", exc, extra={"fields": {"group": self.group}})
                    await asyncio.sleep(0.5)
                    continue
                if not polled:
                    continue
                decoded = self.decode(polled)
                if writing is not None:
                    await writing
                writing = asyncio.create_task(self._finish(polled, *decoded))
        finally:
            if writing is not None:
                with contextlib.suppress(asyncio.CancelledError):
                    await writing

    async def handle(self, polled: dict[TopicPartition, list[ConsumerRecord[Any, Any]]]) -> None:
        """Decode, write and commit one polled batch."""
        await self._finish(polled, *self.decode(polled))

    def decode(
        self, polled: dict[TopicPartition, list[ConsumerRecord[Any, Any]]]
    ) -> tuple[list[dict[str, Any]], list[tuple[TopicPartition, ConsumerRecord[Any, Any], str]]]:
        """The events to write, and the records to dead-letter with their error."""
        batch: list[dict[str, Any]] = []
        refused: list[tuple[TopicPartition, ConsumerRecord[Any, Any], str]] = []
        loads, check = orjson.loads, validate_stored
        for tp, records in polled.items():
            topic, partition = tp.topic, tp.partition
            for record in records:
                try:
                    raw = loads(record.value)
                except (orjson.JSONDecodeError, TypeError) as exc:
                    refused.append((tp, record, f"not JSON: {exc}"))
                    continue
                checked = check(raw)
                if type(checked) is Rejection:
                    refused.append((tp, record, checked.message))
                    continue
                checked["_topic"], checked["_partition"], checked["_offset"] = topic, partition, record.offset
                batch.append(checked)
        return batch, refused

    async def _finish(
        self,
        polled: dict[TopicPartition, list[ConsumerRecord[Any, Any]]],
        batch: list[dict[str, Any]],
        refused: list[tuple[TopicPartition, ConsumerRecord[Any, Any], str]],
    ) -> None:
        for tp, record, error in refused:
            await self.dead_letter(tp, record.offset, record.key, record.value, error)
        if batch:
            await self._write(batch)
        await self._commit({tp: records[-1].offset + 1 for tp, records in polled.items() if records})
        self.refresh_lag(polled)

    async def _write(self, batch: list[dict[str, Any]]) -> None:
        delay = 0.2
        while True:
            try:
                await self.sink.write(batch)
                SINK_EVENTS.labels(self.sink.name, "written").inc(len(batch))
                self.processed += len(batch)
                return
            except Exception as exc:
                if _transient(exc):
                    log.warning("sink %s unavailable, retrying: %s", self.sink.name, exc)
                    if self._stopping.is_set():
                        raise
                    await asyncio.sleep(delay)
                    delay = min(delay * 2, 5.0)
                    continue
                if len(batch) == 1:
                    event = batch[0]
                    value = orjson.dumps({k: v for k, v in event.items() if not k.startswith("_")})
                    await self.dead_letter(
                        TopicPartition(event["_topic"], event["_partition"]), event["_offset"],
                        event["viewer_id"].encode(), value, f"{type(exc).__name__}: {exc}",
                    )
                    return
                log.warning("sink %s refused a batch, narrowing down: %s", self.sink.name, exc)
                for event in batch:
                    await self._write([event])
                return

    async def dead_letter(
        self, tp: TopicPartition, offset: int, key: bytes | None, value: bytes | None, error: str
    ) -> None:
        assert self.dead_letters is not None
        text = (value or b"").decode("utf-8", errors="replace")
        letter = {"error": error, "topic": tp.topic, "partition": tp.partition, "offset": offset, "value": text,
                  "sink": self.sink.name}
        await self.dead_letters.send_and_wait(
            self.settings.topic(DEAD_LETTERS), orjson.dumps(letter), key=key
        )
        SINK_EVENTS.labels(self.sink.name, "dead_lettered").inc()
        log.warning("dead-lettered %s[%s]@%s: %s", tp.topic, tp.partition, offset, error)

    async def _commit(self, offsets: dict[TopicPartition, int]) -> None:
        assert self.consumer is not None
        if not offsets:
            return
        try:
            await self.consumer.commit(offsets)
        except (CommitFailedError, KafkaError) as exc:
            # Partitions moved to another member; it re-reads from the last commit and the sink dedupes.
            log.warning("commit failed (rebalance?): %s", exc)

    def refresh_lag(self, polled: dict[TopicPartition, list[ConsumerRecord[Any, Any]]]) -> None:
        """Lag of the partitions just handled: high watermark minus the next offset (worker /metrics)."""
        assert self.consumer is not None
        for tp, records in polled.items():
            high = self.consumer.highwater(tp)
            if high is not None and records:
                CONSUMER_LAG.labels(self.settings.group(self.group), tp.topic, str(tp.partition)).set(
                    max(0, high - records[-1].offset - 1)
                )
