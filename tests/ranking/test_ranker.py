"""The learned ranker: one feature implementation, a split score equal to the full one, a fit that learns."""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

import numpy as np
import pytest

from ranking.dataset import IDENTITY_SHARE, InteractionLog, TrainingSet
from ranking.evaluation import baseline, viewer_bootstrap
from ranking.features import RoomFeatures
from ranking.history import STATS, S, ViewerHistory
from ranking.model import ModelParams, RankingModel, train_model
from ranking.offline import FitConfig, attach_ranker, fit_model, merchant_features, training_lists
from ranking.ranker import (
    FEATURES,
    LIGHTFM_FEATURES,
    NEW_LINE_SHIFTS,
    RATE_COLUMNS,
    F,
    Lists,
    Ranker,
    _first_ranks,
    baseline_list_ranks,
    baseline_ranker,
    choose_lightfm,
    design,
    discovery_lists,
    fit_ranker,
    judged_value,
    judged_values,
    list_ranks,
    merchant_rates,
    paired_gain,
    repeat_band,
    repeat_share,
    viewer_columns,
    with_known_offsets,
    with_new_line,
)
from ranking.replay import Schedule, Target, build_merchant_table
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
    assert model.table.rates is not None and again.table.rates is not None
    assert np.array_equal(again.table.rates, model.table.rates)
    assert again.histories is not None and model.histories is not None
    # A ranker that reads no merchant rate (FitConfig.merchant_rates off) serves a table without them.
    attach_ranker(model, ranker.without(RATE_COLUMNS), small_log, features, small_training.until_ms)
    assert model.table is not None and model.table.rates is None
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


