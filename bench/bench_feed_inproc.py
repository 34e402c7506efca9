"""The feed page's CPU in-process: the real app driven by ASGI calls, no sockets, no HTTP server.

    .venv/bin/python bench/bench_feed_inproc.py --rooms 10000,100000 --baseline GIT_REF [--rounds 3]

What `bench/bench_feed.py` measures through uvicorn and wrk needs a quiet host; this measures process
CPU time, so it can run beside other work (autogroup 19). For each live-room count it seeds bench_feed's
stack once per tree (a fresh database and private Redis: rooms, heat, the synthetic model, viewer states in
Redis; a baseline commit seeds its own with its own `_seed`), then starts one worker process per tree:
bench_feed's `app_factory` (create_app, console presence on) under its lifespan, 200 sessions, a warm-up,
and a wait past the heap's first refreeze. Rounds alternate the trees; each round runs in each worker:

- closed loop: `--pages` pages, 16 at a time — process CPU per page (every thread: the request path, the
  frame refresher's thread, the heat refresh, the console's sampler, background tasks);
- trickle: 2 pages/s for `--trickle-s` seconds — process CPU per second with almost no pages: the
  background a page's CPU carries at any rate (and its split by thread).

"per page, background out" = closed-loop CPU/page - background ms/s / closed-loop pages/s: the request
path alone.

`--split PAGES`: after the rounds, PAGES pages one at a time with each step of a page charged its own thread
CPU (probes around the ASGI app, the feed service, its session and claim round trips, the pipeline and every
stage): where a page's CPU goes (a step that awaits Redis also carries what the loop ran meanwhile). Not in any figure here: HTTP parsing and the socket writes of uvicorn (bench_feed's bare
endpoint, ~0.09 ms a request) and the CPU of Redis, Kafka and PostgreSQL themselves.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import gc
import json
import os
import platform
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
SESSIONS = 200
CONCURRENCY = 16
HEAP_SETTLE_S = 35.0  # past roomfeed.heap's first refreeze (FIRST_S = 30 s after start)


# --- the worker (one per tree; its own process, the tree's code first on sys.path) ----------------


async def _call(app: Any, method: str, path: str, token: str, body: bytes = b"") -> tuple[int, bytes]:
    """One ASGI request to `app`: (status, body)."""
    path, _, query = path.partition("?")
    headers = [(b"host", b"bench"), (b"authorization", f"Bearer {token}".encode())]
    if body:
        headers += [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
    scope = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": method,
        "scheme": "http",
        "path": path,
        "raw_path": path.encode(),
        "query_string": query.encode(),
        "root_path": "",
        "headers": headers,
        "client": ("127.0.0.1", 5000),
        "server": ("127.0.0.1", 80),
    }
    sent = False
    status, chunks = 0, []

    async def receive() -> dict[str, Any]:
        nonlocal sent
        if not sent:
            sent = True
            return {"type": "http.request", "body": body, "more_body": False}
        await asyncio.Event().wait()  # the request has no more body; a disconnect never comes
        raise AssertionError("unreachable")

    async def send(message: dict[str, Any]) -> None:
        nonlocal status
        if message["type"] == "http.response.start":
            status = message["status"]
        elif message["type"] == "http.response.body":
            chunks.append(message.get("body", b""))

    await app(scope, receive, send)
    return status, b"".join(chunks)


def _process_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def _thread_cpu() -> dict[str, float]:
    """CPU seconds per thread of this process, by Python thread name (executor threads as one)."""
    import threading

    names = {t.native_id: t.name for t in threading.enumerate()}
    tick = os.sysconf("SC_CLK_TCK")
    out: dict[str, float] = {}
    for tid in os.listdir("/proc/self/task"):
        try:
            fields = (Path("/proc/self/task") / tid / "stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        name = names.get(int(tid), "other")
        name = "executor (frames)" if name.startswith("asyncio_") else name
        out[name] = out.get(name, 0.0) + (int(fields[11]) + int(fields[12])) / tick
    return out


def _split_probes() -> dict[str, float]:
    """Charge each named step of a page its own thread CPU (time.thread_time) by wrapping it at class
    level: the feed service's page, its session round trip and claim, the pipeline and each stage, the
    served records' hand-off. Only meaningful with pages served one at a time (`split`): a step that
    awaits is charged what other tasks of the thread ran meanwhile (the background's few ms a second)."""
    import functools

    from feed import stages
    from feed.impressions import ImpressionPublisher
    from feed.pipeline import FeedPipeline
    from feed.retrieval import Retrieve, ViewerStep
    from feed.service import FeedService
    from feed.sessions import SessionBook

    spent: dict[str, float] = {}

    def timed(owner: Any, attr: str, name: str) -> None:
        inner = getattr(owner, attr)
        if asyncio.iscoroutinefunction(inner):

            @functools.wraps(inner)
            async def wrapped_async(*a: Any, **k: Any) -> Any:
                t0 = time.thread_time()
                try:
                    return await inner(*a, **k)
                finally:
                    spent[name] = spent.get(name, 0.0) + time.thread_time() - t0

            setattr(owner, attr, wrapped_async)
        else:

            @functools.wraps(inner)
            def wrapped(*a: Any, **k: Any) -> Any:
                t0 = time.thread_time()
                try:
                    return inner(*a, **k)
                finally:
                    spent[name] = spent.get(name, 0.0) + time.thread_time() - t0

            setattr(owner, attr, wrapped)

    timed(FeedService, "next_page", "service: next_page (all of it)")
    timed(FeedService, "_page", "service: _page (pipeline, claims, records)")
    timed(SessionBook, "load", "session round trip (load)")
    timed(SessionBook, "claim", "claim round trip (claim)")
    timed(FeedPipeline, "run", "pipeline (every stage)")
    timed(ImpressionPublisher, "publish", "served records handed to Kafka")
    for cls in (
        stages.CandidateSource,
        stages.Hydrate,
        stages.Filters,
        ViewerStep,
        Retrieve,
        stages.Score,
        stages.Rank,
        stages.Diversity,
        stages.Exploration,
        stages.Page,
    ):
        timed(cls, "apply", f"stage: {cls.name}")
    with contextlib.suppress(ImportError):
        from alliance.boost import AllianceBoost

        timed(AllianceBoost, "apply", "stage: alliance_boost")
    return spent


async def _worker() -> None:
    """Start the app of the tree on sys.path, then answer commands on stdin with one JSON line each."""
    from bench.bench_feed import app_factory
    from roomfeed.auth import sign_viewer_token
    from roomfeed.settings import Settings

    settings = Settings.from_env()
    viewers = int(os.environ["BENCH_VIEWERS"])
    spent = _split_probes() if os.environ.get("BENCH_SPLIT") == "1" else None
    started = time.monotonic()
    app = app_factory()
    async with app.router.lifespan_context(app):
        sessions = []
        for i in range(SESSIONS):
            viewer = f"viewer-{(i * 7919) % viewers}"
            token = sign_viewer_token(settings.viewer_token_secret, viewer)
            entry = json.dumps({"viewer_id": viewer, "entry": {}, "count": 1}).encode()
            status, raw = await _call(app, "POST", "/v1/sessions", token, entry)
            if status not in (200, 201) or not json.loads(raw)["rooms"]:
                raise SystemExit(f"a session without rooms: {status} {raw[:300]!r}")
            sessions.append((f"/v1/sessions/{json.loads(raw)['session_id']}/feed?count=10", token))
        turn = [0]
        steps: dict[str, float] = {}  # the pages' own timings_ms (stage, claim, session), summed per round

        async def pages(worker: int, count: int) -> None:
            for j in range(count):
                path, token = sessions[(worker * 7 + j * CONCURRENCY + turn[0]) % len(sessions)]
                t0 = time.thread_time()
                status, raw = await _call(app, "GET", path, token)
                if spent is not None:
                    spent["request: the ASGI app (all of it)"] = (
                        spent.get("request: the ASGI app (all of it)", 0.0) + time.thread_time() - t0
                    )
                if status != 200:
                    raise SystemExit(f"feed page answered {status}: {raw[:300]!r}")
                for step, ms in json.loads(raw).get("timings_ms", {}).items():
                    steps[step] = steps.get(step, 0.0) + ms

        await asyncio.gather(*(pages(k, 20) for k in range(CONCURRENCY)))  # warm-up
        await asyncio.sleep(max(0.0, HEAP_SETTLE_S - (time.monotonic() - started)))
        print(json.dumps({"ready": True}), flush=True)
        loop = asyncio.get_running_loop()
        while True:
            line = (await loop.run_in_executor(None, sys.stdin.readline)).split()
            if not line or line[0] == "quit":
                return
            turn[0] += 1
            steps.clear()
            if spent is not None:
                spent.clear()
            gc.collect()
            cpu0, wall0, threads0 = _process_cpu(), time.monotonic(), _thread_cpu()
            if line[0] == "closed":
                each = int(line[1]) // CONCURRENCY
                await asyncio.gather(*(pages(k, each) for k in range(CONCURRENCY)))
                done = each * CONCURRENCY
            elif line[0] == "split":  # one page at a time, the sessions in turn: each step's own thread CPU
                done = int(line[1])
                for _ in range(done):
                    turn[0] += 1
                    await pages(0, 1)
            else:  # trickle RATE SECONDS: one page every 1/RATE s, each its own task
                rate, seconds = float(line[1]), float(line[2])
                tasks, done = [], 0
                while time.monotonic() - wall0 < seconds:
                    await asyncio.sleep(max(0.0, wall0 + done / rate - time.monotonic()))
                    tasks.append(asyncio.ensure_future(pages(done % CONCURRENCY, 1)))
                    done += 1
                await asyncio.gather(*tasks)
            cpu1, wall1, threads1 = _process_cpu(), time.monotonic(), _thread_cpu()
            seconds = wall1 - wall0
            print(
                json.dumps(
                    {
                        "pages": done,
                        "pages_per_s": done / seconds,
                        "cpu_ms_per_page": (cpu1 - cpu0) * 1000 / max(done, 1),
                        "cpu_ms_per_s": (cpu1 - cpu0) * 1000 / seconds,
                        "steps_ms_per_page": {k: round(v / max(done, 1), 4) for k, v in steps.items()},
                        "thread_cpu_ms_per_page": {
                            k: round(v * 1000 / max(done, 1), 4) for k, v in sorted((spent or {}).items())
                        },
                        "threads_ms_per_s": {
                            name: round((threads1[name] - threads0.get(name, 0.0)) * 1000 / seconds, 1)
                            for name in threads1
                        },
                    }
                ),
                flush=True,
            )


# --- the driver ---------------------------------------------------------------------------------------


class Worker:
    """One tree's worker process, driven one command at a time."""

    def __init__(self, label: str, tree: Path, env: dict[str, str]) -> None:
        self.label = label
        self.proc = subprocess.Popen(
            [sys.executable, str(Path(__file__).resolve()), "--worker"],
            cwd=tree,
            env={**env, "PYTHONPATH": str(tree)},
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )

    def answer(self) -> dict[str, Any]:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            if line.startswith("{"):
                got: dict[str, Any] = json.loads(line)
                return got
        raise SystemExit(f"{self.label}: the worker exited ({self.proc.wait()})")

    def run(self, command: str) -> dict[str, Any]:
        assert self.proc.stdin is not None
        self.proc.stdin.write(command + "\n")
        self.proc.stdin.flush()
        return self.answer()

    def stop(self) -> None:
        if self.proc.poll() is None:
            with contextlib.suppress(BrokenPipeError, SystemExit):
                self.run("quit")
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.proc.kill()


def measure(args: argparse.Namespace, rooms: int) -> dict[str, Any]:
    """Every tree at `rooms` live rooms: medians over the rounds, and the rounds' paired ratios."""
    from bench.bench_feed import BenchStacks, _seed, _seed_baseline
    from devtools import services
    from roomfeed.settings import Settings
    from tests.support import run_sync

    base = Settings.from_env()
    services.up(base)
    merchants = max(5_000, rooms // 2)
    trees: dict[str, Path] = {"this": ROOT}
    made: list[Path] = []
    workers: list[Worker] = []

    stacks = BenchStacks(base, "inproc")

    def stack(tag: str) -> Any:
        return stacks.make(f"{tag}_{os.getpid()}")

    try:
        for ref in args.baseline.split(",") if args.baseline else []:
            short = subprocess.run(
                ["git", "rev-parse", "--short", ref], cwd=ROOT, capture_output=True, text=True, check=True
            ).stdout.strip()
            tree = Path(tempfile.mkdtemp(prefix="rf-inproc-baseline-")) / "tree"
            subprocess.run(
                ["git", "worktree", "add", "--detach", str(tree), ref],
                cwd=ROOT,
                check=True,
                capture_output=True,
            )
            (tree / ".venv").symlink_to(ROOT / ".venv")
            trees[short] = tree
            made.append(tree)
        for label, tree in trees.items():
            settings = stack(label)
            if tree == ROOT:

                async def seed(seeded: Any = settings) -> None:
                    await _seed(seeded, rooms, merchants, args.viewers)

                run_sync(seed)
            else:
                _seed_baseline(tree, settings, rooms, merchants, args.viewers)
            env = {
                **os.environ,
                "DATABASE_URL": settings.database_url,
                "REDIS_URL": settings.redis_url,
                "KAFKA_BOOTSTRAP": settings.kafka_bootstrap,
                "ROOMFEED_KAFKA_PREFIX": settings.kafka_prefix,
                "BENCH_VIEWERS": str(args.viewers),
                "BENCH_MERCHANTS": str(merchants),
                "BENCH_CONSOLE_PRESENCE": "1",
                **({"BENCH_SPLIT": "1"} if args.split else {}),
            }
            workers.append(Worker(label, tree, env))
        for worker in workers:
            worker.answer()  # ready
            print(worker.label, "ready", flush=True)
        runs: dict[str, dict[str, list[dict[str, Any]]]] = {
            w.label: {"closed": [], "trickle": []} for w in workers
        }
        for r in range(args.rounds):
            order = workers if r % 2 == 0 else workers[::-1]
            for worker in order:
                closed = worker.run(f"closed {args.pages}")
                trickle = worker.run(f"trickle 2 {args.trickle_s}")
                runs[worker.label]["closed"].append(closed)
                runs[worker.label]["trickle"].append(trickle)
                print(
                    f"{rooms} {worker.label} round {r + 1}: {closed['cpu_ms_per_page']:.3f} ms/page at "
                    f"{closed['pages_per_s']:.0f} pages/s; background {trickle['cpu_ms_per_s']:.1f} ms/s "
                    f"{trickle['threads_ms_per_s']}; steps {closed['steps_ms_per_page']}",
                    flush=True,
                )
        for worker in workers if args.split else []:
            split = worker.run(f"split {args.split}")
            runs[worker.label]["split"] = [split]
            print(
                f"{rooms} {worker.label} split, one page at a time:", json.dumps(split, indent=1), flush=True
            )
    finally:
        for worker in workers:
            worker.stop()
        for tree in made:
            subprocess.run(["git", "worktree", "remove", "--force", str(tree)], cwd=ROOT, check=False)
            shutil.rmtree(tree.parent, ignore_errors=True)
        stacks.drop()
    out: dict[str, Any] = {"rooms": rooms, "merchants": merchants, "viewers": args.viewers, "trees": {}}
    for label, got in runs.items():
        page = [c["cpu_ms_per_page"] for c in got["closed"]]
        rate = [c["pages_per_s"] for c in got["closed"]]
        background = [t["cpu_ms_per_s"] for t in got["trickle"]]
        request = [p - b / s for p, b, s in zip(page, background, rate, strict=True)]
        threads: dict[str, float] = {}
        for name in got["trickle"][0]["threads_ms_per_s"]:
            threads[name] = round(
                statistics.median(t["threads_ms_per_s"].get(name, 0.0) for t in got["trickle"]), 1
            )
        out["trees"][label] = {
            "cpu_ms_per_page": round(statistics.median(page), 3),
            "pages_per_s": round(statistics.median(rate), 1),
            "background_cpu_ms_per_s": round(statistics.median(background), 1),
            "background_by_thread_ms_per_s": threads,
            "request_cpu_ms_per_page": round(statistics.median(request), 3),
            "rounds_cpu_ms_per_page": [round(x, 3) for x in page],
            "rounds_background_ms_per_s": [round(x, 1) for x in background],
            **({"split": got["split"][0]} if got.get("split") else {}),
            # Each step's own wall ms a page (timings_ms: the stages run without awaiting, so theirs is
            # CPU; "session" and "claim" include the waits on Redis while other pages run).
            "steps_ms_per_page": {
                step: round(
                    statistics.median(c["steps_ms_per_page"].get(step, 0.0) for c in got["closed"]), 4
                )
                for step in got["closed"][0]["steps_ms_per_page"]
            },
        }
    this = runs["this"]
    for label in runs:
        if label == "this":
            continue
        other = runs[label]
        out["trees"][label]["this_over_it"] = {
            "cpu_ms_per_page_rounds": [
                round(a["cpu_ms_per_page"] / b["cpu_ms_per_page"], 3)
                for a, b in zip(this["closed"], other["closed"], strict=True)
            ],
            "background_rounds": [
                round(a["cpu_ms_per_s"] / b["cpu_ms_per_s"], 3)
                for a, b in zip(this["trickle"], other["trickle"], strict=True)
            ],
        }
    return out


def record(
    args: argparse.Namespace, points: list[dict[str, Any]], load: float | None = None, note: str = ""
) -> None:
    """bench/results/feed_inproc.json and its block in docs/benchmarks.md (`load`: the 1-minute load
    average at the run's end, when recorded later; `note`: how it was recorded, when not by the run)."""
    command = " ".join([".venv/bin/python bench/bench_feed_inproc.py", *sys.argv[1:]])
    machine = f"{os.cpu_count()} cores, {platform.machine()}, Python {platform.python_version()}, {platform.system()}"
    load = round(os.getloadavg()[0], 1) if load is None else load
    (ROOT / "bench/results/feed_inproc.json").write_text(
        json.dumps(
            {
                "name": "feed_inproc",
                "command": command,
                "date": time.strftime("%Y-%m-%d %H:%M"),
                "machine": machine,
                "metrics": {"points": points, "load_avg_1m_at_end": load},
                **({"note": note} if note else {}),
            },
            indent=2,
        )
        + "\n"
    )
    lines = [
        "### feed_inproc — a page's process CPU in-process (the app driven by ASGI calls), per page and per second\n",
        f"`{command}` — {time.strftime('%Y-%m-%d')}, {machine}\n",
        "```",
        f"bench_feed's stack and app (console presence on), {args.viewers:,} viewers in Redis, 200 sessions, "
        f"16 pages at a time; medians of {args.rounds} rounds, trees alternating; background = process CPU per "
        f"second at 2 pages/s; request path = CPU/page - background / pages per second; load average at the end {load}"
        + (f"; {note}" if note else ""),
        "",
        "| live rooms | tree | CPU ms/page | pages/s | background ms/s (by thread) | request path ms/page | this / tree, rounds |",
        "|---:|---|---:|---:|---|---:|---|",
    ]
    for point in points:
        for label, t in point["trees"].items():
            ratio = t.get("this_over_it", {}).get("cpu_ms_per_page_rounds", "")
            by = ", ".join(f"{k} {v}" for k, v in t["background_by_thread_ms_per_s"].items() if v >= 0.5)
            lines.append(
                f"| {point['rooms']:,} | {label} | {t['cpu_ms_per_page']} | {t['pages_per_s']} | "
                f"{t['background_cpu_ms_per_s']} ({by}) | {t['request_cpu_ms_per_page']} | {ratio} |"
            )
    lines.append("```")
    docs = ROOT / "docs/benchmarks.md"
    text = docs.read_text()
    tag = "bench:feed_inproc"
    block = f"<!-- {tag} -->\n" + "\n".join(lines) + f"\n<!-- /{tag} -->"
    if f"<!-- {tag} -->" in text:
        head, rest = text.split(f"<!-- {tag} -->", 1)
        text = head + block + rest.split(f"<!-- /{tag} -->", 1)[1]
    else:
        anchor = "<!-- bench:feed_scale -->"
        text = (
            text.replace(anchor, block + "\n\n" + anchor, 1) if anchor in text else text + "\n" + block + "\n"
        )
    docs.write_text(text)


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--rooms", default="10000,100000", help="live-room counts, comma-separated")
    parser.add_argument("--viewers", type=int, default=100_000)
    parser.add_argument("--baseline", metavar="GIT_REF", help="also run these commits (comma-separated)")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--pages", type=int, default=1_600, help="closed-loop pages per round")
    parser.add_argument(
        "--trickle-s", type=float, default=15.0, help="seconds of the 2 pages/s run per round"
    )
    parser.add_argument(
        "--split",
        type=int,
        default=0,
        metavar="PAGES",
        help="also serve PAGES pages one at a time with each step charged its own thread CPU (probes "
        "wrapped around the service, its round trips, the pipeline and every stage)",
    )
    parser.add_argument("--no-record", action="store_true")
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        sys.path.insert(0, os.environ["PYTHONPATH"])  # the tree's code before this checkout's
        asyncio.run(_worker())
        return 0
    sys.path.insert(0, str(ROOT))
    points = [measure(args, int(n)) for n in args.rooms.split(",")]
    print(json.dumps(points, indent=2))
    if not args.no_record:
        record(args, points)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
