"""What a simulated world looks like, measured from its log: the figures docs/simulator.md reports.

Owns the definition of a *watch* (an `enter` whose `leave` is not a swipe-away, events.vocabulary's
`SWIPE_AWAY_MS`: on a swipe every served room is entered, so a watch, not an enter, is what the
viewer chose) and the world's measured repeat share, popularity concentration, exposure bias,
cold-start share and conversion.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from events.vocabulary import CODE, ENTER, IMPRESSION, LEAVE, PURCHASE, SWIPE_AWAY_MS
from simulator.engine import VIA_FEED, EventLog
from simulator.world import DAY_MS


def enter_dwell(log: EventLog) -> np.ndarray:
    """Per event: for an `enter`, the dwell of its `leave` (same session and room); -1 elsewhere."""
    n_rooms = int(log.room.max()) + 1 if len(log) else 1
    key = log.session.astype(np.int64) * n_rooms + log.room
    leaves = np.flatnonzero(log.type == CODE[LEAVE])
    order = np.argsort(key[leaves], kind="stable")
    lk, ld = key[leaves][order], log.dwell_ms[leaves][order]
    out = np.full(len(log), -1, dtype=np.int64)
    enters = np.flatnonzero(log.type == CODE[ENTER])
    at = np.searchsorted(lk, key[enters])
    found = at < lk.size
    found[found] = lk[at[found]] == key[enters][found]
    out[enters[found]] = ld[at[found]]
    return out


def watch_mask(log: EventLog) -> np.ndarray:
    """Per event: an `enter` the viewer stayed in (its leave's dwell is not a swipe-away)."""
    out: np.ndarray = (log.type == CODE[ENTER]) & (enter_dwell(log) >= SWIPE_AWAY_MS)
    return out


def repeat_watches(log: EventLog, n_merchants: int, watches: np.ndarray | None = None) -> np.ndarray:
    """Per watch (rows of `watches`, time order): the viewer watched this merchant before, in the log."""
    rows = np.flatnonzero(watch_mask(log) if watches is None else watches)
    key = log.viewer[rows].astype(np.int64) * n_merchants + log.merchant[rows]
    first = np.zeros(rows.size, dtype=bool)
    _, first_at = np.unique(key, return_index=True)
    first[first_at] = True
    return ~first


def gini(counts: np.ndarray) -> float:
    x = np.sort(counts.astype(np.float64))
    if x.sum() <= 0:
        return 0.0
    n = x.size
    return float((2.0 * np.arange(1, n + 1) - n - 1).dot(x) / (n * x.sum()))


def world_figures(market: Any, day: int | None = None) -> dict[str, float]:
    """The world's figures on `day` (default: the last day, the test day) and over the whole log."""
    log: EventLog = market.log
    w = market.world
    c = market.config
    day = c.days - 1 if day is None else day
    lo, hi = c.start_ms + day * DAY_MS, c.start_ms + (day + 1) * DAY_MS
    watches = watch_mask(log)
    rows = np.flatnonzero(watches)
    repeat = repeat_watches(log, c.n_merchants, watches)
    on_day = (log.ts[rows] >= lo) & (log.ts[rows] < hi)
    impressions = log.type == CODE[IMPRESSION]
    day_impr = impressions & (log.ts >= lo) & (log.ts < hi)
    orders = (log.type == CODE[PURCHASE]) & (log.ts >= lo) & (log.ts < hi)
    gmv = float(np.nansum(log.amount[orders]))

    per_merchant = np.bincount(log.merchant[rows], minlength=c.n_merchants)
    active = np.sort(per_merchant[per_merchant > 0])[::-1]
    top = max(1, active.size // 10)

    # Exposure bias of the logging feed: impressions per live room-minute of the merchants it rated
    # most popular (top tenth by hotness), over the same for all merchants.
    feed_impr = impressions & (log.via == VIA_FEED) if log.via is not None else impressions
    imp_m = np.bincount(log.merchant[feed_impr], minlength=c.n_merchants).astype(np.float64)
    live_min = np.bincount(w.r_merchant, weights=(w.r_end - w.r_start) / 60_000.0, minlength=c.n_merchants)
    hot = w.m_hotness >= np.quantile(w.m_hotness, 0.9)
    lift = (imp_m[hot].sum() / imp_m.sum()) / max(live_min[hot].sum() / live_min.sum(), 1e-12)
    direct = (
        float(((log.via > VIA_FEED) & day_impr).sum() / max(day_impr.sum(), 1))
        if log.via is not None
        else 0.0
    )

    new_m = w.m_debut > 0
    day_watch_m = log.merchant[rows[on_day]]
    seen_before = np.zeros(c.n_merchants, dtype=bool)
    seen_before[log.merchant[rows[log.ts[rows] < lo]]] = True
    sessions = np.unique(log.session[(log.ts >= lo) & (log.ts < hi)]).size
    day_enters = (log.type == CODE[ENTER]) & (log.ts >= lo) & (log.ts < hi)
    watch_ms = np.where(day_enters, np.maximum(enter_dwell(log), 0), 0).sum()
    return {
        "events": float(len(log)),
        "test_day_watches": float(on_day.sum()),
        "repeat_share": float(repeat[on_day].mean()) if on_day.any() else 0.0,
        "stay_rate": float(on_day.sum() / max(day_impr.sum(), 1)),
        "direct_share": direct,
        "top10_merchant_watch_share": float(active[:top].sum() / max(active.sum(), 1)),
        "gini_watches": gini(per_merchant),
        "exposure_lift_top10_hotness": float(lift),
        "new_merchant_watch_share": float(new_m[day_watch_m].mean()) if day_watch_m.size else 0.0,
        "unseen_merchant_watch_share": float((~seen_before[day_watch_m]).mean()) if day_watch_m.size else 0.0,
        "orders_per_1k_impressions": float(1000.0 * orders.sum() / max(day_impr.sum(), 1)),
        "gmv_per_1k_impressions": float(1000.0 * gmv / max(day_impr.sum(), 1)),
        "watch_min_per_session": float(watch_ms / 60_000.0 / max(sessions, 1)),
        "sessions": float(sessions),
    }
