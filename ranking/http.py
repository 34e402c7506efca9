"""Ranking's HTTP surface (operators) and its part of the API process's lifecycle.

Owns `GET /v1/ops/models`, `POST /v1/ops/models/{version}/promote` and
`POST /v1/ops/models/rollback`, and starts the `ModelWatcher` the feed's score stage reads
(`state.model_watcher.scorer`), so a promoted model serves without a restart.
"""

from __future__ import annotations

import logging
from dataclasses import asdict
from typing import Any

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Route

from ranking.registry import ModelRecord, ModelRegistry, ModelWatcher
from roomfeed.auth import require
from roomfeed.errors import Conflict, NotFound
from roomfeed.http import json, query_int

log = logging.getLogger(__name__)


def _public(record: ModelRecord) -> dict[str, Any]:
    data = asdict(record)
    for key in ("created_at", "data_since", "data_until", "promoted_at"):
        data[key] = data[key].isoformat() if data[key] else None
    return data


def _registry(request: Request) -> ModelRegistry:
    registry: ModelRegistry = request.app.state.model_registry
    return registry


async def list_models(request: Request) -> Response:
    """Model versions, newest first, with parameters, data window, metrics and status.
    ---
    responses:
      200: {description: "{serving, models: [...]}"}
    """
    await require(request, "operator")
    limit = query_int(request, "limit", default=50, minimum=1, maximum=500)
    watcher: ModelWatcher | None = getattr(request.app.state, "model_watcher", None)
    models = await _registry(request).versions(limit)
    return json({"serving": watcher.version if watcher else None, "models": [_public(m) for m in models]})


async def promote_model(request: Request) -> Response:
    """Promote a model version by hand (the previous one is retired); API processes pick it up within seconds.
    ---
    responses:
      200: {description: the promoted model}
      404: {description: no such version}
    """
    principal = await require(request, "operator")
    version = request.path_params["version"]
    registry = _registry(request)
    try:
        await registry.promote(version, principal.key_id or "operator")
    except KeyError as exc:
        raise NotFound(f"no model version {version}", fields={"version": "unknown"}) from exc
    record = await registry.get(version)
    assert record is not None
    return json(_public(record))


async def rollback_model(request: Request) -> Response:
    """Promote again the model that served before the current one.
    ---
    responses:
      200: {description: the model now promoted}
      409: {description: nothing to roll back to}
    """
    principal = await require(request, "operator")
    registry = _registry(request)
    try:
        version = await registry.rollback(principal.key_id or "operator")
    except LookupError as exc:
        raise Conflict("no earlier promoted model to roll back to") from exc
    record = await registry.get(version)
    assert record is not None
    return json(_public(record))


routes: list[BaseRoute] = [
    Route("/v1/ops/models", list_models, methods=["GET"]),
    Route("/v1/ops/models/rollback", rollback_model, methods=["POST"]),
    Route("/v1/ops/models/{version}/promote", promote_model, methods=["POST"]),
]


async def start(state: Any, resources: Any) -> None:
    registry = ModelRegistry(resources.pool)
    state.model_registry = registry
    watcher = ModelWatcher(registry, interval_s=getattr(state, "model_poll_s", 5.0))
    state.model_watcher = watcher
    try:
        await watcher.start()
    except Exception:  # no registry table or model yet: serve by popularity, keep polling
        log.exception("model watcher could not load a model at start-up; polling")
        await watcher.start_polling()


async def stop(state: Any) -> None:
    watcher: ModelWatcher | None = getattr(state, "model_watcher", None)
    if watcher is not None:
        await watcher.stop()
