"""The session engine: swipe sessions drawn against the live schedule, emitted as an event log.

Owns how a viewer reacts to a room (enter or swipe away, dwell, likes, carts, purchases) in
`visit_outcomes`, used both by the batch engine (`run_sessions`, vectorised over all sessions that
start in the same hour) and by `SimulatedViewer` (one viewer, one room at a time, for the demo
and the alliance simulation). The log is columnar (`EventLog`) so 2M events stay cheap; dicts in
the real event schema are produced on demand.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np

from events.vocabulary import (
    ADD_TO_CART,
    CODE,
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
from roomfeed.progress import over
from simulator.world import DAY_MS, MINUTE_MS, World, hotness_on, quality_on, room_buzz

BAND_PRICE_MEDIAN = np.array([39.0, 129.0, 499.0, 2999.0])
PRODUCTS_PER_MERCHANT = 10
# When several events share a millisecond, keep the causal order: a visit's leave comes last.
_CAUSAL_ORDER = (
    IMPRESSION,
    ENTER,
    HEARTBEAT,
    LIKE,
    COMMENT,
    FOLLOW,
    SHARE,
    ADD_TO_CART,
    PURCHASE,
    DEAL_CLAIM,
    LEAVE,
)
_TYPE_ORDER = np.full(len(TYPES), len(_CAUSAL_ORDER))  # rank of each type code (types not emitted: last)
_TYPE_ORDER[[CODE[name] for name in _CAUSAL_ORDER]] = np.arange(len(_CAUSAL_ORDER))
# How a step reached the room (ground truth kept beside the log, never emitted as an event field).
VIA_FEED, VIA_FOLLOWING, VIA_NOTIFICATION, VIA_CODE = 0, 1, 2, 3
AUTOPLAY_MS = 300  # swipe: the room starts playing this long after it is served


def _sigmoid(x: np.ndarray) -> np.ndarray:
    out: np.ndarray = 1.0 / (1.0 + np.exp(-x))
    return out


def band_fit(viewer_band: np.ndarray, merchant_band: np.ndarray) -> np.ndarray:
    out: np.ndarray = np.maximum(1.0 - np.abs(viewer_band - merchant_band), -1.0)
    return out


@dataclass
class RoomSignals:
    """What a viewer's reaction to rooms depends on, one value per (viewer, room) pair."""

    match: np.ndarray  # ground-truth taste match (z-scored)
    quality: np.ndarray  # the merchant's lasting appeal
    intent: np.ndarray  # 1 when the room is of the category the session came for
    bandfit: np.ndarray  # price band fit
    familiarity: np.ndarray  # the viewer's affinity to the merchant
    follow_tab: np.ndarray  # 1 when the viewer went to the room from the following tab
    buzz: np.ndarray  # the room's buzz now

    def __getitem__(self, rows: slice | np.ndarray) -> RoomSignals:
        return RoomSignals(*(getattr(self, f)[rows] for f in self.__dataclass_fields__))


def stay_utility(world: World, s: RoomSignals) -> np.ndarray:
    """How much a viewer wants to stay in a room (logit): the ground truth every interface shares."""
    c = world.config
    u = (
        c.enter_bias
        + c.w_match * s.match
        + c.w_quality * s.quality
        + c.w_intent * s.intent
        + c.w_band * s.bandfit
        + c.w_familiar * np.log1p(s.familiarity)
        + c.follow_tab_bonus * s.follow_tab
        + c.w_buzz * s.buzz
    )
    return np.asarray(u, dtype=np.float64)


@dataclass
class Outcomes:
    enter: np.ndarray
    stay: np.ndarray
    dwell_ms: np.ndarray
    like: np.ndarray
    comment: np.ndarray
    follow: np.ndarray
    share: np.ndarray
    cart: np.ndarray
    purchase: np.ndarray
    deal: np.ndarray


