"""The local services run for real: `up` is idempotent, servers survive kill -9, `status` tells the truth."""

from __future__ import annotations

import shutil
import time
from dataclasses import replace

import asyncpg
import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from redis.asyncio import Redis

from devtools import services
from devtools.kafka import kafka_answers
from events.vocabulary import VIEWER_EVENTS
from roomfeed.settings import Settings, external_services
from tests.support import PrivateServers, free_port, world_readable_tempdir

pytestmark = pytest.mark.timeout(120)

needs_project_services = pytest.mark.skipif(
    all(external_services().values()), reason="every service is external (env URLs set)"
)


async def _pg_answers(url: str) -> int:
    conn = await asyncpg.connect(url)
    try:
        return int(await conn.fetchval("select 1"))
    finally:
        await conn.close()


async def _redis_answers(url: str) -> bool:
    client = Redis.from_url(url)
    try:
        return bool(await client.ping())
    finally:
        await client.aclose()


@needs_project_services
async def test_up_is_idempotent_and_every_service_answers(base_settings: Settings) -> None:
    started = time.monotonic()
    urls = services.up(base_settings)
    assert time.monotonic() - started < 5, "a second `up` must be fast when everything runs"
    assert set(urls) == {"postgres", "redis", "kafka"}
    assert urls["postgres"] == base_settings.database_url
    assert urls["redis"] == base_settings.redis_url
    assert urls["kafka"] == base_settings.kafka_bootstrap

    assert await _pg_answers(urls["postgres"]) == 1
    assert await _redis_answers(urls["redis"])
    assert await kafka_answers(urls["kafka"])


@needs_project_services
def test_status_reports_each_service(base_settings: Settings) -> None:
    states = services.status(base_settings)
    external = external_services()
    for name in ("postgres", "redis", "kafka"):
        assert states[name] == ("external" if external[name] else "running")


@needs_project_services
def test_cli_prints_one_line_per_service(base_settings: Settings, capsys: pytest.CaptureFixture[str]) -> None:
    assert services.cli_main(["status"]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert [line.split()[0] for line in lines] == ["postgres", "redis", "kafka"]
    assert base_settings.kafka_bootstrap in lines[2]


@pytest.mark.skipif(
    external_services()["postgres"] or external_services()["redis"], reason="needs local PostgreSQL and Redis"
)
def test_down_stops_exactly_what_up_started(base_settings: Settings, monkeypatch: pytest.MonkeyPatch) -> None:
    # Kafka named by the environment: `up` must leave it alone, and so must `down`.
    monkeypatch.setenv("KAFKA_BOOTSTRAP", base_settings.kafka_bootstrap)
    data_dir = world_readable_tempdir("rf-up-")
    private = replace(
        base_settings,
        data_dir=data_dir,
        database_url=f"postgresql://roomfeed@127.0.0.1:{free_port()}/roomfeed",
        redis_url=f"redis://127.0.0.1:{free_port()}/0",
    )
    try:
        urls = services.up(private)
        assert urls == {
            "postgres": private.database_url,
            "redis": private.redis_url,
            "kafka": base_settings.kafka_bootstrap,
        }
        assert services.status(private) == {"postgres": "running", "redis": "running", "kafka": "external"}
        services.down(private)
        assert services.status(private) == {"postgres": "stopped", "redis": "stopped", "kafka": "external"}
        assert services.status(base_settings)["kafka"] in ("running", "external")
    finally:
        services.down(private)
        shutil.rmtree(data_dir, ignore_errors=True)


async def test_kafka_broker_survives_kill_9_with_its_data(private_servers: PrivateServers) -> None:
    broker = private_servers.kafka()
    broker.start()
    broker.wait_ready()
    topic = "survives-kill"

    producer = AIOKafkaProducer(bootstrap_servers=broker.bootstrap(), acks="all")
    await producer.start()
    try:
        await producer.send_and_wait(topic, b"before the crash", key=b"v1")
    finally:
        await producer.stop()

    broker.kill()
    assert not broker.is_running()
    assert not await kafka_answers(broker.bootstrap(), timeout_ms=500)

    broker.start()
    broker.wait_ready()
    consumer = AIOKafkaConsumer(bootstrap_servers=broker.bootstrap(), auto_offset_reset="earliest")
    await consumer.start()
    try:
        partition = TopicPartition(topic, 0)
        consumer.assign([partition])
        await consumer.seek_to_beginning(partition)
        batch = await consumer.getmany(partition, timeout_ms=10_000)
        values = [record.value for record in batch.get(partition, [])]
    finally:
        await consumer.stop()
    assert values == [b"before the crash"]

    broker.stop()
    assert not broker.is_running()


async def test_redis_server_keeps_writes_across_stop_and_kill(private_servers: PrivateServers) -> None:
    server = private_servers.redis()
    server.start()
    server.wait_ready()
    client = Redis.from_url(server.url())
    await client.set("room:1:viewers", 42)
    await client.aclose()

    server.stop()
    assert not server.is_running()
    server.start()
    server.wait_ready()
    client = Redis.from_url(server.url())
    assert await client.get("room:1:viewers") == b"42"
    await client.aclose()

    server.kill()
    assert not server.is_running()


async def test_postgres_server_recovers_after_kill_9(private_servers: PrivateServers) -> None:
    server = private_servers.postgres()
    server.init()
    server.start()
    server.wait_ready()
    conn = await asyncpg.connect(server.url())
    await conn.execute("create table room (id int primary key); insert into room values (7)")
    await conn.close()

    server.kill()
    assert not server.is_running()
    server.start()  # crash recovery replays the WAL
    server.wait_ready()
    conn = await asyncpg.connect(server.url())
    assert await conn.fetchval("select id from room") == 7
    await conn.close()

    server.stop()
    assert not server.is_running()


async def test_session_settings_are_isolated(settings: Settings, base_settings: Settings) -> None:
    assert settings.database_url != base_settings.database_url
    dbname = settings.database_url.rsplit("/", 1)[1]
    assert dbname.startswith("rf_test_")
    conn = await asyncpg.connect(settings.database_url)
    try:
        assert await conn.fetchval("select current_database()") == dbname
    finally:
        await conn.close()
    assert settings.redis_url != base_settings.redis_url
    assert await _redis_answers(settings.redis_url)
    assert settings.kafka_prefix.startswith("t")
    assert settings.topic(VIEWER_EVENTS) == settings.kafka_prefix + VIEWER_EVENTS
    assert settings.data_dir != base_settings.data_dir and settings.data_dir.is_dir()


def test_kafka_format_accepts_a_cluster_id_starting_with_a_dash(base_settings, tmp_path) -> None:  # type: ignore[no-untyped-def]
    # URL-safe base64 ids start with "-" one time in 64; the storage tool must not read it as an option.
    import base64
    import uuid
    from unittest import mock

    from devtools.kafka import KafkaBroker, resolve_kafka_jars
    from tests.support import free_port

    libs = resolve_kafka_jars(base_settings.data_dir / "kafka" / "libs")
    broker = KafkaBroker(
        tmp_path / "kafka", free_port(), free_port(), libs_dir=libs, partitions=1, heap="256m"
    )
    dash_first = uuid.UUID(bytes=base64.urlsafe_b64decode("-" + "A" * 21 + "=="))
    with mock.patch("devtools.kafka.uuid.uuid4", return_value=dash_first):
        broker.init()
    assert broker._formatted.read_text().strip().startswith("-")
