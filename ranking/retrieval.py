"""Retrieval: a few hundred candidates per request from cheap per-snapshot sources, before the ranker.

Owns `LiveSet` (what is kept per live-room snapshot: each room's merchant position, the live
merchants' LightFM vectors, the rooms by merchant, the rooms' viewer-independent score and the best
rooms by it overall and per category), the sources — each a function of its own, tested on its own:

    favourites   every live room of a merchant the viewer entered (so the ranker's history columns
                 and its "rank among favourites" are the same as over all rooms)
    discovery    the live merchants whose LightFM score for the viewer is highest (one product with
                 the live merchants' vectors, or the live ones of the viewer's best merchants over the
                 whole model, `TopMerchants`, which the feed keeps per viewer and model; their rooms)
    covisit      the live merchants most co-visited with the merchants the viewer watched
    trending     the rooms with the best viewer-independent score (popularity, heat, freshness)
    categories   the best of those in the viewer's favourite categories (by dwell)
    owed         the rooms of merchants the alliance owes exposure (the caller names them)
    exploration  a uniform draw from the rooms exploration may show (the caller's eligible rows)

— and `retrieve`, their union over the rooms the viewer may still be shown, with what the ranker
needs to score that subset exactly as it would score every live room: the moments of the viewer's
LightFM scores over every live room it never entered (`RankRequest.lightfm_moments`).

One implementation: the feed's `Retrieve` stage (feed.retrieval) and the offline evaluation
(`retrieval_method`, judged beside the ranker over all live rooms) both call `retrieve`.
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np

from ranking.history import S, ViewerHistory
from ranking.ranker import F, MerchantTable, Ranker, RankRequest

SOURCES: tuple[str, ...] = (
    "favourites",
    "discovery",
    "covisit",
    "trending",
    "categories",
    "owed",
    "exploration",
)


@dataclass(frozen=True)
class Budget:
    """How many merchants or rooms each source gives (favourites: all of them)."""

    discovery: int = 120  # merchants
    covisit: int = 80  # merchants
    trending: int = 150  # rooms
    categories: int = 2  # the viewer's top categories by dwell share ...
    per_category: int = 50  # ... and rooms of each
    owed: int = 100  # merchants, most owed first as the caller lists them
    exploration: int = 16  # rooms

    def total(self) -> int:
        return (
            self.discovery
            + self.covisit
            + self.trending
            + self.categories * self.per_category
            + self.owed
            + self.exploration
        )


DEFAULT_BUDGET = Budget()


def sorted_unique(values: np.ndarray) -> np.ndarray:
    """np.unique(values) (ascending, each once) by one sort: numpy 2's np.unique hashes first and cost
    ~100 us for the few hundred rows of a request where a sort and a comparison take ~10 us."""
    s = np.sort(np.asarray(values).ravel())
    if s.size < 2:
        return s
    first = np.empty(s.size, dtype=bool)
    first[0] = True
    np.not_equal(s[1:], s[:-1], out=first[1:])
    return s[first]


def unique_inverse(values: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """np.unique(values, return_inverse=True) by one stable sort (the same arrays)."""
    values = np.asarray(values).ravel()
    order = np.argsort(values, kind="stable")
    s = values[order]
    first = np.empty(s.size, dtype=bool)
    if s.size:
        first[0] = True
        np.not_equal(s[1:], s[:-1], out=first[1:])
    inverse = np.empty(s.size, dtype=np.intp)
    inverse[order] = np.cumsum(first) - 1
    return s[first], inverse


# Up to this many live merchants discovery scores every one (one product, ~0.06 ms at 5,000); above, it
# probes the model's item clusters (`ItemClusters`, `LiveClusters`), a fixed number of merchants.
EXACT_DISCOVERY_BELOW = 8_192


@dataclass
class LiveSet:
    """What retrieval keeps per live-room snapshot (the feed: per candidate set; replay: per target).

    `positions[i]` is room i's merchant position (the model's merchant index; -1 unknown);
    `matrix`/`bias` are the LightFM item vectors of the live merchants (`merchants`, unique
    positions ascending); `room_merchant[i]` is room i's row in them. `room_score` is the ranker's
    viewer-independent part per room (None: no trending or category sources).
    """

    positions: np.ndarray
    category: np.ndarray
    merchants: np.ndarray
    room_merchant: np.ndarray
    counts: np.ndarray  # live rooms per merchant row
    order: np.ndarray  # rooms sorted by merchant position (stable)
    matrix: np.ndarray | None = None  # (len(merchants), k) float32
    bias: np.ndarray | None = None
    room_score: np.ndarray | None = None
    depth: int = 600  # how many rooms the trending list keeps (several times what a request takes)
    ranked: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))  # positions[order]
    # Sums over every live room of [vector, bias] and its outer product (weights: rooms per merchant):
    # the moments of any viewer's LightFM score over all live rooms in O(k^2), not O(rooms).
    first: np.ndarray | None = None
    second: np.ndarray | None = None
    # The live merchants grouped by the model's item clusters (None: discovery scores every live merchant).
    clusters: LiveClusters | None = None
    _trending: np.ndarray | None = field(default=None, repr=False)
    _by_category: dict[int, np.ndarray] | None = field(default=None, repr=False)
    _category_groups: list[np.ndarray] | None = field(default=None, repr=False)
    _starts: np.ndarray | None = field(
        default=None, repr=False
    )  # where each merchant row's rooms start in `order`

    @classmethod
    def of(
        cls,
        positions: np.ndarray,
        category: np.ndarray,
        items: Callable[[np.ndarray], tuple[np.ndarray, np.ndarray]] | None = None,
        room_score: np.ndarray | None = None,
        clusters: ItemClusters | None = None,
    ) -> LiveSet:
        """From each room's merchant position and category code; `items(merchants)` gives the LightFM
        (matrix, bias) of those merchant positions; `clusters` (the model's, `ItemClusters.of`) groups
        the live merchants for discovery when there are more than `clusters.exact_below` of them."""
        positions = np.asarray(positions, dtype=np.int64)
        merchants, room_merchant, counts = np.unique(positions, return_inverse=True, return_counts=True)
        matrix = bias = first = second = None
        if items is not None and merchants.size:
            known = np.maximum(merchants, 0)
            matrix, bias = items(known)
            matrix = np.ascontiguousarray(matrix, dtype=np.float32)
            bias = np.asarray(bias, dtype=np.float32)
            aug = np.concatenate([matrix, bias[:, None]], axis=1).astype(np.float64)
            first = counts.astype(np.float64) @ aug
            second = (aug * counts[:, None]).T @ aug
        order = np.argsort(positions, kind="stable")
        grouped = None
        if (
            clusters is not None
            and matrix is not None
            and bias is not None
            and merchants.size > clusters.exact_below
        ):
            grouped = LiveClusters.of(clusters, np.maximum(merchants, 0), matrix, bias)
        return cls(
            positions=positions,
            category=np.asarray(category, dtype=np.int64),
            merchants=merchants,
            room_merchant=room_merchant.astype(np.int64),
            counts=counts.astype(np.int64),
            order=order,
            matrix=matrix,
            bias=bias,
            room_score=room_score,
            ranked=positions[order],
            first=first,
            second=second,
            clusters=grouped,
        )

    def with_room_score(self, room_score: np.ndarray) -> LiveSet:
        """The same set with another viewer-independent score (a heat refresh, a new config); the rooms by
        category are this set's, made once (each new score used to group them again: ~3 ms at 100,000)."""
        return replace(
            self,
            room_score=room_score,
            _trending=None,
            _by_category=None,
            _category_groups=self.category_groups(),
        )

    def category_groups(self) -> list[np.ndarray]:
        """The rooms of each category (kept across room scores)."""
        if self._category_groups is None:
            order = np.argsort(self.category, kind="stable")
            cats = self.category[order]
            self._category_groups = np.split(order, np.flatnonzero(np.diff(cats)) + 1) if order.size else []
        return self._category_groups

    def __len__(self) -> int:
        return int(self.positions.shape[0])

    def rooms_of(self, merchants: np.ndarray) -> np.ndarray:
        """Every room of these merchant positions, merchant by merchant in the order given (one binary
        search per merchant among the live merchants; merchants with no live room give none)."""
        if merchants.size == 0 or self.positions.size == 0:
            return np.zeros(0, dtype=np.int64)
        rows = np.searchsorted(self.merchants, merchants)
        found = rows < self.merchants.size
        found[found] = self.merchants[rows[found]] == merchants[found]
        return self.rooms_of_rows(rows[found])

    def rooms_of_rows(self, rows: np.ndarray) -> np.ndarray:
        """Every room of these live merchant rows (`merchants[rows]`), in the order given: a slice of the
        rooms sorted by merchant each (what `rooms_of` found by two binary searches over every room)."""
        if rows.size == 0 or self.positions.size == 0:
            return np.zeros(0, dtype=np.int64)
        if self._starts is None:
            self._starts = np.concatenate([[0], np.cumsum(self.counts)]).astype(np.int64)
        counts = self.counts[rows]
        total = int(counts.sum())
        if total == 0:
            return np.zeros(0, dtype=np.int64)
        starts = np.repeat(self._starts[rows] - np.concatenate([[0], np.cumsum(counts)[:-1]]), counts)
        return self.order[starts + np.arange(total)]

    def trending(self) -> np.ndarray:
        """Rooms by `room_score`, best first (the best `depth`)."""
        if self._trending is None:
            self._trending = _best(self.room_score, np.arange(len(self)), self.depth)
        return self._trending

    def best_in(self, category: int, depth: int) -> np.ndarray:
        """The rooms of one category by `room_score`, best first."""
        if self._by_category is None:
            by: dict[int, np.ndarray] = {}
            if self.room_score is not None and len(self):
                for rows in self.category_groups():
                    by[int(self.category[rows[0]])] = _best(self.room_score, rows, max(depth * 4, 64))
            self._by_category = by
        return self._by_category.get(int(category), np.zeros(0, dtype=np.int64))[: max(depth * 4, 64)]


@dataclass(frozen=True)
class ItemClusters:
    """The model's merchants grouped by their LightFM item vectors (k-means), made once per model.

    `centroids` (C, k) float32; `cluster_of[position]` each merchant position's cluster. Discovery then
    scores the C centroids and only the live merchants of the clusters whose bound is best
    (`LiveClusters.best`), instead of every live merchant."""

    centroids: np.ndarray
    cluster_of: np.ndarray
    probe: int = 1_024  # merchants scored exactly per request (at least; whole clusters; at most twice)
    exact_below: int = EXACT_DISCOVERY_BELOW  # up to this many live merchants: every one scored (one product)

    @classmethod
    def of(
        cls,
        matrix: np.ndarray,
        clusters: int = 256,
        iterations: int = 6,
        sample: int = 16_384,
        seed: int = 0,
        probe: int = 1_024,
        exact_below: int = EXACT_DISCOVERY_BELOW,
    ) -> ItemClusters:
        """k-means (Lloyd, cosine-free: plain squared distance) on a sample of the item vectors, then every
        merchant to its nearest centroid, in blocks (bounded memory)."""
        matrix = np.ascontiguousarray(matrix, dtype=np.float32)
        n = matrix.shape[0]
        if n == 0:
            raise ValueError("ItemClusters.of needs at least one item vector")
        rng = np.random.default_rng(seed)
        c = max(1, min(clusters, n))
        train = matrix[rng.choice(n, size=min(sample, n), replace=False)] if n > sample else matrix
        centroids = train[rng.choice(train.shape[0], size=c, replace=False)].copy()
        for _ in range(iterations):
            near = _nearest(train, centroids)
            sums = np.zeros_like(centroids, dtype=np.float64)
            np.add.at(sums, near, train)
            counts = np.bincount(near, minlength=c)
            filled = counts > 0
            centroids[filled] = (sums[filled] / counts[filled, None]).astype(np.float32)
        return cls(centroids, _nearest(matrix, centroids).astype(np.int32), probe, exact_below)


def _nearest(points: np.ndarray, centroids: np.ndarray, block: int = 8_192) -> np.ndarray:
    """Each point's nearest centroid (squared Euclidean), `block` points at a time."""
    half_norms = 0.5 * np.einsum("ij,ij->i", centroids, centroids)
    out = np.empty(points.shape[0], dtype=np.int64)
    for start in range(0, points.shape[0], block):
        part = points[start : start + block]
        out[start : start + block] = np.argmax(part @ centroids.T - half_norms, axis=1)
    return out


@dataclass(frozen=True)
class LiveClusters:
    """The live merchant rows of a LiveSet grouped by the model's clusters, with what bounds a cluster's
    best score for any viewer: for a live merchant v with bias b in cluster c, u.v + b <= u.c_c +
    |u| r_c + max b (r_c: the largest |v - c_c| among its live merchants), so clusters are probed in
    order of that bound, and probing stops once `probe` merchants are scored and the next cluster's
    bound is below the `want`-th best score found (exact then) or twice `probe` are scored (approximate:
    the cost stays flat however many merchants are live)."""

    centroids: np.ndarray  # (C, k) float32
    rows: np.ndarray  # live merchant rows, by cluster
    starts: np.ndarray  # (C + 1,) where each cluster's rows start in `rows`
    radius: np.ndarray  # (C,) float32
    top_bias: np.ndarray  # (C,) largest bias (-inf: no live merchant)
    low_bias: np.ndarray  # (C,) smallest bias (+inf: none), for a reversed (negative-weight) score
    matrix: np.ndarray  # (live merchants, k) float32, rows in `rows` order (a contiguous gather per cluster)
    bias: np.ndarray
    probe: int
    sizes: np.ndarray  # (C,) live merchants per cluster

    @classmethod
    def of(
        cls, index: ItemClusters, positions: np.ndarray, matrix: np.ndarray, bias: np.ndarray
    ) -> LiveClusters:
        c = index.centroids.shape[0]
        known = (positions >= 0) & (positions < index.cluster_of.shape[0])
        cluster = np.where(known, index.cluster_of[np.where(known, positions, 0)], 0).astype(np.int64)
        rows = np.argsort(cluster, kind="stable")
        counts = np.bincount(cluster, minlength=c)
        starts = np.concatenate([[0], np.cumsum(counts)]).astype(np.int64)
        by = matrix[rows]
        dist = np.linalg.norm(by - index.centroids[cluster[rows]], axis=1).astype(np.float32)
        radius = np.zeros(c, dtype=np.float32)
        np.maximum.at(radius, cluster[rows], dist)
        top = np.full(c, -np.inf, dtype=np.float32)
        low = np.full(c, np.inf, dtype=np.float32)
        np.maximum.at(top, cluster[rows], bias[rows])
        np.minimum.at(low, cluster[rows], bias[rows])
        return cls(
            index.centroids,
            rows,
            starts,
            radius,
            top,
            low,
            np.ascontiguousarray(by),
            bias[rows],
            index.probe,
            counts,
        )

    def best(self, vector: np.ndarray, sign: float, want: int) -> np.ndarray:
        """Live merchant rows (of the LiveSet) with the best `sign` x LightFM score for `vector`, at most `want`."""
        q = (np.float32(sign) * vector).astype(np.float32)
        top_bias = self.top_bias if sign > 0 else -self.low_bias
        bound = self.centroids @ q + np.float32(np.linalg.norm(q)) * self.radius + top_bias
        order = np.argsort(-bound)
        reach = np.cumsum(self.sizes[order])
        # Whole clusters, best bound first, until `probe` merchants; then, up to twice that, the clusters
        # whose bound still beats the `want`-th best score found (none left: the answer is exact).
        first = min(int(np.searchsorted(reach, self.probe)) + 1, order.size)
        at, values = self._scores(order[:first], q, sign)
        if first < order.size and values.size > want:
            cut = np.partition(values, values.size - want)[values.size - want]
            last = int(np.searchsorted(reach, 2 * self.probe, side="right"))
            more = order[first:last]
            more = more[bound[more] > cut]
            if more.size:
                extra = self._scores(more, q, sign)
                at, values = np.concatenate([at, extra[0]]), np.concatenate([values, extra[1]])
        if values.size > want:
            top = np.argpartition(-values, want - 1)[:want]
            at, values = at[top], values[top]
        best: np.ndarray = self.rows[at[np.argsort(-values, kind="stable")]]
        return best

    def _scores(self, clusters: np.ndarray, q: np.ndarray, sign: float) -> tuple[np.ndarray, np.ndarray]:
        """(positions in `rows`, sign x score) of every live merchant of `clusters` (contiguous slices)."""
        spans = [np.arange(self.starts[j], self.starts[j + 1]) for j in clusters.tolist()]
        at = np.concatenate(spans) if spans else np.zeros(0, dtype=np.int64)
        values: np.ndarray = self.matrix[at] @ q
        values += np.float32(sign) * self.bias[at]
        return at, values


@dataclass(frozen=True)
class TopMerchants:
    """A viewer's best merchants by `sign` x LightFM score over every merchant the model holds, best first:
    made once per viewer and model (a viewer's vector does not change under one model), it gives discovery
    the best live merchants by a lookup in the live set however often that set changes (the per-user list
    of a recommender system such as Gorse, kept per process). Exact, where the cluster probe above
    `EXACT_DISCOVERY_BELOW` live merchants is approximate; `live_rows` says when the list is too short."""

    positions: np.ndarray  # int32 merchant positions, best first
    scores: np.ndarray  # float32 sign x score, in the same order (descending)
    known: int  # merchants scored: positions below this (a live merchant at or above it was added since)
    vector: np.ndarray  # float32, the viewer's (merchants added since are scored with it)
    sign: float

    @classmethod
    def of(
        cls, matrix: np.ndarray, bias: np.ndarray, vector: np.ndarray, sign: float, depth: int
    ) -> TopMerchants:
        """The best `depth` of the merchants of `matrix` / `bias` (rows = positions) for `vector`."""
        v = np.asarray(vector, dtype=np.float32)
        scores: np.ndarray = matrix @ v + bias
        if sign != 1.0:
            scores = sign * scores
        n = int(scores.shape[0])
        depth = min(depth, n)
        top = np.argpartition(-scores, depth - 1)[:depth] if 0 < depth < n else np.arange(n)
        top = top[np.argsort(-scores[top], kind="stable")]
        return cls(top.astype(np.int32), scores[top], n, v, sign)

    def live_rows(self, live: LiveSet, want: int) -> np.ndarray | None:
        """The `want` live merchant rows (of `live.merchants`) with the best score, best first; None when
        this list holds fewer than `want` of them while the model has merchants it left out (the caller
        makes a deeper list)."""
        m = live.merchants
        if m.size == 0 or want <= 0:
            return np.zeros(0, dtype=np.int64)
        at = np.minimum(np.searchsorted(m, self.positions), m.size - 1)
        found = m[at] == self.positions
        rows, scores = at[found], self.scores[found]
        # Live merchants the list never scored (new since; the live merchants are sorted: a tail).
        added = np.arange(int(np.searchsorted(m, self.known)), m.size)
        if added.size and live.matrix is not None and live.bias is not None:
            extra = live.matrix[added] @ self.vector + live.bias[added]
            rows = np.concatenate([rows, added])
            scores = np.concatenate([scores, self.sign * extra])
            order = np.argsort(-scores, kind="stable")
            rows, scores = rows[order], scores[order]
        if rows.size < want and self.positions.size < self.known:
            return None
        best: np.ndarray = rows[:want].astype(np.int64)
        return best


def top_depth(want: int, known: int, live_merchants: int) -> int:
    """How many merchants a viewer's `TopMerchants` keeps to hold `want` live ones: twice what the live
    share of the model's merchants needs (at least twice `want`; too few live later: made deeper)."""
    return min(known, max(2 * want, -(-2 * want * known // max(live_merchants, 1))))


def _best(score: np.ndarray | None, rows: np.ndarray, depth: int) -> np.ndarray:
    if score is None or rows.size == 0:
        return np.zeros(0, dtype=np.int64)
    values = score[rows]
    if rows.size > depth:
        top = np.argpartition(-values, depth - 1)[:depth]
        rows, values = rows[top], values[top]
    return rows[np.argsort(-values, kind="stable")].astype(np.int64)


@dataclass
class Viewer:
    """What retrieval reads about the viewer: the history (model's plus recent visits, merchant
    positions) and the LightFM score of every live merchant row (None: no vector for this viewer)."""

    history: ViewerHistory
    merchant_scores: np.ndarray | None = None
    vector: np.ndarray | None = None  # the LightFM user vector (the feed; the replay gives scores)


def directions(ranker: Ranker) -> dict[str, float]:
    """Which way the ranker's viewer columns count (+1, -1, 0 unused): discovery takes the merchants
    with the best LightFM *contribution*, co-visitation and categories only where they add. A two-part
    ranker scores the rooms of merchants the viewer never entered — what these sources bring — with its
    discovery weights, so those decide."""
    weights = ranker.discovery if ranker.discovery is not None else ranker.weights
    return {name: float(np.sign(weights[F[name]])) for name in ("lightfm", "covisit", "category_affinity")}


@dataclass
class Retrieved:
    """The rows to rank (ascending), which source brought each, and the viewer's LightFM moments over
    every live room it may be shown and never entered: (count, sum, sum of squares)."""

    rows: np.ndarray
    sources: dict[str, np.ndarray]
    lightfm_moments: tuple[float, float, float] | None = None


def _kept(rows: np.ndarray, keep: np.ndarray, limit: int | None = None) -> np.ndarray:
    rows = rows[keep[rows]]
    return rows if limit is None else rows[:limit]


# --- the sources ---------------------------------------------------------------------------------


def entered_merchants(history: ViewerHistory) -> np.ndarray:
    """Merchant positions the viewer entered (ascending)."""
    if len(history) == 0:
        return np.zeros(0, dtype=np.int64)
    return history.merchants[(history.stats[:, S["enters"]] > 0) & (history.merchants >= 0)]


def favourites(live: LiveSet, keep: np.ndarray, history: ViewerHistory) -> np.ndarray:
    """Every live room the viewer may be shown of a merchant it entered."""
    return _kept(live.rooms_of(entered_merchants(history)), keep)


def discovery(
    live: LiveSet,
    keep: np.ndarray,
    merchant_scores: np.ndarray | None,
    merchants: int,
    vector: np.ndarray | None = None,
    sign: float = 1.0,
    top: TopMerchants | None = None,
) -> np.ndarray:
    """The rooms of the `merchants` live merchants with the best LightFM score for the viewer (times
    `sign`): from the scores when given, else from the viewer's `top` list (the feed keeps one per
    viewer and model), else one product of the vector with the live merchants'.

    Exact (one product) up to `ItemClusters.exact_below` live merchants; above, the live set's
    `LiveClusters` probes a fixed number of merchants, the clusters with the best bound first, so the
    cost does not grow with the live merchants (docs/feed.md, "What retrieval costs")."""
    if merchants <= 0 or sign == 0:
        return np.zeros(0, dtype=np.int64)
    if merchant_scores is None and top is not None and top.sign == sign:
        rows = top.live_rows(live, merchants)
        if rows is not None:
            return _kept(live.rooms_of_rows(rows), keep)
    if merchant_scores is None and vector is not None and live.clusters is not None:
        rows = live.clusters.best(np.asarray(vector, dtype=np.float32), sign, merchants)
        return _kept(live.rooms_of_rows(rows), keep)
    if merchant_scores is None and vector is not None:
        merchant_scores = merchant_scores_of(live, vector)
    if merchant_scores is None or merchant_scores.size == 0:
        return np.zeros(0, dtype=np.int64)
    best = _best(sign * merchant_scores, np.arange(merchant_scores.size), merchants)
    return _kept(live.rooms_of_rows(best), keep)


def covisit_merchants(history: ViewerHistory, table: MerchantTable, merchants: int) -> np.ndarray:
    """The `merchants` merchants most co-visited with those the viewer watched (positions, ascending; the
    ranker's co-visitation weights: log1p(watch minutes) x neighbour weight)."""
    cov = table.covisit
    none = np.zeros(0, dtype=np.int64)
    if len(history) == 0 or merchants <= 0 or cov.shape[0] == 0:
        return none
    watched = history.stats[:, S["dwell_s"]]
    mine = (history.merchants >= 0) & (history.merchants < cov.shape[0]) & (watched > 0)
    if not mine.any():
        return none
    rows = history.merchants[mine]
    starts, ends = cov.indptr[rows], cov.indptr[rows + 1]
    counts = ends - starts
    total = int(counts.sum())
    if total == 0:
        return none
    at = np.repeat(starts - np.concatenate([[0], np.cumsum(counts)[:-1]]), counts) + np.arange(total)
    weights = np.repeat(np.log1p(watched[mine] / 60.0), counts) * cov.data[at]
    neighbours, summed = unique_inverse(cov.indices[at])
    score = np.bincount(summed, weights=weights)
    best = neighbours[_best(score, np.arange(score.size), merchants)]
    out: np.ndarray = np.sort(best).astype(np.int64)
    return out


def covisited(
    live: LiveSet, keep: np.ndarray, history: ViewerHistory, table: MerchantTable, merchants: int
) -> np.ndarray:
    """The rooms of the `merchants` merchants most co-visited with those the viewer watched."""
    best = covisit_merchants(history, table, merchants)
    return _kept(live.rooms_of(best), keep) if best.size else best


def trending(live: LiveSet, keep: np.ndarray, rooms: int) -> np.ndarray:
    """The `rooms` best rooms by the viewer-independent score that the viewer may be shown."""
    if rooms <= 0:
        return np.zeros(0, dtype=np.int64)
    top = _kept(live.trending(), keep, rooms)
    if top.size < rooms and live.room_score is not None:  # a long session took most of the list
        top = _best(live.room_score, np.flatnonzero(keep), rooms)
    return top


def favourite_categories(history: ViewerHistory, table: MerchantTable, top: int) -> list[int]:
    """The viewer's `top` categories by share of dwell (codes, best first)."""
    if len(history) == 0 or top <= 0:
        return []
    known = (history.merchants >= 0) & (history.merchants < table.category.shape[0])
    dwell = np.where(known, history.stats[:, S["dwell_s"]], 0.0)
    if not (dwell > 0).any():
        return []
    codes = table.category[np.where(known, history.merchants, 0)]
    ok = codes >= 0
    if not ok.any():
        return []
    share = np.bincount(codes[ok], weights=dwell[ok])
    return [int(c) for c in np.argsort(-share, kind="stable")[:top] if share[c] > 0]


def categories(
    live: LiveSet,
    keep: np.ndarray,
    history: ViewerHistory,
    table: MerchantTable,
    top: int,
    rooms: int,
    chosen: Sequence[int] | None = None,
) -> np.ndarray:
    """The best `rooms` rooms of each of the viewer's `top` categories by share of dwell (`chosen`: those
    categories, when the caller has them)."""
    if top <= 0 or rooms <= 0 or live.room_score is None:
        return np.zeros(0, dtype=np.int64)
    if chosen is None:
        chosen = favourite_categories(history, table, top)
    parts = [_kept(live.best_in(c, rooms), keep, rooms) for c in chosen]
    return np.concatenate(parts) if parts else np.zeros(0, dtype=np.int64)


@dataclass(frozen=True)
class HistoryPicks:
    """What the history-driven sources take from the viewer's history, before the live set: the merchants
    it entered, the merchants most co-visited with what it watched, its favourite categories. They depend
    on the history, the model's table and the budget only, so the feed keeps them per viewer while its
    history does not change (`feed.retrieval.Retrieve`) and a page maps them onto the live set."""

    entered: np.ndarray
    covisit: np.ndarray
    categories: tuple[int, ...]

    @classmethod
    def of(
        cls, history: ViewerHistory, table: MerchantTable, budget: Budget, signs: dict[str, float]
    ) -> HistoryPicks:
        return cls(
            entered_merchants(history),
            covisit_merchants(history, table, budget.covisit if signs.get("covisit", 1.0) > 0 else 0),
            tuple(
                favourite_categories(
                    history, table, budget.categories if signs.get("category_affinity", 1.0) > 0 else 0
                )
            ),
        )


def owed(live: LiveSet, keep: np.ndarray, merchants: Sequence[int], limit: int) -> np.ndarray:
    """The rooms of merchants the alliance owes exposure (positions, most owed first; the first `limit`)."""
    if not merchants or limit <= 0:
        return np.zeros(0, dtype=np.int64)
    chosen = sorted_unique(np.asarray(list(merchants)[:limit], dtype=np.int64))
    return _kept(live.rooms_of(chosen), keep)


def exploration(keep: np.ndarray, eligible: np.ndarray, rooms: int, rng: np.random.Generator) -> np.ndarray:
    """Up to `rooms` rows drawn uniformly from the eligible rows (indices) the viewer may be shown."""
    if rooms <= 0 or eligible.size == 0:
        return np.zeros(0, dtype=np.int64)
    picks: list[int] = []
    seen: set[int] = set()
    for _ in range(4 * rooms + 8):  # most eligible rooms are kept: draw and redraw a few times
        if len(picks) == rooms:
            break
        row = int(eligible[int(rng.integers(eligible.size))])
        if keep[row] and row not in seen:
            picks.append(row)
            seen.add(row)
    if len(picks) < rooms:
        left = eligible[keep[eligible]]
        left = left[~np.isin(left, picks)]
        if left.size:
            more = rng.choice(left, size=min(rooms - len(picks), left.size), replace=False)
            picks.extend(int(x) for x in more)
    return np.array(sorted(picks), dtype=np.int64)


# --- the union -----------------------------------------------------------------------------------


def merchant_scores_of(live: LiveSet, vector: np.ndarray | None) -> np.ndarray | None:
    """The viewer's LightFM score of every live merchant row (None without a vector)."""
    if vector is None or live.matrix is None or live.bias is None:
        return None
    out: np.ndarray = live.matrix @ np.asarray(vector, dtype=np.float32) + live.bias
    return out


def lightfm_moments(
    live: LiveSet,
    keep: np.ndarray,
    scores: np.ndarray | None,
    entered_rows: np.ndarray,
    not_kept: np.ndarray | None = None,
) -> tuple[float, float, float] | None:
    """(count, sum, sum of squares) of the viewer's LightFM score over every kept room whose
    merchant it never entered: what the ranker standardises its LightFM column by, over all live
    rooms, from per-merchant sums (the rooms left out are few: gathered one by one)."""
    if scores is None:
        return None
    s = scores.astype(np.float64)
    counts = live.counts.astype(np.float64)
    count, total, squares = float(counts.sum()), float(counts @ s), float(counts @ (s * s))
    return _less(
        live, keep, entered_rows, count, total, squares, lambda rows: s[live.room_merchant[rows]], not_kept
    )


def lightfm_moments_of(
    live: LiveSet,
    keep: np.ndarray,
    vector: np.ndarray | None,
    entered_rows: np.ndarray,
    not_kept: np.ndarray | None = None,
) -> tuple[float, float, float] | None:
    """`lightfm_moments` from the viewer's vector: the sums over all live rooms from the live set's
    moments of [vector, bias] (O(k^2) whatever the number of rooms), less the rooms left out."""
    if (
        vector is None
        or live.first is None
        or live.second is None
        or live.matrix is None
        or live.bias is None
    ):
        return None
    u = np.append(np.asarray(vector, dtype=np.float64), 1.0)
    count = float(len(live.positions))  # = live.counts.sum(): every room counted once
    total, squares = float(live.first @ u), float(u @ live.second @ u)
    matrix, bias = live.matrix, live.bias

    def scores(rows: np.ndarray) -> np.ndarray:
        at = live.room_merchant[rows]
        out: np.ndarray = (matrix[at] @ np.asarray(vector, dtype=np.float32) + bias[at]).astype(np.float64)
        return out

    return _less(live, keep, entered_rows, count, total, squares, scores, not_kept)


def _less(
    live: LiveSet,
    keep: np.ndarray,
    entered_rows: np.ndarray,
    count: float,
    total: float,
    squares: float,
    scores: Callable[[np.ndarray], np.ndarray],
    not_kept: np.ndarray | None = None,
) -> tuple[float, float, float]:
    """The sums less the rooms not kept (`not_kept`: np.flatnonzero(~keep) when the caller has it) and the
    rooms of entered merchants."""
    out = not_kept if not_kept is not None else np.flatnonzero(~keep)
    left = sorted_unique(np.concatenate([out, entered_rows])) if entered_rows.size else out
    if left.size:
        v = scores(left)
        count -= left.size
        total -= float(v.sum())
        squares -= float(v @ v)
    return count, total, squares


def retrieve(
    live: LiveSet,
    keep: np.ndarray,
    viewer: Viewer,
    table: MerchantTable,
    budget: Budget = Budget(),
    owed_merchants: Sequence[int] = (),
    eligible: np.ndarray | None = None,
    rng: np.random.Generator | None = None,
    signs: dict[str, float] | None = None,
    not_kept: np.ndarray | None = None,
    top: TopMerchants | None = None,
    picks: HistoryPicks | None = None,
) -> Retrieved:
    """The union of every source over the rooms the viewer may be shown (`keep`); `signs` (from
    `directions(ranker)`) turns off a source whose column the ranker does not reward; `not_kept`:
    np.flatnonzero(~keep), when the caller lists it without a scan (feed.context.Candidates.not_kept);
    `top`: the viewer's best merchants over the whole model (discovery's lookup, `TopMerchants`); `picks`:
    what the history-driven sources take from this history (`HistoryPicks`), when the caller kept them."""
    history = viewer.history
    sign = signs or {}
    if picks is None:
        picks = HistoryPicks.of(history, table, budget, sign)
    entered = live.rooms_of(picks.entered)  # kept or not (the moments leave them all out)
    found = {
        "favourites": entered[keep[entered]],
        "discovery": discovery(
            live,
            keep,
            viewer.merchant_scores,
            budget.discovery,
            viewer.vector,
            sign.get("lightfm", 1.0),
            top,
        ),
        "covisit": _kept(live.rooms_of(picks.covisit), keep) if picks.covisit.size else picks.covisit,
        "trending": trending(live, keep, budget.trending),
        "categories": categories(
            live,
            keep,
            history,
            table,
            budget.categories if sign.get("category_affinity", 1.0) > 0 else 0,
            budget.per_category,
            picks.categories,
        ),
        "owed": owed(live, keep, owed_merchants, budget.owed),
        "exploration": exploration(
            keep,
            eligible if eligible is not None else np.zeros(0, dtype=np.int64),
            budget.exploration,
            rng if rng is not None else np.random.default_rng(0),
        ),
    }
    rows = sorted_unique(np.concatenate(list(found.values()))).astype(np.int64)
    if viewer.merchant_scores is not None:
        moments = lightfm_moments(live, keep, viewer.merchant_scores, entered, not_kept)
    else:
        moments = lightfm_moments_of(live, keep, viewer.vector, entered, not_kept)
    return Retrieved(rows, found, moments)


# --- the offline evaluation ----------------------------------------------------------------------


def sub_request(
    req: RankRequest, rows: np.ndarray, moments: tuple[float, float, float] | None
) -> RankRequest:
    """`req` over `rows` of its rooms only, standardising LightFM by the moments over all of them."""
    return replace(
        req,
        items=req.items[rows],
        category=req.category[rows],
        band=req.band[rows],
        started_ms=req.started_ms[rows],
        heat=req.heat[rows],
        lightfm=req.lightfm[rows] if req.lightfm is not None else None,
        unit_items=req.unit_items[rows] if req.unit_items is not None else None,
        item_order=None,
        slots={},  # the whole set's gather indices are not this subset's
        lightfm_moments=moments,
    )


def replayed_live_set(ranker: Ranker, table: MerchantTable, req: RankRequest) -> LiveSet:
    """The live set of a replayed request: the rooms' merchant positions, their LightFM scores as each
    merchant's (every room of a merchant scores alike) and the ranker's room part."""
    live = LiveSet.of(req.items, req.category, room_score=ranker.room_score(table, req).astype(np.float64))
    return live


def replayed_merchant_scores(live: LiveSet, req: RankRequest) -> np.ndarray | None:
    """Per live merchant row, the LightFM score its rooms have in the replayed request."""
    if req.lightfm is None:
        return None
    out = np.zeros(live.merchants.size, dtype=np.float32)
    out[live.room_merchant] = req.lightfm
    return out


def retrieval_method(ranker: Ranker, budget: Budget = Budget(), seed: int = 0) -> Callable[[Any], np.ndarray]:
    """The ranker on the rooms retrieval gives (the rest rank below them), for `ranking.evaluation`:
    what the feed serves when the live set is large. Exploration draws from every room (a replay has
    no last-hour impressions; the feed draws from little-seen rooms)."""
    rng = np.random.default_rng(seed)
    signs = directions(ranker)

    def scored(t: Any) -> np.ndarray:
        req: RankRequest = t.request
        live = replayed_live_set(ranker, t.table, req)
        keep = np.ones(len(live), dtype=bool)
        viewer = Viewer(req.history, replayed_merchant_scores(live, req))
        got = retrieve(
            live, keep, viewer, t.table, budget, eligible=np.arange(len(live)), rng=rng, signs=signs
        )
        scores = ranker.score(t.table, sub_request(req, got.rows, got.lightfm_moments)).astype(np.float64)
        # Rooms not retrieved rank below every retrieved one (a modest floor: the evaluation breaks
        # ties with noise proportional to the largest score).
        out = np.full(len(live), float(scores.min(initial=0.0)) - 1.0)
        out[got.rows] = scores
        return out

    return scored


def recall(retrieved: Collection[int], wanted: Collection[int]) -> float:
    """Share of `wanted` rows that retrieval gave."""
    wanted = set(wanted)
    return len(wanted & set(retrieved)) / len(wanted) if wanted else 1.0
