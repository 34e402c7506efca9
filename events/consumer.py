"""Consumers: the Sink protocol and SinkRunner, one Kafka consumer group per sink.

A SinkRunner polls a batch, checks each record (undecodable or malformed records go to the
dead-letter topic with the error and are skipped), hands the rest to the sink, and commits the
offsets only after the sink has written (at most every COMMIT_EVERY_S). A sink failure that looks transient (connection,
timeout) is retried with backoff without committing; any other failure is narrowed down event by
event, and the events that still fail are dead-lettered so the partition moves on.

Records reach the sink as the event dict plus `_topic`, `_partition`, `_offset` (the realtime
sink uses them to make replays no-ops; other sinks ignore them). A sink that reads the polled
records itself (a `PollSink`: the realtime sink decodes, checks and sums them in one pass) gets
the records instead and hands back what it could not read.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from typing import Any, Protocol, runtime_checkable

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

from events.schema import Rejection, validate_stored
from events.tombstones import Tombstones
from events.vocabulary import DEAD_LETTERS, VIEWER_EVENTS
from roomfeed.kafka import make_consumer, make_producer
from roomfeed.logs import bound
from roomfeed.settings import Settings

log = logging.getLogger("roomfeed.events.consumer")

SINK_EVENTS = Counter("roomfeed_sink_events_total", "Records handled by sinks", ["sink", "outcome"])
CONSUMER_LAG = Gauge(
    "roomfeed_consumer_lag",
    "Records not yet committed by a consumer group",
    ["group", "topic", "partition"],
    multiprocess_mode="mostrecent",  # every API worker reads the same lag: the latest reading counts
)


MAX_RECORDS = 4000  # records per poll and sink write
# Written offsets are committed at most this often, and when the topic runs dry, partitions move or
# the runner stops: a commit costs ~1 ms of Python per call (0.3 µs per event at 4,000-record polls),
# and what a crash makes a sink see again, it dedupes.
COMMIT_EVERY_S = 0.5
# How long stop() waits for the Kafka clients to close. aiokafka's consumer.stop() waits for its group
# coordination task, which can stay stuck after the member's session expired (a process that did not
# run its event loop for longer than session_timeout_ms; aio-libs/aiokafka#773): the outside CI's
# whole-suite run hung 600 s in that wait. Past the bound the client is abandoned; nothing is lost:
# what was written is committed by settle() first, and the next owner re-reads anything after it.
STOP_TIMEOUT_S = 10.0


Polled = dict[TopicPartition, list[ConsumerRecord[Any, Any]]]
Refused = tuple[TopicPartition, ConsumerRecord[Any, Any], str]


class Sink(Protocol):
    name: str

    async def write(self, batch: list[dict[str, Any]]) -> Any: ...


class Prepared(Protocol):
    """A PollSink's batch: its size, and its events as dicts (with positions) to narrow a failure down."""

    def __len__(self) -> int: ...

    def events(self) -> list[dict[str, Any]]: ...


@runtime_checkable
class PollSink(Sink, Protocol):
    """A sink that reads polled records itself; `read` is CPU only (it runs while the previous batch
    is written), `apply` writes what `read` prepared, `write` takes single events when narrowing down."""

    def read(self, polled: Polled) -> tuple[Prepared, list[Refused]]: ...

    async def apply(self, prepared: Any) -> Any: ...


def _transient(exc: BaseException) -> bool:
    import asyncpg
    from redis.exceptions import ClusterDownError, SlotNotCoveredError, TryAgainError
    from redis.exceptions import ConnectionError as RedisConnectionError
    from redis.exceptions import TimeoutError as RedisTimeout

    return isinstance(
        exc,
        OSError
        | TimeoutError
        | RedisConnectionError
        | RedisTimeout
        | ClusterDownError  # a Redis Cluster failing over (MasterDownError too)
        | TryAgainError
        | SlotNotCoveredError
        | asyncpg.exceptions.ConnectionDoesNotExistError
        | asyncpg.exceptions.CannotConnectNowError
        | asyncpg.exceptions.TooManyConnectionsError
        | asyncpg.exceptions.InterfaceError
        | asyncpg.exceptions.InternalClientError
        | asyncpg.exceptions.DeadlockDetectedError
        | asyncpg.exceptions.SerializationError
        | KafkaError,
    )


async def _let_requests_out(turns: int = 4) -> None:
    """Give the event loop a few turns (no waiting) before CPU-only work, so the requests that tasks
    just started reach the wire and the servers work meanwhile: redis-py sends from a task of its
    own (asyncio.wait_for under a socket timeout), aiokafka's fetcher sends the next fetch from its
    own task. Without them the sink's write waited behind the next batch's decoding (realtime sink
    replay: ~160,000 → ~240,000 events/s, see docs/benchmarks.md)."""
    for _ in range(turns):
        await asyncio.sleep(0)


