"""The command line's composition root: the domains' verbs (`VERBS`) that roomfeed/cli.py offers.

The verbs load what no API process serves: the world evaluation (worlds/), the bulk import and export
(bulk/), the local marketplace (devtools.demo), the trainer's command line. They were in the API's root
(roomfeed/assembly.py) until every `roomfeed serve` process imported them too: importing the API's root
took 1.33 s of CPU and 151 MB RSS with them, 1.19 s and 142 MB without (medians of 5 alternating fresh
interpreters on the shared 2-core host); this root keeps them apart, as roomfeed/worker_assembly.py keeps
the worker's sinks.
"""

from __future__ import annotations

import argparse
import functools
import sys
from collections.abc import Mapping
from typing import Any

import asyncpg

from alliance.orders import OrderAttribution
from bulk import cli as bulk_cli
from devtools import demo
from events.rebuild import rebuild_live_stats
from feed.replay import FeedPage
from ranking import cli as ranking_cli
from roomfeed.reach import unreachable
from roomfeed.redis_client import create_redis
from roomfeed.settings import Settings
from roomfeed.verbs import Verb
from roomfeed.worker_assembly import WORKER
from rooms import cli as rooms_cli
from rooms.orders import OrderBook
from worlds import cli as worlds_cli

# --- Redis rebuilt from PostgreSQL and Kafka ---------------------------------------------------


async def rebuild_command(settings: Settings, args: argparse.Namespace) -> int:
    """Redis holds only derived state: the rooms step rebuilds the live index and deal gates from
    PostgreSQL; with --live-stats the events step replays Kafka into live stats and room heat."""
    await rooms_cli.rebuild_command(settings, args)
    if not args.live_stats:
        return 0
    redis = create_redis(settings)
    try:
        replays = await rebuild_live_stats(settings, redis)
    except RuntimeError as exc:  # aiokafka's errors are RuntimeErrors too: roomfeed.cli names the service
        if unreachable(exc, settings) is not None:
            raise
        print(f"roomfeed rebuild: {exc}", file=sys.stderr)
        return 2
    finally:
        await redis.aclose(close_connection_pool=True)
    for r in replays:
        print(f"{r.sink}: replayed {sum(r.records_to.values())} record(s) from offset 0 ({r.seconds:.2f}s)")
    return 0


def add_rebuild_args(parser: argparse.ArgumentParser) -> None:
    rooms_cli.add_rebuild_args(parser)
    parser.add_argument(
        "--live-stats", action="store_true", help="also replay Kafka into live stats (worker stopped)"
    )


# --- the domains' verbs ------------------------------------------------------------------------


def _feed_page(schedule: Any) -> Any:
    """The feed's page for replayed targets (feed.replay.FeedPage): the trainer's gate judges what the
    feed would serve, through the feed's own filters, diversity and exploration."""
    return FeedPage(schedule.room_features)


def order_book(pool: asyncpg.Pool) -> OrderBook:
    """The rooms domain's order book with the alliance subscribed, as Services.build wires it."""
    book = OrderBook(pool)
    book.subscribe(OrderAttribution(pool))
    return book


VERBS: Mapping[str, Verb] = {
    "worker": WORKER,
    "train": Verb(
        "train LightFM and the ranker, gate and register them",
        ranking_cli.add_train_args,
        functools.partial(ranking_cli.train_command, page_of=_feed_page),
    ),
    "evaluate": Verb(
        "evaluate the ranker on the simulator (--world NAME|all: in every simulated world)",
        worlds_cli.add_evaluate_args,
        worlds_cli.evaluate_command,
    ),
    "rebuild": Verb(
        "rebuild Redis state from PostgreSQL (and Kafka with --live-stats)", add_rebuild_args, rebuild_command
    ),
    "demo": Verb("run the whole marketplace locally", demo.add_demo_args, demo.demo_command),
    "import": Verb(
        "import a platform's history: merchants, rooms, interactions (docs/import.md)",
        bulk_cli.add_import_args,
        # the first model's gate as train's; past orders reach the alliance's attribution as live ones do
        functools.partial(bulk_cli.import_command, page_of=_feed_page, order_book=order_book),
    ),
    "export": Verb(
        "a merchant's own rooms, attributed orders and ledger as CSV",
        bulk_cli.add_export_args,
        bulk_cli.export_command,
    ),
}
