"""The feed's inputs from other domains, behind the small interfaces of docs/architecture.md.

Each input is found on the app state (where its domain's `start` put it) or built from its
domain's module per the contract; a domain not present yet leaves the input empty, and the
feed serves without it (no live index → 503, no stats → zeros, no model → popularity).
`RoomHeatCache` refreshes every room's heat (events.heat: decayed enters, impressions, dwell, orders)
once a second, reading only the rooms whose heat changed, as arrays aligned with the live snapshot,
so a feed request reads no per-room statistics from Redis.
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib
import logging
import time
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np

log = logging.getLogger("feed.sources")


class LiveIndexSource(Protocol):
    async def snapshot(self) -> Any: ...
    async def replays(self, limit: int) -> list[Any]: ...
    async def live_room_of_merchant(self, merchant_id: str) -> Any | None: ...
    def queue_changes_since(self, pipe: Any, version: int) -> None: ...
    def changes_since(self, reply: Any) -> dict[str, int] | None: ...


class LiveStatsSource(Protocol):
    async def rooms(self, room_ids: list[str]) -> dict[str, Any]: ...
    async def viewer_recent(self, viewer_id: str, limit: int = 50) -> list[Any]: ...


def _build(module: str, cls: str, *args: Any) -> Any | None:
    try:
        factory = getattr(importlib.import_module(module), cls)
    except (ModuleNotFoundError, AttributeError):
        return None
    try:
        return factory(*args)
    except Exception as exc:
        log.warning("cannot build %s.%s: %s", module, cls, exc)
        return None


@dataclass
class FeedInputs:
    live_index: LiveIndexSource | None
    live_stats: LiveStatsSource | None
    model_watcher: Any | None  # ranking.registry.ModelWatcher: `.scorer` (score, model_version) or None
    code_book: Any | None  # alliance.codes.CodeBook
    attribution_book: Any | None  # alliance.attribution.AttributionBook
    alliance_boost: Any | None  # alliance.boost.AllianceBoost (a feed stage)
    room_catalog: Any | None  # rooms.catalog.MerchantCatalog (exists(merchant_id))
    heat: Any | None = None  # events.heat.RoomHeat (snapshot, queue_viewers_now)

    @classmethod
    def from_state(cls, state: Any, resources: Any) -> FeedInputs:
        def pick(name: str, module: str, klass: str, *args: Any) -> Any | None:
            found = getattr(state, name, None)
            return found if found is not None else _build(module, klass, *args)

        pool, redis, settings = resources.pool, resources.redis, resources.settings
        return cls(
            live_index=pick("live_index", "rooms.live_index", "LiveIndex", redis),
            live_stats=pick("live_stats", "events.live_stats", "LiveStats", redis),
            model_watcher=getattr(state, "model_watcher", None),
            code_book=pick("code_book", "alliance.codes", "CodeBook", settings, pool),
            attribution_book=pick("attribution_book", "alliance.attribution", "AttributionBook", pool, redis),
            alliance_boost=getattr(state, "alliance_boost", None),
            room_catalog=pick("merchant_catalog", "rooms.catalog", "MerchantCatalog", pool),
            heat=pick("room_heat", "events.heat", "RoomHeat", redis),
        )


STAT_FIELDS = ("enters", "impressions", "dwell_s", "orders")


class RoomHeatCache:
    """Every room's heat (events.heat), refreshed in the background, read as arrays aligned with the candidates.

    Each second `events.heat.HeatTable` reads the rooms whose heat changed since the last second
    (the whole hash only at start and every ten minutes, in steps); a feed request reads no per-room
    statistics from Redis. Alignment with a candidate set is kept while neither the candidates nor
    the table's rows change, so a refresh costs one gather of the candidates' rows.
    """

    def __init__(self, heat: Any | None, refresh_seconds: float = 1.0) -> None:
        self.heat = heat
        self.table = _heat_table(heat)
        self.refresh_seconds = refresh_seconds
        self.last_refresh_s = 0.0
        self.fresh = False
        self._snapshot: Any = None
        self._generation = 0
        self._own: dict[str, Any] = {}
        self._own_for: Any = None
        self._task: asyncio.Task[None] | None = None

    async def refresh(self) -> None:
        if self.heat is None:
            return
        started = time.perf_counter()
        try:
            read = self.table.refresh() if self.table is not None else self.heat.snapshot()
            self._snapshot = await asyncio.wait_for(read, 5.0)
        except Exception as exc:
            self.fresh = False
            log.warning("room heat refresh failed; keeping the last values: %s", exc)
            return
        self._generation += 1
        self.fresh = True
        self.last_refresh_s = time.perf_counter() - started

    def aligned(self, room_ids: np.ndarray, memo: dict[str, Any] | None = None) -> dict[str, np.ndarray]:
        """Arrays of STAT_FIELDS aligned with `room_ids`, kept in `memo` (the candidate set's; else
        this cache's own, for one set) until the next refresh; the rows of each room are kept there
        while the heat table's layout holds."""
        if memo is None:
            if self._own_for is not room_ids:
                self._own, self._own_for = {}, room_ids
            memo = self._own
        held = memo.get("heat")
        if held is not None and held[0] == self._generation:
            return held[1]  # type: ignore[no-any-return]
        snapshot = self._snapshot
        if snapshot is None:
            matrix = np.zeros((len(room_ids), len(STAT_FIELDS)), dtype=np.float32)
        else:
            layout = getattr(snapshot, "layout", None)
            kept = memo.get("heat_rows")
            if layout is None:  # a plain snapshot (no table): align from scratch
                positions = None
            elif kept is not None and kept[0] == layout:
                positions = kept[1]
            else:
                positions = snapshot.positions(room_ids)
                memo["heat_rows"] = (layout, positions)
            matrix = snapshot.aligned(room_ids, positions).astype(np.float32)
        arrays = {f: np.ascontiguousarray(matrix[:, i]) for i, f in enumerate(STAT_FIELDS)}
        memo["heat"] = (self._generation, arrays)
        return arrays

    async def start(self) -> None:
        await self.refresh()
        self._task = asyncio.create_task(self._run(), name="feed-room-heat")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    async def _run(self) -> None:
        while True:
            await asyncio.sleep(self.refresh_seconds)
            await self.refresh()


def _heat_table(heat: Any | None) -> Any | None:
    """An incremental `events.heat.HeatTable` over a real `RoomHeat` (None for fakes and builds without it)."""
    if heat is None:
        return None
    try:
        from events.heat import HeatTable, RoomHeat
    except ImportError:  # pragma: no cover - a build without events
        return None
    return HeatTable(heat) if isinstance(heat, RoomHeat) else None
