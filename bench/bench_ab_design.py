"""Benchmark: how precise the world A/B is for what it costs, per design (worlds.online).

`.venv/bin/python bench/bench_ab_design.py`  (worlds loyal and latent, seeds 1 and 2, 10,000 viewers)

In each world-seed one model is fit (as `roomfeed evaluate --world` fits it) and the A/B (ranker vs the
best REP-then-popularity baseline, through the feed) is run with every design at every session count:
- split: each viewer in one arm by the experiments hash, one shared world (a real platform's A/B);
- split + CUPED: the same runs, each viewer's pre-period (the log before the test day) taken out;
- paired: every session played in both arms, each arm its own world, the viewer's seed shared.
Per design and size: the 95 % interval width of the watch-minutes-per-session and orders-per-1k
differences (viewers resampled), the CPU seconds of the A/B, and the width at equal CPU
(width x sqrt(CPU / split's CPU at the same sessions): what the split design would need in sessions).
Writes bench/results/eval_ab_design.json and its block in docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench_scorer import command_line, write_results  # noqa: E402

from feed.replay import FeedPage  # noqa: E402
from ranking.offline import FittedModel, evaluate_model, fit_model  # noqa: E402
from ranking.scorer import Scorer  # noqa: E402
from worlds.evaluate import (  # noqa: E402
    DAY_MS,
    ModelHolder,
    RunConfig,
    WorldLog,
    _Quiet,
    baseline_model,
    world_log,
)
from worlds.online import Arm, arm_metrics, bootstrap_diff, pre_period, run_ab  # noqa: E402

METRICS = ("watch_min_per_session", "orders_per_1k")


def fit_world(name: str, seed: int, cfg: RunConfig) -> tuple[WorldLog, int, FittedModel]:
    """World `name` at `seed` (from the cache) and a model fit as `roomfeed evaluate --world` fits it:
    (the world's log, the test day, the fitted model)."""
    opened = world_log(name, seed, cfg.n_viewers, cfg.n_merchants, cfg.world_cache, cfg.train_days)
    fit = dataclasses.replace(cfg.fit, seed=seed)
    fitted = fit_model(
        opened.log, opened.features, opened.schedule, opened.split, fit, version="ab", say=_Quiet()
    )
    return opened, cfg.train_days + 1, fitted


def measure(name: str, seed: int, cfg: RunConfig, sizes: list[int | None]) -> list[dict[str, Any]]:
    opened, test_day, fitted = fit_world(name, seed, cfg)
    market, log, split = opened.market, opened.log, opened.split
    features, schedule = opened.features, opened.schedule
    ev, _ = evaluate_model(
        log,
        features,
        schedule,
        {"ranker": (fitted.model, fitted.ranker)},
        (split, split + DAY_MS),
        max_targets=500,
        seed=seed,
        page=FeedPage(schedule.room_features, seed=seed),
    )
    arms = [
        Arm("ranker", ModelHolder(Scorer(fitted.model))),
        Arm("baseline", ModelHolder(Scorer(baseline_model(fitted.model, ev.best_baseline)))),
    ]

    def rates(viewers: np.ndarray) -> dict[str, np.ndarray]:
        return pre_period(market, split, viewers.astype(np.int64))

    rows: list[dict[str, Any]] = []
    for size in sizes:
        split_cpu = 0.0
        for design in ("split", "paired"):
            c0 = time.process_time()
            ab = run_ab(market, test_day, arms, max_sessions=size, seed=seed, design=design)
            cpu = time.process_time() - c0
            split_cpu = cpu if design == "split" else split_cpu
            sessions = int(sum(ab[a]["viewer"].size for a in ("ranker", "baseline")))
            variants = [(design, None)] + ([("split+cuped", rates)] if design == "split" else [])
            for label, pre in variants:
                diffs = bootstrap_diff(
                    ab["ranker"], ab["baseline"], seed=seed, paired=design == "paired", pre=pre
                )
                row: dict[str, Any] = {
                    "world": name,
                    "seed": seed,
                    "design": label,
                    "sessions_drawn": size or "all",
                    "session_runs": sessions,
                    "ab_cpu_s": round(cpu, 1),
                    "arms": {a: arm_metrics(ab[a]) for a in ("ranker", "baseline")},
                }
                for m in METRICS:
                    value, low, high = diffs[m]
                    width = high - low
                    row[f"{m}_diff"] = round(value, 3)
                    row[f"{m}_ci"] = [round(low, 3), round(high, 3)]
                    row[f"{m}_width"] = round(width, 3)
                    row[f"{m}_width_at_split_cpu"] = round(width * np.sqrt(cpu / max(split_cpu, 1e-9)), 3)
                rows.append(row)
                print(
                    f"{name} {seed} {label:12s} sessions {row['sessions_drawn']!s:>5} runs {sessions:6d} "
                    f"cpu {cpu:6.1f}s  watch {row['watch_min_per_session_diff']:+.2f} "
                    f"{row['watch_min_per_session_ci']} w {row['watch_min_per_session_width']:.2f}  "
                    f"orders {row['orders_per_1k_diff']:+.1f} {row['orders_per_1k_ci']} "
                    f"w {row['orders_per_1k_width']:.1f}",
                    flush=True,
                )
    return rows


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--worlds", default="loyal,latent")
    ap.add_argument("--seeds", type=int, default=2)
    ap.add_argument("--viewers", type=int, default=10_000)
    ap.add_argument("--merchants", type=int, default=500)
    ap.add_argument("--sizes", default="800,3200,0", help="sessions drawn per A/B (0: all of the test day)")
    args = ap.parse_args()
    cfg = RunConfig(
        n_viewers=args.viewers, n_merchants=args.merchants, world_cache=Path("reports/worlds/cache")
    )
    sizes = [int(s) or None for s in args.sizes.split(",")]
    load0, t0 = os.getloadavg()[0], time.perf_counter()
    rows = [
        row
        for name in args.worlds.split(",")
        for seed in range(1, args.seeds + 1)
        for row in measure(name, seed, cfg, sizes)
    ]
    load1 = os.getloadavg()[0]
    lines = [
        f"worlds {args.worlds}, seeds 1-{args.seeds}, {args.viewers:,} viewers / {args.merchants:,} merchants; "
        f"host load {load0:.1f} at the start, {load1:.1f} at the end; {(time.perf_counter() - t0) / 60:.1f} min",
        "",
        "| world | seed | design | sessions drawn | session runs | A/B CPU s | watch min diff (95 % CI) | width "
        "| width at split's CPU | orders/1k diff (95 % CI) | width | width at split's CPU |",
        "|---|---:|---|---:|---:|---:|---|---:|---:|---|---:|---:|",
    ]
    for r in rows:
        w, o = r["watch_min_per_session_ci"], r["orders_per_1k_ci"]
        lines.append(
            f"| {r['world']} | {r['seed']} | {r['design']} | {r['sessions_drawn']} | {r['session_runs']} "
            f"| {r['ab_cpu_s']} | {r['watch_min_per_session_diff']:+.2f} ({w[0]:+.2f} … {w[1]:+.2f}) "
            f"| {r['watch_min_per_session_width']:.2f} | {r['watch_min_per_session_width_at_split_cpu']:.2f} "
            f"| {r['orders_per_1k_diff']:+.1f} ({o[0]:+.1f} … {o[1]:+.1f}) | {r['orders_per_1k_width']:.1f} "
            f"| {r['orders_per_1k_width_at_split_cpu']:.1f} |"
        )
    summary: dict[str, dict[str, float]] = {}
    for design in ("split", "split+cuped", "paired"):
        for m in METRICS:
            ratios = [
                r[f"{m}_width"] / s[f"{m}_width"]
                for r in rows
                if r["design"] == design
                for s in rows
                if s["design"] == "split"
                and (s["world"], s["seed"], s["sessions_drawn"])
                == (r["world"], r["seed"], r["sessions_drawn"])
                and s[f"{m}_width"] > 0
            ]
            summary.setdefault(design, {})[f"{m}_width_ratio_median"] = round(float(np.median(ratios)), 3)
    lines += [
        "",
        "median interval width relative to split at the same sessions drawn: "
        + "; ".join(
            f"{d}: watch {v['watch_min_per_session_width_ratio_median']:.2f}x, orders {v['orders_per_1k_width_ratio_median']:.2f}x"
            for d, v in summary.items()
        ),
    ]
    print("\n".join(lines))
    write_results(
        "eval_ab_design",
        command_line(),
        {"rows": rows, "width_ratio_vs_split": summary, "load": [round(load0, 1), round(load1, 1)]},
        lines,
        "eval — the world A/B's precision per design (split, split + CUPED, paired)",
    )


if __name__ == "__main__":
    main()
