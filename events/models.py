"""The events domain's request and response models (msgspec), for the OpenAPI document.

`Event` is built from the vocabulary (`events.vocabulary.FIELDS`): the common ids, `type`, `ts` and
every type's own fields, each said once there. Ingest does not decode through it: each event of a
batch is checked on its own by `events.schema.validate` (one rejection per bad event, the rest
accepted), so this model is what the document says an event looks like.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

import msgspec
from msgspec import Meta

from events.schema import MAX_BATCH
from events.vocabulary import COMMON_IDS, FIELDS, SERVER_TYPES, TYPES, FieldKind
from roomfeed.validation import Currency, Ident

# What an app may post (the server's own types are refused at ingest: `server_only`).
APP_TYPES = tuple(t for t in TYPES if t not in SERVER_TYPES)

# What each kind of per-type field is, as a type (events.schema holds the checks and their messages).
_KIND_TYPES: dict[FieldKind, Any] = {
    FieldKind.ID: Ident,
    FieldKind.COUNT: Annotated[int, Meta(ge=0)],
    FieldKind.FLAG: bool,
    FieldKind.CHOICE: str,
    FieldKind.VERSION: int | str,
    FieldKind.AMOUNT: Annotated[float, Meta(gt=0)],
    FieldKind.CURRENCY: Currency,
}


def _field_type(kind: FieldKind, max_len: int, choices: tuple[str, ...], used_by: list[str]) -> Any:
    if kind is FieldKind.TEXT:
        base: Any = Annotated[str, Meta(max_length=max_len)]
    elif kind is FieldKind.CHOICE:
        base = Literal[choices]
    else:
        base = _KIND_TYPES[kind]
    required = [t for t in used_by if any(f.required for f in FIELDS[t] if f.kind is kind)]
    where = ", ".join(used_by) + (f" (required there: {', '.join(required)})" if required else "")
    return Annotated[base, Meta(description=where)]


def _event_fields() -> list[tuple[str, Any, Any]]:
    common: list[tuple[str, Any, Any]] = [(name, Ident, msgspec.NODEFAULT) for name in COMMON_IDS]
    common += [
        ("type", Literal[APP_TYPES], msgspec.NODEFAULT),
        (
            "ts",
            Annotated[int, Meta(ge=0, description="epoch ms: at most 7 days old, 5 minutes ahead")],
            msgspec.NODEFAULT,
        ),
        ("device_id", Ident, msgspec.UNSET),
        ("v", Literal[1], msgspec.UNSET),
    ]
    by_name: dict[str, list[str]] = {}
    spec = {}
    for kind, fields in FIELDS.items():
        if kind in SERVER_TYPES:
            continue
        for f in fields:
            by_name.setdefault(f.name, []).append(kind)
            spec[f.name] = f
    extra = [
        (
            name,
            _field_type(spec[name].kind, spec[name].max_len, spec[name].choices, used_by) | msgspec.UnsetType,
            msgspec.UNSET,
        )
        for name, used_by in by_name.items()
    ]
    return [(n, t if d is msgspec.NODEFAULT else t | msgspec.UnsetType, d) for n, t, d in common] + extra


# One viewer event: the common fields and, by type, its own (the vocabulary's FIELDS).
Event: Any = msgspec.defstruct(
    "Event",
    [(n, t) if d is msgspec.NODEFAULT else (n, t, d) for n, t, d in _event_fields()],
    kw_only=True,
    module=__name__,
)
EventBatch: Any = Annotated[
    list[Event],
    Meta(
        max_length=MAX_BATCH,
        description='up to 500 events (also accepted: {"events": [...]}); each is checked on its own',
    ),
]


class EventError(msgspec.Struct, kw_only=True):
    """Why one event was refused, in the API's one error shape."""

    code: str
    message: str
    fields: Annotated[dict[str, str], Meta(description="the bad field → what is wrong with it")]
    field: Annotated[str | None, Meta(description="the bad field (the key of `fields`), or null")]


class Rejected(msgspec.Struct, kw_only=True):
    index: Annotated[int, Meta(description="the event's place in the batch")]
    error: EventError


class IngestAnswer(msgspec.Struct, kw_only=True):
    """How many events were accepted, and why the others were not."""

    accepted: int
    rejected: list[Rejected]
