"""The test environment: real PostgreSQL, Redis and Kafka, isolated per test session.

When DATABASE_URL / REDIS_URL / KAFKA_BOOTSTRAP are unset, the project-owned instances are
started (idempotently) with `roomfeed.services.up`. On top of them every session gets a fresh
database, a private redis-server (or its own db number on REDIS_URL's server), its own Kafka
topic/group prefix and its own data folder, so parallel runs and destructive tests collide
with nobody. Fault tests start throwaway servers through `private_servers`.

Sections below: shared services, the session's settings, private servers; add app-level
fixtures (pools, clients, the ASGI app) in the last section.
"""

from __future__ import annotations

import secrets
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import pytest

from roomfeed import services
from roomfeed.db import migrate
from roomfeed.settings import Settings, external_services
from tests.support import PrivateServers, free_port, run_sync

__all__ = ["free_port"]

# --- shared services ------------------------------------------------------------------------


@pytest.fixture(scope="session")
def base_settings() -> Settings:
    """Settings from the environment, with the project-owned services started for what it leaves unset."""
    base = Settings.from_env()
    if not all(external_services().values()):
        services.up(base)
    return base


# --- the session's settings -----------------------------------------------------------------


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


async def _delete_topics(bootstrap: str, prefix: str) -> None:
    from aiokafka.admin import AIOKafkaAdminClient

    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        topics = [t for t in await admin.list_topics() if t.startswith(prefix)]
        if topics:
            await admin.delete_topics(topics)
    finally:
        await admin.close()


@pytest.fixture(scope="session")
def settings(base_settings: Settings, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Settings]:
    """This session's Settings: fresh, migrated database, private Redis, unique Kafka prefix, temp data folder."""
    tag = secrets.token_hex(4)

    dbname = f"rf_test_{tag}"
    run_sync(lambda: _create_database(base_settings.database_url, dbname))
    run_sync(lambda: migrate(_with_database(base_settings.database_url, dbname)))

    redis_server: services.RedisServer | None = None
    if external_services()["redis"]:
        redis_url = _with_database(base_settings.redis_url, str(secrets.randbelow(15) + 1))
    else:
        redis_server = services.RedisServer(tmp_path_factory.mktemp("redis"), free_port())
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
            run_sync(lambda: _delete_topics(session_settings.kafka_bootstrap, session_settings.kafka_prefix))
        except Exception as exc:  # a test may leave the broker down; the topics are only litter then
            print(f"conftest: could not delete topics {session_settings.kafka_prefix}*: {exc}")


# --- private servers for fault tests ---------------------------------------------------------


@pytest.fixture
def private_servers(base_settings: Settings) -> Iterator[PrivateServers]:
    """Factory of throwaway KafkaBroker/RedisServer/PostgresServer on free ports; killed after the test."""
    factory = PrivateServers(base_settings)
    try:
        yield factory
    finally:
        factory.close()


# --- application fixtures (pools, clients, the ASGI app): add below ---------------------------

# The app with its lifespan running, a client bound to it, an operator key and viewer tokens
# (tests/app_fixtures.py); folders may shadow them with fixtures of their own.
from tests.app_fixtures import app, app_client, operator_key, viewer_token  # noqa: E402,F401
