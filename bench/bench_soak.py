"""Soak benchmark: N minutes of feed traffic at half of peak throughput, with ingest running.

    .venv/bin/python bench/bench_soak.py [--minutes 10] [--rooms 200] [--events-per-s 200] [--rate R]

Starts what it needs (tests/faults/stack.py): private PostgreSQL, Redis and Apache Kafka, one
`roomfeed serve` API process and one `roomfeed worker`, and a market of live rooms made through the
API. Then, in the same run:

1. peak: the feed (`GET /v1/sessions/{id}/feed?count=5`) closed-loop at concurrency 16 for 20 s,
   driven by wrk over the viewers' sessions (a Python client would cap the figure on 2 shared
   cores; without wrk it falls back to the Python loop);
2. soak: the feed open-loop at half that rate (latency counted from the scheduled send time, so
   queueing counts) for `--minutes`, while viewers post event batches at `--events-per-s`. Pages go
   over raw keep-alive HTTP/1.1 connections (little client CPU); sessions start through httpx and
   are replaced every 20 pages. `--rate R` soaks at R req/s instead (to compare with an earlier run:
   half of peak rises with every feed speed-up).

Per minute: requests, p50/p99, errors (anything but 2xx, and connection failures), resident
memory of the API and worker processes. Reports memory growth and p99 drift of the last minute
against the first, and the load average (the box is shared). Targets (issue 9): growth < 10 %,
p99 within 20 % of the first minute, 0 errors. Writes bench/results/soak.json and a section of
docs/benchmarks.md and docs/reliability.md.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import random
import secrets
import shutil
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import httpx

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.bench_faults import machine  # noqa: E402
from bench.bench_feed import _raw, _request, _run_wrk  # noqa: E402
from bench.markdown import replace_body  # noqa: E402
from events.vocabulary import ENTER, IMPRESSION, LEAVE, LIKE  # noqa: E402

CONCURRENCY = 16
PEAK_SECONDS = 20
PAGES_PER_SESSION = 20
MAX_IN_FLIGHT = 256


def rss_mb(pid: int | None) -> float:
    if pid is None:
        return 0.0
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    except FileNotFoundError:
        pass
    return 0.0


def pct(values: list[float], q: float) -> float:
    if not values:
        return 0.0
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


class Viewers:
    """A pool of viewers with sessions; a session is replaced after PAGES_PER_SESSION pages. Feed
    pages go over a pool of raw keep-alive connections to the API."""

    def __init__(self, stack: Any, client: httpx.AsyncClient, count: int) -> None:
        self.stack, self.client = stack, client
        self.ids = [f"soak_{secrets.token_hex(3)}_{i}" for i in range(count)]
        self.headers = {v: stack.viewer_headers(v) for v in self.ids}
        self.tokens = {v: h["Authorization"].split(" ", 1)[1] for v, h in self.headers.items()}
        self.sessions: dict[str, tuple[str, int]] = {}
        self.port = int(stack.api_urls[0].rsplit(":", 1)[1])
        self.connections: asyncio.Queue[tuple[asyncio.StreamReader, asyncio.StreamWriter] | None] = (
            asyncio.Queue()
        )
        for _ in range(MAX_IN_FLIGHT):
            self.connections.put_nowait(None)  # opened on first use

    async def session(self, viewer: str) -> str:
        current = self.sessions.get(viewer)
        if current is None or current[1] >= PAGES_PER_SESSION:
            for attempt in (1, 2):  # a kept-alive connection the server just closed fails once: retry
                try:
                    r = await self.client.post(
                        f"{self.stack.api_urls[0]}/v1/sessions",
                        headers=self.headers[viewer],
                        json={"viewer_id": viewer, "entry": {}, "count": 5},
                    )
                    break
                except httpx.TransportError:
                    if attempt == 2:
                        raise
            r.raise_for_status()
            current = (r.json()["session_id"], 0)
        self.sessions[viewer] = (current[0], current[1] + 1)
        return current[0]

    async def page(self) -> int:
        """One feed page of a random viewer; its HTTP status (OSError when the connection failed)."""
        viewer = random.choice(self.ids)
        session_id = await self.session(viewer)
        conn = await self.connections.get()
        try:
            if conn is None:
                conn = await asyncio.open_connection("127.0.0.1", self.port)
            status = await _request(
                *conn, _raw(f"/v1/sessions/{session_id}/feed?count=5", self.tokens[viewer])
            )
        except (OSError, asyncio.IncompleteReadError, ValueError) as exc:
            if conn is not None:
                conn[1].close()
            self.connections.put_nowait(None)
            raise OSError(f"feed page: {exc!r}") from exc
        self.connections.put_nowait(conn)
        return status

    def targets(self) -> list[list[Any]]:
        """(path, token) of every viewer's current session, for wrk."""
        return [
            [f"/v1/sessions/{self.sessions[v][0]}/feed?count=5", self.tokens[v]]
            for v in self.ids
            if v in self.sessions
        ]

    async def close(self) -> None:
        while not self.connections.empty():
            conn = self.connections.get_nowait()
            if conn is not None:
                conn[1].close()


