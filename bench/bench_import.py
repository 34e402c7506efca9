"""Benchmark: `roomfeed import` throughput on a platform's history (1M interactions by default).

    .venv/bin/python bench/bench_import.py [--viewers 40000] [--merchants 1500] [--days 7]

Writes a history with the example's generator (examples/import/make_example.py: the seeded simulator's
merchants, stores, staff, products, past rooms and interactions as JSONL/CSV; not timed), then, on a
throwaway database and a private Redis (bench_live_index.bench_env):

1. imports it with the real importer (`bulk.importer.Importer`, what `roomfeed import --no-train` runs:
   read, check every line with the API's rules, look rooms up, COPY through the archive sink in one
   transaction) and times each file;
2. imports the same files again (every id already there: what a re-run costs);
3. the ceiling, in the same run: the archive sink's own `write` (the worker's path, batches of 4,000)
   of the same events already decoded and enriched, into a second empty interaction log — no file,
   no checks, no lookups;
4. orders: the import's rate (`OrderBook.record_many`, one transaction, a savepoint per order, the
   alliance's attribution subscribed as `roomfeed import` wires it) against the same orders, read
   beforehand, recorded one by one through `OrderBook.record` (what each POST /v1/orders does, without
   HTTP) into emptied order tables.

Prints and records `interactions`, `import_lines_per_s`, `archive_sink_per_s`, their ratio, the rate
of reading and checking the file alone (no database: where the rest of the time goes), the re-import's
rate, the catalogue files' time and the orders' rates (bench/results/import.json, docs/benchmarks.md).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import shlex
import shutil
import sys
import tempfile
import time
from pathlib import Path

import orjson

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "examples" / "import"))

from bench_live_index import bench_env, write_results  # noqa: E402
from make_example import write_history  # noqa: E402

from bulk.files import find_sources, read_records  # noqa: E402
from bulk.importer import CELLS, Importer, ImportOptions  # noqa: E402
from events.archive import ArchiveSink  # noqa: E402
from events.backfill import oldest_kept_ms, read_past_event  # noqa: E402
from events.schema import Rejection  # noqa: E402
from roomfeed.cli_assembly import order_book  # noqa: E402
from roomfeed.progress import Progress  # noqa: E402
from rooms.inputs import read_order  # noqa: E402
from rooms.orders import OrderIn  # noqa: E402

SINK_BATCH = 4000  # events/consumer.py MAX_RECORDS: what the worker hands the archive sink


async def run(folder: Path) -> dict[str, float]:
    sources = find_sources([folder])
    interactions = next(s for s in sources if s.kind == "interactions")
    orders_file = next(s for s in sources if s.kind == "orders")
    async with bench_env() as env:
        book = order_book(env.pool)  # what `roomfeed import` writes orders through
        importer = Importer(
            env.settings, env.pool, env.redis, ImportOptions(shift_to_now=True, train=False), orders=book
        )
        started = time.perf_counter()
        report = await importer.run(sources)
        first_s = time.perf_counter() - started
        assert report.ok, report.text()
        by_kind = {f.kind: f for f in report.files}
        lines = by_kind["interactions"].lines
        assert by_kind["interactions"].new == lines, report.text()

        started = time.perf_counter()
        again = await Importer(
            env.settings, env.pool, env.redis, ImportOptions(shift_to_now=True, train=False), orders=book
        ).run(sources)
        again_s = time.perf_counter() - started
        assert again.ok and all(f.new == 0 for f in again.files), again.text()

        # The ceiling: the same events, decoded and enriched beforehand, through the sink's write.
        owners = {
            r["room_id"]: r["merchant_id"]
            for r in await env.pool.fetch("SELECT room_id, merchant_id FROM rooms")
        }
        shift = importer.shift_ms
        events = []
        with interactions.path.open("rb") as f:
            for raw in f:
                event = orjson.loads(raw)
                event["ts"] += shift
                event["merchant_id"] = owners[event["room_id"]]
                events.append(event)
        await env.pool.execute("TRUNCATE interactions, event_ids")
        sink = ArchiveSink(env.pool, env.settings.archive_retention_days)
        await sink.prepare()
        started = time.perf_counter()
        with Progress("archive sink (ceiling)", len(events), unit="event", unit_scale=True) as bar:
            for i in range(0, len(events), SINK_BATCH):
                await sink.write(events[i : i + SINK_BATCH])
                bar.update(min(SINK_BATCH, len(events) - i))
        sink_s = time.perf_counter() - started
        archived = int(await env.pool.fetchval("SELECT count(*) FROM interactions"))
        assert archived == lines, (archived, lines)

        # Orders one by one through the order book's record (each POST /v1/orders), emptied tables.
        past: list[tuple[str, OrderIn]] = []
        for _, record in read_records(orders_file, CELLS["orders"]):
            assert not isinstance(record, str)
            importer.shift(record)
            merchant_id = str(record.pop("merchant_id"))
            past.append((merchant_id, read_order(record)))
        await env.pool.execute("TRUNCATE orders, order_entries, attributed_order_entries")
        started = time.perf_counter()
        with Progress("orders one by one (ceiling)", len(past), unit="order") as bar:
            for merchant_id, order in past:
                _, created = await book.record(merchant_id, order, "bench")
                assert created
                bar.update()
        record_s = time.perf_counter() - started

    # Where the import's time goes: reading and checking the same file alone (no database).
    started = time.perf_counter()
    now = int(time.time() * 1000)
    oldest = oldest_kept_ms(30, now)
    checked = 0
    for _, record in read_records(interactions, CELLS["interactions"]):
        assert not isinstance(record, str)
        record["ts"] += shift
        checked += not isinstance(read_past_event(record, now, oldest, 30), Rejection)
    read_s = time.perf_counter() - started
    assert checked == lines

    catalogue_s = sum(f.seconds for f in report.files if f.kind not in ("interactions", "orders"))
    import_s = by_kind["interactions"].seconds
    orders = by_kind["orders"]
    assert orders.new == orders.lines == len(past), report.text()
    return {
        "interactions": lines,
        "file_mb": round(interactions.path.stat().st_size / 1e6, 1),
        "import_seconds": round(import_s, 2),
        "import_lines_per_s": round(lines / import_s),
        "archive_sink_per_s": round(lines / sink_s),
        "import_vs_sink": round((lines / import_s) / (lines / sink_s), 3),
        "read_and_check_per_s": round(lines / read_s),
        "reimport_lines_per_s": round(
            lines / next(f.seconds for f in again.files if f.kind == "interactions")
        ),
        "catalogue_records": sum(f.lines for f in report.files if f.kind not in ("interactions", "orders")),
        "catalogue_seconds": round(catalogue_s, 2),
        "orders": orders.lines,
        "orders_seconds": round(orders.seconds, 2),
        "import_orders_per_s": round(orders.lines / orders.seconds, 1),
        "record_orders_per_s": round(len(past) / record_s, 1),
        "import_orders_vs_record": round(record_s / orders.seconds, 3),
        "reimport_orders_per_s": round(
            orders.lines / next(f.seconds for f in again.files if f.kind == "orders"), 1
        ),
        "whole_import_seconds": round(first_s, 2),
        "whole_reimport_seconds": round(again_s, 2),
        "host_load_1m": round(os.getloadavg()[0], 1),
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--viewers", type=int, default=45_000)
    parser.add_argument("--merchants", type=int, default=1_500)
    parser.add_argument("--days", type=int, default=7)
    parser.add_argument(
        "--keep", type=Path, help="write the history here and keep it (default: a temp folder)"
    )
    args = parser.parse_args()
    command = ".venv/bin/python bench/bench_import.py" + "".join(f" {shlex.quote(a)}" for a in sys.argv[1:])
    folder = args.keep or Path(tempfile.mkdtemp(prefix="rf-bench-import-"))
    try:
        started = time.perf_counter()
        counts = write_history(
            folder,
            seed=7,
            merchants=args.merchants,
            viewers=args.viewers,
            days=args.days,
            interactions_name="interactions.jsonl",
        )
        print(f"history written in {time.perf_counter() - started:.0f}s: {counts}", file=sys.stderr)
        metrics = asyncio.run(run(folder))
    finally:
        if args.keep is None:
            shutil.rmtree(folder, ignore_errors=True)
    lines = [f"{k}: {v}" for k, v in metrics.items()]
    print("\n".join(lines))
    print(f"command: {command}")
    write_results("import", command, metrics, lines, "import — roomfeed import of a platform's history")
    return 0


if __name__ == "__main__":
    sys.exit(main())
