"""HTTP routes of the alliance domain (thin: parse, authorize, call the domain, answer).

Merchant key: alliances and membership, codes, its own ledger. Public: a code's QR image and
landing. Operator key: any merchant's ledger and the alliance overview.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from dataclasses import dataclass
from typing import Any, Protocol

import msgspec
from starlette.requests import Request
from starlette.responses import HTMLResponse, Response
from starlette.routing import BaseRoute

from alliance import landing as landing_page
from alliance.alliances import AllianceBook, Terms
from alliance.attribution import AttributionBook
from alliance.boost import AllianceBoost
from alliance.clock import AllianceClock
from alliance.codes import Attribution, CodeBook, CodeInfo, qr_png
from alliance.ledger import Ledger
from alliance.models import Alliance as AllianceOut
from alliance.models import (
    AlliancePlan,
    CodeLanding,
    CodeList,
    LandingEntry,
    LandingSession,
    NewAlliance,
    NewCode,
    NewMember,
    Overview,
    OverviewQuery,
    Statement,
)
from alliance.models import Code as CodeOut
from alliance.orders import OrderAttribution
from alliance.plan import PacingPlans
from alliance.scheduler import ExposureScheduler, advance_mode
from alliance.settlement import Settlement
from roomfeed.auth import Principal
from roomfeed.errors import ValidationFailed
from roomfeed.leader import ALLIANCE_SCHEDULER, Leadership, always_lead
from roomfeed.operations import PNG, Created, created, operation
from roomfeed.paging import ListQuery
from roomfeed.resources import Resources
from roomfeed.settings import Settings
from roomfeed.validation import ID_PATTERN, Ident
from rooms.orders import OrderSubscriber

log = logging.getLogger("roomfeed.alliance")
SCHEDULER_TICK_S = 5.0


class VerifiedOrders(Protocol):
    """What the alliance uses of the rooms domain's verified orders (rooms.orders.OrderBook)."""

    def subscribe(self, subscriber: OrderSubscriber) -> None: ...

    async def totals(self, merchant_id: str) -> list[dict[str, Any]]: ...


class Merchants(Protocol):
    """What the alliance asks the rooms domain (rooms.catalog.MerchantCatalog) about merchants."""

    async def exists(self, merchant_id: str) -> bool: ...

    async def store_and_staff(self, merchant_id: str, store_id: str | None, staff_id: str | None) -> bool: ...

    async def categories(self, merchant_ids: list[str]) -> dict[str, str | None]: ...


@dataclass
class Alliance:
    """The alliance domain in one API process: what its routes and the feed use, and the scheduler's ticks."""

    settings: Settings
    merchants: Merchants
    orders: VerifiedOrders
    alliances: AllianceBook
    code_book: CodeBook
    attribution_book: AttributionBook
    ledger: Ledger
    scheduler: ExposureScheduler
    boost: AllianceBoost
    plans: PacingPlans
    scheduler_leadership: Leadership = always_lead
    _tick: asyncio.Task[None] | None = None
    _flush: asyncio.Task[None] | None = None

    clock: AllianceClock = AllianceClock()

    @classmethod
    def build(cls, resources: Resources, merchants: Merchants, orders: VerifiedOrders) -> Alliance:
        pool, redis = resources.pool, resources.redis
        clock = AllianceClock.of(resources.settings)
        # Verified orders are attributed as they are recorded: the only source of attributed GMV.
        orders.subscribe(OrderAttribution(pool, clock))
        return cls(
            settings=resources.settings,
            merchants=merchants,
            orders=orders,
            alliances=AllianceBook(pool),
            code_book=CodeBook(resources.settings, pool),
            attribution_book=AttributionBook(pool, redis, clock),
            ledger=Ledger(pool, clock),
            scheduler=ExposureScheduler(
                pool,
                redis,
                clock=clock,
                settlement=Settlement(pool, clock, categories=merchants.categories),
                advance=advance_mode(resources.settings.alliance_advance),
            ),
            boost=AllianceBoost(redis, clock=clock),
            scheduler_leadership=resources.leases.leadership(ALLIANCE_SCHEDULER),
            clock=clock,
            plans=PacingPlans(pool, redis, clock),
        )

    async def start(self) -> None:
        # Every 5 s, or every alliance minute when the alliance's clock runs faster (benchmarks).
        every = min(SCHEDULER_TICK_S, max(0.5, self.clock.wall(60.0)))
        self._tick = asyncio.create_task(
            self.scheduler.run_forever(every, leadership=self.scheduler_leadership)
        )
        self._flush = asyncio.create_task(self.boost.flush_every(every))

    async def stop(self) -> None:
        for task in (self._tick, self._flush):
            if task is not None:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await task
        await self.boost.flush()


