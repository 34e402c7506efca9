"""`AllianceBoost`, the feed stage that pays exposure debt back: owed rooms placed where the viewer
wants them, paced, after the filters, never first.

It runs after filters, diversity and exploration, on the page as it would be served. For each
merchant the alliance owes exposure (alliance.scheduler's plan) its best room this viewer may still
be shown (kept by the filters: live, not served in the session, not swiped away, not blocked) is a
candidate only if

- the page would not show it anyway (a boost must add exposure, not relabel organic exposure: a
  merchant whose room is on the page organically is repaid on the pages where it is not), and
- the viewer is predicted to enter it at least `relevance_floor` × as often as the page's other
  rooms (their mean): the ranker's `p_enter` column when the candidates carry one, else each room's
  observed enter rate per impression, shrunk to the live set's rate, times how much more this viewer
  enters rooms of its category than viewers at large do, from the viewer's recent visits
  (`enter_probability`, `viewer_lift`).

The candidates most likely to be entered go first, at most `share_cap` of the page (rounded at
random, so the expected share is exact for small pages; one slot more while several owed rooms
compete and the process's running boosted share stays within the cap: `AllianceBoost.slots`), one
room per merchant, and only while the merchant has a token in its paced bucket (spent atomically with
a grant for this viewer, session and room: alliance.grants). A placed room goes to the highest slot,
never first, whose predicted relevance cost stays within `SLOT_COST_CAP` of the page's DCG
(`slot_for`: viewers reach a higher slot more often, so its grant is less often wasted); the page's
last organic room moves to the spares, and the boosted room records which room it displaced
(`FeedContext.displaced`), so the relevance cost can be measured against the page the viewer would
have had.
"""

from __future__ import annotations

import asyncio
import math
import time
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Protocol

import numpy as np
from redis.asyncio import Redis

from alliance.clock import AllianceClock
from alliance.grants import TokenBucket
from alliance.scheduler import BoostPlan, read_plans

TOP_RANK = 1  # a boosted room lands no higher than this page position (0 = the top): the best stays first
# The predicted relevance cost (share of the page's DCG, alliance.boost.slot_cost) a boost may cost to sit
# higher on its page, where viewers reach it; the limit is 2 % NDCG@10 over all pages, and at
# most a fifth of pages carry a boost.
SLOT_COST_CAP = 0.05
# Pages a process's running boosted share is counted over (the extra slot of `AllianceBoost.slots`).
SHARE_WINDOW_PAGES = 200.0
# What became of an owed merchant on a page, in the words its pacing plan uses (alliance.plan).
OUTCOMES = ("placed", "not_placed", "below_floor", "on_page", "filtered", "not_live")


