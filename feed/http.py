"""Feed HTTP routes: viewer sessions and pages, viewer blocks, ranking config and experiments (operators).

Handlers parse, authorize, call `feed.service` / `feed.config_store` / `feed.experiments`, and answer.
"""

from __future__ import annotations

from dataclasses import dataclass

import asyncpg
import msgspec
from redis.asyncio import Redis
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute
from threadpoolctl import threadpool_limits

from events.vocabulary import VIEWER_EVENTS
from feed.config_store import ConfigStore, ConfigWatcher
from feed.erasure import ViewerErasure
from feed.experiments import ExperimentBook, check_variants, experiment_report
from feed.impressions import ImpressionPublisher
from feed.models import (
    Block,
    Blocks,
    ConfigHistory,
    ConfigRollback,
    ConfigUpdate,
    ConfigVersion,
    CurrentConfig,
    Entry,
    ErasureReport,
    Experiment,
    ExperimentList,
    ExperimentReport,
    FeedPage,
    FeedPreview,
    FeedQuery,
    NewBlock,
    NewExperiment,
    NewSession,
    PreviewQuery,
    SessionStart,
    changed,
)
from feed.pipeline import FeedPipeline
from feed.service import FeedService
from feed.sessions import SessionBook
from feed.sources import FeedInputs, RoomHeatCache
from ranking.registry import ModelRegistry
from roomfeed.auth import Principal, RateCharge
from roomfeed.errors import Forbidden, NotFound, ValidationFailed
from roomfeed.http import json
from roomfeed.operations import Created, created, operation
from roomfeed.paging import ListQuery
from roomfeed.resources import Resources
from roomfeed.validation import ID_PATTERN, Ident

# A feed process asks the live index "anything changed?" at most every 50 ms, not on every request.
LIVE_INDEX_STALENESS_S = 0.05


@dataclass(frozen=True)
class FeedTuning:
    """How often the feed's background parts refresh (tests shorten them)."""

    heat_refresh_s: float = 1.0
    config_poll_s: float = 1.0
    live_index_staleness_s: float = LIVE_INDEX_STALENESS_S


@dataclass
class Feed:
    """The feed in one API process: the service its routes call and the parts it starts."""

    service: FeedService
    config_store: ConfigStore
    experiments: ExperimentBook
    config: ConfigWatcher
    heat: RoomHeatCache
    impressions: ImpressionPublisher
    pool: asyncpg.Pool  # experiment reports read the interaction log
    redis: Redis  # the rate-limit charge of a request that makes no round trip of its own
    erasure: ViewerErasure

    @classmethod
    def build(cls, resources: Resources, inputs: FeedInputs, tuning: FeedTuning = FeedTuning()) -> Feed:
        heat = RoomHeatCache(inputs.heat, refresh_seconds=tuning.heat_refresh_s)
        pipeline = FeedPipeline.standard(
            inputs.live_index,
            heat,
            inputs.live_stats,
            inputs.models,
            inputs.alliance_boost,
            live_index_staleness_s=tuning.live_index_staleness_s,
        )
        config_store, experiments = ConfigStore(resources.pool), ExperimentBook(resources.pool)
        config = ConfigWatcher(config_store, experiments, poll_seconds=tuning.config_poll_s)
        impressions = ImpressionPublisher(resources, resources.settings.topic(VIEWER_EVENTS))
        sessions = SessionBook(resources.redis, resources.pool, lane=resources.redis_lane)
        return cls(
            service=FeedService(inputs, pipeline, sessions, config, impressions),
            config_store=config_store,
            experiments=experiments,
            config=config,
            heat=heat,
            impressions=impressions,
            pool=resources.pool,
            redis=resources.redis,
            erasure=ViewerErasure(resources.pool, resources.redis, ModelRegistry(resources.pool)),
        )

    async def start(self) -> None:
        # One BLAS thread: a page's products are small, and OpenBLAS's threads on a busy 2-core host made
        # a 50,000 x 32 product 4.2 ms instead of 0.44 ms (every request pays the hand-over). Process-wide.
        threadpool_limits(1, user_api="blas")
        await self.config.start()
        await self.heat.start()
        await self.impressions.start()

    async def stop(self) -> None:
        await self.service.pipeline.stop()
        await self.impressions.stop()
        await self.heat.stop()
        await self.config.stop()


