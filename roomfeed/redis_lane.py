"""A lean pipelined Redis connection for the hot path: the feed's two round trips per page, each a
`RoundTrip` whose parts their owners declare (`Part`: the commands it adds, how it reads its replies).

redis-py's asyncio client costs ~85 µs of CPU per command on this machine (connection-pool
checkout, the retry wrapper, observability hooks, command packing in Python); a page made two
pipelines of ~8 commands, about a fifth of the page's CPU. A lane is one connection per process
on which every caller writes its commands at once and awaits its own replies: Redis answers in
order, so replies are matched to waiters first in, first out, and hiredis parses them (~30 µs a
round trip). redis-py stays the client for everything else.

Errors look like redis-py's (`redis.exceptions.ConnectionError`, `TimeoutError`, `ResponseError`),
so callers degrade the same way. A waiter that times out leaves its place in the queue; the late
reply is dropped when it comes; a connection that answers nothing for two timeouts is dropped.
When the connection drops, every waiter fails at once and the next call reconnects; for
`retry_after_s` after a failed connect, calls fail without trying (a feed under load does not
stampede a Redis that is down). Scripts go by EVALSHA and fall back to EVAL once when Redis does
not know them (a restart, SCRIPT FLUSH).

URLs are redis-py's: `redis://`, `unix://` and `rediss://` (TLS, as managed Redis services require),
with the same query options for TLS (`ssl_ca_certs`, `ssl_certfile`, `ssl_keyfile`, `ssl_cert_reqs`
none|optional|required, `ssl_check_hostname`), so one REDIS_URL configures both clients.
"""

from __future__ import annotations

import asyncio
import hashlib
import ssl
import time
from collections import deque
from typing import Any, Generic, Protocol, TypeVar, cast
from urllib.parse import parse_qs, unquote, urlparse

import hiredis
from hiredis import pack_command as pack
from redis.asyncio import Redis
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import NoScriptError, ResponseError
from redis.exceptions import TimeoutError as RedisTimeoutError


class _Batch:
    """The replies one caller waits for: `count` of them, in order."""

    __slots__ = ("future", "count", "replies", "sent_at")

    def __init__(self, future: asyncio.Future[list[Any]], count: int, sent_at: float) -> None:
        self.future = future
        self.count = count
        self.replies: list[Any] = []
        self.sent_at = sent_at


class _Protocol(asyncio.Protocol):
    def __init__(self, lane: RedisLane) -> None:
        self.lane = lane
        self.reader = hiredis.Reader()
        self.waiting: deque[_Batch] = deque()
        self.transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        self.reader.feed(data)
        waiting = self.waiting
        while True:
            try:
                reply = self.reader.gets()
            except hiredis.ProtocolError as exc:
                self._fail(RedisConnectionError(f"Redis protocol error: {exc}"))
                if self.transport is not None:
                    self.transport.close()
                return
            if reply is False:
                return
            if not waiting:  # nothing asked for this (cannot happen unless Redis misbehaves)
                continue
            batch = waiting[0]
            batch.replies.append(reply)
            if len(batch.replies) == batch.count:
                waiting.popleft()
                if not batch.future.done():  # a caller that timed out or was cancelled: dropped
                    batch.future.set_result(batch.replies)

    def connection_lost(self, exc: Exception | None) -> None:
        self._fail(RedisConnectionError(f"connection to Redis lost: {exc or 'closed'}"))
        if self.lane._protocol is self:
            self.lane._protocol = None

    def _fail(self, exc: Exception) -> None:
        while self.waiting:
            batch = self.waiting.popleft()
            if not batch.future.done():
                batch.future.set_exception(exc)


class Script:
    """A Lua script sent by its SHA-1 (the text only when Redis does not have it)."""

    def __init__(self, text: str) -> None:
        self.text = text
        self.sha = hashlib.sha1(text.encode()).hexdigest()


