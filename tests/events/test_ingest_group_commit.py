"""Concurrent ingest requests share a partition's batch (a group commit) instead of racing for the
producer's one waiting batch per partition, which refused them with KafkaTimeoutError (well within the
ack deadline) once the broker round trip was slow. The producer here keeps aiokafka's rule (one batch per
partition waits to leave; `send_batch` waits for that slot up to its timeout, then raises)."""

from __future__ import annotations

import asyncio
from typing import Any

from aiokafka.errors import KafkaTimeoutError

from events.ingest import Ingest
from events.vocabulary import ENTER
from tests.events.conftest import NO_OWNERS, make_event


class _Batch:
    def __init__(self, room: int) -> None:
        self.records: list[tuple[bytes, bytes]] = []
        self.room = room

    def append(self, *, key: bytes, value: bytes, timestamp: int | None) -> object | None:
        if len(self.records) >= self.room:
            return None
        self.records.append((key, value))
        return object()


class OneSlotProducer:
    """aiokafka's accumulator, in small: a partition's batch leaves `rtt` after it was added (one
    produce request at a time), is acked `rtt` later; a batch waits at most `slot_timeout` for the slot."""

    def __init__(self, partitions: int = 3, rtt: float = 0.02, slot_timeout: float = 0.3) -> None:
        self.partitions, self.rtt, self.slot_timeout = partitions, rtt, slot_timeout
        self.waiting: dict[int, asyncio.Event] = {}
        self.batches: list[int] = []

    async def partitions_for(self, topic: str) -> set[int]:
        return set(range(self.partitions))

    def create_batch(self) -> _Batch:
        return _Batch(room=10_000)

    async def send_batch(self, batch: _Batch, topic: str, *, partition: int) -> asyncio.Future[Any]:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.slot_timeout
        while (left := self.waiting.get(partition)) is not None:
            if loop.time() >= deadline:
                raise KafkaTimeoutError()
            try:
                await asyncio.wait_for(left.wait(), deadline - loop.time())
            except TimeoutError:
                raise KafkaTimeoutError() from None
        left = self.waiting[partition] = asyncio.Event()
        acked = loop.create_future()
        self.batches.append(len(batch.records))

        def leave() -> None:
            del self.waiting[partition]
            left.set()
            loop.call_later(self.rtt, acked.set_result, None)

        loop.call_later(self.rtt, leave)
        return acked


async def test_concurrent_requests_share_batches_instead_of_racing_for_the_slot() -> None:
    producer = OneSlotProducer()
    ingest = Ingest(producer, NO_OWNERS, NO_OWNERS, topic="t", ack_timeout=2.5)
    viewers = [f"v{i}" for i in range(300)]
    results = await asyncio.gather(
        *(ingest.submit([make_event(ENTER, v, "room_1")], v) for v in viewers), return_exceptions=True
    )
    failed = [r for r in results if isinstance(r, BaseException)]
    assert not failed, failed[:3]
    assert sum(r.accepted for r in results if not isinstance(r, BaseException)) == 300
    assert sum(producer.batches) == 300
    # 300 requests over 3 partitions, each partition's batches one rtt apart: a handful of batches.
    assert len(producer.batches) < 30, len(producer.batches)


async def test_a_refused_batch_fails_every_request_in_it_and_the_next_ones_go_on() -> None:
    producer = OneSlotProducer(partitions=1, slot_timeout=0.0)

    original = producer.send_batch
    calls = 0

    async def refuse_first(batch: _Batch, topic: str, *, partition: int) -> asyncio.Future[Any]:
        nonlocal calls
        calls += 1
        if calls == 1:
            raise KafkaTimeoutError()
        return await original(batch, topic, partition=partition)

    producer.send_batch = refuse_first  # type: ignore[method-assign]  # the broker refuses once
    ingest = Ingest(producer, NO_OWNERS, NO_OWNERS, topic="t", ack_timeout=2.5)
    first = await asyncio.gather(ingest.submit([make_event(ENTER, "a", "r")], "a"), return_exceptions=True)
    assert isinstance(first[0], BaseException) and "Kafka refused" in str(first[0])
    again = await ingest.submit([make_event(ENTER, "a", "r")], "a")
    assert again.accepted == 1
