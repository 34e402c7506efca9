"""The console in headless Chromium against a real `roomfeed serve`: what operators and merchants see.

Debian's chromium (/usr/bin/chromium) driven by Python Playwright; no browser is downloaded. The
tests skip, saying why, only when that browser cannot be launched. Screenshots go to
test-artifacts/ (gitignored).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import httpx
import pytest

from feed.config import RankingConfig
from roomfeed.settings import REPO_ROOT, Settings
from tests.console.conftest import LiveServer, create_key

pytestmark = pytest.mark.browser

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
ARTIFACTS = REPO_ROOT / "test-artifacts"


@pytest.fixture(scope="module")
async def browser() -> AsyncIterator[Any]:
    try:
        from playwright.async_api import async_playwright
    except ImportError:
        pytest.skip("Python Playwright is not installed (pip install playwright)")
    playwright = await async_playwright().start()
    try:
        try:
            chromium = await playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        except Exception as exc:
            pytest.skip(f"chromium cannot be launched from {CHROMIUM}: {str(exc).splitlines()[0]}")
        yield chromium
        await chromium.close()
    finally:
        await playwright.stop()


async def screenshot(page: Any, name: str) -> Path:
    ARTIFACTS.mkdir(exist_ok=True)
    path = ARTIFACTS / f"console-{name}.png"
    await page.screenshot(path=str(path), full_page=True)
    return path


async def sign_in(browser: Any, server: LiveServer, key: str) -> Any:
    page = await browser.new_page(viewport={"width": 1280, "height": 900})
    errors: list[str] = []
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    # HTTP errors the page handles (a 422 it shows per field) are logged by Chromium too; those are not bugs.
    page.on(
        "console",
        lambda msg: (
            errors.append(msg.text)
            if msg.type == "error" and not msg.text.startswith("Failed to load resource")
            else None
        ),
    )
    page.js_errors = errors
    await page.goto(server.url + "/console")
    await page.fill("#key", key)
    await page.click("#sign-in-form button[type=submit]")
    await page.wait_for_selector("#nav a")
    return page


async def merchant_with_live_room(client: httpx.AsyncClient, operator_key: str, name: str) -> dict[str, Any]:
    made = (
        await client.post(
            "/v1/ops/merchants",
            json={"name": name, "category": "beauty"},
            headers={"Authorization": f"Bearer {operator_key}"},
        )
    ).json()
    headers = {"Authorization": f"Bearer {made['key']}"}
    room = (
        await client.post(
            "/v1/rooms", json={"title": f"{name} spring live", "category": "beauty"}, headers=headers
        )
    ).json()
    assert (
        await client.post(
            f"/v1/rooms/{room['room_id']}/live",
            json={"stream_url": "https://live.example/console.m3u8"},  # a room goes live with a stream
            headers=headers,
        )
    ).status_code == 200
    code = (await client.post("/v1/codes", json={}, headers=headers)).json()
    return {**made, "room": room, "code": code["code"], "headers": headers}


async def test_operator_changes_a_weight_and_the_feed_uses_the_new_config_version(
    browser: Any, live_server: LiveServer, settings: Settings, viewer_token: Callable[[str], str]
) -> None:
    operator_key = await create_key(settings, "operator")
    async with httpx.AsyncClient(base_url=live_server.url, timeout=10) as client:
        await merchant_with_live_room(client, operator_key, "Glow Beauty")
        page = await sign_in(browser, live_server, operator_key)
        assert await page.inner_text("#who") == "operator"
        await page.click("a[data-view=config]")
        await page.wait_for_selector("#cfg-w_popularity")

        # A bad value is refused and the field says why; nothing is saved.
        await page.fill("#cfg-w_model", "99")
        await page.click("#config-form button[type=submit]")
        error = page.locator('.field[data-field="w_model"] .field-error')
        await error.wait_for()
        assert "at most 10" in await error.inner_text()
        await screenshot(page, "config-invalid")

        await page.fill("#cfg-w_model", "1")
        await page.fill("#cfg-w_popularity", "0.9")
        await page.fill("#cfg-note", "browser test: more popularity")
        await page.click("#config-form button[type=submit]")
        saved = page.locator("#config-status .ok")
        await saved.wait_for()
        version = int((await saved.inner_text()).split("version")[1].strip(" ."))
        assert version >= 1
        history = await page.inner_text("table.grid")
        assert f"w_popularity: {RankingConfig().w_popularity:g} → 0.9" in history
        await screenshot(page, "config-saved")

        # The feed API (another process) serves with the new config version once it hot-reloads.
        token = viewer_token("v-browser-1")
        deadline = time.monotonic() + 10
        while True:
            session = await client.post(
                "/v1/sessions",
                json={"viewer_id": "v-browser-1"},
                headers={"Authorization": f"Bearer {token}"},
            )
            assert session.status_code == 201, session.text
            if session.json()["config_version"] == version or time.monotonic() > deadline:
                break
            await asyncio.sleep(0.5)
        assert session.json()["config_version"] == version
        assert page.js_errors == []
        await page.close()


async def test_operator_dashboard_shows_live_numbers_and_a_chart(
    browser: Any, live_server: LiveServer, settings: Settings
) -> None:
    operator_key = await create_key(settings, "operator")
    async with httpx.AsyncClient(base_url=live_server.url, timeout=10) as client:
        await merchant_with_live_room(client, operator_key, "Dash Foods")
    page = await sign_in(browser, live_server, operator_key)
    rooms_live = page.locator('.stat[data-metric="rooms_live"] .value')
    await rooms_live.wait_for()
    assert int(await rooms_live.inner_text()) >= 1
    # The API samples every 10 s; the chart draws a line once a sample exists.
    await page.wait_for_selector("#chart-audience path.chart-line", state="attached", timeout=30_000)
    lines = await page.eval_on_selector_all(
        "#chart-audience path.chart-line", "ps => ps.map(p => p.getAttribute('d'))"
    )
    assert len(lines) == 2 and all(d.startswith("M") for d in lines)  # viewers now and rooms live
    await screenshot(page, "dashboard")
    assert page.js_errors == []
    await page.close()


async def test_merchant_sees_only_its_own_rooms_and_codes(
    browser: Any, live_server: LiveServer, settings: Settings
) -> None:
    operator_key = await create_key(settings, "operator")
    async with httpx.AsyncClient(base_url=live_server.url, timeout=10) as client:
        mine = await merchant_with_live_room(client, operator_key, "Mine Apparel")
        theirs = await merchant_with_live_room(client, operator_key, "Theirs Jewelry")
    page = await sign_in(browser, live_server, mine["key"])
    assert mine["merchant_id"] in await page.inner_text("#who")
    nav = await page.inner_text("#nav")
    assert "Ranking config" not in nav and "Models" not in nav
    await page.wait_for_selector("#ledger-stats")
    shop = await page.inner_text("#view")
    assert mine["room"]["title"] in shop
    assert theirs["room"]["title"] not in shop and theirs["merchant_id"] not in shop
    await screenshot(page, "merchant-shop")

    await page.click("a[data-view=codes]")
    await page.wait_for_selector("figure.code img")
    codes = await page.inner_text("#codes")
    assert mine["code"] in codes and theirs["code"] not in codes
    size = await page.eval_on_selector("figure.code img", "img => img.naturalWidth")
    assert size > 0  # the QR image really loaded
    await screenshot(page, "merchant-codes")

    # Going around the page: another merchant's ledger is not found for this key.
    async with httpx.AsyncClient(base_url=live_server.url, timeout=10) as client:
        other = await client.get(f"/v1/merchants/{theirs['merchant_id']}/ledger", headers=mine["headers"])
        assert other.status_code == 404
    assert page.js_errors == []
    await page.close()


async def test_operator_starts_an_experiment_and_sees_its_variants(
    browser: Any, live_server: LiveServer, settings: Settings
) -> None:
    operator_key = await create_key(settings, "operator")
    page = await sign_in(browser, live_server, operator_key)
    await page.click("a[data-view=experiments]")
    await page.wait_for_selector("#experiment-form")
    await page.fill("#exp-name", "popularity-push")
    rows = page.locator(".variant-row")
    await rows.nth(1).locator("input[name=variant-overrides]").fill("w_popularity=11")
    await page.click("#experiment-form button[type=submit]")
    refused = page.locator("#view .error")
    await refused.wait_for()
    assert "variants.1.config.w_popularity" in await refused.inner_text()  # the API names the bad field

    await rows.nth(1).locator("input[name=variant-overrides]").fill("w_popularity=0.8")
    await page.click("#experiment-form button[type=submit]")
    await page.wait_for_selector("text=popularity-push · running")
    listed = await page.inner_text("#view")
    assert "treatment" in listed and "w_popularity=0.8" in listed and "50.0%" in listed
    assert await page.locator("#view svg.chart").count() >= 5  # one interval chart per metric
    await screenshot(page, "experiments")
    await page.click("text=Stop")  # viewers go back to the base config; later tests see no experiment
    await page.wait_for_selector("text=popularity-push · stopped")
    assert page.js_errors == []
    await page.close()


async def test_operator_sees_what_a_viewer_would_see_and_why(
    browser: Any, live_server: LiveServer, settings: Settings
) -> None:
    """The console's "Viewer's feed": the operators' explain for one viewer, each room with its score
    and the terms that make it; a bad viewer id is refused naming the field."""
    operator_key = await create_key(settings, "operator")
    async with httpx.AsyncClient(base_url=live_server.url, timeout=10) as client:
        shop = await merchant_with_live_room(client, operator_key, "Explained Tea")
    page = await sign_in(browser, live_server, operator_key)
    await page.click("a[data-view=explain]")
    await page.wait_for_selector("#explain-form")
    await page.fill("#explain-viewer", "v-explained")
    await page.fill("#explain-count", "50")
    await page.click("#explain-form button[type=submit]")
    row = page.locator(f'#explain-result tr[data-room="{shop["room"]["room_id"]}"]')
    await row.wait_for(timeout=30_000)
    cells = await row.locator("td").all_inner_texts()
    headers = await page.locator("#explain-result th").all_inner_texts()
    explained = dict(zip(headers, cells, strict=True))
    assert float(explained["score"]) == float(explained["score"])  # a number, not "–"
    assert explained["placed by"] in {"rank", "exploration"} and explained["merchant"] == shop["merchant_id"]
    assert {"score", "LightFM", "heat"} <= set(headers) and len(headers) > 7  # the terms have columns
    await screenshot(page, "explain")

    await page.fill("#explain-viewer", "not a viewer id!")
    await page.click("#explain-form button[type=submit]")
    refused = page.locator("#view .error")
    await refused.wait_for()
    assert "viewer" in await refused.inner_text()
    assert page.js_errors == []
    await page.close()


async def test_the_api_docs_page_makes_a_call_from_the_browser(browser: Any, live_server: LiveServer) -> None:
    """/docs is Swagger UI served by roomfeed itself (no CDN) under its own CSP; it reads the served
    document and "Try it out" → "Execute" calls the API from the page."""
    page = await browser.new_page()
    failed: list[str] = []
    page.on("requestfailed", lambda r: failed.append(r.url))
    outside: list[str] = []
    page.on("request", lambda r: outside.append(r.url) if not r.url.startswith(live_server.url) else None)
    csp_errors: list[str] = []
    page.on("console", lambda m: csp_errors.append(m.text) if "Content Security Policy" in m.text else None)
    response = await page.goto(f"{live_server.url}/docs")
    assert response is not None and response.status == 200
    assert "default-src 'none'" in response.headers["content-security-policy"]
    operation = page.locator("#operations-system-healthz")
    await operation.wait_for(timeout=90_000)  # Swagger UI renders 62 operations; the host is shared
    await operation.locator(".opblock-summary").click()
    await operation.locator("button.try-out__btn").click()
    await operation.locator("button.execute").click()
    status = operation.locator(".live-responses-table tbody .response-col_status").first
    await status.wait_for(timeout=30_000)
    assert (await status.inner_text()).strip() == "200"
    body = operation.locator(".live-responses-table tbody .response-col_description .microlight").first
    assert '"status": "ok"' in (await body.inner_text()).replace("\n", " ")
    await screenshot(page, "api-docs-call")
    assert outside == [] and failed == [] and csp_errors == []
    await page.close()
