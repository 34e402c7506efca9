"""A whole roomfeed deployment on private servers, for fault injection: PostgreSQL, Redis and an
Apache Kafka broker of its own (tests/support.PrivateServers), two `roomfeed serve` API processes
and one `roomfeed worker`, all real processes that a scenario can kill -9 and start again.

The stack also drives traffic the way the apps do — viewers posting event batches (retrying the
same event ids until a 202) and viewers swiping through the feed (failing over to the other API
process when one does not answer) — and measures what the fault suite reports: accepted events
lost, effects counted twice, feed 5xx, time to full recovery.
"""

from __future__ import annotations

import asyncio
import contextlib
import secrets
import shutil
import signal
import subprocess
import sys
import time
from collections import Counter
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import asyncpg
import httpx
from redis.asyncio import Redis
from redis.exceptions import RedisError

from devtools.kafka import KafkaBroker, KafkaCluster
from devtools.redis import RedisClusterServers
from events.live_stats import LiveStats
from roomfeed.auth import create_key, sign_viewer_token
from roomfeed.db import migrate
from roomfeed.redis_client import create_redis
from roomfeed.settings import REPO_ROOT, Settings
from tests.support import PrivateServers, free_port, process_env

KINDS = ("impression", "enter", "like", "leave")
BATCH = 40


class RoomfeedProcess:
    """`roomfeed serve` or `roomfeed worker` as a subprocess of the test, with its log in a file."""

    def __init__(self, name: str, args: list[str], env: dict[str, str], log_dir: Path) -> None:
        self.name, self.args, self.env = name, args, env
        self.log_path = log_dir / f"{name}.log"
        self.proc: subprocess.Popen[bytes] | None = None
        self.log_from = 0  # where this start's lines begin in the log

    def start(self) -> None:
        self.log_from = self.log_path.stat().st_size if self.log_path.exists() else 0
        with self.log_path.open("ab") as out:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "roomfeed.cli", *self.args],
                cwd=REPO_ROOT,
                env=self.env,
                stdout=out,
                stderr=subprocess.STDOUT,
            )

    def kill(self) -> None:
        """SIGKILL: no shutdown hook runs, in-flight batches and requests are cut."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(10)

    def terminate(self) -> None:
        """SIGTERM: it finishes what it is doing and exits; `stop` waits for that."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()

    def stop(self) -> None:
        self.terminate()
        if self.proc is not None and self.proc.poll() is None:
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.kill()

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def logged_since_start(self, text: str) -> bool:
        with contextlib.suppress(FileNotFoundError), self.log_path.open("rb") as log:
            log.seek(self.log_from)
            return text.encode() in log.read()
        return False

    def tail(self, lines: int = 30) -> str:
        with contextlib.suppress(FileNotFoundError):
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        return ""


def stop_all(processes: list[RoomfeedProcess]) -> None:
    """SIGTERM to every process at once, then wait for each (SIGKILL after 15 s): a teardown waits
    for the slowest, not for the sum of them."""
    for process in processes:
        process.terminate()
    for process in processes:
        with contextlib.suppress(subprocess.TimeoutExpired):
            process.stop()


@dataclass
class Traffic:
    """What the clients saw. `accepted` holds event ids that got a 202."""

    accepted: set[str] = field(default_factory=set)
    ingest_statuses: Counter[int] = field(default_factory=Counter)
    feed_statuses: Counter[int] = field(default_factory=Counter)
    feed_degraded: int = 0
    connection_failovers: int = 0
    # Verified orders: order id → (merchant id, viewer id) for every order that got a 201 or 200.
    orders: dict[str, tuple[str, str]] = field(default_factory=dict)
    order_statuses: Counter[int] = field(default_factory=Counter)

    @property
    def feed_5xx(self) -> int:
        return sum(n for status, n in self.feed_statuses.items() if status >= 500)


