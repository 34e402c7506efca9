"""Benchmark: ranking quality on the availability-aware protocol, and the ML-100k check.

`.venv/bin/python bench/bench_eval.py`
`.venv/bin/python bench/bench_eval.py --world all --seeds 2`   (the world family: docs/simulator.md)
`.venv/bin/python bench/bench_eval.py --ml100k`   (only the MovieLens-100k checks, ~1 min)

With `--world`, runs `roomfeed evaluate --world` (every world at every seed: simulate, fit, judge the
held-out day offline, the A/B through the feed) and writes its own block of docs/benchmarks.md,
bench/results/eval_worlds.json, and its summary as `worlds` inside bench/results/eval.json (the other
metrics kept). Without it:

Runs `roomfeed evaluate`'s offline evaluation (simulator 100k viewers, 5,000 merchants; the model fit
on days 0-5 as `roomfeed train` fits it, judged on day 6 against the simple baselines) and the
MovieLens-100k checks: LightFM's documented setup, and roomfeed's pipeline beside plain LightFM on a
time-ordered split. Writes the report folder (reports/eval/), bench/results/eval.json
and the ranking section of docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench_scorer import command_line, write_results  # noqa: E402

from ranking.movielens import run_check, run_pipeline_check, run_pipeline_seeds  # noqa: E402
from simulator import Marketplace  # noqa: E402
from simulator.evaluation import evaluate_market, summary, write_report  # noqa: E402
from worlds.report import OFFLINE_ISSUE_KEYS  # noqa: E402

KEYS = (*OFFLINE_ISSUE_KEYS, "hr5_purchase_ranker", "hr5_purchase_reppop")


RESULTS = Path(__file__).resolve().parent / "results"


def record_in_simulator_doc(command: str, headline: str, table: str, notes: list[str]) -> None:
    """The per-world, per-seed table (and `notes` after it: the done-when verdicts, why LightFM adds what
    it adds) between docs/simulator.md's `worlds:record` markers."""
    doc = Path(__file__).resolve().parent.parent / "docs" / "simulator.md"
    start, end = "<!-- worlds:record -->", "<!-- /worlds:record -->"
    text = doc.read_text()
    if start not in text or end not in text:
        return
    after = "\n".join(notes)
    block = f"{start}\n`{command}`: {headline}\n\n{table}\n\n{after}\n{end}"
    doc.write_text(text[: text.index(start)] + block + text[text.index(end) + len(end) :])


# The record's world-seed reports (seedN.json, ~15 kB each), kept beside eval.json: the runs are deterministic, so a
# candidate's run is compared world-seed by world-seed with the record (`--compare bench/results/worlds_record`)
# on any machine, without running the record again.
RECORD_RUNS = RESULTS / "worlds_record"


def keep_record_runs(reports: Path, names: list[str]) -> None:
    """Replace RECORD_RUNS with the record's world-seed reports from `reports` (seed*.json per world)."""
    if reports.resolve() == RECORD_RUNS.resolve():  # --from-reports on the kept record itself
        return
    for name in names:
        target = RECORD_RUNS / name
        target.mkdir(parents=True, exist_ok=True)
        for old in target.glob("seed*.json"):
            old.unlink()
        for run in sorted((reports / name).glob("seed*.json")):
            (target / run.name).write_bytes(run.read_bytes())


