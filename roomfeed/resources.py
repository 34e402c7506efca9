"""The connections a process holds: created once at start-up, closed at shutdown, passed in.

The PostgreSQL pool connects lazily and the Kafka producer starts in the background with retries,
so an API process comes up (and `/readyz` says what is missing) while a dependency is down.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from dataclasses import dataclass, field

import asyncpg
from aiokafka import AIOKafkaProducer
from redis.asyncio import Redis

from roomfeed.db import pool_of
from roomfeed.kafka import make_producer
from roomfeed.leader import Leases
from roomfeed.redis_client import cluster_url, create_redis
from roomfeed.redis_lane import RedisLane
from roomfeed.settings import Settings

log = logging.getLogger("roomfeed.resources")


@dataclass
class Resources:
    settings: Settings
    pool: asyncpg.Pool
    redis: Redis
    producer: AIOKafkaProducer
    # The hot path's pipelined connection (roomfeed.redis_lane); None on a Redis Cluster.
    redis_lane: RedisLane | None
    leases: Leases  # once-per-cluster loops ask it before each round (roomfeed.leader)
    producer_ready: asyncio.Event = field(default_factory=asyncio.Event)
    _producer_task: asyncio.Task[None] | None = None

    @classmethod
    def create(cls, settings: Settings) -> Resources:
        """Every connection object, none connected yet: domain services are built around them first,
        then `start()` connects (the composition root does both, in that order)."""
        return cls(
            settings=settings,
            pool=pool_of(settings),
            redis=create_redis(settings),
            producer=make_producer(settings),
            # One pipelined connection speaks to one server: on a Redis Cluster the hot path uses
            # redis-py's cluster client instead (it routes each command by slot).
            redis_lane=RedisLane(settings.redis_url) if cluster_url(settings.redis_url) is None else None,
            leases=Leases(settings.database_url),
        )

    async def start(self, *, kafka: bool = True) -> None:
        """Open the PostgreSQL pool (lazily connecting: it comes up while PostgreSQL is down) and
        start the Kafka producer in the background, retrying until the broker answers."""
        await self.pool
        if kafka:
            self._producer_task = asyncio.create_task(self._start_producer())

    @classmethod
    async def open(cls, settings: Settings, *, kafka: bool = True) -> Resources:
        resources = cls.create(settings)
        await resources.start(kafka=kafka)
        return resources

    async def _start_producer(self) -> None:
        delay = 0.2
        while True:
            try:
                await self.producer.start()
                self.producer_ready.set()
                return
            except Exception as exc:
                log.warning("kafka producer not started yet: %s", exc)
                with contextlib.suppress(Exception):
                    await self.producer.stop()
                self.producer = make_producer(self.settings)
                await asyncio.sleep(delay)
                delay = min(delay * 2, 5.0)

    async def wait_for_kafka(self, timeout: float) -> bool:
        try:
            await asyncio.wait_for(self.producer_ready.wait(), timeout)
            return True
        except TimeoutError:
            return False

    async def close(self) -> None:
        await self.leases.close()
        if self._producer_task is not None:
            self._producer_task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._producer_task
        if self.producer_ready.is_set():
            with contextlib.suppress(Exception):
                await self.producer.stop()
        with contextlib.suppress(Exception):
            await self.redis.aclose(close_connection_pool=True)
        if self.redis_lane is not None:
            await self.redis_lane.close()
        with contextlib.suppress(Exception):
            await asyncio.wait_for(self.pool.close(), 5)
