"""The feed's stages, one small class each, in pipeline order (see feed.pipeline).

Every stage has a `name` and `async def apply(ctx)`; it reads and writes the `FeedContext` per the
rules in docs/feed.md and works on whole numpy arrays. Stages that need another domain take it in
their constructor and degrade (mark `ctx.degraded`) instead of failing when it is unreachable.
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from feed.config import RankingConfig, blend_weights
from feed.context import Candidates, FeedContext, RecentVisit, as_recent_visit
from feed.sources import LiveIndexSource, LiveStatsSource, RoomHeatCache
from ranking.blend import BlendWeights, rank_discounted

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
    """Candidates: every live room of the current snapshot (plus replays when few are live).

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
        self, live_index: LiveIndexSource, max_staleness_s: float = 0.0, background_from: int = 2_000
    ) -> None:
        """`max_staleness_s`: reuse the snapshot read that recently instead of asking the live index
        (one Redis round trip) on every request; a room that ends is gone from pages within it."""
        self.live_index = live_index
        self.max_staleness_s = max_staleness_s
        self.background_from = background_from
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
            if self._candidates is before:  # not replaced meanwhile by a set built in a request
                self._candidates = (snapshot, candidates)
        except Exception:  # the request path builds it then
            log.exception("preparing the candidate set failed")

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
        if len(candidates) < ctx.config.replay_threshold and ctx.config.replay_limit > 0 and not ctx.degraded:
            try:
                replays = await self.live_index.replays(ctx.config.replay_limit)
            except Exception as exc:
                if not _is_outage(exc):
                    raise
                replays = []
                ctx.degrade("replays")
            live_ids = candidates.index_of
            extra = [r for r in replays if r.room_id not in live_ids and r.replay_url]
            if extra:
                rooms = (*candidates.rooms, *extra)
                candidates = Candidates.of(rooms, replay_ids=frozenset(r.room_id for r in extra))
        ctx.candidates = candidates.fresh_copy()
        if gone is not None and len(gone):
            ctx.candidates.keep[gone] = False
        if ctx.live_changes:  # changed (ended, mostly) after the snapshot read: not on this page
            version, index_of, keep = snapshot.version, ctx.candidates.index_of, ctx.candidates.keep
            for room_id, changed_at in ctx.live_changes.items():
                i = index_of.get(room_id)
                if i is not None and changed_at > version:
                    keep[i] = False


