"""Benchmark: how much LightFM's ablation on new targets moves with the fit's own draws (FitConfig.seed).

    .venv/bin/python bench/bench_lightfm_seeds.py WORLD:SEED [WORLD:SEED ...] [--fit-seeds 0,1,2
        --viewers 10000 --merchants 500 --targets 4000 --world-cache reports/worlds/cache --name lightfm_seeds]

The issue's LightFM line reads one fit per world-seed: the ablation's interval resamples the test day's
viewers, not the fit. `FitConfig.seed` draws which enters become the ranker's training lists and which
viewers validate; per world-seed, `fit_model` once per fit seed on the same log (one LightFM thread, so the
serving LightFM is the same fit every time), all rankers and their ablations judged on the same test-day
targets by the page the feed would serve. Per fit seed: LightFM kept or not, HR@5 overall, new targets with
and without LightFM, and the ablation on new targets with its interval; then the spread across fit seeds.
Writes bench/results/NAME.json and the docs/benchmarks.md block.
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


def run(world: str, seed: int, fit_seeds: list[int], args: argparse.Namespace) -> dict[str, Any]:
    from bench_lightfm_parts import INTERVAL

    from feed.replay import FeedPage
    from ranking.model import ModelParams
    from ranking.offline import FitConfig, evaluate_model, fit_model
    from worlds.evaluate import DAY_MS, world_log

    opened = world_log(world, seed, args.viewers, args.merchants, Path(args.world_cache))
    log, features, schedule, until = opened.log, opened.features, opened.schedule, opened.split
    fitted = {}
    out: dict[str, Any] = {}
    for s in fit_seeds:
        cfg = FitConfig(model=ModelParams(num_threads=1), seed=s)
        t0 = time.perf_counter()
        fitted[s] = fit_model(log, features, schedule, until, cfg, version=f"s{s}", say=io.StringIO())
        out[f"fit_{s}"] = {
            "lightfm_used": fitted[s].ranker.info.get("lightfm_used"),
            "lightfm_gain": fitted[s].ranker.info.get("lightfm_gain"),
            "lightfm_gain_se": fitted[s].ranker.info.get("lightfm_gain_se"),
            "fit_s": round(time.perf_counter() - t0, 1),
        }
    model = fitted[fit_seeds[0]].model  # one LightFM thread: the same serving fit for every fit seed
    methods = {}
    for s in fit_seeds:
        methods[f"ranker_{s}"] = (model, fitted[s].ranker)
        methods[f"no_lightfm_{s}"] = (model, fitted[s].ranker_no_lightfm)
    page = FeedPage(schedule.room_features, seed=seed)
    ev, targets = evaluate_model(
        log,
        features,
        schedule,
        methods,
        (until, until + DAY_MS),
        max_targets=args.targets,
        seed=seed,
        page=page,
    )
    for s in fit_seeds:
        r = ev.results
        d = ev.difference(f"ranker_{s}", f"no_lightfm_{s}", "new", seed=seed)
        out[f"fit_{s}"].update(
            hr5=round(r[f"ranker_{s}"]["overall"]["hr5"], 4),
            hr5_new=round(r[f"ranker_{s}"]["new"]["hr5"], 4),
            hr5_new_no_lightfm=round(r[f"no_lightfm_{s}"]["new"]["hr5"], 4),
            ablation_new={k: round(d[k], 4) for k in INTERVAL},
        )
    news = [out[f"fit_{s}"]["hr5_new"] for s in fit_seeds]
    plain = [out[f"fit_{s}"]["hr5_new_no_lightfm"] for s in fit_seeds]
    out.update(
        targets=len(targets),
        hr5_new_spread=round(max(news) - min(news), 4),
        hr5_new_no_lightfm_spread=round(max(plain) - min(plain), 4),
        ablation_new_ci_low_above_0=sum(out[f"fit_{s}"]["ablation_new"]["ci_low"] > 0 for s in fit_seeds),
    )
    return out


def main() -> None:
    from bench_scorer import command_line, write_results
    from world_args import add_world_args, world_seed

    ap = argparse.ArgumentParser()
    add_world_args(ap)
    ap.add_argument("--fit-seeds", type=lambda s: [int(x) for x in s.split(",")], default=[0, 1, 2])
    ap.add_argument("--name", default="lightfm_seeds", help="the record's name (bench/results/NAME.json)")
    args = ap.parse_args()
    runs: dict[str, Any] = {}
    lines: list[str] = []
    for spec in args.worlds:
        world, seed = world_seed(spec)
        r = run(world, seed, args.fit_seeds, args)
        runs[f"{world}-{seed}"] = r
        per = "; ".join(
            f"fit seed {s}: LightFM {'kept' if r[f'fit_{s}']['lightfm_used'] else 'dropped'}, new "
            f"{r[f'fit_{s}']['hr5_new']:.3f} (without {r[f'fit_{s}']['hr5_new_no_lightfm']:.3f}), ablation "
            f"{r[f'fit_{s}']['ablation_new']['diff']:+.4f} ({r[f'fit_{s}']['ablation_new']['ci_low']:+.4f}.."
            f"{r[f'fit_{s}']['ablation_new']['ci_high']:+.4f})"
            for s in args.fit_seeds
        )
        lines.append(
            f"{world} {seed}: {per}; spread of new {r['hr5_new_spread']:.4f} (without LightFM "
            f"{r['hr5_new_no_lightfm_spread']:.4f}); ablation CI above 0 in {r['ablation_new_ci_low_above_0']} "
            f"of {len(args.fit_seeds)} fits"
        )
        print(lines[-1], flush=True)
    write_results(
        args.name,
        command_line(),
        {"viewers": args.viewers, "merchants": args.merchants, "fit_seeds": args.fit_seeds, "runs": runs},
        lines,
        "lightfm_seeds — LightFM's ablation on new targets across the fit's own draws (FitConfig.seed)",
    )
    print(json.dumps({k: [v[f"fit_{s}"]["fit_s"] for s in args.fit_seeds] for k, v in runs.items()}))


if __name__ == "__main__":
    main()
