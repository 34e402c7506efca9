"""The worker's cost per event, sink by sink, and its start-up, against a baseline commit in one run.

    .venv/bin/python bench/bench_ingest_sinks.py --baseline 9a42ed9 [--events 200000] [--rounds 3]
        [--sinks realtime,archive,heat,alliance]

bench_ingest.py times the whole pipeline on the shared 2-core host, where a round's figures move with
the neighbours' load; this one measures what a worker spends, which moves far less. On a throwaway
database, Redis db and topic prefix it puts `--events` ingest-shaped events (500-event batches of one
viewer, as bench_ingest posts them) on the events topic once, then, for each round and each tree in
turn (this checkout, and the baseline's code from a git worktree, alternating who goes first):
  start-up  the CPU of `roomfeed worker --help` in a child of that tree: what a worker loads before it
            can run a sink (the worker verb's imports);
  sinks     each sink of that tree in a child process, a SinkRunner replaying the topic from the start
            in a fresh consumer group into emptied stores, timed from its first records: the child's
            CPU per event (decode, check, plan, the store's client; the store's own CPU is not in it).
Prints each round, the medians and this / baseline; writes bench/results/ingest_sinks_vs_<ref>.json and
its block in docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import orjson

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.bench_ingest import (  # noqa: E402
    baseline_worktree,
    make_batches,
    replace_section,
    send_as_batches,
    throwaway_settings,
)
from devtools import services  # noqa: E402
from events.vocabulary import DEAD_LETTERS, VIEWER_EVENTS  # noqa: E402
from roomfeed.kafka import make_producer  # noqa: E402
from roomfeed.settings import Settings, external_services  # noqa: E402

# One sink of the tree on the path, replaying the topic in a fresh group; prints its CPU per event.
# Sinks are built as that tree's worker builds them: the worker's root (roomfeed.worker_assembly) where
# the tree has one ("root"), else the worker module of older trees (events.cli._build_sinks, as at 9a42ed9).
# Decided from the tree's files: the editable install would find this checkout's module for an older tree.
_SINK_CHILD = """
import asyncio, contextlib, secrets, sys, time
import asyncpg
from redis.asyncio import Redis
from events.consumer import SinkRunner
from roomfeed.settings import Settings

async def main(name, n):
    settings = Settings.from_env()
    pool = await asyncpg.create_pool(settings.database_url, min_size=1, max_size=4)
    redis = Redis.from_url(settings.redis_url)
    await redis.flushdb()
    await pool.execute("TRUNCATE interactions, event_ids")
    if sys.argv[3] == "root":
        from roomfeed.worker_assembly import WORKER_SINKS
        sink = await WORKER_SINKS[name](settings, pool, redis)
    else:
        from events.cli import _build_sinks
        (sink,) = await _build_sinks([name], pool, redis, settings)
    runner = SinkRunner(settings, sink, group=f"bench-sinks-{name}-{secrets.token_hex(3)}")
    await runner.start()
    task = asyncio.create_task(runner.run())
    while not runner.processed:
        await asyncio.sleep(0.001)
    started, cpu, first = time.perf_counter(), time.process_time(), runner.processed
    while runner.processed < n:
        await asyncio.sleep(0.005)
    done = runner.processed - first
    print("FIGURES", (time.process_time() - cpu) * 1e6 / done, done / (time.perf_counter() - started))
    await runner.stop()
    task.cancel()
    with contextlib.suppress(BaseException):
        await task
    await pool.close()
    await redis.aclose()

asyncio.run(main(sys.argv[1], int(sys.argv[2])))
"""


async def put_events(settings: Settings, n: int) -> None:
    """`n` events on the events topic as ingest writes them (merchant_id, received_at), keyed by viewer."""
    producer = make_producer(settings)
    await producer.start()
    topic = settings.topic(VIEWER_EVENTS)
    now = int(time.time() * 1000)
    batches = [
        (
            viewer.encode(),
            [orjson.dumps({**e, "v": 1, "merchant_id": None, "received_at": now}) for e in events],
        )
        for viewer, events in make_batches(n)
    ]
    try:
        await send_as_batches(producer, topic, sorted(await producer.partitions_for(topic)), batches)
    finally:
        await producer.stop()


def _child_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def startup_cpu(root: Path, env: dict[str, str]) -> float:
    """CPU seconds of `roomfeed worker --help` from the code in `root`: the worker verb's imports."""
    before = _child_cpu()
    subprocess.run(
        [sys.executable, "-m", "roomfeed.cli", "worker", "--help"],
        cwd=root,
        env={**env, "PYTHONPATH": str(root)},
        check=True,
        capture_output=True,
    )
    return _child_cpu() - before


def sink_cpu(root: Path, env: dict[str, str], sink: str, n: int) -> tuple[float, float]:
    """(CPU µs per event, events/s) of `sink` from the code in `root`, replaying `n` events."""
    has_root = (root / "roomfeed" / "worker_assembly.py").exists()
    child = subprocess.run(
        [sys.executable, "-c", _SINK_CHILD, sink, str(n), "root" if has_root else "cli"],
        cwd=root,
        env={**env, "PYTHONPATH": str(root)},
        capture_output=True,
        text=True,
    )
    if child.returncode != 0:
        raise SystemExit(f"the {sink} sink of {root} failed:\n{child.stderr}")
    out = child.stdout
    line = next(x for x in out.splitlines() if x.startswith("FIGURES "))
    cpu_us, rate = (float(x) for x in line.split()[1:])
    return cpu_us, rate


