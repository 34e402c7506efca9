"""Benchmark: are the validation choices of a fit the same when the same log is fit again?

    .venv/bin/python bench/bench_gate_repeat.py WORLD:SEED [WORLD:SEED ...] [--repeats 3 --viewers 10000
        --merchants 500 --lists 3000 --world-cache reports/worlds/cache]

Per world and seed (simulator.presets, 7 days, the world family's quick size by default, worlds read from
the same cache as `roomfeed evaluate`): `ranking.offline.fit_model` on days 0-5, `--repeats` times in
each of two modes, the trainer's 2-thread LightFM fit in both:
- `hogwild`: LightFM "a" (the fit whose column the ranker's lists carry, so every validation choice) on
  2 threads too (`decision_threads=0`, the trainer before this benchmark);
- `one_thread`: "a" on one thread with the model's seed (`decision_threads=1`, the default now).
Printed per run: LightFM's columns kept or not, their validation gain, its standard error with viewers as
the unit and with lists as the unit, two parts, favourites first, and the seconds of fit "a" and of the
whole fit. What it answers: does a decision flip between runs, and what does one thread cost.
Writes bench/results/gate_repeat.json and the docs/benchmarks.md block.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "bench"))

MODES = {"hogwild": 0, "one_thread": 1}


def main() -> None:
    from bench_scorer import command_line, write_results
    from world_args import add_world_args, world_seed

    from ranking.model import ModelParams
    from ranking.offline import FitConfig, fit_model
    from worlds.evaluate import world_log

    ap = argparse.ArgumentParser()
    add_world_args(ap, targets=None)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--lists", type=int, default=3_000)
    args = ap.parse_args()
    if args.repeats < 2:
        ap.error("--repeats must be at least 2 (a decision that flips needs two runs to show it)")
    runs: dict[str, Any] = {}
    lines: list[str] = []
    load_start = round(os.getloadavg()[0], 1)
    for spec in args.worlds:
        world, seed = world_seed(spec)
        opened = world_log(world, seed, args.viewers, args.merchants, Path(args.world_cache))
        log, features, schedule, until = opened.log, opened.features, opened.schedule, opened.split
        base = FitConfig(model=ModelParams(num_threads=2), ranker_lists=args.lists, seed=seed)
        per_mode: dict[str, Any] = {}
        for mode, threads in MODES.items():
            cfg = dataclasses.replace(base, decision_threads=threads)
            fits = []
            for r in range(args.repeats):
                t0 = time.perf_counter()
                fitted = fit_model(log, features, schedule, until, cfg, f"{world}-{seed}-{mode}-{r}")
                i = fitted.ranker.info
                fit = {
                    "lightfm_used": int(i.get("lightfm_used", 0)),
                    "lightfm_gain": i.get("lightfm_gain"),
                    "lightfm_gain_se": i.get("lightfm_gain_se"),
                    "lightfm_gain_se_lists": i.get("lightfm_gain_se_lists"),
                    "two_part": int(i.get("two_part", 0)),
                    "favourites_first": fitted.ranker.favourites_first,
                    "lightfm_a_s": round(fitted.timings["lightfm_a_s"], 1),
                    "fit_s": round(time.perf_counter() - t0, 1),
                }
                fits.append(fit)
                lines.append(
                    f"{world} {seed} {mode} run {r}: LightFM {fit['lightfm_used']} (gain {fit['lightfm_gain']}, "
                    f"SE viewers {fit['lightfm_gain_se']}, lists {fit['lightfm_gain_se_lists']}), two parts "
                    f"{fit['two_part']}, k {fit['favourites_first']}; fit a {fit['lightfm_a_s']} s, "
                    f"whole fit {fit['fit_s']} s"
                )
                print(lines[-1], flush=True)
            choices = {(f["lightfm_used"], f["two_part"], f["favourites_first"]) for f in fits}
            gains = [float(f["lightfm_gain"] or 0.0) for f in fits]
            per_mode[mode] = {
                "fits": fits,
                "distinct_choices": len(choices),
                "lightfm_gain_range": [min(gains), max(gains)],
            }
            lines.append(
                f"{world} {seed} {mode}: {len(choices)} distinct choice(s) in {args.repeats} runs, "
                f"LightFM gain {min(gains)}..{max(gains)}"
            )
            print(lines[-1], flush=True)
        runs[f"{world}-{seed}"] = per_mode
    load = [load_start, round(os.getloadavg()[0], 1)]
    lines.append(f"host load {load[0]} at the start, {load[1]} at the end (1-minute average)")
    print(lines[-1], flush=True)
    write_results(
        "gate_repeat",
        command_line(),
        {
            "viewers": args.viewers,
            "merchants": args.merchants,
            "lists": args.lists,
            "repeats": args.repeats,
            "runs": runs,
            "load": load,
        },
        lines,
        "Validation choices fit again on the same log (2-thread LightFM vs a one-thread decision fit)",
    )


if __name__ == "__main__":
    main()
