"""The simulated A/B runs through the feed's own pipeline, arms split as the experiments feature splits them."""

from __future__ import annotations

import dataclasses

import numpy as np
import orjson
import pytest

from feed.experiments import Experiment, Variant
from ranking.dataset import from_simulator
from ranking.model import ModelParams
from ranking.offline import FitConfig, FittedModel, fit_model, merchant_features
from ranking.ranker import POPULARITY_HALF_LIVES_MS, baseline_ranker
from ranking.scorer import Scorer
from roomfeed.cli import build_parser, main
from simulator import Marketplace
from simulator.presets import world_config
from simulator.world import DAY_MS
from worlds.cli import run_config
from worlds.evaluate import ModelHolder, RunConfig, baseline_model, schedule_of, watch_log
from worlds.online import (
    EXPERIMENT_ID,
    TABLE_EVERY_MS,
    Arm,
    RoundTables,
    arm_metrics,
    bootstrap_diff,
    run_ab,
)

# A feed that ignores the viewer: nothing of their history, popularity or the model counts, and
# half the slots are random rooms.
BLIND = {
    "w_model": 0.0,
    "w_popularity": 0.0,
    "w_repeat": 0.0,
    "w_session_category": 0.0,
    "exploration_share": 0.5,
}


@pytest.fixture(scope="module")
def market() -> Marketplace:
    return Marketplace(config=world_config("loyal", 2, n_viewers=3_000, n_merchants=150, days=3))


@pytest.fixture(scope="module")
def fitted(market: Marketplace) -> FittedModel:
    log = watch_log(market, from_simulator(market))
    split = market.config.start_ms + 2 * DAY_MS
    fit = FitConfig(model=ModelParams(epochs=2, num_threads=1), ranker_lists=800)
    return fit_model(log, merchant_features(market.rooms), schedule_of(market), split, fit)


def test_the_baseline_arm_ranks_by_the_plain_baseline_not_the_learned_policy(fitted: FittedModel) -> None:
    learned = dataclasses.replace(fitted.model)
    assert learned.ranker is not None
    learned.with_ranker(dataclasses.replace(learned.ranker, favourites_first=3))
    weights = learned.ranker_weights
    plain = baseline_model(learned, "rep_live_pop")
    assert plain.ranker is not None
    assert plain.ranker.favourites_first == 0  # not the learned count the artifact carried
    assert np.array_equal(plain.ranker.weights, baseline_ranker("rep_live_pop").weights)
    assert (
        learned.ranker_favourites_first == 3 and learned.ranker_weights is weights
    )  # the ranker arm untouched


def test_each_arm_serves_the_merchant_table_of_the_trainers_latest_round(fitted: FittedModel) -> None:
    """As `roomfeed train` gives a kept model its round's table, an arm's model serves, every 10 minutes of
    the A/B, the popularity of the enters before that round (its weights, LightFM and viewers unchanged)."""
    holder = ModelHolder(Scorer(fitted.model))
    served = RoundTables(holder)
    base = fitted.model.table
    assert base is not None
    t0, every, hour = base.as_of_ms, TABLE_EVERY_MS, POPULARITY_HALF_LIVES_MS[0]
    first = t0 - t0 % every + every
    a, b = fitted.model.merchant_ids[:2]
    served.enter(a, first - 2_000)
    served.enter(a, first - 1_000)
    assert served.scorer is holder.scorer  # the round has not begun: the model's own table
    served.enter(b, first + 5)  # in the next round: not in its table
    table = served.scorer.model.table
    assert table is not None and table.as_of_ms == first
    assert table.pop_count[0] == base.pop_count[0] + 2 and table.pop_count[1] == base.pop_count[1]
    want = (
        base.pop_decayed[0, 0] * 0.5 ** ((first - t0) / hour) + 0.5 ** (2_000 / hour) + 0.5 ** (1_000 / hour)
    )
    assert table.pop_decayed[0, 0] == pytest.approx(want, rel=1e-9)
    kept = served.scorer
    served.round(first + every - 1)
    assert served.scorer is kept
    served.round(first + every)
    later = served.scorer.model.table
    assert (
        later is not None and later.as_of_ms == first + every and later.pop_count[1] == base.pop_count[1] + 1
    )
    np.testing.assert_array_equal(served.scorer.model.ranker_weights, fitted.model.ranker_weights)
    assert holder.scorer.model.table is base  # the arm's own watcher is left as it was


