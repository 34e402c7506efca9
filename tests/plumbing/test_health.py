"""/healthz, /readyz (names the dependency that is down, recovers), /metrics, /openapi.json, /docs."""

from __future__ import annotations

import asyncio
import time
from dataclasses import replace

import httpx

from roomfeed.settings import Settings
from tests.app_fixtures import client_for, running_app
from tests.support import PrivateServers


async def test_ready_when_all_services_answer(app_client: httpx.AsyncClient) -> None:
    response = await app_client.get("/readyz")
    assert response.status_code == 200, response.text
    assert response.json()["checks"] == {"postgres": "ok", "redis": "ok", "kafka": "ok"}
    assert (await app_client.get("/healthz")).json()["status"] == "ok"


async def _wait_status(client: httpx.AsyncClient, status: int, timeout: float) -> httpx.Response:
    deadline = time.monotonic() + timeout
    while True:
        response = await client.get("/readyz")
        if response.status_code == status or time.monotonic() > deadline:
            return response
        await asyncio.sleep(0.5)


async def test_readyz_names_kafka_when_the_broker_is_down_and_recovers(
    settings: Settings, private_servers: PrivateServers
) -> None:
    broker = private_servers.kafka()
    await asyncio.to_thread(broker.init)
    await asyncio.to_thread(broker.start)
    await asyncio.to_thread(broker.wait_ready)
    private = replace(settings, kafka_bootstrap=broker.bootstrap())
    async for app in running_app(private):
        async with client_for(app) as client:
            assert (await _wait_status(client, 200, 20)).status_code == 200
            await asyncio.to_thread(broker.kill)
            down = await _wait_status(client, 503, 20)
            assert down.status_code == 503
            body = down.json()
            assert body["checks"]["kafka"] == "down"
            assert body["checks"]["postgres"] == "ok" and body["checks"]["redis"] == "ok"
            assert "kafka" in body["error"]["message"]
            await asyncio.to_thread(broker.start)
            await asyncio.to_thread(broker.wait_ready)
            assert (await _wait_status(client, 200, 60)).status_code == 200


async def test_readyz_names_redis_when_it_is_down(
    settings: Settings, private_servers: PrivateServers
) -> None:
    redis_server = private_servers.redis()
    redis_server.start()
    redis_server.wait_ready()
    async for app in running_app(replace(settings, redis_url=redis_server.url())):
        async with client_for(app) as client:
            assert (await _wait_status(client, 200, 10)).status_code == 200
            redis_server.kill()
            down = await _wait_status(client, 503, 10)
            assert down.json()["checks"] == {"postgres": "ok", "redis": "down", "kafka": "ok"}


async def test_metrics_are_prometheus_text(app_client: httpx.AsyncClient) -> None:
    await app_client.get("/healthz")
    response = await app_client.get("/metrics")
    assert response.status_code == 200
    assert "roomfeed_http_requests_total" in response.text


async def test_openapi_and_docs_describe_the_routes(app_client: httpx.AsyncClient) -> None:
    schema = (await app_client.get("/openapi.json")).json()
    assert schema["openapi"].startswith("3.")
    assert "/readyz" in schema["paths"]
    assert "Error" in schema["components"]["schemas"]
    page = await app_client.get("/docs")
    assert page.status_code == 200 and "/readyz" in page.text


async def test_unknown_route_answers_the_error_shape(app_client: httpx.AsyncClient) -> None:
    response = await app_client.get("/v1/no-such-thing")
    assert response.status_code == 404
    assert response.json()["error"]["code"] == "not_found"
    assert response.headers["x-request-id"]


async def test_request_id_is_propagated(app_client: httpx.AsyncClient) -> None:
    response = await app_client.get("/healthz", headers={"X-Request-ID": "abc-123"})
    assert response.headers["x-request-id"] == "abc-123"


async def test_nul_in_path_or_query_is_refused_with_the_error_shape(app_client: httpx.AsyncClient) -> None:
    for url in ("/v1/alliances/all_%00x", "/v1/ops/merchants?after=%00", "/healthz?x=a%00b"):
        response = await app_client.get(url)
        assert response.status_code == 400, url
        assert response.json()["error"]["code"] == "invalid_request"
