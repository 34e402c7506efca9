"""The ranker's per-request viewer part as one compiled pass: what `Ranker.serve_viewer_score` runs.

Owns `viewer_part`, a numba kernel that adds one viewer's VIEWER_FEATURES columns, weighted, to a
candidate set's room part: the LightFM column standardised over the rooms the viewer never entered,
co-visitation with the viewer's merchants, category and price-band affinity (and this session's
category tables), the session's swiped merchants and the history columns of the viewer's merchants'
rooms; and, for a two-part ranker, the feature rows of the entered merchants' rooms that the caller
rescores with the known-merchant weights. `ranking.ranker.viewer_columns` + `Ranker.add_viewer_score`
stay the definition (training, the offline replay and the operators' explain read them); this kernel
makes the same float32 operations in the same order on the score (tests/ranking/test_viewer_kernel.py
checks it against them, and bench/bench_rank_stage.py bit for bit against the commit before it).
Float64 intermediates (history columns, affinity and co-visitation sums, log1p/power) may differ
from numpy's in the last bit, which reaches a float32 score only by a rounding boundary.

Why compiled: the numpy formulation is ~150 calls on a few rows each (1-7 us apiece on this host) plus
~10 passes over every room; a page paid ~0.33 ms for it at 10,000 live rooms where the blend it
replaced paid ~0.1 ms (docs/feed.md "The rank stage compiled", docs/benchmarks.md `rank_stage`).
numba is the one dependency for it: no build step (it compiles at first use, cached on disk with
`cache=True`) and a well-kept library made for exactly this.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any, cast

import numba
import numpy as np

from ranking.history import STATS

# The kernel writes ranking.ranker.history_columns' columns at the same positions (h_enters, h_watches,
# h_dwell, h_swipes, h_purchases, h_passed, h_entered, h_follows, h_code, h_recent_1d, h_recent_7d,
# h_rank, h_share, h_fav) and reads the statistics at the positions of its `stat_at` argument (enters,
# watches, dwell_s, swipes, purchases, follows, impressions, code_enters, last_ms: ranking.history.S),
# both passed in by ranking.ranker, never frozen into the compiled code (numba's cache would keep them).
HISTORY_WIDTH = 14
# The feature columns the kernel weights, in the order of its `feature_at` argument.
KERNEL_FEATURES: tuple[str, ...] = (
    "lightfm",
    "session_lightfm",
    "covisit",
    "category_affinity",
    "band_affinity",
    "session_category",
    "session_skip",
    "session_swiped",
)

_jit = cast(Callable[..., Callable[[Callable[..., Any]], Callable[..., Any]]], numba.njit)


@_jit(cache=True, nogil=True)
def _block_sum(a: Any, lo: int, n: int) -> float:
    """numpy's float64 sum of a block of at most 128 values: sequential below 8, else 8 lanes."""
    if n < 8:
        s = 0.0
        for i in range(n):
            s += a[lo + i]
        return s
    r0, r1, r2, r3 = a[lo], a[lo + 1], a[lo + 2], a[lo + 3]
    r4, r5, r6, r7 = a[lo + 4], a[lo + 5], a[lo + 6], a[lo + 7]
    i = 8
    while i < n - (n % 8):
        r0 += a[lo + i]
        r1 += a[lo + i + 1]
        r2 += a[lo + i + 2]
        r3 += a[lo + i + 3]
        r4 += a[lo + i + 4]
        r5 += a[lo + i + 5]
        r6 += a[lo + i + 6]
        r7 += a[lo + i + 7]
        i += 8
    res = ((r0 + r1) + (r2 + r3)) + ((r4 + r5) + (r6 + r7))
    while i < n:
        res += a[lo + i]
        i += 1
    return float(res)


