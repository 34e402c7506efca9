"""`roomfeed evaluate [--world NAME|all] [--seeds N]`: the ranker judged in every simulated world.

Owns the verb's options (ranking's, plus the world family's) and `run_worlds`, which runs each
world at each seed (simulate, train, replay, tune, A/B: worlds.evaluate.run_world) under one
progress bar (roomfeed.progress: quiet when stderr is not a terminal) and writes per world a table and a plot
(worlds.report) plus `worlds.json` with the summary figures. Without `--world` the verb is
the default world's evaluation (simulator.evaluation).
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import sys
import time
from collections.abc import Sequence
from concurrent.futures import ProcessPoolExecutor, as_completed
from pathlib import Path
from typing import Any

import orjson

from ranking.offline import FitConfig
from roomfeed.progress import progress
from simulator.evaluation import add_evaluate_args as add_default_evaluate_args
from simulator.evaluation import evaluate_command as default_evaluate_command
from simulator.presets import N_MERCHANTS, N_VIEWERS, WORLDS
from worlds.evaluate import RunConfig, run_world
from worlds.online import DESIGNS
from worlds.report import seed_table, summarise, summary_table, write_world_report

PHASES = ("simulate", "fit", "judge", "a/b")


def world_names(text: str) -> list[str]:
    if text == "all":
        return list(WORLDS)
    names = [n.strip() for n in text.split(",") if n.strip()]
    unknown = [n for n in names if n not in WORLDS]
    if unknown or not names:
        raise argparse.ArgumentTypeError(
            f"unknown world {', '.join(unknown)!r}: one of all, {', '.join(WORLDS)}"
        )
    return names


def add_evaluate_args(parser: argparse.ArgumentParser) -> None:
    add_default_evaluate_args(parser)
    parser.add_argument(
        "--world",
        type=world_names,
        default=None,
        metavar="NAME|all",
        help=f"judge the ranker in simulated worlds ({', '.join(WORLDS)}; comma-separated or all)",
    )
    parser.add_argument("--seeds", type=int, default=2, help="simulator seeds per world (--world)")
    parser.add_argument(
        "--epochs", type=int, default=FitConfig().model.epochs, help="LightFM epochs (--world)"
    )
    parser.add_argument(
        "--lists",
        type=int,
        default=RunConfig().fit.ranker_lists,
        help="the ranker's training lists (--world)",
    )
    parser.add_argument("--jobs", type=int, default=1, help="world-seeds run at once, in processes (--world)")
    parser.add_argument("--world-viewers", type=int, default=N_VIEWERS, help="viewers per world (--world)")
    parser.add_argument(
        "--world-merchants", type=int, default=N_MERCHANTS, help="merchants per world (--world)"
    )
    parser.add_argument(
        "--world-cache",
        type=Path,
        default=None,
        metavar="DIR",
        help="keep simulated worlds here between runs, keyed by configuration and simulator code "
        "(--world; default: the report folder's cache/)",
    )
    parser.add_argument(
        "--fresh-worlds", action="store_true", help="simulate every world again, keeping none (--world)"
    )
    parser.add_argument(
        "--ab-sessions",
        type=int,
        default=RunConfig.ab_sessions,
        help="test-day sessions drawn into each A/B (0: all of them)",
    )
    parser.add_argument(
        "--ab-design",
        choices=DESIGNS,
        default=RunConfig.ab_design,
        help="paired: every session in both arms, each arm its own world; split: viewers split by the "
        "experiments hash, CUPED on their pre-period (--world)",
    )


def _keep(run: dict[str, Any], report_dir: Path) -> None:
    """Each run's figures as soon as it ends (a long run stopped half-way keeps what it measured)."""
    out = report_dir / str(run["world"])
    out.mkdir(parents=True, exist_ok=True)
    (out / f"seed{run['seed']}.json").write_bytes(
        orjson.dumps(run, option=orjson.OPT_INDENT_2 | orjson.OPT_SERIALIZE_NUMPY)
    )


def _one(name: str, seed: int, cfg: RunConfig) -> dict[str, Any]:
    return run_world(name, seed, cfg)


