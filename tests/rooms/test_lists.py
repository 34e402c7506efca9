"""One cursor convention for every list that can grow: `?limit=N&after=<next>` → `{items, next}`,
each item once, in the list's order, `next` null on the last page, a cursor that survives writes
between pages, and a bad cursor a 422 naming `after`. Real PostgreSQL, Redis and Kafka."""

from __future__ import annotations

import secrets
from collections.abc import Awaitable, Callable
from typing import Any

import httpx

from tests.app_fixtures import bearer
from tests.rooms.conftest import MerchantAccount
from tests.rooms.test_rooms_routes import make_room


async def walk(
    client: httpx.AsyncClient, path: str, headers: dict[str, str], items: str, limit: int, **params: Any
) -> list[list[dict[str, Any]]]:
    """Every page of a list, following `next` until it is null."""
    pages: list[list[dict[str, Any]]] = []
    after: str | None = None
    while True:
        query = {**params, "limit": limit, **({"after": after} if after else {})}
        r = await client.get(path, params=query, headers=headers)
        assert r.status_code == 200, r.text
        body = r.json()
        pages.append(body[items])
        assert len(body[items]) <= limit
        after = body["next"]
        if after is None:
            return pages
        assert len(pages) < 100, "the cursor does not move"


async def test_the_merchants_lists_page_with_one_cursor(
    app_client: httpx.AsyncClient, new_merchant: Callable[..., Awaitable[MerchantAccount]]
) -> None:
    merchant = await new_merchant(f"Pager {secrets.token_hex(3)}")
    h = merchant.headers
    made: dict[str, list[str]] = {"stores": [], "products": [], "rooms": [], "codes": [], "staff": []}
    for n in range(5):
        store = await app_client.post("/v1/stores", json={"name": f"store {n}"}, headers=h)
        made["stores"].append(store.json()["store_id"])
        product = await app_client.post(
            "/v1/products", json={"title": f"product {n}", "price": 1 + n, "currency": "CNY"}, headers=h
        )
        made["products"].append(product.json()["product_id"])
        made["rooms"].append((await make_room(app_client, merchant, title=f"room {n}"))["room_id"])
        code = await app_client.post("/v1/codes", json={}, headers=h)
        assert code.status_code == 201, code.text
        made["codes"].append(code.json()["code"])
    first_store = made["stores"][0]
    for n in range(5):
        staff = await app_client.post(
            f"/v1/stores/{first_store}/staff", json={"name": f"staff {n}"}, headers=h
        )
        made["staff"].append(staff.json()["staff_id"])

    lists = {
        "stores": ("/v1/stores", "store_id", False),
        "products": ("/v1/products", "product_id", False),
        "staff": (f"/v1/stores/{first_store}/staff", "staff_id", False),
        "rooms": ("/v1/rooms", "room_id", True),  # newest first
        "codes": ("/v1/codes", "code", True),
    }
    for items, (path, key, newest_first) in lists.items():
        pages = await walk(app_client, path, h, items, limit=2)
        assert [len(p) for p in pages] == [2, 2, 1], (items, pages)  # no empty page after the last
        seen = [item[key] for p in pages for item in p]
        assert seen == (made[items][::-1] if newest_first else made[items]), items

    # The operator's view of one merchant's rooms pages the same way.
    rooms = await walk(
        app_client, f"/v1/merchants/{merchant.merchant_id}/rooms", h, "rooms", limit=3, status="scheduled"
    )
    assert [r["room_id"] for p in rooms for r in p] == made["rooms"][::-1]


async def test_a_cursor_survives_writes_between_pages(
    app_client: httpx.AsyncClient, new_merchant: Callable[..., Awaitable[MerchantAccount]]
) -> None:
    """A keyset cursor: a room made after page 1 was read neither shifts page 2 nor repeats an item."""
    merchant = await new_merchant(f"Busy {secrets.token_hex(3)}")
    made = [(await make_room(app_client, merchant, title=f"room {n}"))["room_id"] for n in range(4)]
    first = (await app_client.get("/v1/rooms", params={"limit": 2}, headers=merchant.headers)).json()
    newer = (await make_room(app_client, merchant, title="newer"))["room_id"]
    second = (
        await app_client.get(
            "/v1/rooms", params={"limit": 2, "after": first["next"]}, headers=merchant.headers
        )
    ).json()
    assert [r["room_id"] for r in first["rooms"] + second["rooms"]] == made[::-1]
    assert second["next"] is None and newer not in {r["room_id"] for r in second["rooms"]}


