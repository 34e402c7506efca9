"""roomfeed.tasks.cancel_and_wait: a background task is ended, and an error it ended with is not hidden."""

from __future__ import annotations

import asyncio

import pytest

from roomfeed.tasks import cancel_and_wait


async def test_a_running_task_is_cancelled_and_awaited() -> None:
    task = asyncio.create_task(asyncio.sleep(60))
    await asyncio.sleep(0)
    await cancel_and_wait(task)
    assert task.cancelled()


async def test_none_is_nothing_to_do() -> None:
    await cancel_and_wait(None)


async def test_an_error_the_task_ended_with_is_raised() -> None:
    async def fails() -> None:
        raise ValueError("broken loop")

    task = asyncio.create_task(fails())
    await asyncio.sleep(0)
    with pytest.raises(ValueError):
        await cancel_and_wait(task)