def _two_heavy_viewers(light: int = 300, heavy: int = 40) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Validation values of two rankers: one heavy viewer's 40 lists all gain +2, another's 40 lists all
    lose 0.4, 300 light viewers' single lists move +-0.1 at random. Per list the gain looks certain; per
    viewer it is one viewer's gain against another's loss."""
    rng = np.random.default_rng(4)
    base = rng.random(light + 2 * heavy)
    diff = np.concatenate([np.full(heavy, 2.0), np.full(heavy, -0.4), rng.choice([-0.1, 0.1], light)])
    viewers = np.concatenate([np.zeros(heavy, np.int64), np.ones(heavy, np.int64), 2 + np.arange(light)])
    return base + diff, base, viewers


def test_paired_gain_counts_a_viewer_with_all_their_lists_once() -> None:
    a, b, viewers = _two_heavy_viewers()
    gain, se_lists = paired_gain(a, b)
    _, se_viewers = paired_gain(a, b, viewers)
    assert gain > 3 * se_lists  # lists as the unit: "certainly better"
    assert gain < se_viewers  # viewers as the unit: one viewer's gain, within noise
    # Every list its own viewer: the plain paired standard error, exactly.
    assert paired_gain(a, b, np.arange(a.size)) == pytest.approx((gain, se_lists))
    # The same spread the viewer bootstrap of the evaluation's intervals shows (its 95 % width / 3.92).
    boot = viewer_bootstrap(a, b, viewers, seed=5, resamples=4_000)
    assert (boot["ci_high"] - boot["ci_low"]) / 3.92 == pytest.approx(se_viewers, rel=0.2)
    with pytest.raises(ValueError, match="viewers has shape"):
        paired_gain(a, b, viewers[:-1])
    with pytest.raises(ValueError, match="at least 2 lists"):
        paired_gain(a[:1], b[:1])


def test_lightfm_columns_kept_for_one_heavy_viewer_are_dropped_when_viewers_count() -> None:
    a, b, viewers = _two_heavy_viewers()
    with_lightfm = Ranker(np.ones(len(FEATURES)), validation_values=a)
    without = Ranker(np.zeros(len(FEATURES)), validation_values=b)
    assert choose_lightfm(with_lightfm, without).info["lightfm_used"] == 1.0
    by_viewer = choose_lightfm(with_lightfm, without, viewers)
    assert by_viewer.info["lightfm_used"] == 0.0 and not by_viewer.weights.any()
    assert by_viewer.info["lightfm_gain_se"] > 3 * by_viewer.info["lightfm_gain_se_lists"]


def test_favourites_first_is_judged_per_viewer_on_the_validation_lists() -> None:
    # Favourites-first helps one heavy viewer (40 lists: they enter their favourite, the least popular
    # room) and hurts another (80 lists: they enter the most popular room, their two favourites are the
    # next two); 300 light viewers have no favourites. Per list the policy looks certain to help; per
    # viewer it is one viewer against one.
    rng = np.random.default_rng(6)
    size, helped, hurt, light = 12, 40, 80, 300
    n = helped + hurt + light
    x = np.zeros((n * size, len(FEATURES)), np.float32)
    target = np.zeros(n, np.int64)
    viewer = np.concatenate([np.zeros(helped), np.ones(hurt), 2 + np.arange(light)]).astype(np.int64)
    for i in range(n):
        rows = slice(i * size, (i + 1) * size)
        x[rows, F["pop_1h"]] = rng.permutation(np.linspace(1.0, 0.0, size))
        ranked = np.argsort(-x[rows, F["pop_1h"]])
        target[i] = ranked[0]  # the most popular room
        if viewer[i] <= 1:
            favourites = ranked[-1:] if viewer[i] == 0 else ranked[1:3]
            x[i * size + favourites, F["h_fav"]] = 1.0
            x[i * size + favourites, F["h_entered"]] = 1.0
            if viewer[i] == 0:
                target[i] = favourites[0]
    order = rng.permutation(n)  # both heavy viewers' lists spread over the training and validation lists
    keep = np.concatenate([np.arange(o * size, (o + 1) * size) for o in order])
    offsets = np.arange(0, n * size + 1, size)
    plain = fit_ranker(Lists(x[keep], offsets, target[order], np.ones(n), None), two_part=False)
    counted = fit_ranker(
        Lists(x[keep], offsets, target[order], np.ones(n), None, viewer[order]), two_part=False
    )
    assert plain.favourites_first > 0  # lists as the unit: the helped viewer's lists carry it
    assert counted.favourites_first == 0
    gain, se = counted.info["favourites_first_gain"], counted.info["favourites_first_gain_se"]
    assert 0 < gain <= se and se > 2 * plain.info["favourites_first_gain_se"]


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


def _known_and_new_lists(n_lists: int, seed: int) -> tuple[Lists, np.ndarray]:
    """Lists of 5 rooms of known merchants and 25 discovery rooms where what makes a known merchant the
    choice (many enters, and *less* popular: the viewer's own niche) is the opposite of what makes a
    discovery room the choice (popular): one score over every room cannot order both."""
    rng = np.random.default_rng(seed)
    size, known = 30, 5
    x = np.zeros((n_lists * size, len(FEATURES)), dtype=np.float32)
    pop, enters, entered = (
        FEATURES.index("pop_total"),
        FEATURES.index("h_enters"),
        FEATURES.index("h_entered"),
    )
    x[:, pop] = rng.normal(size=n_lists * size)
    is_known = np.tile(np.arange(size) < known, n_lists)
    x[is_known, entered] = 1.0
    x[is_known, enters] = rng.exponential(size=int(is_known.sum()))
    utility = np.where(is_known, 1.5 * x[:, enters] - 1.5 * x[:, pop] - 0.5, 1.5 * x[:, pop] - 1.0)
    utility = utility.reshape(n_lists, size) + rng.gumbel(size=(n_lists, size))
    lists = Lists(x, np.arange(0, n_lists * size + 1, size), utility.argmax(axis=1), np.ones(n_lists), None)
    return lists, is_known


def test_two_part_ranker_orders_discovery_rooms_by_what_brings_viewers_to_new_merchants() -> None:
    lists, _ = _known_and_new_lists(4_000, 5)
    single = fit_ranker(lists, two_part=False)
    chosen = fit_ranker(lists)  # the validation lists decide, one-standard-error rule
    assert chosen.info["two_part"] == 1.0 and chosen.discovery is not None
    assert chosen.info["two_part_gain"] > chosen.info["two_part_gain_se"] > 0
    pop = FEATURES.index("pop_total")
    # Popularity counts for a discovery room and against a known merchant, as the choices were made.
    assert chosen.discovery[pop] > 0 > chosen.weights[pop]
    held, known = _known_and_new_lists(1_000, 6)

    def value(r: Ranker) -> float:  # on held-out lists, each room scored with its part's weights
        x = held.x.astype(np.float64)
        d = r.discovery if r.discovery is not None else r.weights
        scores = np.where(known, x @ r.weights, x @ d)
        return judged_value(list_ranks(scores, held.offsets, held.target))

    assert value(chosen) > value(single) + 0.1
    assert len(discovery_lists(held)) > 100


def test_a_single_score_stays_when_two_parts_do_not_help() -> None:
    # The choices were made by one linear utility over every room: the simpler model is kept.
    lists, _ = _known_and_new_lists(2_000, 7)
    rng = np.random.default_rng(8)
    true = rng.normal(size=len(FEATURES)) * (lists.x.std(axis=0) > 0)
    utility = (lists.x @ true).reshape(len(lists), -1) + rng.gumbel(size=(len(lists), 30))
    plain = Lists(lists.x, lists.offsets, utility.argmax(axis=1), lists.weight, None)
    assert fit_ranker(plain).info["two_part"] == 0.0


def test_two_part_feed_score_equals_each_rooms_design_with_its_weights(small_targets: list[Target]) -> None:
    # The feed scores every room with the discovery weights, then the viewer's entered merchants with
    # their own weights on their few rows: the same as design() row by row with the right weights.
    rng = np.random.default_rng(4)
    ranker = Ranker(rng.normal(size=len(FEATURES)), discovery=rng.normal(size=len(FEATURES)))
    both = [t for t in small_targets if len(t.request.history) and t.entered_before.any()]
    both = [t for t in both if (~t.entered_before).any() and t.request.session][:20]
    assert both
    for t in both:
        x = design(t.table, t.request).astype(np.float64)
        entered = x[:, FEATURES.index("h_entered")] > 0
        assert ranker.discovery is not None
        full = np.where(entered, x @ ranker.weights, x @ ranker.discovery)
        assert np.allclose(ranker.score(t.table, t.request), full, atol=1e-3)
    # Operators' multipliers reach both parts.
    assert ranker.discovery is not None
    muted = ranker.multiplied({"popularity": 0.0})
    assert muted.discovery is not None and muted.discovery[FEATURES.index("pop_total")] == 0.0
    assert muted.weights[FEATURES.index("pop_total")] == 0.0


def test_artifact_carries_the_discovery_part(small_training: TrainingSet) -> None:
    model = train_model(
        small_training, ModelParams(no_components=4, epochs=1, num_threads=1), "art2", progress=False
    )
    ranker = Ranker(
        np.linspace(-1, 1, len(FEATURES)), favourites_first=2, discovery=np.linspace(1, -1, len(FEATURES))
    )
    model.with_ranker(ranker)
    again = RankingModel.from_bytes(model.to_bytes())
    assert again.ranker is not None and again.ranker.discovery is not None and ranker.discovery is not None
    assert np.allclose(again.ranker.discovery, ranker.discovery) and again.ranker.favourites_first == 2
    assert again.ranker.first_by_share == ()
    model.with_ranker(dataclasses.replace(ranker, first_by_share=(0, 1, 2, 3)))
    banded = RankingModel.from_bytes(model.to_bytes()).ranker
    assert banded is not None and banded.first_by_share == (0, 1, 2, 3) and banded.favourites_first == 2
    model.with_ranker(dataclasses.replace(ranker, known_offset=(0.0, -0.5, -1.0, 0.25)))
    offset = RankingModel.from_bytes(model.to_bytes()).ranker
    assert offset is not None and offset.known_offset == (0.0, -0.5, -1.0, 0.25)
    model.with_ranker(baseline_ranker("rep_pop"))  # a baseline has one score for every room
    plain = RankingModel.from_bytes(model.to_bytes()).ranker
    assert plain is not None and plain.discovery is None


def test_validation_choices_are_the_same_on_every_run_of_a_multithreaded_trainer(
    small_market: Marketplace, small_log: InteractionLog, small_schedule: Schedule
) -> None:
    # The trainer fits LightFM on 2 threads (Hogwild: the threads race on shared embeddings); the fit
    # whose column the ranker's lists carry runs on one thread with the model's seed, so every choice
    # made on validation (LightFM's columns, two parts, favourites first, L2) and the weights repeat.
    until = small_market.config.start_ms + 3 * DAY_MS
    cfg = FitConfig(model=ModelParams(no_components=8, epochs=2, num_threads=2), ranker_lists=600)
    features = merchant_features(small_market.rooms)
    runs = [fit_model(small_log, features, small_schedule, until, cfg, "r") for _ in range(2)]
    assert runs[0].ranker.info == runs[1].ranker.info
    assert np.array_equal(runs[0].ranker.weights, runs[1].ranker.weights)
    assert runs[0].ranker.favourites_first == runs[1].ranker.favourites_first
    with pytest.raises(ValueError, match="decision_threads"):
        fit_model(small_log, features, small_schedule, until, dataclasses.replace(cfg, decision_threads=-1))


def _history(enters: Sequence[float]) -> ViewerHistory:
    stats = np.zeros((len(enters), len(STATS)))
    stats[:, S["enters"]] = enters
    return ViewerHistory(np.arange(len(enters), dtype=np.int64), stats)


def test_repeat_share_counts_enters_to_merchants_entered_before() -> None:
    assert repeat_share(ViewerHistory.empty()) == 0.0 and repeat_band(ViewerHistory.empty()) == 0
    assert repeat_share(_history([1, 1, 1, 1])) == 0.0  # four merchants once each: an explorer
    assert repeat_share(_history([4, 0])) == 0.75  # one merchant four times (the other only shown)
    assert repeat_share(_history([2, 1, 1])) == 0.25
    assert [repeat_band(_history(e)) for e in ([1, 1], [2, 1, 1], [3, 1], [4, 0], [10])] == [0, 1, 2, 3, 3]
    with pytest.raises(ValueError, match="one per repeat band"):
        Ranker(np.zeros(len(FEATURES)), first_by_share=(1, 2))
    with pytest.raises(ValueError, match="one per repeat band"):
        Ranker(np.zeros(len(FEATURES)), first_by_share=(0, 0, -1, 0))


def _banded_lists(seed: int, loyal_band: int = 3) -> tuple[Lists, np.ndarray]:
    # Explorers (repeat band 0) enter the most popular room; their five favourites are the least popular.
    # Loyal viewers (`loyal_band`) enter their one favourite, a middling room. No column tells the two
    # apart, so one linear order and one favourites-first count cannot serve both; a count per band can.
    rng = np.random.default_rng(seed)
    size, n = 12, 900
    x = np.zeros((n * size, len(FEATURES)), np.float32)
    target = np.zeros(n, np.int64)
    band = np.where(np.arange(n) % 2 == 0, 0, loyal_band).astype(np.int64)
    for i in range(n):
        rows = slice(i * size, (i + 1) * size)
        x[rows, F["pop_1h"]] = rng.permutation(np.linspace(1.0, 0.0, size)) + rng.normal(0, 0.05, size)
        ranked = np.argsort(-x[rows, F["pop_1h"]])
        favourites = ranked[-5:] if band[i] == 0 else ranked[6:7]
        x[i * size + favourites, F["h_fav"]] = 1.0
        x[i * size + favourites, F["h_entered"]] = 1.0
        target[i] = ranked[0] if band[i] == 0 else favourites[0]
    lists = Lists(x, np.arange(0, n * size + 1, size), target, np.ones(n), None, np.arange(n), band)
    return lists, band


def test_favourites_first_count_is_chosen_per_repeat_band_on_validation() -> None:
    lists, band = _banded_lists(11)
    ranker = fit_ranker(lists, two_part=False)
    assert ranker.first_by_share, ranker.info
    assert ranker.first_by_share[0] == 0 and ranker.first_by_share[3] >= 1
    # The viewer's history picks the count the feed applies.
    assert ranker.first_count(_history([1, 1, 1])) == 0 and ranker.first_count(_history([9, 1])) >= 1
    # Without bands (every list in band 0) one count serves everyone, and validation judged it worse.
    one = fit_ranker(dataclasses.replace(lists, band=None), two_part=False)
    assert one.first_by_share == ()
    assert ranker.info["validation"] > one.info["validation"]
    # On lists where both kinds of viewer sit in the same band nothing can tell them apart: no band policy.
    same, _ = _banded_lists(11, loyal_band=0)
    assert fit_ranker(same, two_part=False).first_by_share == ()


def test_banded_favourites_first_ranks_the_feed_as_validation_judged_it(small_targets: list[Target]) -> None:
    # One code path: the per-band counts fit_ranker judges on validation lists (_first_ranks with each
    # list's band) are the counts Ranker.score applies from the request's history.
    rng = np.random.default_rng(4)
    with_favourites = [
        t for t in small_targets if len(t.request.history) and (t.request.history.stats[:, 0] > 0).sum() > 2
    ][:60]
    lists = training_lists(with_favourites, 0.0)
    assert lists.band is not None and len(set(lists.band.tolist())) >= 2
    policy = (3, 0, 1, 2)
    ranker = Ranker(rng.normal(size=len(FEATURES)), favourites_first=1, first_by_share=policy)
    expected = _first_ranks(lists.x.astype(np.float64) @ ranker.weights, lists, np.array(policy)[lists.band])
    got = [
        int((s > s[t.target]).sum())
        for t in with_favourites
        for s in [ranker.score(t.table, t.request).astype(np.float64)]
    ]
    assert list(expected) == got
    # The bands matter on these lists: a feed that applied one count to everyone would fail above.
    assert (_first_ranks(lists.x.astype(np.float64) @ ranker.weights, lists, 1) != expected).any()


def _taste_for_new_merchants(n_lists: int, seed: int) -> Lists:
    """`_known_and_new_lists` where LightFM's column also knows which discovery room the viewer takes (a
    taste for merchants never entered) and is noise on the known merchants' rooms."""
    lists, is_known = _known_and_new_lists(n_lists, seed)
    rng = np.random.default_rng(seed + 100)
    size = int(lists.offsets[1])
    lf = FEATURES.index("lightfm")
    x = lists.x.copy()
    x[:, lf] = rng.normal(size=x.shape[0])
    pop, enters = FEATURES.index("pop_total"), FEATURES.index("h_enters")
    utility = np.where(is_known, 1.5 * x[:, enters] - 1.5 * x[:, pop] - 0.5, 1.5 * x[:, pop] + x[:, lf] - 1.0)
    utility = utility.reshape(n_lists, size) + rng.gumbel(size=(n_lists, size))
    return Lists(x, lists.offsets, utility.argmax(axis=1), lists.weight, None)


