"""`roomfeed demo`: the whole marketplace running on one machine, driven through the real HTTP API.

Owns the demo's choreography: start the local services, migrate, create an operator key, start
the api, worker and trainer processes, seed a simulated marketplace (merchants, stores, staff,
alliances, attribution codes, rooms going live and ending over time) and drive simulated viewers
(`simulator.SimulatedViewer`, reacting to the rooms the real feed offers; some arrive through a
merchant's code) through the public API, promote the first trained model, and stop everything it
started on Ctrl-C, SIGTERM or `--minutes`. It never talks to another domain's tables: every
write is an HTTP call a real client could make, so the demo also exercises the contracts.

`MarketplaceSeeder`, `RoomSchedule` and `ViewerTraffic` take an `httpx.AsyncClient`, so tests
drive them against the in-process app for a few seconds.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import os
import random
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

from events.vocabulary import DEAL_CLAIM, ENTER, IMPRESSION
from roomfeed.settings import REPO_ROOT, Settings, external_services

log = logging.getLogger("roomfeed.demo")

# Simulated time runs this much faster than the wall clock inside a visit (a 40 s watch takes 4 s),
# so a few minutes of demo show a busy marketplace without posting events far in the future.
SPEEDUP = 10.0
MAX_STEPS_PER_SESSION = 25
CODE_ENTRY_SHARE = 0.3
ALLIANCE_SIZE = 6
FIRST_MODEL_DEADLINE_S = 300
MAX_RESTARTS = 5
# The trainer holds out the last ~1 minute to judge each candidate (the default, 24 h, suits a
# marketplace with history, not one that started a minute ago).
TRAINER_EVAL_HOURS = "0.01"


class DemoError(RuntimeError):
    """The demo could not set something up (the message says what and how to look)."""


# --- seeding through the API ------------------------------------------------------------------


@dataclass
class DemoMerchant:
    sim_id: str  # the simulator's merchant (`m<i>`): its taste vector drives viewers' reactions
    merchant_id: str
    key: str
    name: str
    category: str
    tags: list[str]
    price_band: str
    format: str
    host: str
    store_ids: list[str] = field(default_factory=list)
    staff_ids: list[str] = field(default_factory=list)
    codes: list[str] = field(default_factory=list)
    room_id: str | None = None
    live_until: float = 0.0
    next_live_at: float = 0.0
    rooms_run: int = 0

    @property
    def headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.key}"}


def _check(response: httpx.Response, what: str) -> Any:
    if response.status_code >= 400:
        raise DemoError(f"{what}: HTTP {response.status_code} {response.text[:500]}")
    return response.json()


STORE_CITIES = ("Hangzhou", "Shanghai", "Guangzhou", "Chengdu", "Beijing", "Shenzhen")


class MarketplaceSeeder:
    """Creates the simulated marketplace's merchants, stores, staff, alliances and codes via HTTP."""

    def __init__(self, client: httpx.AsyncClient, operator_key: str, market: Any, seed: int = 7) -> None:
        self.client = client
        self.operator = {"Authorization": f"Bearer {operator_key}"}
        self.market = market
        self.rng = random.Random(seed)

    async def merchant(self, index: int) -> DemoMerchant:
        sim = self.market.merchants[index]
        name = f"{sim.category.replace('_', ' ').title()} House {index}"
        made = _check(
            await self.client.post(
                "/v1/ops/merchants", json={"name": name, "category": sim.category}, headers=self.operator
            ),
            "create merchant",
        )
        merchant = DemoMerchant(
            sim_id=sim.merchant_id,
            merchant_id=made["merchant_id"],
            key=made["key"],
            name=name,
            category=sim.category,
            tags=list(sim.tags),
            price_band=sim.price_band,
            format=sim.format,
            host=sim.host,
        )
        for s in range(1 + index % 2):
            store = _check(
                await self.client.post(
                    "/v1/stores",
                    json={
                        "name": f"{name} {STORE_CITIES[(index + s) % 6]}",
                        "city": STORE_CITIES[(index + s) % 6],
                    },
                    headers=merchant.headers,
                ),
                "create store",
            )
            merchant.store_ids.append(store["store_id"])
            staff = _check(
                await self.client.post(
                    f"/v1/stores/{store['store_id']}/staff",
                    json={"name": f"Staff {index}-{s}", "role": "host"},
                    headers=merchant.headers,
                ),
                "add staff",
            )
            merchant.staff_ids.append(staff["staff_id"])
        for store_id, staff_id in [(None, None), *zip(merchant.store_ids, merchant.staff_ids, strict=True)]:
            body = {k: v for k, v in (("store_id", store_id), ("staff_id", staff_id)) if v}
            code = _check(
                await self.client.post("/v1/codes", json=body, headers=merchant.headers), "create code"
            )
            merchant.codes.append(code["code"])
        return merchant

    async def alliance(self, members: list[DemoMerchant], number: int) -> str:
        owner, others = members[0], members[1:]
        made = _check(
            await self.client.post(
                "/v1/alliances", json={"name": f"Alliance {number}"}, headers=owner.headers
            ),
            "create alliance",
        )
        alliance_id: str = made["alliance_id"]
        for member in others:
            _check(
                await self.client.post(
                    f"/v1/alliances/{alliance_id}/members",
                    json={"merchant_id": member.merchant_id},
                    headers=owner.headers,
                ),
                "invite member",
            )
            _check(
                await self.client.post(f"/v1/alliances/{alliance_id}/join", json={}, headers=member.headers),
                "join alliance",
            )
        return alliance_id

    async def seed(self, n_merchants: int) -> list[DemoMerchant]:
        merchants: list[DemoMerchant] = []
        for batch_start in range(0, n_merchants, 8):
            batch = range(batch_start, min(n_merchants, batch_start + 8))
            merchants.extend(await asyncio.gather(*(self.merchant(i) for i in batch)))
        # Most merchants join an alliance; a few stay outside, as in a real marketplace.
        in_alliances = merchants[: max(2, int(len(merchants) * 0.8))]
        for number, start in enumerate(range(0, len(in_alliances), ALLIANCE_SIZE), 1):
            group = in_alliances[start : start + ALLIANCE_SIZE]
            if len(group) >= 2:
                await self.alliance(group, number)
        return merchants


