"""Evaluation on the availability-aware protocol (Rappaz, McAuley & Aberer, RecSys 2021).

Owns how replayed targets (`ranking.replay.Target`: an enter at t, ranked among the rooms live at t
minus the rooms the session was already shown) are judged: the simple baselines (`BASELINES`: POP,
live POP, REP-then-POP, REP-then-live-POP, random — every one with the same session filter, ties
broken by popularity where the method says so and at random after that), ranks and metrics (HR@1/5/10,
NDCG@10 overall, on repeat, new and purchase targets, and new targets ranked among the never-entered
candidates only: "discovery"), the best simple baseline, and paired-bootstrap intervals of
differences. Intervals resample *viewers* with all their targets (`viewer_bootstrap`): a heavy viewer
gives dozens of targets that share one history, so they are not independent draws, and resampling
targets gives an interval too narrow exactly where the gate must not be fooled (a ranker that wins
on a few heavy viewers). `paired_bootstrap` (targets resampled) stays for comparison (`by="target"`).

A method is any `score(target) -> np.ndarray` (higher first). `ranker_method(ranker)` is the learned
ranker; `page_method` ranks by whatever page a caller's feed would serve (see docs/ranking.md).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from ranking.ranker import Ranker, lexicographic
from ranking.replay import Target

Method = Callable[[Target], np.ndarray]
SPLITS: tuple[str, ...] = ("overall", "repeat", "new", "purchase", "discovery")
BASELINES: tuple[str, ...] = ("pop", "live_pop", "rep_pop", "rep_live_pop", "random")
REP_BASELINES: tuple[str, ...] = ("rep_pop", "rep_live_pop")
POP_BASELINES: tuple[str, ...] = ("pop", "live_pop")


def baseline(name: str, seed: int = 0) -> Method:
    """A simple baseline as a method: POP, live POP (1 h half-life), REP-then-POP, REP-then-live-POP, random."""
    if name == "pop":
        return lambda t: t.pop
    if name == "live_pop":
        return lambda t: t.live_pop
    if name == "rep_pop":
        return lambda t: lexicographic(t.rep, t.pop)
    if name == "rep_live_pop":
        return lambda t: lexicographic(t.rep, t.live_pop)
    if name == "random":
        rng = np.random.default_rng(seed)
        return lambda t: rng.random(t.rooms.size)
    raise ValueError(f"unknown baseline {name!r} (known: {', '.join(BASELINES)})")


def ranker_method(ranker: Ranker) -> Method:
    return lambda t: ranker.score(t.table, t.request)


PageJudge = Callable[[Target, np.ndarray], np.ndarray]


def page_method(method: Method, page: PageJudge) -> Method:
    """`method` judged by the page a feed would serve: `page(target, scores)` returns the order shown
    (e.g. feed.replay.FeedPage: filters, diversity, exploration); rooms off the page rank below it."""

    def scored(t: Target) -> np.ndarray:
        order = page(t, np.asarray(method(t), dtype=np.float64))
        out = np.full(t.rooms.size, -1e9)
        out[order] = -np.arange(order.size, dtype=np.float64)
        return out

    return scored


def lightfm_method(t: Target) -> np.ndarray:
    lf = t.request.lightfm
    return lf if lf is not None else np.zeros(t.rooms.size)


def rank_of(scores: np.ndarray, target: int, rng: np.random.Generator) -> int:
    """0-based rank of the target; exact ties are broken at random."""
    s = np.asarray(scores, dtype=np.float64)
    s = s + rng.random(s.size) * 1e-9 * (1.0 + float(np.abs(s).max(initial=0.0)))
    return int((s > s[target]).sum())


@dataclass
class Judged:
    """Ranks of one method over the targets: overall, and of new targets among discovery candidates."""

    ranks: np.ndarray
    discovery_ranks: np.ndarray  # -1 where the target is a repeat


def judge(targets: Sequence[Target], method: Method, seed: int = 0) -> Judged:
    rng = np.random.default_rng(seed)
    ranks = np.zeros(len(targets), dtype=np.int64)
    disc = np.full(len(targets), -1, dtype=np.int64)
    for i, t in enumerate(targets):
        s = np.asarray(method(t), dtype=np.float64)
        ranks[i] = rank_of(s, t.target, rng)
        if not t.repeat:
            keep = ~t.entered_before
            where = int(np.flatnonzero(np.flatnonzero(keep) == t.target)[0])
            disc[i] = rank_of(s[keep], where, rng)
    return Judged(ranks, disc)


def metrics(r: np.ndarray) -> dict[str, float]:
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


def split_metrics(targets: Sequence[Target], judged: Judged) -> dict[str, dict[str, float]]:
    repeat = np.array([t.repeat for t in targets], dtype=bool)
    purchase = np.array([t.purchase for t in targets], dtype=bool)
    return {
        "overall": metrics(judged.ranks),
        "repeat": metrics(judged.ranks[repeat]),
        "new": metrics(judged.ranks[~repeat]),
        "purchase": metrics(judged.ranks[purchase]),
        "discovery": metrics(judged.discovery_ranks[~repeat]),
    }


def paired_bootstrap(a: np.ndarray, b: np.ndarray, seed: int = 0, resamples: int = 2_000) -> dict[str, float]:
    """Mean of a - b per target with a bootstrap 95 % interval (both judged on the same targets)."""
    diff = np.asarray(a, dtype=np.float64) - np.asarray(b, dtype=np.float64)
    if diff.size == 0:
        return {"diff": float("nan"), "ci_low": float("nan"), "ci_high": float("nan"), "n": 0}
    rng = np.random.default_rng(seed)
    boots = diff[rng.integers(0, diff.size, (resamples, diff.size))].mean(axis=1)
    return {
        "diff": float(diff.mean()),
        "ci_low": float(np.quantile(boots, 0.025)),
        "ci_high": float(np.quantile(boots, 0.975)),
        "n": int(diff.size),
    }


def viewer_bootstrap(
    a: np.ndarray, b: np.ndarray, viewers: np.ndarray, seed: int = 0, resamples: int = 2_000
) -> dict[str, float]:
    """Mean of a - b per target with a 95 % interval from viewers resampled with all their targets
    (a paired cluster bootstrap: both methods are judged on the same targets of the drawn viewers)."""
    diff = np.asarray(a, dtype=np.float64) - np.asarray(b, dtype=np.float64)
    if diff.size == 0:
        return {"diff": float("nan"), "ci_low": float("nan"), "ci_high": float("nan"), "n": 0, "viewers": 0}
    if np.shape(viewers) != diff.shape:
        raise ValueError(f"viewers has shape {np.shape(viewers)}, the differences {diff.shape}")
    _, group = np.unique(viewers, return_inverse=True)
    sums, counts = np.bincount(group, weights=diff), np.bincount(group).astype(np.float64)
    draws = np.random.default_rng(seed).integers(0, sums.size, (resamples, sums.size))
    boots = sums[draws].sum(axis=1) / counts[draws].sum(axis=1)
    return {
        "diff": float(diff.mean()),
        "ci_low": float(np.quantile(boots, 0.025)),
        "ci_high": float(np.quantile(boots, 0.975)),
        "n": int(diff.size),
        "viewers": int(sums.size),
    }


def hits(r: np.ndarray, k: int = 5) -> np.ndarray:
    return (r < k).astype(np.float64)


def best_of(results: Mapping[str, Mapping[str, Mapping[str, float]]], names: Sequence[str]) -> str:
    """The method among `names` with the highest overall HR@5 + NDCG@10."""
    present = [n for n in names if n in results]
    return max(present, key=lambda n: results[n]["overall"]["hr5"] + results[n]["overall"]["ndcg10"])


@dataclass
class Evaluation:
    """Every method's metrics on the same targets, the best baselines and the paired differences."""

    results: dict[str, dict[str, dict[str, float]]]
    judged: dict[str, Judged]
    best_baseline: str  # best REP-then-popularity baseline (overall HR@5 + NDCG@10)
    best_pop: str  # the better popularity baseline (on new targets among discovery candidates)
    repeat_share: float
    targets: int
    viewers: np.ndarray | None = None  # the viewer of each target (None: each target its own viewer)

    def difference(
        self, a: str, b: str, split: str = "overall", k: int = 5, seed: int = 0, by: str = "viewer"
    ) -> dict[str, float]:
        """HR@k of `a` minus `b` on `split` ("overall", "new", "discovery"), paired bootstrap that
        resamples viewers with all their targets (`by="target"`: targets one by one, too narrow when
        heavy viewers give many targets; kept for comparison)."""
        if by not in ("viewer", "target"):
            raise ValueError(f"by must be 'viewer' or 'target', not {by!r}")
        ja, jb = self.judged[a], self.judged[b]
        if split == "discovery":
            keep = ja.discovery_ranks >= 0
            ra, rb = ja.discovery_ranks[keep], jb.discovery_ranks[keep]
        else:
            keep = np.ones(ja.ranks.size, dtype=bool) if split == "overall" else self._split_mask(split)
            ra, rb = ja.ranks[keep], jb.ranks[keep]
        if by == "target":
            return paired_bootstrap(hits(ra, k), hits(rb, k), seed)
        viewers = self.viewers if self.viewers is not None else np.arange(ja.ranks.size)
        return viewer_bootstrap(hits(ra, k), hits(rb, k), viewers[keep], seed)

    def _split_mask(self, split: str) -> np.ndarray:
        disc = next(iter(self.judged.values())).discovery_ranks
        if split == "new":
            return disc >= 0
        if split == "repeat":
            return disc < 0
        raise ValueError(split)


