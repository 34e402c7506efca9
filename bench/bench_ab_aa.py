"""Benchmark: an A/A check of the world A/B's split design (why the paired design is the default).

`.venv/bin/python bench/bench_ab_aa.py`  (loyal seed 1, 10,000 viewers, every test-day session)

Runs the split design (viewers by the experiments hash, one shared world) with the learned ranker in
both arms (A/A: any difference is the hash's two halves of viewers), then ranker vs the plain baseline
with the arms' names in both orders (the hash then gives each model the other half), and the paired
design on the same sessions. Writes bench/results/eval_ab_aa.json and its block in docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench_ab_design import fit_world  # noqa: E402
from bench_scorer import command_line, write_results  # noqa: E402

from ranking.scorer import Scorer  # noqa: E402
from worlds.evaluate import ModelHolder, RunConfig, baseline_model  # noqa: E402
from worlds.online import Arm, arm_metrics, bootstrap_diff, pre_period, run_ab  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--world", default="loyal")
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--viewers", type=int, default=10_000)
    ap.add_argument("--merchants", type=int, default=500)
    args = ap.parse_args()
    cfg = RunConfig(
        n_viewers=args.viewers, n_merchants=args.merchants, world_cache=Path("reports/worlds/cache")
    )
    seed, load0 = args.seed, os.getloadavg()[0]
    opened, test_day, fitted = fit_world(args.world, seed, cfg)
    market, split = opened.market, opened.split
    ranker = ModelHolder(Scorer(fitted.model))
    baseline = ModelHolder(Scorer(baseline_model(fitted.model, "rep_live_pop")))

    def pre(viewers: np.ndarray) -> dict[str, np.ndarray]:
        return pre_period(market, split, viewers.astype(np.int64))

    cases = [
        ("split A/A (ranker in both arms)", [Arm("a", ranker), Arm("b", ranker)], "split"),
        ("split, ranker first", [Arm("a", ranker), Arm("b", baseline)], "split"),
        (
            "split, baseline first (the hash's halves swapped)",
            [Arm("b", baseline), Arm("a", ranker)],
            "split",
        ),
        ("paired", [Arm("a", ranker), Arm("b", baseline)], "paired"),
    ]
    rows = []
    for label, arms, design in cases:
        ab = run_ab(market, test_day, arms, seed=seed, design=design)
        paired = design == "paired"
        diffs = bootstrap_diff(ab["a"], ab["b"], seed=seed, paired=paired, pre=None if paired else pre)
        a, b = arm_metrics(ab["a"]), arm_metrics(ab["b"])
        rows.append(
            {
                "case": label,
                "sessions": [int(a["sessions"]), int(b["sessions"])],
                "watch_min_per_session": [
                    round(a["watch_min_per_session"], 2),
                    round(b["watch_min_per_session"], 2),
                ],
                "orders_per_1k": [round(a["orders_per_1k"], 1), round(b["orders_per_1k"], 1)],
                "watch_diff": [round(x, 2) for x in diffs["watch_min_per_session"]],
                "orders_diff": [round(x, 1) for x in diffs["orders_per_1k"]],
            }
        )
        print(rows[-1], flush=True)
    load1 = os.getloadavg()[0]
    lines = [
        f"{args.world} seed {seed}, {args.viewers:,} viewers / {args.merchants:,} merchants, every test-day session; "
        f"arm a = the learned ranker except in the A/A, b = the plain REP-then-live-POP baseline; split differences "
        f"CUPED-adjusted, paired ones viewer by viewer; host load {load0:.1f} at the start, {load1:.1f} at the end",
        "",
        "| case | sessions a / b | watch min / session a / b | a − b (95 % CI) | orders / 1k a / b | a − b (95 % CI) |",
        "|---|---|---|---|---|---|",
        *(
            f"| {r['case']} | {r['sessions'][0]} / {r['sessions'][1]} | {r['watch_min_per_session'][0]} / "
            f"{r['watch_min_per_session'][1]} | {r['watch_diff'][0]:+.2f} ({r['watch_diff'][1]:+.2f} … {r['watch_diff'][2]:+.2f}) "
            f"| {r['orders_per_1k'][0]} / {r['orders_per_1k'][1]} | {r['orders_diff'][0]:+.1f} "
            f"({r['orders_diff'][1]:+.1f} … {r['orders_diff'][2]:+.1f}) |"
            for r in rows
        ),
    ]
    print("\n".join(lines))
    write_results(
        "eval_ab_aa",
        command_line(),
        {"rows": rows, "load": [round(load0, 1), round(load1, 1)]},
        lines,
        "eval — an A/A check of the world A/B's split design",
    )


if __name__ == "__main__":
    main()
