"""The fault suite's deployment: one FaultStack (private PostgreSQL, Redis, Kafka; two API processes and
a worker) for the whole folder, so five scenarios share one start-up."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from roomfeed.settings import Settings
from tests.faults.stack import FaultStack
from tests.support import world_readable_tempdir


@pytest.fixture(scope="session")
async def fault_stack(base_settings: Settings) -> AsyncIterator[FaultStack]:
    stack = FaultStack(base_settings, Path(world_readable_tempdir("rf-faults-")))
    try:
        await stack.start()
        yield stack
    finally:
        await stack.close()
