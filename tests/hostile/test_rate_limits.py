"""Rate limits: token buckets in the session's real Redis, per viewer, per device and per merchant key.

The limits are module constants (roomfeed.ratelimit); tests lower them with monkeypatch the way an
operator would configure them, so a bucket drains in a handful of requests."""

from __future__ import annotations

import asyncio
import secrets
from collections.abc import Callable
from dataclasses import replace

import httpx
import pytest
from redis.asyncio import Redis

from roomfeed import ratelimit
from roomfeed.app import Api
from roomfeed.assembly import Services
from roomfeed.errors import RateLimited
from roomfeed.ratelimit import Limit, RateLimiter
from roomfeed.redis_lane import RedisLane
from roomfeed.settings import Settings
from tests.app_fixtures import bearer
from tests.hostile.conftest import Tenant
from tests.support import free_port


def _viewer() -> str:
    return f"rl_{secrets.token_hex(4)}"


async def _post_events(client: httpx.AsyncClient, token: str, **headers: str) -> httpx.Response:
    return await client.post("/v1/events", json=[], headers={**bearer(token), **headers})


def _assert_rate_limited(response: httpx.Response) -> None:
    assert response.status_code == 429, response.text
    assert int(response.headers["retry-after"]) >= 1
    error = response.json()["error"]
    assert error["code"] == "rate_limited" and error["message"]


