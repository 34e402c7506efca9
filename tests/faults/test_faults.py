"""kill -9 and restart, in turn, each moving part of a running deployment under traffic: no accepted
event or verified order is lost, none is counted twice, the feed never answers 5xx (`degraded: true` is allowed), and
everything is back within a bounded time. Figures: docs/reliability.md (bench/bench_faults.py)."""

from __future__ import annotations

import pytest

from tests.faults.scenarios import SCENARIOS, FaultResult
from tests.faults.stack import FaultStack

pytestmark = [pytest.mark.slow, pytest.mark.timeout(300)]
RECOVERY_BOUND_S = 120.0


def _assert_recovered(result: FaultResult) -> None:
    print(result.as_dict())
    assert result.accepted > 0, "no traffic was accepted"
    assert result.lost == 0, result
    assert result.duplicated == 0, result
    assert result.live_missing == 0, result
    assert result.feed_5xx == 0, result
    assert result.feed_requests > 0
    assert result.orders > 0, "no order was recorded"
    assert result.orders_lost == result.orders_duplicated == result.orders_unattributed == 0, result
    assert result.recovery_s < RECOVERY_BOUND_S, result


async def test_kafka_broker_kill_loses_no_accepted_event(fault_stack: FaultStack) -> None:
    result = await SCENARIOS["kafka"](fault_stack)
    _assert_recovered(result)
    assert result.ingest_retries > 0, "the broker outage was not observed by ingest"


async def test_redis_kill_keeps_the_feed_serving_and_counts_each_event_once(fault_stack: FaultStack) -> None:
    result = await SCENARIOS["redis"](fault_stack)
    _assert_recovered(result)
    assert result.feed_degraded > 0, "the feed never said it was degraded while Redis was down"


async def test_postgres_kill_during_archive_writes_loses_nothing(fault_stack: FaultStack) -> None:
    _assert_recovered(await SCENARIOS["postgres"](fault_stack))


async def test_worker_kill_mid_batch_counts_nothing_twice(fault_stack: FaultStack) -> None:
    _assert_recovered(await SCENARIOS["worker"](fault_stack))


async def test_api_process_kill_under_load_loses_no_accepted_event(fault_stack: FaultStack) -> None:
    result = await SCENARIOS["api"](fault_stack)
    _assert_recovered(result)
    assert result.failovers > 0, "no client noticed the API process die"
