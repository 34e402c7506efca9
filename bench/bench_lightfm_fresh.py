"""Benchmark: LightFM "a" fit once before the ranker's window vs refit per day of it, on the same test day.

    .venv/bin/python bench/bench_lightfm_fresh.py WORLD:SEED [WORLD:SEED ...] [--viewers 10000
        --merchants 500 --targets 4000 --world-cache reports/worlds/cache --name lightfm_fresh]

Per world and seed (simulator.presets, days 0-5 the log, day 6 the test day), `ranking.offline.fit_model`
twice on the same log, one LightFM thread (the world harness's setting): `FitConfig(lightfm_a="once")` (one
fit before the ranker's window scores all its lists: a column up to the window's length stale) and
`lightfm_a="daily"` (each day of the window scored by a fit on everything before it, as fresh as the
serving column). The LightFM that serves is the same fit in both (the whole window, one thread), so the
test day is replayed once and the four rankers — each fit's ranker and its ablation without LightFM — are
judged on the same targets by the page the feed would serve (feed.replay.FeedPage): HR@5 overall, new
targets on the full list, discovery (own order among never-watched live rooms); daily - once with
intervals that resample viewers; the ablation on new targets per fit (the issue's LightFM line); each
fit's LightFM choice. Writes bench/results/NAME.json and the docs/benchmarks.md block.
"""

from __future__ import annotations

import argparse
import dataclasses
import io
import json
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "bench"))

FITS = ("once", "daily")


def run(world: str, seed: int, args: argparse.Namespace) -> dict[str, Any]:
    import numpy as np
    from bench_lightfm_parts import INTERVAL
    from bench_ranker_validation import _viewer_interval

    from feed.replay import FeedPage
    from ranking.evaluation import baseline, ranker_method
    from ranking.model import ModelParams
    from ranking.offline import FitConfig, evaluate_model, fit_model, lightfm_a_windows, ranker_window
    from worlds.evaluate import DAY_MS, discovery_beyond_page, world_log

    opened = world_log(world, seed, args.viewers, args.merchants, Path(args.world_cache))
    log, features, schedule, until = opened.log, opened.features, opened.schedule, opened.split
    base = FitConfig(model=ModelParams(num_threads=1), seed=seed)
    out: dict[str, Any] = {}
    fitted: dict[str, Any] = {}
    for name in FITS:
        cfg = dataclasses.replace(base, lightfm_a=name)
        t0 = time.perf_counter()
        fitted[name] = fit_model(log, features, schedule, until, cfg, version=name, say=io.StringIO())
        info = fitted[name].ranker.info
        out[name] = {
            "ranker_days": round((until - ranker_window(log, until, cfg)) / DAY_MS, 2),
            "ranker_parts": len(lightfm_a_windows(log, ranker_window(log, until, cfg), until, cfg)),
            "lightfm_used": info.get("lightfm_used"),
            "lightfm_discovery_only": info.get("lightfm_discovery_only"),
            "lightfm_gain": info.get("lightfm_gain"),
            "lightfm_gain_se": info.get("lightfm_gain_se"),
            "lightfm_discovery_gain": info.get("lightfm_discovery_gain"),
            "lightfm_discovery_gain_se": info.get("lightfm_discovery_gain_se"),
            "fit_s": round(time.perf_counter() - t0, 1),
        }
    model = fitted["once"].model  # the serving LightFM: the same one-thread fit on the whole window in both
    rankers = {}
    for name in FITS:
        rankers[name] = fitted[name].ranker
        rankers[f"{name}_no_lightfm"] = fitted[name].ranker_no_lightfm
    page = FeedPage(schedule.room_features, seed=seed)
    ev, targets = evaluate_model(
        log,
        features,
        schedule,
        {name: (model, r) for name, r in rankers.items()},
        (until, until + DAY_MS),
        max_targets=args.targets,
        seed=seed,
        page=page,
    )
    own = discovery_beyond_page(targets, {name: ranker_method(r) for name, r in rankers.items()}, page, seed)
    pop = ev.best_pop
    own_pop = float(discovery_beyond_page(targets, {pop: baseline(pop, seed)}, page, seed)[pop]["hr5"])
    for name in rankers:
        res = ev.results[name]
        out.setdefault(name, {}).update(
            hr5=round(res["overall"]["hr5"], 4),
            hr5_new=round(res["new"]["hr5"], 4),
            hr5_new_discovery=round(float(own[name]["hr5"]), 4),
        )
    viewers = np.array([t.viewer for t in targets if not t.repeat])
    for split in ("overall", "new"):
        d = ev.difference("daily", "once", split, seed=seed)
        out[f"daily_minus_once_{split}"] = {k: round(d[k], 4) for k in INTERVAL}
    out["daily_minus_once_discovery"] = _viewer_interval(
        own["daily"]["hits"] - own["once"]["hits"], viewers, seed
    )
    for name in FITS:
        d = ev.difference(name, f"{name}_no_lightfm", "new", seed=seed)
        out[name]["ablation_new"] = {k: round(d[k], 4) for k in INTERVAL}
        out[name]["ablation_discovery"] = _viewer_interval(
            own[name]["hits"] - own[f"{name}_no_lightfm"]["hits"], viewers, seed
        )
    out.update(
        best_pop=pop,
        hr5_new_pop=round(ev.results[pop]["new"]["hr5"], 4),
        hr5_new_discovery_pop=round(own_pop, 4),
        targets=len(targets),
    )
    return out


def main() -> None:
    from bench_scorer import command_line, write_results
    from world_args import add_world_args, world_seed

    ap = argparse.ArgumentParser()
    add_world_args(ap)
    ap.add_argument("--name", default="lightfm_fresh", help="the record's name (bench/results/NAME.json)")
    args = ap.parse_args()
    runs: dict[str, Any] = {}
    lines: list[str] = []
    for spec in args.worlds:
        world, seed = world_seed(spec)
        r = run(world, seed, args)
        runs[f"{world}-{seed}"] = r
        d, n, o = r["daily_minus_once_discovery"], r["daily_minus_once_new"], r["daily_minus_once_overall"]
        lines.append(
            f"{world} {seed} ({r['daily']['ranker_days']} ranker days, {r['daily']['ranker_parts']} parts): "
            f"LightFM kept once/daily {r['once']['lightfm_used']}/{r['daily']['lightfm_used']}; daily - once: "
            f"HR@5 {o['diff']:+.4f} ({o['ci_low']:+.4f}..{o['ci_high']:+.4f}), new {n['diff']:+.4f} "
            f"({n['ci_low']:+.4f}..{n['ci_high']:+.4f}), discovery {d['diff']:+.4f} ({d['ci_low']:+.4f}.."
            f"{d['ci_high']:+.4f}); ablation on new once {r['once']['ablation_new']['diff']:+.4f} (low "
            f"{r['once']['ablation_new']['ci_low']:+.4f}), daily {r['daily']['ablation_new']['diff']:+.4f} (low "
            f"{r['daily']['ablation_new']['ci_low']:+.4f}); new once/daily {r['once']['hr5_new']:.3f}/"
            f"{r['daily']['hr5_new']:.3f} vs {r['best_pop']} {r['hr5_new_pop']:.3f}"
        )
        print(lines[-1], flush=True)
    write_results(
        args.name,
        command_line(),
        {"viewers": args.viewers, "merchants": args.merchants, "runs": runs},
        lines,
        "lightfm_fresh — LightFM 'a' once before the ranker's window vs refit per day, same test day",
    )
    print(json.dumps({k: [v[f]["fit_s"] for f in FITS] for k, v in runs.items()}))


if __name__ == "__main__":
    main()
