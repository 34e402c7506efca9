"""The learned ranker: one feature implementation, a split score equal to the full one, a fit that learns."""

from __future__ import annotations

import numpy as np

from ranking.dataset import IDENTITY_SHARE, InteractionLog, TrainingSet
from ranking.evaluation import baseline
from ranking.features import RoomFeatures
from ranking.model import ModelParams, RankingModel, train_model
from ranking.offline import attach_ranker, merchant_features, training_lists
from ranking.ranker import (
    FEATURES,
    LIGHTFM_FEATURES,
    Lists,
    Ranker,
    _first_ranks,
    baseline_ranker,
    choose_lightfm,
    design,
    fit_ranker,
    viewer_columns,
)
from ranking.replay import Target
from simulator import Marketplace

DAY_MS = 86_400_000


def test_feed_split_score_equals_the_full_design(small_targets: list[Target]) -> None:
    rng = np.random.default_rng(0)
    ranker = Ranker(rng.normal(size=len(FEATURES)))
    with_history = [t for t in small_targets if len(t.request.history) and t.request.session][:20]
    assert with_history
    for t in with_history:
        full = design(t.table, t.request).astype(np.float64) @ ranker.weights
        assert np.allclose(ranker.score(t.table, t.request), full, atol=1e-3)


def test_baseline_weights_rank_like_the_baseline_they_name(small_targets: list[Target]) -> None:
    for name in ("rep_pop", "pop"):
        as_ranker, plain = baseline_ranker(name), baseline(name)
        agree = 0
        for t in small_targets:
            a = as_ranker.score(t.table, t.request)
            b = plain(t)
            agree += int(np.argmax(a) == np.argmax(b) or b[np.argmax(a)] == b.max())
        # The ranker's popularity is the hourly snapshot's (as the trainer's cadence gives the feed), the
        # baseline's is exact at t: they may differ within the hour.
        assert agree >= 0.9 * len(small_targets), name


def test_listwise_fit_recovers_the_weights_that_made_the_choices() -> None:
    rng = np.random.default_rng(0)
    n_lists, size = 3_000, 30
    true = rng.normal(size=len(FEATURES))
    x = rng.normal(size=(n_lists * size, len(FEATURES))).astype(np.float32)
    utility = (x @ true).reshape(n_lists, size) + rng.gumbel(size=(n_lists, size))
    lists = Lists(x, np.arange(0, n_lists * size + 1, size), utility.argmax(axis=1), np.ones(n_lists), None)
    fitted = fit_ranker(lists)
    assert np.corrcoef(fitted.weights, true)[0, 1] > 0.98
    assert "l2" in fitted.info  # chosen on the latest quarter of the lists


def test_artifact_carries_ranker_table_and_histories(
    small_training: TrainingSet, small_log: InteractionLog, small_market: Marketplace
) -> None:
    model = train_model(
        small_training, ModelParams(no_components=4, epochs=1, num_threads=1), "art", progress=False
    )
    features: dict[str, RoomFeatures] = merchant_features(small_market.rooms)
    ranker = Ranker(np.linspace(-1, 1, len(FEATURES)))
    attach_ranker(model, ranker, small_log, features, small_training.until_ms)
    again = RankingModel.from_bytes(model.to_bytes())
    assert again.ranker is not None and np.allclose(again.ranker.weights, ranker.weights)
    assert again.table is not None and model.table is not None
    assert np.allclose(again.table.pop_decayed, model.table.pop_decayed)
    assert (again.table.covisit != model.table.covisit).nnz == 0
    assert again.histories is not None and model.histories is not None
    viewer = model.histories.viewer_ids[0]
    assert np.allclose(again.histories.of(viewer).stats, model.histories.of(viewer).stats)


