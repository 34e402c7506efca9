"""Console test fixtures (the app, its client, `operator_key` and `viewer_token` are the root
conftest's, tests/app_fixtures.py): keys made on the session's database, and a real HTTP server.
`live_server` runs `roomfeed serve` as a subprocess on a free loopback port on the session's
settings, for the browser and the demo.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from roomfeed.settings import REPO_ROOT, Settings
from tests.support import free_port


async def create_key(settings: Settings, role: str, merchant_id: str | None = None) -> str:
    import asyncpg

    from roomfeed.auth import create_key as make
    from roomfeed.db import migrate

    await migrate(settings.database_url)
    pool = await asyncpg.create_pool(settings.database_url, min_size=1, max_size=1)
    try:
        return (await make(pool, role, merchant_id, "console tests"))[1]  # type: ignore[arg-type]
    finally:
        await pool.close()


def service_env(settings: Settings) -> dict[str, str]:
    """Environment that makes a `roomfeed` subprocess use exactly these settings."""
    return {
        **os.environ,
        "DATABASE_URL": settings.database_url,
        "REDIS_URL": settings.redis_url,
        "KAFKA_BOOTSTRAP": settings.kafka_bootstrap,
        "ROOMFEED_KAFKA_PREFIX": settings.kafka_prefix,
        "ROOMFEED_DATA_DIR": str(settings.data_dir),
        "ROOMFEED_VIEWER_TOKEN_SECRET": settings.viewer_token_secret,
        "ROOMFEED_CODE_SECRET": settings.code_secret,
    }


@dataclass
class LiveServer:
    url: str
    process: subprocess.Popen[bytes]
    log_path: Path


@pytest.fixture(scope="session")
def live_server(settings: Settings, tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    """`roomfeed serve` on a free loopback port, on this session's database, Redis and topic prefix."""
    port = free_port()
    log_path = tmp_path_factory.mktemp("serve") / "serve.log"
    env = {**service_env(settings), "ROOMFEED_PUBLIC_BASE_URL": f"http://127.0.0.1:{port}"}
    with log_path.open("wb") as log:
        process = subprocess.Popen(
            [sys.executable, "-m", "roomfeed.cli", "serve", "--host", "127.0.0.1", "--port", str(port)],
            cwd=REPO_ROOT,
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            if process.poll() is not None:
                raise RuntimeError(f"roomfeed serve exited: {log_path.read_text()[-3000:]}")
            try:
                if httpx.get(url + "/readyz", timeout=1).json().get("status") == "ready":
                    break
            except httpx.HTTPError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError(f"roomfeed serve not ready in 60 s: {log_path.read_text()[-3000:]}")
            time.sleep(0.3)
        yield LiveServer(url, process, log_path)
    finally:
        process.terminate()
        try:
            process.wait(15)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
