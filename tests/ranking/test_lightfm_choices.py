"""LightFM's columns without a switch: the ranker as the mean of the rankers with LightFM everywhere and in the
discovery part only (FitConfig.lightfm_choice = "blend"), so a small change of LightFM's draw moves the ranker a
little instead of flipping which ranker serves."""

from __future__ import annotations

import numpy as np
import pytest

from ranking.dataset import InteractionLog
from ranking.model import ModelParams
from ranking.offline import FitConfig, FittedModel, fit_model, merchant_features, training_lists
from ranking.ranker import (
    FEATURES,
    LIGHTFM_FEATURES,
    F,
    Lists,
    Ranker,
    blend_rankers,
    judged_values,
    list_ranks,
)
from ranking.replay import Schedule, Target
from simulator import Marketplace

DAY_MS = 86_400_000


def _validation_scores(r: Ranker, lists: Lists) -> np.ndarray:
    """The learned score of every row: the known merchants' weights on their rooms, the discovery ones else."""
    x = lists.x.astype(np.float64)
    if r.discovery is None:
        out: np.ndarray = x @ r.weights
        return out
    mixed: np.ndarray = np.where(x[:, F["h_entered"]] > 0, x @ r.weights, x @ r.discovery)
    return mixed


def test_a_blend_of_rankers_ranks_every_room_by_the_mean_of_their_scores(small_targets: list[Target]) -> None:
    rng = np.random.default_rng(4)
    lists = training_lists(small_targets, 0.0)
    one = Ranker(rng.normal(size=len(FEATURES)))
    two = Ranker(rng.normal(size=len(FEATURES)), discovery=rng.normal(size=len(FEATURES)))
    three = Ranker(rng.normal(size=len(FEATURES)), discovery=rng.normal(size=len(FEATURES)))
    for r in (one, two, three):
        r.validation_scores = _validation_scores(r, lists)
    blend = blend_rankers([one, two, three], lists, first_grid=(0,))
    assert blend.favourites_first == 0 and blend.first_by_share == ()
    mean = np.mean([_validation_scores(r, lists) for r in (one, two, three)], axis=0)
    assert blend.validation_scores is not None and np.allclose(blend.validation_scores, mean)
    assert np.allclose(_validation_scores(blend, lists), mean)  # the blend's own weights score that mean
    assert blend.validation_values is not None
    np.testing.assert_allclose(
        blend.validation_values, judged_values(list_ranks(mean, lists.offsets, lists.target))
    )
    # ... and so does the feed's scorer, room by room.
    for t in [t for t in small_targets if len(t.request.history)][:20]:
        want = np.mean([r.score(t.table, t.request).astype(np.float64) for r in (one, two, three)], axis=0)
        np.testing.assert_allclose(blend.score(t.table, t.request), want, rtol=1e-4, atol=1e-3)
    with pytest.raises(ValueError, match="validation_scores"):
        blend_rankers([Ranker(np.zeros(len(FEATURES)))], lists)


def test_the_blend_keeps_lightfms_columns_at_the_mean_of_the_two_rankers_with_them(
    small_market: Marketplace, small_log: InteractionLog, small_schedule: Schedule
) -> None:
    def fitted(choice: str) -> FittedModel:
        cfg = FitConfig(
            ModelParams(no_components=8, epochs=2, num_threads=1), ranker_lists=600, lightfm_choice=choice
        )
        day3 = small_market.config.start_ms + 3 * DAY_MS
        return fit_model(small_log, merchant_features(small_market.rooms), small_schedule, day3, cfg, choice)

    switch, blend = fitted("switch"), fitted("blend")
    assert blend.ranker.info["lightfm_blend"] == 1.0 and blend.ranker.info["lightfm_used"] == 1.0
    # What the switch chose, and by how much, is still said.
    assert blend.ranker.info["lightfm_gain"] == switch.ranker.info["lightfm_gain"]
    lightfm = [F[f] for f in LIGHTFM_FEATURES]
    everywhere, without = switch.ranker_lightfm, switch.ranker_no_lightfm
    assert everywhere is not None and without is not None
    # LightFM's weights on the known merchants: half of LightFM everywhere's (the discovery-part variant has 0
    # there), never 0 as a dropped switch leaves them.
    assert np.allclose(blend.ranker.weights[lightfm], everywhere.weights[lightfm] / 2)
    assert np.abs(blend.ranker.weights[lightfm]).sum() > 0
    assert np.array_equal(blend.ranker_no_lightfm.weights, without.weights)  # the ablation is the same
    with pytest.raises(ValueError, match="lightfm_choice"):
        fitted("vote")
