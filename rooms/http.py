"""HTTP routes of the rooms domain: merchants, stores, staff, products, rooms, deals, consults.

Handlers parse, authorize, call the domain's objects (`Rooms`, built by the composition root) and answer JSON. Merchant
routes are scoped by the key's merchant_id (another merchant's object answers 404); the operator
creates merchants; viewers claim deals and book consults with their viewer token.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from dataclasses import dataclass
from typing import Any

import asyncpg
import orjson
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Route

from events.vocabulary import VIEWER_EVENTS
from roomfeed.auth import create_key, require
from roomfeed.errors import InvalidJson, NotFound, ValidationFailed
from roomfeed.http import bound, json, query_int, read_json
from roomfeed.kafka import ensure_topics
from roomfeed.leader import ROOM_RELAY, Leadership, always_lead
from roomfeed.resources import Resources
from roomfeed.settings import Settings
from roomfeed.validation import ID_PATTERN, Body
from rooms import orders_http
from rooms.catalog import MerchantCatalog
from rooms.consults import ConsultBook
from rooms.deals import DealBook, claim_json
from rooms.directory import RoomDirectory
from rooms.inputs import CURRENCY, URL, epoch, read_merchant, read_product, read_room, read_staff, read_store
from rooms.lifecycle import RoomBook
from rooms.live_index import LiveIndex
from rooms.orders import OrderBook
from rooms.outbox import LIFECYCLE_TOPIC, KafkaPublisher, RoomRelay

log = logging.getLogger("roomfeed.rooms")

STATUSES = ("scheduled", "live", "ended")


@dataclass
class Rooms:
    """The rooms domain in one API process: what its routes and the other domains use."""

    settings: Settings
    pool: asyncpg.Pool  # a new merchant's first key (roomfeed.auth.create_key)
    catalog: MerchantCatalog
    rooms: RoomBook
    deals: DealBook
    consults: ConsultBook
    live_index: LiveIndex
    directory: RoomDirectory
    relay: RoomRelay
    # Verified orders; other domains subscribe to their entries (OrderBook.subscribe) when built.
    orders: OrderBook
    relay_leadership: Leadership = always_lead
    _topics: asyncio.Task[None] | None = None

    @classmethod
    def build(cls, resources: Resources) -> Rooms:
        directory = RoomDirectory(resources.pool, resources.redis)
        relay = RoomRelay(resources.pool, resources.redis, KafkaPublisher(resources))
        return cls(
            settings=resources.settings,
            pool=resources.pool,
            catalog=MerchantCatalog(resources.pool),
            rooms=RoomBook(resources.pool, resources.redis, relay, directory),
            deals=DealBook(resources.pool, resources.redis),
            consults=ConsultBook(resources.pool),
            live_index=LiveIndex(resources.redis),
            directory=directory,
            relay=relay,
            orders=OrderBook(resources.pool),
            relay_leadership=resources.leases.leadership(ROOM_RELAY),
        )

    async def start(self) -> None:
        """Make sure the topics exist (in the background) and start the room relay's sweep."""
        self._topics = asyncio.get_running_loop().create_task(_ensure_topics(self.settings))
        self.relay.start(leadership=self.relay_leadership)
        self.orders.start()

    async def stop(self) -> None:
        if self._topics is not None:
            self._topics.cancel()
            with contextlib.suppress(BaseException):
                await self._topics
        await self.orders.stop()
        await self.relay.stop()


async def _optional_json(request: Request) -> Any:
    """A body that may be absent (claims): {} when empty, else JSON, within a small limit."""
    raw = await request.body()
    if len(raw) > 10_000:
        raise ValidationFailed("request body too large", fields={"body": "at most 10000 bytes"})
    if not raw.strip():
        return {}
    try:
        return orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise InvalidJson(
            f"request body is not valid JSON: {exc}", fields={"body": "is not valid JSON"}
        ) from None


def _path_id(request: Request, name: str) -> str:
    value = str(request.path_params[name])
    if not ID_PATTERN.match(value):
        raise NotFound(f"no such {name.removesuffix('_id')}")
    return value


