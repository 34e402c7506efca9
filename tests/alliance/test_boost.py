"""The exposure scheduler and the boost stage: paced, bounded, only for merchants owed exposure,
placed after the filters where the viewer wants the room, never first. Runs on the feed's real
context types and a real Redis."""

from __future__ import annotations

import secrets
import time
from dataclasses import dataclass
from typing import cast

import asyncpg
import numpy as np
import pytest
from redis.asyncio import Redis

from alliance import ledger
from alliance.alliances import AllianceBook, Terms
from alliance.boost import (
    SLOT_COST_CAP,
    AllianceBoost,
    choose_boosts,
    enter_probability,
    shrinkage,
    slot_cost,
    slot_for,
    viewer_lift,
)
from alliance.grants import TOKENS_KEY, grant_key
from alliance.scheduler import BoostPlan, ExposureScheduler, ReachEstimate
from events.vocabulary import SWIPE_AWAY_MS
from feed.config import RankingConfig
from feed.context import Candidates, FeedContext, RecentVisit


@pytest.fixture
def redis(quiet_redis: Redis) -> Redis:
    """These tests set token buckets and plans by hand and run their own scheduler: on a database
    the session app's scheduler, which prunes the buckets of merchants it does not owe every few
    seconds, never writes (its ticks made these tests fail when the host was slow)."""
    return quiet_redis


@dataclass(frozen=True)
class Room:
    room_id: str
    merchant_id: str
    category: str = "beauty"
    started_at: float = 0.0


def context(
    merchants: list[str], scores: list[float], count: int = 10, seed: int = 0, session: str = "s1"
) -> FeedContext:
    """A page as the stages before the boost leave it: ranked by score, the page first."""
    rooms = [Room(f"room-{i}-{m}", m) for i, m in enumerate(merchants)]
    candidates = Candidates.of(rooms).fresh_copy()
    candidates.score = np.asarray(scores, dtype=np.float32)
    order = np.argsort(-candidates.score, kind="stable").tolist()
    return FeedContext(
        viewer_id="v1",
        session_id=session,
        count=count,
        config=RankingConfig(),
        candidates=candidates,
        order=order,
        rng=np.random.default_rng(seed),
    )


def plan(merchant_id: str, debt: float = 100.0, floor: float = 0.8, cap: float = 0.2) -> BoostPlan:
    return BoostPlan(merchant_id, debt, debt, floor, cap)


def logits(p: list[float]) -> list[float]:
    return [float(np.log(x / (1 - x))) for x in p]


def test_only_rooms_off_the_page_the_viewer_wants_enough_are_boosted() -> None:
    # Enter probabilities: the page (ranks 0-9) averages 0.35; m11 is wanted 0.29, m20 only 0.05.
    p = [0.4] * 5 + [0.3] * 5 + [0.295, 0.29] + [0.1] * 8 + [0.05] * 10
    merchants = [f"m{i}" for i in range(30)]
    ctx = context(merchants, logits(p))
    c = ctx.candidates
    page = ctx.order[:10]
    plans = {m: plan(m) for m in ("m3", "m11", "m20")}
    chosen = choose_boosts(enter_probability(c), c.keep, page, set(), c.rooms_of_merchant, plans)
    assert [b.merchant_id for b in chosen] == ["m11"]  # m3 is on the page anyway; m20 is below the floor
    c.keep[11] = False  # the viewer swiped it away (or it was served already): filtered, never boosted
    assert choose_boosts(enter_probability(c), c.keep, page, set(), c.rooms_of_merchant, plans) == []


def with_heat(ctx: FeedContext, enters: list[float], impressions: list[float]) -> FeedContext:
    ctx.candidates.enters = np.asarray(enters, dtype=np.float32)
    ctx.candidates.impressions = np.asarray(impressions, dtype=np.float32)
    return ctx


