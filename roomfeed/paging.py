"""The one cursor convention of every list the API answers.

    GET /v1/stores?limit=N&after=<cursor>  →  {"stores": [...], "next": <cursor> | null}

Pass `next` as `after` for the following page; `null` is the end (a page is never followed by an
empty one: a list reads one row more than it answers to know). A cursor is opaque to the client:
the sort key of the page's last item (a keyset, so an item added or removed meanwhile never shifts
a page), encoded as URL-safe base64 of its JSON. A cursor of another list, or edited, is a 422
naming `after`.

A domain's list takes `limit` and the decoded `after` key and reads `limit + 1` rows in its own
SQL (`(created_at, id) > ($2, $3)`); `page()` cuts them and makes `next`.
"""

from __future__ import annotations

import base64
import binascii
import datetime as dt
from collections.abc import Callable, Sequence
from typing import Annotated, Any, TypeVar

import msgspec
from msgspec import Meta

from roomfeed.errors import ValidationFailed

T = TypeVar("T")
K = TypeVar("K")

Next = Annotated[
    str | None, Meta(description="pass as `after` for the next page; null when this page is the last")
]
After = Annotated[
    str,
    Meta(
        min_length=1,
        max_length=200,
        description="the `next` of the previous page (opaque); omit it for the first page",
    ),
]


class ListQuery(msgspec.Struct, kw_only=True):
    """`?limit=&after=`: the query of every list (a list with filters subclasses it)."""

    limit: Annotated[int, Meta(ge=1, le=500, description="at most this many items")] = 100
    after: After | None = None


def cursor(key: Sequence[Any]) -> str:
    """The opaque cursor of a sort key (ids, timestamps, numbers)."""
    return base64.urlsafe_b64encode(msgspec.json.encode(list(key))).rstrip(b"=").decode()


def position(after: str | None, key: type[K]) -> K | None:
    """The sort key a cursor holds, as `key` (a tuple type such as `tuple[datetime, str]`), or None
    for the first page; 422 naming `after` for anything that is not a cursor of this list."""
    if after is None:
        return None
    try:
        raw = base64.urlsafe_b64decode(after + "=" * (-len(after) % 4))
        return msgspec.json.decode(raw, type=key)
    except (binascii.Error, ValueError, msgspec.DecodeError):
        raise ValidationFailed(
            "after is not a cursor of this list; ask without it for the first page",
            fields={"after": "is not a cursor of this list"},
        ) from None


def keyset(after: str | None) -> tuple[dt.datetime | None, str | None]:
    """The (created_at, id) a cursor of a list in time-then-id order holds, as its SQL's two
    arguments: (None, None) for the first page (`$2::timestamptz IS NULL OR ...`)."""
    at = position(after, tuple[dt.datetime, str])
    return at if at is not None else (None, None)


def page(rows: Sequence[T], limit: int, key: Callable[[T], Sequence[Any]]) -> tuple[list[T], str | None]:
    """`rows` read with `limit + 1` as this page's items and the cursor of the next (None: the end)."""
    if len(rows) <= limit:
        return list(rows), None
    kept = list(rows[:limit])
    return kept, cursor(key(kept[-1]))
