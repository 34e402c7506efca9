"""The realtime sink's write path, this tree against a baseline commit, interleaved in one run.

    .venv/bin/python bench/bench_realtime_write.py --baseline 9a42ed9 [--events 100000] [--rounds 3]

For a change to the sink's script or key layout (e.g. the `{ev}` hash tag for Redis Cluster): the
baseline is checked out into a temporary git worktree; each round runs both trees, one after the
other, in fresh processes against one private redis-server (flushed before each pass), applying the
same events (4,000 per script call, RealtimeSink.write) three times and keeping the median events/s.
Prints both medians per round and the ratio of their medians; writes
bench/results/realtime_write.json and its docs/benchmarks.md block. The host's load is printed with
them: only the same-run ratio means anything on a shared machine.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "bench"))
sys.path.insert(0, str(REPO))

from bench_live_index import _free_port, write_results  # noqa: E402

from devtools.redis import RedisServer  # noqa: E402

# One pass, run in a fresh interpreter with the tree under test first on sys.path.
PASS = r"""
import asyncio, statistics, sys, time
sys.path.insert(0, sys.argv[1])
from redis.asyncio import Redis
from events.realtime import RealtimeSink
KINDS = ("impression", "enter", "like", "leave")  # spelled out: the baseline may predate events.vocabulary
async def main(port: int, count: int) -> None:
    redis = Redis(port=port)
    now = int(time.time() * 1000)
    events = []
    for n in range(count):
        kind = KINDS[n % 4]
        event = {"event_id": f"e{n}", "type": kind, "viewer_id": f"v{n % 20000}", "session_id": "s",
                 "room_id": f"room{n % 2000}", "ts": now - 60000 + n % 50000}
        if kind == "leave":
            event["dwell_ms"] = 5000
        events.append(event)
    rates = []
    for _ in range(3):
        await redis.flushdb()
        sink = RealtimeSink(redis)
        started = time.perf_counter()
        for i in range(0, count, 4000):
            await sink.write(events[i:i + 4000], now_ms=now)
        rates.append(count / (time.perf_counter() - started))
    print(statistics.median(rates))
    await redis.aclose()
asyncio.run(main(int(sys.argv[2]), int(sys.argv[3])))
"""


def one_pass(tree: Path, port: int, events: int) -> float:
    out = subprocess.run(
        [sys.executable, "-c", PASS, str(tree), str(port), str(events)],
        capture_output=True,
        text=True,
        check=True,
        cwd=tempfile.gettempdir(),
    )
    return float(out.stdout.strip().splitlines()[-1])


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--baseline", required=True, help="git commit to compare with")
    parser.add_argument("--events", type=int, default=100_000)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    command = ".venv/bin/python bench/bench_realtime_write.py" + "".join(f" {a}" for a in sys.argv[1:])
    base_dir = Path(tempfile.mkdtemp(prefix="rf-rt-base-"))
    redis_dir = Path(tempfile.mkdtemp(prefix="rf-rt-redis-"))
    subprocess.run(
        ["git", "-C", str(REPO), "worktree", "add", "-q", "--detach", str(base_dir), args.baseline],
        check=True,
    )
    server = RedisServer(redis_dir, _free_port())
    server.start()
    server.wait_ready()
    lines, ours, theirs = [], [], []
    try:
        for round_no in range(1, args.rounds + 1):
            theirs.append(one_pass(base_dir, server.port, args.events))
            ours.append(one_pass(REPO, server.port, args.events))
            lines.append(
                f"round {round_no}: baseline {theirs[-1]:,.0f} events/s, this tree {ours[-1]:,.0f} events/s "
                f"(load {os.getloadavg()[0]:.1f})"
            )
            print(lines[-1], flush=True)
    finally:
        server.stop()
        subprocess.run(["git", "-C", str(REPO), "worktree", "remove", "--force", str(base_dir)], check=False)
    metrics = {
        "events": args.events,
        "baseline": args.baseline,
        "baseline_events_per_s": round(statistics.median(theirs)),
        "events_per_s": round(statistics.median(ours)),
        "ratio": round(statistics.median(ours) / statistics.median(theirs), 3),
        "load_avg_1m": round(os.getloadavg()[0], 1),
        "date": time.strftime("%Y-%m-%d"),
    }
    lines.append(
        f"median: baseline {metrics['baseline_events_per_s']:,}, this tree {metrics['events_per_s']:,}, ratio {metrics['ratio']}"
    )
    print(lines[-1])
    write_results(
        "realtime_write",
        command,
        metrics,
        lines,
        "realtime_write — the realtime sink's write path vs a baseline commit",
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
