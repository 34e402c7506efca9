"""HTTP routes of the rooms domain: merchants, stores, staff, products, rooms, deals, consults.

Typed operations (roomfeed.operations; models in rooms.models): each handler's signature says whose
credentials it takes and what it reads, and it calls the domain's objects (`Rooms`, built by the
composition root). Merchant routes are scoped by the key's merchant_id (another merchant's object
answers 404); the operator creates merchants; viewers claim deals and book consults with their
viewer token.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from dataclasses import asdict, dataclass

import asyncpg
import msgspec
from starlette.routing import BaseRoute

from events.vocabulary import VIEWER_EVENTS
from roomfeed.auth import Principal, create_key
from roomfeed.errors import ApiError
from roomfeed.kafka import ensure_topics
from roomfeed.leader import ROOM_RELAY, Leadership, always_lead
from roomfeed.operations import Created, created, operation
from roomfeed.paging import ListQuery
from roomfeed.resources import Resources
from roomfeed.settings import Settings
from roomfeed.validation import Ident
from rooms import orders_http
from rooms.catalog import MerchantCatalog
from rooms.consults import ConsultBook
from rooms.deals import DealBook, claim_json
from rooms.directory import RoomDirectory
from rooms.inputs import merchant_in, product_in, room_in, staff_in, store_in
from rooms.lifecycle import RoomBook
from rooms.live_index import LiveIndex
from rooms.models import (
    Booking,
    Claim,
    ConsultReport,
    Deal,
    GoLive,
    Merchant,
    MerchantCreated,
    MerchantList,
    MerchantsQuery,
    NewBooking,
    NewClaim,
    NewDeal,
    NewMerchant,
    NewProduct,
    NewReplay,
    NewRoom,
    NewRoomProducts,
    NewSlot,
    NewStaff,
    NewStore,
    Product,
    ProductList,
    Replay,
    ReplayList,
    ReplaysQuery,
    Room,
    RoomDeals,
    RoomDetail,
    RoomEnd,
    RoomList,
    RoomProducts,
    RoomSlots,
    RoomsQuery,
    Slot,
    Staff,
    StaffList,
    Store,
    StoreList,
)
from rooms.orders import OrderBook
from rooms.outbox import LIFECYCLE_TOPIC, KafkaPublisher, RoomRelay

log = logging.getLogger("roomfeed.rooms")


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
        directory = RoomDirectory(resources.pool, resources.redis, resources.redis_lane)
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


# --- operators: merchants -------------------------------------------------------------------


@operation(
    "POST",
    "/v1/ops/merchants",
    roles=("operator",),
    status=201,
    tag="merchants",
    example={"name": "Glow Beauty", "category": "beauty"},
)
async def create_merchant(domain: Rooms, principal: Principal, body: NewMerchant) -> Created[MerchantCreated]:
    """Create a merchant and its first key (the key is shown once)."""
    new = merchant_in(body)
    merchant = await domain.catalog.create_merchant(**asdict(new))
    _, key = await create_key(domain.pool, "merchant", merchant["merchant_id"], label=new.name)
    made = {"merchant_id": merchant["merchant_id"], "key": key, "merchant": merchant}
    return created(MerchantCreated, made, "/v1/ops/merchants/{merchant_id}")


@operation("GET", "/v1/ops/merchants/{merchant_id}", roles=("operator",), tag="merchants")
async def get_merchant(domain: Rooms, principal: Principal, merchant_id: Ident) -> Merchant:
    """A merchant (operators)."""
    return msgspec.convert(await domain.catalog.get_merchant(merchant_id), Merchant)


@operation("GET", "/v1/ops/merchants", roles=("operator",), tag="merchants")
async def list_merchants(domain: Rooms, principal: Principal, query: MerchantsQuery) -> MerchantList:
    """Merchants, by id (operators)."""
    merchants, following = await domain.catalog.list_merchants(query.limit, query.after)
    body = {"merchants": merchants, "next": following, "next_after": following}
    return msgspec.convert(body, MerchantList)


# --- merchants: stores, staff, products -----------------------------------------------------


@operation(
    "POST",
    "/v1/stores",
    roles=("merchant",),
    status=201,
    tag="stores",
    example={"name": "Jing'an flagship", "city": "Shanghai"},
)
async def create_store(domain: Rooms, principal: Principal, body: NewStore) -> Created[Store]:
    """Add an offline store."""
    store = await domain.catalog.create_store(principal.own_merchant(), **asdict(store_in(body)))
    return created(Store, store, "/v1/stores/{store_id}")


@operation("GET", "/v1/stores/{store_id}", roles=("merchant",), tag="stores")
async def get_store(domain: Rooms, principal: Principal, store_id: Ident) -> Store:
    """One of the merchant's stores."""
    return msgspec.convert(await domain.catalog.get_store(principal.own_merchant(), store_id), Store)


