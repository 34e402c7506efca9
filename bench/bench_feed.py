"""Feed latency benchmark: 10,000 live rooms, 100,000 known viewers, a load generator in its own process.

    .venv/bin/python bench/bench_feed.py [--rooms 10000] [--viewers 100000] [--servers uvicorn,granian]

Starts what it needs: the project's services (`services.up`), a fresh PostgreSQL database, a private
Redis, 10,000 live rooms written through rooms' `IndexWriter`, and a LightFM-shaped model of 100,000
viewers × 5,000 merchants (k=32) served by ranking's real `Scorer`. For each ASGI server it measures,
in the same run: the bare endpoint (`/healthz`) at peak (closed loop, fixed concurrency) as the ceiling,
the feed (`GET /v1/sessions/{id}/feed?count=10`) at peak, and the feed at a fixed 500 requests/s
(open loop, latency from the scheduled send time, so queueing counts). Medians of `--repeats` runs.
`--churn N`: meanwhile N rooms end and N new ones start each second (rooms come and go all day; each
change is a new candidate set), written to its own block and `bench/results/feed_churn_N.json`.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import secrets
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

CATEGORIES = ("beauty", "fashion", "food", "home", "digital", "sports", "baby", "books")
K = 32


# --- the app the servers load ----------------------------------------------------------------


def _model(viewers: int, merchants: int) -> Any:
    from tests.synthetic_model import synthetic_model

    return synthetic_model(viewers, merchants, CATEGORIES, K)


def app_factory() -> Any:
    """What uvicorn/granian load: the real app; the seeded, promoted model reaches it through ranking's ModelWatcher.

    BENCH_CONSOLE_PRESENCE=0 drops the console's "viewers now" source, which sweeps
    `LiveStats.rooms` over every live room every 10 s (seconds of Redis and event-loop time at
    10,000 rooms): the benchmark reports the feed with and without it.
    """
    from roomfeed.assembly import create_app
    from roomfeed.settings import Settings

    if os.environ.get("BENCH_CONSOLE_PRESENCE", "1") == "0":
        from dataclasses import replace

        import console.http

        sources = console.http._sources
        console.http._sources = lambda *a: replace(sources(*a), viewers_now=None)
    app = create_app(Settings.from_env(), access_log=False)
    app.router.routes.append(_redis_floor_route(app))
    return app


FLOOR_PATH = "/bench/redis-floor"
IDLE_S = 5.0  # seconds each server is watched with no request, after its warm-up
# Measure only once every server is this long past start-up: after roomfeed.heap's first refreeze (FIRST_S).
HEAP_SETTLE_S = 45.0


def _redis_floor_route(app: Any) -> Any:
    """`GET /bench/redis-floor` (this benchmark's app only, not in the API document): the page's two
    Redis round trips on the same lane with none of the page's work around them (four reads, then one
    write), answered with a small orjson body. Its CPU per request, beside the bare endpoint's, is the
    floor a page pays for Starlette + uvicorn + the lane before it ranks anything."""
    from starlette.routing import Route

    from roomfeed.http import json as json_response

    key = "rf:bench:floor"

    async def floor(request: Any) -> Any:
        lane = app.resources.redis_lane
        await lane.execute(
            [
                ("HGET", key, "viewer_id"),
                ("SCARD", key + ":s"),
                ("LRANGE", key + ":l", 0, 49),
                ("GET", key + ":g"),
            ]
        )
        await lane.execute([("SADD", key + ":s", "room"), ("EXPIRE", key + ":s", 60)])
        return json_response({"rooms": []})

    return Route(FLOOR_PATH, floor, methods=["GET"], include_in_schema=False)


# --- set-up -----------------------------------------------------------------------------------


def _room(n: int, merchants: int, status: str, started_at: float) -> Any:
    """Bench room number `n` (of merchant n mod `merchants`), as rooms' live index holds it."""
    from rooms.live_index import LiveRoom

    return LiveRoom(
        f"room_{n:016x}",
        f"mer_{n % merchants:016x}",
        f"room {n}",
        CATEGORIES[n % len(CATEGORIES)],
        ("bench",),
        "mid",
        "one_to_many",
        f"host{n % 300}",
        started_at,
        f"https://live.example/{n}.m3u8",
        status,
        None,
    )


