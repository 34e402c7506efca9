"""The composition root: the one module that knows every domain, and builds each process from them.

Each part is built in dependency order and handed what it depends on as typed constructor
arguments (a domain that needs another declares a Protocol; mypy checks the real class here):

    plumbing  Resources: PostgreSQL pool, Redis, the Redis lane, Kafka producer, leases
    rooms     Rooms                   merchants, rooms, deals, consults, the live index
    ranking   Ranking                 the model registry and the watcher that serves a promoted model
    alliance  Alliance(rooms)         asks the rooms domain which merchants, stores and staff exist
    feed      Feed(FeedInputs(rooms, events' LiveStats, ranking, alliance))
    events    Events(rooms, feed's sessions, LiveStats)   ingest names each event's merchant and
                                      refuses events in another viewer's session
    console   Console(events, rooms, alliance)

The API process (`create_app`) starts them in the order rooms, events, ranking, alliance, feed,
console once its connections are open and stops them in reverse. The other processes have roots of
their own, so an API process loads only what it serves: the worker runs the events domain's sinks and
the alliance's (roomfeed/worker_assembly.py: those two domains only), and roomfeed/cli.py offers the
domains' verbs (train, evaluate, import, demo...) from roomfeed/cli_assembly.py. No domain imports a
root, and nothing else in roomfeed/ imports a domain (tests/test_architecture.py).
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass, field
from typing import Protocol

from starlette.routing import BaseRoute

from alliance import http as alliance_http
from alliance.http import Alliance
from console import http as console_http
from console.http import Console
from events import http as events_http
from events.heat import RoomHeat
from events.http import Events
from events.live_stats import LiveStats
from feed import http as feed_http
from feed.http import Feed, FeedTuning
from feed.sources import FeedInputs
from ranking import http as ranking_http
from ranking.http import Ranking
from roomfeed.app import Api
from roomfeed.resources import Resources
from roomfeed.settings import Settings
from rooms import http as rooms_http
from rooms.http import Rooms

log = logging.getLogger("roomfeed.assembly")
# A part's stop() past this is abandoned (its own waits are shorter: impressions drain 2 s, sinks 10 s).
PART_STOP_S = 30.0


class Part(Protocol):
    """A domain's services in the API process: started after those it depends on."""

    async def start(self) -> None: ...

    async def stop(self) -> None: ...


@dataclass(frozen=True)
class Tuning:
    """How often the API process's background parts poll (tests shorten them)."""

    model_poll_s: float = 5.0
    feed: FeedTuning = FeedTuning()


@dataclass
class Services:
    """Every domain's services in one API process, in dependency order."""

    rooms: Rooms
    events: Events
    ranking: Ranking
    alliance: Alliance
    feed: Feed
    console: Console
    _started: list[Part] = field(default_factory=list)

    @classmethod
    def build(cls, resources: Resources, tuning: Tuning = Tuning()) -> Services:
        rooms = Rooms.build(resources)
        ranking = Ranking.build(resources.pool, resources.redis, model_poll_s=tuning.model_poll_s)
        alliance = Alliance.build(resources, merchants=rooms.catalog, orders=rooms.orders)
        # The events domain's live stats are read by the feed, and ingest reads the feed's sessions
        # (an event in another viewer's session is refused): the stats first, then the feed, then events.
        live_stats = LiveStats(resources.redis)
        feed = Feed.build(
            resources,
            FeedInputs(
                live_index=rooms.live_index,
                live_stats=live_stats,
                models=ranking.watcher,
                code_book=alliance.code_book,
                attribution_book=alliance.attribution_book,
                alliance_boost=alliance.boost,
                room_catalog=rooms.catalog,
                heat=RoomHeat(resources.redis),
                presence=live_stats,
            ),
            tuning.feed,
        )
        events = Events.build(
            resources, rooms=rooms.directory, sessions=feed.service.sessions, live_stats=live_stats
        )
        console = Console.build(
            resources,
            live_stats=events.live_stats,
            live_index=rooms.live_index,
            presence=events.live_stats,
            accounts=alliance.ledger,
            consumer_lag=events.consumer_lag,
        )
        return cls(rooms, events, ranking, alliance, feed, console)

    def parts(self) -> tuple[Part, ...]:
        return (self.rooms, self.events, self.ranking, self.alliance, self.feed, self.console)

    def routes(self) -> list[BaseRoute]:
        return [
            *rooms_http.routes(self.rooms),
            *events_http.routes(self.events),
            *ranking_http.routes(self.ranking),
            *alliance_http.routes(self.alliance),
            *feed_http.routes(self.feed),
            *console_http.routes(self.console),
        ]

    async def start(self) -> None:
        for part in self.parts():
            try:
                await part.start()
            except BaseException:
                await self.stop()
                raise
            self._started.append(part)

    async def stop(self) -> None:
        """Stop the started parts in reverse order; a part that does not stop in PART_STOP_S is left
        behind (logged) so the rest still stop and the process can exit."""
        while self._started:
            part = self._started.pop()
            try:
                await asyncio.wait_for(part.stop(), PART_STOP_S)
            except TimeoutError:
                log.error("%s did not stop in %.0f s; left behind", type(part).__name__, PART_STOP_S)
            except Exception:
                log.exception("%s did not stop cleanly", type(part).__name__)


def create_app(settings: Settings, *, access_log: bool = True, tuning: Tuning = Tuning()) -> Api[Services]:
    """The API process: every domain's services and routes over one set of connections."""
    resources = Resources.create(settings)
    services = Services.build(resources, tuning)
    api = Api(resources, services.routes(), services, access_log=access_log)
    api.metric_refreshers.append(services.events.consumer_lag.refresh)
    return api


def app_from_env() -> Api[Services]:
    """What `roomfeed serve` has uvicorn load in each worker process."""
    settings = Settings.from_env()
    return create_app(settings, access_log=settings.access_log)