def evaluate(
    targets: Sequence[Target], methods: Mapping[str, Method], seed: int = 0, page: PageJudge | None = None
) -> Evaluation:
    """Judge `methods` plus every baseline on the same targets; with `page`, every one of them (the
    baselines too) by the page the feed would serve from its scores."""
    all_methods: dict[str, Method] = dict(methods)
    for name in BASELINES:
        all_methods.setdefault(name, baseline(name, seed))
    if page is not None:
        all_methods = {name: page_method(m, page) for name, m in all_methods.items()}
    judged = {name: judge(targets, m, seed) for name, m in all_methods.items()}
    results = {name: split_metrics(targets, j) for name, j in judged.items()}
    best_pop = max(POP_BASELINES, key=lambda n: results[n]["discovery"]["hr5"])
    return Evaluation(
        results=results,
        judged=judged,
        best_baseline=best_of(results, REP_BASELINES),
        best_pop=best_pop,
        repeat_share=float(np.mean([t.repeat for t in targets])) if targets else float("nan"),
        targets=len(targets),
        viewers=np.array([t.viewer for t in targets], dtype=np.int64),
    )


def flatten(results: Mapping[str, Mapping[str, Mapping[str, float]]]) -> dict[str, float]:
    """{'hr5_ranker': …, 'hr5_new_ranker': …, 'ndcg10_repeat_pop': …} from the nesting."""
    flat: dict[str, float] = {}
    for method, splits in results.items():
        for split, m in splits.items():
            prefix = "" if split == "overall" else f"{split}_"
            for k in ("hr1", "hr5", "hr10", "ndcg10"):
                flat[f"{k}_{prefix}{method}"] = round(float(m[k]), 4)
    return flat


