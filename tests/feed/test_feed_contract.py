"""The feed's contract for an app: only rooms live now on a page (replays are their own list or a
session's entry_replay), a room goes live only with a stream to play, nothing internal on a page."""

from __future__ import annotations

import secrets
from collections.abc import Callable

from tests.feed.conftest import AppClient, Market, start_session

ViewerHeaders = Callable[[str], dict[str, str]]


async def test_a_room_cannot_go_live_without_a_stream_url(feed_app: AppClient, market: Market) -> None:
    merchant = await market.merchant()
    headers = market.merchants[merchant]
    room = (
        await feed_app.post("/v1/rooms", json={"title": "no stream", "category": "beauty"}, headers=headers)
    ).json()
    r = await feed_app.post(f"/v1/rooms/{room['room_id']}/live", headers=headers)
    assert r.status_code == 409, r.text
    assert r.json()["error"]["code"] == "stream_url_required" and "stream_url" in r.json()["error"]["fields"]
    assert (await feed_app.get(f"/v1/rooms/{room['room_id']}", headers=headers)).json()[
        "status"
    ] == "scheduled"
    r = await feed_app.post(
        f"/v1/rooms/{room['room_id']}/live", json={"stream_url": "ftp://nope"}, headers=headers
    )
    assert r.status_code == 422 and "stream_url" in r.json()["error"]["fields"]
    url = f"https://live.example/{secrets.token_hex(4)}.m3u8"
    r = await feed_app.post(f"/v1/rooms/{room['room_id']}/live", json={"stream_url": url}, headers=headers)
    assert r.status_code == 200, r.text
    assert r.json()["status"] == "live" and r.json()["stream_url"] == url


async def test_replays_are_never_mixed_into_live_rooms(
    feed_app: AppClient, market: Market, viewer_headers: ViewerHeaders
) -> None:
    """Fewer than 20 rooms live used to bring ended rooms into the page as replays; now a page holds
    only live rooms, replays are listed by GET /v1/replays (newest first, paged), and a deep link to an
    ended room comes back apart as the session's entry_replay."""
    merchant = await market.merchant()
    live = await market.live_room(merchant, "food")
    ended = [await market.live_room(merchant, "food") for _ in range(3)]
    for n, room_id in enumerate(ended):
        await market.end(room_id, replay_url=f"https://vod.example/{room_id}-{n}.m3u8")
    viewer = f"v-replays-{secrets.token_hex(3)}"
    headers = viewer_headers(viewer)
    session = await start_session(feed_app, headers, viewer, count=50)
    pages = [session]
    while pages[-1]["rooms"]:
        r = await feed_app.get(
            f"/v1/sessions/{session['session_id']}/feed",
            params={"count": 50, "after": pages[-1]["page_token"]},
            headers=headers,
        )
        assert r.status_code == 200, r.text
        pages.append(r.json())
    served = [room for page in pages for room in page["rooms"]]
    assert live in {room["room_id"] for room in served}
    assert not {room["room_id"] for room in served} & set(ended)
    assert all(room["replay"] is False for room in served)

    listed: list[str] = []
    after: str | None = None
    while True:
        params: dict[str, str | int] = {"limit": 2, **({"after": after} if after else {})}
        r = await feed_app.get("/v1/replays", params=params, headers=headers)
        assert r.status_code == 200, r.text
        body = r.json()
        assert all(replay["replay"] is True for replay in body["replays"])
        listed += [replay["room_id"] for replay in body["replays"]]
        after = body["next"]
        if after is None:
            break
    assert [room_id for room_id in listed if room_id in ended] == ended[::-1]  # newest first, each once
    assert len(listed) == len(set(listed))

    deep = await start_session(feed_app, headers, viewer, {"room_id": ended[0]})
    assert deep["entry_room_id"] is None
    assert deep["entry_replay"]["room_id"] == ended[0] and deep["entry_replay"]["replay"] is True
    assert deep["entry_replay"]["stream_url"].startswith("https://vod.example/")
    assert ended[0] not in {room["room_id"] for room in deep["rooms"]}


async def test_a_page_carries_nothing_internal(
    feed_app: AppClient, market: Market, viewer_headers: ViewerHeaders
) -> None:
    await market.live_room(await market.merchant(), "home")
    viewer = f"v-internal-{secrets.token_hex(3)}"
    session = await start_session(feed_app, viewer_headers(viewer), viewer, count=5)
    allowed = {
        "room_id",
        "merchant_id",
        "title",
        "category",
        "stream_url",
        "viewers_now",
        "boosted",
        "position",
        "replay",
        "tags",
        "price_band",
        "format",
        "started_at",
        "entry",
    }
    assert session["rooms"] and all(set(room) <= allowed for room in session["rooms"])
