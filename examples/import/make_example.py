"""Writes the example history in this folder: a small platform's merchants, stores, staff, products,
past rooms, interactions and orders, as a platform would export them (JSONL and CSV), from the seeded
simulator.

    .venv/bin/python examples/import/make_example.py [--out examples/import] [--merchants 40] ...

The committed files are its output with the defaults; `bench/bench_import.py` writes larger sets with
the same code. Ids are the platform's own (`m7`, `r12`, ...): roomfeed keeps them.
"""

from __future__ import annotations

import argparse
import csv
import gzip
import random
import sys
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import IO, Any, cast

import orjson

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from events.vocabulary import HEARTBEAT, PURCHASE  # noqa: E402
from simulator.market import Marketplace  # noqa: E402

CITIES = ("Shanghai", "Hangzhou", "Shenzhen", "Chengdu", "Beijing", "Guangzhou")
ROLES = ("host", "beauty advisor", "stylist", "store manager")
PRICES = {"low": (9, 60), "mid": (60, 300), "high": (300, 1500), "luxury": (1500, 9000)}


def _csv(path: Path, columns: list[str], rows: Iterable[dict[str, Any]]) -> int:
    n = 0
    with path.open("w", newline="", encoding="utf-8") as f:
        writer = csv.DictWriter(f, fieldnames=columns)
        writer.writeheader()
        for row in rows:
            writer.writerow({k: ("|".join(v) if isinstance(v, list) else v) for k, v in row.items()})
            n += 1
    return n


def _open(path: Path) -> IO[bytes]:
    if path.suffix == ".gz":  # mtime 0: the same history gives the same bytes
        gz = gzip.GzipFile(filename="", mode="wb", compresslevel=9, fileobj=path.open("wb"), mtime=0)
        return cast(IO[bytes], gz)
    return path.open("wb")


def _jsonl(path: Path, rows: Iterable[dict[str, Any]]) -> int:
    n = 0
    with _open(path) as f:
        for row in rows:
            f.write(orjson.dumps(row) + b"\n")
            n += 1
    return n


def write_history(
    out: Path,
    *,
    seed: int = 11,
    merchants: int = 80,
    viewers: int = 3000,
    days: int = 5,
    interactions_name: str = "interactions.jsonl.gz",
    heartbeats: bool = False,
) -> dict[str, int]:
    """Write one platform's history to `out`; returns the lines per file."""
    market = Marketplace(seed=seed, n_merchants=merchants, n_viewers=viewers, days=days)
    rng = random.Random(seed)
    out.mkdir(parents=True, exist_ok=True)
    start_s = market.config.start_ms // 1000
    counts: dict[str, int] = {}

    counts["merchants.jsonl"] = _jsonl(
        out / "merchants.jsonl",
        (
            {
                "merchant_id": m.merchant_id,
                "name": f"{m.category.title()} shop {m.merchant_id[1:]}",
                "category": m.category,
                "description": f"{m.price_band} {m.category}, {m.format.replace('_', ' ')}",
                "created_at": start_s - 86_400 * rng.randint(30, 400),
            }
            for m in market.merchants
        ),
    )
    stores = [
        {
            "store_id": f"{m.merchant_id}-s{k}",
            "merchant_id": m.merchant_id,
            "name": f"{CITIES[(i + k) % len(CITIES)]} store",
            "city": CITIES[(i + k) % len(CITIES)],
        }
        for i, m in enumerate(market.merchants)
        for k in range(1 + i % 2)
    ]
    counts["stores.csv"] = _csv(out / "stores.csv", ["store_id", "merchant_id", "name", "city"], stores)
    counts["staff.csv"] = _csv(
        out / "staff.csv",
        ["staff_id", "store_id", "name", "role"],
        (
            {
                "staff_id": f"{s['store_id']}-{k}",
                "store_id": s["store_id"],
                "name": f"Staff {k}",
                "role": ROLES[k],
            }
            for s in stores
            for k in range(2)
        ),
    )
    products = list(_products(market, rng))
    counts["products.csv"] = _csv(
        out / "products.csv",
        ["product_id", "merchant_id", "title", "price", "currency", "category"],
        products,
    )
    counts["rooms.csv"] = _csv(
        out / "rooms.csv",
        [
            "room_id",
            "merchant_id",
            "title",
            "category",
            "host",
            "tags",
            "price_band",
            "format",
            "status",
            "started_at",
            "ended_at",
            "stream_url",
        ],
        (
            {
                "room_id": r.room_id,
                "merchant_id": r.merchant_id,
                "title": f"{r.features.category.title()} live {r.room_id[1:]}",
                "category": r.features.category,
                "host": r.features.host,
                "tags": [t.replace("/", "-") for t in r.features.tags],
                "price_band": r.features.price_band,
                "format": r.features.format,
                "status": "ended",
                "started_at": r.live_from_ms // 1000,
                "ended_at": r.live_until_ms // 1000,
                "stream_url": f"https://cdn.example/live/{r.room_id}.m3u8",
            }
            for r in market.rooms
        ),
    )
    counts[interactions_name] = _jsonl(out / interactions_name, _interactions(market, heartbeats))
    prices = {p["product_id"]: p["price"] for p in products}
    counts["orders.csv"] = _csv(
        out / "orders.csv",
        [
            "order_id",
            "merchant_id",
            "product_id",
            "quantity",
            "unit_price",
            "currency",
            "ordered_at",
            "viewer_id",
            "room_id",
        ],
        _orders(market, prices),
    )
    return counts


def _products(market: Marketplace, rng: random.Random) -> Iterator[dict[str, Any]]:
    for m in market.merchants:
        low, high = PRICES[m.price_band]
        for k in range(10):
            yield {
                "product_id": f"p{m.merchant_id[1:]}-{k}",
                "merchant_id": m.merchant_id,
                "title": f"{m.category.title()} item {k}",
                "price": f"{rng.uniform(low, high):.2f}",
                "currency": "CNY",
                "category": m.category,
            }


def _orders(market: Marketplace, prices: dict[str, str]) -> Iterator[dict[str, Any]]:
    """The platform's order system's record of each purchase (at the product's price, one unit)."""
    for event in market.events():
        if event["type"] == PURCHASE:
            yield {
                "order_id": event["order_id"],
                "merchant_id": event["merchant_id"],
                "product_id": event["product_id"],
                "quantity": 1,
                "unit_price": prices[str(event["product_id"])],
                "currency": "CNY",
                "ordered_at": event["ts"],
                "viewer_id": event["viewer_id"],
                "room_id": event["room_id"],
            }


def _interactions(market: Marketplace, heartbeats: bool) -> Iterator[dict[str, Any]]:
    """The simulator's events as the platform logged them (ingest adds merchant_id itself)."""
    for event in market.events():
        if event["type"] == HEARTBEAT and not heartbeats:
            continue
        yield {k: v for k, v in event.items() if k != "merchant_id"}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=Path(__file__).resolve().parent)
    parser.add_argument("--seed", type=int, default=11)
    parser.add_argument("--merchants", type=int, default=80)
    parser.add_argument("--viewers", type=int, default=3000)
    parser.add_argument("--days", type=int, default=5)
    args = parser.parse_args(argv)
    counts = write_history(
        args.out, seed=args.seed, merchants=args.merchants, viewers=args.viewers, days=args.days
    )
    for name, lines in counts.items():
        print(f"{args.out / name}: {lines} lines")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
