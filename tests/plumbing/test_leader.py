"""Once per cluster: each once-per-cluster loop runs in one process of many, and moves when that one dies.

Real PostgreSQL advisory locks; real `roomfeed serve` processes (three of them) on a database of
their own, so no other app of the test session holds the leases.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from pathlib import Path

import asyncpg
import httpx
import pytest

from roomfeed.leader import LEASES, Leases
from roomfeed.settings import Settings
from tests.faults.stack import RoomfeedProcess
from tests.support import free_port, isolated_settings, process_env

pytestmark = [pytest.mark.timeout(180)]


@pytest.fixture
def own_database(base_settings: Settings, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Settings]:
    with isolated_settings(base_settings, tmp_path_factory) as own:
        yield own


async def test_one_process_holds_a_lease_until_its_session_ends(own_database: Settings) -> None:
    first, second = Leases(own_database.database_url), Leases(own_database.database_url)
    try:
        assert await first.holds("t.loop") is True
        assert await second.holds("t.loop") is False
        assert await first.holds("t.loop") is True  # still held, round after round
        assert await second.holds("t.other") is True  # leases are independent
        # The holder's session dies (as when its process is killed): PostgreSQL frees the lock.
        conn = await asyncpg.connect(own_database.database_url)
        try:
            backend = (await first._connection()).get_server_pid()
            assert await conn.fetchval("SELECT pg_terminate_backend($1, 5000)", backend)
        finally:
            await conn.close()
        assert await second.holds("t.loop") is True  # the lock went with the session
        assert await first.holds("t.loop") is False  # and the old holder knows it has lost it
        await second.close()  # a clean shutdown hands over at once
        assert await first.holds("t.loop") is True
    finally:
        await first.close()
        await second.close()


def _leader_metrics(text: str) -> tuple[dict[str, float], dict[str, float]]:
    held: dict[str, float] = {}
    rounds: dict[str, float] = {}
    for line in text.splitlines():
        for prefix, into in (
            ('roomfeed_leader{lease="', held),
            ('roomfeed_leader_rounds_total{lease="', rounds),
        ):
            if line.startswith(prefix):
                name = line[len(prefix) :].split('"', 1)[0]
                into[name] = float(line.rsplit(" ", 1)[1])
    return held, rounds


async def _scrape(urls: list[str]) -> list[tuple[dict[str, float], dict[str, float]]]:
    async with httpx.AsyncClient(timeout=5) as client:
        texts = [(await client.get(f"{url}/metrics")).text for url in urls]
    return [_leader_metrics(text) for text in texts]


@pytest.mark.slow
async def test_three_api_processes_run_each_once_per_cluster_loop_once(
    own_database: Settings, tmp_path: Path
) -> None:
    env = process_env(own_database, tmp_path / "data")
    ports = [free_port() for _ in range(3)]
    urls = [f"http://127.0.0.1:{port}" for port in ports]
    processes = [
        RoomfeedProcess(f"api{n}", ["serve", "--port", str(port), "--no-migrate"], env, tmp_path)
        for n, port in enumerate(ports)
    ]
    for process in processes:
        process.start()
    try:
        deadline = time.monotonic() + 90
        async with httpx.AsyncClient(timeout=2) as client:
            for process, url in zip(processes, urls, strict=True):
                while True:
                    assert process.alive(), process.tail()
                    assert time.monotonic() < deadline, process.tail()
                    try:
                        if (await client.get(f"{url}/readyz")).status_code == 200:
                            break
                    except httpx.HTTPError:
                        pass
                    await asyncio.sleep(0.3)

        async def leaders_settled() -> list[tuple[dict[str, float], dict[str, float]]]:
            # Each loop asks at its own pace (relay 1 s, alliance 5 s, sampler 10 s): wait for every lease.
            until = time.monotonic() + 30
            while True:
                scraped = await _scrape(urls)
                if all(sum(held.get(lease, 0) for held, _ in scraped) == 1 for lease in LEASES):
                    return scraped
                assert time.monotonic() < until, scraped
                await asyncio.sleep(0.5)

        before = await leaders_settled()
        await asyncio.sleep(11)  # every loop has had at least one more round
        after = await _scrape(urls)
        for lease in LEASES:
            leaders = [n for n, (held, _) in enumerate(after) if held.get(lease) == 1]
            assert len(leaders) == 1, (lease, after)
            for n, ((_, rounds_before), (_, rounds_after)) in enumerate(zip(before, after, strict=True)):
                grew = rounds_after.get(lease, 0) - rounds_before.get(lease, 0)
                if n == leaders[0]:
                    assert grew >= 1, (lease, before, after)
                else:
                    assert grew == 0, f"{lease} ran in api{n} too"

        # kill -9 the room relay's leader: another process takes the lease over.
        victim = next(n for n, (held, _) in enumerate(after) if held.get("rooms.relay") == 1)
        processes[victim].kill()
        survivors = [url for n, url in enumerate(urls) if n != victim]
        until = time.monotonic() + 30
        while True:
            scraped = await _scrape(survivors)
            if sum(held.get("rooms.relay", 0) for held, _ in scraped) == 1:
                break
            assert time.monotonic() < until, f"no process took rooms.relay over: {scraped}"
            await asyncio.sleep(0.5)
    finally:
        for process in processes:
            process.stop()


async def test_one_trainer_at_a_time(own_database: Settings) -> None:
    from ranking.cli import train_command
    from ranking.train import TRAINER_ROUNDS, train_forever
    from roomfeed.cli import build_parser
    from roomfeed.leader import TRAINER

    holder = Leases(own_database.database_url)
    try:
        assert await holder.holds(TRAINER)
        parser, _ = build_parser()
        # A one-round trainer exits at once while another trainer holds the lease.
        assert await train_command(own_database, parser.parse_args(["train"])) == 3
        # A periodic trainer stands by: rounds pass without training.
        standby = Leases(own_database.database_url)
        before = TRAINER_ROUNDS.labels("standby")._value.get()
        pool = await asyncpg.create_pool(own_database.database_url, min_size=0, max_size=1)
        task = asyncio.create_task(train_forever(pool, 0.05, leadership=standby.leadership(TRAINER)))
        await asyncio.sleep(0.5)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        await standby.close()
        await pool.close()
        assert TRAINER_ROUNDS.labels("standby")._value.get() - before >= 3
        for outcome in ("promoted", "registered", "skipped", "failed"):
            assert TRAINER_ROUNDS.labels(outcome)._value.get() == 0
    finally:
        await holder.close()
