"""The promotion gate protects viewers: a model worse than the best simple baseline never serves."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import numpy as np
import pytest

from feed.config import RankingConfig
from feed.context import Candidates, FeedContext
from feed.replay import FeedPage
from feed.stages import Rank, Score, rank_model
from ranking import train as training
from ranking.dataset import WeightParams, load_archive
from ranking.evaluation import Evaluation, Judged, baseline, ranker_method
from ranking.model import ModelParams
from ranking.offline import FitConfig, FittedModel, fit_model, merchant_features
from ranking.ranker import LIGHTFM_FEATURES, F, baseline_ranker, judged_values, paired_gain
from ranking.registry import ModelRegistry, ModelWatcher, gate
from ranking.replay import build_merchant_table, replay
from ranking.scorer import Scorer
from ranking.train import lightfm_hurts
from rooms.live_index import LiveRoom
from simulator import Marketplace

FIGURES = {"best_baseline": "rep_pop", "hr5_rep_pop": 0.5, "ndcg10_rep_pop": 0.4}


def test_gate_rule() -> None:
    better = {**FIGURES, "hr5_ranker": 0.55, "ndcg10_ranker": 0.45}
    assert gate(better, serving=False).action == "promote"
    worse_ndcg = {**better, "ndcg10_ranker": 0.39}
    assert gate(worse_ndcg, serving=False).action == "rank_by_baseline"
    assert gate(worse_ndcg, serving=True).action == "keep_serving"
    below_serving = {**better, "hr5_serving": 0.56, "ndcg10_serving": 0.44}
    decision = gate(below_serving, serving=True)
    assert decision.action == "keep_serving" and "serving model" in decision.reason


@pytest.fixture(scope="module")
def archive_market() -> Marketplace:
    return Marketplace(seed=21, n_merchants=150, n_viewers=2_000, days=2)


async def _archive(pool: Any, market: Marketplace) -> None:
    from events.archive import ArchiveSink

    kinds = ("impression", "enter", "leave", "purchase", "follow")
    events = [e for e in market.events() if e["type"] in kinds]
    sink = ArchiveSink(pool)
    for k in range(0, len(events), 5_000):
        await sink.write(events[k : k + 5_000])


def _sabotage(fit: Any) -> Any:
    """fit_model whose ranker ranks the viewer's favourites last: worse than any REP baseline."""

    def bad(*args: Any, **kwargs: Any) -> FittedModel:
        fitted: FittedModel = fit(*args, **kwargs)
        w = fitted.ranker.weights.copy()
        w[F["h_enters"]] = -50.0
        w[F["h_entered"]] = -50.0
        fitted.ranker = replace(fitted.ranker, weights=w)
        fitted.model.ranker_weights = w
        return fitted

    return bad


async def test_a_model_worse_than_the_best_baseline_is_refused_and_the_feed_falls_back(
    ranking_pool: Any, archive_market: Marketplace, monkeypatch: pytest.MonkeyPatch
) -> None:
    await _archive(ranking_pool, archive_market)
    registry = ModelRegistry(ranking_pool)
    async with ranking_pool.acquire() as conn:
        await conn.execute("UPDATE ranking_models SET status = 'retired' WHERE status = 'promoted'")
    monkeypatch.setattr(
        training, "fit_model", _sabotage(fit_model)
    )  # ranking.train's: it imports it from ranking.offline
    until = archive_market.config.start_ms + 2 * 86_400_000
    kwargs: dict[str, Any] = dict(
        params=ModelParams(no_components=8, epochs=2, num_threads=1),
        weights=WeightParams(),
        days=2,
        eval_hours=12,
        features=merchant_features(archive_market.rooms),
        until_ms=until,
        max_targets=400,
        fit=FitConfig(model=ModelParams(no_components=8, epochs=2, num_threads=1), ranker_lists=1_500),
        # As `roomfeed train` runs it: the gate judges the page the feed would serve.
        page_of=lambda schedule: FeedPage(schedule.room_features),
    )
    first = await training.train_once(ranking_pool, **kwargs)
    # No model serves yet: the feed ranks by the best simple baseline, and the registry says why.
    assert first.metrics["gate"] == "rank_by_baseline", first.metrics["gate_reason"]
    assert "below the best simple baseline" in first.metrics["gate_reason"]
    best = first.metrics["best_baseline"]
    assert first.promoted and await registry.promoted_version() == first.version
    serving = await registry.load(first.version)
    assert serving.ranker is not None
    assert np.allclose(serving.ranker.weights, baseline_ranker(best).weights)
    record = await registry.get(first.version)
    assert record is not None and record.metrics["gate"] == "rank_by_baseline"

    # The feed with that artifact ranks the viewer's favourite merchant first (REP), by the baseline.
    scorer = Scorer(serving)
    histories = serving.histories
    assert histories is not None
    viewer = histories.viewer_ids[0]
    mine = histories.of(viewer)
    favourite = serving.merchant_ids[int(mine.merchants[np.argmax(mine.stats[:, 0])])]
    rooms = [
        LiveRoom(f"room_{i}", m, "t", "x", (), "mid", "one_to_many", "", 0.0, "u", "live", None)
        for i, m in enumerate([*serving.merchant_ids[:20], favourite])
    ]
    ctx = FeedContext(viewer, "ses", 5, RankingConfig())
    ctx.candidates = Candidates.of(rooms).fresh_copy()
    watcher = type("W", (), {"scorer": scorer})()
    await Score(watcher).apply(ctx)
    await Rank(watcher).apply(ctx)
    top = rooms[int(np.argmax(ctx.candidates.score))]
    assert top.merchant_id in {serving.merchant_ids[int(m)] for m in mine.merchants[mine.stats[:, 0] > 0]}

    # With a model serving, a worse candidate is refused and the serving model stays.
    second = await training.train_once(ranking_pool, **kwargs)
    assert second.metrics["gate"] == "keep_serving" and not second.promoted
    assert await registry.promoted_version() == first.version


