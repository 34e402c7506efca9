"""The simulated online A/B: a world's viewers, with their ground-truth tastes, react to the pages the
real feed serves each arm.

Owns `run_ab`: test-day sessions are replayed in event time through the feed's own
`FeedPipeline.standard` (candidates, hydrate, score, rank, filters, diversity, exploration, page),
each viewer's arm chosen by `feed.experiments.assign` (the experiments feature's stable viewer
hash). An arm is a model (the learned ranker's artifact, or the same artifact ranking by a simple
baseline, as the feed serves when the promotion gate refuses a model) plus optional ranking-config
overrides (the variant's config). What the pipeline reads from other domains comes from the
simulation as those domains would hand it over: the live rooms at the viewer's clock (rooms' live
index), room heat decayed with events' half-life (events.heat), the viewer's recent visits (events'
viewer history, rebuilt from the log before the test day and extended by what the viewer does in
the A/B, skips included as the app reports them), and each model's merchant table as the trainer gives
it every round (`RoundTables`: the popularity of the enters before each 10-minute round, as the ranker's
lists and the offline evaluation read it; until 2026-12-07 an arm served the table of its fit all day,
which cost the ranker's page up to -0.017 HR@5 offline, docs/ranking.md "Live popularity"). Arms share
the world: a room one arm makes popular is popular in the other's heat too, as on a real platform.

Sessions here are the feed alone: every room a session sees is one its arm's feed served (no
following tab, notifications or codes), so the difference between arms is the feed's.

Two designs (`run_ab(design=...)`):
- `split`: as on a real platform, each viewer is in one arm (the experiments feature's hash) and the
  arms share one world. Arms are different viewers, so the difference carries the spread between
  viewers (a heavy viewer watches for hours, a light one for minutes): at 800 sessions most intervals
  spanned 0. CUPED (Deng et al., WSDM 2013) takes out what each viewer's pre-period behaviour (the log
  before the test day) predicts: `bootstrap_diff(..., pre=...)`.
- `paired`: what only a simulation can do — every drawn session is played once in each arm, each arm
  in its own copy of the world (its own heat and viewer history, from the same start), the viewer
  with the same seed (common random numbers: the same reaction to the same room). The difference is
  taken viewer by viewer, so the spread between viewers cancels; each arm's world is the platform as
  it would be with that arm serving everyone (its own popularity feedback included).
"""

from __future__ import annotations

import asyncio
import dataclasses
import heapq
import itertools
from collections import deque
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from events.heat import HeatSnapshot
from events.keys import HALF_LIFE_S, SIGNALS
from events.vocabulary import CODE, ENTER, IMPRESSION, LEAVE, PURCHASE, SWIPE_AWAY_MS
from feed.config import RankingConfig
from feed.context import FeedContext, RecentVisit
from feed.experiments import Experiment, Variant, assign
from feed.pipeline import FeedPipeline
from feed.sources import RoomHeatCache
from ranking.replay import MerchantPopularity
from ranking.scorer import Scorer
from roomfeed.redis_lane import Part
from rooms.live_index import LiveRoom
from simulator import Marketplace
from simulator.world import CATEGORIES, DAY_MS

RECENT_LIMIT = 50  # what the feed reads of a viewer's history per request (feed.service)
EXPERIMENT_ID = "exp-world-ab"
MAX_STEPS = 60
MAX_SESSION_MS = 3 * 3_600_000


@dataclass
class Snapshot:
    rooms: tuple[LiveRoom, ...]
    by_id: dict[str, LiveRoom]


class SimLiveIndex:
    """The live index at the simulation's clock: the same snapshot object while the live set holds."""

    def __init__(self, market: Marketplace) -> None:
        self.market = market
        w = market.world
        self.rooms = [
            LiveRoom(
                room_id=r.room_id,
                merchant_id=r.merchant_id,
                title=r.room_id,
                category=r.features.category,
                tags=tuple(r.features.tags),
                price_band=r.features.price_band,
                format=r.features.format,
                host=r.features.host,
                started_at=r.live_from_ms / 1000.0,
                stream_url=f"sim://{r.room_id}",
                status="live",
            )
            for r in market.rooms
        ]
        self.start, self.end = w.r_start, w.r_end
        self.now_ms = 0
        self._live: np.ndarray | None = None
        self._snapshot: Snapshot | None = None
        self.cached: Snapshot | None = None

    def live_at(self, ts_ms: int) -> np.ndarray:
        # A room is served until 5 s before it ends (the batch engine's rule too).
        return np.flatnonzero((self.start <= ts_ms) & (self.end > ts_ms + 5000))

    async def snapshot(self) -> Snapshot:
        live = self.live_at(self.now_ms)
        if self._snapshot is None or self._live is None or not np.array_equal(live, self._live):
            rooms = tuple(self.rooms[int(j)] for j in live)
            self._snapshot = Snapshot(rooms, {r.room_id: r for r in rooms})
            self._live = live
        self.cached = self._snapshot
        return self._snapshot

    async def replays(self, limit: int) -> list[Any]:
        return []

    async def live_room_of_merchant(self, merchant_id: str) -> Any | None:
        return None


