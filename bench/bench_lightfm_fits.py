"""Benchmark: LightFM as the mean of several fits (ModelParams.fits) against one fit, on the same lists and test day.

    .venv/bin/python bench/bench_lightfm_fits.py WORLD:SEED [WORLD:SEED ...] [--design NAME:FIELD=VALUE,...]
        [--viewers 10000 --merchants 500 --targets 4000 --world-cache reports/worlds/cache --name lightfm_fits]

One WARP fit's draw moves the column the ranker reads (bench_lightfm_seeds: ~0.02 on new targets), and the
ranker's LightFM weight is learned on the "a" fits' column but served with the refit model's
(bench_discovery_gap). Per world and seed (simulator.presets, days 0-5 the log, day 6 the test day),
`fit_model` once with main's ModelParams ("main") and once per design (ModelParams fields changed; by
default "fits3": the mean of 3 fits kept at `no_components`, and "fits3_wide": the 3 fits side by side),
every LightFM fit on one thread. Per design against main:
- validation (the rule's input): the ranker's own validation lists (the same enters in every design, each
  scored by its design's "a" fits), the chosen ranker's per-list HR@5 + NDCG@10, paired, viewers as units;
- the test day (the check, never the choice), judged by the page the feed would serve: HR@5 overall, new
  targets on the full list, discovery (own order among never-watched live rooms), each paired with an
  interval that resamples viewers; LightFM kept, the ablation on new targets; LightFM's fit seconds.
`--agreement` instead measures what each design does to the column itself (LightFM fits only, no ranker):
per world-seed, the per-viewer Pearson correlation over every merchant of two LightFM columns — two draws
on the same data (seeds 42 and 1042) and the "a" fit (before the ranker's window) against the refit —, for
main's ModelParams and each design, on up to 3,000 viewers both models know.
`--from-logs LOG ...` records the runs earlier runs printed (with `--run-command` saying what made them).
Writes bench/results/NAME.json and the docs/benchmarks.md block.
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

DESIGNS = ["fits3:fits=3", "fits3_wide:fits=3,fits_components=0"]


def parse_design(spec: str) -> tuple[str, dict[str, Any]]:
    """`NAME:FIELD=VALUE,...` -> (NAME, ModelParams overrides; values read as JSON)."""
    from ranking.model import ModelParams

    name, _, body = spec.partition(":")
    names = {f.name for f in dataclasses.fields(ModelParams)}
    out: dict[str, Any] = {}
    for pair in filter(None, body.split(",")):
        key, sep, text = pair.partition("=")
        if not sep or key not in names:
            raise SystemExit(
                f"--design takes NAME:FIELD=VALUE,... with FIELD one of {sorted(names)}: {spec!r}"
            )
        out[key] = json.loads(text)
    return name, out


def run(
    world: str, seed: int, designs: dict[str, dict[str, Any]], args: argparse.Namespace
) -> dict[str, Any]:
    import numpy as np
    from bench_lightfm_parts import INTERVAL
    from bench_ranker_validation import _viewer_interval

    from feed.replay import FeedPage
    from ranking.evaluation import ranker_method
    from ranking.model import ModelParams
    from ranking.offline import FitConfig, evaluate_model, fit_model
    from ranking.ranker import paired_gain
    from worlds.evaluate import DAY_MS, discovery_beyond_page, world_log

    opened = world_log(world, seed, args.viewers, args.merchants, Path(args.world_cache))
    log, features, schedule, until = opened.log, opened.features, opened.schedule, opened.split
    base = ModelParams(num_threads=1)
    params = {"main": base, **{n: dataclasses.replace(base, **o) for n, o in designs.items()}}
    fitted: dict[str, Any] = {}
    out: dict[str, Any] = {}
    for name, p in params.items():
        t0 = time.perf_counter()
        fitted[name] = fit_model(
            log, features, schedule, until, FitConfig(model=p, seed=seed), version=name, say=io.StringIO()
        )
        info = fitted[name].ranker.info
        out[name] = {
            "lightfm_used": info.get("lightfm_used"),
            "lightfm_discovery_only": info.get("lightfm_discovery_only"),
            "lightfm_gain": info.get("lightfm_gain"),
            "lightfm_gain_se": info.get("lightfm_gain_se"),
            "validation": info.get("validation"),
            "fit_s": round(time.perf_counter() - t0, 1),
            "lightfm_s": round(fitted[name].timings["lightfm_a_s"] + fitted[name].timings["lightfm_s"], 1),
        }
    main_val = fitted["main"].validation
    for name in designs:
        a, b = fitted[name].ranker.validation_values, fitted["main"].ranker.validation_values
        same = fitted[name].validation.viewers().shape == main_val.viewers().shape and bool(
            np.array_equal(fitted[name].validation.viewers(), main_val.viewers())
        )
        if a is not None and b is not None and a.shape == b.shape and same:
            gain, se = paired_gain(a, b, main_val.viewers())
            out[name]["validation_minus_main"] = {"gain": round(gain, 4), "se": round(se, 4)}
    page = FeedPage(schedule.room_features, seed=seed)
    methods = {n: (f.model, f.ranker) for n, f in fitted.items()}
    methods.update({f"{n}_no_lightfm": (f.model, f.ranker_no_lightfm) for n, f in fitted.items()})
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
    own = discovery_beyond_page(targets, {n: ranker_method(f.ranker) for n, f in fitted.items()}, page, seed)
    viewers = np.array([t.viewer for t in targets if not t.repeat])
    for name in fitted:
        res = ev.results[name]
        d = ev.difference(name, f"{name}_no_lightfm", "new", seed=seed)
        out[name].update(
            hr5=round(res["overall"]["hr5"], 4),
            ndcg10=round(res["overall"]["ndcg10"], 4),
            hr5_new=round(res["new"]["hr5"], 4),
            hr5_new_no_lightfm=round(ev.results[f"{name}_no_lightfm"]["new"]["hr5"], 4),
            ablation_new={k: round(d[k], 4) for k in INTERVAL},
            hr5_new_discovery=round(float(own[name]["hr5"]), 4),
        )
        if name == "main":
            continue
        for split in ("overall", "new"):
            d = ev.difference(name, "main", split, seed=seed)
            out[name][f"minus_main_{split}"] = {k: round(d[k], 4) for k in INTERVAL}
        out[name]["minus_main_discovery"] = _viewer_interval(
            own[name]["hits"] - own["main"]["hits"], viewers, seed
        )
    out["targets"] = len(targets)
    return out


def agreement(
    world: str, seed: int, designs: dict[str, dict[str, Any]], args: argparse.Namespace
) -> dict[str, Any]:
    import numpy as np

    from ranking.dataset import build_training_set
    from ranking.model import ModelParams, RankingModel, train_model
    from ranking.offline import FitConfig, ranker_window
    from worlds.evaluate import world_log

    opened = world_log(world, seed, args.viewers, args.merchants, Path(args.world_cache))
    log, features, until = opened.log, opened.features, opened.split
    cfg = FitConfig(model=ModelParams(num_threads=1), seed=seed)
    refit = build_training_set(log, features, until, cfg.weights)
    early = build_training_set(log, features, ranker_window(log, until, cfg), cfg.weights)

    def column(m: RankingModel, viewers: list[str]) -> np.ndarray:
        pos = {u: i for i, u in enumerate(m.user_ids)}
        mpos = {x: i for i, x in enumerate(m.merchant_ids)}
        rows = m.user_repr[[pos[v] for v in viewers]].astype(np.float64)
        items = [mpos[x] for x in refit.merchant_ids]
        s: np.ndarray = rows @ m.item_repr[items].astype(np.float64).T + m.item_bias[items][None, :]
        s -= s.mean(axis=1, keepdims=True)
        s /= np.maximum(s.std(axis=1, keepdims=True), 1e-12)
        return s

    def corr(a: np.ndarray, b: np.ndarray) -> float:
        return round(float((a * b).mean(axis=1).mean()), 4)

    out: dict[str, Any] = {}
    for name, overrides in {"main": {}, **designs}.items():
        t0 = time.perf_counter()
        p = dataclasses.replace(cfg.model, **overrides)
        one = train_model(refit, p, "r1", progress=False)
        two = train_model(refit, dataclasses.replace(p, seed=p.seed + 1000), "r2", progress=False)
        a = train_model(early, p, "a", progress=False)
        both = sorted(set(a.user_ids) & set(one.user_ids))
        rng = np.random.default_rng(seed)
        viewers = [both[i] for i in np.sort(rng.choice(len(both), min(3000, len(both)), replace=False))]
        c1, c2, ca = column(one, viewers), column(two, viewers), column(a, viewers)
        out[name] = {
            "draws": corr(c1, c2),
            "a_vs_refit": corr(ca, c1),
            "viewers": len(viewers),
            "fit_s": round((time.perf_counter() - t0) / 3, 1),
        }
    return out


def main() -> None:
    from bench_scorer import command_line, write_results
    from world_args import add_world_args, world_seed

    ap = argparse.ArgumentParser()
    add_world_args(ap, nargs="*")
    ap.add_argument("--design", action="append", help=f"NAME:FIELD=VALUE,... (default {DESIGNS})")
    ap.add_argument("--name", default="lightfm_fits", help="the record's name (bench/results/NAME.json)")
    ap.add_argument("--agreement", action="store_true", help="the columns' agreement instead (LightFM only)")
    ap.add_argument("--from-logs", nargs="+", help="record the runs these logs printed instead of running")
    ap.add_argument(
        "--run-command", action="append", default=[], help="(with --from-logs) what made the logs"
    )
    args = ap.parse_args()
    designs = dict(parse_design(s) for s in (args.design or DESIGNS))
    if args.agreement:
        found: dict[str, Any] = {}
        rows = ["| world-seed | model | draw vs draw | 'a' vs refit | s per model |", "|---|---|---|---|---|"]
        for spec in args.worlds:
            world, seed = world_seed(spec)
            found[spec] = agreement(world, seed, designs, args)
            for name, r in found[spec].items():
                rows.append(f"| {spec} | {name} | {r['draws']:.4f} | {r['a_vs_refit']:.4f} | {r['fit_s']} |")
                print(rows[-1], flush=True)
        write_results(
            args.name,
            command_line(),
            {"viewers": args.viewers, "merchants": args.merchants, "designs": designs, "runs": found},
            rows,
            f"{args.name} — LightFM's column: how much two draws, and the 'a' fit and the refit, agree",
        )
        return
    runs: dict[str, Any] = {}
    if args.from_logs:
        # The `{WORLD:SEED: run}` lines earlier runs printed (a run stopped early keeps what it printed);
        # runs of other designs on the same world-seed are merged.
        for path in args.from_logs:
            for text in Path(path).read_text().splitlines():
                for spec, r in json.loads(text).items() if text.startswith("{") else ():
                    runs.setdefault(spec, {}).update(
                        r
                    )  # main is one deterministic fit: the same in every log
    for spec in [] if args.from_logs else args.worlds:
        world, seed = world_seed(spec)
        t0 = time.perf_counter()
        r = run(world, seed, designs, args)
        r["wall_s"] = round(time.perf_counter() - t0, 1)
        runs[spec] = r
        print("\n".join(design_lines({spec: r})[2:]), flush=True)
        print(json.dumps({spec: r}), flush=True)
    record(
        args,
        design_lines(runs),
        {"runs_made_by": args.run_command, "runs": runs},
        f"{args.name} — LightFM designs against main's one fit (same lists, same test day)",
    )


def record(args: argparse.Namespace, lines: list[str], metrics: dict[str, Any], title: str) -> None:
    """Print the table and write bench/results/NAME.json (the world size, then `metrics`) and its block."""
    from bench_scorer import command_line, write_results

    print("\n".join(lines))
    write_results(
        args.name,
        command_line(),
        {"viewers": args.viewers, "merchants": args.merchants, **metrics},
        lines,
        title,
    )


def design_lines(runs: dict[str, Any]) -> list[str]:
    """One row per world-seed and design, then per design the mean of each difference over the world-seeds
    and how many intervals lie above / below 0."""
    lines = [
        "| world-seed | design | LightFM kept main / design | validation - main (SE) | HR@5 - main "
        "| new - main | discovery - main | ablation on new main / design (CI low) | LightFM fit s main / design |",
        "|---|---|---|---|---|---|---|---|---|",
    ]

    def ci(d: dict[str, float]) -> str:
        return f"{d['diff']:+.4f} ({d['ci_low']:+.4f}..{d['ci_high']:+.4f})"

    def kept(x: dict[str, Any]) -> str:
        return "discovery" if x["lightfm_discovery_only"] else "yes" if x["lightfm_used"] else "no"

    by_design: dict[str, list[dict[str, Any]]] = {}
    for spec, r in runs.items():
        m = r["main"]
        for name in [k for k, v in r.items() if isinstance(v, dict) and "minus_main_overall" in v]:
            x = r[name]
            by_design.setdefault(name, []).append(x)
            v = x.get("validation_minus_main", {"gain": float("nan"), "se": float("nan")})
            lines.append(
                f"| {spec} | {name} | {kept(m)} / {kept(x)} | {v['gain']:+.4f} ({v['se']:.4f}) "
                f"| {ci(x['minus_main_overall'])} | {ci(x['minus_main_new'])} | {ci(x['minus_main_discovery'])} "
                f"| {m['ablation_new']['diff']:+.4f} ({m['ablation_new']['ci_low']:+.4f}) / "
                f"{x['ablation_new']['diff']:+.4f} ({x['ablation_new']['ci_low']:+.4f}) "
                f"| {m['lightfm_s']} / {x['lightfm_s']} |"
            )
    for name, xs in by_design.items():
        parts = [
            f"{name} over {len(xs)} world-seeds: validation {_mean([x['validation_minus_main']['gain'] for x in xs if 'validation_minus_main' in x]):+.4f}"
        ]
        for key in [k for k in xs[0] if k.startswith("minus_main_")]:  # overall, new, discovery
            split, ds = key.removeprefix("minus_main_"), [x[key] for x in xs]
            up, down = sum(d["ci_low"] > 0 for d in ds), sum(d["ci_high"] < 0 for d in ds)
            parts.append(
                f"{split} {_mean([d['diff'] for d in ds]):+.4f} (CI above 0 in {up}, below in {down})"
            )
        lines.append("; ".join(parts))
    return lines


def _mean(values: list[float]) -> float:
    return sum(values) / len(values) if values else float("nan")


if __name__ == "__main__":
    main()