def _code_json(info: CodeInfo) -> dict[str, Any]:
    return {
        "code": info.code,
        "url": info.url,
        "qr_url": f"/v1/codes/{info.code}.png",
        "merchant_id": info.merchant_id,
        "store_id": info.store_id,
        "staff_id": info.staff_id,
        "opens": info.opens,
        "created_at": info.created_at,
    }


@operation(
    "POST",
    "/v1/alliances",
    roles=("merchant",),
    tag="alliances",
    example={"name": "Jing'an street alliance", "terms": {"exchange_rate": 3.0, "min_dwell_ms": 10000}},
)
async def create_alliance(domain: Alliance, principal: Principal, body: NewAlliance) -> Created[AllianceOut]:
    """Create an alliance; the caller becomes its owner and first member."""
    terms = body.terms.terms() if body.terms is not None else Terms()
    alliance = await domain.alliances.create(principal.own_merchant(), body.name.strip(), terms)
    return created(AllianceOut, alliance.to_json(), "/v1/alliances/{alliance_id}")


@operation("GET", "/v1/alliances/{alliance_id}", roles=("merchant", "operator"), tag="alliances")
async def get_alliance(domain: Alliance, principal: Principal, alliance_id: Ident) -> AllianceOut:
    """An alliance, its terms and members (members and invitees only; others get 404)."""
    alliance = await domain.alliances.get(alliance_id, principal.merchant_id)
    return msgspec.convert(alliance.to_json(), AllianceOut)


@operation(
    "POST",
    "/v1/alliances/{alliance_id}/members",
    roles=("merchant",),
    status=201,
    tag="alliances",
    example={"merchant_id": "mer_0123456789abcdef"},
)
async def invite_member(
    domain: Alliance, principal: Principal, alliance_id: Ident, body: NewMember
) -> AllianceOut:
    """The owner invites a merchant; it becomes a member when it joins."""
    if not await domain.merchants.exists(body.merchant_id):
        raise ValidationFailed("no such merchant", fields={"merchant_id": "is not a merchant"})
    alliance = await domain.alliances.invite(alliance_id, principal.own_merchant(), body.merchant_id)
    return msgspec.convert(alliance.to_json(), AllianceOut)


@operation("POST", "/v1/alliances/{alliance_id}/join", roles=("merchant",), tag="alliances")
async def join_alliance(domain: Alliance, principal: Principal, alliance_id: Ident) -> AllianceOut:
    """Accept an invitation (404 without one)."""
    alliance = await domain.alliances.join(alliance_id, principal.own_merchant())
    return msgspec.convert(alliance.to_json(), AllianceOut)


@operation(
    "DELETE", "/v1/alliances/{alliance_id}/members/{merchant_id}", roles=("merchant",), tag="alliances"
)
async def remove_member(
    domain: Alliance, principal: Principal, alliance_id: Ident, merchant_id: Ident
) -> None:
    """Leave an alliance, or (owner) remove a member."""
    await domain.alliances.remove(alliance_id, principal.own_merchant(), merchant_id)


@operation(
    "POST",
    "/v1/codes",
    roles=("merchant",),
    status=201,
    tag="codes",
    example={"store_id": "sto_0123456789abcdef", "staff_id": "stf_0123456789abcdef"},
)
async def create_code(domain: Alliance, principal: Principal, body: NewCode | None = None) -> CodeOut:
    """A signed attribution code for the merchant, or one of its stores or staff.

    No body is a code for the merchant itself."""
    body = body or NewCode()
    merchant_id = principal.own_merchant()
    if (body.store_id or body.staff_id) and not await domain.merchants.store_and_staff(
        merchant_id, body.store_id, body.staff_id
    ):
        fields = {
            k: "is not one of this merchant's"
            for k, v in (("store_id", body.store_id), ("staff_id", body.staff_id))
            if v
        }
        raise ValidationFailed("the store or staff member does not belong to this merchant", fields=fields)
    info = await domain.code_book.issue(Attribution(merchant_id, body.store_id, body.staff_id))
    return msgspec.convert(_code_json(info), CodeOut)


@operation("GET", "/v1/codes", roles=("merchant",), tag="codes")
async def list_codes(domain: Alliance, principal: Principal, query: ListQuery) -> CodeList:
    """The merchant's codes with their open counts, newest first (paged: `next`)."""
    codes, following = await domain.code_book.list(principal.own_merchant(), query.limit, query.after)
    return msgspec.convert({"codes": [_code_json(c) for c in codes], "next": following}, CodeList)


