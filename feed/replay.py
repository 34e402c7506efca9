"""The feed's page for a replayed request: what the offline evaluation judges when it judges the page served.

Owns `FeedPage`, a callable for `ranking.evaluation.page_method`: given a replayed target
(`ranking.replay.Target`) and the scores of its live rooms, it runs the feed's own stages after the
ranker — filters, diversity, exploration (with a seeded generator) — on a `FeedContext` built from
the target, and returns the order the page would show. The session filter was already applied by the
replay (the rooms shown earlier in the session are not candidates), as the feed's served set does.
Ranking never imports the feed: whoever composes the evaluation hands this in.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from feed.config import RankingConfig
from feed.context import Candidates, FeedContext
from feed.stages import Diversity, Exploration, Filters


@dataclass
class FeedPage:
    """The feed's stages after ranking, for replayed targets (one page of `count` rooms plus spares)."""

    room_features: Sequence[
        Any
    ]  # the schedule's rooms (RoomFeatures: room_id, merchant_id, category, started_at)
    config: RankingConfig = field(default_factory=RankingConfig)
    count: int = 10
    seed: int = 0

    def __post_init__(self) -> None:
        self._rng = np.random.default_rng(self.seed)
        self._stages = (Filters(), Diversity(), Exploration())

    def __call__(self, target: Any, scores: np.ndarray) -> np.ndarray:
        rooms = [self.room_features[int(j)] for j in target.rooms]
        ctx = FeedContext(
            viewer_id=str(target.viewer),
            session_id="replay",
            count=self.count,
            config=self.config,
            now=target.request.now_ms / 1000.0,
            rng=self._rng,
        )
        c = ctx.candidates = Candidates.of(rooms).fresh_copy()
        c.score = np.asarray(scores, dtype=np.float32)
        c.enters = np.asarray(target.request.heat, dtype=np.float32)
        # Impressions of the last hour are not replayed: every room counts as little seen, so exploration
        # draws its slots from all live rooms (the feed draws from the rooms shown at most 20 times).
        asyncio.run(self._run(ctx))
        return np.asarray(ctx.order[: self.count], dtype=np.int64)

    async def _run(self, ctx: FeedContext) -> None:
        for stage in self._stages:
            await stage.apply(ctx)
