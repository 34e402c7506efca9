"""One world, one seed: simulate, fit, judge offline on the held-out day, then the online A/B.

Owns `run_world` and the figures `roomfeed evaluate --world` reports per world: the learned ranker
against the best REP-then-popularity baseline, popularity on new targets, new targets among
never-watched candidates only (discovery), the ablation without LightFM — each difference with a
paired-bootstrap 95 % interval, all through ranking's public evaluation API (`ranking.offline.fit_model`
and `evaluate_model`: the replay the feed, the trainer and the promotion gate share) — and the A/B
through the feed (worlds.online).

The model is fit on days [0, train_days] exactly as `roomfeed train` fits it (LightFM, then the ranker
on the window's last day), the day after is the test day, judged once, offline and in the A/B.

Targets are *watches* (simulator.measure): on a swipe every served room is entered, so ranking reads
the log with skipped plays (the enter and leave of a swipe-away) removed — their impressions stay, so
a skipped room counts as shown and not chosen. The A/B's feed sees the skips as the app reports them.

Intervals resample viewers, not targets: a heavy viewer gives dozens of test targets that share
their history, so targets are not independent draws and a per-target bootstrap is too narrow
(`ranking.evaluation.viewer_bootstrap`, the gate's too; the per-target interval is kept beside it as
`*_targets`).

A simulated world is the same for the same configuration and simulator code (tests/simulator check
it byte for byte), so `simulated` keeps it on disk under that key and a rerun (a new ranker judged
in the same worlds) does not simulate again.
"""

from __future__ import annotations

import ast
import dataclasses
import hashlib
import pickle
import subprocess
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from events.vocabulary import SWIPE_AWAY_MS
from feed.replay import FeedPage
from ranking.dataset import ENTER, LEAVE, InteractionLog, from_simulator
from ranking.evaluation import (
    POP_BASELINES,
    REP_BASELINES,
    Evaluation,
    Method,
    PageJudge,
    baseline,
    cold_auc,
    lightfm_method,
    rank_of,
    ranker_method,
    viewer_bootstrap,
)
from ranking.features import PRICE_BANDS, RoomFeatures
from ranking.model import ModelParams, RankingModel
from ranking.offline import FitConfig, evaluate_model, fit_model, merchant_features
from ranking.ranker import baseline_ranker
from ranking.replay import Schedule, Target
from ranking.scorer import Scorer
from simulator import Marketplace
from simulator.measure import enter_dwell, world_figures
from simulator.presets import N_MERCHANTS, N_VIEWERS, world_config
from simulator.world import SimConfig
from worlds.headroom import (
    Truth,
    headroom_figures,
    oracle_methods,
    prior_favourite_share,
    spearman,
    target_auc,
    with_true_taste,
)
from worlds.online import Arm, arm_metrics, bootstrap_diff, pre_period, run_ab

DAY_MS = 86_400_000


@dataclass(frozen=True)
class RunConfig:
    n_viewers: int = N_VIEWERS
    n_merchants: int = N_MERCHANTS
    train_days: int = 5  # the model sees days 0 … train_days; the day after is the test day
    test_targets: int = 4_000
    ab_sessions: int | None = None  # test-day sessions drawn into the A/B (None: all of them)
    # "paired": every drawn session in both arms, each arm its own world; "split": viewers split by the
    # experiments hash in one world, CUPED on the pre-period (worlds.online; bench/bench_ab_design.py).
    ab_design: str = "paired"
    page_size: int = 8
    # LightFM on one thread: its two-thread (Hogwild) fit differs run to run, and with it the ranker's
    # LightFM column; the world family's figures must be the same for the same seed. Everything else is
    # the trainer's FitConfig (its 6,000 ranker lists: until 2026-12-07 the harness fit on 3,000, half of
    # what `roomfeed train` uses, which judged a ranker the trainer would not have fit).
    fit: FitConfig = field(default_factory=lambda: FitConfig(model=ModelParams(num_threads=1)))
    world_cache: Path | None = None  # where simulated worlds are kept between runs (None: simulate each time)


@dataclass
class ModelHolder:
    """What the feed's Score and Rank stages read of ranking's model watcher."""

    scorer: Scorer


def watch_log(market: Marketplace, log: InteractionLog) -> InteractionLog:
    """The log without skipped plays (the enter and leave of a swipe-away); impressions stay."""
    dwell = enter_dwell(market.log)
    skip = ((log.type == ENTER) & (dwell < SWIPE_AWAY_MS)) | (
        (log.type == LEAVE) & (log.dwell_ms < SWIPE_AWAY_MS)
    )
    return log.select(~skip)


