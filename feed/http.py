"""Feed HTTP routes: viewer sessions and pages, viewer blocks, ranking config and experiments (operators).

Handlers parse, authorize, call `feed.service` / `feed.config_store` / `feed.experiments`, and answer.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import asyncpg
from redis.asyncio import Redis
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Route
from threadpoolctl import threadpool_limits

from events.vocabulary import VIEWER_EVENTS
from feed.config import change_schema, validate_values
from feed.config_store import ConfigStore, ConfigWatcher
from feed.erasure import ViewerErasure
from feed.experiments import ExperimentBook, experiment_report, parse_experiment
from feed.impressions import ImpressionPublisher
from feed.models import Block, Blocks, Entry, FeedPage, FeedQuery, NewBlock, NewSession, SessionStart
from feed.pipeline import FeedPipeline
from feed.service import FeedService
from feed.sessions import SessionBook
from feed.sources import FeedInputs, RoomHeatCache
from ranking.registry import ModelRegistry
from roomfeed.auth import RateCharge, require, require_with_charge
from roomfeed.errors import Forbidden, NotFound, ValidationFailed
from roomfeed.http import bound, json, query_int, read_json
from roomfeed.operations import operation
from roomfeed.resources import Resources
from roomfeed.validation import ID_PATTERN, Body

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
        await self.impressions.stop()
        await self.heat.stop()
        await self.config.stop()


@operation(
    "POST",
    "/v1/sessions",
    status=201,
    response=SessionStart,
    example={"viewer_id": "v1", "entry": {"room_id": "room_0123456789abcdef"}, "count": 5},
)
async def create_session(request: Request, feed: Feed, body: NewSession) -> Response:
    """Start a viewer's swipe session.

    The first page starts with an attribution code's merchant room (and attributes the session to
    the merchant, store and staff behind the code) or a deep-linked room, when given. `viewer_id`
    must be the viewer token's viewer. The page's `page_token` is the `after` of the next page."""
    principal = await require(request, "viewer")
    if body.viewer_id != principal.viewer_id:
        raise Forbidden(
            "viewer_id must be the viewer the token was issued to", fields={"viewer_id": "is not yours"}
        )
    entry = body.entry or Entry()
    device = request.headers.get("x-device-id")
    device_id = device if device is not None and ID_PATTERN.match(device) else None
    result = await feed.service.start_session(
        body.viewer_id, entry.code, entry.room_id, body.count, device_id=device_id
    )
    return json(result, status=201, headers={"Location": f"/v1/sessions/{result['session_id']}/feed"})


@operation("GET", "/v1/sessions/{session_id}/feed", response=FeedPage)
async def session_feed(request: Request, feed: Feed, session_id: str, query: FeedQuery) -> Response:
    """The next rooms to swipe to.

    Never a room served before in the session, only rooms live now (a room whose end has returned
    is on no later page). Pass the `page_token` of the last page as `after`: the same request
    returns the same page (safe to retry), and concurrent requests with one token get one page.
    404 `page_not_found` for a token of a page not made yet, 410 `page_expired` for one older than
    the session's newest 8 pages."""
    # The rate-limit charge rides the session's Redis round trip (settled before anything is written).
    principal, charge = await require_with_charge(request, "viewer")
    if not ID_PATTERN.match(session_id):
        if charge is not None:
            await charge_alone(request, feed, charge)
        raise NotFound(f"session {session_id} does not exist")
    assert principal.viewer_id is not None
    page = await feed.service.next_page(principal.viewer_id, session_id, query.count, charge, query.after)
    return json(page)


async def charge_alone(request: Request, feed: Feed, charge: RateCharge) -> None:
    """A deferred rate-limit charge for a request that makes no pipeline of its own."""
    redis = feed.redis
    try:
        async with redis.pipeline(transaction=False) as pipe:
            charge.queue(pipe)
            (reply,) = await pipe.execute()
    except Exception:  # Redis unreachable: unlimited, as the limiter degrades open
        return
    charge.settle(reply)


@operation("POST", "/v1/viewers/me/blocks", status=201, example={"merchant_id": "mer_0123456789abcdef"})
async def add_block(request: Request, feed: Feed, body: NewBlock) -> Block:
    """Block a merchant: its rooms never appear in this viewer's feed."""
    principal = await require(request, "viewer")
    if not await feed.service.inputs.room_catalog.exists(body.merchant_id):
        raise ValidationFailed("no such merchant", fields={"merchant_id": "does not exist"})
    assert principal.viewer_id is not None
    await feed.service.sessions.block(principal.viewer_id, body.merchant_id)
    return Block(merchant_id=body.merchant_id, blocked=True)


