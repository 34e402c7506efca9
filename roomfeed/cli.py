"""`roomfeed`: one entry point, one verb per process or chore.

    roomfeed services up|down|status     local PostgreSQL, Redis and Apache Kafka (no Docker)
    roomfeed migrate                     apply pending SQL migrations
    roomfeed serve [--workers N]         the HTTP API and console
    roomfeed worker                      the Kafka consumers (realtime, archive, alliance)
    roomfeed train [--every 10m]         train a LightFM model from the archive, register it
    roomfeed evaluate                    the availability-aware evaluation, table and plot
    roomfeed keys create --role operator create a key (shown once)
    roomfeed keys list|revoke [--json]   list keys (and signing key ids), revoke a key
    roomfeed keys viewer-token VIEWER    sign a viewer token (what the platform login does)
    roomfeed rebuild [--live-stats]      rebuild Redis: the live index from PostgreSQL, live stats from Kafka
    roomfeed demo                        the whole marketplace, running
    roomfeed import PATH... [--json]     a platform's history: merchants ... rooms, interactions, orders, a first model
    roomfeed export --key KEY [--json]   a merchant's own rooms, attributed orders and ledger as CSV

The plumbing verbs are here; the domains' verbs (worker, train, evaluate, rebuild, demo) come from
the command line's composition root's `VERBS` (roomfeed.cli_assembly).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import shutil
import sys
from collections.abc import Callable, Mapping
from typing import Any

import orjson

from roomfeed import __version__
from roomfeed.logs import configure_logging
from roomfeed.reach import EXIT_UNAVAILABLE, unreachable
from roomfeed.settings import Settings, SettingsError
from roomfeed.verbs import Verb

# How long `serve --workers N`'s supervisor waits for a worker to answer its health check before
# killing it as hung. A spawned worker answers only once it has started Python and imported
# `roomfeed.cli` again (multiprocessing's spawn re-imports the main module), which took 17 s on
# the shared 2-core host (load 10, no bytecode cache); uvicorn's default of 5 s killed every worker
# before it answered, and restarted it, forever.
WORKER_HEALTHCHECK_TIMEOUT_S = 60


def _serve(settings: Settings, args: argparse.Namespace) -> int:
    import uvicorn

    from roomfeed.db import migrate

    if not args.no_migrate:
        asyncio.run(migrate(settings.database_url))
    metrics_folder = None
    if args.workers > 1:  # one /metrics answer sums every worker (Prometheus multiprocess mode)
        from roomfeed.observability import prepare_multiprocess_metrics

        metrics_folder = prepare_multiprocess_metrics(
            settings.data_dir / "prometheus" / f"serve-{os.getpid()}"
        )
    try:
        uvicorn.run(
            "roomfeed.assembly:app_from_env",
            factory=True,
            host=args.host or settings.host,
            port=args.port or settings.port,
            workers=args.workers,
            timeout_worker_healthcheck=WORKER_HEALTHCHECK_TIMEOUT_S,
            log_config=None,
            access_log=False,
            loop="uvloop",
            http="httptools",
            lifespan="on",
            backlog=4096,
        )
    finally:
        if metrics_folder is not None:  # this run's metric files: nobody reads them once it ends
            shutil.rmtree(metrics_folder, ignore_errors=True)
    return 0


def _migrate(settings: Settings, args: argparse.Namespace) -> int:
    from roomfeed.db import migrate

    applied = asyncio.run(migrate(settings.database_url))
    if args.json:
        print(orjson.dumps({"applied": applied}).decode())
    else:
        print(
            f"applied {len(applied)} migration(s)" + (f": {', '.join(map(str, applied))}" if applied else "")
        )
    return 0


def _keys(settings: Settings, args: argparse.Namespace) -> int:
    from roomfeed import keys_cli

    return asyncio.run(keys_cli.run(settings, args))


def _services(settings: Settings, args: argparse.Namespace) -> int:
    from devtools.services import cli_main

    return cli_main([args.action])


def _domain_verbs(chosen: str | None) -> Mapping[str, Verb]:
    """The domains' verbs, from the command line's root (roomfeed/cli_assembly.py). Imported here, not at the top: `serve --workers
    N` spawns workers that import this module again before they answer the supervisor's health
    check; the root (every domain, scipy, LightFM) is what they load next, as the app, while already
    answering it. `roomfeed worker` takes its verb from the worker's own root, which loads the events
    and alliance domains only (roomfeed/worker_assembly.py: ~1.4 s of CPU less at every start)."""
    if chosen == "worker":
        from roomfeed.worker_assembly import WORKER

        return {"worker": WORKER}
    from roomfeed.cli_assembly import VERBS

    return VERBS


def build_parser(
    chosen: str | None = None,
) -> tuple[argparse.ArgumentParser, dict[str, Callable[[Settings, argparse.Namespace], Any]]]:
    """The command line. `chosen`: the verb about to run (the first argument); when it is `worker`,
    the other domain verbs are left out and their modules are not loaded."""
    parser = argparse.ArgumentParser(prog="roomfeed", description="live-shopping swipe-feed backend")
    parser.add_argument("--version", action="version", version=f"roomfeed {__version__}")
    verbs = parser.add_subparsers(dest="verb", required=True)
    handlers: dict[str, Callable[[Settings, argparse.Namespace], Any]] = {}

    p = verbs.add_parser("services", help="start/stop local PostgreSQL, Redis and Kafka")
    p.add_argument("action", choices=["up", "down", "status"])
    handlers["services"] = _services

    p = verbs.add_parser("migrate", help="apply pending migrations")
    p.add_argument("--json", action="store_true", help="print the versions applied as JSON")
    handlers["migrate"] = _migrate

    p = verbs.add_parser("serve", help="run the HTTP API")
    p.add_argument("--host")
    p.add_argument("--port", type=int)
    p.add_argument("--workers", type=int, default=1)
    p.add_argument("--no-migrate", action="store_true")
    handlers["serve"] = _serve

    p = verbs.add_parser("keys", help="operator/merchant/order-system keys, signing keys and viewer tokens")
    from roomfeed.keys_cli import add_keys_args

    add_keys_args(p)
    handlers["keys"] = _keys

    for name, verb in _domain_verbs(chosen).items():
        verb.add_args(verbs.add_parser(name, help=verb.help))
        handlers[name] = verb.run
    return parser, handlers


def main(argv: list[str] | None = None) -> int:
    """Run one verb. A setting that cannot be used, or a service that cannot be reached, ends it with
    one line on stderr naming the variable, or the service and its URL (no traceback), and a non-zero
    status (2, and 69 = EX_UNAVAILABLE)."""
    given = sys.argv[1:] if argv is None else argv
    parser, handlers = build_parser(given[0] if given else None)
    args = parser.parse_args(given)
    try:
        settings = Settings.from_env()
    except SettingsError as exc:
        print(f"roomfeed: {exc}", file=sys.stderr)
        return 2
    configure_logging(settings.log_level)
    try:
        result = handlers[args.verb](settings, args)
    except KeyboardInterrupt:
        return 130
    except Exception as exc:
        down = unreachable(exc, settings)
        if down is None:
            raise
        print(f"roomfeed {args.verb}: {down.line()}", file=sys.stderr)
        return EXIT_UNAVAILABLE
    return int(result or 0)


if __name__ == "__main__":
    sys.exit(main())
