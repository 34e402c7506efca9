"""The availability-aware protocol ranks only live, not-yet-shown rooms, for every method alike."""

from __future__ import annotations

from ranking.blend import BlendWeights
from ranking.dataset import IMPRESSION, InteractionLog, TrainingSet
from ranking.evaluation import METHODS, collect_targets, evaluate
from ranking.model import ModelParams, train_model
from ranking.offline import schedule_from_market
from ranking.scorer import Scorer
from simulator import Marketplace

DAY_MS = 86_400_000


def test_targets_rank_only_live_rooms_not_shown_before(small_market: Marketplace, small_log: InteractionLog,
                                                       small_training: TrainingSet) -> None:
    model = train_model(small_training, ModelParams(no_components=8, epochs=2, num_threads=1), "e", progress=False)
    schedule = schedule_from_market(small_market)
    day3 = small_market.config.start_ms + 3 * DAY_MS
    (targets,) = collect_targets(small_log, schedule, Scorer(model), [(day3, day3 + DAY_MS)], [300], BlendWeights())
    assert 50 < len(targets) <= 300
    for k in range(0, len(targets), 10):
        row = int(targets.event[k])
        t, session, room = int(small_log.ts[row]), small_log.session[row], small_log.room[row]
        shown_before = set(small_log.room[(small_log.session == session) & (small_log.type == IMPRESSION)
                                          & (small_log.ts < t)].tolist()) - {int(room)}
        live = set(schedule.live_at(t).tolist())
        assert room in live
        assert targets.offsets[k + 1] - targets.offsets[k] == len(live - shown_before)
    result = evaluate(targets, BlendWeights(), BlendWeights(lightfm=0.0))
    assert set(result) == set(METHODS)
    # REP can only hit repeat targets by its signal; POP beats random overall.
    assert result["pop"]["overall"]["hr5"] > result["random"]["overall"]["hr5"]
    assert result["rep"]["repeat"]["hr5"] > result["rep"]["new"]["hr5"]