def world_family(args: argparse.Namespace) -> None:
    from worlds.cli import kept_runs, run_worlds, summarise_runs
    from worlds.evaluate import RunConfig
    from worlds.report import done_when, headroom_table, lightfm_why, missing_issue_keys, summary_table

    cfg = RunConfig(
        n_viewers=args.world_viewers,
        n_merchants=args.world_merchants,
        test_targets=args.world_targets,
        ab_sessions=args.ab_sessions or None,
        ab_design=args.ab_design,
        world_cache=None if args.fresh_worlds else args.reports / "cache",
    )
    if (
        args.compare is not None
    ):  # a candidate's run beside a record: figures before -> after, nothing written
        from worlds.report import paired_table

        print(paired_table(kept_runs(args.compare, args.world), kept_runs(args.reports, args.world)))
        return
    if args.record_name is not None and not args.record_name.replace("_", "").isalnum():
        raise SystemExit(
            f"bench_eval: --record-name {args.record_name!r}: letters, digits and _ only (a JSON key)"
        )
    if not 1 <= args.first_seed <= args.seeds:
        raise SystemExit(
            f"bench_eval: --first-seed {args.first_seed} must be between 1 and --seeds {args.seeds}"
        )
    seeds = list(range(args.first_seed, args.seeds + 1))
    load_before = os.getloadavg()[0]
    if args.from_reports:  # what a stopped run kept, world-seed by world-seed
        kept = kept_runs(args.reports, args.world)
        seconds = sum(
            sum(t[p] for p in ("simulate_s", "fit_s", "judge_s", "ab_s"))
            for rs in kept.values()
            for r in rs
            for t in [r["timings"]]
        )
        result = summarise_runs(kept, args.reports, seconds)
    else:
        result = run_worlds(args.world, seeds, cfg, args.reports, jobs=args.jobs)
        if args.first_seed > 1:  # the record is every seed the folder keeps, the earlier ones included
            result = summarise_runs(kept_runs(args.reports, args.world), args.reports, result["seconds"])
    load_after = os.getloadavg()[0]
    worlds = result["worlds"]
    missing = missing_issue_keys(worlds)
    if missing:  # bench/results/eval.json must carry every figure issue 13 lists, for every world
        raise SystemExit(f"bench_eval: no figure for {', '.join(missing)} (issue 13's worlds keys)")
    phases = ("simulate", "fit", "judge", "ab")
    per_run = [t for runs in result["timings"].values() for t in runs if t.get("simulate_cpu_s") is not None]
    per_phase = ", ".join(
        f"{p} {np.median([t[p + '_s'] for t in per_run]):.0f} s ({np.median([t[p + '_cpu_s'] for t in per_run]):.0f} s CPU)"
        for p in phases
    )
    kept_now = kept_runs(args.reports, list(worlds))
    first = next(iter(kept_now.values()))[0]
    size, targets = first["config"], int(first["offline"]["targets"])
    ab_sessions = int(first["ab"]["arms"]["ranker"]["sessions"])
    design = first["ab"].get("design", "split")
    how = (
        "assembled from the runs the report folder keeps (--from-reports; minutes = the runs' own wall time summed)"
        if args.from_reports
        else f"{args.jobs} at a time"
    )
    codes = sorted(
        {
            f"{code.get('commit') or 'unrecorded'}"[:10]
            + (" with uncommitted changes" if code.get("dirty") else "")
            for runs in kept_now.values()
            for code in (run.get("code") or {} for run in runs)
        }
    )
    lines = [
        f"{len(worlds)} worlds, seeds {result['seeds']}, {result['seconds'] / 60:.1f} min of runs, {how}; "
        f"host load {load_before:.1f} at the start, {load_after:.1f} at the end; median per world-seed: {per_phase} "
        f"({size['n_viewers']:,} viewers, {size['n_merchants']:,} merchants, 7 days, {targets:,} test targets, "
        f"{ab_sessions:,} A/B sessions{' in each arm (paired)' if design == 'paired' else ' split by viewer hash'}; "
        "fit on days 0-5, judged on day 6; "
        f"each figure from the seed worse for the ranker; code of the runs: {', '.join(codes)})",
        "",
        *summary_table(worlds).splitlines(),
        "",
        "per world and seed (95 % intervals, viewers resampled; discovery = new targets among never-watched candidates):",
        "",
        *result["seed_table"].splitlines(),
        "",
        "issue 13's done-when lines, seed by seed (worlds.report.done_when):",
        "",
        *done_when(kept_now),
        "",
        "why LightFM adds what it adds, world-seed by world-seed (worlds.report.lightfm_why, from measured "
        "diagnostics: AUC on new targets among never-watched rooms, rank correlation with live popularity, "
        "cold share):",
        "",
        *(f"- {name} {run['seed']}: {lightfm_why(run)}" for name, runs in kept_now.items() for run in runs),
        "",
        "headroom: HR@5 of new targets among never-watched live rooms, each method by its own score order "
        "(worlds.headroom: oracles from the simulator's truth — the true taste, the viewer-merchant affinity, the "
        "choice model with intent and buzz, the logging policy times the choice; the true taste added to the "
        "ranker without LightFM beside LightFM's columns):",
        "",
        *headroom_table(kept_now).splitlines(),
        "",
        "interval widths (HR@5 difference, 95 %, viewers resampled): "
        + ", ".join(f"{n} {f['hr5_diff_ci_width']:.3f}" for n, f in worlds.items()),
        "LightFM's cold-start AUC (merchants never seen in training, among live candidates; worse seed): "
        + ", ".join(
            f"{n} {f.get('cold_auc', float('nan')):.3f} ({int(f.get('cold_targets', 0))} targets; known {f.get('warm_auc', float('nan')):.3f})"
            for n, f in worlds.items()
        ),
        f"report: {args.reports}/<world>/table.md, eval.png; {args.reports}/worlds.json",
    ]
    print("\n".join(lines))
    key = "worlds" if args.record_name is None else f"worlds_{args.record_name}"
    write_results(
        f"eval_{key}",
        command_line(),
        {
            "worlds": worlds,
            "lightfm_why": {
                name: {str(run["seed"]): lightfm_why(run) for run in runs} for name, runs in kept_now.items()
            },
            "lightfm_diagnostics": {
                name: {
                    str(run["seed"]): {k: v for k, v in run["offline"].items() if k.startswith("diag_")}
                    for run in runs
                }
                for name, runs in kept_now.items()
            },
            "headroom": {
                name: {str(run["seed"]): run["offline"].get("headroom") for run in runs}
                for name, runs in kept_now.items()
            },
            "seconds": result["seconds"],
            "timings": result["timings"],
            "load": [round(load_before, 1), round(load_after, 1)],
        },
        lines,
        "eval — the world family (roomfeed evaluate --world)"
        + ("" if args.record_name is None else f", record beside the current one: {args.record_name}"),
    )
    notes_from = lines.index("issue 13's done-when lines, seed by seed (worlds.report.done_when):")
    notes_to = next(i for i, line in enumerate(lines) if line.startswith("interval widths"))
    if args.record_name is None:  # a record beside the current one leaves docs/simulator.md's record alone
        record_in_simulator_doc(command_line(), lines[0], result["seed_table"], lines[notes_from:notes_to])
        keep_record_runs(args.reports, list(kept_now))
    path = RESULTS / "eval.json"
    stored: dict[str, Any] = (
        json.loads(path.read_text()) if path.exists() else {"name": "eval", "metrics": {}}
    )
    stored["metrics"][key] = worlds
    if (
        "newcomers" in worlds and args.record_name is None
    ):  # the world made for cold start: merchants that debut on days 5-6
        stored["metrics"]["cold_auc"] = worlds["newcomers"].get("cold_auc")
        stored["metrics"]["cold_auc_targets"] = worlds["newcomers"].get("cold_targets")
    stored.setdefault("commands", {})[key] = command_line()
    path.write_text(json.dumps(stored, indent=2) + "\n")


