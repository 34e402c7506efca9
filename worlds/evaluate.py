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
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

from events.vocabulary import SWIPE_AWAY_MS
from feed.replay import FeedPage
from ranking.dataset import ENTER, LEAVE, InteractionLog, from_simulator
from ranking.evaluation import Evaluation
from ranking.model import RankingModel
from ranking.offline import FitConfig, evaluate_model, fit_model, merchant_features
from ranking.ranker import baseline_ranker
from ranking.replay import Schedule
from ranking.scorer import Scorer
from simulator import Marketplace
from simulator.measure import enter_dwell, world_figures
from simulator.presets import N_MERCHANTS, N_VIEWERS, world_config
from worlds.online import Arm, arm_metrics, bootstrap_diff, run_ab

DAY_MS = 86_400_000


@dataclass(frozen=True)
class RunConfig:
    n_viewers: int = N_VIEWERS
    n_merchants: int = N_MERCHANTS
    train_days: int = 5  # the model sees days 0 … train_days; the day after is the test day
    test_targets: int = 4_000
    ab_sessions: int | None = 1_600  # test-day sessions drawn into the A/B (None: all of them)
    page_size: int = 8
    fit: FitConfig = field(default_factory=lambda: FitConfig(ranker_lists=3_000))


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


def schedule_of(market: Marketplace) -> Schedule:
    w = market.world
    return Schedule(w.r_merchant, w.r_start, w.r_end, [r.features for r in market.rooms])


def baseline_model(model: RankingModel, name: str) -> RankingModel:
    """The fitted artifact ranking by simple baseline `name` instead of its learned ranker (what the feed
    serves when the promotion gate refuses a model): same merchant table, histories and LightFM."""
    return dataclasses.replace(model, ranker_weights=baseline_ranker(name).weights.astype(np.float64))


def offline_figures(ev: Evaluation, seed: int) -> dict[str, Any]:
    """The world's offline figures on the test targets (see the module doc)."""
    r = ev.results
    best, pop = ev.best_baseline, ev.best_pop
    diff = ev.difference("ranker", best, seed=seed)
    new_diff = ev.difference("ranker", pop, split="new", seed=seed)
    disc_diff = ev.difference("ranker", pop, split="discovery", seed=seed)
    ablation = ev.difference("ranker", "ranker_no_lightfm", split="new", seed=seed)
    ablation_disc = ev.difference("ranker", "ranker_no_lightfm", split="discovery", seed=seed)
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
        "best_pop": pop,
        "hr5_ranker": r["ranker"]["overall"]["hr5"],
        "ndcg10_ranker": r["ranker"]["overall"]["ndcg10"],
        "hr5_reppop": r[best]["overall"]["hr5"],
        "ndcg10_reppop": r[best]["overall"]["ndcg10"],
        "hr5_diff": diff["diff"],
        "hr5_diff_ci_low": diff["ci_low"],
        "hr5_diff_ci_high": diff["ci_high"],
        "hr5_diff_ci_width": diff["ci_high"] - diff["ci_low"],
        "ndcg10_diff": r["ranker"]["overall"]["ndcg10"] - r[best]["overall"]["ndcg10"],
        "hr5_new_ranker": r["ranker"]["new"]["hr5"],
        "hr5_new_pop": r[pop]["new"]["hr5"],
        "hr5_new_diff_ci_low": new_diff["ci_low"],
        "hr5_new_discovery_ranker": r["ranker"]["discovery"]["hr5"],
        "hr5_new_discovery_pop": r[pop]["discovery"]["hr5"],
        "hr5_new_discovery_diff_ci_low": disc_diff["ci_low"],
        "hr5_new_ranker_no_lightfm": r["ranker_no_lightfm"]["new"]["hr5"],
        "ablation_new_gain": ablation["diff"],
        "ablation_new_ci_low": ablation["ci_low"],
        "ablation_new_ci_high": ablation["ci_high"],
        "ablation_discovery_ci_low": ablation_disc["ci_low"],
        **{f"hr5_{k}": r[k]["overall"]["hr5"] for k in ("ranker_page", "rep_live_pop_page") if k in r},
        "hr5_purchase_ranker": r["ranker"]["purchase"]["hr5"],
        "hr5_purchase_reppop": r[best]["purchase"]["hr5"],
        "repeat_share": ev.repeat_share,
        "targets": ev.targets,
        "new_targets": int(r["ranker"]["new"]["n"]),
    }


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
    t0 = time.perf_counter()
    say("simulate")
    days = cfg.train_days + 2
    market = Marketplace(config=world_config(name, seed, cfg.n_viewers, cfg.n_merchants, days))
    log = watch_log(market, from_simulator(market))
    world = world_figures(market)
    timings["simulate_s"] = time.perf_counter() - t0

    t0 = time.perf_counter()
    say("fit")
    test_day = cfg.train_days + 1
    split = market.config.start_ms + test_day * DAY_MS
    features = merchant_features(market.rooms)
    schedule = schedule_of(market)
    fit = dataclasses.replace(cfg.fit, seed=seed)
    fitted = fit_model(log, features, schedule, split, fit, version=f"world-{name}-{seed}", say=_Quiet())
    timings["fit_s"] = time.perf_counter() - t0

    t0 = time.perf_counter()
    say("judge")
    ev, _ = evaluate_model(
        log,
        features,
        schedule,
        {
            "ranker": (fitted.model, fitted.ranker),
            "ranker_no_lightfm": (fitted.model, fitted.ranker_no_lightfm),
        },
        (split, split + DAY_MS),
        max_targets=cfg.test_targets,
        seed=seed,
        page=FeedPage(schedule.room_features, seed=seed),  # also judge the page the feed would serve
    )
    offline = offline_figures(ev, seed)
    timings["judge_s"] = time.perf_counter() - t0

    t0 = time.perf_counter()
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
    )
    per_arm = {arm: arm_metrics(sums) for arm, sums in ab.items()}
    diffs = bootstrap_diff(ab["ranker"], ab["baseline"], seed=seed)
    timings["ab_s"] = time.perf_counter() - t0
    return {
        "world": name,
        "seed": seed,
        "config": asdict(market.config),
        "simulated": world,
        "offline": offline,
        "ranker": {"l2": fitted.ranker.info.get("l2"), "weights": fitted.ranker.as_dict()},
        "fit_timings": fitted.timings,
        "ab": {
            "arms": per_arm,
            "diff": {k: {"value": v[0], "ci_low": v[1], "ci_high": v[2]} for k, v in diffs.items()},
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
