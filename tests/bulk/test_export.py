"""`roomfeed export`: a merchant's own rooms, attributed orders and ledger as CSV; a merchant key reads
only its own merchant, an operator names one; another tenant's rows never appear."""

from __future__ import annotations

import asyncio
import csv
import subprocess
import sys
import time
from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path
from typing import Any

import asyncpg
import httpx
import orjson
import pytest

from alliance import ledger
from roomfeed.auth import create_key, sign_viewer_token
from roomfeed.settings import REPO_ROOT, Settings
from tests.bulk.test_import import EXAMPLE
from tests.feed.conftest import running_app
from tests.support import isolated_settings, process_env

pytestmark = [pytest.mark.timeout(300)]


@pytest.fixture(scope="module")
def imported(base_settings: Settings, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Settings]:
    """The example history in a database of its own (no model: export does not need one)."""
    with isolated_settings(base_settings, tmp_path_factory) as own:
        done = subprocess.run(
            [sys.executable, "-m", "roomfeed.cli", "import", str(EXAMPLE), "--shift-to-now", "--no-train"],
            cwd=REPO_ROOT,
            env=process_env(own),
            capture_output=True,
            text=True,
            timeout=240,
        )
        assert done.returncode == 0, done.stderr
        yield own


def _export(settings: Settings, out: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "roomfeed.cli", "export", "--out", str(out), "--json", *args],
        cwd=REPO_ROOT,
        env=process_env(settings),
        capture_output=True,
        text=True,
        timeout=120,
    )


def _rows(path: Path) -> list[dict[str, str]]:
    with path.open(newline="") as f:
        return list(csv.DictReader(f))


async def _setup(settings: Settings) -> dict[str, Any]:
    """Keys for two merchants and an operator; an alliance of both (through the API) with ledger lines
    of each; an order of m39's attributed to m22."""
    pool = await asyncpg.create_pool(settings.database_url, min_size=1, max_size=2)
    try:
        keys = {m: (await create_key(pool, "merchant", m, "export test"))[1] for m in ("m22", "m39")}
        keys["operator"] = (await create_key(pool, "operator", None, "export test"))[1]
        async with running_app(settings) as client:
            m22 = {"Authorization": f"Bearer {keys['m22']}"}
            m39 = {"Authorization": f"Bearer {keys['m39']}"}
            made = await client.post("/v1/alliances", json={"name": "Export test"}, headers=m22)
            assert made.status_code == 201, made.text
            alliance_id = made.json()["alliance_id"]
            await client.post(
                f"/v1/alliances/{alliance_id}/members", json={"merchant_id": "m39"}, headers=m22
            )
            await client.post(f"/v1/alliances/{alliance_id}/join", headers=m39)
            await _attributed_order(client, settings, m22, m39)
        async with pool.acquire() as conn, conn.transaction():
            for n, merchant in enumerate(("m22", "m22", "m39")):
                await ledger.post(
                    conn,
                    source_id=f"export-{n}",
                    kind="earned",
                    merchant_id=merchant,
                    alliance_id=alliance_id,
                    amount=1.5 + n,
                    at=1_790_000_000 + n,
                    visits=1,
                )
        own_rooms = {
            m: {r["room_id"] for r in await pool.fetch("SELECT room_id FROM rooms WHERE merchant_id = $1", m)}
            for m in ("m22", "m39")
        }
    finally:
        await pool.close()
    return {"keys": keys, "rooms": own_rooms}


async def _attributed_order(
    client: httpx.AsyncClient, settings: Settings, m22: dict[str, str], m39: dict[str, str]
) -> None:
    """A viewer lands through m22's store code, then buys from m39: the order system (m39's key)
    reports it, and the alliance attributes it to m22 (store m22-s0), as in production."""
    prices = {r["product_id"]: r["price"] for r in _rows(EXAMPLE / "products.csv")}
    code = await client.post("/v1/codes", json={"store_id": "m22-s0"}, headers=m22)
    assert code.status_code == 201, code.text
    viewer = {"Authorization": f"Bearer {sign_viewer_token(settings.viewer_token_secret, 'v-export')}"}
    session = await client.post(
        "/v1/sessions", json={"viewer_id": "v-export", "entry": {"code": code.json()["code"]}}, headers=viewer
    )
    assert session.status_code == 201, session.text
    order = {
        "order_id": "export-o1",
        "product_id": "p39-0",
        "quantity": 2,
        "unit_price": float(prices["p39-0"]),
        "currency": "CNY",
        "ordered_at": int(time.time() * 1000),
        "viewer_id": "v-export",
    }
    made = await client.post("/v1/orders", json=order, headers=m39)
    assert made.status_code == 201, made.text


async def test_a_merchant_exports_its_own_data_and_nothing_else(imported: Settings, tmp_path: Path) -> None:
    world = await _setup(imported)
    keys, rooms = world["keys"], world["rooms"]
    assert rooms["m22"] and rooms["m39"]

    done = await asyncio.to_thread(_export, imported, tmp_path / "m22", "--key", keys["m22"])
    assert done.returncode == 0, done.stderr
    report = orjson.loads(done.stdout)
    assert report["merchant_id"] == "m22"
    exported = {r["room_id"] for r in _rows(tmp_path / "m22" / "rooms.csv")}
    assert exported == rooms["m22"]
    assert report["files"]["rooms.csv"]["rows"] == len(rooms["m22"])
    lines = _rows(tmp_path / "m22" / "ledger.csv")
    assert [(r["kind"], r["amount"], r["source_id"]) for r in lines] == [
        ("earned", "1.5000", "export-0"),
        ("earned", "2.5000", "export-1"),
    ]
    assert all(r["at"].startswith("2026-09-21T") for r in lines)
    (order,) = _rows(tmp_path / "m22" / "orders.csv")
    price = next(r["price"] for r in _rows(EXAMPLE / "products.csv") if r["product_id"] == "p39-0")
    assert order["order_id"] == "export-o1" and order["kind"] == "sale"
    assert order["seller_merchant_id"] == "m39" and order["store_id"] == "m22-s0"
    assert Decimal(order["amount"]) == 2 * Decimal(price)
    assert "viewer_id" not in order  # the buyer is not the merchant's to export

    # A merchant key names another merchant: refused, nothing written.
    done = await asyncio.to_thread(
        _export, imported, tmp_path / "stolen", "--key", keys["m22"], "--merchant-id", "m39"
    )
    assert done.returncode == 2 and "its own merchant's data only" in done.stderr
    assert not (tmp_path / "stolen").exists()

    # An operator chooses the merchant (with its key, or with the CLI's own database access).
    for credentials in (["--key", keys["operator"]], []):
        out = tmp_path / f"ops{len(credentials)}"
        done = await asyncio.to_thread(_export, imported, out, *credentials, "--merchant-id", "m39")
        assert done.returncode == 0, done.stderr
        assert {r["room_id"] for r in _rows(out / "rooms.csv")} == rooms["m39"]
        assert [r["source_id"] for r in _rows(out / "ledger.csv")] == ["export-2"]
        assert _rows(out / "orders.csv") == []  # the order was m39's sale, attributed to m22
    done = await asyncio.to_thread(_export, imported, tmp_path / "x", "--merchant-id", "m404")
    assert done.returncode == 2 and "no merchant m404" in done.stderr
    done = await asyncio.to_thread(_export, imported, tmp_path / "y", "--key", "rfk_not_a_key")
    assert done.returncode == 2 and "not valid" in done.stderr
