"""Kafka clients: producer and consumer factories with explicit start/stop, and topic set-up.

Nothing connects at import time. Topic and group names carry `settings.kafka_prefix`, so test
runs and deployments can share a broker. Producers are idempotent with acks=all: a 202 from
ingest means the broker has the event durably. Topics are created with
`settings.kafka_replication_factor` copies and `min.insync.replicas` = `settings.kafka_min_insync_replicas`,
so on a cluster (3 and 2) acks=all means two brokers have the event before ingest answers 202, and a
retried send after a leader change is not written twice (idempotence: producer id and sequence).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Mapping
from typing import Any

import orjson
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import TopicAlreadyExistsError

from roomfeed.settings import Settings

log = logging.getLogger("roomfeed.kafka")


def encode(value: Any) -> bytes:
    return orjson.dumps(value)


def make_producer(settings: Settings, **overrides: Any) -> AIOKafkaProducer:
    options: dict[str, Any] = {
        "bootstrap_servers": settings.kafka_bootstrap,
        "acks": "all",
        "enable_idempotence": True,
        "compression_type": "lz4",
        "linger_ms": 5,
        "max_batch_size": 256 * 1024,
        "request_timeout_ms": 10_000,
        "retry_backoff_ms": 100,
    }
    options.update(overrides)
    return AIOKafkaProducer(**options)


def make_consumer(settings: Settings, group: str | None, *topics: str, **overrides: Any) -> AIOKafkaConsumer:
    """A consumer that commits only when told to (sinks commit after they have written)."""
    options: dict[str, Any] = {
        "bootstrap_servers": settings.kafka_bootstrap,
        "group_id": settings.group(group) if group else None,
        "enable_auto_commit": False,
        "auto_offset_reset": "earliest",
        "session_timeout_ms": 10_000,
        "heartbeat_interval_ms": 1_000,
        "max_poll_records": 2_000,
        "fetch_max_wait_ms": 100,
    }
    options.update(overrides)
    return AIOKafkaConsumer(*(settings.topic(t) for t in topics), **options)


async def ensure_topics(settings: Settings, topics: Mapping[str, int]) -> None:
    """Create the named topics (unprefixed name → partitions) when missing, replicated as settings say.

    An existing topic is left as it is (a replication factor is changed by a partition reassignment,
    an operator's step: docs/deploy.md)."""
    admin = AIOKafkaAdminClient(bootstrap_servers=settings.kafka_bootstrap, request_timeout_ms=10_000)
    await admin.start()
    try:
        existing = set(await admin.list_topics())
        wanted = [
            NewTopic(
                settings.topic(name),
                num_partitions=partitions,
                replication_factor=settings.kafka_replication_factor,
                topic_configs={"min.insync.replicas": str(settings.kafka_min_insync_replicas)},
            )
            for name, partitions in topics.items()
            if settings.topic(name) not in existing
        ]
        if wanted:
            with contextlib.suppress(TopicAlreadyExistsError):
                await admin.create_topics(wanted)
    finally:
        await admin.close()


async def ensure_topics_patiently(
    settings: Settings, topics: Mapping[str, int], stop: asyncio.Event | None = None, max_delay: float = 10.0
) -> bool:
    """`ensure_topics`, retried with backoff while Kafka is unreachable (a process may start before its
    brokers, or while one restarts); False only when `stop` is set first."""
    delay = 0.5
    while True:
        try:
            await ensure_topics(settings, topics)
            return True
        except Exception as exc:
            log.warning("cannot create topics yet (%s); retrying in %.1f s", exc, delay)
        if stop is None:
            await asyncio.sleep(delay)
        else:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), delay)
            if stop.is_set():
                return False
        delay = min(delay * 2, max_delay)


async def drop_prefixed_topics(bootstrap: str, prefix: str) -> list[str]:
    """Delete every topic whose name starts with `prefix` (a test or benchmark run's own); returns them.

    A run gets a prefix of its own, so its topics would otherwise pile up on the broker. Refuses an
    empty prefix: that would be every topic of every deployment sharing the broker."""
    if not prefix:
        raise ValueError("refusing to delete topics without a prefix")
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap, request_timeout_ms=10_000)
    await admin.start()
    try:
        mine = [topic for topic in await admin.list_topics() if topic.startswith(prefix)]
        if mine:
            await admin.delete_topics(mine)
        return mine
    finally:
        await admin.close()


async def kafka_answers(producer: AIOKafkaProducer, timeout: float = 1.0) -> bool:
    """True when a broker answers a metadata request now (used by /readyz)."""
    try:
        await asyncio.wait_for(producer.client.fetch_all_metadata(), timeout)
        return True
    except Exception:
        return False