class RedisLane:
    def __init__(
        self, url: str, *, connect_timeout: float = 0.5, timeout: float = 1.0, retry_after_s: float = 0.2
    ) -> None:
        parsed = urlparse(url)
        if parsed.scheme not in ("redis", "rediss", "unix"):
            raise ValueError(f"a Redis lane speaks redis://, rediss:// or unix://, not {parsed.scheme}://")
        self.unix_path = parsed.path if parsed.scheme == "unix" else None
        self.host = parsed.hostname or "127.0.0.1"
        self.port = parsed.port or 6379
        query = parse_qs(parsed.query)
        self.tls = tls_context(query) if parsed.scheme == "rediss" else None
        db = query.get("db", [""])[0] if parsed.scheme == "unix" else (parsed.path or "/").lstrip("/")
        self.db = int(db or 0)
        self.username = unquote(parsed.username) if parsed.username else None
        self.password = unquote(parsed.password) if parsed.password else None
        self.connect_timeout = connect_timeout
        self.timeout = timeout
        self.retry_after_s = retry_after_s
        self._protocol: _Protocol | None = None
        self._connecting: asyncio.Future[_Protocol] | None = None
        self._failed_at = -1e9

    async def _connection(self) -> _Protocol:
        protocol = self._protocol
        if protocol is not None:
            return protocol
        if self._connecting is None:
            if time.monotonic() - self._failed_at < self.retry_after_s:
                raise RedisConnectionError("Redis unreachable (failed moments ago)")
            self._connecting = asyncio.ensure_future(self._connect())
        connecting = self._connecting
        try:
            return await asyncio.shield(connecting)
        finally:
            if connecting.done() and self._connecting is connecting:
                self._connecting = None

    async def _connect(self) -> _Protocol:
        loop = asyncio.get_running_loop()
        try:
            async with asyncio.timeout(self.connect_timeout):
                if self.unix_path is not None:
                    _, protocol = await loop.create_unix_connection(lambda: _Protocol(self), self.unix_path)
                else:
                    _, protocol = await loop.create_connection(
                        lambda: _Protocol(self),
                        self.host,
                        self.port,
                        ssl=self.tls,
                        server_hostname=self.host if self.tls is not None else None,
                    )
                setup: list[tuple[Any, ...]] = []
                if self.password is not None:
                    setup.append(
                        ("AUTH", self.username, self.password) if self.username else ("AUTH", self.password)
                    )
                if self.db:
                    setup.append(("SELECT", self.db))
                for reply in await self._send(protocol, setup) if setup else []:
                    if isinstance(reply, hiredis.ReplyError):
                        protocol.transport.close()  # type: ignore[union-attr]
                        raise RedisConnectionError(f"Redis refused the connection set-up: {reply}")
        except (OSError, TimeoutError) as exc:
            self._failed_at = time.monotonic()
            raise RedisConnectionError(f"cannot connect to Redis: {exc or 'timed out'}") from exc
        except RedisConnectionError:
            self._failed_at = time.monotonic()
            raise
        self._protocol = protocol
        return protocol

    async def _send(self, protocol: _Protocol, commands: list[tuple[Any, ...]]) -> list[Any]:
        transport = protocol.transport
        if transport is None or transport.is_closing():
            raise RedisConnectionError("connection to Redis closed")
        loop = asyncio.get_running_loop()
        now = loop.time()
        waiting = protocol.waiting
        if waiting and now - waiting[0].sent_at > 2 * self.timeout:
            # Nothing answered for two timeouts (Redis stopped, a dead peer the kernel has not noticed):
            # drop the connection, failing its waiters, rather than queue behind it; the next call reconnects.
            transport.close()
            protocol.connection_lost(None)
            raise RedisConnectionError("Redis stopped answering on this connection")
        future: asyncio.Future[list[Any]] = loop.create_future()
        waiting.append(_Batch(future, len(commands), now))
        transport.write(b"".join([pack(c) for c in commands]))  # hiredis packs in C
        timer = loop.call_later(self.timeout, _expire, future)
        try:
            return await future
        finally:
            timer.cancel()

    async def execute(self, commands: list[tuple[Any, ...]]) -> list[Any]:
        """Replies to `commands`, sent in one write; an error reply comes back as a ResponseError
        in its place (as redis-py's `execute(raise_on_error=False)`)."""
        if not commands:
            return []
        protocol = self._protocol
        replies = await self._send(protocol if protocol is not None else await self._connection(), commands)
        if any(isinstance(r, hiredis.ReplyError) for r in replies):
            return [ResponseError(str(r)) if isinstance(r, hiredis.ReplyError) else r for r in replies]
        return replies

    async def call(self, *args: Any) -> Any:
        (reply,) = await self.execute([args])
        if isinstance(reply, ResponseError):
            raise reply
        return reply

    def pipeline(self) -> LanePipeline:
        return LanePipeline(self)

    async def close(self) -> None:
        protocol, self._protocol = self._protocol, None
        if protocol is not None and protocol.transport is not None:
            protocol.transport.close()


