"""The rooms domain's request and response models (msgspec): what `rooms.http`'s typed routes accept
and answer, and what the OpenAPI document says of them."""

from __future__ import annotations

import re
from typing import Annotated, Literal

import msgspec
from msgspec import Meta

from roomfeed.paging import ListQuery, Next
from roomfeed.validation import WHOLE, Currency, Ident, describe_pattern, text

PriceBand = Literal["low", "mid", "high", "luxury"]
RoomFormat = Literal["one_to_many", "one_to_one"]
RoomStatus = Literal["scheduled", "live", "ended"]
URL = re.compile(
    describe_pattern(
        WHOLE + r"(https?|rtmps?)://[^\s]{1,490}$", "has an invalid format: an http(s) or rtmp(s) URL"
    )
)
# Timestamps are epoch seconds; anything outside these years is a unit mistake (ms, or 0).
EPOCH_MIN, EPOCH_MAX = 1_500_000_000, 4_000_000_000

Epoch = Annotated[float, Meta(ge=EPOCH_MIN, le=EPOCH_MAX, description="epoch seconds")]
Url = Annotated[str, Meta(max_length=500, pattern=URL.pattern)]
# numeric(12, 2): less than a cent would round to 0
Price = Annotated[float, Meta(ge=0.01, le=10_000_000, description="stored to the cent")]
Label = Annotated[str, text(40, description="stored trimmed and lower-case")]
Name = Annotated[str, text(120)]


# --- merchants, stores, staff, products ------------------------------------------------------------


