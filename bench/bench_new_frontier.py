"""Benchmark: the favourites-vs-new frontier — every setting of the known-merchant knob, on validation and test day.

    .venv/bin/python bench/bench_new_frontier.py WORLD:SEED [WORLD:SEED ...] [--viewers 10000 --merchants 500
        --targets 4000 --world-cache reports/worlds/cache --out FILE] [--runs FILE ... --name NAME]

Per world and seed (simulator.presets, days 0-5 the log, day 6 the test day), ONE fit as the family run makes it
(`ranking.offline.ranker_lists` + `choose_rankers`, LightFM on one thread, the whole window refit): its learned
scores stay, and only the knob that trades the viewer's own merchants against new ones moves — the known-merchant
offset per repeat band and the favourites-first count. Settings (fixed before any reading):

- `shift S` (S in SHIFTS): main's chosen offsets per band plus S, main's favourites-first counts;
- `shift S lift0`: the same with no favourite lifted above the rest (count 0 in every band);
- `band23 S`: main's settings, bands 2-3 (repeat share >= 0.5) only: offset main's + S, count 0.

Each setting is judged twice, with the same figures: on the VALIDATION lists the choices are made on (rank among
every live room, viewers the unit of every error: `ranking.ranker.paired_gain`) and on the TEST day by the page the
feed would serve (feed.replay.FeedPage, intervals that resample viewers): HR@5 and NDCG@10 overall beside the best
REP-then-popularity baseline, HR@5 of new targets on the full list beside the better popularity baseline. So a
rule that picks a setting from the validation figures can be read off on the test day without a refit, and the
test-day frontier says whether any setting meets both of issue 13's lines. Writes bench/results/NAME.json.
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

SHIFTS: tuple[float, ...] = (0.5, 0.0, -0.25, -0.5, -0.75, -1.0, -1.5, -2.0, -3.0, -5.0, -1e3)
BAND23_SHIFTS: tuple[float, ...] = (0.0, -0.5, -1.0, -1.5, -2.0, -3.0)


def settings(main: Any) -> dict[str, tuple[tuple[int, ...], tuple[float, ...]]]:
    """Per setting name: (favourites-first count per band, known offset per band)."""
    from ranking.ranker import REPEAT_BANDS

    n = len(REPEAT_BANDS) + 1
    k = tuple(main.first_by_share) if main.first_by_share else (int(main.favourites_first),) * n
    d = tuple(main.known_offset) if main.known_offset else (0.0,) * n
    out: dict[str, tuple[tuple[int, ...], tuple[float, ...]]] = {}
    for s in SHIFTS:
        out[f"shift {s:g}"] = (k, tuple(x + s for x in d))
        out[f"shift {s:g} lift0"] = ((0,) * n, tuple(x + s for x in d))
    for s in BAND23_SHIFTS:
        out[f"band23 {s:g}"] = (
            tuple(k[b] if b < 2 else 0 for b in range(n)),
            tuple(d[b] + (s if b >= 2 else 0.0) for b in range(n)),
        )
    return out


def validation_figures(main: Any, validation: Any, table: dict[str, Any], seed: int) -> dict[str, Any]:
    """Each setting's HR@5 / NDCG@10 overall and HR@5 of new targets on the full validation lists, beside the
    same lists' baselines (`ranking.ranker.baseline_list_ranks`: POP from `validation.popularity` when the
    lists carry it, else from the table's snapshot columns), each difference with its viewer-unit standard
    error (`paired_gain`)."""
    import numpy as np

    from ranking.ranker import F, _first_ranks, baseline_list_ranks, judged_values, paired_gain

    scores = main.validation_scores
    seg = np.repeat(np.arange(len(validation)), np.diff(validation.offsets))
    known = (validation.x[:, F["h_entered"]] > 0).astype(np.float64)
    bands, viewers = validation.bands(), validation.viewers()
    new = known[validation.offsets[:-1] + validation.target] == 0
    b = baseline_list_ranks(validation, seed)
    best_pop = max(("pop", "live_pop"), key=lambda n: float((b[f"discovery_{n}"][new] < 5).mean()))
    best_rep = max(("rep_pop", "rep_live_pop"), key=lambda n: float(judged_values(b[n]).mean()))
    hit_rep = (b[best_rep] < 5).astype(np.float64)
    ndcg_rep = judged_values(b[best_rep]) - hit_rep
    hit_pop = (b[best_pop][new] < 5).astype(np.float64)
    out: dict[str, Any] = {
        "lists": len(validation),
        "new_lists": int(new.sum()),
        "best_rep": best_rep,
        "best_pop": best_pop,
        "hr5_rep": round(float(hit_rep.mean()), 4),
        "ndcg10_rep": round(float(ndcg_rep.mean()), 4),
        "hr5_new_pop": round(float(hit_pop.mean()), 4),
    }
    per: dict[str, Any] = {}
    for name, (k, d) in table.items():
        r = _first_ranks(
            scores + np.asarray(d)[bands][seg] * known, validation, np.asarray(k, dtype=np.int64)[bands]
        )
        hit = (r < 5).astype(np.float64)
        ndcg = judged_values(r) - hit
        g, se = paired_gain(hit, hit_rep, viewers)
        gn, sen = paired_gain(hit[new], hit_pop, viewers[new])
        gd, sed = paired_gain(ndcg, ndcg_rep, viewers)
        per[name] = {
            "hr5": round(float(hit.mean()), 4),
            "ndcg10": round(float(ndcg.mean()), 4),
            "hr5_new": round(float(hit[new].mean()), 4),
            "overall_minus_rep": [round(g, 4), round(se, 4)],
            "ndcg_minus_rep": [round(gd, 4), round(sed, 4)],
            "new_minus_pop": [round(gn, 4), round(sen, 4)],
        }
    out["settings"] = per
    return out


def knob_method(learned: Any, k: tuple[int, ...], d: tuple[float, ...], cache: dict[int, Any]) -> Any:
    """The ranker with favourites-first counts `k` and known offsets `d` per repeat band, as
    `Ranker.add_viewer_score` applies them (float32, offsets first, then the lift), on the learned score of
    `learned` kept per target in `cache` (every setting shares it: one score per target, not one per setting)."""
    import numpy as np

    from ranking.ranker import favourites_first, repeat_band, viewer_columns

    def score(t: Any) -> Any:
        held = cache.get(t.event)
        if held is None:
            cols = viewer_columns(t.table, t.request)
            entered = cols.rows[cols.sparse["h_entered"] > 0] if cols.rows.size else cols.rows
            held = cache[t.event] = (
                learned.score(t.table, t.request),
                entered,
                cols.favourite_rows,
                cols.swiped_rows,
                repeat_band(t.request.history),
            )
        base, entered, favourites, swiped, band = held
        out = base.astype(np.float32, copy=True)
        if entered.size:
            out[entered] += np.float32(d[band])
        if favourites.size and k[band] > 0:
            favourites_first(out, favourites, swiped, k[band])
        return out

    return score


def run(world: str, seed: int, args: argparse.Namespace) -> dict[str, Any]:
    from bench_lightfm_parts import INTERVAL

    from feed.replay import FeedPage
    from ranking.dataset import build_training_set
    from ranking.evaluation import ranker_method
    from ranking.model import ModelParams, train_model
    from ranking.offline import FitConfig, attach_ranker, choose_rankers, evaluate_model, ranker_lists
    from ranking.ranker import FEATURES, Ranker
    from worlds.evaluate import DAY_MS, world_log

    timings: dict[str, float] = {}
    t0 = time.perf_counter()
    opened = world_log(world, seed, args.viewers, args.merchants, Path(args.world_cache))
    log, features, schedule, until = opened.log, opened.features, opened.schedule, opened.split
    timings["world_s"] = time.perf_counter() - t0
    base = FitConfig(model=ModelParams(num_threads=1), seed=seed)
    t0 = time.perf_counter()
    lists, validation = ranker_lists(log, features, schedule, until, base, "main", (), timings)
    main, _, _ = choose_rankers(lists, validation, base)
    timings["choose_s"] = time.perf_counter() - t0
    table = settings(main)
    out: dict[str, Any] = {
        "main": {
            "first_by_share": list(main.first_by_share),
            "favourites_first": main.favourites_first,
            "known_offset": list(main.known_offset),
            "lightfm_used": main.info.get("lightfm_used"),
        },
        "settings": {n: {"first": list(k), "offset": list(d)} for n, (k, d) in table.items()},
    }
    # POP beside the validation lists two ways: the table's snapshot columns (what the lists' features carry)
    # and each row's popularity up to the list's moment (what the test day's baselines rank by).
    out["validation"] = validation_figures(
        main, dataclasses.replace(validation, popularity=None), table, seed
    )
    out["validation_exact"] = validation_figures(main, validation, table, seed)
    if args.validation_only:  # the test-day figures of the same fit are in an earlier run's file
        out["timings"] = {k: round(v, 1) for k, v in timings.items()}
        return out
    t0 = time.perf_counter()
    model = train_model(
        build_training_set(log, features, until, base.weights), base.model, "main", progress=False
    )
    attach_ranker(model, main, log, features, until)
    learned = Ranker(main.weights, FEATURES, dict(main.info), 0, discovery=main.discovery)
    cache: dict[int, Any] = {}
    methods = {name: knob_method(learned, k, d, cache) for name, (k, d) in table.items()}
    methods["main"] = ranker_method(main)  # the check: "shift 0" must rank exactly as main
    page = FeedPage(schedule.room_features, seed=seed)
    ev, targets = evaluate_model(
        log,
        features,
        schedule,
        {"learned": (model, learned)},
        (until, until + DAY_MS),
        max_targets=args.targets,
        seed=seed,
        extra=methods,
        page=page,
    )
    cache.clear()
    timings["test_s"] = time.perf_counter() - t0
    rep, pop = ev.best_baseline, ev.best_pop
    test: dict[str, Any] = {
        "targets": len(targets),
        "best_rep": rep,
        "best_pop": pop,
        "hr5_rep": round(ev.results[rep]["overall"]["hr5"], 4),
        "ndcg10_rep": round(ev.results[rep]["overall"]["ndcg10"], 4),
        "hr5_new_pop": round(ev.results[pop]["new"]["hr5"], 4),
    }
    per: dict[str, Any] = {}
    for name in table:
        res = ev.results[name]
        d_over = ev.difference(name, rep, "overall", seed=seed)
        d_new = ev.difference(name, pop, "new", seed=seed)
        per[name] = {
            "hr5": round(res["overall"]["hr5"], 4),
            "ndcg10": round(res["overall"]["ndcg10"], 4),
            "hr5_new": round(res["new"]["hr5"], 4),
            "overall_minus_rep": {k: round(d_over[k], 4) for k in INTERVAL},
            "new_minus_pop": {k: round(d_new[k], 4) for k in INTERVAL},
            "hr5_line": bool(
                res["overall"]["hr5"] >= ev.results[rep]["overall"]["hr5"]
                and res["overall"]["ndcg10"] >= ev.results[rep]["overall"]["ndcg10"]
                and d_over["ci_low"] > 0
            ),
            "new_line": bool(d_new["ci_low"] > 0),
        }
    test["settings"] = per
    test["shift_0_is_main"] = bool((ev.judged["main"].ranks == ev.judged["shift 0"].ranks).all())
    out["test"] = test
    out["timings"] = {k: round(v, 1) for k, v in timings.items()}
    return out


def rule_choice(validation: dict[str, Any], rule: str) -> str:
    """The setting `ranking.ranker.with_new_line` would keep with `rule`, read off the validation figures."""
    from ranking.ranker import NEW_LINE_SHIFTS

    per = validation["settings"]
    for shift in NEW_LINE_SHIFTS:
        name = f"shift {shift:g}" + (" lift0" if rule == "shift_unlifted" and shift < 0 else "")
        v = per[name]
        new_ok = v["new_minus_pop"][0] > v["new_minus_pop"][1]
        if shift == 0.0 and new_ok:
            return name
        if new_ok and v["overall_minus_rep"][0] > v["overall_minus_rep"][1] and v["ndcg_minus_rep"][0] >= 0:
            return name
    return "shift 0"


def rules_summary(runs: dict[str, Any]) -> list[str]:
    """Per rule: the setting it keeps per world-seed and, on the test day, both lines against main's."""
    lines = [
        "",
        "the new-line rules (ranking.ranker.with_new_line) read off the validation figures, judged on the test day:",
        "",
        "| rule | world-seed | kept | HR@5 - main | HR@5 line (CI low) | new - pop (CI) | new line |",
        "|---|---|---|---|---|---|---|",
    ]
    for rule, key in (
        ("shift", "validation"),
        ("shift_unlifted", "validation"),
        ("shift", "validation_exact"),
    ):
        n_new = n_hr = n_new_main = n_hr_main = 0
        diffs = []
        for spec, r in runs.items():
            if key not in r:
                continue
            t = r["test"]["settings"]
            name = rule_choice(r[key], rule)
            v, m = t[name], t["shift 0"]
            diffs.append(v["hr5"] - m["hr5"])
            n_new += v["new_line"]
            n_hr += v["hr5_line"]
            n_new_main += m["new_line"]
            n_hr_main += m["hr5_line"]
            d = v["new_minus_pop"]
            lines.append(
                f"| {rule}{' (exact POP)' if key == 'validation_exact' else ''} | {spec} | {name} | {v['hr5'] - m['hr5']:+.4f} | {'met' if v['hr5_line'] else 'NOT'} "
                f"({v['overall_minus_rep']['ci_low']:+.3f}) | {d['diff']:+.4f} ({d['ci_low']:+.3f}..{d['ci_high']:+.3f}) "
                f"| {'met' if v['new_line'] else 'not'} |"
            )
        if diffs:
            lines.append(
                f"| {rule}{' (exact POP)' if key == 'validation_exact' else ''} | all {len(diffs)} | | mean {sum(diffs) / len(diffs):+.4f} | {n_hr} (main {n_hr_main}) "
                f"| | {n_new} (main {n_new_main}) |"
            )
    return lines


