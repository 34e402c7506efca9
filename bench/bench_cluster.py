"""Cluster benchmark: roomfeed on a 3-broker Apache Kafka KRaft cluster and a 3-master Redis Cluster,
under ingest, with a broker killed and a Redis master failed over; then a new API process started.

    .venv/bin/python bench/bench_cluster.py [--repeats 1] [--redis-masters 3]

Starts what it needs (tests/faults/stack.py): a private PostgreSQL, three Kafka nodes (each broker
and controller; topics with replication factor 3 and min.insync.replicas 2), a Redis Cluster of
`--redis-masters` masters with a replica each (REDIS_URL redis+cluster://; 1: one redis-server),
two `roomfeed serve` API processes and two `roomfeed worker` processes. Viewers post event batches
(retrying the same ids until a 202), swipe through the feed and report verified orders across both
API processes; the broker that leads the events topic's first partition is killed with SIGKILL,
left down 3 s and started again, and (on a Redis Cluster) the master serving the events' slot
({ev}) is failed over to its replica at the same moment; then the bench waits until every accepted
event is archived once and the live stats equal a recount of the archive
(tests/faults/scenarios.py, the code tests/cluster asserts on).

Then the warm start of a new API process beside the running ones: from its spawn to `/healthz`
(the process answers) and to `/readyz` ready (PostgreSQL pool, Redis, Kafka, the live index read,
the serving model loaded), its first session and feed page, and the median page of its next ones
against a page of a process that has been serving all along (same run, same moment).

Prints and records (bench/results/cluster.json, docs/benchmarks.md): kafka_brokers, redis_masters,
api_processes, workers, accepted, lost, duplicated, feed_5xx, ingest_retries, recovery_s and the
warm start figures.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

sys.path.insert(0, str(ROOT / "bench"))
from bench_faults import machine  # noqa: E402

from bench.markdown import replace_body  # noqa: E402

KAFKA_BROKERS, API_PROCESSES, WORKERS = 3, 2, 2
PAGES = 20  # pages timed on the new process and on an old one


async def _page_ms(client: Any, base: str, headers: dict[str, str], viewer: str) -> tuple[float, float]:
    """(ms to start a session, ms to its first feed page) on the API process at `base`."""
    started = time.perf_counter()
    r = await client.post(f"{base}/v1/sessions", headers=headers, json={"viewer_id": viewer, "entry": {}})
    assert r.status_code == 201, r.text
    session_ms = (time.perf_counter() - started) * 1000
    started = time.perf_counter()
    r = await client.get(f"{base}/v1/sessions/{r.json()['session_id']}/feed?count=3", headers=headers)
    assert r.status_code == 200, r.text
    return session_ms, (time.perf_counter() - started) * 1000


async def warm_start(stack: Any) -> dict[str, float]:
    """A third `roomfeed serve` started beside the two serving ones: how long until it serves."""
    import httpx

    from tests.faults.stack import RoomfeedProcess
    from tests.support import free_port, process_env

    port = free_port()
    base = f"http://127.0.0.1:{port}"
    fresh = RoomfeedProcess(
        "api-new", ["serve", "--port", str(port), "--no-migrate"], process_env(stack.settings), stack.work_dir
    )
    spawned = time.monotonic()
    fresh.start()
    live_s = ready_s = 0.0
    try:
        async with httpx.AsyncClient(timeout=10) as client:
            while not ready_s:
                assert fresh.alive(), fresh.tail()
                assert time.monotonic() - spawned < 180, fresh.tail()
                try:
                    if not live_s and (await client.get(f"{base}/healthz")).status_code == 200:
                        live_s = time.monotonic() - spawned
                    r = await client.get(f"{base}/readyz")
                    if r.status_code == 200 and r.json().get("status") == "ready":
                        ready_s = time.monotonic() - spawned
                except httpx.HTTPError:
                    pass
                await asyncio.sleep(0.05)
            tag = f"{int(time.time())}"
            first_session_ms, first_page_ms = await _page_ms(
                client, base, stack.viewer_headers(f"ws_{tag}_0"), f"ws_{tag}_0"
            )
            pages: dict[str, list[float]] = {"new": [], "old": []}
            for n in range(1, PAGES + 1):  # interleaved: the host's load hits both alike
                for which, url in (("new", base), ("old", stack.api_urls[0])):
                    viewer = f"ws_{tag}_{which}_{n}"
                    pages[which].append(
                        (await _page_ms(client, url, stack.viewer_headers(viewer), viewer))[1]
                    )
    finally:
        fresh.stop()
    return {
        "new_api_live_s": round(live_s, 2),
        "new_api_ready_s": round(ready_s, 2),
        "new_api_first_session_ms": round(first_session_ms, 1),
        "new_api_first_page_ms": round(first_page_ms, 1),
        "new_api_page_p50_ms": round(statistics.median(pages["new"]), 1),
        "old_api_page_p50_ms": round(statistics.median(pages["old"]), 1),
    }


async def run(repeats: int, redis_masters: int) -> tuple[list[dict[str, Any]], dict[str, float]]:
    from devtools import services
    from events.vocabulary import VIEWER_EVENTS
    from roomfeed.settings import Settings, external_services
    from tests.faults.scenarios import (
        kafka_broker_killed_and_redis_master_failed_over,
        kafka_cluster_broker_during_ingest,
        topic_layout,
    )
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
        redis_masters=redis_masters,
    )
    scenario = (
        kafka_broker_killed_and_redis_master_failed_over
        if redis_masters > 1
        else kafka_cluster_broker_during_ingest
    )
    started = time.monotonic()
    try:
        await stack.start()
        layout = await topic_layout(stack, stack.settings.topic(VIEWER_EVENTS))
        print(
            f"stack up in {time.monotonic() - started:.1f} s: {KAFKA_BROKERS} Kafka brokers (events topic "
            f"replicas {layout['replicas']}, min.insync.replicas {layout['min_insync_replicas']}), "
            f"Redis {stack.settings.redis_url}, {API_PROCESSES} × serve, {WORKERS} × worker"
        )
        runs = []
        for _ in range(repeats):
            result = (await scenario(stack)).as_dict()
            print(f"  {result}")
            runs.append(result)
        warm = await warm_start(stack)
        print(f"  warm start of a new API process: {warm}")
    finally:
        await stack.close()
    return runs, warm


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--repeats", type=int, default=1)
    parser.add_argument("--redis-masters", type=int, default=3, help="1: one redis-server, no cluster")
    args = parser.parse_args()
    command = ".venv/bin/python bench/bench_cluster.py" + "".join(f" {a}" for a in sys.argv[1:])
    runs, warm = asyncio.run(run(args.repeats, args.redis_masters))
    metrics: dict[str, Any] = {
        "kafka_brokers": KAFKA_BROKERS,
        "redis_masters": args.redis_masters,
        "api_processes": API_PROCESSES,
        "workers": WORKERS,
        "accepted": sum(r["accepted"] for r in runs),
        "lost": sum(r["lost"] for r in runs),
        "duplicated": sum(r["duplicated"] for r in runs),
        "feed_5xx": sum(r["feed_5xx"] for r in runs),
        "live_missing": sum(r["live_missing"] for r in runs),
        "orders": sum(r["orders"] for r in runs),
        "orders_lost": sum(r["orders_lost"] for r in runs),
        "feed_requests": sum(r["feed_requests"] for r in runs),
        "feed_degraded": sum(r["feed_degraded"] for r in runs),
        "ingest_retries": sum(r["ingest_retries"] for r in runs),
        "recovery_s": max(r["recovery_s"] for r in runs),
        **warm,
    }
    print(f"\n{json.dumps(metrics)}\ncommand: {command}")
    date = time.strftime("%Y-%m-%d")
    result = {"name": "cluster", "command": command, "date": date, "machine": machine(), "metrics": metrics}
    (ROOT / "bench" / "results").mkdir(parents=True, exist_ok=True)
    (ROOT / "bench" / "results" / "cluster.json").write_text(json.dumps(result, indent=2) + "\n")
    faults = {k: v for k, v in metrics.items() if not k.startswith(("new_api", "old_api"))}
    head = "| " + " | ".join(faults) + " |\n|" + "---|" * len(faults) + "\n"
    row = "| " + " | ".join(str(v) for v in faults.values()) + " |\n"
    redis = (
        f"a Redis Cluster of {args.redis_masters} masters with a replica each (REDIS_URL redis+cluster://); "
        "the master serving the events' slot ({ev}) is failed over to its replica (CLUSTER FAILOVER) at the "
        "moment the broker is killed"
        if args.redis_masters > 1
        else "one redis-server (no Redis failover in this run)"
    )
    section = (
        f"## cluster — a Kafka broker of three killed, a Redis master failed over, during ingest ({date})\n\n"
        f"`{command}` — {machine()}, {args.repeats} run(s), summed.\n\n{head}{row}\n"
        "Three KRaft nodes on this machine (replication factor 3, min.insync.replicas 2), "
        f"{redis}, two API processes, two workers; the broker leading the events topic's first partition "
        "is killed with SIGKILL under ingest, down 3 s, restarted. `ingest_retries`: 503s while partitions "
        "elected a new leader (the client retried the same ids); `feed_degraded`: pages served from a "
        "process's memory while a Redis call failed.\n\n"
        "Warm start of a new API process (a third `roomfeed serve` started beside the two, after the run): "
        f"answers `/healthz` {warm['new_api_live_s']} s after its spawn, `/readyz` ready after "
        f"{warm['new_api_ready_s']} s; its first session {warm['new_api_first_session_ms']} ms and first "
        f"feed page {warm['new_api_first_page_ms']} ms; then median page {warm['new_api_page_p50_ms']} ms "
        f"vs {warm['old_api_page_p50_ms']} ms on a process serving all along ({PAGES} pages each, "
        "interleaved).\n"
    )
    replace_body(ROOT / "docs" / "benchmarks.md", "cluster", section)
    return 0 if metrics["lost"] == metrics["duplicated"] == metrics["feed_5xx"] == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
