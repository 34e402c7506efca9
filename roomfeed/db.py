"""PostgreSQL: the asyncpg pool and the one migration runner.

Each domain keeps its schema as numbered plain-SQL files in its own `migrations/` folder
(`rooms/migrations/0100_rooms.sql`); numbers are unique across the project and ranges are
reserved per domain (0001 plumbing, 0100 rooms, 0200 events, 0300 ranking, 0400 alliance,
0500 feed, 0600 console). The runner applies the files not yet recorded in `schema_migrations`,
each in its own transaction, in number order, under an advisory lock so that several processes
starting together migrate once.
"""

from __future__ import annotations

import hashlib
import logging
import re
from dataclasses import dataclass
from pathlib import Path

import asyncpg
import orjson

from roomfeed.settings import REPO_ROOT, Settings

log = logging.getLogger("roomfeed.db")

MIGRATION_PACKAGES = ("roomfeed", "rooms", "events", "ranking", "alliance", "feed", "console")
_FILE = re.compile(r"(\d{4})_([a-z0-9_]+)\.sql")
_LOCK_KEY = 72_001_001


@dataclass(frozen=True)
class Migration:
    version: int
    name: str
    path: Path

    @property
    def sql(self) -> str:
        return self.path.read_text()

    @property
    def checksum(self) -> str:
        return hashlib.sha256(self.path.read_bytes()).hexdigest()


def discover(root: Path = REPO_ROOT) -> list[Migration]:
    found: dict[int, Migration] = {}
    for package in MIGRATION_PACKAGES:
        folder = root / package / "migrations"
        if not folder.is_dir():
            continue
        for path in sorted(folder.glob("*.sql")):
            match = _FILE.fullmatch(path.name)
            if not match:
                raise ValueError(f"migration file name must be NNNN_name.sql: {path}")
            version = int(match.group(1))
            if version in found:
                raise ValueError(f"migration {version} defined twice: {found[version].path} and {path}")
            found[version] = Migration(version, match.group(2), path)
    return [found[v] for v in sorted(found)]


async def migrate(dsn: str, root: Path = REPO_ROOT) -> list[int]:
    """Apply pending migrations; returns the versions applied by this call."""
    conn = await asyncpg.connect(dsn)
    applied_now: list[int] = []
    try:
        await conn.execute("SELECT pg_advisory_lock($1)", _LOCK_KEY)
        await conn.execute(
            """
            CREATE TABLE IF NOT EXISTS schema_migrations (
                version    integer PRIMARY KEY,
                name       text NOT NULL,
                checksum   text NOT NULL,
                applied_at timestamptz NOT NULL DEFAULT now()
            )
            """
        )
        done = {
            r["version"]: r["checksum"]
            for r in await conn.fetch("SELECT version, checksum FROM schema_migrations")
        }
        for migration in discover(root):
            if migration.version in done:
                if done[migration.version] != migration.checksum:
                    log.warning("migration %s changed after it was applied", migration.path.name)
                continue
            async with conn.transaction():
                await conn.execute(migration.sql)
                await conn.execute(
                    "INSERT INTO schema_migrations (version, name, checksum) VALUES ($1, $2, $3)",
                    migration.version,
                    migration.name,
                    migration.checksum,
                )
            applied_now.append(migration.version)
            log.info("applied migration %s", migration.path.name)
    finally:
        try:
            await conn.execute("SELECT pg_advisory_unlock($1)", _LOCK_KEY)
        finally:
            await conn.close()
    return applied_now


async def _init_connection(conn: asyncpg.Connection) -> None:
    for typename in ("json", "jsonb"):
        await conn.set_type_codec(
            typename,
            encoder=lambda v: orjson.dumps(v).decode(),
            decoder=orjson.loads,
            schema="pg_catalog",
        )


# roomfeed's SQL reasons in UTC (the ledger's hourly series, day partitions, alliance days). A
# session's TimeZone is otherwise the server's default, which initdb takes from the machine it ran
# on: a server set up in India (+05:30) put the ledger's hours at :30 UTC.
SESSION_SETTINGS = {"timezone": "UTC"}


def pool_of(settings: Settings, *, min_size: int | None = None) -> asyncpg.Pool:
    """A pool not opened yet (`await pool` opens it); it connects lazily (pg_pool_min defaults to
    0), so a process starts while PostgreSQL is down. Its sessions are in UTC (SESSION_SETTINGS)."""
    return asyncpg.create_pool(
        settings.database_url,
        min_size=settings.pg_pool_min if min_size is None else min_size,
        max_size=settings.pg_pool_max,
        init=_init_connection,
        command_timeout=30,
        timeout=5,
        server_settings=SESSION_SETTINGS,
    )


async def create_pool(settings: Settings, *, min_size: int | None = None) -> asyncpg.Pool:
    """An open pool (see `pool_of`)."""
    return await pool_of(settings, min_size=min_size)
