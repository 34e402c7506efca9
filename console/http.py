"""The console's HTTP surface: the ops admin routes it owns and the /console web page.

Owns `GET /v1/ops/metrics` (+ `/history`, `/alliance-history`), the model evaluation plot
(`GET /v1/ops/models/{version}/plot.png`; listing, promotion and rollback are ranking's routes),
`GET /v1/console/me` (who a key is, so the page shows the right views) and the static
console under `/console` with its security headers. Ranking config, experiments, alliances and
merchants are other domains' routes; the page is a client of them like any other.
"""

from __future__ import annotations

import logging
import mimetypes
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Route

from console.history import MetricHistory, MetricSampler
from console.lag import LagBySink
from console.metrics import MarketplaceMetrics, MarketplaceSources
from roomfeed.auth import require
from roomfeed.errors import NotFound, ValidationFailed
from roomfeed.http import bound, json, query_int
from roomfeed.leader import CONSOLE_SAMPLER, Leadership, always_lead
from roomfeed.resources import Resources
from roomfeed.settings import REPO_ROOT, Settings
from roomfeed.validation import ID_PATTERN

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


class LiveTotals(Protocol):
    """Platform-wide live statistics (events.live_stats.LiveStats)."""

    async def totals(self) -> dict[str, Any]: ...


class LiveRooms(Protocol):
    """The rooms live now (rooms.live_index.LiveIndex): a snapshot with `.rooms`."""

    async def snapshot(self) -> Any: ...


class Presence(Protocol):
    """Viewers in each room now (events.heat.RoomHeat)."""

    async def viewers_now(self, room_ids: Sequence[str]) -> list[int]: ...


class AllianceAccounts(Protocol):
    """Every merchant's alliance account over the last hours (alliance.ledger.Ledger)."""

    async def overview(self, now: float, hours: int = 48) -> dict[str, Any]: ...


class LagMeasurer(Protocol):
    """Consumer lag per group, topic and partition (events.lag.ConsumerLag)."""

    async def measure(self) -> dict[tuple[str, str, int], int]: ...

    async def close(self) -> None: ...


@dataclass
class Console:
    """What the console's routes use, built once at start-up, and its metric sampler."""

    settings: Settings
    metrics: MarketplaceMetrics
    history: MetricHistory
    sampler: MetricSampler
    lag: LagBySink
    sampler_leadership: Leadership = always_lead

    @classmethod
    def build(
        cls,
        resources: Resources,
        *,
        live_stats: LiveTotals,
        live_index: LiveRooms,
        presence: Presence,
        accounts: AllianceAccounts,
        consumer_lag: LagMeasurer,
    ) -> Console:
        settings = resources.settings
        lag = LagBySink(consumer_lag, settings.kafka_prefix)
        metrics = MarketplaceMetrics(_sources(live_stats, live_index, presence, accounts, lag))
        history = MetricHistory(resources.pool)
        return cls(
            settings=settings,
            metrics=metrics,
            history=history,
            sampler=MetricSampler(history, metrics.snapshot),
            lag=lag,
            sampler_leadership=resources.leases.leadership(CONSOLE_SAMPLER),
        )

    async def start(self) -> None:
        self.sampler.start(self.sampler_leadership)

    async def stop(self) -> None:
        await self.sampler.stop()
        await self.lag.close()


def _sources(
    live_stats: LiveTotals,
    live_index: LiveRooms,
    presence: Presence,
    accounts: AllianceAccounts,
    lag: LagBySink,
) -> MarketplaceSources:
    """Bind each number to the domain object that owns it."""

    async def rooms_live() -> int:
        return len((await live_index.snapshot()).rooms)

    # Presence only (one ZCOUNT per room): the full per-room stats of every live room would be
    # ~35 Redis operations a room, which at 10,000 rooms stalls Redis for everyone.
    async def viewers_now() -> int:
        room_ids = [room.room_id for room in (await live_index.snapshot()).rooms]
        return sum(await presence.viewers_now(room_ids)) if room_ids else 0

    async def alliance() -> Any:
        return await accounts.overview(time.time(), hours=1)

    return MarketplaceSources(
        totals=live_stats.totals,
        rooms_live=rooms_live,
        alliance=alliance,
        consumer_lag=lag.by_group,
        viewers_now=viewers_now,
    )


