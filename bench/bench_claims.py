"""Benchmark: 5,000 concurrent claims on a 100-unit flash deal — correctness counts and throughput.

    .venv/bin/python bench/bench_claims.py [--attempts 5000] [--units 100]

Through the real HTTP app: `create_app` with its lifespan (real PostgreSQL, Redis, Kafka), driven
in-process by httpx's ASGI transport (no sockets, so the figure is the app's, not the network's).
Starts the project services if needed, with a throwaway database and a private redis-server.

Runs, each on a fresh deal:
1. http, limit 1: `attempts` distinct viewers claim at once → exactly `units` successes, the rest
   409 sold_out, stock never negative, nobody above the limit;
2. http, limit 2: units/4 viewers share the attempts (each tries ~200 times at once) → each holds
   exactly 2, the rest answer 409 limit_reached;
3. the same claims through the domain function `DealBook.claim` (Redis gate + PostgreSQL), and the
   baseline without the gate (every attempt is a PostgreSQL transaction on the deal's row), so the
   gate's worth is measured in the same run.
"""

from __future__ import annotations

import argparse
import asyncio
import shlex
import sys
import time
from collections import Counter
from typing import Any

from bench_live_index import REPO, BenchEnv, bench_env, write_results

sys.path.insert(0, str(REPO))

import httpx  # noqa: E402

from roomfeed.assembly import create_app  # noqa: E402
from roomfeed.auth import create_key, sign_viewer_token  # noqa: E402
from roomfeed.errors import Conflict  # noqa: E402
from rooms.deals import DealBook  # noqa: E402


async def new_deal(client: httpx.AsyncClient, headers: dict[str, str], units: int, limit: int) -> str:
    room = (
        await client.post(
            "/v1/rooms",
            json={"title": "Flash", "category": "beauty", "stream_url": "https://live.example/f.m3u8"},
            headers=headers,
        )
    ).json()
    await client.post(f"/v1/rooms/{room['room_id']}/live", headers=headers)
    product = (
        await client.post(
            "/v1/products", json={"title": "Serum", "price": 99, "currency": "CNY"}, headers=headers
        )
    ).json()
    r = await client.post(
        f"/v1/rooms/{room['room_id']}/deals",
        json={
            "product_id": product["product_id"],
            "price": 49,
            "quantity": units,
            "per_viewer_limit": limit,
            "ends_at": time.time() + 3600,
        },
        headers=headers,
    )
    assert r.status_code == 201, r.text
    return str(r.json()["deal_id"])


async def audit(env: BenchEnv, deal_id: str, units: int, limit: int) -> dict[str, int]:
    row = await env.pool.fetchrow(
        """
        SELECT d.remaining,
               (SELECT coalesce(sum(quantity), 0) FROM deal_claims WHERE deal_id = d.deal_id) AS sold,
               (SELECT coalesce(max(claimed), 0) FROM deal_viewer_claims WHERE deal_id = d.deal_id) AS top,
               (SELECT count(*) FROM deal_viewer_claims WHERE deal_id = d.deal_id AND claimed > $2) AS over
          FROM deals d WHERE d.deal_id = $1
        """,
        deal_id,
        limit,
    )
    return {
        "remaining": row["remaining"],
        "sold": int(row["sold"]),
        "oversold": max(0, int(row["sold"]) - units) + (1 if row["remaining"] < 0 else 0),
        "max_per_viewer": int(row["top"]),
        "viewers_over_limit": int(row["over"]),
    }


async def http_run(
    client: httpx.AsyncClient, secret: str, deal_id: str, viewers: list[str]
) -> tuple[Counter[str], float]:
    tokens = {v: sign_viewer_token(secret, v) for v in set(viewers)}

    async def claim(viewer: str) -> str:
        r = await client.post(
            f"/v1/deals/{deal_id}/claim", headers={"Authorization": f"Bearer {tokens[viewer]}"}
        )
        return "ok" if r.status_code == 201 else f"{r.status_code} {r.json()['error']['code']}"

    started = time.perf_counter()
    outcomes = await asyncio.gather(*(claim(v) for v in viewers))
    return Counter(outcomes), time.perf_counter() - started


async def domain_run(book: DealBook, deal_id: str, attempts: int, gated: bool) -> tuple[Counter[str], float]:
    terms = await book.terms(deal_id)
    assert terms is not None
    gate = asyncio.Semaphore(48)  # the same in-flight bound the gated path applies

    async def claim(i: int) -> str:
        try:
            if gated:
                await book.claim(deal_id, f"d{i}")
            else:
                async with gate:
                    await book._commit(terms, f"d{i}", 1, None)
            return "ok"
        except Conflict as refused:
            return refused.code

    started = time.perf_counter()
    outcomes = await asyncio.gather(*(claim(i) for i in range(attempts)))
    return Counter(outcomes), time.perf_counter() - started