def hour_bucket(clock: AllianceClock, t: float) -> int:
    """The alliance hour of wall time `t` (the tally's bucket)."""
    return int(clock.alliance_s(t) // 3600)


def tally_key(merchant_id: str, hour: int) -> str:
    return f"rf:al:tally:{merchant_id}:{hour}"


class BoostCandidates(Protocol):
    """What the stage reads and writes of `feed.context.Candidates` (struct of arrays)."""

    room_ids: np.ndarray
    category_codes: np.ndarray  # int: equal categories, equal codes (within the set)
    index_of: Mapping[str, int]
    rooms_of_merchant: Mapping[str, np.ndarray]
    enters: np.ndarray  # room heat (events.heat): decayed counts, aligned with the rooms
    impressions: np.ndarray
    score: np.ndarray
    boosted: np.ndarray
    keep: np.ndarray


class VisitedRoom(Protocol):
    """A room the viewer recently left (`feed.context.RecentVisit`)."""

    @property
    def room_id(self) -> str: ...
    @property
    def merchant_id(self) -> str: ...
    @property
    def swiped_away(self) -> bool: ...


class BoostContext(Protocol):
    """What the stage reads and writes of `feed.context.FeedContext`."""

    @property
    def candidates(self) -> BoostCandidates: ...
    @property
    def viewer_id(self) -> str: ...
    @property
    def session_id(self) -> str: ...
    @property
    def count(self) -> int: ...  # the page size
    @property
    def explored(self) -> set[int]: ...
    @property
    def rng(self) -> np.random.Generator: ...
    @property
    def recent(self) -> Sequence[VisitedRoom]: ...  # newest first

    order: list[int]  # candidate indices as the page will show them (the page, then its spares)
    displaced: dict[int, int]  # boosted index → the organic index it pushed off the page


@dataclass(frozen=True)
class BoostChoice:
    index: int  # into the candidates
    merchant_id: str
    p_enter: float


# Bounds of the prior's weight in impressions (`shrinkage`): at least one impression, at most so many
# that a room's own record never counts for nothing.
PRIOR_IMPRESSIONS_MIN = 1.0
PRIOR_IMPRESSIONS_MAX = 1000.0


def shrinkage(enters: np.ndarray, impressions: np.ndarray) -> tuple[float, float] | None:
    """The live set's enter rate per impression and the prior's weight in impressions, by the method of
    moments of a beta-binomial (None: no room has been shown yet).

    The weight is p(1 − p) / τ² − 1, τ² the spread of rooms' true rates: their impression-weighted
    variance less what sampling alone would give. Rooms that differ little get a heavy prior (a few
    impressions say nothing); rooms that differ a lot get a light one. Fitted on every request's live
    set, so no world's constant is built in."""
    shown = impressions > 0
    total = float(impressions[shown].sum())
    if total <= 0:
        return None
    rate = float(np.clip(enters[shown].sum() / total, 1e-6, 1 - 1e-6))
    raw = np.minimum(enters[shown] / impressions[shown], 1.0)
    observed = float((impressions[shown] * (raw - rate) ** 2).sum() / total)
    sampling = rate * (1 - rate) * int(shown.sum()) / total
    spread = observed - sampling
    if spread <= 0:
        return rate, PRIOR_IMPRESSIONS_MAX
    weight = rate * (1 - rate) / spread - 1
    return rate, float(np.clip(weight, PRIOR_IMPRESSIONS_MIN, PRIOR_IMPRESSIONS_MAX))


# How many visits the live set's category shares weigh against the viewer's own in `viewer_lift`: a
# viewer's first visit moves its estimate, a handful outweigh the crowd's.
VIEWER_PRIOR_VISITS = 4.0


def visited_categories(candidates: BoostCandidates, recent: Sequence[VisitedRoom]) -> np.ndarray:
    """The category codes of the rooms the viewer recently stayed in (swiped-away visits say nothing
    of taste), where the set still knows the category: the merchant's live room, else the room."""
    codes: list[int] = []
    for v in recent:
        if v.swiped_away:
            continue
        rooms = candidates.rooms_of_merchant.get(v.merchant_id) if v.merchant_id else None
        if rooms is not None and len(rooms):
            codes.append(int(candidates.category_codes[int(rooms[0])]))
            continue
        i = candidates.index_of.get(v.room_id)
        if i is not None:
            codes.append(int(candidates.category_codes[i]))
    return np.asarray(codes, dtype=np.int64)


def viewer_lift(
    candidates: BoostCandidates, recent: Sequence[VisitedRoom], prior_visits: float = VIEWER_PRIOR_VISITS
) -> np.ndarray | None:
    """Per room: how much more often this viewer enters rooms of its category than viewers at large
    (None: the viewer's recent visits say nothing the set can place).

    The viewer's share of its recent visits in each category, shrunk to the live set's share of enters
    in it by `prior_visits`, over that share. Heat is each room's enter rate over every viewer it was
    shown to: the same for a viewer who only ever enters one category as for one who never enters it.
    Taste is mostly category (the bench's viewers enter rooms of their favourite categories several
    times as often as others), and a boosted room is a merchant the viewer did not choose: placed by
    the room's average, it went to viewers who do not watch its category as often as to those who do,
    and was entered less often than the page's rooms (0.74-0.87× on seed 8's runs)."""
    visited = visited_categories(candidates, recent)
    codes = np.asarray(candidates.category_codes, dtype=np.int64)
    if visited.size == 0 or codes.size == 0:
        return None
    k = int(max(int(codes.max()), int(visited.max()))) + 1
    enters = np.asarray(candidates.enters, dtype=np.float64)
    if enters.shape != codes.shape:
        enters = np.zeros(codes.shape)
    # Half an enter per category live: a category nobody entered yet has a share, not a zero.
    live = np.bincount(codes, minlength=k) > 0
    crowd = np.bincount(codes, weights=enters, minlength=k) + 0.5 * live
    crowd = crowd / crowd.sum()
    own = np.bincount(visited, minlength=k).astype(np.float64)
    viewer = (own + prior_visits * crowd) / (visited.size + prior_visits)
    lift = np.divide(viewer, crowd, out=np.ones(k), where=crowd > 0)
    out: np.ndarray = lift[codes]
    return out


def enter_probability(candidates: BoostCandidates, recent: Sequence[VisitedRoom] = ()) -> np.ndarray:
    """The predicted probability that this viewer enters each room.

    The ranker's `p_enter` column when it writes one (the viewer's own already). Otherwise each room's
    enter rate per impression (its heat: `enters` / `impressions`), shrunk to the live set's rate with
    the prior weight of `shrinkage`, times this viewer's lift for the room's category from its recent
    visits (`viewer_lift`): an estimate on the probability's own scale, whatever the ranker's score is.
    The score is no probability: the REP-then-POP baseline's (1000 × enters by this viewer +
    popularity) read as a logit is ~1 for any room with a few enters, so a floor on it held nothing
    back and "most wanted" meant "most popular". Before any room has been shown (no heat), the score
    read as a logit."""
    p = getattr(candidates, "p_enter", None)
    if isinstance(p, np.ndarray) and len(p) == len(candidates.score):
        return p
    enters = np.asarray(candidates.enters, dtype=np.float64)
    impressions = np.asarray(candidates.impressions, dtype=np.float64)
    prior = shrinkage(enters, impressions) if len(impressions) == len(candidates.score) else None
    if prior is None:
        base = 1.0 / (1.0 + np.exp(-np.clip(candidates.score.astype(np.float64), -30, 30)))
    else:
        rate, weight = prior
        base = (enters + weight * rate) / (impressions + weight)
    lift = viewer_lift(candidates, recent) if recent else None
    return np.clip(base if lift is None else base * lift, 0.0, 1.0)


def choose_boosts(
    p_enter: np.ndarray,
    keep: np.ndarray,
    page: list[int],
    explored: set[int],
    rooms_of_merchant: Mapping[str, np.ndarray],
    plans: dict[str, BoostPlan],
    outcomes: dict[str, str] | None = None,
) -> list[BoostChoice]:
    """Owed rooms this viewer may be shown, off the page, above the floor; most wanted first (pure).

    `outcomes`, when given, gets what became of each owed merchant on this page: `not_live`,
    `filtered` (its rooms were served to this viewer already, swiped away or blocked), `on_page`,
    `below_floor` or `candidate` (what a merchant's pacing plan explains from)."""
    organic = [i for i in page if i not in explored] or page
    if not organic:
        return []
    reference = float(np.mean(p_enter[organic]))
    on_page = set(page)
    chosen: list[BoostChoice] = []
    seen = outcomes if outcomes is not None else {}
    for merchant_id, plan in plans.items():
        rooms = rooms_of_merchant.get(merchant_id)
        if rooms is None or len(rooms) == 0:
            seen[merchant_id] = "not_live"
            continue
        rooms = rooms[keep[rooms]]
        if len(rooms) == 0:
            seen[merchant_id] = "filtered"
            continue
        i = int(rooms[np.argmax(p_enter[rooms])])  # one room per merchant and page: its most wanted
        if any(int(r) in on_page for r in rooms):
            seen[merchant_id] = "on_page"  # showing it is not extra exposure
            continue
        p = float(p_enter[i])
        if p < plan.relevance_floor * reference:
            seen[merchant_id] = "below_floor"
            continue
        seen[merchant_id] = "candidate"
        chosen.append(BoostChoice(i, merchant_id, p))
    chosen.sort(key=lambda b: (-b.p_enter, b.index))
    return chosen


def page_dcg(gains: list[float]) -> float:
    """Discounted cumulative gain of a page's rooms in order (gain / log2(position + 2))."""
    return float(sum(g / math.log2(i + 2) for i, g in enumerate(gains)))


def slot_cost(p: float, page_p: list[float], count: int, at: int) -> float:
    """The predicted relevance cost of placing a room the viewer enters with probability `p` at slot `at`
    of a page whose rooms' enter probabilities are `page_p` (the page's last room moves off): the share
    of the page's DCG@count, the enter probabilities as gains, that it loses (negative: it gains)."""
    before = page_dcg(page_p[:count])
    after = page_dcg([*page_p[:at], p, *page_p[at:]][:count])
    return (before - after) / before if before > 0 else 0.0


def slot_for(p: float, page_p: list[float], count: int, cost_cap: float = SLOT_COST_CAP) -> int:
    """Where a boosted room goes: the highest slot (never first) whose predicted relevance cost
    (`slot_cost`) stays within `cost_cap` of the page's DCG; where none does, the cheapest slot.

    Viewers scroll down a page and stop, so a slot higher up is reached more often (the bench's apps
    reached a page's last of 5 slots 40-45 % of the time, the second about 85 %): a boost placed
    last was paid for with a grant that mostly lapsed. Reach falls with the position on every page,
    so the highest slot the relevance budget allows is the one most often reached; a room the viewer
    is predicted to want more than some page rooms costs nothing ahead of them."""
    slots = range(TOP_RANK, max(TOP_RANK, count - 1) + 1)
    costs = [(slot_cost(p, page_p, count, at), at) for at in slots]
    within = [at for cost, at in costs if cost <= cost_cap]
    return min(within) if within else min(costs)[1]


class AllianceBoost:
    """The feed stage. Plans are read from Redis at most every `plan_ttl_s` seconds per process."""

    name = "alliance_boost"

    def __init__(
        self,
        redis: Redis,
        *,
        clock: AllianceClock | None = None,
        plan_ttl_s: float = 1.0,
        slot_cost_cap: float = SLOT_COST_CAP,
    ) -> None:
        if not slot_cost_cap >= 0:
            raise ValueError(f"slot_cost_cap must be >= 0, got {slot_cost_cap!r}")
        self.redis = redis
        self.slot_cost_cap = slot_cost_cap
        # This process's page slots and boosted slots over about the last SHARE_WINDOW_PAGES pages
        # (decayed sums): the share cap holds on average, not on every page (`slots`).
        self._page_slots = 0.0
        self._boosted_slots = 0.0
        self.clock = clock or AllianceClock()
        self.tokens = TokenBucket(redis, self.clock)
        self.plan_ttl_s = plan_ttl_s
        self._plans: dict[str, BoostPlan] = {}
        self._loaded_at = -math.inf
        # What became of owed merchants on this process's pages since the last flush (PlacementTally).
        self.tally: Counter[tuple[str, str]] = Counter()

    def note_page(self, count: int) -> None:
        """Count a full page of `count` slots into the running share (`slots`)."""
        decay = 1.0 - 1.0 / SHARE_WINDOW_PAGES
        self._page_slots = self._page_slots * decay + count
        self._boosted_slots *= decay

    def slots(self, count: int, cap: float, candidates: int, u: float) -> int:
        """How many owed rooms this page may carry: `count × cap` rounded at random (`u` uniform in
        [0, 1)), plus one more while several owed rooms compete for the page and this process's boosted
        share of recent page slots, this page's included, stays within `cap`.

        Most pages carry no boost (no owed merchant live, filtered, on the page, below the floor: 1,961
        of 12,585 pages in the 24 h seed 7 run), so a per-page cap of one slot on a 5-room page left the
        term's share mostly unused while owed merchants queued on the pages that had candidates. The
        share cap is the alliance's term over what viewers see; it holds as the running average."""
        base = int(math.floor(count * cap + u))
        if candidates > base and self._boosted_slots + base + 1 <= cap * self._page_slots:
            return min(candidates, base + 1, max(1, count - 1))
        return min(candidates, base)

    async def flush(self) -> None:
        """Add this process's tally to the shared per-hour counts the pacing plans read (one round trip)."""
        if not self.tally:
            return
        tally, self.tally = self.tally, Counter()
        hour = hour_bucket(self.clock, time.time())
        ttl = max(1, int(self.clock.wall(3 * 3600)))
        pipe = self.redis.pipeline(transaction=False)
        for (merchant_id, outcome), n in tally.items():
            key = tally_key(merchant_id, hour)
            pipe.hincrby(key, outcome, n)
            pipe.expire(key, ttl)
        try:
            await pipe.execute()
        except Exception:  # Redis down: these counts are only explanations, not money
            return

    async def flush_every(self, every_s: float) -> None:
        """The process's flusher (started and stopped with the alliance part)."""
        while True:
            await asyncio.sleep(every_s)
            await self.flush()

    async def refresh(self) -> dict[str, BoostPlan]:
        self._plans = await read_plans(self.redis)
        self._loaded_at = time.monotonic()
        return self._plans

    async def release(self, viewer_id: str, session_id: str, boosts: list[tuple[str, str]]) -> None:
        """Withdraw the grants of boosted (merchant, room)s a page did not keep after all."""
        try:
            await self.tokens.release(viewer_id, session_id, boosts)
        except Exception:  # Redis down: the grants lapse on their own
            return

    async def owed_merchants(self) -> list[str]:
        """Merchants this stage may boost now, most owed first (the feed's retrieval brings their rooms)."""
        if time.monotonic() - self._loaded_at > self.plan_ttl_s:
            try:
                await self.refresh()
            except Exception:  # Redis down: nothing owed this second (apply does the same)
                self._plans = {}
                self._loaded_at = time.monotonic()
        return sorted(self._plans, key=lambda m: -self._plans[m].debt)

    async def apply(self, ctx: BoostContext) -> None:
        """Place owed rooms into `ctx.order`, mark them `boosted`; one Redis round trip when any is chosen."""
        if time.monotonic() - self._loaded_at > self.plan_ttl_s:
            try:
                await self.refresh()
            except Exception:  # Redis down: serve unboosted rather than fail the feed
                self._plans = {}
                self._loaded_at = time.monotonic()
        c = ctx.candidates
        count = ctx.count
        page = ctx.order[:count]
        if len(page) < count or count < 2:
            return  # a short page already shows every room the viewer may see
        self.note_page(count)
        if not self._plans:
            return
        p_enter = enter_probability(c, ctx.recent)
        outcomes: dict[str, str] = {}
        choices = choose_boosts(
            p_enter, c.keep, page, ctx.explored, c.rooms_of_merchant, self._plans, outcomes
        )
        for merchant_id, outcome in outcomes.items():
            if outcome != "candidate":
                self.tally[(merchant_id, outcome)] += 1
        if not choices:
            return
        cap = min(self._plans[b.merchant_id].share_cap for b in choices)
        slots = self.slots(count, cap, len(choices), float(ctx.rng.random()))
        if slots <= 0:
            return
        try:
            granted = await self.tokens.take(
                ctx.viewer_id,
                ctx.session_id,
                [(b.merchant_id, str(c.room_ids[b.index])) for b in choices],
                limit=slots,
            )
        except Exception:
            return
        placed = [b for b, ok in zip(choices, granted, strict=True) if ok]
        self._boosted_slots += len(placed)
        for b, ok in zip(choices, granted, strict=True):
            self.tally[(b.merchant_id, "placed" if ok else "not_placed")] += 1
        order = list(ctx.order)
        for choice in placed:
            page_now = order[:count]
            at = slot_for(choice.p_enter, [float(p_enter[i]) for i in page_now], count, self.slot_cost_cap)
            if choice.index in order:  # off the page (choose_boosts): among the spares or further down
                order.remove(choice.index)
            order.insert(at, choice.index)
            c.boosted[choice.index] = True
            # The room pushed off is the page's last organic room (never an earlier boost).
            j = max(k for k in range(count + 1) if not c.boosted[order[k]])
            displaced = order.pop(j)
            order.insert(count, displaced)
            ctx.displaced[choice.index] = displaced
        ctx.order = order