class SimHeat:
    """Room heat folded from the simulation's events: enters, impressions, dwell seconds and orders,
    each decayed with events.heat's half-life (what the heat sink keeps in Redis)."""

    def __init__(self, room_ids: Sequence[str]) -> None:
        self.room_ids = list(room_ids)
        self.row_of = {r: i for i, r in enumerate(self.room_ids)}
        self.values = np.zeros((len(room_ids), len(SIGNALS)), dtype=np.float64)
        self.ts = np.zeros(len(room_ids), dtype=np.int64)
        self.now_ms = 0
        self._column = {name: i for i, name in enumerate((ENTER, IMPRESSION, LEAVE, PURCHASE))}

    def add(self, event: Mapping[str, Any]) -> None:
        col = self._column.get(str(event["type"]))
        row = self.row_of.get(str(event["room_id"]), -1)
        if col is None or row < 0:
            return
        ts = int(event["ts"])
        amount = max(0, int(event.get("dwell_ms") or 0)) / 1000.0 if col == 2 else 1.0
        age_s = max(ts - int(self.ts[row]), 0) / 1000.0
        self.values[row] *= 0.5 ** (age_s / HALF_LIFE_S)
        self.values[row, col] += amount
        self.ts[row] = max(ts, int(self.ts[row]))

    async def snapshot(self, now: float | None = None) -> HeatSnapshot:
        """Every room's heat decayed to `now` (default: the simulation's clock), as events.heat reads it."""
        at_ms = self.now_ms if now is None else int(now * 1000)
        age_s = np.maximum(at_ms - self.ts, 0) / 1000.0
        values = self.values * np.power(0.5, age_s / HALF_LIFE_S)[:, None]
        return HeatSnapshot(at_ms / 1000.0, self.room_ids, values, self.row_of)

    def presence(self, room_ids: Sequence[str]) -> Part[list[int]]:
        raise NotImplementedError("who is in a room is the service's read; the A/B runs the pipeline")


class SimViewerHistory:
    """Each viewer's recent visits, newest first (events' viewer history: one per leave)."""

    def __init__(self) -> None:
        self.visits: dict[str, deque[RecentVisit]] = {}

    def add(self, viewer_id: str, room_id: str, merchant_id: str, dwell_ms: int, ts: int) -> None:
        q = self.visits.setdefault(viewer_id, deque(maxlen=RECENT_LIMIT))
        q.appendleft(RecentVisit(room_id, merchant_id, dwell_ms, ts, dwell_ms < SWIPE_AWAY_MS))

    async def viewer_recent(self, viewer_id: str, limit: int = RECENT_LIMIT) -> list[RecentVisit]:
        return list(self.visits.get(viewer_id, ()))[:limit]

    @classmethod
    def from_log(cls, market: Marketplace, until_ms: int) -> SimViewerHistory:
        """History rebuilt from the log before `until_ms` (event time), as events' rebuild would."""
        log = market.log
        history = cls()
        rows = np.flatnonzero((log.type == CODE[LEAVE]) & (log.ts < until_ms))
        # Only each viewer's newest RECENT_LIMIT leaves stay in its deque: add just those, oldest first.
        rows = rows[np.lexsort((log.ts[rows], log.viewer[rows]))]
        viewer = log.viewer[rows]
        last = np.searchsorted(viewer, viewer, side="right")
        rows = rows[last - np.arange(rows.size) <= RECENT_LIMIT]
        for i in rows.tolist():
            history.add(
                f"v{int(log.viewer[i])}",
                f"r{int(log.room[i])}",
                f"m{int(log.merchant[i])}",
                int(log.dwell_ms[i]),
                int(log.ts[i]),
            )
        return history


