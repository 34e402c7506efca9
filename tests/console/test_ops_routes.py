"""The console's own routes on the real app: ops auth, metrics over time, the page and its headers."""

from __future__ import annotations

import time

import httpx

from roomfeed.settings import REPO_ROOT, Settings
from tests.console.conftest import create_key


def bearer(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


async def test_ops_routes_need_an_operator_key(app_client: httpx.AsyncClient, settings: Settings) -> None:
    merchant_key = await create_key(settings, "merchant", "mer_console_auth")
    for path in (
        "/v1/ops/metrics",
        "/v1/ops/metrics/history",
        "/v1/ops/metrics/alliance-history",
        "/v1/ops/models",
    ):
        assert (await app_client.get(path)).status_code == 401, path
        denied = await app_client.get(path, headers=bearer(merchant_key))
        assert denied.status_code == 403, path
        assert denied.json()["error"]["code"] == "forbidden"
    promote = await app_client.post("/v1/ops/models/v1/promote", headers=bearer(merchant_key))
    assert promote.status_code == 403


async def test_metrics_answer_with_every_dashboard_number(
    app_client: httpx.AsyncClient, operator_key: str
) -> None:
    response = await app_client.get("/v1/ops/metrics", headers=bearer(operator_key))
    assert response.status_code == 200
    body = response.json()
    for name in (
        "rooms_live",
        "viewers_now",
        "enter_rate",
        "avg_dwell_s",
        "swipe_away_rate",
        "conversion_per_visit",
        "conversion_per_visitor",
        "gmv_per_1k_impressions",
        "alliance",
        "consumer_lag",
        "unavailable",
        "alliance_accounts",
    ):
        assert name in body, name


async def test_metrics_history_returns_the_sampled_series(
    app_client: httpx.AsyncClient, operator_key: str
) -> None:
    console = app_client._transport.app.services.console  # type: ignore[attr-defined]
    past = time.time() - 100 * 60  # periods the background sampler (sampling "now") never writes
    assert await console.sampler.sample_once(past)
    assert await console.sampler.sample_once(past + 20)
    assert not await console.sampler.sample_once(past + 20)  # a second writer in the same period is a no-op
    response = await app_client.get("/v1/ops/metrics/history?minutes=120", headers=bearer(operator_key))
    assert response.status_code == 200
    samples = response.json()["samples"]
    assert len(samples) >= 2
    assert [s["at"] for s in samples] == sorted(s["at"] for s in samples)
    assert "enter_rate" in samples[-1] and "rooms_live" in samples[-1]
    bad = await app_client.get("/v1/ops/metrics/history?minutes=0", headers=bearer(operator_key))
    assert bad.status_code == 422 and "minutes" in bad.json()["error"]["fields"]


async def test_console_me_tells_a_merchant_apart_from_an_operator(
    app_client: httpx.AsyncClient, operator_key: str, settings: Settings
) -> None:
    merchant_key = await create_key(settings, "merchant", "mer_console_me")
    me = (await app_client.get("/v1/console/me", headers=bearer(merchant_key))).json()
    assert me["role"] == "merchant" and me["merchant_id"] == "mer_console_me"
    assert me["alliance_history"] == []
    op = (await app_client.get("/v1/console/me", headers=bearer(operator_key))).json()
    assert op == {"role": "operator", "merchant_id": None}
    assert (await app_client.get("/v1/console/me", headers=bearer("rfk_nothing_real"))).status_code == 401


async def test_console_page_is_served_with_security_headers(app_client: httpx.AsyncClient) -> None:
    page = await app_client.get("/console")
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    assert "/console/static/console.js" in page.text
    for response in (page, await app_client.get("/console/static/console.js")):
        assert "default-src 'self'" in response.headers["content-security-policy"]
        assert "frame-ancestors 'none'" in response.headers["content-security-policy"]
        assert response.headers["x-frame-options"] == "DENY"
        assert response.headers["x-content-type-options"] == "nosniff"
        assert response.headers["referrer-policy"] == "no-referrer"
    script = await app_client.get("/console/static/charts.js")
    assert script.status_code == 200 and "javascript" in script.headers["content-type"]


async def test_console_serves_only_its_own_files(app_client: httpx.AsyncClient) -> None:
    assert (await app_client.get("/console/static/nothing.js")).status_code == 404
    assert (await app_client.get("/console/static/..%2Fhttp.py")).status_code in (404, 422)
    assert (await app_client.get("/console/static/.hidden")).status_code in (404, 422)


async def test_model_plot_comes_from_the_evaluation_report(
    app_client: httpx.AsyncClient, operator_key: str, settings: Settings
) -> None:
    path = "/v1/ops/models/m-test/plot.png"
    assert (await app_client.get(path)).status_code == 401
    report = settings.data_dir / "reports" / "eval" / "eval.png"
    if not report.exists() and not (REPO_ROOT / "reports" / "eval" / "eval.png").exists():
        missing = await app_client.get(path, headers=bearer(operator_key))
        assert missing.status_code == 404 and "roomfeed evaluate" in missing.json()["error"]["message"]
    report.parent.mkdir(parents=True, exist_ok=True)
    png = b"\x89PNG\r\n\x1a\n" + b"\x00" * 32
    (settings.models_dir / "m-test").mkdir(parents=True, exist_ok=True)
    (settings.models_dir / "m-test" / "evaluation.png").write_bytes(png)
    served = await app_client.get(path, headers=bearer(operator_key))
    assert served.status_code == 200 and served.headers["content-type"] == "image/png"
    assert served.content == png
    bad = await app_client.get("/v1/ops/models/bad%20version/plot.png", headers=bearer(operator_key))
    assert bad.status_code == 404 and bad.json()["error"]["code"] == "not_found"  # names no version