# What a simulated world runs: the Marketplace (simulator.market) and the figures `simulated` keeps beside
# it (simulator.measure), and every simulator module they import, followed import by import
# (`simulation_sources`). Not presets.py: a preset's values reach the simulation only through the SimConfig,
# whose repr is in the key, so a preset added or edited re-simulates that preset's world alone. Not
# simulator/__init__.py (it only re-exports) unless a module imports the package itself.
_SIMULATION_ROOTS = ("simulator.market", "simulator.measure")
# Outside simulator/ the simulation reads the event vocabulary (whole file) and, of ranking/features.py, only
# the price bands and the RoomFeatures record (hashed by value in `_world_key`, not as a file).
_FOLLOWED_OUTSIDE = ("events.vocabulary",)


def _module_file(root: Path, module: str) -> Path | None:
    path = root.joinpath(*module.split("."))
    if path.with_suffix(".py").is_file():
        return path.with_suffix(".py")
    if (path / "__init__.py").is_file():
        return path / "__init__.py"
    return None


def _followed(module: str) -> bool:
    return module == "simulator" or module.startswith("simulator.") or module in _FOLLOWED_OUTSIDE


def simulation_sources(root: Path | None = None) -> list[Path]:
    """The source files a world's simulation runs, relative to the repository `root`: the modules of
    `_SIMULATION_ROOTS` and, transitively, every simulator module (and `_FOLLOWED_OUTSIDE` file) they import."""
    root = root or Path(__file__).resolve().parent.parent
    seen: dict[str, Path] = {}
    todo = list(_SIMULATION_ROOTS)
    while todo:
        module = todo.pop()
        if module in seen:
            continue
        path = _module_file(root, module)
        if path is None:
            raise FileNotFoundError(f"the simulation imports {module}, which is not under {root}")
        seen[module] = path
        for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
            names: list[str] = []
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                # `from simulator import engine` imports a module; `from simulator import X` a name of
                # the package's __init__ (which is then followed, presets and all).
                subs = [f"{node.module}.{a.name}" for a in node.names]
                found = [m for m in subs if _followed(m) and _module_file(root, m) is not None]
                names = found if found and len(found) == len(subs) else [node.module]
            todo += [n for n in names if _followed(n) and n not in seen]
    return sorted(seen.values())


def _record_fields(record: type) -> list[tuple[str, str]]:
    """A dataclass's fields and defaults as text that is the same in every process: a field without a
    default has `dataclasses.MISSING`, whose repr is a memory address (in the key until 2026-12-07, it made
    every process compute another key, so no run ever read a world another process had kept)."""
    return [
        (f.name, "" if f.default is dataclasses.MISSING else repr(f.default))
        for f in dataclasses.fields(record)
    ]


def _world_key(config: SimConfig, root: Path | None = None) -> str:
    """The cache key of the world `config` simulates: its configuration (a preset's values included), what
    it reads of ranking/features.py, and the source of the code its simulation runs (`simulation_sources`)."""
    root = root or Path(__file__).resolve().parent.parent
    digest = hashlib.sha256(repr(config).encode())
    # Of ranking/features.py the simulator reads only the price bands and the RoomFeatures record: those,
    # not the whole file (ranking's work there would otherwise simulate every world again).
    digest.update(repr((PRICE_BANDS, _record_fields(RoomFeatures))).encode())
    for source in simulation_sources(root):
        digest.update(source.relative_to(root).as_posix().encode())
        digest.update(source.read_bytes())
    return digest.hexdigest()[:20]


# What the world cache may hold (a world-seed at the documented size is 100-160 MB; the family's 12 fit).
CACHE_BYTES = 3 * 1024**3
_STALE_PART_S = 6 * 3600  # a half-written world older than this was left by a run that died


def prune_cache(cache: Path, keep_bytes: int = CACHE_BYTES) -> list[Path]:
    """Bound the world cache: the worlds used most recently are kept up to `keep_bytes`, older ones
    go (a world kept by an older simulator, whose key nothing asks for any more, goes first), and so
    do half-written files of runs that died. Returns what was removed."""
    if not cache.is_dir():
        return []
    now = time.time()
    removed: list[Path] = []
    for part in cache.glob("*.part"):
        if now - part.stat().st_mtime > _STALE_PART_S:
            part.unlink(missing_ok=True)
            removed.append(part)
    kept = 0
    for path in sorted(cache.glob("*.pickle"), key=lambda p: p.stat().st_mtime, reverse=True):
        size = path.stat().st_size
        if kept + size > keep_bytes:
            path.unlink(missing_ok=True)
            removed.append(path)
        else:
            kept += size
    return removed


