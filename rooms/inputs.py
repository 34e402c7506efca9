"""What may be sent to create a merchant, a store, a staff member, a product or a room, read with the
API's rules from a JSON object.

The HTTP routes (rooms/http.py) and `roomfeed import` (rooms/backfill.py, bulk/) both read through
these functions, so each rule and its message is written once. A reader returns the typed input or
raises `ValidationFailed` naming every bad field; labels (categories, tags) come back trimmed and
lower-case, as they are stored.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from roomfeed.validation import Body

PRICE_BANDS = ("low", "mid", "high", "luxury")
FORMATS = ("one_to_many", "one_to_one")
URL = re.compile(r"^(https?|rtmps?)://[^\s]{1,490}$")
CURRENCY = re.compile(r"^[A-Z]{3}$")
# Timestamps are epoch seconds; anything outside these years is a unit mistake (ms, or 0).
EPOCH_MIN, EPOCH_MAX = 1_500_000_000, 4_000_000_000


def label(body: Body, field: str, *, required: bool = True, max_len: int = 40) -> str | None:
    value = body.text(field, required=required, max_len=max_len)
    return value.strip().lower() if isinstance(value, str) else None


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


def read_merchant(payload: Any) -> NewMerchant:
    body = Body(payload)
    name = body.text("name", max_len=120)
    category = label(body, "category", required=False)
    description = body.text("description", required=False, max_len=2000, min_len=0, default="")
    body.finish()
    return NewMerchant(name, category, description or "")


def read_store(payload: Any) -> NewStore:
    body = Body(payload)
    name = body.text("name", max_len=120)
    city = body.text("city", required=False, max_len=80)
    address = body.text("address", required=False, max_len=300)
    body.finish()
    return NewStore(name, city, address)


def read_staff(payload: Any) -> NewStaff:
    body = Body(payload)
    name = body.text("name", max_len=120)
    role = body.text("role", required=False, max_len=80)
    body.finish()
    return NewStaff(name, role)


def read_product(payload: Any) -> NewProduct:
    body = Body(payload)
    title = body.text("title", max_len=200)
    price = body.number("price", minimum=0.01, maximum=10_000_000)  # numeric(12, 2): less rounds to 0
    currency = body.text("currency", max_len=3, pattern=CURRENCY)
    category = label(body, "category", required=False)
    body.finish()
    return NewProduct(title, price, currency, category)


def read_room(payload: Any) -> NewRoom:
    body = Body(payload)
    title = body.text("title", max_len=120)
    category = label(body, "category")
    host = body.text("host", required=False, max_len=64, default="")
    tags = body.text_list("tags", required=False, max_items=20, max_len=40)
    price_band = body.choice("price_band", PRICE_BANDS, required=False, default="mid")
    room_format = body.choice("format", FORMATS, required=False, default="one_to_many")
    scheduled_at = epoch(body, "scheduled_at", required=False)
    stream_url = body.text("stream_url", required=False, max_len=500, pattern=URL, default="")
    body.finish()
    return NewRoom(
        title=title,
        category=category or "",
        host=host or "",
        tags=[t.strip().lower() for t in tags or []],
        price_band=price_band,
        format=room_format,
        scheduled_at=scheduled_at,
        stream_url=stream_url or "",
    )
