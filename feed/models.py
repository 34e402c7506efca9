"""The feed's request and response models (msgspec): what `feed.http`'s typed routes accept and
answer, and what the OpenAPI document says of them."""

from __future__ import annotations

from typing import Annotated

import msgspec
from msgspec import Meta

from roomfeed.validation import Ident


class Entry(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    """Where the session starts: an attribution code's merchant room, or a deep-linked room."""

    code: (
        Annotated[str, Meta(min_length=1, max_length=512, description="an attribution code (QR, link)")]
        | None
    ) = None
    room_id: Ident | None = None


class NewSession(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    viewer_id: Ident
    entry: Entry | None = None
    count: Annotated[int, Meta(ge=1, le=50, description="rooms on the first page")] = 5


class FeedQuery(msgspec.Struct, kw_only=True):
    count: Annotated[int, Meta(ge=1, le=50, description="rooms on the page")] = 10
    after: (
        Annotated[
            str,
            Meta(
                max_length=40,
                description="the page_token of the last page received: the page after it, the same "
                "page however often asked. Without it, a new page after the session's newest (not retry-safe).",
            ),
        ]
        | None
    ) = None


class FeedRoom(msgspec.Struct, kw_only=True):
    """A room to swipe to, as the app shows it."""

    room_id: str
    merchant_id: str
    title: str
    category: str
    stream_url: Annotated[str, Meta(description="what the player plays (the replay's URL for a replay)")]
    viewers_now: int
    boosted: Annotated[bool, Meta(description="placed by the traffic alliance")]
    position: Annotated[int, Meta(description="0-based place in the session")]
    replay: bool
    tags: list[str]
    price_band: str
    format: str
    started_at: Annotated[float, Meta(description="epoch seconds")]
    entry: bool = False


class FeedPage(msgspec.Struct, kw_only=True):
    """A page of the swipe feed."""

    session_id: str
    page_token: Annotated[str, Meta(description="pass as `after` for the next page")]
    rooms: list[FeedRoom]
    model_version: str
    config_version: int
    variant: str
    experiment_id: str | None
    degraded: Annotated[bool, Meta(description="served without a dependency (degraded_reasons)")]
    degraded_reasons: list[str]
    timings_ms: dict[str, float]


class Attribution(msgspec.Struct, kw_only=True):
    merchant_id: str
    store_id: str | None
    staff_id: str | None


class SessionStart(FeedPage, kw_only=True):
    """A new session and its first page."""

    attribution: Attribution | None
    entry_room_id: str | None


class NewBlock(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    merchant_id: Ident


class Block(msgspec.Struct, kw_only=True):
    merchant_id: str
    blocked: bool


class Blocks(msgspec.Struct, kw_only=True):
    merchants: list[str]