def visit_outcomes(
    rng: np.random.Generator,
    world: World,
    s: RoomSignals,
    forced: np.ndarray,
    chosen: np.ndarray | None = None,
) -> Outcomes:
    """What viewers do with the rooms put in front of them (vectorised over pairs).

    `enter` is whether the room played at all: on a swipe every served room does (a skip is a
    short stay), in a grid and on the silent-skip interface only a room the viewer chose.
    `stay` is whether the viewer watched (dwell from the watch model) rather than skipped (a short
    play, swipe only). `chosen` marks rooms the viewer picked themselves (a grid card): they stay.
    """
    c = world.config
    n = s.match.shape[0]
    u = stay_utility(world, s)
    fam = np.log1p(s.familiarity)
    wants = rng.random(n) < _sigmoid(u)
    stay = (chosen if chosen is not None else wants) | forced
    enter = np.ones(n, dtype=bool) if c.interface == "swipe" else stay.copy()
    log_dwell = (
        np.log(c.dwell_median_s)
        + 0.5 * s.match
        + 0.3 * s.quality
        + 0.4 * s.intent
        + 0.3 * fam
        + 0.3 * s.buzz
        + rng.normal(0.0, c.dwell_sigma, n)
    )
    watch_ms = np.clip(np.exp(log_dwell) * 1000.0, 3000.0, 3_600_000.0)
    skip_ms = np.clip(
        np.exp(rng.normal(np.log(c.skip_dwell_median_s), c.skip_dwell_sigma, n)) * 1000.0, 300.0, 8000.0
    )
    dwell_ms = np.where(stay, watch_ms, skip_ms).astype(np.int64)
    dmin = np.log1p(dwell_ms / 60_000.0)
    r = rng.random((8, n))
    like = stay & (r[0] < _sigmoid(-2.5 + 0.7 * s.match + 0.6 * dmin))
    comment = stay & (r[1] < _sigmoid(-3.5 + 0.5 * dmin))
    follow = stay & (r[2] < _sigmoid(c.follow_bias + 0.8 * s.match + 0.8 * dmin))
    share = stay & (r[3] < 0.01)
    cart = stay & (r[4] < _sigmoid(-3.4 + 0.6 * s.match + 0.8 * dmin + 0.6 * s.bandfit + 0.5 * s.intent))
    purchase = cart & (r[5] < c.purchase_given_cart)
    deal = stay & (dwell_ms > 60_000) & (r[6] < 0.03)
    return Outcomes(enter, stay, dwell_ms, like, comment, follow, share, cart, purchase, deal)


@dataclass
class EventLog:
    """Columnar event log; row i is one event. -1 / NaN mark absent optional fields."""

    type: np.ndarray  # int8 code of events.vocabulary.CODE
    session: np.ndarray
    viewer: np.ndarray
    room: np.ndarray
    merchant: np.ndarray
    ts: np.ndarray  # epoch ms
    dwell_ms: np.ndarray
    amount: np.ndarray
    product: np.ndarray
    position: np.ndarray
    entry_code: np.ndarray  # bool: the enter that opened an attributed session
    via: np.ndarray | None = None  # impressions: how the step reached the room (VIA_*), -1 otherwise
    seed: int = 0

    def __len__(self) -> int:
        return int(self.type.shape[0])

    def event(self, i: int) -> dict[str, object]:
        t = TYPES[int(self.type[i])]
        m = f"m{int(self.merchant[i])}"
        e: dict[str, object] = {
            "event_id": f"sim{self.seed}-{i}",
            "type": t,
            "viewer_id": f"v{int(self.viewer[i])}",
            "session_id": f"s{int(self.session[i])}",
            "room_id": f"r{int(self.room[i])}",
            "merchant_id": m,
            "ts": int(self.ts[i]),
            "device_id": f"d{int(self.viewer[i])}",
        }
        if t == IMPRESSION:
            e["position"] = int(self.position[i])
            e["boosted"] = False
        elif t == LEAVE:
            e["dwell_ms"] = int(self.dwell_ms[i])
        elif t in (PURCHASE, ADD_TO_CART):
            e["product_id"] = f"p{int(self.merchant[i])}-{int(self.product[i])}"
            if t == PURCHASE:
                e["order_id"] = f"o{self.seed}-{i}"
                e["amount"] = round(float(self.amount[i]), 2)
                e["currency"] = "CNY"
        elif t == DEAL_CLAIM:
            e["deal_id"] = f"d{int(self.merchant[i])}-{int(self.product[i])}"
        elif t == ENTER and self.entry_code[i]:
            e["entry_code_merchant_id"] = m
        return e

    def events(self) -> Iterator[dict[str, object]]:
        for i in range(len(self)):
            yield self.event(i)


@dataclass
class SessionTable:
    viewer: np.ndarray
    start_ms: np.ndarray
    intent: np.ndarray  # category index the viewer came for (ground truth)
    code_merchant: np.ndarray  # merchant whose attribution code opened it, -1 if none
    notify_room: np.ndarray  # room whose "now live" notification opened it, -1 if none