def simulated(
    config: SimConfig, cache: Path | None = None, keep_bytes: int = CACHE_BYTES
) -> tuple[Marketplace, dict[str, float]]:
    """The world of `config`, simulated (7 days of sessions) with its figures; from `cache` when that
    holds the same configuration simulated by the same code. The cache stays under `keep_bytes`
    (`prune_cache`: least recently used worlds go first; a read counts as a use)."""
    path = cache / f"{_world_key(config)}.pickle" if cache is not None else None
    if path is not None and path.exists():
        with path.open("rb") as f:
            kept: tuple[Marketplace, dict[str, float]] = pickle.load(f)  # noqa: S301 (our own cache)
        path.touch()  # recently used: pruned last
        return kept
    market = Marketplace(config=config)
    figures = world_figures(market)
    if path is not None:
        path.parent.mkdir(parents=True, exist_ok=True)
        part = path.with_suffix(f".{time.monotonic_ns()}.part")
        with part.open("wb") as f:
            pickle.dump((market, figures), f, protocol=pickle.HIGHEST_PROTOCOL)
        part.replace(path)  # whole or absent: two runs of one world never read half a file
        prune_cache(path.parent, keep_bytes)
    return market, figures


def schedule_of(market: Marketplace) -> Schedule:
    w = market.world
    return Schedule(w.r_merchant, w.r_start, w.r_end, [r.features for r in market.rooms])


@dataclass(frozen=True)
class WorldLog:
    """A simulated world as ranking reads it (`world_log`): the market and its figures, the watch log,
    one RoomFeatures per merchant, the rooms' live schedule and the test day's first millisecond."""

    market: Marketplace
    figures: dict[str, float]
    log: InteractionLog
    features: dict[str, RoomFeatures]
    schedule: Schedule
    split: int


def world_log(
    name: str, seed: int, n_viewers: int, n_merchants: int, cache: Path | None = None, train_days: int = 5
) -> WorldLog:
    """World `name` at `seed`, simulated over `train_days` + 2 days (or read from `cache`, `simulated`),
    read as the harness and the benchmarks fit and judge it: days 0 … train_days to fit, the next one
    judged (`split` is its start)."""
    market, figures = simulated(world_config(name, seed, n_viewers, n_merchants, train_days + 2), cache)
    return WorldLog(
        market,
        figures,
        watch_log(market, from_simulator(market)),
        merchant_features(market.rooms),
        schedule_of(market),
        market.config.start_ms + (train_days + 1) * DAY_MS,
    )


def baseline_model(model: RankingModel, name: str) -> RankingModel:
    """The fitted artifact ranking by simple baseline `name` instead of its learned ranker (what the feed
    serves when the promotion gate refuses a model): same merchant table, histories and LightFM, and
    nothing of the learned ranker — its weights, its favourites-first count and its discovery part go
    together (`RankingModel.with_ranker`), so the baseline arm is the plain baseline (a copy that kept the
    learned count would open the baseline's pages with the ranker's favourites-first policy)."""
    plain = dataclasses.replace(model)
    plain.with_ranker(baseline_ranker(name))
    return plain


def _ndcg10(ranks: np.ndarray) -> np.ndarray:
    return np.where(ranks < 10, 1.0 / np.log2(ranks + 2.0), 0.0)


def _interval(value_key: str, prefix: str, d: dict[str, float]) -> dict[str, float]:
    return {value_key: d["diff"], f"{prefix}_ci_low": d["ci_low"], f"{prefix}_ci_high": d["ci_high"]}


def lightfm_auc(
    targets: Sequence[Target], model_merchants: Sequence[str], trained: set[str]
) -> dict[str, float]:
    """LightFM's AUC among the live candidates (ranking.evaluation.cold_auc) on targets whose merchant had
    no watch in the training window (cold: the model has a row for every merchant it was given features
    of, but only features ever moved a cold one's), and on the others (warm)."""
    cold = cold_rows(model_merchants, trained)
    warm, n_warm = cold_auc(targets, set(range(len(model_merchants))) - cold)
    cold_figure, n_cold = cold_auc(targets, cold)
    return {"cold_auc": cold_figure, "cold_targets": n_cold, "warm_auc": warm, "warm_targets": n_warm}


def cold_rows(model_merchants: Sequence[str], trained: set[str]) -> set[int]:
    """The model rows of merchants without a watch in the training window (scored from features alone),
    and -1 (a merchant the model does not know)."""
    return {i for i, m in enumerate(model_merchants) if m not in trained} | {-1}