_CERT_REQS = {"none": ssl.CERT_NONE, "optional": ssl.CERT_OPTIONAL, "required": ssl.CERT_REQUIRED}


def tls_context(query: dict[str, list[str]]) -> ssl.SSLContext:
    """The TLS context a `rediss://` URL's query asks for, read as redis-py reads it."""

    def option(name: str) -> str | None:
        values = query.get(name)
        return values[0] if values else None

    reqs = (option("ssl_cert_reqs") or "required").lower()
    if reqs not in _CERT_REQS:
        raise ValueError(f"ssl_cert_reqs must be one of {', '.join(_CERT_REQS)}, not {reqs!r}")
    context = ssl.create_default_context(cafile=option("ssl_ca_certs"), capath=option("ssl_ca_path"))
    check_hostname = (option("ssl_check_hostname") or "true").lower() in ("1", "true", "yes", "y", "on")
    context.check_hostname = check_hostname and reqs != "none"
    context.verify_mode = _CERT_REQS[reqs]
    certfile = option("ssl_certfile")
    if certfile is not None:
        context.load_cert_chain(certfile, option("ssl_keyfile"), option("ssl_password"))
    return context


def _expire(future: asyncio.Future[Any]) -> None:
    if not future.done():
        future.set_exception(RedisTimeoutError("Redis did not answer in time"))


class LanePipeline:
    """Commands queued by name as on a redis-py pipeline (the few the hot path uses), sent in one
    write by `execute()`, which raises the first error reply like redis-py does."""

    def __init__(self, lane: RedisLane) -> None:
        self.lane = lane
        self.commands: list[tuple[Any, ...]] = []
        self._scripts: dict[int, Script] = {}

    def execute_command(self, *args: Any) -> LanePipeline:
        self.commands.append(args)
        return self

    def eval(self, script_text: str, numkeys: int, *keys_and_args: Any) -> LanePipeline:
        script = _SCRIPTS.get(script_text)
        if script is None:
            script = _SCRIPTS[script_text] = Script(script_text)
        self._scripts[len(self.commands)] = script
        return self.execute_command("EVALSHA", script.sha, numkeys, *keys_and_args)

    def hget(self, key: str, field: str) -> LanePipeline:
        return self.execute_command("HGET", key, field)

    def hset(self, key: str, field: str, value: Any) -> LanePipeline:
        return self.execute_command("HSET", key, field, value)

    def smembers(self, key: str) -> LanePipeline:
        return self.execute_command("SMEMBERS", key)

    def sadd(self, key: str, *members: Any) -> LanePipeline:
        return self.execute_command("SADD", key, *members)

    def lrange(self, key: str, start: int, end: int) -> LanePipeline:
        return self.execute_command("LRANGE", key, start, end)

    def expire(self, key: str, seconds: int) -> LanePipeline:
        return self.execute_command("EXPIRE", key, seconds)

    async def execute(self) -> list[Any]:
        commands, self.commands = self.commands, []
        scripts, self._scripts = self._scripts, {}
        replies = await self.lane.execute(commands)
        for i, script in scripts.items():  # unknown to Redis (restart, flush): once more with the text
            reply = replies[i]
            if isinstance(reply, ResponseError) and str(reply).startswith("NOSCRIPT"):
                (replies[i],) = await self.lane.execute([("EVAL", script.text, *commands[i][2:])])
        for reply in replies:
            if isinstance(reply, ResponseError):
                raise NoScriptError(str(reply)) if str(reply).startswith("NOSCRIPT") else reply
        return replies

    def __len__(self) -> int:
        return len(self.commands)

    async def __aenter__(self) -> LanePipeline:
        return self

    async def __aexit__(self, *exc: object) -> None:
        self.commands, self._scripts = [], {}