def test_the_enter_estimate_is_each_rooms_enter_rate_not_the_scores_scale() -> None:
    # The popularity baseline's scores: every room's logit is huge, so read as a probability all are ~1.
    merchants = [f"m{i}" for i in range(12)]
    ctx = context(merchants, [900.0 - 10 * i for i in range(12)], count=5)
    # Page rooms (0-4) are entered 30 % of the times they are shown; m5 is popular (many enters) but
    # entered 5 % of its impressions, m6 30 %, m7 40 %; the rest 25 %.
    impressions = [400.0] * 5 + [2000.0, 300.0, 300.0] + [200.0] * 4
    enters = [120.0] * 5 + [100.0, 90.0, 120.0] + [50.0] * 4
    c = with_heat(ctx, enters, impressions).candidates
    p = enter_probability(c)
    assert np.all(p < 0.5) and p[7] > p[6] > p[5]  # the rate, on its own scale, whatever the score
    plans = {m: plan(m) for m in ("m5", "m6", "m7")}
    outcomes: dict[str, str] = {}
    chosen = choose_boosts(p, c.keep, ctx.order[:5], set(), c.rooms_of_merchant, plans, outcomes)
    # Most wanted first; m5, the most popular, is below 0.8 x the page's 30 %.
    assert [b.merchant_id for b in chosen] == ["m7", "m6"] and outcomes["m5"] == "below_floor"


def test_a_room_seldom_shown_is_judged_by_the_live_sets_rate() -> None:
    rng = np.random.default_rng(0)
    # Rooms whose true rates differ (0.1-0.4), each shown 500 times.
    true = rng.uniform(0.1, 0.4, 200)
    impressions = np.full(200, 500.0)
    enters = rng.binomial(500, true).astype(np.float64)
    fitted = shrinkage(enters, impressions)
    assert fitted is not None
    rate, weight = fitted
    assert abs(rate - true.mean()) < 0.01 and 1.0 <= weight < 100.0
    # Rooms all alike: the spread is sampling alone and a few impressions say nothing.
    alike = rng.binomial(500, 0.25, 200).astype(np.float64)
    assert cast(tuple[float, float], shrinkage(alike, impressions))[1] > 5 * weight
    ctx = with_heat(context(["a", "b", "c"], [0.0, 0.0, 0.0], count=2), [2.0, 150.0, 0.0], [2.0, 500.0, 0.0])
    p = enter_probability(ctx.candidates)
    # Two enters in two impressions is no certainty; a room never shown is the set's rate.
    assert p[0] < 0.9 and abs(p[2] - 152.0 / 502.0) < 1e-6
    assert shrinkage(np.zeros(3), np.zeros(3)) is None  # nothing shown yet: the score decides


def by_category(viewer_recent: list[RecentVisit]) -> FeedContext:
    """A page of 5 rooms: two beauty (entered 30 % of their impressions), three food (30 %); an owed
    beauty room entered 21 % and an owed food room 21 % of theirs (0.7x the page: below 0.8x for a
    viewer the set knows nothing of); four more food rooms at 25 %."""
    cats = ["beauty", "beauty", "food", "food", "food", "beauty", "food", "food", "food", "food", "food"]
    rooms = [Room(f"room-{i}", f"m{i}", cat) for i, cat in enumerate(cats)]
    c = Candidates.of(rooms).fresh_copy()
    c.score = np.linspace(1.0, 0.0, len(rooms)).astype(np.float32)
    c.impressions = np.full(len(rooms), 1000.0, dtype=np.float32)
    c.enters = np.asarray([300.0] * 5 + [210.0, 210.0] + [250.0] * 4, dtype=np.float32)
    return FeedContext(
        viewer_id="v1",
        session_id="s1",
        count=5,
        config=RankingConfig(),
        candidates=c,
        order=list(range(len(rooms))),
        recent=viewer_recent,
    )


def stayed(room_id: str, merchant_id: str, dwell_ms: int = 60_000) -> RecentVisit:
    return RecentVisit(room_id, merchant_id, dwell_ms, ts=0, swiped_away=dwell_ms < SWIPE_AWAY_MS)


def test_a_boost_goes_to_viewers_who_watch_its_category() -> None:
    plans = {m: plan(m) for m in ("m5", "m6")}  # m5 beauty, m6 food, both 0.7x the page by heat alone

    def boosted(recent: list[RecentVisit]) -> list[str]:
        ctx = by_category(recent)
        c = ctx.candidates
        p = enter_probability(c, ctx.recent)
        return [
            b.merchant_id for b in choose_boosts(p, c.keep, ctx.order[:5], set(), c.rooms_of_merchant, plans)
        ]

    assert boosted([]) == []  # the room's average alone: below the floor for everyone
    # A viewer who stayed in beauty rooms (these merchants' rooms, or rooms the set still has).
    assert boosted([stayed("room-0", "m0"), stayed("gone-room", "m1")]) == ["m5"]
    assert boosted([stayed("room-2", "m2"), stayed("room-3", "m3")]) == ["m6"]  # a food watcher
    # Swiped-away visits say nothing of taste; rooms and merchants the set no longer has are skipped.
    assert boosted([stayed("room-0", "m0", dwell_ms=1_000), stayed("ended", "m-ended")]) == []
    lift = viewer_lift(by_category([]).candidates, [stayed("room-0", "m0")])
    assert lift is not None and lift[0] > 1.0 > lift[2]  # one visit moves it, not to certainty
    assert viewer_lift(by_category([]).candidates, []) is None