@operation("GET", "/v1/stores", roles=("merchant",), tag="stores")
async def list_stores(domain: Rooms, principal: Principal, query: ListQuery) -> StoreList:
    """The merchant's stores, oldest first (paged: `next`)."""
    stores, following = await domain.catalog.list_stores(principal.own_merchant(), query.limit, query.after)
    return msgspec.convert({"stores": stores, "next": following}, StoreList)


@operation(
    "POST",
    "/v1/stores/{store_id}/staff",
    roles=("merchant",),
    status=201,
    tag="stores",
    example={"name": "Li Wei", "role": "beauty advisor"},
)
async def add_staff(domain: Rooms, principal: Principal, store_id: Ident, body: NewStaff) -> Created[Staff]:
    """Add a staff member to one of the merchant's stores."""
    staff = await domain.catalog.add_staff(principal.own_merchant(), store_id, **asdict(staff_in(body)))
    return created(Staff, staff, "/v1/stores/{store_id}/staff/{staff_id}")


@operation("GET", "/v1/stores/{store_id}/staff/{staff_id}", roles=("merchant",), tag="stores")
async def get_staff(domain: Rooms, principal: Principal, store_id: Ident, staff_id: Ident) -> Staff:
    """A staff member of one of the merchant's stores."""
    return msgspec.convert(
        await domain.catalog.get_staff(principal.own_merchant(), store_id, staff_id), Staff
    )


@operation("GET", "/v1/stores/{store_id}/staff", roles=("merchant",), tag="stores")
async def list_staff(domain: Rooms, principal: Principal, store_id: Ident, query: ListQuery) -> StaffList:
    """Staff of one of the merchant's stores, oldest first (paged: `next`)."""
    staff, following = await domain.catalog.list_staff(
        principal.own_merchant(), store_id, query.limit, query.after
    )
    return msgspec.convert({"staff": staff, "next": following}, StaffList)


@operation(
    "POST",
    "/v1/products",
    roles=("merchant",),
    status=201,
    tag="products",
    example={"title": "Vitamin C serum 30ml", "price": 189.0, "currency": "CNY"},
)
async def create_product(domain: Rooms, principal: Principal, body: NewProduct) -> Created[Product]:
    """Add a product to the merchant's catalogue."""
    product = await domain.catalog.create_product(principal.own_merchant(), **asdict(product_in(body)))
    return created(Product, product, "/v1/products/{product_id}")


@operation("GET", "/v1/products/{product_id}", roles=("merchant",), tag="products")
async def get_product(domain: Rooms, principal: Principal, product_id: Ident) -> Product:
    """One of the merchant's products."""
    return msgspec.convert(await domain.catalog.get_product(principal.own_merchant(), product_id), Product)


@operation("GET", "/v1/products", roles=("merchant",), tag="products")
async def list_products(domain: Rooms, principal: Principal, query: ListQuery) -> ProductList:
    """The merchant's catalogue, oldest first (paged: `next`)."""
    products, following = await domain.catalog.list_products(
        principal.own_merchant(), query.limit, query.after
    )
    return msgspec.convert({"products": products, "next": following}, ProductList)


# --- rooms ----------------------------------------------------------------------------------


@operation(
    "POST",
    "/v1/rooms",
    roles=("merchant",),
    tag="rooms",
    example={
        "title": "Spring skincare live",
        "category": "beauty",
        "host": "host_anna",
        "tags": ["skincare"],
        "price_band": "mid",
        "format": "one_to_many",
        "scheduled_at": 1790000000,
        "stream_url": "https://cdn.example/live/1.m3u8",
    },
)
async def create_room(domain: Rooms, principal: Principal, body: NewRoom) -> Created[Room]:
    """Schedule a room (status `scheduled`)."""
    room = await domain.rooms.create(principal.own_merchant(), **asdict(room_in(body)))
    return created(Room, room, "/v1/rooms/{room_id}")


