"""Benchmark: how fresh the ranker's live popularity is, and what that is worth — designs paired on one test day.

    .venv/bin/python bench/bench_ranker_live_pop.py WORLD:SEED [WORLD:SEED ...] [--designs exact model_table
        viewers] [--viewers 10000 --merchants 500 --targets 4000 --world-cache reports/worlds/cache]
        [--name ranker_live_pop]

The POP and live POP baselines count a merchant's enters up to the request's moment; the ranker's
popularity columns (pop_total, pop_1h, pop_1d, pop_7d) come, in its training and validation lists and in
the evaluation, from the replay's 10-minute table (the trainer's cadence), and in the feed from the serving
model's table, as old as the model (ranking.replay, feed.stages.Rank). Per world and seed (days 0-5 the log,
day 6 the test day), `fit_model` as the trainer runs it, judged on the same test-day enters by the page the
feed would serve, each design against "snapshot" (main: 10-minute tables in the lists and in the test day):

- `exact`: the lists and the test day with the popularity as the baselines count it, exact at each moment
  (`FitConfig.popularity="exact"`, `replay(popularity="exact")`): what a real-time merchant counter would give.
- `model_table`: main's fit, its test day ranked with the model's own table all day long (`table_as_of`): what the
  feed serves when no new model comes (the world A/B, a gate that keeps the serving model).
- `viewers`: the room column `heat` is the viewers in the room at that moment (entered, not yet left) in the
  lists and the test day, instead of events' 15-minute decayed enters (`FitConfig.heat="viewers"`).

HR@5 overall, new targets on the full list, discovery (own order among never-watched live rooms), each
design minus snapshot with an interval that resamples viewers, and each fit's choices. Writes
bench/results/<name>.json and the docs/benchmarks.md block.
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

DESIGNS = ("exact", "model_table", "viewers")


def run(world: str, seed: int, args: argparse.Namespace) -> dict[str, Any]:
    import numpy as np
    from bench_lightfm_parts import INTERVAL
    from bench_ranker_validation import SPLITS, _viewer_interval, choices
    from world_screen import against_popularity

    from feed.replay import FeedPage
    from ranking.evaluation import Method, evaluate, ranker_method
    from ranking.model import ModelParams
    from ranking.offline import FitConfig, fit_model
    from ranking.replay import Target, replay
    from ranking.scorer import Scorer
    from worlds.evaluate import DAY_MS, world_log

    opened = world_log(world, seed, args.viewers, args.merchants, Path(args.world_cache))
    log, features, schedule, until = opened.log, opened.features, opened.schedule, opened.split
    base = FitConfig(model=ModelParams(num_threads=1), seed=seed)
    fits = {"snapshot": base}
    if "exact" in args.designs:
        fits["exact"] = dataclasses.replace(base, popularity="exact")
    if "viewers" in args.designs:
        fits["viewers"] = dataclasses.replace(base, heat="viewers")
    out: dict[str, Any] = {}
    fitted: dict[str, Any] = {}
    for name, cfg in fits.items():
        t0 = time.perf_counter()
        fitted[name] = fit_model(log, features, schedule, until, cfg, version=name, say=io.StringIO())
        out[name] = choices(fitted[name])
        out[name]["fit_s"] = round(time.perf_counter() - t0, 1)
    # Each design's test day: the same sampled enters (one seed and window), replayed its way.
    replays: dict[str, dict[str, Any]] = {
        name: {"popularity": cfg.popularity, "heat": cfg.heat} for name, cfg in fits.items()
    }
    models = {name: fitted[name] for name in fits}
    if "model_table" in args.designs:
        replays["model_table"] = {"table_as_of": fitted["snapshot"].model.table.as_of_ms}
        models["model_table"] = fitted["snapshot"]
        out["model_table"] = dict(out["snapshot"])
    window = (until, until + DAY_MS)
    days: dict[str, list[Target]] = {}
    for name, how in replays.items():
        (days[name],) = replay(
            log, schedule, features, Scorer(models[name].model), [window], [args.targets], seed=seed, **how
        )
    first = days["snapshot"]
    for name, targets in days.items():
        if [t.event for t in targets] != [t.event for t in first]:
            raise SystemExit(f"{name}: the test day's enters differ from snapshot's")

    def on(name: str) -> Method:
        by_event = {t.event: t for t in days[name]}
        method = ranker_method(models[name].ranker)
        return lambda t: method(by_event[t.event])

    page = FeedPage(schedule.room_features, seed=seed)
    methods = {name: on(name) for name in replays}
    ev = evaluate(first, methods, seed, page)
    own, own_pop, figures = against_popularity(ev, first, methods, page, seed, ndcg=True)
    pop = ev.best_pop
    for name in replays:
        out[name].update(figures[name])
    viewers = np.array([t.viewer for t in first if not t.repeat])
    for name in [n for n in replays if n != "snapshot"]:
        for split in SPLITS:
            d = ev.difference(name, "snapshot", split, seed=seed)
            out[f"{name}_minus_snapshot_{split}"] = {k: round(d[k], 4) for k in INTERVAL}
        hits = own[name]["hits"] - own["snapshot"]["hits"]
        out[f"{name}_minus_snapshot_discovery"] = _viewer_interval(hits, viewers, seed)
    best = ev.best_baseline
    out.update(
        best_reppop=best,
        hr5_reppop=round(ev.results[best]["overall"]["hr5"], 4),
        best_pop=pop,
        hr5_new_pop=round(ev.results[pop]["new"]["hr5"], 4),
        hr5_new_discovery_pop=round(own_pop, 4),
        targets=len(first),
    )
    return out


def main() -> None:
    from bench_scorer import command_line, write_results
    from world_args import add_world_args, world_seed

    ap = argparse.ArgumentParser()
    add_world_args(ap, nargs="*")
    ap.add_argument("--designs", nargs="+", choices=DESIGNS, default=list(DESIGNS))
    ap.add_argument("--name", default="ranker_live_pop", help="bench/results/<name>.json")
    ap.add_argument(
        "--merge",
        nargs="+",
        default=[],
        help="bench/results JSON files of earlier runs (e.g. two halves run side by side): one record of them",
    )
    args = ap.parse_args()
    runs: dict[str, Any] = {}
    commands: list[str] = []
    for path in args.merge:
        earlier = json.loads(Path(path).read_text())
        runs.update(earlier["metrics"]["runs"])
        commands.append(earlier["command"])
    for spec in args.worlds:
        world, seed = world_seed(spec)
        t0 = time.perf_counter()
        runs[spec] = run(world, seed, args)
        runs[spec]["wall_s"] = round(time.perf_counter() - t0, 1)
        print(json.dumps({spec: runs[spec]}), flush=True)
    if args.worlds or not commands:
        commands.append(command_line())
    lines = table(runs)
    print("\n".join(lines))
    write_results(
        args.name,
        " ; ".join(commands),
        {"viewers": args.viewers, "merchants": args.merchants, "designs": args.designs, "runs": runs},
        lines,
        "How fresh the ranker's live popularity is: designs against the 10-minute table, same test day",
    )


def table(runs: dict[str, Any]) -> list[str]:
    def ci(d: dict[str, float]) -> str:
        return f"{d['diff']:+.4f} ({d['ci_low']:+.3f}..{d['ci_high']:+.3f})"

    lines = [
        "| world-seed | design | LightFM | HR@5 - snapshot | new on full list - snapshot | discovery - snapshot "
        "| new on full list vs better pop | discovery ratio |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for spec, r in runs.items():
        s = r["snapshot"]
        lines.append(
            f"| {spec} | snapshot | {_lightfm(s)} | | | | {s['hr5_new']:.4f} vs {r['hr5_new_pop']:.4f} "
            f"({ci(s['new_minus_pop'])}) | {s['discovery_ratio']}x |"
        )
        for name in [n for n in DESIGNS if n in r]:
            d = r[name]
            lines.append(
                f"| {spec} | {name} | {_lightfm(d)} | {ci(r[f'{name}_minus_snapshot_overall'])} "
                f"| {ci(r[f'{name}_minus_snapshot_new'])} | {ci(r[f'{name}_minus_snapshot_discovery'])} "
                f"| {d['hr5_new']:.4f} vs {r['hr5_new_pop']:.4f} ({ci(d['new_minus_pop'])}) "
                f"| {d['discovery_ratio']}x |"
            )
    return lines


def _lightfm(choice: dict[str, Any]) -> str:
    if choice.get("lightfm_discovery_only"):
        return "discovery"
    return "kept" if choice.get("lightfm_used") else "dropped"


if __name__ == "__main__":
    main()