# --- operators: merchants -------------------------------------------------------------------


async def create_merchant(request: Request, domain: Rooms) -> Response:
    """Create a merchant and its first key (the key is shown once).
    ---
    tags: [merchants]
    requestBody:
      required: true
      content:
        application/json:
          schema:
            type: object
            required: [name]
            properties:
              name: {type: string, minLength: 1, maxLength: 120}
              category: {type: string, minLength: 1, maxLength: 40, description: stored trimmed and lower-case}
              description: {type: string, maxLength: 2000}
          example: {name: "Glow Beauty", category: "beauty"}
    responses:
      201: {description: "{merchant_id, key, merchant}"}
    """
    await require(request, "operator")
    new = read_merchant(await read_json(request))
    merchant = await domain.catalog.create_merchant(new.name, new.category, new.description)
    _, key = await create_key(domain.pool, "merchant", merchant["merchant_id"], label=new.name)
    return json({"merchant_id": merchant["merchant_id"], "key": key, "merchant": merchant}, status=201)


async def list_merchants(request: Request, domain: Rooms) -> Response:
    """Merchants, by id (operators). `?after=<merchant_id>&limit=N` pages.
    ---
    tags: [merchants]
    responses:
      200: {description: "{merchants: [...]}"}
    """
    await require(request, "operator")
    limit = query_int(request, "limit", 100, 1, 1000)
    after = request.query_params.get("after") or None
    merchants = await domain.catalog.list_merchants(limit, after)
    return json(
        {
            "merchants": merchants,
            "next_after": merchants[-1]["merchant_id"] if len(merchants) == limit else None,
        }
    )


def _merchant_scope(principal_role: str, principal_merchant: str | None, merchant_id: str) -> None:
    if principal_role == "merchant" and principal_merchant != merchant_id:
        raise NotFound("no such merchant")


# --- merchants: stores, staff, products -----------------------------------------------------


async def create_store(request: Request, domain: Rooms) -> Response:
    """Add an offline store.
    ---
    tags: [stores]
    requestBody:
      required: true
      content:
        application/json:
          schema:
            type: object
            required: [name]
            properties:
              name: {type: string, minLength: 1, maxLength: 120}
              city: {type: string, minLength: 1, maxLength: 80}
              address: {type: string, minLength: 1, maxLength: 300}
          example: {name: "Jing'an flagship", city: "Shanghai"}
    responses:
      201: {description: the store}
    """
    principal = await require(request, "merchant")
    new = read_store(await read_json(request))
    store = await domain.catalog.create_store(principal.merchant_id or "", new.name, new.city, new.address)
    return json(store, status=201)


async def list_stores(request: Request, domain: Rooms) -> Response:
    """The merchant's stores.
    ---
    tags: [stores]
    responses:
      200: {description: "{stores: [...]}"}
    """
    principal = await require(request, "merchant")
    return json({"stores": await domain.catalog.list_stores(principal.merchant_id or "")})


async def add_staff(request: Request, domain: Rooms) -> Response:
    """Add a staff member to one of the merchant's stores.
    ---
    tags: [stores]
    requestBody:
      required: true
      content:
        application/json:
          schema:
            type: object
            required: [name]
            properties:
              name: {type: string, minLength: 1, maxLength: 120}
              role: {type: string, minLength: 1, maxLength: 80}
          example: {name: "Li Wei", role: "beauty advisor"}
    responses:
      201: {description: the staff member}
    """
    principal = await require(request, "merchant")
    store_id = _path_id(request, "store_id")
    new = read_staff(await read_json(request))
    staff = await domain.catalog.add_staff(principal.merchant_id or "", store_id, new.name, new.role)
    return json(staff, status=201)


async def list_staff(request: Request, domain: Rooms) -> Response:
    """Staff of one of the merchant's stores.
    ---
    tags: [stores]
    responses:
      200: {description: "{staff: [...]}"}
    """
    principal = await require(request, "merchant")
    store_id = _path_id(request, "store_id")
    return json({"staff": await domain.catalog.list_staff(principal.merchant_id or "", store_id)})


