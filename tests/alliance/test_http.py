"""The alliance routes: alliances and membership, codes and QR images, ledger tenancy, the ops overview."""

from __future__ import annotations

import io

import asyncpg
import httpx
from PIL import Image

from alliance.codes import CodeBook
from roomfeed.settings import Settings
from tests.alliance.conftest import MerchantFactory, rooms_catalog

TERMS = {
    "exchange_rate": 2,
    "min_dwell_ms": 10000,
    "boost_share_cap": 0.2,
    "daily_earning_cap": 500,
    "relevance_floor": 0.2,
    "attribution_window_h": 24,
}


async def test_alliance_lifecycle_create_invite_join_leave(
    client: httpx.AsyncClient, new_merchant: MerchantFactory
) -> None:
    a, ha = await new_merchant()
    b, hb = await new_merchant()
    c, hc = await new_merchant()
    r = await client.post("/v1/alliances", json={"name": "Street shops", "terms": TERMS}, headers=ha)
    assert r.status_code == 201, r.text
    alliance = r.json()
    aid = alliance["alliance_id"]
    assert alliance["terms"]["exchange_rate"] == 2 and alliance["members"][0]["merchant_id"] == a
    assert (await client.get(f"/v1/alliances/{aid}", headers=hb)).status_code == 404  # not a member yet
    assert (
        await client.post(f"/v1/alliances/{aid}/members", json={"merchant_id": b}, headers=hb)
    ).status_code == 404
    r = await client.post(f"/v1/alliances/{aid}/members", json={"merchant_id": b}, headers=ha)
    assert r.status_code == 201
    assert (await client.post(f"/v1/alliances/{aid}/join", headers=hc)).status_code == 404  # not invited
    r = await client.post(f"/v1/alliances/{aid}/join", headers=hb)
    assert r.status_code == 200
    assert {m["merchant_id"]: m["status"] for m in r.json()["members"]} == {a: "active", b: "active"}
    assert (await client.delete(f"/v1/alliances/{aid}/members/{a}", headers=hb)).status_code == 403
    assert (await client.delete(f"/v1/alliances/{aid}/members/{b}", headers=hb)).status_code == 204
    assert (await client.get(f"/v1/alliances/{aid}", headers=hb)).status_code == 404


async def test_bad_terms_name_each_field(client: httpx.AsyncClient, new_merchant: MerchantFactory) -> None:
    _, ha = await new_merchant()
    r = await client.post(
        "/v1/alliances",
        json={"terms": {"exchange_rate": 0, "boost_share_cap": 2, "min_dwell_ms": "10s"}},
        headers=ha,
    )
    assert r.status_code == 422
    fields = r.json()["error"]["fields"]
    assert set(fields) == {"name", "terms.exchange_rate", "terms.boost_share_cap", "terms.min_dwell_ms"}


async def test_code_is_issued_listed_counted_and_rendered_as_a_real_qr(
    client: httpx.AsyncClient, new_merchant: MerchantFactory, migrated: Settings, pool: asyncpg.Pool
) -> None:
    m, hm = await new_merchant()
    r = await client.post("/v1/codes", headers=hm)  # no body: a merchant-level code
    assert r.status_code == 201, r.text
    code, url = r.json()["code"], r.json()["url"]
    assert url.endswith("/c/" + code) and url.startswith("http")
    png = await client.get(f"/v1/codes/{code}.png")
    assert png.status_code == 200 and png.headers["content-type"] == "image/png"
    image = Image.open(io.BytesIO(png.content))
    assert image.size[0] == image.size[1] and image.size[0] > 100
    landing = await client.get(f"/c/{code}", headers={"Accept": "application/json"})
    assert landing.json()["merchant_id"] == m
    book = CodeBook(migrated, pool)
    assert await book.record_open(code, device="device:a") == 1  # a session started from it (the feed)
    assert await book.record_open(code, device="device:a") == 1  # the same device again
    assert await book.record_open(code, device="device:b") == 2
    listed = (await client.get("/v1/codes", headers=hm)).json()["codes"]
    assert [(c["code"], c["opens"]) for c in listed] == [(code, 2)]


