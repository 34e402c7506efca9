"""Redis memory per viewer: what the realtime sink keeps for viewers watching, for the sizing guide.

    .venv/bin/python bench/bench_viewer_memory.py [--viewers 100000] [--visits 5] [--rooms 10000]

On a private redis-server (bench_live_index.bench_env), every viewer makes `--visits` visits to
rooms among `--rooms` live ones (enter, heartbeat, leave with a dwell, as the app reports them),
applied by the real RealtimeSink; Redis's used_memory before and after, divided by the viewers, is
the event-derived state per viewer (recent visits list, presence, unique-visitor HLLs, the dedup
ids of the last hours; room counters are shared). Sessions' served sets live one session TTL and
are not in this figure. Writes bench/results/viewer_memory.json and its docs/benchmarks.md block.
"""

from __future__ import annotations

import argparse
import asyncio
import shlex
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench_live_index import bench_env, write_results  # noqa: E402

from events.realtime import RealtimeSink  # noqa: E402
from events.vocabulary import ENTER, HEARTBEAT, LEAVE  # noqa: E402


async def run(viewers: int, visits: int, rooms: int) -> dict[str, float]:
    async with bench_env() as env:
        await env.redis.flushdb()
        base = int((await env.redis.info("memory"))["used_memory"])
        sink = RealtimeSink(env.redis)
        now = int(time.time() * 1000)
        batch: list[dict[str, object]] = []
        for v in range(viewers):
            viewer = f"viewer{v:08d}"
            for k in range(visits):
                room = f"room{(v * 7 + k * 131) % rooms:06d}"
                ts = now - 60_000 + k * 10_000
                for kind, extra in ((ENTER, {}), (HEARTBEAT, {}), (LEAVE, {"dwell_ms": 9_000})):
                    batch.append(
                        {
                            "event_id": f"e{v}_{k}_{kind}",
                            "type": kind,
                            "viewer_id": viewer,
                            "session_id": f"s{v}",
                            "room_id": room,
                            "merchant_id": f"m{room}",
                            "ts": ts + {ENTER: 0, HEARTBEAT: 5_000, LEAVE: 9_000}[kind],
                            **extra,
                        }
                    )
            if len(batch) >= 12_000:
                await sink.write(batch, now_ms=now)
                batch = []
        if batch:
            await sink.write(batch, now_ms=now)
        used = int((await env.redis.info("memory"))["used_memory"])
        keys = int(await env.redis.dbsize())
    per_viewer = (used - base) / viewers
    return {
        "viewers": viewers,
        "visits_per_viewer": visits,
        "rooms": rooms,
        "keys": keys,
        "used_memory_mb": round((used - base) / 1e6, 1),
        "bytes_per_viewer": round(per_viewer),
        "mb_per_million_viewers": round(per_viewer * 1e6 / 1e6),
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--viewers", type=int, default=100_000)
    parser.add_argument("--visits", type=int, default=5)
    parser.add_argument("--rooms", type=int, default=10_000)
    args = parser.parse_args()
    command = ".venv/bin/python bench/bench_viewer_memory.py" + "".join(
        f" {shlex.quote(a)}" for a in sys.argv[1:]
    )
    metrics = asyncio.run(run(args.viewers, args.visits, args.rooms))
    lines = [f"{k}: {v}" for k, v in metrics.items()]
    print("\n".join(lines))
    print(f"command: {command}")
    write_results(
        "viewer_memory", command, metrics, lines, "viewer_memory — Redis memory per viewer (sizing)"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
