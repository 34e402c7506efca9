"""Evaluation on the availability-aware protocol (Rappaz, McAuley & Aberer, RecSys 2021).

Owns the chronological replay of a log that, for each held-out `enter` at time t, ranks only the
rooms live at t and not already shown earlier in the session, for every method (the ranker —
exactly `ranking.blend` —, LightFM alone, the ranker without LightFM, POP, REP, random), and
reports HR@1/5/10 and NDCG@10 overall, on repeat and on new targets; the tuning of blend weights on
a validation window; and cold-start AUC for merchants held out of training.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field, replace

import numpy as np

from ranking.blend import COLUMNS, LIGHTFM_COLUMNS, RANGES, BlendWeights, blend_columns, weight_vector
from ranking.dataset import ENTER, IMPRESSION, LEAVE, InteractionLog
from ranking.features import RoomFeatures
from ranking.scorer import Scorer, session_cosine, watch_weight

NEW_WEIGHT = 1.0
METHODS: tuple[str, ...] = ("ranker", "lightfm", "ranker_no_lightfm", "pop", "rep", "random")


@dataclass
class Schedule:
    """Rooms and when they were live, with merchant and category per room (index-aligned)."""

    room_merchant: np.ndarray  # index into the log's merchant_ids
    room_start: np.ndarray
    room_end: np.ndarray
    room_category: np.ndarray  # small int per room
    room_features: Sequence[RoomFeatures]

    def __post_init__(self) -> None:
        self._order = np.argsort(self.room_start, kind="stable")
        self._sorted_start = self.room_start[self._order]

    def live_at(self, t: int) -> np.ndarray:
        hi = int(np.searchsorted(self._sorted_start, t, side="right"))
        cand = self._order[:hi]
        return cand[self.room_end[cand] > t]


@dataclass
class Targets:
    """Per held-out enter: candidate signals, concatenated; `offsets` delimit targets."""

    columns: np.ndarray  # (N, len(COLUMNS)) blend columns
    signals: np.ndarray  # (N, len(SIGNALS)) the blend's raw inputs, for re-deriving columns
    room: np.ndarray  # (N,) candidate room index
    pop: np.ndarray  # (N,) global enter counts up to t (POP)
    rep: np.ndarray  # (N,) viewer's enter counts per merchant up to t (REP)
    lightfm: np.ndarray  # (N,) raw LightFM score
    offsets: np.ndarray  # (T+1,)
    target: np.ndarray  # (T,) index of the entered room within its segment
    repeat: np.ndarray  # (T,) bool: merchant watched by this viewer before t
    held_out: np.ndarray  # (T,) bool: merchant held out of training
    known_viewer: np.ndarray  # (T,) bool: the viewer was in training
    personal: np.ndarray  # (T,) bool: the scorer had a vector for the viewer (else popularity fallback)
    event: np.ndarray  # (T,) row of the target enter in the log

    def __len__(self) -> int:
        return int(self.target.shape[0])


# `blend`'s inputs in argument order (Targets.signals columns).
SIGNALS: tuple[str, ...] = (
    "lightfm",
    "repeat_dwell_s",
    "repeat_skips",
    "popularity",
    "session_dwell_share",
    "session_skip_share",
    "session_lightfm",
)


@dataclass
class _Viewer:
    dwell: dict[int, tuple[float, int]] = field(default_factory=dict)  # merchant -> (decayed s, last ts)
    skips: dict[int, tuple[float, int]] = field(default_factory=dict)
    count: dict[int, int] = field(default_factory=dict)


@dataclass
class _Session:
    shown: set[int] = field(default_factory=set)
    cat_dwell: np.ndarray = field(default_factory=lambda: np.zeros(0))
    cat_skip: np.ndarray = field(default_factory=lambda: np.zeros(0))
    watched: np.ndarray | None = None  # dwell-weighted sum of unit item vectors watched this session


def _decay(value: float, last: int, now: int, half_life_ms: float) -> float:
    return value * 0.5 ** ((now - last) / half_life_ms)


def collect_targets(
    log: InteractionLog,
    schedule: Schedule,
    scorer: Scorer,
    windows: Sequence[tuple[int, int]],
    max_targets: Sequence[int],
    weights: BlendWeights,
    held_out: set[int] | None = None,
    seed: int = 0,
) -> list[Targets]:
    """Replay `log` in time order; for sampled enters inside each window, record every method's signals."""
    rng = np.random.default_rng(seed)
    held_out = held_out or set()
    n_m = len(log.merchant_ids)
    n_cat = int(schedule.room_category.max()) + 1
    end = max(w[1] for w in windows)
    # Sample targets per window up front (deterministic given seed).
    enter_idx = np.flatnonzero((log.type == ENTER) & (log.ts < end))
    chosen: dict[int, int] = {}
    for k, ((lo, hi), cap) in enumerate(zip(windows, max_targets, strict=True)):
        inside = enter_idx[(log.ts[enter_idx] >= lo) & (log.ts[enter_idx] < hi)]
        if inside.size > cap:
            inside = np.sort(rng.choice(inside, cap, replace=False))
        chosen.update(dict.fromkeys(inside.tolist(), k))
    # Impressions that were swiped away (no enter of that room in that session).
    entered_pairs = set(
        zip(log.session[log.type == ENTER].tolist(), log.room[log.type == ENTER].tolist(), strict=True)
    )

    room_item = np.fromiter(
        (scorer.merchant_position(f) for f in schedule.room_features),
        dtype=np.int64,
        count=len(schedule.room_features),
    )
    items, item_bias, item_pop = scorer._items, scorer._bias, scorer._pop
    unit_items = scorer.unit_items()
    pop_total = np.zeros(n_m)
    pop_val = np.zeros(n_m)
    pop_last = np.zeros(n_m, dtype=np.int64)
    pop_hl = weights.popularity_half_life_min * 60_000.0
    rep_hl = weights.repeat_half_life_h * 3_600_000.0
    viewers: dict[int, _Viewer] = {}
    sessions: dict[int, _Session] = {}
    cand_of_merchant = np.full(n_m, -1, dtype=np.int64)
    out: list[dict[str, list[np.ndarray] | list[int] | list[bool]]] = [
        {
            k: []
            for k in (
                "columns",
                "signals",
                "room",
                "pop",
                "rep",
                "lightfm",
                "target",
                "repeat",
                "held_out",
                "known",
                "personal",
                "event",
            )
        }
        for _ in windows
    ]
    mask_idx = np.flatnonzero(np.isin(log.type, [IMPRESSION, ENTER, LEAVE]) & (log.ts < end))
    typ, vie, ses, roo, mer, tss, dwl = (
        a[mask_idx].tolist()
        for a in (log.type, log.viewer, log.session, log.room, log.merchant, log.ts, log.dwell_ms)
    )
    pos_list = mask_idx.tolist()
    for i in range(len(pos_list)):
        t_type, v, s, r, m, t = typ[i], vie[i], ses[i], roo[i], mer[i], tss[i]
        sess = sessions.get(s)
        if sess is None:
            sess = sessions[s] = _Session(cat_dwell=np.zeros(n_cat), cat_skip=np.zeros(n_cat))
        if t_type == IMPRESSION:
            sess.shown.add(r)
            if (s, r) not in entered_pairs:
                sess.cat_skip[schedule.room_category[r]] += 1
                hist = viewers.setdefault(v, _Viewer())
                val, last = hist.skips.get(m, (0.0, t))
                hist.skips[m] = (_decay(val, last, t, rep_hl) + 1.0, t)
            continue
        if t_type == LEAVE:
            d = dwl[i] / 1000.0
            sess.cat_dwell[schedule.room_category[r]] += d
            wv = watch_weight(d) * unit_items[room_item[r]]
            sess.watched = wv if sess.watched is None else sess.watched + wv
            hist = viewers.setdefault(v, _Viewer())
            val, last = hist.dwell.get(m, (0.0, t))
            hist.dwell[m] = (_decay(val, last, t, rep_hl) + d, t)
            continue
        # ENTER: maybe a target; then update popularity and counts.
        k = chosen.get(pos_list[i])
        if k is not None:
            live = schedule.live_at(t)
            shown = sess.shown - {r}
            if shown:
                live = live[~np.isin(live, np.fromiter(shown, dtype=np.int64))]
            where = np.flatnonzero(live == r)
            if where.size and live.size > 1:
                lm = schedule.room_merchant[live]
                hist = viewers.get(v, _Viewer())
                cand_of_merchant[lm] = np.arange(lm.size)
                rep_dwell = np.zeros(lm.size)
                rep_skip = np.zeros(lm.size)
                rep_cnt = np.zeros(lm.size)
                for mm, (val, last) in hist.dwell.items():
                    j = cand_of_merchant[mm]
                    if j >= 0:
                        rep_dwell[j] = _decay(val, last, t, rep_hl)
                for mm, (val, last) in hist.skips.items():
                    j = cand_of_merchant[mm]
                    if j >= 0:
                        rep_skip[j] = _decay(val, last, t, rep_hl)
                for mm, c in hist.count.items():
                    j = cand_of_merchant[mm]
                    if j >= 0:
                        rep_cnt[j] = c
                cand_of_merchant[lm] = -1
                pop_now = pop_val[lm] * np.power(0.5, (t - pop_last[lm]) / pop_hl)
                ip = room_item[live]
                user = scorer.user_vector(log.viewer_ids[v])
                lf = items[ip] @ user[0] + item_bias[ip] if user is not None else item_pop[ip].copy()
                cats = schedule.room_category[live]
                dsum, ssum = sess.cat_dwell.sum(), sess.cat_skip.sum()
                sd = sess.cat_dwell[cats] / dsum if dsum > 0 else np.zeros(lm.size)
                sk = sess.cat_skip[cats] / ssum if ssum > 0 else np.zeros(lm.size)
                sl = session_cosine(unit_items[ip], sess.watched)
                o = out[k]
                o["columns"].append(
                    blend_columns(lf, rep_dwell, rep_skip, pop_now, sd, sk, sl, user is not None)
                )  # type: ignore[arg-type]
                o["signals"].append(np.stack([lf, rep_dwell, rep_skip, pop_now, sd, sk, sl], axis=1))  # type: ignore[arg-type]
                o["room"].append(live)  # type: ignore[arg-type]
                o["pop"].append(pop_total[lm].copy())  # type: ignore[arg-type]
                o["rep"].append(rep_cnt)  # type: ignore[arg-type]
                o["lightfm"].append(lf.astype(np.float32))  # type: ignore[arg-type]
                o["target"].append(int(where[0]))  # type: ignore[arg-type]
                o["repeat"].append(hist.count.get(m, 0) > 0)  # type: ignore[arg-type]
                o["held_out"].append(m in held_out)  # type: ignore[arg-type]
                o["known"].append(user is not None and scorer.is_known(log.viewer_ids[v]))  # type: ignore[arg-type]
                o["personal"].append(user is not None)  # type: ignore[arg-type]
                o["event"].append(pos_list[i])  # type: ignore[arg-type]
        pop_val[m] = pop_val[m] * 0.5 ** ((t - pop_last[m]) / pop_hl) + 1.0
        pop_last[m] = t
        pop_total[m] += 1
        hist = viewers.setdefault(v, _Viewer())
        hist.count[m] = hist.count.get(m, 0) + 1
    result = []
    for o in out:
        sizes = [len(x) for x in o["pop"]]  # type: ignore[arg-type]
        result.append(
            Targets(
                columns=np.concatenate(o["columns"]) if sizes else np.zeros((0, len(COLUMNS)), np.float32),  # type: ignore[arg-type]
                signals=np.concatenate(o["signals"]) if sizes else np.zeros((0, len(SIGNALS))),  # type: ignore[arg-type]
                room=np.concatenate(o["room"]) if sizes else np.zeros(0, np.int64),  # type: ignore[arg-type]
                pop=np.concatenate(o["pop"]) if sizes else np.zeros(0),  # type: ignore[arg-type]
                rep=np.concatenate(o["rep"]) if sizes else np.zeros(0),  # type: ignore[arg-type]
                lightfm=np.concatenate(o["lightfm"]) if sizes else np.zeros(0),  # type: ignore[arg-type]
                offsets=np.concatenate([[0], np.cumsum(sizes)]).astype(np.int64),
                target=np.array(o["target"], dtype=np.int64),
                repeat=np.array(o["repeat"], dtype=bool),
                held_out=np.array(o["held_out"], dtype=bool),
                known_viewer=np.array(o["known"], dtype=bool),
                personal=np.array(o["personal"], dtype=bool),
                event=np.array(o["event"], dtype=np.int64),
            )
        )
    return result


