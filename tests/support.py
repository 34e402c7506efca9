"""Helpers the tests share: free ports, private server instances for fault tests, sync-from-async glue."""

from __future__ import annotations

import asyncio
import atexit
import contextlib
import os
import secrets
import shutil
import socket
import subprocess
import tempfile
from collections.abc import Callable, Coroutine, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import urlsplit, urlunsplit

import pytest

from devtools.kafka import QUICK_START_JVM, KafkaBroker, KafkaCluster, resolve_kafka_jars
from devtools.postgres import PostgresServer
from devtools.redis import RedisClusterServers, RedisServer, RedisTls
from roomfeed.db import migrate
from roomfeed.kafka import drop_prefixed_topics
from roomfeed.settings import Settings, external_services

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


def _cluster_port() -> int:
    """A free port whose cluster bus port (+10,000) is free too (so at most 55,535)."""
    import random

    while True:
        port = random.randint(20_000, 45_000)
        taken = False
        for candidate in (port, port + 10_000):
            with socket.socket() as s:
                try:
                    s.bind(("127.0.0.1", candidate))
                except OSError:
                    taken = True
        if not taken:
            return port


def process_env(settings: Settings, data_dir: Path | None = None) -> dict[str, str]:
    """The environment of a `roomfeed` subprocess that uses `settings` (services, prefix, secrets)."""
    return {
        **os.environ,
        "DATABASE_URL": settings.database_url,
        "REDIS_URL": settings.redis_url,
        "KAFKA_BOOTSTRAP": settings.kafka_bootstrap,
        "ROOMFEED_KAFKA_PREFIX": settings.kafka_prefix,
        "ROOMFEED_KAFKA_PARTITIONS": str(settings.kafka_partitions),
        "ROOMFEED_KAFKA_REPLICATION_FACTOR": str(settings.kafka_replication_factor),
        "ROOMFEED_KAFKA_MIN_INSYNC_REPLICAS": str(settings.kafka_min_insync_replicas),
        "ROOMFEED_DATA_DIR": str(data_dir or settings.data_dir),
        "ROOMFEED_VIEWER_TOKEN_SECRET": settings.viewer_token_secret,
        "ROOMFEED_CODE_SECRET": settings.code_secret,
        "ROOMFEED_LOG_LEVEL": "WARNING",
    }


def make_test_certificates(folder: Path, host: str = "127.0.0.1") -> RedisTls:
    """A throwaway CA and a server certificate it signed for `host` (openssl; valid one day)."""
    folder.mkdir(parents=True, exist_ok=True)

    def openssl(*args: str) -> None:
        subprocess.run(["openssl", *args], check=True, capture_output=True, cwd=folder)

    openssl(
        "req",
        "-x509",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-keyout",
        "ca.key",
        "-out",
        "ca.crt",
        "-days",
        "1",
        "-subj",
        "/CN=roomfeed test CA",
    )
    openssl(
        "req",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-keyout",
        "server.key",
        "-out",
        "server.csr",
        "-subj",
        f"/CN={host}",
    )
    (folder / "san.ext").write_text(f"subjectAltName=IP:{host},DNS:localhost\n")
    openssl(
        "x509",
        "-req",
        "-in",
        "server.csr",
        "-CA",
        "ca.crt",
        "-CAkey",
        "ca.key",
        "-CAcreateserial",
        "-out",
        "server.crt",
        "-days",
        "1",
        "-extfile",
        "san.ext",
    )
    for name in ("server.key", "server.crt", "ca.crt"):
        (folder / name).chmod(0o644)  # redis-server may run as another user
    return RedisTls(cert=folder / "server.crt", key=folder / "server.key", ca=folder / "ca.crt")


# Factories not closed yet: closed at exit (a teardown cut short by a timeout or an interrupt
# otherwise leaves brokers and redis-servers running in sessions of their own, and their folders).
_OPEN_FACTORIES: set[PrivateServers] = set()


@atexit.register
def _close_open_factories() -> None:
    for factory in list(_OPEN_FACTORIES):
        factory.close()