async def create_product(request: Request, domain: Rooms) -> Response:
    """Add a product to the merchant's catalogue.
    ---
    tags: [products]
    requestBody:
      required: true
      content:
        application/json:
          schema:
            type: object
            required: [title, price, currency]
            properties:
              title: {type: string, minLength: 1, maxLength: 200}
              price: {type: number, minimum: 0.01, maximum: 10000000, description: stored to the cent}
              currency: {type: string, pattern: '^[A-Z]{3}$', description: ISO 4217}
              category: {type: string, minLength: 1, maxLength: 40, description: stored trimmed and lower-case}
          example: {title: "Vitamin C serum 30ml", price: 189.0, currency: "CNY"}
    responses:
      201: {description: the product}
    """
    principal = await require(request, "merchant")
    new = read_product(await read_json(request))
    product = await domain.catalog.create_product(
        principal.merchant_id or "", new.title, new.price, new.currency, new.category
    )
    return json(product, status=201)


async def list_products(request: Request, domain: Rooms) -> Response:
    """The merchant's catalogue.
    ---
    tags: [products]
    responses:
      200: {description: "{products: [...]}"}
    """
    principal = await require(request, "merchant")
    return json({"products": await domain.catalog.list_products(principal.merchant_id or "")})


# --- rooms ----------------------------------------------------------------------------------


async def create_room(request: Request, domain: Rooms) -> Response:
    """Schedule a room (status `scheduled`).
    ---
    tags: [rooms]
    requestBody:
      required: true
      content:
        application/json:
          schema:
            type: object
            required: [title, category]
            properties:
              title: {type: string, minLength: 1, maxLength: 120}
              category: {type: string, minLength: 1, maxLength: 40, description: stored trimmed and lower-case}
              host: {type: string, minLength: 1, maxLength: 64}
              tags: {type: array, maxItems: 20, items: {type: string, minLength: 1, maxLength: 40}}
              price_band: {type: string, enum: [low, mid, high, luxury], default: mid}
              format: {type: string, enum: [one_to_many, one_to_one], default: one_to_many}
              scheduled_at: {type: number, minimum: 1500000000, maximum: 4000000000, description: epoch seconds}
              stream_url: {type: string, maxLength: 500, pattern: '^(https?|rtmps?)://[^\\s]{1,490}$'}
          example: {title: "Spring skincare live", category: "beauty", host: "host_anna",
                    tags: ["skincare"], price_band: "mid", format: "one_to_many",
                    scheduled_at: 1790000000, stream_url: "https://cdn.example/live/1.m3u8"}
    responses:
      201: {description: the room}
    """
    principal = await require(request, "merchant")
    new = read_room(await read_json(request))
    room = await domain.rooms.create(
        principal.merchant_id or "",
        title=new.title,
        category=new.category,
        host=new.host,
        tags=new.tags,
        price_band=new.price_band,
        format=new.format,
        scheduled_at=new.scheduled_at,
        stream_url=new.stream_url,
    )
    return json(room, status=201)


async def list_rooms(request: Request, domain: Rooms) -> Response:
    """The merchant's own rooms, newest first; `?status=scheduled|live|ended`.
    ---
    tags: [rooms]
    responses:
      200: {description: "{rooms: [...]}"}
    """
    principal = await require(request, "merchant")
    return json({"rooms": await _rooms_of(request, domain, principal.merchant_id or "")})


async def _rooms_of(request: Request, domain: Rooms, merchant_id: str) -> list[dict[str, Any]]:
    status = request.query_params.get("status") or None
    if status is not None and status not in STATUSES:
        raise ValidationFailed("unknown status", fields={"status": "must be one of: " + ", ".join(STATUSES)})
    limit = query_int(request, "limit", 100, 1, 1000)
    return await domain.rooms.of_merchant(merchant_id, status, limit)