def lightfm_diagnostics(
    targets: Sequence[Target], without_lightfm: Method, cold: set[int]
) -> dict[str, float]:
    """What LightFM's column brings on new targets, measured where the issue asks why it adds nothing.

    On every new target, among the candidates of merchants the viewer never entered (where the
    ranker's history columns say nothing): the AUC of LightFM's score, of the ranker without
    LightFM's columns (`without_lightfm`: ranking.evaluation.ranker_method) and of live popularity;
    the rank correlation (Spearman) of LightFM's score with live popularity and with the no-LightFM
    ranker's score among those candidates (median over targets: 1 = LightFM only repeats what the
    other column already says); the share of new targets whose merchant had no watch in the training
    window (`cold`: `cold_rows`, model rows scored from features alone); and the share of new targets
    whose viewer LightFM has no row for (no interaction in its window: its column says nothing there)."""
    lf_auc, plain_auc, live_auc, rho_live, rho_plain = [], [], [], [], []
    is_cold: list[bool] = []
    new = no_user = 0
    for t in targets:
        if t.repeat:
            continue
        new += 1
        lf = t.request.lightfm
        if lf is None:  # a viewer LightFM has no row for (no interaction in its window): column 0
            no_user += 1
            continue
        keep = ~t.entered_before
        if keep.sum() < 3:
            continue
        where = int(np.flatnonzero(np.flatnonzero(keep) == t.target)[0])
        lf_k = np.asarray(lf, dtype=np.float64)[keep]
        plain_k = np.asarray(without_lightfm(t), dtype=np.float64)[keep]
        live_k = np.asarray(t.live_pop, dtype=np.float64)[keep]
        lf_auc.append(target_auc(lf_k, where))
        plain_auc.append(target_auc(plain_k, where))
        live_auc.append(target_auc(live_k, where))
        rho_live.append(spearman(lf_k, live_k))
        rho_plain.append(spearman(lf_k, plain_k))
        is_cold.append(int(t.request.items[t.target]) in cold)

    def mean(xs: list[float]) -> float:
        return float(np.nanmean(xs)) if xs and not np.all(np.isnan(xs)) else float("nan")

    def median(xs: list[float]) -> float:
        return float(np.nanmedian(xs)) if xs and not np.all(np.isnan(xs)) else float("nan")

    return {
        "diag_new_targets": len(lf_auc),
        "diag_lightfm_new_auc": mean(lf_auc),
        "diag_no_lightfm_new_auc": mean(plain_auc),
        "diag_live_pop_new_auc": mean(live_auc),
        "diag_lightfm_rho_live_pop": median(rho_live),
        "diag_lightfm_rho_no_lightfm": median(rho_plain),
        "diag_cold_share_new": float(np.mean(is_cold)) if is_cold else float("nan"),
        "diag_no_viewer_share_new": no_user / new if new else float("nan"),
    }


def trained_merchants(log: InteractionLog, until_ms: int) -> set[str]:
    """The merchants with at least one watch before `until_ms` (what LightFM was fit on)."""
    rows = (log.ts < until_ms) & (log.type == ENTER)
    return {log.merchant_ids[int(m)] for m in np.unique(log.merchant[rows])}


def _best(
    results: dict[str, dict[str, dict[str, float]]], names: Sequence[str], split: str, metric: str
) -> str:
    """The baseline among `names` with the highest `metric` on `split`: each line of issue 13 compares the
    ranker with the best simple baseline *on that figure* (ranking's `best_baseline` is chosen on HR@5 +
    NDCG@10 together, its `best_pop` on discovery: where two baselines split a world, the other one is better
    on a figure, and comparing with it there would flatter the ranker)."""
    return max(names, key=lambda n: results[n][split][metric])


def viewer_ratio_bootstrap(
    a: np.ndarray, b: np.ndarray, viewers: np.ndarray, seed: int = 0, resamples: int = 2_000
) -> dict[str, float]:
    """mean(a) / mean(b) on the same targets with a 95 % interval from viewers resampled with all their
    targets (as `viewer_bootstrap`; a draw whose `b` mean is 0 gives no ratio and is left out)."""
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    if a.shape != b.shape or np.shape(viewers) != a.shape:
        raise ValueError(f"a {a.shape}, b {b.shape} and viewers {np.shape(viewers)} must have one shape")
    if a.size == 0 or b.sum() == 0:
        return {"ratio": float("nan"), "ci_low": float("nan"), "ci_high": float("nan")}
    _, group = np.unique(viewers, return_inverse=True)
    sa, sb = np.bincount(group, weights=a), np.bincount(group, weights=b)
    draws = np.random.default_rng(seed).integers(0, sa.size, (resamples, sa.size))
    top, bottom = sa[draws].sum(axis=1), sb[draws].sum(axis=1)
    ratios = top[bottom > 0] / bottom[bottom > 0]
    return {
        "ratio": float(a.sum() / b.sum()),
        "ci_low": float(np.quantile(ratios, 0.025)),
        "ci_high": float(np.quantile(ratios, 0.975)),
    }