def _latest_quarter(lists: Lists) -> Lists:
    """The validation lists `fit_ranker` holds out when it is given none."""
    return lists.subset(np.arange(int(len(lists) * 0.75), len(lists)))


def test_lightfm_columns_can_earn_their_place_in_the_discovery_part_only() -> None:
    lists = _taste_for_new_merchants(4_000, 11)
    lf = FEATURES.index("lightfm")
    discovery_only = fit_ranker(lists, drop=LIGHTFM_FEATURES, discovery_only=LIGHTFM_FEATURES)
    assert discovery_only.discovery is not None
    assert discovery_only.weights[lf] == 0.0 and discovery_only.discovery[lf] > 0
    everywhere = fit_ranker(lists)
    without = fit_ranker(lists, drop=LIGHTFM_FEATURES)
    chosen = choose_lightfm(everywhere, without, discovery=discovery_only, validation=_latest_quarter(lists))
    # LightFM helps the discovery part beyond one error; everywhere adds nothing beyond that: the simpler.
    assert chosen is discovery_only
    assert chosen.info["lightfm_discovery_gain"] > chosen.info["lightfm_discovery_gain_se"] > 0
    assert chosen.info["lightfm_used"] == 1.0 and chosen.info["lightfm_discovery_only"] == 1.0
    # Where LightFM's column points at the target in the training lists and away from it in the latest
    # quarter (the validation lists), nothing of it is kept, in either part.
    noise = _known_and_new_lists(4_000, 11)[0]
    n = len(noise)
    rows = noise.offsets[:-1] + noise.target
    noise.x[rows, lf] = np.where(np.arange(n) < 0.75 * n, 3.0, -3.0)
    dropped = choose_lightfm(
        fit_ranker(noise),
        fit_ranker(noise, drop=LIGHTFM_FEATURES),
        discovery=fit_ranker(noise, drop=LIGHTFM_FEATURES, discovery_only=LIGHTFM_FEATURES),
        validation=_latest_quarter(noise),
    )
    assert dropped.info["lightfm_used"] == 0.0 and dropped.info["lightfm_discovery_only"] == 0.0
    assert dropped.discovery is None or dropped.discovery[lf] == 0.0


