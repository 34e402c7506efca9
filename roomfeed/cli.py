"""`roomfeed`: one entry point, one verb per process or chore.

    roomfeed services up|down|status     local PostgreSQL, Redis and Apache Kafka (no Docker)
    roomfeed migrate                     apply pending SQL migrations
    roomfeed serve [--workers N]         the HTTP API and console
    roomfeed worker                      the Kafka consumers (realtime, archive, alliance)
    roomfeed train [--every 10m]         train a LightFM model from the archive, register it
    roomfeed evaluate                    the availability-aware evaluation, table and plot
    roomfeed keys create --role operator create a key (shown once)
    roomfeed keys viewer-token VIEWER    sign a viewer token (what the platform login does)
    roomfeed rebuild [--live-stats]      rebuild Redis: the live index from PostgreSQL, live stats from Kafka
    roomfeed demo                        the whole marketplace, running

Each domain adds its verbs through `add_<verb>_args(parser)` / `<verb>_command(settings, args)`
functions in its own `cli` module, listed in VERBS.
"""

from __future__ import annotations

import argparse
import asyncio
import importlib
import os
import sys
from collections.abc import Callable
from typing import Any

from roomfeed.settings import Settings

# verb → (module, add-args function, command function, help)
VERBS: dict[str, tuple[str, str, str, str]] = {
    "worker": ("events.cli", "add_worker_args", "worker_command", "run the Kafka consumers"),
    "train": ("ranking.cli", "add_train_args", "train_command", "train and register a LightFM model"),
    "evaluate": (
        "simulator.evaluation",
        "add_evaluate_args",
        "evaluate_command",
        "evaluate the ranker on the simulator",
    ),
    "demo": ("console.demo", "add_demo_args", "demo_command", "run the whole marketplace locally"),
}


def _serve(settings: Settings, args: argparse.Namespace) -> int:
    import uvicorn

    from roomfeed.db import migrate
    from roomfeed.observability import configure_logging

    configure_logging(settings.log_level)
    if not args.no_migrate:
        asyncio.run(migrate(settings.database_url))
    if args.workers > 1:  # one /metrics answer sums every worker (Prometheus multiprocess mode)
        from roomfeed.observability import prepare_multiprocess_metrics

        prepare_multiprocess_metrics(settings.data_dir / "prometheus" / f"serve-{os.getpid()}")
    uvicorn.run(
        "roomfeed.cli:app_factory",
        factory=True,
        host=args.host or settings.host,
        port=args.port or settings.port,
        workers=args.workers,
        log_config=None,
        access_log=False,
        loop="uvloop",
        http="httptools",
        lifespan="on",
        backlog=4096,
    )
    return 0


def app_factory() -> Any:
    from roomfeed.app import create_app

    settings = Settings.from_env()
    return create_app(settings, access_log=os.environ.get("ROOMFEED_ACCESS_LOG", "0") == "1")


def _migrate(settings: Settings, args: argparse.Namespace) -> int:
    from roomfeed.db import migrate

    applied = asyncio.run(migrate(settings.database_url))
    print(f"applied {len(applied)} migration(s)" + (f": {', '.join(map(str, applied))}" if applied else ""))
    return 0


def _keys(settings: Settings, args: argparse.Namespace) -> int:
    from roomfeed.auth import create_key, sign_viewer_token

    if args.keys_verb == "viewer-token":
        print(sign_viewer_token(settings.viewer_token_secret, args.viewer_id, ttl_seconds=args.ttl))
        return 0

    async def run() -> tuple[str, str]:
        import asyncpg

        from roomfeed.db import migrate

        await migrate(settings.database_url)
        pool = await asyncpg.create_pool(settings.database_url, min_size=1, max_size=1)
        try:
            return await create_key(pool, args.role, args.merchant_id, args.label)
        finally:
            await pool.close()

    key_id, key = asyncio.run(run())
    print(f"key_id: {key_id}\nkey:    {key}\n(the key is shown once; roomfeed stores only its hash)")
    return 0