async def merchant_rooms(request: Request, domain: Rooms) -> Response:
    """A merchant's rooms (the merchant itself, or an operator).
    ---
    tags: [rooms]
    responses:
      200: {description: "{rooms: [...]}"}
    """
    principal = await require(request, "merchant", "operator")
    merchant_id = _path_id(request, "merchant_id")
    _merchant_scope(principal.role, principal.merchant_id, merchant_id)
    if principal.role == "operator":
        await domain.catalog.get_merchant(merchant_id)
    return json({"rooms": await _rooms_of(request, domain, merchant_id)})


async def get_room(request: Request, domain: Rooms) -> Response:
    """One of the merchant's rooms, with its products and deals.
    ---
    tags: [rooms]
    responses:
      200: {description: the room}
    """
    principal = await require(request, "merchant")
    room_id = _path_id(request, "room_id")
    merchant_id = principal.merchant_id or ""
    room = await domain.rooms.get(merchant_id, room_id)
    room["products"] = await domain.rooms.products(merchant_id, room_id)
    room["deals"] = await domain.deals.of_room(merchant_id, room_id)
    return json(room)


async def go_live(request: Request, domain: Rooms) -> Response:
    """Start broadcasting: scheduled → live (409 `invalid_transition` from any other state).
    ---
    tags: [rooms]
    responses:
      200: {description: the room, now live}
    """
    principal = await require(request, "merchant")
    room_id = _path_id(request, "room_id")
    return json(await domain.rooms.go_live(principal.merchant_id or "", room_id))


async def end_room(request: Request, domain: Rooms) -> Response:
    """Stop broadcasting: live → ended; an optional `replay_url` makes it a replay.
    ---
    tags: [rooms]
    requestBody:
      required: false
      content:
        application/json:
          schema:
            type: object
            properties:
              replay_url: {type: string, maxLength: 500, pattern: '^(https?|rtmps?)://[^\\s]{1,490}$'}
          example: {replay_url: "https://cdn.example/vod/1.m3u8"}
    responses:
      200: {description: the room, now ended}
    """
    principal = await require(request, "merchant")
    room_id = _path_id(request, "room_id")
    body = Body(await _optional_json(request))
    replay_url = body.text("replay_url", required=False, max_len=500, pattern=URL)
    body.finish()
    return json(await domain.rooms.end(principal.merchant_id or "", room_id, replay_url))


async def set_replay(request: Request, domain: Rooms) -> Response:
    """Attach a replay to an ended room.
    ---
    tags: [rooms]
    requestBody:
      required: true
      content:
        application/json:
          schema:
            type: object
            required: [replay_url]
            properties:
              replay_url: {type: string, maxLength: 500, pattern: '^(https?|rtmps?)://[^\\s]{1,490}$'}
          example: {replay_url: "https://cdn.example/vod/1.m3u8"}
    responses:
      200: {description: the room}
    """
    principal = await require(request, "merchant")
    room_id = _path_id(request, "room_id")
    body = Body(await read_json(request))
    replay_url = body.text("replay_url", max_len=500, pattern=URL)
    body.finish()
    return json(await domain.rooms.set_replay(principal.merchant_id or "", room_id, replay_url))


async def add_room_products(request: Request, domain: Rooms) -> Response:
    """Show catalogue products in a room.
    ---
    tags: [rooms]
    requestBody:
      required: true
      content:
        application/json:
          schema:
            type: object
            required: [product_ids]
            properties:
              product_ids: {type: array, minItems: 1, maxItems: 100, items: {type: string, minLength: 1, maxLength: 64}}
          example: {product_ids: ["prd_0123456789abcdef"]}
    responses:
      200: {description: "{products: [...]}"}
    """
    principal = await require(request, "merchant")
    room_id = _path_id(request, "room_id")
    body = Body(await read_json(request))
    product_ids = body.text_list("product_ids", max_items=100, max_len=64)
    if product_ids is not None and not product_ids:
        body.fail("product_ids", "must not be empty")
    body.finish()
    products = await domain.rooms.add_products(principal.merchant_id or "", room_id, product_ids)
    return json({"room_id": room_id, "products": products})