def test_discovery_only_names_known_features() -> None:
    lists = _taste_for_new_merchants(200, 12)
    with pytest.raises(ValueError, match="discovery_only names unknown features"):
        fit_ranker(lists, drop=LIGHTFM_FEATURES, discovery_only=("lightfm_typo",))


def test_lightfm_in_the_discovery_part_must_not_cost_the_favourites() -> None:
    # Its discovery order wins on the validation's discovery lists, but on every list (the favourites
    # too) it loses by far more than one standard error: it is not kept.
    validation = _taste_for_new_merchants(600, 14)
    lf, pop = FEATURES.index("lightfm"), FEATURES.index("pop_total")
    plain = np.zeros(len(FEATURES))
    plain[pop] = 1.0
    taste = plain.copy()
    taste[lf] = 1.0
    values = np.random.default_rng(4).random(len(validation)) * 2.0
    without = Ranker(plain, validation_values=values)
    spread = np.where(np.arange(len(validation)) % 2 == 0, 0.1, -0.1)

    def in_discovery(overall_gain: float) -> Ranker:
        return Ranker(plain, discovery=taste, validation_values=values + overall_gain + spread)

    everywhere = Ranker(taste, validation_values=values - 0.001 - spread)  # no better than either
    costly = choose_lightfm(everywhere, without, discovery=in_discovery(-0.2), validation=validation)
    assert costly is without and costly.info["lightfm_used"] == 0.0
    assert costly.info["lightfm_discovery_gain"] > costly.info["lightfm_discovery_gain_se"]
    assert costly.info["lightfm_discovery_overall_gain"] < -costly.info["lightfm_discovery_overall_gain_se"]
    cheap = in_discovery(-0.001)  # within noise on every list: the discovery gain decides
    assert choose_lightfm(everywhere, without, discovery=cheap, validation=validation) is cheap


