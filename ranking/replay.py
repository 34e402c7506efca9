"""Replaying a log as the feed saw it: for each sampled `enter`, the request the ranker would have answered.

Owns `Schedule` (which rooms were live when), `build_merchant_table` (popularity as of a time,
category, price band and co-visitation per merchant: what a model artifact carries, and what the
replay refreshes every `snapshot_every_ms` as the trainer would), and `replay` — a chronological pass
that, for each sampled enter at time t, builds the `RankRequest` of the rooms live at t (minus the
rooms already shown in the session, as the feed's session filter does) from the same history,
popularity and session signals the feed reads, plus the simple baselines' signals (POP, live POP,
the viewer's own counts). Training lists, the offline evaluation and the promotion gate all read it.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import scipy.sparse as sp

from events import vocabulary
from events.keys import HALF_LIFE_S as HEAT_HALF_LIFE_S
from ranking.dataset import ENTER, IMPRESSION, LEAVE, PURCHASE, InteractionLog
from ranking.features import PRICE_BANDS, RoomFeatures
from ranking.history import HISTORY_TYPES, WATCH_MS, ViewerHistory, history_of
from ranking.ranker import (
    HOUR_MS,
    POPULARITY_HALF_LIVES_MS,
    MerchantTable,
    RankRequest,
    SessionVisit,
    merchant_rates,
)
from ranking.scorer import Scorer

# events' heat half-life: the feed's per-room "hot right now" signal (events.heat, the same number).
HEAT_HALF_LIFE_MS = int(HEAT_HALF_LIFE_S * 1000)
# The live POP baseline's half-life is the ranker's live popularity column's (pop_1h): one quantity.
LIVE_POP_HALF_LIFE_MS = POPULARITY_HALF_LIVES_MS[0]
# How fresh the ranker's merchant popularity is in a replay (`replay(popularity=...)`): "snapshot" — a
# table of the enters before the last `snapshot_every_ms` boundary (the trainer's cadence); "exact" — the
# enters up to the request's moment, as the POP and live POP baselines count them.
POPULARITIES = ("snapshot", "exact")
# What the room's `heat` column carries in a replay (`replay(heat=...)`): "enters" — events' heat, the
# room's enters decayed with HEAT_HALF_LIFE_MS (what the feed reads from Redis); "viewers" — the viewers in
# the room at that moment (entered and not yet left), a measured alternative.
HEATS = ("enters", "viewers")
COVISIT_NEIGHBOURS = 50


@dataclass
class Schedule:
    """Rooms and when they were live, with merchant (log index) and features per room (index-aligned)."""

    room_merchant: np.ndarray
    room_start: np.ndarray  # epoch ms
    room_end: np.ndarray
    room_features: Sequence[RoomFeatures]

    def __post_init__(self) -> None:
        self._order = np.argsort(self.room_start, kind="stable")
        self._sorted_start = self.room_start[self._order]

    def live_at(self, t: int) -> np.ndarray:
        hi = int(np.searchsorted(self._sorted_start, t, side="right"))
        cand = self._order[:hi]
        return cand[self.room_end[cand] > t]


def schedule_from_log(log: InteractionLog, features: Mapping[str, RoomFeatures]) -> Schedule:
    """Availability as the archive saw it: a room is live from its first to its last event."""
    n = len(log.room_ids)
    start = np.full(n, np.iinfo(np.int64).max, dtype=np.int64)
    end = np.zeros(n, dtype=np.int64)
    np.minimum.at(start, log.room, log.ts)
    np.maximum.at(end, log.room, log.ts + 1)
    merchant = np.zeros(n, dtype=np.int64)
    merchant[log.room] = log.merchant
    room_features = []
    for j in range(n):
        mid = log.merchant_ids[merchant[j]]
        f = features.get(mid)
        room_features.append(
            RoomFeatures(
                room_id=log.room_ids[j],
                merchant_id=mid,
                category=f.category if f else "unknown",
                tags=list(f.tags) if f else [],
                price_band=f.price_band if f else "mid",
                format=f.format if f else "one_to_many",
                host=f.host if f else "",
                started_at=float(start[j]) / 1000.0,
            )
        )
    return Schedule(merchant, start, end, room_features)


def category_vocabulary(features: Mapping[str, RoomFeatures]) -> list[str]:
    return sorted({f.category for f in features.values()})


def covisitation(
    viewer: np.ndarray, merchant: np.ndarray, n_merchants: int, k: int = COVISIT_NEIGHBOURS
) -> sp.csr_matrix:
    """Merchant x merchant: viewers who entered both, cosine-normalised, top `k` neighbours per merchant."""
    if viewer.size == 0:
        return sp.csr_matrix((n_merchants, n_merchants), dtype=np.float32)
    pairs = np.unique(np.stack([viewer, merchant], axis=1), axis=0)
    _, rows = np.unique(pairs[:, 0], return_inverse=True)
    b = sp.csr_matrix(
        (np.ones(pairs.shape[0], dtype=np.float32), (rows, pairs[:, 1])),
        shape=(int(rows.max()) + 1, n_merchants),
    )
    c = (b.T @ b).tocsr()
    c.setdiag(0)
    c.eliminate_zeros()
    n = np.asarray(b.sum(axis=0)).ravel()
    c = c.tocoo()
    vals = c.data / np.sqrt(np.maximum(n[c.row] * n[c.col], 1.0))
    c = sp.csr_matrix((vals.astype(np.float32), (c.row, c.col)), shape=(n_merchants, n_merchants))
    # Keep each merchant's strongest k neighbours.
    indptr, indices, data = [0], [], []
    for i in range(n_merchants):
        a, z = c.indptr[i], c.indptr[i + 1]
        top = np.argpartition(-c.data[a:z], k)[:k] + a if z - a > k else np.arange(a, z)
        indices.extend(c.indices[top].tolist())
        data.extend(c.data[top].tolist())
        indptr.append(len(indices))
    return sp.csr_matrix(
        (np.array(data, dtype=np.float32), np.array(indices, dtype=np.int32), np.array(indptr)),
        shape=(n_merchants, n_merchants),
    )


def popularity_of(
    ts: np.ndarray, merchant: np.ndarray, n_merchants: int, as_of_ms: int
) -> tuple[np.ndarray, np.ndarray]:
    """Enter counts and decayed counts (POPULARITY_HALF_LIVES_MS) per merchant as of `as_of_ms`."""
    before = ts < as_of_ms
    m, age = merchant[before], (as_of_ms - ts[before]).astype(np.float64)
    counts = np.bincount(m, minlength=n_merchants).astype(np.float64)
    decayed = np.stack(
        [
            np.bincount(m, weights=np.power(0.5, age / h), minlength=n_merchants)
            for h in POPULARITY_HALF_LIVES_MS
        ],
        axis=1,
    )
    return counts, decayed


class MerchantPopularity:
    """Every merchant's enters up to a moment, folded in one enter at a time: the count and the sums decayed
    with POPULARITY_HALF_LIVES_MS — the quantity `popularity_of` computes for a snapshot, kept exact at every
    moment of a replay. The POP and live POP baselines read it, and so does the ranker's table under
    `replay(popularity="exact")`: one computation of "how popular is this merchant now"."""

    def __init__(self, n_merchants: int) -> None:
        self.counts = np.zeros(n_merchants)
        self.decayed = np.zeros((n_merchants, len(POPULARITY_HALF_LIVES_MS)))
        self.last = np.zeros(n_merchants, dtype=np.int64)
        self._half = np.array(POPULARITY_HALF_LIVES_MS, dtype=np.float64)

    @classmethod
    def of_table(cls, table: MerchantTable) -> MerchantPopularity:
        """The popularity a merchant table holds (as of its `as_of_ms`), to fold later enters into."""
        folded = cls(table.pop_count.shape[0])
        folded.counts = table.pop_count.astype(np.float64, copy=True)
        folded.decayed = table.pop_decayed.astype(np.float64, copy=True)
        folded.last[:] = table.as_of_ms
        return folded

    def table(self, like: MerchantTable, t: int) -> MerchantTable:
        """`like` (category, price band, co-visitation) with the popularity as of `t`."""
        counts, decayed = self.at(t)
        return MerchantTable(
            like.category,
            like.band,
            counts,
            decayed,
            t,
            like.covisit,
            like.n_categories,
            like.n_bands,
            like.rates,
        )

    def add(self, merchant: int, t: int) -> None:
        self.counts[merchant] += 1.0
        row, since = self.decayed[merchant], t - self.last[merchant]
        for j, half in enumerate(POPULARITY_HALF_LIVES_MS):  # scalars: one enter of a long replay
            row[j] = row[j] * 0.5 ** (since / half) + 1.0
        self.last[merchant] = t

    def at(self, t: int) -> tuple[np.ndarray, np.ndarray]:
        """(counts, decayed sums at `t`) of every merchant (copies)."""
        age = np.maximum(t - self.last, 0).astype(np.float64)
        return self.counts.copy(), self.decayed * np.power(0.5, age[:, None] / self._half)

    def live_at(self, items: np.ndarray, t: int) -> np.ndarray:
        """Live POP of the merchants at `items` (-1: 0): their enters decayed with the 1 h half-life at `t`."""
        safe = np.maximum(items, 0)
        value = self.decayed[safe, 0] * np.power(0.5, (t - self.last[safe]) / LIVE_POP_HALF_LIFE_MS)
        out: np.ndarray = np.where(items >= 0, value, 0.0)
        return out


def rates_of(log: InteractionLog, to_pos: np.ndarray, n_merchants: int, until_ms: int) -> np.ndarray:
    """MerchantTable.rates (ranking.ranker.merchant_rates) from the log's impressions, enters and leaves
    before `until_ms`, over merchant positions `to_pos` (per log merchant; -1 left out)."""
    before = log.ts < until_ms
    pos = to_pos[log.merchant]
    ok = before & (pos >= 0)

    def count(kind: np.ndarray) -> np.ndarray:
        out: np.ndarray = np.bincount(pos[ok & kind], minlength=n_merchants).astype(np.float64)
        return out

    leave = log.type == LEAVE
    return merchant_rates(
        count(log.type == IMPRESSION),
        count(log.type == ENTER),
        count(leave),
        count(leave & (log.dwell_ms >= WATCH_MS)),
    )


def build_merchant_table(
    log: InteractionLog,
    features: Mapping[str, RoomFeatures],
    until_ms: int,
    merchant_ids: Sequence[str],
    categories: Sequence[str],
) -> MerchantTable:
    """The table over `merchant_ids` (the caller's merchant space) from the log before `until_ms`."""
    pos = {m: i for i, m in enumerate(merchant_ids)}
    n = len(merchant_ids)
    to_pos = np.array([pos.get(m, -1) for m in log.merchant_ids], dtype=np.int64)
    cat_code = {c: i for i, c in enumerate(categories)}
    band_code = {b: i for i, b in enumerate(PRICE_BANDS)}
    category = np.full(n, -1, dtype=np.int64)
    band = np.full(n, -1, dtype=np.int64)
    for m, i in pos.items():
        f = features.get(m)
        if f is not None:
            category[i] = cat_code.get(f.category, -1)
            band[i] = band_code.get(f.price_band, -1)
    enters = (log.type == ENTER) & (log.ts < until_ms)
    m = to_pos[log.merchant[enters]]
    ok = m >= 0
    counts, decayed = popularity_of(log.ts[enters][ok], m[ok], n, until_ms)
    return MerchantTable(
        category=category,
        band=band,
        pop_count=counts,
        pop_decayed=decayed,
        as_of_ms=until_ms,
        covisit=covisitation(log.viewer[enters][ok], m[ok], n),
        n_categories=len(categories),
        n_bands=len(PRICE_BANDS),
        rates=rates_of(log, to_pos, n, until_ms),
    )


@dataclass
class Target:
    """One held-out (or training) enter: its request, the baselines' signals and how to judge it."""

    request: RankRequest
    table: MerchantTable  # the snapshot the request was ranked with
    rooms: np.ndarray  # candidate room indices (schedule)
    target: int  # index of the entered room among `rooms`
    event: int  # row of the enter in the log
    viewer: int
    repeat: bool  # the viewer entered this merchant before
    purchase: bool  # the visit led to a purchase
    pop: np.ndarray  # POP: the merchant's enters up to t
    live_pop: np.ndarray  # live POP: enters decayed with a 1 h half-life, up to t
    rep: np.ndarray  # REP: the viewer's enters of the merchant up to t
    passed: (
        np.ndarray
    )  # bool: shown earlier in this session and not entered (only when the session filter is off)
    sampling: np.ndarray  # log inverse sampling rate per candidate (0 unless `max_candidates` subsampled)
    entered_before: np.ndarray  # bool: merchant entered by the viewer before t


class _ViewerEvents:
    """Per-viewer slices of the history events, sorted by time."""

    def __init__(self, log: InteractionLog, to_pos: np.ndarray) -> None:
        names = log.type_names()
        keep = np.isin(names, HISTORY_TYPES)
        idx = np.flatnonzero(keep)
        order = idx[np.lexsort((log.ts[idx], log.viewer[idx]))]
        self.viewer = log.viewer[order]
        self.ts = log.ts[order]
        self.merchant = to_pos[log.merchant[order]]
        self.names = names[order]
        self.dwell = log.dwell_ms[order]
        self.code = log.entry_code[order]
        self.leave = self.names == vocabulary.LEAVE
        bounds = np.searchsorted(self.viewer, np.arange(len(log.viewer_ids) + 1))
        self.bounds = bounds

    def history(self, v: int, t: int) -> ViewerHistory:
        a = int(self.bounds[v])
        b = a + int(np.searchsorted(self.ts[a : self.bounds[v + 1]], t))
        m = self.merchant[a:b]
        ok = m >= 0
        return history_of(
            m[ok], self.names[a:b][ok], self.dwell[a:b][ok], self.code[a:b][ok], self.ts[a:b][ok]
        )

    def session(self, v: int, t: int, window_ms: int) -> list[SessionVisit]:
        a0, z = int(self.bounds[v]), int(self.bounds[v + 1])
        ts = self.ts[a0:z]
        a = a0 + int(np.searchsorted(ts, t - window_ms))
        b = a0 + int(np.searchsorted(ts, t))
        rows = np.flatnonzero(self.leave[a:b]) + a
        return [
            SessionVisit(int(self.merchant[i]), int(self.dwell[i]), int(self.ts[i])) for i in rows.tolist()
        ]


def replay(
    log: InteractionLog,
    schedule: Schedule,
    features: Mapping[str, RoomFeatures],
    scorer: Scorer | None,
    windows: Sequence[tuple[int, int]],
    max_targets: Sequence[int],
    merchant_ids: Sequence[str] | None = None,
    seed: int = 0,
    snapshot_every_ms: int = 10 * 60_000,
    session_filter: bool = True,
    max_candidates: int | None | Sequence[int | None] = None,
    session_window_ms: int = HOUR_MS,
    viewers: Sequence[np.ndarray | None] | None = None,
    popularity: str = "snapshot",
    heat: str = "enters",
    table_as_of: int | None = None,
) -> list[list[Target]]:
    """The targets of each window, in time order.

    Merchant positions are indices into `merchant_ids` (default: the log's). `session_filter=False`
    (training lists) keeps the rooms shown earlier in the session as candidates and marks the ones
    passed by; `max_candidates` (one for all windows, or one per window) subsamples the other live rooms
    (the target, the passed rooms and the rooms of merchants the viewer entered stay). `viewers` (one
    boolean mask over `log.viewer_ids` per window, or None for every viewer) keeps a window's enters to
    those viewers; windows may then overlap in time (training and validation lists over the same hours
    from disjoint viewers), but an enter belongs to one window only. `popularity` (POPULARITIES) and `heat`
    (HEATS) say how fresh the ranker's merchant popularity is and what its room heat column carries;
    `table_as_of` ranks every request with the one table of the enters before that time (a model's table,
    as the feed serves it until the next model) instead of the replay's own.
    """
    if popularity not in POPULARITIES:
        raise ValueError(f"popularity must be one of {POPULARITIES}, got {popularity!r}")
    if heat not in HEATS:
        raise ValueError(f"heat must be one of {HEATS}, got {heat!r}")
    rng = np.random.default_rng(seed)
    caps = list(max_candidates) if isinstance(max_candidates, Sequence) else [max_candidates] * len(windows)
    masks = list(viewers) if viewers is not None else [None] * len(windows)
    if len(masks) != len(windows):
        raise ValueError(f"viewers: one mask (or None) per window, got {len(masks)} for {len(windows)}")
    merchant_ids = list(merchant_ids) if merchant_ids is not None else list(log.merchant_ids)
    categories = category_vocabulary(features)
    pos = {m: i for i, m in enumerate(merchant_ids)}
    to_pos = np.array([pos.get(m, -1) for m in log.merchant_ids], dtype=np.int64)
    n_m = len(merchant_ids)
    end = max(w[1] for w in windows)
    enter_rows = np.flatnonzero((log.type == ENTER) & (log.ts < end))
    chosen: dict[int, int] = {}
    for k, ((lo, hi), cap, among) in enumerate(zip(windows, max_targets, masks, strict=True)):
        inside = enter_rows[(log.ts[enter_rows] >= lo) & (log.ts[enter_rows] < hi)]
        if among is not None:
            if among.shape != (len(log.viewer_ids),):
                raise ValueError(f"viewers[{k}]: a mask over the log's {len(log.viewer_ids)} viewers")
            inside = inside[among[log.viewer[inside]]]
        inside = inside[[row not in chosen for row in inside.tolist()]] if chosen else inside
        if inside.size > cap:
            inside = np.sort(rng.choice(inside, cap, replace=False))
        chosen.update(dict.fromkeys(inside.tolist(), k))
    # A visit led to a purchase: a purchase in the same session and room after the enter.
    buys = set(
        zip(log.session[log.type == PURCHASE].tolist(), log.room[log.type == PURCHASE].tolist(), strict=True)
    )
    entered_pairs = set(
        zip(log.session[log.type == ENTER].tolist(), log.room[log.type == ENTER].tolist(), strict=True)
    )
    events = _ViewerEvents(log, to_pos)
    room_pos = to_pos[schedule.room_merchant]
    cat_code = {c: i for i, c in enumerate(categories)}
    band_code = {b: i for i, b in enumerate(PRICE_BANDS)}
    room_cat = np.array([cat_code.get(f.category, -1) for f in schedule.room_features], dtype=np.int64)
    room_band = np.array([band_code.get(f.price_band, -1) for f in schedule.room_features], dtype=np.int64)
    room_items = unit_items = None
    item_unit_of = None
    if scorer is not None:
        room_items = scorer.prepare(list(schedule.room_features))
        unit_items = room_items.unit
        by_merchant: dict[int, np.ndarray] = {}
        for j, p in enumerate(room_pos.tolist()):
            if p >= 0 and p not in by_merchant:
                by_merchant[p] = unit_items[j]
        item_unit_of = np.zeros((n_m, unit_items.shape[1]), dtype=np.float32)
        for p, vec in by_merchant.items():
            item_unit_of[p] = vec
    # Training-window pieces of the merchant table (category, band, co-visitation) are fixed; popularity is
    # refreshed at every snapshot from the enters before it.
    base = build_merchant_table(log, features, int(log.ts.min()) if len(log) else 0, merchant_ids, categories)
    first = min(w[0] for w in windows)
    before_first = build_merchant_table(log, features, first, merchant_ids, categories)
    cov, rates = before_first.covisit, before_first.rates
    enter_ts, enter_m = log.ts[log.type == ENTER], to_pos[log.merchant[log.type == ENTER]]
    ok = enter_m >= 0
    enter_ts, enter_m = enter_ts[ok], enter_m[ok]
    table: MerchantTable | None = None
    snapshot_at = -1
    # Exact-at-t state for the baselines and the room heat.
    merchants_now = MerchantPopularity(n_m)
    present: dict[tuple[int, int], int] = {}  # (viewer, room) -> enters not yet left (heat="viewers")
    viewers_in = np.zeros(len(schedule.room_features))
    heat_val, heat_last = (
        np.zeros(len(schedule.room_features)),
        np.zeros(len(schedule.room_features), dtype=np.int64),
    )
    shown: dict[int, dict[int, int]] = {}  # session -> room -> time it was last shown
    out: list[list[Target]] = [[] for _ in windows]
    kinds = [IMPRESSION, ENTER] + ([LEAVE] if heat == "viewers" else [])
    rows = np.flatnonzero(np.isin(log.type, kinds) & (log.ts < end))
    typ, ses, roo, tss, vie = (
        a[rows].tolist() for a in (log.type, log.session, log.room, log.ts, log.viewer)
    )
    for i, row in enumerate(rows.tolist()):
        t_type, s, r, t = typ[i], ses[i], roo[i], tss[i]
        if t_type == IMPRESSION:
            shown.setdefault(s, {})[r] = t
            continue
        if t_type == LEAVE:
            held = present.get((vie[i], r), 0)
            if held > 0:
                present[(vie[i], r)] = held - 1
                viewers_in[r] -= 1.0
            continue
        k_or_none = chosen.get(row)
        if k_or_none is not None:
            k = k_or_none
            if table_as_of is not None:
                if snapshot_at != table_as_of:
                    counts, decayed = popularity_of(enter_ts, enter_m, n_m, table_as_of)
                    table = MerchantTable(
                        base.category,
                        base.band,
                        counts,
                        decayed,
                        table_as_of,
                        cov,
                        base.n_categories,
                        base.n_bands,
                        rates,
                    )
                    snapshot_at = table_as_of
            elif popularity == "exact":
                if snapshot_at != t:
                    counts, decayed = merchants_now.at(t)
                    table = MerchantTable(
                        base.category,
                        base.band,
                        counts,
                        decayed,
                        t,
                        cov,
                        base.n_categories,
                        base.n_bands,
                        rates,
                    )
                    snapshot_at = t
            else:
                slot = t - t % snapshot_every_ms
                if slot != snapshot_at:
                    counts, decayed = popularity_of(enter_ts, enter_m, n_m, slot)
                    table = MerchantTable(
                        base.category,
                        base.band,
                        counts,
                        decayed,
                        slot,
                        cov,
                        base.n_categories,
                        base.n_bands,
                        rates,
                    )
                    snapshot_at = slot
            assert table is not None
            v = vie[i]
            live = schedule.live_at(t)
            in_view = shown.get(s, {})
            seen = set(in_view) - {r}
            # The page that showed the target was asked for before its impression: what the viewer did
            # from then on (that impression included) is not known to the ranker.
            asked = min(in_view.get(r, t), t)
            passed = np.zeros(live.size, dtype=bool)
            if seen:
                in_session = np.isin(live, np.fromiter(seen, dtype=np.int64))
                if session_filter:
                    live = live[~in_session]
                    passed = np.zeros(live.size, dtype=bool)
                else:
                    passed = in_session & np.array([(s, int(x)) not in entered_pairs for x in live.tolist()])
            where = np.flatnonzero(live == r)
            sampling = np.zeros(live.size)
            if where.size and live.size > 1:
                history = events.history(v, asked)
                max_candidates_k = caps[k]
                if max_candidates_k is not None and live.size > max_candidates_k:
                    # The viewer's entered merchants are the hard competitors of every target: all of them
                    # stay in the list; the other live rooms are sampled (and the softmax corrected).
                    known = np.zeros(live.size, dtype=bool)
                    if len(history):
                        entered = history.merchants[history.stats[:, 0] > 0]
                        known = np.isin(room_pos[live], entered) & (room_pos[live] >= 0)
                    others = np.flatnonzero((live != r) & ~passed & ~known)
                    keep = rng.choice(others, min(max_candidates_k, others.size), replace=False)
                    sel = np.sort(np.concatenate([keep, np.flatnonzero((live == r) | passed | known)]))
                    sampled = np.zeros(live.size, dtype=bool)
                    sampled[keep] = True
                    sampling = np.where(sampled, np.log(others.size / max(keep.size, 1)), 0.0)[sel]
                    live, passed = live[sel], passed[sel]
                    where = np.flatnonzero(live == r)
                lp = room_pos[live]
                safe = np.maximum(lp, 0)
                lightfm = None
                if scorer is not None and room_items is not None:
                    user = scorer.user_vector(log.viewer_ids[v])
                    if user is not None:
                        lightfm = room_items.matrix[live] @ user[0] + room_items.bias[live]
                request = RankRequest(
                    now_ms=t,
                    items=lp,
                    category=room_cat[live],
                    band=room_band[live],
                    started_ms=schedule.room_start[live].astype(np.float64),
                    heat=(
                        viewers_in[live].copy()
                        if heat == "viewers"
                        else heat_val[live] * np.power(0.5, (t - heat_last[live]) / HEAT_HALF_LIFE_MS)
                    ),
                    history=history,
                    session=events.session(v, asked, session_window_ms),
                    lightfm=lightfm,
                    unit_items=unit_items[live] if unit_items is not None else None,
                    item_unit_of=item_unit_of,
                )
                rep = np.zeros(live.size)
                if len(history):
                    at = np.minimum(np.searchsorted(history.merchants, lp), len(history) - 1)
                    hit = (history.merchants[at] == lp) & (lp >= 0)
                    rep[hit] = history.stats[at[hit], 0]
                out[k].append(
                    Target(
                        request=request,
                        table=table,
                        rooms=live,
                        target=int(where[0]),
                        event=row,
                        viewer=v,
                        repeat=bool(rep[where[0]] > 0),
                        purchase=(s, r) in buys,
                        pop=np.where(lp >= 0, merchants_now.counts[safe], 0.0),
                        live_pop=merchants_now.live_at(lp, t),
                        rep=rep,
                        passed=passed,
                        sampling=sampling,
                        entered_before=rep > 0,
                    )
                )
        m = int(to_pos[log.merchant[row]])
        if m >= 0:
            merchants_now.add(m, t)
        if heat == "viewers":
            present[(vie[i], r)] = present.get((vie[i], r), 0) + 1
            viewers_in[r] += 1.0
        heat_val[r] = heat_val[r] * 0.5 ** ((t - heat_last[r]) / HEAT_HALF_LIFE_MS) + 1.0
        heat_last[r] = t
    return out
