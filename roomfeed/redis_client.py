"""Redis: one asyncio client (hiredis parser) per process, created at start-up and closed at shutdown."""

from __future__ import annotations

from redis.asyncio import Redis

from roomfeed.settings import Settings


def create_redis(settings: Settings) -> Redis:
    # Short timeouts: the feed degrades (serves from its cached live index) rather than waiting on Redis.
    return Redis.from_url(
        settings.redis_url,
        socket_connect_timeout=0.5,
        socket_timeout=1.0,
        health_check_interval=15,
        decode_responses=False,
    )