def ranks(scores: np.ndarray, t: Targets, rng: np.random.Generator) -> np.ndarray:
    """0-based rank of each target among its candidates; ties broken at random."""
    jitter = scores.astype(np.float64) + rng.random(scores.shape[0]) * 1e-7 * (1.0 + np.abs(scores).max())
    target_pos = t.offsets[:-1] + t.target
    seg = np.repeat(np.arange(len(t)), np.diff(t.offsets))
    above = jitter > jitter[target_pos][seg]
    return np.add.reduceat(above.astype(np.int64), t.offsets[:-1]) if len(t) else np.zeros(0, np.int64)


def metrics_from_ranks(r: np.ndarray) -> dict[str, float]:
    if r.size == 0:
        return {
            "n": 0,
            "hr1": float("nan"),
            "hr5": float("nan"),
            "hr10": float("nan"),
            "ndcg10": float("nan"),
        }
    ndcg = np.where(r < 10, 1.0 / np.log2(r + 2.0), 0.0)
    return {
        "n": int(r.size),
        "hr1": float((r < 1).mean()),
        "hr5": float((r < 5).mean()),
        "hr10": float((r < 10).mean()),
        "ndcg10": float(ndcg.mean()),
    }


def method_scores(
    t: Targets, method: str, w: BlendWeights, w_no_lightfm: BlendWeights, rng: np.random.Generator
) -> np.ndarray:
    if method == "ranker":
        return t.columns @ weight_vector(w)
    if method == "ranker_no_lightfm":
        return t.columns @ weight_vector(w_no_lightfm)
    if method == "lightfm":
        return t.lightfm
    if method == "pop":
        return t.pop
    if method == "rep":
        return t.rep
    return rng.random(t.pop.shape[0])