async def run(args: argparse.Namespace) -> tuple[dict[str, Any], list[str]]:
    async with bench_env() as env:
        app = create_app(env.settings, access_log=False)
        async with app.router.lifespan_context(app):
            await app.resources.wait_for_kafka(30)
            _, operator = await create_key(env.pool, "operator", label="bench")
            transport = httpx.ASGITransport(app=app)
            async with httpx.AsyncClient(transport=transport, base_url="http://bench", timeout=120) as client:
                r = await client.post(
                    "/v1/ops/merchants",
                    json={"name": "Bench"},
                    headers={"Authorization": f"Bearer {operator}"},
                )
                headers = {"Authorization": f"Bearer {r.json()['key']}"}
                secret = env.settings.viewer_token_secret

                deal1 = await new_deal(client, headers, args.units, 1)
                out1, secs1 = await http_run(client, secret, deal1, [f"v{i}" for i in range(args.attempts)])
                audit1 = await audit(env, deal1, args.units, 1)

                deal2 = await new_deal(client, headers, args.units, 2)
                crowd = max(1, args.units // 4)  # few viewers, many attempts each: the limit binds first
                viewers2 = [f"w{i % crowd}" for i in range(args.attempts)]
                out2, secs2 = await http_run(client, secret, deal2, viewers2)
                audit2 = await audit(env, deal2, args.units, 2)

                # Ceiling of the in-process HTTP path: the same number of concurrent GET /healthz.
                started = time.perf_counter()
                await asyncio.gather(*(client.get("/healthz") for _ in range(args.attempts)))
                healthz_secs = time.perf_counter() - started

                book = DealBook(env.pool, env.redis)
                deal3 = await new_deal(client, headers, args.units, 1)
                out3, secs3 = await domain_run(book, deal3, args.attempts, gated=True)
                audit3 = await audit(env, deal3, args.units, 1)
                deal4 = await new_deal(client, headers, args.units, 1)
                out4, secs4 = await domain_run(book, deal4, args.attempts, gated=False)
                audit4 = await audit(env, deal4, args.units, 1)
            await app.services.rooms.relay.drain()

    metrics: dict[str, Any] = {
        "attempts": args.attempts,
        "units": args.units,
        "successes": out1["ok"],
        "oversold": audit1["oversold"],
        "sold_out_409": out1["409 sold_out"],
        "other_outcomes": sum(n for k, n in out1.items() if k not in ("ok", "409 sold_out")),
        "stock_remaining": audit1["remaining"],
        "viewers_over_limit": audit1["viewers_over_limit"] + audit2["viewers_over_limit"],
        "http_claims_per_s": round(args.attempts / secs1, 1),
        "http_seconds": round(secs1, 2),
        "http_healthz_per_s": round(args.attempts / healthz_secs, 1),
        "limit2_successes": out2["ok"],
        "limit2_limit_reached_409": out2["409 limit_reached"],
        "limit2_max_per_viewer": audit2["max_per_viewer"],
        "limit2_oversold": audit2["oversold"],
        "domain_gated_claims_per_s": round(args.attempts / secs3, 1),
        "domain_gated_successes": out3["ok"],
        "domain_pg_only_claims_per_s": round(args.attempts / secs4, 1),
        "domain_pg_only_successes": out4["ok"],
        "oversold_any_run": audit1["oversold"] + audit2["oversold"] + audit3["oversold"] + audit4["oversold"],
    }
    lines = [
        f"HTTP app (in-process ASGI), {args.attempts:,} concurrent claims, {args.units} units, limit 1 per viewer:",
        f"  successes {out1['ok']}, 409 sold_out {out1['409 sold_out']}, other {metrics['other_outcomes']}, "
        f"oversold {audit1['oversold']}, stock left {audit1['remaining']}",
        f"  {metrics['http_claims_per_s']:,} attempts/s ({secs1:.2f} s for all); "
        f"ceiling, GET /healthz the same way: {metrics['http_healthz_per_s']:,}/s",
        f"HTTP app, {max(1, args.units // 4)} viewers sharing {args.attempts:,} attempts, limit 2: successes {out2['ok']}, "
        f"max held by one viewer {audit2['max_per_viewer']}, oversold {audit2['oversold']}, outcomes {dict(out2)}",
        f"domain DealBook.claim (Redis gate + PostgreSQL): {metrics['domain_gated_claims_per_s']:,} attempts/s, "
        f"successes {out3['ok']}, oversold {audit3['oversold']}",
        f"baseline PostgreSQL only (no gate):             {metrics['domain_pg_only_claims_per_s']:,} attempts/s, "
        f"successes {out4['ok']}, oversold {audit4['oversold']}",
    ]
    return metrics, lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--attempts", type=int, default=5_000)
    parser.add_argument("--units", type=int, default=100)
    args = parser.parse_args()
    command = ".venv/bin/python bench/bench_claims.py" + (
        " " + shlex.join(sys.argv[1:]) if sys.argv[1:] else ""
    )
    metrics, lines = asyncio.run(run(args))
    print("\n".join(lines))
    write_results(
        "claims", command, metrics, lines, "claims — 5,000 concurrent claims on a 100-unit deal (rooms)"
    )
    if metrics["successes"] != args.units or metrics["oversold_any_run"] or metrics["viewers_over_limit"]:
        sys.exit("claims benchmark: correctness check failed")


if __name__ == "__main__":
    main()
