"""The demo's seeding and driving, for a few seconds against the real app: every write goes through the API."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

import httpx

from devtools.demo import MarketplaceSeeder, RoomSchedule, ViewerTraffic, start_experiment
from simulator import Marketplace


async def test_demo_seeds_a_marketplace_and_drives_viewers_through_the_api(
    app_client: httpx.AsyncClient, operator_key: str, viewer_token: Callable[[str], str]
) -> None:
    market = Marketplace(seed=3, n_merchants=40, n_viewers=500, days=1)  # the simulator needs ≥ 10
    merchants = await MarketplaceSeeder(app_client, operator_key, market, seed=3).seed(6)
    assert len({m.merchant_id for m in merchants}) == 6
    assert all(m.store_ids and m.staff_ids and len(m.codes) == 1 + len(m.store_ids) for m in merchants)

    experiment_id = await start_experiment(app_client, operator_key)
    assert experiment_id is not None
    schedule = RoomSchedule(app_client, merchants, seed=3, live_share_at_start=1.0)
    await schedule.tick()
    assert len(schedule.live()) == 6
    first = merchants[0]
    rooms = (await app_client.get("/v1/rooms?status=live", headers=first.headers)).json()["rooms"]
    assert [r["room_id"] for r in rooms] == [first.room_id]

    alliance = (
        await app_client.get(f"/v1/merchants/{first.merchant_id}/ledger", headers=first.headers)
    ).json()
    assert alliance["merchant_id"] == first.merchant_id and alliance["alliances"] is not None

    traffic = ViewerTraffic(
        app_client, market, merchants, viewer_token, viewers_per_second=8, seed=3, speedup=200
    )
    stop = asyncio.Event()
    task = asyncio.create_task(traffic.run(stop))
    await asyncio.sleep(4)
    stop.set()
    await task
    c = traffic.counters
    assert c.errors == 0, c.last_error
    assert c.sessions >= 10 and c.rooms_shown >= c.sessions
    assert c.events_accepted > 0 and c.events_rejected == 0, c.last_error

    report = (
        await app_client.get(
            f"/v1/ops/experiments/{experiment_id}", headers={"Authorization": f"Bearer {operator_key}"}
        )
    ).json()
    assert {v["name"] for v in report["variants"]} >= {"control"}
    assert c.impressions_reported == c.rooms_shown  # the app reports each room it put on screen

    stopped = await app_client.post(
        f"/v1/ops/experiments/{experiment_id}/stop", headers={"Authorization": f"Bearer {operator_key}"}
    )
    assert stopped.status_code == 200
    await schedule.end_all()
    assert schedule.live() == []
    ended = (await app_client.get("/v1/rooms?status=live", headers=first.headers)).json()["rooms"]
    assert ended == []