class FaultStack:
    def __init__(
        self,
        base: Settings,
        work_dir: Path,
        api_processes: int = 2,
        *,
        workers: int = 1,
        kafka_brokers: int = 1,
        redis_masters: int = 1,
    ) -> None:
        """`kafka_brokers` > 1 runs a KRaft cluster (topics replicated min(3, brokers) times, two
        in-sync replicas required); `redis_masters` > 1 a Redis Cluster of that many masters with a
        replica each (REDIS_URL redis+cluster://); `workers` worker processes share the consumer groups."""
        self.api_processes = api_processes
        self.worker_processes = workers
        self.servers = PrivateServers(base)
        self.work_dir = work_dir
        self.pg = self.servers.postgres()
        self.redis_server = self.servers.redis()
        self.redis_cluster: RedisClusterServers | None = (
            self.servers.redis_cluster(redis_masters, 1) if redis_masters > 1 else None
        )
        self.redis_masters = redis_masters
        self.kafka: KafkaBroker | KafkaCluster = (
            self.servers.kafka() if kafka_brokers == 1 else self.servers.kafka_cluster(kafka_brokers)
        )
        self.replication = min(3, kafka_brokers)
        self.settings = base
        self.api: list[RoomfeedProcess] = []
        self.api_urls: list[str] = []
        self.worker: RoomfeedProcess | None = None
        self.workers: list[RoomfeedProcess] = []
        self.operator_key = ""
        self.pool: asyncpg.Pool | None = None
        self.redis: Redis | None = None
        # Per merchant of the current scenario: its order-system key, a product (id, price) and a code.
        self.shops: list[dict[str, Any]] = []

    # --- lifecycle ---------------------------------------------------------------------------

    async def start(self) -> None:
        # Every start finishes before a failure is raised: a broker still starting in its thread
        # when close() ran would outlive the run (its pid file not written yet when it was killed).
        outcomes = await asyncio.gather(
            asyncio.to_thread(self._start_server, self.pg),
            asyncio.to_thread(self._start_server, self.redis_cluster or self.redis_server),
            asyncio.to_thread(self._start_server, self.kafka),
            return_exceptions=True,
        )
        for outcome in outcomes:
            if isinstance(outcome, BaseException):
                raise outcome
        self.settings = replace(
            self.settings,
            database_url=self.pg.url(),
            redis_url=(self.redis_cluster or self.redis_server).url(),
            kafka_bootstrap=self.kafka.bootstrap(),
            kafka_prefix=f"fs{secrets.token_hex(3)}.",
            kafka_partitions=3,
            kafka_replication_factor=self.replication,
            kafka_min_insync_replicas=min(2, self.replication),
            data_dir=self.work_dir / "data",
        )
        await migrate(self.settings.database_url)
        self.pool = await asyncpg.create_pool(self.settings.database_url, min_size=0, max_size=4)
        self.redis = create_redis(self.settings)  # the cluster client on a redis+cluster:// URL
        self.operator_key = (await create_key(self.pool, "operator", label="faults"))[1]
        env = process_env(self.settings)
        for n in range(self.api_processes):
            port = free_port()
            self.api.append(
                RoomfeedProcess(f"api{n}", ["serve", "--port", str(port), "--no-migrate"], env, self.work_dir)
            )
            self.api_urls.append(f"http://127.0.0.1:{port}")
        self.workers = [
            # INFO: the stack waits for the worker's "worker running" line
            RoomfeedProcess(
                f"worker{n}" if n else "worker",
                ["worker", "--no-migrate"],
                {**env, "ROOMFEED_LOG_LEVEL": "INFO"},
                self.work_dir,
            )
            for n in range(self.worker_processes)
        ]
        self.worker = self.workers[0]
        for process in self.api:
            process.start()
        await asyncio.gather(*(self.wait_api_ready(i) for i in range(len(self.api))))
        for worker in self.workers:
            worker.start()
        # A scenario kills a service a few seconds into its traffic: a worker still importing on a
        # loaded host would meet the outage at its start instead of during its batches.
        await asyncio.gather(*(self.wait_worker_running(worker) for worker in self.workers))

    async def wait_worker_running(self, worker: RoomfeedProcess, timeout: float = 120.0) -> None:
        started = time.monotonic()
        while not worker.logged_since_start('"worker running"'):
            assert worker.alive(), worker.tail()
            assert time.monotonic() - started < timeout, (
                f"{worker.name} not running in {timeout}s:\n{worker.tail()}"
            )
            await asyncio.sleep(0.2)

    @staticmethod
    def _start_server(server: Any) -> None:
        server.start()
        server.wait_ready()

    async def restart_server(self, server: Any) -> None:
        await asyncio.to_thread(self._start_server, server)

    async def wait_api_ready(self, index: int, timeout: float = 90.0) -> float:
        started = time.monotonic()
        async with httpx.AsyncClient(timeout=2) as client:
            while time.monotonic() - started < timeout:
                assert self.api[index].alive(), self.api[index].tail()
                with contextlib.suppress(httpx.HTTPError):
                    if (await client.get(f"{self.api_urls[index]}/readyz")).json().get("status") == "ready":
                        return time.monotonic() - started
                await asyncio.sleep(0.2)
        raise AssertionError(f"api{index} not ready in {timeout}s:\n{self.api[index].tail()}")

    async def close(self) -> None:
        """Stop everything the stack started and remove its folder, whatever fails on the way (a
        timeout firing in a teardown included): the servers are killed in any case."""
        try:
            stop_all([*self.api, *self.workers])
            if self.redis is not None:
                with contextlib.suppress(Exception):
                    await self.redis.aclose()
            if self.pool is not None:
                with contextlib.suppress(Exception):
                    await asyncio.wait_for(self.pool.close(), 5)
        finally:
            self.servers.close()
            shutil.rmtree(self.work_dir, ignore_errors=True)

    # --- the market --------------------------------------------------------------------------

    async def live_rooms(
        self, client: httpx.AsyncClient, merchants: int = 3, rooms_each: int = 2
    ) -> list[str]:
        """Fresh merchants with live rooms, through the API (each scenario counts its own rooms)."""
        rooms = []
        base = self.api_urls[0]
        self.shops = []
        operator = {"Authorization": f"Bearer {self.operator_key}"}
        for _ in range(merchants):
            r = await client.post(
                f"{base}/v1/ops/merchants",
                json={"name": f"fault shop {secrets.token_hex(2)}"},
                headers=operator,
            )
            assert r.status_code == 201, r.text
            merchant_id = r.json()["merchant_id"]
            headers = {"Authorization": f"Bearer {r.json()['key']}"}
            product = await client.post(
                f"{base}/v1/products",
                json={"title": "serum", "price": 89.5, "currency": "CNY"},
                headers=headers,
            )
            code = await client.post(f"{base}/v1/codes", json={}, headers=headers)
            key = await client.post(f"{base}/v1/ops/merchants/{merchant_id}/order-keys", headers=operator)
            assert product.status_code == code.status_code == key.status_code == 201, (product.text, key.text)
            self.shops.append(
                {
                    "merchant_id": merchant_id,
                    "order_key": key.json()["key"],
                    "product_id": product.json()["product_id"],
                    "code": code.json()["code"],
                }
            )
            for k in range(rooms_each):
                r = await client.post(
                    f"{base}/v1/rooms",
                    headers=headers,
                    json={
                        "title": f"fault room {k}",
                        "category": ("beauty", "food", "home")[k % 3],
                        "stream_url": "https://live.example/f.m3u8",
                    },
                )
                assert r.status_code == 201, r.text
                room_id = r.json()["room_id"]
                assert (
                    await client.post(f"{base}/v1/rooms/{room_id}/live", headers=headers)
                ).status_code == 200
                rooms.append(room_id)
        return rooms

    def viewer_headers(self, viewer: str) -> dict[str, str]:
        return {"Authorization": f"Bearer {sign_viewer_token(self.settings.viewer_token_secret, viewer)}"}

    # --- traffic -----------------------------------------------------------------------------

    async def _request(
        self, client: httpx.AsyncClient, traffic: Traffic, method: str, path: str, **kwargs: Any
    ) -> httpx.Response:
        """Like an app behind a load balancer: try one API process, fail over to the other when it is gone."""
        start = secrets.randbelow(len(self.api_urls))
        while True:
            for i in range(len(self.api_urls)):
                url = self.api_urls[(start + i) % len(self.api_urls)]
                try:
                    return await client.request(method, url + path, **kwargs)
                except (
                    httpx.ConnectError,
                    httpx.ConnectTimeout,  # a process too busy to accept (a load balancer moves on too)
                    httpx.RemoteProtocolError,
                    httpx.ReadError,
                    httpx.ReadTimeout,
                ):
                    traffic.connection_failovers += 1
            await asyncio.sleep(0.2)

    async def ingest(
        self,
        client: httpx.AsyncClient,
        traffic: Traffic,
        rooms: list[str],
        stop: asyncio.Event,
        tag: str,
        pause: float = 0.05,
    ) -> None:
        """One viewer after another posts a batch; a batch is retried with the same ids until accepted."""
        n = 0
        while not stop.is_set():
            viewer = f"fv_{tag}_{n}"
            headers = self.viewer_headers(viewer)
            now = int(time.time() * 1000)
            batch = []
            for i in range(BATCH):
                kind = KINDS[i % len(KINDS)]
                event = {
                    "event_id": f"ev_{tag}_{n}_{i}",
                    "type": kind,
                    "viewer_id": viewer,
                    "session_id": f"ses_{viewer}",
                    "room_id": rooms[(n + i) % len(rooms)],
                    "ts": now - 500 + i,
                }
                if kind == "leave":
                    event["dwell_ms"] = 700 * (i % 9)
                batch.append(event)
            while True:
                r = await self._request(client, traffic, "POST", "/v1/events", json=batch, headers=headers)
                traffic.ingest_statuses[r.status_code] += 1
                if r.status_code == 202:
                    assert r.json()["accepted"] == BATCH, r.text
                    traffic.accepted.update(str(e["event_id"]) for e in batch)
                    break
                assert r.status_code in (429, 503), r.text
                await asyncio.sleep(0.3)
            n += 1
            await asyncio.sleep(pause)

    async def order(self, client: httpx.AsyncClient, traffic: Traffic, stop: asyncio.Event, tag: str) -> None:
        """A viewer lands from a merchant's code (a session), then that merchant's order system reports
        its order, retried with the same order id until recorded (201, or 200 when a retry finds it)."""
        n = 0
        while not stop.is_set():
            shop = self.shops[n % len(self.shops)]
            viewer = f"ov_{tag}_{n}"
            while True:
                r = await self._request(
                    client,
                    traffic,
                    "POST",
                    "/v1/sessions",
                    headers=self.viewer_headers(viewer),
                    json={"viewer_id": viewer, "entry": {"code": shop["code"]}, "count": 1},
                )
                if r.status_code == 201:
                    break
                await asyncio.sleep(0.3)
            order = {
                "order_id": f"o_{tag}_{n}",
                "product_id": shop["product_id"],
                "quantity": 1 + n % 3,
                "unit_price": 89.5,
                "currency": "CNY",
                "ordered_at": int(time.time() * 1000),
                "viewer_id": viewer,
            }
            headers = {"Authorization": f"Bearer {shop['order_key']}"}
            while True:
                r = await self._request(client, traffic, "POST", "/v1/orders", json=order, headers=headers)
                traffic.order_statuses[r.status_code] += 1
                if r.status_code in (200, 201):
                    traffic.orders[order["order_id"]] = (shop["merchant_id"], viewer)
                    break
                assert r.status_code in (429, 500, 503), r.text
                await asyncio.sleep(0.3)
            n += 1
            await asyncio.sleep(0.1)

    async def order_figures(self, orders: dict[str, tuple[str, str]]) -> dict[str, int]:
        """Of the accepted orders: recorded once (lost: not recorded), and attributed once when the
        viewer's attribution was recorded (attributed_lost / _duplicated)."""
        assert self.pool is not None
        ids = list(orders)
        recorded = {
            r["order_id"]: r["n"]
            for r in await self.pool.fetch(
                """SELECT order_id, count(*) AS n FROM order_entries
                   WHERE kind = 'sale' AND order_id = ANY($1::text[]) GROUP BY order_id""",
                ids,
            )
        }
        attributed = {
            r["order_id"]: r["n"]
            for r in await self.pool.fetch(
                """SELECT order_id, count(*) AS n FROM attributed_order_entries
                   WHERE kind = 'sale' AND order_id = ANY($1::text[]) GROUP BY order_id""",
                ids,
            )
        }
        with_attribution = {
            r["viewer_id"]
            for r in await self.pool.fetch(
                "SELECT DISTINCT viewer_id FROM attributions WHERE viewer_id = ANY($1::text[])",
                [viewer for _, viewer in orders.values()],
            )
        }
        expected = [o for o, (_, viewer) in orders.items() if viewer in with_attribution]
        return {
            "orders_lost": sum(1 for o in ids if o not in recorded),
            "orders_duplicated": sum(n - 1 for n in recorded.values())
            + sum(n - 1 for n in attributed.values()),
            "orders_unattributed": sum(1 for o in expected if o not in attributed),
        }

    async def swipe(self, client: httpx.AsyncClient, traffic: Traffic, stop: asyncio.Event, tag: str) -> None:
        """A viewer swipes: a session, then feed pages; a new session when the feed runs dry."""
        n = 0
        while not stop.is_set():
            viewer = f"sw_{tag}_{n}"
            headers = self.viewer_headers(viewer)
            r = await self._request(
                client,
                traffic,
                "POST",
                "/v1/sessions",
                headers=headers,
                json={"viewer_id": viewer, "entry": {}, "count": 3},
            )
            traffic.feed_statuses[r.status_code] += 1
            n += 1
            if r.status_code != 201:
                await asyncio.sleep(0.2)
                continue
            session_id = r.json()["session_id"]
            for _ in range(4):
                if stop.is_set():
                    break
                r = await self._request(
                    client, traffic, "GET", f"/v1/sessions/{session_id}/feed?count=3", headers=headers
                )
                traffic.feed_statuses[r.status_code] += 1
                if r.status_code == 200 and r.json().get("degraded"):
                    traffic.feed_degraded += 1
                await asyncio.sleep(0.05)

    # --- measurements ------------------------------------------------------------------------

    async def archived(self, rooms: list[str]) -> tuple[set[str], int]:
        """(event ids in the archive for these rooms, rows beyond one per event id)."""
        assert self.pool is not None
        rows = await self.pool.fetch(
            "SELECT event_id, count(*) AS n FROM interactions WHERE room_id = ANY($1) GROUP BY event_id",
            rooms,
        )
        return {r["event_id"] for r in rows}, sum(r["n"] - 1 for r in rows)

    async def live_counts(self, rooms: list[str]) -> dict[str, int]:
        assert self.redis is not None
        per_room = (await LiveStats(self.redis).rooms(rooms)).values()
        return {
            "enter": sum(s.enters_1h for s in per_room),
            "impression": sum(s.impressions_1h for s in per_room),
            "like": sum(s.likes_1h for s in per_room),
            "leave": sum(s.leaves_1h for s in per_room),
        }

    async def recount(self, rooms: list[str]) -> dict[str, int]:
        """Per kind, the archive's count for these rooms (ingest's events and the feed's impressions)."""
        assert self.pool is not None
        rows = await self.pool.fetch(
            "SELECT type, count(*) AS n FROM interactions WHERE room_id = ANY($1) AND type = ANY($2) GROUP BY type",
            rooms,
            list(KINDS),
        )
        return {**dict.fromkeys(KINDS, 0), **{r["type"]: r["n"] for r in rows}}

    async def settle(
        self,
        rooms: list[str],
        accepted: set[str],
        timeout: float = 120.0,
        pending_orders: dict[str, tuple[str, str]] | None = None,
    ) -> dict[str, Any]:
        """Wait until everything accepted is archived once and the live stats equal a recount of the
        archive, or until `timeout`; the figures."""
        started = time.monotonic()
        archived: set[str] = set()
        extra_rows = 0
        live: dict[str, int] = {}
        expected: dict[str, int] = {}
        orders: dict[str, int] = {}
        while True:
            try:
                archived, extra_rows = await self.archived(rooms)
                expected = await self.recount(rooms)
                live = await self.live_counts(rooms)
            except (OSError, asyncpg.PostgresError, RedisError, asyncpg.InterfaceError):
                pass
            try:
                orders = await self.order_figures(pending_orders) if pending_orders else {}
            except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError):
                orders = {"orders_lost": -1}
            if (
                expected and accepted <= archived and live == expected and not any(orders.values())
            ) or time.monotonic() - started > timeout:
                break
            await asyncio.sleep(0.25)
        over = sum(max(0, live.get(k, 0) - v) for k, v in expected.items())
        under = sum(max(0, v - live.get(k, 0)) for k, v in expected.items())
        return {
            "settle_s": time.monotonic() - started,
            "lost": len(accepted - archived),
            "duplicated": extra_rows + over,
            "live_missing": under,
            "live": live,
            "expected": expected,
            "orders_lost": orders.get("orders_lost", 0),
            "orders_duplicated": orders.get("orders_duplicated", 0),
            "orders_unattributed": orders.get("orders_unattributed", 0),
        }