def evaluate(
    t: Targets, w: BlendWeights, w_no_lightfm: BlendWeights, seed: int = 0
) -> dict[str, dict[str, dict[str, float]]]:
    """{method: {overall|repeat|new: {n, hr1, hr5, hr10, ndcg10}}}."""
    rng = np.random.default_rng(seed)
    out: dict[str, dict[str, dict[str, float]]] = {}
    for method in METHODS:
        r = ranks(method_scores(t, method, w, w_no_lightfm, rng), t, rng)
        out[method] = {
            "overall": metrics_from_ranks(r),
            "repeat": metrics_from_ranks(r[t.repeat]),
            "new": metrics_from_ranks(r[~t.repeat]),
        }
    return out


def _new_hits(t: Targets, w: BlendWeights) -> np.ndarray:
    r = ranks(t.columns @ weight_vector(w), t, np.random.default_rng(0))
    return (r[~t.repeat] < 5).astype(np.float64)


def ablation_gain(
    t: Targets, w: BlendWeights, w_no_lightfm: BlendWeights, seed: int = 0, resamples: int = 2_000
) -> dict[str, float]:
    """What LightFM adds on new targets: HR@5 of the ranker minus its ablation, paired bootstrap 95 % CI.

    Both rank the same targets, so the difference is judged per target (paired), which is far
    tighter than comparing two independent HR@5 values.
    """
    a, b = _new_hits(t, w), _new_hits(t, w_no_lightfm)
    if a.size == 0:
        return {
            "gain": float("nan"),
            "ci_low": float("nan"),
            "ci_high": float("nan"),
            "relative": float("nan"),
        }
    diff = a - b
    rng = np.random.default_rng(seed)
    boots = np.array([diff[rng.integers(0, diff.size, diff.size)].mean() for _ in range(resamples)])
    return {
        "gain": float(diff.mean()),
        "ci_low": float(np.quantile(boots, 0.025)),
        "ci_high": float(np.quantile(boots, 0.975)),
        "relative": float(a.mean() / max(b.mean(), 1e-12) - 1.0),
        "new_targets": int(a.size),
    }


