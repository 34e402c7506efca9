"""Redis: one asyncio client (hiredis parser) per process, created at start-up and closed at shutdown."""

from __future__ import annotations

from redis.asyncio import BlockingConnectionPool, Redis

from roomfeed.settings import Settings

# Connections per process. A burst beyond it waits up to POOL_WAIT_SECONDS for a free connection
# instead of failing at once (redis-py's default pool raises MaxConnectionsError when full).
POOL_SIZE = 256
POOL_WAIT_SECONDS = 1.0


def create_redis(settings: Settings) -> Redis:
    # Short timeouts: the feed degrades (serves from its cached live index) rather than waiting on Redis.
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