class PrivateServers:
    """Starts throwaway servers on free ports in temp folders; `close()` kills them and removes the folders."""

    def __init__(self, base: Settings) -> None:
        self._base = base
        self._dirs: list[Path] = []
        self._servers: list[PostgresServer | RedisServer | KafkaBroker] = []
        _OPEN_FACTORIES.add(self)

    def _dir(self, name: str) -> Path:
        path = world_readable_tempdir(f"rf-{name}-")
        self._dirs.append(path)
        return path

    def postgres(self) -> PostgresServer:
        server = PostgresServer(self._dir("pg"), free_port())
        self._servers.append(server)
        return server

    def redis(self, *, tls: RedisTls | None = None, extra_args: tuple[str, ...] = ()) -> RedisServer:
        server = RedisServer(self._dir("redis"), free_port(), tls=tls, extra_args=extra_args)
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

    def redis_cluster(self, masters: int = 3, replicas_each: int = 1) -> RedisClusterServers:
        """`masters` primaries with `replicas_each` replicas each, formed into one Redis Cluster."""
        ports = [_cluster_port() for _ in range(masters * (1 + replicas_each))]
        cluster = RedisClusterServers(self._dir("redis-cluster"), ports, replicas_each=replicas_each)
        self._servers.extend(cluster.nodes)
        return cluster

    def kafka_cluster(self, brokers: int = 3) -> KafkaCluster:
        """`brokers` KRaft nodes, one cluster (replication up to 3; Kafka's own topics replicated)."""
        libs = resolve_kafka_jars(self._base.data_dir / "kafka" / "libs")
        ports = [(free_port(), free_port()) for _ in range(brokers)]
        cluster = KafkaCluster(self._dir("kafka-cluster"), ports, libs_dir=libs, partitions=1, heap="320m")
        self._servers.extend(cluster.brokers)
        return cluster

    def close(self) -> None:
        """Kill every server (all at once: a JVM can take seconds to die on a loaded host), then
        remove their folders. Safe to call twice; run at exit for a factory nobody closed."""
        servers, self._servers = self._servers, []
        with ThreadPoolExecutor(max_workers=max(1, len(servers))) as pool:
            for outcome in [pool.submit(server.kill) for server in servers]:
                with contextlib.suppress(Exception):
                    outcome.result()
        dirs, self._dirs = self._dirs, []
        for path in dirs:
            shutil.rmtree(path, ignore_errors=True)
        _OPEN_FACTORIES.discard(self)


# --- isolated test worlds ---------------------------------------------------------------------


def _with_database(url: str, dbname: str) -> str:
    parts = urlsplit(url)
    return urlunsplit(parts._replace(path="/" + dbname))


async def _create_database(server_url: str, dbname: str) -> None:
    import asyncpg

    conn = await asyncpg.connect(server_url)
    try:
        await conn.execute(f'CREATE DATABASE "{dbname}"')
    finally:
        await conn.close()


async def _drop_database(server_url: str, dbname: str) -> None:
    import asyncpg

    conn = await asyncpg.connect(server_url)
    try:
        await conn.execute(f'DROP DATABASE IF EXISTS "{dbname}" WITH (FORCE)')
    finally:
        await conn.close()


async def _flush_redis(url: str) -> None:
    from redis.asyncio import Redis

    client = Redis.from_url(url)
    try:
        await client.flushdb()
    finally:
        await client.aclose()


@contextlib.contextmanager
def isolated_settings(
    base_settings: Settings, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Settings]:
    """Settings of one isolated test world: a fresh, migrated database, a private Redis (or a random
    db number on REDIS_URL's server), a unique Kafka prefix and a temp data folder; all removed after."""
    tag = secrets.token_hex(4)

    dbname = f"rf_test_{tag}"
    run_sync(lambda: _create_database(base_settings.database_url, dbname))
    run_sync(lambda: migrate(_with_database(base_settings.database_url, dbname)))

    redis_server: RedisServer | None = None
    if external_services()["redis"]:
        redis_url = _with_database(base_settings.redis_url, str(secrets.randbelow(15) + 1))
    else:
        redis_server = RedisServer(tmp_path_factory.mktemp("redis"), free_port())
        redis_server.start()
        redis_server.wait_ready()
        redis_url = redis_server.url()
    run_sync(lambda: _flush_redis(redis_url))

    data_dir = Path(tmp_path_factory.mktemp("data"))
    session_settings = replace(
        base_settings,
        database_url=_with_database(base_settings.database_url, dbname),
        redis_url=redis_url,
        kafka_prefix=f"t{tag}.",
        data_dir=data_dir,
    )
    try:
        yield session_settings
    finally:
        run_sync(lambda: _drop_database(base_settings.database_url, dbname))
        if redis_server is not None:
            redis_server.kill()
        else:
            run_sync(lambda: _flush_redis(redis_url))
        try:
            run_sync(
                lambda: drop_prefixed_topics(session_settings.kafka_bootstrap, session_settings.kafka_prefix)
            )
        except Exception as exc:  # a test may leave the broker down; the topics are only litter then
            print(f"conftest: could not delete topics {session_settings.kafka_prefix}*: {exc}")