class _Columns:
    def __init__(self) -> None:
        self.parts: dict[str, list[np.ndarray]] = {
            k: []
            for k in (
                "type",
                "session",
                "room",
                "ts",
                "dwell_ms",
                "amount",
                "product",
                "position",
                "entry_code",
                "via",
            )
        }

    def emit(
        self,
        rng: np.random.Generator,
        typ: int,
        session: np.ndarray,
        room: np.ndarray,
        ts: np.ndarray,
        dwell_ms: np.ndarray | None = None,
        amount: np.ndarray | None = None,
        position: np.ndarray | None = None,
        entry_code: np.ndarray | None = None,
        via: np.ndarray | None = None,
    ) -> None:
        n = session.shape[0]
        if n == 0:
            return
        p = self.parts
        p["type"].append(np.full(n, typ, dtype=np.int8))
        p["session"].append(session.astype(np.int64))
        p["room"].append(room.astype(np.int64))
        p["ts"].append(ts.astype(np.int64))
        p["dwell_ms"].append(dwell_ms.astype(np.int64) if dwell_ms is not None else np.full(n, -1, np.int64))
        p["amount"].append(amount.astype(np.float64) if amount is not None else np.full(n, np.nan))
        p["product"].append(np.asarray(rng.integers(0, PRODUCTS_PER_MERCHANT, n)))
        p["position"].append(position.astype(np.int64) if position is not None else np.full(n, -1, np.int64))
        p["entry_code"].append(entry_code.astype(bool) if entry_code is not None else np.zeros(n, bool))
        p["via"].append(via.astype(np.int8) if via is not None else np.full(n, -1, np.int8))

    def concat(self) -> dict[str, np.ndarray]:
        return {k: np.concatenate(v) for k, v in self.parts.items()}


def draw_sessions(world: World, rng: np.random.Generator) -> SessionTable:
    c = world.config
    counts = rng.poisson(world.v_activity * c.days)
    viewer = np.repeat(np.arange(c.n_viewers), counts)
    n = viewer.shape[0]
    day = rng.integers(0, c.days, n)
    # App usage peaks at lunch and in the evening (local time); a fifth is spread over the day.
    which = rng.choice(3, size=n, p=[0.25, 0.55, 0.20])
    minute = np.where(
        which == 0,
        rng.normal(12.5 * 60, 60, n),
        np.where(which == 1, rng.normal(20.5 * 60, 90, n), rng.uniform(0, 1440, n)),
    )
    minute = np.clip(minute, 0, 1439.9)
    start = c.start_ms + day * DAY_MS + (minute * MINUTE_MS).astype(np.int64)
    # Some sessions are opened by a "now live" notification from a favourite merchant.
    notify_room = np.full(n, -1, dtype=np.int64)
    by_merchant = np.argsort(world.r_merchant, kind="stable")
    first = np.searchsorted(world.r_merchant[by_merchant], np.arange(c.n_merchants + 1))
    fa = world.fav_a[viewer]
    has_fav = fa.sum(axis=1) > 0
    notified = has_fav & (rng.random(n) < c.notify_share)
    cum = np.cumsum(fa[notified], axis=1)
    slot = (cum < rng.random(int(notified.sum()))[:, None] * cum[:, -1:]).sum(axis=1)
    fav = world.fav_m[viewer[notified], slot]
    n_rooms = first[fav + 1] - first[fav]
    pick = first[fav] + (rng.random(fav.size) * n_rooms).astype(np.int64)
    room = np.where(n_rooms > 0, by_merchant[np.minimum(pick, by_merchant.size - 1)], -1)
    ok = room >= 0
    nidx = np.flatnonzero(notified)[ok]
    room = room[ok]
    dur = world.r_end[room] - world.r_start[room]
    start[nidx] = world.r_start[room] + (
        rng.random(room.size) * np.minimum(dur - 10 * MINUTE_MS, 30 * MINUTE_MS)
    ).astype(np.int64)
    notify_room[nidx] = room
    cum = np.cumsum(world.v_catw[viewer], axis=1)
    intent = (cum < rng.random(n)[:, None] * cum[:, -1:]).sum(axis=1)
    order = np.argsort(start, kind="stable")
    return SessionTable(
        viewer=viewer[order],
        start_ms=start[order],
        intent=intent[order],
        code_merchant=np.full(n, -1, np.int64),
        notify_room=notify_room[order],
    )


