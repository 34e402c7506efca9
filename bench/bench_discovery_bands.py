"""Benchmark: the discovery part's order per repeat band — one discovery part for every viewer against one
per band of the viewer's repeat share, judged among never-watched live rooms on the test day.

    .venv/bin/python bench/bench_discovery_bands.py WORLD:SEED [WORLD:SEED ...] [--viewers 10000
        --merchants 500 --targets 4000 --world-cache reports/worlds/cache]

Why: the world family's per-band split (bench_ranker_validation's `where_new_are_lost`) shows the ranker's
discovery order beating live popularity for explorers and losing to it for repeat-heavy viewers (drifting
1, band 2), while one discovery part serves every band. Per world and seed (simulator.presets, days 0-5
the log, day 6 the test day): the trainer's lists (ranking.offline.ranker_targets with LightFM "a", as
`fit_model` builds them), the discovery lists of training, validation and test (ranking.ranker.
discovery_lists: new-merchant targets among never-entered rooms). Designs, each fit on the training
discovery lists with L2 chosen on the validation discovery lists, as `fit_ranker`'s discovery part:
"shared" (the trainer's discovery part), "by_band" (a part per repeat band, a band with fewer than
MIN_DISCOVERY_LISTS training lists keeps the shared part), "by_band_viewer" (shared room weights, the
viewer columns' weights per band: what the feed could serve at no cost, as its room part is cached per
candidate set). Figures: HR@5 among never-watched rooms per band and overall, each design minus shared
with an interval that resamples viewers, and live popularity (the pop_1h column) beside them. A
diagnostic: the test lists carry LightFM "a"'s column, not the refit model's.
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


def run(world: str, seed: int, args: argparse.Namespace) -> dict[str, Any]:
    import dataclasses

    import numpy as np

    from ranking.dataset import build_training_set
    from ranking.model import ModelParams, train_model
    from ranking.offline import FitConfig, ranker_targets, ranker_window, training_lists
    from ranking.ranker import (
        FEATURES,
        L2_GRID,
        MIN_DISCOVERY_LISTS,
        N_ROOM,
        F,
        Lists,
        _fit,
        discovery_lists,
        judged_values,
        list_ranks,
    )
    from ranking.replay import replay
    from ranking.scorer import Scorer
    from worlds.evaluate import DAY_MS, world_log

    opened = world_log(world, seed, args.viewers, args.merchants, Path(args.world_cache))
    log, features, schedule, until = opened.log, opened.features, opened.schedule, opened.split
    cfg = FitConfig(model=ModelParams(num_threads=1), seed=seed)
    ranker_from = ranker_window(log, until, cfg)
    early = train_model(
        build_training_set(log, features, ranker_from, cfg.weights),
        dataclasses.replace(cfg.model, num_threads=1),
        "a",
        progress=False,
    )
    scorer = Scorer(early)
    targets, held = ranker_targets(log, schedule, features, scorer, ranker_from, until, cfg)
    (test,) = replay(log, schedule, features, scorer, [(until, until + DAY_MS)], [args.targets], seed=seed)
    lists, val, tst = (training_lists(t, cfg.purchase_weight) for t in (targets, held, test))
    every = lists.concat(val)
    sd = every.x.astype(np.float64).std(axis=0)
    mask = sd > 1e-9
    scale = np.where(mask, sd, 1.0)
    dtr, dva, dte = (discovery_lists(x.scaled(scale)) for x in (lists, val, tst))

    def hr5(w: np.ndarray, on: Lists) -> np.ndarray:
        scores = on.x.astype(np.float64) @ w
        return (list_ranks(scores, on.offsets, on.target) < 5).astype(np.float64)

    def fit(train: Lists, valid: Lists, m: np.ndarray) -> np.ndarray:
        def value(l2: float) -> float:
            w = _fit(train, l2, m)
            scores = valid.x.astype(np.float64) @ w + (valid.offset if valid.offset is not None else 0.0)
            return float(judged_values(list_ranks(scores, valid.offsets, valid.target)).mean())

        l2 = max(L2_GRID, key=value) if len(valid) >= 20 else L2_GRID[-1]
        return _fit(train, l2, m)

    shared = fit(dtr, dva, mask)
    tb, vb, eb = dtr.bands(), dva.bands(), dte.bands()
    out: dict[str, Any] = {"lists": len(dtr), "validation_lists": len(dva), "test_lists": len(dte)}
    designs: dict[str, np.ndarray] = {"shared": hr5(shared, dte)}
    # live popularity: the pop_1h column's order (ties against the target)
    pop_w = np.zeros(len(FEATURES))
    pop_w[F["pop_1h"]] = 1.0
    designs["live_pop"] = hr5(pop_w, dte)
    for name in ("by_band", "by_band_viewer"):
        hits = designs["shared"].copy()
        weights = {}
        for b in range(4):
            tr_in, va_in, te_in = tb == b, vb == b, eb == b
            if tr_in.sum() < MIN_DISCOVERY_LISTS or te_in.sum() == 0:
                continue
            tr_b, va_b, te_b = (
                x.subset(np.flatnonzero(i)) for x, i in ((dtr, tr_in), (dva, va_in), (dte, te_in))
            )
            if name == "by_band":
                w = fit(tr_b, va_b, mask)
            else:
                # The room columns keep the shared weights: their score is an offset of the band's fit.
                m = mask.copy()
                m[:N_ROOM] = False
                room = np.zeros(len(FEATURES))
                room[:N_ROOM] = shared[:N_ROOM]

                def with_room(x: Lists, room: np.ndarray = room) -> Lists:
                    base = x.x.astype(np.float64) @ room
                    off = (x.offset if x.offset is not None else 0.0) + base
                    return Lists(x.x, x.offsets, x.target, x.weight, off, x.viewer, x.band)

                w = fit(with_room(tr_b), with_room(va_b), m) + room
            weights[b] = w
            hits[np.flatnonzero(te_in)] = hr5(w, te_b)
        designs[name] = hits
        out[f"{name}_bands_fit"] = sorted(weights)
    viewers = dte.viewers()
    rng = np.random.default_rng(seed)
    ids, inverse = np.unique(viewers, return_inverse=True)
    draws = rng.integers(0, ids.size, size=(1000, ids.size))
    counts = np.bincount(inverse, minlength=ids.size)

    def interval(values: np.ndarray) -> dict[str, float]:
        sums = np.bincount(inverse, weights=values, minlength=ids.size)
        means = sums[draws].sum(axis=1) / counts[draws].sum(axis=1)
        return {
            "diff": round(float(values.mean()), 4),
            "ci_low": round(float(np.quantile(means, 0.025)), 4),
            "ci_high": round(float(np.quantile(means, 0.975)), 4),
        }

    for name, hits in designs.items():
        out[name] = {
            "hr5": round(float(hits.mean()), 4),
            "by_band": {str(b): round(float(hits[eb == b].mean()), 4) for b in range(4) if (eb == b).any()},
        }
        if name != "shared":
            out[f"{name}_minus_shared"] = interval(hits - designs["shared"])
    out["band_targets"] = {str(b): int((eb == b).sum()) for b in range(4)}
    return out


def main() -> None:
    from world_args import add_world_args, world_seed

    ap = argparse.ArgumentParser()
    add_world_args(ap, nargs="*")
    ap.add_argument("--out", default=None, help="write the runs as JSON here (no results file)")
    ap.add_argument("--runs", nargs="*", default=[], help="record runs saved by --out instead of running")
    ap.add_argument("--made-by", nargs="*", default=[], help="with --runs: the command line of each file")
    args = ap.parse_args()
    runs: dict[str, Any] = {}
    for path in args.runs:
        runs.update(json.loads(Path(path).read_text()))
    for spec in [] if args.runs else args.worlds:
        world, seed = world_seed(spec)
        t0 = time.perf_counter()
        runs[spec] = run(world, seed, args)
        runs[spec]["wall_s"] = round(time.perf_counter() - t0, 1)
        print(json.dumps({spec: runs[spec]}), flush=True)
        if args.out:
            Path(args.out).write_text(json.dumps(runs, indent=1))
    if args.out:
        return
    record(runs, args)


def record(runs: dict[str, Any], args: argparse.Namespace) -> None:
    """bench/results/discovery_bands.json and its docs/benchmarks.md block."""
    from bench_scorer import command_line, write_results

    def ci(d: dict[str, float]) -> str:
        return f"{d['diff']:+.4f} ({d['ci_low']:+.3f}..{d['ci_high']:+.3f})"

    lines = [
        "| world-seed | discovery lists train / val / test | live POP (pop_1h) | shared part | by band - shared "
        "| by band, viewer columns only - shared | shared by band 0/1/2 vs live POP |",
        "|---|---|---|---|---|---|---|",
    ]
    for spec, r in runs.items():
        bands = " / ".join(
            f"{r['shared']['by_band'].get(b, float('nan')):.3f} vs {r['live_pop']['by_band'].get(b, float('nan')):.3f}"
            for b in ("0", "1", "2")
        )
        lines.append(
            f"| {spec} | {r['lists']:,} / {r['validation_lists']:,} / {r['test_lists']:,} "
            f"| {r['live_pop']['hr5']:.4f} | {r['shared']['hr5']:.4f} | {ci(r['by_band_minus_shared'])} "
            f"| {ci(r['by_band_viewer_minus_shared'])} | {bands} |"
        )
    print("\n".join(lines))
    write_results(
        "discovery_bands",
        command_line(),
        {"viewers": args.viewers, "merchants": args.merchants, "made_by": args.made_by, "runs": runs},
        lines,
        "The discovery part: one for every viewer vs one per repeat band (HR@5 among never-entered rooms)",
    )


if __name__ == "__main__":
    main()
