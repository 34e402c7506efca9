"""Ingest over HTTP against a baseline commit, in one run: is `POST /v1/events` no slower?

    .venv/bin/python bench/bench_ingest_baseline.py --baseline 9a42ed9 [--events 50000] [--rounds 5]

Serves this checkout and the baseline commit (a git worktree, same virtualenv) side by side with
`roomfeed serve` (`--api-workers`, 1 by default) on one throwaway database, Redis db and topic prefix, and posts the
same 500-event batches from 8 concurrent clients to each in turn, `--rounds` times (interleaved, so a
load change on the shared host hits both): events/s accepted (202 once Kafka has them), no consumer
running. Also the server's CPU per event (user + system of the `roomfeed serve` process and its
children, from /proc, while it posts): throughput swings with the shared host's load, the CPU a
tree spends on an event much less. Prints each round, the medians and their ratios with the host's load average; writes
bench/results/ingest_baseline_<ref>.json and its block in docs/benchmarks.md. The full pipeline (sinks,
freshness, ceilings) is bench/bench_ingest.py.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.bench_feed import _cpu_seconds  # noqa: E402
from bench.bench_ingest import BATCH, post_all, replace_section, throwaway_settings, wait_ready  # noqa: E402
from devtools import services  # noqa: E402
from events.vocabulary import VIEWER_EVENTS  # noqa: E402
from roomfeed.settings import Settings, external_services  # noqa: E402
from tests.support import free_port  # noqa: E402


def _serve(root: Path, port: int, env: dict[str, str], log: Path, workers: int) -> subprocess.Popen[bytes]:
    """`roomfeed serve` from the code in `root` (this checkout or the baseline's worktree)."""
    return subprocess.Popen(
        [
            sys.executable,
            "-m",
            "roomfeed.cli",
            "serve",
            "--port",
            str(port),
            "--workers",
            str(workers),
            "--no-migrate",
        ],
        env={**env, "PYTHONPATH": str(root)},
        cwd=root,
        stdout=log.open("ab"),
        stderr=subprocess.STDOUT,
    )


async def main(args: argparse.Namespace) -> dict[str, Any]:
    base_settings = Settings.from_env()
    if not all(external_services().values()):
        services.up(base_settings)
    settings, drop = await throwaway_settings(
        base_settings, 13, {VIEWER_EVENTS: base_settings.kafka_partitions}
    )
    db_url, redis_url = settings.database_url, settings.redis_url
    baseline_root = Path(tempfile.mkdtemp(prefix="rf-bench-baseline-")) / "tree"
    subprocess.run(
        ["git", "worktree", "add", "--detach", str(baseline_root), args.baseline],
        cwd=ROOT,
        check=True,
        capture_output=True,
    )
    ref = subprocess.run(
        ["git", "rev-parse", "--short", args.baseline], cwd=ROOT, capture_output=True, text=True, check=True
    ).stdout.strip()
    logs = Path(tempfile.mkdtemp(prefix="rf-bench-ingest-baseline-"))
    env = {
        **os.environ,
        "DATABASE_URL": db_url,
        "REDIS_URL": redis_url,
        "KAFKA_BOOTSTRAP": settings.kafka_bootstrap,
        "ROOMFEED_KAFKA_PREFIX": settings.kafka_prefix,
        "ROOMFEED_LOG_LEVEL": "WARNING",
        "ROOMFEED_ACCESS_LOG": "0",
    }
    trees = {"this tree": ROOT, ref: baseline_root}
    servers: dict[str, tuple[str, subprocess.Popen[bytes]]] = {}
    rates: dict[str, list[float]] = {label: [] for label in trees}
    cpu_us: dict[str, list[float]] = {label: [] for label in trees}
    loads: list[float] = []
    try:
        for label, root in trees.items():
            port = free_port()
            servers[label] = (
                f"http://127.0.0.1:{port}",
                _serve(root, port, env, logs / f"{ref}-{port}.log", args.api_workers),
            )
        for base, _ in servers.values():
            await wait_ready(base, timeout=240)  # start-up on the shared host can take minutes
            await post_all(settings, base, 10 * BATCH, args.clients)  # warm-up
        for n in range(args.rounds):
            # Alternate who goes first: the shared broker's load drifts within a round too.
            order = list(servers.items()) if n % 2 == 0 else list(servers.items())[::-1]
            for label, (base, process) in order:
                before = _cpu_seconds(process.pid)
                _, _, rate = await post_all(settings, base, args.events, args.clients)
                cpu_us[label].append((_cpu_seconds(process.pid) - before) * 1e6 / args.events)
                rates[label].append(rate)
            loads.append(os.getloadavg()[0])
            print(
                f"round {n + 1}: "
                + ", ".join(
                    f"{label} {rates[label][-1]:,.0f} events/s, {cpu_us[label][-1]:.1f} CPU µs/event"
                    for label in trees
                )
                + f" (load {loads[-1]:.1f})",
                flush=True,
            )
    finally:
        for _, process in servers.values():
            process.terminate()
        for _, process in servers.values():
            process.wait(15)
        subprocess.run(["git", "worktree", "remove", "--force", str(baseline_root)], cwd=ROOT, check=False)
        await drop()
    this, baseline = statistics.median(rates["this tree"]), statistics.median(rates[ref])
    this_cpu, baseline_cpu = statistics.median(cpu_us["this tree"]), statistics.median(cpu_us[ref])
    print(f"median: this tree {this:,.0f}, {ref} {baseline:,.0f} events/s, ratio {this / baseline:.3f}")
    print(
        f"median server CPU: this tree {this_cpu:.1f}, {ref} {baseline_cpu:.1f} µs/event, "
        f"ratio {this_cpu / baseline_cpu:.3f}"
    )
    return {
        "baseline": ref,
        "events_per_s": this,
        "events_per_s_baseline": baseline,
        "ratio": this / baseline,
        "cpu_us_per_event": this_cpu,
        "cpu_us_per_event_baseline": baseline_cpu,
        "cpu_ratio": this_cpu / baseline_cpu,
        "rounds": {label: [round(r) for r in values] for label, values in rates.items()},
        "cpu_rounds": {label: [round(c, 1) for c in values] for label, values in cpu_us.items()},
        "load_average": [round(x, 1) for x in loads],
    }


def record(results: dict[str, Any], command: str) -> None:
    machine = f"{os.cpu_count()} cores, {platform.machine()}, Python {platform.python_version()}"
    out = {
        "name": "ingest_baseline",
        "command": command,
        "date": dt.date.today().isoformat(),
        "machine": machine,
        "metrics": {k: round(v, 3) if isinstance(v, float) else v for k, v in results.items()},
    }
    ref = results["baseline"]
    (ROOT / "bench" / "results" / f"ingest_baseline_{ref}.json").write_text(json.dumps(out, indent=2) + "\n")
    rows = [
        f"| {n + 1} | {a:,} | {b:,} | {ca} | {cb} | {load} |"
        for n, (a, b, ca, cb, load) in enumerate(
            zip(
                results["rounds"]["this tree"],
                results["rounds"][ref],
                results["cpu_rounds"]["this tree"],
                results["cpu_rounds"][ref],
                results["load_average"],
                strict=True,
            )
        )
    ]
    section = "\n".join(
        [
            f"<!-- bench:ingest_baseline_{ref} -->",
            f"## ingest_baseline — HTTP ingest against {ref}, same run ({out['date']}, {machine})\n",
            f"`{command}`\n",
            f"| round | this tree events/s | {ref} events/s | this tree CPU µs/event | {ref} CPU µs/event "
            "| load average |",
            "|---|---|---|---|---|---|",
            *rows,
            f"| median | {results['events_per_s']:,.0f} | {results['events_per_s_baseline']:,.0f} | "
            f"{results['cpu_us_per_event']:.1f} | {results['cpu_us_per_event_baseline']:.1f} | |",
            f"| ratio | {results['ratio']:.3f} | | {results['cpu_ratio']:.3f} | | |",
            "",
            "500-event batches from 8 clients to `roomfeed serve` of each tree in turn, no consumer",
            "running; the host is shared with other engineers' suites, so only the same-run ratio means anything.",
            f"<!-- /bench:ingest_baseline_{ref} -->",
        ]
    )
    replace_section(ROOT / "docs" / "benchmarks.md", section, f"ingest_baseline_{ref}")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--baseline", required=True, metavar="GIT_REF")
    parser.add_argument("--events", type=int, default=50_000)
    parser.add_argument("--clients", type=int, default=8)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument(
        "--api-workers", type=int, default=1, help="uvicorn workers of each tree's roomfeed serve"
    )
    parser.add_argument("--no-record", action="store_true")
    options = parser.parse_args()
    figures = asyncio.run(main(options))
    if not options.no_record:
        record(figures, "python " + " ".join(["bench/bench_ingest_baseline.py", *sys.argv[1:]]))