async def test_the_model_the_gate_keeps_serves_the_latest_rounds_merchant_table(
    ranking_pool: Any, archive_market: Marketplace, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The ranker's lists and the gate read the table of the trainer's last round; the feed serves the
    same one, not the table of the round that trained the serving model, however long the gate keeps it."""
    await _archive(ranking_pool, archive_market)
    registry = ModelRegistry(ranking_pool)
    async with ranking_pool.acquire() as conn:
        await conn.execute("UPDATE ranking_models SET status = 'retired' WHERE status = 'promoted'")
    monkeypatch.setattr(training, "fit_model", _sabotage(fit_model))  # every candidate is refused
    end = archive_market.config.start_ms + 2 * 86_400_000
    features = merchant_features(archive_market.rooms)
    kwargs: dict[str, Any] = dict(
        params=ModelParams(no_components=8, epochs=2, num_threads=1),
        weights=WeightParams(),
        days=2,
        eval_hours=12,
        features=features,
        max_targets=300,
        fit=FitConfig(model=ModelParams(no_components=8, epochs=2, num_threads=1), ranker_lists=1_000),
    )
    earlier = end - 8 * 3_600_000
    first = await training.train_once(ranking_pool, until_ms=earlier, **kwargs)
    assert first.promoted and first.metrics["gate"] == "rank_by_baseline"
    watcher = ModelWatcher(registry)
    assert await watcher.check()
    assert watcher.scorer is not None
    before = rank_model(watcher.scorer)
    assert before.table.as_of_ms == earlier

    second = await training.train_once(ranking_pool, until_ms=end, **kwargs)
    assert second.metrics["gate"] == "keep_serving" and not second.promoted
    assert await registry.promoted_version() == first.version  # the same model serves ...
    assert second.metrics["serving_table_as_of_ms"] == end
    assert await watcher.check()  # ... rewritten: the watcher reloads it
    assert watcher.scorer is not None and watcher.scorer.model_version == first.version
    after = rank_model(watcher.scorer)
    assert after.table.as_of_ms == end
    np.testing.assert_array_equal(after.ranker.weights, before.ranker.weights)  # same weights
    assert after.categories == before.categories
    # The served table is the one the replay builds for that moment, in the model's merchant positions.
    log = await load_archive(ranking_pool, end - 2 * 86_400_000, end)
    want = build_merchant_table(log, features, end, watcher.scorer.model.merchant_ids, list(after.categories))
    np.testing.assert_array_equal(after.table.pop_count, want.pop_count)
    np.testing.assert_allclose(after.table.pop_decayed, want.pop_decayed)
    assert after.table.pop_count.sum() > before.table.pop_count.sum()  # the 8 hours since the model


def test_lightfm_columns_that_hurt_on_the_held_out_hours_are_dropped_by_the_rule() -> None:
    # Dropped only when the ablation beats them by more than one standard error (viewers as the unit).
    assert lightfm_hurts({"lightfm_heldout_gain": -0.02, "lightfm_heldout_gain_se": 0.005})
    assert not lightfm_hurts({"lightfm_heldout_gain": -0.004, "lightfm_heldout_gain_se": 0.005})  # noise
    assert not lightfm_hurts({"lightfm_heldout_gain": 0.01, "lightfm_heldout_gain_se": 0.005})
    with pytest.raises(KeyError, match="lightfm_heldout_gain"):
        lightfm_hurts({"hr5_ranker": 0.55, "ndcg10_ranker": 0.45})


def test_gate_metrics_give_the_held_out_ablation_its_viewer_standard_error() -> None:
    # Four viewers, ten targets each. Without LightFM viewer 0's targets all rise to the top and viewer
    # 1's sink: the mean favours the ablation, but it is one viewer's gain against another's loss.
    ranks = np.tile(np.array([1, 3, 7, 12]), 10)
    viewers = np.repeat(np.arange(4), 10)
    none = -np.ones(40, np.int64)

    def metrics_for(without: np.ndarray) -> dict[str, Any]:
        judged = {
            "ranker": Judged(ranks, none),
            "ranker_no_lightfm": Judged(without, none),
            "rep_pop": Judged(ranks, none),
        }
        figures = {"hr1": 0.1, "hr5": 0.5, "hr10": 0.7, "ndcg10": 0.4}
        results = {name: {"overall": figures} for name in judged}
        ev = Evaluation(results, judged, "rep_pop", "pop", 0.5, 40, viewers)
        return training.gate_metrics(ev, serving=False)

    mixed = np.where(viewers == 0, 0, np.where(viewers == 1, ranks + 4, ranks))
    metrics = metrics_for(mixed)
    gain, se = paired_gain(judged_values(ranks), judged_values(mixed), viewers)
    assert metrics["lightfm_heldout_gain"] == round(gain, 5) < 0
    assert metrics["lightfm_heldout_gain_se"] == round(se, 5) > -gain
    assert not lightfm_hurts(metrics)  # a mean gain of the ablation inside one standard error: kept
    everyone = metrics_for(np.zeros(40, np.int64))  # every viewer's targets rise without LightFM
    assert lightfm_hurts(everyone)


def _harmful_lightfm(fit: Any) -> Any:
    """fit_model whose ranker keeps a LightFM column that ranks what LightFM likes last."""

    def bad(*args: Any, **kwargs: Any) -> FittedModel:
        fitted: FittedModel = fit(*args, **kwargs)
        if (
            fitted.ranker.info.get("lightfm_used", 0.0) == 0.0
            and kwargs.get("cfg", args[4]).lightfm_columns is False
        ):
            return fitted  # the refit after the gate dropped them: leave it alone
        w = fitted.ranker_no_lightfm.weights.copy()
        w[F["lightfm"]] = -20.0
        fitted.ranker = replace(fitted.ranker_no_lightfm, weights=w, info={"lightfm_used": 1.0})
        fitted.model.with_ranker(fitted.ranker)
        return fitted

    return bad


@pytest.mark.slow
async def test_the_gate_refuses_a_lightfm_column_whose_held_out_ablation_hurts(
    ranking_pool: Any, archive_market: Marketplace, monkeypatch: pytest.MonkeyPatch
) -> None:
    await _archive(ranking_pool, archive_market)
    async with ranking_pool.acquire() as conn:
        await conn.execute("UPDATE ranking_models SET status = 'retired' WHERE status = 'promoted'")
    monkeypatch.setattr(training, "fit_model", _harmful_lightfm(fit_model))
    params = ModelParams(no_components=8, epochs=2, num_threads=1)
    result = await training.train_once(
        ranking_pool,
        params=params,
        weights=WeightParams(),
        days=2,
        eval_hours=12,
        features=merchant_features(archive_market.rooms),
        until_ms=archive_market.config.start_ms + 2 * 86_400_000,
        max_targets=400,
        fit=FitConfig(model=params, ranker_lists=1_500),
    )
    assert str(result.metrics["lightfm_gate"]).startswith("dropped"), result.metrics.get("lightfm_gate")
    assert result.metrics["hr5_ranker"] == result.metrics["hr5_ranker_no_lightfm"]
    model = await ModelRegistry(ranking_pool).load(result.version)
    assert model.ranker is not None
    assert all(model.ranker.weights[F[name]] == 0.0 for name in LIGHTFM_FEATURES)


@pytest.mark.parametrize("name", ["pop", "live_pop", "rep_pop", "rep_live_pop"])
def test_the_fallback_the_gate_promotes_ranks_as_the_baseline_it_was_judged_by(
    name: str, small_market: Marketplace, small_log: Any, small_schedule: Any
) -> None:
    """The ranker the gate serves when no model beats the best simple baseline orders the live rooms as that
    baseline did on the held-out hours: wherever the judged baseline puts one room above another (REP, then
    the merchant's popularity, both as ranking.replay.MerchantPopularity counts them at the moment), the
    served one does too; only the baseline's own ties are broken (by freshness)."""
    lo = small_market.config.start_ms + 3 * 86_400_000
    features = merchant_features(small_market.rooms)
    (targets,) = replay(
        small_log, small_schedule, features, None, [(lo, lo + 86_400_000)], [300], popularity="exact"
    )
    judged, served = baseline(name), ranker_method(baseline_ranker(name))
    popularity = {"pop": "pop", "live_pop": "live_pop", "rep_pop": "pop", "rep_live_pop": "live_pop"}[name]
    ordered = 0
    for t in targets:
        rep = t.rep if name.startswith("rep") else np.zeros(t.rooms.size)
        pop = np.log1p(getattr(t, popularity))
        s = served(t).astype(np.float64)
        # (i, j) ordered by the baseline: more REP, or the same REP and a popularity apart by more than the
        # float32 score resolves (1e-3 in log1p).
        above = (rep[:, None] > rep[None, :]) | (
            (rep[:, None] == rep[None, :]) & (pop[:, None] > pop[None, :] + 1e-3)
        )
        assert (s[:, None] > s[None, :])[above].all(), name
        assert (judged(t)[:, None] > judged(t)[None, :])[above].all()
        ordered += int(above.sum())
    assert len(targets) > 100 and ordered > 10_000
