"""The feed's page for a replayed request: what the offline evaluation judges when it judges the page served.

Owns `FeedPage`, a callable for `ranking.evaluation.page_method`: given a replayed target
(`ranking.replay.Target`) and the scores of its live rooms, it runs the feed's own stages after the
ranker — filters, diversity, exploration (with a seeded generator) — on a `FeedContext` built from
the target, and returns the order the page would show. The session filter was already applied by the
replay (the rooms shown earlier in the session are not candidates), as the feed's served set does.
Ranking never imports the feed: whoever composes the evaluation hands this in.

Exploration draws at random from a generator seeded by (`seed`, the target's log row): every method
gets the same draws on the same target, so a method's page depends on its own scores and the target
only. (One generator shared by every page made a baseline's figures depend on the methods judged
before it: a ranker's page changed how many draws exploration used, and with it every later page —
the baselines moved by up to 0.01 HR@5 when only the ranker changed.)

Every method is judged on the same targets, so a target's candidate set is built once and copied
per method (as the feed copies its live set per request), and the stages, which only compute, run
without an event loop: a world's judgement pages 8 methods x 4,000 targets, and a fresh event loop
and candidate set per page were three quarters of its time.
"""

from __future__ import annotations

from collections.abc import Coroutine, Sequence
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
        self._stages = (Filters(), Diversity(), Exploration())
        self._candidates: dict[bytes, Candidates] = {}  # by the target's live rooms

    def __call__(self, target: Any, scores: np.ndarray) -> np.ndarray:
        c = self._candidates_of(np.asarray(target.rooms, dtype=np.int64)).fresh_copy()
        c.score = np.asarray(scores, dtype=np.float32)
        c.enters = np.asarray(target.request.heat, dtype=np.float32)
        ctx = FeedContext(
            viewer_id=str(target.viewer),
            session_id="replay",
            count=self.count,
            config=self.config,
            now=target.request.now_ms / 1000.0,
            rng=np.random.default_rng((self.seed, int(target.event))),
            candidates=c,
        )
        # Impressions of the last hour are not replayed: every room counts as little seen, so exploration
        # draws its slots from all live rooms (the feed draws from the rooms shown at most 20 times).
        for stage in self._stages:
            _complete(stage.apply(ctx))
        return np.asarray(ctx.order[: self.count], dtype=np.int64)

    def _candidates_of(self, rooms: np.ndarray) -> Candidates:
        key = rooms.tobytes()
        held = self._candidates.get(key)
        if held is None:
            held = self._candidates[key] = Candidates.of([self.room_features[j] for j in rooms.tolist()])
        return held


def _complete(step: Coroutine[Any, Any, None]) -> None:
    """Run a stage to its end without an event loop: the page's stages compute and never wait."""
    try:
        step.send(None)
    except StopIteration:
        return
    step.close()
    raise RuntimeError("a page stage awaited: FeedPage runs only stages that compute")