class RoomSchedule:
    """Rooms going live and ending over time: each merchant broadcasts for a few minutes, rests, returns."""

    def __init__(
        self,
        client: httpx.AsyncClient,
        merchants: list[DemoMerchant],
        seed: int = 7,
        live_minutes: tuple[float, float] = (3.0, 9.0),
        rest_minutes: tuple[float, float] = (0.5, 3.0),
        live_share_at_start: float = 0.75,
    ) -> None:
        self.client = client
        self.merchants = merchants
        self.rng = random.Random(seed)
        self.live_minutes = live_minutes
        self.rest_minutes = rest_minutes
        now = time.time()
        for m in merchants:
            m.next_live_at = now if self.rng.random() < live_share_at_start else now + self._rest()

    def _live(self) -> float:
        return self.rng.uniform(*self.live_minutes) * 60

    def _rest(self) -> float:
        return self.rng.uniform(*self.rest_minutes) * 60

    async def start_room(self, m: DemoMerchant) -> None:
        m.rooms_run += 1
        body = {
            "title": f"{m.name} live #{m.rooms_run}",
            "category": m.category,
            "tags": m.tags,
            "price_band": m.price_band,
            "format": m.format,
            "host": m.host,
            "stream_url": f"https://cdn.example/live/{m.sim_id}-{m.rooms_run}.m3u8",
        }
        room = _check(await self.client.post("/v1/rooms", json=body, headers=m.headers), "create room")
        _check(
            await self.client.post(f"/v1/rooms/{room['room_id']}/live", json={}, headers=m.headers), "go live"
        )
        m.room_id = room["room_id"]
        m.live_until = time.time() + self._live()

    async def end_room(self, m: DemoMerchant) -> None:
        if m.room_id is None:
            return
        room_id, m.room_id = m.room_id, None
        body = {"replay_url": f"https://cdn.example/vod/{room_id}.m3u8"}
        _check(await self.client.post(f"/v1/rooms/{room_id}/end", json=body, headers=m.headers), "end room")
        m.next_live_at = time.time() + self._rest()

    async def tick(self) -> None:
        now = time.time()
        due = [
            m
            for m in self.merchants
            if (m.room_id is None and m.next_live_at <= now)
            or (m.room_id is not None and m.live_until <= now)
        ]
        for m in due:
            try:
                await (self.start_room(m) if m.room_id is None else self.end_room(m))
            except (DemoError, httpx.HTTPError) as exc:
                log.warning("room schedule: %s", exc)

    async def end_all(self) -> None:
        for m in self.merchants:
            with contextlib.suppress(DemoError, httpx.HTTPError):
                await self.end_room(m)

    def live(self) -> list[DemoMerchant]:
        return [m for m in self.merchants if m.room_id is not None]