@operation("GET", "/v1/rooms", roles=("merchant",), tag="rooms")
async def list_rooms(domain: Rooms, principal: Principal, query: RoomsQuery) -> RoomList:
    """The merchant's own rooms, newest first (paged: `next`)."""
    rooms, following = await domain.rooms.of_merchant(
        principal.own_merchant(), query.status, query.limit, query.after
    )
    return msgspec.convert({"rooms": rooms, "next": following}, RoomList)


@operation("GET", "/v1/merchants/{merchant_id}/rooms", roles=("merchant", "operator"), tag="rooms")
async def merchant_rooms(
    domain: Rooms, principal: Principal, merchant_id: Ident, query: RoomsQuery
) -> RoomList:
    """A merchant's rooms (the merchant itself, or an operator), newest first (paged: `next`)."""
    principal.check_scope(merchant_id)
    if principal.role == "operator":
        await domain.catalog.get_merchant(merchant_id)
    rooms, following = await domain.rooms.of_merchant(merchant_id, query.status, query.limit, query.after)
    return msgspec.convert({"rooms": rooms, "next": following}, RoomList)


@operation("GET", "/v1/rooms/{room_id}", roles=("merchant",), tag="rooms")
async def get_room(domain: Rooms, principal: Principal, room_id: Ident) -> RoomDetail:
    """One of the merchant's rooms, with its products and deals."""
    domain = domain
    merchant_id = principal.own_merchant()
    room = await domain.rooms.get(merchant_id, room_id)
    room["products"] = await domain.rooms.products(merchant_id, room_id)
    room["deals"] = await domain.deals.of_room(merchant_id, room_id)
    return msgspec.convert(room, RoomDetail)


@operation(
    "POST",
    "/v1/rooms/{room_id}/live",
    roles=("merchant",),
    tag="rooms",
    example={"stream_url": "https://cdn.example/live/1.m3u8"},
)
async def go_live(domain: Rooms, principal: Principal, room_id: Ident, body: GoLive | None = None) -> Room:
    """Start broadcasting: scheduled → live.

    A room goes live only with a stream to play: the room's `stream_url`, or the one given here
    (409 `stream_url_required` without either). 409 `invalid_transition` from any other state."""
    stream_url = body.stream_url if body is not None else None
    return msgspec.convert(await domain.rooms.go_live(principal.own_merchant(), room_id, stream_url), Room)


@operation(
    "POST",
    "/v1/rooms/{room_id}/end",
    roles=("merchant",),
    tag="rooms",
    example={"replay_url": "https://cdn.example/vod/1.m3u8"},
)
async def end_room(domain: Rooms, principal: Principal, room_id: Ident, body: RoomEnd | None = None) -> Room:
    """Stop broadcasting: live → ended.

    An optional `replay_url` makes it a replay. Once this has returned, no feed page holds the room."""
    replay_url = body.replay_url if body is not None else None
    room = await domain.rooms.end(principal.own_merchant(), room_id, replay_url)
    return msgspec.convert(room, Room)


@operation(
    "POST",
    "/v1/rooms/{room_id}/replay",
    roles=("merchant",),
    tag="rooms",
    example={"replay_url": "https://cdn.example/vod/1.m3u8"},
)
async def set_replay(domain: Rooms, principal: Principal, room_id: Ident, body: NewReplay) -> Room:
    """Attach a replay to an ended room."""
    room = await domain.rooms.set_replay(principal.own_merchant(), room_id, body.replay_url)
    return msgspec.convert(room, Room)


@operation(
    "POST",
    "/v1/rooms/{room_id}/products",
    roles=("merchant",),
    tag="rooms",
    example={"product_ids": ["prd_0123456789abcdef"]},
)
async def add_room_products(
    domain: Rooms, principal: Principal, room_id: Ident, body: NewRoomProducts
) -> RoomProducts:
    """Show catalogue products in a room."""
    products = await domain.rooms.add_products(principal.own_merchant(), room_id, body.product_ids)
    return msgspec.convert({"room_id": room_id, "products": products}, RoomProducts)


