"""Benchmark: where LightFM's columns earn their place — nowhere, in the discovery part only, everywhere.

    .venv/bin/python bench/bench_lightfm_parts.py WORLD:SEED [WORLD:SEED ...] [--viewers 10000
        --merchants 500 --lists 6000 --targets 4000 --world-cache reports/worlds/cache --name lightfm_parts]

Per world and seed, the training/validation lists and held-out targets of `bench_ranker_parts` (LightFM
"a" on days 0-4, the ranker's lists from day 5, the test day 6), three rankers fit on the same lists:
without LightFM's columns, with them in the discovery part only (`fit_ranker(discovery_only=...)`) and
with them everywhere; then the choice before this change (`choose_lightfm(with, without)`, every
validation list) and after (the discovery part judged on the validation's discovery lists first). Per
ranker: its validation value, its discovery part's value on the validation's discovery lists, and on
the test day HR@5 overall / on new targets / discovery (own order among never-watched live rooms); then
the chosen ranker after minus before on the test day's discovery and new targets, with intervals that
resample viewers. Writes bench/results/NAME.json (lightfm_parts) and the docs/benchmarks.md block.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "bench"))
# The keys of a difference with its interval (ranking.evaluation.Evaluation.difference) these records keep.
INTERVAL = ("diff", "ci_low", "ci_high")


def main() -> None:
    from bench_ranker_parts import lists_and_targets
    from bench_scorer import command_line, write_results
    from world_args import add_world_args, world_seed

    from ranking.evaluation import evaluate, ranker_method
    from ranking.ranker import (
        LIGHTFM_FEATURES,
        Ranker,
        choose_lightfm,
        discovery_lists,
        discovery_values,
        fit_ranker,
    )

    ap = argparse.ArgumentParser()
    add_world_args(ap)
    ap.add_argument("--lists", type=int, default=6_000)
    ap.add_argument("--name", default="lightfm_parts", help="the record's name (bench/results/NAME.json)")
    args = ap.parse_args()
    runs: dict[str, Any] = {}
    lines: list[str] = []
    for spec in args.worlds:
        world, seed = world_seed(spec)
        t0 = time.perf_counter()
        lists, validation, test = lists_and_targets(world, seed, args)
        fits = {
            "without": fit_ranker(lists, validation=validation, drop=LIGHTFM_FEATURES),
            "discovery_only": fit_ranker(
                lists, validation=validation, drop=LIGHTFM_FEATURES, discovery_only=LIGHTFM_FEATURES
            ),
            "everywhere": fit_ranker(lists, validation=validation),
        }
        on = discovery_lists(validation)
        before = choose_lightfm(
            Ranker(fits["everywhere"].weights, validation_values=fits["everywhere"].validation_values),
            Ranker(fits["without"].weights, validation_values=fits["without"].validation_values),
            validation.viewers(),
        )
        before_name = "everywhere" if before.info["lightfm_used"] else "without"
        after = choose_lightfm(
            fits["everywhere"],
            fits["without"],
            validation.viewers(),
            discovery=fits["discovery_only"],
            validation=validation,
        )
        after_name = next(name for name, r in fits.items() if r is after)
        ev = evaluate(test, {name: ranker_method(r) for name, r in fits.items()}, seed)
        pop = ev.best_pop
        run: dict[str, Any] = {
            "validation_discovery_lists": len(on),
            "before": before_name,
            "after": after_name,
            "lightfm_discovery_gain": after.info.get("lightfm_discovery_gain"),
            "lightfm_discovery_gain_se": after.info.get("lightfm_discovery_gain_se"),
            "hr5_new_discovery_pop": round(ev.results[pop]["discovery"]["hr5"], 4),
            "hr5_new_pop": round(ev.results[pop]["new"]["hr5"], 4),
            "best_pop": pop,
        }
        for name, r in fits.items():
            res = ev.results[name]
            run[name] = {
                "validation": r.info.get("validation"),
                "validation_discovery": round(float(discovery_values(r, on).mean()), 4),
                "two_part": r.info.get("two_part"),
                "favourites_first": r.favourites_first,
                "hr5": round(res["overall"]["hr5"], 4),
                "hr5_new": round(res["new"]["hr5"], 4),
                "hr5_new_discovery": round(res["discovery"]["hr5"], 4),
            }
        for split in ("discovery", "new"):
            if after_name == before_name:
                run[f"after_minus_before_{split}"] = {"diff": 0.0, "ci_low": 0.0, "ci_high": 0.0}
            else:
                d = ev.difference(after_name, before_name, split, seed=seed)
                run[f"after_minus_before_{split}"] = {k: round(d[k], 4) for k in INTERVAL}
        run["seconds"] = round(time.perf_counter() - t0, 1)
        runs[f"{world}-{seed}"] = run
        d = run["after_minus_before_discovery"]
        lines.append(
            f"{world} {seed}: before {before_name}, after {after_name} (discovery lists gain "
            f"{run['lightfm_discovery_gain']} vs SE {run['lightfm_discovery_gain_se']}); test discovery "
            + ", ".join(f"{n} {run[n]['hr5_new_discovery']:.3f}" for n in fits)
            + f" vs {pop} {run['hr5_new_discovery_pop']:.3f}; after - before {d['diff']:+.4f} "
            f"({d['ci_low']:+.4f}..{d['ci_high']:+.4f})"
        )
        print(lines[-1], flush=True)
    write_results(
        args.name,
        command_line(),
        {"viewers": args.viewers, "merchants": args.merchants, "lists": args.lists, "runs": runs},
        lines,
        "lightfm_parts — LightFM's columns nowhere / in the discovery part / everywhere, same lists and targets",
    )
    print(json.dumps({k: v["seconds"] for k, v in runs.items()}))


if __name__ == "__main__":
    main()
