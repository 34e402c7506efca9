"""The availability-aware protocol ranks only live, not-yet-shown rooms, for every method alike."""

from __future__ import annotations

import numpy as np

from ranking.blend import LIGHTFM_COLUMNS, BlendWeights, blend_columns
from ranking.dataset import IMPRESSION, InteractionLog, TrainingSet
from ranking.evaluation import METHODS, ablation_gain, collect_targets, evaluate, tune_weights
from ranking.model import ModelParams, train_model
from ranking.offline import schedule_from_market
from ranking.scorer import Scorer
from simulator import Marketplace

DAY_MS = 86_400_000


def test_targets_rank_only_live_rooms_not_shown_before(
    small_market: Marketplace, small_log: InteractionLog, small_training: TrainingSet
) -> None:
    model = train_model(
        small_training, ModelParams(no_components=8, epochs=2, num_threads=1), "e", progress=False
    )
    schedule = schedule_from_market(small_market)
    day3 = small_market.config.start_ms + 3 * DAY_MS
    (targets,) = collect_targets(
        small_log, schedule, Scorer(model), [(day3, day3 + DAY_MS)], [300], BlendWeights()
    )
    assert 50 < len(targets) <= 300
    for k in range(0, len(targets), 10):
        row = int(targets.event[k])
        t, session, room = int(small_log.ts[row]), small_log.session[row], small_log.room[row]
        shown_before = set(
            small_log.room[
                (small_log.session == session) & (small_log.type == IMPRESSION) & (small_log.ts < t)
            ].tolist()
        ) - {int(room)}
        live = set(schedule.live_at(t).tolist())
        assert room in live
        assert targets.offsets[k + 1] - targets.offsets[k] == len(live - shown_before)
    result = evaluate(targets, BlendWeights(), BlendWeights(lightfm=0.0))
    assert set(result) == set(METHODS)
    # REP can only hit repeat targets by its signal; POP beats random overall.
    assert result["pop"]["overall"]["hr5"] > result["random"]["overall"]["hr5"]
    assert result["rep"]["repeat"]["hr5"] > result["rep"]["new"]["hr5"]


def test_ablation_is_tuned_without_any_lightfm_column_and_gain_has_a_paired_interval(
    small_market: Marketplace, small_log: InteractionLog, small_training: TrainingSet
) -> None:
    model = train_model(
        small_training, ModelParams(no_components=8, epochs=2, num_threads=1), "a", progress=False
    )
    day3 = small_market.config.start_ms + 3 * DAY_MS
    (targets,) = collect_targets(
        small_log,
        schedule_from_market(small_market),
        Scorer(model),
        [(day3, day3 + DAY_MS)],
        [300],
        BlendWeights(),
    )
    # The recorded raw signals re-derive exactly the columns that were judged.
    k = 5
    a, b = targets.offsets[k], targets.offsets[k + 1]
    again = blend_columns(*targets.signals[a:b].T, lightfm_personal=bool(targets.personal[k]))
    assert np.allclose(again, targets.columns[a:b])
    w, _ = tune_weights(targets, BlendWeights(), use_lightfm=True, trials=10)
    w_no, _ = tune_weights(targets, BlendWeights(), use_lightfm=False, trials=10)
    assert all(getattr(w_no, c) == 0.0 for c in LIGHTFM_COLUMNS)
    assert w.repeat > 0 and w_no.repeat > 0
    gain = ablation_gain(targets, w, w_no, resamples=200)
    assert gain["ci_low"] <= gain["gain"] <= gain["ci_high"]
    assert gain["new_targets"] == int((~targets.repeat).sum())
