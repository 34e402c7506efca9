"""The alliance inside the whole app: a code session attributes its viewer, and a merchant the
alliance owes exposure gets its live room boosted in another viewer's feed (real feed pipeline)."""

from __future__ import annotations

import time
from typing import Any

import asyncpg
import httpx

from alliance import ledger
from alliance.attribution import AttributionBook
from alliance.boost import OUTCOMES
from alliance.grants import TOKENS_KEY
from alliance.models import AlliancePlan, LastHours
from tests.alliance.conftest import MerchantFactory
from tests.feed.conftest import on_topic

TERMS = {"exchange_rate": 3, "relevance_floor": 0.5, "boost_share_cap": 0.34}


async def live_room(client: httpx.AsyncClient, headers: dict[str, str], title: str) -> str:
    body = {"title": title, "category": "beauty", "stream_url": "https://live.example/w.m3u8"}
    r = await client.post("/v1/rooms", json=body, headers=headers)
    assert r.status_code == 201, r.text
    room_id = str(r.json()["room_id"])
    assert (await client.post(f"/v1/rooms/{room_id}/live", headers=headers)).status_code in (200, 201)
    return room_id


async def two_member_alliance(
    client: httpx.AsyncClient, new_merchant: MerchantFactory, name: str
) -> tuple[tuple[str, dict[str, str]], tuple[str, dict[str, str]], str]:
    """Merchants A and B and an alliance of both (A founds it, invites B, B joins)."""
    a, ha = await new_merchant()
    b, hb = await new_merchant()
    r = await client.post("/v1/alliances", json={"name": name, "terms": TERMS}, headers=ha)
    alliance_id = str(r.json()["alliance_id"])
    await client.post(f"/v1/alliances/{alliance_id}/members", json={"merchant_id": b}, headers=ha)
    await client.post(f"/v1/alliances/{alliance_id}/join", headers=hb)
    return (a, ha), (b, hb), alliance_id


async def earned(pool: asyncpg.Pool, merchant_id: str, alliance_id: str, amount: float, source: str) -> None:
    """Credit a merchant as if one of its visits had qualified and settled."""
    async with pool.acquire() as conn, conn.transaction():
        await ledger.post(
            conn,
            source_id=source,
            kind="earned",
            merchant_id=merchant_id,
            alliance_id=alliance_id,
            amount=amount,
            at=time.time(),
            visits=1,
        )


def viewer(settings: Any, viewer_id: str) -> dict[str, str]:
    from roomfeed.auth import sign_viewer_token

    return {"Authorization": f"Bearer {sign_viewer_token(settings.viewer_token_secret, viewer_id)}"}


async def test_code_session_attributes_and_owed_merchant_is_boosted_in_the_feed(
    client: httpx.AsyncClient, new_merchant: MerchantFactory, pool: asyncpg.Pool, migrated: Any, app: Any
) -> None:
    (a, ha), (b, hb), alliance_id = await two_member_alliance(client, new_merchant, "Wired")
    room_a = await live_room(client, ha, "A's room")
    for k in range(8):  # more live rooms than a page shows, so a boost can add exposure
        await live_room(client, hb, f"B's room {k}")
    code = (await client.post("/v1/codes", json={}, headers=ha)).json()["code"]

    r = await client.post(
        "/v1/sessions",
        json={"viewer_id": "wired-v1", "entry": {"code": code}},
        headers=viewer(migrated, "wired-v1"),
    )
    assert r.status_code in (200, 201), r.text
    attributed = await AttributionBook(pool).current("wired-v1", time.time())
    assert attributed is not None and attributed.merchant_id == a
    assert (await client.get("/v1/codes", headers=ha)).json()["codes"][0]["opens"] == 1

    await earned(pool, a, alliance_id, 60.0, source=f"wired-{a}")
    scheduler = app.services.alliance.scheduler
    for _ in range(5):  # ten minutes of pacing: tokens for A (the app's own 5 s tick may interleave)
        await scheduler.recompute(time.time() - 600)
        await scheduler.recompute(time.time())
        if float(await scheduler.redis.hget(TOKENS_KEY, a) or 0) >= 1:
            break
    await app.services.alliance.boost.refresh()

    boosted: list[str] = []
    for k in range(10):
        vid = f"wired-other-{k}"
        s = await client.post(
            "/v1/sessions", json={"viewer_id": vid, "count": 3}, headers=viewer(migrated, vid)
        )
        assert s.status_code in (200, 201), s.text
        boosted += [room["room_id"] for room in s.json()["rooms"] if room.get("boosted")]
        feed = await client.get(
            f"/v1/sessions/{s.json()['session_id']}/feed?count=3", headers=viewer(migrated, vid)
        )
        boosted += [room["room_id"] for room in feed.json()["rooms"] if room.get("boosted")]
    assert boosted and set(boosted) == {room_a}


