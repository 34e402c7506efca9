"""The event vocabulary, written once: every word of `viewer-events` that other code uses by name.

Owns the event types (what a viewer's app, the feed or a deal claim puts on the topic), the integer
code each type has in columnar logs (the simulator's `EventLog`, ranking's `InteractionLog`), the
fields each type carries, the topic names, and what a swipe-away is. Everything else imports these
names; nothing lists the types again or copies a code by position (tests/events/test_vocabulary.py
fails if something does).

Adding a type is a constant, an entry in `TYPES` and its `FIELDS` here; ingest, the sinks and the
dataset builder take it from there, and tests/events/test_every_type.py walks it through them.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from enum import Enum
from types import MappingProxyType
from typing import Final, Literal

# Event types. Plain strings (they travel as JSON and are compared per event on hot paths).
SERVED: Final = "served"  # the feed put the room on a page (written by roomfeed only)
IMPRESSION: Final = "impression"  # the room was on the viewer's screen (reported by the app)
ENTER: Final = "enter"
HEARTBEAT: Final = "heartbeat"
LEAVE: Final = "leave"
LIKE: Final = "like"
COMMENT: Final = "comment"
FOLLOW: Final = "follow"
SHARE: Final = "share"
ADD_TO_CART: Final = "add_to_cart"
PURCHASE: Final = "purchase"
DEAL_CLAIM: Final = "deal_claim"

# Every type, in code order: a type's code in columnar logs is its position here. Codes live only in
# memory (the archive stores names), so a new type may go anywhere; readers use `CODE[name]`.
TYPES: Final[tuple[str, ...]] = (
    IMPRESSION,
    ENTER,
    HEARTBEAT,
    LEAVE,
    LIKE,
    COMMENT,
    FOLLOW,
    SHARE,
    ADD_TO_CART,
    PURCHASE,
    DEAL_CLAIM,
    SERVED,
)
# Recorded by roomfeed itself and refused from an app (ingest answers `server_only`): what the feed
# served is not what the viewer saw, and every rate counts what was seen (impressions).
SERVER_TYPES: Final[frozenset[str]] = frozenset((SERVED,))
CODE: Final[Mapping[str, int]] = MappingProxyType({name: code for code, name in enumerate(TYPES)})
# The same names as a type, for typed models (msgspec, pydantic) that check `type` (equal to TYPES:
# tests/events/test_vocabulary.py).
EventType = Literal[
    "impression",
    "enter",
    "heartbeat",
    "leave",
    "like",
    "comment",
    "follow",
    "share",
    "add_to_cart",
    "purchase",
    "deal_claim",
    "served",
]

# Topics (unprefixed: `settings.topic(name)` adds the deployment's prefix).
VIEWER_EVENTS: Final = "viewer-events"  # key viewer_id, value an event (enriched at ingest)
DEAD_LETTERS: Final = "viewer-events.dlq"  # what a consumer could not read or write

SCHEMA_VERSION: Final = 1
# A leave with less dwell than this is a swipe-away: the realtime sink counts them per room
# (`swipe_aways_1h`), a viewer's recent visits carry it, and the feed hides and penalises such rooms.
SWIPE_AWAY_MS: Final = 3000

# Where a viewer entered a room from (`enter.source`).
ENTER_SOURCES: Final[tuple[str, ...]] = ("feed", "code", "deeplink", "replay")
# Every event carries these ids (plus `type`, `ts` in epoch ms, optional `device_id` and `v`).
COMMON_IDS: Final[tuple[str, ...]] = ("event_id", "viewer_id", "session_id", "room_id")
# What ingest adds to an accepted event before it goes on the topic.
ENRICHED: Final[tuple[str, ...]] = ("merchant_id", "received_at")


class FieldKind(Enum):
    """How a per-type field is checked (events.schema holds the checks and their messages)."""

    ID = "id"  # 1..64 characters of [A-Za-z0-9_.:-]
    COUNT = "count"  # integer >= 0
    FLAG = "flag"  # true or false
    TEXT = "text"  # a string of at most `max_len` characters
    CHOICE = "choice"  # one of `choices`
    VERSION = "version"  # an integer or a string
    AMOUNT = "amount"  # a number > 0
    CURRENCY = "currency"  # 3 upper-case letters (ISO 4217)


@dataclass(frozen=True)
class Field:
    """One field a type carries beyond the common ones; `example` is a valid value (tests, docs)."""

    name: str
    kind: FieldKind
    example: object
    required: bool = False
    max_len: int = 64
    choices: tuple[str, ...] = ()


# The fields of each type, in the order they are checked. A type without extra fields maps to ().
FIELDS: Final[Mapping[str, tuple[Field, ...]]] = MappingProxyType(
    {
        IMPRESSION: (
            Field("position", FieldKind.COUNT, 0),
            # The feed page the room came from (its `page_token`): a boosted room is booked as
            # delivered only from an impression of its page (alliance.grants).
            Field("page_token", FieldKind.ID, "3.8f2a1c9b0d"),
            Field("boosted", FieldKind.FLAG, False),
            Field("variant", FieldKind.TEXT, "control"),
            Field("model_version", FieldKind.TEXT, "m1"),
            Field("experiment_id", FieldKind.TEXT, "exp_1"),
            Field("config_version", FieldKind.VERSION, 1),
        ),
        ENTER: (Field("source", FieldKind.CHOICE, "feed", choices=ENTER_SOURCES),),
        HEARTBEAT: (),
        LEAVE: (Field("dwell_ms", FieldKind.COUNT, 4000, required=True),),
        LIKE: (),
        COMMENT: (Field("text", FieldKind.TEXT, "nice", max_len=500),),
        FOLLOW: (),
        SHARE: (),
        ADD_TO_CART: (Field("product_id", FieldKind.ID, "prd_1", required=True),),
        PURCHASE: (
            Field("order_id", FieldKind.ID, "ord_1", required=True),
            Field("product_id", FieldKind.ID, "prd_1", required=True),
            Field("amount", FieldKind.AMOUNT, 19.9, required=True),
            Field("currency", FieldKind.CURRENCY, "CNY", required=True),
        ),
        DEAL_CLAIM: (Field("deal_id", FieldKind.ID, "deal_1", required=True),),
        SERVED: (
            Field("position", FieldKind.COUNT, 0),
            Field("page_token", FieldKind.ID, "3.8f2a1c9b0d"),
            Field("boosted", FieldKind.FLAG, False),
            Field("entry", FieldKind.FLAG, False),  # the session's entry room (a code's or a deep link's)
            Field("displaced_room_id", FieldKind.ID, "room_2"),  # a boosted room: the room it pushed off
            Field("variant", FieldKind.TEXT, "control"),
            Field("model_version", FieldKind.TEXT, "m1"),
            Field("experiment_id", FieldKind.TEXT, "exp_1"),
            Field("config_version", FieldKind.VERSION, 1),
        ),
    }
)


def example_fields(kind: str) -> dict[str, object]:
    """A valid value for every field of `kind` (tests and docs build events of every type from it)."""
    return {f.name: f.example for f in FIELDS[kind]}
