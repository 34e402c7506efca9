"""Benchmark: where the ranker's discovery order loses between its fit and the page the feed serves.

    .venv/bin/python bench/bench_discovery_gap.py WORLD:SEED [WORLD:SEED ...] [--viewers 10000
        --merchants 500 --targets 4000 --world-cache reports/worlds/cache]

Per world and seed (simulator.presets, days 0-5 the log, day 6 the test day): `fit_model` as the trainer
runs it, then the test day replayed twice — with the refit LightFM (what serves) and with LightFM "a" (the
fit before the ranker's days, whose column the ranker's weights were learned on) — and discovery (HR@5 of
new targets among the never-watched live rooms, worlds.evaluate.discovery_beyond_page) of the ranker, the
ranker without LightFM and live POP, each by its own score order and by the page the feed would serve
(feed.replay.FeedPage: diversity and exploration). Writes bench/results/discovery_gap.json and its
docs/benchmarks.md block.
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


class ScoreOrder:
    """A page judge that is the method's own score order (the first `count` rooms)."""

    def __init__(self, count: int = 10) -> None:
        self.count = count

    def __call__(self, target: Any, scores: Any) -> Any:
        import numpy as np

        return np.argsort(-np.asarray(scores, dtype=np.float64), kind="stable")[: self.count]


def run(world: str, seed: int, args: argparse.Namespace) -> dict[str, Any]:
    import dataclasses

    import numpy as np
    from bench_ranker_validation import _viewer_interval

    from feed.replay import FeedPage
    from ranking.dataset import build_training_set
    from ranking.evaluation import baseline, ranker_method
    from ranking.model import ModelParams, train_model
    from ranking.offline import FitConfig, fit_model, ranker_window
    from ranking.replay import replay
    from ranking.scorer import Scorer
    from worlds.evaluate import DAY_MS, discovery_beyond_page, world_log

    opened = world_log(world, seed, args.viewers, args.merchants, Path(args.world_cache))
    log, features, schedule, until = opened.log, opened.features, opened.schedule, opened.split
    cfg = FitConfig(model=ModelParams(num_threads=1), seed=seed)
    fitted = fit_model(log, features, schedule, until, cfg, say=io.StringIO())
    # LightFM "a" again: one thread and the model's seed give the fit fit_model made (FitConfig.decision_threads).
    early = train_model(
        build_training_set(log, features, ranker_window(log, until, cfg), cfg.weights),
        dataclasses.replace(cfg.model, num_threads=1),
        "a",
        progress=False,
    )
    out: dict[str, Any] = {
        "lightfm_used": fitted.ranker.info.get("lightfm_used"),
        "lightfm_discovery_only": fitted.ranker.info.get("lightfm_discovery_only"),
    }
    judges: dict[str, Any] = {
        "score_order": ScoreOrder(),
        "page": FeedPage(schedule.room_features, seed=seed),
    }
    hits: dict[str, Any] = {}
    viewers: Any = None
    for column, model in (("refit", fitted.model), ("a", early)):
        (targets,) = replay(
            log, schedule, features, Scorer(model), [(until, until + DAY_MS)], [args.targets], seed=seed
        )
        methods = {
            "ranker": ranker_method(fitted.ranker),
            "ranker_no_lightfm": ranker_method(fitted.ranker_no_lightfm),
            "live_pop": baseline("live_pop", seed),
            "pop": baseline("pop", seed),
        }
        for judge_name, judge in judges.items():
            if column == "a" and judge_name == "page":
                continue
            found = discovery_beyond_page(targets, methods, judge, seed)
            out[f"{column}_{judge_name}"] = {m: round(float(v["hr5"]), 4) for m, v in found.items()}
            if judge_name == "score_order":
                hits[column] = found["ranker"]["hits"]
                viewers = np.array([t.viewer for t in targets if not t.repeat])
    # The same enters replayed with either column (one replay seed and window): paired, viewers resampled.
    out["refit_minus_a"] = _viewer_interval(hits["refit"] - hits["a"], viewers, seed)
    return out


def main() -> None:
    from bench_scorer import command_line, write_results
    from world_args import add_world_args, world_seed

    ap = argparse.ArgumentParser()
    add_world_args(ap)
    args = ap.parse_args()
    runs: dict[str, Any] = {}
    for spec in args.worlds:
        world, seed = world_seed(spec)
        t0 = time.perf_counter()
        runs[spec] = run(world, seed, args)
        runs[spec]["wall_s"] = round(time.perf_counter() - t0, 1)
        print(json.dumps({spec: runs[spec]}), flush=True)
    lines = [
        "| world-seed | LightFM kept | ranker: refit column, score order / 'a' column / page "
        "| refit - 'a' (CI) | without LightFM: refit / 'a' | live POP: score order / page "
        "| ratio to the better POP: score order / page |",
        "|---|---|---|---|---|---|---|",
    ]
    for spec, r in runs.items():
        so, a, pg, d = r["refit_score_order"], r["a_score_order"], r["refit_page"], r["refit_minus_a"]

        def ratio(x: dict[str, float]) -> float:
            best = max(x["live_pop"], x["pop"])
            return x["ranker"] / best if best else float("nan")

        kept = "discovery part" if r["lightfm_discovery_only"] else "yes" if r["lightfm_used"] else "no"
        lines.append(
            f"| {spec} | {kept} | {so['ranker']:.4f} / {a['ranker']:.4f} / {pg['ranker']:.4f} "
            f"| {d['diff']:+.4f} ({d['ci_low']:+.3f}..{d['ci_high']:+.3f}) "
            f"| {so['ranker_no_lightfm']:.4f} / {a['ranker_no_lightfm']:.4f} "
            f"| {so['live_pop']:.4f} / {pg['live_pop']:.4f} | {ratio(so):.3f}x / {ratio(pg):.3f}x |"
        )
    print("\n".join(lines))
    write_results(
        "discovery_gap",
        command_line(),
        {"viewers": args.viewers, "merchants": args.merchants, "runs": runs},
        lines,
        "Where the discovery order loses: LightFM's refit column and the feed's page",
    )


if __name__ == "__main__":
    main()
