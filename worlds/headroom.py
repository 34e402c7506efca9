"""How much discovery a world leaves to learn: oracle orders of the never-watched live rooms.

Issue 13 asks the report to say *why* LightFM adds nothing where it adds nothing: the training (signal,
features, negatives) or the world itself. The simulator knows what no model can read from the log — each
viewer's true taste vector, the session's intent, every broadcast's buzz, and the logging feed that chose
what was shown — so on every new test target it can rank the never-watched live rooms by that truth and
say how far an ordering could go, beside what the ranker, LightFM alone and popularity reach on the same
targets, each by its own score order among the same rooms (no page: the same rule for every method).

The oracles (scores per candidate room; `oracle_methods`):

- `oracle_taste`: the true viewer-merchant taste match (`v_taste . m_latent / match_scale`, what
  `stay_utility` weighs by `w_match`) — the affinity LightFM's embeddings are meant to learn.
- `oracle_affinity`: everything of the (viewer, merchant) pair the choice model reads and a log could
  in principle teach: taste, the merchant's lasting appeal, price-band fit and the viewer's familiarity
  (prior favourites included), at the choice model's own weights — no session intent, no buzz.
- `oracle_choice`: the simulator's choice model itself — `simulator.engine.stay_utility` at the target's
  moment: the above plus the session's intent category and the room's buzz now (live popularity folded
  in as the viewer's choice folds it in).
- `oracle_logged`: the probability that the step *shows and keeps* the room: the logging policy that
  made the log (following tab by affinity, else the feed's softmax over popularity, category, follow and
  buzz with its uniform exploration) times the choice model's stay probability. This is the ceiling of
  the offline protocol on logged targets, which rewards what the logging feed showed as much as taste.
- `ranker_true_taste`: the ranker without LightFM's columns plus the true taste at the choice model's
  weight — what a LightFM column that had learned taste perfectly could add to the ranker (its listwise
  softmax score is on the log-odds scale the choice model's utility is on; an approximation).

The swipe formula is exact for the swipe interface; for `grid` (a page of six cards chosen by the same
logits) `oracle_logged` uses the same single-pick formula, an approximation stated in the report.
"""

from __future__ import annotations

import zlib
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from ranking.dataset import InteractionLog
from ranking.evaluation import Method, rank_of
from ranking.replay import Target
from simulator import Marketplace
from simulator.engine import RoomSignals, band_fit, stay_utility
from simulator.world import hotness_on, quality_on, room_buzz

DAY_MS = 86_400_000

ORACLES: tuple[str, ...] = ("oracle_taste", "oracle_affinity", "oracle_choice", "oracle_logged")


