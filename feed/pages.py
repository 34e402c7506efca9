"""Feed pages and their tokens: what makes `GET /v1/sessions/{id}/feed` safe to retry.

Every page of a session has a number (the session's first page, from `POST /v1/sessions`, is 0) and
a `page_token` that names it. `GET .../feed?after=<token>` asks for the page after that one: the
first such request makes it (claims its rooms in the session's served set, atomically, see
`claim_page.lua`), every later or concurrent request with the same token gets the same page back
from its record. So a retried GET (a proxy, a mobile HTTP stack, a user pulling twice) never loses a
page, and concurrent prefetches with one token never split the rooms between them.

A record keeps the page's rooms (id, position in the session, boosted) and what produced it (model,
config, variant); a page served again is rebuilt from it over the live index as it is now, so a room
that ended since is not served again. A session keeps its newest PAGES_KEPT pages; a token older
than that answers 410 `page_expired` (the app then asks without `after` for a fresh page).
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Any

import orjson

from roomfeed.errors import ApiError, ValidationFailed
from roomfeed.lua import lua_script
from roomfeed.redis_lane import Pipe

CLAIM_PAGE = lua_script(__file__, "claim_page.lua")
PAGES_KEPT = 8


class PageExpired(ApiError):
    status, code = 410, "page_expired"


class PageNotFound(ApiError):
    status, code = 404, "page_not_found"


def pages_key(session_id: str) -> str:
    return f"rf:feed:s:{{{session_id}}}:pages"  # the session's hash tag (feed.sessions)


@dataclass(frozen=True)
class PageLookup:
    """Part of a round trip (roomfeed.redis_lane.Part): the session's newest page number and the
    record of page `number`, each None when Redis does not have it."""

    session_id: str
    number: int

    def queue(self, pipe: Pipe) -> None:
        pipe.execute_command("HMGET", pages_key(self.session_id), "last", str(self.number))

    def read(self, replies: list[Any]) -> tuple[int | None, str | None]:
        last, record = replies[0]
        return (
            int(last) if last is not None else None,
            record.decode() if isinstance(record, bytes) else record,
        )


def _check(session_id: str, number: int) -> str:
    # Not a secret: the session's owner may read all its pages. It makes a token opaque and catches
    # a token of another session passed by mistake.
    return hashlib.blake2s(f"{session_id}:{number}".encode(), digest_size=5).hexdigest()


def page_token(session_id: str, number: int) -> str:
    return f"{number}.{_check(session_id, number)}"


def page_number(session_id: str, token: str) -> int:
    """The page a token names; 422 naming `after` when it is not a token of this session."""
    number, _, check = token.partition(".")
    if (
        not (number.isascii() and number.isdigit())
        or len(number) > 9
        or check != _check(session_id, int(number))
    ):
        raise ValidationFailed(
            "after must be a page_token this session returned",
            fields={"after": "is not a page token of this session"},
        )
    return int(number)


@dataclass(frozen=True)
class PageMeta:
    """What produced a page (kept in its record, shown again when it is served again)."""

    model_version: str
    config_version: int
    variant: str
    experiment_id: str | None

    def header(self) -> str:
        return orjson.dumps(
            [self.model_version, self.config_version, self.variant, self.experiment_id]
        ).decode()


@dataclass(frozen=True)
class PageRecord:
    meta: PageMeta
    rooms: list[tuple[str, int, bool]]  # (room_id, position in the session, boosted)

    @staticmethod
    def parse(raw: bytes | str) -> PageRecord:
        text = raw.decode() if isinstance(raw, bytes) else raw
        header, *lines = text.split("\n")
        model_version, config_version, variant, experiment_id = orjson.loads(header)
        rooms = []
        for line in lines:
            parts = line.split(" ")
            rooms.append((parts[0], int(parts[1]), len(parts) > 2))
        return PageRecord(PageMeta(model_version, int(config_version), variant, experiment_id), rooms)

    def encode(self) -> str:
        lines = [self.meta.header()]
        lines += [
            f"{room_id} {position}{' b' if boosted else ''}" for room_id, position, boosted in self.rooms
        ]
        return "\n".join(lines)
