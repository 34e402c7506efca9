"""`roomfeed serve --workers 2`: one scrape of /metrics counts every worker's requests (Prometheus
multiprocess mode), whichever worker answers the scrape; and workers that are slow to start (a
loaded host) are waited for, not killed and restarted forever by the supervisor."""

from __future__ import annotations

import asyncio
import os
import time
from pathlib import Path

import httpx
import pytest

from roomfeed.settings import Settings
from tests.faults.stack import RoomfeedProcess
from tests.support import free_port, process_env

pytestmark = [pytest.mark.timeout(300)]

# Each spawned worker starts this many seconds late, as on a loaded host (the shared 2-core machine
# took 17 s to import the app): beyond uvicorn's default 5 s worker health check, whose kills
# left `serve --workers 2` without a single worker.
SLOW_START_S = 8
SLOW_START = f"""import sys, time
if "--multiprocessing-fork" in sys.argv:  # a worker spawned by uvicorn's supervisor
    time.sleep({SLOW_START_S})
"""
# What uvicorn's supervisor logs when it gives up on a worker.
WORKER_KILLED = ("died", "failed to start", "was not ready in time")


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
    slow = tmp_path / "slow-start"
    slow.mkdir()
    (slow / "sitecustomize.py").write_text(SLOW_START)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(slow), env.get("PYTHONPATH")]))
    env["ROOMFEED_LOG_LEVEL"] = "INFO"  # the supervisor's lines about its workers are INFO
    api = RoomfeedProcess(
        "api", ["serve", "--workers", "2", "--port", str(port), "--no-migrate"], env, tmp_path
    )
    api.start()
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 200  # the app imported by a starved CPU: 83 s at host load 40
        while True:
            assert api.alive(), api.tail()
            assert time.monotonic() < deadline, api.tail()
            assert not _workers_killed(api.log_path), api.tail()
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
        assert not _workers_killed(api.log_path), api.tail()
    finally:
        api.stop()
    assert not (tmp_path / "data" / "prometheus").exists() or not any(
        (tmp_path / "data" / "prometheus").iterdir()
    ), "the run's metric files outlived it"


def _workers_killed(log: Path) -> list[str]:
    return [
        line
        for line in log.read_text(errors="replace").splitlines()
        if "Child process" in line and any(word in line for word in WORKER_KILLED)
    ]