def viewer_chunks(viewers: int, merchants: int, chunk: int = 50_000) -> Any:
    """`viewers` synthetic viewer states (ranking.viewer_state's encoding) in chunks: a k=32 LightFM
    vector each and 0-8 merchants of history (4 on average), ids `viewer-<i>` as the sessions use."""
    import numpy as np

    from ranking.history import STATS
    from ranking.viewer_state import encode_many

    rng = np.random.default_rng(9)
    now_ms = int(time.time() * 1000)
    for start in range(0, viewers, chunk):
        n = min(chunk, viewers - start)
        vectors = rng.normal(size=(n, K)).astype(np.float32)
        sizes = rng.integers(0, 9, n)
        rows = int(sizes.sum())
        # Distinct merchants per viewer: a random start and stride modulo the merchants.
        start_m = np.repeat(rng.integers(0, merchants, n), sizes)
        step = np.repeat(rng.integers(1, max(2, merchants // 9), n), sizes)
        offsets = np.arange(rows) - np.repeat(np.cumsum(sizes) - sizes, sizes)
        owned = (start_m + step * offsets) % merchants
        stats = rng.random((rows, len(STATS))).astype(np.float32) * 5
        last = now_ms - rng.integers(0, 7 * 86_400_000, rows)
        order = np.lexsort((owned, np.repeat(np.arange(n), sizes)))  # each viewer's merchants ascending
        blobs = encode_many(vectors, None, np.ones(n, bool), sizes, owned[order], stats[order], last[order])
        yield [f"viewer-{i}" for i in range(start, start + n)], blobs


async def _seed(settings: Any, rooms: int, merchants: int, viewers: int) -> dict[str, Any]:
    """Rooms, heat and the promoted model; the viewers are written to Redis by ranking.viewer_state,
    as the trainer does before a promotion, and that write is measured. (A baseline commit seeds its
    own stack with its own `_seed`: `_seed_baseline`.)"""
    from redis.asyncio import Redis

    from ranking.registry import ModelRegistry
    from ranking.viewer_state import ViewerStateStore
    from roomfeed.db import create_pool, migrate
    from rooms.live_index import IndexWriter, rebuild_live_index

    await migrate(settings.database_url)
    pool = await create_pool(settings, min_size=1)
    redis = Redis.from_url(settings.redis_url)
    try:
        registry = ModelRegistry(pool)
        model = _model(0, merchants)  # items, ranker, merchant table; the viewers go to Redis
        await registry.register(model, {})
        before = int((await redis.info("memory"))["used_memory"])
        published = await ViewerStateStore(redis).publish_chunks(
            model.version, viewer_chunks(viewers, merchants)
        )
        after = int((await redis.info("memory"))["used_memory"])
        figures = {
            "publish_seconds": round(published.seconds, 1),
            "publish_viewers_per_s": round(published.viewers / max(published.seconds, 1e-9)),
            "state_bytes_per_viewer": round(published.bytes / max(viewers, 1), 1),
            "redis_bytes_per_viewer": round((after - before) / max(viewers, 1), 1),
        }
        print("viewer state written:", figures, flush=True)
        await registry.promote(model.version, "bench")
        await rebuild_live_index(pool, redis)  # an empty index with an epoch, as in production
        writer = IndexWriter(redis)
        now = time.time()
        for start in range(0, rooms, 50):
            await asyncio.gather(
                *(
                    writer.apply(_room(i, merchants, "live", now - (i % 7200)), 1)
                    for i in range(start, min(start + 50, rooms))
                )
            )
        # Heat for every room (what the worker's heat sink keeps): a few enters and impressions each.
        from events.heat_sink import RoomHeatSink
        from events.vocabulary import ENTER, IMPRESSION

        sink, offset, batch = RoomHeatSink(redis), 0, []
        for i in range(rooms):
            for kind in (ENTER, IMPRESSION, IMPRESSION)[: 1 + i % 3]:
                batch.append(
                    {
                        "type": kind,
                        "room_id": f"room_{i:016x}",
                        "ts": int((now - i % 900) * 1000),
                        "_topic": "bench",
                        "_partition": 0,
                        "_offset": offset,
                    }
                )
                offset += 1
            if len(batch) >= 4000:
                await sink.write(batch)
                batch = []
        await sink.write(batch)
    finally:
        await redis.aclose()
        await pool.close()
    return figures


def _seed_baseline(root: Path, settings: Any, rooms: int, merchants: int, viewers: int) -> None:
    """The baseline commit seeds its own stack with its own bench_feed._seed: its key names, its heat
    layout and a model artifact it can load (this checkout's artifact has fields an older commit
    refuses — 9a42ed9 then served popularity pages without a model, and its Redis keys had no hash
    tags, so it saw no live room either: a comparison of nothing)."""
    code = (
        "import asyncio, sys; sys.path.insert(0, '.'); from bench.bench_feed import _seed; "
        "from roomfeed.settings import Settings; "
        f"asyncio.run(_seed(Settings.from_env(), {rooms}, {merchants}, {viewers}))"
    )
    env = {
        **os.environ,
        "DATABASE_URL": settings.database_url,
        "REDIS_URL": settings.redis_url,
        "KAFKA_BOOTSTRAP": settings.kafka_bootstrap,
        "ROOMFEED_KAFKA_PREFIX": settings.kafka_prefix,
        "PYTHONPATH": str(root),
    }
    subprocess.run([sys.executable, "-c", code], cwd=root, env=env, check=True)


# What `--experiment` runs in every tree served: two even variants, one with a ranking override.
_EXPERIMENT = """
import asyncio, sys
sys.path.insert(0, ".")
from feed.experiments import ExperimentBook, Variant
from roomfeed.db import create_pool
from roomfeed.settings import Settings


async def main():
    pool = await create_pool(Settings.from_env(), min_size=1)
    variants = (Variant("control", 1.0, {}), Variant("popular", 1.0, {"w_popularity": 1.2}))
    await ExperimentBook(pool).create("bench", variants, "bench")
    await pool.close()


asyncio.run(main())
"""


def _start_experiment(root: Path, settings: Any) -> None:
    """A running experiment in the stack of the tree at `root`, created by that tree's own code (the
    feed serves every viewer its variant's config, as when operators run an experiment)."""
    env = {**os.environ, "DATABASE_URL": settings.database_url, "PYTHONPATH": str(root)}
    subprocess.run([sys.executable, "-c", _EXPERIMENT], cwd=root, env=env, check=True)


async def _churn(redis_url: str, per_second: float, rooms: int, merchants: int) -> None:
    """Until killed: `per_second` times a second one seeded room ends and a new one starts (rooms'
    own IndexWriter), so the live set changes as it does when rooms come and go all day."""
    from redis.asyncio import Redis

    from rooms.live_index import IndexWriter

    writer = IndexWriter(Redis.from_url(redis_url))
    i = 0
    while True:
        version = int(time.time() * 1000)
        old, new = i % rooms, 10_000_000 + i
        for n, status in ((old, "ended"), (new, "live")):
            await writer.apply(_room(n, merchants, status, time.time()), version)
        i += 1
        await asyncio.sleep(1 / per_second)


def _serve(server: str, port: int, env: dict[str, str], root: Path = ROOT) -> subprocess.Popen[bytes]:
    """`server` from the code in `root` (this checkout, or a worktree of the baseline commit)."""
    target = "bench.bench_feed:app_factory"
    py = str(ROOT / ".venv/bin")
    # "uvicorn" / "granian" run one worker process, "uvicorn-2w" / "granian-2w" two.
    name, _, workers = server.partition("-")
    workers = workers.rstrip("w") or "1"
    if name == "uvicorn":
        cmd = [
            f"{py}/uvicorn",
            target,
            "--factory",
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--loop",
            "uvloop",
            "--http",
            "httptools",
            "--no-access-log",
            "--log-level",
            "warning",
            "--backlog",
            "4096",
            "--workers",
            workers,
        ]
    else:
        cmd = [
            f"{py}/granian",
            "--interface",
            "asgi",
            "--factory",
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--workers",
            workers,
            "--loop",
            "uvloop",
            "--log-level",
            "warning",
            "--no-ws",
            target,
        ]
    return subprocess.Popen(cmd, cwd=root, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)


def _cpu_seconds(pid: int) -> float:
    """User + system CPU of a process and its descendants (workers), from /proc."""
    ticks = os.sysconf("SC_CLK_TCK")
    stats: dict[int, tuple[int, float]] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
            stats[int(entry.name)] = (int(fields[1]), (int(fields[11]) + int(fields[12])) / ticks)
    total, family = 0.0, {pid}
    changed = True
    while changed:
        changed = False
        for child, (parent, _) in stats.items():
            if parent in family and child not in family:
                family.add(child)
                changed = True
    for member in family:
        total += stats.get(member, (0, 0.0))[1]
    return total


def _family(pid: int) -> set[int]:
    parents: dict[int, int] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                parents[int(entry.name)] = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                continue
    family, changed = {pid}, True
    while changed:
        changed = False
        for child, parent in parents.items():
            if parent in family and child not in family:
                family.add(child)
                changed = True
    return family


def _rss_mb(pid: int) -> tuple[float, float]:
    """(resident, peak resident) MB of a server process and its workers, from /proc (VmRSS, VmHWM)."""
    rss = peak = 0.0
    for member in _family(pid):
        try:
            for line in (Path("/proc") / str(member) / "status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    rss += int(line.split()[1]) / 1024
                elif line.startswith("VmHWM:"):
                    peak += int(line.split()[1]) / 1024
        except OSError:
            continue
    return rss, peak


def _with_cpu(pid: int, run: Any) -> dict[str, Any]:
    """`run()`'s figures plus the server's CPU milliseconds per request it served."""
    before = _cpu_seconds(pid)
    result: dict[str, Any] = run()
    used = _cpu_seconds(pid) - before
    result["cpu_ms_per_request"] = used * 1000 / max(result["requests"], 1)
    return result


def _wait_up(port: int, timeout: float = 60) -> None:
    import httpx

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=1).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    raise RuntimeError(f"server on {port} did not come up")


def _sessions(port: int, secret: str, n: int, viewers: int) -> list[tuple[str, str]]:
    import httpx

    from roomfeed.auth import sign_viewer_token

    out = []
    with httpx.Client(
        base_url=f"http://127.0.0.1:{port}", timeout=120
    ) as client:  # 100,000 rooms, loaded host: slow first pages
        for i in range(n):
            viewer = f"viewer-{(i * 7919) % viewers}"
            token = sign_viewer_token(secret, viewer)
            r = client.post(
                "/v1/sessions",
                json={"viewer_id": viewer, "entry": {}, "count": 1},
                headers={"Authorization": f"Bearer {token}"},
            )
            r.raise_for_status()
            if not r.json()["rooms"]:  # a server that reads none of the seeded rooms measures nothing
                raise SystemExit(
                    f"the server on port {port} answered a session without rooms: {r.text[:300]}"
                )
            out.append((r.json()["session_id"], token))
    return out


# --- the load generator (its own process) --------------------------------------------------------


async def _request(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, raw: bytes) -> int:
    writer.write(raw)
    head = await reader.readuntil(b"\r\n\r\n")
    status = int(head[9:12])
    length = 0
    for line in head.split(b"\r\n"):
        if line[:15].lower() == b"content-length:":
            length = int(line[15:])
    if length:
        await reader.readexactly(length)
    return status


def _raw(path: str, token: str | None) -> bytes:
    auth = f"Authorization: Bearer {token}\r\n" if token else ""
    return f"GET {path} HTTP/1.1\r\nHost: bench\r\n{auth}\r\n".encode()


async def _loadgen(
    port: int, mode: str, targets: list[tuple[str, str | None]], seconds: float, concurrency: int, rate: float
) -> dict[str, Any]:
    latencies: list[float] = []
    errors = 0
    censored = 0  # open loop: requests unanswered at the deadline (their latency is a lower bound)
    other = [0]  # any status but 2xx (a 429 would make a fast, meaningless "feed")
    counter = 0
    conns = [await asyncio.open_connection("127.0.0.1", port) for _ in range(concurrency)]
    start = time.perf_counter()
    end = start + seconds

    async def closed(conn: tuple[Any, Any]) -> None:
        nonlocal errors, counter
        while time.perf_counter() < end:
            path, token = targets[counter % len(targets)]
            counter += 1
            t0 = time.perf_counter()
            status = await _request(*conn, _raw(path, token))
            latencies.append(time.perf_counter() - t0)
            errors += status >= 500
            other[0] += not 200 <= status < 300

    if mode == "closed":
        await asyncio.gather(*(closed(c) for c in conns))
    else:
        free: asyncio.Queue[tuple[Any, Any]] = asyncio.Queue()
        for c in conns:
            free.put_nowait(c)

        async def one(i: int, scheduled: float) -> None:
            nonlocal errors
            conn = await free.get()
            path, token = targets[i % len(targets)]
            status = await _request(*conn, _raw(path, token))
            latencies.append(time.perf_counter() - scheduled)  # from the scheduled time: queueing counts
            errors += status >= 500
            other[0] += not 200 <= status < 300
            free.put_nowait(conn)

        tasks = []
        total = int(seconds * rate)
        for i in range(total):
            scheduled = start + i / rate
            delay = scheduled - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
            tasks.append(asyncio.create_task(one(i, scheduled)))
        # A server far below the rate would take minutes to drain the queue: requests still unanswered
        # `seconds` after the last was due count with their wait so far (a lower bound: `censored`).
        _, pending = await asyncio.wait(tasks, timeout=seconds)
        if pending:
            now = time.perf_counter()
            censored = len(pending)
            latencies.extend(now - (start + i / rate) for i, t in enumerate(tasks) if t in pending)
            for t in pending:
                t.cancel()
    elapsed = time.perf_counter() - start
    for _, w in conns:
        w.close()
    latencies.sort()

    def pick(q: float) -> float:
        return latencies[min(len(latencies) - 1, int(q * len(latencies)))] * 1000

    return {
        "requests": len(latencies) - censored,
        "unanswered_at_deadline": censored,
        "rps": (len(latencies) - censored) / elapsed,
        "p50_ms": pick(0.5),
        "p99_ms": pick(0.99),
        "errors": errors,
        "non_2xx": other[0],
    }


def _run_loadgen(
    port: int, mode: str, targets_file: str, seconds: float, concurrency: int, rate: float
) -> dict[str, Any]:
    cmd = [
        sys.executable,
        __file__,
        "--loadgen",
        mode,
        "--port",
        str(port),
        "--targets",
        targets_file,
        "--seconds",
        str(seconds),
        "--concurrency",
        str(concurrency),
        "--rate",
        str(rate),
    ]
    out = subprocess.run(cmd, capture_output=True, text=True, check=True, cwd=ROOT)
    return dict(json.loads(out.stdout.strip().splitlines()[-1]))


# wrk (when installed) drives the closed-loop peaks: far less CPU per request than a Python client,
# which matters on a 2-core host where the load generator and the server share the cores.
_WRK_SCRIPT = """
local targets, i = {}, 0
init = function(args)
  for line in io.lines(args[1]) do
    local path, token = line:match("([^\\t]+)\\t?(.*)")
    targets[#targets + 1] = {path, token}
  end
end
request = function()
  i = i % #targets + 1
  local t = targets[i]
  local headers = {}
  if t[2] ~= "" then headers["Authorization"] = "Bearer " .. t[2] end
  return wrk.format("GET", t[1], headers)
end
done = function(summary, latency, requests)
  io.write(string.format('{"requests": %d, "seconds": %f, "p50_ms": %f, "p99_ms": %f, "non2xx": %d, "socket_errors": %d}\\n',
    summary.requests, summary.duration / 1e6, latency:percentile(50) / 1000, latency:percentile(99) / 1000,
    summary.errors.status, summary.errors.connect + summary.errors.read + summary.errors.write + summary.errors.timeout))
end
"""


def _run_wrk(port: int, targets: list[list[Any]], seconds: float, concurrency: int) -> dict[str, Any]:
    with tempfile.TemporaryDirectory() as folder:
        script, listing = Path(folder) / "rotate.lua", Path(folder) / "targets.tsv"
        script.write_text(_WRK_SCRIPT)
        listing.write_text("".join(f"{path}\t{token or ''}\n" for path, token in targets))
        cmd = [
            "wrk",
            "-t1",
            f"-c{concurrency}",
            f"-d{seconds:g}s",
            "--latency",
            "-s",
            str(script),
            f"http://127.0.0.1:{port}",
            "--",
            str(listing),
        ]
        out = subprocess.run(cmd, capture_output=True, text=True, check=True)
    result = json.loads(out.stdout.strip().splitlines()[-1])
    return {
        "requests": result["requests"],
        "rps": result["requests"] / result["seconds"],
        "p50_ms": result["p50_ms"],
        "p99_ms": result["p99_ms"],
        "errors": result["socket_errors"],
        "non_2xx": result["non2xx"],
    }


# The named steps of a page, matched against py-spy frames; a sample counts for the deepest frame that
# matches (so a Redis round trip inside the claim counts as Redis, the claim's own Python as the claim).
PAGE_STEPS: tuple[tuple[str, str], ...] = (
    ("HTTP response write (uvicorn, socket)", "RequestResponseCycle.send"),
    ("Starlette/uvicorn: parse, route, middleware", "starlette/"),
    ("Starlette/uvicorn: parse, route, middleware", "uvicorn/"),
    ("Starlette/uvicorn: parse, route, middleware", "roomfeed/observability.py"),
    ("typed operation: parameters, auth", "roomfeed/operations.py"),
    ("typed operation: parameters, auth", "roomfeed/auth.py"),
    ("feed service glue (session, page record)", "feed/service.py"),
    ("feed service glue (session, page record)", "(feed/http.py"),
    ("session claim and page record (Python)", "SessionBook"),
    ("Redis round trips (lane: pack, send, parse)", "roomfeed/redis_lane.py"),
    ("Redis round trips (lane: pack, send, parse)", "redis/"),
    ("impressions to Kafka", "feed/impressions.py"),
    ("impressions to Kafka", "aiokafka/"),
    ("room heat refresh (each second)", "events/heat.py"),
    ("room heat refresh (each second)", "RoomHeatCache"),
    ("stage: candidates", "CandidateSource"),
    ("stage: hydrate", "Hydrate.apply"),
    ("stage: filters", "Filters.apply"),
    ("stage: viewer", "ViewerStep.apply"),
    ("stage: retrieve", "Retrieve.apply"),
    ("stage: retrieve — discovery", "discovery (ranking/retrieval.py"),
    ("stage: score", "Score.apply"),
    ("stage: rank", "Rank.apply"),
    ("per set/second derived (room part, columns, lists)", "Candidates.derived"),
    ("stage: diversity", "Diversity.apply"),
    ("stage: exploration", "Exploration.apply"),
    ("stage: alliance boost", "AllianceBoost"),
    ("stage: page", "Page.apply"),
    ("JSON encoding (orjson response)", "OrjsonResponse.render"),
    ("JSON encoding (orjson response)", "roomfeed/http.py"),
)


def page_steps(path: Path) -> dict[str, float]:
    """Share of py-spy's samples (collapsed stacks at `path`) per named step of a page (PAGE_STEPS; the
    rest: the event loop, garbage collection, other tasks)."""
    import collections

    counts: collections.Counter[str] = collections.Counter()
    total = 0
    for line in path.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        n = int(count)
        total += n
        step = "event loop, gc, other tasks"
        for frame in stack.split(";"):
            for name, pattern in PAGE_STEPS:
                if pattern in frame:
                    step = name
                    break
        counts[step] += n
    return {step: n / max(total, 1) for step, n in counts.most_common()}


def _profile(pid: int, path: str, load: Any) -> None:
    """py-spy of the server process while `load` runs; prints the top functions by self and inclusive share."""
    import collections
    import threading

    spy = subprocess.Popen(
        [
            str(ROOT / ".venv/bin/py-spy"),
            "record",
            "--pid",
            str(pid),
            "-d",
            "12",
            "-r",
            "200",
            "--nonblocking",
            "--format",
            "raw",
            "-o",
            path,
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    result: dict[str, Any] = {}
    runner = threading.Thread(target=lambda: result.update(_with_cpu(pid, load)))
    time.sleep(1)
    runner.start()
    runner.join()
    spy.wait(60)
    print("under profile:", result, flush=True)
    print(f"--- where a page's CPU goes ({result['cpu_ms_per_request']:.3f} ms/request under py-spy) ---")
    for step, share in page_steps(Path(path)).items():
        print(f"{100 * share:5.1f}%  {share * result['cpu_ms_per_request']:.3f} ms  {step}")
    own: collections.Counter[str] = collections.Counter()
    inclusive: collections.Counter[str] = collections.Counter()
    total = 0
    for line in Path(path).read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        n = int(count)
        frames = stack.split(";")
        total += n
        own[frames[-1]] += n
        for frame in set(frames):
            inclusive[frame] += n
    for title, table in (("self", own), ("inclusive", inclusive)):
        print(f"--- top by {title} ({total} samples) ---")
        for frame, n in table.most_common(45):
            print(f"{100 * n / total:5.1f}%  {frame}")


# --- the benchmark ------------------------------------------------------------------------------


def p99_cell(run: dict[str, Any]) -> str:
    """The p99 at the offered rate; a lower bound (≥) when requests were still unanswered at the end."""
    unanswered = int(run.get("unanswered_at_rate", 0))
    return f"≥ {run['p99_ms']} ({unanswered} unanswered)" if unanswered else str(run["p99_ms"])


def _record_scale(args: Any, results: dict[str, dict[str, Any]], seeded: dict[str, Any]) -> int:
    """This run as one (rooms, viewers) point of bench/results/feed_scale.json (replacing an earlier run
    of the same point) and the table in docs/benchmarks.md built from every point."""
    command = " ".join([".venv/bin/python bench/bench_feed.py", *sys.argv[1:]])
    load = os.getloadavg()
    ours = args.servers.split(",")[0]
    run: dict[str, Any] = {
        "rooms": args.rooms,
        "viewers": args.viewers,
        "merchants": args.merchants,
        **{
            k: results[ours][k]
            for k in ("cpu_ms_per_request", "peak_rps", "bare_peak_rps", "p99_ms", "p50_ms")
        },
        "api_rss_mb": results[ours]["api_rss_mb"],
        "api_peak_rss_mb": results[ours]["api_peak_rss_mb"],
        "achieved_rps_at_rate": results[ours]["achieved_rps_at_500"],
        "unanswered_at_rate": results[ours]["unanswered_at_500"],
        "api_processes": int(ours.partition("-")[2].rstrip("w") or 1),
        "rate": args.rate,
        **seeded,
        "server": ours,
        "load_avg_1m_at_end": round(load[0], 2),
        "date": time.strftime("%Y-%m-%d %H:%M"),
        "command": command,
    }
    for label, r in results.items():
        if "@" in label:
            run["baseline"] = {
                "ref": label.split("@", 1)[1],
                **{
                    k: r[k]
                    for k in ("cpu_ms_per_request", "peak_rps", "bare_peak_rps", "p99_ms", "api_rss_mb")
                },
            }
    path = ROOT / "bench/results/feed_scale.json"
    held = json.loads(path.read_text()) if path.exists() else {}
    runs = [
        r
        for r in held.get("metrics", {}).get("runs", [])
        if (r["rooms"], r["viewers"]) != (args.rooms, args.viewers)
    ]
    runs = sorted([*runs, run], key=lambda r: (r["rooms"], r["viewers"]))
    machine = f"{os.cpu_count()} cores, {platform.processor() or platform.machine()}, Python {platform.python_version()}"
    out = {
        "name": "feed_scale",
        "command": ".venv/bin/python bench/bench_feed.py --scale --rooms N --viewers V (one run per point)",
        "date": time.strftime("%Y-%m-%d"),
        "machine": machine,
        "metrics": {"runs": runs},
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(out, indent=2) + "\n")
    lines = [
        "### feed at scale: live rooms x viewers (`bench/results/feed_scale.json`)\n",
        "One run per point, each with the bare endpoint (and `--baseline` where given) in the same run; "
        "viewers' state written to Redis by ranking.viewer_state before the model is promoted (write time "
        "and Redis bytes per viewer measured); API RSS = the server process's resident memory after the runs. "
        f"{machine}; the host is shared (load average at the end of each run in the last column).\n",
        "| live rooms | viewers | CPU ms/page | feed peak rps | bare peak rps | p99 ms @500 | achieved rps @500 "
        "| API RSS MB | state write s (viewers/s) | Redis B/viewer | baseline CPU ms/page, RSS MB | load |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in runs:
        b = r.get("baseline")
        base = f"{b['ref']}: {b['cpu_ms_per_request']}, {b['api_rss_mb']}" if b else ""
        write = f"{r.get('publish_seconds', '')} ({r.get('publish_viewers_per_s', '')})"
        lines.append(
            f"| {r['rooms']:,} | {r['viewers']:,} | {r['cpu_ms_per_request']} | {r['peak_rps']} | {r['bare_peak_rps']} "
            f"| {p99_cell(r)} | {r['achieved_rps_at_rate']} | {r['api_rss_mb']} | {write} "
            f"| {r.get('redis_bytes_per_viewer', '')} | {base} | {r['load_avg_1m_at_end']} |"
        )
    lines.append("\nCommands: " + "; ".join(f"`{r['command']}`" for r in runs))
    docs = ROOT / "docs/benchmarks.md"
    text = docs.read_text() if docs.exists() else "# Benchmarks\n"
    tag = "bench:feed_scale"
    block = f"<!-- {tag} -->\n" + "\n".join(lines) + f"\n<!-- /{tag} -->"
    if f"<!-- {tag} -->" in text:
        head, rest = text.split(f"<!-- {tag} -->", 1)
        text = head + block + rest.split(f"<!-- /{tag} -->", 1)[1]
    else:
        text = text.rstrip("\n") + "\n\n" + block + "\n"
    docs.write_text(text)
    print(json.dumps(run, indent=2))
    return 0


class BenchStacks:
    """Throwaway stacks for the trees a bench serves: each a fresh database on the project's PostgreSQL,
    a private redis-server and a Kafka prefix of its own (`make`); `drop` removes them all. bench_feed and
    bench_feed_inproc make theirs here."""

    def __init__(self, base: Any, prefix: str) -> None:
        self.base = base
        self.prefix = prefix
        self.made: list[tuple[str, Any]] = []  # (database, redis-server)

    def make(self, tag: str | None = None) -> Any:
        from dataclasses import replace

        from devtools.redis import RedisServer
        from tests.support import free_port, run_sync, world_readable_tempdir

        tag = tag or secrets.token_hex(3)
        dbname = f"rf_{self.prefix}_{tag}"

        async def create_db() -> None:
            import asyncpg

            conn = await asyncpg.connect(self.base.database_url)
            await conn.execute(f'CREATE DATABASE "{dbname}"')
            await conn.close()

        run_sync(create_db)
        redis = RedisServer(world_readable_tempdir(f"rf-{self.prefix}-redis-"), free_port())
        redis.start()
        time.sleep(0.5)  # redis-server retitles itself (what is_running checks) a moment after it starts
        redis.wait_ready()
        self.made.append((dbname, redis))
        return replace(
            self.base,
            database_url=self.base.database_url.rsplit("/", 1)[0] + f"/{dbname}",
            redis_url=redis.url(),
            kafka_prefix=f"{self.prefix}{tag}.",
        )

    def drop(self) -> None:
        from tests.support import run_sync

        for dbname, redis in self.made:
            redis.kill()
            shutil.rmtree(redis.data_dir, ignore_errors=True)

            async def drop_db(dbname: str = dbname) -> None:
                import asyncpg

                conn = await asyncpg.connect(self.base.database_url)
                await conn.execute(f'DROP DATABASE IF EXISTS "{dbname}" WITH (FORCE)')
                await conn.close()

            run_sync(drop_db)
        self.made.clear()


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rooms", type=int, default=10_000)
    parser.add_argument("--viewers", type=int, default=100_000)
    parser.add_argument("--merchants", type=int, default=None, help="default: half the rooms, at least 5,000")
    parser.add_argument(
        "--scale",
        action="store_true",
        help="record this run as one (rooms, viewers) point of bench/results/feed_scale.json and its docs block",
    )
    parser.add_argument("--servers", default="uvicorn,granian")
    parser.add_argument("--seconds", type=float, default=6.0)
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--loadgen")
    parser.add_argument("--port", type=int)
    parser.add_argument("--targets")
    parser.add_argument("--rate", type=float, default=500)
    parser.add_argument(
        "--churn",
        type=float,
        default=0.0,
        help="rooms ending (and as many starting) per second during the measurements",
    )
    parser.add_argument("--churner", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument(
        "--experiment",
        action="store_true",
        help="an experiment runs during the run (two even variants, one with w_popularity 1.2), in every tree",
    )
    parser.add_argument(
        "--console-presence",
        choices=["on", "off"],
        default="on",
        help="off: drop the console's 10 s sweep of LiveStats.rooms over every live room",
    )
    parser.add_argument(
        "--peak-client", choices=["wrk", "python"], default="wrk" if shutil.which("wrk") else "python"
    )
    parser.add_argument(
        "--profile",
        metavar="PATH",
        help="instead of measuring: py-spy (collapsed stacks) of each server under a wrk feed peak; "
        "writes PATH.<server>.txt and a self/inclusive summary, no results or docs",
    )
    parser.add_argument(
        "--baseline",
        metavar="GIT_REF",
        help="also serve the code of these commits (comma-separated; each a git worktree with its own "
        "stack), interleaved with this checkout",
    )
    args = parser.parse_args()
    if args.churner:
        asyncio.run(_churn(os.environ["REDIS_URL"], args.churn, args.rooms, args.merchants))
        return 0
    if args.loadgen:
        targets = [tuple(t) for t in json.loads(Path(args.targets).read_text())]
        result = asyncio.run(
            _loadgen(args.port, args.loadgen, targets, args.seconds, args.concurrency, args.rate)
        )
        print(json.dumps(result))
        return 0

    import signal

    def interrupted(signum: int, frame: Any) -> None:
        raise KeyboardInterrupt  # SIGTERM: stop the servers, Redis and the database as Ctrl-C does

    signal.signal(signal.SIGTERM, interrupted)
    from devtools import services
    from roomfeed.settings import Settings
    from tests.support import free_port, run_sync

    base = Settings.from_env()
    services.up(base)
    if args.merchants is None:
        args.merchants = max(5_000, args.rooms // 2)
    stacks = BenchStacks(base, "bench")
    stack = stacks.make  # one per tree served (the baseline reads its own)

    settings = stack()
    results: dict[str, dict[str, Any]] = {}
    seeded: dict[str, Any] = {}
    # Each baseline commit: its short hash -> (its worktree, its own stack).
    baselines: dict[str, tuple[Path, Any]] = {}
    try:
        for baseline in args.baseline.split(",") if args.baseline else []:
            ref = subprocess.run(
                ["git", "rev-parse", "--short", baseline],
                cwd=ROOT,
                capture_output=True,
                text=True,
                check=True,
            ).stdout.strip()
            tree = Path(tempfile.mkdtemp(prefix="rf-bench-baseline-")) / "tree"
            subprocess.run(
                ["git", "worktree", "add", "--detach", str(tree), baseline],
                cwd=ROOT,
                check=True,
                capture_output=True,
            )
            (tree / ".venv").symlink_to(ROOT / ".venv")
            baselines[ref] = (tree, stack())
        seeded.update(run_sync(lambda: _seed(settings, args.rooms, args.merchants, args.viewers)))
        for tree, legacy in baselines.values():
            _seed_baseline(tree, legacy, args.rooms, args.merchants, args.viewers)
        if args.experiment:
            _start_experiment(ROOT, settings)
            for tree, legacy in baselines.values():
                _start_experiment(tree, legacy)
        env = {
            **os.environ,
            "DATABASE_URL": settings.database_url,
            "REDIS_URL": settings.redis_url,
            "KAFKA_BOOTSTRAP": settings.kafka_bootstrap,
            "ROOMFEED_KAFKA_PREFIX": settings.kafka_prefix,
            "BENCH_VIEWERS": str(args.viewers),
            "BENCH_MERCHANTS": str(args.merchants),
            "PYTHONPATH": str(ROOT),
            "BENCH_CONSOLE_PRESENCE": "1" if args.console_presence == "on" else "0",
        }
        labels = args.servers.split(",")
        labels += [f"{server}@{ref}" for ref in baselines for server in args.servers.split(",")]
        up: dict[str, dict[str, Any]] = {}
        churner: subprocess.Popen[bytes] | None = None
        try:
            for label in labels:
                server, _, ref = label.partition("@")
                root = baselines[ref][0] if ref else ROOT
                port = free_port()
                own = {"DATABASE_URL": settings.database_url, "REDIS_URL": settings.redis_url}
                if ref:
                    legacy = baselines[ref][1]
                    own = {"DATABASE_URL": legacy.database_url, "REDIS_URL": legacy.redis_url}
                up[label] = {
                    "port": port,
                    "proc": _serve(server, port, {**env, **own, "PYTHONPATH": str(root)}, root),
                }
            for label, srv in up.items():
                port = srv["port"]
                try:
                    _wait_up(port, timeout=240)
                    srv["up_at"] = time.monotonic()
                except RuntimeError:
                    proc = srv["proc"]
                    if proc.poll() is not None and proc.stderr is not None:
                        print(label, "exited:", proc.stderr.read().decode()[-3000:], file=sys.stderr)
                    raise
                print(label, "up; creating sessions", flush=True)
                sessions = _sessions(port, settings.viewer_token_secret, 500, args.viewers)
                with tempfile.NamedTemporaryFile("w", suffix=".json", delete=False) as f:
                    json.dump([[f"/v1/sessions/{s}/feed?count=10", t] for s, t in sessions], f)
                    srv["feed_file"] = f.name
                srv["feed_targets"] = [[f"/v1/sessions/{s}/feed?count=10", t] for s, t in sessions]
                print(label, "warming up", flush=True)
                _run_loadgen(port, "closed", srv["feed_file"], 2, args.concurrency, 0)  # warm-up
                srv["runs"] = {"bare": [], "feed": [], "feed_500": []}
                if "@" not in label:  # the floor route is this checkout's (a baseline's app has none)
                    srv["runs"]["redis_floor"] = []
            with tempfile.NamedTemporaryFile("w", suffix=".json", delete=False) as f:
                json.dump([["/healthz", None]], f)
                bare_file = f.name
            with tempfile.NamedTemporaryFile("w", suffix=".json", delete=False) as f:
                json.dump([[FLOOR_PATH, None]], f)
                floor_file = f.name

            def peak(port: int, targets_file: str, targets: list[list[Any]]) -> dict[str, Any]:
                if args.peak_client == "wrk":
                    return _run_wrk(port, targets, args.seconds, args.concurrency)
                return _run_loadgen(port, "closed", targets_file, args.seconds, args.concurrency, 0)

            # Every server past its first heap refreeze (roomfeed.heap: a full collection FIRST_S after start,
            # then one per PERIOD_S): a one-off of ~0.1-0.3 s of CPU that otherwise lands in whichever idle
            # window or round it falls in, for one tree and not the other (measured: idle 56 vs 12 ms/s).
            settle = HEAP_SETTLE_S - (time.monotonic() - max(srv["up_at"] for srv in up.values()))
            if settle > 0:
                print(f"waiting {settle:.0f} s for the servers' first heap refreeze", flush=True)
                time.sleep(settle)
            # Each server's own background work (heat refresh, live-index checks, config polls, the console's
            # sweep...) with no request in flight: CPU per second, which a page's CPU figure carries too.
            for srv in up.values():
                before = _cpu_seconds(srv["proc"].pid)
                time.sleep(IDLE_S)
                srv["idle_cpu_ms_per_s"] = (_cpu_seconds(srv["proc"].pid) - before) * 1000 / IDLE_S
            if args.profile:
                for label, srv in up.items():
                    _profile(
                        srv["proc"].pid,
                        f"{args.profile}.{label}.txt",
                        lambda s=srv: peak(s["port"], s["feed_file"], s["feed_targets"]),
                    )
                labels = []
            if args.churn > 0:
                churner = subprocess.Popen(
                    [
                        sys.executable,
                        __file__,
                        "--churner",
                        "--churn",
                        str(args.churn),
                        "--rooms",
                        str(args.rooms),
                        "--merchants",
                        str(args.merchants),
                    ],
                    cwd=ROOT,
                    env=env,
                )
            # Repeats interleave the servers (A B A B ...), so a change in the host's load hits all of them.
            for _ in range(args.repeats if labels else 0):
                for label, srv in up.items():
                    port, pid, runs = srv["port"], srv["proc"].pid, srv["runs"]
                    runs["bare"].append(
                        _with_cpu(pid, lambda p=port: peak(p, bare_file, [["/healthz", None]]))
                    )
                    if "redis_floor" in runs:
                        runs["redis_floor"].append(
                            _with_cpu(pid, lambda p=port: peak(p, floor_file, [[FLOOR_PATH, None]]))
                        )
                    runs["feed"].append(
                        _with_cpu(pid, lambda s=srv: peak(s["port"], s["feed_file"], s["feed_targets"]))
                    )
                    runs["feed_500"].append(
                        _with_cpu(
                            pid,
                            lambda s=srv: _run_loadgen(
                                s["port"], "open", s["feed_file"], args.seconds, 64, args.rate
                            ),
                        )
                    )
                    print(label, {k: v[-1] for k, v in runs.items()}, flush=True)
            for label in labels:
                up[label]["rss"] = _rss_mb(up[label]["proc"].pid)
            for label in labels:
                runs = up[label]["runs"]

                def med(k: str, f: str, runs: dict[str, list[dict[str, Any]]] = runs) -> float:
                    return float(statistics.median(r[f] for r in runs[k]))

                results[label] = {
                    "p50_ms": round(med("feed_500", "p50_ms"), 2),
                    "p99_ms": round(med("feed_500", "p99_ms"), 2),
                    # > 0: requests unanswered when the open-loop run ended; p99 is then a lower bound.
                    "unanswered_at_500": int(med("feed_500", "unanswered_at_deadline")),
                    "achieved_rps_at_500": round(med("feed_500", "rps"), 1),
                    "peak_rps": round(med("feed", "rps"), 1),
                    "peak_p99_ms": round(med("feed", "p99_ms"), 2),
                    "bare_peak_rps": round(med("bare", "rps"), 1),
                    "bare_cpu_ms_per_request": round(med("bare", "cpu_ms_per_request"), 3),
                    "cpu_ms_per_request": round(med("feed", "cpu_ms_per_request"), 3),
                    "api_rss_mb": round(up[label]["rss"][0], 1),
                    "idle_cpu_ms_per_s": round(up[label]["idle_cpu_ms_per_s"], 1),
                    "api_peak_rss_mb": round(up[label]["rss"][1], 1),
                    "errors_5xx": sum(r["errors"] for rs in runs.values() for r in rs),
                    "non_2xx": sum(r.get("non_2xx", 0) for rs in runs.values() for r in rs),
                }
                if runs.get("redis_floor"):
                    results[label]["redis_floor_peak_rps"] = round(med("redis_floor", "rps"), 1)
                    results[label]["redis_floor_cpu_ms_per_request"] = round(
                        med("redis_floor", "cpu_ms_per_request"), 3
                    )
                results[label]["peak_share_of_bare"] = round(
                    results[label]["peak_rps"] / results[label]["bare_peak_rps"], 3
                )
                print(label, results[label], flush=True)
        finally:
            if churner is not None:
                churner.kill()
            for srv in up.values():
                srv["proc"].terminate()
            for srv in up.values():
                try:
                    srv["proc"].wait(20)
                except subprocess.TimeoutExpired:
                    srv["proc"].kill()
            for tree, _ in baselines.values():
                subprocess.run(["git", "worktree", "remove", "--force", str(tree)], cwd=ROOT, check=False)
    finally:
        stacks.drop()
    if args.profile:
        return 0
    if args.scale:
        return _record_scale(args, results, seeded)
    best = min((s for s in results if "@" not in s), key=lambda s: results[s]["p99_ms"])
    # Same-run ratios of this checkout's server against each baseline commit's same server.
    against: dict[str, dict[str, float]] = {}
    for label, r in results.items():
        server, _, ref = label.partition("@")
        if ref and server in results:
            mine = results[server]
            against[label] = {
                "cpu_ratio": round(mine["cpu_ms_per_request"] / max(r["cpu_ms_per_request"], 1e-9), 3),
                "peak_ratio": round(mine["peak_rps"] / max(r["peak_rps"], 1e-9), 3),
            }
    command = " ".join([".venv/bin/python bench/bench_feed.py", *sys.argv[1:]])
    machine = f"{os.cpu_count()} cores, {platform.processor() or platform.machine()}, Python {platform.python_version()}"
    load = os.getloadavg()
    metrics = {
        **results[best],
        "server": best,
        "rooms": args.rooms,
        "viewers": args.viewers,
        "console_presence": args.console_presence,
        "peak_client": args.peak_client,
        "rate": args.rate,
        "churn_per_s": args.churn,
        "experiment": args.experiment,
        "load_avg_1m_at_end": round(load[0], 2),
        "by_server": results,
        "vs_baseline": against,
    }
    out = {
        "name": "feed",
        "command": command,
        "date": time.strftime("%Y-%m-%d"),
        "machine": machine,
        "metrics": metrics,
    }
    (ROOT / "bench/results").mkdir(parents=True, exist_ok=True)
    result_name = "feed.json" if not args.churn else f"feed_churn_{args.churn:g}.json"
    if args.experiment:
        result_name = result_name.replace(".json", "_experiment.json")
    (ROOT / "bench/results" / result_name).write_text(json.dumps(out, indent=2) + "\n")
    churn = f", {args.churn:g} rooms ending and as many starting per second" if args.churn else ""
    churn += (
        ", an experiment running (two even variants, one with w_popularity 1.2)" if args.experiment else ""
    )
    lines = [
        f"### console presence sweep {args.console_presence}, {args.rate:g} req/s{churn} ({out['date']})\n",
        f"Command: `{command}` — {machine}. {args.rooms} live rooms, "
        f"{args.viewers} known viewers (ranking.Scorer, k={K}), load generator in its own process, "
        f"concurrency {args.concurrency}, medians of {args.repeats} runs of {args.seconds:g} s (servers interleaved); "
        f"server CPU ms/request = the server process's user+system CPU during the feed peak / requests; peaks by "
        f"{args.peak_client}, {args.rate:g} req/s open loop by the Python client; bare = `/healthz`, Redis floor = "
        f"`{FLOOR_PATH}` (the page's two lane round trips and nothing else; this checkout only), each with the "
        f"server's CPU per request; idle CPU = the server's CPU per second over {IDLE_S:g} s with no request "
        f"(its background work, which CPU per page also carries); console presence sweep "
        f"{args.console_presence}; load average at the end {load[0]:.1f} (2 cores shared with other work).\n",
        f"| server | p50 ms @{args.rate:g} rps | p99 ms @{args.rate:g} rps | achieved rps @{args.rate:g} "
        "| feed peak rps | feed peak p99 ms "
        "| bare peak rps | feed/bare | server CPU ms/request | bare CPU ms/request | Redis floor CPU ms/request "
        "| idle CPU ms/s | non-2xx |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for s, r in results.items():
        lines.append(
            f"| {s} | {r['p50_ms']} | {r['p99_ms']} | {r['achieved_rps_at_500']} | {r['peak_rps']} | "
            f"{r['peak_p99_ms']} | {r['bare_peak_rps']} | {r['peak_share_of_bare']} | "
            f"{r['cpu_ms_per_request']} | {r['bare_cpu_ms_per_request']} | "
            f"{r.get('redis_floor_cpu_ms_per_request', '')} | {r['idle_cpu_ms_per_s']} | {r['non_2xx']} |"
        )
    lines.append(f"\nThis checkout's best p99 (its figures are bench/results/feed.json's): **{best}**.")
    for label, ratio in against.items():
        lines.append(
            f"Same run, {label.partition('@')[0]} this checkout vs {label}: CPU per page {ratio['cpu_ratio']}x, "
            f"peak {ratio['peak_ratio']}x."
        )
    # Our own section only: `bench:feed` holds one block per console-presence setting, replaced in place.
    docs = ROOT / "docs/benchmarks.md"
    text = docs.read_text() if docs.exists() else "# Benchmarks\n"
    tag = (
        f"bench:feed:console-{args.console_presence}"
        + ("" if args.rate == 500 else f":rate-{args.rate:g}")
        + (f":churn-{args.churn:g}" if args.churn else "")
        + (":experiment" if args.experiment else "")
    )
    block = f"<!-- {tag} -->\n" + "\n".join(lines) + f"\n<!-- /{tag} -->"
    if f"<!-- {tag} -->" in text:
        head, rest = text.split(f"<!-- {tag} -->", 1)
        text = head + block + rest.split(f"<!-- /{tag} -->", 1)[1]
    elif "<!-- /bench:feed -->" in text:
        text = text.replace("<!-- /bench:feed -->", block + "\n\n<!-- /bench:feed -->", 1)
    else:
        text += f"\n<!-- bench:feed -->\n## feed — GET /v1/sessions/{{id}}/feed at 10,000 live rooms\n\n{block}\n\n<!-- /bench:feed -->\n"
    docs.write_text(text)
    print(json.dumps(out, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
