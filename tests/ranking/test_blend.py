"""The blend the feed ranks with: favourites open the page, LightFM orders what the viewer never watched."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from ranking.blend import COLUMNS, LIGHTFM_COLUMNS, BlendWeights, blend, blend_columns
from ranking.model import RankingModel, train_model
from ranking.scorer import Scorer
from simulator import Marketplace
from tests.ranking.test_scorer import PARAMS

ONLY_LIGHTFM = BlendWeights(
    lightfm=1.0, repeat=0.0, repeat_skip=0.0, popularity=0.0, session_category=0.0, session_skip=0.0
)


def _zeros(n: int) -> np.ndarray:
    return np.zeros(n)


def test_lightfm_orders_only_discovery_candidates() -> None:
    # Candidate 0 is a favourite (watched before) with the highest LightFM score; 1-3 never watched.
    lightfm = np.array([9.0, 1.0, 3.0, 2.0])
    dwell = np.array([600.0, 0.0, 0.0, 0.0])
    cols = blend_columns(lightfm, dwell, _zeros(4), np.ones(4), _zeros(4), _zeros(4))
    lf = cols[:, COLUMNS.index("lightfm")]
    assert lf[0] == 0.0, "a favourite's place is the repeat term's job, not LightFM's"
    assert list(np.argsort(-lf[1:])) == [1, 2, 0]
    assert lf[1:].mean() == pytest.approx(0.0, abs=1e-6)  # standardised over the discovery group
    w = dataclasses.replace(ONLY_LIGHTFM, repeat=1.0)
    order = np.argsort(-blend(w, lightfm, dwell, _zeros(4), np.ones(4), _zeros(4), _zeros(4)))
    assert list(order) == [0, 2, 3, 1]


def test_favourites_open_the_page_without_filling_it() -> None:
    # Three favourites and one strong discovery: rank discounting lets the discovery in after the first.
    dwell = np.array([1200.0, 1000.0, 900.0, 0.0, 0.0])
    lightfm = np.array([0.0, 0.0, 0.0, 5.0, -5.0])
    w = BlendWeights(
        lightfm=0.5, repeat=0.5, repeat_skip=0.0, popularity=0.0, session_category=0.0, session_skip=0.0
    )
    order = list(np.argsort(-blend(w, lightfm, dwell, _zeros(5), _zeros(5), _zeros(5), _zeros(5))))
    assert order[0] == 0 and order.index(3) < order.index(2) and order[-1] == 4


def test_popularity_fallback_scores_do_not_count_as_lightfm() -> None:
    lightfm = np.array([5.0, 1.0, 0.0])  # training popularity, not a personal score
    cols = blend_columns(
        lightfm, _zeros(3), _zeros(3), _zeros(3), _zeros(3), _zeros(3), lightfm_personal=False
    )
    assert not cols[:, COLUMNS.index("lightfm")].any()


def test_old_call_shape_still_works_and_new_weights_default_off() -> None:
    w = BlendWeights.from_dict({"lightfm": 1.0, "repeat": 2.0})
    assert w.session_lightfm == 0.0
    scores = blend(w, np.array([1.0, 2.0]), _zeros(2), _zeros(2), np.ones(2), _zeros(2), _zeros(2))
    assert scores.shape == (2,) and scores[1] > scores[0]
    assert set(LIGHTFM_COLUMNS) <= set(COLUMNS)
    with pytest.raises(ValueError):
        BlendWeights(session_lightfm=-0.5)


@pytest.fixture(scope="module")
def model(small_training: object) -> RankingModel:
    return train_model(small_training, PARAMS, version="blend-test", progress=False)  # type: ignore[arg-type]


def test_session_similarity_favours_rooms_like_the_ones_watched(
    model: RankingModel, small_market: Marketplace
) -> None:
    scorer = Scorer(model)
    rooms = [r.features for r in small_market.rooms[:150]]
    watched = rooms[3]
    sim = scorer.session_similarity(rooms, [(watched, 120.0)])
    assert sim.shape == (150,) and sim.dtype == np.float32
    assert sim[3] == pytest.approx(1.0, abs=1e-5)
    same_cat = np.array([r.category == watched.category for r in rooms])
    assert sim[same_cat].mean() > sim[~same_cat].mean() + 0.1
    assert not scorer.session_similarity(rooms, []).any()  # nothing watched yet: no signal
    # Works for a viewer the model never saw; personal scores only for viewers with a vector.
    assert not scorer.is_personal("never-seen-viewer") and scorer.is_personal(model.user_ids[0])