@dataclass
class TrafficCounters:
    sessions: int = 0
    code_sessions: int = 0
    rooms_shown: int = 0
    impressions_reported: int = 0
    events_accepted: int = 0
    events_rejected: int = 0
    errors: int = 0
    last_error: str = ""


class ViewerTraffic:
    """Simulated viewers arriving at a steady rate, each swiping through the feed the API serves."""

    def __init__(
        self,
        client: httpx.AsyncClient,
        market: Any,
        merchants: list[DemoMerchant],
        sign: Callable[[str], str],
        viewers_per_second: float = 2.0,
        seed: int = 7,
        speedup: float = SPEEDUP,
    ) -> None:
        self.client = client
        self.market = market
        self.by_merchant = {m.merchant_id: m for m in merchants}
        self.merchants = merchants
        self.sign = sign
        self.rate = viewers_per_second
        self.rng = random.Random(seed)
        self.speedup = speedup
        self.counters = TrafficCounters()
        self._tasks: set[asyncio.Task[None]] = set()

    def _features(self, room: dict[str, Any]) -> Any:
        from ranking.features import RoomFeatures

        m = self.by_merchant.get(room.get("merchant_id", ""))
        if m is None:  # a room of a merchant the demo did not create: judged on its features only
            return RoomFeatures(
                room["room_id"],
                room.get("merchant_id", ""),
                room.get("category", ""),
                list(room.get("tags", [])),
                room.get("price_band", "mid"),
            )
        return RoomFeatures(room["room_id"], m.sim_id, m.category, m.tags, m.price_band, m.format, m.host)

    def _sim_live_until(self, room: dict[str, Any], sim_now_ms: int) -> int | None:
        """When the room ends on the viewer's (sped-up) clock, so nobody watches past the end."""
        m = self.by_merchant.get(room.get("merchant_id", ""))
        if m is None or m.room_id != room.get("room_id") or not m.live_until:
            return None
        return sim_now_ms + int(max(0.0, m.live_until - time.time()) * 1000 * self.speedup)

    def _retime(self, events: list[dict[str, Any]], now_ms: int) -> tuple[list[dict[str, Any]], float]:
        """Events of one visit on the wall clock, compressed by `speedup`; returns (events, visit seconds)."""
        if not events:
            return [], 0.0
        base = int(events[0]["ts"])
        out = []
        for event in events:
            if event["type"] == DEAL_CLAIM:
                continue  # deal claims go through the claim route
            e = {k: v for k, v in event.items() if k not in ("merchant_id", "entry_code_merchant_id")}
            if event["type"] == ENTER:
                e["source"] = "code" if "entry_code_merchant_id" in event else "feed"
            e["ts"] = now_ms + int((int(event["ts"]) - base) / self.speedup)
            out.append(e)
        out.sort(key=lambda e: e["ts"])  # a like at mid-visit comes before later heartbeats
        span = (max(int(e["ts"]) for e in events) - base) / self.speedup / 1000.0
        return out, span

    async def _post_events(self, events: list[dict[str, Any]], headers: dict[str, str]) -> None:
        if not events:
            return
        response = await self.client.post("/v1/events", json=events, headers=headers)
        body = _check(response, "post events")
        self.counters.events_accepted += int(body.get("accepted", 0))
        rejected = body.get("rejected", [])
        self.counters.events_rejected += len(rejected)
        if rejected:
            self.counters.last_error = f"event rejected: {rejected[0]}"

    async def session(self, viewer_index: int) -> None:
        viewer_id = f"v{viewer_index}"
        headers = {"Authorization": f"Bearer {self.sign(viewer_id)}"}
        entry: dict[str, Any] = {}
        coded = [m for m in self.merchants if m.room_id is not None and m.codes]
        code_merchant: DemoMerchant | None = None
        if coded and self.rng.random() < CODE_ENTRY_SHARE:
            code_merchant = self.rng.choice(coded)
            entry["code"] = self.rng.choice(code_merchant.codes)
        started = _check(
            await self.client.post(
                "/v1/sessions", json={"viewer_id": viewer_id, "entry": entry, "count": 5}, headers=headers
            ),
            "start session",
        )
        session_id = started["session_id"]
        self.counters.sessions += 1
        self.counters.code_sessions += 1 if code_merchant else 0
        viewer = self.market.viewer(
            viewer_id,
            session_id=session_id,
            start_ms=int(time.time() * 1000),
            seed=self.rng.randrange(1 << 30),
            entry_code_merchant_id=code_merchant.sim_id if code_merchant else None,
        )
        queue = list(started.get("rooms", []))
        for step in range(MAX_STEPS_PER_SESSION):
            if viewer.done:
                break
            if not queue:
                page = _check(
                    await self.client.get(f"/v1/sessions/{session_id}/feed?count=5", headers=headers),
                    "next feed page",
                )
                queue = list(page.get("rooms", []))
                if not queue:
                    break
            room = queue.pop(0)
            self.counters.rooms_shown += 1
            reaction = viewer.react(
                self._features(room),
                live_until_ms=self._sim_live_until(room, viewer.now_ms),
                position=step,
                boosted=bool(room.get("boosted")),
            )
            events, span = self._retime(reaction, int(time.time() * 1000))
            # The app reports the room it put on screen (the feed only records what it served).
            self.counters.impressions_reported += sum(1 for e in events if e["type"] == IMPRESSION)
            await self._play(events, headers)
            await asyncio.sleep(
                max(0.3, span - (time.time() * 1000 - events[0]["ts"]) / 1000)
                if events
                else min(max(span, 0.3), 8.0)
            )

    async def _play(self, events: list[dict[str, Any]], headers: dict[str, str]) -> None:
        """Post each event when its (compressed) time comes, so presence and viewers-now are real."""
        pending = list(events)
        while pending:
            now_ms = time.time() * 1000
            due = [e for e in pending if e["ts"] <= now_ms + 50]
            if due:
                pending = pending[len(due) :]
                await self._post_events(due, headers)
            else:
                await asyncio.sleep(min(5.0, (pending[0]["ts"] - now_ms) / 1000))

    async def _guarded(self, viewer_index: int) -> None:
        try:
            await self.session(viewer_index)
        except (DemoError, httpx.HTTPError) as exc:
            self.counters.errors += 1
            self.counters.last_error = str(exc)[:300]

    async def run(self, stop: asyncio.Event) -> None:
        """Start sessions at `rate` per second (Poisson arrivals) until `stop` is set."""
        n_viewers = self.market.config.n_viewers
        while not stop.is_set():
            task = asyncio.create_task(self._guarded(self.rng.randrange(n_viewers)))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), self.rng.expovariate(self.rate))
        await self.drain()

    async def drain(self, timeout: float = 10.0) -> None:
        if self._tasks:
            _, pending = await asyncio.wait(set(self._tasks), timeout=timeout)
            for task in pending:
                task.cancel()