class NewMerchant(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    name: Name
    category: Label | None = None
    description: Annotated[str, text(2000, blank_ok=True)] = ""


class Merchant(msgspec.Struct, kw_only=True):
    merchant_id: str
    name: str
    category: str | None
    description: str
    created_at: Annotated[float | None, Meta(description="epoch seconds")]


class MerchantCreated(msgspec.Struct, kw_only=True):
    """A new merchant and its first key (shown once: store it)."""

    merchant_id: str
    key: Annotated[str, Meta(description="the merchant key, shown only in this answer")]
    merchant: Merchant


class MerchantList(msgspec.Struct, kw_only=True):
    merchants: list[Merchant]
    next: Next
    next_after: Annotated[
        str | None,
        Meta(description="the same as `next` (its former name)", extra_json_schema={"deprecated": True}),
    ]


class MerchantsQuery(ListQuery, kw_only=True):
    """`?limit=&after=`: merchants by id (up to 1,000 a page, as before the one convention)."""

    limit: Annotated[int, Meta(ge=1, le=1000, description="at most this many merchants")] = 100


class NewStore(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    name: Name
    city: Annotated[str, text(80)] | None = None
    address: Annotated[str, text(300)] | None = None


class Store(msgspec.Struct, kw_only=True):
    store_id: str
    name: str
    city: str | None
    address: str | None
    created_at: float | None


class StoreList(msgspec.Struct, kw_only=True):
    stores: list[Store]
    next: Next


class NewStaff(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    name: Name
    role: Annotated[str, text(80)] | None = None


class Staff(msgspec.Struct, kw_only=True):
    staff_id: str
    store_id: str
    name: str
    role: str | None
    created_at: float | None


class StaffList(msgspec.Struct, kw_only=True):
    staff: list[Staff]
    next: Next


class NewProduct(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    title: Annotated[str, text(200)]
    price: Price
    currency: Currency
    category: Label | None = None


class Product(msgspec.Struct, kw_only=True):
    product_id: str
    title: str
    price: float
    currency: str
    category: str | None
    created_at: float | None


class ProductList(msgspec.Struct, kw_only=True):
    products: list[Product]
    next: Next


# --- rooms ----------------------------------------------------------------------------------------


class NewRoom(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    title: Name
    category: Label
    host: Annotated[str, text(64, blank_ok=True)] = ""
    tags: Annotated[list[Annotated[str, text(40)]], Meta(max_length=20)] = []
    price_band: PriceBand = "mid"
    format: RoomFormat = "one_to_many"
    scheduled_at: Epoch | None = None
    stream_url: (
        Annotated[Url, Meta(description="what viewers play; required before the room goes live")] | None
    ) = None


class Room(msgspec.Struct, kw_only=True):
    room_id: str
    merchant_id: str
    title: str
    host: str
    category: str
    tags: list[str]
    price_band: str
    format: str
    scheduled_at: float | None
    stream_url: str
    status: RoomStatus
    started_at: float | None
    ended_at: float | None
    replay_url: str | None
    created_at: float | None


class RoomProduct(msgspec.Struct, kw_only=True):
    product_id: str
    title: str
    price: float
    currency: str
    position: int


class Deal(msgspec.Struct, kw_only=True):
    deal_id: str
    room_id: str
    product_id: str
    price: float
    currency: str
    quantity: int
    remaining: int
    per_viewer_limit: int
    starts_at: float
    ends_at: float
    created_at: float | None


class RoomDetail(Room, kw_only=True):
    """A room with its products and deals."""

    products: list[RoomProduct]
    deals: list[Deal]


class RoomList(msgspec.Struct, kw_only=True):
    rooms: list[Room]
    next: Next


class RoomsQuery(ListQuery, kw_only=True):
    status: RoomStatus | None = None


class GoLive(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    stream_url: Annotated[Url, Meta(description="what viewers play (else the room's own)")] | None = None


class RoomEnd(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    replay_url: Annotated[Url, Meta(description="makes the ended room a replay")] | None = None


class NewReplay(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    replay_url: Url


class NewRoomProducts(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    product_ids: Annotated[list[Ident], Meta(min_length=1, max_length=100)]


class RoomProducts(msgspec.Struct, kw_only=True):
    room_id: str
    products: list[RoomProduct]


# --- deals ----------------------------------------------------------------------------------------


class NewDeal(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    product_id: Ident
    price: Price
    currency: Annotated[Currency, Meta(description="ISO 4217; the product's when absent")] | None = None
    quantity: Annotated[int, Meta(ge=1, le=1_000_000)]
    per_viewer_limit: Annotated[int, Meta(ge=1, le=1000)] = 1
    starts_at: Epoch | None = None
    ends_at: Epoch


class RoomDeals(msgspec.Struct, kw_only=True):
    room_id: str
    deals: list[Deal]


class NewClaim(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    quantity: Annotated[int, Meta(ge=1, le=1000)] = 1
    session_id: Ident | None = None


class Claim(msgspec.Struct, kw_only=True):
    claim_id: str
    deal_id: str
    room_id: str
    viewer_id: str
    quantity: int
    held: Annotated[int | None, Meta(description="units this viewer holds of the deal now")]
    remaining: Annotated[int | None, Meta(description="units left")]
    claimed_at: Annotated[float, Meta(description="epoch seconds")]


# --- consults -------------------------------------------------------------------------------------


class NewSlot(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    starts_at: Epoch
    ends_at: Epoch
    staff_id: Ident | None = None


class Slot(msgspec.Struct, kw_only=True):
    slot_id: str
    room_id: str
    staff_id: str | None
    starts_at: float
    ends_at: float
    available: bool


class RoomSlots(msgspec.Struct, kw_only=True):
    room_id: str
    slots: list[Slot]


class NewBooking(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    slot_id: Ident
    note: Annotated[str, text(500, blank_ok=True)] = ""


class Booking(msgspec.Struct, kw_only=True):
    booking_id: str
    slot_id: str
    room_id: str
    merchant_id: str
    viewer_id: str
    status: Literal["booked", "cancelled", "no_show"]
    note: str
    created_at: float | None


class ConsultReport(msgspec.Struct, kw_only=True):
    merchant_id: str
    bookings: int
    cancelled: int
    upcoming: int
    due: Annotated[int, Meta(description="bookings whose slot has started and were not cancelled")]
    no_shows: int
    no_show_rate: Annotated[float | None, Meta(description="no_shows / due; null when nothing is due")]


# --- verified orders ------------------------------------------------------------------------------

EpochMs = Annotated[int, Meta(ge=0, le=2**53, description="epoch milliseconds")]
# An amount: a JSON number or a numeric string, in whole cents, above 0 and below 1e12 (rooms.orders.to_money).
Money = Annotated[
    float | str, Meta(description="an amount in whole cents, > 0 and < 1e12 (number or numeric string)")
]


class NewOrder(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    order_id: Annotated[Ident, Meta(description="the order system's id")]
    product_id: Ident
    quantity: Annotated[int, Meta(ge=1, le=100_000)]
    unit_price: Annotated[Money, Meta(description="the product's (or the deal's) price")]
    amount: Annotated[Money, Meta(description="must equal unit_price x quantity")] | None = None
    currency: Currency
    ordered_at: EpochMs
    viewer_id: Annotated[Ident, Meta(description="the buyer's platform account")] | None = None
    room_id: Ident | None = None
    deal_id: Ident | None = None


class NewRefund(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    refund_id: Ident
    amount: Annotated[Money, Meta(description="at most what is left of the order")]
    at: Annotated[EpochMs, Meta(description="when (default now)")] | None = None


class OrderCancel(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    at: Annotated[EpochMs, Meta(description="when (default now)")] | None = None


EntryKind = Literal["sale", "refund", "cancel"]  # an order's ledger entries (rooms.orders writes them)


class OrderEntry(msgspec.Struct, kw_only=True):
    entry_id: str
    kind: EntryKind
    refund_id: str | None
    amount: Annotated[str, Meta(description="a decimal string with two places; reversals are negative")]
    currency: str
    at: float


class Order(msgspec.Struct, kw_only=True):
    """A verified order and its ledger entries (amounts as decimal strings with two places)."""

    order_id: str
    merchant_id: str
    viewer_id: str | None
    room_id: str | None
    product_id: str
    deal_id: str | None
    quantity: int
    unit_price: str
    amount: str
    currency: str
    ordered_at: float
    recorded_at: float
    reversed: str
    net: str
    status: Literal["paid", "partly_refunded", "refunded", "cancelled"]
    entries: list[OrderEntry]


class OrderTotals(msgspec.Struct, kw_only=True):
    currency: str
    orders: int
    gross: str
    refunds: int
    cancellations: int
    reversed: str
    net: str


class OrderList(msgspec.Struct, kw_only=True):
    orders: list[Order]
    totals: list[OrderTotals]
    next: Annotated[str | None, Meta(description="pass as `after` for the next page; null at the end")]


class OrdersQuery(msgspec.Struct, kw_only=True):
    limit: Annotated[int, Meta(ge=1, le=500)] = 100
    after: Annotated[Ident, Meta(description="the `next` of the previous page (an order_id)")] | None = None


class OrderKey(msgspec.Struct, kw_only=True):
    """An order-system key (shown once): it may only report its merchant's orders."""

    key_id: str
    key: str
    merchant_id: str


# --- replays --------------------------------------------------------------------------------------


class Replay(msgspec.Struct, kw_only=True):
    """An ended room with its replay (never on a feed page of live rooms)."""

    room_id: str
    merchant_id: str
    title: str
    category: str
    stream_url: Annotated[str, Meta(description="the replay's URL")]
    tags: list[str]
    price_band: str
    format: str
    started_at: Annotated[float, Meta(description="epoch seconds")]
    replay: Annotated[bool, Meta(description="always true")] = True


class ReplayList(msgspec.Struct, kw_only=True):
    replays: list[Replay]
    next: Annotated[str | None, Meta(description="pass as `after` for the next page; null at the end")]


class ReplaysQuery(msgspec.Struct, kw_only=True):
    limit: Annotated[int, Meta(ge=1, le=100)] = 20
    after: Annotated[str, Meta(max_length=64, description="the `next` of the previous page")] | None = None