async def peak_python(viewers: Viewers) -> float:
    done = 0
    deadline = time.monotonic() + PEAK_SECONDS

    async def loop() -> None:
        nonlocal done
        while time.monotonic() < deadline:
            with contextlib.suppress(httpx.HTTPError, OSError):
                done += (await viewers.page()) == 200

    await asyncio.gather(*(loop() for _ in range(CONCURRENCY)))
    return done / PEAK_SECONDS


async def peak(viewers: Viewers) -> tuple[float, str]:
    """Closed-loop feed throughput (2xx per second) and the client that measured it."""
    if shutil.which("wrk") is None:
        return await peak_python(viewers), "python"
    sem = asyncio.Semaphore(32)

    async def start(viewer: str) -> None:
        async with sem:
            await viewers.session(viewer)

    await asyncio.gather(*(start(v) for v in viewers.ids))
    result = await asyncio.to_thread(_run_wrk, viewers.port, viewers.targets(), PEAK_SECONDS, CONCURRENCY)
    return (result["requests"] - result["non_2xx"] - result["errors"]) / PEAK_SECONDS, "wrk"


async def soak(
    stack: Any, viewers: Viewers, client: httpx.AsyncClient, rate: float, minutes: int, events_per_s: float
) -> list[dict[str, Any]]:
    api_pid = stack.api[0].proc.pid
    worker_pid = stack.worker.proc.pid
    rooms = viewers.rooms  # type: ignore[attr-defined]
    minute_rows: list[dict[str, Any]] = []
    latencies: list[float] = []
    errors = 0
    shed = 0  # of `errors`: not sent because MAX_IN_FLIGHT requests were already waiting
    ingest_errors = 0
    in_flight = 0
    stop = asyncio.Event()

    async def one(scheduled: float) -> None:
        nonlocal errors, in_flight
        try:
            if await viewers.page() != 200:
                errors += 1
            else:
                latencies.append((time.monotonic() - scheduled) * 1000)
        except (httpx.HTTPError, OSError):
            errors += 1
        finally:
            in_flight -= 1

    async def ingest() -> None:
        nonlocal ingest_errors
        n = 0
        interval = 40 / events_per_s
        next_at = time.monotonic()
        while not stop.is_set():
            viewer = f"soak_ing_{n % 5000}"
            now = int(time.time() * 1000)
            batch = [
                {
                    "event_id": f"soak_{secrets.token_hex(6)}",
                    "type": (IMPRESSION, ENTER, LIKE, LEAVE)[i % 4],
                    "viewer_id": viewer,
                    "session_id": f"ses_{viewer}",
                    "room_id": rooms[(n + i) % len(rooms)],
                    "ts": now,
                    **({"dwell_ms": 4000} if i % 4 == 3 else {}),
                }
                for i in range(40)
            ]
            try:
                r = await client.post(
                    f"{stack.api_urls[0]}/v1/events", json=batch, headers=stack.viewer_headers(viewer)
                )
                if r.status_code != 202:
                    ingest_errors += 1
            except httpx.HTTPError:
                ingest_errors += 1
            n += 1
            next_at += interval
            await asyncio.sleep(max(0.0, next_at - time.monotonic()))

    ingest_task = asyncio.create_task(ingest())
    started = time.monotonic()
    interval = 1.0 / rate
    sent = 0
    tasks: set[asyncio.Task[None]] = set()
    for minute in range(minutes):
        minute_end = started + 60 * (minute + 1)
        while True:
            scheduled = started + sent * interval
            if scheduled >= minute_end:
                break
            delay = scheduled - time.monotonic()
            if delay > 0:
                await asyncio.sleep(delay)
            sent += 1
            if in_flight >= MAX_IN_FLIGHT:
                errors += 1  # the server fell this far behind: count it, do not pile up more
                shed += 1
                continue
            in_flight += 1
            task = asyncio.create_task(one(scheduled))
            tasks.add(task)
            task.add_done_callback(tasks.discard)
        row = {
            "minute": minute + 1,
            "requests": len(latencies),
            "p50_ms": round(pct(latencies, 0.5), 2),
            "p99_ms": round(pct(latencies, 0.99), 2),
            "errors": errors,
            "shed": shed,
            "ingest_errors": ingest_errors,
            "api_rss_mb": round(rss_mb(api_pid), 1),
            "worker_rss_mb": round(rss_mb(worker_pid), 1),
            "load_avg_1m": round(os.getloadavg()[0], 2),
        }
        print("  " + "  ".join(f"{k}={v}" for k, v in row.items()), flush=True)
        minute_rows.append(row)
        latencies, errors, shed, ingest_errors = [], 0, 0, 0
    stop.set()
    await ingest_task
    if tasks:
        await asyncio.wait(tasks, timeout=30)
    return minute_rows


