"""The feed keeps serving when a dependency dies: private PostgreSQL and Redis servers, killed for real."""

from __future__ import annotations

import asyncio
import secrets
from dataclasses import replace
from typing import Any

import httpx
import pytest

from feed.http import FeedTuning
from roomfeed.assembly import Tuning
from roomfeed.auth import sign_viewer_token
from roomfeed.db import migrate
from roomfeed.settings import Settings
from tests.feed.conftest import Market, new_operator_key, running_app, start_session
from tests.support import PrivateServers

pytestmark = [pytest.mark.timeout(180), pytest.mark.slow]


async def _page(
    client: httpx.AsyncClient, headers: dict[str, str], session_id: str, count: int = 5
) -> dict[str, Any]:
    r = await client.get(f"/v1/sessions/{session_id}/feed?count={count}", headers=headers)
    assert r.status_code == 200, r.text
    body: dict[str, Any] = r.json()
    return body


async def test_feed_serves_through_redis_and_postgres_outages(
    settings: Settings, private_servers: PrivateServers
) -> None:
    pg, redis = private_servers.postgres(), private_servers.redis()
    await asyncio.gather(asyncio.to_thread(pg.start), asyncio.to_thread(redis.start))
    await asyncio.gather(asyncio.to_thread(pg.wait_ready), asyncio.to_thread(redis.wait_ready))
    private = replace(
        settings, database_url=pg.url(), redis_url=redis.url(), kafka_prefix=f"tdeg{secrets.token_hex(3)}."
    )
    await migrate(private.database_url)
    operator = {"Authorization": f"Bearer {await new_operator_key(private)}"}
    async with running_app(private, Tuning(feed=FeedTuning(heat_refresh_s=0.2, config_poll_s=0.5))) as client:
        market = Market(client, operator)
        await market.populate(merchants=10, rooms_each=3, categories=("food", "home", "beauty"))
        viewer = "v-degrade"
        headers = {"Authorization": f"Bearer {sign_viewer_token(private.viewer_token_secret, viewer)}"}
        session = await start_session(client, headers, viewer, count=5)
        assert (
            session["degraded"] is False and session["model_version"] == "popularity"
        )  # no model registered
        served = [r["room_id"] for r in session["rooms"]]

        redis.kill()
        for _ in range(3):
            body = await _page(client, headers, session["session_id"])
            assert body["degraded"] is True and body["rooms"]
            served += [r["room_id"] for r in body["rooms"]]
        assert len(served) == len(set(served)), "a room repeated while Redis was down"

        pg.kill()  # both down now: still served from memory
        body = await _page(client, headers, session["session_id"])
        assert body["degraded"] is True and body["rooms"]
        served += [r["room_id"] for r in body["rooms"]]

        redis.start()
        redis.wait_ready()
        await asyncio.sleep(0.3)
        body = await _page(client, headers, session["session_id"])
        served += [r["room_id"] for r in body["rooms"]]
        assert len(served) == len(set(served))


async def test_feed_serves_with_postgres_down(settings: Settings, private_servers: PrivateServers) -> None:
    pg = private_servers.postgres()
    await asyncio.to_thread(pg.start)
    await asyncio.to_thread(pg.wait_ready)
    private = replace(settings, database_url=pg.url(), kafka_prefix=f"tdegpg{secrets.token_hex(3)}.")
    await migrate(private.database_url)
    operator = {"Authorization": f"Bearer {await new_operator_key(private)}"}
    async with running_app(private) as client:
        market = Market(client, operator)
        await market.populate(merchants=4, rooms_each=3, categories=("food", "home"))
        viewer = "v-nopg"
        headers = {"Authorization": f"Bearer {sign_viewer_token(private.viewer_token_secret, viewer)}"}
        pg.kill()
        session = await start_session(client, headers, viewer, count=3)
        body = await _page(client, headers, session["session_id"], 5)
        assert body["rooms"] and not {r["room_id"] for r in body["rooms"]} & {
            r["room_id"] for r in session["rooms"]
        }
