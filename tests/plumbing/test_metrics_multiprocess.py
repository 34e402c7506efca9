"""`roomfeed serve --workers 2`: one scrape of /metrics counts every worker's requests (Prometheus
multiprocess mode), whichever worker answers the scrape."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import httpx
import pytest

from roomfeed.settings import Settings
from tests.faults.stack import RoomfeedProcess
from tests.support import free_port, process_env

pytestmark = [pytest.mark.timeout(120)]


def _healthz_requests(text: str) -> float:
    return sum(
        float(line.rsplit(" ", 1)[1])
        for line in text.splitlines()
        if line.startswith("roomfeed_http_requests_total{") and 'endpoint="healthz"' in line
    )


async def test_one_scrape_counts_every_workers_requests(settings: Settings, tmp_path: Path) -> None:
    port = free_port()
    env = process_env(settings, tmp_path / "data")
    env.pop("PROMETHEUS_MULTIPROC_DIR", None)
    api = RoomfeedProcess(
        "api", ["serve", "--workers", "2", "--port", str(port), "--no-migrate"], env, tmp_path
    )
    api.start()
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 90
        while True:
            assert api.alive(), api.tail()
            assert time.monotonic() < deadline, api.tail()
            try:
                if httpx.get(f"{base}/healthz", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            await asyncio.sleep(0.3)
        folders = list((tmp_path / "data" / "prometheus").iterdir())
        assert len(folders) == 1
        # New connections each time, many at once: the kernel spreads them over both workers.
        sent = 0
        while len(list(folders[0].glob("counter_*.db"))) < 2 or sent < 200:
            assert sent < 5000, "the second worker never answered"
            async with httpx.AsyncClient() as client:
                statuses = await asyncio.gather(*(client.get(f"{base}/healthz") for _ in range(20)))
            assert all(r.status_code == 200 for r in statuses)
            sent += 20
        probe = 1  # the readiness poll's last /healthz (the failed ones never reached a worker)
        for _ in range(6):  # whichever worker answers, it reports both
            async with httpx.AsyncClient() as client:
                scrape = (await client.get(f"{base}/metrics")).text
            assert _healthz_requests(scrape) == sent + probe
    finally:
        api.stop()
