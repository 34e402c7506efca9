"""LightFM as the mean of several fits (ModelParams.fits): one model whose scores are the fits' mean."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from ranking.dataset import TrainingSet
from ranking.features import RoomFeatures
from ranking.model import ModelParams, RankingModel, cold_items, train_model
from ranking.scorer import Scorer

ONE = ModelParams(no_components=8, epochs=3, num_threads=1, seed=5)


def interactions(m: RankingModel) -> np.ndarray:
    """Every (viewer, merchant) score without the biases."""
    return m.user_repr.astype(np.float64) @ m.item_repr.astype(np.float64).T


def scores(m: RankingModel) -> np.ndarray:
    out: np.ndarray = interactions(m) + m.user_bias[:, None] + m.item_bias[None, :]
    return out


@pytest.fixture(scope="module")
def single_fits(small_training: TrainingSet) -> list[RankingModel]:
    return [
        train_model(small_training, dataclasses.replace(ONE, seed=ONE.seed + j), "one", progress=False)
        for j in range(3)
    ]


def test_fits_side_by_side_score_the_mean_of_the_fits_scores(
    small_training: TrainingSet, single_fits: list[RankingModel]
) -> None:
    wide = train_model(
        small_training, dataclasses.replace(ONE, fits=3, fits_components=0), "w", progress=False
    )
    assert wide.user_repr.shape[1] == 3 * ONE.no_components
    mean = np.mean([scores(m) for m in single_fits], axis=0)
    assert np.allclose(scores(wide), mean, atol=1e-4)
    assert wide.params["fits"] == 3


def test_fits_kept_at_the_models_width_are_the_best_approximation_of_their_mean(
    small_training: TrainingSet, single_fits: list[RankingModel]
) -> None:
    kept = train_model(small_training, dataclasses.replace(ONE, fits=3), "k", progress=False)
    assert kept.user_repr.shape[1] == ONE.no_components == kept.item_feature_emb.shape[1]
    mean = np.mean([interactions(m) for m in single_fits], axis=0)
    u, s, vt = np.linalg.svd(mean, full_matrices=False)
    best = (u[:, : ONE.no_components] * s[: ONE.no_components]) @ vt[: ONE.no_components]
    assert np.allclose(interactions(kept), best, atol=1e-3 * np.abs(mean).max())
    # Closer to the mean than any single fit is: the draw-to-draw noise is what averaging removes.
    error = np.linalg.norm(interactions(kept) - mean)
    assert all(error < np.linalg.norm(interactions(m) - mean) for m in single_fits)


def test_a_merchant_scored_from_its_features_gets_the_same_map_as_a_trained_one(
    small_training: TrainingSet,
) -> None:
    kept = train_model(small_training, dataclasses.replace(ONE, fits=3), "k", progress=False)
    # Representations stay the feature rows times the feature embeddings (what the Scorer computes for
    # a merchant or viewer it never saw).
    warm = np.setdiff1d(np.arange(len(small_training.merchant_ids)), cold_items(small_training))
    items = small_training.item_features.tocsr()[warm] @ kept.item_feature_emb
    assert np.allclose(items, kept.item_repr[warm], atol=1e-4)
    users = small_training.user_features.tocsr() @ kept.user_feature_emb
    assert np.allclose(users, kept.user_repr, atol=1e-4)
    merchant = small_training.merchant_ids[int(warm[0])]
    scorer = Scorer(kept)
    room = RoomFeatures("r-new", merchant, "x")
    got = scorer.score(small_training.user_ids[3], [room])
    expected = kept.user_repr[3] @ kept.item_repr[int(warm[0])] + kept.item_bias[int(warm[0])]
    assert np.isclose(float(got[0]), float(expected), atol=1e-4)


def test_the_mean_of_fits_survives_the_artifact_round_trip(small_training: TrainingSet) -> None:
    kept = train_model(small_training, dataclasses.replace(ONE, fits=2), "k", progress=False)
    back = RankingModel.from_bytes(kept.to_bytes())
    assert np.array_equal(back.item_repr, kept.item_repr) and back.params["fits"] == 2


def test_fewer_than_one_fit_is_refused(small_training: TrainingSet) -> None:
    with pytest.raises(ValueError, match="fits must be >= 1"):
        train_model(small_training, dataclasses.replace(ONE, fits=0), "x", progress=False)
