"""Benchmark: the ranker's data — its window and its validation lists — before and after, on the same test day.

    .venv/bin/python bench/bench_ranker_validation.py WORLD:SEED [WORLD:SEED ...] [--viewers 10000
        --merchants 500 --targets 4000 --world-cache reports/worlds/cache]

Per world and seed (simulator.presets, days 0-5 the log, day 6 the test day), `ranking.offline.fit_model`
twice on the same log: "before" = one-day ranker window validated on its latest quarter
(`FitConfig(ranker_days=1.0, validation="latest")`, the trainer until 2026-12-07), "after" = the trainer's
default (the fewest whole days whose enters reach `ranker_lists`, at most half the log; validation lists of
a fixed share of the viewers over the whole window). Both on one LightFM thread (the world harness's
setting), judged on the same test-day targets by the page the feed would serve (feed.replay.FeedPage):
HR@5 overall, new targets on the full list, discovery (own order among never-watched live rooms), each
after-before difference with an interval that resamples viewers, and each fit's choices (window days,
lists, LightFM kept, two parts, favourites first). Writes bench/results/ranker_validation.json and the
docs/benchmarks.md block.
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

SPLITS = ("overall", "new", "repeat")  # the splits whose design-minus-before differences are reported


def choices(fitted: Any) -> dict[str, Any]:
    r = fitted.ranker
    return {
        "lists": int(r.info.get("lists", 0) - r.info.get("validation_lists", 0)),
        "validation_lists": int(r.info.get("validation_lists", 0)),
        "validation": r.info.get("validation"),
        "lightfm_used": r.info.get("lightfm_used"),
        "lightfm_discovery_only": r.info.get("lightfm_discovery_only"),
        "two_part": r.info.get("two_part"),
        "favourites_first": r.favourites_first,
        "first_by_share": list(r.first_by_share),
        "known_offset": list(r.known_offset),
    }


def run(world: str, seed: int, args: argparse.Namespace) -> dict[str, Any]:
    import numpy as np
    from bench_lightfm_parts import INTERVAL
    from world_screen import against_popularity

    from feed.replay import FeedPage
    from ranking.evaluation import baseline, ranker_method
    from ranking.model import ModelParams
    from ranking.offline import FitConfig, evaluate_model, fit_model, ranker_window
    from worlds.evaluate import DAY_MS, world_log

    opened = world_log(world, seed, args.viewers, args.merchants, Path(args.world_cache))
    log, features, schedule, until = opened.log, opened.features, opened.schedule, opened.split
    base = FitConfig(model=ModelParams(num_threads=1), seed=seed)
    configs = {"before": dataclasses.replace(base, ranker_days=1.0, validation="latest"), "after": base}
    if args.offsets:
        # One fit, the known-merchant offset rules applied to its ranker (the same validation lists).
        configs = {"before": dataclasses.replace(base, known_offset="none")}
    if args.after:
        # A design against the trainer's default: "before" is main's FitConfig, "after" the same with the
        # named fields changed.
        configs = {"before": base, "after": dataclasses.replace(base, **fit_overrides(args.after))}
    out: dict[str, Any] = {}
    fitted: dict[str, Any] = {}
    for name, cfg in configs.items():
        t0 = time.perf_counter()
        fitted[name] = fit_model(log, features, schedule, until, cfg, version=name, say=io.StringIO())
        out[name] = choices(fitted[name])
        out[name]["ranker_days"] = round((until - ranker_window(log, until, cfg)) / DAY_MS, 2)
        out[name]["fit_s"] = round(time.perf_counter() - t0, 1)
    if args.offsets:
        from ranking.ranker import with_known_offsets

        one = fitted["before"]
        for rule in args.offsets:
            fitted[rule] = dataclasses.replace(
                one, ranker=with_known_offsets(one.ranker, one.validation, rule)
            )
            out[rule] = choices(fitted[rule])
            out[rule]["info"] = {
                k: v for k, v in fitted[rule].ranker.info.items() if k.startswith("known_offset")
            }
    page = FeedPage(schedule.room_features, seed=seed)
    ev, targets = evaluate_model(
        log,
        features,
        schedule,
        {name: (f.model, f.ranker) for name, f in fitted.items()},
        (until, until + DAY_MS),
        max_targets=args.targets,
        seed=seed,
        page=page,
    )
    own, own_pop, figures = against_popularity(
        ev,
        targets,
        {name: ranker_method(f.ranker) for name, f in fitted.items()},
        page,
        seed,
    )
    pop = ev.best_pop
    for name in fitted:
        out[name].update(figures[name])
    viewers = np.array([t.viewer for t in targets if not t.repeat])
    for other in [n for n in fitted if n != "before"]:
        tag = "after" if other == "after" else other
        for split in SPLITS:
            d = ev.difference(other, "before", split, seed=seed)
            out[f"{tag}_minus_before_{split}"] = {k: round(d[k], 4) for k in INTERVAL}
        hits = own[other]["hits"] - own["before"]["hits"]
        out[f"{tag}_minus_before_discovery"] = _viewer_interval(hits, viewers, seed)
    out["where_new_are_lost"] = where_new_are_lost(
        targets,
        {**{name: ranker_method(f.ranker) for name, f in fitted.items()}, pop: baseline(pop, seed)},
        page,
    )
    best = ev.best_baseline
    out.update(
        best_reppop=best,
        hr5_reppop=round(ev.results[best]["overall"]["hr5"], 4),
        best_pop=pop,
        hr5_new_pop=round(ev.results[pop]["new"]["hr5"], 4),
        hr5_new_discovery_pop=round(float(own_pop), 4),
        targets=len(targets),
    )
    return out


def fit_overrides(pairs: list[str]) -> dict[str, Any]:
    """FIELD=VALUE pairs of ranking.offline.FitConfig (values read as JSON: 12000, null, "none", true)."""
    from ranking.offline import FitConfig

    names = {f.name for f in dataclasses.fields(FitConfig)}
    out: dict[str, Any] = {}
    for pair in pairs:
        key, sep, text = pair.partition("=")
        if not sep or key not in names:
            raise SystemExit(f"--after takes FIELD=VALUE with FIELD one of {sorted(names)}, got {pair!r}")
        try:
            out[key] = json.loads(text)
        except json.JSONDecodeError:
            out[key] = text
    return out


def where_new_are_lost(targets: Any, methods: dict[str, Any], page: Any) -> dict[str, Any]:
    """New targets on the full list (the page the feed serves), split by what took the top five: per
    method and repeat band of the viewer (ranking.ranker.repeat_band), the share of new targets that are
    hits; `lost_to_favourites`: among the never-watched rooms the target was in the top five (a discovery
    hit) but rooms of merchants the viewer entered before pushed it off the top five; `lost_in_discovery`:
    the target was not in the top five of the never-watched rooms either (the discovery order's miss);
    `favourites_on_top`: mean count of the viewer's entered merchants' rooms in the page's top five."""
    import numpy as np

    from ranking.ranker import repeat_band

    new = [t for t in targets if not t.repeat]
    bands = np.array([repeat_band(t.request.history) for t in new])
    out: dict[str, Any] = {}
    for name, method in methods.items():
        hit = np.zeros(len(new))
        to_fav = np.zeros(len(new))
        in_disc = np.zeros(len(new))
        fav_top = np.zeros(len(new))
        for i, t in enumerate(new):
            scores = np.asarray(method(t), dtype=np.float64)
            order = np.asarray(page(t, scores), dtype=np.int64)
            known = np.asarray(t.entered_before, dtype=bool)
            top = order[:5]
            fav_top[i] = known[top].sum()
            if t.target in top:
                hit[i] = 1.0
                continue
            # The method's own order beyond the page (as worlds.evaluate.discovery_beyond_page): the page,
            # then every other room by its score.
            rest = np.setdiff1d(np.arange(scores.size), order)
            full = np.concatenate([order, rest[np.argsort(-scores[rest], kind="stable")]])
            never_order = full[~known[full]]
            if t.target in never_order[:5]:
                to_fav[i] = 1.0
            else:
                in_disc[i] = 1.0
        by_band: dict[str, Any] = {}
        for b in range(4):
            m = bands == b
            if m.sum() == 0:
                continue
            by_band[str(b)] = {
                "targets": int(m.sum()),
                "hit": round(float(hit[m].mean()), 4),
                "lost_to_favourites": round(float(to_fav[m].mean()), 4),
                "lost_in_discovery": round(float(in_disc[m].mean()), 4),
                "favourites_on_top": round(float(fav_top[m].mean()), 3),
            }
        out[name] = {
            "hit": round(float(hit.mean()), 4),
            "lost_to_favourites": round(float(to_fav.mean()), 4),
            "lost_in_discovery": round(float(in_disc.mean()), 4),
            "favourites_on_top": round(float(fav_top.mean()), 3),
            "by_band": by_band,
        }
    return out


def _viewer_interval(values: Any, viewers: Any, seed: int, rounds: int = 1000) -> dict[str, float]:
    """Mean of per-target values (a paired difference) with a 95 % interval, viewers resampled with all
    their targets: ranking.evaluation.viewer_bootstrap against zero, rounded for the record."""
    import numpy as np
    from bench_lightfm_parts import INTERVAL

    from ranking.evaluation import viewer_bootstrap

    values = np.asarray(values, dtype=np.float64)
    b = viewer_bootstrap(values, np.zeros_like(values), np.asarray(viewers), seed=seed, resamples=rounds)
    return {k: round(b[k], 4) for k in INTERVAL}


def main() -> None:
    from bench_scorer import command_line, write_results
    from world_args import add_world_args, world_seed

    ap = argparse.ArgumentParser()
    add_world_args(ap, nargs="*")
    ap.add_argument(
        "--offsets",
        nargs="*",
        default=None,
        help="compare known-merchant offset rules (ranking.ranker.KNOWN_OFFSET_RULES, e.g. discovery "
        "likelihood) against none, on one fit, instead of the window before / after",
    )
    ap.add_argument(
        "--after",
        nargs="*",
        default=None,
        help="a design against main's FitConfig on the same test day: FIELD=VALUE of ranking.offline.FitConfig "
        "(e.g. max_candidates=null for training lists with every live room)",
    )
    ap.add_argument(
        "--record-name",
        default="ranker_validation",
        help="the record's name (bench/results/NAME.json and its docs/benchmarks.md block); a design run "
        "(--after) gets its own, e.g. ranker_design_more_lists",
    )
    ap.add_argument("--out", default=None, help="also write the runs as JSON here (no results file)")
    ap.add_argument(
        "--runs",
        nargs="*",
        default=[],
        help="record runs saved by --out (each file's world-seeds) instead of running them; their command "
        "lines go in the record's `made_by`",
    )
    ap.add_argument("--made-by", nargs="*", default=[], help="with --runs: the command line of each file")
    args = ap.parse_args()
    if not args.worlds and not args.runs:
        ap.error("name at least one WORLD:SEED (or --runs FILE)")
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
    if any(
        "discovery_minus_before_overall" in r or "likelihood_minus_before_overall" in r for r in runs.values()
    ):
        offsets_record(runs, args)
        return
    lines = [
        "| world-seed | days before / after | lists + validation before / after | LightFM before / after "
        "| HR@5 after - before | new on full list after - before | discovery after - before "
        "| discovery ratio before / after |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for spec, r in runs.items():
        b, a = r["before"], r["after"]

        def ci(d: dict[str, float]) -> str:
            return f"{d['diff']:+.4f} ({d['ci_low']:+.3f}..{d['ci_high']:+.3f})"

        def lightfm(x: dict[str, Any]) -> str:
            return "discovery" if x["lightfm_discovery_only"] else "kept" if x["lightfm_used"] else "dropped"

        lines.append(
            f"| {spec} | {b['ranker_days']} / {a['ranker_days']} | {b['lists']:,} + {b['validation_lists']:,} / "
            f"{a['lists']:,} + {a['validation_lists']:,} | {lightfm(b)} / {lightfm(a)} "
            f"| {ci(r['after_minus_before_overall'])} | {ci(r['after_minus_before_new'])} "
            f"| {ci(r['after_minus_before_discovery'])} | {b['discovery_ratio']}x / {a['discovery_ratio']}x |"
        )
    print("\n".join(lines))
    title = "The ranker's data: window and validation lists, before / after"
    if args.after:
        title = f"A ranker design against main's FitConfig, same test day: {' '.join(args.after)}"
    write_results(
        args.record_name,
        command_line(),
        {
            "viewers": args.viewers,
            "merchants": args.merchants,
            "after": args.after,
            "made_by": args.made_by,
            "runs": runs,
        },
        lines,
        title,
    )


def offsets_record(runs: dict[str, Any], args: argparse.Namespace) -> None:
    """The known-merchant offset rules against none on the same fit (`--offsets`): per world-seed and rule,
    the offsets chosen, and each figure's difference from none with its interval (viewers resampled);
    bench/results/ranker_offsets.json and its docs/benchmarks.md block."""
    from bench_scorer import command_line, write_results

    def ci(d: dict[str, float]) -> str:
        return f"{d['diff']:+.4f} ({d['ci_low']:+.3f}..{d['ci_high']:+.3f})"

    lines = [
        "| world-seed | rule | offsets by band | HR@5 - none | new on full list - none | repeat - none "
        "| new on full list vs pop (CI) | HR@5 vs best REP-then-pop (CI) |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for spec, r in runs.items():
        for rule in ("before", "discovery", "likelihood"):
            if rule not in r:
                continue
            x = r[rule]
            offsets = ", ".join(f"{d:+.2f}" for d in x["known_offset"]) or "none"
            diffs = (
                "| | | "
                if rule == "before"
                else f"| {ci(r[f'{rule}_minus_before_overall'])} | {ci(r[f'{rule}_minus_before_new'])} "
                f"| {ci(r[f'{rule}_minus_before_repeat'])} "
            )
            lines.append(
                f"| {spec} | {'none' if rule == 'before' else rule} | {offsets} {diffs}"
                f"| {x['hr5_new']:.3f} vs {r['hr5_new_pop']:.3f}: {ci(x['new_minus_pop'])} "
                f"| {x['hr5']:.3f} vs {r['hr5_reppop']:.3f}: {ci(x['overall_minus_reppop'])} |"
            )
    print("\n".join(lines))
    write_results(
        "ranker_offsets",
        command_line(),
        {"viewers": args.viewers, "merchants": args.merchants, "made_by": args.made_by, "runs": runs},
        lines,
        "Known-merchant offset per repeat band: rules against none, on the same fit",
    )


if __name__ == "__main__":
    main()
