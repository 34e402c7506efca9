"""The contribution rule and each anti-gaming rule, as a pure judgement (the consumer tests run them for real)."""

from __future__ import annotations

from dataclasses import replace

from alliance.alliances import Terms
from alliance.contribution import VisitFacts, judge

TERMS = Terms(
    exchange_rate=3.0, min_dwell_ms=10_000, daily_earning_cap=30.0, viewer_daily_cap=2, device_daily_cap=3
)
OK = VisitFacts(
    contributor_id="A",
    host_merchant_id="B",
    host_owns_viewer=False,
    alliance_id="all_1",
    terms=TERMS,
    dwell_ms=15_000,
    burst_viewer=False,
    device_short_visits=0,
    earned_this_room_today=False,
    viewer_earned_today=0,
    device_earned_today=0,
    contributor_earned_today=0.0,
)


def test_partner_visit_with_enough_dwell_earns_the_exchange_rate() -> None:
    verdict = judge(OK)
    assert verdict.earned and verdict.amount == 3.0


def test_own_room_earns_nothing() -> None:
    assert judge(replace(OK, host_merchant_id="A")).reason == "self_visit"


def test_hosts_own_viewer_earns_nothing() -> None:
    assert judge(replace(OK, host_owns_viewer=True)).reason == "host_own_viewer"


def test_non_partner_earns_nothing() -> None:
    assert judge(replace(OK, alliance_id=None, terms=None)).reason == "not_partners"


def test_short_dwell_earns_nothing() -> None:
    assert judge(replace(OK, dwell_ms=9_999)).reason == "short_dwell"


def test_caps_each_stop_earning() -> None:
    assert judge(replace(OK, earned_this_room_today=True)).reason == "already_counted_today"
    assert judge(replace(OK, viewer_earned_today=2)).reason == "viewer_cap"
    assert judge(replace(OK, device_earned_today=3)).reason == "device_cap"
    assert judge(replace(OK, contributor_earned_today=28.0)).reason == "daily_cap"
    assert judge(replace(OK, contributor_earned_today=27.0)).earned


def test_bursts_earn_nothing_even_with_long_dwell() -> None:
    assert judge(replace(OK, burst_viewer=True)).reason == "burst_viewer"
    assert judge(replace(OK, device_short_visits=5)).reason == "zero_dwell_burst"


def test_evidence_the_server_lacks_earns_nothing() -> None:
    assert judge(replace(OK, entered=False)).reason == "no_enter"
    assert judge(replace(OK, from_feed=False)).reason == "not_from_feed"


def test_a_viewer_counts_for_a_few_merchants_a_day() -> None:
    two = frozenset({"X", "Y"})
    assert judge(replace(OK, viewer_merchants_today=two)).reason == "viewer_merchants_cap"
    assert judge(replace(OK, viewer_merchants_today=frozenset({"A", "X"}))).earned
