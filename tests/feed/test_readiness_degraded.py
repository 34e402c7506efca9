"""Readiness stays up while Redis is down, and the feed answers degraded meanwhile (a real redis-server, killed)."""

from __future__ import annotations

import asyncio
import secrets
from dataclasses import replace

import pytest

from feed.http import FeedTuning
from roomfeed.assembly import Tuning
from roomfeed.auth import sign_viewer_token
from roomfeed.db import migrate
from roomfeed.settings import Settings
from tests.feed.conftest import Market, new_operator_key, running_app, start_session
from tests.support import PrivateServers

pytestmark = [pytest.mark.timeout(120)]


async def test_readiness_stays_up_while_redis_is_down_and_the_feed_answers_degraded(
    settings: Settings, private_servers: PrivateServers
) -> None:
    redis = private_servers.redis()
    await asyncio.to_thread(redis.start)
    await asyncio.to_thread(redis.wait_ready)
    private = replace(settings, redis_url=redis.url(), kafka_prefix=f"tready{secrets.token_hex(3)}.")
    await migrate(private.database_url)
    operator = {"Authorization": f"Bearer {await new_operator_key(private)}"}
    async with running_app(private, Tuning(feed=FeedTuning(heat_refresh_s=0.2, config_poll_s=0.5))) as client:
        await Market(client, operator).populate(merchants=4, rooms_each=3, categories=("food", "home"))
        viewer = "v-ready"
        headers = {"Authorization": f"Bearer {sign_viewer_token(private.viewer_token_secret, viewer)}"}
        session = await start_session(client, headers, viewer, count=3)
        ready = await client.get("/readyz")
        assert ready.status_code == 200 and ready.json()["status"] == "ready"

        await asyncio.to_thread(redis.kill)
        for _ in range(3):
            probe = await client.get("/readyz")
            assert probe.status_code == 200, probe.text
            assert probe.json() == {
                "status": "degraded",
                "checks": {"postgres": "ok", "redis": "down", "kafka": "ok"},
            }
            page = await client.get(f"/v1/sessions/{session['session_id']}/feed?count=3", headers=headers)
            assert page.status_code == 200, page.text
            assert page.json()["degraded"] is True and page.json()["rooms"]
        assert (await client.get("/healthz")).status_code == 200
