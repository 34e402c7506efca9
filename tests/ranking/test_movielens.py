"""The LightFM pipeline on real data: MovieLens-100k in LightFM's documented setup."""

from __future__ import annotations

import pytest

from ranking.movielens import run_check, run_pipeline_check


@pytest.mark.slow
def test_movielens_matches_lightfm_docs() -> None:
    check = run_check(epochs=10, threads=2)
    assert abs(check.precision_at_10 - 0.11) <= 0.02, check
    assert check.auc >= 0.88, check


@pytest.mark.slow
def test_movielens_through_roomfeeds_pipeline_is_not_below_plain_lightfm() -> None:
    """Ratings as enters through from_events → build_training_set → train_model → Scorer, beside plain
    LightFM on the same time-ordered split (each user's last 10 ratings held out)."""
    # One thread: LightFM's two-thread (Hogwild) fit is not reproducible (plain LightFM's P@10 moved 0.006
    # between two runs of one seed), so a tolerance wide enough for it let the check pass or fail at random.
    # On one thread the same seed gives the same figures run after run (0.1163 vs 0.1115 for seed 0).
    check = run_pipeline_check(epochs=10, threads=1)
    assert check.p10_pipeline >= check.p10_plain, check
    assert check.users == 943


def test_time_decay_never_silently_zeroes_a_long_window(caplog: pytest.LogCaptureFixture) -> None:
    """Years of ratings under a 3-day half-life: weights keep the floor and the builder warns."""
    import numpy as np

    from ranking.dataset import WeightParams, decay_weights

    day = 86_400_000
    ts = np.arange(0, 1_000 * day, day // 4, dtype=np.int64)
    params = WeightParams(half_life_days=3.0, min_window_share=0.0)
    with caplog.at_level("WARNING", logger="ranking.dataset"):
        w = decay_weights(ts, int(ts.max()) + 1, params)
    assert float(w.min()) == params.decay_floor and (w.astype(np.float32) > 0).all()
    assert "almost no weight" in caplog.text
    relative = decay_weights(ts, int(ts.max()) + 1, WeightParams())  # half-life >= half the window
    assert float(np.median(relative)) > 0.5


def test_the_pipeline_check_over_seeds_pairs_users_and_averages_seeds() -> None:
    import numpy as np

    from ranking.movielens import PipelineCheck, summarise_seeds

    rng = np.random.default_rng(1)
    plain = rng.integers(0, 4, 500) / 10.0

    def check(gain: float, seed: int) -> PipelineCheck:
        mine = plain + np.where(np.random.default_rng(seed).random(500) < gain, 0.1, 0.0)
        return PipelineCheck(float(mine.mean()), float(plain.mean()), 500, 1.0, mine, plain.copy())

    summary = summarise_seeds([check(0.3, 1), check(0.1, 2)], (1, 2))
    assert summary.seeds == (1, 2) and summary.users == 500 and summary.seconds == 2.0
    assert summary.p10_pipeline == pytest.approx(plain.mean() + 0.02, abs=0.005)
    assert summary.diff == pytest.approx(summary.p10_pipeline - summary.p10_plain)
    assert 0 < summary.diff_ci_low < summary.diff < summary.diff_ci_high
    # No gain: the interval spans 0.
    even = summarise_seeds([check(0.0, 3)], (3,))
    assert even.diff == 0.0 and even.diff_ci_low <= 0.0 <= even.diff_ci_high
    with pytest.raises(ValueError, match="checks for"):
        summarise_seeds([check(0.1, 1)], (1, 2))
