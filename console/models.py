"""The console's response models (msgspec): what `console.http`'s typed routes answer."""

from __future__ import annotations

from typing import Annotated

import msgspec
from msgspec import Meta

from roomfeed.auth import Role


class AllianceDelivery(msgspec.Struct, kw_only=True):
    earned: float
    delivered: float
    delivery_ratio: float | None
    merchants: float


class AccountNow(msgspec.Struct, kw_only=True):
    merchant_id: str
    name: str
    earned: float
    delivered: float
    balance: float


class Funnel(msgspec.Struct, kw_only=True):
    """The viewer funnel over the last hour (None: the source was unavailable)."""

    impressions: float | None = None
    visits: float | None = None
    unique_visitors: float | None = None
    orders: float | None = None
    gmv: float | None = None
    enter_rate: float | None = None
    avg_dwell_s: float | None = None
    swipe_away_rate: float | None = None
    conversion_per_visit: Annotated[float | None, Meta(description="orders / visits")] = None
    conversion_per_visitor: Annotated[float | None, Meta(description="orders / unique visitors")] = None
    gmv_per_1k_impressions: float | None = None


class MarketplaceNow(Funnel, kw_only=True):
    """Marketplace numbers now."""

    at: Annotated[float, Meta(description="epoch seconds")]
    window: str
    rooms_live: int | None
    viewers_now: int | None
    alliance: AllianceDelivery | None
    consumer_lag: Annotated[dict[str, int] | None, Meta(description="consumer group → messages behind")]
    consumer_lag_total: int | None
    unavailable: Annotated[list[str], Meta(description="sources that could not be read")]
    alliance_accounts: list[AccountNow]


class MetricSample(Funnel, kw_only=True):
    at: float
    rooms_live: int | None = None
    viewers_now: int | None = None


class MetricSeries(msgspec.Struct, kw_only=True):
    period_s: float
    samples: list[MetricSample]


class AlliancePoint(msgspec.Struct, kw_only=True):
    at: float
    earned: float | None
    delivered: float | None
    balance: float | None
    name: str | None


class AllianceHistory(msgspec.Struct, kw_only=True):
    merchants: Annotated[dict[str, list[AlliancePoint]], Meta(description="merchant_id → its series")]


class HistoryQuery(msgspec.Struct, kw_only=True):
    minutes: Annotated[int, Meta(ge=1, le=2880)] = 60


class ConsoleUser(msgspec.Struct, kw_only=True, omit_defaults=True):
    """Who a key is (a merchant also gets its alliance account over the last 24 hours)."""

    role: Role
    merchant_id: str | None
    alliance_history: list[AlliancePoint] | None = None
