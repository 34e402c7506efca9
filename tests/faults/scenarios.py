"""The fault scenarios, shared by the fault tests and `bench/bench_faults.py`.

Each scenario runs ingest, feed and order traffic (viewers landing from a code, then the merchant's
order system reporting their verified orders) on a FaultStack, kill -9s one thing in the middle of it,
starts it again, stops the traffic, and waits for full recovery: every accepted event archived once
and counted once in the live stats, every accepted order recorded once and attributed once, every
API process ready. The result carries the figures the
suite reports (docs/reliability.md): accepted, lost, duplicated, feed_5xx, recovery_s.
"""

from __future__ import annotations

import asyncio
import secrets
import time
from collections.abc import Awaitable, Callable
from dataclasses import asdict, dataclass
from typing import Any

import httpx

from devtools.kafka import KafkaCluster
from events.keys import PREFIX as EVENTS_PREFIX
from events.vocabulary import VIEWER_EVENTS
from tests.faults.stack import FaultStack, Traffic

DOWN_SECONDS = 3.0
WARMUP_SECONDS = 3.0
AFTER_SECONDS = 3.0


@dataclass
class FaultResult:
    name: str
    accepted: int
    lost: int
    duplicated: int
    feed_5xx: int
    recovery_s: float
    live_missing: int
    feed_requests: int
    feed_degraded: int
    ingest_retries: int
    failovers: int
    orders: int = 0
    orders_lost: int = 0
    orders_duplicated: int = 0
    orders_unattributed: int = 0

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


async def _run(
    stack: FaultStack,
    name: str,
    kill: Callable[[], Awaitable[None]],
    restart: Callable[[], Awaitable[None]],
    ingesters: int = 2,
    swipers: int = 2,
) -> FaultResult:
    tag = secrets.token_hex(3)
    traffic = Traffic()
    stop = asyncio.Event()
    limits = httpx.Limits(max_connections=20, max_keepalive_connections=10)
    async with httpx.AsyncClient(timeout=httpx.Timeout(10, connect=1), limits=limits) as client:
        rooms = await stack.live_rooms(client)
        tasks = [
            asyncio.create_task(stack.ingest(client, traffic, rooms, stop, f"{tag}i{i}"))
            for i in range(ingesters)
        ]
        tasks += [
            asyncio.create_task(stack.swipe(client, traffic, stop, f"{tag}s{i}")) for i in range(swipers)
        ]
        tasks.append(asyncio.create_task(stack.order(client, traffic, stop, f"{tag}o")))
        try:
            await asyncio.sleep(WARMUP_SECONDS)
            await kill()
            await asyncio.sleep(DOWN_SECONDS)
            restarted_at = time.monotonic()
            await restart()
            await asyncio.sleep(AFTER_SECONDS)
        finally:
            stop.set()
            done = await asyncio.gather(*tasks, return_exceptions=True)
        errors = [d for d in done if isinstance(d, BaseException)]
        assert not errors, errors
        for index in range(len(stack.api)):
            await stack.wait_api_ready(index)
        figures = await stack.settle(rooms, traffic.accepted, pending_orders=traffic.orders)
    recovery = time.monotonic() - restarted_at
    return FaultResult(
        name=name,
        accepted=len(traffic.accepted),
        lost=figures["lost"],
        duplicated=figures["duplicated"],
        feed_5xx=traffic.feed_5xx,
        recovery_s=round(recovery, 2),
        live_missing=figures["live_missing"],
        feed_requests=sum(traffic.feed_statuses.values()),
        feed_degraded=traffic.feed_degraded,
        ingest_retries=sum(n for s, n in traffic.ingest_statuses.items() if s != 202),
        failovers=traffic.connection_failovers,
        orders=len(traffic.orders),
        orders_lost=figures["orders_lost"],
        orders_duplicated=figures["orders_duplicated"],
        orders_unattributed=figures["orders_unattributed"],
    )


async def kafka_broker_during_ingest(stack: FaultStack) -> FaultResult:
    async def kill() -> None:
        stack.kafka.kill()

    return await _run(stack, "kafka broker during ingest", kill, lambda: stack.restart_server(stack.kafka))