def _update_favourites(world: World, viewers: np.ndarray, merchants: np.ndarray, gains: np.ndarray) -> None:
    fav_m, fav_a = world.fav_m, world.fav_a
    for v, m, g in zip(viewers.tolist(), merchants.tolist(), gains.tolist(), strict=True):
        row = fav_m[v]
        hit = np.flatnonzero(row == m)
        if hit.size:
            fav_a[v, hit[0]] += g
            continue
        k = int(np.argmin(fav_a[v]))
        if fav_a[v, k] < g:
            fav_m[v, k] = m
            fav_a[v, k] = g


def run_sessions(world: World, seed: int) -> tuple[EventLog, SessionTable]:
    """Draw every session of the horizon and return the log (sorted by time) and the sessions."""
    c = world.config
    rng = np.random.default_rng(np.random.SeedSequence([seed, 1]))
    sessions = draw_sessions(world, rng)
    cols = _Columns()
    world.fav_at_day = {0: (world.fav_m.copy(), world.fav_a.copy())}
    r_start, r_end, r_merchant = world.r_start, world.r_end, world.r_merchant
    nm = c.n_merchants
    hour = 3_600_000
    block_of = (sessions.start_ms - c.start_ms) // hour
    bounds = np.searchsorted(block_of, np.arange(c.days * 24 + 1))
    last_day = 0
    for h in over(range(c.days * 24), "simulate", unit="hour", leave=False):
        b0, b1 = int(bounds[h]), int(bounds[h + 1])
        block_start = c.start_ms + h * hour
        day = h // 24
        if day != last_day:
            world.fav_a *= c.favourite_daily_decay
            last_day = day
            world.fav_at_day[day] = (world.fav_m.copy(), world.fav_a.copy())
        if b1 == b0:
            continue
        sid = np.arange(b0, b1)
        B = sid.size
        hi = np.searchsorted(r_start, block_start + 4 * hour)
        R = np.flatnonzero(r_end[:hi] > block_start)
        if R.size == 0:
            continue
        rs, re, M = r_start[R], r_end[R], r_merchant[R]
        v = sessions.viewer[sid]
        intent_cat = sessions.intent[sid]
        match = (world.v_taste[v] @ world.m_latent[M].T) / world.match_scale
        intent = (world.m_cat[M][None, :] == intent_cat[:, None]).astype(np.float32)
        quality = quality_on(world, day)
        policy = c.feed_pop_weight * hotness_on(world, day)[M][None, :] + c.feed_category_bonus * (
            world.m_cat[M][None, :] == world.v_topcat[v][:, None]
        )
        # Affinity of each session's viewer to each candidate room's merchant.
        pos = np.full((nm, 2), -1, dtype=np.int64)
        for at, m in enumerate(M.tolist()):
            pos[m, 0 if pos[m, 0] < 0 else 1] = at
        A = np.zeros((B, R.size), dtype=np.float32)
        fm, fa = world.fav_m[v], world.fav_a[v]
        for k in range(fm.shape[1]):
            ok = fm[:, k] >= 0
            for slot in (0, 1):
                j = np.where(ok, pos[np.maximum(fm[:, k], 0), slot], -1)
                has = j >= 0
                A[np.flatnonzero(has), j[has]] += fa[has, k]
        ts = sessions.start_ms[sid].copy()
        alive = np.ones(B, dtype=bool)
        shown = np.zeros((B, R.size), dtype=bool)
        step = np.zeros(B, dtype=np.int64)
        visits_v: list[np.ndarray] = []
        visits_m: list[np.ndarray] = []
        visits_g: list[np.ndarray] = []
        # Attributed entries: viewers of a private domain open the merchant's live room by code.
        pd = world.v_pd[v]
        code_room = np.full(B, -1, dtype=np.int64)
        for k in range(2):
            for slot in (0, 1):
                j = np.where(pd[:, k] >= 0, pos[np.maximum(pd[:, k], 0), slot], -1)
                live = (j >= 0) & (rs[np.maximum(j, 0)] <= ts) & (re[np.maximum(j, 0)] > ts + 10 * MINUTE_MS)
                code_room = np.where((code_room < 0) & live, j, code_room)
        use_code = (code_room >= 0) & (rng.random(B) < c.code_entry_prob)
        notify = sessions.notify_room[sid]
        notify_pos = np.full(B, -1, dtype=np.int64)
        if (notify >= 0).any():
            lookup = {int(r): j for j, r in enumerate(R.tolist())}
            notify_pos = np.array([lookup.get(int(r), -1) for r in notify.tolist()], dtype=np.int64)
        use_code &= notify_pos < 0
        code_room = np.where(use_code, code_room, -1)
        sessions.code_merchant[sid[use_code]] = M[code_room[use_code]]
        while alive.any():
            idx = np.flatnonzero(alive)
            t = ts[idx]
            live = (rs[None, :] <= t[:, None]) & (re[None, :] > t[:, None] + 5000) & ~shown[idx]
            has_live = live.any(axis=1)
            alive[idx[~has_live]] = False
            idx, t, live = idx[has_live], t[has_live], live[has_live]
            if idx.size == 0:
                break
            n = idx.size
            g = rng.gumbel(size=live.shape).astype(np.float32)
            Ai = A[idx]
            fav_live = live & (Ai > 0)
            follow_tab = (rng.random(n) < c.follow_tab_prob) & fav_live.any(axis=1)
            pick_follow = np.argmax(np.where(fav_live, np.log(np.maximum(Ai, 1e-9)) + g, -np.inf), axis=1)
            explore = rng.random(n) < c.feed_explore
            feed_logit = policy[idx] + c.feed_follow_bonus * np.log1p(Ai)
            if c.feed_buzz_weight:
                feed_logit = feed_logit + c.feed_buzz_weight * room_buzz(world, R[None, :], t[:, None])
            feed_logit = np.where(explore[:, None], 0.0, feed_logit) + g
            feed_logit = np.where(live, feed_logit, -np.inf)
            forced = (step[idx] == 0) & (code_room[idx] >= 0)
            notified = (step[idx] == 0) & (notify_pos[idx] >= 0)
            follow_tab = (follow_tab | notified) & ~forced
            via = np.where(
                forced,
                VIA_CODE,
                np.where(notified, VIA_NOTIFICATION, np.where(follow_tab, VIA_FOLLOWING, VIA_FEED)),
            )
            s_ids = sid[idx]
            if c.interface == "grid":
                # A page of cards from the logging feed; the viewer enters one of them or scrolls on.
                # Steps that go straight to a room (code, notification, following tab) show that room alone.
                k = min(c.grid_size, R.size)
                page = np.argpartition(-feed_logit, kth=k - 1, axis=1)[:, :k]
                page = np.take_along_axis(
                    page, np.argsort(-np.take_along_axis(feed_logit, page, 1), axis=1), 1
                )
                on_page = np.take_along_axis(live, page, 1)
                rows = np.repeat(np.arange(n), k)
                cols_k = page.ravel()
                card = RoomSignals(
                    match[idx[rows], cols_k],
                    quality[M[cols_k]],
                    intent[idx[rows], cols_k],
                    band_fit(world.v_band[v[idx[rows]]], world.m_band[M[cols_k]]),
                    Ai[rows, cols_k],
                    np.zeros(rows.size, dtype=np.float32),
                    room_buzz(world, R[cols_k], t[rows]),
                )
                u = stay_utility(world, card).reshape(n, k)
                u = u - c.grid_position_decay * np.arange(k)[None, :] + rng.gumbel(size=(n, k))
                u = np.where(on_page, u, -np.inf)
                best = np.argmax(u, axis=1)
                picked = u[np.arange(n), best] > c.grid_none_bias + rng.gumbel(size=n)
                direct = forced | notified | follow_tab
                direct_choice = np.where(
                    forced, code_room[idx], np.where(notified, notify_pos[idx], pick_follow)
                )
                choice = np.where(direct, direct_choice, page[np.arange(n), best])
                grid_rows = np.flatnonzero(~direct)
                gr = np.repeat(grid_rows, k)
                gc = page[grid_rows].ravel()
                ok = on_page[grid_rows].ravel()
                gr, gc = gr[ok], gc[ok]
                shown[idx[gr], gc] = True
                gpos = np.tile(np.arange(k), grid_rows.size)[ok]
                cols.emit(
                    rng,
                    CODE[IMPRESSION],
                    s_ids[gr],
                    R[gc],
                    t[gr],
                    position=gpos,
                    via=np.full(gr.size, VIA_FEED),
                )
                d = np.flatnonzero(direct)
                cols.emit(
                    rng,
                    CODE[IMPRESSION],
                    s_ids[d],
                    R[direct_choice[d]],
                    t[d],
                    position=np.zeros(d.size),
                    via=via[d],
                )
                chosen = direct | picked
                # Reading the page takes a few seconds before anything is entered.
                t_enter = t + np.where(direct, 1500, 3000)
            else:
                pick_feed = np.argmax(feed_logit, axis=1)
                choice = np.where(follow_tab, pick_follow, pick_feed)
                choice = np.where(forced, code_room[idx], choice)
                choice = np.where(notified, notify_pos[idx], choice)
                cols.emit(rng, CODE[IMPRESSION], s_ids, R[choice], t, position=step[idx], via=via)
                chosen = None
                t_enter = t + (AUTOPLAY_MS if c.interface == "swipe" else 1500)
            shown[idx, choice] = True
            rooms = R[choice]
            merch = M[choice]
            mi = match[idx, choice]
            signals = RoomSignals(
                mi,
                quality[merch],
                intent[idx, choice],
                band_fit(world.v_band[v[idx]], world.m_band[merch]),
                Ai[np.arange(n), choice],
                follow_tab.astype(np.float32),
                room_buzz(world, rooms, t),
            )
            out = visit_outcomes(rng, world, signals, forced, chosen)
            e = out.enter
            enter_ts = t_enter
            dwell = np.maximum(np.minimum(out.dwell_ms, re[choice] - enter_ts - 1000), 300)
            leave_ts = enter_ts + dwell
            cols.emit(rng, CODE[ENTER], s_ids[e], rooms[e], enter_ts[e], entry_code=forced[e])
            hb = np.minimum(dwell // (c.heartbeat_s * 1000), 30) * e
            rep = np.repeat(np.arange(n), hb)
            k_in = np.arange(rep.size) - np.repeat(np.cumsum(hb) - hb, hb)
            cols.emit(
                rng,
                CODE[HEARTBEAT],
                s_ids[rep],
                rooms[rep],
                enter_ts[rep] + (k_in + 1) * c.heartbeat_s * 1000,
            )
            for name, flag in (
                (LIKE, out.like),
                (COMMENT, out.comment),
                (FOLLOW, out.follow),
                (SHARE, out.share),
                (ADD_TO_CART, out.cart),
                (DEAL_CLAIM, out.deal),
            ):
                at = enter_ts[flag] + (rng.random(int(flag.sum())) * dwell[flag]).astype(np.int64)
                cols.emit(rng, CODE[name], s_ids[flag], rooms[flag], at)
                if name == ADD_TO_CART:
                    cart_at = at
            p = out.purchase[out.cart]
            pb = world.m_band[merch[out.purchase]]
            amount = np.round(BAND_PRICE_MEDIAN[pb] * rng.lognormal(0, 0.4, pb.size), 2)
            paid_at = np.minimum(cart_at[p] + 20_000, leave_ts[out.purchase] - 1)
            cols.emit(rng, CODE[PURCHASE], s_ids[out.purchase], rooms[out.purchase], paid_at, amount=amount)
            cols.emit(rng, CODE[LEAVE], s_ids[e], rooms[e], leave_ts[e], dwell_ms=dwell[e])
            w = out.stay
            gain = np.log1p(dwell[w] / 30_000.0) + 2.0 * out.purchase[w] + c.follow_gain * out.follow[w]
            visits_v.append(v[idx][w])
            visits_m.append(merch[w])
            visits_g.append(gain.astype(np.float32))
            scroll_ms = rng.integers(1500, 5000, n)
            ts[idx] = np.where(e, leave_ts + 800, t + scroll_ms)
            step[idx] += 1
            keep_on = np.where(out.stay, c.continue_prob, c.skip_continue)
            cont = (rng.random(n) < keep_on) & (step[idx] < 60)
            cont &= ts[idx] - sessions.start_ms[sid[idx]] < 3 * 3_600_000
            alive[idx] = cont
        if visits_v:
            _update_favourites(
                world, np.concatenate(visits_v), np.concatenate(visits_m), np.concatenate(visits_g)
            )
    col = cols.concat()
    order = np.lexsort((_TYPE_ORDER[col["type"]], col["ts"]))
    col = {k: a[order] for k, a in col.items()}
    session = col["session"]
    room = col["room"]
    log = EventLog(
        type=col["type"],
        session=session,
        viewer=sessions.viewer[session],
        room=room,
        merchant=world.r_merchant[room],
        ts=col["ts"],
        dwell_ms=col["dwell_ms"],
        amount=col["amount"],
        product=col["product"],
        position=col["position"],
        entry_code=col["entry_code"],
        via=col["via"],
        seed=seed,
    )
    return log, sessions
