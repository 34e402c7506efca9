"""Benchmark: the learned ranker offline in the repo's worlds, before and after a change (small runs).

    .venv/bin/python bench/bench_ranker_worlds.py run WORLD SEED OUT.json [--viewers 8000 --merchants 400
        --lists 2000 --targets 3000 --epochs 10]
    .venv/bin/python bench/bench_ranker_worlds.py report BEFORE_DIR AFTER_DIR [--before-rev REV]

`run` is one world and seed as `roomfeed evaluate --world` runs it (simulator.presets' world, 7 days, fit
on days 0-5 through `ranking.offline.fit_model` with one LightFM thread, the held-out day 6 judged by
`evaluate_model`), without the A/B and the page judge, so that a before/after table over several worlds
and seeds fits the shared machine. Run it in this tree and with PYTHONPATH pointing at a worktree of the
commit before. `report` reads both folders' `WORLD-SEED.json` and writes bench/results/ranker_worlds.json
and the docs/benchmarks.md block: per world and seed, ranker vs the best REP baseline (HR@5, paired
bootstrap interval), new targets against the better popularity baseline, discovery (new targets among
never-watched candidates) and the LightFM ablation, before and after.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "bench"))


def run(args: argparse.Namespace) -> None:
    from ranking.dataset import from_simulator
    from ranking.offline import FitConfig, evaluate_model, fit_model, merchant_features
    from simulator import Marketplace
    from simulator.presets import world_config
    from worlds.evaluate import DAY_MS, offline_figures, schedule_of, watch_log

    t0 = time.perf_counter()
    market = Marketplace(config=world_config(args.world, args.seed, args.viewers, args.merchants, 7))
    log = watch_log(market, from_simulator(market))
    split = market.config.start_ms + 6 * DAY_MS
    features = merchant_features(market.rooms)
    schedule = schedule_of(market)
    model = dataclasses.replace(FitConfig().model, epochs=args.epochs, num_threads=1)
    fit = FitConfig(ranker_lists=args.lists, seed=args.seed, model=model)
    fitted = fit_model(log, features, schedule, split, fit, version="bench", say=sys.stderr)
    t1 = time.perf_counter()
    judged = {
        "ranker": (fitted.model, fitted.ranker),
        "ranker_no_lightfm": (fitted.model, fitted.ranker_no_lightfm),
    }
    window = (split, split + DAY_MS)
    ev, targets = evaluate_model(log, features, schedule, judged, window, args.targets, args.seed)
    out = offline_figures(ev, targets, args.seed)
    out["ablation_overall"] = ev.difference("ranker", "ranker_no_lightfm", seed=args.seed)
    out["info"] = dict(fitted.ranker.info)
    out["favourites_first"] = getattr(fitted.ranker, "favourites_first", None)
    out["seconds"] = {"fit": t1 - t0, "judge": time.perf_counter() - t1}
    Path(args.out).write_text(json.dumps(out, indent=1, default=float))
    print(line(args.world, args.seed, out))


def line(world: str, seed: int, m: dict[str, Any]) -> str:
    best = m["best_reppop"]
    ablation = m["ablation_overall"]
    return (
        f"{world} s{seed}: ranker {m['hr5_ranker']:.3f}/{m['ndcg10_ranker']:.3f} {best} "
        f"{m['hr5_reppop']:.3f}/{m['ndcg10_reppop']:.3f} diff {m['hr5_diff']:+.3f} "
        f"({m['hr5_diff_ci_low']:+.3f}..{m['hr5_diff_ci_high']:+.3f}) repeat "
        f"{m['methods']['ranker']['hr5_repeat']:.3f} vs {m['methods'][best]['hr5_repeat']:.3f} new "
        f"{m['hr5_new_ranker']:.3f} vs {m['hr5_new_pop']:.3f} discovery {discovery(m):.2f}x, LightFM "
        f"{'kept' if m['info'].get('lightfm_used', 1.0) else 'dropped'}: ablation overall "
        f"{ablation['diff']:+.3f} ({ablation['ci_low']:+.3f}..{ablation['ci_high']:+.3f}), new "
        f"{m['ablation_new_gain']:+.3f} ({m['ablation_new_ci_low']:+.3f}..{m['ablation_new_ci_high']:+.3f})"
    )


def discovery(m: dict[str, Any]) -> float:
    return float(m["hr5_new_discovery_ranker"]) / max(float(m["hr5_new_discovery_pop"]), 1e-9)


def summary(m: dict[str, Any]) -> dict[str, Any]:
    ablation = m["ablation_overall"]
    return {
        "hr5_ranker": round(m["hr5_ranker"], 4),
        "ndcg10_ranker": round(m["ndcg10_ranker"], 4),
        "best_reppop": m["best_reppop"],
        "hr5_reppop": round(m["hr5_reppop"], 4),
        "ndcg10_reppop": round(m["ndcg10_reppop"], 4),
        "hr5_diff": round(m["hr5_diff"], 4),
        "hr5_diff_ci_low": round(m["hr5_diff_ci_low"], 4),
        "hr5_diff_ci_high": round(m["hr5_diff_ci_high"], 4),
        "hr5_repeat_ranker": round(m["methods"]["ranker"]["hr5_repeat"], 4),
        "hr5_repeat_reppop": round(m["methods"][m["best_reppop"]]["hr5_repeat"], 4),
        "hr5_new_ranker": round(m["hr5_new_ranker"], 4),
        "hr5_new_pop": round(m["hr5_new_pop"], 4),
        "discovery_ratio": round(discovery(m), 3),
        "lightfm_used": m["info"].get("lightfm_used", 1.0),
        "favourites_first": m.get("favourites_first"),
        "ablation_overall": round(ablation["diff"], 4),
        "ablation_overall_ci": [round(ablation["ci_low"], 4), round(ablation["ci_high"], 4)],
        "ablation_new": round(m["ablation_new_gain"], 4),
        "ablation_new_ci": [round(m["ablation_new_ci_low"], 4), round(m["ablation_new_ci_high"], 4)],
        "repeat_share": round(m["repeat_share"], 3),
        "targets": m["targets"],
    }


def report(args: argparse.Namespace) -> None:
    from bench_scorer import write_results

    before, after = Path(args.before), Path(args.after)
    runs = sorted(p.stem for p in after.glob("*-*.json") if (before / p.name).exists())
    metrics: dict[str, Any] = {"runs": {}}
    lines = [
        "| world, seed | HR@5 ranker vs best REP (diff, 95% CI) before | after | repeat split after "
        "| new: ranker / better POP before → after | discovery before → after | LightFM after: ablation overall (CI) |",
        "|---|---|---|---|---|---|---|",
    ]
    for stem in runs:
        b = json.loads((before / f"{stem}.json").read_text())
        a = json.loads((after / f"{stem}.json").read_text())
        metrics["runs"][stem] = {"before": summary(b), "after": summary(a)}
        world, seed = stem.rsplit("-", 1)
        ab = a["ablation_overall"]
        lines.append(
            f"| {world} {seed} | {b['hr5_ranker']:.3f} vs {b['hr5_reppop']:.3f} ({b['hr5_diff']:+.3f}, "
            f"{b['hr5_diff_ci_low']:+.3f}..{b['hr5_diff_ci_high']:+.3f}) | {a['hr5_ranker']:.3f} vs "
            f"{a['hr5_reppop']:.3f} ({a['hr5_diff']:+.3f}, {a['hr5_diff_ci_low']:+.3f}..{a['hr5_diff_ci_high']:+.3f}) "
            f"| {a['methods']['ranker']['hr5_repeat']:.3f} vs {a['methods'][a['best_reppop']]['hr5_repeat']:.3f} "
            f"| {b['hr5_new_ranker']:.3f}/{b['hr5_new_pop']:.3f} → {a['hr5_new_ranker']:.3f}/{a['hr5_new_pop']:.3f} "
            f"| {discovery(b):.2f}x → {discovery(a):.2f}x "
            f"| {'kept' if a['info'].get('lightfm_used', 1.0) else 'dropped'}, "
            f"{ab['diff']:+.3f} ({ab['ci_low']:+.3f}..{ab['ci_high']:+.3f}) |"
        )
    if args.before_rev:
        metrics["before_rev"] = args.before_rev
    print("\n".join(lines))
    command = (
        "for each WORLD in loyal live_buzz category latent, SEED in 1 2: .venv/bin/python "
        "bench/bench_ranker_worlds.py run WORLD SEED DIR/WORLD-SEED.json (DIR after: this tree; before: "
        f"PYTHONPATH=<worktree of {args.before_rev or 'the commit before'}>); then "
        f".venv/bin/python bench/bench_ranker_worlds.py report BEFORE AFTER --before-rev {args.before_rev}"
    )
    write_results(
        "ranker_worlds",
        command,
        metrics,
        lines,
        "ranker_worlds — the learned ranker per repo world and seed, before/after (8,000 viewers, "
        "400 merchants, 2,000 lists, 3,000 targets, 10 epochs)",
    )


def main() -> None:
    ap = argparse.ArgumentParser()
    sub = ap.add_subparsers(dest="verb", required=True)
    r = sub.add_parser("run")
    r.add_argument("world")
    r.add_argument("seed", type=int)
    r.add_argument("out")
    r.add_argument("--viewers", type=int, default=8_000)
    r.add_argument("--merchants", type=int, default=400)
    r.add_argument("--lists", type=int, default=2_000)
    r.add_argument("--targets", type=int, default=3_000)
    r.add_argument("--epochs", type=int, default=10)
    p = sub.add_parser("report")
    p.add_argument("before")
    p.add_argument("after")
    p.add_argument("--before-rev", default="")
    args = ap.parse_args()
    run(args) if args.verb == "run" else report(args)


if __name__ == "__main__":
    main()
