"""Ranking's HTTP surface (operators) and its part of the API process's lifecycle.

Owns `GET /v1/ops/models`, `POST /v1/ops/models/{version}/promote` and
`POST /v1/ops/models/rollback`, and starts the `ModelWatcher` the feed's score stage reads
(`watcher.scorer`), so a promoted model serves without a restart.
"""

from __future__ import annotations

import logging
from dataclasses import asdict, dataclass
from typing import Any

import asyncpg
import msgspec
from starlette.routing import BaseRoute

from ranking.models import Model, ModelList, ModelsQuery
from ranking.registry import ModelRecord, ModelRegistry, ModelWatcher
from ranking.viewer_state import ViewerStateStore
from roomfeed.auth import Principal
from roomfeed.errors import Conflict, NotFound
from roomfeed.operations import operation

log = logging.getLogger(__name__)


def _public(record: ModelRecord) -> dict[str, Any]:
    data = asdict(record)
    for key in ("created_at", "data_since", "data_until", "promoted_at"):
        data[key] = data[key].isoformat() if data[key] else None
    return data


@dataclass
class Ranking:
    """The ranking domain in one API process: the model registry and the watcher the feed scores with."""

    registry: ModelRegistry
    watcher: ModelWatcher
    states: ViewerStateStore  # each viewer's state per model version (Redis), what the feed reads per page

    @classmethod
    def build(cls, pool: asyncpg.Pool, redis: Any, model_poll_s: float = 5.0) -> Ranking:
        registry = ModelRegistry(pool)
        states = ViewerStateStore(redis)
        return cls(registry, ModelWatcher(registry, interval_s=model_poll_s, states=states), states)

    async def with_state(self, version: str) -> None:
        """Write `version`'s viewer state unless the store has it (a promotion by hand, a rollback to a
        model whose state was deleted): a model is promoted only once its viewers are in the store."""
        if not await self.states.ready(version):
            model = await self.registry.load(version)
            published = await self.states.publish(model)
            log.info("viewer state of %s written: %s", version, published)

    async def start(self) -> None:
        try:
            await self.watcher.start()
        except Exception:  # no registry table or model yet: serve by popularity, keep polling
            log.exception("model watcher could not load a model at start-up; polling")
            await self.watcher.start_polling()

    async def stop(self) -> None:
        await self.watcher.stop()


@operation("GET", "/v1/ops/models", roles=("operator",), tag="models")
async def list_models(ranking: Ranking, principal: Principal, query: ModelsQuery) -> ModelList:
    """Model versions, newest first (paged: `next`), with parameters, data window, metrics and status."""
    models, following = await ranking.registry.versions(query.limit, query.after)
    body = {"serving": ranking.watcher.version, "models": [_public(m) for m in models], "next": following}
    return msgspec.convert(body, ModelList)


@operation("POST", "/v1/ops/models/{version}/promote", roles=("operator",), tag="models")
async def promote_model(ranking: Ranking, principal: Principal, version: str) -> Model:
    """Promote a model version by hand (the previous one is retired).

    API processes pick it up within seconds. 404 for an unknown version."""
    registry = ranking.registry
    try:
        await ranking.with_state(version)
        await registry.promote(version, principal.key_id or "operator")
    except KeyError as exc:
        raise NotFound(f"no model version {version}", fields={"version": "unknown"}) from exc
    record = await registry.get(version)
    assert record is not None
    return msgspec.convert(_public(record), Model)


@operation("POST", "/v1/ops/models/rollback", roles=("operator",), tag="models")
async def rollback_model(ranking: Ranking, principal: Principal) -> Model:
    """Promote again the model that served before the current one.

    409 when there is nothing to roll back to."""
    registry = ranking.registry
    target = await registry.rollback_target()
    if target is not None:
        await ranking.with_state(target)
    try:
        version = await registry.rollback(principal.key_id or "operator")
    except LookupError as exc:
        raise Conflict("no earlier promoted model to roll back to") from exc
    record = await registry.get(version)
    assert record is not None
    return msgspec.convert(_public(record), Model)


def routes(ranking: Ranking) -> list[BaseRoute]:
    return [route.bound(ranking) for route in (list_models, rollback_model, promote_model)]
