"""Fault benchmark: kill -9 and restart, in turn, each moving part of a running deployment under traffic.

    .venv/bin/python bench/bench_faults.py [--only kafka,redis,postgres,worker,api] [--repeats 1]

Starts what it needs: private PostgreSQL, Redis and Apache Kafka servers on free ports, two
`roomfeed serve` API processes and a `roomfeed worker` (tests/faults/stack.py). For each scenario
(tests/faults/scenarios.py, the same code the fault tests assert on) viewers post event batches,
retrying the same ids until a 202, and swipe through the feed, failing over between the API
processes; one thing is killed with SIGKILL, left down 3 s, started again; then the bench waits
until every accepted event is archived once and the live stats equal a recount of the archive.

Prints one row per scenario: accepted events, lost, counted twice, feed 5xx, feed answers marked
degraded, recovery (restart → everything consistent, including 3 s of traffic after the restart).
Writes bench/results/faults.json and the table into docs/benchmarks.md and docs/reliability.md.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import statistics
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.markdown import replace_body  # noqa: E402

COLUMNS = (
    "accepted",
    "lost",
    "duplicated",
    "live_missing",
    "feed_5xx",
    "feed_requests",
    "feed_degraded",
    "ingest_retries",
    "failovers",
    "orders",
    "orders_lost",
    "orders_duplicated",
    "orders_unattributed",
    "recovery_s",
)


def machine() -> str:
    return (
        f"{os.cpu_count()} cores, {platform.machine()}, Python {platform.python_version()}, load avg "
        + " ".join(f"{x:.1f}" for x in os.getloadavg())
    )


def table(rows: list[dict[str, Any]]) -> str:
    head = "| scenario | " + " | ".join(COLUMNS) + " |\n|---|" + "---|" * len(COLUMNS) + "\n"
    return head + "".join(
        "| " + r["name"] + " | " + " | ".join(str(r[c]) for c in COLUMNS) + " |\n" for r in rows
    )


async def run(only: list[str], repeats: int) -> list[dict[str, Any]]:
    from devtools import services
    from roomfeed.settings import Settings, external_services
    from tests.faults.scenarios import SCENARIOS
    from tests.faults.stack import FaultStack
    from tests.support import world_readable_tempdir

    base = Settings.from_env()
    if not all(external_services().values()):
        await asyncio.to_thread(services.up, base)  # the Kafka jars the private broker shares
    stack = FaultStack(base, Path(world_readable_tempdir("rf-bench-faults-")))
    started = time.monotonic()
    await stack.start()
    print(f"stack up in {time.monotonic() - started:.1f} s (PostgreSQL, Redis, Kafka, 2 × serve, worker)")
    rows = []
    try:
        for name in only:
            runs = []
            for _ in range(repeats):
                result = (await SCENARIOS[name](stack)).as_dict()
                print(f"  {result['name']}: {result}")
                runs.append(result)
            row = {"name": runs[0]["name"], "key": name}
            for column in COLUMNS:
                values = [r[column] for r in runs]
                # counts of failures: the worst run; the rest: the median
                worst = column in (
                    "lost",
                    "duplicated",
                    "live_missing",
                    "feed_5xx",
                    "orders_lost",
                    "orders_duplicated",
                    "orders_unattributed",
                )
                row[column] = max(values) if worst else round(statistics.median(values), 2)
            rows.append(row)
    finally:
        await stack.close()
    return rows


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--only", default="kafka,redis,postgres,worker,api")
    parser.add_argument("--repeats", type=int, default=1)
    args = parser.parse_args()
    only = [s.strip() for s in args.only.split(",") if s.strip()]
    command = ".venv/bin/python bench/bench_faults.py" + "".join(f" {a}" for a in sys.argv[1:])
    began = time.monotonic()
    rows = asyncio.run(run(only, args.repeats))
    text = table(rows)
    print()
    print(text)
    total = {
        "accepted": sum(r["accepted"] for r in rows),
        "lost": sum(r["lost"] for r in rows),
        "duplicated": sum(r["duplicated"] for r in rows),
        "feed_5xx": sum(r["feed_5xx"] for r in rows),
        "orders": sum(r["orders"] for r in rows),
        "orders_lost": sum(r["orders_lost"] for r in rows),
        "orders_duplicated": sum(r["orders_duplicated"] for r in rows),
        "orders_unattributed": sum(r["orders_unattributed"] for r in rows),
        "recovery_s": max(r["recovery_s"] for r in rows),
    }
    print(f"total: {total}   ({time.monotonic() - began:.0f} s)   command: {command}")
    date = time.strftime("%Y-%m-%d")
    result = {
        "name": "faults",
        "command": command,
        "date": date,
        "machine": machine(),
        "metrics": {**total, "scenarios": {r["key"]: {c: r[c] for c in COLUMNS} for r in rows}},
    }
    (ROOT / "bench" / "results").mkdir(parents=True, exist_ok=True)
    (ROOT / "bench" / "results" / "faults.json").write_text(json.dumps(result, indent=2) + "\n")
    section = (
        f"## faults — kill -9 and restart under traffic ({date})\n\n`{command}` — {machine()}, "
        f"median of {args.repeats} run(s) per scenario (failure counts: the worst run).\n\n{text}\n"
        f"recovery_s: from the restart command until every accepted event is archived once and the "
        f"live stats equal a recount of the archive, and every accepted order is recorded once and "
        f"attributed once (traffic continues 3 s after the restart).\n"
    )
    replace_body(ROOT / "docs" / "benchmarks.md", "faults", section)
    replace_body(ROOT / "docs" / "reliability.md", "faults", section)
    failures = ("lost", "duplicated", "feed_5xx", "orders_lost", "orders_duplicated", "orders_unattributed")
    return 0 if all(total[k] == 0 for k in failures) else 1


if __name__ == "__main__":
    sys.exit(main())