def _known_against_discovery(seed: int, explorers_take_known: float) -> tuple[Lists, np.ndarray]:
    # A learned order that puts the viewer's known merchants on top for every viewer: explorers (repeat band 0)
    # enter a known merchant with probability `explorers_take_known`, else a discovery room; loyal viewers
    # (band 3) always enter their best-scored known merchant.
    rng = np.random.default_rng(seed)
    size, n = 12, 1_200
    x = np.zeros((n * size, len(FEATURES)), np.float32)
    scores = np.zeros(n * size)
    target = np.zeros(n, np.int64)
    band = np.where(np.arange(n) % 2 == 0, 0, 3).astype(np.int64)
    for i in range(n):
        at = i * size
        known = rng.choice(size, 4, replace=False)
        x[at + known, F["h_entered"]] = 1.0
        s = rng.normal(0.0, 1.0, size)
        s[known] += 3.0
        scores[at : at + size] = s
        others = np.setdiff1d(np.arange(size), known)
        if band[i] == 3 or rng.random() < explorers_take_known:
            target[i] = known[np.argmax(s[known])]
        else:
            target[i] = others[np.argmax(s[others] + rng.normal(0.0, 0.3, others.size))]
    lists = Lists(x, np.arange(0, n * size + 1, size), target, np.ones(n), None, np.arange(n), band)
    return lists, scores


def test_known_merchant_offset_per_band_gives_explorers_slots_to_discovery_rooms() -> None:
    lists, scores = _known_against_discovery(5, explorers_take_known=0.1)
    ranker = Ranker(np.zeros(len(FEATURES)), validation_scores=scores)
    for rule in ("discovery", "likelihood"):
        chosen = with_known_offsets(ranker, lists, rule)
        assert len(chosen.known_offset) == 4, (rule, chosen.info)
        # Explorers' known merchants sink below the discovery rooms; loyal viewers' stay on top.
        assert chosen.known_offset[0] < -1.0 and chosen.known_offset[3] >= 0.0, (rule, chosen.known_offset)
        # Bands without validation lists keep no offset.
        assert chosen.known_offset[1] == chosen.known_offset[2] == 0.0
        before = judged_value(list_ranks(scores, lists.offsets, lists.target)[lists.band == 0])
        assert chosen.validation_values is not None
        assert float(chosen.validation_values[lists.band == 0].mean()) > before
    assert with_known_offsets(ranker, lists, "none") is ranker
    with pytest.raises(ValueError, match="one of"):
        with_known_offsets(ranker, lists, "best")


