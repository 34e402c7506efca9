"""Idempotency-Key on creates, deal claims and bookings: the same key and request → the same answer,
stored, and the thing made once; the same key with another request → 422 idempotency_key_reused."""

from __future__ import annotations

import asyncio
import secrets
import time
from typing import Any

import httpx

from tests.app_fixtures import bearer


async def _merchant(client: httpx.AsyncClient, operator_key: str) -> dict[str, str]:
    r = await client.post(
        "/v1/ops/merchants", json={"name": f"idem {secrets.token_hex(3)}"}, headers=bearer(operator_key)
    )
    assert r.status_code == 201, r.text
    return bearer(r.json()["key"])


async def test_a_retried_create_gets_the_same_answer_and_makes_one_store(
    app_client: httpx.AsyncClient, operator_key: str
) -> None:
    headers = await _merchant(app_client, operator_key)
    key = {"Idempotency-Key": f"store-{secrets.token_hex(8)}"}
    first = await app_client.post("/v1/stores", json={"name": "Once"}, headers={**headers, **key})
    again = await app_client.post("/v1/stores", json={"name": "Once"}, headers={**headers, **key})
    assert first.status_code == again.status_code == 201
    assert again.json() == first.json() and again.headers["idempotent-replayed"] == "true"
    assert "idempotent-replayed" not in first.headers
    stores = (await app_client.get("/v1/stores", headers=headers)).json()["stores"]
    assert [s["name"] for s in stores] == ["Once"]

    other = await app_client.post("/v1/stores", json={"name": "Twice"}, headers={**headers, **key})
    assert other.status_code == 422
    assert other.json()["error"]["code"] == "idempotency_key_reused"
    assert "Idempotency-Key" in other.json()["error"]["fields"]

    # Keys are the caller's own: another merchant's request with the same key is its own.
    theirs = await _merchant(app_client, operator_key)
    r = await app_client.post("/v1/stores", json={"name": "Theirs"}, headers={**theirs, **key})
    assert r.status_code == 201 and r.json()["store_id"] != first.json()["store_id"]
    bad = await app_client.post("/v1/stores", json={"name": "x"}, headers={**headers, "Idempotency-Key": ""})
    assert bad.status_code == 422 and "Idempotency-Key" in bad.json()["error"]["fields"]


async def test_a_refused_request_is_not_kept_and_may_be_retried_with_its_key(
    app_client: httpx.AsyncClient, operator_key: str
) -> None:
    headers = await _merchant(app_client, operator_key)
    key = {"Idempotency-Key": secrets.token_hex(8)}
    r = await app_client.post(
        "/v1/products", json={"title": "t", "price": -1, "currency": "CNY"}, headers={**headers, **key}
    )
    assert r.status_code == 422
    r = await app_client.post(
        "/v1/products", json={"title": "t", "price": 1, "currency": "CNY"}, headers={**headers, **key}
    )
    assert r.status_code == 201, r.text


async def test_a_retried_claim_claims_once(
    app_client: httpx.AsyncClient, operator_key: str, viewer_token: Any
) -> None:
    headers = await _merchant(app_client, operator_key)
    room = (
        await app_client.post(
            "/v1/rooms",
            json={"title": "idem live", "category": "beauty", "stream_url": "https://live.example/i.m3u8"},
            headers=headers,
        )
    ).json()
    assert (await app_client.post(f"/v1/rooms/{room['room_id']}/live", headers=headers)).status_code == 200
    product = (
        await app_client.post(
            "/v1/products", json={"title": "p", "price": 9, "currency": "CNY"}, headers=headers
        )
    ).json()
    deal = (
        await app_client.post(
            f"/v1/rooms/{room['room_id']}/deals",
            json={
                "product_id": product["product_id"],
                "price": 5,
                "quantity": 10,
                "per_viewer_limit": 5,
                "ends_at": time.time() + 600,
            },
            headers=headers,
        )
    ).json()
    viewer = {**bearer(viewer_token(f"v-idem-{secrets.token_hex(3)}")), "Idempotency-Key": "claim-1"}
    answers = await asyncio.gather(
        *(
            app_client.post(f"/v1/deals/{deal['deal_id']}/claim", json={"quantity": 2}, headers=viewer)
            for _ in range(3)
        ),
        return_exceptions=False,
    )
    made = [a for a in answers if a.status_code == 201]
    assert made and {a.json()["claim_id"] for a in made} == {made[0].json()["claim_id"]}
    assert all(a.status_code in (201, 409) for a in answers)
    assert all(a.json()["error"]["code"] == "idempotency_key_in_use" for a in answers if a.status_code == 409)
    again = await app_client.post(f"/v1/deals/{deal['deal_id']}/claim", json={"quantity": 2}, headers=viewer)
    assert again.status_code == 201 and again.json()["claim_id"] == made[0].json()["claim_id"]
    left = (await app_client.get(f"/v1/deals/{deal['deal_id']}", headers=headers)).json()["remaining"]
    assert left == 8  # one claim of 2, however often it was sent


async def test_the_document_declares_the_header_on_every_create(app_client: httpx.AsyncClient) -> None:
    document = (await app_client.get("/openapi.json")).json()
    creates = [
        (path, method, op)
        for path, item in document["paths"].items()
        for method, op in item.items()
        if "201" in op["responses"]
    ]
    assert len(creates) >= 12
    for path, method, op in creates:
        names = {p["name"] for p in op.get("parameters", []) if p["in"] == "header"}
        assert "Idempotency-Key" in names, f"{method} {path}"
