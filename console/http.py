"""The console's HTTP surface: the ops admin routes it owns and the /console web page.

Owns `GET /v1/ops/metrics` (+ `/history`, `/alliance-history`), `GET /v1/ops/models`,
`POST /v1/ops/models/{version}/promote`, `POST /v1/ops/models/rollback`, the model evaluation
plot, `GET /v1/console/me` (who a key is, so the page shows the right views) and the static
console under `/console` with its security headers. Ranking config, experiments, alliances and
merchants are other domains' routes; the page is a client of them like any other.
"""

from __future__ import annotations

import dataclasses
import importlib
import logging
import mimetypes
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Route

from console.history import MetricHistory, MetricSampler
from console.lag import LagBySink
from console.metrics import MarketplaceMetrics, MarketplaceSources
from roomfeed.auth import require
from roomfeed.errors import NotFound, Unavailable, ValidationFailed
from roomfeed.http import json, query_int
from roomfeed.resources import Resources

log = logging.getLogger("roomfeed.console")

STATIC_DIR = Path(__file__).resolve().parent / "static"


# The page loads only its own files and talks only to this origin; it may never be framed.
SECURITY_HEADERS = {
    "Content-Security-Policy": (
        "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' blob: data:; "
        "connect-src 'self'; object-src 'none'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'"
    ),
    "X-Frame-Options": "DENY",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Cross-Origin-Opener-Policy": "same-origin",
}


@dataclass
class Console:
    """What the console's routes use, built once at start-up."""

    metrics: MarketplaceMetrics
    history: MetricHistory
    sampler: MetricSampler
    lag: LagBySink | None
    registry: Any | None  # ranking.registry.ModelRegistry when the ranking domain is deployed


def _optional(module: str) -> Any | None:
    try:
        return importlib.import_module(module)
    except ModuleNotFoundError as exc:
        if exc.name and module.startswith(exc.name):
            return None
        raise


def _sources(state: Any, resources: Resources, lag: LagBySink | None) -> MarketplaceSources:
    """Bind each number to the domain object that owns it (reusing the domain's instance if started)."""
    sources = MarketplaceSources(consumer_lag=lag.by_group if lag is not None else None)
    live_stats_mod = _optional("events.live_stats")
    if live_stats_mod is not None:
        stats = getattr(state, "live_stats", None) or live_stats_mod.LiveStats(resources.redis)
        sources.totals = stats.totals
    live_index_mod = _optional("rooms.live_index")
    if live_index_mod is not None:
        index = getattr(state, "live_index", None) or live_index_mod.LiveIndex(resources.redis)

        async def rooms_live() -> int:
            return len((await index.snapshot()).rooms)

        sources.rooms_live = rooms_live
    overview = _alliance_overview(state, resources)
    if overview is not None:
        sources.alliance = overview
    return sources


def _alliance_overview(state: Any, resources: Resources) -> Any | None:
    """The alliance domain's per-merchant accounts, through its ledger's operator overview."""
    module = _optional("alliance.ledger")
    if module is None:
        return None
    ledger = getattr(state, "ledger", None) or module.Ledger(resources.pool)

    async def overview() -> Any:
        return await ledger.overview(time.time(), hours=1)

    return overview


async def start(state: Any, resources: Resources) -> None:
    lag_mod = _optional("events.lag")
    settings = resources.settings
    lag = LagBySink(lag_mod.ConsumerLag(settings), settings.kafka_prefix) if lag_mod is not None else None
    metrics = MarketplaceMetrics(_sources(state, resources, lag))
    history = MetricHistory(resources.pool)
    sampler = MetricSampler(history, metrics.snapshot)
    registry_mod = _optional("ranking.registry")
    registry = registry_mod.ModelRegistry(resources.pool) if registry_mod is not None else None
    state.console = Console(metrics, history, sampler, lag, registry)
    sampler.start()


async def stop(state: Any) -> None:
    console: Console | None = getattr(state, "console", None)
    if console is not None:
        await console.sampler.stop()
        if console.lag is not None:
            await console.lag.close()


