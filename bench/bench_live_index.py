"""Benchmark: reading the whole live-room index (50,000 live rooms, with features) as the feed does.

    .venv/bin/python bench/bench_live_index.py [--rooms 50000] [--warm 3000] [--cold 30]

Starts the project services if needed, creates a throwaway database and a private redis-server,
inserts the rooms into PostgreSQL, builds the index with `rebuild_live_index`, then measures with
`rooms.live_index.LiveIndex`:
- warm read: `snapshot()` when nothing changed (what nearly every feed request pays),
- incremental read: `snapshot()` after one room went live or ended (a change is applied to the copy),
- cold read: a full read and decode of every room (what a fresh process pays once),
and, in the same run, the floor and ceiling they compare with: a bare Redis PING round trip, and
HVALS of the whole hash without decoding. Reports medians (p50) and p99 in milliseconds.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import platform
import secrets
import shlex
import statistics
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, replace
from datetime import date
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

import asyncpg  # noqa: E402
from redis.asyncio import Redis  # noqa: E402

from bench.markdown import markers, replace_section  # noqa: E402
from devtools import services  # noqa: E402
from devtools.redis import RedisServer  # noqa: E402
from roomfeed.db import create_pool, migrate  # noqa: E402
from roomfeed.settings import Settings, external_services  # noqa: E402
from rooms.inputs import PRICE_BANDS as BANDS  # noqa: E402
from rooms.live_index import KEY_LIVE, IndexWriter, LiveIndex, rebuild_live_index  # noqa: E402

CATEGORIES = ("beauty", "fashion", "food", "digital", "home", "outdoor", "baby", "jewelry")


# --- environment shared by the rooms benchmarks -----------------------------------------------


@dataclass
class BenchEnv:
    settings: Settings
    pool: asyncpg.Pool
    redis: Redis


@contextlib.asynccontextmanager
async def bench_env() -> AsyncIterator[BenchEnv]:
    """Project services (started if needed), a throwaway database, a private Redis, a fresh Kafka prefix."""
    base = Settings.from_env()
    if not all(external_services().values()):
        await asyncio.to_thread(services.up, base)
    tag = secrets.token_hex(4)
    dbname = f"rf_bench_{tag}"
    admin = await asyncpg.connect(base.database_url)
    await admin.execute(f'CREATE DATABASE "{dbname}"')
    redis_dir = Path(tempfile.mkdtemp(prefix="rf-bench-redis-"))
    port = _free_port()
    redis_server = RedisServer(redis_dir, port)
    await asyncio.to_thread(redis_server.start)
    url = base.database_url.rsplit("/", 1)[0] + "/" + dbname
    settings = replace(base, database_url=url, redis_url=redis_server.url(), kafka_prefix=f"bench{tag}.")
    await migrate(settings.database_url)
    pool = await create_pool(settings, min_size=2)
    redis = Redis.from_url(settings.redis_url, max_connections=500)
    for _ in range(150):  # until PING answers (a just-spawned redis may still be starting)
        with contextlib.suppress(Exception):
            if await redis.ping():
                break
        await asyncio.sleep(0.1)
    try:
        yield BenchEnv(settings, pool, redis)
    finally:
        await redis.aclose()
        await pool.close()
        redis_server.kill()
        await admin.execute(f'DROP DATABASE IF EXISTS "{dbname}" WITH (FORCE)')
        await admin.close()
        with contextlib.suppress(Exception):
            from roomfeed.kafka import drop_prefixed_topics

            await drop_prefixed_topics(settings.kafka_bootstrap, settings.kafka_prefix)


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def machine() -> str:
    return f"{os.cpu_count()} cores, {platform.machine()}, Python {platform.python_version()}, {platform.system()}"


def pct(samples: list[float], q: float) -> float:
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, int(round(q / 100 * (len(ordered) - 1))))]


async def timed(fn: Callable[[], Awaitable[Any]], n: int) -> list[float]:
    out = []
    for _ in range(n):
        t = time.perf_counter()
        await fn()
        out.append((time.perf_counter() - t) * 1000)
    return out


def write_results(name: str, command: str, metrics: dict[str, Any], lines: list[str], title: str) -> None:
    """bench/results/<name>.json, and this benchmark's section of docs/benchmarks.md (others untouched)."""
    result = {
        "name": name,
        "command": command,
        "date": date.today().isoformat(),
        "machine": machine(),
        "metrics": metrics,
    }
    results = REPO / "bench" / "results"
    results.mkdir(parents=True, exist_ok=True)
    (results / f"{name}.json").write_text(json.dumps(result, indent=2) + "\n")
    doc = REPO / "docs" / "benchmarks.md"
    start, end = markers(name)
    section = "\n".join(
        [
            start,
            f"## {title}",
            "",
            f"`{command}` — {result['date']}, {result['machine']}",
            "",
            "```",
            *lines,
            "```",
            end,
        ]
    )
    replace_section(doc, section, name)


# --- the live index benchmark ------------------------------------------------------------------


