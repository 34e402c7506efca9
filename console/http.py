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

import msgspec
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Route

from console.history import MetricHistory, MetricSampler
from console.lag import LagBySink
from console.metrics import MarketplaceMetrics, MarketplaceSources
from console.models import AllianceHistory, ConsoleUser, HistoryQuery, MarketplaceNow, MetricSeries
from roomfeed.auth import Principal
from roomfeed.errors import NotFound, ValidationFailed
from roomfeed.leader import CONSOLE_SAMPLER, Leadership, always_lead
from roomfeed.operations import PNG, operation
from roomfeed.resources import Resources
from roomfeed.settings import REPO_ROOT, Settings
from roomfeed.validation import Ident

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


# Live rooms per presence call of the sampler's marketplace-wide "viewers now" (see `_sources`).
PRESENCE_CHUNK = 1_000


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
    # ~35 Redis operations a room, which at 10,000 rooms stalls Redis for everyone. Asked in chunks:
    # one script over every live room held Redis for 107 ms at 100,000 rooms (every feed page waiting
    # behind it), PRESENCE_CHUNK rooms a call for ~1.3 ms, for the same CPU in the API process.
    async def viewers_now() -> int:
        room_ids = [room.room_id for room in (await live_index.snapshot()).rooms]
        total = 0
        for start in range(0, len(room_ids), PRESENCE_CHUNK):
            total += sum(await presence.viewers_now(room_ids[start : start + PRESENCE_CHUNK]))
        return total

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


@operation("GET", "/v1/ops/metrics", roles=("operator",), tag="metrics")
async def ops_metrics(console: Console, principal: Principal) -> MarketplaceNow:
    """Marketplace metrics now: rooms live, viewers now, funnel ratios, alliance delivery, consumer lag."""
    snapshot, accounts = await console.metrics.snapshot()
    return msgspec.convert({**snapshot, "alliance_accounts": accounts}, MarketplaceNow)


@operation("GET", "/v1/ops/metrics/history", roles=("operator",), tag="metrics")
async def ops_metrics_history(console: Console, principal: Principal, query: HistoryQuery) -> MetricSeries:
    """Marketplace metrics over time, sampled every 10 s over the last `minutes`."""
    samples = await console.history.marketplace(time.time() - query.minutes * 60)
    return msgspec.convert({"period_s": console.history.period_s, "samples": samples}, MetricSeries)


@operation("GET", "/v1/ops/metrics/alliance-history", roles=("operator",), tag="metrics")
async def ops_alliance_history(
    console: Console, principal: Principal, query: HistoryQuery
) -> AllianceHistory:
    """Alliance accounts over time: earned, delivered, balance per merchant."""
    series = await console.history.alliance(time.time() - query.minutes * 60)
    return msgspec.convert({"merchants": series}, AllianceHistory)


@operation("GET", "/v1/console/me", roles=("operator", "merchant"), tag="console")
async def console_me(console: Console, principal: Principal) -> ConsoleUser:
    """The signed-in console user.

    Who this key is, so the console shows operator or merchant views; a merchant also gets its
    alliance account over the last 24 hours."""
    body: dict[str, Any] = {"role": principal.role, "merchant_id": principal.merchant_id}
    if principal.merchant_id is not None:
        series = await console.history.alliance(time.time() - 86_400, principal.merchant_id)
        body["alliance_history"] = series.get(principal.merchant_id, [])
    return msgspec.convert(body, ConsoleUser)


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


@operation(
    "GET",
    "/v1/ops/models/{version}/plot.png",
    roles=("operator",),
    tag="models",
    media_type="image/png",
    response=PNG,
)
async def ops_model_plot(console: Console, principal: Principal, version: Ident) -> Response:
    """A model version's evaluation plot (PNG).

    Its own, or the latest `roomfeed evaluate` report's; 404 until one has been written."""
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
    """The operators' and merchants' web console (sign in with a key)."""
    return _asset("index.html")


async def console_static(request: Request) -> Response:
    """The console's scripts, styles and images (no CDN, no build step)."""
    name = request.path_params["name"]
    if "/" in name or name.startswith("."):
        raise ValidationFailed("bad file name", fields={"name": "has an invalid format"})
    return _asset(name)


def routes(console: Console) -> list[BaseRoute]:
    operations = (ops_metrics, ops_metrics_history, ops_alliance_history, console_me, ops_model_plot)
    # The page and its files are not API operations: they are left out of the document.
    return [
        *(route.bound(console) for route in operations),
        Route("/console", console_page, methods=["GET"], include_in_schema=False),
        Route("/console/", console_page, methods=["GET"], include_in_schema=False),
        Route("/console/static/{name:str}", console_static, methods=["GET"], include_in_schema=False),
    ]
