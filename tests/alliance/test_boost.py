"""The exposure scheduler and the boost stage: paced, bounded, only for merchants owed exposure,
only within the relevance floor and the page's share cap. Runs on the feed's real context types."""

from __future__ import annotations

import secrets
import time
from dataclasses import dataclass

import asyncpg
import numpy as np
from redis.asyncio import Redis

from alliance import ledger
from alliance.alliances import AllianceBook, Terms
from alliance.boost import AllianceBoost, choose_boosts
from alliance.scheduler import TOKENS_KEY, BoostPlan, ExposureScheduler
from feed.config import RankingConfig
from feed.context import Candidates, FeedContext


@dataclass(frozen=True)
class Room:
    room_id: str
    merchant_id: str
    category: str = "beauty"
    started_at: float = 0.0


def context(merchants: list[str], scores: list[float], count: int = 10, seed: int = 0) -> FeedContext:
    rooms = [Room(f"room-{i}-{m}", m) for i, m in enumerate(merchants)]
    candidates = Candidates.of(rooms).fresh_copy()
    candidates.score = np.asarray(scores, dtype=np.float32)
    return FeedContext(
        viewer_id="v1",
        session_id="s1",
        count=count,
        config=RankingConfig(),
        candidates=candidates,
        rng=np.random.default_rng(seed),
    )


def plan(merchant_id: str, debt: float = 100.0, floor: float = 0.2, cap: float = 0.2) -> BoostPlan:
    return BoostPlan(merchant_id, debt, debt, 1.0, floor, cap)


def test_boost_only_within_the_relevance_floor_and_only_for_rooms_off_the_page() -> None:
    scores = np.linspace(1.0, 0.0, 30)  # best 1.0; the top-20 spread is 19/29; the page shows ranks 0-9
    merchants = {f"m{i}": np.array([i]) for i in range(30)}
    on_page, near, far = "m3", "m11", "m20"  # the floor 0.6 reaches down to rank 11
    plans = {m: plan(m, floor=0.6) for m in (on_page, near, far)}
    chosen = choose_boosts(scores, np.ones(30, bool), merchants, plans, 10, 0.99)
    assert [c.merchant_id for c in chosen] == [near]
    boosted = scores[11] + chosen[0].bump
    assert scores[9] < boosted <= scores[1]  # onto the page, but never above its second room
    assert chosen[0].bump <= 0.6 * (1.0 - scores[19]) + 1e-9


def test_boosted_share_of_a_page_is_capped() -> None:
    scores = np.linspace(1.0, 0.9, 40)
    merchants = {f"m{i}": np.array([i]) for i in range(40)}
    plans = {m: plan(m, floor=1.0, cap=0.2) for m in merchants}
    counts = [
        len(choose_boosts(scores, np.ones(40, bool), merchants, plans, 10, d))
        for d in np.linspace(0, 0.999, 50)
    ]
    assert max(counts) == 2 and min(counts) == 2
    small = [
        len(choose_boosts(scores, np.ones(40, bool), merchants, plans, 3, d))
        for d in np.linspace(0, 0.999, 100)
    ]
    assert set(small) <= {0, 1} and abs(np.mean(small) - 0.6) < 0.05  # 20 % of 3 slots on average


async def owed(pool: asyncpg.Pool, amount: float) -> str:
    a, b = f"mer_{secrets.token_hex(8)}", f"mer_{secrets.token_hex(8)}"
    book = AllianceBook(pool)
    alliance = await book.create(a, "Boost test", Terms(relevance_floor=1.0, boost_share_cap=0.2))
    await book.invite(alliance.alliance_id, a, b)
    await book.join(alliance.alliance_id, b)
    async with pool.acquire() as conn, conn.transaction():
        await ledger.post(
            conn,
            source_id=f"seed-{a}",
            kind="earned",
            merchant_id=a,
            alliance_id=alliance.alliance_id,
            amount=amount,
            at=time.time(),
            visits=1,
        )
    return a


async def test_debt_is_paced_not_dumped_and_non_contributors_get_nothing(
    pool: asyncpg.Pool, redis: Redis
) -> None:
    contributor = await owed(pool, 120.0)
    bystander = f"mer_{secrets.token_hex(8)}"
    scheduler = ExposureScheduler(pool, redis, pacing_hours=1.0, burst_hours=0.1)
    stage = AllianceBoost(redis, plan_ttl_s=0.0)
    now = time.time()
    await redis.hdel(TOKENS_KEY, contributor)
    plans = await scheduler.recompute(now)
    assert contributor in plans and bystander not in plans
    await scheduler.recompute(now + 300)  # 5 minutes at 120/h → 10 tokens (the burst cap is 12)
    boosted = {contributor: 0, bystander: 0}
    for page in range(60):
        ctx = context(
            [contributor, bystander] + [f"x{i}" for i in range(30)],
            [0.7, 1.0] + list(np.linspace(0.9, 0.3, 30)),
            seed=page,
        )  # the contributor is off the page
        await stage.apply(ctx)
        for i in np.flatnonzero(ctx.candidates.boosted):
            boosted[ctx.candidates.merchant_ids[i]] += 1
    assert boosted[bystander] == 0
    # Exactly the first owed impression (at once) plus the paced tokens, although 60 pages asked.
    assert boosted[contributor] == 1 + 10


async def test_first_owed_impression_goes_out_at_once_then_paced(pool: asyncpg.Pool, redis: Redis) -> None:
    contributor = await owed(pool, 3.0)
    scheduler = ExposureScheduler(pool, redis)  # 15-minute pacing: 3 owed → 12/h, a token per 5 minutes
    stage = AllianceBoost(redis, plan_ttl_s=0.0)
    now = time.time()
    await redis.hdel(TOKENS_KEY, contributor)
    await scheduler.recompute(now)
    await scheduler.recompute(now + 5)
    boosted = 0
    for page in range(10):
        ctx = context(
            [contributor] + [f"x{i}" for i in range(30)], [0.7] + list(np.linspace(0.9, 0.3, 30)), seed=page
        )
        await stage.apply(ctx)
        boosted += int(ctx.candidates.boosted[0])
    assert boosted == 1


async def test_no_tokens_when_the_debt_is_paid(pool: asyncpg.Pool, redis: Redis) -> None:
    contributor = await owed(pool, 2.0)
    scheduler = ExposureScheduler(pool, redis)
    plans = await scheduler.recompute(time.time())
    assert plans[contributor].debt == 2.0
    async with pool.acquire() as conn, conn.transaction():
        alliance_id = await conn.fetchval(
            "SELECT alliance_id FROM ledger_balances WHERE merchant_id = $1", contributor
        )
        for i in range(2):
            await ledger.post(
                conn,
                source_id=f"imp-{contributor}-{i}",
                kind="delivered",
                merchant_id=contributor,
                alliance_id=alliance_id,
                amount=1.0,
                at=time.time(),
            )
    plans = await scheduler.recompute(time.time() + 600)
    assert contributor not in plans
    assert await redis.hget(TOKENS_KEY, contributor) is None
