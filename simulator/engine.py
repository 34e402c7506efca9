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
from simulator.world import CATEGORIES, DAY_MS, MINUTE_MS, World

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


def _sigmoid(x: np.ndarray) -> np.ndarray:
    out: np.ndarray = 1.0 / (1.0 + np.exp(-x))
    return out


def band_fit(viewer_band: np.ndarray, merchant_band: np.ndarray) -> np.ndarray:
    out: np.ndarray = np.maximum(1.0 - np.abs(viewer_band - merchant_band), -1.0)
    return out


@dataclass
class Outcomes:
    enter: np.ndarray
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
    match: np.ndarray,
    quality: np.ndarray,
    intent: np.ndarray,
    bandfit: np.ndarray,
    familiarity: np.ndarray,
    follow_tab: np.ndarray,
    forced: np.ndarray,
) -> Outcomes:
    """What viewers do with the rooms put in front of them (vectorised over pairs)."""
    c = world.config
    n = match.shape[0]
    fam = np.log1p(familiarity)
    u = (
        c.enter_bias
        + c.w_match * match
        + c.w_quality * quality
        + c.w_intent * intent
        + c.w_band * bandfit
        + c.w_familiar * fam
        + c.follow_tab_bonus * follow_tab
    )
    enter = (rng.random(n) < _sigmoid(u)) | forced
    log_dwell = (
        np.log(c.dwell_median_s)
        + 0.5 * match
        + 0.3 * quality
        + 0.4 * intent
        + 0.3 * fam
        + rng.normal(0.0, c.dwell_sigma, n)
    )
    dwell_ms = np.clip(np.exp(log_dwell) * 1000.0, 3000.0, 3_600_000.0).astype(np.int64)
    dmin = np.log1p(dwell_ms / 60_000.0)
    r = rng.random((8, n))
    like = enter & (r[0] < _sigmoid(-2.5 + 0.7 * match + 0.6 * dmin))
    comment = enter & (r[1] < _sigmoid(-3.5 + 0.5 * dmin))
    follow = enter & (r[2] < _sigmoid(-4.5 + 0.8 * match + 0.8 * dmin))
    share = enter & (r[3] < 0.01)
    cart = enter & (r[4] < _sigmoid(-3.4 + 0.6 * match + 0.8 * dmin + 0.6 * bandfit + 0.5 * intent))
    purchase = cart & (r[5] < c.purchase_given_cart)
    deal = enter & (dwell_ms > 60_000) & (r[6] < 0.03)
    return Outcomes(enter, dwell_ms, like, comment, follow, share, cart, purchase, deal)


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
    r_start, r_end, r_merchant = world.r_start, world.r_end, world.r_merchant
    nm = c.n_merchants
    hour = 3_600_000
    block_of = (sessions.start_ms - c.start_ms) // hour
    bounds = np.searchsorted(block_of, np.arange(c.days * 24 + 1))
    last_day = 0
    for h in range(c.days * 24):
        b0, b1 = int(bounds[h]), int(bounds[h + 1])
        block_start = c.start_ms + h * hour
        day = h // 24
        if day != last_day:
            world.fav_a *= c.favourite_daily_decay
            last_day = day
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
        policy = c.feed_pop_weight * world.m_hotness[M][None, :] + c.feed_category_bonus * (
            world.m_cat[M][None, :] == world.v_topcat[v][:, None]
        )
        # Affinity of each session's viewer to each candidate room's merchant.
        pos = np.full((nm, 2), -1, dtype=np.int64)
        for row, m in enumerate(M.tolist()):
            pos[m, 0 if pos[m, 0] < 0 else 1] = row
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
            feed_logit = np.where(explore[:, None], 0.0, policy[idx] + c.feed_follow_bonus * np.log1p(Ai)) + g
            pick_feed = np.argmax(np.where(live, feed_logit, -np.inf), axis=1)
            choice = np.where(follow_tab, pick_follow, pick_feed)
            forced = (step[idx] == 0) & (code_room[idx] >= 0)
            choice = np.where(forced, code_room[idx], choice)
            notified = (step[idx] == 0) & (notify_pos[idx] >= 0)
            choice = np.where(notified, notify_pos[idx], choice)
            follow_tab = (follow_tab | notified) & ~forced
            shown[idx, choice] = True
            rooms = R[choice]
            merch = M[choice]
            mi = match[idx, choice]
            out = visit_outcomes(
                rng,
                world,
                mi,
                world.m_quality[merch],
                intent[idx, choice],
                band_fit(world.v_band[v[idx]], world.m_band[merch]),
                Ai[np.arange(n), choice],
                follow_tab.astype(np.float32),
                forced,
            )
            s_ids = sid[idx]
            cols.emit(rng, CODE[IMPRESSION], s_ids, rooms, t, position=step[idx])
            e = out.enter
            enter_ts = t + 1500
            dwell = np.maximum(np.minimum(out.dwell_ms, re[choice] - enter_ts - 1000), 1000)
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
            gain = np.log1p(dwell[e] / 30_000.0) + 2.0 * out.purchase[e] + 1.0 * out.follow[e]
            visits_v.append(v[idx][e])
            visits_m.append(merch[e])
            visits_g.append(gain.astype(np.float32))
            ts[idx] = np.where(e, leave_ts + 800, t + rng.integers(1500, 5000, n))
            step[idx] += 1
            cont = (rng.random(n) < c.continue_prob) & (step[idx] < 60)
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
        seed=seed,
    )
    return log, sessions


def category_index(name: str) -> int:
    return CATEGORIES.index(name) if name in CATEGORIES else -1
