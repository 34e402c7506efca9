"""roomfeed on a Kafka cluster and a Redis Cluster at once: three KRaft brokers (replication factor
3, min.insync.replicas 2) and three Redis masters with a replica each (REDIS_URL redis+cluster://),
two API processes and two workers, all real processes; during ingest the broker leading the events
topic's first partition is killed with SIGKILL (and started again) and the Redis master serving
the events' slot is failed over to its replica: no accepted event lost, none applied twice, no
feed 5xx, live stats equal to a recount of the archive."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from events.vocabulary import VIEWER_EVENTS
from roomfeed.settings import Settings
from tests.faults.scenarios import kafka_broker_killed_and_redis_master_failed_over, topic_layout
from tests.faults.stack import FaultStack
from tests.support import world_readable_tempdir

pytestmark = [pytest.mark.slow, pytest.mark.timeout(480)]


@pytest.fixture
async def cluster_stack(base_settings: Settings) -> AsyncIterator[FaultStack]:
    stack = FaultStack(
        base_settings,
        Path(world_readable_tempdir("rf-cluster-")),
        api_processes=2,
        workers=2,
        kafka_brokers=3,
        redis_masters=3,
    )
    try:
        await stack.start()
        yield stack
    finally:
        await stack.close()


async def test_a_broker_killed_and_a_redis_master_failed_over_lose_and_repeat_nothing(
    cluster_stack: FaultStack,
) -> None:
    assert cluster_stack.settings.redis_url.startswith("redis+cluster://")
    layout = await topic_layout(cluster_stack, cluster_stack.settings.topic(VIEWER_EVENTS))
    assert layout["replicas"] == [3, 3, 3] and layout["min_insync_replicas"] == 2, layout
    result = await kafka_broker_killed_and_redis_master_failed_over(cluster_stack)
    print(result.as_dict())
    assert result.accepted > 0
    assert result.lost == 0, result
    assert result.duplicated == 0, result
    assert result.live_missing == 0, result
    assert result.feed_5xx == 0, result
    assert result.feed_requests > 0
    assert result.orders > 0, "no verified order was recorded"
    assert result.orders_lost == result.orders_duplicated == result.orders_unattributed == 0, result
