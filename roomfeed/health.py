"""Health a scheduler can use: liveness, readiness, and each dependency's status on its own.

- Liveness (`/healthz`): the process answers. A restart is the cure only when this fails.
- Readiness (`/readyz`): the process can serve a useful answer, degraded or not. It is ready once
  its start-up is done and until shutdown begins, whatever PostgreSQL, Redis or Kafka say: the feed
  serves from its cached live index with Redis or PostgreSQL down and says `degraded`, so taking
  every pod out of the load balancer at once (each sees the same dead Redis) would turn a degraded
  feed into no feed. The body names each dependency (`ok`/`down`) and says `ready` or `degraded`.
- Metrics: `roomfeed_dependency_up{dependency}` (1/0) is set by every check (probes and scrapes),
  so an alert can name the dependency without reading probe bodies.
"""

from __future__ import annotations

import asyncio
from typing import Any

from prometheus_client import Gauge

from roomfeed.kafka import kafka_answers
from roomfeed.resources import Resources
from roomfeed.settings import SERVICES

DEPENDENCIES = SERVICES
CHECK_TIMEOUT_S = 1.0

DEPENDENCY_UP = Gauge(
    "roomfeed_dependency_up",
    "1 when the dependency answered this process's last check, else 0",
    ["dependency"],
    multiprocess_mode="liveall",
)


async def _postgres(resources: Resources) -> bool:
    try:
        await asyncio.wait_for(resources.pool.fetchval("SELECT 1"), CHECK_TIMEOUT_S)
        return True
    except Exception:
        return False


async def _redis(resources: Resources) -> bool:
    try:
        return bool(await asyncio.wait_for(resources.redis.ping(), CHECK_TIMEOUT_S))
    except Exception:
        return False


async def _kafka(resources: Resources) -> bool:
    return resources.producer_ready.is_set() and await kafka_answers(resources.producer, CHECK_TIMEOUT_S)


async def check_dependencies(resources: Resources) -> dict[str, bool]:
    """Each dependency checked at once (at most CHECK_TIMEOUT_S in all); the gauges follow."""
    results = await asyncio.gather(_postgres(resources), _redis(resources), _kafka(resources))
    checks = dict(zip(DEPENDENCIES, results, strict=True))
    for name, ok in checks.items():
        DEPENDENCY_UP.labels(name).set(1 if ok else 0)
    return checks


def readiness_body(checks: dict[str, bool]) -> dict[str, Any]:
    return {
        "status": "ready" if all(checks.values()) else "degraded",
        "checks": {name: ("ok" if ok else "down") for name, ok in checks.items()},
    }
