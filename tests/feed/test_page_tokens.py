"""The feed's retry contract: page tokens, concurrent prefetches, and the end-then-page race, over HTTP
on real PostgreSQL, Redis and Kafka."""

from __future__ import annotations

import asyncio
import secrets
from collections.abc import AsyncIterator, Callable, Iterator
from typing import Any

import httpx
import pytest

from feed.pages import PAGES_KEPT, page_number
from roomfeed.errors import ValidationFailed
from roomfeed.settings import Settings
from tests.feed.conftest import Market, new_operator_key, running_app, start_session
from tests.support import isolated_settings

pytestmark = pytest.mark.timeout(120)
CATEGORIES = ("beauty", "fashion", "food", "home", "digital")


async def _page(client: httpx.AsyncClient, headers: dict[str, str], session_id: str, **params: Any) -> Any:
    r = await client.get(f"/v1/sessions/{session_id}/feed", params=params, headers=headers)
    assert r.status_code == 200, r.text
    return r.json()


def _ids(page: dict[str, Any]) -> list[str]:
    return [room["room_id"] for room in page["rooms"]]


async def _viewer_in_market(
    client: httpx.AsyncClient, market_of: Any, viewer_headers: Any, merchants: int, count: int
) -> tuple[dict[str, str], dict[str, Any]]:
    """Live rooms of `merchants` new merchants, and a new viewer's session (its first page)."""
    await market_of(client).populate(merchants=merchants, rooms_each=3, categories=CATEGORIES)
    viewer = f"v-{secrets.token_hex(4)}"
    headers = viewer_headers(viewer)
    return headers, {**await start_session(client, headers, viewer, count=count), "viewer": viewer}


@pytest.fixture(scope="module")
def small_settings(base_settings: Settings, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Settings]:
    """A world of its own, where exactly the rooms a test makes are live."""
    with isolated_settings(base_settings, tmp_path_factory) as own:
        yield own


@pytest.fixture
async def small_world(small_settings: Settings) -> AsyncIterator[httpx.AsyncClient]:
    async with running_app(small_settings) as client:
        yield client


async def test_a_retried_page_is_the_same_page_and_the_next_needs_its_token(
    feed_app: httpx.AsyncClient,
    market_of: Callable[[httpx.AsyncClient], Market],
    viewer_headers: Callable[[str], dict[str, str]],
) -> None:
    headers, first = await _viewer_in_market(feed_app, market_of, viewer_headers, merchants=6, count=3)
    sid = first["session_id"]
    assert first["page_token"]
    second = await _page(feed_app, headers, sid, count=3, after=first["page_token"])
    again = await _page(feed_app, headers, sid, count=3, after=first["page_token"])
    assert len(second["rooms"]) == 3
    assert _ids(again) == _ids(second) and again["page_token"] == second["page_token"]
    assert [r["position"] for r in again["rooms"]] == [r["position"] for r in second["rooms"]] == [3, 4, 5]
    third = await _page(feed_app, headers, sid, count=3, after=second["page_token"])
    assert third["page_token"] != second["page_token"]
    assert not set(_ids(third)) & (set(_ids(second)) | set(_ids(first)))


async def test_page_tokens_of_other_sessions_future_pages_and_forgotten_pages_are_refused(
    feed_app: httpx.AsyncClient,
    market_of: Callable[[httpx.AsyncClient], Market],
    viewer_headers: Callable[[str], dict[str, str]],
) -> None:
    headers, one = await _viewer_in_market(feed_app, market_of, viewer_headers, merchants=4, count=1)
    other = await start_session(feed_app, headers, one["viewer"], count=1)
    url = f"/v1/sessions/{one['session_id']}/feed"
    r = await feed_app.get(url, params={"after": other["page_token"]}, headers=headers)
    assert r.status_code == 422 and set(r.json()["error"]["fields"]) == {"after"}
    r = await feed_app.get(url, params={"after": "not-a-token"}, headers=headers)
    assert r.status_code == 422 and set(r.json()["error"]["fields"]) == {"after"}
    token = one["page_token"]
    tokens = [token]
    for _ in range(PAGES_KEPT + 1):
        token = (await _page(feed_app, headers, one["session_id"], count=1, after=token))["page_token"]
        tokens.append(token)
    # The first page is older than the pages a session keeps: its successor is forgotten.
    r = await feed_app.get(url, params={"after": tokens[0]}, headers=headers)
    assert r.status_code == 410 and r.json()["error"]["code"] == "page_expired"
    # A token names a page of this session only once that page exists.
    from feed.pages import page_token

    future = page_token(one["session_id"], len(tokens) + 3)
    r = await feed_app.get(url, params={"after": future}, headers=headers)
    assert r.status_code == 404 and r.json()["error"]["code"] == "page_not_found"
    # The newest pages are still there.
    assert _ids(await _page(feed_app, headers, one["session_id"], after=tokens[-2])) is not None


