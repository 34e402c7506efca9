"""Fixtures of the feed tests: the app on real services, keys and tokens, and a market of live rooms.

Rooms are created through the rooms domain's HTTP routes (the real live index), events through the
events domain's realtime sink (its public `write`), so the feed is tested against the real pieces.
`feed_app` is this folder's app, on a database and Redis of this folder's own (see `settings`).
"""

from __future__ import annotations

import asyncio
import contextlib
import secrets
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import httpx
import pytest

from feed.http import FeedTuning
from roomfeed.app import Api
from roomfeed.assembly import Services, Tuning, create_app
from roomfeed.auth import create_key, sign_viewer_token
from roomfeed.db import create_pool
from roomfeed.settings import Settings
from tests.support import isolated_settings

# The feed tests' app reloads the ranking config twice a second.
TUNING = Tuning(feed=FeedTuning(config_poll_s=0.5))


class AppClient(httpx.AsyncClient):
    """A client bound to a running app, which it carries (`client.app.services`, `.resources`)."""

    def __init__(self, app: Api[Services]) -> None:
        super().__init__(transport=httpx.ASGITransport(app=app), base_url="http://feed.test", timeout=30)
        self.app = app


@contextlib.asynccontextmanager
async def running_app(settings: Settings, tuning: Tuning = TUNING) -> AsyncIterator[AppClient]:
    """An app instance with its lifespan running (domains started), and a client bound to it."""
    app = create_app(settings, access_log=False, tuning=tuning)
    async with app.router.lifespan_context(app), AppClient(app) as client:
        yield client


@pytest.fixture(scope="session")
def settings(base_settings: Settings, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Settings]:
    """The feed tests' own database and Redis: they put hundreds of rooms live, which would crowd
    other packages' assertions about what a feed page shows if they shared the session's world."""
    with isolated_settings(base_settings, tmp_path_factory) as own:
        yield own


@pytest.fixture(scope="session")
async def migrated(settings: Settings) -> Settings:
    return settings


@pytest.fixture(scope="session")
async def feed_app(migrated: Settings) -> AsyncIterator[AppClient]:
    async with running_app(migrated) as client:
        yield client


async def new_operator_key(settings: Settings) -> str:
    pool = await create_pool(settings, min_size=1)
    try:
        return (await create_key(pool, "operator", label="feed tests"))[1]
    finally:
        await pool.close()


@pytest.fixture(scope="session")
async def operator_headers(migrated: Settings) -> dict[str, str]:
    return {"Authorization": f"Bearer {await new_operator_key(migrated)}"}


@pytest.fixture(scope="session")
def viewer_headers(migrated: Settings) -> Callable[[str], dict[str, str]]:
    def headers(viewer_id: str) -> dict[str, str]:
        return {"Authorization": f"Bearer {sign_viewer_token(migrated.viewer_token_secret, viewer_id)}"}

    return headers


@dataclass
class Market:
    """Merchants and live rooms made through the rooms domain's HTTP routes."""

    client: httpx.AsyncClient
    operator: dict[str, str]
    merchants: dict[str, dict[str, str]] = field(default_factory=dict)  # merchant_id → headers
    rooms: dict[str, dict[str, Any]] = field(default_factory=dict)  # room_id → room

    async def merchant(self) -> str:
        r = await self.client.post(
            "/v1/ops/merchants", json={"name": f"shop {secrets.token_hex(3)}"}, headers=self.operator
        )
        assert r.status_code == 201, r.text
        body = r.json()
        self.merchants[body["merchant_id"]] = {"Authorization": f"Bearer {body['key']}"}
        return str(body["merchant_id"])

    async def live_room(self, merchant_id: str, category: str = "beauty", tags: tuple[str, ...] = ()) -> str:
        headers = self.merchants[merchant_id]
        r = await self.client.post(
            "/v1/rooms",
            json={
                "title": f"room {secrets.token_hex(3)}",
                "category": category,
                "tags": list(tags),
                "stream_url": f"https://live.example/{secrets.token_hex(4)}.m3u8",
            },
            headers=headers,
        )
        assert r.status_code == 201, r.text
        room_id = r.json()["room_id"]
        r = await self.client.post(f"/v1/rooms/{room_id}/live", headers=headers)
        assert r.status_code == 200, r.text
        self.rooms[room_id] = {"merchant_id": merchant_id, "category": category}
        return str(room_id)

    async def end(self, room_id: str, replay_url: str | None = None) -> None:
        headers = self.merchants[self.rooms[room_id]["merchant_id"]]
        body = {"replay_url": replay_url} if replay_url else None
        r = await self.client.post(f"/v1/rooms/{room_id}/end", json=body, headers=headers)
        assert r.status_code == 200, r.text

    async def populate(self, merchants: int, rooms_each: int, categories: tuple[str, ...]) -> list[str]:
        ids = await asyncio.gather(*(self.merchant() for _ in range(merchants)))
        created: list[str] = []
        for n, merchant_id in enumerate(ids):
            created += await asyncio.gather(
                *(
                    self.live_room(merchant_id, categories[(n + k) % len(categories)])
                    for k in range(rooms_each)
                )
            )
        return created


@pytest.fixture
def market_of(operator_headers: dict[str, str]) -> Callable[[httpx.AsyncClient], Market]:
    return lambda client: Market(client, operator_headers)


@pytest.fixture
def market(feed_app: AppClient, market_of: Callable[[httpx.AsyncClient], Market]) -> Market:
    """Merchants and live rooms made through the feed app's own routes (a test's market)."""
    return market_of(feed_app)


async def start_session(
    client: httpx.AsyncClient,
    headers: dict[str, str],
    viewer_id: str,
    entry: dict[str, Any] | None = None,
    count: int = 5,
) -> dict[str, Any]:
    r = await client.post(
        "/v1/sessions", json={"viewer_id": viewer_id, "entry": entry or {}, "count": count}, headers=headers
    )
    assert r.status_code == 201, r.text
    return dict(r.json())


async def on_topic(
    settings: Settings, session_ids: set[str], want: int, kinds: tuple[str, ...] = (), timeout: float = 20
) -> list[dict[str, Any]]:
    """The events of `session_ids` on viewer-events (of `kinds`, or all), read from the beginning
    until `want` arrived."""
    import secrets
    import time

    import orjson
    from aiokafka import AIOKafkaConsumer

    from events.vocabulary import VIEWER_EVENTS

    consumer = AIOKafkaConsumer(
        settings.topic(VIEWER_EVENTS),
        bootstrap_servers=settings.kafka_bootstrap,
        auto_offset_reset="earliest",
        group_id=f"t-feed-{secrets.token_hex(4)}",
    )
    await consumer.start()
    found: list[dict[str, Any]] = []
    try:
        deadline = time.monotonic() + timeout
        while len(found) < want and time.monotonic() < deadline:
            batches = await consumer.getmany(timeout_ms=500)
            for records in batches.values():
                for record in records:
                    try:  # the topic may hold poison records (tests/events' dead-letter test writes some)
                        event = orjson.loads(record.value)
                    except orjson.JSONDecodeError:
                        continue
                    if not isinstance(event, dict):
                        continue
                    if event.get("session_id") in session_ids and (not kinds or event.get("type") in kinds):
                        found.append(event)
    finally:
        await consumer.stop()
    return found
