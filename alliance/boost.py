"""`AllianceBoost`, the feed stage that pays exposure debt back: a bounded, paced boost.

Among the page's candidates (already scored and blended), a room of an indebted merchant is
boosted only if the page would not show it anyway (a boost must add exposure, not relabel
organic exposure) and its score is within the alliance's relevance floor of the page's best (the
floor is a share of the score range of the top `2 × page_size` candidates). Its score then rises
by at most that floor × range, and never above the page's second room (`TOP_RANK`), so it
enters the page below the clearly better rooms and the best room stays first. At most `share_cap` of the page is boosted (rounded at random so
the expected share is exact even for small pages), one room per merchant, and only while the
merchant has a token in its paced bucket (see `alliance.scheduler`). Boosted candidates get `boosted = True`;
the impression they lead to is what the ledger counts as delivered.
"""

from __future__ import annotations

import math
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Protocol

import numpy as np
from redis.asyncio import Redis

from alliance.scheduler import BoostPlan, TokenBucket, grant_key, read_plans


class BoostCandidates(Protocol):
    """What the stage reads and writes of `feed.context.Candidates` (struct of arrays)."""

    room_ids: np.ndarray
    merchant_ids: np.ndarray
    rooms_of_merchant: Mapping[str, np.ndarray]
    score: np.ndarray
    boosted: np.ndarray
    keep: np.ndarray


class BoostContext(Protocol):
    """What the stage reads of `feed.context.FeedContext`."""

    @property
    def candidates(self) -> BoostCandidates: ...
    @property
    def session_id(self) -> str: ...
    @property
    def count(self) -> int: ...  # the page size
    @property
    def served(self) -> set[str]: ...
    @property
    def rng(self) -> np.random.Generator: ...


@dataclass(frozen=True)
class BoostChoice:
    index: int  # into the candidates
    merchant_id: str
    bump: float


TOP_RANK = 1  # a boosted room lands no higher than this page position (0 = the top): the best stays first


def choose_boosts(
    scores: np.ndarray,
    eligible: np.ndarray,
    rooms_of_merchant: Mapping[str, np.ndarray],
    plans: dict[str, BoostPlan],
    page_size: int,
    draw: float,
    top_rank: int = TOP_RANK,
) -> list[BoostChoice]:
    """Which candidates to boost and by how much, before tokens are spent (pure).

    `eligible` masks candidates the page could show (not yet served, not filtered); `draw` is a
    uniform [0, 1) number that rounds the page's boost share at random.
    """
    idx = np.flatnonzero(eligible)
    if len(idx) == 0 or page_size <= 0 or not plans or len(idx) <= page_size:
        return []  # every candidate is on the page anyway: no exposure to add
    depth = min(len(idx), 2 * page_size)
    pool = scores[idx]
    live = np.sort(np.partition(pool, len(pool) - depth)[len(pool) - depth :])[
        ::-1
    ]  # the top `depth`, best first
    best = float(live[0])
    page_edge = float(live[page_size - 1])  # the last room the page shows unboosted
    ceiling = float(live[min(top_rank, page_size - 1)])  # ties go to the organic room
    spread = best - float(live[-1])
    if spread <= 0:
        return []
    bumps: list[BoostChoice] = []
    for merchant_id, plan in plans.items():
        rooms = rooms_of_merchant.get(merchant_id)
        if rooms is None or len(rooms) == 0:
            continue
        rooms = rooms[eligible[rooms]]
        if len(rooms) == 0:
            continue
        i = int(rooms[np.argmax(scores[rooms])])  # one room per merchant and page: its best
        score = float(scores[i])
        if score >= page_edge:
            continue  # already on the page: showing it is not extra exposure
        if score < best - plan.relevance_floor * spread:
            continue
        target = min(score + plan.strength * plan.relevance_floor * spread, ceiling)
        if target <= page_edge:
            continue  # the bounded bump would not put it on the page
        bumps.append(BoostChoice(i, merchant_id, target - score))
    if not bumps:
        return []
    cap = min(plans[b.merchant_id].share_cap for b in bumps)
    slots = int(math.floor(page_size * cap + draw))
    bumps.sort(key=lambda b: (-plans[b.merchant_id].debt, b.index))
    return bumps[:slots]


class AllianceBoost:
    """The feed stage. Plans are read from Redis at most every `plan_ttl_s` seconds per process."""

    name = "alliance_boost"

    def __init__(self, redis: Redis, *, plan_ttl_s: float = 1.0) -> None:
        self.redis = redis
        self.tokens = TokenBucket(redis)
        self.plan_ttl_s = plan_ttl_s
        self._plans: dict[str, BoostPlan] = {}
        self._loaded_at = -math.inf

    async def refresh(self) -> dict[str, BoostPlan]:
        self._plans = await read_plans(self.redis)
        self._loaded_at = time.monotonic()
        return self._plans

    async def apply(self, ctx: BoostContext) -> None:
        """Raise the chosen rooms' `score`, mark them `boosted`; one Redis round trip when any is chosen."""
        if time.monotonic() - self._loaded_at > self.plan_ttl_s:
            try:
                await self.refresh()
            except Exception:  # Redis down: serve unboosted rather than fail the feed
                self._plans = {}
                self._loaded_at = time.monotonic()
        c = ctx.candidates
        if not self._plans or len(c.score) == 0:
            return
        eligible = c.keep.copy() if len(c.keep) == len(c.score) else np.ones(len(c.score), bool)
        for room_id in ctx.served:
            i = getattr(c, "index_of", {}).get(room_id)
            if i is not None:
                eligible[i] = False
        choices = choose_boosts(
            c.score, eligible, c.rooms_of_merchant, self._plans, ctx.count, float(ctx.rng.random())
        )
        if not choices:
            return
        try:
            granted = await self.tokens.take(
                [b.merchant_id for b in choices],
                [grant_key(ctx.session_id, str(c.room_ids[b.index])) for b in choices],
            )
        except Exception:
            return
        for choice, ok in zip(choices, granted, strict=True):
            if ok:
                c.score[choice.index] += choice.bump
                c.boosted[choice.index] = True