async def test_viewer_over_budget_on_ingest_gets_429_with_retry_after(
    app_client: httpx.AsyncClient, viewer_token: Callable[[str], str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(ratelimit, "VIEWER_LIMIT", Limit(per_second=1.0, burst=3))
    token = viewer_token(_viewer())
    first = [await _post_events(app_client, token) for _ in range(3)]
    assert all(r.status_code != 429 for r in first), [r.text for r in first]
    refused = await _post_events(app_client, token)
    _assert_rate_limited(refused)
    # another viewer is not affected
    assert (await _post_events(app_client, viewer_token(_viewer()))).status_code != 429
    # after Retry-After the viewer is served again
    await asyncio.sleep(int(refused.headers["retry-after"]))
    assert (await _post_events(app_client, token)).status_code != 429


async def test_one_device_farming_many_viewers_is_limited_by_device(
    app_client: httpx.AsyncClient, viewer_token: Callable[[str], str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(ratelimit, "DEVICE_LIMIT", Limit(per_second=0.5, burst=4))
    device = {"X-Device-ID": f"dev-{secrets.token_hex(4)}"}
    viewers = [viewer_token(_viewer()) for _ in range(4)]
    for token in viewers:  # four accounts, one request each: the device's burst
        assert (await _post_events(app_client, token, **device)).status_code != 429
    _assert_rate_limited(await _post_events(app_client, viewer_token(_viewer()), **device))
    # the same viewers from their own devices are fine
    assert (await _post_events(app_client, viewers[0], **{"X-Device-ID": "other-phone"})).status_code != 429


async def test_garbage_device_header_is_still_limited_without_error(
    app_client: httpx.AsyncClient, viewer_token: Callable[[str], str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(ratelimit, "DEVICE_LIMIT", Limit(per_second=0.5, burst=2))
    device = {"X-Device-ID": "x" * 300 + " ; DROP"}
    statuses = [
        (await _post_events(app_client, viewer_token(_viewer()), **device)).status_code for _ in range(3)
    ]
    assert statuses[:2] == [202, 202] and statuses[2] == 429


def test_a_device_header_names_its_bucket_only_when_the_whole_value_is_a_plain_id() -> None:
    assert ratelimit.device_bucket_id("dev-1.a:b_c") == "dev-1.a:b_c"
    # Anything else, a trailing line break included (`$` would have let it through), is hashed.
    for odd in ("dev-1\n", "dev 1", "x" * 65, ""):
        bucket = ratelimit.device_bucket_id(odd)
        assert bucket.startswith("h") and len(bucket) == 33 and bucket != odd


async def test_merchant_key_over_budget_gets_429_and_other_merchant_is_unaffected(
    app_client: httpx.AsyncClient, merchant: Tenant, other_merchant: Tenant, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(ratelimit, "MERCHANT_KEY_LIMIT", Limit(per_second=0.5, burst=3))
    for _ in range(3):
        r = await app_client.get("/v1/stores", headers=merchant.headers)
        if r.status_code == 429:  # earlier requests of this session may have spent part of the burst
            break
        assert r.status_code == 200, r.text
    _assert_rate_limited(await app_client.post("/v1/stores", json={"name": "x"}, headers=merchant.headers))
    assert (await app_client.get("/v1/stores", headers=other_merchant.headers)).status_code == 200


async def test_operators_are_not_rate_limited(
    app_client: httpx.AsyncClient, operator_key: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(ratelimit, "MERCHANT_KEY_LIMIT", Limit(per_second=0.1, burst=1))
    monkeypatch.setattr(ratelimit, "VIEWER_LIMIT", Limit(per_second=0.1, burst=1))
    statuses = {
        (await app_client.get("/v1/ops/merchants", headers=bearer(operator_key))).status_code
        for _ in range(5)
    }
    assert statuses == {200}


async def _charged_in_turn(limiters: list[RateLimiter], requests: int, burst: int) -> list[bool]:
    """`requests` concurrent charges of one fresh bucket, taking the limiters in turn: which went through."""
    bucket = [(f"test:{secrets.token_hex(4)}", Limit(per_second=0.01, burst=burst))]

    async def attempt(i: int) -> bool:
        try:
            await limiters[i % len(limiters)].charge(bucket)
            return True
        except RateLimited:
            return False

    return list(await asyncio.gather(*(attempt(i) for i in range(requests))))


async def test_buckets_are_shared_by_api_processes_and_atomic(settings: Settings) -> None:
    """Two limiters with their own connections (two API processes) draw from one bucket; 40
    concurrent requests on a burst of 10 get exactly 10 through."""
    first, second = Redis.from_url(settings.redis_url), Redis.from_url(settings.redis_url)
    try:
        limiters = [RateLimiter(first), RateLimiter(second)]
        outcomes = await _charged_in_turn(limiters, 40, burst=10)
        assert sum(outcomes) == 10
    finally:
        await first.aclose()
        await second.aclose()


async def test_a_limiter_on_the_lane_shares_the_buckets_atomically(settings: Settings) -> None:
    """The API's limiter charges on the Redis lane (one hiredis round trip): it and a redis-py limiter
    (another process) draw from one bucket, 40 concurrent requests on a burst of 10 get exactly 10
    through, and a Redis that forgot the script (SCRIPT FLUSH) is sent its text."""
    client, lane = Redis.from_url(settings.redis_url), RedisLane(settings.redis_url)
    try:
        await client.script_flush()
        limiters = [RateLimiter(client, lane), RateLimiter(client)]
        outcomes = await _charged_in_turn(limiters, 40, burst=10)
        assert sum(outcomes) == 10
        assert sum(outcomes[0::2]) >= 1  # the lane's limiter charged too
        assert not limiters[0].degraded
    finally:
        await lane.close()
        await client.aclose()


async def test_a_limiter_on_a_dead_lane_degrades_open(settings: Settings) -> None:
    dead = RedisLane(f"redis://127.0.0.1:{free_port()}/0", connect_timeout=0.2)
    client = Redis.from_url(settings.redis_url)
    try:
        limiter = RateLimiter(client, dead)
        bucket = [(f"test:{secrets.token_hex(4)}", Limit(per_second=0.01, burst=1))]
        for _ in range(3):
            await limiter.charge(bucket)  # unlimited: nothing answers
        assert limiter.degraded
    finally:
        await dead.close()
        await client.aclose()


async def test_refused_request_does_not_drain_its_other_buckets(settings: Settings) -> None:
    client = Redis.from_url(settings.redis_url)
    try:
        limiter = RateLimiter(client)
        tight = (f"test:t{secrets.token_hex(4)}", Limit(per_second=0.01, burst=1))
        roomy = (f"test:r{secrets.token_hex(4)}", Limit(per_second=0.01, burst=3))
        await limiter.charge([tight, roomy])
        for _ in range(5):
            with pytest.raises(RateLimited):
                await limiter.charge([tight, roomy])
        await limiter.charge([roomy])
        await limiter.charge([roomy])  # roomy still had 2 tokens: the refusals took none
        with pytest.raises(RateLimited):
            await limiter.charge([roomy])
    finally:
        await client.aclose()


async def test_limits_degrade_open_when_redis_is_down(
    app: Api[Services],
    app_client: httpx.AsyncClient,
    viewer_token: Callable[[str], str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Nothing listens on the limiter's Redis: requests are served unlimited, and quickly."""
    dead = Redis.from_url(f"redis://127.0.0.1:{free_port()}/0", socket_connect_timeout=0.5)
    monkeypatch.setattr(ratelimit, "VIEWER_LIMIT", Limit(per_second=0.01, burst=1))
    monkeypatch.setattr(app, "guard", replace(app.guard, limiter=RateLimiter(dead)))
    token = viewer_token(_viewer())
    statuses = [(await _post_events(app_client, token)).status_code for _ in range(5)]
    assert statuses == [202] * 5
    assert app.guard.limiter.degraded
    await dead.aclose()
