"""Once per cluster: leader leases for the loops that must run in one process of a deployment.

Some background loops change shared state and must run once however many API processes there are
(the room relay's sweep, the console's metric sampler, the alliance scheduler's ticks); others
serve their own process and run in every one (the ranking-config and model watchers, the heat
refresh). A loop of the first kind asks `Leases.holds(name)` before each round and skips the round
when another process leads.

A lease is a PostgreSQL session advisory lock, held on one connection per process (outside the
request pool, so a busy pool never starves it, and one connection for every lease of the process).
The lock lives exactly as long as that session: when the process dies (kill -9, OOM, node lost),
its connection closes and PostgreSQL releases every lock it held; the next process to ask takes it
over on its next round. A holder checks its session on every round (a round trip on the lease
connection) and gives the lease up when the session is gone, so two leaders overlap at most one
round of the old one, and the loops guarded here are idempotent about that (a sweep republishes
idempotently, a sample is keyed by its instant, a tick refills from the elapsed time).

`roomfeed_leader{lease}` is 1 in the process that leads, `roomfeed_leader_rounds_total{lease}`
counts the rounds it ran: summed over processes, each lease's gauge is 1.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
from collections.abc import Awaitable, Callable

import asyncpg
from prometheus_client import Counter, Gauge

log = logging.getLogger("roomfeed.leader")

LEADER = Gauge(
    "roomfeed_leader", "1 while this process holds the lease", ["lease"], multiprocess_mode="liveall"
)
ROUNDS = Counter("roomfeed_leader_rounds_total", "rounds this process ran as the lease's holder", ["lease"])

# The leases of roomfeed's once-per-cluster loops (names are also their metrics' labels).
ROOM_RELAY = "rooms.relay"
CONSOLE_SAMPLER = "console.sampler"
ALLIANCE_SCHEDULER = "alliance.scheduler"
LEASES = (ROOM_RELAY, CONSOLE_SAMPLER, ALLIANCE_SCHEDULER)  # the API process's
TRAINER = "ranking.trainer"  # one trainer at a time (`roomfeed train`)

CONNECT_TIMEOUT_S = 2.0

# What a once-per-cluster loop is handed: asked before each round, True when this process leads.
Leadership = Callable[[], Awaitable[bool]]


async def always_lead() -> bool:
    """The leadership of a loop run on its own (a test, a single-process tool)."""
    return True


def lock_key(name: str) -> int:
    """A stable signed 64-bit advisory-lock key for a lease name (its own namespace: 'roomfeed:lease:')."""
    digest = hashlib.sha256(f"roomfeed:lease:{name}".encode()).digest()
    return int.from_bytes(digest[:8], "big", signed=True)


class Leases:
    """The leases one process holds, on one PostgreSQL connection of its own (opened when first asked)."""

    def __init__(self, database_url: str) -> None:
        self.database_url = database_url
        self._conn: asyncpg.Connection | None = None
        self._held: set[str] = set()
        self._lock = asyncio.Lock()  # one statement at a time on the connection

    async def holds(self, name: str) -> bool:
        """True when this process leads `name` now (taking the lease when it is free). Never raises:
        PostgreSQL unreachable means not leading (and nobody else can take it meanwhile either)."""
        async with self._lock:
            try:
                conn = await self._connection()
                if name in self._held:
                    await conn.fetchval(
                        "SELECT 1", timeout=CONNECT_TIMEOUT_S
                    )  # the session, and so the lock, is still there
                    ROUNDS.labels(name).inc()
                    return True
                if await conn.fetchval(
                    "SELECT pg_try_advisory_lock($1)", lock_key(name), timeout=CONNECT_TIMEOUT_S
                ):
                    self._held.add(name)
                    LEADER.labels(name).set(1)
                    ROUNDS.labels(name).inc()
                    log.info("lease taken", extra={"fields": {"lease": name}})
                    return True
                LEADER.labels(name).set(0)
                return False
            except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError, TimeoutError) as exc:
                await self._lost(exc)
                return False

    def leadership(self, name: str) -> Leadership:
        async def leads() -> bool:
            return await self.holds(name)

        return leads

    async def _connection(self) -> asyncpg.Connection:
        if self._conn is None or self._conn.is_closed():
            if self._held:
                await self._lost(None)
            self._conn = await asyncpg.connect(self.database_url, timeout=CONNECT_TIMEOUT_S)
        return self._conn

    def _release(self) -> asyncpg.Connection | None:
        """Forget every lease and the session that held them; returns that session's connection."""
        for name in self._held:
            LEADER.labels(name).set(0)
        self._held.clear()
        conn, self._conn = self._conn, None
        return conn

    async def _lost(self, exc: BaseException | None) -> None:
        """The session is gone (or unusable): whatever it held is released by PostgreSQL."""
        if self._held:
            log.warning("leases lost", extra={"fields": {"leases": sorted(self._held), "why": str(exc)}})
        conn = self._release()
        if conn is not None:
            with contextlib.suppress(Exception):
                conn.terminate()

    async def close(self) -> None:
        """Give every lease up at once (a clean shutdown hands them over without waiting for a timeout)."""
        async with self._lock:
            conn = self._release()
            if conn is not None:
                with contextlib.suppress(Exception):
                    await asyncio.wait_for(conn.close(), 2)
