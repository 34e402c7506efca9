"""Which service a failure came from: one line for the CLI instead of a traceback.

`unreachable(exc, settings)` looks through an exception, its causes and its groups for a connection
failure of PostgreSQL (asyncpg), Redis (redis-py) or Kafka (aiokafka) and names the service and its
URL (password hidden). A plain `OSError` (connection refused, no route, DNS) or timeout is placed by
the library whose code raised it, read off the traceback; anything else is not an outage (None),
and the caller lets it through as the bug it is.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass
from pathlib import PurePath
from typing import TypeVar

from roomfeed.settings import Settings

log = logging.getLogger(__name__)
T = TypeVar("T")

POSTGRES, REDIS, KAFKA = "PostgreSQL", "Redis", "Kafka"
# The exit status of a command that found a service down (sysexits.h EX_UNAVAILABLE).
EXIT_UNAVAILABLE = 69

_LIBRARY = {"asyncpg": POSTGRES, "redis": REDIS, "aiokafka": KAFKA, "kafka": KAFKA}


@dataclass(frozen=True)
class Unreachable:
    service: str
    url: str
    reason: str

    def line(self) -> str:
        return f"{self.service} at {self.url} is unreachable: {self.reason}"


def hide_password(url: str) -> str:
    """postgresql://user:secret@host/db → postgresql://user:***@host/db."""
    return re.sub(r"(://[^:/@]*:)[^@/]*@", r"\1***@", url)


def _chain(exc: BaseException) -> Iterator[BaseException]:
    seen: set[int] = set()
    todo = [exc]
    while todo:
        current = todo.pop(0)
        if id(current) in seen:
            continue
        seen.add(id(current))
        yield current
        if isinstance(current, BaseExceptionGroup):
            todo.extend(current.exceptions)
        for linked in (current.__cause__, current.__context__):
            if linked is not None:
                todo.append(linked)


def _service_by_type(exc: BaseException) -> str | None:
    import asyncpg
    from aiokafka import errors as kafka_errors
    from redis import exceptions as redis_errors

    if isinstance(exc, redis_errors.ConnectionError | redis_errors.TimeoutError):
        return REDIS
    if isinstance(
        exc,
        kafka_errors.KafkaConnectionError
        | kafka_errors.NodeNotReadyError
        | kafka_errors.KafkaTimeoutError
        | kafka_errors.RequestTimedOutError,
    ):
        return KAFKA
    if isinstance(
        exc,
        asyncpg.exceptions.CannotConnectNowError
        | asyncpg.exceptions.ConnectionDoesNotExistError
        | asyncpg.exceptions.InvalidAuthorizationSpecificationError
        | asyncpg.exceptions.InvalidCatalogNameError
        | asyncpg.exceptions.TooManyConnectionsError,
    ):
        return POSTGRES
    return None


def _service_by_traceback(exc: BaseException) -> str | None:
    """The service whose client library raised a plain OSError or timeout (innermost frame wins)."""
    if not isinstance(exc, OSError | TimeoutError):
        return None
    found = None
    tb = exc.__traceback__
    while tb is not None:
        parts = PurePath(tb.tb_frame.f_code.co_filename).parts
        for library, service in _LIBRARY.items():
            if library in parts[:-1] and "site-packages" in parts:
                found = service
        tb = tb.tb_next
    return found


def unreachable(exc: BaseException, settings: Settings) -> Unreachable | None:
    """The service `exc` says is down, or None when it is not a connection failure."""
    urls = {
        POSTGRES: hide_password(settings.database_url),
        REDIS: hide_password(settings.redis_url),
        KAFKA: settings.kafka_bootstrap,
    }
    for current in _chain(exc):
        service = _service_by_type(current) or _service_by_traceback(current)
        if service is not None:
            reason = str(current).strip() or type(current).__name__
            return Unreachable(service, urls[service], reason.splitlines()[0][:300])
    return None


async def patiently(
    attempt: Callable[[], Awaitable[T]], settings: Settings, stop: asyncio.Event, max_delay: float = 5.0
) -> T | None:
    """`attempt()`, retried with backoff while the service it needs is unreachable (a process may start
    while its database restarts: it waits instead of exiting); None when `stop` is set first. A failure
    that is not an outage is raised at once."""
    delay = 0.5
    while not stop.is_set():
        try:
            return await attempt()
        except Exception as exc:
            down = unreachable(exc, settings)
            if down is None:
                raise
            log.warning("%s; retrying in %.1f s", down.line(), delay)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), delay)
        delay = min(delay * 2, max_delay)
    return None
