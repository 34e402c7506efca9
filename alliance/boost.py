"""`AllianceBoost`, the feed stage that pays exposure debt back: owed rooms placed where the viewer
wants them, paced, after the filters, never first.

It runs after filters, diversity and exploration, on the page as it would be served. For each
merchant the alliance owes exposure (alliance.scheduler's plan) its best room this viewer may still
be shown (kept by the filters: live, not served in the session, not swiped away, not blocked) is a
candidate only if

- the page would not show it anyway (a boost must add exposure, not relabel organic exposure: a
  merchant whose room is on the page organically is repaid on the pages where it is not), and
- the ranker predicts the viewer enters it at least `relevance_floor` × as often as the page's
  other rooms (their mean): the ranker's final score read as the logit of entering, or its
  `p_enter` column when the candidates carry one.

The candidates most likely to be entered go first, at most `share_cap` of the page (rounded at
random, so the expected share is exact for small pages), one room per merchant, and only while the
merchant has a token in its paced bucket (spent atomically with a grant for this viewer, session and
room: alliance.grants). A placed room goes where its predicted enter probability ranks it among the
page's rooms, but never first; the page's last organic room moves to the spares, and the boosted
room records which room it displaced (`FeedContext.displaced`), so the relevance cost can be
measured against the page the viewer would have had.
"""

from __future__ import annotations

import asyncio
import math
import time
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Protocol

import numpy as np
from redis.asyncio import Redis

from alliance.clock import AllianceClock
from alliance.grants import TokenBucket
from alliance.scheduler import BoostPlan, read_plans

TOP_RANK = 1  # a boosted room lands no higher than this page position (0 = the top): the best stays first
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
    rooms_of_merchant: Mapping[str, np.ndarray]
    score: np.ndarray
    boosted: np.ndarray
    keep: np.ndarray


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

    order: list[int]  # candidate indices as the page will show them (the page, then its spares)
    displaced: dict[int, int]  # boosted index → the organic index it pushed off the page


@dataclass(frozen=True)
class BoostChoice:
    index: int  # into the candidates
    merchant_id: str
    p_enter: float


def enter_probability(candidates: BoostCandidates) -> np.ndarray:
    """The ranker's predicted probability that this viewer enters each room: its `p_enter` column
    when it writes one, else its final score read as a logit."""
    p = getattr(candidates, "p_enter", None)
    if isinstance(p, np.ndarray) and len(p) == len(candidates.score):
        return p
    return 1.0 / (1.0 + np.exp(-np.clip(candidates.score.astype(np.float64), -30, 30)))


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


def slot_for(p: float, page_p: list[float], count: int) -> int:
    """Where a boosted room goes: after every page room the viewer is predicted to want more, never first."""
    ahead = sum(1 for q in page_p if q >= p)
    return max(TOP_RANK, min(ahead, count - 1))


class AllianceBoost:
    """The feed stage. Plans are read from Redis at most every `plan_ttl_s` seconds per process."""

    name = "alliance_boost"

    def __init__(self, redis: Redis, *, clock: AllianceClock | None = None, plan_ttl_s: float = 1.0) -> None:
        self.redis = redis
        self.clock = clock or AllianceClock()
        self.tokens = TokenBucket(redis, self.clock)
        self.plan_ttl_s = plan_ttl_s
        self._plans: dict[str, BoostPlan] = {}
        self._loaded_at = -math.inf
        # What became of owed merchants on this process's pages since the last flush (PlacementTally).
        self.tally: Counter[tuple[str, str]] = Counter()

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
        if not self._plans or len(page) < count or count < 2:
            return  # a short page already shows every room the viewer may see
        p_enter = enter_probability(c)
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
        slots = int(math.floor(count * cap + float(ctx.rng.random())))
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
        for b, ok in zip(choices, granted, strict=True):
            self.tally[(b.merchant_id, "placed" if ok else "not_placed")] += 1
        order = list(ctx.order)
        for choice in placed:
            page_now = order[:count]
            at = slot_for(choice.p_enter, [float(p_enter[i]) for i in page_now], count)
            ctx.displaced[choice.index] = page_now[-1]
            order.insert(at, choice.index)
            c.boosted[choice.index] = True
        ctx.order = order
