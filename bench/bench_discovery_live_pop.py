"""Benchmark: how close the ranker's discovery order is to live popularity, where live popularity matters.

    .venv/bin/python bench/bench_discovery_live_pop.py WORLD:SEED [WORLD:SEED ...] [--viewers 10000
        --merchants 500 --targets 4000 --world-cache reports/worlds/cache]

Per world and seed (days 0-5 the log, day 6 the test day), the trainer's `fit_model` (LightFM on one
thread), then for each new target of the test day, among the live rooms of merchants the viewer never
entered (the discovery candidates; scores only, no page): the ranker's HR@5 and live POP's, the
Spearman correlation of the two orders, how many of the ranker's top five are live POP's top five, and
the 2x2 of hits (both / ranker only / live POP only / neither): where the two orders differ and who is
right there. Prints one JSON object per world-seed; `--out FILE` keeps them.
"""

from __future__ import annotations

import argparse
import io
import json
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "bench"))


def run(world: str, seed: int, args: argparse.Namespace) -> dict[str, Any]:
    import numpy as np
    from scipy.stats import spearmanr

    from ranking.evaluation import baseline, ranker_method
    from ranking.model import ModelParams
    from ranking.offline import FitConfig, fit_model
    from ranking.replay import replay
    from ranking.scorer import Scorer
    from worlds.evaluate import DAY_MS, world_log

    opened = world_log(world, seed, args.viewers, args.merchants, Path(args.world_cache))
    log, features, schedule, until = opened.log, opened.features, opened.schedule, opened.split
    cfg = FitConfig(model=ModelParams(num_threads=1), seed=seed)
    fitted = fit_model(log, features, schedule, until, cfg, version="d", say=io.StringIO())
    (test,) = replay(
        log, schedule, features, Scorer(fitted.model), [(until, until + DAY_MS)], [args.targets], seed=seed
    )
    ranker, live = ranker_method(fitted.ranker), baseline("live_pop", seed)
    rng = np.random.default_rng(seed)
    hits = {"both": 0, "ranker_only": 0, "live_pop_only": 0, "neither": 0}
    rho: list[float] = []
    overlap: list[int] = []
    n = 0
    for t in test:
        if t.repeat:
            continue
        never = np.flatnonzero(~np.asarray(t.entered_before, dtype=bool))
        if never.size < 6 or t.target not in never:
            continue
        n += 1
        a = np.asarray(ranker(t), dtype=np.float64)[never]
        b = np.asarray(live(t), dtype=np.float64)[never]
        at = int(np.flatnonzero(never == t.target)[0])
        # ties broken at random, as the evaluation does
        ka, kb = rng.random(never.size), rng.random(never.size)
        top_a = np.lexsort((ka, -a))[:5]
        top_b = np.lexsort((kb, -b))[:5]
        hit_a, hit_b = at in top_a, at in top_b
        key = (
            "both" if hit_a and hit_b else "ranker_only" if hit_a else "live_pop_only" if hit_b else "neither"
        )
        hits[key] += 1
        overlap.append(len(set(top_a.tolist()) & set(top_b.tolist())))
        r = spearmanr(a, b).statistic
        if np.isfinite(r):
            rho.append(float(r))
    return {
        "new_targets": n,
        "hr5_ranker": round((hits["both"] + hits["ranker_only"]) / n, 4),
        "hr5_live_pop": round((hits["both"] + hits["live_pop_only"]) / n, 4),
        "hits": {k: round(v / n, 4) for k, v in hits.items()},
        "spearman_median": round(float(np.median(rho)), 3),
        "top5_shared_mean": round(float(np.mean(overlap)), 2),
        "lightfm_used": fitted.ranker.info.get("lightfm_used"),
        "lightfm_discovery_only": fitted.ranker.info.get("lightfm_discovery_only"),
    }


def main() -> None:
    from world_args import add_world_args, world_seed

    ap = argparse.ArgumentParser()
    add_world_args(ap)
    ap.add_argument("--out", default=None)
    args = ap.parse_args()
    runs: dict[str, Any] = {}
    for spec in args.worlds:
        world, seed = world_seed(spec)
        t0 = time.perf_counter()
        runs[spec] = run(world, seed, args)
        runs[spec]["wall_s"] = round(time.perf_counter() - t0, 1)
        print(json.dumps({spec: runs[spec]}), flush=True)
        if args.out:
            Path(args.out).write_text(json.dumps(runs, indent=1))


if __name__ == "__main__":
    main()
