"""Benchmark: how much discovery each world leaves to learn — the world or the training (issue 13).

`.venv/bin/python bench/bench_headroom.py --world latent,category,loyal --seeds 2 --world-viewers 10000 --world-merchants 500`

Per world-seed, `worlds.evaluate.run_world` (simulate or read the world from the cache, fit as
`roomfeed train` does, judge the test day) and its headroom (`worlds.headroom`): on every new test target,
each method's own score order among the never-watched live rooms — the simulator's oracles (true taste,
viewer-merchant affinity, the choice model with intent and buzz, the logging policy times the choice), the
ranker with and without LightFM's columns, the ranker without them plus the true taste, LightFM alone, POP
and live POP. The A/B is cut to `--ab-sessions` (its figures are not this benchmark's). Writes
bench/results/headroom.json and its block of docs/benchmarks.md; the full family record
(`bench_eval.py --world all`) carries the same figures per world-seed.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench_scorer import command_line, write_results  # noqa: E402

from worlds.cli import world_names  # noqa: E402
from worlds.evaluate import RunConfig, run_world  # noqa: E402
from worlds.report import headroom_table, headroom_why  # noqa: E402

RESULTS = Path(__file__).resolve().parent / "results"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--world", type=world_names, default=["latent", "category", "loyal"], metavar="NAME|all")
    ap.add_argument("--seeds", type=int, default=2)
    ap.add_argument("--world-viewers", type=int, default=RunConfig.n_viewers)
    ap.add_argument("--world-merchants", type=int, default=RunConfig.n_merchants)
    ap.add_argument("--world-targets", type=int, default=RunConfig.test_targets)
    ap.add_argument("--ab-sessions", type=int, default=40, help="A/B sessions per run (not this benchmark's)")
    ap.add_argument("--world-cache", type=Path, default=Path("reports/worlds/cache"))
    ap.add_argument(
        "--from-results",
        action="store_true",
        help="write the table and lines again from bench/results/headroom.json's figures (no new runs)",
    )
    args = ap.parse_args()
    if args.from_results:
        rewrite_from_results()
        return
    cfg = RunConfig(
        n_viewers=args.world_viewers,
        n_merchants=args.world_merchants,
        test_targets=args.world_targets,
        ab_sessions=args.ab_sessions,
        world_cache=args.world_cache,
    )
    load_before = os.getloadavg()[0]
    started = time.perf_counter()
    runs: dict[str, list[dict[str, Any]]] = {}
    for name in args.world:
        for seed in range(1, args.seeds + 1):
            run = run_world(name, seed, cfg)
            runs.setdefault(name, []).append(run)
            print(f"{name} {seed}: {headroom_why(run)}", file=sys.stderr)
    seconds = time.perf_counter() - started
    load_after = os.getloadavg()[0]
    head = (
        f"{', '.join(args.world)} x {args.seeds} seeds, {cfg.n_viewers:,} viewers, {cfg.n_merchants:,} merchants, "
        f"{cfg.test_targets:,} test targets; {seconds / 60:.1f} min, host load {load_before:.1f} -> {load_after:.1f}; "
        "HR@5 of new targets among never-watched live rooms, each method by its own score order "
        "(worlds.headroom); gains with 95 % intervals, viewers resampled"
    )
    write(command_line(), runs, head, seconds, (load_before, load_after))


def write(
    command: str, runs: dict[str, list[dict[str, Any]]], head: str, seconds: float, load: tuple[float, float]
) -> None:
    lines = [
        head,
        "",
        *headroom_table(runs).splitlines(),
        "",
        *(f"- {name} {run['seed']}: {headroom_why(run)}" for name, rs in runs.items() for run in rs),
    ]
    print("\n".join(lines))
    write_results(
        "headroom",
        command,
        {
            "worlds": {
                name: {str(run["seed"]): run["offline"]["headroom"] for run in rs}
                for name, rs in runs.items()
            },
            "lightfm_used": {
                name: {str(run["seed"]): run.get("ranker", {}).get("lightfm_used") for run in rs}
                for name, rs in runs.items()
            },
            "seconds": round(seconds, 1),
            "load": [round(load[0], 1), round(load[1], 1)],
            "head": head,
        },
        lines,
        "headroom — oracle orders of the never-watched live rooms: the world or the training",
    )


def rewrite_from_results() -> None:
    """The record's text again from its stored figures (a report wording changed after the runs)."""
    stored = json.loads((RESULTS / "headroom.json").read_text())
    m = stored["metrics"]
    runs = {
        name: [
            {
                "seed": int(seed),
                "offline": {"headroom": h},
                "ranker": {"lightfm_used": m["lightfm_used"][name][seed]},
            }
            for seed, h in seeds.items()
        ]
        for name, seeds in m["worlds"].items()
    }
    write(stored["command"], runs, m["head"], m["seconds"], (m["load"][0], m["load"][1]))


if __name__ == "__main__":
    main()
