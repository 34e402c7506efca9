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

from starlette.requests import Request
from starlette.responses import HTMLResponse, Response
from starlette.routing import BaseRoute, Route

from alliance import landing as landing_page
from alliance.alliances import AllianceBook, Terms
from alliance.attribution import AttributionBook
from alliance.boost import AllianceBoost
from alliance.clock import AllianceClock
from alliance.codes import Attribution, CodeBook, CodeInfo, qr_png
from alliance.ledger import Ledger
from alliance.orders import OrderAttribution
from alliance.plan import PacingPlans
from alliance.scheduler import ExposureScheduler
from roomfeed.auth import require
from roomfeed.errors import NotFound
from roomfeed.http import bound, json, query_int, read_json
from roomfeed.leader import ALLIANCE_SCHEDULER, Leadership, always_lead
from roomfeed.resources import Resources
from roomfeed.settings import Settings
from roomfeed.validation import ID_PATTERN, Body
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
        orders.subscribe(OrderAttribution(pool))
        return cls(
            settings=resources.settings,
            merchants=merchants,
            orders=orders,
            alliances=AllianceBook(pool),
            code_book=CodeBook(resources.settings, pool),
            attribution_book=AttributionBook(pool, redis, clock),
            ledger=Ledger(pool, clock),
            scheduler=ExposureScheduler(pool, redis, clock=clock),
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


async def create_alliance(request: Request, domain: Alliance) -> Response:
    """Create an alliance; the caller becomes its owner and first member.
    ---
    requestBody:
      required: true
      content:
        application/json:
          schema:
            type: object
            required: [name]
            properties:
              name: {type: string, minLength: 1, maxLength: 120}
              terms:
                type: object
                description: every term optional (defaults in alliance.alliances.Terms)
                properties:
                  exchange_rate: {type: number, minimum: 0, exclusiveMinimum: true, maximum: 1000, default: 3.0}
                  min_dwell_ms: {type: integer, minimum: 0, maximum: 3600000, default: 10000}
                  boost_share_cap: {type: number, minimum: 0, exclusiveMinimum: true, maximum: 1, default: 0.2}
                  daily_earning_cap: {type: number, minimum: 0, exclusiveMinimum: true, maximum: 1000000000, default: 3000.0}
                  relevance_floor: {type: number, minimum: 0, maximum: 2, default: 0.8, description: a boosted room's predicted enter probability is at least this share of the page's}
                  attribution_window_h: {type: integer, minimum: 1, maximum: 720, default: 24}
                  viewer_daily_cap: {type: integer, minimum: 1, maximum: 10000, default: 20}
                  device_daily_cap: {type: integer, minimum: 1, maximum: 10000, default: 30}
                  commission_rate: {type: number, minimum: 0, maximum: 1, default: 0.05}
          example: {name: "Jing'an street alliance", terms: {exchange_rate: 3.0, min_dwell_ms: 10000}}
    responses:
      201: {description: the alliance}
      422: {description: invalid fields}
    """
    principal = await require(request, "merchant")
    body = Body(await read_json(request))
    name = body.text("name", max_len=120)
    terms_body = body.obj("terms", required=False)
    terms = Terms.read(terms_body)
    if terms_body is not None:
        body.merge(terms_body)
    body.finish()
    alliance = await domain.alliances.create(principal.merchant_id or "", name.strip(), terms)
    return json(alliance.to_json(), status=201)


async def get_alliance(request: Request, domain: Alliance) -> Response:
    """An alliance, its terms and members (members and invitees only; others get 404).
    ---
    responses:
      200: {description: the alliance}
      404: {description: no such alliance for this merchant}
    """
    principal = await require(request, "merchant", "operator")
    alliance = await domain.alliances.get(request.path_params["alliance_id"], principal.merchant_id)
    return json(alliance.to_json())


async def invite_member(request: Request, domain: Alliance) -> Response:
    """The owner invites a merchant; it becomes a member when it joins.
    ---
    requestBody:
      required: true
      content:
        application/json:
          schema:
            type: object
            required: [merchant_id]
            properties:
              merchant_id: {type: string, pattern: '^[A-Za-z0-9_.:-]{1,64}$'}
          example: {merchant_id: mer_0123456789abcdef}
    responses:
      201: {description: the alliance with the invitation}
    """
    principal = await require(request, "merchant")
    body = Body(await read_json(request))
    merchant_id = body.ident("merchant_id")
    body.finish()
    if not await domain.merchants.exists(merchant_id):
        body.fail("merchant_id", "is not a merchant")
        body.finish()
    alliance = await domain.alliances.invite(
        request.path_params["alliance_id"], principal.merchant_id or "", merchant_id
    )
    return json(alliance.to_json(), status=201)


async def join_alliance(request: Request, domain: Alliance) -> Response:
    """Accept an invitation.
    ---
    responses:
      200: {description: the alliance}
      404: {description: no invitation}
    """
    principal = await require(request, "merchant")
    alliance = await domain.alliances.join(request.path_params["alliance_id"], principal.merchant_id or "")
    return json(alliance.to_json())


async def remove_member(request: Request, domain: Alliance) -> Response:
    """Leave an alliance, or (owner) remove a member.
    ---
    responses:
      204: {description: removed}
    """
    principal = await require(request, "merchant")
    await domain.alliances.remove(
        request.path_params["alliance_id"], principal.merchant_id or "", request.path_params["merchant_id"]
    )
    return Response(status_code=204)


async def create_code(request: Request, domain: Alliance) -> Response:
    """A signed attribution code for the merchant, or one of its stores or staff.
    ---
    requestBody:
      required: false
      description: no body is a code for the merchant itself
      content:
        application/json:
          schema:
            type: object
            properties:
              store_id: {type: string, pattern: '^[A-Za-z0-9_.:-]{1,64}$'}
              staff_id: {type: string, pattern: '^[A-Za-z0-9_.:-]{1,64}$'}
          example: {store_id: sto_0123456789abcdef, staff_id: stf_0123456789abcdef}
    responses:
      201: {description: "{code, url}"}
    """
    principal = await require(request, "merchant")
    empty = (
        request.headers.get("content-length") in (None, "0") and "transfer-encoding" not in request.headers
    )
    body = Body(
        {} if empty else await read_json(request)
    )  # every field is optional: no body is a merchant code
    store_id = body.ident("store_id", required=False)
    staff_id = body.ident("staff_id", required=False)
    body.finish()
    if (store_id or staff_id) and not await domain.merchants.store_and_staff(
        principal.merchant_id or "", store_id, staff_id
    ):
        fields = {
            k: "is not one of this merchant's"
            for k, v in (("store_id", store_id), ("staff_id", staff_id))
            if v
        }
        body.errors.update(fields)
        body.finish("the store or staff member does not belong to this merchant")
    assert principal.merchant_id is not None  # a merchant key always names its merchant
    info = await domain.code_book.issue(Attribution(principal.merchant_id, store_id, staff_id))
    return json(_code_json(info), status=201)


async def list_codes(request: Request, domain: Alliance) -> Response:
    """The merchant's codes with their open counts.
    ---
    responses:
      200: {description: codes}
    """
    principal = await require(request, "merchant")
    codes = await domain.code_book.list(principal.merchant_id or "")
    return json({"codes": [_code_json(c) for c in codes]})


def _parse_code(request: Request, domain: Alliance) -> tuple[str, Attribution]:
    code = request.path_params["code"]
    return code, domain.code_book.parse(code)


async def code_png(request: Request, domain: Alliance) -> Response:
    """The code's QR image (PNG) pointing at its landing URL.
    ---
    security: []
    responses:
      200: {description: PNG}
      404: {description: forged or unknown code}
    """
    code, _ = _parse_code(request, domain)
    png = await asyncio.to_thread(qr_png, domain.code_book.url(code))
    return Response(png, media_type="image/png", headers={"Cache-Control": "public, max-age=86400"})


async def landing(request: Request, domain: Alliance) -> Response:
    """Where a scanned code lands: an HTML page that opens the app (deep link) and falls back to the
    web, counting one open per device (cookie `rf_dev`). `Accept: application/json` gets the code's
    merchant, store and staff instead.
    ---
    security: []
    responses:
      200: {description: "the landing page (text/html), or {code, merchant_id, store_id, staff_id, session} as JSON"}
      404: {description: forged, altered, non-canonical or retired code}
    """
    code, attribution = _parse_code(request, domain)
    accept = request.headers.get("accept", "")
    if "application/json" in accept and "text/html" not in accept:
        return json(
            {
                "code": code,
                "merchant_id": attribution.merchant_id,
                "store_id": attribution.store_id,
                "staff_id": attribution.staff_id,
                "session": {"entry": {"code": code}},
            }
        )
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


async def _readable_merchant(request: Request) -> str:
    """The path's merchant, when the caller may read it: the merchant itself or an operator."""
    principal = await require(request, "merchant", "operator")
    merchant_id = str(request.path_params["merchant_id"])
    if (principal.role == "merchant" and principal.merchant_id != merchant_id) or not ID_PATTERN.match(
        merchant_id
    ):
        raise NotFound("no such merchant")
    return merchant_id


async def merchant_ledger(request: Request, domain: Alliance) -> Response:
    """A merchant's alliance ledger: visits, earned/delivered/expired exposure, balance, attributed
    orders and GMV by store and staff, revenue share per store. The merchant itself or an operator.
    ---
    responses:
      200: {description: the statement}
      404: {description: not this merchant's}
    """
    merchant_id = await _readable_merchant(request)
    statement = await domain.ledger.statement(merchant_id)
    # The merchant's own verified orders (rooms), to reconcile with the attributed ones.
    statement["orders"] = await domain.orders.totals(merchant_id)
    return json(statement)


async def merchant_plan(request: Request, domain: Alliance) -> Response:
    """A merchant's pacing plan: what it is owed, the held credit and when it settles, the pace, how long
    delivery takes at the recent pace, what expires and why, and why exposure was not delivered lately
    (not live, below the relevance floor, already on the page, ...). The merchant itself or an operator.
    ---
    responses:
      200: {description: the plan}
      404: {description: not this merchant's}
    """
    merchant_id = await _readable_merchant(request)
    return json(await domain.plans.of(merchant_id, time.time()))


async def ops_alliances(request: Request, domain: Alliance) -> Response:
    """Operators' overview: per merchant earned, delivered, balance, delivery ratio, hourly series.
    ---
    parameters: [{name: hours, in: query, schema: {type: integer, default: 48}}]
    responses:
      200: {description: overview}
    """
    await require(request, "operator")
    hours = query_int(request, "hours", 48, 1, 24 * 31)
    return json(await domain.ledger.overview(time.time(), hours))


def routes(domain: Alliance) -> list[BaseRoute]:
    return [
        Route("/v1/alliances", bound(create_alliance, domain), methods=["POST"]),
        Route("/v1/alliances/{alliance_id}", bound(get_alliance, domain), methods=["GET"]),
        Route("/v1/alliances/{alliance_id}/members", bound(invite_member, domain), methods=["POST"]),
        Route("/v1/alliances/{alliance_id}/join", bound(join_alliance, domain), methods=["POST"]),
        Route(
            "/v1/alliances/{alliance_id}/members/{merchant_id}",
            bound(remove_member, domain),
            methods=["DELETE"],
        ),
        Route("/v1/codes", bound(create_code, domain), methods=["POST"]),
        Route("/v1/codes", bound(list_codes, domain), methods=["GET"]),
        Route("/v1/codes/{code}.png", bound(code_png, domain), methods=["GET"]),
        Route("/c/{code}", bound(landing, domain), methods=["GET"]),
        Route("/v1/merchants/{merchant_id}/ledger", bound(merchant_ledger, domain), methods=["GET"]),
        Route("/v1/merchants/{merchant_id}/alliance-plan", bound(merchant_plan, domain), methods=["GET"]),
        Route("/v1/ops/alliances", bound(ops_alliances, domain), methods=["GET"]),
    ]