def table(
    results: Mapping[str, Mapping[str, Mapping[str, float]]], methods: Sequence[str] | None = None
) -> str:
    names = list(methods) if methods is not None else list(results)
    lines = [
        "| method | HR@5 | NDCG@10 | HR@5 repeat | HR@5 new | HR@5 new among never-entered | HR@5 purchase |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    for name in names:
        r = results[name]
        lines.append(
            f"| {name} | {r['overall']['hr5']:.3f} | {r['overall']['ndcg10']:.3f} | {r['repeat']['hr5']:.3f} "
            f"| {r['new']['hr5']:.3f} | {r['discovery']['hr5']:.3f} | {r['purchase']['hr5']:.3f} |"
        )
    return "\n".join(lines)


def cold_auc(targets: Sequence[Target], held_out_items: set[int]) -> tuple[float, int]:
    """Mean per-target AUC of the LightFM score for targets whose merchant was held out of training."""
    aucs = []
    for t in targets:
        lf = t.request.lightfm
        if lf is None or int(t.request.items[t.target]) not in held_out_items:
            continue
        s = lf[t.target]
        others = np.delete(lf, t.target)
        aucs.append(((others < s).sum() + 0.5 * (others == s).sum()) / max(others.size, 1))
    return (float(np.mean(aucs)) if aucs else float("nan")), len(aucs)