def summary(runs: dict[str, Any]) -> list[str]:
    """Per world-seed: main's two lines, and the settings that meet both on the test day."""
    lines = [
        "| world-seed | main: HR@5 - REP (CI low) / new - pop (CI) | settings meeting both lines on the test day "
        "| best new - pop among settings meeting the HR@5 line |",
        "|---|---|---|---|",
    ]
    for spec, r in runs.items():
        t = r["test"]["settings"]
        m = t["shift 0"]
        both = [n for n, v in t.items() if v["hr5_line"] and v["new_line"]]
        ok = [n for n, v in t.items() if v["hr5_line"]]
        best = max(ok, key=lambda n: t[n]["new_minus_pop"]["diff"]) if ok else None
        best_text = (
            f"{best}: {t[best]['new_minus_pop']['diff']:+.4f} ({t[best]['new_minus_pop']['ci_low']:+.3f}..)"
            if best
            else "-"
        )
        lines.append(
            f"| {spec} | {m['overall_minus_rep']['diff']:+.4f} ({m['overall_minus_rep']['ci_low']:+.3f}) / "
            f"{m['new_minus_pop']['diff']:+.4f} ({m['new_minus_pop']['ci_low']:+.3f}..{m['new_minus_pop']['ci_high']:+.3f}) "
            f"| {', '.join(both) or 'none'} | {best_text} |"
        )
    return lines + rules_summary(runs)