def run_worlds(
    names: Sequence[str],
    seeds: Sequence[int],
    cfg: RunConfig,
    report_dir: Path,
    jobs: int = 1,
) -> dict[str, Any]:
    """Every world at every seed; per-world reports under `report_dir`; the summary (also worlds.json).

    `jobs` > 1 runs that many world-seeds at once in worker processes (the bar then moves per run).
    """
    runs: dict[str, list[dict[str, Any]]] = {name: [] for name in names}
    started = time.perf_counter()
    work = [(name, seed) for seed in seeds for name in names]  # every world's first seed first
    with progress("worlds", total=len(work) * len(PHASES), unit="step") as bar:
        if jobs <= 1:
            for name, seed in work:

                def step(phase: str, _name: str = name, _seed: int = seed) -> None:
                    if phase != PHASES[0]:
                        bar.update()
                    bar.describe(f"{_name} seed {_seed}: {phase}")

                runs[name].append(run_world(name, seed, cfg, step=step))
                _keep(runs[name][-1], report_dir)
                bar.update()
        else:
            bar.describe(f"{len(work)} world-seeds, {jobs} at a time")
            with ProcessPoolExecutor(max_workers=jobs) as pool:
                futures = {pool.submit(_one, name, seed, cfg): name for name, seed in work}
                for future in as_completed(futures):
                    run = future.result()
                    runs[run["world"]].append(run)
                    _keep(run, report_dir)
                    bar.update(len(PHASES))
                    bar.describe(f"{run['world']} seed {run['seed']} done")
    return summarise_runs(runs, report_dir, time.perf_counter() - started)


def kept_runs(report_dir: Path, names: Sequence[str]) -> dict[str, list[dict[str, Any]]]:
    """The runs a (possibly stopped) `run_worlds` kept under `report_dir`, per world that has any."""
    runs: dict[str, list[dict[str, Any]]] = {}
    for name in names:
        kept = [orjson.loads(p.read_bytes()) for p in sorted((report_dir / name).glob("seed*.json"))]
        if kept:
            runs[name] = kept
    return runs


def summarise_runs(runs: dict[str, list[dict[str, Any]]], report_dir: Path, seconds: float) -> dict[str, Any]:
    """Per world its report and summary figures; worlds.json and worlds.md under `report_dir`."""
    summary: dict[str, dict[str, float]] = {}
    for name in runs:
        runs[name].sort(key=lambda r: int(r["seed"]))
        summary[name] = summarise(runs[name])
        write_world_report(name, runs[name], report_dir)
    result = {
        "worlds": summary,
        "seed_table": (per_seed := seed_table(runs)),
        "seeds": {name: [int(r["seed"]) for r in rs] for name, rs in runs.items()},
        "seconds": round(seconds, 1),
        "timings": {name: [r["timings"] for r in rs] for name, rs in runs.items()},
        "simulated": {name: [r["simulated"] for r in rs] for name, rs in runs.items()},
    }
    report_dir.mkdir(parents=True, exist_ok=True)
    (report_dir / "worlds.json").write_bytes(orjson.dumps(result, option=orjson.OPT_INDENT_2))
    (report_dir / "worlds.md").write_text(summary_table(summary) + "\n\n" + per_seed + "\n")
    return result


def run_config(args: argparse.Namespace, report_dir: Path) -> RunConfig:
    return RunConfig(
        n_viewers=args.world_viewers,
        n_merchants=args.world_merchants,
        ab_sessions=args.ab_sessions or None,
        ab_design=args.ab_design,
        # One default with bench_eval: RunConfig's, unless --targets says otherwise.
        test_targets=args.targets if args.targets is not None else RunConfig.test_targets,
        world_cache=None if args.fresh_worlds else (args.world_cache or report_dir / "cache"),
        fit=FitConfig(
            model=dataclasses.replace(RunConfig().fit.model, epochs=args.epochs), ranker_lists=args.lists
        ),
    )


async def evaluate_command(settings: Any, args: argparse.Namespace) -> int:
    if args.world is None:
        return await default_evaluate_command(settings, args)
    report_dir = args.report if args.report != Path("reports/eval") else Path("reports/worlds")
    seeds = list(range(1, args.seeds + 1))
    result = await asyncio.to_thread(
        run_worlds, args.world, seeds, run_config(args, report_dir), report_dir, args.jobs
    )
    print(summary_table(result["worlds"]))
    print()
    print(result["seed_table"])
    print(f"report: {report_dir}/<world>/table.md, eval.png; {report_dir}/worlds.json", file=sys.stderr)
    return 0
