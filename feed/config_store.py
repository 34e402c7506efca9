"""Ranking config versions in PostgreSQL (who changed what, when) and their hot reload.

PostgreSQL holds the truth: one row per version with the whole config, the diff from the previous
version and its author. Writes use optimistic concurrency (`expected_version`, 409 on mismatch);
the primary key on `version` makes two racing writers collide instead of both winning.
`ConfigWatcher` keeps the current version in process memory, polling PostgreSQL every
`poll_seconds` (one indexed query) together with the running experiments, so a change reaches
every API process within about a second and the feed never reads PostgreSQL on its hot path.
When PostgreSQL is down the watcher keeps the last config it read.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import asyncpg

from feed.config import RankingConfig, apply_values, as_dict, diff, from_dict
from feed.experiments import Experiment, ExperimentBook
from roomfeed.errors import Conflict, NotFound
from roomfeed.paging import page, position
from roomfeed.tasks import cancel_and_wait

log = logging.getLogger("feed.config")


@dataclass(frozen=True)
class ConfigVersion:
    version: int
    config: RankingConfig
    diff: dict[str, Any]
    author: str
    note: str
    rollback_of: int | None
    created_at: datetime | None

    def public(self) -> dict[str, Any]:
        return {
            "version": self.version,
            "config": as_dict(self.config),
            "diff": self.diff,
            "author": self.author,
            "note": self.note,
            "rollback_of": self.rollback_of,
            "created_at": self.created_at.isoformat() if self.created_at else None,
        }


DEFAULT_VERSION = ConfigVersion(0, RankingConfig(), {}, "defaults", "built-in defaults", None, None)


def _row(row: asyncpg.Record) -> ConfigVersion:
    return ConfigVersion(
        version=row["version"],
        config=from_dict(row["config"]),
        diff=row["diff"],
        author=row["author"],
        note=row["note"],
        rollback_of=row["rollback_of"],
        created_at=row["created_at"],
    )


class ConfigStore:
    def __init__(self, pool: asyncpg.Pool) -> None:
        self.pool = pool

    async def current(self) -> ConfigVersion:
        row = await self.pool.fetchrow(
            "SELECT version, config, diff, author, note, rollback_of, created_at"
            " FROM feed_ranking_configs ORDER BY version DESC LIMIT 1"
        )
        return _row(row) if row else DEFAULT_VERSION

    async def history(
        self, limit: int = 100, after: str | None = None
    ) -> tuple[list[ConfigVersion], str | None]:
        """Versions, newest first, the built-in defaults (version 0) last: a page after the cursor
        `after` and the next page's cursor."""
        at = position(after, tuple[int])
        rows = await self.pool.fetch(
            "SELECT version, config, diff, author, note, rollback_of, created_at"
            " FROM feed_ranking_configs WHERE ($1::int IS NULL OR version < $1) ORDER BY version DESC LIMIT $2",
            at[0] if at else None,
            limit + 1,
        )
        versions = [_row(r) for r in rows]
        if len(rows) <= limit and (at is None or at[0] > 0):
            versions.append(DEFAULT_VERSION)
        return page(versions, limit, lambda v: (v.version,))

    async def version(self, version: int) -> ConfigVersion:
        if version == 0:
            return DEFAULT_VERSION
        row = await self.pool.fetchrow(
            "SELECT version, config, diff, author, note, rollback_of, created_at"
            " FROM feed_ranking_configs WHERE version = $1",
            version,
        )
        if row is None:
            raise NotFound(f"ranking config version {version} does not exist", fields={"version": "unknown"})
        return _row(row)

    async def _write(
        self,
        target: RankingConfig,
        expected_version: int | None,
        author: str,
        note: str,
        rollback_of: int | None,
    ) -> ConfigVersion:
        async with self.pool.acquire() as conn, conn.transaction():
            row = await conn.fetchrow(
                "SELECT version, config, diff, author, note, rollback_of, created_at"
                " FROM feed_ranking_configs ORDER BY version DESC LIMIT 1 FOR UPDATE"
            )
            current = _row(row) if row else DEFAULT_VERSION
            if expected_version is not None and expected_version != current.version:
                raise Conflict(
                    f"the ranking config is at version {current.version}, not {expected_version}; reload and retry",
                    fields={"expected_version": f"current version is {current.version}"},
                )
            changes = diff(current.config, target)
            try:
                saved = await conn.fetchrow(
                    "INSERT INTO feed_ranking_configs (version, config, diff, author, note, rollback_of)"
                    " VALUES ($1, $2, $3, $4, $5, $6)"
                    " RETURNING version, config, diff, author, note, rollback_of, created_at",
                    current.version + 1,
                    as_dict(target),
                    changes,
                    author,
                    note,
                    rollback_of,
                )
            except asyncpg.UniqueViolationError:
                raise Conflict(
                    "the ranking config changed meanwhile; reload and retry",
                    fields={"expected_version": "a concurrent change won"},
                ) from None
        return _row(saved)

    async def update(
        self, values: dict[str, float | int], expected_version: int | None, author: str, note: str = ""
    ) -> ConfigVersion:
        current = await self.current()
        if expected_version is not None and expected_version != current.version:
            raise Conflict(
                f"the ranking config is at version {current.version}, not {expected_version}; reload and retry",
                fields={"expected_version": f"current version is {current.version}"},
            )
        return await self._write(apply_values(current.config, values), current.version, author, note, None)

    async def rollback(self, version: int, author: str) -> ConfigVersion:
        target = await self.version(version)
        return await self._write(target.config, None, author, f"rollback to version {version}", version)


class ConfigWatcher:
    """The current config and experiments of this process, reloaded in the background."""

    def __init__(self, store: ConfigStore, experiments: ExperimentBook, poll_seconds: float = 1.0) -> None:
        self.store = store
        self.experiments_book = experiments
        self.poll_seconds = poll_seconds
        self.current: ConfigVersion = DEFAULT_VERSION
        self.experiments: list[Experiment] = []
        self.last_loaded: float | None = None
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        with contextlib.suppress(Exception):
            await asyncio.wait_for(self.reload(), 3.0)
        self._task = asyncio.create_task(self._run(), name="feed-config-watcher")

    async def stop(self) -> None:
        await cancel_and_wait(self._task)

    async def reload(self) -> None:
        latest = await self.store.current()
        if latest.version != self.current.version:
            log.info("ranking config now at version %s", latest.version)
        # The same version read again keeps the object served: the feed's stages key what they derive
        # (the room part over every room, ...) by the config object, and a new equal object each poll
        # made them recompute it all every second.
        if latest != self.current:
            self.current = latest
        self.experiments = await self.experiments_book.running()
        self.last_loaded = asyncio.get_running_loop().time()

    async def _run(self) -> None:
        while True:
            await asyncio.sleep(self.poll_seconds)
            try:
                await asyncio.wait_for(self.reload(), 5.0)
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # PostgreSQL down: keep serving the last config read
                log.warning("ranking config reload failed; keeping version %s: %s", self.current.version, exc)
