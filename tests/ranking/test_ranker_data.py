"""The ranker's data: how long its window is and which lists validate its choices (ranking.offline)."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from ranking.dataset import ENTER, InteractionLog
from ranking.model import ModelParams
from ranking.offline import (
    FitConfig,
    fit_model,
    merchant_features,
    ranker_targets,
    ranker_window,
    validation_viewers,
)
from ranking.replay import Schedule, replay
from simulator import Marketplace

DAY_MS = 86_400_000


def _enters_per_day(log: InteractionLog, until: int, days: int) -> list[int]:
    ts = log.ts[log.type == ENTER]
    return [int(((ts >= until - (d + 1) * DAY_MS) & (ts < until - d * DAY_MS)).sum()) for d in range(days)]


def test_the_window_is_the_fewest_whole_days_that_hold_the_lists(
    small_market: Marketplace, small_log: InteractionLog
) -> None:
    until = small_market.config.start_ms + 4 * DAY_MS  # a four-day log
    per_day = _enters_per_day(small_log, until, 4)  # the last day first
    cfg = FitConfig(ranker_lists=per_day[0] - 1)  # one day holds them: one day
    assert ranker_window(small_log, until, cfg) == until - DAY_MS
    cfg = FitConfig(ranker_lists=per_day[0] + 1)  # the last day is one list short: two days
    assert ranker_window(small_log, until, cfg) == until - 2 * DAY_MS
    # Never more than max_ranker_share of the log: LightFM "a" is fit on the days before the window.
    many = FitConfig(ranker_lists=10 * sum(per_day))
    assert ranker_window(small_log, until, many) == until - 2 * DAY_MS
    assert (
        ranker_window(small_log, until, dataclasses.replace(many, max_ranker_share=0.75))
        == until - 3 * DAY_MS
    )
    # An explicit window is kept; bad settings are refused by name.
    assert ranker_window(small_log, until, FitConfig(ranker_days=1.5)) == until - int(1.5 * DAY_MS)
    with pytest.raises(ValueError, match="ranker_days"):
        ranker_window(small_log, until, FitConfig(ranker_days=0))
    with pytest.raises(ValueError, match="max_ranker_share"):
        ranker_window(small_log, until, FitConfig(max_ranker_share=1.0))


def test_validation_viewers_are_a_fixed_share_of_the_viewers() -> None:
    ids = [f"v{i}" for i in range(20_000)]
    held = validation_viewers(ids, 0.25, seed=3)
    assert held.dtype == bool and held.shape == (20_000,)
    assert 0.23 < held.mean() < 0.27
    # The same viewer is held out on every call, whatever the order the log lists its viewers in.
    again = validation_viewers(ids[::-1], 0.25, seed=3)[::-1]
    assert np.array_equal(held, again)
    assert not np.array_equal(held, validation_viewers(ids, 0.25, seed=4))


def test_replay_splits_overlapping_windows_by_viewer(
    small_market: Marketplace, small_log: InteractionLog, small_schedule: Schedule
) -> None:
    features = merchant_features(small_market.rooms)
    lo, hi = small_market.config.start_ms + 2 * DAY_MS, small_market.config.start_ms + 3 * DAY_MS
    held = validation_viewers(small_log.viewer_ids, 0.25, seed=0)
    train, valid = replay(
        small_log, small_schedule, features, None, [(lo, hi), (lo, hi)], [10**6, 10**6], viewers=[~held, held]
    )
    assert train and valid
    assert not any(held[t.viewer] for t in train) and all(held[t.viewer] for t in valid)
    assert not {t.event for t in train} & {t.event for t in valid}
    # Every enter of the day is in one of the two (the session filter may drop none here: both keep all).
    (whole,) = replay(small_log, small_schedule, features, None, [(lo, hi)], [10**6])
    assert {t.event for t in whole} == {t.event for t in train} | {t.event for t in valid}
    # The validation lists cover the day's hours, not one quarter of it.
    hours = {(int(small_log.ts[t.event]) - lo) // 3_600_000 for t in valid}
    assert len(hours) >= 16
    with pytest.raises(ValueError, match="one mask"):
        replay(small_log, small_schedule, features, None, [(lo, hi)], [10], viewers=[held, held])
    with pytest.raises(ValueError, match="mask over the log"):
        replay(small_log, small_schedule, features, None, [(lo, hi)], [10], viewers=[held[:-1]])


def test_the_trainer_validates_on_held_out_viewers_over_its_whole_window(
    small_market: Marketplace, small_log: InteractionLog, small_schedule: Schedule
) -> None:
    until = small_market.config.start_ms + 4 * DAY_MS
    features = merchant_features(small_market.rooms)
    cfg = FitConfig(model=ModelParams(no_components=8, epochs=2, num_threads=1), ranker_lists=600)
    lo = until - 2 * DAY_MS
    train, valid = ranker_targets(small_log, small_schedule, features, None, lo, until, cfg)
    held = validation_viewers(small_log.viewer_ids, cfg.validation_share, cfg.seed)
    assert 430 <= len(train) <= 450 and 140 <= len(valid) <= 150  # an enter with no live room drops out
    assert all(held[t.viewer] for t in valid) and not any(held[t.viewer] for t in train)
    # Spread over both days' hours like the held-out day, every live room kept (no sampling).
    when = np.array([int(small_log.ts[t.event]) for t in valid])
    assert when.min() < lo + DAY_MS // 2 and when.max() > until - DAY_MS // 2
    assert all(not t.sampling.any() for t in valid)
    # "latest": the window's last quarter of time, any viewer.
    _, late = ranker_targets(
        small_log, small_schedule, features, None, lo, until, dataclasses.replace(cfg, validation="latest")
    )
    assert min(int(small_log.ts[t.event]) for t in late) >= until - DAY_MS // 2
    assert not all(held[t.viewer] for t in late)
    fitted = fit_model(small_log, features, small_schedule, until, cfg, "v")
    assert 140 <= fitted.ranker.info["validation_lists"] <= 150 and 570 <= fitted.ranker.info["lists"] <= 600
    with pytest.raises(ValueError, match="validation must be one of"):
        fit_model(small_log, features, small_schedule, until, dataclasses.replace(cfg, validation="evening"))
    with pytest.raises(ValueError, match="validation_share"):
        fit_model(small_log, features, small_schedule, until, dataclasses.replace(cfg, validation_share=0.0))