def _rebuild(settings: Settings, args: argparse.Namespace) -> int:
    """Redis holds only derived state: the rooms step rebuilds the live index and deal gates from
    PostgreSQL; with --live-stats the events step replays Kafka into live stats and room heat."""
    # The domains are imported by name, as for VERBS: the plumbing does not type-check through them.
    asyncio.run(importlib.import_module("rooms.cli").rebuild_command(settings, args))
    if not args.live_stats:
        return 0

    async def live_stats() -> int:
        from roomfeed.redis_client import create_redis

        rebuild_live_stats = importlib.import_module("events.rebuild").rebuild_live_stats
        redis = create_redis(settings)
        try:
            replays = await rebuild_live_stats(settings, redis)
        except RuntimeError as exc:
            print(f"roomfeed rebuild: {exc}", file=sys.stderr)
            return 2
        finally:
            await redis.aclose(close_connection_pool=True)
        for r in replays:
            print(
                f"{r.sink}: replayed {sum(r.records_to.values())} record(s) from offset 0 ({r.seconds:.2f}s)"
            )
        return 0

    return asyncio.run(live_stats())


def _services(settings: Settings, args: argparse.Namespace) -> int:
    from roomfeed.services import cli_main

    return cli_main([args.action])


def build_parser() -> tuple[
    argparse.ArgumentParser, dict[str, Callable[[Settings, argparse.Namespace], Any]]
]:
    parser = argparse.ArgumentParser(prog="roomfeed", description="live-shopping swipe-feed backend")
    verbs = parser.add_subparsers(dest="verb", required=True)
    handlers: dict[str, Callable[[Settings, argparse.Namespace], Any]] = {}

    p = verbs.add_parser("services", help="start/stop local PostgreSQL, Redis and Kafka")
    p.add_argument("action", choices=["up", "down", "status"])
    handlers["services"] = _services

    verbs.add_parser("migrate", help="apply pending migrations")
    handlers["migrate"] = _migrate

    p = verbs.add_parser("serve", help="run the HTTP API")
    p.add_argument("--host")
    p.add_argument("--port", type=int)
    p.add_argument("--workers", type=int, default=1)
    p.add_argument("--no-migrate", action="store_true")
    handlers["serve"] = _serve

    p = verbs.add_parser("rebuild", help="rebuild Redis state from PostgreSQL (and Kafka with --live-stats)")
    p.add_argument("--no-migrate", action="store_true", help="do not apply pending migrations first")
    p.add_argument(
        "--live-stats", action="store_true", help="also replay Kafka into live stats (worker stopped)"
    )
    handlers["rebuild"] = _rebuild

    p = verbs.add_parser("keys", help="operator/merchant keys and viewer tokens")
    kv = p.add_subparsers(dest="keys_verb", required=True)
    c = kv.add_parser("create")
    c.add_argument("--role", choices=["operator", "merchant"], required=True)
    c.add_argument("--merchant-id")
    c.add_argument("--label", default="")
    t = kv.add_parser("viewer-token")
    t.add_argument("viewer_id")
    t.add_argument("--ttl", type=int, default=30 * 24 * 3600)
    handlers["keys"] = _keys

    for verb, (module_name, add_args, command, help_text) in VERBS.items():
        p = verbs.add_parser(verb, help=help_text)
        try:
            module = importlib.import_module(module_name)
        except ModuleNotFoundError:
            continue
        getattr(module, add_args)(p)

        def run(settings: Settings, args: argparse.Namespace, _m: Any = module, _c: str = command) -> Any:
            result = getattr(_m, _c)(settings, args)
            return asyncio.run(result) if asyncio.iscoroutine(result) else result

        handlers[verb] = run
    return parser, handlers


def main(argv: list[str] | None = None) -> int:
    parser, handlers = build_parser()
    args = parser.parse_args(argv)
    handler = handlers.get(args.verb)
    if handler is None:
        print(f"roomfeed {args.verb}: not available in this build", file=sys.stderr)
        return 2
    result = handler(Settings.from_env(), args)
    return int(result or 0)


if __name__ == "__main__":
    sys.exit(main())
