"""Erasure of a viewer (`DELETE /v1/ops/viewers/{viewer_id}`, operators): every domain forgets it.
The feed composes the others, so it holds the orchestration (`ViewerErasure`); its own part is the
viewer's sessions (PostgreSQL and Redis, with their served sets and pages) and blocks.

In one PostgreSQL transaction: the interaction log (events), sessions and blocks (feed), attributions
(alliance) are deleted; verified orders, attributed order entries, deal claims, bookings and the
alliance's visit evidence stay for the merchants' books, without the viewer (NULL) or under a random
pseudonym that links to nothing; the tombstone (`erased_viewers`) is written with them, so consumers
drop a replay of the viewer's older records. After the commit: the viewer's Redis state (recent
visits, sessions, blocks, attribution, deal holdings) and its vector in every stored model (the API
processes reload the rewritten promoted model within their watch interval). Idempotent.
"""

from __future__ import annotations

import secrets
from typing import Any

import asyncpg
from redis.asyncio import Redis

from alliance import erasure as alliance_erasure
from events import erasure as events_erasure
from feed.pages import pages_key
from feed.sessions import SESSION_TTL_S, blocks_key, served_key, session_key
from ranking.registry import ModelRegistry
from ranking.viewer_state import ViewerStateStore
from rooms import erasure as rooms_erasure


async def forget_viewer(conn: asyncpg.Connection, viewer_id: str) -> tuple[dict[str, int], list[str]]:
    """Delete the viewer's sessions and blocks; returns the counts and the session ids (for Redis)."""
    sessions = [
        r["session_id"]
        for r in await conn.fetch(
            "DELETE FROM feed_sessions WHERE viewer_id = $1 RETURNING session_id", viewer_id
        )
    ]
    blocks = await conn.execute("DELETE FROM feed_blocks WHERE viewer_id = $1", viewer_id)
    return {"sessions": len(sessions), "blocks": int(blocks.split()[-1])}, sessions


# What an erased session's hash says while API processes may still hold the session in memory (a
# fallback for a Redis that lost it): an owner no token names, so every process answers 404.
ERASED_OWNER = "-erased-"


async def forget_viewer_live(redis: Redis, viewer_id: str, session_ids: list[str]) -> int:
    keys = [blocks_key(viewer_id)]
    for session_id in session_ids:
        keys += [session_key(session_id), served_key(session_id), pages_key(session_id)]
    # No MULTI: the keys span Redis Cluster slots (a session's keys share one, the blocks another).
    # Each key's commands still run in order on its node: deleted, then the session marked erased.
    async with redis.pipeline(transaction=False) as pipe:
        for key in keys:
            pipe.delete(key)
        for session_id in session_ids:
            pipe.hset(session_key(session_id), "viewer_id", ERASED_OWNER)
            pipe.expire(session_key(session_id), SESSION_TTL_S)
        replies = await pipe.execute()
    return sum(int(reply) for reply in replies[: len(keys)])


class ViewerErasure:
    def __init__(self, pool: asyncpg.Pool, redis: Redis, registry: ModelRegistry) -> None:
        self.pool = pool
        self.redis = redis
        self.registry = registry

    async def erase(self, viewer_id: str, by: str) -> dict[str, Any]:
        pseudonym = f"erased_{secrets.token_hex(8)}"
        async with self.pool.acquire() as conn, conn.transaction():
            report: dict[str, Any] = await events_erasure.forget_viewer(conn, viewer_id, by)
            feed_counts, sessions = await forget_viewer(conn, viewer_id)
            rooms_counts, deals = await rooms_erasure.forget_viewer(conn, viewer_id, pseudonym)
            report |= (
                feed_counts | rooms_counts | await alliance_erasure.forget_viewer(conn, viewer_id, pseudonym)
            )
        report["redis_keys"] = (
            await events_erasure.forget_viewer_live(self.redis, viewer_id)
            + await forget_viewer_live(self.redis, viewer_id, sessions)
            + await alliance_erasure.forget_viewer_live(self.redis, viewer_id)
            + await rooms_erasure.forget_viewer_live(self.redis, viewer_id, deals)
            + await ViewerStateStore(self.redis).forget(viewer_id)
        )
        report["models_rewritten"] = await self.registry.forget_viewer(viewer_id)
        return {"viewer_id": viewer_id, "erased": True, "removed": report}
