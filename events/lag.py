"""Consumer lag as the API's /metrics reports it: committed offsets of each sink's group vs end offsets.

Read from the broker (not from a worker's memory), so it is right whichever worker holds a
partition, and it shows a group that has stopped entirely.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging

from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient

from events.consumer import CONSUMER_LAG
from events.vocabulary import VIEWER_EVENTS
from roomfeed.settings import Settings

log = logging.getLogger("roomfeed.events.lag")

SINK_GROUPS = ("sink-realtime", "sink-archive", "sink-alliance")


class ConsumerLag:
    def __init__(
        self, settings: Settings, groups: tuple[str, ...] = SINK_GROUPS, timeout: float = 2.0
    ) -> None:
        self.settings = settings
        self.groups = groups
        self.timeout = timeout
        self._admin: AIOKafkaAdminClient | None = None
        self._offsets: AIOKafkaConsumer | None = None

    async def _clients(self) -> tuple[AIOKafkaAdminClient, AIOKafkaConsumer]:
        if self._admin is None or self._offsets is None:
            admin = AIOKafkaAdminClient(
                bootstrap_servers=self.settings.kafka_bootstrap, request_timeout_ms=2000
            )
            offsets = AIOKafkaConsumer(
                bootstrap_servers=self.settings.kafka_bootstrap, group_id=None, request_timeout_ms=2000
            )
            await admin.start()
            await offsets.start()
            self._admin, self._offsets = admin, offsets
        return self._admin, self._offsets

    async def measure(self) -> dict[tuple[str, str, int], int]:
        """(group, topic, partition) → end offset minus committed offset (all of it when never committed)."""
        admin, offsets = await self._clients()
        topic = self.settings.topic(VIEWER_EVENTS)
        partitions = offsets.partitions_for_topic(topic)
        if not partitions:
            await offsets._client.force_metadata_update()  # noqa: SLF001
            partitions = offsets.partitions_for_topic(topic) or set()
        tps = [TopicPartition(topic, p) for p in sorted(partitions)]
        if not tps:
            return {}
        ends = await offsets.end_offsets(tps)
        lag: dict[tuple[str, str, int], int] = {}
        for name in self.groups:
            group = self.settings.group(name)
            committed = await admin.list_consumer_group_offsets(group, partitions=tps)
            for tp in tps:
                meta = committed.get(tp)
                done = meta.offset if meta is not None and meta.offset >= 0 else 0
                lag[(group, tp.topic, tp.partition)] = max(0, ends[tp] - done)
        return lag

    async def refresh(self) -> None:
        try:
            measured = await asyncio.wait_for(self.measure(), self.timeout)
        except Exception as exc:
            log.warning("consumer lag unavailable: %s", exc)
            await self.close()
            return
        for (group, topic, partition), value in measured.items():
            CONSUMER_LAG.labels(group, topic, str(partition)).set(value)

    async def close(self) -> None:
        if self._admin is not None:
            with contextlib.suppress(Exception):
                await self._admin.close()
        if self._offsets is not None:
            # aiokafka 0.14: stopping a group-less consumer can surface its own cancelled reset task.
            with contextlib.suppress(Exception, asyncio.CancelledError):
                await self._offsets.stop()
        self._admin = self._offsets = None
