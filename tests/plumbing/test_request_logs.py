"""Logs a person can follow: a real `roomfeed serve` writes JSON lines, and every line one feed request
causes (its start, the feed's own warnings when Redis is gone, the access line) carries that request's id."""

from __future__ import annotations

import asyncio
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest

from roomfeed.auth import create_key, sign_viewer_token
from roomfeed.settings import Settings
from tests.faults.stack import RoomfeedProcess
from tests.support import PrivateServers, free_port, process_env, run_sync

pytestmark = [pytest.mark.timeout(180)]


def _lines(path: Path) -> list[dict[str, Any]]:
    out = []
    for raw in path.read_bytes().splitlines():
        try:
            line = orjson.loads(raw)
        except orjson.JSONDecodeError:
            pytest.fail(f"a log line that is not JSON: {raw[:200]!r}")
        if isinstance(line, dict):
            out.append(line)
    return out


async def _key(settings: Settings) -> str:
    import asyncpg

    pool = await asyncpg.create_pool(settings.database_url, min_size=1, max_size=1)
    try:
        return (await create_key(pool, "operator", None, "logs"))[1]
    finally:
        await pool.close()


async def test_every_line_of_a_feed_request_carries_its_request_id(
    settings: Settings, private_servers: PrivateServers, tmp_path: Path
) -> None:
    redis_server = private_servers.redis()
    redis_server.start()
    redis_server.wait_ready()
    own = replace(settings, redis_url=redis_server.url())
    port = free_port()
    env = {
        **process_env(own, tmp_path / "data"),
        "ROOMFEED_LOG_LEVEL": "DEBUG",
        "ROOMFEED_ACCESS_LOG": "1",
    }
    api = RoomfeedProcess("api", ["serve", "--port", str(port), "--no-migrate"], env, tmp_path)
    operator = {"Authorization": f"Bearer {run_sync(lambda: _key(own))}"}
    api.start()
    base = f"http://127.0.0.1:{port}"
    try:
        async with httpx.AsyncClient(base_url=base, timeout=10) as client:
            deadline = time.monotonic() + 90
            while True:
                assert api.alive(), api.tail()
                assert time.monotonic() < deadline, api.tail()
                try:
                    if (await client.get("/readyz")).status_code == 200:
                        break
                except httpx.HTTPError:
                    pass
                await asyncio.sleep(0.3)
            made = await client.post("/v1/ops/merchants", json={"name": "Log shop"}, headers=operator)
            assert made.status_code == 201, made.text
            merchant = {"Authorization": f"Bearer {made.json()['key']}"}
            room = await client.post(
                "/v1/rooms",
                json={"title": "logs live", "category": "food", "stream_url": "https://cdn.example/l.m3u8"},
                headers=merchant,
            )
            assert room.status_code == 201, room.text
            live = await client.post(f"/v1/rooms/{room.json()['room_id']}/live", headers=merchant)
            assert live.status_code == 200, live.text
            viewer = {"Authorization": f"Bearer {sign_viewer_token(own.viewer_token_secret, 'v-logs')}"}
            started = await client.post("/v1/sessions", json={"viewer_id": "v-logs"}, headers=viewer)
            assert started.status_code == 201, started.text
            session_id = started.json()["session_id"]
            session_request = started.headers["x-request-id"]

            redis_server.kill()  # the feed serves degraded and says why, in the request's own lines
            answer = await client.get(
                f"/v1/sessions/{session_id}/feed", headers={**viewer, "X-Request-ID": "feed-log-check"}
            )
            assert answer.status_code == 200, answer.text
            assert answer.headers["x-request-id"] == "feed-log-check"
            assert answer.json()["degraded"] is True
            await asyncio.sleep(0.5)  # the access line is written after the answer
    finally:
        api.stop()

    lines = _lines(api.log_path)
    mine = [line for line in lines if line.get("request_id") == "feed-log-check"]
    loggers = {line["logger"] for line in mine}
    assert "roomfeed.http" in loggers, mine  # the request's start and its access line
    assert any(name.startswith("feed.") for name in loggers), f"no line from the feed itself: {mine}"
    assert any(line["msg"] == "request" and line["status"] == 200 for line in mine)
    # Every line that names this session was logged by the request, and carries its id.
    about_session = [
        line for line in lines if session_id in line["msg"] and line.get("request_id") != session_request
    ]
    assert about_session
    assert all(line.get("request_id") == "feed-log-check" for line in about_session), about_session
    # No other request's id leaked onto them, and the earlier requests had ids of their own.
    assert len({line.get("request_id") for line in lines if line.get("msg") == "request"}) >= 6
