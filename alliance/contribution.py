"""Who earns for a visit: the contribution rule and the anti-gaming rules, as one pure judgement.

A viewer attributed to merchant A who makes a qualified visit (dwell ≥ the alliance's min dwell)
to partner B's room earns A one contributed visit (× exchange rate = earned impressions). It
earns nothing when (in the order checked): A's viewer is in A's own room (`self_visit`); the
viewer is also B's own (attributed to B in the window: `host_own_viewer`); A and B share no
alliance (`not_partners`); the viewer id was created in a burst from one device or code
(`burst_viewer`); its device just made a burst of zero-dwell visits (`zero_dwell_burst`); the
dwell is too short (`short_dwell`); the viewer already earned for this room today
(`repeat_visit`); the viewer's or device's daily cap is reached (`viewer_cap`, `device_cap`);
A's daily earnings in the alliance are capped (`daily_cap`).
"""

from __future__ import annotations

from dataclasses import dataclass

from alliance.alliances import Terms


@dataclass(frozen=True)
class Limits:
    """Anti-gaming thresholds that are not alliance terms (platform policy)."""

    short_dwell_ms: int = 3_000  # a visit this short is a "zero-dwell" visit
    zero_dwell_burst: int = 5  # this many zero-dwell visits from one device ...
    zero_dwell_window_s: int = 600  # ... within this window make it a farm for the window
    device_new_viewers: int = 3  # this many new viewer ids first seen on one device ...
    device_new_viewers_window_s: int = 3_600  # ... within an hour are burst-created
    code_new_viewers: int = 30  # this many new viewer ids from one code ...
    code_new_viewers_window_s: int = 60  # ... within a minute are burst-created


@dataclass(frozen=True)
class VisitFacts:
    contributor_id: str  # A: the merchant the viewer is attributed to
    host_merchant_id: str  # B: whose room was visited
    host_owns_viewer: bool  # the viewer is attributed to B too, within the window
    alliance_id: str | None  # an alliance A and B are both active members of
    terms: Terms | None
    dwell_ms: int
    burst_viewer: bool
    device_short_visits: int  # zero-dwell visits by this device within the burst window
    earned_this_room_today: bool
    viewer_earned_today: int
    device_earned_today: int
    contributor_earned_today: float  # impressions earned by A in this alliance today


@dataclass(frozen=True)
class Verdict:
    earned: bool
    reason: str
    amount: float = 0.0


def judge(facts: VisitFacts, limits: Limits = Limits()) -> Verdict:
    if facts.contributor_id == facts.host_merchant_id:
        return Verdict(False, "self_visit")
    if facts.host_owns_viewer:
        return Verdict(False, "host_own_viewer")
    if facts.alliance_id is None or facts.terms is None:
        return Verdict(False, "not_partners")
    terms = facts.terms
    if facts.burst_viewer:
        return Verdict(False, "burst_viewer")
    if facts.device_short_visits >= limits.zero_dwell_burst:
        return Verdict(False, "zero_dwell_burst")
    if facts.dwell_ms < terms.min_dwell_ms or facts.dwell_ms < limits.short_dwell_ms:
        return Verdict(False, "short_dwell")
    if facts.earned_this_room_today:
        return Verdict(False, "repeat_visit")
    if facts.viewer_earned_today >= terms.viewer_daily_cap:
        return Verdict(False, "viewer_cap")
    if facts.device_earned_today >= terms.device_daily_cap:
        return Verdict(False, "device_cap")
    if facts.contributor_earned_today + terms.exchange_rate > terms.daily_earning_cap + 1e-9:
        return Verdict(False, "daily_cap")
    return Verdict(True, "qualified", terms.exchange_rate)