@operation("GET", "/v1/viewers/me/blocks")
async def list_blocks(request: Request, feed: Feed) -> Blocks:
    """The merchants this viewer blocked."""
    principal = await require(request, "viewer")
    assert principal.viewer_id is not None
    return Blocks(merchants=await feed.service.sessions.blocks(principal.viewer_id))


@operation("DELETE", "/v1/viewers/me/blocks/{merchant_id}")
async def remove_block(request: Request, feed: Feed, merchant_id: str) -> Block:
    """Unblock a merchant."""
    principal = await require(request, "viewer")
    assert principal.viewer_id is not None
    if not await feed.service.sessions.unblock(principal.viewer_id, merchant_id):
        raise NotFound(f"merchant {merchant_id} is not blocked")
    return Block(merchant_id=merchant_id, blocked=False)


# --- operators: ranking config and experiments ---------------------------------------------------


async def get_ranking_config(request: Request, feed: Feed) -> Response:
    """The current ranking config (weights and knobs) and its version.
    ---
    responses:
      200: {description: "{version, config, author, created_at, ...}"}
    """
    await require(request, "operator")
    current = await feed.config_store.current()
    return json({**current.public(), "served_version": feed.config.current.version})


async def put_ranking_config(request: Request, feed: Feed) -> Response:
    """Change ranking weights/knobs: validated ranges, optimistic concurrency, audited; live within seconds.
    ---
    requestBody:
      required: true
      content:
        application/json:
          schema:
            type: object
            required: [config]
            additionalProperties: false
            properties:
              expected_version: {type: integer, minimum: 0, description: "409 unless it is the current version"}
              note: {type: string, maxLength: 500}
              config: {$ref: '#/components/schemas/RankingConfigChange'}
          example: {expected_version: 3, config: {w_popularity: 0.5}, note: "more popular"}
    responses:
      200: {description: the new version}
      409: {description: expected_version is not the current version}
      422: {description: invalid fields (named)}
    """
    principal = await require(request, "operator")
    payload: Any = await read_json(request)
    body = Body(payload)
    expected = body.integer("expected_version", required=False, minimum=0)
    note = body.text("note", required=False, max_len=500, min_len=0, default="")
    raw_config = body.data.get("config")
    unknown = set(body.data) - {"expected_version", "note", "config"}
    for name in sorted(unknown):
        body.fail(name, "is not accepted here: put ranking fields under `config`")
    if raw_config is None:
        body.fail("config", "is required: an object of ranking config fields")
    values: dict[str, float | int] = {}
    if raw_config is not None:
        try:
            values = validate_values(raw_config, prefix="config.")
        except ValidationFailed as exc:
            body.errors.update(exc.fields)
    body.finish()
    saved = await feed.config_store.update(values, expected, principal.key_id or "operator", note or "")
    return json(saved.public())


async def ranking_config_history(request: Request, feed: Feed) -> Response:
    """Every version of the ranking config, newest first, with author and diff.
    ---
    responses:
      200: {description: "{versions: [...]}"}
    """
    await require(request, "operator")
    limit = query_int(request, "limit", default=100, minimum=1, maximum=1000)
    return json({"versions": [v.public() for v in await feed.config_store.history(limit)]})


async def rollback_ranking_config(request: Request, feed: Feed) -> Response:
    """Make an earlier version current again (as a new version, so history is never rewritten).
    ---
    requestBody:
      required: true
      content:
        application/json:
          schema:
            type: object
            required: [version]
            properties:
              version: {type: integer, minimum: 0, maximum: 2147483647}
          example: {version: 2}
    responses:
      200: {description: the new version}
      404: {description: no such version}
    """
    principal = await require(request, "operator")
    body = Body(await read_json(request))
    version = body.integer("version", minimum=0, maximum=2**31 - 1)  # an integer column
    body.finish()
    saved = await feed.config_store.rollback(version, principal.key_id or "operator")
    return json(saved.public())


