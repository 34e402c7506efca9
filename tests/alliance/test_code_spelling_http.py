"""A code has one spelling through the whole API: another spelling of the same bytes (the last
character's spare bits) starts no attributed session, lands nowhere and is never listed beside the real
code, whose opens it does not split (issue 14's phantom codes)."""

from __future__ import annotations

import base64
import time
from typing import Any

import asyncpg
import httpx

from alliance.attribution import AttributionBook
from tests.alliance.conftest import MerchantFactory
from tests.alliance.test_feed_wiring import live_room, viewer

ALPHABET = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"


def other_spellings(code: str) -> list[str]:
    def raw(text: str) -> bytes:
        return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))

    return [code[:-1] + c for c in ALPHABET if code[:-1] + c != code and raw(code[:-1] + c) == raw(code)]


async def test_another_spelling_of_a_code_starts_nothing_and_is_never_listed(
    client: httpx.AsyncClient, new_merchant: MerchantFactory, pool: asyncpg.Pool, migrated: Any
) -> None:
    merchant, headers = await new_merchant()
    await live_room(client, headers, "Spelling test")
    code = (await client.post("/v1/codes", json={}, headers=headers)).json()["code"]
    spellings = other_spellings(code)
    assert spellings  # a code's length leaves spare bits in its last character

    for k, other in enumerate(spellings):
        viewer_id = f"spelling-{time.time_ns()}-{k}"
        r = await client.post(
            "/v1/sessions",
            json={"viewer_id": viewer_id, "entry": {"code": other}},
            headers=viewer(migrated, viewer_id),
        )
        assert r.status_code == 422, r.text
        assert "entry.code" in r.json()["error"]["fields"]
        assert await AttributionBook(pool).current(viewer_id, time.time()) is None
        landing = await client.get(f"/c/{other}", headers={"Accept": "application/json"})
        assert landing.status_code == 404, landing.text

    viewer_id = f"spelling-{time.time_ns()}-real"
    r = await client.post(
        "/v1/sessions",
        json={"viewer_id": viewer_id, "entry": {"code": code}},
        headers=viewer(migrated, viewer_id),
    )
    assert r.status_code in (200, 201), r.text
    attributed = await AttributionBook(pool).current(viewer_id, time.time())
    assert attributed is not None and attributed.merchant_id == merchant
    listed = (await client.get("/v1/codes", headers=headers)).json()["codes"]
    assert [(c["code"], c["opens"]) for c in listed] == [(code, 1)]