@_jit(cache=True, nogil=True)
def _pairwise_sum(a: Any, n: int) -> float:
    """numpy's float64 `sum` of a[:n], the same additions in the same order (pairwise halves at
    multiples of 8 down to blocks of 128), so a total is the one numpy's formulation computes. Without
    recursion: numba's on-disk cache cannot hold a self-recursive function (it crashes on reload)."""
    if n <= 128:
        return float(_block_sum(a, 0, n))
    los = np.empty(64, np.int64)
    ns = np.empty(64, np.int64)
    stage = np.zeros(64, np.int64)
    values = np.empty(64)
    top, held = 0, 0
    los[0], ns[0], stage[0] = 0, n, 0
    while top >= 0:
        lo, m = los[top], ns[top]
        if m <= 128:
            values[held] = _block_sum(a, lo, m)
            held += 1
            top -= 1
            continue
        half = m // 2
        half -= half % 8
        if stage[top] == 0:
            stage[top] = 1
            top += 1
            los[top], ns[top], stage[top] = lo, half, 0
        elif stage[top] == 1:
            stage[top] = 2
            top += 1
            los[top], ns[top], stage[top] = lo + half, m - half, 0
        else:
            held -= 1
            values[held - 1] = values[held - 1] + values[held]
            top -= 1
    return float(values[0])


@_jit(cache=True, nogil=True)
def _rows_of(merchants: Any, items: Any, order: Any, ptr: Any) -> tuple[Any, Any]:
    """ranking.ranker.RankRequest.rows_of: (rows, index into `merchants`) of the rooms of those merchants,
    through the candidate set's CSR over merchant positions `ptr`, or (`ptr` empty: a retrieved subset
    of many merchants) binary searches in the rooms sorted by merchant (`order`)."""
    k = merchants.shape[0]
    lo = np.empty(k, np.int64)
    counts = np.empty(k, np.int64)
    if ptr.shape[0] > 0:
        end = ptr.shape[0] - 1
        for j in range(k):
            m = merchants[j]
            at = m + 1 if (m >= -1 and m < end - 1) else end
            lo[j] = ptr[at]
            counts[j] = ptr[min(at + 1, end)] - ptr[at]
    else:
        n = order.shape[0]
        for j in range(k):
            m = merchants[j]
            a, b = 0, n
            while a < b:  # first room with merchant >= m
                mid = (a + b) // 2
                if items[order[mid]] < m:
                    a = mid + 1
                else:
                    b = mid
            c, d = a, n
            while c < d:  # first room with merchant > m
                mid = (c + d) // 2
                if items[order[mid]] <= m:
                    c = mid + 1
                else:
                    d = mid
            lo[j] = a
            counts[j] = c - a
    total = 0
    for j in range(k):
        total += counts[j]
    rows = np.empty(total, np.int64)
    which = np.empty(total, np.int64)
    t = 0
    for j in range(k):
        for i in range(counts[j]):
            rows[t] = order[lo[j] + i]
            which[t] = j
            t += 1
    return rows, which


@_jit(cache=True, nogil=True)
def _history(st: Any, rows: Any, now_ms: float, all_enters: float, stat_at: Any, half_lives: Any) -> Any:
    """ranking.ranker.history_columns on the rows' statistics `st` (its columns, HISTORY_WIDTH of them)."""
    r = st.shape[0]
    e_, w_, d_, s_, p_, f_, i_, c_, l_ = (
        stat_at[0],
        stat_at[1],
        stat_at[2],
        stat_at[3],
        stat_at[4],
        stat_at[5],
        stat_at[6],
        stat_at[7],
        stat_at[8],
    )
    out = np.empty((r, HISTORY_WIDTH))
    for j in range(r):
        enters = st[j, e_]
        logged = (
            enters,
            st[j, w_],
            st[j, d_] * (1 / 60.0),
            st[j, s_],
            st[j, p_],
            st[j, i_] + enters * -1.0,
        )
        for c in range(6):
            out[j, c] = math.log1p(max(logged[c], 0.0))
        out[j, 6] = 1.0 if enters > 0 else 0.0
        out[j, 7] = 1.0 if st[j, f_] > 0 else 0.0
        out[j, 8] = 1.0 if st[j, c_] > 0 else 0.0
        last = st[j, l_]
        age = max(now_ms - last, 0.0)
        seen = 1.0 if last > 0 else 0.0
        out[j, 9] = math.pow(0.5, age / half_lives[0]) * seen
        out[j, 10] = math.pow(0.5, age / half_lives[1]) * seen
        out[j, 11] = 0.0
        out[j, 12] = enters / all_enters if all_enters > 0 else 0.0
        out[j, 13] = 1.0 if (enters - st[j, s_]) > 0 else 0.0
    # Rank among the live rooms of entered merchants: by enters, then watches, then recency, then row.
    pos = np.empty(r, np.int64)
    m = 0
    for j in range(r):
        if st[j, e_] > 0:
            # Insertion sort: a handful of rows.
            k = m
            while k > 0:
                q = pos[k - 1]
                a_e, b_e = st[q, e_], st[j, e_]
                if a_e != b_e:
                    before = a_e > b_e
                elif st[q, w_] != st[j, w_]:
                    before = st[q, w_] > st[j, w_]
                elif st[q, l_] != st[j, l_]:
                    before = st[q, l_] > st[j, l_]
                else:
                    before = rows[q] <= rows[j]
                if before:
                    break
                pos[k] = q
                k -= 1
            pos[k] = j
            m += 1
    for k in range(m):
        out[pos[k], 11] = 1.0 / (1.0 + k)
    return out


