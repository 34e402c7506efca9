"""Redis: one asyncio client (hiredis parser) per process, created at start-up and closed at shutdown.

REDIS_URL picks the deployment: `redis://` or `rediss://` (TLS) for one server (or a managed primary
with failover behind one address); `redis+cluster://host:port` or `rediss+cluster://` for a Redis
Cluster, where any node's address will do (the client learns the others and follows slot moves and
failovers). On a cluster every multi-key command and script must keep its keys on one slot: the
events domain's keys share the hash tag `{ev}` (events/keys.py).
"""

from __future__ import annotations

from typing import cast

from redis.asyncio import BlockingConnectionPool, Redis
from redis.asyncio.cluster import RedisCluster

from roomfeed.settings import Settings

# Connections per process. A burst beyond it waits up to POOL_WAIT_SECONDS for a free connection
# instead of failing at once (redis-py's default pool raises MaxConnectionsError when full).
POOL_SIZE = 256
POOL_WAIT_SECONDS = 1.0
CLUSTER_SCHEMES = {"redis+cluster": "redis", "rediss+cluster": "rediss"}


def cluster_url(url: str) -> str | None:
    """The plain URL of a Redis Cluster URL (`redis+cluster://` → `redis://`), or None for one server."""
    scheme, sep, rest = url.partition("://")
    plain = CLUSTER_SCHEMES.get(scheme)
    return f"{plain}{sep}{rest}" if plain else None


def create_redis(settings: Settings) -> Redis:
    # Short timeouts: the feed degrades (serves from its cached live index) rather than waiting on Redis.
    plain = cluster_url(settings.redis_url)
    if plain is not None:
        cluster = RedisCluster.from_url(
            plain,
            max_connections=POOL_SIZE,
            socket_connect_timeout=0.5,
            socket_timeout=1.0,
            decode_responses=False,
        )
        # The commands roomfeed sends exist on both clients with the same signatures; the cluster
        # client routes each by its keys' slot.
        return cast(Redis, cluster)
    pool = BlockingConnectionPool.from_url(
        settings.redis_url,
        max_connections=POOL_SIZE,
        timeout=POOL_WAIT_SECONDS,
        socket_connect_timeout=0.5,
        socket_timeout=1.0,
        health_check_interval=15,
        decode_responses=False,
    )
    return Redis(connection_pool=pool)
