"""The operators' numbers: ratio definitions, alliance accounts, and a dashboard that survives a dead source."""

from __future__ import annotations

import asyncio

import pytest

from console.metrics import (
    MarketplaceMetrics,
    MarketplaceSources,
    alliance_accounts,
    alliance_delivery,
    funnel,
)


def test_funnel_derives_conversion_and_gmv_yield_from_totals() -> None:
    totals = {
        "impressions_1h": 2000,
        "enters_1h": 400,
        "orders_1h": 10,
        "gmv_1h": 1250.0,
        "unique_visitors_1h": 250,
        "swipe_aways_1h": 100,
        "dwell_ms_1h": 400 * 30_000,
    }
    f = funnel(totals)
    assert f["enter_rate"] == pytest.approx(0.2)
    assert f["conversion_per_visit"] == pytest.approx(10 / 400)
    assert f["conversion_per_visitor"] == pytest.approx(10 / 250)
    assert f["gmv_per_1k_impressions"] == pytest.approx(625.0)
    assert f["swipe_away_rate"] == pytest.approx(0.25)
    assert f["avg_dwell_s"] == pytest.approx(30.0)


def test_funnel_has_no_ratio_without_traffic() -> None:
    f = funnel({"impressions_1h": 0, "enters_1h": 0, "orders_1h": 0, "gmv_1h": 0.0})
    assert (
        f["enter_rate"] is None and f["conversion_per_visit"] is None and f["gmv_per_1k_impressions"] is None
    )


def test_alliance_accounts_sum_a_merchant_across_alliances() -> None:
    overview = {
        "merchants": [
            {"merchant_id": "mer_a", "earned": 10.0, "delivered": 4.0, "balance": 6.0},
            {"merchant_id": "mer_b", "earned": 2.0, "delivered": 2.0, "balance": 0.0},
        ],
        "alliances": [{"members": [{"merchant_id": "mer_a", "earned": 5.0, "delivered": 1.0}]}],
    }
    accounts = {a["merchant_id"]: a for a in alliance_accounts(overview)}
    assert accounts["mer_a"]["earned"] == 15.0 and accounts["mer_a"]["delivered"] == 5.0
    assert accounts["mer_a"]["balance"] == 10.0  # the second row had no balance: earned − delivered
    delivery = alliance_delivery(list(accounts.values()))
    assert delivery["delivery_ratio"] == pytest.approx(7.0 / 17.0)


async def test_dashboard_names_a_dead_source_and_keeps_the_others() -> None:
    async def totals() -> dict[str, float]:
        return {"viewers_now": 42, "impressions_1h": 100, "enters_1h": 30}

    async def rooms_live() -> int:
        return 7

    async def broken() -> dict[str, int]:
        raise ConnectionError("broker down")

    async def slow() -> dict[str, object]:
        await asyncio.sleep(5)
        return {}

    metrics = MarketplaceMetrics(
        MarketplaceSources(totals=totals, rooms_live=rooms_live, consumer_lag=broken, alliance=slow),
        timeout_s=0.2,
    )
    snapshot, accounts = await metrics.snapshot()
    assert snapshot["rooms_live"] == 7 and snapshot["viewers_now"] == 42
    assert snapshot["enter_rate"] == pytest.approx(0.3)
    assert snapshot["unavailable"] == ["alliance", "consumer_lag"]
    assert snapshot["consumer_lag"] is None and accounts == []
