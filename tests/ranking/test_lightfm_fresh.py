"""LightFM's column in the ranker's lists is as fresh as the serving one (FitConfig.lightfm_a)."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from ranking.dataset import ENTER, InteractionLog
from ranking.model import ModelParams
from ranking.offline import FitConfig, fit_model, lightfm_a_windows, merchant_features, ranker_window
from ranking.ranker import F
from ranking.replay import Schedule
from simulator import Marketplace

DAY_MS = 86_400_000


def test_each_day_of_the_ranker_window_gets_its_share_of_the_lists(
    small_market: Marketplace, small_log: InteractionLog
) -> None:
    until = small_market.config.start_ms + 4 * DAY_MS
    cfg = FitConfig(ranker_lists=10**6)  # more than the log holds: the window is half the log, two days
    lo = ranker_window(small_log, until, cfg)
    assert lo == until - 2 * DAY_MS
    parts = lightfm_a_windows(small_log, lo, until, cfg)
    assert [(a, b) for a, b, _ in parts] == [(lo, until - DAY_MS), (until - DAY_MS, until)]
    ts = small_log.ts[small_log.type == ENTER]
    per_day = np.array([((ts >= a) & (ts < b)).sum() for a, b, _ in parts], dtype=float)
    counts = np.array([c.ranker_lists for _, _, c in parts], dtype=float)
    assert abs(counts.sum() - cfg.ranker_lists) <= len(parts)
    assert np.allclose(counts / counts.sum(), per_day / per_day.sum(), atol=1e-4)
    # "once" cuts the same days (the same lists), one day is one part, the "latest" validation keeps it whole.
    once = dataclasses.replace(cfg, lightfm_a="once")
    assert [(a, b) for a, b, _ in lightfm_a_windows(small_log, lo, until, once)] == [
        (a, b) for a, b, _ in parts
    ]
    assert len(lightfm_a_windows(small_log, until - DAY_MS, until, cfg)) == 1
    assert len(lightfm_a_windows(small_log, lo, until, dataclasses.replace(cfg, validation="latest"))) == 1
    with pytest.raises(ValueError, match="lightfm_a must be one of"):
        lightfm_a_windows(small_log, lo, until, dataclasses.replace(cfg, lightfm_a="weekly"))


def test_viewers_new_in_the_window_carry_a_lightfm_column_on_the_next_day_when_fit_daily(
    small_market: Marketplace, small_log: InteractionLog, small_schedule: Schedule
) -> None:
    until = small_market.config.start_ms + 4 * DAY_MS
    features = merchant_features(small_market.rooms)
    cfg = FitConfig(
        model=ModelParams(no_components=8, epochs=2, num_threads=1), ranker_lists=10**6, ranker_days=2.0
    )
    personal = {}
    for mode in ("once", "daily"):
        fitted = fit_model(
            small_log, features, small_schedule, until, dataclasses.replace(cfg, lightfm_a=mode), mode
        )
        v = fitted.validation
        has_column = np.add.reduceat(np.abs(v.x[:, F["lightfm"]]) > 0, v.offsets[:-1]) > 0
        personal[mode] = float(has_column.mean())
        assert fitted.ranker.info["validation_lists"] == len(v)
    # The same lists; with a fit before each day the viewers first seen on the window's first day have a
    # vector on its second day, as they will have when the model that serves is refit.
    assert personal["daily"] > personal["once"] + 0.01
