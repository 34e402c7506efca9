"""`roomfeed rebuild`: rebuild the rooms domain's Redis state (live index, deal gates) from PostgreSQL.

Composable: `rebuild_live_index(pool, redis)` and `DealBook.reseed_gates()` are plain functions other
domains' rebuild steps can call alongside (live stats are the events domain's to rebuild).
"""

from __future__ import annotations

import argparse
import time

from roomfeed.db import create_pool, migrate
from roomfeed.redis_client import create_redis
from roomfeed.settings import Settings
from rooms.deals import DealBook
from rooms.live_index import rebuild_live_index


def add_rebuild_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--no-migrate", action="store_true", help="do not apply pending migrations first")


async def rebuild_command(settings: Settings, args: argparse.Namespace) -> int:
    if not getattr(args, "no_migrate", False):
        await migrate(settings.database_url)
    pool = await create_pool(settings, min_size=1)
    redis = create_redis(settings)
    try:
        started = time.perf_counter()
        live = await rebuild_live_index(pool, redis)
        gates = await DealBook(pool, redis).reseed_gates()
        print(
            f"live index: {live} live room(s); deal gates: {gates} running deal(s) "
            f"({time.perf_counter() - started:.2f}s)"
        )
    finally:
        await redis.aclose()
        await pool.close()
    return 0