@operation(
    "POST",
    "/v1/sessions",
    roles=("viewer",),
    status=201,
    tag="sessions",
    response=SessionStart,
    example={"viewer_id": "v1", "entry": {"room_id": "room_0123456789abcdef"}, "count": 5},
)
async def create_session(request: Request, feed: Feed, principal: Principal, body: NewSession) -> Response:
    """Start a viewer's swipe session.

    The first page starts with an attribution code's merchant room (and attributes the session to
    the merchant, store and staff behind the code) or a deep-linked room, when given. `viewer_id`
    must be the viewer token's viewer. The page's `page_token` is the `after` of the next page."""
    if body.viewer_id != principal.own_viewer():
        raise Forbidden(
            "viewer_id must be the viewer the token was issued to", fields={"viewer_id": "is not yours"}
        )
    entry = body.entry or Entry()
    device = request.headers.get("x-device-id")
    device_id = device if device is not None and ID_PATTERN.match(device) else None
    result = await feed.service.start_session(
        body.viewer_id,
        entry.code,
        entry.room_id,
        body.count,
        device_id=device_id,
        account_created_at=principal.account_created_at,  # the platform login's word on the account
    )
    return json(result, status=201, headers={"Location": f"/v1/sessions/{result['session_id']}/feed"})


@operation("GET", "/v1/sessions/{session_id}/feed", roles=("viewer",), tag="sessions", response=FeedPage)
async def session_feed(
    feed: Feed, principal: Principal, charge: RateCharge | None, session_id: str, query: FeedQuery
) -> Response:
    """The next rooms to swipe to.

    Never a room served before in the session, only rooms live now (a room whose end has returned
    is on no later page). Pass the `page_token` of the last page as `after`: the same request
    returns the same page (safe to retry), and concurrent requests with one token get one page.
    404 `page_not_found` for a token of a page not made yet, 410 `page_expired` for one older than
    the session's newest 8 pages."""
    # The rate-limit charge rides the session's Redis round trip (settled before anything is written).
    if not ID_PATTERN.match(session_id):
        if charge is not None:
            await charge_alone(feed, charge)
        raise NotFound(f"session {session_id} does not exist", fields={"session_id": "names nothing"})
    page = await feed.service.next_page(principal.own_viewer(), session_id, query.count, charge, query.after)
    return json(page)


async def charge_alone(feed: Feed, charge: RateCharge) -> None:
    """A deferred rate-limit charge for a request that makes no pipeline of its own."""
    redis = feed.redis
    try:
        async with redis.pipeline(transaction=False) as pipe:
            charge.queue(pipe)
            (reply,) = await pipe.execute()
    except Exception:  # Redis unreachable: unlimited, as the limiter degrades open
        return
    charge.settle(reply)


@operation(
    "POST",
    "/v1/viewers/me/blocks",
    roles=("viewer",),
    status=201,
    tag="viewers",
    example={"merchant_id": "mer_0123456789abcdef"},
)
async def add_block(feed: Feed, principal: Principal, body: NewBlock) -> Block:
    """Block a merchant: its rooms never appear in this viewer's feed."""
    if not await feed.service.inputs.room_catalog.exists(body.merchant_id):
        raise ValidationFailed("no such merchant", fields={"merchant_id": "does not exist"})
    await feed.service.sessions.block(principal.own_viewer(), body.merchant_id)
    return Block(merchant_id=body.merchant_id, blocked=True)


@operation("GET", "/v1/viewers/me/blocks", roles=("viewer",), tag="viewers")
async def list_blocks(feed: Feed, principal: Principal) -> Blocks:
    """The merchants this viewer blocked."""
    return Blocks(merchants=await feed.service.sessions.blocks(principal.own_viewer()))


@operation("DELETE", "/v1/viewers/me/blocks/{merchant_id}", roles=("viewer",), tag="viewers")
async def remove_block(feed: Feed, principal: Principal, merchant_id: str) -> Block:
    """Unblock a merchant."""
    if not await feed.service.sessions.unblock(principal.own_viewer(), merchant_id):
        raise NotFound(f"merchant {merchant_id} is not blocked")
    return Block(merchant_id=merchant_id, blocked=False)


# --- operators: ranking config and experiments ---------------------------------------------------


@operation("GET", "/v1/ops/ranking-config", roles=("operator",), tag="ranking-config")
async def get_ranking_config(feed: Feed, principal: Principal) -> CurrentConfig:
    """The current ranking config (weights and knobs) and its version."""
    current = await feed.config_store.current()
    served = feed.config.current.version
    return msgspec.convert({**current.public(), "served_version": served}, CurrentConfig)


@operation(
    "PUT",
    "/v1/ops/ranking-config",
    roles=("operator",),
    tag="ranking-config",
    example={"expected_version": 3, "config": {"w_popularity": 0.5}, "note": "more popular"},
)
async def put_ranking_config(feed: Feed, principal: Principal, body: ConfigUpdate) -> ConfigVersion:
    """Change ranking weights and knobs.

    Validated ranges (feed.config.RANGES), optimistic concurrency (409 unless `expected_version` is
    the current version), audited; live within seconds."""
    saved = await feed.config_store.update(
        changed(body.config), body.expected_version, principal.key_id or "operator", body.note
    )
    return msgspec.convert(saved.public(), ConfigVersion)


