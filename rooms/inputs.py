"""What may be sent to create a merchant, a store, a staff member, a product or a room, or to report an
order, read with the API's rules from a JSON object.

The rules are the HTTP routes' own typed bodies (rooms.models, checked by
roomfeed.operations.convert_body exactly as the routes check them), so `roomfeed import`
(rooms/backfill.py, bulk/) and the API keep one set of rules and messages. A reader returns the
typed input or raises `ValidationFailed` naming every bad field; labels (categories, tags) come back
trimmed and lower-case, as they are stored.
"""

from __future__ import annotations

import typing
from dataclasses import dataclass
from typing import Any

from roomfeed.operations import convert_body
from roomfeed.validation import Body
from rooms import models
from rooms.models import EPOCH_MAX, EPOCH_MIN, URL
from rooms.orders import OrderIn, amounts

# The rooms vocabulary's words, in their order (ranking's features encode by position), defined once
# by the routes' models.
PRICE_BANDS: tuple[str, ...] = typing.get_args(models.PriceBand)
FORMATS: tuple[str, ...] = typing.get_args(models.RoomFormat)

__all__ = [
    "URL",
    "epoch",
    "merchant_in",
    "order_in",
    "product_in",
    "read_merchant",
    "read_order",
    "read_product",
    "read_room",
    "read_staff",
    "read_store",
    "room_in",
    "staff_in",
    "store_in",
]


def label(value: str | None) -> str | None:
    """A category or tag as stored: trimmed, lower case."""
    return value.strip().lower() if value is not None else None


def epoch(body: Body, field: str, *, required: bool = True) -> Any:
    """Epoch seconds (None when optional and absent); like every Body reader, checked by finish()."""
    return body.number(field, required=required, minimum=EPOCH_MIN, maximum=EPOCH_MAX)


@dataclass(frozen=True)
class NewMerchant:
    name: str
    category: str | None
    description: str


@dataclass(frozen=True)
class NewStore:
    name: str
    city: str | None
    address: str | None


@dataclass(frozen=True)
class NewStaff:
    name: str
    role: str | None


@dataclass(frozen=True)
class NewProduct:
    title: str
    price: float
    currency: str
    category: str | None


@dataclass(frozen=True)
class NewRoom:
    title: str
    category: str
    host: str
    tags: list[str]
    price_band: str
    format: str
    scheduled_at: float | None
    stream_url: str


# Each entity has two halves: `<entity>_in(body)` turns the route's checked body into what the domain
# writes (the one normalisation, used by the route and the import alike), and `read_<entity>(payload)`
# is `convert_body` (the route's checks and messages) followed by it, for `roomfeed import`.


def merchant_in(new: models.NewMerchant) -> NewMerchant:
    """POST /v1/ops/merchants' body as the catalog takes it."""
    return NewMerchant(new.name, label(new.category), new.description)


def store_in(new: models.NewStore) -> NewStore:
    """POST /v1/stores' body as the catalog takes it."""
    return NewStore(new.name, new.city, new.address)


def staff_in(new: models.NewStaff) -> NewStaff:
    """POST /v1/stores/{id}/staff's body as the catalog takes it."""
    return NewStaff(new.name, new.role)


def product_in(new: models.NewProduct) -> NewProduct:
    """POST /v1/products' body as the catalog takes it."""
    return NewProduct(new.title, new.price, new.currency, label(new.category))


def read_merchant(payload: Any) -> NewMerchant:
    return merchant_in(convert_body(payload, models.NewMerchant))


def read_store(payload: Any) -> NewStore:
    return store_in(convert_body(payload, models.NewStore))


def read_staff(payload: Any) -> NewStaff:
    return staff_in(convert_body(payload, models.NewStaff))


def read_product(payload: Any) -> NewProduct:
    return product_in(convert_body(payload, models.NewProduct))


def read_room(payload: Any) -> NewRoom:
    return room_in(convert_body(payload, models.NewRoom))


def room_in(new: models.NewRoom) -> NewRoom:
    """POST /v1/rooms' body as the room book takes it."""
    return NewRoom(
        title=new.title,
        category=label(new.category) or "",
        host=new.host,
        tags=[t.strip().lower() for t in new.tags],
        price_band=new.price_band,
        format=new.format,
        scheduled_at=new.scheduled_at,
        stream_url=new.stream_url or "",
    )


def order_in(new: models.NewOrder) -> OrderIn:
    """A reported order (POST /v1/orders' body) as the order book records it: exact cents, seconds.
    The route (rooms.orders_http.post_order) and `read_order` both go through here."""
    money = amounts({"unit_price": new.unit_price, "amount": new.amount})
    return OrderIn(
        order_id=new.order_id,
        product_id=new.product_id,
        quantity=new.quantity,
        unit_price=money["unit_price"],
        currency=new.currency,
        ordered_at=new.ordered_at / 1000,
        viewer_id=new.viewer_id,
        room_id=new.room_id,
        deal_id=new.deal_id,
        amount=money.get("amount"),
    )


def read_order(payload: Any) -> OrderIn:
    """A past order as POST /v1/orders reads it (`roomfeed import`, bench_import): the route's own body
    model, then `order_in`; ValidationFailed names every bad field."""
    return order_in(convert_body(payload, models.NewOrder))