def test_discovery_rule_moves_known_merchants_down_only_within_one_error_of_the_best() -> None:
    # Explorers take a known merchant as often as the order says (half the time): sinking every known
    # merchant below the discovery rooms loses beyond one error, so the rule stops before that.
    lists, scores = _known_against_discovery(6, explorers_take_known=0.6)
    chosen = with_known_offsets(Ranker(np.zeros(len(FEATURES)), validation_scores=scores), lists, "discovery")
    sunk = scores + (lists.x[:, F["h_entered"]] > 0) * -3.0
    explorers = lists.band == 0
    assert chosen.validation_values is not None
    kept = float(chosen.validation_values[explorers].mean())
    assert kept > judged_value(list_ranks(sunk, lists.offsets, lists.target)[explorers])
    assert chosen.info["known_offset_band_0"] > -3.0


def test_known_merchant_offset_ranks_the_feed_as_validation_judged_it(small_targets: list[Target]) -> None:
    # One code path: the offsets with_known_offsets judges on validation lists (added to each list's known
    # merchants by its band) are what Ranker.score adds from the request's history.
    rng = np.random.default_rng(8)
    with_known = [t for t in small_targets if (t.request.history.stats[:, 0] > 0).sum() >= 1][:80]
    lists = training_lists(with_known, 0.0)
    assert lists.band is not None and len(set(lists.band.tolist())) >= 2
    offsets = (-2.0, 0.5, -1.0, -0.25)
    ranker = Ranker(rng.normal(size=len(FEATURES)), favourites_first=1, known_offset=offsets)
    plain = lists.x.astype(np.float64) @ ranker.weights
    shifted = plain + np.array(offsets)[lists.band][
        np.repeat(np.arange(len(lists)), np.diff(lists.offsets))
    ] * (lists.x[:, F["h_entered"]] > 0)
    expected = _first_ranks(shifted, lists, 1)
    got = [
        int((s > s[t.target]).sum())
        for t in with_known
        for s in [ranker.score(t.table, t.request).astype(np.float64)]
    ]
    assert list(expected) == got
    assert (_first_ranks(plain, lists, 1) != expected).any()


def test_the_discovery_part_can_be_fit_pairwise_and_learns_the_same_direction() -> None:
    # The pairwise objective (the target against each other discovery room) orders the discovery rooms by
    # what brought viewers to new merchants, as the listwise softmax does, on held-out lists.
    lists, _ = _known_and_new_lists(3_000, 11)
    softmax = fit_ranker(lists, two_part=True)
    pairwise = fit_ranker(lists, two_part=True, discovery_objective="pairwise")
    assert softmax.discovery is not None and pairwise.discovery is not None
    pop = FEATURES.index("pop_total")
    assert pairwise.discovery[pop] > 0 and softmax.discovery[pop] > 0
    held, _ = _known_and_new_lists(1_000, 12)
    on = discovery_lists(held)

    def value(r: Ranker) -> float:
        assert r.discovery is not None
        return judged_value(list_ranks(on.x.astype(np.float64) @ r.discovery, on.offsets, on.target))

    chance = judged_value(list_ranks(np.zeros(on.x.shape[0]), on.offsets, on.target))
    assert value(pairwise) > chance + 0.3
    assert abs(value(pairwise) - value(softmax)) < 0.05
    with pytest.raises(ValueError, match="discovery_objective"):
        fit_ranker(lists, discovery_objective="pointwise")


def test_the_discovery_part_takes_its_l2_from_its_own_grid_on_the_validation_lists() -> None:
    lists, _ = _known_and_new_lists(2_000, 13)
    grid = (1e-3, 1.0, 30.0)
    chosen = fit_ranker(lists, two_part=True, discovery_l2_grid=grid)
    assert chosen.info["discovery_l2"] in grid
    # A grid of one value is that value; the whole model keeps its own grid.
    only = fit_ranker(lists, two_part=True, discovery_l2_grid=(30.0,))
    assert only.info["discovery_l2"] == 30.0 and only.info["l2"] in (1e-3, 1e-2)
    with pytest.raises(ValueError, match="discovery_l2_grid"):
        fit_ranker(lists, discovery_l2_grid=(0.0,))


