"""The `Marketplace` facade and `SimulatedViewer`, the simulator's public surface.

Owns turning the index-based world and columnar log into the product's vocabulary (merchant,
room and viewer ids, `RoomFeatures`, event dicts) and driving one simulated viewer against
rooms chosen by someone else (the real feed in the demo and the alliance simulation).
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from functools import cached_property

import numpy as np

from events.vocabulary import (
    ADD_TO_CART,
    COMMENT,
    DEAL_CLAIM,
    ENTER,
    FOLLOW,
    HEARTBEAT,
    IMPRESSION,
    LEAVE,
    LIKE,
    PURCHASE,
    SHARE,
    TYPES,
)
from ranking.features import PRICE_BANDS, RoomFeatures
from simulator.engine import (
    AUTOPLAY_MS,
    BAND_PRICE_MEDIAN,
    EventLog,
    RoomSignals,
    SessionTable,
    band_fit,
    run_sessions,
    stay_utility,
    visit_outcomes,
)
from simulator.world import (
    CATEGORIES,
    DAY_MS,
    TAGS_PER_CATEGORY,
    Merchant,
    SimConfig,
    SimRoom,
    World,
    build_world,
    merchant_of,
    quality_on,
    room_buzz,
    room_of,
)


def _index(prefix: str, ident: str) -> int:
    if ident.startswith(prefix) and ident[len(prefix) :].isdigit():
        return int(ident[len(prefix) :])
    return -1


@dataclass(frozen=True)
class SimSession:
    session_id: str
    viewer_id: str
    started_ms: int
    intent_category: str
    entry_code_merchant_id: str | None


class Marketplace:
    """A seeded live-shopping marketplace: world, schedule, sessions and their events."""

    def __init__(
        self,
        seed: int = 7,
        n_merchants: int = 5_000,
        n_viewers: int = 100_000,
        days: int = 7,
        config: SimConfig | None = None,
        **overrides: object,
    ) -> None:
        base = config or SimConfig()
        fields = {"seed": seed, "n_merchants": n_merchants, "n_viewers": n_viewers, "days": days}
        if config is not None:
            fields = {}
        self.config = dataclasses.replace(base, **fields, **overrides)  # type: ignore[arg-type]
        self.world: World = build_world(self.config)
        self._fav_m0 = self.world.fav_m.copy()
        self._fav_a0 = self.world.fav_a.copy()
        self._log: EventLog | None = None
        self._sessions: SessionTable | None = None

    # --- the fixed world ---------------------------------------------------------------
    @cached_property
    def merchants(self) -> list[Merchant]:
        return [merchant_of(self.world, i) for i in range(self.config.n_merchants)]

    @cached_property
    def rooms(self) -> list[SimRoom]:
        return [room_of(self.world, j) for j in range(self.world.r_merchant.shape[0])]

    def live_rooms(self, ts_ms: int) -> list[SimRoom]:
        w = self.world
        idx = np.flatnonzero((w.r_start <= ts_ms) & (w.r_end > ts_ms))
        return [self.rooms[int(j)] for j in idx]

    # --- the log -------------------------------------------------------------------------
    def _run(self) -> None:
        if self._log is None:
            self._log, self._sessions = run_sessions(self.world, self.config.seed)

    @property
    def log(self) -> EventLog:
        self._run()
        assert self._log is not None
        return self._log

    @property
    def session_table(self) -> SessionTable:
        self._run()
        assert self._sessions is not None
        return self._sessions

    def events(self) -> Iterator[dict[str, object]]:
        """Every event of the horizon in time order, as dicts in the ingest schema."""
        return self.log.events()

    def sessions(self) -> Iterator[SimSession]:
        st = self.session_table
        for i in range(st.viewer.shape[0]):
            cm = int(st.code_merchant[i])
            yield SimSession(
                f"s{i}",
                f"v{int(st.viewer[i])}",
                int(st.start_ms[i]),
                CATEGORIES[int(st.intent[i])],
                f"m{cm}" if cm >= 0 else None,
            )

    # --- ground truth ----------------------------------------------------------------------
    def merchant_latent(self, room: RoomFeatures) -> np.ndarray:
        """A merchant's true position in taste space; unknown merchants from their features."""
        w = self.world
        i = _index("m", room.merchant_id)
        if 0 <= i < self.config.n_merchants:
            latent: np.ndarray = w.m_latent[i]
            return latent
        cat = CATEGORIES.index(room.category) if room.category in CATEGORIES else 0
        vec = w.cat_vecs[cat].copy()
        tags = [
            CATEGORIES.index(t.split("/")[0]) * TAGS_PER_CATEGORY + int(t.split("/t")[1])
            for t in room.tags
            if "/t" in t and t.split("/")[0] in CATEGORIES
        ]
        if tags:
            vec += w.tag_vecs[tags].mean(axis=0) * 0.8
        if room.price_band in PRICE_BANDS:
            vec += w.band_vecs[PRICE_BANDS.index(room.price_band)] * 0.5
        out: np.ndarray = vec.astype(np.float32)
        return out

    def true_match(self, viewer_id: str, room: RoomFeatures) -> float:
        v = _index("v", viewer_id)
        return float(self.world.v_taste[v] @ self.merchant_latent(room)) / self.world.match_scale

    def viewer(
        self,
        viewer_id: str,
        session_id: str,
        start_ms: int,
        seed: int = 0,
        entry_code_merchant_id: str | None = None,
        intent_category: str | None = None,
        day: int | None = None,
    ) -> SimulatedViewer:
        """A viewer to drive with rooms chosen elsewhere; `day`: with the favourites they had at that
        day's start (default: as they stand after the simulated log)."""
        favourites = None
        if day is not None:
            self._run()
            favourites = self.world.fav_at_day.get(day)
        return SimulatedViewer(
            self, viewer_id, session_id, start_ms, seed, entry_code_merchant_id, intent_category, favourites
        )


