"""Benchmark: the learned ranker with one score for every room against the two-part ranker, on the same lists.

    .venv/bin/python bench/bench_ranker_parts.py WORLD:SEED [WORLD:SEED ...] [--viewers 10000
        --merchants 500 --lists 3000 --targets 3000 --world-cache reports/worlds/cache]

Per world and seed (simulator.presets, 7 days; the world family's record size by default, worlds read
from the same cache as `roomfeed evaluate`): LightFM "a" on days 0-4, the ranker's training and
validation lists from day 5 (as `ranking.offline.fit_model` builds them), LightFM on days 0-5 for the
held-out day 6's targets. Then, on those same lists and targets, `fit_ranker` with `two_part=False`
(one score) and with the default (the validation lists decide), each with LightFM's columns chosen by
`choose_lightfm`, judged against the baselines: HR@5 overall, on repeat and new targets and on new
targets among never-entered candidates (discovery), the HR@5 difference to the best REP baseline with
an interval that resamples viewers, and HR@5 per number of live favourites of the viewer (what the
diagnosis read). Same lists and targets for both: the difference is the ranker's, not the sample's.
Writes bench/results/ranker_parts.json and the docs/benchmarks.md block.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "bench"))


def lists_and_targets(world: str, seed: int, args: argparse.Namespace) -> tuple[Any, Any, Any]:
    from ranking.dataset import build_training_set
    from ranking.model import ModelParams, train_model
    from ranking.offline import FitConfig, training_lists
    from ranking.replay import replay
    from ranking.scorer import Scorer
    from worlds.evaluate import DAY_MS, world_log

    opened = world_log(world, seed, args.viewers, args.merchants, Path(args.world_cache))
    log, features, schedule, until = opened.log, opened.features, opened.schedule, opened.split
    cfg = FitConfig(model=ModelParams(num_threads=1), ranker_lists=args.lists, seed=seed)
    ranker_from = until - DAY_MS
    early = train_model(
        build_training_set(log, features, ranker_from, cfg.weights), cfg.model, "a", progress=False
    )
    validation_from = ranker_from + int(DAY_MS * (1.0 - cfg.validation_share))
    n_val = int(args.lists * cfg.validation_share)
    train, held = replay(
        log,
        schedule,
        features,
        Scorer(early),
        [(ranker_from, validation_from), (validation_from, until)],
        [args.lists - n_val, n_val],
        seed=seed,
        max_candidates=[cfg.max_candidates, None],
    )
    full = train_model(build_training_set(log, features, until, cfg.weights), cfg.model, "m", progress=False)
    (test,) = replay(
        log, schedule, features, Scorer(full), [(until, until + DAY_MS)], [args.targets], seed=seed
    )
    return training_lists(train, cfg.purchase_weight), training_lists(held, cfg.purchase_weight), test


def judged(test: Any, ranker: Any, seed: int) -> dict[str, Any]:
    from ranking.evaluation import evaluate, ranker_method
    from ranking.ranker import viewer_columns

    ev = evaluate(test, {"ranker": ranker_method(ranker)}, seed)
    best, pop = ev.best_baseline, ev.best_pop
    r = ev.results
    d = ev.difference("ranker", best, seed=seed)
    ranks = ev.judged["ranker"].ranks
    base = ev.judged[best].ranks
    repeat = np.array([t.repeat for t in test])
    favourites = np.array([viewer_columns(t.table, t.request).favourite_rows.size for t in test])
    segments = {}
    for label, lo, hi in (("0", 0, 0), ("1-2", 1, 2), ("3-4", 3, 4), ("5+", 5, 10**9)):
        for kind, which in (("repeat", repeat), ("new", ~repeat)):
            m = which & (favourites >= lo) & (favourites <= hi)
            if m.sum() >= 20:
                segments[f"{label} favourites, {kind}"] = {
                    "n": int(m.sum()),
                    "ranker": round(float((ranks[m] < 5).mean()), 4),
                    best: round(float((base[m] < 5).mean()), 4),
                }
    return {
        "best_reppop": best,
        "best_pop": pop,
        "hr5_ranker": round(r["ranker"]["overall"]["hr5"], 4),
        "ndcg10_ranker": round(r["ranker"]["overall"]["ndcg10"], 4),
        "hr5_reppop": round(r[best]["overall"]["hr5"], 4),
        "ndcg10_reppop": round(r[best]["overall"]["ndcg10"], 4),
        "hr5_diff": round(d["diff"], 4),
        "hr5_diff_ci_low": round(d["ci_low"], 4),
        "hr5_diff_ci_high": round(d["ci_high"], 4),
        "hr5_repeat_ranker": round(r["ranker"]["repeat"]["hr5"], 4),
        "hr5_repeat_reppop": round(r[best]["repeat"]["hr5"], 4),
        "hr5_new_ranker": round(r["ranker"]["new"]["hr5"], 4),
        "hr5_new_pop": round(r[pop]["new"]["hr5"], 4),
        "hr5_new_discovery_ranker": round(r["ranker"]["discovery"]["hr5"], 4),
        "hr5_new_discovery_pop": round(r[pop]["discovery"]["hr5"], 4),
        "discovery_ratio": round(r["ranker"]["discovery"]["hr5"] / max(r[pop]["discovery"]["hr5"], 1e-9), 3),
        "repeat_share": round(ev.repeat_share, 4),
        "segments": segments,
        "info": {k: v for k, v in ranker.info.items() if not k.startswith("validation_")},
    }


def line(name: str, m: dict[str, Any]) -> str:
    i = m["info"]
    return (
        f"{name}: HR@5 {m['hr5_ranker']:.3f} vs {m['best_reppop']} {m['hr5_reppop']:.3f} "
        f"({m['hr5_diff']:+.3f}, {m['hr5_diff_ci_low']:+.3f}..{m['hr5_diff_ci_high']:+.3f}), repeat "
        f"{m['hr5_repeat_ranker']:.3f} vs {m['hr5_repeat_reppop']:.3f}, new {m['hr5_new_ranker']:.3f} vs "
        f"{m['best_pop']} {m['hr5_new_pop']:.3f}, discovery {m['hr5_new_discovery_ranker']:.3f} vs "
        f"{m['hr5_new_discovery_pop']:.3f} = {m['discovery_ratio']:.2f}x; two parts {int(i.get('two_part', 0))}, "
        f"k {int(i.get('favourites_first', 0))}, LightFM {int(i.get('lightfm_used', 0))}"
    )


def main() -> None:
    from bench_scorer import command_line, write_results
    from world_args import add_world_args, world_seed

    from ranking.ranker import LIGHTFM_FEATURES, choose_lightfm, fit_ranker

    ap = argparse.ArgumentParser()
    add_world_args(ap, targets=3_000)
    ap.add_argument("--lists", type=int, default=3_000)
    args = ap.parse_args()
    runs: dict[str, Any] = {}
    lines = []
    for spec in args.worlds:
        world, seed = world_seed(spec)
        t0 = time.perf_counter()
        lists, validation, test = lists_and_targets(world, seed, args)
        run: dict[str, Any] = {}
        for label, two_part in (("one_score", False), ("two_part", None)):
            with_lf = fit_ranker(lists, validation=validation, two_part=two_part)
            without = fit_ranker(lists, validation=validation, drop=LIGHTFM_FEATURES, two_part=two_part)
            run[label] = judged(test, choose_lightfm(with_lf, without, validation.viewers()), seed)
            lines.append(line(f"{world} {seed} {label}", run[label]))
            print(lines[-1], flush=True)
        run["seconds"] = round(time.perf_counter() - t0, 1)
        runs[f"{world}-{seed}"] = run
    write_results(
        "ranker_parts",
        command_line(),
        {"viewers": args.viewers, "merchants": args.merchants, "lists": args.lists, "runs": runs},
        lines,
        "ranker_parts — one score for every room vs the two-part ranker, same lists and targets",
    )
    print(json.dumps({k: v["seconds"] for k, v in runs.items()}))


if __name__ == "__main__":
    main()