def test_a_boosted_room_is_never_first() -> None:
    assert slot_for(0.99, [0.5, 0.4, 0.3], 3) == 1
    assert slot_for(0.35, [0.5, 0.4, 0.3], 3) == 1  # wanted more than the room it pushes off: free
    assert slot_for(0.99, [0.5, 0.4, 0.3], 3, cost_cap=0.0) == 1


def test_a_boosted_room_sits_as_high_as_its_relevance_cost_allows() -> None:
    page = [0.4, 0.3, 0.25, 0.2, 0.15]
    # Nearly as wanted as the page: the second slot (reached most often) costs little.
    assert slot_for(0.14, page, 5) == 1 and slot_cost(0.14, page, 5, 1) <= SLOT_COST_CAP
    # Much less wanted: higher slots cost more than the cap, so it goes lower, down to the last slot.
    low = slot_for(0.05, page, 5)
    assert low > 1 and slot_cost(0.05, page, 5, low) <= SLOT_COST_CAP < slot_cost(0.05, page, 5, low - 1)
    assert slot_for(0.05, page, 5, cost_cap=0.0) == 4  # no budget: the cheapest slot, the last
    assert slot_for(0.05, page, 5, cost_cap=1.0) == 1
    # The cost is the page's DCG lost: 0 where the room replaces an equal one at the end.
    assert abs(slot_cost(0.15, page, 5, 4)) < 1e-12


async def owed_everywhere(redis: Redis, tag: str, n: int) -> tuple[AllianceBoost, list[str]]:
    """A stage whose plan owes `n` merchants, each with tokens to spare and no relevance floor."""
    stage = AllianceBoost(redis, plan_ttl_s=1e9)
    merchants = [f"{tag}{i}-{secrets.token_hex(2)}" for i in range(n)]
    stage._plans = {m: plan(m, floor=0.0, cap=0.2) for m in merchants}
    stage._loaded_at = time.monotonic()
    await redis.hset(TOKENS_KEY, mapping={m: "1000" for m in merchants})
    return stage, merchants


async def test_two_owed_rooms_share_a_page_while_the_running_share_is_under_the_cap(redis: Redis) -> None:
    stage, merchants = await owed_everywhere(redis, "r", 30)
    for _ in range(50):  # pages with nothing owed on them: the share used so far is 0
        stage.note_page(5)
    ctx = context(merchants, list(np.linspace(1.0, 0.9, 30)), count=5, seed=3, session="two-1")
    await stage.apply(ctx)
    c = ctx.candidates
    page = ctx.order[:5]
    boosted = [i for i in page if c.boosted[i]]
    assert len(boosted) == 2 and page[0] not in boosted
    assert set(ctx.displaced) == set(boosted)
    assert not any(c.boosted[i] for i in ctx.displaced.values())  # organic rooms pushed off, not a boost
    assert len(set(ctx.order)) == len(ctx.order)
    # Every page full of boosts: the running share reaches the cap and pages go back to one slot.
    counts = []
    for k in range(400):
        ctx = context(merchants, list(np.linspace(1.0, 0.9, 30)), count=5, seed=k, session=f"two-{k + 2}")
        await stage.apply(ctx)
        counts.append(int(ctx.candidates.boosted.sum()))
    assert abs(np.mean(counts[-200:]) / 5 - 0.2) < 0.02