def offline_figures(
    ev: Evaluation,
    targets: Sequence[Target],
    seed: int,
    model_merchants: Sequence[str] = (),
    trained: set[str] | None = None,
    own_order: Mapping[str, Mapping[str, Any]] | None = None,
) -> dict[str, Any]:
    """The world's offline figures on the test targets (see the module doc); every interval resamples
    viewers (`viewer_bootstrap`). Discovery (`hr5_new_discovery_*`, `best_pop`) is judged on each
    method's own order among the never-watched candidates (`own_order`: `discovery_beyond_page` of
    "ranker", "pop" and "live_pop"), the page judge's figures beside it as `*_as_judged`; without
    `own_order` the discovery keys are the page judge's (`discovery_judge` says which). Each comparison is with the baseline best on that figure (`_best`):
    HR@5 with the REP-then-popularity best on HR@5, NDCG@10 with the one best on NDCG@10, new targets on
    the full list with the popularity baseline best there, discovery with the one best among the
    never-watched candidates."""
    r = ev.results
    best = _best(r, REP_BASELINES, "overall", "hr5")
    best_ndcg = _best(r, REP_BASELINES, "overall", "ndcg10")
    pop_new = _best(r, POP_BASELINES, "new", "hr5")
    pop = _best(r, POP_BASELINES, "discovery", "hr5")
    viewers = np.array([t.viewer for t in targets], dtype=np.int64)
    new = np.array([not t.repeat for t in targets], dtype=bool)

    def hits5(split: str, name: str) -> np.ndarray:
        j = ev.judged[name]
        ranks = (
            j.discovery_ranks[new] if split == "discovery" else j.ranks[new] if split == "new" else j.ranks
        )
        return (ranks < 5).astype(np.float64)

    def diff(a: str, b: str, split: str = "overall", ndcg: bool = False) -> dict[str, float]:
        ja, jb = ev.judged[a], ev.judged[b]
        ra, rb = (ja.discovery_ranks, jb.discovery_ranks) if split == "discovery" else (ja.ranks, jb.ranks)
        keep = np.ones(ra.size, dtype=bool) if split == "overall" else new
        score = _ndcg10 if ndcg else (lambda x: (x < 5).astype(np.float64))
        return viewer_bootstrap(score(ra[keep]), score(rb[keep]), viewers[keep], seed)

    main = diff("ranker", best)
    ndcg_diff = diff("ranker", best_ndcg, ndcg=True)
    new_diff = diff("ranker", pop_new, "new")
    disc_diff = diff("ranker", pop, "discovery")
    disc_ratio = viewer_ratio_bootstrap(
        hits5("discovery", "ranker"), hits5("discovery", pop), viewers[new], seed
    )
    as_judged = {
        "best_pop": pop,
        "hr5_new_discovery_ranker": r["ranker"]["discovery"]["hr5"],
        "hr5_new_discovery_pop": r[pop]["discovery"]["hr5"],
        **_interval("hr5_new_discovery_diff", "hr5_new_discovery_diff", disc_diff),
        "hr5_new_discovery_ratio": disc_ratio["ratio"],
        "hr5_new_discovery_ratio_ci_low": disc_ratio["ci_low"],
        "hr5_new_discovery_ratio_ci_high": disc_ratio["ci_high"],
    }
    discovery: dict[str, Any] = {"discovery_judge": "page", **as_judged}
    if own_order is not None:
        own_pop = max(POP_BASELINES, key=lambda n: float(own_order[n]["hr5"]))
        mine, theirs = own_order["ranker"]["hits"], own_order[own_pop]["hits"]
        own_diff = viewer_bootstrap(mine, theirs, viewers[new], seed)
        own_ratio = viewer_ratio_bootstrap(mine, theirs, viewers[new], seed)
        discovery = {
            "discovery_judge": "own order among the never-watched (the page, then the next pages)",
            "best_pop": own_pop,
            "hr5_new_discovery_ranker": own_order["ranker"]["hr5"],
            "hr5_new_discovery_pop": own_order[own_pop]["hr5"],
            **_interval("hr5_new_discovery_diff", "hr5_new_discovery_diff", own_diff),
            "hr5_new_discovery_ratio": own_ratio["ratio"],
            "hr5_new_discovery_ratio_ci_low": own_ratio["ci_low"],
            "hr5_new_discovery_ratio_ci_high": own_ratio["ci_high"],
            "discovery_short_page_ranker": own_order["ranker"]["short_page"],
            "discovery_short_page_pop": own_order[own_pop]["short_page"],
            **{
                (
                    f"{k}_as_judged"
                    if not k.endswith(("_ci_low", "_ci_high"))
                    else k.replace("_ci_", "_as_judged_ci_")
                ): v
                for k, v in as_judged.items()
            },
        }
    ablation = diff("ranker", "ranker_no_lightfm", "new")
    ablation_disc = diff("ranker", "ranker_no_lightfm", "discovery")
    ablation_all = diff("ranker", "ranker_no_lightfm")
    kept = diff("ranker_with_lightfm", "ranker_no_lightfm", "new") if "ranker_with_lightfm" in r else None
    per_target = ev.difference("ranker", best, seed=seed, by="target")  # targets resampled, for comparison
    return {
        "methods": {
            name: {
                "hr5": splits["overall"]["hr5"],
                "ndcg10": splits["overall"]["ndcg10"],
                "hr5_repeat": splits["repeat"]["hr5"],
                "hr5_new": splits["new"]["hr5"],
                "hr5_discovery": splits["discovery"]["hr5"],
                "hr5_purchase": splits["purchase"]["hr5"],
            }
            for name, splits in r.items()
        },
        "best_reppop": best,
        "best_reppop_ndcg10": best_ndcg,
        "best_reppop_overall": ev.best_baseline,  # HR@5 + NDCG@10 together: the A/B's baseline arm
        "best_pop_new": pop_new,
        "hr5_ranker": r["ranker"]["overall"]["hr5"],
        "ndcg10_ranker": r["ranker"]["overall"]["ndcg10"],
        "hr5_reppop": r[best]["overall"]["hr5"],
        "ndcg10_reppop": r[best_ndcg]["overall"]["ndcg10"],
        **_interval("hr5_diff", "hr5_diff", main),
        "hr5_diff_ci_width": main["ci_high"] - main["ci_low"],
        "hr5_diff_ci_low_targets": per_target["ci_low"],
        "hr5_diff_ci_high_targets": per_target["ci_high"],
        **_interval("ndcg10_diff", "ndcg10_diff", ndcg_diff),
        "test_viewers": main["viewers"],
        "hr5_repeat_ranker": r["ranker"]["repeat"]["hr5"],
        "hr5_repeat_reppop": r[best]["repeat"]["hr5"],
        "hr5_new_ranker": r["ranker"]["new"]["hr5"],
        "hr5_new_pop": r[pop_new]["new"]["hr5"],
        **_interval("hr5_new_diff", "hr5_new_diff", new_diff),
        **discovery,
        "hr5_new_ranker_no_lightfm": r["ranker_no_lightfm"]["new"]["hr5"],
        **_interval("ablation_new_gain", "ablation_new", ablation),
        **_interval("ablation_discovery_gain", "ablation_discovery", ablation_disc),
        **_interval("ablation_overall_gain", "ablation_overall", ablation_all),
        **(_interval("with_lightfm_new_gain", "with_lightfm_new", kept) if kept is not None else {}),
        "hr5_purchase_ranker": r["ranker"]["purchase"]["hr5"],
        "hr5_purchase_reppop": r[best]["purchase"]["hr5"],
        "repeat_share": ev.repeat_share,
        **lightfm_auc(targets, model_merchants, trained if trained is not None else set(model_merchants)),
        "targets": ev.targets,
        "new_targets": int(r["ranker"]["new"]["n"]),
    }