class Truth:
    """The simulator's ground truth at a test target: signals of every candidate room for the target's
    viewer and session at the enter's moment (`simulator.engine.RoomSignals`), and the logging policy."""

    def __init__(self, market: Marketplace, log: InteractionLog) -> None:
        self.market = market
        self.world = market.world
        self.config = market.config
        self.log = log
        self.sessions = market.session_table
        self._cache: dict[int, tuple[RoomSignals, np.ndarray]] = {}

    def at(self, t: Target) -> tuple[RoomSignals, np.ndarray]:
        """The candidates' signals (follow_tab 0) and the viewer's affinity to each candidate's merchant."""
        kept = self._cache.get(t.event)
        if kept is not None:
            return kept
        w, c = self.world, self.config
        v = int(t.viewer)
        ts = int(self.log.ts[t.event])
        session = int(self.log.session[t.event])
        day = (ts - c.start_ms) // DAY_MS
        rooms = np.asarray(t.rooms, dtype=np.int64)
        merchants = w.r_merchant[rooms]
        match = (w.m_latent[merchants] @ w.v_taste[v]) / w.match_scale
        fav_m, fav_a = w.fav_at_day.get(int(day), (w.fav_m, w.fav_a))
        affinity = np.zeros(rooms.size)
        for m, a in zip(fav_m[v].tolist(), fav_a[v].tolist(), strict=True):
            if m >= 0:
                affinity[merchants == m] += a
        signals = RoomSignals(
            match=np.asarray(match, dtype=np.float64),
            quality=np.asarray(quality_on(w, int(day))[merchants], dtype=np.float64),
            intent=(w.m_cat[merchants] == self.sessions.intent[session]).astype(np.float64),
            bandfit=band_fit(np.full(rooms.size, w.v_band[v]), w.m_band[merchants]).astype(np.float64),
            familiarity=affinity,
            follow_tab=np.zeros(rooms.size),
            buzz=np.asarray(room_buzz(w, rooms, np.full(rooms.size, ts)), dtype=np.float64),
        )
        self._cache = {t.event: (signals, affinity)}  # one target at a time: every method reads it
        return signals, affinity

    def taste(self, t: Target) -> np.ndarray:
        return self.at(t)[0].match

    def affinity(self, t: Target) -> np.ndarray:
        s, _ = self.at(t)
        c = self.config
        out: np.ndarray = (
            c.w_match * s.match
            + c.w_quality * s.quality
            + c.w_band * s.bandfit
            + c.w_familiar * np.log1p(s.familiarity)
        )
        return out

    def choice(self, t: Target) -> np.ndarray:
        return stay_utility(self.world, self.at(t)[0])

    def logged(self, t: Target) -> np.ndarray:
        """log P(a step shows the room and the viewer stays), under the logging policy of
        simulator.engine.run_sessions: following tab (a live favourite, by affinity) with
        `follow_tab_prob` when one is live, else the feed's softmax with `feed_explore` uniform."""
        s, affinity = self.at(t)
        w, c = self.world, self.config
        v = int(t.viewer)
        ts = int(self.log.ts[t.event])
        merchants = w.r_merchant[np.asarray(t.rooms, dtype=np.int64)]
        logit = (
            c.feed_pop_weight * hotness_on(w, (ts - c.start_ms) // DAY_MS)[merchants]
            + c.feed_category_bonus * (w.m_cat[merchants] == w.v_topcat[v])
            + c.feed_follow_bonus * np.log1p(affinity)
            + c.feed_buzz_weight * s.buzz
        ).astype(np.float64)
        feed = np.exp(logit - logit.max())
        p_feed = (1.0 - c.feed_explore) * feed / feed.sum() + c.feed_explore / feed.size
        stay = 1.0 / (1.0 + np.exp(-stay_utility(w, s)))
        favourite = affinity > 0
        p = p_feed * stay
        if favourite.any():
            tab = RoomSignals(*(getattr(s, f) for f in RoomSignals.__dataclass_fields__))
            tab.follow_tab = np.ones(affinity.size)
            stay_tab = 1.0 / (1.0 + np.exp(-stay_utility(w, tab)))
            p_tab = np.where(favourite, affinity / affinity[favourite].sum(), 0.0)
            p = c.follow_tab_prob * p_tab * stay_tab + (1.0 - c.follow_tab_prob) * p
        out: np.ndarray = np.log(p + 1e-300)
        return out


def oracle_methods(truth: Truth) -> dict[str, Method]:
    """The oracles of the module doc as ranking methods."""
    return {
        "oracle_taste": truth.taste,
        "oracle_affinity": truth.affinity,
        "oracle_choice": truth.choice,
        "oracle_logged": truth.logged,
    }


def with_true_taste(method: Method, truth: Truth) -> Method:
    """`method`'s scores plus the true taste match at the choice model's weight (`w_match`)."""
    weight = truth.config.w_match
    return lambda t: np.asarray(method(t), dtype=np.float64) + weight * truth.taste(t)


def prior_favourite_share(targets: Sequence[Target], truth: Truth) -> float:
    """Share of new targets whose merchant the viewer already favoured in the simulator's truth when the
    day began — mostly favourites from before the log began (every viewer starts with some), whose rooms
    the following tab and "now live" notifications bring: never watched in the log, yet no discovery."""
    new = [t for t in targets if not t.repeat]
    if not new:
        return float("nan")
    return float(np.mean([truth.at(t)[1][t.target] > 0 for t in new]))


def target_auc(scores: np.ndarray, target: int) -> float:
    """Share of the other candidates the target is scored above (ties count half)."""
    others = np.delete(scores, target)
    if others.size == 0:
        return float("nan")
    s = scores[target]
    return float(((others < s).sum() + 0.5 * (others == s).sum()) / others.size)


def spearman(a: np.ndarray, b: np.ndarray) -> float:
    """Rank correlation (average ranks for ties); NaN when either side is constant."""
    # Imported here, not at the top: roomfeed.assembly offers `roomfeed evaluate --world` and so loads
    # this module in every API process, where scipy.stats cost ~0.5 s of CPU at start-up and nothing
    # else uses it (tests/alliance/test_settlement_tails.py checks the assembly stays without it).
    from scipy.stats import rankdata

    ra, rb = rankdata(a), rankdata(b)
    if ra.std() == 0 or rb.std() == 0:
        return float("nan")
    return float(np.corrcoef(ra, rb)[0, 1])


def headroom(
    targets: Sequence[Target],
    methods: Mapping[str, Method],
    seed: int = 0,
    correlate_with: str = "oracle_taste",
) -> dict[str, Any]:
    """Every method on every new target, by its own score order among the never-watched live rooms:
    HR@5, HR@10 and AUC (share of the other never-watched rooms the target is scored above, ties half),
    and each method's rank correlation (Spearman, median over targets) with `correlate_with` among those
    rooms — how much of the true taste a score carries. `hits` keeps one 0/1 per new target (HR@5) for
    paired intervals. Targets with fewer than 2 never-watched rooms are left out (nothing to order)."""
    names = list(methods)
    # A generator per method (seeded by its name): exact ties are broken the same way whichever other
    # methods are judged beside it (LightFM alone scores a viewer it has no row for with zeros).
    rngs = {n: np.random.default_rng([seed, zlib.crc32(n.encode())]) for n in names}
    hits: dict[str, list[float]] = {n: [] for n in names}
    hits10: dict[str, list[float]] = {n: [] for n in names}
    auc: dict[str, list[float]] = {n: [] for n in names}
    rho: dict[str, list[float]] = {n: [] for n in names}
    viewers: list[int] = []
    candidates: list[int] = []
    for t in targets:
        if t.repeat:
            continue
        keep = ~np.asarray(t.entered_before, dtype=bool)
        if keep.sum() < 2:
            continue
        where = int(np.flatnonzero(np.flatnonzero(keep) == t.target)[0])
        viewers.append(int(t.viewer))
        candidates.append(int(keep.sum()))
        scored = {n: np.asarray(methods[n](t), dtype=np.float64)[keep] for n in names}
        reference = scored.get(correlate_with)
        for n in names:
            s = scored[n]
            r = rank_of(s, where, rngs[n])
            hits[n].append(float(r < 5))
            hits10[n].append(float(r < 10))
            auc[n].append(target_auc(s, where))
            if reference is not None:
                rho[n].append(spearman(s, reference))
    out: dict[str, Any] = {
        "new_targets": len(viewers),
        "never_watched_candidates_median": float(np.median(candidates)) if candidates else float("nan"),
        "viewers": np.asarray(viewers, dtype=np.int64),
        "methods": {},
    }
    for n in names:
        h = np.asarray(hits[n])
        rhos = np.asarray(rho[n]) if rho[n] else np.asarray([np.nan])
        out["methods"][n] = {
            "hr5": float(h.mean()) if h.size else float("nan"),
            "hr10": float(np.mean(hits10[n])) if hits10[n] else float("nan"),
            "auc": float(np.mean(auc[n])) if auc[n] else float("nan"),
            f"rho_{correlate_with}": float(np.nanmedian(rhos))
            if not np.all(np.isnan(rhos))
            else float("nan"),
            "hits": h,
        }
    return out


# The pairs whose HR@5 difference gets a viewer-resampled interval: how far the truth lies above the
# ranker, and what a perfectly learned taste column would add to the ranker without LightFM.
PAIRS: tuple[tuple[str, str], ...] = (
    ("oracle_choice", "ranker"),
    ("oracle_taste", "ranker"),
    ("ranker_true_taste", "ranker_no_lightfm"),
    ("ranker_true_taste", "ranker"),
    ("ranker_with_lightfm", "ranker_no_lightfm"),
)


def headroom_figures(
    targets: Sequence[Target], methods: Mapping[str, Method], seed: int = 0
) -> dict[str, Any]:
    """`headroom` as JSON-ready figures: per method HR@5/HR@10/AUC/Spearman with the true taste, each
    HR@5 over the better popularity baseline's (`pop`, `live_pop`, by the same score-order rule), and
    the differences of `PAIRS` with a 95 % interval that resamples viewers."""
    from ranking.evaluation import viewer_bootstrap

    h = headroom(targets, methods, seed)
    figures = {n: {k: v for k, v in m.items() if k != "hits"} for n, m in h["methods"].items()}
    pops = [n for n in ("pop", "live_pop") if n in figures]
    best_pop = max(pops, key=lambda n: figures[n]["hr5"]) if pops else None
    if best_pop is not None and figures[best_pop]["hr5"] > 0:
        for m in figures.values():
            m["x_best_pop"] = m["hr5"] / figures[best_pop]["hr5"]
    diffs = {}
    for a, b in PAIRS:
        if a in h["methods"] and b in h["methods"]:
            d = viewer_bootstrap(h["methods"][a]["hits"], h["methods"][b]["hits"], h["viewers"], seed)
            diffs[f"{a}-{b}"] = {"diff": d["diff"], "ci_low": d["ci_low"], "ci_high": d["ci_high"]}
    return {
        "rule": "each method's own score order among the never-watched live rooms of new test targets",
        "new_targets": h["new_targets"],
        "never_watched_candidates_median": h["never_watched_candidates_median"],
        "best_pop": best_pop,
        "methods": figures,
        "diffs": diffs,
    }
