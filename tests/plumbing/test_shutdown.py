"""Shutdown is bounded: a part of the API process that never stops does not keep the others running."""

from __future__ import annotations

import asyncio
from typing import Any

import roomfeed.assembly as assembly


async def test_a_part_that_does_not_stop_does_not_keep_the_others_running(monkeypatch: Any) -> None:
    """Services.stop bounds each part's stop (PART_STOP_S): the parts started before it still stop."""
    monkeypatch.setattr(assembly, "PART_STOP_S", 0.2)
    stopped: list[str] = []

    class Part:
        def __init__(self, name: str, hangs: bool) -> None:
            self.name, self.hangs = name, hangs

        async def start(self) -> None:
            return None

        async def stop(self) -> None:
            if self.hangs:
                await asyncio.Event().wait()
            stopped.append(self.name)

    services = assembly.Services(None, None, None, None, None, None)  # type: ignore[arg-type]  # only stop() runs
    services._started = [Part("rooms", False), Part("feed", True), Part("console", False)]
    await asyncio.wait_for(services.stop(), 5)
    assert stopped == ["console", "rooms"]