@_jit(cache=True, nogil=True)
def viewer_part(
    out: Any,
    items: Any,
    order: Any,
    ptr: Any,
    pair_slot: Any,
    lightfm: Any,
    lightfm_sums: Any,
    h_merchants: Any,
    h_stats: Any,
    category: Any,
    band: Any,
    n_categories: int,
    n_bands: int,
    cov_indptr: Any,
    cov_indices: Any,
    cov_data: Any,
    session_lightfm: Any,
    session_category: Any,
    session_skip: Any,
    swiped_merchants: Any,
    w: Any,
    feature_at: Any,
    history_at: Any,
    stat_at: Any,
    half_lives: Any,
    now_ms: float,
    n_features: int,
) -> tuple[Any, Any, Any, Any, Any]:
    """Add the viewer part to `out` (a copy of the room part, float32) in place.

    `lightfm`: the raw LightFM scores (float32, empty: not personal); `lightfm_sums`: (sum, sum of
    squares) of them over every room, or (count, sum, sum of squares) over every live room the viewer
    never entered (a retrieved subset's moments). `session_*`: this session's dense column and
    category tables (empty: none); `swiped_merchants`: sorted positions. `w`: the weights that score
    every room. Returns (the rooms of the entered merchants, the float32 feature rows of those rooms
    without their room columns — for a two-part ranker's rescoring —, the favourite rooms, the swiped
    rooms, the history rows' index of the entered rooms)."""
    n = out.shape[0]
    n_known = category.shape[0]
    hn = h_merchants.shape[0]
    e_, d_ = stat_at[0], stat_at[2]
    # The rooms of the viewer's merchants and their statistics.
    rows, which = _rows_of(h_merchants, items, order, ptr)
    r = rows.shape[0]
    st = np.empty((r, h_stats.shape[1]))
    for j in range(r):
        st[j, :] = h_stats[which[j], :]
    entered = np.empty(r, np.int64)
    n_entered = 0
    for j in range(r):
        if st[j, e_] > 0:
            entered[n_entered] = j
            n_entered += 1

    # LightFM, standardised over the rooms the viewer never entered.
    has_lightfm = False
    mean32 = np.float32(0.0)
    inv32 = np.float32(0.0)
    if lightfm.shape[0] > 0:
        if lightfm_sums.shape[0] == 3:
            count = int(lightfm_sums[0])
            total, squares = lightfm_sums[1], lightfm_sums[2]
        else:
            left = np.empty(n_entered)
            squares_left = 0.0
            for k in range(n_entered):
                value = np.float64(lightfm[rows[entered[k]]])
                left[k] = value
                squares_left += value * value
            count = n - n_entered
            total = lightfm_sums[0] - _pairwise_sum(left, n_entered)
            squares = lightfm_sums[1] - squares_left
        if count >= 2:
            mean = total / count
            var = squares / count - mean * mean
            if var > 1e-18:
                has_lightfm = True
                mean32 = np.float32(mean)
                inv32 = np.float32(1.0 / math.sqrt(var))
    entered_room = np.zeros(0, np.bool_)
    if has_lightfm:
        entered_room = np.zeros(n, np.bool_)
        for k in range(n_entered):
            entered_room[rows[entered[k]]] = True

    # Affinity (category, price band) and co-visitation from the history's dwell.
    by_cat = np.zeros(n_categories)
    by_band = np.zeros(n_bands)
    aff_cat = np.zeros(n_categories)
    aff_band = np.zeros(n_bands)
    has_affinity = False
    cov_pos = np.zeros(0, np.int64)
    cov_val = np.zeros(0)
    if hn > 0:
        known_watched = np.empty(hn)
        nk = 0
        for j in range(hn):
            m = h_merchants[j]
            if m >= 0 and m < n_known:
                known_watched[nk] = h_stats[j, d_]
                nk += 1
        total = _pairwise_sum(known_watched, nk)
        if total > 0:
            has_affinity = True
            for j in range(hn):
                m = h_merchants[j]
                known = m >= 0 and m < n_known
                share = (h_stats[j, d_] if known else 0.0) / total
                safe = m if known else 0
                c = category[safe]
                aff_cat[max(c, 0)] += share * (1.0 if c >= 0 else 0.0)
                b = band[safe]
                aff_band[max(b, 0)] += share * (1.0 if b >= 0 else 0.0)
            wc, wb = w[feature_at[3]], w[feature_at[4]]
            for c in range(n_categories):
                by_cat[c] = 0.0 + wc * aff_cat[c]
            for b in range(n_bands):
                by_band[b] = 0.0 + wb * aff_band[b]
            n_cov = cov_indptr.shape[0] - 1
            if n_cov > 0:
                n_at = 0
                for j in range(hn):
                    m = h_merchants[j]
                    if m >= 0 and m < n_known and h_stats[j, d_] > 0:
                        n_at += cov_indptr[m + 1] - cov_indptr[m]
                if n_at > 0:
                    nbrs = np.empty(n_at, np.int64)
                    wts = np.empty(n_at)
                    t = 0
                    for j in range(hn):
                        m = h_merchants[j]
                        if m >= 0 and m < n_known and h_stats[j, d_] > 0:
                            f = math.log1p(h_stats[j, d_] / 60.0)
                            for e in range(cov_indptr[m], cov_indptr[m + 1]):
                                nbrs[t] = cov_indices[e]
                                wts[t] = f * np.float64(cov_data[e])
                                t += 1
                    by_nbr = np.argsort(nbrs, kind="mergesort")
                    cov_pos = np.empty(n_at, np.int64)
                    cov_val = np.empty(n_at)
                    u = 0
                    k = 0
                    while k < n_at:
                        p = nbrs[by_nbr[k]]
                        s = 0.0
                        while k < n_at and nbrs[by_nbr[k]] == p:
                            s += wts[by_nbr[k]]
                            k += 1
                        if s != 0:
                            cov_pos[u] = p
                            cov_val[u] = math.log1p(s)
                            u += 1
                    cov_pos = cov_pos[:u]
                    cov_val = cov_val[:u]
    has_session_cat = session_category.shape[0] > 0
    has_session_skip = session_skip.shape[0] > 0
    if has_session_cat:
        for c in range(n_categories):
            by_cat[c] += w[feature_at[5]] * session_category[c]
    if has_session_skip:
        for c in range(n_categories):
            by_cat[c] += w[feature_at[6]] * session_skip[c]
    has_cat = has_affinity or has_session_cat or has_session_skip

    # The dense pass: LightFM, then the session's LightFM column (float32, as numpy adds them).
    has_session_lightfm = session_lightfm.shape[0] > 0
    if has_lightfm or has_session_lightfm:
        w_lf = np.float32(w[feature_at[0]])
        w_slf = np.float32(w[feature_at[1]])
        for i in range(n):
            o = out[i]
            if has_lightfm:
                col = (lightfm[i] - mean32) * inv32
                if entered_room[i]:
                    col = np.float32(0.0)
                o = o + w_lf * col
            if has_session_lightfm:
                o = o + w_slf * session_lightfm[i]
            out[i] = o
    # Co-visitation, on the rooms of the neighbours it names.
    w_cov = w[feature_at[2]]
    if cov_pos.shape[0] > 0 and w_cov != 0:
        c_rows, c_which = _rows_of(cov_pos, items, order, ptr)
        for k in range(c_rows.shape[0]):
            out[c_rows[k]] += np.float32(w_cov * cov_val[c_which[k]])
    # Category and price band through one (category, band) table of float32 sums.
    if has_cat:
        stride = n_bands + 1
        for i in range(n):
            slot = pair_slot[i]
            code_c, code_b = slot // stride, slot % stride
            pair: Any = np.float32(by_cat[code_c - 1]) if code_c > 0 else np.float32(0.0)
            if has_affinity and code_b > 0:
                pair = pair + np.float32(by_band[code_b - 1])
            out[i] += pair
    # The merchants swiped away this session.
    swiped_rows = np.zeros(0, np.int64)
    if swiped_merchants.shape[0] > 0:
        swiped_rows, _ = _rows_of(swiped_merchants, items, order, ptr)
        w_sw = w[feature_at[7]]
        for k in range(swiped_rows.shape[0]):
            q = swiped_rows[k]
            out[q] = np.float32(np.float64(out[q]) + w_sw)
    # The history columns of the viewer's merchants' rooms.
    hist = np.zeros((0, HISTORY_WIDTH))
    favourites = np.zeros(0, np.int64)
    if r > 0:
        all_enters = _pairwise_sum(h_stats[:, e_].copy(), hn)
        hist = _history(st, rows, now_ms, all_enters, stat_at, half_lives)
        n_fav = 0
        for j in range(r):
            if hist[j, 13] > 0:
                n_fav += 1
        favourites = np.empty(n_fav, np.int64)
        n_fav = 0
        # Every sum from the scores before any is written, then written in order: numpy's `out[rows] +=`,
        # where a room listed twice (a merchant twice in a history) keeps the last sum.
        summed = np.empty(r, np.float32)
        for j in range(r):
            added = 0.0
            for c in range(HISTORY_WIDTH):
                added += hist[j, c] * w[history_at[c]]
            summed[j] = np.float32(np.float64(out[rows[j]]) + added)
            if hist[j, 13] > 0:
                favourites[n_fav] = rows[j]
                n_fav += 1
        for j in range(r):
            out[rows[j]] = summed[j]
    # The feature rows of the entered merchants' rooms (room columns left at 0).
    x = np.zeros((n_entered, n_features), np.float32)
    at = np.empty(n_entered, np.int64)
    stride = n_bands + 1
    for k in range(n_entered):
        j = entered[k]
        q = rows[j]
        at[k] = q
        if has_session_lightfm:
            x[k, feature_at[1]] = session_lightfm[q]
        item = items[q]
        if cov_pos.shape[0] > 0:
            a, b = 0, cov_pos.shape[0]
            while a < b:
                mid = (a + b) // 2
                if cov_pos[mid] < item:
                    a = mid + 1
                else:
                    b = mid
            if a < cov_pos.shape[0] and cov_pos[a] == item:
                x[k, feature_at[2]] = np.float32(cov_val[a])
        slot_q = pair_slot[q]
        code_c, code_b = slot_q // stride, slot_q % stride
        if has_affinity and code_c > 0:
            x[k, feature_at[3]] = np.float32(aff_cat[code_c - 1])
        if has_affinity and code_b > 0:
            x[k, feature_at[4]] = np.float32(aff_band[code_b - 1])
        if has_session_cat and code_c > 0:
            x[k, feature_at[5]] = np.float32(session_category[code_c - 1])
        if has_session_skip and code_c > 0:
            x[k, feature_at[6]] = np.float32(session_skip[code_c - 1])
        for t in range(swiped_rows.shape[0]):
            if swiped_rows[t] == q:
                x[k, feature_at[7]] = np.float32(1.0)
        for c2 in range(HISTORY_WIDTH):
            x[k, history_at[c2]] = np.float32(hist[j, c2])
    return at, x, favourites, swiped_rows, entered


