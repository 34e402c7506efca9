"""A viewer's graded history with each merchant: what the ranker reads about a viewer.

Owns the one definition of every history statistic (`STATS`) and `history_table`, which sums them
from event columns. Every statistic is a sum or a maximum over events, so the table is a function of
the *set* of events and their event times only: events that arrived live, late, by backfill or by
replay give the same table (tests/ranking/test_history.py). The trainer builds it from the archive
at every round (`ViewerHistories.from_log`), the feed adds the viewer's visits since then
(`ViewerHistories.merged`), and the offline replay builds it from the log before each target: the
same function each time.

Statistics per (viewer, merchant):
  enters       room entries
  watches      leaves with at least `WATCH_MS` of dwell (a real watch, not a glance)
  dwell_s      total dwell seconds
  swipes       leaves with less than events' `SWIPE_AWAY_MS` of dwell (swiped away)
  purchases    purchase events
  follows      follow events
  impressions  times one of the merchant's rooms was shown to the viewer
  code_enters  entries through the merchant's attribution code (entry source)
  last_ms      event time of the latest entry, leave, purchase or follow (0: none)
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from events import vocabulary
from events.vocabulary import SWIPE_AWAY_MS

STATS: tuple[str, ...] = (
    "enters",
    "watches",
    "dwell_s",
    "swipes",
    "purchases",
    "follows",
    "impressions",
    "code_enters",
    "last_ms",
)
S = {name: i for i, name in enumerate(STATS)}
WATCH_MS = 30_000
# The event types history reads, by name (events' vocabulary).
HISTORY_TYPES: tuple[str, ...] = (
    vocabulary.IMPRESSION,
    vocabulary.ENTER,
    vocabulary.LEAVE,
    vocabulary.PURCHASE,
    vocabulary.FOLLOW,
)


def event_stats(
    types: Sequence[str] | np.ndarray,
    dwell_ms: np.ndarray,
    entry_code: np.ndarray,
    ts: np.ndarray,
) -> np.ndarray:
    """(n, len(STATS)) float64: what each event adds (`last_ms`: its time when it is engagement)."""
    kind = np.asarray(types, dtype=object)
    n = kind.shape[0]
    out = np.zeros((n, len(STATS)), dtype=np.float64)
    enter, leave = kind == vocabulary.ENTER, kind == vocabulary.LEAVE
    buy, follow, shown = kind == vocabulary.PURCHASE, kind == vocabulary.FOLLOW, kind == vocabulary.IMPRESSION
    dwell = np.where(leave, np.maximum(dwell_ms, 0), 0).astype(np.float64)
    out[:, S["enters"]] = enter
    out[:, S["watches"]] = leave & (dwell >= WATCH_MS)
    out[:, S["dwell_s"]] = dwell / 1000.0
    out[:, S["swipes"]] = leave & (dwell < SWIPE_AWAY_MS)
    out[:, S["purchases"]] = buy
    out[:, S["follows"]] = follow
    out[:, S["impressions"]] = shown
    out[:, S["code_enters"]] = enter & entry_code.astype(bool)
    engaged = enter | leave | buy | follow
    out[:, S["last_ms"]] = np.where(engaged, ts, 0)
    return out


def combine(keys: np.ndarray, stats: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Rows with equal key summed (`last_ms` by maximum): (unique keys ascending, their stats)."""
    if keys.size == 0:
        return keys.astype(np.int64), np.zeros((0, len(STATS)))
    uniq, inv = np.unique(keys, return_inverse=True)
    out = np.zeros((uniq.size, len(STATS)))
    last = S["last_ms"]
    for j in range(len(STATS)):
        if j == last:
            np.maximum.at(out[:, j], inv, stats[:, j])
        else:
            out[:, j] = np.bincount(inv, weights=stats[:, j], minlength=uniq.size)
    return uniq, out


@dataclass
class ViewerHistory:
    """One viewer's table: merchant positions (any integer code the caller chose) and their stats."""

    merchants: np.ndarray  # int64, ascending
    stats: np.ndarray  # (k, len(STATS)) float64

    @classmethod
    def empty(cls) -> ViewerHistory:
        return cls(np.zeros(0, dtype=np.int64), np.zeros((0, len(STATS))))

    def __len__(self) -> int:
        return int(self.merchants.shape[0])

    def plus(self, other: ViewerHistory) -> ViewerHistory:
        """The table of both event sets (sums add, `last_ms` takes the later)."""
        if len(other) == 0:
            return self
        if len(self) == 0:
            return other
        keys, stats = combine(
            np.concatenate([self.merchants, other.merchants]), np.concatenate([self.stats, other.stats])
        )
        return ViewerHistory(keys, stats)


def history_of(
    merchants: np.ndarray,
    types: Sequence[str] | np.ndarray,
    dwell_ms: np.ndarray,
    entry_code: np.ndarray,
    ts: np.ndarray,
) -> ViewerHistory:
    """One viewer's table from their events (any order)."""
    keys, stats = combine(np.asarray(merchants, dtype=np.int64), event_stats(types, dwell_ms, entry_code, ts))
    return ViewerHistory(keys, stats)


@dataclass
class ViewerHistories:
    """Every viewer's table as of `until_ms`, in CSR layout over viewer rows (what the model artifact carries)."""

    viewer_ids: list[str]
    indptr: np.ndarray  # (n_viewers + 1,)
    merchants: np.ndarray  # merchant positions (the model's merchant index)
    stats: np.ndarray  # (nnz, len(STATS)) float32; last_ms as float64 would be exact: kept in its own column
    last_ms: np.ndarray  # (nnz,) int64
    until_ms: int

    def __post_init__(self) -> None:
        self._row = {v: i for i, v in enumerate(self.viewer_ids)}

    def of(self, viewer_id: str) -> ViewerHistory:
        i = self._row.get(viewer_id)
        if i is None:
            return ViewerHistory.empty()
        lo, hi = int(self.indptr[i]), int(self.indptr[i + 1])
        stats = self.stats[lo:hi].astype(np.float64)
        stats[:, S["last_ms"]] = self.last_ms[lo:hi]
        return ViewerHistory(self.merchants[lo:hi], stats)

    @classmethod
    def build(
        cls,
        viewer: np.ndarray,
        merchant: np.ndarray,
        types: Sequence[str] | np.ndarray,
        dwell_ms: np.ndarray,
        entry_code: np.ndarray,
        ts: np.ndarray,
        viewer_ids: Sequence[str],
        until_ms: int,
    ) -> ViewerHistories:
        """From event columns (viewer and merchant as integer codes; merchant -1 = unknown, dropped)."""
        ok = merchant >= 0
        n_m = int(merchant.max()) + 1 if merchant.size else 1
        keys = viewer[ok].astype(np.int64) * n_m + merchant[ok].astype(np.int64)
        stats = event_stats(np.asarray(types, dtype=object)[ok], dwell_ms[ok], entry_code[ok], ts[ok])
        uniq, table = combine(keys, stats)
        rows = uniq // n_m
        used, row_of = np.unique(rows, return_inverse=True)
        indptr = np.concatenate([[0], np.cumsum(np.bincount(row_of, minlength=used.size))]).astype(np.int64)
        return cls(
            viewer_ids=[str(viewer_ids[i]) for i in used.tolist()],
            indptr=indptr,
            merchants=(uniq % n_m).astype(np.int64),
            stats=table.astype(np.float32),
            last_ms=table[:, S["last_ms"]].astype(np.int64),
            until_ms=until_ms,
        )
