"""Fixtures of the rooms tests, on top of the root conftest's (`settings`, `pool`, `redis`, `app`,
`app_client`, `operator_key`, `viewer_token`): merchants with their keys, and a Kafka topic reader.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import httpx
import orjson
import pytest

from roomfeed.kafka import make_consumer
from roomfeed.settings import Settings
from tests.app_fixtures import bearer


@dataclass
class MerchantAccount:
    merchant_id: str
    key: str

    @property
    def headers(self) -> dict[str, str]:
        return bearer(self.key)


@pytest.fixture(scope="session")
def new_merchant(
    app_client: httpx.AsyncClient, operator_key: str
) -> Callable[..., Awaitable[MerchantAccount]]:
    async def make(name: str = "Glow Beauty", category: str = "beauty") -> MerchantAccount:
        r = await app_client.post(
            "/v1/ops/merchants", json={"name": name, "category": category}, headers=bearer(operator_key)
        )
        assert r.status_code == 201, r.text
        return MerchantAccount(r.json()["merchant_id"], r.json()["key"])

    return make


@pytest.fixture(scope="session")
async def merchant(new_merchant: Callable[..., Awaitable[MerchantAccount]]) -> MerchantAccount:
    return await new_merchant("Glow Beauty")


@pytest.fixture(scope="session")
async def other_merchant(new_merchant: Callable[..., Awaitable[MerchantAccount]]) -> MerchantAccount:
    return await new_merchant("Rival Outdoor", "outdoor")


async def read_topic(
    settings: Settings, topic: str, until: Callable[[list[dict[str, Any]]], bool], timeout: float = 30.0
) -> list[dict[str, Any]]:
    """Read a topic from the beginning until `until(values)` holds (or the timeout): the values seen."""
    consumer = make_consumer(settings, None, topic)
    await consumer.start()
    values: list[dict[str, Any]] = []
    deadline = time.monotonic() + timeout
    try:
        while time.monotonic() < deadline and not until(values):
            batches = await consumer.getmany(timeout_ms=500)
            for records in batches.values():
                for record in records:
                    try:
                        values.append(orjson.loads(record.value))
                    except orjson.JSONDecodeError:  # another test's poison message
                        continue
            await asyncio.sleep(0)
    finally:
        await consumer.stop()
    return values