# --- deals ----------------------------------------------------------------------------------


async def create_deal(request: Request, domain: Rooms) -> Response:
    """A flash deal in a room: a product at a price, a quantity, a time window, a per-viewer limit.
    ---
    tags: [deals]
    requestBody:
      required: true
      content:
        application/json:
          schema:
            type: object
            required: [product_id, price, quantity, ends_at]
            properties:
              product_id: {type: string, pattern: '^[A-Za-z0-9_.:-]{1,64}$'}
              price: {type: number, minimum: 0.01, maximum: 10000000, description: stored to the cent}
              currency: {type: string, pattern: '^[A-Z]{3}$', description: ISO 4217; the product's when absent}
              quantity: {type: integer, minimum: 1, maximum: 1000000}
              per_viewer_limit: {type: integer, minimum: 1, maximum: 1000, default: 1}
              starts_at: {type: number, minimum: 1500000000, maximum: 4000000000, description: epoch seconds}
              ends_at: {type: number, minimum: 1500000000, maximum: 4000000000, description: epoch seconds}
          example: {product_id: "prd_0123456789abcdef", price: 99.0, quantity: 100,
                    per_viewer_limit: 1, ends_at: 1790000600}
    responses:
      201: {description: the deal}
    """
    principal = await require(request, "merchant")
    room_id = _path_id(request, "room_id")
    body = Body(await read_json(request))
    product_id = body.ident("product_id")
    price = body.number("price", minimum=0.01, maximum=10_000_000)  # numeric(12, 2): less rounds to 0
    currency = body.text("currency", required=False, max_len=3, pattern=CURRENCY)
    quantity = body.integer("quantity", minimum=1, maximum=1_000_000)
    per_viewer_limit = body.integer("per_viewer_limit", required=False, minimum=1, maximum=1000, default=1)
    starts_at = epoch(body, "starts_at", required=False)
    ends_at = epoch(body, "ends_at")
    body.finish()
    deal = await domain.deals.create(
        principal.merchant_id or "",
        room_id,
        product_id=product_id,
        price=price,
        currency=currency,
        quantity=quantity,
        per_viewer_limit=per_viewer_limit,
        starts_at=starts_at,
        ends_at=ends_at,
    )
    return json(deal, status=201)


async def _visible_room(request: Request, domain: Rooms) -> tuple[str, str | None]:
    """The path's room, as a viewer (any room) or its merchant (404 unless the room is theirs) sees it:
    (room_id, the merchant's id or None for a viewer)."""
    principal = await require(request, "merchant", "viewer")
    room_id = _path_id(request, "room_id")
    merchant_id = principal.merchant_id if principal.role == "merchant" else None
    if merchant_id is not None:
        await domain.rooms.get(merchant_id, room_id)
    return room_id, merchant_id


async def room_deals(request: Request, domain: Rooms) -> Response:
    """A room's deals (the merchant's own room; viewers see any room's deals).
    ---
    tags: [deals]
    responses:
      200: {description: "{deals: [...]}"}
    """
    room_id, merchant_id = await _visible_room(request, domain)
    return json({"room_id": room_id, "deals": await domain.deals.of_room(merchant_id, room_id)})


async def get_deal(request: Request, domain: Rooms) -> Response:
    """One of the merchant's deals, with its remaining stock.
    ---
    tags: [deals]
    responses:
      200: {description: the deal}
    """
    principal = await require(request, "merchant")
    return json(await domain.deals.get(principal.merchant_id or "", _path_id(request, "deal_id")))