def test_lightfm_columns_stay_only_where_they_help_on_the_validation_lists() -> None:
    rng = np.random.default_rng(1)
    n_lists, size = 2_000, 20
    x = rng.normal(size=(n_lists * size, len(FEATURES))).astype(np.float32)
    true = np.zeros(len(FEATURES))
    true[FEATURES.index("h_enters")] = 2.0
    utility = (x @ true).reshape(n_lists, size) + rng.gumbel(size=(n_lists, size))
    target = utility.argmax(axis=1)
    lf = FEATURES.index("lightfm")
    # LightFM's column points at the target in the earlier lists and away from it in the latest quarter
    # (the validation lists): it looks useful in training and does not generalise.
    for i in range(n_lists):
        x[i * size + target[i], lf] = 3.0 if i < 0.75 * n_lists else -3.0
    lists = Lists(x, np.arange(0, n_lists * size + 1, size), target, np.ones(n_lists), None)
    chosen = choose_lightfm(fit_ranker(lists), fit_ranker(lists, drop=LIGHTFM_FEATURES))
    assert chosen.info["lightfm_used"] == 0.0 and chosen.weights[lf] == 0.0
    useful = x.copy()
    for i in range(n_lists):
        useful[i * size + target[i], lf] = 3.0
    lists = Lists(useful, lists.offsets, target, np.ones(n_lists), None)
    chosen = choose_lightfm(fit_ranker(lists), fit_ranker(lists, drop=LIGHTFM_FEATURES))
    assert chosen.info["lightfm_used"] == 1.0 and chosen.weights[lf] > 0


def test_lightfm_columns_must_gain_more_than_one_standard_error() -> None:
    # The one-standard-error rule on the validation lists, list by list: a gain within noise is dropped.
    rng = np.random.default_rng(2)
    without_values = rng.random(1_000) * 2.0
    without = Ranker(np.zeros(len(FEATURES)), validation_values=without_values)

    def with_gain(gain: float) -> Ranker:
        spread = np.where(np.arange(1_000) % 2 == 0, 0.3, -0.3)  # paired differences: mean `gain`, sd 0.3
        values = without_values + gain + spread
        return Ranker(np.ones(len(FEATURES)), validation_values=values)

    noise = choose_lightfm(with_gain(0.0), without)
    assert noise.info["lightfm_used"] == 0.0 and not noise.weights.any()
    small = choose_lightfm(with_gain(0.005), without)  # above 0, below one standard error (~0.0095)
    assert small.info["lightfm_used"] == 0.0
    assert 0 < small.info["lightfm_gain"] < small.info["lightfm_gain_se"]
    real = choose_lightfm(with_gain(0.05), without)
    assert real.info["lightfm_used"] == 1.0 and real.weights.all()


def test_favourites_first_ranks_the_feed_as_validation_judged_it(small_targets: list[Target]) -> None:
    # The policy chosen on validation lists (fit_ranker's _first_ranks over the lists' columns) is the one
    # Ranker.score applies in the feed: the same ranks for every target.
    rng = np.random.default_rng(3)
    with_favourites = [
        t for t in small_targets if len(t.request.history) and (t.request.history.stats[:, 0] > 0).sum() > 2
    ][:40]
    assert with_favourites
    lists = training_lists(with_favourites, 0.0)
    for k in (1, 2):
        ranker = Ranker(rng.normal(size=len(FEATURES)), favourites_first=k)
        expected = _first_ranks(lists.x.astype(np.float64) @ ranker.weights, lists, k)
        got = [
            int((s > s[t.target]).sum())
            for t in with_favourites
            for s in [ranker.score(t.table, t.request).astype(np.float64)]
        ]
        assert list(expected) == got
        lifted = 0
        for t in with_favourites:
            cols = viewer_columns(t.table, t.request)
            order = np.argsort(-ranker.score(t.table, t.request), kind="stable")
            lifted += int(np.isin(order[: min(k, cols.favourite_rows.size)], cols.favourite_rows).all())
        assert lifted == len(with_favourites)


def test_merchant_identity_keeps_half_of_its_representation(small_training: TrainingSet) -> None:
    # LightFM's row normalisation would give the identity 1/(1 + features); it keeps IDENTITY_SHARE.
    f = small_training.item_features.tocsr()
    names = small_training.item_feature_names
    for i in range(min(f.shape[0], 50)):
        row = dict(
            zip(f.indices[f.indptr[i] : f.indptr[i + 1]], f.data[f.indptr[i] : f.indptr[i + 1]], strict=True)
        )
        assert abs(sum(row.values()) - 1.0) < 1e-5
        ident = [v for j, v in row.items() if names[j].startswith("id:")]
        assert ident == [IDENTITY_SHARE] or len(row) == 1
