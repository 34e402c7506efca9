"""The LightFM pipeline on real data: MovieLens-100k in LightFM's documented setup."""

from __future__ import annotations

import pytest

from ranking.movielens import run_check


@pytest.mark.slow
def test_movielens_matches_lightfm_docs() -> None:
    check = run_check(epochs=10, threads=2)
    assert abs(check.precision_at_10 - 0.11) <= 0.02, check
    assert check.auc >= 0.88, check
