"""JSON log lines carry the fields bound in their context (request id, event id) and nothing else's."""

from __future__ import annotations

import asyncio
import io
import logging

import orjson

from roomfeed.logs import JsonFormatter, bind, bound, context, unbind


def _capture() -> tuple[logging.Logger, io.StringIO]:
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(JsonFormatter())
    logger = logging.getLogger("tests.logs")
    logger.handlers[:] = [handler]
    logger.propagate = False
    logger.setLevel(logging.DEBUG)
    return logger, stream


def _read(stream: io.StringIO) -> list[dict[str, object]]:
    return [orjson.loads(line) for line in stream.getvalue().splitlines()]


async def test_concurrent_requests_keep_their_own_ids() -> None:
    log, stream = _capture()

    async def request(request_id: str) -> None:
        token = bind(request_id=request_id)
        try:
            for step in range(3):
                await asyncio.sleep(0)
                log.info("step %d", step)
            # a task the request starts inherits the id; a thread it hands work to as well
            await asyncio.create_task(asyncio.sleep(0))
            await asyncio.to_thread(log.info, "in a thread")
        finally:
            unbind(token)

    await asyncio.gather(*(request(f"r{i}") for i in range(5)))
    log.info("outside")
    lines = _read(stream)
    assert len(lines) == 5 * 4 + 1
    for i in range(5):
        mine = [line for line in lines if line.get("request_id") == f"r{i}"]
        assert len(mine) == 4
    assert "request_id" not in lines[-1]
    assert context() == {}


def test_event_ids_nest_inside_a_batch_and_secrets_are_redacted() -> None:
    log, stream = _capture()
    with bound(sink="archive", batch="t:0@1-9"):
        log.warning("batch")
        with bound(event_id="e-7"):
            log.warning("one record", extra={"fields": {"token": "s3cr3t"}})
        log.warning("batch again")
    batch, record, again = _read(stream)
    assert batch["batch"] == record["batch"] == again["batch"] == "t:0@1-9"
    assert record["event_id"] == "e-7" and "event_id" not in again
    assert record["token"] == "[redacted]"