async def redis_during_feed_traffic(stack: FaultStack) -> FaultResult:
    async def kill() -> None:
        stack.redis_server.kill()

    return await _run(
        stack,
        "redis during feed traffic",
        kill,
        lambda: stack.restart_server(stack.redis_server),
        ingesters=1,
        swipers=3,
    )


async def postgres_during_archive_writes(stack: FaultStack) -> FaultResult:
    async def kill() -> None:
        stack.pg.kill()

    return await _run(stack, "postgresql during archive writes", kill, lambda: stack.restart_server(stack.pg))


async def worker_mid_batch(stack: FaultStack) -> FaultResult:
    assert stack.worker is not None
    worker = stack.worker

    async def kill() -> None:
        worker.kill()

    async def restart() -> None:
        worker.start()

    return await _run(stack, "worker in the middle of a batch", kill, restart, ingesters=3, swipers=1)


async def api_process_under_load(stack: FaultStack) -> FaultResult:
    victim = stack.api[0]

    async def kill() -> None:
        victim.kill()

    async def restart() -> None:
        victim.start()
        await stack.wait_api_ready(0)

    return await _run(stack, "an API process under load", kill, restart, ingesters=3, swipers=2)


async def topic_layout(stack: FaultStack, topic: str) -> dict[str, Any]:
    """The topic's partitions' leaders and replicas, and its min.insync.replicas (describe, on the cluster)."""
    from aiokafka.admin import AIOKafkaAdminClient
    from aiokafka.admin.config_resource import ConfigResource, ConfigResourceType

    admin = AIOKafkaAdminClient(bootstrap_servers=stack.settings.kafka_bootstrap, request_timeout_ms=10_000)
    await admin.start()
    try:
        (described,) = await admin.describe_topics([topic])
        configs = await admin.describe_configs([ConfigResource(ConfigResourceType.TOPIC, topic)])
    finally:
        await admin.close()
    entries = {entry[0]: entry[1] for entry in configs[0].resources[0][4]}
    return {
        "leaders": [p["leader"] for p in described["partitions"]],
        "replicas": [len(p["replicas"]) for p in described["partitions"]],
        "min_insync_replicas": int(entries["min.insync.replicas"]),
    }


async def kafka_cluster_broker_during_ingest(
    stack: FaultStack, *, redis_failover: bool = False
) -> FaultResult:
    """kill -9 the broker that leads the events topic's first partition (a leader election under load);
    with `redis_failover` (a Redis Cluster), at the same moment fail over the Redis master serving the
    events' slot ({ev}: the realtime sink's writes, the feed's reads of presence and recent visits)."""
    assert isinstance(stack.kafka, KafkaCluster)
    assert stack.redis_cluster is not None or not redis_failover
    cluster, redis_cluster = stack.kafka, stack.redis_cluster
    victim = cluster.brokers[0]

    async def kill() -> None:
        nonlocal victim
        layout = await topic_layout(stack, stack.settings.topic(VIEWER_EVENTS))
        victim = cluster.brokers[layout["leaders"][0] - 1]
        victim.kill()
        if redis_cluster is not None and redis_failover:
            master = redis_cluster.master_of(f"{EVENTS_PREFIX}failover")
            await asyncio.to_thread(redis_cluster.fail_over, master)

    name = "a kafka broker of three" + (" killed and a redis master failed over" if redis_failover else "")
    return await _run(stack, f"{name} during ingest", kill, lambda: stack.restart_server(victim), ingesters=3)


async def kafka_broker_killed_and_redis_master_failed_over(stack: FaultStack) -> FaultResult:
    """On a Kafka cluster and a Redis Cluster at once: a broker killed and a master failed over."""
    return await kafka_cluster_broker_during_ingest(stack, redis_failover=True)


SCENARIOS: dict[str, Callable[[FaultStack], Awaitable[FaultResult]]] = {
    "kafka": kafka_broker_during_ingest,
    "redis": redis_during_feed_traffic,
    "postgres": postgres_during_archive_writes,
    "worker": worker_mid_batch,
    "api": api_process_under_load,
}