def _console(request: Request) -> Console:
    console: Console = request.app.state.console
    return console


def _plain(value: Any) -> Any:
    """Registry records (dataclasses, dicts, lists) as JSON-ready values."""
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {f.name: _plain(getattr(value, f.name)) for f in dataclasses.fields(value)}
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items() if not str(k).startswith("_")}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if isinstance(value, Path):
        return str(value)
    if hasattr(value, "isoformat"):
        return value.isoformat()
    return value


# --- metrics -----------------------------------------------------------------------------------


async def ops_metrics(request: Request) -> Response:
    """Marketplace numbers now: rooms live, viewers now, funnel ratios, alliance delivery, consumer lag.
    ---
    summary: Marketplace metrics (operators)
    responses:
      200: {description: "rooms_live, viewers_now, enter_rate, avg_dwell_s, swipe_away_rate, conversion_per_visit, conversion_per_visitor, gmv_per_1k_impressions, alliance, consumer_lag, unavailable"}
    """
    await require(request, "operator")
    snapshot, accounts = await _console(request).metrics.snapshot()
    return json({**snapshot, "alliance_accounts": accounts})


async def ops_metrics_history(request: Request) -> Response:
    """Marketplace metrics sampled every 10 s over the last `minutes` (default 60, at most 2,880).
    ---
    summary: Marketplace metrics over time (operators)
    parameters:
      - {name: minutes, in: query, schema: {type: integer, minimum: 1, maximum: 2880}}
    responses:
      200: {description: "{samples: [{at, rooms_live, viewers_now, enter_rate, ...}]}"}
    """
    await require(request, "operator")
    minutes = query_int(request, "minutes", 60, 1, 2880)
    samples = await _console(request).history.marketplace(time.time() - minutes * 60)
    return json({"period_s": _console(request).history.period_s, "samples": samples})


async def ops_alliance_history(request: Request) -> Response:
    """Per-merchant alliance accounts over time: earned, delivered, balance (operators).
    ---
    summary: Alliance accounts over time (operators)
    parameters:
      - {name: minutes, in: query, schema: {type: integer, minimum: 1, maximum: 2880}}
    responses:
      200: {description: "{merchants: {merchant_id: [{at, earned, delivered, balance}]}}"}
    """
    await require(request, "operator")
    minutes = query_int(request, "minutes", 60, 1, 2880)
    series = await _console(request).history.alliance(time.time() - minutes * 60)
    return json({"merchants": series})


async def console_me(request: Request) -> Response:
    """Who this key is, so the console shows operator or merchant views; a merchant also gets its
    alliance account over the last 24 hours.
    ---
    summary: The signed-in console user
    responses:
      200: {description: "{role, merchant_id, alliance_history}"}
    """
    principal = await require(request, "operator", "merchant")
    body: dict[str, Any] = {"role": principal.role, "merchant_id": principal.merchant_id}
    if principal.merchant_id is not None:
        series = await _console(request).history.alliance(time.time() - 86_400, principal.merchant_id)
        body["alliance_history"] = series.get(principal.merchant_id, [])
    return json(body)


# --- models ------------------------------------------------------------------------------------


def _registry(request: Request) -> Any:
    registry = _console(request).registry
    if registry is None:
        raise Unavailable("the ranking domain (model registry) is not part of this build")
    return registry


async def ops_models(request: Request) -> Response:
    """Registered models, newest first, with their evaluation numbers and which one serves.
    ---
    summary: Model versions (operators)
    responses:
      200: {description: "{current, models: [...]}"}
    """
    await require(request, "operator")
    registry = _registry(request)
    models = _plain(await registry.list())
    current = _plain(await registry.current())
    return json({"current": current, "models": models})


def _by(principal: Any) -> str:
    return f"operator:{principal.key_id}"


async def ops_model_promote(request: Request) -> Response:
    """Serve this model version from now on (every API process hot-swaps to it).
    ---
    summary: Promote a model (operators)
    responses:
      200: {description: the promoted model}
    """
    principal = await require(request, "operator")
    version = request.path_params["version"]
    result = await _registry(request).promote(version, _by(principal))
    return json({"promoted": _plain(result), "current": _plain(await _registry(request).current())})


