"""Feed HTTP routes: viewer sessions and pages, viewer blocks, ranking config and experiments (operators).

Handlers parse, authorize, call `feed.service` / `feed.config_store` / `feed.experiments`, and answer.
"""

from __future__ import annotations

from typing import Any

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Route

from events.vocabulary import VIEWER_EVENTS
from feed.config import change_schema, validate_values
from feed.config_store import ConfigStore, ConfigWatcher
from feed.experiments import ExperimentBook, experiment_report, parse_experiment
from feed.impressions import ImpressionPublisher
from feed.models import Block, Blocks, Entry, FeedPage, FeedQuery, NewBlock, NewSession, SessionStart
from feed.pipeline import FeedPipeline
from feed.service import FeedService
from feed.sessions import SessionBook
from feed.sources import FeedInputs, RoomHeatCache
from roomfeed.auth import RateCharge, require, require_with_charge
from roomfeed.errors import Forbidden, NotFound, ValidationFailed
from roomfeed.http import json, query_int, read_json
from roomfeed.operations import operation
from roomfeed.validation import ID_PATTERN, Body

# A feed process asks the live index "anything changed?" at most every 50 ms, not on every request.
LIVE_INDEX_STALENESS_S = 0.05


def _feed(request: Request) -> FeedService:
    service: FeedService = request.app.state.feed
    return service


@operation(
    "POST",
    "/v1/sessions",
    status=201,
    response=SessionStart,
    example={"viewer_id": "v1", "entry": {"room_id": "room_0123456789abcdef"}, "count": 5},
)
async def create_session(request: Request, body: NewSession) -> Response:
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
    result = await _feed(request).start_session(body.viewer_id, entry.code, entry.room_id, body.count)
    return json(result, status=201, headers={"Location": f"/v1/sessions/{result['session_id']}/feed"})


@operation("GET", "/v1/sessions/{session_id}/feed", response=FeedPage)
async def session_feed(request: Request, session_id: str, query: FeedQuery) -> Response:
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
            await charge_alone(request, charge)
        raise NotFound(f"session {session_id} does not exist")
    assert principal.viewer_id is not None
    page = await _feed(request).next_page(principal.viewer_id, session_id, query.count, charge, query.after)
    return json(page)


async def charge_alone(request: Request, charge: RateCharge) -> None:
    """A deferred rate-limit charge for a request that makes no pipeline of its own."""
    redis = request.app.state.resources.redis
    try:
        async with redis.pipeline(transaction=False) as pipe:
            charge.queue(pipe)
            (reply,) = await pipe.execute()
    except Exception:  # Redis unreachable: unlimited, as the limiter degrades open
        return
    charge.settle(reply)


@operation("POST", "/v1/viewers/me/blocks", status=201, example={"merchant_id": "mer_0123456789abcdef"})
async def add_block(request: Request, body: NewBlock) -> Block:
    """Block a merchant: its rooms never appear in this viewer's feed."""
    principal = await require(request, "viewer")
    catalog = _feed(request).inputs.room_catalog
    if catalog is not None and not await catalog.exists(body.merchant_id):
        raise ValidationFailed("no such merchant", fields={"merchant_id": "does not exist"})
    assert principal.viewer_id is not None
    await _feed(request).sessions.block(principal.viewer_id, body.merchant_id)
    return Block(merchant_id=body.merchant_id, blocked=True)


@operation("GET", "/v1/viewers/me/blocks")
async def list_blocks(request: Request) -> Blocks:
    """The merchants this viewer blocked."""
    principal = await require(request, "viewer")
    assert principal.viewer_id is not None
    return Blocks(merchants=await _feed(request).sessions.blocks(principal.viewer_id))


@operation("DELETE", "/v1/viewers/me/blocks/{merchant_id}")
async def remove_block(request: Request, merchant_id: str) -> Block:
    """Unblock a merchant."""
    principal = await require(request, "viewer")
    assert principal.viewer_id is not None
    if not await _feed(request).sessions.unblock(principal.viewer_id, merchant_id):
        raise NotFound(f"merchant {merchant_id} is not blocked")
    return Block(merchant_id=merchant_id, blocked=False)


# --- operators: ranking config and experiments ---------------------------------------------------


def _store(request: Request) -> ConfigStore:
    store: ConfigStore = request.app.state.ranking_config_store
    return store


async def get_ranking_config(request: Request) -> Response:
    """The current ranking config (weights and knobs) and its version.
    ---
    responses:
      200: {description: "{version, config, author, created_at, ...}"}
    """
    await require(request, "operator")
    current = await _store(request).current()
    return json({**current.public(), "served_version": request.app.state.ranking_config.current.version})