@operation("GET", "/v1/replays", roles=("viewer", "merchant", "operator"), tag="replays")
async def list_replays(domain: Rooms, principal: Principal, query: ReplaysQuery) -> ReplayList:
    """Replays of ended rooms, newest first.

    Their own list: a feed page holds only rooms live now. 410 `cursor_expired` for an `after` that
    has fallen out of the replays kept (ask without it)."""
    found = await domain.live_index.replays_after(query.after, query.limit)
    if found is None:
        raise ApiError(
            "that replay is no longer listed; ask without after",
            status=410,
            code="cursor_expired",
            fields={"after": "is too old"},
        )
    rooms, more = found
    replays = [
        Replay(
            room_id=r.room_id,
            merchant_id=r.merchant_id,
            title=r.title,
            category=r.category,
            stream_url=r.replay_url or r.stream_url,
            tags=list(r.tags),
            price_band=r.price_band,
            format=r.format,
            started_at=r.started_at,
        )
        for r in rooms
    ]
    return ReplayList(replays=replays, next=replays[-1].room_id if more and replays else None)


# --- deals ----------------------------------------------------------------------------------


@operation(
    "POST",
    "/v1/rooms/{room_id}/deals",
    roles=("merchant",),
    tag="deals",
    example={
        "product_id": "prd_0123456789abcdef",
        "price": 99.0,
        "quantity": 100,
        "per_viewer_limit": 1,
        "ends_at": 1790000600,
    },
)
async def create_deal(domain: Rooms, principal: Principal, room_id: Ident, body: NewDeal) -> Created[Deal]:
    """A flash deal in a room: a product at a price, a quantity, a time window, a per-viewer limit."""
    deal = await domain.deals.create(
        principal.own_merchant(),
        room_id,
        product_id=body.product_id,
        price=body.price,
        currency=body.currency,
        quantity=body.quantity,
        per_viewer_limit=body.per_viewer_limit,
        starts_at=body.starts_at,
        ends_at=body.ends_at,
    )
    return created(Deal, deal, "/v1/deals/{deal_id}")


async def _visible_room(domain: Rooms, principal: Principal, room_id: str) -> str | None:
    """The merchant whose room the caller may see: None for a viewer (any room), else the merchant
    itself (404 unless the room is theirs)."""
    if principal.role != "merchant":
        return None
    merchant_id = principal.own_merchant()
    await domain.rooms.get(merchant_id, room_id)
    return merchant_id


@operation("GET", "/v1/rooms/{room_id}/deals", roles=("merchant", "viewer"), tag="deals")
async def room_deals(domain: Rooms, principal: Principal, room_id: Ident) -> RoomDeals:
    """A room's deals (the merchant's own room; viewers see any room's deals)."""
    merchant_id = await _visible_room(domain, principal, room_id)
    deals = await domain.deals.of_room(merchant_id, room_id)
    return msgspec.convert({"room_id": room_id, "deals": deals}, RoomDeals)


@operation("GET", "/v1/deals/{deal_id}", roles=("merchant",), tag="deals")
async def get_deal(domain: Rooms, principal: Principal, deal_id: Ident) -> Deal:
    """One of the merchant's deals, with its remaining stock."""
    return msgspec.convert(await domain.deals.get(principal.own_merchant(), deal_id), Deal)


@operation(
    "POST",
    "/v1/deals/{deal_id}/claim",
    roles=("viewer",),
    status=201,
    tag="deals",
    example={"quantity": 1, "session_id": "ses_0123456789abcdef"},
)
async def claim_deal(
    domain: Rooms, principal: Principal, deal_id: Ident, body: NewClaim | None = None
) -> Claim:
    """A viewer claims units of a deal. Never oversold.

    409 `sold_out`, `limit_reached` or `deal_ended` when it cannot be had."""
    body = body or NewClaim()
    domain = domain
    claim = await domain.deals.claim(
        deal_id, principal.own_viewer(), quantity=body.quantity, session_id=body.session_id
    )
    domain.relay.background(domain.relay.publish_claim(claim))
    return msgspec.convert(claim_json(claim), Claim)


# --- consults -------------------------------------------------------------------------------