def test_a_band_too_small_for_its_own_offset_chooses_it_with_its_neighbour_band_when_pooled() -> None:
    # Band 2 and a handful of band-3 viewers are explorers whose known merchants the learned order puts on
    # top: with "zero" band 3 (too few lists) keeps no offset; pooled with band 2 it takes band 2's choice.
    lists, scores = _known_against_discovery(9, explorers_take_known=0.1)
    band = np.where(lists.viewers() % 2 == 0, 2, 1).astype(np.int64)
    band[np.flatnonzero(band == 2)[:30]] = 3
    lists = dataclasses.replace(lists, band=band)
    ranker = Ranker(np.zeros(len(FEATURES)), validation_scores=scores)
    zero = with_known_offsets(ranker, lists, "discovery")
    pooled = with_known_offsets(ranker, lists, "discovery", small_bands="pool")
    assert zero.known_offset[2] < -1.0 and zero.known_offset[3] == 0.0
    assert pooled.known_offset[2] == zero.known_offset[2]
    assert pooled.known_offset[3] < -1.0
    # Band 0 has no list at all: nothing to pool, no offset.
    assert pooled.known_offset[0] == 0.0
    with pytest.raises(ValueError, match="small_bands"):
        with_known_offsets(ranker, lists, "discovery", small_bands="all")


def _favourites_over_new(seed: int, known_score: float, pop_noise: float) -> tuple[Lists, np.ndarray]:
    # Lists of 4 known merchants (h_enters 4..1, learned score `known_score` + 0.25 x h_enters) and 6 new ones
    # (learned score q); half the targets are the best known merchant, half a new one drawn by q plus noise;
    # popularity is q plus `pop_noise` (both popularity columns), so POP orders new rooms less well than q.
    rng = np.random.default_rng(seed)
    n, size = 1_000, 10
    x = np.zeros((n * size, len(FEATURES)), np.float32)
    scores = np.zeros(n * size)
    target = np.zeros(n, np.int64)
    for i in range(n):
        at = i * size
        q = rng.normal(0.0, 1.0, size)
        x[at : at + 4, F["h_entered"]] = 1.0
        x[at : at + 4, F["h_enters"]] = [4, 3, 2, 1]
        pop = np.exp(q + rng.normal(0.0, pop_noise, size))
        x[at : at + size, F["pop_total"]] = x[at : at + size, F["pop_1h"]] = pop
        scores[at : at + size] = q
        scores[at : at + 4] = known_score + 0.25 * np.array([4, 3, 2, 1])
        target[i] = 0 if i % 2 == 0 else 4 + int(np.argmax(q[4:] + rng.normal(0.0, 1.0, size - 4)))
    band = np.full(n, 2, dtype=np.int64)
    return Lists(
        x, np.arange(0, n * size + 1, size), target, np.ones(n), None, np.arange(n) // 2, band
    ), scores


def test_new_line_shifts_known_merchants_down_only_as_far_as_validation_needs() -> None:
    # The learned order puts all 4 known merchants on top: new targets on the full list trail popularity's
    # on the validation lists while the overall lead over REP-then-POP is wide. The rule takes the least
    # shift that puts new targets above popularity by more than one error with the overall line kept.
    lists, scores = _favourites_over_new(1, known_score=1.5, pop_noise=1.5)
    ranker = Ranker(np.zeros(len(FEATURES)), validation_scores=scores)
    shifted = with_new_line(ranker, lists, "shift")
    shift = shifted.info["new_line_shift"]
    assert shift < 0.0 and shifted.known_offset == (shift,) * 4
    assert shifted.info["new_line_new_gain_0"] < 0.0
    assert shifted.info["new_line_new_gain"] > shifted.info["new_line_new_gain_se"]
    assert shifted.info["new_line_overall_gain"] > shifted.info["new_line_overall_gain_se"]
    # The shift before it did not meet the new-target line: nothing more was spent than needed.
    known = lists.x[:, F["h_entered"]] > 0
    new = ~known[lists.offsets[:-1] + lists.target]
    pop_hits = _hits(lists, lists.x[:, F["pop_1h"]].astype(np.float64))
    before = NEW_LINE_SHIFTS[NEW_LINE_SHIFTS.index(shift) - 1]
    hits = list_ranks(scores + before * known, lists.offsets, lists.target) < 5
    gain, se = paired_gain(hits[new].astype(float), pop_hits[new], lists.viewers()[new])
    assert gain <= se
    # The validation values are those of the shifted order (what with_known_offsets' scores + offsets serve).
    assert shifted.validation_values is not None
    shifted_ranks = list_ranks(scores + shift * known, lists.offsets, lists.target)
    assert np.allclose(shifted.validation_values, judged_values(shifted_ranks))
    with pytest.raises(ValueError, match="one of"):
        with_new_line(ranker, lists, "lift")


def test_new_line_leaves_a_ranker_alone_when_the_line_holds_or_cannot_be_met() -> None:
    def ranker_of(scores: np.ndarray) -> Ranker:
        return Ranker(np.zeros(len(FEATURES)), validation_scores=scores)

    # Known merchants already below the best new rooms: new targets beat popularity as chosen.
    lists, scores = _favourites_over_new(2, known_score=-1.0, pop_noise=1.5)
    ranker = ranker_of(scores)
    assert with_new_line(ranker, lists, "shift") is ranker and ranker.info["new_line_shift"] == 0.0
    # Popularity orders new rooms as well as the ranker: no shift puts new targets above it.
    lists, scores = _favourites_over_new(3, known_score=1.5, pop_noise=0.0)
    ranker = ranker_of(scores)
    assert with_new_line(ranker, lists, "shift") is ranker and ranker.info["new_line_shift"] == 0.0
    assert with_new_line(ranker, lists, "none") is ranker