@operation("GET", "/v1/ops/ranking-config/history", roles=("operator",), tag="ranking-config")
async def ranking_config_history(feed: Feed, principal: Principal, query: ListQuery) -> ConfigHistory:
    """Every version of the ranking config, newest first (paged: `next`), with author and diff."""
    versions, following = await feed.config_store.history(query.limit, query.after)
    return msgspec.convert({"versions": [v.public() for v in versions], "next": following}, ConfigHistory)


@operation(
    "POST",
    "/v1/ops/ranking-config/rollback",
    roles=("operator",),
    tag="ranking-config",
    example={"version": 2},
)
async def rollback_ranking_config(feed: Feed, principal: Principal, body: ConfigRollback) -> ConfigVersion:
    """Make an earlier version current again.

    As a new version, so history is never rewritten. 404 for an unknown version."""
    saved = await feed.config_store.rollback(body.version, principal.key_id or "operator")
    return msgspec.convert(saved.public(), ConfigVersion)


@operation(
    "POST",
    "/v1/ops/experiments",
    roles=("operator",),
    tag="experiments",
    example={
        "name": "pop-vs-model",
        "variants": [
            {"name": "a", "weight": 0.5, "config": {}},
            {"name": "b", "weight": 0.5, "config": {"w_popularity": 2.0}},
        ],
    },
)
async def create_experiment(feed: Feed, principal: Principal, body: NewExperiment) -> Created[Experiment]:
    """Start an experiment: variants with traffic shares and ranking config overrides."""
    variants = check_variants(
        [(v.name, v.weight, changed(v.config) if v.config is not None else {}) for v in body.variants]
    )
    experiment = await feed.experiments.create(body.name.strip(), variants, principal.key_id or "operator")
    return created(Experiment, experiment.public(), "/v1/ops/experiments/{experiment_id}")


@operation("GET", "/v1/ops/experiments", roles=("operator",), tag="experiments")
async def list_experiments(feed: Feed, principal: Principal, query: ListQuery) -> ExperimentList:
    """Experiments, newest first (paged: `next`)."""
    experiments, following = await feed.experiments.list(query.limit, query.after)
    body = {"experiments": [e.public() for e in experiments], "next": following}
    return msgspec.convert(body, ExperimentList)


@operation("GET", "/v1/ops/experiments/{experiment_id}", roles=("operator",), tag="experiments")
async def get_experiment(feed: Feed, principal: Principal, experiment_id: Ident) -> ExperimentReport:
    """An experiment with per-variant metrics and 95% confidence intervals.

    Per variant: impressions, enter rate, dwell, swipe-away rate, conversion, GMV per 1,000 impressions."""
    experiment = await feed.experiments.get(experiment_id)
    return msgspec.convert(await experiment_report(feed.pool, experiment), ExperimentReport)


@operation("POST", "/v1/ops/experiments/{experiment_id}/stop", roles=("operator",), tag="experiments")
async def stop_experiment(feed: Feed, principal: Principal, experiment_id: Ident) -> Experiment:
    """Stop an experiment: its viewers go back to the base config."""
    experiment = await feed.experiments.stop(experiment_id)
    return msgspec.convert(experiment.public(), Experiment)


@operation("DELETE", "/v1/ops/viewers/{viewer_id}", roles=("operator",), tag="viewers")
async def erase_viewer(feed: Feed, principal: Principal, viewer_id: Ident) -> ErasureReport:
    """Erase a viewer.

    History, sessions, blocks, attributions, features and model vectors go; verified orders stay
    anonymised for the merchants' books; a tombstone keeps a Kafka replay from bringing the data
    back. Idempotent."""
    return msgspec.convert(await feed.erasure.erase(viewer_id, by=f"key:{principal.key_id}"), ErasureReport)


@operation("GET", "/v1/ops/viewers/{viewer_id}/feed", roles=("operator",), tag="explain")
async def preview_feed(
    feed: Feed, principal: Principal, viewer_id: Ident, query: PreviewQuery
) -> FeedPreview:
    """What a viewer would see next, and why (operators).

    The feed's own pipeline for this viewer now (their blocks and recent visits), without a session:
    nothing is claimed, served or recorded. With `explain=true` each room carries its score, the
    terms that make it and the signals behind them. The alliance's boost is not simulated (placing a
    boost spends its pacing tokens)."""
    preview = await feed.service.preview(viewer_id, query.count)
    if not query.explain:
        for room in preview["rooms"]:
            room.pop("explain", None)
    preview["notes"] = ["the alliance boost is not simulated: placing a boost spends its pacing tokens"]
    return msgspec.convert(preview, FeedPreview)


def routes(feed: Feed) -> list[BaseRoute]:
    operations = (
        create_session,
        session_feed,
        add_block,
        list_blocks,
        remove_block,
        get_ranking_config,
        put_ranking_config,
        ranking_config_history,
        rollback_ranking_config,
        create_experiment,
        list_experiments,
        get_experiment,
        stop_experiment,
        erase_viewer,
        preview_feed,
    )
    return [route.bound(feed) for route in operations]