async def test_the_device_the_alliance_judges_is_the_requests(
    client: httpx.AsyncClient, new_merchant: MerchantFactory, pool: asyncpg.Pool, migrated: Any
) -> None:
    """Ten new viewer ids on one phone: the app's events may claim any device_id, the X-Device-ID
    of the requests is what attribution (and so the burst rule) records."""
    from alliance.clock import AllianceClock
    from alliance.consumer import burst_created
    from alliance.contribution import Policy

    a, ha = await new_merchant()
    await live_room(client, ha, "A's room")
    code = (await client.post("/v1/codes", json={}, headers=ha)).json()["code"]
    phone = f"phone-{time.time_ns()}"
    viewers = [f"dev-{time.time_ns()}-{k}" for k in range(4)]
    for v in viewers:
        r = await client.post(
            "/v1/sessions",
            json={"viewer_id": v, "entry": {"code": code}},
            headers={**viewer(migrated, v), "X-Device-ID": phone},
        )
        assert r.status_code == 201, r.text
    devices = await pool.fetch(
        "SELECT device_id FROM alliance_viewers WHERE viewer_id = ANY($1::text[])", viewers
    )
    assert {d["device_id"] for d in devices} == {phone}
    async with pool.acquire() as conn:
        assert await burst_created(conn, viewers, Policy(), AllianceClock()) == set(viewers)
    session = f"ses-dev-{time.time_ns()}"
    event = {
        "event_id": f"devclaim-{phone}",
        "type": "like",
        "viewer_id": viewers[0],
        "session_id": session,
        "room_id": "room_x",
        "device_id": "a-different-phone",
        "ts": int(time.time() * 1000),
    }
    r = await client.post(
        "/v1/events", json=[event], headers={**viewer(migrated, viewers[0]), "X-Device-ID": phone}
    )
    assert r.status_code == 202 and r.json()["accepted"] == 1
    (on_kafka,) = await on_topic(migrated, {session}, 1)
    assert on_kafka["device_id"] == phone


async def test_a_merchant_sees_its_pacing_plan_and_why_it_was_not_delivered(
    client: httpx.AsyncClient, new_merchant: MerchantFactory, pool: asyncpg.Pool, app: Any
) -> None:
    (a, ha), (b, hb), alliance_id = await two_member_alliance(client, new_merchant, "Planned")
    other, ho = await new_merchant()
    await earned(pool, a, alliance_id, 30.0, source=f"plan-{a}")
    alliance = app.services.alliance
    await alliance.scheduler.recompute(time.time())
    await alliance.boost.refresh()
    # A's rooms are not live: pages pass it by, and the plan says so.
    for k in range(3):
        await live_room(client, hb, f"B's room {k}")
    for k in range(4):
        vid = f"plan-viewer-{a}-{k}"
        s = await client.post(
            "/v1/sessions", json={"viewer_id": vid, "count": 2}, headers=viewer(app.settings, vid)
        )
        assert s.status_code == 201, s.text
    await alliance.boost.flush()
    plan = (await client.get(f"/v1/merchants/{a}/alliance-plan", headers=ha)).json()
    assert plan["owed"] == 30.0 and plan["pace_per_hour"] > 0
    assert (
        plan["reasons"] and plan["reasons"][0]["reason"] == "not_live" and "live" in plan["reasons"][0]["why"]
    )
    # The typed answer: every field the model declares, the tally's counts under the boost stage's words.
    assert set(plan) == set(AlliancePlan.__struct_fields__)
    assert tuple(LastHours.__struct_fields__) == ("pages", *OUTCOMES)
    assert plan["last_hours"]["pages"] >= plan["last_hours"]["not_live"] > 0
    assert (await client.get(f"/v1/merchants/{a}/alliance-plan", headers=ho)).status_code == 404


async def test_a_code_session_records_the_account_age_the_login_token_says(
    app: Any, client: httpx.AsyncClient, new_merchant: MerchantFactory, pool: asyncpg.Pool, tmp_path: Any
) -> None:
    """The new-account rules read the account's age from the platform login's token: a code session
    started with a JWT carrying `account_created_at` records it for the viewer (without it every viewer
    first seen lately looked new, and a platform-wide median of 100 % new hid any farm of fresh ids)."""
    import base64
    import dataclasses
    import json
    import secrets

    import jwt

    from roomfeed.auth import ViewerTokens

    secret = secrets.token_bytes(32)
    jwks = tmp_path / "jwks.json"
    k = base64.urlsafe_b64encode(secret).rstrip(b"=").decode()
    jwks.write_text(json.dumps({"keys": [{"kty": "oct", "kid": "login", "alg": "HS256", "k": k}]}))
    a, ha = await new_merchant()
    await live_room(client, ha, "A's room")
    code = (await client.post("/v1/codes", json={}, headers=ha)).json()["code"]
    saved = app.guard
    app.guard = dataclasses.replace(
        saved, viewer_tokens=ViewerTokens(dataclasses.replace(app.settings, viewer_jwks=str(jwks)))
    )
    now = time.time()
    ages = {f"aged-{time.time_ns()}": now - 400 * 86_400, f"fresh-{time.time_ns()}": now - 3_600}
    try:
        for v, created in ages.items():
            claims = {"sub": v, "exp": int(now) + 600, "account_created_at": created}
            token = jwt.encode(claims, secret, "HS256", headers={"kid": "login"})
            r = await client.post(
                "/v1/sessions",
                json={"viewer_id": v, "entry": {"code": code}},
                headers={"Authorization": f"Bearer {token}"},
            )
            assert r.status_code == 201, r.text
    finally:
        app.guard = saved
    rows = await pool.fetch(
        """SELECT viewer_id, extract(epoch FROM account_created_at)::float8 AS created FROM alliance_viewers
           WHERE viewer_id = ANY($1::text[])""",
        list(ages),
    )
    assert {r["viewer_id"]: round(r["created"]) for r in rows} == {v: round(c) for v, c in ages.items()}