DEMO_EXPERIMENT = {
    "name": "popularity-push",
    "variants": [
        {"name": "control", "weight": 0.5, "config": {}},
        {"name": "popular", "weight": 0.5, "config": {"w_popularity": 0.8, "w_freshness": 0.05}},
    ],
}


async def start_experiment(client: httpx.AsyncClient, operator_key: str) -> str | None:
    """An A/B test on the blend weights, so the console's experiment view fills with real numbers."""
    response = await client.post(
        "/v1/ops/experiments", json=DEMO_EXPERIMENT, headers={"Authorization": f"Bearer {operator_key}"}
    )
    if response.status_code != 201:
        log.warning("demo experiment not started: %s", response.text[:300])
        return None
    experiment_id: str = response.json()["experiment_id"]
    return experiment_id


async def promote_first_model(client: httpx.AsyncClient, operator_key: str) -> str | None:
    """The version serving now; promotes the newest trained model when none is promoted yet.

    The trainer promotes a candidate by itself when it is not worse than the serving model; the
    very first one may still need an operator's word (e.g. trained with --no-promote), so the demo
    gives it, as an operator would in the console.
    """
    headers = {"Authorization": f"Bearer {operator_key}"}
    response = await client.get("/v1/ops/models", headers=headers)
    if response.status_code != 200:
        return None
    models = response.json().get("models") or []
    promoted = [m for m in models if m.get("status") == "promoted"]
    if promoted:
        return str(promoted[0]["version"])
    if not models:
        return None
    version = str(models[0]["version"])
    answer = await client.post(f"/v1/ops/models/{version}/promote", json={}, headers=headers)
    return version if answer.status_code == 200 else None


# --- processes --------------------------------------------------------------------------------


def _port_free(host: str, port: int) -> bool:
    with socket.socket() as s:
        try:
            s.bind((host, port))
            return True
        except OSError:
            return False


