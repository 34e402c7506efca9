"""The swipe feed over HTTP on real PostgreSQL, Redis and Kafka, with rooms made through the rooms domain."""

from __future__ import annotations

import asyncio
import secrets
import time
from collections.abc import Callable
from typing import Any

import httpx
import pytest

from events.realtime import RealtimeSink
from tests.feed.conftest import AppClient, Market, start_session

pytestmark = pytest.mark.timeout(120)
CATEGORIES = ("beauty", "fashion", "food", "home", "digital")


async def explain(
    client: httpx.AsyncClient, operator_headers: dict[str, str], viewer_id: str
) -> dict[str, Any]:
    """What the operator's explain says this viewer would see now (nothing served)."""
    r = await client.get(
        f"/v1/ops/viewers/{viewer_id}/feed", params={"count": 50, "explain": "true"}, headers=operator_headers
    )
    assert r.status_code == 200, r.text
    return dict(r.json())


async def _swipe(
    client: httpx.AsyncClient, headers: dict[str, str], session_id: str, count: int
) -> dict[str, Any]:
    r = await client.get(f"/v1/sessions/{session_id}/feed", params={"count": count}, headers=headers)
    assert r.status_code == 200, r.text
    body: dict[str, Any] = r.json()
    return body


async def test_no_repeat_within_a_session_over_200_swipes(
    feed_app: AppClient,
    market: Market,
    viewer_headers: Callable[[str], dict[str, str]],
) -> None:
    await market.populate(merchants=44, rooms_each=5, categories=CATEGORIES)
    headers = viewer_headers("v-no-repeat")
    session = await start_session(feed_app, headers, "v-no-repeat", count=10)
    served = [r["room_id"] for r in session["rooms"]]
    while len(served) < 200:
        body = await _swipe(feed_app, headers, session["session_id"], 10)
        assert body["rooms"], "the feed ran dry before 200 swipes"
        served += [r["room_id"] for r in body["rooms"]]
    assert len(served) == len(set(served))
    assert [r["position"] for r in session["rooms"]] == list(range(10))
    # Every page names what produced it.
    assert {"model_version", "config_version", "variant", "degraded"} <= set(body)


async def test_feed_rooms_carry_the_contract_fields(
    feed_app: AppClient,
    market: Market,
    viewer_headers: Callable[[str], dict[str, str]],
) -> None:
    merchant = await market.merchant()
    await market.live_room(merchant, "food")
    session = await start_session(feed_app, viewer_headers("v-fields"), "v-fields")
    room = session["rooms"][0]
    assert {
        "room_id",
        "merchant_id",
        "title",
        "category",
        "stream_url",
        "viewers_now",
        "boosted",
        "position",
    } <= set(room)


async def test_ended_rooms_are_on_no_later_page(
    feed_app: AppClient,
    market: Market,
    viewer_headers: Callable[[str], dict[str, str]],
) -> None:
    """A feed process reads the rooms changed since its live snapshot with the session, so no page
    asked for after `end` returned holds the room (see also test_page_tokens)."""
    rooms = await market.populate(merchants=8, rooms_each=3, categories=CATEGORIES)
    headers = viewer_headers("v-ended")
    session = await start_session(feed_app, headers, "v-ended", count=1)
    ended = [r for r in rooms if r not in {x["room_id"] for x in session["rooms"]}][:12]
    for room_id in ended:
        await market.end(room_id)
    body = await _swipe(feed_app, headers, session["session_id"], 50)
    assert not {r["room_id"] for r in body["rooms"]} & set(ended)


async def test_feed_of_another_viewers_session_is_404(
    feed_app: AppClient,
    market_of: Callable[[httpx.AsyncClient], Market],
    viewer_headers: Callable[[str], dict[str, str]],
) -> None:
    session = await start_session(feed_app, viewer_headers("v-owner"), "v-owner")
    r = await feed_app.get(f"/v1/sessions/{session['session_id']}/feed", headers=viewer_headers("v-intruder"))
    assert r.status_code == 404
    r = await feed_app.get("/v1/sessions/ses_0000000000000000/feed", headers=viewer_headers("v-owner"))
    assert r.status_code == 404


