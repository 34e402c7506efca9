"""roomfeed.heap: long-lived objects frozen out of full collections, cyclic garbage still freed each period."""

from __future__ import annotations

import asyncio
import gc

from roomfeed.heap import frozen


class _Cycle:
    def __init__(self) -> None:
        self.me = self


async def test_the_heap_is_frozen_while_the_app_runs_and_garbage_is_freed_each_period() -> None:
    gc.unfreeze()
    async with frozen(period_s=0.2, first_s=0.1):
        assert gc.get_freeze_count() > 0  # everything alive at start-up is out of the collector's walk
        cycle = _Cycle()
        gc.freeze()  # as if the cycle had lived through a refreeze
        del cycle
        frozen_with_garbage = gc.get_freeze_count()
        await asyncio.sleep(0.35)  # a refreeze: thaw, collect, freeze again
        assert not any(isinstance(o, _Cycle) for o in gc.get_objects())
        assert 0 < gc.get_freeze_count() < frozen_with_garbage
    assert gc.get_freeze_count() == 0