TABLE_EVERY_MS = 10 * 60_000  # the trainer's round (`roomfeed train --every 10m`; ranking.replay's snapshots)


class RoundTables:
    """An arm's model as the feed serves it through a day of rounds: the same weights, LightFM and viewers,
    and every `every_ms` the merchant table of the enters before that round (the trainer gives a kept
    model its round's table: ranking.train; the ranker's lists and the offline evaluation read the same
    10-minute table, ranking.replay). What the feed's Score and Rank stages read of ranking's model
    watcher: `scorer`, a new one each round (as `ModelWatcher` reloads a rewritten artifact). The arm's
    own watcher is left as it was."""

    def __init__(self, watcher: Any, every_ms: int = TABLE_EVERY_MS) -> None:
        self.scorer = watcher.scorer
        self.every_ms = every_ms
        self._model = self.scorer.model
        table = self._model.table
        self._popularity = MerchantPopularity.of_table(table) if table is not None else None
        self._position = {m: i for i, m in enumerate(self._model.merchant_ids)}
        as_of = table.as_of_ms if table is not None else 0
        self._next = as_of - as_of % every_ms + every_ms

    def enter(self, merchant_id: str, ts: int) -> None:
        """An enter of the arm's world, in event-time order."""
        if self._popularity is None:
            return
        self.round(ts)
        m = self._position.get(merchant_id)
        if m is not None:
            self._popularity.add(m, ts)

    def round(self, now_ms: int) -> None:
        """Serve the table of the round at or before `now_ms` (the enters before it), once it begins."""
        if self._popularity is None or now_ms < self._next:
            return
        at = now_ms - now_ms % self.every_ms
        table = self._popularity.table(self._model.table, at)
        self.scorer = Scorer(dataclasses.replace(self._model, table=table))
        self._next = at + self.every_ms


@dataclass(frozen=True)
class Arm:
    """One arm: what the feed ranks with (its model watcher: `.scorer`, the artifact and its ranker)
    and the ranking-config fields the arm's experiment variant overrides."""

    name: str
    model_watcher: Any
    overrides: dict[str, float | int] = field(default_factory=dict)


@dataclass
class ArmTotals:
    """Per-session sums of one arm: everything the reported metrics and their intervals need."""

    viewer: list[int] = field(default_factory=list)  # the session's viewer (intervals resample viewers)
    impressions: list[int] = field(default_factory=list)
    enters: list[int] = field(default_factory=list)
    watches: list[int] = field(default_factory=list)
    watch_ms: list[int] = field(default_factory=list)
    orders: list[int] = field(default_factory=list)
    gmv: list[float] = field(default_factory=list)

    def arrays(self) -> dict[str, np.ndarray]:
        return {k: np.asarray(getattr(self, k), dtype=np.float64) for k in self.__dataclass_fields__}


def arm_metrics(a: Mapping[str, np.ndarray]) -> dict[str, float]:
    """An arm's figures from per-session sums (or per-viewer sums with their `sessions` counts)."""
    imp = max(float(a["impressions"].sum()), 1.0)
    sessions = float(a["sessions"].sum()) if "sessions" in a else float(a["impressions"].size)
    n = max(sessions, 1.0)
    return {
        "sessions": sessions,
        "impressions": float(a["impressions"].sum()),
        "enter_rate": float(a["enters"].sum() / imp),
        "watch_rate": float(a["watches"].sum() / imp),
        "watch_min_per_session": float(a["watch_ms"].sum() / 60_000.0 / n),
        "orders_per_1k": float(1000.0 * a["orders"].sum() / imp),
        "gmv_per_1k": float(1000.0 * a["gmv"].sum() / imp),
    }


