"""Cluster benchmark: roomfeed on a 3-broker Apache Kafka KRaft cluster, under ingest, with a broker killed.

    .venv/bin/python bench/bench_cluster.py [--repeats 1]

Starts what it needs (tests/faults/stack.py): private PostgreSQL and Redis, three Kafka nodes
(each broker and controller; topics with replication factor 3 and min.insync.replicas 2), two
`roomfeed serve` API processes and two `roomfeed worker` processes. Viewers post event batches
(retrying the same ids until a 202) and swipe through the feed across both API processes; the
broker that leads the events topic's first partition is killed with SIGKILL, left down 3 s and
started again; then the bench waits until every accepted event is archived once and the live
stats equal a recount of the archive (tests/faults/scenarios.py, the code tests/cluster asserts on).

Prints and records (bench/results/cluster.json, docs/benchmarks.md): kafka_brokers, redis_masters,
api_processes, workers, accepted, lost, duplicated, feed_5xx, ingest_retries, recovery_s.
Redis is one server: Redis Cluster support is not built yet (redis_masters = 1).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

sys.path.insert(0, str(ROOT / "bench"))
from bench_faults import machine, replace_section  # noqa: E402

KAFKA_BROKERS, REDIS_MASTERS, API_PROCESSES, WORKERS = 3, 1, 2, 2


async def run(repeats: int) -> list[dict[str, Any]]:
    from devtools import services
    from events.vocabulary import VIEWER_EVENTS
    from roomfeed.settings import Settings, external_services
    from tests.faults.scenarios import kafka_cluster_broker_during_ingest, topic_layout
    from tests.faults.stack import FaultStack
    from tests.support import world_readable_tempdir

    base = Settings.from_env()
    if not all(external_services().values()):
        await asyncio.to_thread(services.up, base)  # the Kafka jars the private brokers share
    stack = FaultStack(
        base,
        Path(world_readable_tempdir("rf-bench-cluster-")),
        api_processes=API_PROCESSES,
        workers=WORKERS,
        kafka_brokers=KAFKA_BROKERS,
    )
    started = time.monotonic()
    await stack.start()
    layout = await topic_layout(stack, stack.settings.topic(VIEWER_EVENTS))
    print(
        f"stack up in {time.monotonic() - started:.1f} s: {KAFKA_BROKERS} Kafka brokers (events topic "
        f"replicas {layout['replicas']}, min.insync.replicas {layout['min_insync_replicas']}), "
        f"{API_PROCESSES} × serve, {WORKERS} × worker"
    )
    runs = []
    try:
        for _ in range(repeats):
            result = (await kafka_cluster_broker_during_ingest(stack)).as_dict()
            print(f"  {result}")
            runs.append(result)
    finally:
        await stack.close()
    return runs


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--repeats", type=int, default=1)
    args = parser.parse_args()
    command = ".venv/bin/python bench/bench_cluster.py" + "".join(f" {a}" for a in sys.argv[1:])
    runs = asyncio.run(run(args.repeats))
    metrics = {
        "kafka_brokers": KAFKA_BROKERS,
        "redis_masters": REDIS_MASTERS,
        "api_processes": API_PROCESSES,
        "workers": WORKERS,
        "accepted": sum(r["accepted"] for r in runs),
        "lost": sum(r["lost"] for r in runs),
        "duplicated": sum(r["duplicated"] for r in runs),
        "feed_5xx": sum(r["feed_5xx"] for r in runs),
        "feed_requests": sum(r["feed_requests"] for r in runs),
        "ingest_retries": sum(r["ingest_retries"] for r in runs),
        "recovery_s": max(r["recovery_s"] for r in runs),
    }
    print(f"\n{json.dumps(metrics)}\ncommand: {command}")
    date = time.strftime("%Y-%m-%d")
    result = {"name": "cluster", "command": command, "date": date, "machine": machine(), "metrics": metrics}
    (ROOT / "bench" / "results").mkdir(parents=True, exist_ok=True)
    (ROOT / "bench" / "results" / "cluster.json").write_text(json.dumps(result, indent=2) + "\n")
    head = "| " + " | ".join(metrics) + " |\n|" + "---|" * len(metrics) + "\n"
    row = "| " + " | ".join(str(v) for v in metrics.values()) + " |\n"
    section = (
        f"## cluster — a Kafka broker of three killed during ingest ({date})\n\n`{command}` — {machine()}, "
        f"{args.repeats} run(s), summed.\n\n{head}{row}\n"
        "Three KRaft nodes on this machine (replication factor 3, min.insync.replicas 2), two API "
        "processes, two workers; the broker leading the events topic's first partition is killed with "
        "SIGKILL under ingest, down 3 s, restarted. `ingest_retries`: 503s while partitions elected a "
        "new leader (the client retried the same ids). Redis is one server (Redis Cluster: not yet built), "
        "so `redis_masters` is 1 and no Redis failover is part of this run.\n"
    )
    replace_section(ROOT / "docs" / "benchmarks.md", "cluster", section)
    return 0 if metrics["lost"] == metrics["duplicated"] == metrics["feed_5xx"] == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
