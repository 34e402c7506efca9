"""Helpers the tests share: free ports, private server instances for fault tests, sync-from-async glue."""

from __future__ import annotations

import asyncio
import shutil
import socket
import tempfile
from collections.abc import Callable, Coroutine
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, TypeVar

from roomfeed.services import QUICK_START_JVM, KafkaBroker, PostgresServer, RedisServer, resolve_kafka_jars
from roomfeed.settings import Settings

T = TypeVar("T")


def free_port() -> int:
    """A TCP port nobody listens on right now (the OS picks it)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def run_sync(factory: Callable[[], Coroutine[Any, Any, T]]) -> T:
    """Run a coroutine on its own loop in a worker thread: usable from sync fixtures and inside async tests."""
    with ThreadPoolExecutor(max_workers=1) as pool:
        return pool.submit(lambda: asyncio.run(factory())).result()


def world_readable_tempdir(prefix: str) -> Path:
    """A temp folder the `postgres` OS user can reach (pytest's tmp_path is 0700 root)."""
    path = Path(tempfile.mkdtemp(prefix=prefix, dir="/tmp"))
    path.chmod(0o755)
    return path


class PrivateServers:
    """Starts throwaway servers on free ports in temp folders; `close()` kills them and removes the folders."""

    def __init__(self, base: Settings) -> None:
        self._base = base
        self._dirs: list[Path] = []
        self._servers: list[PostgresServer | RedisServer | KafkaBroker] = []

    def _dir(self, name: str) -> Path:
        path = world_readable_tempdir(f"rf-{name}-")
        self._dirs.append(path)
        return path

    def postgres(self) -> PostgresServer:
        server = PostgresServer(self._dir("pg"), free_port())
        self._servers.append(server)
        return server

    def redis(self) -> RedisServer:
        server = RedisServer(self._dir("redis"), free_port())
        self._servers.append(server)
        return server

    def kafka(self) -> KafkaBroker:
        # Share the project's resolved jars instead of copying them per broker.
        libs = resolve_kafka_jars(self._base.data_dir / "kafka" / "libs")
        server = KafkaBroker(
            self._dir("kafka"),
            free_port(),
            free_port(),
            libs_dir=libs,
            partitions=1,
            heap="256m",
            jvm_options=QUICK_START_JVM,
        )
        self._servers.append(server)
        return server

    def close(self) -> None:
        for server in self._servers:
            server.kill()
        for path in self._dirs:
            shutil.rmtree(path, ignore_errors=True)