async def put_ranking_config(request: Request) -> Response:
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
    saved = await _store(request).update(values, expected, principal.key_id or "operator", note or "")
    return json(saved.public())


async def ranking_config_history(request: Request) -> Response:
    """Every version of the ranking config, newest first, with author and diff.
    ---
    responses:
      200: {description: "{versions: [...]}"}
    """
    await require(request, "operator")
    limit = query_int(request, "limit", default=100, minimum=1, maximum=1000)
    return json({"versions": [v.public() for v in await _store(request).history(limit)]})


async def rollback_ranking_config(request: Request) -> Response:
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
    saved = await _store(request).rollback(version, principal.key_id or "operator")
    return json(saved.public())


async def create_experiment(request: Request) -> Response:
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
    experiment = await request.app.state.experiments.create(name, variants, principal.key_id or "operator")
    return json(experiment.public(), status=201)


async def list_experiments(request: Request) -> Response:
    """Experiments, newest first.
    ---
    responses:
      200: {description: "{experiments: [...]}"}
    """
    await require(request, "operator")
    return json({"experiments": [e.public() for e in await request.app.state.experiments.list()]})


async def get_experiment(request: Request) -> Response:
    """An experiment with per-variant metrics and 95% confidence intervals.
    ---
    responses:
      200: {description: "variants with impressions, enter rate, dwell, swipe-away rate, conversion, GMV per 1,000 impressions"}
      404: {description: no such experiment}
    """
    await require(request, "operator")
    experiment = await request.app.state.experiments.get(request.path_params["experiment_id"])
    resources = request.app.state.resources
    return json(await experiment_report(resources.pool, resources.redis, experiment))


async def stop_experiment(request: Request) -> Response:
    """Stop an experiment: its viewers go back to the base config.
    ---
    responses:
      200: {description: the experiment}
      404: {description: no such experiment}
    """
    await require(request, "operator")
    experiment = await request.app.state.experiments.stop(request.path_params["experiment_id"])
    return json(experiment.public())


# OpenAPI components the docstrings above refer to (roomfeed.app gathers every domain's `schemas`).
schemas = {"RankingConfigChange": change_schema()}

routes: list[BaseRoute] = [
    create_session,
    session_feed,
    add_block,
    list_blocks,
    remove_block,
    Route("/v1/ops/ranking-config", get_ranking_config, methods=["GET"]),
    Route("/v1/ops/ranking-config", put_ranking_config, methods=["PUT"]),
    Route("/v1/ops/ranking-config/history", ranking_config_history, methods=["GET"]),
    Route("/v1/ops/ranking-config/rollback", rollback_ranking_config, methods=["POST"]),
    Route("/v1/ops/experiments", create_experiment, methods=["POST"]),
    Route("/v1/ops/experiments", list_experiments, methods=["GET"]),
    Route("/v1/ops/experiments/{experiment_id}", get_experiment, methods=["GET"]),
    Route("/v1/ops/experiments/{experiment_id}/stop", stop_experiment, methods=["POST"]),
]


async def start(state: Any, resources: Any) -> None:
    settings = resources.settings
    inputs = FeedInputs.from_state(state, resources)
    stats = RoomHeatCache(inputs.heat, refresh_seconds=getattr(state, "feed_stats_refresh_s", 1.0))
    pipeline = (
        FeedPipeline.standard(
            inputs.live_index,
            stats,
            inputs.live_stats,
            inputs.model_watcher,
            inputs.alliance_boost,
            live_index_staleness_s=getattr(state, "feed_live_index_staleness_s", LIVE_INDEX_STALENESS_S),
        )
        if inputs.live_index is not None
        else None
    )
    state.ranking_config_store = ConfigStore(resources.pool)
    state.experiments = ExperimentBook(resources.pool)
    state.ranking_config = ConfigWatcher(
        state.ranking_config_store, state.experiments, poll_seconds=getattr(state, "feed_config_poll_s", 1.0)
    )
    impressions = ImpressionPublisher(resources, settings.topic(VIEWER_EVENTS))
    state.feed_stats = stats
    state.feed = FeedService(
        inputs,
        pipeline,
        SessionBook(resources.redis, resources.pool, lane=getattr(resources, "redis_lane", None)),
        state.ranking_config,
        impressions,
    )
    await state.ranking_config.start()
    await stats.start()
    await impressions.start()


async def stop(state: Any) -> None:
    feed: FeedService | None = getattr(state, "feed", None)
    if feed is not None:
        await feed.impressions.stop()
    for name in ("feed_stats", "ranking_config"):
        part = getattr(state, name, None)
        if part is not None:
            await part.stop()
