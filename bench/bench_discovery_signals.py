"""Benchmark: which merchant signal alone orders the never-watched live rooms, per world-seed (no model fit).

    .venv/bin/python bench/bench_discovery_signals.py WORLD:SEED [WORLD:SEED ...] [--viewers 10000
        --merchants 500 --targets 4000 --world-cache reports/worlds/cache]

Per world and seed (simulator.presets, days 0-5 the log, day 6 the test day): the test day's enters replayed
without a model (ranking.replay.replay), and for each new target (a merchant the viewer never entered) the
HR@5 among the live rooms of merchants the viewer never entered, each room ordered by one signal: live
popularity (the baseline's own, exact at t), and the merchant rate columns of the ranker's table
(ranking.ranker.RATE_COLUMNS, from the log before the test day: enters per impression, share of visits
watched >= 30 s, both shrunk to the platform's rate); ties broken at random. Also the share of new targets
whose merchant had no enter before the test day (cold). A diagnosis of where the discovery gap lies, not a
ranker: the ranker's own use of the columns is measured by bench_ranker_validation.py --after
merchant_rates=true. Writes bench/results/discovery_signals.json and its docs/benchmarks.md block.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "bench"))

SIGNALS = ("live_pop", "enter_rate", "watch_rate")


def run(world: str, seed: int, args: argparse.Namespace) -> dict[str, Any]:
    import numpy as np

    from ranking.ranker import RATE_COLUMNS
    from ranking.replay import rates_of, replay
    from worlds.evaluate import DAY_MS, world_log

    opened = world_log(world, seed, args.viewers, args.merchants, Path(args.world_cache))
    log, split = opened.log, opened.split
    n = len(log.merchant_ids)
    rates = rates_of(log, np.arange(n, dtype=np.int64), n, split)
    (targets,) = replay(
        log, opened.schedule, opened.features, None, [(split, split + DAY_MS)], [args.targets], seed=seed
    )
    rng = np.random.default_rng(seed)
    hits: dict[str, list[bool]] = {name: [] for name in SIGNALS}
    cold = 0
    for t in targets:
        never = ~t.entered_before
        if t.repeat or not never[t.target]:
            continue
        items = t.request.items
        at = np.where(items >= 0, items, n)
        cold += bool(rates[at[t.target], RATE_COLUMNS.index("unseen")])
        noise = rng.random(items.shape[0]) * 1e-9
        values = {"live_pop": t.live_pop.astype(np.float64)}
        for name in ("enter_rate", "watch_rate"):
            values[name] = rates[at, RATE_COLUMNS.index(name)]
        for name, v in values.items():
            v = np.where(never, v + noise, -np.inf)
            hits[name].append(int((v > v[t.target]).sum()) < 5)
    new = len(hits["live_pop"])
    return {
        "new_targets": new,
        "cold_share": round(cold / new, 3) if new else None,
        **{f"hr5_{name}": round(float(np.mean(h)), 4) if h else None for name, h in hits.items()},
    }


def main() -> None:
    from bench_scorer import command_line, write_results
    from world_args import add_world_args, world_seed

    ap = argparse.ArgumentParser()
    add_world_args(ap)
    args = ap.parse_args()
    runs: dict[str, Any] = {}
    t0 = time.perf_counter()
    for spec in args.worlds:
        world, seed = world_seed(spec)
        runs[spec] = run(world, seed, args)
        print(spec, runs[spec], flush=True)
    lines = [
        f"{len(runs)} world-seeds, {args.viewers:,} viewers, {args.merchants:,} merchants, {args.targets:,} "
        f"test targets, {time.perf_counter() - t0:.0f} s; HR@5 of new targets among never-watched live rooms "
        "by one signal each (rates from the log before the test day)",
        "",
        "| world-seed | new targets | cold (no enter before) | live POP | enters per impression | visits watched |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for spec, r in runs.items():
        lines.append(
            f"| {spec} | {r['new_targets']} | {r['cold_share']:.0%} | {r['hr5_live_pop']:.3f} "
            f"| {r['hr5_enter_rate']:.3f} | {r['hr5_watch_rate']:.3f} |"
        )
    print("\n".join(lines))
    write_results(
        "discovery_signals",
        command_line(),
        {"viewers": args.viewers, "merchants": args.merchants, "targets": args.targets, "runs": runs},
        lines,
        "discovery_signals — one merchant signal alone among never-watched live rooms, per world-seed",
    )


if __name__ == "__main__":
    main()
