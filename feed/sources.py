"""The feed's inputs from other domains, as the small interfaces of docs/architecture.md.

Each input is a Protocol here; the composition root (roomfeed.assembly) hands over the real
objects (rooms.live_index.LiveIndex, events.live_stats.LiveStats, ranking.registry.ModelWatcher,
alliance.codes.CodeBook, ...), and mypy checks them against these Protocols there.
`RoomHeatCache` refreshes every room's heat (events.heat: decayed enters, impressions, dwell, orders)
once a second, reading only the rooms whose heat changed, as arrays aligned with the live snapshot,
so a feed request reads no per-room statistics from Redis.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np

from alliance.codes import Attribution
from events.heat import HeatSnapshot, HeatTable, RoomHeat
from events.keys import SIGNALS
from feed.context import Stage, Visit
from ranking.scorer import Scorer
from roomfeed.redis_lane import Part
from roomfeed.tasks import cancel_and_wait
from rooms.live_index import LiveRoom

log = logging.getLogger("feed.sources")


class LiveRooms(Protocol):
    """One read of the live index: its rooms, and each by id (rooms.live_index.LiveSnapshot)."""

    @property
    def rooms(self) -> Sequence[LiveRoom]: ...
    @property
    def by_id(self) -> Mapping[str, LiveRoom]: ...


class LiveIndexSource(Protocol):
    """The rooms live now (rooms.live_index.LiveIndex)."""

    async def snapshot(self) -> LiveRooms: ...
    async def replays(self, limit: int) -> Sequence[LiveRoom]: ...
    async def live_room_of_merchant(self, merchant_id: str) -> LiveRoom | None: ...


class LiveIndex(LiveIndexSource, Protocol):
    """The live index with its change log, read in the session's round trip (rooms.live_index.LiveIndex)."""

    def changes_after(self, version: int) -> Part[dict[str, int] | None]: ...


class LiveStatsSource(Protocol):
    """A viewer's recent visits (events.live_stats.LiveStats)."""

    async def viewer_recent(self, viewer_id: str, limit: int = 50) -> Sequence[Visit]: ...


class ModelSource(Protocol):
    """The promoted model's scorer, None until one is promoted (ranking.registry.ModelWatcher)."""

    @property
    def scorer(self) -> Scorer | None: ...


class CodeSource(Protocol):
    """Attribution codes (alliance.codes.CodeBook): `parse` raises on a forged or altered code."""

    def parse(self, code: str) -> Attribution: ...
    async def record_open(self, code: str, device: str | None = None) -> int: ...


class AttributionSink(Protocol):
    """Where an attributed session is recorded for the alliance (alliance.attribution.AttributionBook)."""

    async def attribute(
        self,
        viewer_id: str,
        session_id: str | None,
        attribution: Attribution,
        now: float,
        *,
        code: str | None,
        device_id: str | None = None,
        account_created_at: float | None = None,
    ) -> object: ...


class BoostStage(Stage, Protocol):
    """The alliance's boost stage (alliance.boost.AllianceBoost): a pipeline stage that leaves a grant
    per boosted room, and withdraws the grants of rooms a page did not keep after all."""

    async def release(self, viewer_id: str, session_id: str, boosts: list[tuple[str, str]]) -> None: ...


class MerchantSource(Protocol):
    """Which merchants exist (rooms.catalog.MerchantCatalog)."""

    async def exists(self, merchant_id: str) -> bool: ...


class HeatSource(Protocol):
    """Every room's heat (events.heat.RoomHeat)."""

    async def snapshot(self, now: float | None = None) -> HeatSnapshot: ...


class PresenceSource(Protocol):
    """Who is in each room now, as a part of the page's round trip (events.live_stats.LiveStats)."""

    def presence(self, room_ids: Sequence[str]) -> Part[list[int]]: ...


@dataclass(frozen=True)
class FeedInputs:
    live_index: LiveIndex
    live_stats: LiveStatsSource
    models: ModelSource
    code_book: CodeSource
    attribution_book: AttributionSink
    alliance_boost: BoostStage
    room_catalog: MerchantSource
    heat: HeatSource
    presence: PresenceSource


STAT_FIELDS = SIGNALS  # the heat table's columns, in its order


class RoomHeatCache:
    """Every room's heat (events.heat), refreshed in the background, read as arrays aligned with the candidates.

    Each second `events.heat.HeatTable` reads the rooms whose heat changed since the last second
    (the whole hash only at start and every ten minutes, in steps); a feed request reads no per-room
    statistics from Redis. Alignment with a candidate set is kept while neither the candidates nor
    the table's rows change, so a refresh costs one gather of the candidates' rows.
    """

    def __init__(self, heat: HeatSource | None, refresh_seconds: float = 1.0) -> None:
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
        self._stopping = False

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

    @property
    def generation(self) -> int:
        """How many refreshes succeeded (the heat arrays change only when it does)."""
        return self._generation

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
        self._stopping = True
        await cancel_and_wait(self._task)

    async def _run(self) -> None:
        # The flag, not only the cancel: Python 3.11's wait_for (in refresh) swallows a cancel that arrives
        # as its read completes, and `stop` then waited forever for a loop that went on refreshing.
        while not self._stopping:
            await asyncio.sleep(self.refresh_seconds)
            if not self._stopping:
                await self.refresh()


def _heat_table(heat: HeatSource | None) -> HeatTable | None:
    """An incremental `events.heat.HeatTable` over a real `RoomHeat` (None for fakes in tests)."""
    return HeatTable(heat) if isinstance(heat, RoomHeat) else None
