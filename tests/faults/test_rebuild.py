"""Redis loses everything (FLUSHALL): the feed keeps serving (degraded, never 5xx) while the live index
is rebuilt from PostgreSQL by `roomfeed rebuild` and the live stats by replaying the Kafka topic from
offset 0 through the realtime sink; afterwards the live stats equal a recount of the archive.

The replay runs with the worker's realtime sink stopped: the sink's per-partition watermark would
otherwise mark every record below the worker's first new offset as already applied (docs/reliability.md).
"""

from __future__ import annotations

import asyncio
import secrets
import subprocess
import sys
import time

import httpx
import pytest

from events.realtime import RealtimeSink
from events.rebuild import replay
from roomfeed.settings import REPO_ROOT
from tests.faults.stack import FaultStack, Traffic

pytestmark = [pytest.mark.slow, pytest.mark.timeout(300)]


async def _replay_realtime_from_zero(stack: FaultStack, timeout: float = 90) -> float:
    """A fresh consumer group (offset 0) through RealtimeSink, up to the topic's end as it was at the
    start: what `roomfeed rebuild --live-stats` runs (events.rebuild.replay)."""
    assert stack.redis is not None
    return (await replay(stack.settings, RealtimeSink(stack.redis), timeout_s=timeout)).seconds


async def test_redis_flushed_is_rebuilt_while_the_feed_serves(fault_stack: FaultStack) -> None:
    stack = fault_stack
    assert stack.redis is not None and stack.worker is not None
    traffic = Traffic()
    async with httpx.AsyncClient(timeout=10) as client:
        rooms = await stack.live_rooms(client, merchants=2, rooms_each=2)
        stop = asyncio.Event()
        ingest = asyncio.create_task(stack.ingest(client, traffic, rooms, stop, f"rb{secrets.token_hex(2)}"))
        await asyncio.sleep(2)
        stop.set()
        await ingest
        settled = await stack.settle(rooms, traffic.accepted)
        assert settled["lost"] == 0 and settled["live"] == settled["expected"], settled

        feed_traffic, feed_stop = Traffic(), asyncio.Event()
        swiper = asyncio.create_task(
            stack.swipe(client, feed_traffic, feed_stop, f"rbs{secrets.token_hex(2)}")
        )
        try:
            stack.worker.stop()  # the realtime sink pauses for the replay (see the module docstring)
            await stack.redis.flushall()
            await asyncio.sleep(1.5)  # the feed runs on a flushed Redis for a while

            rebuilt_at = time.monotonic()
            done = await asyncio.to_thread(
                subprocess.run,
                [sys.executable, "-m", "roomfeed.cli", "rebuild", "--no-migrate"],
                cwd=REPO_ROOT,
                env=stack.api[0].env,
                capture_output=True,
                text=True,
                timeout=120,
            )
            assert done.returncode == 0, done.stdout + done.stderr
            index_s = time.monotonic() - rebuilt_at
            replay_s = await _replay_realtime_from_zero(stack)
            stack.worker.start()

            # the feed shows live rooms again
            viewer = f"rb_after_{secrets.token_hex(2)}"
            r = await client.post(
                f"{stack.api_urls[0]}/v1/sessions",
                headers=stack.viewer_headers(viewer),
                json={"viewer_id": viewer, "entry": {}, "count": 10},
            )
            assert r.status_code == 201 and r.json()["rooms"], r.text
            await asyncio.sleep(1)
        finally:
            feed_stop.set()
            await swiper
        # the worker catches up on what arrived during the replay: counted once, archive and live agree
        after = await stack.settle(rooms, traffic.accepted)
    print(
        {
            "live_index_rebuild_s": round(index_s, 2),
            "live_stats_replay_s": round(replay_s, 2),
            "feed_requests_meanwhile": sum(feed_traffic.feed_statuses.values()),
            "feed_degraded": feed_traffic.feed_degraded,
            "feed_5xx": feed_traffic.feed_5xx,
        }
    )
    assert feed_traffic.feed_5xx == 0, feed_traffic.feed_statuses
    assert sum(feed_traffic.feed_statuses.values()) > 0
    assert after["lost"] == 0 and after["duplicated"] == 0 and after["live_missing"] == 0, after
