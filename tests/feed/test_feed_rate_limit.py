"""The feed page's rate-limit charge rides the session's Redis round trip: same limits, same 429, nothing served."""

from __future__ import annotations

import secrets
from collections.abc import Callable

import pytest

from feed.sessions import served_key
from roomfeed import ratelimit
from roomfeed.ratelimit import Limit
from tests.feed.conftest import AppClient, Market, start_session


async def test_viewer_over_budget_on_the_feed_gets_429_and_is_served_nothing(
    feed_app: AppClient,
    market: Market,
    viewer_headers: Callable[[str], dict[str, str]],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    await market.populate(2, 5, ("beauty", "food"))
    viewer = f"v-rl-{secrets.token_hex(3)}"
    headers = viewer_headers(viewer)
    session = await start_session(feed_app, headers, viewer, count=2)
    monkeypatch.setattr(ratelimit, "VIEWER_LIMIT", Limit(per_second=0.01, burst=2))
    url = f"/v1/sessions/{session['session_id']}/feed"
    first = [await feed_app.get(url, params={"count": 1}, headers=headers) for _ in range(2)]
    assert [r.status_code for r in first] == [200, 200], [r.text for r in first]
    redis = feed_app.app.resources.redis
    served_before = await redis.smembers(served_key(session["session_id"]))
    refused = await feed_app.get(url, params={"count": 1}, headers=headers)
    assert refused.status_code == 429, refused.text
    assert int(refused.headers["retry-after"]) >= 1
    assert refused.json()["error"]["code"] == "rate_limited"
    assert await redis.smembers(served_key(session["session_id"])) == served_before
    # a malformed session id is charged too (429, not a free 404)
    assert (await feed_app.get("/v1/sessions/not an id/feed", headers=headers)).status_code == 429
    # another viewer is not affected
    other = f"v-rl-{secrets.token_hex(3)}"
    other_session = await start_session(feed_app, viewer_headers(other), other, count=1)
    r = await feed_app.get(f"/v1/sessions/{other_session['session_id']}/feed", headers=viewer_headers(other))
    assert r.status_code == 200, r.text
