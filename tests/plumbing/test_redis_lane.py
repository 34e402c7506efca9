"""The hot path's pipelined Redis connection (roomfeed.redis_lane) against a real, private redis-server."""

from __future__ import annotations

import asyncio
import os
import signal
import time
from typing import Any

import pytest
from redis.asyncio import Redis
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import ResponseError
from redis.exceptions import TimeoutError as RedisTimeoutError

from devtools.redis import RedisServer
from roomfeed.redis_lane import Pipe, RedisLane, RoundTrip
from tests.support import PrivateServers


@pytest.fixture
def server(private_servers: PrivateServers) -> RedisServer:
    redis = private_servers.redis()
    redis.start()
    time.sleep(0.3)  # redis-server retitles itself (what is_running checks) a moment after it starts
    redis.wait_ready()
    return redis


async def test_commands_reach_the_database_of_the_url_and_callers_get_their_own_replies(
    server: RedisServer,
) -> None:
    lane = RedisLane(server.url().rsplit("/", 1)[0] + "/5")
    check = Redis.from_url(server.url().rsplit("/", 1)[0] + "/5")
    try:
        assert await lane.call("SET", "k", "v") == b"OK"
        assert await check.get("k") == b"v"
        assert await Redis.from_url(server.url()).get("k") is None  # not db 0

        async def one(i: int) -> tuple[int, list[object]]:
            pipe = lane.pipeline()
            pipe.execute_command("SET", f"key{i}", i)
            pipe.execute_command("GET", f"key{i}")
            pipe.lrange("nothing", 0, -1)
            return i, await pipe.execute()

        for i, replies in await asyncio.gather(*(one(i) for i in range(400))):
            assert replies == [b"OK", str(i).encode(), []]
    finally:
        await lane.close()
        await check.aclose()


async def test_error_replies_raise_and_scripts_survive_a_script_flush(server: RedisServer) -> None:
    lane = RedisLane(server.url())
    try:
        await lane.call("SET", "text", "x")
        with pytest.raises(ResponseError, match="WRONGTYPE"):
            await lane.call("LPUSH", "text", "y")
        pipe = lane.pipeline()
        pipe.eval("return {KEYS[1], ARGV[1]}", 1, "a", "b")
        assert await pipe.execute() == [[b"a", b"b"]]
        await lane.call("SCRIPT", "FLUSH")  # what a Redis restart does to the script cache
        pipe = lane.pipeline()
        pipe.eval("return {KEYS[1], ARGV[1]}", 1, "c", "d")
        pipe.execute_command("GET", "text")
        assert await pipe.execute() == [[b"c", b"d"], b"x"]
    finally:
        await lane.close()


async def test_a_killed_redis_fails_fast_and_a_restarted_one_is_used_again(server: RedisServer) -> None:
    lane = RedisLane(server.url(), retry_after_s=0.2)
    try:
        assert await lane.call("PING") == b"PONG"
        server.kill()
        started = time.monotonic()
        with pytest.raises(RedisConnectionError):
            await lane.call("PING")
        with pytest.raises(RedisConnectionError):  # within retry_after_s: not even tried
            await lane.call("PING")
        assert time.monotonic() - started < 1.0
        server.start()
        time.sleep(0.3)
        server.wait_ready()
        await asyncio.sleep(0.25)
        assert await lane.call("PING") == b"PONG"
    finally:
        await lane.close()


async def test_a_stopped_redis_times_out_and_late_replies_do_not_reach_the_next_caller(
    server: RedisServer,
) -> None:
    lane = RedisLane(server.url(), timeout=0.3)
    pid = server.pid()
    assert pid is not None
    try:
        await lane.call("SET", "late", "old")
        os.kill(pid, signal.SIGSTOP)
        try:
            started = time.monotonic()
            with pytest.raises(RedisTimeoutError):
                await lane.call("GET", "late")
            assert time.monotonic() - started < 1.0
        finally:
            os.kill(pid, signal.SIGCONT)
        # The reply to the timed-out GET arrives now and is dropped; this caller gets its own.
        assert await lane.call("ECHO", "mine") == b"mine"

        # Stopped for longer: after two timeouts without a word the connection is dropped (callers
        # do not pile up behind it), and a new one serves once Redis answers again.
        os.kill(pid, signal.SIGSTOP)
        try:
            with pytest.raises(RedisTimeoutError):
                await lane.call("GET", "late")
            await asyncio.sleep(0.65)
            with pytest.raises(RedisConnectionError, match="stopped answering"):
                await lane.call("GET", "late")
        finally:
            os.kill(pid, signal.SIGCONT)
        await asyncio.sleep(0.25)
        assert await lane.call("ECHO", "again") == b"again"
    finally:
        await lane.close()


class _Counter:
    """A part of one command: INCR of its own key."""

    def __init__(self, key: str) -> None:
        self.key = key

    def queue(self, pipe: Pipe) -> None:
        pipe.execute_command("INCR", self.key)

    def read(self, replies: list[Any]) -> int:
        assert len(replies) == 1  # its own reply, no other part's
        return int(replies[0])


class _Pair:
    """A part of two commands, and of none when it has nothing to ask."""

    def __init__(self, key: str, ask: bool = True) -> None:
        self.key, self.ask = key, ask

    def queue(self, pipe: Pipe) -> None:
        if self.ask:
            pipe.execute_command("SET", self.key, "x")
            pipe.execute_command("GET", self.key)

    def read(self, replies: list[Any]) -> bytes | None:
        return replies[1] if self.ask else None


async def test_a_round_trip_gives_each_part_its_own_replies(server: RedisServer) -> None:
    lane = RedisLane(server.url())
    try:
        trip = RoundTrip(lane.pipeline())
        first = trip.add(_Counter("a"))
        nothing = trip.add(_Pair("unused", ask=False))
        pair = trip.add(_Pair("b"))
        second = trip.add(_Counter("a"))
        with pytest.raises(RuntimeError):
            _ = first.value  # not sent yet
        assert not trip.made
        await trip.send()
        assert trip.made
        assert (first.value, second.value, pair.value, nothing.value) == (1, 2, b"x", None)
    finally:
        await lane.close()