async def run(args: argparse.Namespace) -> dict[str, Any]:
    from devtools import services
    from roomfeed.settings import Settings, external_services
    from tests.faults.stack import FaultStack
    from tests.support import world_readable_tempdir

    base = Settings.from_env()
    if not all(external_services().values()):
        await asyncio.to_thread(services.up, base)
    stack = FaultStack(base, Path(world_readable_tempdir("rf-bench-soak-")), api_processes=1)
    await stack.start()
    try:
        limits = httpx.Limits(max_connections=MAX_IN_FLIGHT, max_keepalive_connections=64)
        async with httpx.AsyncClient(timeout=30, limits=limits) as client:
            merchants = max(1, args.rooms // 10)
            rooms = await stack.live_rooms(client, merchants=merchants, rooms_each=args.rooms // merchants)
            viewers = Viewers(stack, client, args.viewers)
            viewers.rooms = rooms  # type: ignore[attr-defined]
            peak_rps, peak_client = await peak(viewers)
            rate = args.rate or max(1.0, peak_rps / 2)
            print(
                f"peak {peak_rps:.1f} feed req/s ({peak_client}, closed loop, concurrency {CONCURRENCY}); soaking at {rate:.1f}/s "
                f"with {args.events_per_s:.0f} events/s of ingest for {args.minutes} min",
                flush=True,
            )
            minutes = await soak(stack, viewers, client, rate, args.minutes, args.events_per_s)
            await viewers.close()
    finally:
        await stack.close()
    first, last = minutes[0], minutes[-1]
    rss_first = first["api_rss_mb"] + first["worker_rss_mb"]
    rss_last = last["api_rss_mb"] + last["worker_rss_mb"]
    return {
        "minutes": args.minutes,
        "peak_rps": round(peak_rps, 1),
        "peak_client": peak_client,
        "soak_rps": round(rate, 1),
        "events_per_s": args.events_per_s,
        "mem_growth_pct": round(100 * (rss_last - rss_first) / rss_first, 1) if rss_first else 0.0,
        "api_mem_growth_pct": round(
            100 * (last["api_rss_mb"] - first["api_rss_mb"]) / first["api_rss_mb"], 1
        ),
        "p99_drift_pct": round(100 * (last["p99_ms"] - first["p99_ms"]) / first["p99_ms"], 1)
        if first["p99_ms"]
        else 0.0,
        "p99_first_ms": first["p99_ms"],
        "p99_last_ms": last["p99_ms"],
        "p99_median_ms": round(statistics.median(m["p99_ms"] for m in minutes), 2),
        "errors": sum(m["errors"] for m in minutes),
        "shed": sum(m["shed"] for m in minutes),
        "ingest_errors": sum(m["ingest_errors"] for m in minutes),
        "load_avg_median": round(statistics.median(m["load_avg_1m"] for m in minutes), 2),
        "per_minute": minutes,
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--minutes", type=int, default=10)
    parser.add_argument("--rooms", type=int, default=200)
    parser.add_argument("--viewers", type=int, default=2000)
    parser.add_argument("--events-per-s", type=float, default=200.0)
    parser.add_argument(
        "--rate",
        type=float,
        default=0.0,
        help="soak at this many feed req/s instead of half the measured peak (to compare with an "
        "earlier run's rate); its own section and bench/results/soak_rate_R.json",
    )
    args = parser.parse_args()
    command = ".venv/bin/python bench/bench_soak.py" + "".join(f" {a}" for a in sys.argv[1:])
    metrics = asyncio.run(run(args))
    summary = {k: v for k, v in metrics.items() if k != "per_minute"}
    print(json.dumps(summary, indent=1))
    date = time.strftime("%Y-%m-%d")
    result = {"name": "soak", "command": command, "date": date, "machine": machine(), "metrics": metrics}
    (ROOT / "bench" / "results").mkdir(parents=True, exist_ok=True)
    name = "soak" if not args.rate else f"soak_rate_{args.rate:g}"
    (ROOT / "bench" / "results" / f"{name}.json").write_text(json.dumps(result, indent=2) + "\n")
    rows = "| minute | requests | p50 ms | p99 ms | errors | ingest errors | API RSS MB | worker RSS MB | load avg |\n"
    rows += "|---|---|---|---|---|---|---|---|---|\n"
    rows += "".join(
        f"| {m['minute']} | {m['requests']} | {m['p50_ms']} | {m['p99_ms']} | {m['errors']} | "
        f"{m['ingest_errors']} | {m['api_rss_mb']} | {m['worker_rss_mb']} | {m['load_avg_1m']} |\n"
        for m in metrics["per_minute"]
    )
    verdict = (
        f"memory growth **{metrics['mem_growth_pct']} %** (target < 10 %), p99 drift **{metrics['p99_drift_pct']} %** "
        f"({metrics['p99_first_ms']} → {metrics['p99_last_ms']} ms; target within 20 %), errors "
        f"**{metrics['errors']}** (target 0; shed by the client at {MAX_IN_FLIGHT} in flight: {metrics['shed']}), ingest errors {metrics['ingest_errors']}"
    )
    at = "half of peak" if not args.rate else f"{args.rate:g} req/s (half of an earlier peak)"
    section = (
        f"## soak — {args.minutes} min of feed at {at} with ingest running ({date})\n\n"
        f"`{command}` — {machine()}. One `roomfeed serve`, one `roomfeed worker`, private PostgreSQL/Redis/"
        f"Kafka; {args.rooms} live rooms, {args.viewers} viewers. Peak ({metrics['peak_client']}, closed loop, concurrency "
        f"{CONCURRENCY}, {PEAK_SECONDS} s): {metrics['peak_rps']} req/s; soak open loop at "
        f"{metrics['soak_rps']} req/s plus {args.events_per_s:.0f} events/s of ingest. Latency from the "
        f"scheduled send time (queueing counts); the load generator shares the 2 cores.\n\n"
        f"{verdict}.\n\n{rows}"
    )
    tag = "soak" if not args.rate else f"soak:rate-{args.rate:g}"
    replace_body(ROOT / "docs" / "benchmarks.md", tag, section)
    replace_body(ROOT / "docs" / "reliability.md", tag, section)
    return 0


if __name__ == "__main__":
    sys.exit(main())
