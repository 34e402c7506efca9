"""The one cursor convention of every list the API answers.

    GET /v1/stores?limit=N&after=<cursor>  →  {"stores": [...], "next": <cursor> | null}

Pass `next` as `after` for the following page; `null` is the end (a page is never followed by an
empty one: a list reads one row more than it answers to know). A cursor is opaque to the client:
the sort key of the page's last item (a keyset, so an item added or removed meanwhile never shifts
a page), encoded as URL-safe base64 of its JSON. A cursor of another list, or edited, is a 422
naming `after`.

A domain's list keeps its own SQL. A list in time-then-id order hands it to `keyset_page`, which
adds the cursor's (time, id) and `limit + 1` as the last parameters, reads the rows and cuts the page;
another order decodes its key with `position()` and cuts with `page()`.
"""

from __future__ import annotations

import base64
import binascii
import datetime as dt
from collections.abc import Callable, Sequence
from typing import Annotated, Any, TypeVar

import asyncpg
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


def _keyset(after: str | None) -> tuple[dt.datetime | None, str | None]:
    """The (created_at, id) a cursor of a list in time-then-id order holds, as its SQL's two
    arguments: (None, None) for the first page (`$2::timestamptz IS NULL OR ...`)."""
    at = position(after, tuple[dt.datetime, str])
    return at if at is not None else (None, None)


async def keyset_page(
    conn: asyncpg.Pool | asyncpg.Connection,
    sql: str,
    args: Sequence[Any],
    *,
    after: str | None,
    limit: int,
    key: tuple[str, str],
) -> tuple[list[asyncpg.Record], str | None]:
    """One page of a list in time-then-id order, and the next page's cursor (None: the end).

    `sql` takes `args` first, then the cursor's time and id (both NULL on the first page), then how
    many rows to read (`limit + 1`: the extra row says whether a page follows), e.g.

        SELECT * FROM stores WHERE merchant_id = $1
           AND ($2::timestamptz IS NULL OR (created_at, store_id) > ($2, $3::text))
         ORDER BY created_at, store_id LIMIT $4

    (a newest-first list compares `created_at < $2 OR (created_at = $2 AND id > $3)`). `key` names
    the row's two sort columns, time then id: the last row's make the cursor."""
    since, last = _keyset(after)
    rows = await conn.fetch(sql, *args, since, last, limit + 1)
    at, ident = key
    return page(rows, limit, lambda r: (r[at], r[ident]))


def page(rows: Sequence[T], limit: int, key: Callable[[T], Sequence[Any]]) -> tuple[list[T], str | None]:
    """`rows` read with `limit + 1` as this page's items and the cursor of the next (None: the end)."""
    if len(rows) <= limit:
        return list(rows), None
    kept = list(rows[:limit])
    return kept, cursor(key(kept[-1]))