async def claim_deal(request: Request, domain: Rooms) -> Response:
    """A viewer claims units of a deal: 201, or 409 `sold_out` / `limit_reached` / `deal_ended`. Never oversold.
    ---
    tags: [deals]
    requestBody:
      required: false
      content:
        application/json:
          schema:
            type: object
            properties:
              quantity: {type: integer, minimum: 1, maximum: 1000, default: 1}
              session_id: {type: string, pattern: '^[A-Za-z0-9_.:-]{1,64}$'}
          example: {quantity: 1, session_id: "ses_0123456789abcdef"}
    responses:
      201: {description: the claim}
    """
    principal = await require(request, "viewer")
    deal_id = _path_id(request, "deal_id")
    body = Body(await _optional_json(request))
    quantity = body.integer("quantity", required=False, minimum=1, maximum=1000, default=1)
    session_id = body.ident("session_id", required=False)
    body.finish()
    claim = await domain.deals.claim(
        deal_id, principal.viewer_id or "", quantity=quantity, session_id=session_id
    )
    domain.relay.background(domain.relay.publish_claim(claim))
    return json(claim_json(claim), status=201)


# --- consults -------------------------------------------------------------------------------


async def open_slot(request: Request, domain: Rooms) -> Response:
    """Open a consult slot in a one_to_one room (capacity one).
    ---
    tags: [consults]
    requestBody:
      required: true
      content:
        application/json:
          schema:
            type: object
            required: [starts_at, ends_at]
            properties:
              starts_at: {type: number, minimum: 1500000000, maximum: 4000000000, description: epoch seconds}
              ends_at: {type: number, minimum: 1500000000, maximum: 4000000000, description: epoch seconds}
              staff_id: {type: string, pattern: '^[A-Za-z0-9_.:-]{1,64}$'}
          example: {starts_at: 1790000000, ends_at: 1790001800, staff_id: "stf_0123456789abcdef"}
    responses:
      201: {description: the slot}
    """
    principal = await require(request, "merchant")
    room_id = _path_id(request, "room_id")
    body = Body(await read_json(request))
    starts_at = epoch(body, "starts_at")
    ends_at = epoch(body, "ends_at")
    staff_id = body.ident("staff_id", required=False)
    body.finish()
    slot = await domain.consults.open_slot(
        principal.merchant_id or "", room_id, starts_at=starts_at, ends_at=ends_at, staff_id=staff_id
    )
    return json(slot, status=201)


async def room_slots(request: Request, domain: Rooms) -> Response:
    """A room's consult slots and whether each is free (viewers, or the room's merchant).
    ---
    tags: [consults]
    responses:
      200: {description: "{slots: [...]}"}
    """
    room_id, merchant_id = await _visible_room(request, domain)
    return json({"room_id": room_id, "slots": await domain.consults.slots(room_id, merchant_id)})


async def book_slot(request: Request, domain: Rooms) -> Response:
    """A viewer books a consult slot: 201, or 409 `slot_taken`.
    ---
    tags: [consults]
    requestBody:
      required: true
      content:
        application/json:
          schema:
            type: object
            required: [slot_id]
            properties:
              slot_id: {type: string, pattern: '^[A-Za-z0-9_.:-]{1,64}$'}
              note: {type: string, maxLength: 500}
          example: {slot_id: "slot_0123456789abcdef", note: "dry skin"}
    responses:
      201: {description: the booking}
    """
    principal = await require(request, "viewer")
    room_id = _path_id(request, "room_id")
    body = Body(await read_json(request))
    slot_id = body.ident("slot_id")
    note = body.text("note", required=False, max_len=500, min_len=0, default="")
    body.finish()
    booking = await domain.consults.book(principal.viewer_id or "", room_id, slot_id, note or "")
    return json(booking, status=201)


async def cancel_booking(request: Request, domain: Rooms) -> Response:
    """Cancel a booking (the viewer who made it, or the merchant); the slot is free again.
    ---
    tags: [consults]
    responses:
      200: {description: the booking}
    """
    principal = await require(request, "viewer", "merchant")
    booking_id = _path_id(request, "booking_id")
    consults = domain.consults
    if principal.role == "viewer":
        return json(await consults.cancel(booking_id, viewer_id=principal.viewer_id))
    return json(await consults.cancel(booking_id, merchant_id=principal.merchant_id))


