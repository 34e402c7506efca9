"""Fixtures of the alliance tests: the real PostgreSQL and Redis of the session, keys, a client.

Uses the shared `app_client` / `operator_key` when tests/conftest.py provides them; until then an
app with the alliance routes only, on the same session settings.
"""

from __future__ import annotations

import secrets
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import asyncpg
import httpx
import pytest
from redis.asyncio import Redis

from roomfeed.auth import create_key
from roomfeed.db import create_pool, migrate
from roomfeed.settings import Settings


@pytest.fixture(scope="session")
async def migrated(settings: Settings) -> Settings:
    await migrate(settings.database_url)
    return settings


@pytest.fixture(scope="session")
async def pool(migrated: Settings) -> AsyncIterator[asyncpg.Pool]:
    p = await create_pool(migrated, min_size=1)
    yield p
    await p.close()


@pytest.fixture(scope="session")
async def redis(migrated: Settings) -> AsyncIterator[Redis]:
    client = Redis.from_url(migrated.redis_url)
    yield client
    await client.aclose()


@pytest.fixture(scope="session")
async def client(request: pytest.FixtureRequest, migrated: Settings) -> AsyncIterator[httpx.AsyncClient]:
    try:
        shared = request.getfixturevalue("app_client")
    except pytest.FixtureLookupError:
        shared = None
    if shared is not None:
        yield shared
        return
    import alliance.http
    import roomfeed.app as app_module

    original = app_module._domains
    app_module._domains = lambda: [alliance.http]  # this domain alone, until the shared app fixture lands
    try:
        app = app_module.create_app(migrated, access_log=False)
    finally:
        app_module._domains = original
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://test") as c:
            yield c


MerchantFactory = Callable[[], Awaitable[tuple[str, dict[str, str]]]]


@pytest.fixture(scope="session")
def new_merchant(pool: asyncpg.Pool) -> MerchantFactory:
    """A fresh merchant id and the Authorization header of its key."""

    async def make() -> tuple[str, dict[str, str]]:
        catalog = rooms_catalog(pool)
        if catalog is not None:  # the rooms domain's public interface, when it is in the build
            merchant_id = (await catalog.create_merchant("Test merchant", "beauty"))["merchant_id"]
        else:
            merchant_id = f"mer_{secrets.token_hex(8)}"
        _, key = await create_key(pool, "merchant", merchant_id)
        return merchant_id, {"Authorization": f"Bearer {key}"}

    return make


def rooms_catalog(pool: asyncpg.Pool) -> Any:
    try:
        from rooms.catalog import MerchantCatalog
    except ModuleNotFoundError:
        return None
    return MerchantCatalog(pool)


@pytest.fixture(scope="session")
async def operator_headers(pool: asyncpg.Pool) -> dict[str, str]:
    _, key = await create_key(pool, "operator")
    return {"Authorization": f"Bearer {key}"}