def discovery_beyond_page(
    targets: Sequence[Target], methods: Mapping[str, Method], page: PageJudge, seed: int = 0
) -> dict[str, dict[str, Any]]:
    """Discovery (a new target ranked among the never-watched candidates) with the rooms beyond the page
    in the method's own order. The page judge (`ranking.evaluation.page_method`) ranks every room off the
    feed's 10-room page below it at random; where a method's page holds fewer than 5 never-watched rooms
    (a page of favourites), its discovery HR@5 is then partly a draw among hundreds of rooms, not its order
    of them. Here the never-watched rooms on the page keep their page order and the rest follow by the
    method's scores (what the viewer's next pages would start with). Per method: `hits` (one per new
    target), `hr5`, and `short_page` (share of new targets whose page held fewer than 5 never-watched rooms)."""
    rng = np.random.default_rng(seed)
    new = [t for t in targets if not t.repeat]
    out: dict[str, dict[str, Any]] = {}
    for name, method in methods.items():
        hits = np.zeros(len(new))
        short = np.zeros(len(new), dtype=bool)
        for i, t in enumerate(new):
            scores = np.asarray(method(t), dtype=np.float64)
            order = np.asarray(page(t, scores), dtype=np.int64)
            never = ~np.asarray(t.entered_before, dtype=bool)
            shown = order[never[order]]
            short[i] = shown.size < 5
            if t.target in shown[:5]:
                hits[i] = 1.0
            elif t.target not in shown and shown.size < 5:
                rest = np.flatnonzero(never)
                rest = rest[~np.isin(rest, shown)]
                where = int(np.flatnonzero(rest == t.target)[0])
                hits[i] = float(shown.size + rank_of(scores[rest], where, rng) < 5)
        out[name] = {
            "hits": hits,
            "hr5": float(hits.mean()) if hits.size else float("nan"),
            "short_page": float(short.mean()) if short.size else float("nan"),
        }
    return out


