"""The scorer: one matrix product, new merchants from features, new viewers by popularity."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from ranking.dataset import InteractionLog, TrainingSet, build_training_set
from ranking.features import RoomFeatures
from ranking.model import ModelParams, RankingModel, cold_items, fit_lightfm, to_ranking_model, train_model
from ranking.offline import merchant_features
from ranking.scorer import Scorer
from simulator import Marketplace

DAY_MS = 86_400_000
PARAMS = ModelParams(no_components=16, epochs=5, num_threads=1, seed=3)


@pytest.fixture(scope="module")
def model(small_training: TrainingSet) -> RankingModel:
    return train_model(small_training, PARAMS, version="test-1", progress=False)


def test_scores_match_lightfm_predict(small_training: TrainingSet) -> None:
    lfm = fit_lightfm(small_training, PARAMS, progress=False)
    scorer = Scorer(to_ranking_model(lfm, small_training, PARAMS, "v"))
    # Merchants watched in the window (one without a watch is scored from its metadata, see below).
    warm = np.setdiff1d(np.arange(len(small_training.merchant_ids)), cold_items(small_training))[:50]
    rooms = [RoomFeatures(f"r{i}", small_training.merchant_ids[i], "x") for i in warm.tolist()]
    user = small_training.user_ids[7]
    expected = lfm.predict(
        7,
        warm.astype(np.int32),
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


def test_merchant_without_training_watch_scored_from_its_metadata(
    small_market: Marketplace, small_log: InteractionLog
) -> None:
    """A merchant listed for training but never watched in the window was only ever a WARP negative (its
    identity pushed down); scored from its metadata it ranks like the popular merchants it resembles."""
    until = small_market.config.start_ms + 3 * DAY_MS
    features = merchant_features(small_market.rooms)
    base = build_training_set(small_log, features, until)
    popular = [base.merchant_ids[i] for i in np.argsort(-base.merchant_popularity)[:10]]
    twins = {f"twin-{m}": dataclasses.replace(features[m], merchant_id=f"twin-{m}") for m in popular}
    data = build_training_set(small_log, {**features, **twins}, until)
    assert set(twins) <= set(data.merchant_ids)
    assert {data.merchant_ids[i] for i in cold_items(data)} >= set(twins)
    model = train_model(data, PARAMS, version="cold", progress=False)
    scorer = Scorer(model)
    known = [m for m in base.merchant_ids if m in features]
    rooms = [dataclasses.replace(features[m], room_id=f"r-{m}") for m in known]
    rooms += [dataclasses.replace(f, room_id=f"r-{m}") for m, f in twins.items()]
    viewers = model.user_ids[:300]
    scores = np.stack([scorer.score(v, rooms) for v in viewers])
    # Per viewer, the share of known merchants each room outscores.
    n = len(known)
    pct = (scores[:, :, None] > scores[:, None, :n]).mean(axis=2).mean(axis=0)
    twin_pct, popular_pct = pct[n:], pct[[known.index(m) for m in popular]]
    # Measured: twins 0.75 (each above 0.65) beside their originals' 0.89; with the identity WARP only
    # ever pushed down, 0.48 (the lowest 0.37): below half of the known merchants.
    assert twin_pct.mean() > 0.65 and twin_pct.min() > 0.55, twin_pct
    assert twin_pct.mean() > popular_pct.mean() - 0.2, (twin_pct.mean(), popular_pct.mean())
    # One rule: the same as a merchant the Scorer first sees at scoring time with that metadata.
    fresh = [dataclasses.replace(f, room_id=f"n-{m}", merchant_id=f"new-{m}") for m, f in twins.items()]
    fresh_scores = np.stack([Scorer(model).score(v, fresh) for v in viewers[:20]])
    assert np.allclose(fresh_scores, scores[:20, n:], atol=1e-4)
