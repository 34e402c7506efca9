"""/healthz, /readyz (up while a dependency is down, which it names; in metrics too), /metrics, /openapi.json, /docs."""

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
    assert response.json() == {"status": "ready", "checks": {"postgres": "ok", "redis": "ok", "kafka": "ok"}}
    assert (await app_client.get("/healthz")).json()["status"] == "ok"


async def _wait_body(client: httpx.AsyncClient, status: str, timeout: float) -> httpx.Response:
    deadline = time.monotonic() + timeout
    while True:
        response = await client.get("/readyz")
        if response.json().get("status") == status or time.monotonic() > deadline:
            return response
        await asyncio.sleep(0.5)


def _gauge(text: str, dependency: str) -> float:
    line = next(
        line
        for line in text.splitlines()
        if line.startswith(f'roomfeed_dependency_up{{dependency="{dependency}"}}')
    )
    return float(line.split()[-1])


async def test_readiness_stays_up_with_kafka_down_and_names_it_in_body_and_metrics(
    settings: Settings, private_servers: PrivateServers
) -> None:
    broker = private_servers.kafka()
    await asyncio.to_thread(broker.init)
    await asyncio.to_thread(broker.start)
    await asyncio.to_thread(broker.wait_ready)
    private = replace(settings, kafka_bootstrap=broker.bootstrap())
    async for app in running_app(private):
        async with client_for(app) as client:
            assert (await _wait_body(client, "ready", 20)).json()["status"] == "ready"
            await asyncio.to_thread(broker.kill)
            down = await _wait_body(client, "degraded", 20)
            assert down.status_code == 200, "a dead broker must not take the API out of the load balancer"
            assert down.json()["checks"] == {"postgres": "ok", "redis": "ok", "kafka": "down"}
            scrape = (await client.get("/metrics")).text
            assert _gauge(scrape, "kafka") == 0 and _gauge(scrape, "redis") == 1
            await asyncio.to_thread(broker.start)
            await asyncio.to_thread(broker.wait_ready)
            assert (await _wait_body(client, "ready", 60)).json()["status"] == "ready"
            assert _gauge((await client.get("/metrics")).text, "kafka") == 1


async def test_readiness_is_503_before_start_up_is_done(settings: Settings) -> None:
    from roomfeed.assembly import create_app

    app = create_app(settings, access_log=False)  # lifespan not run: not serving yet
    async with client_for(app) as client:
        response = await client.get("/readyz")
    assert response.status_code == 503 and response.json()["error"]["code"] == "not_ready"


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
    page = await app_client.get("/docs")  # Swagger UI over /openapi.json, its files served here
    assert page.status_code == 200 and "/docs/swagger-ui-bundle.js" in page.text
    assert "default-src 'none'" in page.headers["content-security-policy"]
    bundle = await app_client.get("/docs/swagger-ui-bundle.js")
    assert bundle.status_code == 200 and "SwaggerUIBundle" in bundle.text
    assert (await app_client.get("/docs/LICENSE")).status_code == 404  # only the files the page uses


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