@_jit(cache=True, nogil=True)
def _combine(keys: Any, stats: Any, last: int) -> tuple[Any, Any]:
    """ranking.history.combine: rows with equal key summed in their order from 0 (numpy's bincount), the
    `last` column by maximum from 0 (numpy's maximum.at); keys ascending."""
    n = keys.shape[0]
    order = np.argsort(keys, kind="mergesort")  # stable: each key's rows in their order
    groups = 0
    for k in range(n):
        if k == 0 or keys[order[k]] != keys[order[k - 1]]:
            groups += 1
    uniq = np.empty(groups, np.int64)
    out = np.zeros((groups, stats.shape[1]))
    g = -1
    for k in range(n):
        r = order[k]
        if k == 0 or keys[r] != keys[order[k - 1]]:
            g += 1
            uniq[g] = keys[r]
        for j in range(stats.shape[1]):
            if j == last:
                out[g, j] = max(out[g, j], stats[r, j])
            else:
                out[g, j] += stats[r, j]
    return uniq, out


@_jit(cache=True, nogil=True)
def history_plus_visits(
    base_merchants: Any,
    base_stats: Any,
    merchants: Any,
    enter: Any,
    dwell_ms: Any,
    ts: Any,
    stat_at: Any,
    watch_ms: float,
    swipe_ms: float,
) -> tuple[bool, Any, Any]:
    """`base.plus(history_of(...))` of a session's enters and leaves (ranking.history: the feed's visits
    since the model's round folded into the viewer's history): (changed, merchants, stats) — unchanged
    (False) when no visit names a merchant the model knows. The same sums in the same order as numpy's
    `combine`, twice (the visits' table, then base and it together)."""
    e_, w_, d_, s_, l_ = stat_at[0], stat_at[1], stat_at[2], stat_at[3], stat_at[8]
    width = base_stats.shape[1]
    known = 0
    for r in range(merchants.shape[0]):
        if merchants[r] >= 0:
            known += 1
    keys = np.empty(known, np.int64)
    rows = np.zeros((known, width))
    t = 0
    for r in range(merchants.shape[0]):
        if merchants[r] < 0:
            continue
        keys[t] = merchants[r]
        if enter[r]:
            rows[t, e_] = 1.0
            dwell = 0.0
        else:
            dwell = float(max(dwell_ms[r], 0))
            rows[t, w_] = 1.0 if dwell >= watch_ms else 0.0
            rows[t, s_] = 1.0 if dwell < swipe_ms else 0.0
        rows[t, d_] = dwell / 1000.0
        rows[t, l_] = float(ts[r])
        t += 1
    if known == 0:
        return False, base_merchants, base_stats
    visit_keys, visit_stats = _combine(keys, rows, l_)
    if base_merchants.shape[0] == 0:
        return True, visit_keys, visit_stats
    nb, nv = base_merchants.shape[0], visit_keys.shape[0]
    both_keys = np.empty(nb + nv, np.int64)
    both = np.empty((nb + nv, width))
    both_keys[:nb] = base_merchants
    both_keys[nb:] = visit_keys
    both[:nb, :] = base_stats
    both[nb:, :] = visit_stats
    merged_keys, merged = _combine(both_keys, both, l_)
    return True, merged_keys, merged


