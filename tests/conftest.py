"""The test environment: real PostgreSQL, Redis and Kafka, isolated per test session.

When DATABASE_URL / REDIS_URL / KAFKA_BOOTSTRAP are unset, the project-owned instances are
started (idempotently) with `devtools.services.up`. On top of them every session gets a fresh
database, a private redis-server (or its own db number on REDIS_URL's server), its own Kafka
topic/group prefix and its own data folder, so parallel runs and destructive tests collide
with nobody. Fault tests start throwaway servers through `private_servers`.

Sections below: shared services, the session's settings, private servers, app-level fixtures
(`migrated`, `pool`, `redis`, and the ASGI app and its client from tests/app_fixtures.py).
"""

from __future__ import annotations

import signal
from collections.abc import AsyncIterator, Iterator
from types import FrameType
from urllib.parse import urlsplit, urlunsplit

import asyncpg
import pytest
from redis.asyncio import Redis

from devtools import services
from roomfeed.db import create_pool
from roomfeed.settings import Settings, external_services
from tests.support import PrivateServers, free_port, isolated_settings

__all__ = ["free_port"]

# --- interrupted runs clean up -----------------------------------------------------------------


def _interrupt(signum: int, frame: FrameType | None) -> None:
    raise KeyboardInterrupt(f"signal {signum}")


def pytest_configure(config: pytest.Config) -> None:
    """A SIGTERM (a CI job cancelled, `timeout`) ends the run as Ctrl-C does: fixtures tear down and
    private servers are killed, instead of brokers and redis-servers outliving it."""
    signal.signal(signal.SIGTERM, _interrupt)


# --- shared services ------------------------------------------------------------------------


@pytest.fixture(scope="session")
def base_settings() -> Settings:
    """Settings from the environment, with the project-owned services started for what it leaves unset."""
    base = Settings.from_env()
    if not all(external_services().values()):
        services.up(base)
    return base


# --- the session's settings -----------------------------------------------------------------


@pytest.fixture(scope="session")
def settings(base_settings: Settings, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Settings]:
    """This session's Settings: fresh, migrated database, private Redis, unique Kafka prefix, temp data folder."""
    with isolated_settings(base_settings, tmp_path_factory) as own:
        yield own


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


@pytest.fixture(scope="session")
def migrated(settings: Settings) -> Settings:
    """The session's settings, named for what the domains' tests rely on: every migration applied
    (`settings` applies them to its fresh database)."""
    return settings


# A folder with settings of its own (tests/feed: an isolated world) shadows `migrated` and, if it needs
# them, these two: a session fixture is made once, for whichever folder asks first.
@pytest.fixture(scope="session")
async def pool(migrated: Settings) -> AsyncIterator[asyncpg.Pool]:
    """A PostgreSQL pool on the session's database, for tests that read or write tables directly."""
    created = await create_pool(migrated, min_size=1)
    yield created
    await created.close()


@pytest.fixture(scope="session")
async def redis(migrated: Settings) -> AsyncIterator[Redis]:
    """A redis-py client on the session's Redis."""
    client = Redis.from_url(migrated.redis_url)
    yield client
    await client.aclose()


@pytest.fixture(scope="session")
async def quiet_redis(migrated: Settings) -> AsyncIterator[Redis]:
    """A client on another database of the session's Redis server, flushed before and after: no
    background loop of the session's app (the alliance scheduler's ticks refill and prune the token
    buckets every few seconds) writes there, for stage tests that set shared keys by hand."""
    parts = urlsplit(migrated.redis_url)
    number = int(parts.path.strip("/") or 0)
    client = Redis.from_url(urlunsplit(parts._replace(path=f"/{number % 15 + 1}")))
    await client.flushdb()
    yield client
    await client.flushdb()
    await client.aclose()


# The app with its lifespan running, a client bound to it, an operator key and viewer tokens
# (tests/app_fixtures.py); folders may shadow them with fixtures of their own.
from tests.app_fixtures import app, app_client, operator_key, viewer_token  # noqa: E402,F401
