"""The feed's stages, one small class each, in pipeline order (see feed.pipeline).

Every stage has a `name` and `async def apply(ctx)`; it reads and writes the `FeedContext` per the
rules in docs/feed.md and works on whole numpy arrays. Stages that need another domain take it in
their constructor and degrade (mark `ctx.degraded`) instead of failing when it is unreachable.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from itertools import repeat
from typing import Any

import numpy as np

from feed.config import RankingConfig
from feed.context import Candidates, FeedContext, RecentVisit, as_recent_visit, frame_part
from feed.frames import FrameRefresher
from feed.sources import LiveIndexSource, LiveStatsSource, RoomHeatCache
from ranking import viewer_kernel
from ranking.features import PRICE_BANDS
from ranking.history import ViewerHistories, ViewerHistory
from ranking.ranker import (
    GROUPS,
    F,
    MerchantTable,
    Ranker,
    RankRequest,
    SessionVisit,
    design,
    empty_table,
    history_with_visits,
    no_model_ranker,
    room_columns,
)

log = logging.getLogger("feed.stages")
REDIS_ERRORS = (OSError, TimeoutError, asyncio.TimeoutError, ConnectionError)


def _is_outage(exc: BaseException) -> bool:
    """Redis/network trouble (degrade) as opposed to a bug (raise)."""
    if isinstance(exc, REDIS_ERRORS):
        return True
    try:
        from redis.exceptions import RedisError
    except ImportError:  # pragma: no cover
        return False
    return isinstance(exc, RedisError)


class CandidateSource:
    """Candidates: every live room of the current snapshot (never a replay: replays are their own list,
    `GET /v1/replays`, so a client written to the feed's contract never plays one as live).

    At 10,000 live rooms a new candidate set and what the stages derive from it (heat alignment,
    the scorer's item block, ...) cost ~12 ms of the event loop, and rooms start and end every
    second: a stall that set the p99. So a big set (`background_from` rooms or more) is prepared in
    a background task, a step at a time (`warmers`: the stages' `warm(candidates)`, set by the
    pipeline), while requests keep the set being served minus the rooms the new snapshot no
    longer has live (an ended room never appears; a new room appears once its set is ready, a few
    milliseconds later). Smaller sets are built in the request.
    """

    name = "candidates"

    def __init__(
        self,
        live_index: LiveIndexSource,
        max_staleness_s: float = 0.0,
        background_from: int = 2_000,
        frames: FrameRefresher | None = None,
    ) -> None:
        """`max_staleness_s`: reuse the snapshot read that recently instead of asking the live index
        (one Redis round trip) on every request; a room that ends is gone from pages within it.
        `frames`: builds a big set's per-second arrays off the request path (feed.frames; the pipeline
        gives it the stages' hooks); smaller sets, and a set without a fresh frame, derive them in the
        request."""
        self.live_index = live_index
        self.max_staleness_s = max_staleness_s
        self.background_from = background_from
        self.frames = frames if frames is not None else FrameRefresher()
        self.warmers: list[Callable[[Candidates], None]] = []
        self._checked_at = -1e9
        self._snapshot: Any = None
        self._candidates: tuple[Any, Candidates] | None = None  # (snapshot, its set): what is served
        self._gone: tuple[Any, np.ndarray] | None = None  # (newer snapshot, served rows it has not live)
        self._preparing: tuple[Any, asyncio.Task[None]] | None = None

    def _of_snapshot(self, snapshot: Any) -> Candidates:
        live = tuple(room for room in snapshot.rooms if room.status == "live")
        candidates = Candidates.of(live)
        self._candidates = (snapshot, candidates)
        return candidates

    def _current(self, snapshot: Any) -> tuple[Candidates, np.ndarray | None]:
        """The set to serve for `snapshot`, and the rows of it to drop (None: none)."""
        served = self._candidates
        if served is not None and served[0] is snapshot:
            return served[1], None
        if (
            served is None
            or len(served[1]) < self.background_from
            or len(snapshot.rooms) < self.background_from
        ):
            return self._of_snapshot(snapshot), None
        if self._preparing is None or self._preparing[1].done():
            self._preparing = (snapshot, asyncio.create_task(self._prepare(snapshot), name="feed-candidates"))
        gone = self._gone
        if gone is None or gone[0] is not snapshot:
            by_id, rooms = snapshot.by_id, served[1].rooms
            still = np.fromiter(
                ((r := by_id.get(room.room_id)) is not None and r.status == "live" for room in rooms),
                dtype=bool,
                count=len(rooms),
            )
            gone = self._gone = (snapshot, np.flatnonzero(~still))
        return served[1], gone[1]

    async def _prepare(self, snapshot: Any) -> None:
        """Build `snapshot`'s set and let each stage derive what it keeps, yielding between steps."""
        try:
            live = tuple(room for room in snapshot.rooms if room.status == "live")
            await asyncio.sleep(0)
            before = self._candidates
            candidates = await Candidates.of_in_steps(live)
            for warm in self.warmers:
                await asyncio.sleep(0)
                warm(candidates)
            await self.frames.prepare(candidates)
            if self._candidates is before:  # not replaced meanwhile by a set built in a request
                self._candidates = (snapshot, candidates)
        except Exception:  # the request path builds it then
            log.exception("preparing the candidate set failed")

    async def stop(self) -> None:
        """Stop the background work (a set being prepared, the frame refresher)."""
        await self.frames.stop()
        if self._preparing is not None and not self._preparing[1].done():
            self._preparing[1].cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._preparing[1]

    @property
    def snapshot_version(self) -> int | None:
        return int(self._snapshot.version) if self._snapshot is not None else None

    async def apply(self, ctx: FeedContext) -> None:
        try:
            if (
                not ctx.live_fresh
                and self._snapshot is not None
                and time.monotonic() - self._checked_at < self.max_staleness_s
            ):
                snapshot = self._snapshot
            else:
                asked_at = time.monotonic()
                snapshot = await self.live_index.snapshot()
                self._snapshot, self._checked_at = snapshot, asked_at
        except Exception as exc:
            if not _is_outage(exc):
                raise
            # Redis down: the last snapshot this process read (the live index's own copy first).
            snapshot = getattr(self.live_index, "cached", None) or self._snapshot
            ctx.degrade("live_index")
            if snapshot is None:
                ctx.candidates = Candidates.of(()).fresh_copy()
                return
        candidates, gone = self._current(snapshot)
        ctx.candidates = candidates.fresh_copy()
        if len(candidates) >= self.background_from and self.frames.active:
            self.frames.take(candidates, ctx.candidates, ctx.config, ctx.now)
        if gone is not None and len(gone):
            ctx.candidates.drop(gone)
        if ctx.live_changes:  # changed (ended, mostly) after the snapshot read: not on this page
            version, index_of = snapshot.version, ctx.candidates.index_of
            changed = [
                i
                for room_id, changed_at in ctx.live_changes.items()
                if (i := index_of.get(room_id)) is not None and changed_at > version
            ]
            if changed:
                ctx.candidates.drop(changed)


class Hydrate:
    """Hydrate: room heat of every candidate (in memory, refreshed each second) and the viewer's recent rooms."""

    name = "hydrate"

    def __init__(self, stats: RoomHeatCache, live_stats: LiveStatsSource | None) -> None:
        self.stats = stats
        self.live_stats = live_stats

    def warm(self, c: Candidates) -> None:
        self.stats.aligned(c.room_ids, c.memo)

    def frame_version(self) -> int:
        """Which heat refresh the cache holds (a frame is rebuilt after each)."""
        return self.stats.generation

    def frame_shared(self, c: Candidates, shared: dict[str, Any]) -> None:
        """The frame's heat: every room's, aligned with the set (read by `apply` and the other parts)."""
        arrays = shared["heat"] = self.stats.aligned(c.room_ids, c.memo)
        c.enters, c.impressions = arrays["enters"], arrays["impressions"]
        c.dwell_s, c.orders = arrays["dwell_s"], arrays["orders"]

    async def apply(self, ctx: FeedContext) -> None:
        c = ctx.candidates
        held = c.frame.shared.get("heat") if c.frame is not None else None
        arrays = held if held is not None else self.stats.aligned(c.room_ids, c.memo)
        c.enters = arrays["enters"]
        c.impressions = arrays["impressions"]
        c.dwell_s = arrays["dwell_s"]
        c.orders = arrays["orders"]
        if ctx.recent_loaded or self.live_stats is None or "redis" in ctx.degraded_reasons:
            return
        try:
            visits = await self.live_stats.viewer_recent(ctx.viewer_id, limit=50)
        except Exception as exc:
            if not _is_outage(exc):
                raise
            ctx.degrade("viewer_recent")
            return
        ctx.recent = [as_recent_visit(v) for v in visits]


def live_items(c: Candidates, scorer: Any) -> Any:
    """The scorer's item block for this candidate set (`Scorer.prepare`), kept with the set; the
    rooms themselves for a scorer without one."""
    prepare = getattr(scorer, "prepare", None)
    if prepare is None:
        return c.rooms
    parent, rows = c.parent, c.rows
    if parent is not None and rows is not None:  # a retrieved subset: the rows of the whole set's block
        return c.derived("live_items", (scorer,), lambda: live_items(parent, scorer).take(rows))
    return c.derived("live_items", (scorer,), lambda: prepare(c.rooms))


class Score:
    """Score: the current LightFM model's score of every candidate for this viewer (none → popularity)."""

    name = "score"

    def __init__(self, model_watcher: Any | None) -> None:
        self.model_watcher = model_watcher

    def warm(self, c: Candidates) -> None:
        scorer = getattr(self.model_watcher, "scorer", None)
        if scorer is not None and len(c):
            live_items(c, scorer)

    async def apply(self, ctx: FeedContext) -> None:
        scorer = getattr(self.model_watcher, "scorer", None)
        c = ctx.candidates
        if scorer is None or len(c) == 0:
            ctx.model_version = "popularity"
            return
        state = ctx.viewer
        try:
            if state is not None and state.vector is not None and state.version == scorer.model_version:
                # The viewer's vector from the viewer-state store, of the model this scorer serves.
                scores = np.asarray(
                    scorer.score_vector(live_items(c, scorer), state.vector), dtype=np.float32
                )
            else:
                scores = np.asarray(scorer.score(ctx.viewer_id, live_items(c, scorer)), dtype=np.float32)
        except Exception:
            log.exception("the scorer failed; ranking this request by popularity")
            ctx.model_version = "popularity"
            ctx.degrade("model")
            return
        # A finite sum means every score is finite (one pass instead of two); a sum that only overflowed
        # leaves nan_to_num nothing to replace.
        c.model_score = (
            scores
            if math.isfinite(float(np.add.reduce(scores)))  # ndarray.sum's reduction without its wrapper
            else np.nan_to_num(scores, nan=0.0, posinf=0.0, neginf=0.0)
        )
        ctx.model_version = str(getattr(scorer, "model_version", "unknown"))


def spare(count: int) -> int:
    """Rooms a page carries beyond `count`, for the ones a concurrent request of the session takes."""
    return min(count, 10)


def _scaled(values: np.ndarray) -> np.ndarray:
    """Values mapped to [0, 1] by their maximum (all zeros stay zeros)."""
    top = float(values.max()) if len(values) else 0.0
    return values / top if top > 0 else np.zeros_like(values)


def session_penalty(c: Candidates, recent: Sequence[RecentVisit], now: float, window_s: int) -> np.ndarray:
    """1 for rooms of merchants the viewer just swiped away from, 0.5 for rooms of the same category."""
    penalty = np.zeros(len(c), dtype=np.float32)
    horizon_ms = (now - window_s) * 1000
    swiped = [v for v in recent if v.ts >= horizon_ms and v.swiped_away]
    if not swiped:
        return penalty
    categories = set()
    whole = c.whole  # a swiped room is filtered out of a retrieved subset: its category is the whole set's
    for visit in swiped:
        index = whole.index_of.get(visit.room_id)
        if index is not None:
            categories.add(int(whole.category_codes[index]))
        else:
            rooms = whole.rooms_of_merchant.get(visit.merchant_id)
            if rooms is not None and len(rooms):
                categories.add(int(whole.category_codes[rooms[0]]))
    if categories:
        table = np.zeros(max(int(c.category_codes.max()) + 1, max(categories) + 1), dtype=np.float32)
        table[list(categories)] = 0.5
        penalty = table[c.category_codes]
    for visit in swiped:
        rooms = c.rooms_of_merchant.get(visit.merchant_id)
        if rooms is not None:
            penalty[rooms] = 1.0
    return penalty


# Configs whose derived values a stage keeps at once: the operators' config and a running experiment's
# variants (one object per value: feed.experiments.variant_config). Variants alternate request by
# request, so one kept value per name made every page recompute the room part over every room.
CONFIGS_KEPT = 16


def per_config(name: str, cfg: RankingConfig) -> str:
    """A `Candidates.derived` name of its own per config value (so equal configs share one entry and a
    candidate set keeps one per value in use, never one per object made; the key still checks the object)."""
    return f"{name}:{hash(cfg)}"


@dataclass(frozen=True)
class RankModel:
    """What the rank stage ranks with: the learned ranker (or the best simple baseline's weights), its
    merchant table, the viewers' histories as of the model, and where merchants sit in it."""

    ranker: Ranker
    table: MerchantTable
    histories: ViewerHistories | None
    categories: dict[str, int]
    scorer: Any | None  # ranking.scorer.Scorer (positions, LightFM item space) or None


_NO_MODEL = RankModel(no_model_ranker(), empty_table(), None, {}, None)


def rank_model(scorer: Any | None) -> RankModel:
    """The promoted model's ranker, or REP-then-live-POP over what the feed knows when there is none."""
    model = getattr(scorer, "model", None)
    if model is None or getattr(model, "ranker_weights", None) is None or model.table is None:
        return _NO_MODEL
    held: RankModel | None = getattr(model, "_rank_model", None)
    if held is None:
        held = RankModel(
            model.ranker,
            model.table,
            model.histories,
            {name: i for i, name in enumerate(model.categories or [])},
            scorer,
        )
        model._rank_model = held
    return held


def _positions(c: Candidates, rm: RankModel) -> tuple[np.ndarray, dict[str, int]]:
    """Each candidate's merchant position (the model's; the candidate set's own codes without a model)
    and the lookup for merchants of the viewer's visits."""
    scorer = rm.scorer
    if scorer is None:
        codes = dict(getattr(c.rooms_of_merchant, "_codes", {}))
        return c.merchant_codes.astype(np.int64), codes
    live = live_items(c, scorer)
    positions = getattr(live, "positions", None)
    if positions is None:
        positions = np.fromiter((scorer.merchant_position(r) for r in c.rooms), np.int64, len(c))
    return positions, {}


@dataclass
class RankColumns:
    """What the ranker reads of a candidate set, kept with it: merchant positions, category and price-band
    codes, the lookup for merchants of the viewer's visits, the positions' sort order, start times (ms)
    and the gather indices (`RankRequest.slots`)."""

    items: np.ndarray
    category: np.ndarray
    band: np.ndarray
    lookup: dict[str, int]
    order: np.ndarray
    started_ms: np.ndarray
    slots: dict[tuple[str, int], np.ndarray]


class Rank:
    """Rank: the learned ranker (ranking.ranker, the one the evaluation and the promotion gate judge) with
    the operator's multipliers, plus the feed's optional terms (conversion, freshness, in-session penalty).

    Split by what changes: the room part (popularity as of the model's snapshot, the room's heat,
    freshness) once per candidate set, heat refresh, config, model and second; per request the viewer
    part (LightFM, history, co-visitation, affinities, session) on the rooms it touches. The viewer's
    history is the model's (built from the archive as of its training round) plus the visits since.
    """

    name = "rank"

    def __init__(self, model_watcher: Any | None = None) -> None:
        self.model_watcher = model_watcher
        # The compiled viewer part (ranking.viewer_kernel), loaded or compiled now rather than by a page.
        viewer_kernel.warm()
        # The multiplied ranker per config value in use (an experiment's variants alternate request by request).
        self._weights: dict[int, tuple[Ranker, RankingConfig, Ranker]] = {}

    def warm(self, c: Candidates) -> None:
        """The set's unit item rows (the session's LightFM signal): made once per set here, off the request
        path; a retrieved subset gathers its rows of them (scaling its own rows cost ~45 us a page at
        100,000 live rooms)."""
        scorer = getattr(self.model_watcher, "scorer", None)
        if scorer is not None and len(c):
            getattr(live_items(c, scorer), "unit", None)

    def model(self) -> RankModel:
        """The rank model of the serving model (what a frame is built with)."""
        return rank_model(getattr(self.model_watcher, "scorer", None))

    def ranker(self, rm: RankModel, cfg: RankingConfig) -> Ranker:
        held = self._weights.get(hash(cfg))
        if held is None or held[0] is not rm.ranker or held[1] is not cfg:
            if len(self._weights) >= CONFIGS_KEPT:
                self._weights.clear()
            held = self._weights[hash(cfg)] = (rm.ranker, cfg, rm.ranker.multiplied(multipliers(cfg)))
        return held[2]

    def columns(self, c: Candidates, rm: RankModel) -> RankColumns:
        """The candidates' columns the ranker reads, kept with the set (a retrieved subset: the whole
        set's, at its rows)."""
        if c.parent is not None:
            return self.subset_columns(c, rm)

        def make() -> RankColumns:
            positions, lookup = _positions(c, rm)
            cats = np.fromiter((rm.categories.get(r.category, -1) for r in c.rooms), np.int64, len(c))
            bands = np.fromiter((BAND_CODE.get(r.price_band, -1) for r in c.rooms), np.int64, len(c))
            order = np.argsort(positions, kind="stable")
            return RankColumns(positions, cats, bands, lookup, order, c.started_at * 1000.0, {})

        return c.derived("rank_columns", (rm,), make)

    def subset_columns(self, c: Candidates, rm: RankModel) -> RankColumns:
        """`columns` of a retrieved subset: the whole set's, at its rows (gather indices of its own)."""
        assert c.parent is not None and c.rows is not None
        rows = c.rows

        def make() -> RankColumns:
            whole = self.columns(c.parent, rm)  # type: ignore[arg-type]
            mine = whole.items[rows]
            return RankColumns(
                mine,
                whole.category[rows],
                whole.band[rows],
                whole.lookup,
                np.argsort(mine, kind="stable"),
                whole.started_ms[rows],
                {},
            )

        return c.derived("rank_columns", (rm,), make)

    def request(self, c: Candidates, rm: RankModel, now: float) -> RankRequest:
        cols = self.columns(c, rm)
        return RankRequest(
            now_ms=int(now * 1000),
            items=cols.items,
            category=cols.category,
            band=cols.band,
            started_ms=cols.started_ms,
            heat=c.enters,
            item_order=cols.order,
            slots=cols.slots,  # gather indices: computed by the first request, reused by the next
        )

    @staticmethod
    def _whole_or_frame(
        of: Callable[[Candidates, RankModel, RankingConfig, float], np.ndarray],
        name: str,
        c: Candidates,
        rm: RankModel,
        cfg: RankingConfig,
        now: float,
    ) -> np.ndarray | None:
        """A retrieved subset's rows of the whole set's part `of`, or the part of the frame the request
        took; None when the request derives it itself."""
        if c.parent is not None and c.rows is not None:
            rows: np.ndarray = of(c.parent, rm, cfg, now)[c.rows]
            return rows
        framed: np.ndarray | None = frame_part(c, name, cfg, rm)
        return framed

    def room_columns(self, c: Candidates, rm: RankModel, now: float) -> np.ndarray:
        """The ranker's room columns (ranking.ranker.room_columns: popularity as of the model, heat,
        freshness) of a whole set, kept per heat refresh, model and second: they depend on no weight, so
        the room part and the room delta of every config in use are products of one computation (each
        computed them over every room: two thirds of a frame's CPU at 100,000 live rooms)."""
        return c.derived(
            "rank_room_columns",
            (c.enters, rm, int(now)),
            lambda: room_columns(rm.table, self.request(c, rm, now)),
        )

    def room_part(self, c: Candidates, rm: RankModel, cfg: RankingConfig, now: float) -> np.ndarray:
        """The viewer-independent score (kept per heat refresh, config, model and second); callers copy it."""
        kept_elsewhere = self._whole_or_frame(self.room_part, "room_part", c, rm, cfg, now)
        if kept_elsewhere is not None:
            return kept_elsewhere

        def make() -> np.ndarray:
            columns = self.room_columns(c, rm, now)
            base = self.ranker(rm, cfg).room_score(rm.table, self.request(c, rm, now), columns)
            base = base.astype(np.float64)
            if cfg.w_conversion > 0:
                base += cfg.w_conversion * _scaled((c.orders + 0.1) / (c.enters + 10.0))
            if cfg.w_freshness > 0:
                age = np.maximum(now - c.started_at, 0.0)
                base += cfg.w_freshness * np.power(0.5, age / cfg.freshness_half_life_s)
            return base

        return c.derived(per_config("rank_rooms", cfg), (c.enters, c.orders, cfg, rm, int(now)), make)

    def room_part32(self, c: Candidates, rm: RankModel, cfg: RankingConfig, now: float) -> np.ndarray:
        """`room_part` as float32, the ranker's score type (kept alike: a request copies it, never casts it)."""
        kept_elsewhere = self._whole_or_frame(self.room_part32, "room_part32", c, rm, cfg, now)
        if kept_elsewhere is not None:
            return kept_elsewhere

        def make() -> np.ndarray:
            return self.room_part(c, rm, cfg, now).astype(np.float32)

        kept: np.ndarray = c.derived(
            per_config("rank_rooms32", cfg), (c.enters, c.orders, cfg, rm, int(now)), make
        )
        return kept

    def room_delta(self, c: Candidates, rm: RankModel, cfg: RankingConfig, now: float) -> np.ndarray | None:
        """A two-part ranker's known-merchant room part minus its discovery one (ranking.ranker.Ranker.
        room_delta), kept like `room_part`; None with one score."""
        if c.parent is not None and c.rows is not None:
            whole = self.room_delta(c.parent, rm, cfg, now)
            return whole[c.rows] if whole is not None else None
        if c.frame is not None and c.frame.model is rm and cfg in c.frame.views:
            kept_in_frame: np.ndarray | None = c.frame.views[cfg].get("room_delta")
            return kept_in_frame

        def make() -> np.ndarray | None:
            ranker = self.ranker(rm, cfg)
            if ranker.discovery is None:
                return None
            return ranker.room_delta(rm.table, self.request(c, rm, now), self.room_columns(c, rm, now))

        kept: np.ndarray | None = c.derived(
            per_config("rank_rooms_delta", cfg), (c.enters, cfg, rm, int(now)), make
        )
        return kept

    def frame_view(
        self, c: Candidates, rm: RankModel, cfg: RankingConfig, now: float, view: dict[str, Any]
    ) -> None:
        """The frame's room part and (a two-part ranker's) room delta for `cfg` (`c` carries the frame's heat)."""
        if "room_part" in view:  # made already (retrieval's live set needs it first)
            return
        view["room_part"] = self.room_part(c, rm, cfg, now)
        view["room_part32"] = self.room_part32(c, rm, cfg, now)
        view["room_delta"] = (
            self.room_delta(c, rm, cfg, now) if self.ranker(rm, cfg).discovery is not None else None
        )

    def viewer_request(self, ctx: FeedContext) -> tuple[RankModel, RankRequest]:
        """The rank model and this viewer's request against the candidates (history, session, LightFM)."""
        c = ctx.candidates
        rm = rank_model(getattr(self.model_watcher, "scorer", None))
        req = self.request(c, rm, ctx.now)
        lookup = self.columns(c, rm).lookup
        history, session = ctx.viewer_inputs or viewer_inputs(
            ctx.viewer_id, ctx.recent, rm, lookup, req.now_ms, base=viewer_history(ctx, rm)
        )
        req.history, req.session = history, session
        if rm.scorer is not None and ctx.model_version != "popularity" and is_personal(ctx, rm.scorer):
            req.lightfm = c.model_score
            req.lightfm_moments = ctx.lightfm_moments
        if rm.scorer is not None and session:
            live = live_items(c, rm.scorer)
            req.unit_items = getattr(live, "unit", None)
            req.item_unit_of = rm.scorer.unit_items()
        return rm, req

    async def apply(self, ctx: FeedContext) -> None:
        c, cfg = ctx.candidates, ctx.config
        if len(c) == 0:
            return
        rm, req = self.viewer_request(ctx)
        ranker = self.ranker(rm, cfg)
        room_part = self.room_part32(c, rm, cfg, ctx.now)
        delta = self.room_delta(c, rm, cfg, ctx.now) if ranker.discovery is not None else None
        score = ranker.serve_viewer_score(room_part, rm.table, req, delta)
        if cfg.w_session > 0 and ctx.recent:
            score -= cfg.w_session * session_penalty(c, ctx.recent, ctx.now, cfg.swipe_away_window_s)
        c.score = score.astype(np.float32, copy=False)  # the ranker's own array: no second copy

    def terms(self, ctx: FeedContext, rows: np.ndarray) -> dict[str, np.ndarray]:
        """The score of candidates `rows` split into what makes it (operators' explain, never the page
        path): the learned ranker's column groups (ranking.ranker.GROUPS, through its own `design`)
        with the operator's multipliers, and the feed's terms on top (conversion, freshness, the
        in-session penalty). They add up to the rank stage's score of those rooms."""
        c, cfg = ctx.candidates, ctx.config
        rm, req = self.viewer_request(ctx)
        ranker = self.ranker(rm, cfg)
        x = design(rm.table, req)[rows]
        # Per room, the weights that scored it: a two-part ranker's discovery weights for the merchants
        # the viewer never entered (ranking.ranker.Ranker.discovery).
        weights = np.broadcast_to(ranker.weights, x.shape)
        if ranker.discovery is not None:
            weights = np.where(x[:, [F["h_entered"]]] > 0, ranker.weights, ranker.discovery)
        out = {
            group: (x[:, [F[f] for f in features]] * weights[:, [F[f] for f in features]]).sum(axis=1)
            for group, features in GROUPS.items()
        }
        grouped = {f for features in GROUPS.values() for f in features}
        rest = [F[f] for f in F if f not in grouped]
        out["other_columns"] = (x[:, rest] * weights[:, rest]).sum(axis=1) if rest else np.zeros(len(rows))
        zeros = np.zeros(len(rows))
        out["conversion"] = (
            cfg.w_conversion * _scaled((c.orders + 0.1) / (c.enters + 10.0))[rows]
            if cfg.w_conversion > 0
            else zeros
        )
        age = np.maximum(ctx.now - c.started_at[rows], 0.0)
        out["freshness"] = (
            cfg.w_freshness * np.power(0.5, age / cfg.freshness_half_life_s) if cfg.w_freshness > 0 else zeros
        )
        penalty = session_penalty(c, ctx.recent, ctx.now, cfg.swipe_away_window_s) if ctx.recent else None
        out["session_penalty"] = -cfg.w_session * penalty[rows] if penalty is not None else zeros
        return out


BAND_CODE = {band: i for i, band in enumerate(PRICE_BANDS)}


def is_personal(ctx: FeedContext, scorer: Any) -> bool:
    """Whether the score stage scored this viewer with a vector of the serving model (its state's, or
    one the model carries in memory), rather than popularity."""
    state = ctx.viewer
    if state is not None and state.version == scorer.model_version and state.vector is not None:
        return True
    return bool(scorer.is_personal(ctx.viewer_id))


def viewer_history(ctx: FeedContext, rm: RankModel) -> ViewerHistory | None:
    """The viewer's history as of the model's round from its state (None: ask the model in memory)."""
    state = ctx.viewer
    scorer = rm.scorer
    if state is None or scorer is None:
        return None
    if state.version != scorer.model_version:
        return ViewerHistory.empty()  # read under another model: its merchant positions mean nothing here
    history: ViewerHistory = state.history
    return history


def viewer_inputs(
    viewer_id: str,
    recent: Sequence[RecentVisit],
    rm: RankModel,
    lookup: dict[str, int],
    now_ms: int,
    base: ViewerHistory | None = None,
) -> tuple[ViewerHistory, list[SessionVisit]]:
    """The viewer's history (the model's, as of its round, plus the visits since) and the session's visits,
    keyed by merchant position: the same tables the trainer and the offline replay build (ranking.history).
    `base`: the history as of the round from the viewer-state store (default: the model's in memory)."""
    scorer = rm.scorer

    def position(merchant_id: str) -> int:
        if scorer is not None:
            return int(scorer.position_of(merchant_id))
        return lookup.setdefault(merchant_id, len(lookup) + 1_000_000)

    since = rm.histories.until_ms if rm.histories is not None else -1
    if base is None:
        base = rm.histories.of(viewer_id) if rm.histories is not None else ViewerHistory.empty()
    newer = [v for v in recent if v.ts >= since and v.merchant_id]
    session = [SessionVisit(position(v.merchant_id), v.dwell_ms, v.ts) for v in recent if v.merchant_id]
    if not newer:
        return base, session
    # Each visit the feed knows of is a leave and, `dwell_ms` before it, its enter (which the model's
    # table already counts when it came before the table's time): folded into the history by one
    # compiled pass (ranking.ranker.history_with_visits; ~0.2 ms of small numpy calls as history_of + plus).
    entered = [v for v in newer if v.ts - v.dwell_ms >= since]
    merchants = np.array([position(v.merchant_id) for v in [*newer, *entered]], dtype=np.int64)
    enter = np.zeros(merchants.shape[0], dtype=bool)
    enter[len(newer) :] = True
    dwell = np.array([v.dwell_ms for v in [*newer, *entered]], dtype=np.int64)
    ts = np.array([v.ts for v in newer] + [v.ts - v.dwell_ms for v in entered], dtype=np.int64)
    return history_with_visits(base, merchants, enter, dwell, ts), session


def multipliers(cfg: RankingConfig) -> dict[str, float]:
    """The operator's ranking config as multipliers of the learned ranker's column groups."""
    return {
        "lightfm": cfg.w_model,
        "popularity": cfg.w_popularity,
        "history": cfg.w_repeat,
        "session": cfg.w_session_category,
    }


class Filters:
    """Filters: drop rooms served in this session, ended, swiped away within the window, or blocked."""

    name = "filters"

    async def apply(self, ctx: FeedContext) -> None:
        c, cfg = ctx.candidates, ctx.config
        index_of = c.index_of
        if ctx.served:  # hundreds in a long session: one gather, not a numpy write per room
            # map() looks the rooms up in C (a generator expression cost ~3x more per served room).
            rows = np.fromiter(
                map(index_of.get, ctx.served, repeat(-1)), dtype=np.int64, count=len(ctx.served)
            )
            c.drop(rows[rows >= 0])
        horizon_ms = (ctx.now - cfg.swipe_away_window_s) * 1000
        swiped = [
            i
            for visit in ctx.recent
            if visit.ts >= horizon_ms and visit.swiped_away and (i := index_of.get(visit.room_id)) is not None
        ]
        if swiped:
            c.drop(swiped)
        for merchant_id in ctx.blocked_merchants:
            rooms = c.rooms_of_merchant.get(merchant_id)
            if rooms is not None:
                c.drop(rooms)
        # Ended rooms: CandidateSource builds candidates from the current snapshot's live rooms only
        # (and drops the rooms no longer live from a set it is still replacing), so an ended room is
        # never kept; replays are candidates by design.


def arrange(
    order: Sequence[int] | np.ndarray,
    merchants: np.ndarray,
    categories: np.ndarray,
    max_run: int,
    reach: int | None = None,
) -> list[int]:
    """`order` rearranged so no more than `max_run` rooms in a row share a merchant or a category
    (the first `reach` places, when given; the rooms left follow in their order).

    Greedy: take the best room that keeps both runs short; when none does, the best one anyway
    (a page of one category beats a short page).
    """
    if not len(order):
        return []
    index = np.asarray(order, dtype=np.int64)
    pending: list[int] = index.tolist()
    # Each pending room's merchant and category ride beside it (three lists popped together: no dict
    # per room, ~3x less CPU than looking them up by room for the ~70 rooms a page ranks).
    pm: list[int] = merchants[index].tolist()
    pc: list[int] = categories[index].tolist()
    placed: list[int] = []
    last_m = last_c = None
    run_m = run_c = 0
    limit = len(pending) if reach is None else min(reach, len(pending))
    while len(placed) < limit:
        pick = 0
        if run_m >= max_run or run_c >= max_run:
            for j in range(len(pending)):
                if (run_m < max_run or pm[j] != last_m) and (run_c < max_run or pc[j] != last_c):
                    pick = j
                    break
        m, cat = pm.pop(pick), pc.pop(pick)
        placed.append(pending.pop(pick))
        run_m = run_m + 1 if m == last_m else 1
        run_c = run_c + 1 if cat == last_c else 1
        last_m, last_c = m, cat
    return placed + pending


def best_first(score: np.ndarray, keep: np.ndarray, want: int) -> np.ndarray:
    """Indices of the `want` highest scores among `keep`, best first (ties by index): exact.

    A full partition of 10,000 scores was a fifth of a page's CPU. A strided sample (every
    `stride`-th score) gives a cut that about twice `want` scores pass; when at least `want`
    kept scores pass it, every one of the true top `want` does, so sorting those few is exact.
    When too few pass (a skewed sample), the full partition answers.
    """
    n = len(score)
    top = None
    stride = 10
    if want < n and n >= 20 * want:
        # ndarray methods, not numpy's module functions: the same operations without their Python
        # wrappers (~1-4 us each, a tenth of this function at 10,000 rooms).
        sample = score[::stride].copy()
        rank = min(len(sample) - 1, 2 * -(-want // stride))  # about 2 * want scores reach the cut
        sample.partition(len(sample) - 1 - rank)
        cut = sample[len(sample) - 1 - rank]
        passed = (score >= cut).nonzero()[0]
        passed = passed[keep[passed]]
        if len(passed) >= want:
            top = passed
    if top is None:
        masked = np.where(keep, score, np.float32(-np.inf))
        if want >= n:
            top = np.flatnonzero(keep)
        else:
            at = n - want
            top = np.flatnonzero(masked >= np.partition(masked, at)[at])
            top = top[keep[top]]
    return top[(-score[top]).argsort(kind="stable")][:want]


class Diversity:
    """Diversity: the best kept rooms, in score order, with no more than M rooms of one category or
    merchant in a row (arranged as far as a page and its spares reach; the rest stay in score order)."""

    name = "diversity"

    async def apply(self, ctx: FeedContext) -> None:
        c = ctx.candidates
        kept = int(np.count_nonzero(c.keep))
        if kept == 0:
            ctx.order = []
            return
        want = min(kept, max(4 * ctx.count, ctx.count + 50) + spare(ctx.count))
        best = best_first(c.score, c.keep, want)
        reach = ctx.count + spare(ctx.count)
        ctx.order = arrange(best, c.merchant_codes, c.category_codes, ctx.config.diversity_max_run, reach)


class Exploration:
    """Exploration: a share ε of the page's slots goes to new or little-seen rooms, drawn at random."""

    name = "exploration"

    @staticmethod
    def draw(
        rng: np.random.Generator,
        keep: np.ndarray,
        eligible: tuple[np.ndarray, np.ndarray],
        on_page: list[int],
        slots: int,
    ) -> list[int]:
        """Up to `slots` distinct rooms drawn uniformly from the eligible ones still kept and not on the page.

        Drawn from all eligible rooms and redrawn when one is taken (a few tries: most are kept, as
        filters drop a session's few hundred rooms of thousands); when tries run out, from the exact
        set, which costs a pass over every candidate.
        """
        rows = eligible[1]
        taken = set(on_page)
        picks: list[int] = []
        for _ in range(4 * slots + 8):
            if len(picks) == slots or len(rows) == 0:
                return picks
            row = int(rows[int(rng.integers(len(rows)))])
            if keep[row] and row not in taken:
                picks.append(row)
                taken.add(row)
        mask = keep & eligible[0]
        mask[list(taken)] = False
        left = np.flatnonzero(mask)
        more = (
            rng.choice(left, size=min(slots - len(picks), len(left)), replace=False).tolist()
            if len(left)
            else []
        )
        return picks + [int(i) for i in more]

    def eligible(self, c: Candidates, cfg: RankingConfig, now: float) -> tuple[np.ndarray, np.ndarray]:
        """Live rooms new or little seen, as a mask and as indices (kept per heat refresh, config and second);
        in a retrieved subset, the rows the exploration source drew from them."""
        if c.pool is not None:
            return c.pool, np.flatnonzero(c.pool)
        framed = frame_part(c, "eligible", cfg)
        if framed is not None:
            return framed  # type: ignore[no-any-return]

        def make() -> tuple[np.ndarray, np.ndarray]:
            little_seen = (c.impressions <= cfg.exploration_max_impressions_1h) | (
                now - c.started_at <= cfg.exploration_new_room_s
            )
            eligible = little_seen & ~c.is_replay
            return eligible, np.flatnonzero(eligible)

        return c.derived(per_config("exploration", cfg), (c.impressions, cfg, int(now)), make)

    def frame_view(
        self, c: Candidates, rm: RankModel, cfg: RankingConfig, now: float, view: dict[str, Any]
    ) -> None:
        """The frame's eligible rooms for `cfg` (`c` carries the frame's heat)."""
        view["eligible"] = self.eligible(c, cfg, now)

    async def apply(self, ctx: FeedContext) -> None:
        c, cfg = ctx.candidates, ctx.config
        expected = cfg.exploration_share * ctx.count
        slots = int(math.floor(expected)) + int(ctx.rng.random() < expected - math.floor(expected))
        if slots == 0 or len(c) == 0:
            return
        on_page = ctx.order[: ctx.count]
        picks = self.draw(ctx.rng, c.keep, self.eligible(c, cfg, ctx.now), on_page, slots)
        if not picks:
            return
        # The picks take slots of the page: the ranked rooms they displace lead what follows.
        ranked = [i for i in on_page if i not in picks]
        page, rest = (
            ranked[: ctx.count - len(picks)],
            ranked[ctx.count - len(picks) :] + ctx.order[ctx.count :],
        )
        for pick in picks:
            page.insert(int(ctx.rng.integers(0, len(page) + 1)), int(pick))
        ctx.explored = set(picks)
        ctx.order = arrange(page, c.merchant_codes, c.category_codes, cfg.diversity_max_run) + [
            i for i in rest if i not in ctx.explored
        ]


def room_fields(room: Any, replay: bool) -> dict[str, Any]:
    """What a viewer's page shows of a room (live-index fields; `viewers_now`, `boosted` and `position`
    are the caller's)."""
    return {
        "room_id": room.room_id,
        "merchant_id": room.merchant_id,
        "title": room.title,
        "category": room.category,
        "stream_url": room.replay_url if replay else room.stream_url,
        "viewers_now": 0,
        "replay": replay,
        "tags": list(room.tags),
        "price_band": room.price_band,
        "format": room.format,
        "started_at": room.started_at,
    }


def shown(c: Candidates, i: int) -> dict[str, Any]:
    """`room_fields` of candidate `i`, kept with the candidate set (they do not change between
    requests); the caller copies them."""
    if c.parent is not None and c.rows is not None:
        return shown(c.parent, int(c.rows[i]))
    memo: dict[int, dict[str, Any]] = c.memo.setdefault("shown", {})
    fields = memo.get(i)
    if fields is None:
        fields = memo[i] = room_fields(c.rooms[i], bool(c.is_replay[i]))
    return fields


class Page:
    """Page: the first `count` rooms of the order (plus a few spares), as the response shows them.

    The spares stand in for rooms a concurrent request of the same session claims first (the
    service keeps the first `count` rooms the served set accepts, see feed.sessions.claim).
    """

    name = "page"

    async def apply(self, ctx: FeedContext) -> None:
        c = ctx.candidates
        ctx.page = []
        order = ctx.order[: ctx.count + spare(ctx.count)]
        boosted = c.boosted[order].tolist()
        # A whole set's kept fields read straight from its memo (`shown`'s lookup once, not per room).
        memo: dict[int, dict[str, Any]] | None = (
            c.memo.setdefault("shown", {}) if c.parent is None or c.rows is None else None
        )
        first = ctx.first_position
        for offset, i in enumerate(order):
            fields = memo.get(i) if memo is not None else None
            room = (fields if fields is not None else shown(c, i)).copy()
            room["boosted"] = boosted[offset]
            room["position"] = first + offset
            ctx.page.append(room)
