"""The migration runner: ordered, recorded, idempotent, one transaction per file."""

from __future__ import annotations

from pathlib import Path

import asyncpg
import pytest

from roomfeed.db import discover, migrate
from roomfeed.settings import Settings


async def test_migrations_are_idempotent(settings: Settings) -> None:
    # The session's database is already migrated: a second run applies nothing and changes nothing.
    conn = await asyncpg.connect(settings.database_url)
    try:
        before = await conn.fetch("SELECT version, checksum FROM schema_migrations ORDER BY version")
        assert [r["version"] for r in before] == [m.version for m in discover()]
        assert await migrate(settings.database_url) == []
        after = await conn.fetch("SELECT version, checksum FROM schema_migrations ORDER BY version")
        assert before == after
    finally:
        await conn.close()


async def test_failed_migration_rolls_back_and_is_not_recorded(settings: Settings, tmp_path: Path) -> None:
    folder = tmp_path / "roomfeed" / "migrations"
    folder.mkdir(parents=True)
    (folder / "9001_good.sql").write_text("CREATE TABLE mig_probe_good (id int);")
    (folder / "9002_bad.sql").write_text("CREATE TABLE mig_probe_bad (id int); SELECT no_such_function();")
    with pytest.raises(asyncpg.PostgresError):
        await migrate(settings.database_url, root=tmp_path)
    conn = await asyncpg.connect(settings.database_url)
    try:
        versions = {r["version"] for r in await conn.fetch("SELECT version FROM schema_migrations")}
        assert 9001 in versions and 9002 not in versions
        assert await conn.fetchval("SELECT to_regclass('mig_probe_bad')") is None
        # Fixing the file lets the runner finish where it stopped.
        (folder / "9002_bad.sql").write_text("CREATE TABLE mig_probe_bad (id int);")
        assert await migrate(settings.database_url, root=tmp_path) == [9002]
    finally:
        await conn.execute("DROP TABLE IF EXISTS mig_probe_good, mig_probe_bad")
        await conn.execute("DELETE FROM schema_migrations WHERE version IN (9001, 9002)")
        await conn.close()


def test_duplicate_migration_numbers_are_refused(tmp_path: Path) -> None:
    for package in ("rooms", "events"):
        folder = tmp_path / package / "migrations"
        folder.mkdir(parents=True)
        (folder / "0100_x.sql").write_text("SELECT 1;")
    with pytest.raises(ValueError, match="defined twice"):
        discover(tmp_path)