def _hits(lists: Lists, score: np.ndarray) -> np.ndarray:
    return (list_ranks(score, lists.offsets, lists.target) < 5).astype(np.float64)


def test_validation_baselines_rank_by_the_popularity_the_evaluation_judges_with(
    small_targets: list[Target],
) -> None:
    # The lists carry each row's POP and live POP up to the list's moment (what ranking.evaluation's baselines
    # rank by), not only the table's 10-minute snapshot in the pop columns: with_new_line compares with those.
    lists = training_lists(small_targets, 0.0)
    assert lists.popularity is not None and lists.popularity.shape == (lists.x.shape[0], 2)
    ranks = baseline_list_ranks(lists)
    for name in ("pop", "live_pop"):
        # Targets without a tie at the target: the rank is the count of rooms above it, in both.
        values = [np.asarray(getattr(t, name)) for t in small_targets]
        expected = [int((v > v[t.target]).sum()) for v, t in zip(values, small_targets, strict=True)]
        unique = [int((v == v[t.target]).sum()) == 1 for v, t in zip(values, small_targets, strict=True)]
        assert sum(unique) > len(small_targets) // 2
        # (both break near-ties by the same 1e-9 relative noise: a merchant within it of the target may flip)
        got = np.array([r for r, u in zip(ranks[name].tolist(), unique, strict=True) if u])
        want = np.array([e for e, u in zip(expected, unique, strict=True) if u])
        assert np.abs(got - want).max() <= 1 and (got == want).mean() > 0.98
    # Without it, the snapshot columns stand in: an older popularity, another order on some lists.
    snapshot = baseline_list_ranks(dataclasses.replace(lists, popularity=None))
    assert (snapshot["live_pop"] != ranks["live_pop"]).any()


def test_enter_rate_corrects_for_exposure_where_popularity_follows_it() -> None:
    # Merchant 0 was shown 1,000 times and entered 50 times; merchant 1 shown 40 times, entered 20 times.
    # Its count says merchant 0 is the more popular, its rate per impression says the opposite.
    rates = merchant_rates(
        impressions=np.array([1_000.0, 40.0, 0.0]),
        enters=np.array([50.0, 20.0, 0.0]),
        visits=np.array([50.0, 20.0, 0.0]),
        watches=np.array([10.0, 15.0, 0.0]),
    )
    enter_rate, watch_rate, unseen = (RATE_COLUMNS.index(c) for c in ("enter_rate", "watch_rate", "unseen"))
    assert rates[1, enter_rate] > rates[0, enter_rate]
    assert rates[1, watch_rate] > rates[0, watch_rate]
    assert list(rates[:, unseen]) == [0.0, 0.0, 1.0, 1.0]


def test_a_merchant_never_entered_scores_the_platform_rate_not_the_lowest() -> None:
    impressions, enters = np.array([100.0, 100.0, 0.0]), np.array([40.0, 2.0, 0.0])
    rates = merchant_rates(impressions, enters, enters, enters / 2)
    at = RATE_COLUMNS.index("enter_rate")
    platform = np.log(42.0 / 200.0)
    # The new merchant (no impression yet) and a merchant the table does not know (the last row) score the
    # platform's rate: between the good merchant and the poor one, not below both.
    assert rates[2, at] == pytest.approx(platform) and rates[3, at] == pytest.approx(platform)
    assert rates[1, at] < platform < rates[0, at]


def test_rates_need_evidence_a_platform_without_impressions_leaves_the_column_at_zero() -> None:
    rates = merchant_rates(np.zeros(2), np.array([3.0, 1.0]), np.array([3.0, 1.0]), np.array([1.0, 1.0]))
    assert np.all(rates[:, RATE_COLUMNS.index("enter_rate")] == 0.0)
    assert np.all(np.isfinite(rates))


def test_rate_columns_come_from_the_log_before_the_table_and_reach_every_room(
    small_log: InteractionLog, small_market: Marketplace, small_targets: list[Target]
) -> None:
    features: dict[str, RoomFeatures] = merchant_features(small_market.rooms)
    start = small_market.config.start_ms
    early = build_merchant_table(small_log, features, start + DAY_MS, small_log.merchant_ids, [])
    late = build_merchant_table(small_log, features, start + 3 * DAY_MS, small_log.merchant_ids, [])
    assert early.rates is not None and late.rates is not None
    unseen = RATE_COLUMNS.index("unseen")
    # More of the log: fewer merchants nobody entered yet, never more.
    assert late.rates[:, unseen].sum() <= early.rates[:, unseen].sum()
    assert not np.array_equal(early.rates, late.rates)
    t = small_targets[0]
    x = design(t.table, t.request)
    assert t.table.rates is not None
    items = t.request.items
    expected = t.table.rates[np.where(items >= 0, items, t.table.rates.shape[0] - 1)]
    cols = [F[c] for c in RATE_COLUMNS]
    assert np.allclose(x[:, cols], expected, atol=1e-6)