class SimulatedViewer:
    """One simulated viewer in one session, reacting to rooms a feed offers.

    On the swipe interface (`react`, one room at a time) every room offered starts playing: the
    viewer stays to watch or swipes on after a short stay (an `enter` and a `leave` either way).
    On a grid (`browse`, a page of cards) the viewer enters one card or none. Whether the viewer
    goes on after a step depends on it: a skipped room or an empty page ends more sessions than a
    watched room (`SimConfig.continue_after_skip`).
    """

    def __init__(
        self,
        market: Marketplace,
        viewer_id: str,
        session_id: str,
        start_ms: int,
        seed: int = 0,
        entry_code_merchant_id: str | None = None,
        intent_category: str | None = None,
        favourites: tuple[np.ndarray, np.ndarray] | None = None,
    ) -> None:
        self.market = market
        self.viewer_id = viewer_id
        self.session_id = session_id
        self.now_ms = start_ms
        self.entry_code_merchant_id = entry_code_merchant_id
        v = _index("v", viewer_id)
        n_v = market.config.n_viewers
        self._v = v if 0 <= v < n_v else abs(hash(viewer_id)) % n_v
        self._rng = np.random.default_rng(np.random.SeedSequence([seed, self._v, 2]))
        w = market.world
        cum = np.cumsum(w.v_catw[self._v])
        draw = self._rng.random()
        if intent_category in CATEGORIES:
            self.intent = CATEGORIES.index(str(intent_category))
        else:
            self.intent = int((cum < draw * cum[-1]).sum())
        # The viewer's favourite merchants and affinities (a copy: what this session watches adds to it).
        fav_m, fav_a = favourites if favourites is not None else (w.fav_m, w.fav_a)
        self.fav_m = fav_m[self._v].copy()
        self.fav_a = fav_a[self._v].copy()
        self.done = False
        self.watched = 0
        self._steps = 0
        self._n = 0

    def _familiarity(self, merchant_id: str) -> float:
        i = _index("m", merchant_id)
        return float(self.fav_a[self.fav_m == i].sum()) if i >= 0 else 0.0

    def _remember(self, merchant_id: str, gain: float) -> None:
        i = _index("m", merchant_id)
        if i < 0:
            return
        hit = np.flatnonzero(self.fav_m == i)
        if hit.size:
            self.fav_a[hit[0]] += gain
            return
        k = int(np.argmin(self.fav_a))
        if self.fav_a[k] < gain:
            self.fav_m[k], self.fav_a[k] = i, gain

    def _signals(self, rooms: Sequence[RoomFeatures], at_ms: int) -> RoomSignals:
        m = self.market
        w = m.world
        c = m.config
        mi = np.array([_index("m", r.merchant_id) for r in rooms])
        known = (mi >= 0) & (mi < c.n_merchants)
        appeal = quality_on(w, (at_ms - c.start_ms) // DAY_MS)  # today's, where appeal drifts
        quality = np.where(known, appeal[np.where(known, mi, 0)], 0.0)
        cats = np.array([CATEGORIES.index(r.category) if r.category in CATEGORIES else -1 for r in rooms])
        bands = np.array(
            [PRICE_BANDS.index(r.price_band) if r.price_band in PRICE_BANDS else 1 for r in rooms]
        )
        match = np.array([m.true_match(self.viewer_id, r) for r in rooms])
        ri = np.array([_index("r", r.room_id) for r in rooms])
        ok = (ri >= 0) & (ri < w.r_merchant.shape[0])
        buzz = np.where(ok, room_buzz(w, np.where(ok, ri, 0), np.full(len(rooms), at_ms)), 0.0)
        fam = np.array([self._familiarity(r.merchant_id) for r in rooms])
        intent = (cats == self.intent).astype(np.float64)
        bandfit = band_fit(np.full(len(rooms), w.v_band[self._v]), bands)
        return RoomSignals(match, quality, intent, bandfit, fam, np.zeros(len(rooms)), buzz)

    def _play(
        self,
        room: RoomFeatures,
        at_ms: int,
        chosen: bool,
        live_until_ms: int | None,
        signals: RoomSignals,
        add: Callable[..., None],
    ) -> bool:
        """The events of one room played from `at_ms` (enter … leave); whether the viewer watched it."""
        c = self.market.config
        forced = self._steps == 0 and self.entry_code_merchant_id == room.merchant_id
        out = visit_outcomes(
            self._rng,
            self.market.world,
            signals,
            np.array([forced]),
            np.array([chosen]) if c.interface == "grid" else None,
        )
        if not out.enter[0]:
            self.now_ms = at_ms + int(self._rng.integers(1500, 5000))
            return False
        dwell = int(out.dwell_ms[0])
        if live_until_ms is not None:
            dwell = max(300, min(dwell, live_until_ms - at_ms - 1000))
        extra = {"entry_code_merchant_id": room.merchant_id} if forced else {}
        add(ENTER, at_ms, **extra)
        for k in range(min(dwell // (c.heartbeat_s * 1000), 30)):
            add(HEARTBEAT, at_ms + (k + 1) * c.heartbeat_s * 1000)
        mid = at_ms + dwell // 2
        mi = max(_index("m", room.merchant_id), 0)
        product = f"p{mi}-{int(self._rng.integers(0, 10))}"
        for typ, flag in (
            (LIKE, out.like),
            (COMMENT, out.comment),
            (FOLLOW, out.follow),
            (SHARE, out.share),
        ):
            if flag[0]:
                add(typ, mid)
        if out.deal[0]:
            add(DEAL_CLAIM, mid, deal_id=f"d{mi}-0")
        if out.cart[0]:
            add(ADD_TO_CART, mid, product_id=product)
        if out.purchase[0]:
            band = PRICE_BANDS.index(room.price_band) if room.price_band in PRICE_BANDS else 1
            amount = round(float(BAND_PRICE_MEDIAN[band] * self._rng.lognormal(0, 0.4)), 2)
            add(
                PURCHASE,
                mid + 1,
                product_id=product,
                order_id=f"o-{self.session_id}-{self._n}",
                amount=amount,
                currency="CNY",
            )
        add(LEAVE, at_ms + dwell, dwell_ms=dwell)
        self.now_ms = at_ms + dwell + 800
        stayed = bool(out.stay[0])
        if stayed:
            self.watched += 1
            gain = (
                math.log1p(dwell / 30_000.0)
                + 2.0 * bool(out.purchase[0])
                + c.follow_gain * bool(out.follow[0])
            )
            self._remember(room.merchant_id, gain)
        return stayed

    def _emitter(self, room: RoomFeatures, events: list[dict[str, object]]) -> Callable[..., None]:
        base = {
            "viewer_id": self.viewer_id,
            "session_id": self.session_id,
            "room_id": room.room_id,
            "merchant_id": room.merchant_id,
            "device_id": f"d{self._v}",
        }

        def add(typ: str, ts: int, **extra: object) -> None:
            assert typ in TYPES
            events.append(
                {"event_id": f"{self.session_id}-{self._n}", "type": typ, **base, "ts": int(ts), **extra}
            )
            self._n += 1

        return add

    def _go_on(self, watched: bool) -> None:
        c = self.market.config
        self._steps += 1
        if self._rng.random() >= (c.continue_prob if watched else c.skip_continue):
            self.done = True

    def react(
        self,
        room: RoomFeatures,
        live_until_ms: int | None = None,
        position: int | None = None,
        boosted: bool = False,
    ) -> list[dict[str, object]]:
        """Serve `room` (swipe: it starts playing); the events this viewer produces, impression first."""
        if self.done:
            return []
        events: list[dict[str, object]] = []
        add = self._emitter(room, events)
        t = self.now_ms
        add(IMPRESSION, t, position=position if position is not None else self._steps, boosted=boosted)
        c = self.market.config
        start = t + (AUTOPLAY_MS if c.interface == "swipe" else 1500)
        watched = self._play(room, start, c.interface == "grid", live_until_ms, self._signals([room], t), add)
        self._go_on(watched)
        return events

    def browse(
        self,
        rooms: Sequence[RoomFeatures],
        live_until_ms: Sequence[int | None] | None = None,
        first_position: int = 0,
        boosted: Sequence[bool] | None = None,
    ) -> list[dict[str, object]]:
        """A grid page: impressions of every card, then the one the viewer enters (if any) played."""
        if self.done or not rooms:
            return []
        c = self.market.config
        events: list[dict[str, object]] = []
        t = self.now_ms
        for k, room in enumerate(rooms):
            add = self._emitter(room, events)
            add(IMPRESSION, t, position=first_position + k, boosted=bool(boosted[k]) if boosted else False)
        signals = self._signals(rooms, t)
        u = stay_utility(self.market.world, signals)
        u = u - c.grid_position_decay * np.arange(len(rooms)) + self._rng.gumbel(size=len(rooms))
        best = int(np.argmax(u))
        forced = [
            k
            for k, r in enumerate(rooms)
            if self._steps == 0 and r.merchant_id == self.entry_code_merchant_id
        ]
        if forced:
            best = forced[0]
        if forced or u[best] > c.grid_none_bias + self._rng.gumbel():
            room = rooms[best]
            one = signals[best : best + 1]
            until = live_until_ms[best] if live_until_ms else None
            watched = self._play(room, t + 3000, True, until, one, self._emitter(room, events))
        else:
            self.now_ms = t + int(self._rng.integers(1500, 5000))
            watched = False
        self._go_on(watched)
        return events

    def watch(self, rooms: Sequence[RoomFeatures]) -> list[dict[str, object]]:
        """Go through rooms the way this world's interface does (swipe one by one, or grid pages)."""
        events: list[dict[str, object]] = []
        if self.market.config.interface == "grid":
            size = self.market.config.grid_size
            for lo in range(0, len(rooms), size):
                if self.done:
                    break
                events.extend(self.browse(rooms[lo : lo + size], first_position=lo))
            return events
        for room in rooms:
            if self.done:
                break
            events.extend(self.react(room))
        return events