def tradeoff_curve(
    t: Targets,
    w: BlendWeights,
    w_no_lightfm: BlendWeights,
    grid: Sequence[float] = tuple(np.geomspace(0.1, 10.0, 9)),
) -> list[dict[str, float]]:
    """Overall and new HR@5 as the favourites weight `repeat` varies, for the ranker and its ablation
    at the same `repeat`: shows LightFM's gain on new targets is not one point of the trade-off."""
    rows = []
    for g in grid:
        row: dict[str, float] = {"repeat": round(float(g), 4)}
        for name, base in (("ranker", w), ("ranker_no_lightfm", w_no_lightfm)):
            r = ranks(t.columns @ weight_vector(replace(base, repeat=float(g))), t, np.random.default_rng(0))
            row[f"hr5_{name}"] = round(float((r < 5).mean()), 4)
            row[f"hr5_new_{name}"] = round(float((r[~t.repeat] < 5).mean()), 4)
        rows.append(row)
    return rows


def cold_auc(t: Targets) -> tuple[float, int]:
    """Mean per-target AUC of the LightFM score for targets whose merchant was held out of training."""
    aucs = []
    for i in np.flatnonzero(t.held_out & t.known_viewer).tolist():
        seg = t.lightfm[t.offsets[i] : t.offsets[i + 1]]
        s = seg[t.target[i]]
        others = np.delete(seg, t.target[i])
        aucs.append(((others < s).sum() + 0.5 * (others == s).sum()) / max(others.size, 1))
    return (float(np.mean(aucs)) if aucs else float("nan")), len(aucs)


