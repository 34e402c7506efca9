"""`roomfeed import` and `roomfeed export`.

    roomfeed import PATH... [--shift-to-now] [--no-train] [--days 14] [--json]
    roomfeed export (--merchant-id M | --key KEY) [--out DIR] [--json]

Import reads folders (files named by kind: merchants.jsonl, stores.csv, interactions-2026-11.jsonl ...)
or files; exit status 0 when every file was imported, 1 when a file had rejected lines (the report
lists each by line number; nothing of that file was written). See docs/import.md.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import asyncpg
import orjson

from bulk.export import ExportRefused, export_merchant, merchant_to_export
from bulk.files import FileProblem, find_sources
from bulk.importer import FirstModel, Importer, ImportOptions
from roomfeed.db import create_pool, migrate
from roomfeed.redis_client import create_redis
from roomfeed.settings import Settings
from rooms.orders import OrderBook


def add_import_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("paths", nargs="+", type=Path, help="folders or files to import")
    parser.add_argument(
        "--shift-to-now",
        action="store_true",
        help="move every time by whole days so the newest is today (sample data such as examples/import)",
    )
    parser.add_argument("--no-train", action="store_true", help="do not train a first model afterwards")
    parser.add_argument("--days", type=float, default=14.0, help="history the first model trains on")
    parser.add_argument("--json", action="store_true", help="print the report as JSON")
    parser.add_argument("--no-migrate", action="store_true")


async def import_command(
    settings: Settings,
    args: argparse.Namespace,
    page_of: Any = None,
    order_book: Callable[[asyncpg.Pool], OrderBook] | None = None,
) -> int:
    """`page_of`: the feed's page judge the composition root hands the trainer's gate (as for train);
    `order_book`: the order book with its subscribers (the alliance's attribution), as the API has it."""
    try:
        sources = find_sources(args.paths)
    except FileProblem as exc:
        print(f"roomfeed import: {exc}", file=sys.stderr)
        return 2
    if not sources:
        print(
            "roomfeed import: no files to import (names start with a kind, e.g. rooms.csv)", file=sys.stderr
        )
        return 2
    if not args.no_migrate:
        await migrate(settings.database_url)
    pool = await create_pool(settings, min_size=1)
    redis = create_redis(settings)
    try:
        importer = Importer(
            settings,
            pool,
            redis,
            ImportOptions(shift_to_now=args.shift_to_now, train=not args.no_train),
            trainer=lambda until_ms: first_model(settings, pool, until_ms, args.days, page_of),
            orders=order_book(pool) if order_book is not None else None,
        )
        report = await importer.run(sources)
    finally:
        await redis.aclose()
        await pool.close()
    if args.json:
        print(orjson.dumps(report.as_dict()).decode())
    else:
        print(report.text())
    return 0 if report.ok else 1


async def first_model(
    settings: Settings, pool: object, until_ms: int, days: float, page_of: Any = None
) -> FirstModel | str:
    """One round of the ranking trainer on the history that ends at the newest imported event, gated
    like every round (`ranking.train.train_once`); a note instead when it cannot train now."""
    from ranking.dataset import WeightParams
    from ranking.model import ModelParams
    from ranking.train import features_from_rooms, train_once
    from roomfeed.leader import TRAINER, Leases

    leases = Leases(settings.database_url)
    try:
        if not await leases.holds(TRAINER):
            return "another trainer holds the trainer lease; it trains on the imported history next round"
        try:
            result = await train_once(
                pool,
                params=ModelParams(),
                weights=WeightParams(),
                days=days,
                eval_hours=24.0,
                features=await features_from_rooms(pool),
                until_ms=until_ms,
                page_of=page_of,
            )
        except RuntimeError as exc:  # too little history to train on
            return str(exc)
        return FirstModel(result.version, result.promoted, result.seconds, result.metrics)
    finally:
        await leases.close()


def add_export_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--merchant-id", help="whose data (an operator's choice; a merchant key implies its own)"
    )
    parser.add_argument("--key", help="a merchant key (its own data only) or an operator key")
    parser.add_argument("--out", type=Path, default=Path("export"), help="folder for the CSV files")
    parser.add_argument("--json", action="store_true", help="print what was written as JSON")


async def export_command(settings: Settings, args: argparse.Namespace) -> int:
    pool = await create_pool(settings, min_size=1)
    try:
        try:
            merchant_id = await merchant_to_export(pool, args.key, args.merchant_id)
        except ExportRefused as exc:
            print(f"roomfeed export: {exc}", file=sys.stderr)
            return 2
        exported = await export_merchant(pool, merchant_id, args.out)
    finally:
        await pool.close()
    if args.json:
        files = {name: {"path": str(args.out / name), "rows": rows} for name, rows in exported.files.items()}
        print(orjson.dumps({"merchant_id": merchant_id, "files": files}).decode())
    else:
        for name, rows in exported.files.items():
            print(f"{args.out / name}: {rows} rows")
    return 0
