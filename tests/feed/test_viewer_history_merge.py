"""The feed folds a session's visits into the viewer's history as ranking.history does, sum for sum."""

from __future__ import annotations

import numpy as np

from events.vocabulary import ENTER, LEAVE, SWIPE_AWAY_MS
from ranking.history import STATS, S, ViewerHistory, history_of
from ranking.history import WATCH_MS as WATCH
from ranking.ranker import history_with_visits


def _base(rng: np.random.Generator, size: int) -> ViewerHistory:
    if size == 0:
        return ViewerHistory.empty()
    merchants = np.sort(rng.integers(0, 40, size))  # a merchant twice, as a state record may hold
    stats = np.round(rng.random((size, len(STATS))) * 5, 3)
    stats[:, S["last_ms"]] = rng.integers(1, 10**12, size)
    return ViewerHistory(merchants.astype(np.int64), stats)


def test_visits_fold_into_the_history_as_history_of_plus_does() -> None:
    rng = np.random.default_rng(7)
    for _ in range(300):
        base = _base(rng, int(rng.choice([0, 1, 4, 9])))
        n = int(rng.integers(0, 14))
        merchants = rng.integers(-1, 45, n).astype(np.int64)  # -1: a merchant the model does not know
        enter = rng.random(n) < 0.4
        dwell = rng.choice([-5, 0, 999, SWIPE_AWAY_MS - 1, SWIPE_AWAY_MS, WATCH - 1, WATCH, 123_457], n)
        ts = rng.integers(1, 10**12, n).astype(np.int64)
        got = history_with_visits(base, merchants, enter, dwell.astype(np.int64), ts)
        known = merchants >= 0
        kinds = np.where(enter, ENTER, LEAVE).astype(object)
        expected = base.plus(
            history_of(
                merchants[known], kinds[known], dwell[known], np.zeros(int(known.sum()), bool), ts[known]
            )
        )
        assert got.merchants.tolist() == expected.merchants.tolist()
        assert got.stats.dtype == np.float64 and np.array_equal(got.stats, expected.stats)  # bit for bit
        if not known.any():
            assert got is base