async def seed_live_rooms(pool: asyncpg.Pool, rooms: int) -> None:
    merchants = max(1, rooms // 10)
    async with pool.acquire() as conn:
        await conn.copy_records_to_table(
            "merchants",
            records=[
                (f"mer_b{i:08x}", f"Merchant {i}", CATEGORIES[i % len(CATEGORIES)], "")
                for i in range(merchants)
            ],
            columns=["merchant_id", "name", "category", "description"],
        )
        now = time.time()
        from datetime import UTC, datetime

        started = datetime.fromtimestamp(now - 600, UTC)
        await conn.copy_records_to_table(
            "rooms",
            records=[
                (
                    f"room_b{i:08x}",
                    f"mer_b{i % merchants:08x}",
                    f"Live room {i}: spring sale",
                    f"host_{i % 977}",
                    CATEGORIES[i % len(CATEGORIES)],
                    [f"tag{i % 50}", f"tag{(i * 7) % 50}"],
                    BANDS[i % len(BANDS)],
                    "one_to_one" if i % 20 == 0 else "one_to_many",
                    f"https://cdn.example/live/{i}.m3u8",
                    "live",
                    started,
                )
                for i in range(rooms)
            ],
            columns=[
                "room_id",
                "merchant_id",
                "title",
                "host",
                "category",
                "tags",
                "price_band",
                "format",
                "stream_url",
                "status",
                "started_at",
            ],
        )


async def run(args: argparse.Namespace) -> dict[str, Any]:
    async with bench_env() as env:
        t = time.perf_counter()
        await seed_live_rooms(env.pool, args.rooms)
        seed_s = time.perf_counter() - t
        t = time.perf_counter()
        live = await rebuild_live_index(env.pool, env.redis)
        rebuild_s = time.perf_counter() - t
        assert live == args.rooms, live

        index = LiveIndex(env.redis)
        cold = await timed(index.cold_read, args.cold)
        first = await index.snapshot()
        assert len(first.rooms) == args.rooms and first.by_id["room_b00000000"].tags
        warm = await timed(index.snapshot, args.warm)

        writer = IndexWriter(env.redis)
        victims = list(first.rooms[: args.incremental])
        version = 10**9

        incremental: list[float] = []
        for i, room in enumerate(victims):
            version += 1
            changed = replace(room, status="ended") if i % 2 == 0 else room
            await writer.apply(changed, version)
            t = time.perf_counter()
            await index.snapshot()
            incremental.append((time.perf_counter() - t) * 1000)

        ping = await timed(env.redis.ping, args.warm)
        hvals = await timed(lambda: env.redis.hvals(KEY_LIVE), args.cold)

    metrics = {
        "rooms": args.rooms,
        "read_p50_ms": round(statistics.median(warm), 3),
        "read_p99_ms": round(pct(warm, 99), 3),
        "incremental_p50_ms": round(statistics.median(incremental), 3),
        "incremental_p99_ms": round(pct(incremental, 99), 3),
        "cold_read_p50_ms": round(statistics.median(cold), 1),
        "cold_read_p99_ms": round(pct(cold, 99), 1),
        "redis_ping_p50_ms": round(statistics.median(ping), 3),
        "raw_hvals_p50_ms": round(statistics.median(hvals), 1),
        "rebuild_s": round(rebuild_s, 2),
        "seed_s": round(seed_s, 2),
        "warm_reads": args.warm,
        "cold_reads": args.cold,
    }
    return metrics


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rooms", type=int, default=50_000)
    parser.add_argument("--warm", type=int, default=3_000)
    parser.add_argument("--cold", type=int, default=30)
    parser.add_argument("--incremental", type=int, default=300)
    args = parser.parse_args()
    command = ".venv/bin/python bench/bench_live_index.py" + (
        " " + shlex.join(sys.argv[1:]) if sys.argv[1:] else ""
    )
    m = asyncio.run(run(args))
    lines = [
        f"live rooms in the index            {m['rooms']:>10,}",
        f"warm snapshot() (nothing changed)  p50 {m['read_p50_ms']:>8.3f} ms   p99 {m['read_p99_ms']:>8.3f} ms   (target p50 < 5 ms)",
        f"incremental (1 room changed)       p50 {m['incremental_p50_ms']:>8.3f} ms   p99 {m['incremental_p99_ms']:>8.3f} ms",
        f"cold full read + decode            p50 {m['cold_read_p50_ms']:>8.1f} ms   p99 {m['cold_read_p99_ms']:>8.1f} ms",
        f"floor: Redis PING round trip       p50 {m['redis_ping_p50_ms']:>8.3f} ms",
        f"ceiling: raw HVALS, no decoding    p50 {m['raw_hvals_p50_ms']:>8.1f} ms",
        f"rebuild from PostgreSQL            {m['rebuild_s']:>8.2f} s",
    ]
    print("\n".join(lines))
    write_results("live_index", command, m, lines, "live_index — reading the live-room index (rooms)")


if __name__ == "__main__":
    main()
