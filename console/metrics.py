"""Marketplace numbers for operators: one snapshot composed from the domains that own them.

Owns the definitions of the dashboard ratios (enter rate, average dwell, swipe-away rate,
conversion per visit and per unique visitor, GMV per 1,000 impressions) computed from the events
domain's platform totals, and the composition with rooms live (rooms' live index), alliance
delivery (the alliance's per-merchant accounts) and consumer lag (Kafka offsets). Each source is
an async callable, so this module knows no Redis, Kafka or Starlette. A source that is not
deployed or not answering shows as null and is named under `unavailable`: one slow dependency
never blanks the whole dashboard.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

log = logging.getLogger("roomfeed.console.metrics")

Source = Callable[[], Awaitable[Any]]
SOURCE_TIMEOUT_S = 2.0


def _number(totals: Mapping[str, Any], *names: str) -> float | None:
    """The first of `names` (or `<name>_1h`) present in the totals, as a float."""
    for name in names:
        for key in (name, f"{name}_1h"):
            value = totals.get(key)
            if isinstance(value, (int, float)) and not isinstance(value, bool):
                return float(value)
    return None


def _ratio(numerator: float | None, denominator: float | None, scale: float = 1.0) -> float | None:
    if numerator is None or denominator is None or denominator <= 0:
        return None
    return numerator * scale / denominator


def funnel(totals: Mapping[str, Any]) -> dict[str, float | None]:
    """The viewer funnel from platform totals (last hour): counts and the ratios operators watch.

    Visits are enters. Conversion is orders per visit and orders per unique visitor; swipe-away is
    the share of visits left within 3 s (the events domain counts them); GMV per 1,000 impressions
    is the marketplace's revenue yield of feed exposure.
    """
    impressions = _number(totals, "impressions")
    enters = _number(totals, "enters", "visits")
    orders = _number(totals, "orders")
    gmv = _number(totals, "gmv")
    visitors = _number(totals, "unique_visitors", "visitors")
    swipe_aways = _number(totals, "swipe_aways")
    dwell_ms = _number(totals, "dwell_ms")
    leaves = _number(totals, "leaves")
    avg_dwell = _number(totals, "avg_dwell_ms")
    if avg_dwell is None:
        avg_dwell = _ratio(dwell_ms, leaves if leaves is not None else enters)
    return {
        "impressions": impressions,
        "visits": enters,
        "unique_visitors": visitors,
        "orders": orders,
        "gmv": gmv,
        "enter_rate": _ratio(enters, impressions),
        "avg_dwell_s": avg_dwell / 1000.0 if avg_dwell is not None else None,
        "swipe_away_rate": _ratio(swipe_aways, enters),
        "conversion_per_visit": _ratio(orders, enters),
        "conversion_per_visitor": _ratio(orders, visitors),
        "gmv_per_1k_impressions": _ratio(gmv, impressions, 1000.0),
    }


def _first(row: Mapping[str, Any], *names: str) -> Any:
    for name in names:
        if name in row and row[name] is not None:
            return row[name]
    return None


def _as_float(value: Any) -> float:
    return float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else 0.0


def alliance_accounts(overview: Any) -> list[dict[str, Any]]:
    """Per-merchant alliance accounts (earned, delivered, balance) from the alliance overview.

    Accepts the overview as a list of merchant rows or as `{"merchants": [...]}` / nested per
    alliance (`{"alliances": [{"members": [...]}]}`), summing a merchant across its alliances.
    """
    rows: list[Mapping[str, Any]] = []
    if isinstance(overview, Mapping):
        if isinstance(overview.get("merchants"), Sequence):
            rows.extend(r for r in overview["merchants"] if isinstance(r, Mapping))
        for alliance in overview.get("alliances", []) or []:
            if isinstance(alliance, Mapping):
                members = alliance.get("members") or alliance.get("merchants") or []
                rows.extend(r for r in members if isinstance(r, Mapping))
    elif isinstance(overview, Sequence):
        rows.extend(r for r in overview if isinstance(r, Mapping))
    accounts: dict[str, dict[str, Any]] = {}
    for row in rows:
        merchant_id = _first(row, "merchant_id", "id")
        if not isinstance(merchant_id, str):
            continue
        account = accounts.setdefault(
            merchant_id,
            {
                "merchant_id": merchant_id,
                "name": _first(row, "name", "merchant_name") or merchant_id,
                "earned": 0.0,
                "delivered": 0.0,
                "balance": 0.0,
            },
        )
        earned = _as_float(_first(row, "earned", "earned_exposure"))
        delivered = _as_float(_first(row, "delivered", "delivered_exposure"))
        balance = _first(row, "balance", "exposure_debt", "debt")
        account["earned"] += earned
        account["delivered"] += delivered
        account["balance"] += _as_float(balance) if balance is not None else earned - delivered
    return sorted(accounts.values(), key=lambda a: a["merchant_id"])


def alliance_delivery(accounts: Sequence[Mapping[str, Any]]) -> dict[str, float | None]:
    earned = sum(_as_float(a.get("earned")) for a in accounts)
    delivered = sum(_as_float(a.get("delivered")) for a in accounts)
    return {
        "earned": earned,
        "delivered": delivered,
        "delivery_ratio": _ratio(delivered, earned),
        "merchants": float(len(accounts)),
    }


@dataclass
class MarketplaceSources:
    """Where each number comes from; None when that domain is not part of this build."""

    totals: Source | None = None  # events.live_stats.LiveStats.totals
    rooms_live: Source | None = None  # len(rooms.live_index.LiveIndex.snapshot().rooms)
    alliance: Source | None = None  # the alliance domain's per-merchant overview
    consumer_lag: Source | None = None  # console.lag.LagBySink.by_group
    # Viewers present in live rooms now: the sum over live rooms of the events domain's presence
    # (platform totals carry no presence of their own).
    viewers_now: Source | None = None


class MarketplaceMetrics:
    """The operators' numbers now, each source asked concurrently with a timeout."""

    def __init__(self, sources: MarketplaceSources, timeout_s: float = SOURCE_TIMEOUT_S) -> None:
        self.sources = sources
        self.timeout_s = timeout_s

    async def _ask(self, name: str, source: Source | None, unavailable: list[str]) -> Any:
        if source is None:
            unavailable.append(name)
            return None
        try:
            return await asyncio.wait_for(source(), self.timeout_s)
        except Exception as exc:  # a dependency down must not blank the dashboard
            log.warning("metrics source %s failed: %s", name, exc)
            unavailable.append(name)
            return None

    async def snapshot(self, now: float | None = None) -> tuple[dict[str, Any], list[dict[str, Any]]]:
        """(the dashboard numbers, the per-merchant alliance accounts behind `alliance`)."""
        unavailable: list[str] = []
        s = self.sources
        totals, rooms_live, overview, lag, present = await asyncio.gather(
            self._ask("events", s.totals, unavailable),
            self._ask("rooms", s.rooms_live, unavailable),
            self._ask("alliance", s.alliance, unavailable),
            self._ask("consumer_lag", s.consumer_lag, unavailable),
            self._ask("presence", s.viewers_now, unavailable) if s.viewers_now else asyncio.sleep(0),
        )
        totals = totals if isinstance(totals, Mapping) else {}
        accounts = alliance_accounts(overview) if overview is not None else []
        viewers_now = _number(totals, "viewers_now")
        if isinstance(present, (int, float)) and not isinstance(present, bool):
            viewers_now = max(viewers_now or 0.0, float(present))
        return {
            "at": now if now is not None else time.time(),
            "window": "1h",
            "rooms_live": int(rooms_live) if isinstance(rooms_live, (int, float)) else None,
            "viewers_now": int(viewers_now) if viewers_now is not None else None,
            **funnel(totals),
            "alliance": alliance_delivery(accounts) if overview is not None else None,
            "consumer_lag": lag,
            "consumer_lag_total": sum(lag.values()) if isinstance(lag, Mapping) else None,
            "unavailable": sorted(unavailable),
        }, accounts