async def test_session_for_another_viewer_id_is_403_and_bad_count_is_422(
    feed_app: AppClient, viewer_headers: Callable[[str], dict[str, str]]
) -> None:
    r = await feed_app.post(
        "/v1/sessions", json={"viewer_id": "v-b", "entry": {}}, headers=viewer_headers("v-a")
    )
    assert r.status_code == 403
    session = await start_session(feed_app, viewer_headers("v-a"), "v-a")
    r = await feed_app.get(
        f"/v1/sessions/{session['session_id']}/feed?count=51", headers=viewer_headers("v-a")
    )
    assert r.status_code == 422 and "count" in r.json()["error"]["fields"]
    r = await feed_app.post("/v1/sessions", json={"entry": {"room_id": 5}}, headers=viewer_headers("v-a"))
    assert r.status_code == 422
    assert set(r.json()["error"]["fields"]) == {"viewer_id", "entry.room_id"}


async def test_deep_link_room_comes_first(
    feed_app: AppClient,
    market: Market,
    viewer_headers: Callable[[str], dict[str, str]],
) -> None:
    merchant = await market.merchant()
    target = await market.live_room(merchant, "home")
    session = await start_session(feed_app, viewer_headers("v-deep"), "v-deep", {"room_id": target})
    assert session["rooms"][0]["room_id"] == target
    assert target not in [r["room_id"] for r in session["rooms"][1:]]


async def test_blocked_merchants_never_appear(
    feed_app: AppClient,
    market: Market,
    viewer_headers: Callable[[str], dict[str, str]],
) -> None:
    rooms = await market.populate(merchants=4, rooms_each=2, categories=CATEGORIES)
    blocked = market.rooms[rooms[0]]["merchant_id"]
    headers = viewer_headers("v-blocks")
    r = await feed_app.post("/v1/viewers/me/blocks", json={"merchant_id": blocked}, headers=headers)
    assert r.status_code == 201, r.text
    r = await feed_app.post("/v1/viewers/me/blocks", json={"merchant_id": ""}, headers=headers)
    assert r.status_code == 422 and "merchant_id" in r.json()["error"]["fields"]
    session = await start_session(feed_app, headers, "v-blocks", count=50)
    assert blocked not in {x["merchant_id"] for x in session["rooms"]}


