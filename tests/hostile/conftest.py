"""Fixtures of the hostile-input tests: the session's app (root conftest), and two merchants made
through the rooms domain's operator route, each with a store, a room, a deal and a code, so every
route has a real object of "the merchant" and of "another merchant" to aim at."""

from __future__ import annotations

import secrets
from dataclasses import dataclass, field
from typing import Any

import httpx
import pytest

from tests.app_fixtures import bearer


@dataclass
class Tenant:
    """A merchant with its key and one of each object it owns (ids filled as they are created)."""

    merchant_id: str
    key: str
    objects: dict[str, str] = field(default_factory=dict)

    @property
    def headers(self) -> dict[str, str]:
        return bearer(self.key)


async def new_merchant(client: httpx.AsyncClient, operator_key: str) -> Tenant:
    r = await client.post(
        "/v1/ops/merchants",
        json={"name": f"hostile shop {secrets.token_hex(3)}", "category": "beauty"},
        headers=bearer(operator_key),
    )
    assert r.status_code == 201, r.text
    return Tenant(merchant_id=r.json()["merchant_id"], key=r.json()["key"])


async def furnish(client: httpx.AsyncClient, tenant: Tenant) -> Tenant:
    """Give the merchant a store, staff, product, live room with a deal and a consult slot, a code."""
    h = tenant.headers

    async def post(path: str, body: dict[str, Any] | None, want: tuple[int, ...] = (200, 201)) -> Any:
        r = await client.post(path, json=body, headers=h)
        assert r.status_code in want, f"{path}: {r.status_code} {r.text}"
        return r.json()

    store = await post("/v1/stores", {"name": "flagship"})
    tenant.objects["store_id"] = store["store_id"]
    staff = await post(f"/v1/stores/{store['store_id']}/staff", {"name": "anna"})
    tenant.objects["staff_id"] = staff["staff_id"]
    product = await post("/v1/products", {"title": "serum", "price": 99.0, "currency": "CNY"})
    tenant.objects["product_id"] = product["product_id"]
    room = await post(
        "/v1/rooms",
        {"title": "hostile room", "category": "beauty", "stream_url": "https://live.example/h.m3u8"},
    )
    tenant.objects["room_id"] = room["room_id"]
    await post(f"/v1/rooms/{room['room_id']}/live", None)
    tenant.objects["code"] = (await post("/v1/codes", {"store_id": store["store_id"]}))["code"]
    return tenant


@pytest.fixture(scope="session")
async def merchant(app_client: httpx.AsyncClient, operator_key: str) -> Tenant:
    return await furnish(app_client, await new_merchant(app_client, operator_key))


@pytest.fixture(scope="session")
async def other_merchant(app_client: httpx.AsyncClient, operator_key: str) -> Tenant:
    return await furnish(app_client, await new_merchant(app_client, operator_key))