class DemoProcesses:
    """The api, worker and trainer subprocesses, each in its own session so Ctrl-C reaches only us."""

    def __init__(self, env: dict[str, str], log_dir: Path) -> None:
        self.env = env
        self.log_dir = log_dir
        self.children: dict[str, subprocess.Popen[bytes]] = {}
        self.commands: dict[str, tuple[str, ...]] = {}
        self.restarts: dict[str, int] = {}

    def start(self, name: str, *args: str) -> None:
        self.commands[name] = args
        self.log_dir.mkdir(parents=True, exist_ok=True)
        with (self.log_dir / f"{name}.log").open("ab") as out:
            self.children[name] = subprocess.Popen(
                [sys.executable, "-m", "roomfeed.cli", *args],
                cwd=REPO_ROOT,
                env=self.env,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )

    def dead(self) -> list[str]:
        return [name for name, p in self.children.items() if p.poll() is not None]

    def restart(self, name: str) -> int:
        """Start a process that exited again; returns how many times it has been restarted."""
        self.restarts[name] = self.restarts.get(name, 0) + 1
        self.start(name, *self.commands[name])
        return self.restarts[name]

    def stop(self, timeout: float = 20.0) -> None:
        for process in self.children.values():
            if process.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    process.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + timeout
        for process in self.children.values():
            try:
                process.wait(max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()


def add_demo_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--minutes", type=float, default=0.0, help="stop by itself after N minutes (0: run until Ctrl-C)"
    )
    parser.add_argument(
        "--viewers-per-second", type=float, default=2.0, help="simulated viewers arriving per second"
    )
    parser.add_argument("--merchants", type=int, default=36, help="merchants to create")
    parser.add_argument(
        "--port", type=int, default=0, help="API port (default: settings.port, or a free one)"
    )
    parser.add_argument("--train-every", default="1m", help="how often the trainer retrains (e.g. 2m)")
    parser.add_argument("--seed", type=int, default=7)


def demo_command(settings: Settings, args: argparse.Namespace) -> int:
    from roomfeed.logs import configure_logging

    configure_logging("WARNING")
    try:
        return asyncio.run(_run(settings, args))
    except DemoError as exc:
        print(f"\ndemo failed: {exc}", file=sys.stderr)
        return 1


def _say(text: str) -> None:
    print(text, flush=True)


async def _run(settings: Settings, args: argparse.Namespace) -> int:
    from devtools import services
    from devtools.processes import ServiceError
    from roomfeed.auth import create_key, sign_viewer_token
    from roomfeed.db import create_pool, migrate
    from simulator import Marketplace

    started = time.monotonic()
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)

    if not all(external_services().values()):
        _say("starting local PostgreSQL, Redis and Kafka (first time: a minute or two) …")
        try:
            urls = await asyncio.to_thread(services.up, settings)
        except ServiceError as exc:
            raise DemoError(f"could not start the local services:\n{exc}") from None
        _say("services: " + ", ".join(f"{k} {v}" for k, v in urls.items()))
    await migrate(settings.database_url)
    pool = await create_pool(settings, min_size=1)
    try:
        _, operator_key = await create_key(pool, "operator", None, "demo")
    finally:
        await pool.close()

    port = args.port or settings.port
    if not _port_free(settings.host, port):
        with socket.socket() as s:
            s.bind((settings.host, 0))
            port = s.getsockname()[1]
    base_url = f"http://{settings.host}:{port}"
    env = {
        **os.environ,
        "DATABASE_URL": settings.database_url,
        "REDIS_URL": settings.redis_url,
        "KAFKA_BOOTSTRAP": settings.kafka_bootstrap,
        "ROOMFEED_KAFKA_PREFIX": settings.kafka_prefix,
        "ROOMFEED_DATA_DIR": str(settings.data_dir),
        "ROOMFEED_PUBLIC_BASE_URL": base_url,
        "ROOMFEED_LOG_LEVEL": "WARNING",
    }
    log_dir = settings.data_dir / "demo"
    processes = DemoProcesses(env, log_dir)
    processes.start("api", "serve", "--host", settings.host, "--port", str(port), "--no-migrate")
    processes.start("worker", "worker")
    processes.start(
        "trainer", "train", "--every", args.train_every, "--eval-hours", TRAINER_EVAL_HOURS, "--days", "2"
    )
    _say(f"started api ({base_url}), worker and trainer; logs in {log_dir}/")
    code = 0
    try:
        code = await _drive(
            settings,
            args,
            base_url,
            operator_key,
            processes,
            stop,
            started,
            lambda v: sign_viewer_token(settings.viewer_token_secret, v),
            Marketplace,
        )
    finally:
        _say("stopping api, worker and trainer …")
        await asyncio.to_thread(processes.stop)
        _say("stopped. PostgreSQL, Redis and Kafka keep running; `roomfeed services down` stops them.")
    return code