async def test_leaving_after_one_second_hides_the_room_and_lowers_its_merchant(
    feed_app: AppClient,
    market: Market,
    viewer_headers: Callable[[str], dict[str, str]],
    operator_headers: dict[str, str],
) -> None:
    shop = await market.merchant()
    x = await market.live_room(shop, "beauty")
    sibling = await market.live_room(shop, "beauty")
    others = await market.populate(merchants=6, rooms_each=2, categories=("food", "home"))
    viewer = f"v-dwell-{secrets.token_hex(3)}"
    headers = viewer_headers(viewer)
    session = await start_session(feed_app, headers, viewer, count=1)
    before = await explain(feed_app, operator_headers, viewer)
    scores_before = {r["room_id"]: r["explain"]["score"] for r in before["rooms"]}
    assert x in scores_before and sibling in scores_before

    now_ms = int(time.time() * 1000)
    sink = RealtimeSink(feed_app.app.resources.redis)
    await sink.write(
        [
            {
                "event_id": f"e-{secrets.token_hex(6)}",
                "type": "enter",
                "viewer_id": viewer,
                "session_id": session["session_id"],
                "room_id": x,
                "merchant_id": shop,
                "ts": now_ms - 1000,
            },
            {
                "event_id": f"e-{secrets.token_hex(6)}",
                "type": "leave",
                "viewer_id": viewer,
                "session_id": session["session_id"],
                "room_id": x,
                "merchant_id": shop,
                "ts": now_ms,
                "dwell_ms": 1000,
            },
        ]
    )
    after = await explain(feed_app, operator_headers, viewer)
    ids_after = [r["room_id"] for r in after["rooms"]]
    scores_after = {r["room_id"]: r["explain"]["score"] for r in after["rooms"]}
    # The operator's explain shows why: the swiped-away room is filtered, its sibling penalised.
    if sibling in scores_after:
        sib = next(r for r in after["rooms"] if r["room_id"] == sibling)["explain"]
        assert sib["terms"]["session_penalty"] < 0 or sib["terms"]["session"] < 0
        assert abs(sum(sib["terms"].values()) - sib["score"]) < 1e-3
    assert x not in ids_after
    # The penalty is targeted: the sibling drops far more than rooms of other categories move (they
    # move a little: popularity refreshes every second and the blend standardises over the candidates).
    unrelated = {r["room_id"] for r in before["rooms"] if r["category"] != "beauty"} | set(others)
    changes = sorted(
        abs(scores_after[o] - scores_before[o]) for o in unrelated if o in scores_after and o in scores_before
    )
    assert changes, "no unrelated room on both pages"
    typical = changes[len(changes) // 2]
    if sibling in scores_after:
        drop = scores_before[sibling] - scores_after[sibling]
        assert drop > 0.3 and drop > 3 * typical
    else:  # it dropped off the first 50
        assert [r["room_id"] for r in before["rooms"]].index(sibling) < 50


async def test_concurrent_prefetches_of_one_session_never_share_a_room(
    feed_app: AppClient,
    market: Market,
    viewer_headers: Callable[[str], dict[str, str]],
) -> None:
    await market.populate(merchants=6, rooms_each=5, categories=("food", "home", "beauty"))
    viewer = f"v-race-{secrets.token_hex(3)}"
    headers = viewer_headers(viewer)
    session = await start_session(feed_app, headers, viewer, count=1)
    url = f"/v1/sessions/{session['session_id']}/feed?count=5"
    # A real prefetch race: two requests at once both get a full page (spares cover the overlap).
    pair = await asyncio.gather(*(feed_app.get(url, headers=headers) for _ in range(2)))
    assert [len(r.json()["rooms"]) for r in pair] == [5, 5]
    # Eight at once: every page full (30 rooms live), and no room is ever served twice.
    burst = await asyncio.gather(*(feed_app.get(url, headers=headers) for _ in range(8)))
    assert all(r.status_code == 200 for r in pair + burst)
    assert all(len(r.json()["rooms"]) == 5 for r in burst)
    served = [room["room_id"] for r in pair + burst for room in r.json()["rooms"]]
    served += [room["room_id"] for room in session["rooms"]]
    assert len(served) == len(set(served)) and len(served) > 11


async def test_a_page_offers_its_page_and_spares_and_the_rest_only_when_they_were_taken(
    feed_app: AppClient,
    market: Market,
    viewer_headers: Callable[[str], dict[str, str]],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The claim (and its presence read) offers the page and its spares; the rest of the ranked order
    only when a concurrent request of the session took more rooms than the spares cover."""
    await market.populate(merchants=8, rooms_each=5, categories=("food", "home", "beauty"))
    viewer = f"v-offer-{secrets.token_hex(3)}"
    headers = viewer_headers(viewer)
    session = await start_session(feed_app, headers, viewer, count=1)
    book = feed_app.app.services.feed.service.sessions
    offers: list[tuple[int, str]] = []
    claim = book.claim

    async def recording(state: Any, room_ids: list[str], count: int, *args: Any, **kwargs: Any) -> Any:
        offers.append((len(room_ids), kwargs.get("mode", "new")))
        return await claim(state, room_ids, count, *args, **kwargs)

    monkeypatch.setattr(book, "claim", recording)
    url = f"/v1/sessions/{session['session_id']}/feed?count=3"
    alone = await feed_app.get(url, headers=headers)
    assert len(alone.json()["rooms"]) == 3
    assert offers == [(6, "new")]  # 3 rooms and 3 spares, one claim
    # Another request of the session takes this page's rooms and spares first: the page is made of the
    # rest of the same ranked order, on the same page ("more"), without ranking again.
    offers.clear()
    sid = session["session_id"]
    state = await book.load(sid, viewer)
    assert state is not None
    taken: list[str] = []
    pipeline_runs = 0
    run = feed_app.app.services.feed.service.pipeline.run

    async def counting(ctx: Any) -> Any:
        nonlocal pipeline_runs
        pipeline_runs += 1
        if pipeline_runs == 1:  # after this request ranked, a concurrent one claims its first six rooms
            out = await run(ctx)
            taken.extend(ctx.candidates.room_ids[ctx.order[:6]].tolist())
            assert (await claim(state, list(taken), 6)).accepted == taken
            return out
        return await run(ctx)

    monkeypatch.setattr(feed_app.app.services.feed.service.pipeline, "run", counting)
    page = await feed_app.get(url, headers=headers)
    rooms = [room["room_id"] for room in page.json()["rooms"]]
    assert len(rooms) == 3 and not set(rooms) & set(taken)
    assert pipeline_runs == 1
    assert [mode for _, mode in offers] == ["new", "more"] and offers[0][0] == 6 and offers[1][0] > 0