async def test_placed_rooms_carry_a_grant_and_push_the_last_room_off(redis: Redis) -> None:
    stage = AllianceBoost(redis, plan_ttl_s=1e9)
    stage._plans = {"m11": plan("m11")}
    stage._loaded_at = time.monotonic()
    await redis.hset(TOKENS_KEY, "m11", "3")
    p = [0.4] * 5 + [0.3] * 5 + [0.295, 0.29] + [0.1] * 18
    session = f"s-{secrets.token_hex(3)}"
    ctx = context([f"m{i}" for i in range(30)], logits(p), session=session, seed=1)
    organic_last = ctx.order[9]
    await stage.apply(ctx)
    page = ctx.order[:10]
    assert 11 in page and page[0] != 11 and bool(ctx.candidates.boosted[11])
    assert organic_last not in page and ctx.displaced == {11: organic_last}
    assert await redis.get(grant_key("v1", session, "room-11-m11")) == b"m11"
    assert float(cast(bytes, await redis.hget(TOKENS_KEY, "m11"))) == 2.0


async def test_boosted_share_of_a_page_is_capped(redis: Redis) -> None:
    stage, merchants = await owed_everywhere(redis, "c", 40)
    counts = []
    for page in range(30):
        ctx = context(merchants, list(np.linspace(1.0, 0.9, 40)), seed=page, session=f"cap-{page}")
        await stage.apply(ctx)
        counts.append(int(ctx.candidates.boosted.sum()))
    assert set(counts) == {2}
    small = []
    for page in range(200):
        ctx = context(merchants, list(np.linspace(1.0, 0.9, 40)), count=3, seed=page, session=f"sm-{page}")
        await stage.apply(ctx)
        small.append(int(ctx.candidates.boosted.sum()))
    assert set(small) <= {0, 1} and abs(np.mean(small) - 0.6) < 0.1  # 20 % of 3 slots on average


async def owed(pool: asyncpg.Pool, amount: float) -> str:
    a, b = f"mer_{secrets.token_hex(8)}", f"mer_{secrets.token_hex(8)}"
    book = AllianceBook(pool)
    alliance = await book.create(a, "Boost test", Terms(relevance_floor=0.5, boost_share_cap=0.2))
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
            [bystander, contributor] + [f"x{i}" for i in range(30)],
            [0.5, -0.3] + list(np.linspace(0.3, -1.0, 30)),
            seed=page,
            session=f"pace-{page}",
        )  # the contributor is off the page, wanted about as much as the page
        await stage.apply(ctx)
        for i in np.flatnonzero(ctx.candidates.boosted):
            boosted[ctx.candidates.merchant_ids[i]] += 1
    assert boosted[bystander] == 0
    # Exactly the first owed impression (at once) plus the paced tokens, although 60 pages asked.
    assert boosted[contributor] == 1 + 10


async def test_outstanding_grants_are_not_paid_twice(pool: asyncpg.Pool, redis: Redis) -> None:
    contributor = await owed(pool, 3.0)
    scheduler = ExposureScheduler(pool, redis)
    stage = AllianceBoost(redis, plan_ttl_s=0.0)
    now = time.time()
    await redis.hdel(TOKENS_KEY, contributor)
    placed = 0
    for tick in range(25):  # 25 minutes of ticks (grants lapse after 30), ten pages after each
        await scheduler.recompute(now + 60 * tick)
        for page in range(10):
            ctx = context(
                [contributor] + [f"x{i}" for i in range(30)],
                [-0.3] + list(np.linspace(0.3, -1.0, 30)),
                seed=page,
                session=f"grant-{tick}-{page}",
            )
            await stage.apply(ctx)
            placed += int(ctx.candidates.boosted[0])
    # Shown and not yet reported: the grants outstanding count against the debt, so 3 owed
    # impressions place 3 rooms while their reports may still come.
    assert placed == 3
    assert contributor not in await scheduler.recompute(now + 60 * 26)


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


def test_outstanding_grants_count_at_the_share_recently_reached() -> None:
    """Grants that lapse unreached blocked their debt for a grant's life: outstanding grants count at
    the share of recent grants whose impression came, once there are enough outcomes to judge."""
    reach = ReachEstimate(window_s=100.0, min_outcomes=20)
    assert reach.value() == 1.0
    reach.add(0.0, 50.0, 0)
    reach.add(10.0, 55.0, 3)  # 5 delivered, 3 lapsed: too few outcomes yet
    assert reach.value() == 1.0
    reach.add(20.0, 62.0, 12)  # 12 delivered, 15 lapsed since the window began
    assert reach.value() == 12 / 27
    reach.add(200.0, 62.0, 40)  # the window moved on: what came before it no longer counts ...
    reach.add(210.0, 62.0, 25)  # ... and since, 25 lapsed and none was reached
    assert reach.value() == 0.1  # the floor
