"""The learned ranker: a linear model over per-(viewer, live room) feature columns, fit on each platform's log.

Owns the feature definitions (`ROOM_FEATURES`, `VIEWER_FEATURES`: one implementation, used by the
feed, the offline replay and training alike), `MerchantTable` (what the model knows about each
merchant: long-term popularity as of its snapshot, category, price band, co-visitation), `RankRequest`
(one viewer at one time against a set of live rooms), `Ranker` (weights; `score` splits into a
viewer-independent room part the feed keeps per candidate set and a per-request viewer part), and
`fit_ranker`, a listwise softmax (the entered room against the other live rooms and the rooms the
viewer was shown and passed by) with L2 chosen on a validation split of the training lists.

Why linear over columns: it scores 10,000 live rooms in well under a millisecond without a retrieval
stage, and with the simple baselines' orderings among its columns (REP counts, decayed and long-term
popularity) it can always reproduce the best of them; each platform's log decides the weights.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import scipy.sparse as sp

from events.vocabulary import SWIPE_AWAY_MS
from ranking.history import STATS as STATS_ORDER
from ranking.history import S, ViewerHistory

HOUR_MS = 3_600_000
DAY_MS = 24 * HOUR_MS
# Half-lives of the merchant popularity columns: live (1 h), the day (1 d), the week (7 d).
POPULARITY_HALF_LIVES_MS: tuple[int, ...] = (HOUR_MS, DAY_MS, 7 * DAY_MS)
FRESH_HALF_LIFE_MS = 30 * 60_000
SESSION_WINDOW_MS = HOUR_MS

ROOM_FEATURES: tuple[str, ...] = (
    "pop_total",  # log1p(merchant's enters in the window): long-term POP
    "pop_1h",  # log1p(enters decayed with a 1 h half-life): live POP
    "pop_1d",
    "pop_7d",
    "heat",  # log1p(the room's enters decayed with events' heat half-life, 15 min): what is hot right now
    "fresh",  # 2^(-room age / 30 min)
)
VIEWER_FEATURES: tuple[str, ...] = (
    "lightfm",  # LightFM score standardised over the candidates the viewer never entered (0 if not personal)
    "covisit",  # log1p(co-visitation of the merchant with the merchants the viewer watched)
    "category_affinity",  # share of the viewer's dwell spent on the room's category
    "band_affinity",  # share of the viewer's dwell spent on the room's price band
    "session_category",  # share of this session's dwell on the room's category
    "session_skip",  # share of this session's swipe-aways on the room's category
    "session_lightfm",  # cosine of the merchant with what this session watched (LightFM item space)
    "session_swiped",  # the viewer swiped this merchant away within the session window
    "h_entered",  # 1 when the viewer entered the merchant before
    "h_enters",  # log1p(enters): REP
    "h_watches",  # log1p(watches of >= 30 s)
    "h_dwell",  # log1p(dwell / 60 s)
    "h_recent_1d",  # 2^(-(now - last engagement) / 1 d)
    "h_recent_7d",
    "h_swipes",  # log1p(swipe-aways)
    "h_purchases",  # log1p(purchases)
    "h_follows",  # followed (0/1)
    "h_passed",  # log1p(times shown and not entered)
    "h_code",  # came in through the merchant's attribution code (0/1)
    "h_rank",  # 1 / (1 + rank among the live merchants the viewer entered, by enters): favourites open the page
    "h_share",  # enters with this merchant / all the viewer's enters
)
FEATURES: tuple[str, ...] = ROOM_FEATURES + VIEWER_FEATURES
# Columns that come from the LightFM model (zeroed together in the ablation).
LIGHTFM_FEATURES: tuple[str, ...] = ("lightfm", "session_lightfm")
F = {name: i for i, name in enumerate(FEATURES)}
N_ROOM = len(ROOM_FEATURES)


@dataclass
class MerchantTable:
    """Per merchant position (the model's merchant index): what the ranker knows beyond one request."""

    category: np.ndarray  # int64 code per merchant (-1 unknown)
    band: np.ndarray  # int64 code per merchant (-1 unknown)
    pop_count: np.ndarray  # float64: enters in the window up to `as_of_ms`
    pop_decayed: np.ndarray  # (n, len(POPULARITY_HALF_LIVES_MS)) decayed enters as of `as_of_ms`
    as_of_ms: int
    covisit: sp.csr_matrix  # (n, n) merchant x merchant, rows normalised
    n_categories: int = 0
    n_bands: int = 0

    def __post_init__(self) -> None:
        self.n_categories = max(
            self.n_categories, int(self.category.max()) + 1 if self.category.size else 0, 1
        )
        self.n_bands = max(self.n_bands, int(self.band.max()) + 1 if self.band.size else 0, 1)

    def popularity_at(self, items: np.ndarray, now_ms: int) -> tuple[np.ndarray, np.ndarray]:
        """(counts, decayed values at `now_ms`) of the merchants at `items` (-1: zeros)."""
        ok = (items >= 0) & (items < self.pop_count.shape[0])
        if not ok.any():
            return np.zeros(items.shape[0]), np.zeros((items.shape[0], len(POPULARITY_HALF_LIVES_MS)))
        safe = np.where(ok, items, 0)
        counts = np.where(ok, self.pop_count[safe], 0.0)
        age = max(now_ms - self.as_of_ms, 0)
        factors = np.array([0.5 ** (age / h) for h in POPULARITY_HALF_LIVES_MS])
        decayed = np.where(ok[:, None], self.pop_decayed[safe] * factors, 0.0)
        return counts, decayed


@dataclass
class SessionVisit:
    """A visit of the session window: the merchant's position, dwell and event time."""

    item: int
    dwell_ms: int
    ts: int


@dataclass
class RankRequest:
    """One viewer at `now_ms` against live rooms (arrays aligned with the rooms)."""

    now_ms: int
    items: np.ndarray  # merchant position per room (-1: a merchant the model does not know)
    category: np.ndarray  # category code per room (the table's codes; -1 unknown)
    band: np.ndarray
    started_ms: np.ndarray  # float64
    heat: np.ndarray  # the room's decayed enters (events' heat)
    history: ViewerHistory = field(default_factory=ViewerHistory.empty)  # keys are merchant positions
    session: Sequence[SessionVisit] = ()
    lightfm: np.ndarray | None = None  # raw LightFM scores per room; None: not personal
    unit_items: np.ndarray | None = None  # (n_rooms, k) unit LightFM item vectors (for session_lightfm)
    item_unit_of: np.ndarray | None = None  # (n_items, k) unit vectors by merchant position
    item_order: np.ndarray | None = None  # argsort of `items` (the feed keeps it per candidate set)

    def rows_of(self, merchants: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(rows, index into `merchants`) of the rooms whose merchant is one of `merchants`: a few
        binary searches in the sorted items instead of a pass over every room."""
        order = self.item_order if self.item_order is not None else np.argsort(self.items, kind="stable")
        self.item_order = order
        ranked = self.items[order]
        lo = np.searchsorted(ranked, merchants, side="left")
        hi = np.searchsorted(ranked, merchants, side="right")
        counts = hi - lo
        if not counts.any():
            return np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.int64)
        which = np.repeat(np.arange(merchants.shape[0]), counts)
        starts = np.repeat(lo - np.concatenate([[0], np.cumsum(counts)[:-1]]), counts)
        rows = order[starts + np.arange(which.shape[0])]
        return rows, which


def _log1p(x: np.ndarray) -> np.ndarray:
    out: np.ndarray = np.log1p(np.maximum(x, 0.0))
    return out


def room_columns(table: MerchantTable, req: RankRequest) -> np.ndarray:
    """(n, len(ROOM_FEATURES)) float32: columns that do not depend on the viewer."""
    counts, decayed = table.popularity_at(req.items, req.now_ms)
    age = np.maximum(req.now_ms - req.started_ms, 0.0)
    return np.column_stack(
        [
            _log1p(counts),
            _log1p(decayed[:, 0]),
            _log1p(decayed[:, 1]),
            _log1p(decayed[:, 2]),
            _log1p(req.heat.astype(np.float64)),
            np.power(0.5, age / FRESH_HALF_LIFE_MS),
        ]
    ).astype(np.float32)


def _standardise_over(x: np.ndarray, group: np.ndarray) -> np.ndarray:
    out = np.zeros(x.shape[0], dtype=np.float64)
    if int(group.sum()) < 2:
        return out
    v = x[group].astype(np.float64)
    sd = float(v.std())
    if sd > 1e-9:
        out[group] = (v - float(v.mean())) / sd
    return out


@dataclass
class ViewerColumns:
    """The viewer part: dense columns (n,), columns that are a table over category or price-band codes
    (one gather serves all of them), and sparse ones (rows, values) over the few rooms they touch."""

    dense: dict[str, np.ndarray]
    rows: np.ndarray  # rooms of merchants in the viewer's history
    sparse: dict[str, np.ndarray]  # values at `rows`
    by_category: dict[str, np.ndarray] = field(default_factory=dict)  # per category code
    by_band: dict[str, np.ndarray] = field(default_factory=dict)  # per price-band code
    swiped_rows: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=np.int64))  # session_swiped = 1

    def expanded(self, req: RankRequest) -> dict[str, np.ndarray]:
        """Every dense-shaped column as an (n,) array (training and tests)."""
        out = dict(self.dense)
        for name, values in self.by_category.items():
            out[name] = _lookup(values, req.category)
        for name, values in self.by_band.items():
            out[name] = _lookup(values, req.band)
        if self.swiped_rows.size:
            col = np.zeros(req.items.shape[0])
            col[self.swiped_rows] = 1.0
            out["session_swiped"] = col
        return out


def _lookup(values: np.ndarray, codes: np.ndarray) -> np.ndarray:
    """values[codes] with code -1 (unknown) giving 0: one gather through a sentinel slot."""
    ext = np.zeros(values.shape[0] + 1, dtype=np.float32)
    ext[1:] = values
    out: np.ndarray = ext[np.minimum(codes, values.shape[0] - 1) + 1]
    return out


def viewer_columns(table: MerchantTable, req: RankRequest) -> ViewerColumns:
    """Every VIEWER_FEATURES column for this request (one implementation for feed, replay and training).

    Dense columns that are zero for this request are left out (they add nothing); the history columns
    are computed on the rows of the viewer's merchants only.
    """
    n = req.items.shape[0]
    h = req.history
    dense: dict[str, np.ndarray] = {}
    by_category: dict[str, np.ndarray] = {}
    by_band: dict[str, np.ndarray] = {}
    swiped_rows = np.zeros(0, dtype=np.int64)
    known = (h.merchants >= 0) & (h.merchants < table.category.shape[0]) if len(h) else np.zeros(0, bool)
    if len(h):
        rows, which = req.rows_of(h.merchants)
        st = h.stats[which]
    else:
        rows, st = np.zeros(0, dtype=np.int64), np.zeros((0, len(STATS_ORDER)))
    entered_rows = rows[st[:, S["enters"]] > 0] if rows.size else rows
    if req.lightfm is not None:
        # Standardised over the rooms the viewer never entered, from sums over all rooms minus the few left out.
        lf = req.lightfm.astype(np.float64, copy=False)
        left = lf[entered_rows]
        count = n - entered_rows.size
        if count >= 2:
            mean = (float(lf.sum()) - float(left.sum())) / count
            var = (float(lf @ lf) - float(left @ left)) / count - mean * mean
            if var > 1e-18:
                col = (req.lightfm - np.float32(mean)) * np.float32(1.0 / math.sqrt(var))
                col[entered_rows] = 0.0
                dense["lightfm"] = col
    if len(h):
        watched = h.stats[:, S["dwell_s"]]
        total = float(watched[known].sum())
        if total > 0:
            w = np.where(known, watched, 0.0) / total
            safe = np.where(known, h.merchants, 0)
            for name, codes, size, into in (
                ("category_affinity", table.category, table.n_categories, by_category),
                ("band_affinity", table.band, table.n_bands, by_band),
            ):
                mine = codes[safe]
                into[name] = np.bincount(np.maximum(mine, 0), weights=w * (mine >= 0), minlength=size)
            engaged = known & (watched > 0)
            if engaged.any() and table.covisit.shape[0]:
                # The watched merchants' rows of the co-visitation matrix, weighted and summed (CSR slices
                # by hand: scipy's row indexing costs more than the rest of the request).
                cov = table.covisit
                mine_rows = h.merchants[engaged]
                starts, ends = cov.indptr[mine_rows], cov.indptr[mine_rows + 1]
                counts = ends - starts
                if counts.sum():
                    at = np.repeat(
                        starts - np.concatenate([[0], np.cumsum(counts)[:-1]]), counts
                    ) + np.arange(int(counts.sum()))
                    weights = np.repeat(np.log1p(watched[engaged] / 60.0), counts) * cov.data[at]
                    vec = np.log1p(np.bincount(cov.indices[at], weights=weights, minlength=cov.shape[1]))
                    dense["covisit"] = _lookup(vec, req.items)
    recent = [v for v in req.session if req.now_ms - v.ts <= SESSION_WINDOW_MS and v.item >= 0]
    if recent:
        cat_dwell = np.zeros(table.n_categories)
        cat_skip = np.zeros(table.n_categories)
        swiped: set[int] = set()
        for v in recent:
            code = int(table.category[v.item]) if v.item < table.category.shape[0] else -1
            if v.dwell_ms < SWIPE_AWAY_MS:
                swiped.add(v.item)
                if code >= 0:
                    cat_skip[code] += 1.0
            elif code >= 0:
                cat_dwell[code] += v.dwell_ms / 1000.0
        if cat_dwell.sum() > 0:
            by_category["session_category"] = cat_dwell / cat_dwell.sum()
        if cat_skip.sum() > 0:
            by_category["session_skip"] = cat_skip / cat_skip.sum()
        if swiped:
            swiped_rows, _ = req.rows_of(np.array(sorted(swiped), dtype=np.int64))
        if req.unit_items is not None and req.item_unit_of is not None:
            vec = np.zeros(req.unit_items.shape[1], dtype=np.float64)
            for v in recent:
                if v.item < req.item_unit_of.shape[0]:
                    vec += math.log1p(max(v.dwell_ms, 0) / 30_000.0) * req.item_unit_of[v.item]
            norm = float(np.linalg.norm(vec))
            if norm > 1e-9:
                dense["session_lightfm"] = req.unit_items @ (vec / norm).astype(np.float32)
    # History columns (only the rooms of merchants in the history).
    sparse: dict[str, np.ndarray] = {}
    if rows.size:
        age = np.maximum(req.now_ms - st[:, S["last_ms"]], 0.0)
        engaged_rows = st[:, S["last_ms"]] > 0
        enters = st[:, S["enters"]]
        sparse["h_entered"] = (enters > 0).astype(np.float64)
        sparse["h_enters"] = _log1p(enters)
        sparse["h_watches"] = _log1p(st[:, S["watches"]])
        sparse["h_dwell"] = _log1p(st[:, S["dwell_s"]] / 60.0)
        sparse["h_recent_1d"] = np.where(engaged_rows, np.power(0.5, age / DAY_MS), 0.0)
        sparse["h_recent_7d"] = np.where(engaged_rows, np.power(0.5, age / (7 * DAY_MS)), 0.0)
        sparse["h_swipes"] = _log1p(st[:, S["swipes"]])
        sparse["h_purchases"] = _log1p(st[:, S["purchases"]])
        sparse["h_follows"] = (st[:, S["follows"]] > 0).astype(np.float64)
        sparse["h_passed"] = _log1p(st[:, S["impressions"]] - enters)
        sparse["h_code"] = (st[:, S["code_enters"]] > 0).astype(np.float64)
        # Rank among the live rooms of entered merchants: by enters, then watches, then recency, then row.
        rank = np.zeros(rows.size)
        pos = np.flatnonzero(enters > 0)
        if pos.size:
            order = np.lexsort((rows[pos], -st[pos, S["last_ms"]], -st[pos, S["watches"]], -enters[pos]))
            rank[pos[order]] = 1.0 / (1.0 + np.arange(pos.size))
        sparse["h_rank"] = rank
        all_enters = float(h.stats[:, S["enters"]].sum())
        sparse["h_share"] = enters / all_enters if all_enters > 0 else np.zeros(rows.size)
    return ViewerColumns(dense, rows, sparse, by_category, by_band, swiped_rows)


def design(table: MerchantTable, req: RankRequest) -> np.ndarray:
    """The full (n, len(FEATURES)) matrix (training and tests; the feed scores without building it)."""
    n = req.items.shape[0]
    x = np.zeros((n, len(FEATURES)), dtype=np.float32)
    x[:, :N_ROOM] = room_columns(table, req)
    cols = viewer_columns(table, req)
    for name, values in cols.expanded(req).items():
        x[:, F[name]] = values
    for name, values in cols.sparse.items():
        x[cols.rows, F[name]] = values
    return x


@dataclass
class Ranker:
    """Weights over FEATURES (in raw feature units); the score is `design(...) @ weights`."""

    weights: np.ndarray  # (len(FEATURES),) float64
    features: tuple[str, ...] = FEATURES
    info: dict[str, float] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if tuple(self.features) != FEATURES:
            known = {name: i for i, name in enumerate(self.features)}
            self.weights = np.array([self.weights[known[f]] if f in known else 0.0 for f in FEATURES])
            self.features = FEATURES
        self.weights = np.asarray(self.weights, dtype=np.float64)
        self._room_w = self.weights[:N_ROOM].astype(np.float32)

    def scaled(self, multipliers: dict[str, float]) -> Ranker:
        """The same ranker with the named feature weights multiplied (an operator's override)."""
        w = self.weights.copy()
        for name, factor in multipliers.items():
            w[F[name]] *= factor
        return Ranker(w, FEATURES, dict(self.info))

    def without(self, names: Sequence[str]) -> Ranker:
        return self.scaled(dict.fromkeys(names, 0.0))

    def multiplied(self, groups: dict[str, float]) -> Ranker:
        """The operator's multipliers per group of columns (GROUPS); 1.0 everywhere is the learned ranker."""
        if all(v == 1.0 for v in groups.values()):
            return self
        return self.scaled({f: factor for g, factor in groups.items() for f in GROUPS[g]})

    def room_score(self, table: MerchantTable, req: RankRequest) -> np.ndarray:
        """The viewer-independent part (the feed keeps it per candidate set, heat refresh and minute)."""
        out: np.ndarray = room_columns(table, req) @ self._room_w
        return out

    def add_viewer_score(self, score: np.ndarray, table: MerchantTable, req: RankRequest) -> np.ndarray:
        """`score` (a room part, copied) plus the viewer part: the full linear score."""
        out = score.astype(np.float32, copy=True)
        cols = viewer_columns(table, req)
        w = self.weights
        for name, values in cols.dense.items():
            weight = w[F[name]]
            if weight:
                out += np.float32(weight) * values
        for tables, codes in ((cols.by_category, req.category), (cols.by_band, req.band)):
            if tables:
                combined = sum(w[F[name]] * values for name, values in tables.items())
                out += _lookup(np.asarray(combined, dtype=np.float32), codes)
        if cols.swiped_rows.size:
            out[cols.swiped_rows] += w[F["session_swiped"]]
        if cols.rows.size:
            part = np.zeros(cols.rows.size)
            for name, values in cols.sparse.items():
                weight = w[F[name]]
                if weight:
                    part += weight * values
            out[cols.rows] += part
        return out

    def score(self, table: MerchantTable, req: RankRequest) -> np.ndarray:
        return self.add_viewer_score(self.room_score(table, req), table, req)

    def as_dict(self) -> dict[str, float]:
        return {name: float(w) for name, w in zip(FEATURES, self.weights, strict=True)}


# Each simple baseline as ranker weights over the same columns (lexicographic through a large weight):
# the feed ranks by the best of them when no model is good enough (ranking.registry's gate).
# Freshness breaks the remaining ties (rooms nobody has entered yet); a merchant the viewer swiped away
# within the session window sinks, as the feed's filters hide the swiped room itself.
BASELINE_WEIGHTS: dict[str, dict[str, float]] = {
    "pop": {"pop_total": 1.0, "fresh": 1e-3},
    "live_pop": {"pop_1h": 1.0, "heat": 1.0, "fresh": 1e-3},
    "rep_pop": {"h_enters": 1000.0, "pop_total": 1.0, "fresh": 1e-3, "session_swiped": -2000.0},
    "rep_live_pop": {
        "h_enters": 1000.0,
        "pop_1h": 1.0,
        "heat": 1.0,
        "fresh": 1e-3,
        "session_swiped": -2000.0,
    },
}
# Groups the operator's ranking config multiplies (feed.config: w_model, w_popularity, w_repeat, w_session_category).
GROUPS: dict[str, tuple[str, ...]] = {
    "lightfm": LIGHTFM_FEATURES,
    "popularity": ("pop_total", "pop_1h", "pop_1d", "pop_7d", "heat"),
    "history": tuple(f for f in VIEWER_FEATURES if f.startswith("h_"))
    + ("covisit", "category_affinity", "band_affinity"),
    "session": ("session_category", "session_skip", "session_swiped"),
}


def choose_lightfm(with_lightfm: Ranker, without: Ranker) -> Ranker:
    """The variant that did better on the validation lists (`fit_ranker`'s latest quarter): LightFM's
    columns stay only where they help this platform's log. `info["lightfm_used"]` says which."""
    keep = with_lightfm.info.get("validation", 1.0) > without.info.get("validation", 0.0)
    chosen = with_lightfm if keep else without
    chosen.info["lightfm_used"] = float(keep)
    return chosen


def baseline_ranker(name: str) -> Ranker:
    weights = BASELINE_WEIGHTS[name]
    return Ranker(np.array([weights.get(f, 0.0) for f in FEATURES]), FEATURES, {"baseline": 1.0})


def empty_table() -> MerchantTable:
    """A table that knows no merchant (no model yet): popularity comes from the rooms' heat alone."""
    none = np.zeros(0, dtype=np.int64)
    return MerchantTable(
        none, none, np.zeros(0), np.zeros((0, len(POPULARITY_HALF_LIVES_MS))), 0, sp.csr_matrix((0, 0))
    )


# --- fitting -----------------------------------------------------------------------------------------


@dataclass
class Lists:
    """Training lists: rows of FEATURES, `offsets` delimit lists, `target` is each list's entered row."""

    x: np.ndarray  # (N, len(FEATURES)) float32
    offsets: np.ndarray  # (L + 1,)
    target: np.ndarray  # (L,) row index within its list
    weight: np.ndarray  # (L,) list weight (the purchase objective weighs lists that led to a purchase)
    # (N,) log of the inverse sampling rate of each row (sampled softmax: a list of 100 sampled rooms
    # stands for the 1,000 live ones); 0 for rows that were all kept.
    offset: np.ndarray | None = None

    def __len__(self) -> int:
        return int(self.target.shape[0])

    def subset(self, which: np.ndarray) -> Lists:
        parts, offs, offsets = [], [], [0]
        own = self.offset if self.offset is not None else np.zeros(self.x.shape[0])
        for i in which.tolist():
            a, b = int(self.offsets[i]), int(self.offsets[i + 1])
            parts.append(self.x[a:b])
            offs.append(own[a:b])
            offsets.append(offsets[-1] + b - a)
        x = np.concatenate(parts) if parts else np.zeros((0, self.x.shape[1]), np.float32)
        off = np.concatenate(offs) if offs else np.zeros(0)
        return Lists(x, np.array(offsets, dtype=np.int64), self.target[which], self.weight[which], off)


def lists_of(
    rows: Sequence[tuple[np.ndarray, int, float, np.ndarray | None]],
) -> Lists:
    """(feature rows, target index, weight, sampling offsets or None) per list."""
    offsets = np.concatenate([[0], np.cumsum([r[0].shape[0] for r in rows])]).astype(np.int64)
    x = np.concatenate([r[0] for r in rows]) if rows else np.zeros((0, len(FEATURES)), np.float32)
    off = (
        np.concatenate([r[3] if r[3] is not None else np.zeros(r[0].shape[0]) for r in rows])
        if rows
        else np.zeros(0)
    )
    return Lists(
        x.astype(np.float32),
        offsets,
        np.array([r[1] for r in rows], dtype=np.int64),
        np.array([r[2] for r in rows], dtype=np.float64),
        off,
    )


def _softmax_parts(
    w: np.ndarray, x: np.ndarray, offsets: np.ndarray, lw: np.ndarray, row_offset: np.ndarray, seg: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Scores, per-row probabilities within their list, and each list's log-partition."""
    s = (x @ w.astype(np.float32)).astype(np.float64) + row_offset
    starts = offsets[:-1]
    top = np.maximum.reduceat(s, starts)
    e = np.exp(s - top[seg])
    z = np.add.reduceat(e, starts)
    return s, e / z[seg], np.log(z) + top


def _loss(w: np.ndarray, args: tuple[Any, ...], l2: float) -> float:
    x, offsets, rows, lw, row_offset, seg = args
    s, _, logz = _softmax_parts(w, x, offsets, lw, row_offset, seg)
    return float(np.sum(lw * (logz - s[rows]))) / float(lw.sum()) + 0.5 * l2 * float(w @ w)


def _newton(args: tuple[Any, ...], l2: float, iterations: int = 30) -> np.ndarray:
    """Newton's method on the listwise softmax: with ~30 weights the exact Hessian is cheap and a fit
    takes ~10 steps (L-BFGS needed ~200 gradient passes over the same rows)."""
    x, offsets, rows, lw, row_offset, seg = args
    n_f = x.shape[1]
    w = np.zeros(n_f)
    total = float(lw.sum())
    starts = offsets[:-1]
    xt = x[rows].astype(np.float64)
    loss = _loss(w, args, l2)
    for _ in range(iterations):
        _, p, _ = _softmax_parts(w, x, offsets, lw, row_offset, seg)
        q = (p * lw[seg]).astype(np.float32)
        grad = ((x.T @ q).astype(np.float64) - xt.T @ lw) / total + l2 * w
        mean = np.add.reduceat(x * p[:, None].astype(np.float32), starts).astype(np.float64)
        hess = (x.T @ (x * q[:, None])).astype(np.float64) - (mean * lw[:, None]).T @ mean
        hess = hess / total + l2 * np.eye(n_f)
        step = np.linalg.solve(hess + 1e-9 * np.eye(n_f), grad)
        t = 1.0
        while t > 1e-4:
            trial = _loss(w - t * step, args, l2)
            if trial <= loss - 1e-4 * t * float(grad @ step):
                break
            t *= 0.5
        w = w - t * step
        done = loss - trial < 1e-7
        loss = trial
        if done:
            break
    return w


def _fit(lists: Lists, l2: float, mask: np.ndarray) -> np.ndarray:
    """Listwise softmax weights in standardised units (features outside `mask` fixed at 0)."""
    x = np.ascontiguousarray(lists.x[:, mask], dtype=np.float32)
    rows = lists.offsets[:-1] + lists.target
    off = lists.offset if lists.offset is not None else np.zeros(x.shape[0])
    seg = np.repeat(np.arange(len(lists)), np.diff(lists.offsets))
    w = np.zeros(mask.shape[0])
    w[mask] = _newton((x, lists.offsets, rows, lists.weight, off, seg), l2)
    return w


def list_ranks(scores: np.ndarray, offsets: np.ndarray, target: np.ndarray) -> np.ndarray:
    """0-based rank of each list's target (ties count against it: a constant scorer earns nothing)."""
    starts = offsets[:-1]
    seg = np.repeat(np.arange(starts.size), np.diff(offsets))
    t = scores[starts + target]
    above = scores >= t[seg]
    return np.add.reduceat(above.astype(np.int64), starts) - 1 if starts.size else np.zeros(0, np.int64)


L2_GRID: tuple[float, ...] = (1e-3, 1e-2)


def fit_ranker(
    lists: Lists,
    validation_share: float = 0.25,
    drop: Sequence[str] = (),
    l2_grid: Sequence[float] = L2_GRID,
) -> Ranker:
    """Fit on the earlier lists, choose L2 on the later `validation_share` (HR@5 + NDCG@10), refit on all.

    Features are standardised by their spread on the training lists; the returned weights are in raw
    feature units. `drop` names features held at 0 (the ablation without LightFM drops LIGHTFM_FEATURES).
    """
    sd = lists.x.astype(np.float64).std(axis=0) if len(lists) else np.ones(len(FEATURES))
    mask = (sd > 1e-9) & np.array([f not in drop for f in FEATURES])
    scale = np.where(sd > 1e-9, sd, 1.0)
    z = Lists((lists.x / scale).astype(np.float32), lists.offsets, lists.target, lists.weight, lists.offset)
    cut = int(len(z) * (1.0 - validation_share))
    info: dict[str, float] = {"lists": float(len(z))}
    best_l2 = l2_grid[len(l2_grid) // 2]
    if 20 <= cut < len(z) - 20 and len(l2_grid) > 1:
        train, val = z.subset(np.arange(cut)), z.subset(np.arange(cut, len(z)))
        best = -1.0
        for l2 in l2_grid:
            w = _fit(train, l2, mask)
            r = list_ranks(val.x.astype(np.float64) @ w + val.offset, val.offsets, val.target)
            value = float((r < 5).mean() + np.where(r < 10, 1.0 / np.log2(r + 2.0), 0.0).mean())
            info[f"validation_{l2:g}"] = round(value, 4)
            if value > best:
                best, best_l2 = value, l2
    w = _fit(z, best_l2, mask) if len(z) else np.zeros(len(FEATURES))
    info["l2"] = best_l2
    if best_l2 in l2_grid and f"validation_{best_l2:g}" in info:
        info["validation"] = info[f"validation_{best_l2:g}"]
    return Ranker(w / scale, FEATURES, info)