_warmed = False


def compiled_signatures() -> int:
    """How many versions of the kernel numba has compiled in this process (the feed's path makes one)."""
    return len(cast(Any, viewer_part).signatures)


def warm() -> None:
    """Compile (or load from numba's on-disk cache) the kernel for the feed's argument types once per
    process, so that no page pays it (the feed's rank stage calls it when it is built)."""
    global _warmed
    if _warmed:
        return
    items = np.array([0, 1], dtype=np.int64)
    stats = np.zeros((1, len(STATS)))
    stats[0, 0] = 1.0
    cov = (np.array([0, 1, 1], dtype=np.int64), np.array([1], dtype=np.int64), np.ones(1))
    for history in (np.zeros(0, dtype=np.int64), np.array([0], dtype=np.int64)):
        viewer_part(
            np.zeros(2, dtype=np.float32),
            items,
            np.array([0, 1], dtype=np.int64),
            np.array([0, 0, 1, 2], dtype=np.int64),
            np.array([0, 0], dtype=np.int64),
            np.zeros(2, dtype=np.float32),
            np.zeros(2),
            history,
            stats[: history.shape[0]],
            np.zeros(2, dtype=np.int64),
            np.zeros(2, dtype=np.int64),
            1,
            1,
            *cov,
            np.zeros(0, dtype=np.float32),
            np.zeros(0),
            np.zeros(0),
            np.zeros(0, dtype=np.int64),
            np.zeros(40),
            np.arange(len(KERNEL_FEATURES), dtype=np.int64),
            np.arange(HISTORY_WIDTH, dtype=np.int64),
            np.arange(len(STATS), dtype=np.int64),
            np.ones(2),
            0.0,
            40,
        )
    history_plus_visits(
        np.array([0], dtype=np.int64),
        stats[:1],
        np.array([0, -1], dtype=np.int64),
        np.array([True, False]),
        np.array([0, 40_000], dtype=np.int64),
        np.array([1, 2], dtype=np.int64),
        np.arange(len(STATS), dtype=np.int64),
        30_000.0,
        3_000.0,
    )
    _warmed = True
