"""The feed pipeline, top to bottom: what happens to a viewer's request for the next rooms.

    candidates  every room live now (replays when few are)          feed.stages.CandidateSource
    hydrate     live stats, the viewer's recent rooms                feed.stages.Hydrate
    filters     served in session, ended, swiped away, blocked       feed.stages.Filters
    viewer      the viewer's state under the serving model           feed.retrieval.ViewerStep
    retrieve    a few hundred of those rooms, from cheap sources     feed.retrieval.Retrieve
    score       the LightFM model's score (none → popularity)       feed.stages.Score
    rank        the learned ranker (ranking.ranker), operator multipliers feed.stages.Rank
    diversity   ≤ M of one category or merchant in a row             feed.stages.Diversity
    exploration a share ε of slots for new or little-seen rooms      feed.stages.Exploration
    [alliance]  owed rooms placed where the viewer wants them        alliance.boost.AllianceBoost
                (after the filters, never first, paced)
    page        the rooms as the response shows them                 feed.stages.Page

Adding a stage is one line in `FeedPipeline.standard`. Side effects (the session's served set,
served records) happen after the page, in `feed.service`.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Any

from feed.context import FeedContext, Stage
from feed.retrieval import Retrieve, ViewerStep
from feed.sources import LiveIndexSource, LiveStatsSource, RoomHeatCache
from feed.stages import CandidateSource, Diversity, Exploration, Filters, Hydrate, Page, Rank, Score


class FeedPipeline:
    def __init__(self, stages: Sequence[Stage]) -> None:
        self.stages = list(stages)
        # A candidate set prepared in the background is warmed by every stage that keeps something of it.
        warmers = [warm for stage in self.stages if callable(warm := getattr(stage, "warm", None))]
        # ... and its per-second arrays are built off the request path by the stages that derive them
        # (feed.frames): heat first, then each config's parts in pipeline order.
        shared = [hook for stage in self.stages if callable(hook := getattr(stage, "frame_shared", None))]
        views = [hook for stage in self.stages if callable(hook := getattr(stage, "frame_view", None))]
        rank = next((stage for stage in self.stages if isinstance(stage, Rank)), None)
        hydrate = next((stage for stage in self.stages if isinstance(stage, Hydrate)), None)
        for stage in self.stages:
            if isinstance(stage, CandidateSource):
                stage.warmers = warmers
                if rank is not None and hydrate is not None:  # a frame needs the heat and the model
                    stage.frames.shared, stage.frames.views = shared, views
                    stage.frames.model = rank.model
                    stage.frames.version = hydrate.frame_version

    @classmethod
    def standard(
        cls,
        live_index: LiveIndexSource,
        stats: RoomHeatCache,
        live_stats: LiveStatsSource | None,
        model_watcher: Any | None,
        alliance_boost: Stage | None = None,
        live_index_staleness_s: float = 0.0,
    ) -> FeedPipeline:
        rank = Rank(model_watcher)
        owed = alliance_boost if callable(getattr(alliance_boost, "owed_merchants", None)) else None
        return cls(
            [
                CandidateSource(live_index, live_index_staleness_s),
                Hydrate(stats, live_stats),
                Filters(),
                ViewerStep(model_watcher),
                Retrieve(model_watcher, rank, owed),  # type: ignore[arg-type]
                Score(model_watcher),
                rank,
                Diversity(),
                Exploration(),
                *([alliance_boost] if alliance_boost is not None else []),
                Page(),
            ]
        )

    @property
    def names(self) -> list[str]:
        return [stage.name for stage in self.stages]

    async def stop(self) -> None:
        """Stop what stages run in the background (the candidate source's set preparation and frames)."""
        for stage in self.stages:
            if isinstance(stage, CandidateSource):
                await stage.stop()

    def live_version(self) -> int | None:
        """The live-index version of the snapshot the candidate source holds (None: none yet)."""
        for stage in self.stages:
            if isinstance(stage, CandidateSource):
                return stage.snapshot_version
        return None

    async def run(self, ctx: FeedContext) -> FeedContext:
        for stage in self.stages:
            started = time.perf_counter()
            await stage.apply(ctx)
            ctx.timings_ms[stage.name] = (time.perf_counter() - started) * 1000
        return ctx
