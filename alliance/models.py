"""The alliance domain's request and response models (msgspec): what `alliance.http`'s typed routes
accept and answer, and what the OpenAPI document says of them."""

from __future__ import annotations

from typing import Annotated

import msgspec
from msgspec import Meta

from alliance.alliances import Terms
from alliance.plan import WHY
from roomfeed.paging import Next
from roomfeed.validation import Ident, text

_DEFAULT = Terms()


class NewTerms(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    """An alliance's terms: every one optional (the defaults are alliance.alliances.Terms')."""

    exchange_rate: Annotated[
        float, Meta(gt=0, le=1000, description="boosted impressions owed per qualified visit")
    ] = _DEFAULT.exchange_rate
    min_dwell_ms: Annotated[
        int, Meta(ge=0, le=3_600_000, description="a visit qualifies from this dwell on")
    ] = _DEFAULT.min_dwell_ms
    boost_share_cap: Annotated[
        float, Meta(gt=0, le=1, description="at most this share of a page is boosted")
    ] = _DEFAULT.boost_share_cap
    daily_earning_cap: Annotated[
        float, Meta(gt=0, le=1e9, description="impressions earned per day at most")
    ] = _DEFAULT.daily_earning_cap
    relevance_floor: Annotated[
        float,
        Meta(
            ge=0,
            le=2,
            description="a boosted room's predicted enter probability is at least this share of the page's",
        ),
    ] = _DEFAULT.relevance_floor
    attribution_window_h: Annotated[int, Meta(ge=1, le=24 * 30)] = _DEFAULT.attribution_window_h
    viewer_daily_cap: Annotated[
        int, Meta(ge=1, le=10_000, description="qualified visits per viewer per day")
    ] = _DEFAULT.viewer_daily_cap
    device_daily_cap: Annotated[
        int, Meta(ge=1, le=10_000, description="qualified visits per device per day")
    ] = _DEFAULT.device_daily_cap
    commission_rate: Annotated[float, Meta(ge=0, le=1, description="revenue share owed to a store")] = (
        _DEFAULT.commission_rate
    )
    conversion_weight: Annotated[
        float,
        Meta(
            ge=0,
            le=10,
            description="a counted visit that led to a verified order with the host earns this x exchange_rate more",
        ),
    ] = _DEFAULT.conversion_weight

    def terms(self) -> Terms:
        return Terms(**msgspec.structs.asdict(self))


class NewAlliance(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    name: Annotated[str, text(120)]
    terms: NewTerms | None = None


class AllianceTerms(msgspec.Struct, kw_only=True):
    exchange_rate: float
    min_dwell_ms: int
    boost_share_cap: float
    daily_earning_cap: float
    relevance_floor: float
    attribution_window_h: int
    viewer_daily_cap: int
    device_daily_cap: int
    commission_rate: float
    conversion_weight: float


class Member(msgspec.Struct, kw_only=True):
    merchant_id: str
    status: Annotated[str, Meta(description="invited or active")]
    role: Annotated[str, Meta(description="owner or member")]


class Alliance(msgspec.Struct, kw_only=True):
    """An alliance, its terms and members."""

    alliance_id: str
    name: str
    owner_merchant_id: str
    terms: AllianceTerms
    members: list[Member]
    created_at: float


class NewMember(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    merchant_id: Ident


class NewCode(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    """Where a code attributes to: no body is the merchant itself."""

    store_id: Ident | None = None
    staff_id: Ident | None = None


class Code(msgspec.Struct, kw_only=True):
    """A signed attribution code, its landing URL and QR image."""

    code: str
    url: Annotated[str, Meta(description="the landing page a scanned code opens")]
    qr_url: Annotated[str, Meta(description="its QR image (PNG)")]
    merchant_id: str
    store_id: str | None
    staff_id: str | None
    opens: Annotated[int, Meta(description="landing opens counted")]
    created_at: float | None


class CodeList(msgspec.Struct, kw_only=True):
    codes: list[Code]
    next: Next


class LandingEntry(msgspec.Struct, kw_only=True):
    code: str


class LandingSession(msgspec.Struct, kw_only=True):
    entry: LandingEntry


class CodeLanding(msgspec.Struct, kw_only=True):
    """Who a scanned code attributes to, and the session the app starts with it."""

    code: str
    merchant_id: str
    store_id: str | None
    staff_id: str | None
    session: Annotated[LandingSession, Meta(description="the body of POST /v1/sessions' entry")]


# --- the ledger -----------------------------------------------------------------------------------


class AllianceAccount(msgspec.Struct, kw_only=True):
    alliance_id: str
    name: str
    contributed_visits: int
    earned: float
    held: float
    clawed_back: float
    delivered: float
    expired: float
    balance: float


class Counted(msgspec.Struct, kw_only=True):
    visits: int
    confirmed: int
    held: Annotated[int, Meta(description="provisional until held_until")]
    held_amount: float
    held_until: float | None
    visit_credit: Annotated[
        float, Meta(description="credit of the counted visits for the visits themselves")
    ] = 0.0
    converted: Annotated[
        int,
        Meta(
            description="counted visits that led to a verified order with the host (conversion counts most)"
        ),
    ] = 0
    conversion_credit: Annotated[
        float, Meta(description="credit on top for those visits: conversion_weight x the exchange rate each")
    ] = 0.0


class ClawedBack(msgspec.Struct, kw_only=True):
    visits: int
    amount: float
    why: str


class NotCounted(msgspec.Struct, kw_only=True):
    visits: int
    why: str


class Visits(msgspec.Struct, kw_only=True):
    """Each contributed visit once, under what became of it."""

    counted: Counted
    clawed_back: Annotated[dict[str, ClawedBack], Meta(description="reason → visits taken back")]
    not_counted: Annotated[dict[str, NotCounted], Meta(description="reason → visits that never earned")]


class Sales(msgspec.Struct, kw_only=True):
    """Attributed verified sales in one currency, net of refunds and cancellations."""

    currency: str
    orders: int
    gross: float
    reversed: Annotated[float, Meta(description="refunds and cancellations, as a positive amount")]
    gmv: Annotated[float, Meta(description="gross - reversed")]


class StoreSales(Sales, kw_only=True):
    store_id: str


class StaffSales(Sales, kw_only=True):
    staff_id: str


class Attributed(msgspec.Struct, kw_only=True):
    """Orders attributed to the merchant's codes, and their GMV by currency, store and staff."""

    orders: int
    gmv: list[Sales]
    by_store: list[StoreSales]
    by_staff: list[StaffSales]


class RevenueShare(msgspec.Struct, kw_only=True):
    store_id: str
    currency: str
    orders: int
    gross: float
    reversed: float
    attributed_gmv: float
    commission_rate: float
    commission: float


class VerifiedOrders(msgspec.Struct, kw_only=True):
    """The merchant's own books in one currency (verified orders, POST /v1/orders)."""

    currency: str
    orders: int
    gross: Annotated[str, Meta(description="a decimal string with two places")]
    refunds: int
    cancellations: int
    reversed: str
    net: str


class Statement(msgspec.Struct, kw_only=True):
    """A merchant's alliance ledger: exposure earned, held, delivered and its balance; visits;
    attributed orders and GMV by store and staff; revenue share per store."""

    merchant_id: str
    contributed_visits: int
    earned: float
    held: float
    clawed_back: float
    delivered: float
    expired: float
    balance: float
    alliances: list[AllianceAccount]
    visits: Visits
    attributed: Attributed
    revenue_share: list[RevenueShare]
    orders: Annotated[
        list[VerifiedOrders],
        Meta(description="the merchant's own verified orders, to reconcile with the attributed"),
    ]


class OverviewQuery(msgspec.Struct, kw_only=True):
    hours: Annotated[int, Meta(ge=1, le=24 * 31)] = 48


class MerchantAccount(msgspec.Struct, kw_only=True):
    merchant_id: str
    contributed_visits: int = 0
    earned: float = 0.0
    delivered: float = 0.0
    expired: float = 0.0
    balance: float = 0.0
    alliances: list[str] = []
    delivery_ratio: float | None = None
    series: Annotated[
        list[dict[str, float]],
        Meta(description="hourly points: hour (epoch seconds) and the amount of each ledger kind"),
    ] = []


class Overview(msgspec.Struct, kw_only=True):
    """Operators' view of every merchant's alliance account."""

    hours: int
    totals: dict[str, float]
    merchants: list[MerchantAccount]


# --- the pacing plan (alliance.plan) -------------------------------------------------------------


class HeldSettles(msgspec.Struct, kw_only=True):
    at: Annotated[float, Meta(description="epoch seconds (to the minute) when this held credit confirms")]
    amount: Annotated[float, Meta(description="impressions owed once it confirms")]


class Expiring(msgspec.Struct, kw_only=True):
    alliance_id: str
    amount: Annotated[float, Meta(description="owed impressions that age out unless delivered")]
    within_hours: int
    why: str


class PlanReason(msgspec.Struct, kw_only=True):
    reason: Annotated[str, Meta(description="one of: " + ", ".join(WHY))]
    pages: Annotated[int, Meta(description="pages on which this happened in the last two alliance hours")]
    share: Annotated[float, Meta(description="pages / last_hours.pages")]
    why: Annotated[str, Meta(description="the reason in the merchant's words")]


class LastHours(msgspec.Struct, kw_only=True):
    """What became of the merchant's owed rooms on viewers' pages in the last two alliance hours
    (the boost stage's tally; the fields are alliance.boost.OUTCOMES, tested)."""

    pages: Annotated[int, Meta(description="pages on which the merchant was owed a boost")]
    placed: int
    not_placed: int
    below_floor: int
    on_page: int
    filtered: int
    not_live: int


class AlliancePlan(msgspec.Struct, kw_only=True):
    """A merchant's pacing plan: what it is owed, when it is delivered, what expires and why."""

    merchant_id: str
    owed: Annotated[float, Meta(description="boosted impressions owed now (every alliance)")]
    held: Annotated[float, Meta(description="earned, held until its holding period ends")]
    held_settles: Annotated[list[HeldSettles], Meta(description="when held credit confirms (at most 20)")]
    outstanding_grants: Annotated[int, Meta(description="rooms shown whose impression may still come")]
    pace_per_hour: Annotated[float, Meta(description="the scheduler's paced delivery rate")]
    pacing_hours: Annotated[float, Meta(description="the window owed exposure is paced over")]
    delivered_last_hour: float
    hours_to_deliver_at_recent_pace: Annotated[
        float | None, Meta(description="owed / delivered_last_hour; null when nothing was delivered lately")
    ]
    expiring: Annotated[list[Expiring], Meta(description="what ages out within a day, per alliance")]
    last_hours: LastHours
    reasons: Annotated[
        list[PlanReason], Meta(description="why owed exposure was not delivered lately, most pages first")
    ]
    note: str