async def main(args: argparse.Namespace) -> dict[str, Any]:
    base_settings = Settings.from_env()
    if not all(external_services().values()):
        services.up(base_settings)
    settings, drop = await throwaway_settings(
        base_settings, 12, {VIEWER_EVENTS: base_settings.kafka_partitions, DEAD_LETTERS: 1}
    )
    ref, tree = baseline_worktree(args.baseline)
    env = {
        **os.environ,
        "DATABASE_URL": settings.database_url,
        "REDIS_URL": settings.redis_url,
        "KAFKA_BOOTSTRAP": settings.kafka_bootstrap,
        "ROOMFEED_KAFKA_PREFIX": settings.kafka_prefix,
        "ROOMFEED_LOG_LEVEL": "ERROR",
    }
    sinks = [s.strip() for s in args.sinks.split(",") if s.strip()]
    trees = {"this": ROOT, ref: tree}
    figures: dict[str, dict[str, list[float]]] = {label: {} for label in trees}
    loads: list[float] = []
    try:
        await put_events(settings, args.events)
        for r in range(args.rounds):
            order = list(trees.items()) if r % 2 == 0 else list(trees.items())[::-1]
            for label, root in order:
                got = figures[label]
                got.setdefault("startup_cpu_s", []).append(startup_cpu(root, env))
                for sink in sinks:
                    cpu_us, rate = sink_cpu(root, env, sink, args.events)
                    got.setdefault(f"{sink}_cpu_us_per_event", []).append(cpu_us)
                    got.setdefault(f"{sink}_events_per_s", []).append(rate)
            loads.append(os.getloadavg()[0])
            print(
                f"round {r + 1} (load {loads[-1]:.1f}): "
                + "; ".join(
                    f"{label} start-up {figures[label]['startup_cpu_s'][-1]:.2f} s, "
                    + ", ".join(f"{s} {figures[label][f'{s}_cpu_us_per_event'][-1]:.2f} us" for s in sinks)
                    for label in trees
                ),
                flush=True,
            )
    finally:
        subprocess.run(["git", "worktree", "remove", "--force", str(tree)], cwd=ROOT, check=False)
        await drop()
    this = {k: statistics.median(v) for k, v in figures["this"].items()}
    base = {k: statistics.median(v) for k, v in figures[ref].items()}
    ratios = {k: this[k] / base[k] for k in this if base.get(k)}
    print(f"medians of {args.rounds} rounds, this / {ref}:")
    for key, ratio in ratios.items():
        print(f"  {key:32s} {this[key]:>12,.2f} {base[key]:>12,.2f}  {ratio:.3f}")
    return {
        **this,
        "baseline": {"ref": ref, **base},
        "vs_baseline": ratios,
        "rounds": {label: got for label, got in figures.items()},
        "events": args.events,
        "load_avg": [round(x, 1) for x in loads],
    }


def record(results: dict[str, Any], command: str) -> None:
    ref = results["baseline"]["ref"]
    name = f"ingest_sinks_vs_{ref}"
    machine = f"{os.cpu_count()} cores, {platform.machine()}, Python {platform.python_version()}"

    def rounded(value: Any) -> Any:
        if isinstance(value, dict):
            return {k: rounded(v) for k, v in value.items()}
        if isinstance(value, list):
            return [rounded(v) for v in value]
        return round(value, 3) if isinstance(value, float) else value

    out = {"name": name, "command": command, "date": dt.date.today().isoformat(), "machine": machine}
    out["metrics"] = rounded(results)
    (ROOT / "bench" / "results" / f"{name}.json").write_text(json.dumps(out, indent=2) + "\n")
    base = results["baseline"]
    lines = [
        f"<!-- bench:{name} -->",
        f"## ingest_sinks — the worker's CPU per event and start-up against {ref}, same run ({out['date']}, {machine})\n",
        f"`{command}`\n",
        f"{results['events']:,} ingest-shaped events on the topic once; per round and tree in turn (alternating who goes "
        "first) each sink of that tree in a child process replays them in a fresh group into emptied stores, "
        "timed from its first records (the store's own CPU is not in it); start-up is the CPU of that tree's "
        f"`roomfeed worker --help`. Medians of the rounds; load average after each round: "
        f"{', '.join(str(x) for x in results['load_avg'])}.\n",
        f"| figure | this | {ref} | this / {ref} |",
        "|---|---|---|---|",
        *(
            f"| {key} | {results[key]:,.2f} | {base[key]:,.2f} | {ratio:.2f} |"
            for key, ratio in results["vs_baseline"].items()
        ),
        f"<!-- /bench:{name} -->",
    ]
    replace_section(ROOT / "docs" / "benchmarks.md", "\n".join(lines), name)


def parse_options() -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--baseline", required=True, metavar="GIT_REF", help="the commit to compare with")
    parser.add_argument("--sinks", default="realtime,archive,heat,alliance", help="comma-separated")
    parser.add_argument(
        "--events", type=int, default=200_000, help="events on the topic, replayed by each sink"
    )
    parser.add_argument("--rounds", type=int, default=3, help="runs of each tree, alternating who goes first")
    parser.add_argument("--no-record", action="store_true")
    return parser.parse_args()


if __name__ == "__main__":
    options = parse_options()
    results = asyncio.run(main(options))
    if not options.no_record:
        record(results, "python " + " ".join(["bench/bench_ingest_sinks.py", *sys.argv[1:]]))
