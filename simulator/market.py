"""The `Marketplace` facade and `SimulatedViewer`, the simulator's public surface.

Owns turning the index-based world and columnar log into the product's vocabulary (merchant,
room and viewer ids, `RoomFeatures`, event dicts) and driving one simulated viewer against
rooms chosen by someone else (the real feed in the demo and the alliance simulation).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator, Sequence
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
    EventLog,
    SessionTable,
    band_fit,
    run_sessions,
    visit_outcomes,
)
from simulator.world import (
    CATEGORIES,
    TAGS_PER_CATEGORY,
    Merchant,
    SimConfig,
    SimRoom,
    World,
    build_world,
    merchant_of,
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

    def live_room_indices(self, ts_ms: int) -> np.ndarray:
        w = self.world
        return np.flatnonzero((w.r_start <= ts_ms) & (w.r_end > ts_ms))

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
    ) -> SimulatedViewer:
        return SimulatedViewer(self, viewer_id, session_id, start_ms, seed, entry_code_merchant_id)


class SimulatedViewer:
    """One simulated viewer in one session, reacting to rooms a feed offers, one at a time."""

    def __init__(
        self,
        market: Marketplace,
        viewer_id: str,
        session_id: str,
        start_ms: int,
        seed: int = 0,
        entry_code_merchant_id: str | None = None,
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
        self.intent = int((cum < self._rng.random() * cum[-1]).sum())
        self.done = False
        self._steps = 0
        self._n = 0

    def _familiarity(self, merchant_id: str) -> float:
        i = _index("m", merchant_id)
        w = self.market.world
        hit = w.fav_m[self._v] == i
        return float(w.fav_a[self._v][hit].sum()) if i >= 0 else 0.0

    def react(
        self,
        room: RoomFeatures,
        live_until_ms: int | None = None,
        position: int | None = None,
        boosted: bool = False,
    ) -> list[dict[str, object]]:
        """Show `room`; return the events this viewer produces (impression, maybe enter … leave)."""
        if self.done:
            return []
        m = self.market
        w = m.world
        c = m.config
        mi = _index("m", room.merchant_id)
        quality = float(w.m_quality[mi]) if 0 <= mi < c.n_merchants else 0.0
        cat = CATEGORIES.index(room.category) if room.category in CATEGORIES else -1
        band = PRICE_BANDS.index(room.price_band) if room.price_band in PRICE_BANDS else 1
        forced = self._steps == 0 and self.entry_code_merchant_id == room.merchant_id
        out = visit_outcomes(
            self._rng,
            w,
            np.array([m.true_match(self.viewer_id, room)]),
            np.array([quality]),
            np.array([float(cat == self.intent)]),
            band_fit(np.array([w.v_band[self._v]]), np.array([band])),
            np.array([self._familiarity(room.merchant_id)]),
            np.array([0.0]),
            np.array([forced]),
        )
        t = self.now_ms
        base = {
            "viewer_id": self.viewer_id,
            "session_id": self.session_id,
            "room_id": room.room_id,
            "merchant_id": room.merchant_id,
            "device_id": f"d{self._v}",
        }
        events: list[dict[str, object]] = []

        def add(typ: str, ts: int, **extra: object) -> None:
            assert typ in TYPES
            events.append(
                {"event_id": f"{self.session_id}-{self._n}", "type": typ, **base, "ts": int(ts), **extra}
            )
            self._n += 1

        add(IMPRESSION, t, position=position if position is not None else self._steps, boosted=boosted)
        if out.enter[0]:
            enter_ts = t + 1500
            dwell = int(out.dwell_ms[0])
            if live_until_ms is not None:
                dwell = max(1000, min(dwell, live_until_ms - enter_ts - 1000))
            extra = {"entry_code_merchant_id": room.merchant_id} if forced else {}
            add(ENTER, enter_ts, **extra)
            for k in range(min(dwell // (c.heartbeat_s * 1000), 30)):
                add(HEARTBEAT, enter_ts + (k + 1) * c.heartbeat_s * 1000)
            at = enter_ts + dwell // 2
            product = f"p{max(mi, 0)}-{int(self._rng.integers(0, 10))}"
            for typ, flag in (
                (LIKE, out.like),
                (COMMENT, out.comment),
                (FOLLOW, out.follow),
                (SHARE, out.share),
            ):
                if flag[0]:
                    add(typ, at)
            if out.deal[0]:
                add(DEAL_CLAIM, at, deal_id=f"d{max(mi, 0)}-0")
            if out.cart[0]:
                add(ADD_TO_CART, at, product_id=product)
            if out.purchase[0]:
                amount = round(float(39.0 * (3.3**band) * self._rng.lognormal(0, 0.4)), 2)
                add(
                    PURCHASE,
                    at + 1,
                    product_id=product,
                    order_id=f"o-{self.session_id}-{self._n}",
                    amount=amount,
                    currency="CNY",
                )
            add(LEAVE, enter_ts + dwell, dwell_ms=dwell)
            self.now_ms = enter_ts + dwell + 800
        else:
            self.now_ms = t + int(self._rng.integers(1500, 5000))
        self._steps += 1
        if self._rng.random() >= c.continue_prob:
            self.done = True
        return events

    def watch(self, rooms: Sequence[RoomFeatures]) -> list[dict[str, object]]:
        """React to a page of rooms in order until the session ends."""
        events: list[dict[str, object]] = []
        for room in rooms:
            if self.done:
                break
            events.extend(self.react(room))
        return events