_SCRIPTS: dict[str, Script] = {}  # script text → its SHA-1 (the few scripts of the hot path)


# --- round trips shared by several owners --------------------------------------------------------

T = TypeVar("T")
T_co = TypeVar("T_co", covariant=True)


class Pipe(Protocol):
    """The one pipeline type the hot path writes to: the lane's (`LanePipeline`), or on a Redis
    Cluster redis-py's cluster pipeline, which routes each command by slot. Replies come in order."""

    def execute_command(self, *args: Any) -> Any: ...
    def eval(self, script: str, numkeys: int, /, *keys_and_args: Any) -> Any: ...
    def hget(self, key: str, field: str, /) -> Any: ...
    def hset(self, key: str, field: str, value: Any, /) -> Any: ...
    def smembers(self, key: str, /) -> Any: ...
    def sadd(self, key: str, /, *members: Any) -> Any: ...
    def lrange(self, key: str, start: int, end: int, /) -> Any: ...
    def expire(self, key: str, seconds: int, /) -> Any: ...
    def __len__(self) -> int: ...
    async def execute(self) -> list[Any]: ...


class Part(Protocol[T_co]):
    """One owner's commands in a round trip several owners share, and how it reads its own replies.

    Each owner declares its part next to the keys it owns (the rate charge in roomfeed.auth, a
    viewer's recent visits and who is in a room in events, the live index's changes in rooms, the
    session and the served-set claim in feed); nobody picks another owner's replies by position."""

    def queue(self, pipe: Pipe) -> None: ...

    def read(self, replies: list[Any]) -> T_co: ...


class Reply(Generic[T]):
    """What one part of a round trip answers: read (once, when first asked) from its own replies."""

    __slots__ = ("_trip", "_part", "_start", "_end", "_value", "_done")

    def __init__(self, trip: RoundTrip, part: Part[T], start: int, end: int) -> None:
        self._trip = trip
        self._part = part
        self._start = start
        self._end = end
        self._value: T | None = None
        self._done = False

    @property
    def value(self) -> T:
        if not self._done:
            replies = self._trip.replies
            if replies is None:
                raise RuntimeError("the round trip was not made")
            self._value = self._part.read(replies[self._start : self._end])
            self._done = True
        return cast(T, self._value)


class RoundTrip:
    """One pipeline that several owners share: each `add`s its part and gets a `Reply`; `send` makes
    the trip (raising what Redis raises: callers degrade); a reply is read from its part's own
    replies when asked for."""

    def __init__(self, pipe: Pipe) -> None:
        self._pipe = pipe
        self.replies: list[Any] | None = None

    def add(self, part: Part[T]) -> Reply[T]:
        start = len(self._pipe)
        part.queue(self._pipe)
        return Reply(self, part, start, len(self._pipe))

    @property
    def made(self) -> bool:
        return self.replies is not None

    def __len__(self) -> int:
        """The commands queued so far (a trip of none need not be sent)."""
        return len(self._pipe)

    async def send(self) -> None:
        self.replies = await self._pipe.execute()


def round_trip(redis: Redis, lane: RedisLane | None) -> RoundTrip:
    """A round trip owners add their parts to: on the lane, or (no lane: a Redis Cluster) on redis-py's
    pipeline, which routes each command by slot. `redis` is the process's redis-py client."""
    pipe: Pipe = lane.pipeline() if lane is not None else redis.pipeline(transaction=False)
    return RoundTrip(pipe)
