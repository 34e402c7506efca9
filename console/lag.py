"""Consumer lag per sink for the dashboard: the events domain's broker-side measurement, summed per group.

The events domain owns how lag is measured (`events.lag.ConsumerLag`: end offsets minus each sink
group's committed offsets, read from the broker). The console only sums it per group, strips the
deployment prefix and caches the answer for a few seconds, so a polling dashboard never loads
the broker.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

CACHE_SECONDS = 5.0


class LagBySink:
    """`await by_group()` → {sink group without the deployment prefix: messages not yet consumed}."""

    def __init__(self, measurer: Any, prefix: str) -> None:
        self.measurer = measurer  # events.lag.ConsumerLag (measure() → {(group, topic, partition): lag})
        self.prefix = prefix
        self._cached: tuple[float, dict[str, int]] | None = None
        self._lock = asyncio.Lock()

    async def by_group(self) -> dict[str, int]:
        async with self._lock:
            now = time.monotonic()
            if self._cached is not None and self._cached[0] > now:
                return self._cached[1]
            try:
                measured = await self.measurer.measure()
            except Exception:
                await self.measurer.close()  # reconnect next time (broker restarted, metadata stale)
                raise
            totals: dict[str, int] = {}
            for (group, _topic, _partition), lag in measured.items():
                name = group[len(self.prefix) :] if group.startswith(self.prefix) else group
                totals[name] = totals.get(name, 0) + int(lag)
            self._cached = (now + CACHE_SECONDS, totals)
            return totals

    async def close(self) -> None:
        await self.measurer.close()
