"""Ranking config and experiments: validated, versioned with author and diff, hot-reloaded by every API process."""

from __future__ import annotations

import asyncio
import secrets
import time
from collections.abc import Callable
from typing import Any

import httpx
import pytest

from events.archive import ArchiveSink
from feed.experiments import Experiment, Variant
from feed.http import FeedTuning
from roomfeed.assembly import Tuning
from roomfeed.settings import Settings
from tests.feed.conftest import AppClient, Market, on_topic, running_app, start_session

pytestmark = pytest.mark.timeout(120)


async def _current(client: httpx.AsyncClient, operator_headers: dict[str, str]) -> dict[str, Any]:
    r = await client.get("/v1/ops/ranking-config", headers=operator_headers)
    assert r.status_code == 200, r.text
    body: dict[str, Any] = r.json()
    return body


async def test_invalid_config_is_422_naming_each_field(
    feed_app: AppClient, operator_headers: dict[str, str]
) -> None:
    r = await feed_app.put(
        "/v1/ops/ranking-config",
        json={"config": {"w_popularity": -1, "diversity_max_run": 1.5, "nonsense": 1}},
        headers=operator_headers,
    )
    assert r.status_code == 422
    assert set(r.json()["error"]["fields"]) == {
        "config.w_popularity",
        "config.diversity_max_run",
        "config.nonsense",
    }


async def test_stale_expected_version_is_409_and_history_names_author_and_diff(
    feed_app: AppClient, operator_headers: dict[str, str], viewer_headers: Callable[[str], dict[str, str]]
) -> None:
    current = await _current(feed_app, operator_headers)
    r = await feed_app.put(
        "/v1/ops/ranking-config",
        json={"expected_version": current["version"], "config": {"w_freshness": 0.3}, "note": "fresher"},
        headers=operator_headers,
    )
    assert r.status_code == 200, r.text
    saved = r.json()
    assert saved["version"] == current["version"] + 1
    assert saved["diff"]["w_freshness"] == {"from": current["config"]["w_freshness"], "to": 0.3}
    r = await feed_app.put(
        "/v1/ops/ranking-config",
        json={"expected_version": current["version"], "config": {"w_freshness": 0.4}},
        headers=operator_headers,
    )
    assert r.status_code == 409
    history = (await feed_app.get("/v1/ops/ranking-config/history", headers=operator_headers)).json()[
        "versions"
    ]
    assert (
        history[0]["version"] == saved["version"] and history[0]["author"] and history[0]["note"] == "fresher"
    )
    r = await feed_app.post(
        "/v1/ops/ranking-config/rollback", json={"version": current["version"]}, headers=operator_headers
    )
    assert r.status_code == 200 and r.json()["rollback_of"] == current["version"]
    assert r.json()["config"]["w_freshness"] == current["config"]["w_freshness"]
    r = await feed_app.get("/v1/ops/ranking-config", headers=viewer_headers("v-nosy"))
    assert r.status_code == 403


async def test_weight_change_reaches_a_second_api_process_within_5_seconds(
    feed_app: AppClient,
    migrated: Settings,
    operator_headers: dict[str, str],
    viewer_headers: Callable[[str], dict[str, str]],
    market: Market,
) -> None:
    await market.live_room(await market.merchant(), "digital")
    async with running_app(migrated, Tuning(feed=FeedTuning(config_poll_s=1.0))) as second:
        headers = viewer_headers("v-reload")
        session = await start_session(second, headers, "v-reload", count=1)
        current = await _current(feed_app, operator_headers)
        r = await feed_app.put(
            "/v1/ops/ranking-config",
            json={"expected_version": current["version"], "config": {"w_popularity": 0.9}},
            headers=operator_headers,
        )
        assert r.status_code == 200
        changed_at, wanted = time.monotonic(), r.json()["version"]
        seen = None
        while time.monotonic() - changed_at < 5.0:
            page = await second.get(f"/v1/sessions/{session['session_id']}/feed?count=1", headers=headers)
            seen = page.json()["config_version"]
            if seen == wanted:
                break
            await asyncio.sleep(0.1)
        assert seen == wanted, f"second process still at config version {seen} after 5 s"
        assert second.app.services.feed.config.current.config.w_popularity == 0.9


def test_variant_assignment_is_stable_and_follows_traffic_shares() -> None:
    experiment = Experiment("exp_1", "split", (Variant("a", 0.2), Variant("b", 0.8, {"w_popularity": 1.0})))
    viewers = [f"viewer-{i}" for i in range(5000)]
    first = [experiment.variant_of(v).name for v in viewers]
    assert first == [experiment.variant_of(v).name for v in viewers]
    assert 0.17 < first.count("a") / len(viewers) < 0.23


async def test_experiment_assigns_variants_and_reports_metrics_per_variant(
    feed_app: AppClient,
    operator_headers: dict[str, str],
    viewer_headers: Callable[[str], dict[str, str]],
    market: Market,
    settings: Settings,
) -> None:
    r = await feed_app.post(
        "/v1/ops/experiments",
        json={"name": "bad", "variants": [{"name": "a", "weight": 0.5, "config": {"w_model": 99}}]},
        headers=operator_headers,
    )
    assert r.status_code == 422 and {"variants", "variants.0.config.w_model"} <= set(
        r.json()["error"]["fields"]
    )
    r = await feed_app.post(
        "/v1/ops/experiments",
        json={
            "name": "popularity",
            "variants": [
                {"name": "control", "weight": 0.5, "config": {}},
                {"name": "popular", "weight": 0.5, "config": {"w_popularity": 2.0}},
            ],
        },
        headers=operator_headers,
    )
    assert r.status_code == 201, r.text
    experiment_id = r.json()["experiment_id"]
    await market.live_room(await market.merchant(), "food")
    await asyncio.sleep(1.2)  # the config watcher picks the experiment up
    await market.live_room(await market.merchant(), "food")
    variants = set()
    sessions = set()
    seen = []
    for i in range(12):
        viewer = f"v-exp-{i}-{secrets.token_hex(3)}"
        body = await start_session(feed_app, viewer_headers(viewer), viewer, count=2)
        assert body["experiment_id"] == experiment_id and len(body["rooms"]) == 2
        variants.add(body["variant"])
        sessions.add(body["session_id"])
        first = body["rooms"][0]  # the app reports what was on screen: the first room only
        seen.append(
            (
                viewer,
                {
                    "event_id": f"seen-{viewer}",
                    "type": "impression",
                    "viewer_id": viewer,
                    "session_id": body["session_id"],
                    "room_id": first["room_id"],
                    "ts": int(time.time() * 1000),
                },
            )
        )
    assert variants == {"control", "popular"}
    for viewer, event in seen:
        r = await feed_app.post("/v1/events", json=[event], headers=viewer_headers(viewer))
        assert r.status_code == 202 and r.json()["accepted"] == 1, r.text
    # The worker's archive sink, fed from the topic: 24 rooms served, 12 seen.
    events = await on_topic(settings, sessions, want=36)
    archive = ArchiveSink(feed_app.app.resources.pool)
    await archive.prepare()
    await archive.write(events)
    report = (await feed_app.get(f"/v1/ops/experiments/{experiment_id}", headers=operator_headers)).json()
    assert sum(v["metrics"]["impressions"] for v in report["variants"]) == 12  # seen, not served
    assert all(
        "enter_rate" in v["metrics"] and "gmv_per_1000_impressions" in v["metrics"]
        for v in report["variants"]
    )
    r = await feed_app.post(f"/v1/ops/experiments/{experiment_id}/stop", headers=operator_headers)
    assert r.status_code == 200 and r.json()["status"] == "stopped"
