"""Fixtures of the alliance tests, on the root conftest's PostgreSQL pool and Redis client of the
session: merchants and their keys, and the shared app client (tests/app_fixtures.py)."""

from __future__ import annotations

import secrets
from collections.abc import Awaitable, Callable
from typing import Any

import asyncpg
import httpx
import pytest

from roomfeed.auth import create_key
from roomfeed.settings import Settings


@pytest.fixture(scope="session")
async def client(migrated: Settings, app_client: httpx.AsyncClient) -> httpx.AsyncClient:
    """The shared client of the whole app (every domain started), on a migrated database."""
    return app_client


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
def operator_headers(operator_key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {operator_key}"}