async def _wait_ready(client: httpx.AsyncClient, processes: DemoProcesses, stop: asyncio.Event) -> None:
    deadline = time.monotonic() + 90
    while not stop.is_set():
        if "api" in processes.dead():
            raise DemoError(f"the api process exited; see {processes.log_dir / 'api.log'}")
        with contextlib.suppress(httpx.HTTPError):
            if (await client.get("/readyz")).json().get("status") == "ready":
                return
        if time.monotonic() > deadline:
            raise DemoError(f"the api is not ready after 90 s; see {processes.log_dir / 'api.log'}")
        await asyncio.sleep(0.5)


async def _drive(
    settings: Settings,
    args: argparse.Namespace,
    base_url: str,
    operator_key: str,
    processes: DemoProcesses,
    stop: asyncio.Event,
    started: float,
    sign: Callable[[str], str],
    marketplace: Any,
) -> int:
    limits = httpx.Limits(max_connections=64, max_keepalive_connections=64)
    async with httpx.AsyncClient(base_url=base_url, timeout=15, limits=limits) as client:
        await _wait_ready(client, processes, stop)
        if stop.is_set():
            return 0
        # Viewers swipe as the app does: every served room plays; a skip is a short stay (docs/simulator.md).
        market = marketplace(
            seed=args.seed, n_merchants=max(args.merchants, 40), n_viewers=20_000, days=1, interface="swipe"
        )
        _say(f"seeding {args.merchants} merchants with stores, staff, codes and alliances through the API …")
        merchants = await MarketplaceSeeder(client, operator_key, market, args.seed).seed(args.merchants)
        await start_experiment(client, operator_key)
        schedule = RoomSchedule(client, merchants, args.seed)
        await schedule.tick()
        traffic = ViewerTraffic(client, market, merchants, sign, args.viewers_per_second, args.seed)
        _say(
            "\n"
            f"  console:       {base_url}/console\n"
            f"  operator key:  {operator_key}\n"
            f"  merchant key:  {merchants[0].key}   ({merchants[0].name}, {merchants[0].merchant_id})\n"
            f"  API docs:      {base_url}/docs\n"
            f"\n  {len(schedule.live())} rooms live; {args.viewers_per_second:g} viewers/s arriving. "
            f"Ctrl-C stops the demo.\n"
        )
        traffic_task = asyncio.create_task(traffic.run(stop))
        deadline = time.monotonic() + args.minutes * 60 if args.minutes > 0 else None
        serving: str | None = None
        last_report = 0.0
        try:
            while not stop.is_set():
                if deadline is not None and time.monotonic() >= deadline:
                    break
                for name in processes.dead():
                    # The API is what everything talks to; the worker and trainer recover by restarting.
                    if name == "api" or processes.restarts.get(name, 0) >= MAX_RESTARTS:
                        raise DemoError(f"{name} exited; see {processes.log_dir / (name + '.log')}")
                    count = processes.restart(name)
                    _say(
                        f"{name} exited; restarted it ({count}/{MAX_RESTARTS}); see {processes.log_dir}/{name}.log"
                    )
                await schedule.tick()
                if serving is None:
                    with contextlib.suppress(httpx.HTTPError):
                        serving = await promote_first_model(client, operator_key)
                    if serving is not None:
                        _say(f"model {serving} trained and serving after {time.monotonic() - started:.0f} s")
                    elif time.monotonic() - started > FIRST_MODEL_DEADLINE_S and last_report == 0.0:
                        _say(
                            f"no model yet after {FIRST_MODEL_DEADLINE_S} s; see {processes.log_dir}/trainer.log"
                        )
                if time.monotonic() - last_report >= 30:
                    last_report = time.monotonic()
                    c = traffic.counters
                    _say(
                        f"[{time.monotonic() - started:5.0f} s] rooms live {len(schedule.live())}, sessions "
                        f"{c.sessions} ({c.code_sessions} via codes), rooms shown {c.rooms_shown}, events "
                        f"{c.events_accepted} accepted / {c.events_rejected} rejected, errors {c.errors}"
                        + (f" (last: {c.last_error})" if c.last_error else "")
                    )
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), 2.0)
        finally:
            stop.set()
            await traffic_task
            await schedule.end_all()
    return 0