@operation(
    "POST",
    "/v1/rooms/{room_id}/slots",
    roles=("merchant",),
    status=201,
    tag="consults",
    example={"starts_at": 1790000000, "ends_at": 1790001800, "staff_id": "stf_0123456789abcdef"},
)
async def open_slot(domain: Rooms, principal: Principal, room_id: Ident, body: NewSlot) -> Created[Slot]:
    """Open a consult slot in a one_to_one room (capacity one)."""
    slot = await domain.consults.open_slot(
        principal.own_merchant(),
        room_id,
        starts_at=body.starts_at,
        ends_at=body.ends_at,
        staff_id=body.staff_id,
    )
    return created(Slot, slot, "/v1/rooms/{room_id}/slots")


@operation("GET", "/v1/rooms/{room_id}/slots", roles=("merchant", "viewer"), tag="consults")
async def room_slots(domain: Rooms, principal: Principal, room_id: Ident) -> RoomSlots:
    """A room's consult slots and whether each is free (viewers, or the room's merchant)."""
    merchant_id = await _visible_room(domain, principal, room_id)
    slots = await domain.consults.slots(room_id, merchant_id)
    return msgspec.convert({"room_id": room_id, "slots": slots}, RoomSlots)


@operation(
    "POST",
    "/v1/rooms/{room_id}/bookings",
    roles=("viewer",),
    status=201,
    tag="consults",
    example={"slot_id": "slot_0123456789abcdef", "note": "dry skin"},
)
async def book_slot(
    domain: Rooms, principal: Principal, room_id: Ident, body: NewBooking
) -> Created[Booking]:
    """A viewer books a consult slot.

    409 `slot_taken` when another viewer has it."""
    booking = await domain.consults.book(principal.own_viewer(), room_id, body.slot_id, body.note)
    return created(Booking, booking, "/v1/bookings/{booking_id}")


@operation("GET", "/v1/bookings/{booking_id}", roles=("viewer", "merchant"), tag="consults")
async def get_booking(domain: Rooms, principal: Principal, booking_id: Ident) -> Booking:
    """A booking (the viewer who made it, or the merchant)."""
    if principal.role == "viewer":
        booking = await domain.consults.get(booking_id, viewer_id=principal.viewer_id)
    else:
        booking = await domain.consults.get(booking_id, merchant_id=principal.merchant_id)
    return msgspec.convert(booking, Booking)


@operation("POST", "/v1/bookings/{booking_id}/cancel", roles=("viewer", "merchant"), tag="consults")
async def cancel_booking(domain: Rooms, principal: Principal, booking_id: Ident) -> Booking:
    """Cancel a booking (the viewer who made it, or the merchant); the slot is free again."""
    consults = domain.consults
    if principal.role == "viewer":
        booking = await consults.cancel(booking_id, viewer_id=principal.viewer_id)
    else:
        booking = await consults.cancel(booking_id, merchant_id=principal.merchant_id)
    return msgspec.convert(booking, Booking)


@operation("POST", "/v1/bookings/{booking_id}/no-show", roles=("merchant",), tag="consults")
async def mark_no_show(domain: Rooms, principal: Principal, booking_id: Ident) -> Booking:
    """The merchant marks that the viewer did not come (once the slot has started)."""
    booking = await domain.consults.no_show(principal.own_merchant(), booking_id)
    return msgspec.convert(booking, Booking)


@operation("GET", "/v1/merchants/{merchant_id}/consults", roles=("merchant", "operator"), tag="consults")
async def merchant_consults(domain: Rooms, principal: Principal, merchant_id: Ident) -> ConsultReport:
    """Consult bookings, cancellations, no-shows and the no-show rate (the merchant itself, or an operator)."""
    principal.check_scope(merchant_id)
    if principal.role == "operator":
        await domain.catalog.get_merchant(merchant_id)
    return msgspec.convert(await domain.consults.report(merchant_id), ConsultReport)


def routes(domain: Rooms) -> list[BaseRoute]:
    operations = (
        create_merchant,
        get_merchant,
        list_merchants,
        create_store,
        get_store,
        list_stores,
        add_staff,
        list_staff,
        get_staff,
        create_product,
        get_product,
        list_products,
        create_room,
        list_rooms,
        get_room,
        go_live,
        end_room,
        set_replay,
        add_room_products,
        list_replays,
        create_deal,
        room_deals,
        get_deal,
        claim_deal,
        open_slot,
        room_slots,
        book_slot,
        get_booking,
        cancel_booking,
        mark_no_show,
        merchant_rooms,
        merchant_consults,
    )
    return [*(route.bound(domain) for route in operations), *orders_http.routes(domain)]


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