async def ops_model_rollback(request: Request) -> Response:
    """Go back to the model that served before the current one.
    ---
    summary: Roll back the model (operators)
    responses:
      200: {description: the model serving now}
    """
    principal = await require(request, "operator")
    result = await _registry(request).rollback(_by(principal))
    return json({"rolled_back_to": _plain(result), "current": _plain(await _registry(request).current())})


def _plot_path(model: Any) -> Path | None:
    record = _plain(model)
    if not isinstance(record, dict):
        return None
    for key in ("plot_path", "plot", "evaluation_plot"):
        value = record.get(key) or (record.get("evaluation") or {}).get(key)
        if isinstance(value, str) and value.endswith(".png"):
            return Path(value)
    path = record.get("path") or record.get("model_path")
    if isinstance(path, str):
        folder = Path(path) if Path(path).is_dir() else Path(path).parent
        for name in ("evaluation.png", "plot.png"):
            if (folder / name).is_file():
                return folder / name
    return None


async def ops_model_plot(request: Request) -> Response:
    """The evaluation plot of one model version (PNG).
    ---
    summary: Model evaluation plot (operators)
    responses:
      200: {description: PNG image}
    """
    await require(request, "operator")
    version = request.path_params["version"]
    registry = _registry(request)
    models = await registry.list()
    model = next((m for m in models if str(_plain(m).get("version")) == version), None)
    if model is None:
        raise NotFound(f"no model version {version}")
    path = _plot_path(model)
    settings = request.app.state.settings
    if path is None:
        candidate = settings.models_dir / version / "evaluation.png"
        path = candidate if candidate.is_file() else None
    if path is None or not path.is_file():
        raise NotFound(f"model {version} has no evaluation plot")
    return Response(path.read_bytes(), media_type="image/png", headers={"Cache-Control": "private, max-age=300"})


# --- the web page ------------------------------------------------------------------------------


def _asset(name: str) -> Response:
    path = (STATIC_DIR / name).resolve()
    if STATIC_DIR not in path.parents or not path.is_file():
        raise NotFound(f"no console file {name}")
    media_type = mimetypes.guess_type(path.name)[0] or "application/octet-stream"
    if media_type.startswith("text/") or media_type.endswith("javascript"):
        media_type += "; charset=utf-8"
    headers = {**SECURITY_HEADERS, "Cache-Control": "no-cache"}
    return Response(path.read_bytes(), media_type=media_type, headers=headers)


async def console_page(request: Request) -> Response:
    """The operators' and merchants' web console (sign in with a key).
    ---
    security: []
    summary: Web console
    responses:
      200: {description: HTML}
    """
    return _asset("index.html")


async def console_static(request: Request) -> Response:
    """The console's scripts, styles and images (no CDN, no build step).
    ---
    security: []
    responses:
      200: {description: a static file}
    """
    name = request.path_params["name"]
    if "/" in name or name.startswith("."):
        raise ValidationFailed("bad file name", fields={"name": "has an invalid format"})
    return _asset(name)


routes: list[BaseRoute] = [
    Route("/v1/ops/metrics", ops_metrics, methods=["GET"]),
    Route("/v1/ops/metrics/history", ops_metrics_history, methods=["GET"]),
    Route("/v1/ops/metrics/alliance-history", ops_alliance_history, methods=["GET"]),
    Route("/v1/console/me", console_me, methods=["GET"]),
    Route("/v1/ops/models", ops_models, methods=["GET"]),
    Route("/v1/ops/models/rollback", ops_model_rollback, methods=["POST"]),
    Route("/v1/ops/models/{version:str}/promote", ops_model_promote, methods=["POST"]),
    Route("/v1/ops/models/{version:str}/plot.png", ops_model_plot, methods=["GET"]),
    Route("/console", console_page, methods=["GET"]),
    Route("/console/", console_page, methods=["GET"], include_in_schema=False),
    Route("/console/static/{name:str}", console_static, methods=["GET"], include_in_schema=False),
]