@operation("GET", "/v1/codes/{code}.png", tag="codes", media_type="image/png", response=PNG)
async def code_png(domain: Alliance, code: str) -> Response:
    """The code's QR image (PNG) pointing at its landing URL (public; 404 for a forged code)."""
    domain.code_book.parse(code)
    png = await asyncio.to_thread(qr_png, domain.code_book.url(code))
    return Response(png, media_type="image/png", headers={"Cache-Control": "public, max-age=86400"})


@operation(
    "GET",
    "/c/{code}",
    tag="codes",
    response=CodeLanding,
    media_type="application/json",
)
async def landing(request: Request, domain: Alliance, code: str) -> Response:
    """Where a scanned code lands (public).

    For a browser (a phone that scanned the QR image): an HTML page that opens the app (deep link)
    and falls back to the web, counting one open per device (cookie `rf_dev`). With
    `Accept: application/json`: who the code attributes to and the session the app starts with it.
    404 for a forged, altered, non-canonical or retired code."""
    attribution = domain.code_book.parse(code)
    accept = request.headers.get("accept", "")
    if "application/json" in accept and "text/html" not in accept:
        answer = CodeLanding(
            code=code,
            merchant_id=attribution.merchant_id,
            store_id=attribution.store_id,
            staff_id=attribution.staff_id,
            session=LandingSession(entry=LandingEntry(code=code)),
        )
        return Response(msgspec.json.encode(answer), media_type="application/json")
    settings = domain.settings
    device = request.cookies.get(landing_page.DEVICE_COOKIE, "")
    fresh = not (0 < len(device) <= 64 and ID_PATTERN.match(device))
    if fresh:
        device = landing_page.new_device_id()
    try:
        await domain.code_book.record_open(code, device=f"cookie:{device}")
    except Exception as exc:  # the viewer still lands; the count is best effort
        log.warning("open of a code not counted: %s", exc)
    body = landing_page.page(
        code,
        landing_page.app_link(settings.app_link_base, code),
        landing_page.web_link(settings.web_fallback_url, code),
    )
    response = HTMLResponse(
        body,
        headers={
            "Content-Security-Policy": landing_page.CSP,
            "Cache-Control": "no-store",
            "Referrer-Policy": "no-referrer",
            "X-Content-Type-Options": "nosniff",
        },
    )
    if fresh:
        response.set_cookie(
            landing_page.DEVICE_COOKIE,
            device,
            max_age=landing_page.DEVICE_COOKIE_MAX_AGE,
            httponly=True,
            samesite="lax",
            secure=settings.public_base_url.startswith("https://"),
        )
    return response


@operation("GET", "/v1/merchants/{merchant_id}/ledger", roles=("merchant", "operator"), tag="ledger")
async def merchant_ledger(domain: Alliance, principal: Principal, merchant_id: Ident) -> Statement:
    """A merchant's alliance ledger (the merchant itself or an operator).

    Visits, earned, held, delivered and expired exposure, balance, attributed orders and GMV by
    store and staff, revenue share per store."""
    principal.check_scope(merchant_id)
    statement = await domain.ledger.statement(merchant_id)
    # The merchant's own verified orders (rooms), to reconcile with the attributed ones.
    statement["orders"] = await domain.orders.totals(merchant_id)
    return msgspec.convert(statement, Statement)


@operation(
    "GET",
    "/v1/merchants/{merchant_id}/alliance-plan",
    roles=("merchant", "operator"),
    tag="ledger",
)
async def merchant_plan(domain: Alliance, principal: Principal, merchant_id: Ident) -> AlliancePlan:
    """A merchant's pacing plan (the merchant itself or an operator).

    What it is owed, the held credit and when it settles, the pace, how long delivery takes at the
    recent pace, what expires and why, and why exposure was not delivered lately (not live, below
    the relevance floor, already on the page, ...)."""
    principal.check_scope(merchant_id)
    return msgspec.convert(await domain.plans.of(merchant_id, time.time()), AlliancePlan)


@operation("GET", "/v1/ops/alliances", roles=("operator",), tag="ledger")
async def ops_alliances(domain: Alliance, principal: Principal, query: OverviewQuery) -> Overview:
    """Operators' overview: per merchant earned, delivered, balance, delivery ratio, hourly series."""
    return msgspec.convert(await domain.ledger.overview(time.time(), query.hours), Overview)


def routes(domain: Alliance) -> list[BaseRoute]:
    operations = (
        create_alliance,
        get_alliance,
        invite_member,
        join_alliance,
        remove_member,
        create_code,
        list_codes,
        code_png,
        landing,
        merchant_ledger,
        merchant_plan,
        ops_alliances,
    )
    return [route.bound(domain) for route in operations]