async def test_ten_concurrent_prefetches_of_three_serve_every_live_room(
    small_world: httpx.AsyncClient, small_settings: Settings, viewer_headers: Callable[[str], dict[str, str]]
) -> None:
    market = Market(small_world, {"Authorization": f"Bearer {await new_operator_key(small_settings)}"})
    rooms = await market.populate(merchants=10, rooms_each=3, categories=CATEGORIES)
    assert len(rooms) == 30
    viewer = f"v-burst-{secrets.token_hex(3)}"
    headers = viewer_headers(viewer)
    session = await start_session(small_world, headers, viewer, count=3)
    sid = session["session_id"]
    # With one token: ten concurrent requests are one page, the same for all.
    same = await asyncio.gather(
        *(
            small_world.get(
                f"/v1/sessions/{sid}/feed",
                params={"count": 3, "after": session["page_token"]},
                headers=headers,
            )
            for _ in range(10)
        )
    )
    assert all(r.status_code == 200 for r in same)
    assert len({tuple(_ids(r.json())) for r in same}) == 1 and len(_ids(same[0].json())) == 3
    # Without a token each request is a new page: none runs short while unseen rooms remain.
    burst = await asyncio.gather(
        *(small_world.get(f"/v1/sessions/{sid}/feed", params={"count": 3}, headers=headers) for _ in range(8))
    )
    pages = [_ids(r.json()) for r in burst]
    served = _ids(session) + _ids(same[0].json()) + [room for page in pages for room in page]
    assert sorted(len(page) for page in pages) == [3] * 8
    assert len(served) == len(set(served)) == 30
    assert set(served) == set(rooms)


async def test_once_end_returns_no_page_holds_the_room(
    feed_app: httpx.AsyncClient,
    market: Market,
    viewer_headers: Callable[[str], dict[str, str]],
) -> None:
    rooms = await market.populate(merchants=8, rooms_each=3, categories=CATEGORIES)
    viewer = f"v-end-{secrets.token_hex(3)}"
    headers = viewer_headers(viewer)
    for room_id in rooms[:12]:
        session = await start_session(feed_app, headers, viewer, count=1)
        if _ids(session) == [room_id]:
            continue
        # The process has a fresh live snapshot; the room ends; the very next page must not hold it.
        await _page(feed_app, headers, session["session_id"], count=1)
        await market.end(room_id)
        page = await _page(feed_app, headers, session["session_id"], count=50)
        assert room_id not in _ids(page)


async def test_a_page_served_again_drops_the_rooms_ended_since(
    feed_app: httpx.AsyncClient,
    market: Market,
    viewer_headers: Callable[[str], dict[str, str]],
) -> None:
    await market.populate(merchants=5, rooms_each=2, categories=CATEGORIES)
    viewer = f"v-again-{secrets.token_hex(3)}"
    headers = viewer_headers(viewer)
    session = await start_session(feed_app, headers, viewer, count=1)
    page = await _page(feed_app, headers, session["session_id"], count=8, after=session["page_token"])
    gone = next(r for r in _ids(page) if r in market.rooms)  # a room this test may end
    await market.end(gone)
    again = await _page(feed_app, headers, session["session_id"], count=8, after=session["page_token"])
    assert _ids(again) == [r for r in _ids(page) if r != gone]
    assert again["page_token"] == page["page_token"]


@pytest.mark.parametrize("token", ["³", "²³.abc", "١٢.abc", "1_0.abc", "-1.abc", ""])
def test_a_token_of_other_digits_is_a_422_naming_after(token: str) -> None:
    """Found by the OpenAPI fuzz test: '³'.isdigit() is true but int('³') raises (a 500)."""
    with pytest.raises(ValidationFailed) as refused:
        page_number("s1", token)
    assert "after" in refused.value.fields
