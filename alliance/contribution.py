"""Who earns for a visit: the contribution rule and the anti-gaming rules, as one pure judgement.

A viewer attributed to merchant A who reaches partner B's room through the feed and stays there at
least the alliance's minimum dwell *on the server's clock* (alliance.evidence) earns A one
contributed visit (× exchange rate = impressions owed, provisional for the holding period, see
alliance.settlement). It earns nothing when (in the order checked):

| reason | what the merchant reads |
|---|---|
| `self_visit` | the viewer was in your own room |
| `host_own_viewer` | the viewer is also the host's own (attributed to the host too) |
| `not_partners` | you and the host share no alliance |
| `no_enter` | the server never received the viewer entering that room |
| `not_from_feed` | the room was not reached by swiping on in the feed (not served to the viewer on a feed page of that session) |
| `burst_viewer` | the viewer id was created in a burst (one device, or one code) |
| `zero_dwell_burst` | the device just made a burst of visits of a few seconds |
| `short_dwell` | shorter than the minimum dwell on the server's clock |
| `already_counted_today` | this viewer already counted for this room today |
| `viewer_cap` | this viewer already counted the most visits a viewer may count per day |
| `viewer_merchants_cap` | this viewer already counted for the most merchants a viewer may count for per day |
| `device_cap` | the device already counted the most visits a device may count per day |
| `daily_cap` | you reached the alliance's daily earning cap |
"""

from __future__ import annotations

from dataclasses import dataclass

from alliance.alliances import Terms

REASONS = {
    "qualified": "counted",
    "self_visit": "the viewer was in your own room",
    "host_own_viewer": "the viewer is also the host's own viewer",
    "not_partners": "you and the host share no alliance",
    "no_enter": "the server never received the viewer entering that room",
    "not_from_feed": "the room was not reached by swiping on in the feed",
    "burst_viewer": "the viewer id was created in a burst from one device or code",
    "zero_dwell_burst": "the device just made a burst of visits of a few seconds",
    "short_dwell": "shorter than the alliance's minimum dwell, timed on the server's clock",
    "already_counted_today": "this viewer already counted for this room today",
    "viewer_cap": "this viewer already counted the most visits a viewer may count per day",
    "viewer_merchants_cap": "this viewer already counted for the most merchants it may count for per day",
    "device_cap": "this device already counted the most visits a device may count per day",
    "daily_cap": "you reached the alliance's daily earning cap",
}

# Why settlement took credit back (alliance.settlement).
CLAWBACK_REASONS = {
    "burst_viewer": "the viewer id was one of a burst of new ids on one device or code",
    "new_account_share": "new accounts made up far more of your counted visits than is usual",
    "reciprocal_pattern": "your viewers and a partner's viewers visited each other's rooms far beyond the feed's pattern",
    "ring_pattern": "your viewers and two partners' viewers passed visits round a ring far beyond the feed's pattern",
    "chain_pattern": "your viewers went almost only to one partner whose viewers went almost only to a third, far beyond the feed's pattern",
    "focused_flow": "almost all your viewers' visits went to one partner, far beyond how other members' viewers visit it",
    "clique_member": "your viewers' visits went almost only to members already caught trading visits, and theirs came back to you",
    "repeat_viewers": "a few of your viewers came back again and again, far beyond how other members' viewers return",
    "never_converts": "the viewers you brought never ordered anywhere, unlike other members' viewers",
}


@dataclass(frozen=True)
class Policy:
    """Anti-gaming thresholds that are platform policy, not alliance terms. Durations are in the
    alliance's seconds (alliance.clock scales them)."""

    heartbeat_s: float = 30.0  # the app posts a heartbeat this often while a room plays
    short_dwell_ms: int = 3_000  # a visit this short is a "zero-dwell" visit
    zero_dwell_burst: int = 5  # this many zero-dwell visits from one device ...
    zero_dwell_window_s: int = 600  # ... within this window make it a farm for the window
    device_new_viewers: int = 3  # this many new viewer ids first seen on one device ...
    device_new_viewers_window_s: int = 3_600  # ... within an hour are burst-created
    code_new_viewers: int = 30  # this many new viewer ids from one code ...
    code_new_viewers_window_s: int = 60  # ... within a minute are burst-created
    viewer_merchants_per_day: int = 2  # merchants one viewer may count visits for per day
    young_account_s: int = 7 * 86_400  # an account younger than this is new
    holding_s: int = 2 * 3_600  # credit is provisional this long (alliance.settlement)
    evidence_window_s: int = 86_400  # settlement judges patterns over this trailing window


@dataclass(frozen=True)
class VisitFacts:
    contributor_id: str  # A: the merchant the viewer is attributed to
    host_merchant_id: str  # B: whose room was visited
    host_owns_viewer: bool  # the viewer is attributed to B too, within the window
    alliance_id: str | None  # an alliance A and B are both active members of
    terms: Terms | None
    dwell_ms: int  # credited dwell: the server's clock, never more than the client claims
    entered: bool = True  # the server received the enter of this visit
    from_feed: bool = True  # the room was served to the viewer on a feed page of the session
    burst_viewer: bool = False
    device_short_visits: int = 0  # zero-dwell visits by this device within the burst window
    earned_this_room_today: bool = False
    viewer_earned_today: int = 0
    viewer_merchants_today: frozenset[str] = frozenset()  # merchants the viewer counted for today
    device_earned_today: int = 0
    contributor_earned_today: float = 0.0  # impressions earned by A in this alliance today


@dataclass(frozen=True)
class Verdict:
    earned: bool
    reason: str
    amount: float = 0.0


def judge(facts: VisitFacts, policy: Policy = Policy()) -> Verdict:
    if facts.contributor_id == facts.host_merchant_id:
        return Verdict(False, "self_visit")
    if facts.host_owns_viewer:
        return Verdict(False, "host_own_viewer")
    if facts.alliance_id is None or facts.terms is None:
        return Verdict(False, "not_partners")
    terms = facts.terms
    if not facts.entered:
        return Verdict(False, "no_enter")
    if not facts.from_feed:
        return Verdict(False, "not_from_feed")
    if facts.burst_viewer:
        return Verdict(False, "burst_viewer")
    if facts.device_short_visits >= policy.zero_dwell_burst:
        return Verdict(False, "zero_dwell_burst")
    if facts.dwell_ms < terms.min_dwell_ms or facts.dwell_ms < policy.short_dwell_ms:
        return Verdict(False, "short_dwell")
    if facts.earned_this_room_today:
        return Verdict(False, "already_counted_today")
    if facts.viewer_earned_today >= terms.viewer_daily_cap:
        return Verdict(False, "viewer_cap")
    if (
        facts.contributor_id not in facts.viewer_merchants_today
        and len(facts.viewer_merchants_today) >= policy.viewer_merchants_per_day
    ):
        return Verdict(False, "viewer_merchants_cap")
    if facts.device_earned_today >= terms.device_daily_cap:
        return Verdict(False, "device_cap")
    if facts.contributor_earned_today + terms.exchange_rate > terms.daily_earning_cap + 1e-9:
        return Verdict(False, "daily_cap")
    return Verdict(True, "qualified", terms.exchange_rate)