def movielens_only() -> None:
    """`--ml100k`: the two MovieLens-100k checks alone, written into bench/results/eval.json (the
    simulator's figures kept) and their own block of docs/benchmarks.md."""
    load_before = os.getloadavg()[0]
    ml = run_check(epochs=10, threads=2)
    pipeline = run_pipeline_seeds()
    load_after = os.getloadavg()[0]
    figures = {
        "ml100k_p10": round(ml.precision_at_10, 4),
        "ml100k_auc": round(ml.auc, 4),
        "ml100k_p10_pipeline": round(pipeline.p10_pipeline, 4),
        "ml100k_p10_plain": round(pipeline.p10_plain, 4),
        "ml100k_p10_diff_ci_low": round(pipeline.diff_ci_low, 4),
        "ml100k_p10_diff_ci_high": round(pipeline.diff_ci_high, 4),
        "ml100k_seeds": list(pipeline.seeds),
        "ml100k_p10_pipeline_per_seed": list(pipeline.per_seed_pipeline),
        "ml100k_p10_plain_per_seed": list(pipeline.per_seed_plain),
    }
    lines = [
        f"MovieLens-100k (LightFM docs setup, WARP, 10 epochs): P@10 {ml.precision_at_10:.3f} (docs 0.11), AUC {ml.auc:.3f}",
        f"MovieLens-100k, time-ordered split (last 10 ratings per user held out, {pipeline.users} users), "
        f"seeds {list(pipeline.seeds)} each fit on one thread: through roomfeed's pipeline P@10 "
        f"{pipeline.p10_pipeline:.4f} vs plain LightFM {pipeline.p10_plain:.4f} (mean over seeds; per seed "
        f"{list(pipeline.per_seed_pipeline)} vs {list(pipeline.per_seed_plain)}), difference {pipeline.diff:+.4f} "
        f"(95 %, users resampled: {pipeline.diff_ci_low:+.4f} … {pipeline.diff_ci_high:+.4f}); "
        f"{pipeline.seconds:.0f} s; host load {load_before:.1f} at the start, {load_after:.1f} at the end",
    ]
    print("\n".join(lines))
    path = RESULTS / "eval.json"
    stored: dict[str, Any] = (
        json.loads(path.read_text()) if path.exists() else {"name": "eval", "metrics": {}}
    )
    stored["metrics"].update(figures)
    stored.setdefault("commands", {})["ml100k"] = command_line()
    path.write_text(json.dumps(stored, indent=2) + "\n")
    write_results(
        "eval_ml100k", command_line(), figures, lines, "eval — MovieLens-100k through roomfeed's pipeline"
    )


