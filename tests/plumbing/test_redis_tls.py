"""Redis over TLS (managed Redis services speak only TLS): both clients and the whole API on a
redis-server started with --tls-port and certificates made by the test."""

from __future__ import annotations

import asyncio
import secrets
from dataclasses import replace

import pytest
from redis.exceptions import ConnectionError as RedisConnectionError

from roomfeed.auth import sign_viewer_token
from roomfeed.redis_client import create_redis
from roomfeed.redis_lane import RedisLane
from roomfeed.settings import Settings
from tests.feed.conftest import Market, new_operator_key, running_app, start_session
from tests.support import PrivateServers, make_test_certificates, world_readable_tempdir

pytestmark = [pytest.mark.timeout(120)]


async def test_the_api_serves_the_feed_on_a_tls_only_redis(
    settings: Settings, private_servers: PrivateServers
) -> None:
    tls = make_test_certificates(world_readable_tempdir("rf-tls-"))
    server = private_servers.redis(tls=tls)
    await asyncio.to_thread(server.start)
    await asyncio.to_thread(server.wait_ready)
    url = server.url()
    assert url.startswith("rediss://")
    private = replace(settings, redis_url=url, kafka_prefix=f"ttls{secrets.token_hex(3)}.")

    lane = RedisLane(url)
    try:
        assert await lane.call("PING") == b"PONG"
        pipe = lane.pipeline()
        pipe.execute_command("SET", "rf:tls:probe", "1").execute_command("GET", "rf:tls:probe")
        assert (await pipe.execute())[1] == b"1"
    finally:
        await lane.close()
    plain = RedisLane(url.replace("rediss://", "redis://"))
    with pytest.raises(RedisConnectionError):  # the port speaks only TLS
        await plain.call("PING")
    await plain.close()

    operator = {"Authorization": f"Bearer {await new_operator_key(private)}"}
    async with running_app(private) as client:
        ready = await client.get("/readyz")
        assert ready.json() == {"status": "ready", "checks": {"postgres": "ok", "redis": "ok", "kafka": "ok"}}
        await Market(client, operator).populate(merchants=3, rooms_each=2, categories=("food", "home"))
        viewer = "v-tls"
        headers = {"Authorization": f"Bearer {sign_viewer_token(private.viewer_token_secret, viewer)}"}
        session = await start_session(client, headers, viewer, count=2)
        page = await client.get(f"/v1/sessions/{session['session_id']}/feed?count=3", headers=headers)
        assert page.status_code == 200, page.text
        assert page.json()["degraded"] is False and page.json()["rooms"]
    redis = create_redis(private)
    try:
        assert await redis.dbsize() > 0  # redis-py over TLS reads what the API wrote (live index, session)
    finally:
        await redis.aclose()


async def test_a_tls_redis_whose_certificate_is_not_trusted_is_refused(
    private_servers: PrivateServers,
) -> None:
    tls = make_test_certificates(world_readable_tempdir("rf-tls-"))
    stranger = make_test_certificates(world_readable_tempdir("rf-tls-other-"))
    server = private_servers.redis(tls=tls)
    await asyncio.to_thread(server.start)
    await asyncio.to_thread(server.wait_ready)
    lane = RedisLane(server.url().replace(str(tls.ca), str(stranger.ca)))
    with pytest.raises(RedisConnectionError, match="cannot connect"):
        await lane.call("PING")
    await lane.close()