def _objective(t: Targets, w: BlendWeights, rng: np.random.Generator, new_weight: float) -> float:
    r = ranks(t.columns @ weight_vector(w), t, rng)
    overall = metrics_from_ranks(r)
    new = metrics_from_ranks(r[~t.repeat])
    return overall["hr5"] + overall["ndcg10"] + new_weight * new["hr5"]


def _discovery_objective(t: Targets, w: BlendWeights, rng: np.random.Generator) -> float:
    """HR@5 + NDCG@10 of new targets ranked among the discovery candidates only (never-watched merchants)."""
    discovery = t.signals[:, 1] <= 0
    scores = t.columns @ weight_vector(w)
    # Favourites sink below every discovery candidate (just below: `ranks` jitters by score scale).
    scores = np.where(discovery, scores, float(scores.min()) - 1.0) if scores.size else scores
    r = ranks(scores, t, rng)
    keep = ~t.repeat & discovery[t.offsets[:-1] + t.target]
    m = metrics_from_ranks(r[keep])
    return m["hr5"] + m["ndcg10"] if m["n"] else 0.0


# Columns that order the discovery candidates (tuned in stage 1); `repeat` is tuned in stage 2.
DISCOVERY_COLUMNS: tuple[str, ...] = tuple(c for c in COLUMNS if c != "repeat")
SEARCH_RANGES: dict[str, tuple[float, float]] = {
    "lightfm": (0.0, 3.0),
    "repeat_skip": (0.0, 2.0),
    "popularity": (0.0, 3.0),
    "session_category": (0.0, 6.0),
    "session_skip": (0.0, 4.0),
    "session_lightfm": (0.0, 4.0),
}
DISCOVERY_SCALE = 0.5
REPEAT_GRID = np.geomspace(0.05, 10.0, 31)


def tune_weights(
    t: Targets,
    base: BlendWeights,
    use_lightfm: bool = True,
    trials: int = 150,
    seed: int = 0,
    new_weight: float = NEW_WEIGHT,
) -> tuple[BlendWeights, float]:
    """Two stages on the validation targets (never the test day); returns the weights and stage 2's score.

    1. How to order what the viewer has never watched: random search plus coordinate refinement
       of the discovery weights on HR@5 + NDCG@10 of new targets ranked among the discovery
       candidates alone. That objective ignores scale, so the weights are then scaled to sum
       `DISCOVERY_SCALE` (small enough that the best `repeat` falls inside its range).
    2. How many favourites open the page: the `repeat` weight on a grid, on HR@5 + NDCG@10
       overall plus `new_weight` × HR@5 on new targets.

    Splitting the search keeps the ablation fair and stable: with and without LightFM, the
    discovery order is the best each can do, and the favourites/discovery trade-off is then
    chosen by the same overall objective. Without LightFM (the ablation) every column that comes
    from the model is held at 0.
    """
    rng = np.random.default_rng(seed)
    fixed = {
        "repeat_half_life_h": base.repeat_half_life_h,
        "popularity_half_life_min": base.popularity_half_life_min,
    }

    def make(v: dict[str, float], repeat: float = 0.0) -> BlendWeights:
        if not use_lightfm:
            v = {**v, **dict.fromkeys(LIGHTFM_COLUMNS, 0.0)}
        return BlendWeights(**v, repeat=repeat, **fixed)

    def stage1(v: dict[str, float]) -> float:
        return _discovery_objective(t, make(v), np.random.default_rng(seed))

    best_v = {c: getattr(base, c) for c in DISCOVERY_COLUMNS}
    best = stage1(best_v)
    for _ in range(trials):
        v = {c: float(rng.uniform(*SEARCH_RANGES[c])) for c in DISCOVERY_COLUMNS}
        score = stage1(v)
        if score > best:
            best, best_v = score, v
    for _ in range(2):
        for c in DISCOVERY_COLUMNS:
            if not use_lightfm and c in LIGHTFM_COLUMNS:
                continue
            for factor in (0.0, 0.5, 0.75, 1.25, 1.5):
                v = {**best_v, c: best_v[c] * factor}
                score = stage1(v)
                if score > best:
                    best, best_v = score, v
    total = sum(best_v[c] for c in DISCOVERY_COLUMNS if use_lightfm or c not in LIGHTFM_COLUMNS)
    best_v = {c: x * DISCOVERY_SCALE / total if total > 0 else x for c, x in best_v.items()}
    scores = [
        _objective(t, make(best_v, float(g)), np.random.default_rng(seed), new_weight) for g in REPEAT_GRID
    ]
    k = int(np.argmax(scores))
    return make(best_v, float(REPEAT_GRID[k])), float(scores[k])


RANGE_MAX = {c: RANGES[c][1] for c in COLUMNS}