class _Assignments(ConsumerRebalanceListener):  # type: ignore[misc]
    """Logs which partitions this member holds, so operators (and tests) see the split."""

    def __init__(self, runner: SinkRunner) -> None:
        self.runner = runner
        self.held: set[TopicPartition] = set()

    async def on_partitions_revoked(self, revoked: Any) -> None:
        self.held -= set(revoked)
        await self.runner.settle()  # commit what was written before the partitions move

    async def on_partitions_assigned(self, assigned: Any) -> None:
        self.held = set(assigned)
        log.info(
            "partitions assigned",
            extra={
                "fields": {
                    "group": self.runner.settings.group(self.runner.group),
                    "partitions": sorted(f"{tp.topic}:{tp.partition}" for tp in assigned),
                }
            },
        )


def _positions(polled: Polled) -> str:
    """A batch's place in the log, for its log lines: topic:partition@first-last, ..."""
    return ",".join(
        f"{tp.topic}:{tp.partition}@{rs[0].offset}-{rs[-1].offset}" for tp, rs in polled.items() if rs
    )


def _event_id(value: bytes | None) -> str | None:
    """The event id of a record's value, when it has one (a dead letter may not even be JSON)."""
    try:
        event = orjson.loads(value or b"")
    except orjson.JSONDecodeError:
        return None
    found = event.get("event_id") if isinstance(event, dict) else None
    return found if isinstance(found, str) else None