async def mark_no_show(request: Request, domain: Rooms) -> Response:
    """The merchant marks that the viewer did not come (once the slot has started).
    ---
    tags: [consults]
    responses:
      200: {description: the booking}
    """
    principal = await require(request, "merchant")
    booking_id = _path_id(request, "booking_id")
    return json(await domain.consults.no_show(principal.merchant_id or "", booking_id))


async def merchant_consults(request: Request, domain: Rooms) -> Response:
    """Consult bookings, cancellations, no-shows and the no-show rate (the merchant itself, or an operator).
    ---
    tags: [consults]
    responses:
      200: {description: "{bookings, cancelled, upcoming, due, no_shows, no_show_rate}"}
    """
    principal = await require(request, "merchant", "operator")
    merchant_id = _path_id(request, "merchant_id")
    _merchant_scope(principal.role, principal.merchant_id, merchant_id)
    if principal.role == "operator":
        await domain.catalog.get_merchant(merchant_id)
    return json(await domain.consults.report(merchant_id))


def routes(domain: Rooms) -> list[BaseRoute]:
    return [
        Route("/v1/ops/merchants", bound(create_merchant, domain), methods=["POST"]),
        Route("/v1/ops/merchants", bound(list_merchants, domain), methods=["GET"]),
        Route("/v1/stores", bound(create_store, domain), methods=["POST"]),
        Route("/v1/stores", bound(list_stores, domain), methods=["GET"]),
        Route("/v1/stores/{store_id}/staff", bound(add_staff, domain), methods=["POST"]),
        Route("/v1/stores/{store_id}/staff", bound(list_staff, domain), methods=["GET"]),
        Route("/v1/products", bound(create_product, domain), methods=["POST"]),
        Route("/v1/products", bound(list_products, domain), methods=["GET"]),
        Route("/v1/rooms", bound(create_room, domain), methods=["POST"]),
        Route("/v1/rooms", bound(list_rooms, domain), methods=["GET"]),
        Route("/v1/rooms/{room_id}", bound(get_room, domain), methods=["GET"]),
        Route("/v1/rooms/{room_id}/live", bound(go_live, domain), methods=["POST"]),
        Route("/v1/rooms/{room_id}/end", bound(end_room, domain), methods=["POST"]),
        Route("/v1/rooms/{room_id}/replay", bound(set_replay, domain), methods=["POST"]),
        Route("/v1/rooms/{room_id}/products", bound(add_room_products, domain), methods=["POST"]),
        Route("/v1/rooms/{room_id}/deals", bound(create_deal, domain), methods=["POST"]),
        Route("/v1/rooms/{room_id}/deals", bound(room_deals, domain), methods=["GET"]),
        Route("/v1/deals/{deal_id}", bound(get_deal, domain), methods=["GET"]),
        Route("/v1/deals/{deal_id}/claim", bound(claim_deal, domain), methods=["POST"]),
        Route("/v1/rooms/{room_id}/slots", bound(open_slot, domain), methods=["POST"]),
        Route("/v1/rooms/{room_id}/slots", bound(room_slots, domain), methods=["GET"]),
        Route("/v1/rooms/{room_id}/bookings", bound(book_slot, domain), methods=["POST"]),
        Route("/v1/bookings/{booking_id}/cancel", bound(cancel_booking, domain), methods=["POST"]),
        Route("/v1/bookings/{booking_id}/no-show", bound(mark_no_show, domain), methods=["POST"]),
        Route("/v1/merchants/{merchant_id}/rooms", bound(merchant_rooms, domain), methods=["GET"]),
        Route("/v1/merchants/{merchant_id}/consults", bound(merchant_consults, domain), methods=["GET"]),
        *orders_http.routes(domain),
    ]


async def _ensure_topics(settings: Settings) -> None:
    for attempt in range(30):
        try:
            await ensure_topics(
                settings,
                {LIFECYCLE_TOPIC: settings.kafka_partitions, VIEWER_EVENTS: settings.kafka_partitions},
            )
            return
        except Exception as exc:
            log.warning("cannot create rooms topics yet (attempt %d): %s", attempt + 1, exc)
            await asyncio.sleep(min(1.0 + attempt, 10.0))