async def test_a_bad_cursor_is_a_422_naming_after(
    app_client: httpx.AsyncClient, merchant: MerchantAccount, operator_key: str
) -> None:
    for path, headers in [
        ("/v1/stores", merchant.headers),
        ("/v1/rooms", merchant.headers),
        ("/v1/codes", merchant.headers),
        ("/v1/ops/merchants", bearer(operator_key)),
        ("/v1/ops/experiments", bearer(operator_key)),
        ("/v1/ops/models", bearer(operator_key)),
        ("/v1/ops/ranking-config/history", bearer(operator_key)),
    ]:
        for after in ("not-a-cursor", "W251bGxd", "e30"):  # garbage, [null] (no list's key), {}
            r = await app_client.get(path, params={"after": after}, headers=headers)
            assert r.status_code == 422, (path, after, r.text)
            assert r.json()["error"]["code"] == "validation_failed"
            assert set(r.json()["error"]["fields"]) == {"after"}, (path, r.text)
        r = await app_client.get(path, params={"limit": 0}, headers=headers)
        assert r.status_code == 422 and set(r.json()["error"]["fields"]) == {"limit"}, (path, r.text)


async def test_operators_lists_page_with_the_same_cursor(
    app_client: httpx.AsyncClient, operator_key: str
) -> None:
    ops = bearer(operator_key)
    created = []
    for n in range(3):
        r = await app_client.post("/v1/ops/merchants", json={"name": f"listed {n}"}, headers=ops)
        created.append(r.json()["merchant_id"])
    pages = await walk(app_client, "/v1/ops/merchants", ops, "merchants", limit=2)
    ids = [m["merchant_id"] for p in pages for m in p]
    assert ids == sorted(ids) and len(ids) == len(set(ids)) and set(created) <= set(ids)
    first = (await app_client.get("/v1/ops/merchants", params={"limit": 1}, headers=ops)).json()
    assert first["next_after"] == first["next"]  # the former name stays for a while

    before = (await app_client.get("/v1/ops/ranking-config", headers=ops)).json()["version"]
    for n in range(3):
        r = await app_client.put(
            "/v1/ops/ranking-config",
            json={"config": {"w_freshness": 0.1 * (n + 1)}, "note": f"page {n}"},
            headers=ops,
        )
        assert r.status_code == 200, r.text
    # What the session's other tests rank with stays as it was.
    r = await app_client.post("/v1/ops/ranking-config/rollback", json={"version": before}, headers=ops)
    assert r.status_code == 200, r.text
    versions = [
        v["version"]
        for p in await walk(app_client, "/v1/ops/ranking-config/history", ops, "versions", 2)
        for v in p
    ]
    assert versions == sorted(versions, reverse=True) and versions[-1] == 0 and len(versions) >= 4

    for n in range(3):
        r = await app_client.post(
            "/v1/ops/experiments",
            json={
                "name": f"paged {n}",
                "variants": [{"name": "a", "weight": 0.5}, {"name": "b", "weight": 0.5}],
            },
            headers=ops,
        )
        assert r.status_code == 201, r.text
        stopped = await app_client.post(f"/v1/ops/experiments/{r.json()['experiment_id']}/stop", headers=ops)
        assert stopped.status_code == 200, stopped.text  # no arm changes the session's other tests
    experiments = [e for p in await walk(app_client, "/v1/ops/experiments", ops, "experiments", 2) for e in p]
    names = [e["name"] for e in experiments]
    assert names[:3] == ["paged 2", "paged 1", "paged 0"] and len(names) == len(
        set(e["experiment_id"] for e in experiments)
    )
