"""The feed's request and response models (msgspec): what `feed.http`'s typed routes accept and
answer, and what the OpenAPI document says of them."""

from __future__ import annotations

from typing import Annotated, Any, Literal

import msgspec
from msgspec import Meta

from feed.config import _INTEGER_FIELDS as INTEGER_FIELDS
from feed.config import RANGES
from roomfeed.paging import Next
from roomfeed.validation import Ident, text


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
    replay: Annotated[
        bool, Meta(description="a replay (only in GET /v1/replays and a session's entry_replay)")
    ]
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
    entry_room_id: Annotated[
        str | None, Meta(description="the code's or deep link's room, first on the page")
    ]
    entry_replay: Annotated[
        FeedRoom | None,
        Meta(
            description="the code's or deep link's room when it is not live: its replay, apart from the page"
        ),
    ]


class NewBlock(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    merchant_id: Ident


class Block(msgspec.Struct, kw_only=True):
    merchant_id: str
    blocked: bool


class Blocks(msgspec.Struct, kw_only=True):
    merchants: list[str]


# --- operators: ranking config and experiments ----------------------------------------------------


def _config_change() -> Any:
    """A partial ranking config: every field of `feed.config.RANGES` optional, within its range
    (written once there; the ranker's fields change with it)."""
    fields = [
        (
            name,
            Annotated[int if name in INTEGER_FIELDS else float, Meta(ge=low, le=high)] | msgspec.UnsetType,
            msgspec.UNSET,
        )
        for name, (low, high) in RANGES.items()
    ]
    return msgspec.defstruct(
        "RankingConfigChange", fields, kw_only=True, forbid_unknown_fields=True, module=__name__
    )


# The ranking config fields to change (an operator's change, a variant's overrides).
RankingConfigChange: Any = _config_change()


def changed(change: Any) -> dict[str, float | int]:
    """The fields a `RankingConfigChange` sets."""
    return {
        name: value
        for name in change.__struct_fields__
        if (value := getattr(change, name)) is not msgspec.UNSET
    }


class ConfigUpdate(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    config: RankingConfigChange
    expected_version: (
        Annotated[int, Meta(ge=0, description="409 unless it is the current version")] | None
    ) = None
    note: Annotated[str, text(500, blank_ok=True)] = ""


class ConfigRollback(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    version: Annotated[int, Meta(ge=0, le=2**31 - 1)]  # an integer column


class ConfigChange(msgspec.Struct, kw_only=True):
    """One setting changed by a version: its value before and after."""

    from_: Annotated[float, Meta(description="the value in the version before")] = msgspec.field(name="from")
    to: Annotated[float, Meta(description="the value in this version")]


class ConfigVersion(msgspec.Struct, kw_only=True):
    """A version of the ranking config."""

    version: int
    config: Annotated[dict[str, float], Meta(description="every field's value (feed.config.RANGES)")]
    diff: Annotated[
        dict[str, ConfigChange], Meta(description="each changed setting against the version before")
    ]
    author: str | None
    note: str | None
    rollback_of: int | None
    created_at: Annotated[str | None, Meta(description="ISO 8601")]


class CurrentConfig(ConfigVersion, kw_only=True):
    served_version: Annotated[int, Meta(description="the version this process serves now")]


class ConfigHistory(msgspec.Struct, kw_only=True):
    versions: list[ConfigVersion]
    next: Next


class NewVariant(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    name: Ident
    weight: Annotated[float, Meta(gt=0, le=1, description="traffic share")]
    config: RankingConfigChange | None = None


class NewExperiment(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    name: Annotated[str, text(120)]
    variants: Annotated[
        list[NewVariant],
        Meta(min_length=2, max_length=10, description="unique names; weights (traffic shares) sum to 1"),
    ]


class Variant(msgspec.Struct, kw_only=True):
    name: str
    weight: float
    config: Annotated[dict[str, float], Meta(description="the ranking config fields it overrides")]


class Experiment(msgspec.Struct, kw_only=True):
    experiment_id: str
    name: str
    status: Literal["running", "stopped"]
    author: str
    created_at: str | None
    variants: list[Variant]


class ExperimentList(msgspec.Struct, kw_only=True):
    experiments: list[Experiment]
    next: Next


class Interval(msgspec.Struct, kw_only=True):
    """An estimate with its 95% confidence interval."""

    value: float
    low: float
    high: float


class VariantMetrics(msgspec.Struct, kw_only=True):
    impressions: int
    enters: int
    enter_rate: Interval | None
    average_dwell_ms: Interval | None
    swipe_away_rate: Interval | None
    orders: int
    conversion: Interval | None
    gmv: float
    gmv_per_1000_impressions: Interval | None


class VariantReport(Variant, kw_only=True):
    metrics: VariantMetrics


class ExperimentReport(msgspec.Struct, kw_only=True):
    """An experiment with per-variant metrics and 95% confidence intervals."""

    experiment_id: str
    name: str
    status: Literal["running", "stopped"]
    author: str
    created_at: str | None
    variants: list[VariantReport]
    notes: Annotated[list[str], Meta(description="what could not be counted, and why")]


class ErasureReport(msgspec.Struct, kw_only=True):
    """What erasing a viewer removed."""

    viewer_id: str
    erased: bool
    removed: Annotated[dict[str, int], Meta(description="what was removed or anonymised → how many")]


# --- operators: what a viewer would see, and why ---------------------------------------------------


class PreviewQuery(msgspec.Struct, kw_only=True):
    count: Annotated[int, Meta(ge=1, le=50, description="rooms on the page")] = 10
    explain: Annotated[bool, Meta(description="each room's score, its terms and signals")] = False


class RoomExplain(msgspec.Struct, kw_only=True):
    """Why a room is where it is."""

    score: Annotated[float, Meta(description="the rank stage's score (higher first, before diversity)")]
    model_score: Annotated[float | None, Meta(description="LightFM's score for this viewer")]
    terms: Annotated[
        dict[str, float],
        Meta(
            description="what the score is made of: the learned ranker's column groups (lightfm, popularity, "
            "history (repeat), session) with the operator's multipliers, other_columns, and the feed's "
            "conversion, freshness and session_penalty terms; they add up to score"
        ),
    ]
    signals: Annotated[
        dict[str, float], Meta(description="the room's heat: enters, impressions, dwell, orders")
    ]
    boosted: Annotated[bool, Meta(description="placed by the traffic alliance")]
    displaced: Annotated[str | None, Meta(description="the room a boost pushed off the page")]
    explored: Annotated[bool, Meta(description="placed by exploration (new or little-seen)")]


class PreviewRoom(FeedRoom, kw_only=True):
    explain: RoomExplain | None = None


class FeedPreview(msgspec.Struct, kw_only=True):
    """The page a viewer would get now, and why (nothing is served or recorded)."""

    viewer_id: str
    rooms: list[PreviewRoom]
    candidates: Annotated[int, Meta(description="live rooms the viewer may be shown")]
    recent_visits: int
    model_version: str
    config_version: int
    variant: str
    experiment_id: str | None
    degraded_reasons: list[str]
    notes: list[str]
