"""The feed's viewer and retrieval stages: the viewer's model state, then a few hundred candidates to rank.

`ViewerStep` puts the viewer's state under the serving model on the request (`FeedContext.viewer`: the
LightFM vector and history, read with the session's Redis round trip, or from the artifact when the
model carries its viewers). `Retrieve` replaces the request's candidates — every live room, filtered —
with the union of ranking.retrieval's sources (the viewer's live favourites, LightFM discovery over the
live merchants, co-visitation, trending, the viewer's categories, rooms the alliance owes exposure, an
exploration draw), so the ranker and every stage after it work on a few hundred rooms however many are
live. A retrieved room is scored exactly as among all live rooms (the LightFM moments ride along).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any, Protocol

import numpy as np

from feed.context import Candidates, FeedContext, frame_part
from feed.stages import Exploration, Rank, rank_model, viewer_history, viewer_inputs
from ranking import retrieval
from ranking.viewer_state import ViewerState, from_model

log = logging.getLogger("feed.retrieval")


# Up to this many live rooms the ranker scores every room: below it, retrieval's fixed cost (seven
# sources, their union, the subset) is more than ranking every room. Measured crossover
# (`bench/bench_retrieval.py --cpu`, stage CPU per page, retrieval / every room): 10,000 rooms 1.65,
# 20,000 1.27, 30,000 1.19, 40,000 1.06, 50,000 0.84, 100,000 0.50 (docs/feed.md). Was 2 x Budget.total()
# = 1,132 rooms, where retrieval cost 1.6x ranking every room.
RETRIEVAL_FROM_ROOMS = 45_000
# Viewers whose best merchants (`ranking.retrieval.TopMerchants`) and history picks a process keeps (~3.8 kB
# a viewer for both at the shipped budget, tracemalloc: <= ~40 MB), the least recently served dropped first:
# memory bounded whatever the number of viewers (issue 18).
VIEWERS_KEPT = 10_000


class OwedExposure(Protocol):
    """Merchants the alliance owes exposure, most owed first (alliance.boost.AllianceBoost)."""

    async def owed_merchants(self) -> Sequence[str]: ...


class ViewerStep:
    """Viewer: the viewer's state under the serving model (fetched with the session, else the artifact's)."""

    name = "viewer"

    def __init__(self, model_watcher: Any | None) -> None:
        self.model_watcher = model_watcher

    async def apply(self, ctx: FeedContext) -> None:
        scorer = getattr(self.model_watcher, "scorer", None)
        if scorer is None:
            ctx.viewer = None
            return
        held: ViewerState | None = ctx.viewer
        if held is not None and held.version == scorer.model_version:
            return  # read with the session's round trip, for the model serving now
        ctx.viewer = from_model(scorer, ctx.viewer_id)


class Retrieve:
    """Retrieve: the rooms worth ranking for this viewer, from cheap per-snapshot sources (ranking.retrieval).

    Runs after the filters, on the rooms the viewer may be shown; up to `min_rooms` live rooms (default
    `RETRIEVAL_FROM_ROOMS`, where retrieval starts to cost less than ranking every room) it leaves every
    room to the ranker.
    """

    name = "retrieve"

    def __init__(
        self,
        model_watcher: Any | None,
        rank: Rank,
        owed: OwedExposure | None = None,
        budget: retrieval.Budget = retrieval.DEFAULT_BUDGET,
        min_rooms: int | None = None,
        exact_below: int = retrieval.EXACT_DISCOVERY_BELOW,
    ) -> None:
        self.model_watcher = model_watcher
        self.rank = rank
        self.owed = owed
        self.budget = budget
        self.min_rooms = RETRIEVAL_FROM_ROOMS if min_rooms is None else min_rooms
        self.exact_below = exact_below
        self.exploration = Exploration()
        self._signs: tuple[Any, dict[str, float]] | None = None
        self._clusters: tuple[Any, retrieval.ItemClusters] | None = None  # (model, its item clusters)
        # Per model: each viewer's best merchants, with the live merchants they were last found enough in
        # (None: the viewer's first page here was served by the probe; the list is made on its second).
        self._tops: tuple[Any, dict[tuple[str, float], tuple[retrieval.TopMerchants | None, np.ndarray]]] = (
            None,
            {},
        )
        # Per viewer: what the history-driven sources took from its history (model table, signs and a
        # fingerprint of the history it was taken from: a new visit or another model makes it again).
        self._picks: dict[str, tuple[Any, tuple[float, ...], int, retrieval.HistoryPicks]] = {}
        self.viewers_kept = VIEWERS_KEPT

    def item_clusters(self, scorer: Any, live_merchants: int) -> retrieval.ItemClusters | None:
        """The serving model's item clusters (made once per model, when a live set first has more live
        merchants than exact discovery handles cheaply; ~0.5 s of one core at 50,000 merchants)."""
        model = getattr(scorer, "model", None)
        if model is None or live_merchants <= self.exact_below:
            return None
        held = self._clusters
        if held is None or held[0] is not model:
            held = self._clusters = (
                model,
                retrieval.ItemClusters.of(model.item_repr, exact_below=self.exact_below),
            )
        return held[1]

    def live_set(self, c: Candidates, scorer: Any, rm: Any, room_score: np.ndarray) -> retrieval.LiveSet:
        """The candidate set's LiveSet (kept with the set), with the room part of this second."""

        def make() -> retrieval.LiveSet:
            cols = self.rank.columns(c, rm)
            positions, cats = cols.items, cols.category
            items = scorer.items_at if scorer is not None else None
            clusters = (
                self.item_clusters(scorer, int(np.unique(positions).size)) if scorer is not None else None
            )
            return retrieval.LiveSet.of(positions, cats, items, clusters=clusters)

        base = c.derived("retrieval_live", (rm, scorer), make)
        return c.derived("retrieval_scored", (base, room_score), lambda: base.with_room_score(room_score))

    def frame_view(self, c: Candidates, rm: Any, cfg: Any, now: float, view: dict[str, Any]) -> None:
        """The frame's live set for `cfg`, with the room part of the frame (`Rank.frame_view` ran first) and
        its trending and category lists made (what the first request of a second made before)."""
        if len(c) <= self.min_rooms:
            return
        scorer = getattr(self.model_watcher, "scorer", None)
        if rank_model(scorer) is not rm:  # promoted meanwhile: the next frame has it
            return
        self.rank.frame_view(c, rm, cfg, now, view)
        live = self.live_set(c, scorer, rm, view["room_part"])
        live.trending()
        live.best_in(0, self.budget.per_category)
        view["live"] = live

    def warm(self, c: Candidates) -> None:
        scorer = getattr(self.model_watcher, "scorer", None)
        if len(c) > self.min_rooms and scorer is not None:
            rm = rank_model(scorer)
            self.live_set(c, scorer, rm, np.zeros(len(c)))

    def signs(self, rm: Any, cfg: Any) -> dict[str, float]:
        ranker = self.rank.ranker(rm, cfg)
        held = self._signs
        if held is None or held[0] is not ranker:
            held = self._signs = (ranker, retrieval.directions(ranker))
        return held[1]

    def top_merchants(
        self, scorer: Any, viewer_id: str, vector: np.ndarray | None, sign: float, live: retrieval.LiveSet
    ) -> retrieval.TopMerchants | None:
        """The viewer's best merchants over the serving model, kept per viewer and model: made on the
        viewer's second page in this process (its first goes through the cluster probe as before, so a
        viewer who asks one page costs no more than before: the list's product with every merchant is
        ~0.3-0.6 ms at 50,000 merchants, memory-bound), deeper when the live share of merchants fell below
        what it holds. None where discovery scores every live merchant anyway (no clusters: cheap, exact)."""
        model = getattr(scorer, "model", None)
        block = getattr(scorer, "item_block", None)
        if vector is None or sign == 0 or model is None or block is None or live.clusters is None:
            return None
        held, tops = self._tops
        if held is not model:
            tops = {}
            self._tops = (model, tops)
        key = (viewer_id, sign)
        held_top = tops.pop(key, None)  # re-inserted last: the least recently served go first
        want = self.budget.discovery
        top: retrieval.TopMerchants | None
        if held_top is None:
            top = None  # the viewer's first page here under this model: the probe
        elif held_top[0] is not None and (
            held_top[1] is live.merchants or held_top[0].live_rows(live, want) is not None
        ):
            top = held_top[0]
        else:
            matrix, bias = block()
            depth = retrieval.top_depth(want, int(matrix.shape[0]), int(live.merchants.size))
            top = retrieval.TopMerchants.of(matrix, bias, vector, sign, depth)
        tops[key] = (top, live.merchants)
        if len(tops) > self.viewers_kept:
            del tops[next(iter(tops))]
        return top

    def history_picks(
        self, viewer_id: str, history: Any, table: Any, signs: dict[str, float]
    ) -> retrieval.HistoryPicks:
        """The viewer's `HistoryPicks`, kept while its history and the model's table are the same (a page
        after a page with no visit between reuses them; ~0.1 ms of co-visitation at 100,000 live rooms)."""
        sign_key = tuple(signs.get(name, 1.0) for name in ("covisit", "category_affinity"))
        mark = hash((history.merchants.tobytes(), history.stats.tobytes()))
        held = self._picks.pop(viewer_id, None)  # re-inserted last: the least recently served go first
        if held is not None and held[0] is table and held[1] == sign_key and held[2] == mark:
            picks = held[3]
        else:
            picks = retrieval.HistoryPicks.of(history, table, self.budget, signs)
        self._picks[viewer_id] = (table, sign_key, mark, picks)
        if len(self._picks) > self.viewers_kept:
            del self._picks[next(iter(self._picks))]
        return picks

    async def _owed(self, scorer: Any, c: Candidates) -> list[int]:
        if self.owed is None:
            return []
        try:
            merchants = await self.owed.owed_merchants()
        except Exception:  # the alliance's plans unreadable: no owed rooms this request
            log.warning("owed merchants not read", exc_info=True)
            return []
        if scorer is not None:
            positions = [scorer.position_of(m) for m in merchants]
        else:
            codes = getattr(c.rooms_of_merchant, "_codes", {})
            positions = [codes.get(m, -1) for m in merchants]
        return [p for p in positions if p >= 0]

    async def apply(self, ctx: FeedContext) -> None:
        c, cfg = ctx.candidates, ctx.config
        if len(c) <= self.min_rooms:
            return
        scorer = getattr(self.model_watcher, "scorer", None)
        rm = rank_model(scorer)
        live = frame_part(c, "live", cfg, rm)
        if live is None:
            live = self.live_set(c, scorer, rm, self.rank.room_part(c, rm, cfg, ctx.now))
        lookup = self.rank.columns(c, rm).lookup
        now_ms = int(ctx.now * 1000)
        history, session = viewer_inputs(
            ctx.viewer_id, ctx.recent, rm, lookup, now_ms, base=viewer_history(ctx, rm)
        )
        ctx.viewer_inputs = (history, session)
        state = ctx.viewer
        vector = (
            state.vector
            if state is not None and scorer is not None and state.version == scorer.model_version
            else None
        )
        viewer = retrieval.Viewer(history, None, vector)
        signs = self.signs(rm, cfg)
        got = retrieval.retrieve(
            live,
            c.keep,
            viewer,
            rm.table,
            self.budget,
            owed_merchants=await self._owed(scorer, c),
            eligible=self.exploration.eligible(c, cfg, ctx.now)[1],
            rng=ctx.rng,
            signs=signs,
            not_kept=c.not_kept(),
            top=self.top_merchants(scorer, ctx.viewer_id, vector, signs.get("lightfm", 1.0), live),
            picks=self.history_picks(ctx.viewer_id, history, rm.table, signs),
        )
        ctx.lightfm_moments = got.lightfm_moments
        # Exploration's rows among the (ascending, distinct) rows: one binary search each (np.isin sorted both).
        drawn = got.sources["exploration"]
        pool = np.zeros(got.rows.size, dtype=bool)
        if drawn.size and got.rows.size:
            at = np.minimum(np.searchsorted(got.rows, drawn), got.rows.size - 1)
            pool[at[got.rows[at] == drawn]] = True
        ctx.candidates = c.subset(got.rows, pool=pool)
