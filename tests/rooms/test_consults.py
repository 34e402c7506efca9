"""One-to-one consults: capacity one, cancel frees the slot, no-shows and the no-show rate per merchant."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import httpx

from tests.app_fixtures import bearer
from tests.rooms.conftest import MerchantAccount
from tests.rooms.test_rooms_routes import make_room


async def consult_room_with_slot(
    client: httpx.AsyncClient, merchant: MerchantAccount, starts_in: float = 3600
) -> tuple[str, str]:
    rid = (await make_room(client, merchant, title="Skin consult", format="one_to_one"))["room_id"]
    start = time.time() + starts_in
    r = await client.post(
        f"/v1/rooms/{rid}/slots", json={"starts_at": start, "ends_at": start + 1800}, headers=merchant.headers
    )
    assert r.status_code == 201, r.text
    return rid, r.json()["slot_id"]


async def test_a_slot_is_booked_by_one_viewer_only(
    app_client: httpx.AsyncClient, merchant: MerchantAccount, viewer_token: Any
) -> None:
    rid, slot = await consult_room_with_slot(app_client, merchant)
    replies = await asyncio.gather(
        *(
            app_client.post(
                f"/v1/rooms/{rid}/bookings", json={"slot_id": slot}, headers=bearer(viewer_token(f"v{i}"))
            )
            for i in range(20)
        )
    )
    codes = sorted(r.status_code for r in replies)
    assert codes == [201] + [409] * 19
    assert {r.json()["error"]["code"] for r in replies if r.status_code == 409} == {"slot_taken"}
    slots = (await app_client.get(f"/v1/rooms/{rid}/slots", headers=bearer(viewer_token("v0")))).json()[
        "slots"
    ]
    assert slots[0]["available"] is False


async def test_cancel_frees_the_slot_and_only_the_booker_or_merchant_may_cancel(
    app_client: httpx.AsyncClient,
    merchant: MerchantAccount,
    other_merchant: MerchantAccount,
    viewer_token: Any,
) -> None:
    rid, slot = await consult_room_with_slot(app_client, merchant)
    booking = (
        await app_client.post(
            f"/v1/rooms/{rid}/bookings", json={"slot_id": slot}, headers=bearer(viewer_token("ann"))
        )
    ).json()
    url = f"/v1/bookings/{booking['booking_id']}/cancel"
    assert (await app_client.post(url, headers=bearer(viewer_token("eve")))).status_code == 404
    assert (await app_client.post(url, headers=other_merchant.headers)).status_code == 404
    cancelled = await app_client.post(url, headers=bearer(viewer_token("ann")))
    assert cancelled.status_code == 200 and cancelled.json()["status"] == "cancelled"
    twice = await app_client.post(url, headers=bearer(viewer_token("ann")))
    assert twice.status_code == 409 and twice.json()["error"]["code"] == "invalid_transition"
    rebook = await app_client.post(
        f"/v1/rooms/{rid}/bookings", json={"slot_id": slot}, headers=bearer(viewer_token("bo"))
    )
    assert rebook.status_code == 201


async def test_no_show_rate_is_reported_per_merchant(
    app_client: httpx.AsyncClient,
    new_merchant: Any,
    other_merchant: MerchantAccount,
    operator_key: str,
    viewer_token: Any,
) -> None:
    clinic = await new_merchant("Derm Clinic", "beauty")
    bookings = []
    for i in range(4):
        rid, slot = await consult_room_with_slot(app_client, clinic, starts_in=-600)  # started 10 min ago
        r = await app_client.post(
            f"/v1/rooms/{rid}/bookings", json={"slot_id": slot}, headers=bearer(viewer_token(f"p{i}"))
        )
        bookings.append(r.json()["booking_id"])
    for booking in bookings[:3]:
        r = await app_client.post(f"/v1/bookings/{booking}/no-show", headers=clinic.headers)
        assert r.status_code == 200 and r.json()["status"] == "no_show"
    foreign = await app_client.post(f"/v1/bookings/{bookings[3]}/no-show", headers=other_merchant.headers)
    assert foreign.status_code == 404
    report = (
        await app_client.get(f"/v1/merchants/{clinic.merchant_id}/consults", headers=clinic.headers)
    ).json()
    assert report["due"] == 4 and report["no_shows"] == 3 and report["no_show_rate"] == 0.75
    by_operator = await app_client.get(
        f"/v1/merchants/{clinic.merchant_id}/consults", headers=bearer(operator_key)
    )
    assert by_operator.json()["no_show_rate"] == 0.75
    nosy = await app_client.get(
        f"/v1/merchants/{clinic.merchant_id}/consults", headers=other_merchant.headers
    )
    assert nosy.status_code == 404


async def test_no_show_only_after_the_slot_started_and_slots_only_in_consult_rooms(
    app_client: httpx.AsyncClient, merchant: MerchantAccount, viewer_token: Any
) -> None:
    rid, slot = await consult_room_with_slot(app_client, merchant, starts_in=3600)
    booking = (
        await app_client.post(
            f"/v1/rooms/{rid}/bookings", json={"slot_id": slot}, headers=bearer(viewer_token("cy"))
        )
    ).json()
    early = await app_client.post(f"/v1/bookings/{booking['booking_id']}/no-show", headers=merchant.headers)
    assert early.status_code == 409 and early.json()["error"]["code"] == "slot_not_started"
    show_room = (await make_room(app_client, merchant))["room_id"]
    start = time.time() + 60
    r = await app_client.post(
        f"/v1/rooms/{show_room}/slots",
        json={"starts_at": start, "ends_at": start + 600},
        headers=merchant.headers,
    )
    assert r.status_code == 409 and r.json()["error"]["code"] == "not_a_consult_room"
