"""The check every event passes at ingest (schema v1), over the vocabulary of `events.vocabulary`.

An event is a plain dict (it travels as orjson on Kafka); `validate` returns the normalised dict
(only known fields, `v` filled in) or a `Rejection` naming the first bad field. Checks are
hand-written rather than built on `roomfeed.validation.Body`: ingest runs them tens of thousands
of times a second, and one rejection per event is what the batch answer reports.

The one validator: ingest refuses whatever any sink could not store (NUL in text, integers past
PostgreSQL's integer, amounts that round to 1e12), so an event that got 202 is never dead-lettered
later (tests/events/test_accepted_never_lost.py proves it over generated events).
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from events.vocabulary import COMMON_IDS, FIELDS, SCHEMA_VERSION, TYPES, Field, FieldKind

MAX_BATCH = 500
MAX_AHEAD_MS = 5 * 60 * 1000
MAX_AGE_MS = 7 * 24 * 3600 * 1000
# dwell_ms and position are PostgreSQL integers in the archive.
MAX_INT32 = 2**31 - 1
# A purchase's amount is a funnel signal (it never moves money), bounded like an order's amount.
MAX_AMOUNT = 1e12

ID = re.compile(r"\A[A-Za-z0-9_.:\-]{1,64}\Z")
CURRENCY = re.compile(r"\A[A-Z]{3}\Z")

Event = dict[str, Any]


@dataclass(frozen=True)
class Rejection:
    """Why one event was refused: `code` is machine-readable, `field` names the culprit."""

    code: str
    message: str
    field: str | None = None

    def as_dict(self) -> dict[str, Any]:
        # The API's one error shape (`fields`: field → what is wrong), and `field` as before.
        fields = {self.field: self.message} if self.field else {}
        return {"code": self.code, "message": self.message, "fields": fields, "field": self.field}


def _invalid(field: str, reason: str) -> Rejection:
    return Rejection("validation_failed", f"{field} {reason}", field)


def _ident(raw: dict[str, Any], field: str, out: Event, required: bool = True) -> Rejection | None:
    value = raw.get(field)
    if value is None:
        return _invalid(field, "is required") if required else None
    if not isinstance(value, str) or not ID.match(value):
        return _invalid(field, _ID_RULE)
    out[field] = value
    return None


_ID_RULE = "must be 1 to 64 characters of [A-Za-z0-9_.:-]"


def _id_problem(value: Any, field: Field) -> str | None:
    return None if isinstance(value, str) and ID.match(value) else _ID_RULE


def _count_problem(value: Any, field: Field) -> str | None:
    if isinstance(value, bool) or not isinstance(value, int):
        return "must be an integer"
    if value < 0:
        return "must be at least 0"
    return f"must be at most {MAX_INT32}" if value > MAX_INT32 else None


def _flag_problem(value: Any, field: Field) -> str | None:
    return None if isinstance(value, bool) else "must be true or false"


def _text_problem(value: Any, field: Field) -> str | None:
    if not isinstance(value, str):
        return "must be a string"
    if len(value) > field.max_len:
        return f"must be at most {field.max_len} characters"
    return "must not contain NUL characters" if "\x00" in value else None


def _choice_problem(value: Any, field: Field) -> str | None:
    return None if value in field.choices else "must be one of: " + ", ".join(field.choices)


def _version_problem(value: Any, field: Field) -> str | None:
    if isinstance(value, str):
        return _text_problem(value, field)
    if isinstance(value, bool) or not isinstance(value, int):
        return "must be an integer or a string"
    return None if -(2**53) <= value <= 2**53 else "is too large"


def _amount_problem(value: Any, field: Field) -> str | None:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or value != value:
        return "must be a number"
    if value <= 0:
        return "must be greater than 0"
    # The archive keeps numeric(14, 2): what rounds to 1e12 cannot be stored.
    return "must be less than 1e12" if round(value, 2) >= MAX_AMOUNT else None


def _currency_problem(value: Any, field: Field) -> str | None:
    ok = isinstance(value, str) and CURRENCY.match(value)
    return None if ok else "must be 3 upper-case letters (ISO 4217)"


# What is wrong with a present value of each kind of field, or None.
_PROBLEM: dict[FieldKind, Callable[[Any, Field], str | None]] = {
    FieldKind.ID: _id_problem,
    FieldKind.COUNT: _count_problem,
    FieldKind.FLAG: _flag_problem,
    FieldKind.TEXT: _text_problem,
    FieldKind.CHOICE: _choice_problem,
    FieldKind.VERSION: _version_problem,
    FieldKind.AMOUNT: _amount_problem,
    FieldKind.CURRENCY: _currency_problem,
}
# Per type, its fields in check order with their checks (types with no extra fields are absent).
_TYPE_CHECKS = {
    kind: tuple((f, _PROBLEM[f.kind]) for f in fields) for kind, fields in FIELDS.items() if fields
}


def _type_fields(kind: str, raw: dict[str, Any], out: Event) -> Rejection | None:
    for field, problem in _TYPE_CHECKS.get(kind, ()):
        value = raw.get(field.name)
        if value is None:
            if field.required:
                return _invalid(field.name, "is required")
            continue
        if (reason := problem(value, field)) is not None:
            return _invalid(field.name, reason)
        out[field.name] = value
    return None


_id_ok = re.compile(r"[A-Za-z0-9_.:\-]{1,64}").fullmatch
# The four common ids at once (one regex call instead of four: this runs per event at ingest).
_common_ids_ok = re.compile(r"(?:[A-Za-z0-9_.:\-]{1,64}\n){3}[A-Za-z0-9_.:\-]{1,64}").fullmatch
_TYPE_SET = frozenset(TYPES)
# Types whose extra fields need checking; the others carry only the common fields.
_WITH_FIELDS = frozenset(_TYPE_CHECKS)


def validate(raw: Any, now_ms: int | None, *, check_time: bool = True) -> Event | Rejection:
    """The normalised event, or why it is refused.

    `check_time=False` is for consumers re-checking what is already on the topic: an event
    accepted a week ago is still well-formed today.

    The common shape is checked in one straight pass (ingest and every consumer run this per
    event); anything that does not pass it goes through the field-by-field checks, which name the
    first bad field.
    """
    if type(raw) is dict:
        get = raw.get
        event_id, viewer_id, session_id, room_id = (
            get("event_id"),
            get("viewer_id"),
            get("session_id"),
            get("room_id"),
        )
        kind, ts, version, device_id = get("type"), get("ts"), get("v", SCHEMA_VERSION), get("device_id")
        if (
            type(event_id) is str
            and type(viewer_id) is str
            and type(session_id) is str
            and type(room_id) is str
            and _common_ids_ok(f"{event_id}\n{viewer_id}\n{session_id}\n{room_id}")
            and type(kind) is str
            and kind in _TYPE_SET
            and type(ts) is int
            and type(version) is int
            and version == SCHEMA_VERSION
            and (
                now_ms - MAX_AGE_MS <= ts <= now_ms + MAX_AHEAD_MS
                if check_time and now_ms is not None
                else ts >= 0
            )
            and (device_id is None or (type(device_id) is str and _id_ok(device_id)))
        ):
            out: Event = {
                "event_id": event_id,
                "viewer_id": viewer_id,
                "session_id": session_id,
                "room_id": room_id,
                "type": kind,
                "v": SCHEMA_VERSION,
                "ts": ts,
            }
            if device_id is not None:
                out["device_id"] = device_id
            if kind in _WITH_FIELDS and (error := _type_fields(kind, raw, out)) is not None:
                return error
            return out
    return _validate_by_field(raw, now_ms, check_time)


def _validate_by_field(raw: Any, now_ms: int | None, check_time: bool) -> Event | Rejection:
    if not isinstance(raw, dict):
        return Rejection("validation_failed", "an event must be a JSON object", None)
    out: Event = {}
    version = raw.get("v", SCHEMA_VERSION)
    if version != SCHEMA_VERSION or isinstance(version, bool):
        return _invalid("v", f"must be {SCHEMA_VERSION} (the only schema version)")
    kind = raw.get("type")
    if kind is None:
        return _invalid("type", "is required")
    if kind not in TYPES:
        return _invalid("type", "must be one of: " + ", ".join(TYPES))
    for name in COMMON_IDS:
        if (error := _ident(raw, name, out)) is not None:
            return error
    out["type"] = kind
    out["v"] = SCHEMA_VERSION
    ts = raw.get("ts")
    if ts is None:
        return _invalid("ts", "is required")
    if isinstance(ts, bool) or not isinstance(ts, int):
        return _invalid("ts", "must be an integer (epoch milliseconds)")
    if check_time and now_ms is not None:
        if ts > now_ms + MAX_AHEAD_MS:
            return _invalid("ts", "is more than 5 minutes in the future")
        if ts < now_ms - MAX_AGE_MS:
            return _invalid("ts", "is more than 7 days old")
    elif ts < 0:
        return _invalid("ts", "must be at least 0")
    out["ts"] = ts
    if (error := _ident(raw, "device_id", out, required=False)) is not None:
        return error
    if (error := _type_fields(kind, raw, out)) is not None:
        return error
    return out


def validate_stored(raw: Any) -> Event | Rejection:
    """Check an event read back from the topic: shape as at ingest, plus what ingest added."""
    result = validate(raw, None, check_time=False)
    if isinstance(result, Rejection):
        return result
    merchant_id = raw.get("merchant_id")
    if merchant_id is not None and not (isinstance(merchant_id, str) and ID.match(merchant_id)):
        return _invalid("merchant_id", "must be an id or null")
    result["merchant_id"] = merchant_id
    received_at = raw.get("received_at")
    if received_at is not None and (isinstance(received_at, bool) or not isinstance(received_at, int)):
        return _invalid("received_at", "must be an integer (epoch milliseconds)")
    result["received_at"] = received_at if received_at is not None else result["ts"]
    return result