async def test_the_qr_landing_page_opens_the_app_and_counts_once_per_device(
    client: httpx.AsyncClient, new_merchant: MerchantFactory
) -> None:
    _, hm = await new_merchant()
    code = (await client.post("/v1/codes", json={}, headers=hm)).json()["code"]
    phone = httpx.AsyncClient(transport=client._transport, base_url=str(client.base_url))
    page = await phone.get(f"/c/{code}", headers={"Accept": "text/html,*/*"})
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    assert f'data-app="roomfeed://c/{code}"' in page.text and "Open in the app" in page.text
    csp = page.headers["content-security-policy"]
    assert "default-src 'none'" in csp and "script-src 'sha256-" in csp
    assert "rf_dev" in page.cookies
    for _ in range(3):  # the same phone scans again (its cookie comes back)
        assert (await phone.get(f"/c/{code}")).status_code == 200
    other_phone = httpx.AsyncClient(transport=client._transport, base_url=str(client.base_url))
    await other_phone.get(f"/c/{code}")
    listed = (await client.get("/v1/codes", headers=hm)).json()["codes"]
    assert [c["opens"] for c in listed if c["code"] == code] == [2]
    spelled_otherwise = code[:-1] + ("A" if code[-1] != "A" else "B")
    assert (await phone.get(f"/c/{spelled_otherwise}")).status_code == 404
    listed = (await client.get("/v1/codes", headers=hm)).json()["codes"]
    assert [c["code"] for c in listed] == [code]


async def test_forged_code_gets_no_qr_and_no_landing(
    client: httpx.AsyncClient, new_merchant: MerchantFactory
) -> None:
    _, hm = await new_merchant()
    code = (await client.post("/v1/codes", json={}, headers=hm)).json()["code"]
    tampered = code[:-2] + ("AA" if code[-2:] != "AA" else "BB")
    assert (await client.get(f"/v1/codes/{tampered}.png")).status_code == 404
    assert (await client.get(f"/c/{tampered}")).status_code == 404


async def test_code_for_another_merchants_store_is_refused(
    client: httpx.AsyncClient, new_merchant: MerchantFactory, pool: object
) -> None:
    catalog = rooms_catalog(pool)
    a, ha = await new_merchant()
    b, _ = await new_merchant()
    if catalog is None:
        r = await client.post("/v1/codes", json={"store_id": "sto_0000000000000001"}, headers=ha)
        assert r.status_code == 503  # cannot be checked without the rooms domain: refused, not trusted
        return
    own = await catalog.create_store(a, "Flagship", "Hangzhou", None)
    other = await catalog.create_store(b, "Rival", "Hangzhou", None)
    r = await client.post("/v1/codes", json={"store_id": own["store_id"]}, headers=ha)
    assert r.status_code == 201 and r.json()["store_id"] == own["store_id"]
    r = await client.post("/v1/codes", json={"store_id": other["store_id"]}, headers=ha)
    assert r.status_code == 422 and "store_id" in r.json()["error"]["fields"]


async def test_merchant_sees_only_its_own_ledger(
    client: httpx.AsyncClient, new_merchant: MerchantFactory, operator_headers: dict[str, str]
) -> None:
    a, ha = await new_merchant()
    b, _ = await new_merchant()
    r = await client.get(f"/v1/merchants/{a}/ledger", headers=ha)
    assert r.status_code == 200 and r.json()["merchant_id"] == a and r.json()["balance"] == 0
    assert (await client.get(f"/v1/merchants/{b}/ledger", headers=ha)).status_code == 404
    assert (await client.get(f"/v1/merchants/{b}/ledger", headers=operator_headers)).status_code == 200
    assert (await client.get(f"/v1/merchants/{b}/ledger")).status_code == 401
    assert (await client.get("/v1/ops/alliances", headers=ha)).status_code == 403
    ops = await client.get("/v1/ops/alliances", headers=operator_headers)
    assert ops.status_code == 200 and "merchants" in ops.json()
