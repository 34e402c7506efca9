"""The scorer: one matrix product, new merchants from features, new viewers by popularity."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from ranking.dataset import TrainingSet
from ranking.features import RoomFeatures
from ranking.model import ModelParams, RankingModel, fit_lightfm, to_ranking_model, train_model
from ranking.scorer import Scorer
from simulator import Marketplace

PARAMS = ModelParams(no_components=16, epochs=5, num_threads=1, seed=3)


@pytest.fixture(scope="module")
def model(small_training: TrainingSet) -> RankingModel:
    return train_model(small_training, PARAMS, version="test-1", progress=False)


def test_scores_match_lightfm_predict(small_training: TrainingSet) -> None:
    lfm = fit_lightfm(small_training, PARAMS, progress=False)
    scorer = Scorer(to_ranking_model(lfm, small_training, PARAMS, "v"))
    rooms = [RoomFeatures(f"r{i}", mid, "x") for i, mid in enumerate(small_training.merchant_ids[:50])]
    user = small_training.user_ids[7]
    expected = lfm.predict(
        7,
        np.arange(50),
        user_features=small_training.user_features,
        item_features=small_training.item_features,
    )
    got = scorer.score(user, rooms)
    assert got.dtype == np.float32 and got.shape == (50,)
    # Ranking is what matters; LightFM's predict adds the (constant) user bias.
    assert np.allclose(got - got.mean(), expected - expected.mean(), atol=1e-3)


def test_new_merchant_scored_from_features(model: RankingModel, small_market: Marketplace) -> None:
    scorer = Scorer(model)
    # Brand-new merchants that look like existing ones (same features, fresh ids).
    known = [r.features for r in small_market.rooms[:120]]
    fresh = [
        dataclasses.replace(f, room_id=f"new-r{i}", merchant_id=f"new-m{i}") for i, f in enumerate(known)
    ]
    viewers = model.user_ids[:200]
    scores = np.stack([scorer.score(v, fresh) for v in viewers])
    assert np.isfinite(scores).all() and scores.std() > 0
    # Same feature set, same cached representation; scores track the ground-truth taste match.
    again = scorer.score(viewers[0], [dataclasses.replace(fresh[0], merchant_id="new-again")])
    assert again[0] == pytest.approx(scores[0, 0])
    truth = np.stack([[small_market.true_match(v, f) for f in fresh] for v in viewers])
    centred = scores - scores.mean(axis=1, keepdims=True)
    corr = np.corrcoef(centred.ravel(), (truth - truth.mean(axis=1, keepdims=True)).ravel())[0, 1]
    assert corr > 0.2, corr


def test_new_viewer_gets_popularity_fallback(model: RankingModel, small_market: Marketplace) -> None:
    scorer = Scorer(model)
    rooms = [r.features for r in small_market.rooms[:200]]
    scores = scorer.score("never-seen-viewer", rooms)
    pop = dict(zip(model.merchant_ids, model.merchant_popularity, strict=True))
    assert np.allclose(scores, [pop.get(r.merchant_id, 0.0) for r in rooms])
    assert scorer.score("never-seen-viewer", []).shape == (0,)


def test_new_viewer_with_entry_source_scored_from_it(model: RankingModel, small_market: Marketplace) -> None:
    scorer = Scorer(model)
    sources = [n.removeprefix("entry:") for n in model.user_feature_names if n.startswith("entry:")]
    assert sources, "the simulator has attributed entries"
    rooms = [r.features for r in small_market.rooms[:200]]
    by_source = scorer.score("fresh-viewer", rooms, entry_merchant_ids=[sources[0]])
    assert not np.allclose(by_source, scorer.score("fresh-viewer", rooms))


def test_training_reproducible_single_thread(small_training: TrainingSet) -> None:
    a = train_model(small_training, PARAMS, version="a", progress=False)
    b = train_model(small_training, PARAMS, version="b", progress=False)
    assert np.array_equal(a.item_repr, b.item_repr) and np.array_equal(a.user_repr, b.user_repr)


def test_artifact_round_trip(model: RankingModel) -> None:
    back = RankingModel.from_bytes(model.to_bytes())
    assert back.version == model.version and back.user_ids == model.user_ids
    assert np.array_equal(back.item_repr, model.item_repr)
