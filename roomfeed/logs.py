"""JSON log lines from every process (api, worker, trainer, CLI), each carrying what it works on.

One line per record on stderr: `{"ts", "level", "logger", "msg", ...}`, plus

- the fields bound in the current context: `request_id` for everything an HTTP request logs (set by
  `roomfeed.observability.RequestMiddleware`), `event_id` (or a batch's `batch`) for what the worker
  logs while it handles a Kafka record; bound with `bound(...)` or `bind(...)`/`unbind(...)`, they
  live in a context variable, so they follow the request into the tasks it starts and never leak
  into another request;
- a record's own fields: `log.info("...", extra={"fields": {...}})`.

Secrets are redacted by field name whatever a caller passes.
"""

from __future__ import annotations

import logging
import sys
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from contextvars import ContextVar, Token
from types import MappingProxyType
from typing import Any, TextIO

import orjson

_EMPTY: Mapping[str, Any] = MappingProxyType({})
_context: ContextVar[Mapping[str, Any]] = ContextVar("roomfeed_log_context", default=_EMPTY)

# Never log these, whatever a handler puts in `extra` or binds.
_SECRET_KEYS = {"authorization", "key", "token", "password", "secret"}


def bind(**fields: Any) -> Token[Mapping[str, Any]]:
    """Add fields to every line logged from here on in this context; `unbind(token)` undoes it."""
    return _context.set(MappingProxyType({**_context.get(), **fields}))


def unbind(token: Token[Mapping[str, Any]]) -> None:
    _context.reset(token)


@contextmanager
def bound(**fields: Any) -> Iterator[None]:
    """`with bound(event_id=...):` every line logged inside carries the fields."""
    token = bind(**fields)
    try:
        yield
    finally:
        _context.reset(token)


def context() -> Mapping[str, Any]:
    """The fields bound in the current context."""
    return _context.get()


def _clean(fields: Mapping[str, Any]) -> dict[str, Any]:
    return {k: ("[redacted]" if k.lower() in _SECRET_KEYS else v) for k, v in fields.items()}


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "ts": round(record.created, 3),
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": record.getMessage(),
        }
        bound_fields = _context.get()
        if bound_fields:
            entry.update(_clean(bound_fields))
        extra = getattr(record, "fields", None)
        if isinstance(extra, dict):
            entry.update(_clean(extra))
        if record.exc_info:
            entry["exc"] = self.formatException(record.exc_info)
        return orjson.dumps(entry, default=str).decode()


def configure_logging(level: str = "INFO", stream: TextIO | None = None) -> None:
    """JSON lines on stderr for this process (every CLI verb calls it once, first)."""
    handler = logging.StreamHandler(stream or sys.stderr)
    handler.setFormatter(JsonFormatter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    logging.getLogger("aiokafka").setLevel(logging.WARNING)
    logging.getLogger("uvicorn.access").disabled = True
    logging.captureWarnings(True)