async def create_experiment(request: Request, feed: Feed) -> Response:
    """Start an experiment: variants with traffic shares and ranking config overrides.
    ---
    requestBody:
      required: true
      content:
        application/json:
          schema:
            type: object
            required: [name, variants]
            properties:
              name: {type: string, minLength: 1, maxLength: 120}
              variants:
                type: array
                minItems: 2
                maxItems: 10
                description: unique names; weights (traffic shares) sum to 1
                items:
                  type: object
                  required: [name, weight]
                  properties:
                    name: {type: string, pattern: '^[A-Za-z0-9_.:-]{1,64}$'}
                    weight: {type: number, minimum: 0, exclusiveMinimum: true, maximum: 1}
                    config: {$ref: '#/components/schemas/RankingConfigChange'}
          example: {name: pop-vs-model, variants: [{name: a, weight: 0.5, config: {}}, {name: b, weight: 0.5, config: {w_popularity: 1.0}}]}
    responses:
      201: {description: the experiment}
      422: {description: invalid fields (named)}
    """
    principal = await require(request, "operator")
    name, variants = parse_experiment(await read_json(request))
    experiment = await feed.experiments.create(name, variants, principal.key_id or "operator")
    return json(experiment.public(), status=201)


async def list_experiments(request: Request, feed: Feed) -> Response:
    """Experiments, newest first.
    ---
    responses:
      200: {description: "{experiments: [...]}"}
    """
    await require(request, "operator")
    return json({"experiments": [e.public() for e in await feed.experiments.list()]})


async def get_experiment(request: Request, feed: Feed) -> Response:
    """An experiment with per-variant metrics and 95% confidence intervals.
    ---
    responses:
      200: {description: "variants with impressions, enter rate, dwell, swipe-away rate, conversion, GMV per 1,000 impressions"}
      404: {description: no such experiment}
    """
    await require(request, "operator")
    experiment = await feed.experiments.get(request.path_params["experiment_id"])
    return json(await experiment_report(feed.pool, experiment))


async def stop_experiment(request: Request, feed: Feed) -> Response:
    """Stop an experiment: its viewers go back to the base config.
    ---
    responses:
      200: {description: the experiment}
      404: {description: no such experiment}
    """
    await require(request, "operator")
    experiment = await feed.experiments.stop(request.path_params["experiment_id"])
    return json(experiment.public())


# OpenAPI components the docstrings above refer to (the composition root hands them to the app).
schemas = {"RankingConfigChange": change_schema()}


async def erase_viewer(request: Request, feed: Feed) -> Response:
    """Erase a viewer: history, sessions, blocks, attributions, features and model vectors go;
    verified orders stay anonymised for the merchants' books; a tombstone keeps a Kafka replay from
    bringing the data back. Idempotent.
    ---
    tags: [viewers]
    summary: Erase a viewer
    parameters:
      - {name: viewer_id, in: path, required: true, schema: {type: string}}
    responses:
      200: {description: "{viewer_id, erased, removed: {interactions, sessions, ...}}"}
    """
    principal = await require(request, "operator")
    viewer_id = str(request.path_params["viewer_id"])
    if not ID_PATTERN.match(viewer_id):
        raise ValidationFailed(
            "viewer_id has an invalid format", fields={"viewer_id": "has an invalid format"}
        )
    return json(await feed.erasure.erase(viewer_id, by=f"key:{principal.key_id}"))


def routes(feed: Feed) -> list[BaseRoute]:
    return [
        create_session.bound(feed),
        session_feed.bound(feed),
        add_block.bound(feed),
        list_blocks.bound(feed),
        remove_block.bound(feed),
        Route("/v1/ops/ranking-config", bound(get_ranking_config, feed), methods=["GET"]),
        Route("/v1/ops/ranking-config", bound(put_ranking_config, feed), methods=["PUT"]),
        Route("/v1/ops/ranking-config/history", bound(ranking_config_history, feed), methods=["GET"]),
        Route("/v1/ops/ranking-config/rollback", bound(rollback_ranking_config, feed), methods=["POST"]),
        Route("/v1/ops/experiments", bound(create_experiment, feed), methods=["POST"]),
        Route("/v1/ops/experiments", bound(list_experiments, feed), methods=["GET"]),
        Route("/v1/ops/experiments/{experiment_id}", bound(get_experiment, feed), methods=["GET"]),
        Route("/v1/ops/experiments/{experiment_id}/stop", bound(stop_experiment, feed), methods=["POST"]),
        Route("/v1/ops/viewers/{viewer_id}", bound(erase_viewer, feed), methods=["DELETE"]),
    ]
