"""roomfeed on a Kafka cluster: three KRaft brokers (replication factor 3, min.insync.replicas 2),
two API processes and two workers, all real processes; during ingest the broker leading the events
topic's first partition is killed with SIGKILL and started again: no accepted event lost, none
applied twice, no feed 5xx. (Redis is one server here: Redis Cluster support is not built yet.)"""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from events.vocabulary import VIEWER_EVENTS
from roomfeed.settings import Settings
from tests.faults.scenarios import kafka_cluster_broker_during_ingest, topic_layout
from tests.faults.stack import FaultStack
from tests.support import world_readable_tempdir

pytestmark = [pytest.mark.slow, pytest.mark.timeout(420)]


@pytest.fixture
async def cluster_stack(base_settings: Settings) -> AsyncIterator[FaultStack]:
    stack = FaultStack(
        base_settings,
        Path(world_readable_tempdir("rf-cluster-")),
        api_processes=2,
        workers=2,
        kafka_brokers=3,
    )
    try:
        await stack.start()
        yield stack
    finally:
        await stack.close()


async def test_a_kafka_broker_killed_in_a_cluster_loses_and_repeats_nothing(
    cluster_stack: FaultStack,
) -> None:
    layout = await topic_layout(cluster_stack, cluster_stack.settings.topic(VIEWER_EVENTS))
    assert layout["replicas"] == [3, 3, 3] and layout["min_insync_replicas"] == 2, layout
    result = await kafka_cluster_broker_during_ingest(cluster_stack)
    print(result.as_dict())
    assert result.accepted > 0
    assert result.lost == 0, result
    assert result.duplicated == 0, result
    assert result.live_missing == 0, result
    assert result.feed_5xx == 0, result
    assert result.feed_requests > 0
