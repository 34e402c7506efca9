"""The page judge runs the feed's stages without an event loop of its own: the same pages, anywhere."""

from __future__ import annotations

import asyncio

import pytest

from feed.config import RankingConfig
from feed.context import FeedContext
from feed.replay import FeedPage
from ranking.evaluation import ranker_method
from ranking.ranker import baseline_ranker
from ranking.replay import Schedule, Target


def test_the_page_judge_pages_the_same_inside_a_running_event_loop(
    small_targets: list[Target], small_schedule: Schedule
) -> None:
    ranker = ranker_method(baseline_ranker("rep_live_pop"))
    outside = FeedPage(small_schedule.room_features, RankingConfig(), seed=5)
    pages = [outside(t, ranker(t)).tolist() for t in small_targets[:60]]

    async def in_loop() -> list[list[int]]:  # the trainer's gate may be called where a loop runs
        inside = FeedPage(small_schedule.room_features, RankingConfig(), seed=5)
        return [inside(t, ranker(t)).tolist() for t in small_targets[:60]]

    assert asyncio.run(in_loop()) == pages


def test_a_target_judged_again_gets_the_same_page(
    small_targets: list[Target], small_schedule: Schedule
) -> None:
    # Every method is judged on the same targets: the second judgement reads the kept candidate set.
    ranker = ranker_method(baseline_ranker("rep_pop"))
    page = FeedPage(small_schedule.room_features, RankingConfig(exploration_share=0.0))
    first = [page(t, ranker(t)).tolist() for t in small_targets[:60]]
    assert [page(t, ranker(t)).tolist() for t in small_targets[:60]] == first
    fresh = FeedPage(small_schedule.room_features, RankingConfig(exploration_share=0.0))
    assert [fresh(t, ranker(t)).tolist() for t in small_targets[:60]] == first


def test_a_stage_that_waits_is_refused(small_targets: list[Target], small_schedule: Schedule) -> None:
    class Waits:
        async def apply(self, ctx: FeedContext) -> None:
            await asyncio.sleep(0)

    page = FeedPage(small_schedule.room_features)
    page._stages = (Waits(),)  # type: ignore[assignment]
    t = small_targets[0]
    with pytest.raises(RuntimeError, match="awaited"):
        page(t, ranker_method(baseline_ranker("pop"))(t))
