"""Which model library for the typed API: pydantic v2 or msgspec, measured on the two hot paths.

    .venv/bin/python bench/bench_models.py

1. The feed page response: a page of 10 rooms built as typed objects and encoded to JSON, against
   today's dicts through orjson (what `roomfeed.http.json` does).
2. Ingest: a body of 500 events decoded and checked against a typed event model, against today's
   orjson + `events.schema.validate` per event (which answers a rejection per event).
Prints µs per page / per batch (median of 7 runs); writes bench/results/models.json.
"""

from __future__ import annotations

import json
import platform
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import msgspec
import orjson
import pydantic

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.markdown import replace_section  # noqa: E402
from events.vocabulary import EventType  # noqa: E402


class MsRoom(msgspec.Struct, kw_only=True):
    room_id: str
    merchant_id: str
    title: str
    category: str
    stream_url: str
    viewers_now: int
    boosted: bool
    position: int
    replay: bool
    tags: list[str]
    price_band: str
    format: str
    started_at: float


class MsPage(msgspec.Struct, kw_only=True):
    session_id: str
    page_token: str
    rooms: list[MsRoom]
    model_version: str
    config_version: int
    variant: str
    experiment_id: str | None
    degraded: bool
    degraded_reasons: list[str]
    timings_ms: dict[str, float]


class PyRoom(pydantic.BaseModel):
    room_id: str
    merchant_id: str
    title: str
    category: str
    stream_url: str
    viewers_now: int
    boosted: bool
    position: int
    replay: bool
    tags: list[str]
    price_band: str
    format: str
    started_at: float


class PyPage(pydantic.BaseModel):
    session_id: str
    page_token: str
    rooms: list[PyRoom]
    model_version: str
    config_version: int
    variant: str
    experiment_id: str | None
    degraded: bool
    degraded_reasons: list[str]
    timings_ms: dict[str, float]


Ident = str


class MsEvent(msgspec.Struct, kw_only=True):
    event_id: str
    type: EventType
    viewer_id: str
    session_id: str
    room_id: str
    ts: int
    dwell_ms: int | None = None
    source: str | None = None


class PyEvent(pydantic.BaseModel):
    event_id: str = pydantic.Field(pattern=r"^[A-Za-z0-9_.:\-]{1,64}$")
    type: EventType
    viewer_id: str = pydantic.Field(pattern=r"^[A-Za-z0-9_.:\-]{1,64}$")
    session_id: str = pydantic.Field(pattern=r"^[A-Za-z0-9_.:\-]{1,64}$")
    room_id: str = pydantic.Field(pattern=r"^[A-Za-z0-9_.:\-]{1,64}$")
    ts: int
    dwell_ms: int | None = None
    source: str | None = None


class MsEventStrict(msgspec.Struct, kw_only=True):
    event_id: Any = msgspec.field()
    type: EventType
    viewer_id: str
    session_id: str
    room_id: str
    ts: int


def _room(i: int) -> dict[str, Any]:
    return {
        "room_id": f"room_{i:016x}",
        "merchant_id": f"mer_{i:016x}",
        "title": f"room {i} of a shop",
        "category": "beauty",
        "stream_url": f"https://live.example/{i}.m3u8",
        "viewers_now": i * 3,
        "boosted": i % 3 == 0,
        "position": i,
        "replay": False,
        "tags": ["new", "sale"],
        "price_band": "mid",
        "format": "live",
        "started_at": 1_760_000_000.0 + i,
    }


def _page(rooms: list[Any]) -> dict[str, Any]:
    return {
        "session_id": "ses_0123456789abcdef",
        "page_token": "3.0a1b2c3d4e",
        "rooms": rooms,
        "model_version": "m-1",
        "config_version": 3,
        "variant": "control",
        "experiment_id": None,
        "degraded": False,
        "degraded_reasons": [],
        "timings_ms": {"candidates": 0.1, "score": 0.3},
    }


def _per_call(fn: Any, n: int) -> float:
    runs = []
    for _ in range(7):
        started = time.perf_counter()
        for _ in range(n):
            fn()
        runs.append((time.perf_counter() - started) / n * 1e6)
    return round(statistics.median(runs), 2)


def main() -> int:
    from events.schema import validate

    dict_rooms = [_room(i) for i in range(10)]
    page_orjson = _per_call(
        lambda: orjson.dumps(_page([dict(r) for r in dict_rooms]), option=orjson.OPT_NON_STR_KEYS), 20_000
    )
    ms_encoder = msgspec.json.Encoder()
    page_msgspec = _per_call(
        lambda: ms_encoder.encode(MsPage(**_page([MsRoom(**r) for r in dict_rooms]))), 20_000
    )
    page_pydantic = _per_call(
        lambda: PyPage.model_construct(
            **_page([PyRoom.model_construct(**r) for r in dict_rooms])
        ).model_dump_json(),
        5_000,
    )
    page_pydantic_validated = _per_call(lambda: PyPage(**_page(dict_rooms)).model_dump_json(), 5_000)

    now = int(time.time() * 1000)
    events = [
        {
            "event_id": f"e{i}",
            "type": "leave" if i % 2 else "enter",
            "viewer_id": "v1",
            "session_id": "ses_0123456789abcdef",
            "room_id": f"room_{i % 40:016x}",
            "ts": now - 1000,
            **({"dwell_ms": 4000} if i % 2 else {"source": "feed"}),
        }
        for i in range(500)
    ]
    body = orjson.dumps({"events": events})
    ingest_today = _per_call(lambda: [validate(e, now) for e in orjson.loads(body)["events"]], 200)
    ms_decoder = msgspec.json.Decoder(dict[str, list[MsEvent]])
    ingest_msgspec = _per_call(lambda: ms_decoder.decode(body), 200)
    py_adapter = pydantic.TypeAdapter(dict[str, list[PyEvent]])
    ingest_pydantic = _per_call(lambda: py_adapter.validate_json(body), 200)

    metrics = {
        "page_orjson_dicts_us": page_orjson,
        "page_msgspec_structs_us": page_msgspec,
        "page_pydantic_construct_us": page_pydantic,
        "page_pydantic_validated_us": page_pydantic_validated,
        "ingest_500_orjson_schema_validate_us": ingest_today,
        "ingest_500_msgspec_decode_us": ingest_msgspec,
        "ingest_500_pydantic_validate_json_us": ingest_pydantic,
        "load_avg_1m_at_end": round(__import__("os").getloadavg()[0], 2),
        "msgspec": msgspec.__version__,
        "pydantic": pydantic.VERSION,
    }
    print(json.dumps(metrics, indent=2))
    result = {
        "name": "models",
        "command": ".venv/bin/python bench/bench_models.py",
        "date": time.strftime("%Y-%m-%d"),
        "machine": f"{__import__('os').cpu_count()} cores, {platform.machine()}, Python {platform.python_version()}",
        "metrics": metrics,
    }
    (ROOT / "bench" / "results" / "models.json").write_text(json.dumps(result, indent=2) + "\n")
    lines = "\n".join(f"{k:40} {v}" for k, v in metrics.items())
    block = (
        "<!-- bench:models -->\n## models — pydantic v2 or msgspec for the typed API (api)\n\n"
        f"`{result['command']}` — {result['date']}, {result['machine']}; µs per call, medians of 7; compare within a run (the 2 cores are shared)\n\n"
        f"```\n{lines}\n```\n<!-- /bench:models -->"
    )
    replace_section(ROOT / "docs" / "benchmarks.md", block, "models")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
