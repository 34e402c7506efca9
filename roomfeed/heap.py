"""Garbage-collector pauses kept off the request path.

A full (generation 2) collection walks every container object the process holds, ~120,000 in an
API process serving 10,000 live rooms and a model of 100,000 viewers: 35-55 ms in which no
request moves, every few seconds under load; at 500 feed requests/s those pauses set the p99.
After start-up the long-lived objects are frozen (`gc.freeze`: collections skip them). Every
`period_s` they are thawed, one full collection frees whatever cyclic garbage they held, and what
survives is frozen again: one such pause per period instead of one every few seconds, and no
garbage kept longer than a period.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
import time
from collections.abc import AsyncIterator

from roomfeed.tasks import cancel_and_wait

log = logging.getLogger("roomfeed.heap")

PERIOD_S = 600.0
FIRST_S = 30.0  # the first refreeze, once start-up's lazy loads have settled


async def keep_frozen(period_s: float = PERIOD_S, first_s: float = FIRST_S) -> None:
    """Refreeze every period, forever (a task `frozen` owns; the first freeze is its caller's)."""
    delay = first_s
    while True:
        await asyncio.sleep(delay)
        delay = period_s
        started = time.perf_counter()
        gc.unfreeze()
        freed = gc.collect()
        gc.freeze()
        log.info(
            "heap refrozen",
            extra={
                "fields": {
                    "freed": freed,
                    "frozen": gc.get_freeze_count(),
                    "pause_ms": round((time.perf_counter() - started) * 1000, 1),
                }
            },
        )


@contextlib.asynccontextmanager
async def frozen(period_s: float = PERIOD_S, first_s: float = FIRST_S) -> AsyncIterator[None]:
    """`keep_frozen` for the duration of the block (the app's lifespan, after the domains started)."""
    gc.freeze()
    task = asyncio.create_task(keep_frozen(period_s, first_s), name="heap-freeze")
    try:
        yield
    finally:
        await cancel_and_wait(task)
        gc.unfreeze()