CODE_ROOT = Path(__file__).resolve().parent.parent  # the checkout the world harness runs from


def code_version(root: Path = CODE_ROOT) -> dict[str, Any]:
    """The commit the running code was checked out at, and whether tracked files differed from it: every
    world-seed's report names its code, so a record assembled from runs made at different times can be
    checked to be one ranking (None when the tree is not a git checkout)."""
    git = ["git", "-C", str(root)]
    try:
        head = subprocess.run(
            [*git, "rev-parse", "HEAD"], capture_output=True, text=True, check=True, timeout=30
        )
        status = subprocess.run(
            [*git, "status", "--porcelain", "--untracked-files=no"],
            capture_output=True,
            text=True,
            check=True,
            timeout=30,
        )
    except (OSError, subprocess.SubprocessError):
        return {"commit": None, "dirty": None}
    return {"commit": head.stdout.strip(), "dirty": bool(status.stdout.strip())}


def run_world(
    name: str,
    seed: int,
    cfg: RunConfig = RunConfig(),
    step: Callable[[str], None] | None = None,
    ab_progress: Callable[[int], None] | None = None,
) -> dict[str, Any]:
    """Every figure of world `name` at simulator seed `seed` (`step` is told each phase as it starts)."""
    say = step or (lambda _: None)
    timings: dict[str, float] = {}
    t0, c0 = time.perf_counter(), time.process_time()
    say("simulate")
    opened = world_log(name, seed, cfg.n_viewers, cfg.n_merchants, cfg.world_cache, cfg.train_days)
    market, world, log = opened.market, opened.figures, opened.log
    features, schedule, split = opened.features, opened.schedule, opened.split
    timings["simulate_s"] = time.perf_counter() - t0
    timings["simulate_cpu_s"] = time.process_time() - c0

    t0, c0 = time.perf_counter(), time.process_time()
    say("fit")
    test_day = cfg.train_days + 1
    fit = dataclasses.replace(cfg.fit, seed=seed)
    fitted = fit_model(log, features, schedule, split, fit, version=f"world-{name}-{seed}", say=_Quiet())
    timings["fit_s"] = time.perf_counter() - t0
    timings["fit_cpu_s"] = time.process_time() - c0

    t0, c0 = time.perf_counter(), time.process_time()
    say("judge")
    page = FeedPage(schedule.room_features, seed=seed)
    ev, targets = evaluate_model(
        log,
        features,
        schedule,
        {
            "ranker": (fitted.model, fitted.ranker),
            "ranker_no_lightfm": (fitted.model, fitted.ranker_no_lightfm),
            # The variant with LightFM's columns, judged even when validation dropped them: what keeping
            # them would have given on the test day (worlds.report.lightfm_why).
            "ranker_with_lightfm": (fitted.model, fitted.ranker_lightfm or fitted.ranker),
        },
        (split, split + DAY_MS),
        max_targets=cfg.test_targets,
        seed=seed,
        page=page,  # also judge the page the feed would serve
    )
    trained = trained_merchants(log, split)
    own_order = discovery_beyond_page(
        targets,
        {"ranker": ranker_method(fitted.ranker), **{n: baseline(n, seed) for n in POP_BASELINES}},
        page,
        seed,
    )
    offline = offline_figures(ev, targets, seed, fitted.model.merchant_ids, trained, own_order)
    offline.update(
        lightfm_diagnostics(
            targets, ranker_method(fitted.ranker_no_lightfm), cold_rows(fitted.model.merchant_ids, trained)
        )
    )

    timings["judge_s"] = time.perf_counter() - t0
    timings["judge_cpu_s"] = time.process_time() - c0

    t0, c0 = time.perf_counter(), time.process_time()
    no_lightfm = ranker_method(fitted.ranker_no_lightfm)
    truth = Truth(market, log)
    offline["headroom"] = headroom_figures(
        targets,
        {
            **oracle_methods(truth),
            "ranker": ranker_method(fitted.ranker),
            "ranker_no_lightfm": no_lightfm,
            "ranker_with_lightfm": ranker_method(fitted.ranker_lightfm or fitted.ranker),
            "ranker_true_taste": with_true_taste(no_lightfm, truth),
            "lightfm": lightfm_method,
            **{n: baseline(n, seed) for n in POP_BASELINES},
        },
        seed,
    )
    offline["headroom"]["prior_favourite_share"] = prior_favourite_share(targets, truth)
    timings["headroom_s"] = time.perf_counter() - t0
    timings["headroom_cpu_s"] = time.process_time() - c0

    t0, c0 = time.perf_counter(), time.process_time()
    say("a/b")
    arms = [
        Arm("ranker", ModelHolder(Scorer(fitted.model))),
        Arm("baseline", ModelHolder(Scorer(baseline_model(fitted.model, ev.best_baseline)))),
    ]
    ab = run_ab(
        market,
        test_day,
        arms,
        page_size=cfg.page_size,
        max_sessions=cfg.ab_sessions,
        seed=seed,
        progress=ab_progress,
        design=cfg.ab_design,
    )
    per_arm = {arm: arm_metrics(sums) for arm, sums in ab.items()}
    paired = cfg.ab_design == "paired"

    def pre(viewers: np.ndarray) -> dict[str, np.ndarray]:
        return pre_period(market, split, viewers.astype(np.int64))

    diffs = bootstrap_diff(
        ab["ranker"], ab["baseline"], seed=seed, paired=paired, pre=None if paired else pre
    )
    timings["ab_s"] = time.perf_counter() - t0
    timings["ab_cpu_s"] = time.process_time() - c0  # CPU: what a shared host's load does not move
    return {
        "world": name,
        "seed": seed,
        "code": code_version(),
        "config": asdict(market.config),
        "simulated": world,
        "offline": offline,
        "ranker": {
            "l2": fitted.ranker.info.get("l2"),
            "lightfm_used": fitted.ranker.info.get("lightfm_used"),
            "lightfm_discovery_only": fitted.ranker.info.get("lightfm_discovery_only"),
            # The validation choice's paired gain and its standard error (ranking.ranker.choose_lightfm).
            **{
                k: fitted.ranker.info.get(k)
                for k in (
                    "lightfm_gain",
                    "lightfm_gain_se",
                    "lightfm_discovery_gain",
                    "lightfm_discovery_gain_se",
                )
            },
            "two_part": fitted.ranker.info.get("two_part"),
            "favourites_first": fitted.ranker.favourites_first,
            "favourites_first_by_repeat_band": list(fitted.ranker.first_by_share),
            "known_offset_by_repeat_band": list(fitted.ranker.known_offset),
            "validation_with_lightfm": (fitted.ranker_lightfm or fitted.ranker).info.get("validation"),
            "validation_without": fitted.ranker_no_lightfm.info.get("validation"),
            "weights": fitted.ranker.as_dict(),
        },
        "fit_timings": fitted.timings,
        "ab": {
            "arms": per_arm,
            "diff": {k: {"value": v[0], "ci_low": v[1], "ci_high": v[2]} for k, v in diffs.items()},
            "design": cfg.ab_design,
            "interval": "paired by viewer (every session in both arms), viewers resampled"
            if paired
            else "arms by viewer hash, CUPED on each viewer's pre-period, viewers resampled per arm",
            "ranker": "the fitted model with its learned ranker (what `roomfeed train` would promote)",
            "baseline": f"the same artifact ranking by {ev.best_baseline} (what the feed serves when the gate refuses)",
        },
        "timings": timings,
    }


class _Quiet:
    """A text stream that drops what ranking's fit prints (the progress bar says where a run is)."""

    def write(self, text: str) -> int:
        return len(text)

    def flush(self) -> None:
        return None