def test_a_paired_ab_plays_every_session_in_each_arm(market: Marketplace, fitted: FittedModel) -> None:
    rep = ModelHolder(Scorer(baseline_model(fitted.model, "rep_live_pop")))
    arms = [Arm("rep", rep), Arm("same", rep)]
    ab = run_ab(market, 2, arms, max_sessions=150, seed=3, design="paired")
    assert ab["rep"]["viewer"].size == ab["same"]["viewer"].size == 150
    # The same feed in two worlds of its own, the viewers with the same seeds: the same sessions.
    for key in ("viewer", "impressions", "watch_ms", "orders"):
        assert np.array_equal(ab["rep"][key], ab["same"][key])
    value, low, high = bootstrap_diff(ab["rep"], ab["same"], resamples=200, paired=True)[
        "watch_min_per_session"
    ]
    assert value == low == high == 0.0
    with pytest.raises(ValueError, match="unknown A/B design"):
        run_ab(market, 2, arms, max_sessions=10, design="crossover")


def test_a_feed_that_knows_the_viewer_beats_a_blind_one_online(
    market: Marketplace, fitted: FittedModel
) -> None:
    rep = ModelHolder(Scorer(baseline_model(fitted.model, "rep_live_pop")))
    arms = [Arm("rep", rep), Arm("blind", rep, BLIND)]
    ab = run_ab(market, 2, arms, max_sessions=400, seed=1)
    known, blind = arm_metrics(ab["rep"]), arm_metrics(ab["blind"])
    assert known["sessions"] + blind["sessions"] == 400 and min(known["sessions"], blind["sessions"]) > 120
    assert known["enter_rate"] == blind["enter_rate"] == 1.0  # swipe: every served room plays
    assert known["watch_rate"] > blind["watch_rate"] + 0.03
    assert known["watch_min_per_session"] > blind["watch_min_per_session"]


def test_arms_are_the_experiments_feature_viewer_hash() -> None:
    experiment = Experiment(EXPERIMENT_ID, "world A/B", (Variant("a", 0.5, {}), Variant("b", 0.5, {})))
    names = [experiment.variant_of(f"v{i}").name for i in range(2_000)]
    assert 0.45 < names.count("a") / len(names) < 0.55
    assert names == [experiment.variant_of(f"v{i}").name for i in range(2_000)]


def test_roomfeed_evaluate_world_judges_as_many_targets_as_bench_eval_unless_told(tmp_path) -> None:  # type: ignore[no-untyped-def]
    """One default for a world-seed's test targets (RunConfig's, which bench_eval uses); the default
    world keeps its own."""
    parser, _ = build_parser()
    world = parser.parse_args(["evaluate", "--world", "grid"])
    assert run_config(world, tmp_path).test_targets == RunConfig().test_targets
    told = parser.parse_args(["evaluate", "--world", "grid", "--targets", "700"])
    assert run_config(told, tmp_path).test_targets == 700
    assert parser.parse_args(["evaluate"]).targets is None  # the default world: simulator.evaluation.TARGETS


@pytest.mark.slow
def test_roomfeed_evaluate_world_writes_a_table_a_plot_and_the_figures(tmp_path) -> None:  # type: ignore[no-untyped-def]
    code = main(
        [
            "evaluate",
            "--world",
            "grid,loyal",
            "--seeds",
            "1",
            "--world-viewers",
            "2500",
            "--world-merchants",
            "120",
            "--epochs",
            "2",
            "--lists",
            "500",
            "--targets",
            "500",
            "--ab-sessions",
            "150",
            "--report",
            str(tmp_path),
        ]
    )
    assert code == 0
    summary = orjson.loads((tmp_path / "worlds.json").read_bytes())
    for name in ("grid", "loyal"):
        table = (tmp_path / name / "table.md").read_text()
        assert table.startswith(f"### world `{name}`")
        assert "- why LightFM adds what it adds: ablation on new targets" in table
        run = orjson.loads((tmp_path / name / "runs.json").read_bytes())[0]
        assert 0.0 <= run["offline"]["diag_lightfm_new_auc"] <= 1.0 and run["offline"]["diag_new_targets"] > 0
        headroom = run["offline"]["headroom"]  # the simulator's truth ranks the never-watched rooms too
        assert "Headroom on" in table and headroom["new_targets"] > 0
        assert headroom["methods"]["oracle_choice"]["auc"] > 0.5
        assert (tmp_path / name / "eval.png").stat().st_size > 10_000
        figures = summary["worlds"][name]
        for key in (
            "hr5_ranker",
            "hr5_reppop",
            "hr5_diff_ci_low",
            "ab_orders_per_1k_baseline",
            "repeat_share",
        ):
            assert key in figures
        assert 0.0 <= figures["hr5_reppop"] <= 1.0