class SinkRunner:
    def __init__(
        self,
        settings: Settings,
        sink: Sink,
        topics: tuple[str, ...] = (VIEWER_EVENTS,),
        *,
        group: str | None = None,
        max_records: int = MAX_RECORDS,
        consumer_options: dict[str, Any] | None = None,
        tombstones: Tombstones | None = None,
    ) -> None:
        self.settings = settings
        self.sink = sink
        # Erased viewers: their records produced before the erasure never reach the sink (replays).
        self.tombstones = tombstones
        self.topics = topics
        self.group = group or f"sink-{sink.name}"
        self.max_records = max_records
        self.consumer_options = consumer_options or {}
        self.consumer: AIOKafkaConsumer | None = None
        self.dead_letters: AIOKafkaProducer | None = None
        self.processed = 0
        self.reads = isinstance(sink, PollSink)
        self._writing: asyncio.Task[None] | None = None  # the latest batch's write
        self._committing: asyncio.Task[None] | None = None  # the latest commit
        self._written: dict[TopicPartition, int] = {}  # next offsets, written but not yet committed
        self._committed_at = 0.0
        self._stopping = asyncio.Event()

    async def start(self) -> None:
        self.consumer = make_consumer(self.settings, self.group, **self.consumer_options)
        self.consumer.subscribe([self.settings.topic(t) for t in self.topics], listener=_Assignments(self))
        self.dead_letters = make_producer(self.settings)
        await self.consumer.start()
        await self.dead_letters.start()

    async def stop(self) -> None:
        """Stop polling, commit what was written, close the clients; each wait is bounded (STOP_TIMEOUT_S)."""
        self._stopping.set()
        await self.settle()
        for client in (self.consumer, self.dead_letters):
            if client is not None:
                await self._close(client)

    async def _close(self, client: AIOKafkaConsumer | AIOKafkaProducer) -> None:
        try:
            await asyncio.wait_for(client.stop(), STOP_TIMEOUT_S)
        except TimeoutError:
            log.warning(
                "%s did not stop in %.0f s; abandoned",
                type(client).__name__,
                STOP_TIMEOUT_S,
                extra={"fields": {"group": self.group}},
            )
        except Exception as exc:
            log.warning("%s stopped with an error: %s", type(client).__name__, exc)

    async def run(self) -> None:
        """Poll, write, commit until stop(); start() first.

        Stages overlap: while the sink writes batch N (and Kafka takes a commit), this process polls
        and decodes batch N+1 (the sink's server works on another core meanwhile). Writes stay in
        poll order; commits, of written offsets only, stay in order too.
        """
        assert self.consumer is not None
        try:
            while not self._stopping.is_set():
                try:
                    polled = await self.consumer.getmany(timeout_ms=500, max_records=self.max_records)
                except KafkaError as exc:
                    log.warning("poll failed, retrying: %s", exc, extra={"fields": {"group": self.group}})
                    await asyncio.sleep(0.5)
                    continue
                if not polled:
                    self._start_commit()  # the topic ran dry: commit what was written
                    continue
                if self._stopping.is_set():  # a batch polled while stopping is left uncommitted
                    continue
                # Records of erased viewers are not decoded; their offsets still count as written.
                kept = await self._without_erased(polled) if self.tombstones is not None else polled
                decoded = self.decode(kept)
                if self._writing is not None:
                    await self._writing
                self._writing = asyncio.create_task(self._finish(polled, *decoded))
                await _let_requests_out()
        finally:
            await self.settle()

    async def _without_erased(self, polled: Polled) -> Polled:
        assert self.tombstones is not None
        try:
            await self.tombstones.refresh()
        except Exception as exc:  # keep the last set known; the next poll retries
            log.warning("tombstones not refreshed: %s", exc)
        if not self.tombstones:
            return polled
        erased = self.tombstones.erased
        kept = {tp: [r for r in records if not erased(r)] for tp, records in polled.items()}
        return {tp: records for tp, records in kept.items() if records}

    async def settle(self) -> None:
        """Let the write in flight finish (bounded), then commit everything written."""
        if self._writing is not None:
            with contextlib.suppress(Exception, asyncio.CancelledError):
                await asyncio.wait_for(asyncio.shield(self._writing), 5)
        self._start_commit()
        if self._committing is not None:
            with contextlib.suppress(Exception, asyncio.CancelledError):
                await asyncio.wait_for(asyncio.shield(self._committing), 5)

    async def handle(self, polled: Polled) -> None:
        """Decode, write and commit one polled batch."""
        await self._finish(polled, *self.decode(polled))
        await self.settle()

    def decode(self, polled: Polled) -> tuple[list[dict[str, Any]] | Prepared, list[Refused]]:
        """The events to write (or a PollSink's prepared batch), and the records to dead-letter with their error."""
        if self.reads:
            return self.sink.read(polled)  # type: ignore[attr-defined, no-any-return]
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
                if isinstance(checked, Rejection):
                    refused.append((tp, record, checked.message))
                    continue
                checked["_topic"], checked["_partition"], checked["_offset"] = topic, partition, record.offset
                batch.append(checked)
        return batch, refused

    async def _finish(
        self, polled: Polled, batch: list[dict[str, Any]] | Prepared, refused: list[Refused]
    ) -> None:
        """Dead-letter, write, and commit when due (COMMIT_EVERY_S); the commit goes out on its own:
        the next write need not wait for the broker's answer. Runs as a task of its own: what it logs
        carries the sink and the batch's positions (and a record's event_id where one is handled)."""
        with bound(sink=self.sink.name, batch=_positions(polled)):
            for tp, record, error in refused:
                await self.dead_letter(tp, record.offset, record.key, record.value, error)
            if batch:
                await self._write(batch)
            self._written.update({tp: records[-1].offset + 1 for tp, records in polled.items() if records})
            self.refresh_lag(polled)
            if time.monotonic() - self._committed_at >= COMMIT_EVERY_S:
                self._start_commit()

    def _start_commit(self) -> None:
        """Commit the written offsets, after the commit before it (commits stay in order)."""
        if self._written:
            offsets, self._written = self._written, {}
            self._committed_at = time.monotonic()
            self._committing = asyncio.create_task(self._commit_after(self._committing, offsets))

    async def _commit_after(
        self, previous: asyncio.Task[None] | None, offsets: dict[TopicPartition, int]
    ) -> None:
        if previous is not None:
            with contextlib.suppress(Exception):
                await previous
        await self._commit(offsets)

    async def _write(self, batch: list[dict[str, Any]] | Prepared) -> None:
        """Write, retrying failures that look transient; on any other failure write the events one
        by one and dead-letter those that still fail, so the partition moves on."""
        sink = self.sink
        try:
            if isinstance(batch, list):
                await self._retrying(sink.write, batch)
            else:
                assert isinstance(sink, PollSink)
                await self._retrying(sink.apply, batch)
        except Exception as exc:
            if _transient(exc):  # still unavailable as the runner stops: nothing is committed
                raise
            events = batch if isinstance(batch, list) else batch.events()
            if len(events) == 1 and not self.reads:
                await self._dead_letter_event(events[0], exc)
                return
            log.warning("sink %s refused a batch, narrowing down: %s", self.sink.name, exc)
            for event in events:
                with bound(event_id=event.get("event_id")):
                    try:
                        await self._retrying(self.sink.write, [event])
                    except Exception as single:
                        if _transient(single):
                            raise
                        await self._dead_letter_event(event, single)

    async def _retrying(self, write: Any, batch: list[dict[str, Any]] | Prepared) -> None:
        delay = 0.2
        while True:
            try:
                await write(batch)
                SINK_EVENTS.labels(self.sink.name, "written").inc(len(batch))
                self.processed += len(batch)
                return
            except Exception as exc:
                if not _transient(exc) or self._stopping.is_set():
                    raise
                log.warning("sink %s unavailable, retrying: %s", self.sink.name, exc)
                await asyncio.sleep(delay)
                delay = min(delay * 2, 5.0)

    async def _dead_letter_event(self, event: dict[str, Any], exc: BaseException) -> None:
        value = orjson.dumps({k: v for k, v in event.items() if not k.startswith("_")})
        await self.dead_letter(
            TopicPartition(event["_topic"], event["_partition"]),
            event["_offset"],
            event["viewer_id"].encode(),
            value,
            f"{type(exc).__name__}: {exc}",
        )

    async def dead_letter(
        self, tp: TopicPartition, offset: int, key: bytes | None, value: bytes | None, error: str
    ) -> None:
        assert self.dead_letters is not None
        text = (value or b"").decode("utf-8", errors="replace")
        letter = {
            "error": error,
            "topic": tp.topic,
            "partition": tp.partition,
            "offset": offset,
            "value": text,
            "sink": self.sink.name,
        }
        await self.dead_letters.send_and_wait(
            self.settings.topic(DEAD_LETTERS), orjson.dumps(letter), key=key
        )
        SINK_EVENTS.labels(self.sink.name, "dead_lettered").inc()
        with bound(event_id=_event_id(value)):
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