def main() -> None:
    from worlds.cli import world_names
    from worlds.evaluate import RunConfig

    ap = argparse.ArgumentParser()
    ap.add_argument("--viewers", type=int, default=100_000)
    ap.add_argument("--merchants", type=int, default=5_000)
    ap.add_argument("--seed", type=int, default=7)
    ap.add_argument("--targets", type=int, default=10_000)
    ap.add_argument("--report", type=Path, default=Path("reports/eval"))
    ap.add_argument("--world", type=world_names, default=None, metavar="NAME|all")
    ap.add_argument("--seeds", type=int, default=2)
    ap.add_argument(
        "--first-seed",
        type=int,
        default=1,
        help="run seeds FIRST..--seeds only (e.g. a family's second seeds into a folder that keeps the first)",
    )
    ap.add_argument("--jobs", type=int, default=2, help="world-seeds at once (processes)")
    ap.add_argument(
        "--ab-sessions", type=int, default=RunConfig.ab_sessions, help="test-day sessions per A/B (0: all)"
    )
    ap.add_argument(
        "--ab-design", choices=("paired", "split"), default=RunConfig.ab_design, help="the A/B's design"
    )
    ap.add_argument("--world-viewers", type=int, default=RunConfig.n_viewers, help="viewers per world")
    ap.add_argument("--world-merchants", type=int, default=RunConfig.n_merchants, help="merchants per world")
    ap.add_argument(
        "--world-targets", type=int, default=RunConfig.test_targets, help="test targets per world-seed"
    )
    ap.add_argument(
        "--reports",
        type=Path,
        default=Path("reports/worlds"),
        help="the world family's report folder (its cache/ keeps the simulated worlds)",
    )
    ap.add_argument(
        "--from-reports",
        action="store_true",
        help="write the figures of the world-seeds a stopped run kept in reports/worlds/ (no new runs)",
    )
    ap.add_argument(
        "--record-name",
        metavar="NAME",
        help="a record kept BESIDE the current one (e.g. documented_size_7175521: another size or ranking): "
        "written as worlds_NAME in eval.json, eval_worlds_NAME.json and its own docs/benchmarks.md block; "
        "the current `worlds` record and docs/simulator.md's record stay",
    )
    ap.add_argument(
        "--compare",
        type=Path,
        metavar="BEFORE",
        help="print --reports' world-seeds beside the same world-seeds in BEFORE (a record's report folder; "
        "bench/results/worlds_record keeps the current record's), "
        "before -> after, with the done-when lines on both; runs and writes nothing",
    )
    ap.add_argument(
        "--fresh-worlds",
        action="store_true",
        help="simulate every world again (default: reuse reports/worlds/cache, keyed by config and simulator code)",
    )
    ap.add_argument(
        "--ml100k", action="store_true", help="only the MovieLens-100k checks (the simulator's figures kept)"
    )
    args = ap.parse_args()
    if args.ml100k:
        movielens_only()
        return
    if args.world is not None:
        world_family(args)
        return
    market = Marketplace(seed=args.seed, n_merchants=args.merchants, n_viewers=args.viewers, days=7)
    run = evaluate_market(market, args.targets, args.seed)
    write_report(run, args.report)
    r = run["results"]
    ml = run_check(epochs=10, threads=2)
    pipeline = run_pipeline_check()
    metrics = {k: run[k] for k in KEYS}
    metrics.update(
        {
            "hr5_lightfm": round(r["lightfm"]["overall"]["hr5"], 4),
            "hr5_pop": round(r[run["best_pop"]]["overall"]["hr5"], 4),
            "ndcg10_pop": round(r[run["best_pop"]]["overall"]["ndcg10"], 4),
            "hr5_rep": run["hr5_reppop"],
            "ndcg10_rep": run["ndcg10_reppop"],
            "hr5_new_lightfm": round(r["lightfm"]["new"]["hr5"], 4),
            "ml100k_p10": round(ml.precision_at_10, 4),
            "ml100k_auc": round(ml.auc, 4),
            "ml100k_p10_pipeline": round(pipeline.p10_pipeline, 4),
            "ml100k_p10_plain": round(pipeline.p10_plain, 4),
            "test_targets": run["targets"],
        }
    )
    lines = [
        f"simulator: {args.viewers:,} viewers, {args.merchants:,} merchants, {run['events']:,} events; "
        "fit on days 0-5 as `roomfeed train` does, judged on day 6",
        *summary(run),
        f"MovieLens-100k (LightFM docs setup, WARP, 10 epochs): P@10 {ml.precision_at_10:.3f} (docs 0.11), AUC {ml.auc:.3f}",
        f"MovieLens-100k, time-ordered split (last 10 ratings per user held out): through roomfeed's pipeline "
        f"P@10 {pipeline.p10_pipeline:.3f} vs plain LightFM {pipeline.p10_plain:.3f}",
        f"report: {args.report}/eval.md, {args.report}/eval.png",
    ]
    print("\n".join(lines))
    previous = json.loads((RESULTS / "eval.json").read_text()) if (RESULTS / "eval.json").exists() else {}
    if "worlds" in previous.get("metrics", {}):
        metrics["worlds"] = previous["metrics"]["worlds"]
    write_results(
        "eval", command_line(), metrics, lines, "eval — availability-aware protocol on the simulator"
    )


if __name__ == "__main__":
    main()
