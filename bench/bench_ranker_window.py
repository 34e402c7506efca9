"""Benchmark: the ranker's training window — the last day of the log (the trainer's default) or longer.

    .venv/bin/python bench/bench_ranker_window.py WORLD:SEED [WORLD:SEED ...] [--days 1,2 --viewers 10000
        --merchants 500 --targets 4000 --world-cache reports/worlds/cache]

Per world and seed (simulator.presets, 7 days; day 6 is the test day), one fit per window of D days:
LightFM "a" on the log before day 6 - D, the ranker's training lists from [6 - D, 5.75) (FitConfig's
6,000 lists a day at most, sampled candidates) and its validation lists from the SAME last 6 hours of
day 5 for every window (1,500, every live room), the ranker chosen as `ranking.offline.fit_model` does
(with / without / LightFM in the discovery part, `choose_lightfm`). Then on the same test-day targets
(LightFM fit on days 0-5): HR@5 overall, on new targets on the full list and among never-watched rooms
(discovery), and each longer window minus the one-day window with intervals that resample viewers; and
each window's validation value (HR@5 + NDCG@10 on the common validation hours, with its standard error):
what choosing the window on validation would pick. Writes bench/results/ranker_window.json and the
docs/benchmarks.md block.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "bench"))

VALIDATION_HOURS = 6


def window_lists(world: str, seed: int, days: int, args: argparse.Namespace) -> tuple[Any, Any, Any]:
    from ranking.dataset import build_training_set
    from ranking.model import ModelParams, train_model
    from ranking.offline import FitConfig, training_lists
    from ranking.replay import replay
    from ranking.scorer import Scorer
    from worlds.evaluate import DAY_MS, world_log

    opened = world_log(world, seed, args.viewers, args.merchants, Path(args.world_cache))
    log, features, schedule, until = opened.log, opened.features, opened.schedule, opened.split
    cfg = FitConfig(model=ModelParams(num_threads=1), seed=seed)
    ranker_from = until - days * DAY_MS
    validation_from = until - VALIDATION_HOURS * 3_600_000
    n_validation = int(cfg.ranker_lists * cfg.validation_share)
    n_train = days * cfg.ranker_lists - n_validation
    early = train_model(
        build_training_set(log, features, ranker_from, cfg.weights), cfg.model, "a", progress=False
    )
    train, held = replay(
        log,
        schedule,
        features,
        Scorer(early),
        [(ranker_from, validation_from), (validation_from, until)],
        [n_train, n_validation],
        seed=seed,
        max_candidates=[cfg.max_candidates, None],
    )
    full = train_model(build_training_set(log, features, until, cfg.weights), cfg.model, "m", progress=False)
    (test,) = replay(
        log, schedule, features, Scorer(full), [(until, until + DAY_MS)], [args.targets], seed=seed
    )
    return training_lists(train, cfg.purchase_weight), training_lists(held, cfg.purchase_weight), test


def main() -> None:
    from bench_lightfm_parts import INTERVAL
    from bench_scorer import command_line, write_results
    from world_args import add_world_args, world_seed

    from ranking.evaluation import evaluate, ranker_method
    from ranking.ranker import LIGHTFM_FEATURES, choose_lightfm, fit_ranker

    ap = argparse.ArgumentParser()
    add_world_args(ap)
    ap.add_argument("--days", type=lambda s: [int(d) for d in s.split(",")], default=[1, 2])
    args = ap.parse_args()
    if not args.days or min(args.days) < 1 or args.days[0] != 1:
        ap.error("--days: whole days >= 1, starting with 1 (the trainer's window, the comparison's base)")
    runs: dict[str, Any] = {}
    lines: list[str] = []
    for spec in args.worlds:
        world, seed = world_seed(spec)
        t0 = time.perf_counter()
        rankers: dict[str, Any] = {}
        test: Any = None
        run: dict[str, Any] = {}
        for days in args.days:
            lists, validation, test = window_lists(world, seed, days, args)
            ranker = choose_lightfm(
                fit_ranker(lists, validation=validation),
                fit_ranker(lists, validation=validation, drop=LIGHTFM_FEATURES),
                validation.viewers(),
                discovery=fit_ranker(
                    lists, validation=validation, drop=LIGHTFM_FEATURES, discovery_only=LIGHTFM_FEATURES
                ),
                validation=validation,
            )
            values = ranker.validation_values
            se = (
                float(values.std(ddof=1) / math.sqrt(values.size))
                if values is not None and values.size > 1
                else 0.0
            )
            rankers[f"{days}d"] = ranker
            run[f"{days}d"] = {
                "lists": len(lists),
                "validation_lists": len(validation),
                "validation": ranker.info.get("validation"),
                "validation_se": round(se, 4),
                "lightfm_used": ranker.info.get("lightfm_used"),
                "lightfm_discovery_only": ranker.info.get("lightfm_discovery_only"),
                "two_part": ranker.info.get("two_part"),
            }
        ev = evaluate(test, {name: ranker_method(r) for name, r in rankers.items()}, seed)
        pop, best = ev.best_pop, ev.best_baseline
        run.update(best_pop=pop, best_reppop=best)
        for name in rankers:
            res = ev.results[name]
            run[name].update(
                hr5=round(res["overall"]["hr5"], 4),
                hr5_new=round(res["new"]["hr5"], 4),
                hr5_new_discovery=round(res["discovery"]["hr5"], 4),
            )
            if name != "1d":
                for split in ("overall", "discovery"):
                    d = ev.difference(name, "1d", split, seed=seed)
                    run[name][f"minus_1d_{split}"] = {k: round(d[k], 4) for k in INTERVAL}
        run["hr5_reppop"] = round(ev.results[best]["overall"]["hr5"], 4)
        run["hr5_new_pop"] = round(ev.results[pop]["new"]["hr5"], 4)
        run["hr5_new_discovery_pop"] = round(ev.results[pop]["discovery"]["hr5"], 4)
        run["seconds"] = round(time.perf_counter() - t0, 1)
        runs[f"{world}-{seed}"] = run
        parts = []
        for name in rankers:
            r = run[name]
            extra = ""
            if name != "1d":
                o, d = r["minus_1d_overall"], r["minus_1d_discovery"]
                extra = (
                    f"; minus 1d: HR@5 {o['diff']:+.4f} ({o['ci_low']:+.4f}..{o['ci_high']:+.4f}), "
                    f"discovery {d['diff']:+.4f} ({d['ci_low']:+.4f}..{d['ci_high']:+.4f})"
                )
            parts.append(
                f"{name} ({r['lists']} lists, validation {r['validation']} SE {r['validation_se']}, LightFM "
                f"{r['lightfm_used']}): HR@5 {r['hr5']:.3f}, new {r['hr5_new']:.3f}, discovery "
                f"{r['hr5_new_discovery']:.3f}{extra}"
            )
        lines.append(
            f"{world} {seed} (REP {best} {run['hr5_reppop']:.3f}, {pop} new {run['hr5_new_pop']:.3f} discovery "
            f"{run['hr5_new_discovery_pop']:.3f}): " + " | ".join(parts)
        )
        print(lines[-1], flush=True)
    write_results(
        "ranker_window",
        command_line(),
        {"viewers": args.viewers, "merchants": args.merchants, "days": args.days, "runs": runs},
        lines,
        "ranker_window — the ranker's training window, one day or longer, the same validation hours and test day",
    )
    print(json.dumps({k: v["seconds"] for k, v in runs.items()}))


if __name__ == "__main__":
    main()