# --- metrics -----------------------------------------------------------------------------------


async def ops_metrics(request: Request, console: Console) -> Response:
    """Marketplace numbers now: rooms live, viewers now, funnel ratios, alliance delivery, consumer lag.
    ---
    summary: Marketplace metrics (operators)
    responses:
      200: {description: "rooms_live, viewers_now, enter_rate, avg_dwell_s, swipe_away_rate, conversion_per_visit, conversion_per_visitor, gmv_per_1k_impressions, alliance, consumer_lag, unavailable"}
    """
    await require(request, "operator")
    snapshot, accounts = await console.metrics.snapshot()
    return json({**snapshot, "alliance_accounts": accounts})


async def ops_metrics_history(request: Request, console: Console) -> Response:
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
    samples = await console.history.marketplace(time.time() - minutes * 60)
    return json({"period_s": console.history.period_s, "samples": samples})


async def ops_alliance_history(request: Request, console: Console) -> Response:
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
    series = await console.history.alliance(time.time() - minutes * 60)
    return json({"merchants": series})


async def console_me(request: Request, console: Console) -> Response:
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
        series = await console.history.alliance(time.time() - 86_400, principal.merchant_id)
        body["alliance_history"] = series.get(principal.merchant_id, [])
    return json(body)


# --- models ------------------------------------------------------------------------------------
# The ranking domain owns `GET /v1/ops/models`, promote and rollback (ranking/http.py); the console
# adds only the evaluation plot, which the page cannot fetch as a plain <img> (it needs the key).


def _evaluation_plot(settings: Any, version: str) -> Path | None:
    """A plot written for this model version, else the newest offline evaluation report's plot."""
    candidates = [settings.models_dir / version / name for name in ("evaluation.png", "eval.png")]
    candidates += [
        settings.data_dir / "reports" / "eval" / "eval.png",
        REPO_ROOT / "reports" / "eval" / "eval.png",
    ]
    found = [path for path in candidates if path.is_file()]
    return found[0] if found else None


async def ops_model_plot(request: Request, console: Console) -> Response:
    """The evaluation plot for a model version (PNG): its own, or the latest `roomfeed evaluate` report.
    ---
    summary: Model evaluation plot (operators)
    responses:
      200: {description: PNG image}
      404: {description: no plot has been written yet}
    """
    await require(request, "operator")
    version = request.path_params["version"]
    if not ID_PATTERN.match(version):
        raise ValidationFailed("bad model version", fields={"version": "has an invalid format"})
    path = _evaluation_plot(console.settings, version)
    if path is None:
        raise NotFound("no evaluation plot yet: run `roomfeed evaluate` (writes reports/eval/eval.png)")
    return Response(
        path.read_bytes(), media_type="image/png", headers={"Cache-Control": "private, max-age=60"}
    )


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


def routes(console: Console) -> list[BaseRoute]:
    return [
        Route("/v1/ops/metrics", bound(ops_metrics, console), methods=["GET"]),
        Route("/v1/ops/metrics/history", bound(ops_metrics_history, console), methods=["GET"]),
        Route("/v1/ops/metrics/alliance-history", bound(ops_alliance_history, console), methods=["GET"]),
        Route("/v1/console/me", bound(console_me, console), methods=["GET"]),
        Route("/v1/ops/models/{version:str}/plot.png", bound(ops_model_plot, console), methods=["GET"]),
        Route("/console", console_page, methods=["GET"]),
        Route("/console/", console_page, methods=["GET"], include_in_schema=False),
        Route("/console/static/{name:str}", console_static, methods=["GET"], include_in_schema=False),
    ]