class Hydrate:
    """Hydrate: room heat of every candidate (in memory, refreshed each second) and the viewer's recent rooms."""

    name = "hydrate"

    def __init__(self, stats: RoomHeatCache, live_stats: LiveStatsSource | None) -> None:
        self.stats = stats
        self.live_stats = live_stats

    def warm(self, c: Candidates) -> None:
        self.stats.aligned(c.room_ids, c.memo)

    async def apply(self, ctx: FeedContext) -> None:
        c = ctx.candidates
        arrays = self.stats.aligned(c.room_ids, c.memo)
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
        try:
            scores = np.asarray(scorer.score(ctx.viewer_id, live_items(c, scorer)), dtype=np.float32)
        except Exception:
            log.exception("the scorer failed; ranking this request by popularity")
            ctx.model_version = "popularity"
            ctx.degrade("model")
            return
        c.model_score = (
            scores if np.isfinite(scores).all() else np.nan_to_num(scores, nan=0.0, posinf=0.0, neginf=0.0)
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
    for visit in swiped:
        index = c.index_of.get(visit.room_id)
        if index is not None:
            categories.add(int(c.category_codes[index]))
        else:
            rooms = c.rooms_of_merchant.get(visit.merchant_id)
            if rooms is not None and len(rooms):
                categories.add(int(c.category_codes[rooms[0]]))
    if categories:
        table = np.zeros(int(c.category_codes.max()) + 1, dtype=np.float32)
        table[list(categories)] = 0.5
        penalty = table[c.category_codes]
    for visit in swiped:
        rooms = c.rooms_of_merchant.get(visit.merchant_id)
        if rooms is not None:
            penalty[rooms] = 1.0
    return penalty


def _category_of(c: Candidates, visit: RecentVisit) -> int | None:
    index = c.index_of.get(visit.room_id)
    if index is not None:
        return int(c.category_codes[index])
    rooms = c.rooms_of_merchant.get(visit.merchant_id)
    return int(c.category_codes[rooms[0]]) if rooms is not None and len(rooms) else None


def viewer_signals(
    c: Candidates, recent: Sequence[RecentVisit], now: float, cfg: RankingConfig
) -> tuple[dict[str, tuple[float, float]], dict[int, float], dict[int, float]]:
    """`ranking.blend`'s viewer inputs, sparse: per merchant (decayed dwell seconds, decayed swipe-aways)
    with half-life `repeat_half_life_h`, and per category code the share of the last
    `swipe_away_window_s` of engaged dwell (a swipe-away is not engagement) and of swipe-aways."""
    half_life_ms = cfg.repeat_half_life_h * 3_600_000.0
    now_ms = now * 1000.0
    horizon_ms = now_ms - cfg.swipe_away_window_s * 1000.0
    by_merchant: dict[str, tuple[float, float]] = {}
    cat_dwell: dict[int, float] = {}
    cat_skip: dict[int, float] = {}
    for visit in recent:
        decay = 0.5 ** (max(now_ms - visit.ts, 0.0) / half_life_ms)
        skipped = visit.swiped_away
        dwell_s, skips = by_merchant.get(visit.merchant_id, (0.0, 0.0))
        by_merchant[visit.merchant_id] = (
            dwell_s + visit.dwell_ms / 1000.0 * decay,
            skips + (decay if skipped else 0.0),
        )
        if visit.ts >= horizon_ms:
            category = _category_of(c, visit)
            if category is not None:
                if skipped:
                    cat_skip[category] = cat_skip.get(category, 0.0) + 1.0
                else:
                    cat_dwell[category] = cat_dwell.get(category, 0.0) + visit.dwell_ms / 1000.0
    dwell_total, skip_total = sum(cat_dwell.values()), sum(cat_skip.values())
    dwell_share = {k: v / dwell_total for k, v in cat_dwell.items()} if dwell_total > 0 else {}
    skip_share = {k: v / skip_total for k, v in cat_skip.items()} if skip_total > 0 else {}
    return by_merchant, dwell_share, skip_share


def blend_inputs(
    c: Candidates, recent: Sequence[RecentVisit], now: float, cfg: RankingConfig
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """The viewer inputs of `ranking.blend.blend` as dense arrays (repeat dwell, repeat skips, shares)."""
    n = len(c)
    dense = [np.zeros(n, dtype=np.float32) for _ in range(4)]
    by_merchant, dwell_share, skip_share = viewer_signals(c, recent, now, cfg)
    for merchant_id, (dwell_s, skips) in by_merchant.items():
        rooms = c.rooms_of_merchant.get(merchant_id)
        if rooms is not None:
            dense[0][rooms], dense[1][rooms] = dwell_s, skips
    for shares, out in ((dwell_share, dense[2]), (skip_share, dense[3])):
        for code, share in shares.items():
            out[c.category_codes == code] = share
    return dense[0], dense[1], dense[2], dense[3]


@dataclass(frozen=True)
class _Merchant:
    """A watched room that is no longer live, as the scorer finds it: by its merchant."""

    merchant_id: str


def session_watched(
    c: Candidates, recent: Sequence[RecentVisit], now: float, window_s: int
) -> list[tuple[Any, float]]:
    """(room, dwell seconds) of every leave in the session window: `Scorer.session_similarity`'s input.
    A room no longer live stands in as its merchant (item representations are per merchant)."""
    horizon_ms = (now - window_s) * 1000
    watched: list[tuple[Any, float]] = []
    for visit in recent:
        if visit.ts < horizon_ms:
            continue
        index = c.index_of.get(visit.room_id)
        if index is None:
            rooms = c.rooms_of_merchant.get(visit.merchant_id)
            room = (
                c.rooms[int(rooms[0])] if rooms is not None and len(rooms) else _Merchant(visit.merchant_id)
            )
        else:
            room = c.rooms[index]
        watched.append((room, visit.dwell_ms / 1000.0))
    return watched


def zscore_except(x: np.ndarray, total: float, total_sq: float, left_out: np.ndarray) -> np.ndarray:
    """`ranking.blend.zscore_over(x, group)` where the group is every index but `left_out`, from the
    sums of `x` and `x²` over all of it: the few left-out values are subtracted instead of the
    many group values gathered."""
    n = len(x) - len(left_out)
    out = np.zeros(len(x), dtype=np.float32)
    if n < 2:
        return out
    dropped = x[left_out].astype(np.float64)
    mean = (total - float(dropped.sum())) / n
    var = (total_sq - float(np.dot(dropped, dropped))) / n - mean * mean
    sd = var**0.5 if var > 0 else 0.0
    if sd > 1e-9:
        out = ((x - np.float32(mean)) * np.float32(1.0 / sd)).astype(np.float32, copy=False)
        out[left_out] = 0.0
    return out


class Blend:
    """Blend: `ranking.blend` (the ranker the evaluation judges) with the operator's weights, plus the
    feed's in-session swipe-away penalty and conversion/freshness terms (issue 6).

    Computed as the same linear sum as `ranking.blend.blend`, split by what changes: the room terms
    (log popularity and its sums, conversion, freshness, replay demotion) once per candidate set,
    heat refresh, config and second; per request the model score standardised over the viewer's
    discovery rooms (every room but their favourites, from running sums) and the viewer's terms on
    the few rooms they touch. `tests/feed` checks it equals `ranking.blend.blend`.
    """

    name = "blend"

    def __init__(self, model_watcher: Any | None = None) -> None:
        self.model_watcher = model_watcher  # for the session term: `Scorer.session_similarity`
        self._weights: tuple[RankingConfig, BlendWeights] | None = None

    def weights(self, cfg: RankingConfig) -> BlendWeights:
        cached = self._weights
        if cached is None or cached[0] is not cfg:
            cached = self._weights = (cfg, blend_weights(cfg))
        return cached[1]

    def room_terms(
        self, c: Candidates, cfg: RankingConfig, now: float
    ) -> tuple[np.ndarray, np.ndarray, float, float]:
        """(feed-only room terms, log popularity, its sum, its sum of squares) for these candidates,
        kept per heat refresh, config and second."""

        def make() -> tuple[np.ndarray, np.ndarray, float, float]:
            terms = np.zeros(len(c), dtype=np.float32)
            if cfg.w_conversion > 0:
                terms += cfg.w_conversion * _scaled((c.orders + 0.1) / (c.enters + 10.0))
            if cfg.w_freshness > 0:
                age = np.maximum(now - c.started_at, 0.0)
                terms += (cfg.w_freshness * np.power(0.5, age / cfg.freshness_half_life_s)).astype(np.float32)
            # Replays rank below every live room: they only fill a feed that is short of live rooms.
            terms[c.is_replay] -= 100.0
            popularity = np.log1p(c.enters).astype(np.float32)
            wide = popularity.astype(np.float64)
            return terms, popularity, float(wide.sum()), float(np.dot(wide, wide))

        return c.derived("blend_terms", (c.enters, c.orders, cfg, int(now)), make)

    def base(self, c: Candidates, cfg: RankingConfig, now: float) -> np.ndarray:
        """The room terms plus popularity standardised over every room: a viewer without favourites
        among the candidates starts from this (kept with the room terms; callers copy it)."""
        terms, popularity, pop_sum, pop_sq = self.room_terms(c, cfg, now)

        def make() -> np.ndarray:
            w = self.weights(cfg)
            base = terms.copy()
            if w.popularity:
                base += w.popularity * zscore_except(popularity, pop_sum, pop_sq, np.zeros(0, dtype=np.int64))
            return base

        return c.derived("blend_base", (terms, cfg), make)

    async def apply(self, ctx: FeedContext) -> None:
        c, cfg = ctx.candidates, ctx.config
        if len(c) == 0:
            return
        w = self.weights(cfg)
        terms, popularity, pop_sum, pop_sq = self.room_terms(c, cfg, ctx.now)
        by_merchant, dwell_share, skip_share = (
            viewer_signals(c, ctx.recent, ctx.now, cfg) if ctx.recent else ({}, {}, {})
        )
        # The viewer's rooms by merchant, ascending (rank_discounted breaks ties by position).
        parts = [(c.rooms_of_merchant[m], v) for m, v in by_merchant.items() if m in c.rooms_of_merchant]
        if parts:
            index = np.concatenate([rooms for rooms, _ in parts])
            dwell = np.concatenate([np.full(len(rooms), v[0], np.float32) for rooms, v in parts])
            skips = np.concatenate([np.full(len(rooms), v[1], np.float32) for rooms, v in parts])
            by_position = np.argsort(index, kind="stable")
            index, dwell, skips = index[by_position], dwell[by_position], skips[by_position]
            favourites = index[dwell > 0]
        else:
            index = favourites = np.zeros(0, dtype=np.int64)
        # Model score and popularity order the discovery rooms (all but favourites), as blend does.
        if len(favourites) == 0:
            score = self.base(c, cfg, ctx.now).copy()
        else:
            score = terms.copy()
            if w.popularity:
                score += w.popularity * zscore_except(popularity, pop_sum, pop_sq, favourites)
        if ctx.model_version != "popularity" and w.lightfm:
            model = c.model_score.astype(np.float64)
            score += w.lightfm * zscore_except(
                c.model_score, float(model.sum()), float(np.dot(model, model)), favourites
            )
        if parts:
            score[index] += w.repeat * rank_discounted(np.log1p(dwell / 60.0)) - w.repeat_skip * np.log1p(
                skips
            )
        for shares, weight in ((dwell_share, w.session_category), (skip_share, -w.session_skip)):
            if shares and weight:
                table = np.zeros(int(c.category_codes.max()) + 1, dtype=np.float32)
                for code, share in shares.items():
                    table[code] = share
                score += weight * table[c.category_codes]
        if w.session_lightfm and ctx.recent and ctx.model_version != "popularity":
            scorer = getattr(self.model_watcher, "scorer", None)
            watched = session_watched(c, ctx.recent, ctx.now, cfg.swipe_away_window_s)
            if scorer is not None and watched and hasattr(scorer, "session_similarity"):
                try:
                    similarity = scorer.session_similarity(live_items(c, scorer), watched)
                except AttributeError:  # an ended room of a merchant the model never saw: live rooms only
                    live = [(room, dwell) for room, dwell in watched if not isinstance(room, _Merchant)]
                    similarity = scorer.session_similarity(live_items(c, scorer), live)
                score += w.session_lightfm * similarity
        if cfg.w_session > 0 and ctx.recent:
            score -= cfg.w_session * session_penalty(c, ctx.recent, ctx.now, cfg.swipe_away_window_s)
        c.score = score.astype(np.float32, copy=False)


class Filters:
    """Filters: drop rooms served in this session, ended, swiped away within the window, or blocked."""

    name = "filters"

    async def apply(self, ctx: FeedContext) -> None:
        c, cfg = ctx.candidates, ctx.config
        index_of = c.index_of
        if ctx.served:  # hundreds in a long session: one gather, not a numpy write per room
            rows = np.fromiter(
                (index_of.get(r, -1) for r in ctx.served), dtype=np.int64, count=len(ctx.served)
            )
            c.keep[rows[rows >= 0]] = False
        horizon_ms = (ctx.now - cfg.swipe_away_window_s) * 1000
        for visit in ctx.recent:
            if visit.ts >= horizon_ms and visit.swiped_away:
                i = index_of.get(visit.room_id)
                if i is not None:
                    c.keep[i] = False
        for merchant_id in ctx.blocked_merchants:
            rooms = c.rooms_of_merchant.get(merchant_id)
            if rooms is not None:
                c.keep[rooms] = False
        # Ended rooms: CandidateSource builds candidates from the current snapshot's live rooms only
        # (and drops the rooms no longer live from a set it is still replacing), so an ended room is
        # never kept; replays are candidates by design.


def arrange(
    order: Sequence[int],
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
    pending = [int(i) for i in order]
    if not pending:
        return []
    index = np.asarray(pending, dtype=np.int64)
    merchant_of = dict(zip(pending, merchants[index].tolist(), strict=True))
    category_of = dict(zip(pending, categories[index].tolist(), strict=True))
    placed: list[int] = []
    last_m = last_c = None
    run_m = run_c = 0
    limit = len(pending) if reach is None else min(reach, len(pending))
    while len(placed) < limit:
        pick = 0
        if run_m >= max_run or run_c >= max_run:
            for j, candidate in enumerate(pending):
                if (run_m < max_run or merchant_of[candidate] != last_m) and (
                    run_c < max_run or category_of[candidate] != last_c
                ):
                    pick = j
                    break
        chosen = pending.pop(pick)
        m, cat = merchant_of[chosen], category_of[chosen]
        run_m = run_m + 1 if m == last_m else 1
        run_c = run_c + 1 if cat == last_c else 1
        last_m, last_c = m, cat
        placed.append(chosen)
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
        sample = score[::stride]
        rank = min(len(sample) - 1, 2 * -(-want // stride))  # about 2 * want scores reach the cut
        cut = np.partition(sample, len(sample) - 1 - rank)[len(sample) - 1 - rank]
        passed = np.flatnonzero(score >= cut)
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
    return top[np.argsort(-score[top], kind="stable")][:want]


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
        best = best_first(c.score, c.keep, want).tolist()
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
        """Live rooms new or little seen, as a mask and as indices (kept per heat refresh, config and second)."""

        def make() -> tuple[np.ndarray, np.ndarray]:
            little_seen = (c.impressions <= cfg.exploration_max_impressions_1h) | (
                now - c.started_at <= cfg.exploration_new_room_s
            )
            eligible = little_seen & ~c.is_replay
            return eligible, np.flatnonzero(eligible)

        return c.derived("exploration", (c.impressions, cfg, int(now)), make)

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
        scores = c.score[order].tolist()
        boosted = c.boosted[order].tolist()
        for offset, i in enumerate(order):
            room = shown(c, i).copy()
            room["boosted"] = boosted[offset]
            room["position"] = ctx.first_position + offset
            room["explored"] = i in ctx.explored
            room["score"] = round(scores[offset], 4)
            ctx.page.append(room)
