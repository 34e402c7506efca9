"""The project's Kafka factories on the real broker: a produce/consume round trip, keys keep order."""

from __future__ import annotations

import asyncio

from roomfeed.kafka import encode, ensure_topics, make_consumer, make_producer
from roomfeed.settings import Settings


async def test_produce_consume_round_trip(settings: Settings) -> None:
    await ensure_topics(settings, {"roundtrip": 3})
    producer = make_producer(settings)
    await producer.start()
    try:
        sent = [{"n": i, "viewer": f"v{i % 4}"} for i in range(200)]
        for message in sent:
            await producer.send(
                settings.topic("roundtrip"), encode(message), key=str(message["viewer"]).encode()
            )
        await producer.flush()
    finally:
        await producer.stop()

    consumer = make_consumer(settings, "roundtrip-test", "roundtrip", session_timeout_ms=6000)
    await consumer.start()
    received: list[dict[str, object]] = []
    try:

        async def drain() -> None:
            import orjson

            while len(received) < len(sent):
                batches = await consumer.getmany(timeout_ms=500)
                for records in batches.values():
                    received.extend(orjson.loads(r.value) for r in records)
            await consumer.commit()

        await asyncio.wait_for(drain(), 30)
    finally:
        await consumer.stop()

    assert sorted(m["n"] for m in received) == list(range(200))  # type: ignore[type-var]
    for viewer in ("v0", "v1", "v2", "v3"):
        numbers = [m["n"] for m in received if m["viewer"] == viewer]
        assert numbers == sorted(numbers)  # type: ignore[type-var]


async def test_a_runs_topics_are_dropped_by_prefix_and_only_those(settings: Settings) -> None:
    import secrets
    from dataclasses import replace

    import pytest
    from aiokafka.admin import AIOKafkaAdminClient

    from roomfeed.kafka import drop_prefixed_topics

    run = replace(settings, kafka_prefix=f"{settings.kafka_prefix}drop{secrets.token_hex(3)}.")
    await ensure_topics(run, {"a": 1, "b": 1})
    await ensure_topics(settings, {"kept": 1})
    dropped = await drop_prefixed_topics(run.kafka_bootstrap, run.kafka_prefix)
    assert sorted(dropped) == [run.topic("a"), run.topic("b")]
    admin = AIOKafkaAdminClient(bootstrap_servers=settings.kafka_bootstrap)
    await admin.start()
    try:
        for _ in range(50):  # deletion completes on the controller shortly after the answer
            left = set(await admin.list_topics())
            if not {run.topic("a"), run.topic("b")} & left:
                break
            await asyncio.sleep(0.1)
    finally:
        await admin.close()
    assert settings.topic("kept") in left and not {run.topic("a"), run.topic("b")} & left
    with pytest.raises(ValueError):
        await drop_prefixed_topics(settings.kafka_bootstrap, "")