def main() -> None:
    from bench_scorer import command_line, write_results
    from world_args import add_world_args, world_seed

    ap = argparse.ArgumentParser()
    add_world_args(ap, nargs="*")
    ap.add_argument("--name", default="new_frontier", help="bench/results/NAME.json")
    ap.add_argument(
        "--out", default=None, help="write the runs as JSON here after each world-seed (no record)"
    )
    ap.add_argument("--runs", nargs="*", default=[], help="record runs saved by --out instead of running")
    ap.add_argument(
        "--validation-only", action="store_true", help="the validation figures only (no test day)"
    )
    ap.add_argument("--made-by", nargs="*", default=[], help="with --runs: the command line of each file")
    args = ap.parse_args()
    runs: dict[str, Any] = {}
    for path in args.runs:
        runs.update(json.loads(Path(path).read_text()))
    for spec in [] if args.runs else args.worlds:
        world, seed = world_seed(spec)
        t0 = time.perf_counter()
        runs[spec] = run(world, seed, args)
        runs[spec]["wall_s"] = round(time.perf_counter() - t0, 1)
        print(json.dumps({spec: runs[spec]["timings"]}), flush=True)
        if args.out:
            Path(args.out).write_text(json.dumps(runs, indent=1))
    lines = summary(runs)
    print("\n".join(lines))
    if args.out:
        return
    write_results(
        args.name,
        command_line(),
        {"viewers": args.viewers, "merchants": args.merchants, "made_by": args.made_by, "runs": runs},
        lines,
        "The favourites-vs-new frontier: the known-merchant knob on validation and test day, one fit per world-seed",
    )


if __name__ == "__main__":
    main()