def per_viewer(a: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Per-session sums folded into per-viewer sums, with each viewer's number of sessions."""
    _, group = np.unique(a["viewer"], return_inverse=True)
    out = {k: np.bincount(group, weights=v) for k, v in a.items() if k != "viewer"}
    out["sessions"] = np.bincount(group).astype(np.float64)
    return out


def pre_period(market: Marketplace, until_ms: int, viewers: np.ndarray) -> dict[str, np.ndarray]:
    """Each of `viewers`' behaviour in the log before `until_ms` (the pre-period CUPED reads), as
    per-session rates over the same keys as an arm's sums: impressions, enters, watches, watch_ms,
    orders and gmv per session. A viewer with no earlier session gets the pre-period's overall rates
    (the covariate then carries nothing of them, and costs nothing)."""
    log, st = market.log, market.session_table
    n = (
        int(max(int(viewers.max(initial=0)), int(log.viewer.max(initial=0)), int(st.viewer.max(initial=0))))
        + 1
    )
    before = log.ts < until_ms
    leave = before & (log.type == CODE[LEAVE])

    def count(mask: np.ndarray, weights: np.ndarray | None = None) -> np.ndarray:
        return np.bincount(log.viewer[mask], weights=None if weights is None else weights[mask], minlength=n)

    sums = {
        "impressions": count(before & (log.type == CODE[IMPRESSION])),
        "enters": count(before & (log.type == CODE[ENTER])),
        "watches": count(leave & (log.dwell_ms >= SWIPE_AWAY_MS)),
        "watch_ms": count(leave, log.dwell_ms.astype(np.float64)),
        "orders": count(before & (log.type == CODE[PURCHASE])),
        "gmv": count(before & (log.type == CODE[PURCHASE]), np.nan_to_num(log.amount.astype(np.float64))),
    }
    sessions = np.bincount(st.viewer[st.start_ms < until_ms], minlength=n).astype(np.float64)
    seen = sessions > 0
    total = max(float(sessions.sum()), 1.0)
    rows = viewers.astype(np.int64)
    out: dict[str, np.ndarray] = {}
    for k, v in sums.items():
        rate = np.where(seen, v / np.maximum(sessions, 1.0), float(v.sum()) / total)
        out[k] = rate[rows]
    return out


def _covariate(sums: Mapping[str, np.ndarray], rates: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Per viewer, what the viewer's pre-period rates predict for their sessions in the A/B: rate x sessions
    (the test period's metric is a ratio of sums; the covariate is the same ratio of predicted sums)."""
    return {k: rates[k] * sums["sessions"] for k in rates} | {"sessions": sums["sessions"]}


def bootstrap_diff(
    a: Mapping[str, np.ndarray],
    b: Mapping[str, np.ndarray],
    resamples: int = 1000,
    seed: int = 0,
    paired: bool = False,
    pre: Callable[[np.ndarray], Mapping[str, np.ndarray]] | None = None,
) -> dict[str, tuple[float, float, float]]:
    """Per metric: (a − b, 95 % low, high), viewers resampled with all their sessions (one viewer's
    sessions are not independent draws).

    Unpaired (the split design: the arms are different viewers), each arm's viewers are resampled on
    their own. `paired` (both arms played the same sessions: a and b hold the same viewers' sessions
    in the same order) draws viewers once for both arms, so what a viewer brings cancels.

    `pre` (viewer ids -> their pre-period rates, `pre_period`) adjusts the unpaired difference with
    CUPED: in every resample the same metric is computed on the drawn viewers' pre-period covariate;
    theta = cov(diff, pre-period diff) / var(pre-period diff) over the resamples, and the reported
    difference and interval are diff − theta · pre-period diff. Paired, the pre-period difference is 0
    by construction and CUPED has nothing to take out (it is not applied)."""
    rng = np.random.default_rng(seed)
    va, vb = per_viewer(a), per_viewer(b)
    na, nb = va["sessions"].size, vb["sessions"].size
    if paired and (na != nb or not np.array_equal(np.unique(a["viewer"]), np.unique(b["viewer"]))):
        raise ValueError("a paired A/B needs both arms to hold the same viewers' sessions")
    point_a, point_b = arm_metrics(va), arm_metrics(vb)
    keys = [k for k in point_a if k not in ("sessions", "impressions")]
    adjust = pre is not None and not paired
    if adjust:
        assert pre is not None
        xa = _covariate(va, pre(np.unique(a["viewer"])))
        xb = _covariate(vb, pre(np.unique(b["viewer"])))
        pre_a, pre_b = arm_metrics(xa), arm_metrics(xb)
    draws: dict[str, list[float]] = {k: [] for k in keys}
    pre_draws: dict[str, list[float]] = {k: [] for k in keys}
    for _ in range(resamples):
        ia = rng.integers(0, na, na)
        ib = ia if paired else rng.integers(0, nb, nb)
        ma = arm_metrics({k: v[ia] for k, v in va.items()})
        mb = arm_metrics({k: v[ib] for k, v in vb.items()})
        for k in keys:
            draws[k].append(ma[k] - mb[k])
        if adjust:
            pa = arm_metrics({k: v[ia] for k, v in xa.items()})
            pb = arm_metrics({k: v[ib] for k, v in xb.items()})
            for k in keys:
                pre_draws[k].append(pa[k] - pb[k])
    out: dict[str, tuple[float, float, float]] = {}
    for k in keys:
        d = np.asarray(draws[k])
        value = point_a[k] - point_b[k]
        if adjust:
            x = np.asarray(pre_draws[k])
            var = float(x.var())
            theta = float(np.cov(d, x, bias=True)[0, 1] / var) if var > 0 else 0.0
            d = d - theta * x
            value -= theta * (pre_a[k] - pre_b[k])
        out[k] = (value, float(np.quantile(d, 0.025)), float(np.quantile(d, 0.975)))
    return out


@dataclass
class _Session:
    viewer: Any
    arm: str
    started_ms: int
    served: set[str] = field(default_factory=set)
    buffer: list[dict[str, Any]] = field(default_factory=list)
    position: int = 0
    impressions: int = 0
    enters: int = 0
    watches: int = 0
    watch_ms: int = 0
    orders: int = 0
    gmv: float = 0.0


DESIGNS = ("split", "paired")


def run_ab(
    market: Marketplace,
    day: int,
    arms: Sequence[Arm],
    page_size: int = 8,
    max_sessions: int | None = None,
    seed: int = 0,
    progress: Callable[[int], None] | None = None,
    design: str = "split",
) -> dict[str, dict[str, np.ndarray]]:
    """Replay day `day`'s sessions through the feed; per arm, per-session sums (module doc: `design`).

    `split`: each session in its viewer's arm, one shared world. `paired`: every session in every arm,
    each arm in a world of its own; the arms' sums then hold the same sessions in the same order."""
    if design not in DESIGNS:
        raise ValueError(f"unknown A/B design {design!r}: one of {', '.join(DESIGNS)}")
    if design == "split":
        return asyncio.run(_run_ab(market, day, arms, page_size, max_sessions, seed, progress))
    out: dict[str, dict[str, np.ndarray]] = {}
    for arm in arms:  # one arm serving everyone: that arm's world
        out.update(asyncio.run(_run_ab(market, day, [arm], page_size, max_sessions, seed, progress)))
    return out


async def _run_ab(
    market: Marketplace,
    day: int,
    arms: Sequence[Arm],
    page_size: int,
    max_sessions: int | None,
    seed: int,
    progress: Callable[[int], None] | None,
) -> dict[str, dict[str, np.ndarray]]:
    c = market.config
    lo, hi = c.start_ms + day * DAY_MS, c.start_ms + (day + 1) * DAY_MS
    index = SimLiveIndex(market)
    heat = SimHeat([r.room_id for r in market.rooms])
    # Heat as it stood when the day began (the last hours before it matter; older has decayed away).
    log = market.log
    warm = np.flatnonzero((log.ts >= lo - 6 * 3_600_000) & (log.ts < lo))
    kinds = {CODE[n]: n for n in (IMPRESSION, ENTER, LEAVE, PURCHASE)}
    for i in warm.tolist():
        kind = kinds.get(int(log.type[i]))
        if kind is not None:
            heat.add(
                {
                    "type": kind,
                    "room_id": f"r{int(log.room[i])}",
                    "ts": int(log.ts[i]),
                    "dwell_ms": int(log.dwell_ms[i]),
                }
            )
    history = SimViewerHistory.from_log(market, lo)
    stats = RoomHeatCache(heat)
    # Each model serves the table of the trainer's latest round (one per model: arms may share one).
    served = {id(a.model_watcher): RoundTables(a.model_watcher) for a in arms}
    merchant_of = {r.room_id: r.merchant_id for r in market.rooms}
    # One pipeline per arm (the feed's own stages; an arm's model is what its pipeline's Score and Rank
    # read), all over the same live rooms, heat and viewer history.
    pipelines = {
        a.name: FeedPipeline.standard(index, stats, history, served[id(a.model_watcher)]) for a in arms
    }
    experiment = Experiment(
        EXPERIMENT_ID, "world A/B", tuple(Variant(a.name, 1.0 / len(arms), a.overrides) for a in arms)
    )
    base = RankingConfig()
    rooms = {r.room_id: r for r in market.rooms}
    grid = c.interface == "grid"
    count = c.grid_size if grid else page_size

    st = market.session_table
    chosen = np.flatnonzero((st.start_ms >= lo) & (st.start_ms < hi))
    if max_sessions is not None and chosen.size > max_sessions:
        chosen = np.sort(np.random.default_rng(seed).choice(chosen, max_sessions, replace=False))
    sessions: list[_Session] = []
    queue: list[tuple[int, int, int]] = []
    for k, i in enumerate(chosen.tolist()):
        viewer_id = f"v{int(st.viewer[i])}"
        viewer = market.viewer(
            viewer_id,
            session_id=f"ab{seed}-{k}",
            start_ms=int(st.start_ms[i]),
            seed=seed * 1_000_003 + k,
            intent_category=CATEGORIES[int(st.intent[i])],
            day=day,
        )
        sessions.append(_Session(viewer, assign(viewer_id, base, [experiment]).variant, int(st.start_ms[i])))
        heapq.heappush(queue, (int(st.start_ms[i]), k, 0))
    pending: list[tuple[int, int, dict[str, Any]]] = []
    tie = itertools.count()
    rng = np.random.default_rng(seed)
    done = 0

    def settle(until_ms: int) -> None:
        while pending and pending[0][0] <= until_ms:
            _, _, e = heapq.heappop(pending)
            heat.add(e)
            if e["type"] == ENTER:
                for model in served.values():
                    model.enter(merchant_of[str(e["room_id"])], int(e["ts"]))
            if e["type"] == LEAVE:
                history.add(
                    str(e["viewer_id"]),
                    str(e["room_id"]),
                    str(e["merchant_id"]),
                    int(e["dwell_ms"]),
                    int(e["ts"]),
                )

    while queue:
        now_ms, k, _ = heapq.heappop(queue)
        s = sessions[k]
        settle(now_ms)
        if not s.buffer:
            index.now_ms = heat.now_ms = now_ms
            await stats.refresh()
            for model in served.values():
                model.round(now_ms)
            assignment = assign(s.viewer.viewer_id, base, [experiment])
            ctx = FeedContext(
                viewer_id=s.viewer.viewer_id,
                session_id=s.viewer.session_id,
                count=count,
                config=assignment.config,
                variant=assignment.variant,
                now=now_ms / 1000.0,
                served=s.served,
                first_position=s.position,
                rng=rng,
            )
            await pipelines[assignment.variant].run(ctx)
            s.buffer = ctx.page[:count]
            s.served.update(r["room_id"] for r in s.buffer)
        if not s.buffer:
            s.viewer.done = True
        else:
            if grid:
                page, s.buffer = s.buffer, []
                feats = [rooms[r["room_id"]] for r in page]
                events = s.viewer.browse(
                    [f.features for f in feats], [f.live_until_ms for f in feats], first_position=s.position
                )
                s.position += len(page)
            else:
                room = s.buffer.pop(0)
                sim = rooms[room["room_id"]]
                events = s.viewer.react(sim.features, sim.live_until_ms, position=s.position)
                s.position += 1
            for e in events:
                kind = e["type"]
                if kind == IMPRESSION:
                    s.impressions += 1
                elif kind == ENTER:
                    s.enters += 1
                elif kind == LEAVE:
                    s.watch_ms += int(e["dwell_ms"])
                    s.watches += int(e["dwell_ms"]) >= SWIPE_AWAY_MS
                elif kind == PURCHASE:
                    s.orders += 1
                    s.gmv += float(e["amount"])
                heapq.heappush(pending, (int(e["ts"]), next(tie), e))
        if s.position >= MAX_STEPS or s.viewer.now_ms - s.started_ms > MAX_SESSION_MS:
            s.viewer.done = True  # the batch engine's caps on one session
        if s.viewer.done:
            done += 1
            if progress is not None:
                progress(1)
            continue
        heapq.heappush(queue, (max(s.viewer.now_ms, now_ms + 1), k, 0))
    out: dict[str, ArmTotals] = {a.name: ArmTotals() for a in arms}
    for s in sessions:
        t = out[s.arm]
        t.viewer.append(int(s.viewer.viewer_id[1:]))
        t.impressions.append(s.impressions)
        t.enters.append(s.enters)
        t.watches.append(s.watches)
        t.watch_ms.append(s.watch_ms)
        t.orders.append(s.orders)
        t.gmv.append(s.gmv)
    return {name: t.arrays() for name, t in out.items()}
