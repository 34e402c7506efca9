"""The world family's judgement: intervals that resample viewers, and worlds kept between runs."""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np
import pytest

from feed.replay import FeedPage
from ranking.dataset import from_events, from_simulator
from ranking.evaluation import (
    BASELINES,
    Evaluation,
    Judged,
    judge,
    page_method,
    paired_bootstrap,
    split_metrics,
    viewer_bootstrap,
)
from ranking.model import ModelParams
from ranking.offline import FitConfig, evaluate_model, fit_model, merchant_features
from simulator import Marketplace
from simulator.presets import world_config
from worlds import evaluate as world_evaluate
from worlds.evaluate import DAY_MS, simulated
from worlds.online import arm_metrics, bootstrap_diff


def test_a_heavy_viewer_widens_the_interval_as_it_should() -> None:
    # 300 targets of one viewer who always favours a, and 300 viewers with one target each and no
    # difference: per target the 300 look like independent evidence; they are one viewer's taste.
    rng = np.random.default_rng(3)
    a = np.concatenate([np.ones(300), rng.integers(0, 2, 300)]).astype(float)
    b = np.concatenate([np.zeros(300), a[300:]])
    viewers = np.concatenate([np.zeros(300, dtype=np.int64), np.arange(1, 301)])
    by_target = paired_bootstrap(a, b, seed=1)
    by_viewer = viewer_bootstrap(a, b, viewers, seed=1)
    assert by_viewer["diff"] == pytest.approx(by_target["diff"]) == pytest.approx(0.5)
    assert by_target["ci_low"] > 0.45  # targets resampled: "certainly about +0.5"
    assert by_viewer["ci_low"] < 0.05  # viewers resampled: it hangs on whether that one viewer is drawn
    assert by_viewer["viewers"] == 301


def test_one_target_per_viewer_gives_the_per_target_interval() -> None:
    rng = np.random.default_rng(4)
    a, b = rng.integers(0, 2, 2_000).astype(float), rng.integers(0, 2, 2_000).astype(float)
    by_target = paired_bootstrap(a, b, seed=2)
    by_viewer = viewer_bootstrap(a, b, np.arange(2_000), seed=2)
    assert by_viewer["ci_low"] == pytest.approx(by_target["ci_low"], abs=0.01)
    assert by_viewer["ci_high"] == pytest.approx(by_target["ci_high"], abs=0.01)


def test_the_ab_interval_resamples_viewers_with_all_their_sessions() -> None:
    def arm(viewers: list[int], watch_ms: list[int]) -> dict[str, np.ndarray]:
        n = len(viewers)
        one = np.ones(n)
        return {
            "viewer": np.asarray(viewers, dtype=np.float64),
            "impressions": 10 * one,
            "enters": 10 * one,
            "watches": 5 * one,
            "watch_ms": np.asarray(watch_ms, dtype=np.float64),
            "orders": 0 * one,
            "gmv": 0 * one,
        }

    # Arm a: one viewer with 50 long sessions plus 50 viewers like arm b's.
    a = arm([0] * 50 + list(range(1, 51)), [600_000] * 50 + [60_000] * 50)
    b = arm(list(range(100, 200)), [60_000] * 100)
    assert arm_metrics(a)["sessions"] == 100
    value, low, high = bootstrap_diff(a, b, resamples=400, seed=1)["watch_min_per_session"]
    assert value == pytest.approx(4.5)
    # Were the sessions independent (each its own viewer), the interval would be far narrower.
    alone = dict(a, viewer=np.arange(100, dtype=np.float64))
    _, low_alone, high_alone = bootstrap_diff(alone, b, resamples=400, seed=1)["watch_min_per_session"]
    assert high - low > 2 * (high_alone - low_alone)
    assert low < 1.0  # 51 viewers, one of them carries half the sessions


def test_a_world_is_simulated_once_and_read_back_the_same(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    config = world_config("loyal", 3, n_viewers=600, n_merchants=40, days=2)
    market, figures = simulated(config, tmp_path)
    assert len(list(tmp_path.glob("*.pickle"))) == 1

    def no_simulation(*args: object, **kwargs: object) -> Marketplace:
        raise AssertionError("simulated again")

    monkeypatch.setattr(world_evaluate, "Marketplace", no_simulation)
    again, figures_again = simulated(config, tmp_path)
    assert figures_again == figures
    assert np.array_equal(again.log.ts, market.log.ts) and np.array_equal(again.log.room, market.log.room)
    assert (
        again.viewer("v1", "s", int(market.log.ts[0])).fav_m.tolist()
        == market.viewer("v1", "s", int(market.log.ts[0])).fav_m.tolist()
    )
    # Another seed is another world: simulated, not read.
    with pytest.raises(AssertionError, match="simulated again"):
        simulated(world_config("loyal", 4, n_viewers=600, n_merchants=40, days=2), tmp_path)


def _sessions(viewers: np.ndarray, watch_ms: np.ndarray) -> dict[str, np.ndarray]:
    one = np.ones(viewers.size)
    return {
        "viewer": viewers.astype(np.float64),
        "impressions": 10 * one,
        "enters": 10 * one,
        "watches": 5 * one,
        "watch_ms": watch_ms.astype(np.float64),
        "orders": 0 * one,
        "gmv": 0 * one,
    }


def _viewer_levels(n: int, seed: int) -> np.ndarray:
    # Heavy-tailed appetite per viewer (minutes per session): what drowns a small arm effect.
    return np.random.default_rng(seed).lognormal(2.0, 1.0, n)


def test_cuped_takes_out_what_the_pre_period_predicts() -> None:
    rng = np.random.default_rng(5)
    level = _viewer_levels(2_000, 5)
    viewers = np.repeat(np.arange(2_000), 2)  # two sessions each
    in_a = viewers % 2 == 0  # the arms are different viewers (the split design)
    watch = level[viewers] * 60_000 * rng.lognormal(0.0, 0.3, viewers.size) + np.where(in_a, 30_000, 0)
    a, b = _sessions(viewers[in_a], watch[in_a]), _sessions(viewers[~in_a], watch[~in_a])

    def pre(ids: np.ndarray) -> dict[str, np.ndarray]:
        # The pre-period saw each viewer's appetite through its own noise.
        rates = level[ids.astype(np.int64)] * 60_000 * np.random.default_rng(9).lognormal(0.0, 0.3, ids.size)
        one = np.ones(ids.size)
        return {
            "impressions": 10 * one,
            "enters": 10 * one,
            "watches": 5 * one,
            "watch_ms": rates,
            "orders": 0 * one,
            "gmv": 0 * one,
        }

    _, raw_low, raw_high = bootstrap_diff(a, b, resamples=400, seed=1)["watch_min_per_session"]
    value, low, high = bootstrap_diff(a, b, resamples=400, seed=1, pre=pre)["watch_min_per_session"]
    assert high - low < 0.6 * (raw_high - raw_low)
    assert low < 0.5 < high  # the true effect: 30 s per session
    assert low < value < high


def test_a_paired_ab_cancels_what_each_viewer_brings() -> None:
    rng = np.random.default_rng(6)
    level = _viewer_levels(1_000, 6)
    viewers = np.repeat(np.arange(1_000), 2)
    base = level[viewers] * 60_000
    a = _sessions(viewers, base * rng.lognormal(0.0, 0.2, viewers.size) + 30_000)
    b = _sessions(viewers, base * rng.lognormal(0.0, 0.2, viewers.size))
    _, un_low, un_high = bootstrap_diff(a, b, resamples=400, seed=1)["watch_min_per_session"]
    value, low, high = bootstrap_diff(a, b, resamples=400, seed=1, paired=True)["watch_min_per_session"]
    assert high - low < 0.6 * (un_high - un_low)
    assert low < 0.5 < high
    other = _sessions(viewers + 5_000, base)
    with pytest.raises(ValueError, match="same viewers"):
        bootstrap_diff(a, other, paired=True)


def test_the_world_cache_keeps_the_recent_worlds_within_its_bound(tmp_path: Path) -> None:
    now = time.time()
    for k, name in enumerate(("old", "middle", "new")):
        path = tmp_path / f"{name}.pickle"
        path.write_bytes(b"x" * 1_000)
        os.utime(path, (now - 3_000 + 1_000 * k, now - 3_000 + 1_000 * k))
    stale, fresh = tmp_path / "dead.1.part", tmp_path / "writing.2.part"
    stale.write_bytes(b"x")
    fresh.write_bytes(b"x")
    os.utime(stale, (now - 7 * 3_600, now - 7 * 3_600))
    removed = world_evaluate.prune_cache(tmp_path, keep_bytes=2_500)
    assert sorted(p.name for p in removed) == ["dead.1.part", "old.pickle"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["middle.pickle", "new.pickle", "writing.2.part"]


def test_cold_auc_judges_merchants_without_a_training_watch_apart() -> None:
    log = from_events(
        [
            {
                "type": "enter",
                "viewer_id": "v1",
                "session_id": "s",
                "room_id": "r1",
                "merchant_id": "m1",
                "ts": 1_000,
            },
            {
                "type": "impression",
                "viewer_id": "v1",
                "session_id": "s",
                "room_id": "r2",
                "merchant_id": "m2",
                "ts": 1_000,
            },
            {
                "type": "enter",
                "viewer_id": "v1",
                "session_id": "s",
                "room_id": "r3",
                "merchant_id": "m3",
                "ts": 9_000,
            },
        ]
    )
    trained = world_evaluate.trained_merchants(log, 5_000)
    assert trained == {"m1"}  # m2 only shown, m3 watched after the split

    def target(items: list[int], lightfm: list[float], chosen: int) -> Any:
        request = SimpleNamespace(items=np.array(items), lightfm=np.array(lightfm))
        return SimpleNamespace(request=request, target=chosen)

    # Model rows: m1 (trained), m2 and m3 (cold: rows from features only).
    targets = [
        target([0, 1, 2], [0.1, 0.9, 0.5], 1),  # cold m2 scored above both others: AUC 1
        target([0, 1, 2], [0.9, 0.2, 0.5], 2),  # cold m3 above one of two: 0.5
        target([0, 1, 2], [0.9, 0.2, 0.5], 0),  # warm m1 above both: 1
    ]
    figures = world_evaluate.lightfm_auc(targets, ["m1", "m2", "m3"], trained)
    assert figures["cold_targets"] == 2 and figures["cold_auc"] == pytest.approx(0.75)
    assert figures["warm_targets"] == 1 and figures["warm_auc"] == pytest.approx(1.0)


def _run(seed: int, hr5_diff_low: float, ab_watch: float) -> dict[str, Any]:
    offline = {
        "hr5_ranker": 0.6,
        "hr5_reppop": 0.55,
        "ndcg10_ranker": 0.5,
        "ndcg10_reppop": 0.45,
        "hr5_diff": 0.05,
        "hr5_diff_ci_low": hr5_diff_low,
        "hr5_new_discovery_ranker": 0.33,
        "hr5_new_discovery_pop": 0.30,
        "hr5_new_ranker": 0.3,
        "hr5_new_pop": 0.25,
        "hr5_new_diff_ci_low": 0.01,
        "ablation_new_ci_low": 0.002 if seed == 1 else -0.01,
        "cold_auc": None,  # a world-seed without cold targets, read back from JSON
    }
    arm = {
        "sessions": 100.0,
        "watch_min_per_session": 10.0,
        "orders_per_1k": 50.0,
        "gmv_per_1k": 1.0,
        "watch_rate": 0.4,
    }
    diff = {
        k: {"value": 0.0, "ci_low": -1.0, "ci_high": 1.0} for k in ("watch_min_per_session", "orders_per_1k")
    }
    return {
        "seed": seed,
        "offline": offline,
        "ab": {"arms": {"ranker": dict(arm, watch_min_per_session=ab_watch), "baseline": arm}, "diff": diff},
    }


def test_done_when_is_judged_seed_by_seed() -> None:
    from worlds.report import done_when

    # a passes everything in both seeds but one A/B; b's second seed fails the HR@5 interval.
    lines = done_when(
        {"a": [_run(1, 0.01, 11.0), _run(2, 0.02, 9.5)], "b": [_run(1, 0.01, 10.5), _run(2, -0.003, 10.5)]}
    )
    assert lines[0].endswith("fails in b 2 (HR@5 +0.050, CI low -0.003)")
    assert lines[1].endswith("every world-seed")  # discovery 1.10x
    assert lines[2].endswith("every world-seed")
    assert "fails in a 2 (watch 9.50 vs 10.00" in lines[3]
    # LightFM's interval is above 0 in seed 1 of each world and below in seed 2: the worse seed fails both.
    assert lines[4].endswith("2 worlds: none; world-seeds where it holds: a 1, b 1")
    both = _run(2, 0.01, 11.0)
    both["offline"]["ablation_new_ci_low"] = 0.004
    assert done_when({"a": [_run(1, 0.01, 11.0), both]})[4].startswith(
        "- LightFM ablation on new targets with the interval above 0 in every seed (the worse seed) in at "
        "least 2 worlds: 1 (a)"
    )


def test_the_worse_seed_keeps_a_figure_and_its_baseline_together() -> None:
    from worlds.report import summarise

    busy, quiet = _run(1, 0.01, 21.0), _run(2, 0.01, 10.5)  # the ranker leads the A/B in both seeds
    busy["ab"]["arms"]["baseline"] = dict(busy["ab"]["arms"]["baseline"], watch_min_per_session=20.0)
    figures = summarise([busy, quiet])
    # The seed with the smaller lead (+0.5 of 10.0), both arms from it; not 10.5 (seed 2) vs 20.0 (seed 1).
    assert figures["ab_watch_min_per_session_ranker"] == 10.5
    assert figures["ab_watch_min_per_session_baseline"] == 10.0
    assert figures["hr5_diff_ci_low"] == 0.01


def test_the_baselines_figures_do_not_depend_on_the_model_judged() -> None:
    # The same world judged with two different models (LightFM seed and size, hence another ranker):
    # every simple baseline must give the same figures, page by page; only the model's methods move.
    market = Marketplace(config=world_config("loyal", 5, n_viewers=1_500, n_merchants=60, days=4))
    log = world_evaluate.watch_log(market, from_simulator(market))
    features = merchant_features(market.rooms)
    schedule = world_evaluate.schedule_of(market)
    split = market.config.start_ms + 3 * DAY_MS
    evaluations = []
    for model_seed, size in ((1, 8), (2, 4)):
        params = ModelParams(no_components=size, epochs=3, num_threads=1, seed=model_seed)
        fitted = fit_model(
            log, features, schedule, split, FitConfig(model=params, ranker_lists=600), say=_Mute()
        )
        ev, _ = evaluate_model(
            log,
            features,
            schedule,
            {
                "ranker": (fitted.model, fitted.ranker),
                "ranker_no_lightfm": (fitted.model, fitted.ranker_no_lightfm),
            },
            (split, split + DAY_MS),
            max_targets=400,
            seed=3,
            page=FeedPage(schedule.room_features, seed=3),
        )
        evaluations.append(ev)
    first, second = evaluations
    assert first.targets == second.targets > 100
    assert not np.array_equal(first.judged["lightfm"].ranks, second.judged["lightfm"].ranks)
    for name in BASELINES:
        assert np.array_equal(first.judged[name].ranks, second.judged[name].ranks), name
        assert first.results[name] == second.results[name], name
    assert first.best_baseline == second.best_baseline


class _Mute:
    def write(self, text: str) -> int:
        return len(text)


def _new_target(lightfm: list[float], live_pop: list[float], chosen: int, item: int = 0) -> Any:
    n = len(lightfm)
    request = SimpleNamespace(lightfm=np.array(lightfm), items=np.full(n, item))
    return SimpleNamespace(
        request=request,
        repeat=False,
        target=chosen,
        entered_before=np.zeros(n, dtype=bool),
        live_pop=np.array(live_pop),
        rooms=np.arange(n),
    )


def test_lightfm_diagnostics_measure_signal_redundancy_and_cold_share() -> None:
    # LightFM repeats live popularity exactly; the ranker without it puts every target first.
    targets = [
        _new_target([0.1, 0.5, 0.9, 0.3], [1, 5, 9, 3], chosen=1, item=7),  # LightFM AUC 2/3
        _new_target([0.2, 0.4, 0.6, 0.8], [2, 4, 6, 8], chosen=0, item=1),  # LightFM AUC 0
    ]

    def without_lightfm(t: Any) -> np.ndarray:
        out = np.zeros(t.rooms.size)
        out[t.target] = 1.0
        return out

    stranger = _new_target([0.0, 0.0, 0.0, 0.0], [1, 2, 3, 4], chosen=2)
    stranger.request.lightfm = None  # a viewer LightFM has no row for
    d = world_evaluate.lightfm_diagnostics([*targets, stranger], without_lightfm, cold={7})
    assert d["diag_new_targets"] == 2 and d["diag_no_viewer_share_new"] == pytest.approx(1 / 3)
    assert d["diag_lightfm_new_auc"] == pytest.approx((2 / 3 + 0) / 2)
    assert d["diag_no_lightfm_new_auc"] == pytest.approx(1.0)
    assert d["diag_lightfm_rho_live_pop"] == pytest.approx(1.0)
    assert d["diag_cold_share_new"] == pytest.approx(0.5)


def _why(**diag: float) -> str:
    from worlds.report import lightfm_why

    offline = {
        "ablation_new_gain": 0.001,
        "ablation_new_ci_low": -0.02,
        "ablation_new_ci_high": 0.022,
        "new_targets": 900,
        "cold_auc": 0.6,
        **diag,
    }
    return lightfm_why({"offline": offline, "ranker": {"lightfm_used": 1.0}})


def test_the_lightfm_report_states_the_reason_its_diagnostics_measure() -> None:
    redundant = _why(
        diag_lightfm_new_auc=0.70,
        diag_no_lightfm_new_auc=0.72,
        diag_live_pop_new_auc=0.60,
        diag_lightfm_rho_live_pop=0.83,
        diag_lightfm_rho_no_lightfm=0.4,
        diag_cold_share_new=0.02,
    )
    assert "live popularity (Spearman 0.83)" in redundant and "cold start" not in redundant
    weak_and_cold = _why(
        diag_lightfm_new_auc=0.55,
        diag_no_lightfm_new_auc=0.75,
        diag_live_pop_new_auc=0.80,
        diag_lightfm_rho_live_pop=0.1,
        diag_lightfm_rho_no_lightfm=0.2,
        diag_cold_share_new=0.4,
        diag_no_viewer_share_new=0.25,
    )
    assert "training signal" in weak_and_cold and "40% of new targets" in weak_and_cold
    assert "25% of new targets are of viewers with no interaction" in weak_and_cold
    assert "live popularity alone ranks new targets best (AUC 0.80)" in weak_and_cold
    assert "Spearman" not in weak_and_cold


def test_the_lightfm_report_says_by_how_much_validation_dropped_lightfm() -> None:
    from worlds.report import lightfm_why

    offline = {
        "ablation_new_gain": 0.0,
        "ablation_new_ci_low": 0.0,
        "ablation_new_ci_high": 0.0,
        "diag_lightfm_new_auc": 0.69,
        "diag_no_lightfm_new_auc": 0.71,
        "diag_live_pop_new_auc": 0.66,
        "diag_lightfm_rho_live_pop": 0.61,
        "diag_lightfm_rho_no_lightfm": 0.4,
        "diag_cold_share_new": 0.02,
    }
    ranker = {
        "lightfm_used": 0.0,
        "validation_with_lightfm": 1.1677,
        "validation_without": 1.1669,
        "lightfm_gain": 0.0008,
        "lightfm_gain_se": 0.0061,
        "lightfm_discovery_gain": 0.0063,
        "lightfm_discovery_gain_se": 0.0093,
    }
    why = lightfm_why({"offline": offline, "ranker": ranker})
    assert "validation dropped LightFM's columns" in why
    assert "everywhere +0.0008 vs one SE 0.0061" in why
    assert "in the discovery part, on its lists +0.0063 vs one SE 0.0093" in why
    # A run recorded before the gains were kept says what it has.
    older = {k: v for k, v in ranker.items() if "gain" not in k}
    assert "paired gain" not in lightfm_why({"offline": offline, "ranker": older})


def _source_tree(tmp_path: Path) -> Path:
    """A copy of what the world cache key may read: simulator/ and events/vocabulary.py."""
    repo = Path(world_evaluate.__file__).resolve().parent.parent
    root = tmp_path / "repo"
    (root / "events").mkdir(parents=True)
    shutil.copytree(repo / "simulator", root / "simulator", ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy(repo / "events" / "vocabulary.py", root / "events" / "vocabulary.py")
    return root


def test_a_new_preset_keeps_every_other_worlds_cache_key(tmp_path: Path) -> None:
    root = _source_tree(tmp_path)
    config = world_config("loyal", 1, n_viewers=600, n_merchants=40, days=2)
    key = world_evaluate._world_key(config, root)
    presets = root / "simulator" / "presets.py"
    presets.write_text(
        presets.read_text()
        + '\nWORLDS["extra"] = WorldPreset("extra", "a preset added later", {"interface": "grid"})\n'
    )
    (root / "simulator" / "evaluation.py").write_text("# the default world's evaluation, not a simulation\n")
    assert world_evaluate._world_key(config, root) == key
    # The preset's own values are in the key (through its SimConfig), and so is the seed.
    assert world_evaluate._world_key(dataclasses.replace(config, follow_tab_prob=0.7), root) != key
    assert world_evaluate._world_key(dataclasses.replace(config, seed=2), root) != key


@pytest.mark.parametrize(
    "changed",
    [
        "simulator/engine.py",
        "simulator/world.py",
        "simulator/market.py",
        "simulator/measure.py",
        "events/vocabulary.py",
    ],
)
def test_the_simulations_code_is_in_the_cache_key(tmp_path: Path, changed: str) -> None:
    root = _source_tree(tmp_path)
    config = world_config("latent", 1, n_viewers=600, n_merchants=40, days=2)
    key = world_evaluate._world_key(config, root)
    path = root / changed
    path.write_text(path.read_text() + "\n# changed\n")
    assert world_evaluate._world_key(config, root) != key


def test_a_module_the_simulation_starts_importing_enters_the_key(tmp_path: Path) -> None:
    root = _source_tree(tmp_path)
    config = world_config("grid", 1, n_viewers=600, n_merchants=40, days=2)
    helper = root / "simulator" / "drift.py"
    helper.write_text("STEP = 0.1\n")
    key = world_evaluate._world_key(config, root)
    helper.write_text("STEP = 0.2\n")
    assert world_evaluate._world_key(config, root) == key  # nothing imports it yet
    engine = root / "simulator" / "engine.py"
    engine.write_text(engine.read_text() + "\nfrom simulator.drift import STEP  # noqa: E402\n")
    assert root / "simulator" / "drift.py" in world_evaluate.simulation_sources(root)
    with_import = world_evaluate._world_key(config, root)
    helper.write_text("STEP = 0.3\n")
    assert world_evaluate._world_key(config, root) != with_import


def _judged_targets(n_viewers: int = 40) -> list[Any]:
    # Two targets per viewer; every second viewer's targets are new (never-watched merchant).
    out = []
    for v in range(n_viewers):
        for k in range(2):
            request = SimpleNamespace(items=np.arange(12), lightfm=None)
            out.append(
                SimpleNamespace(viewer=v, repeat=v % 2 == 0, purchase=False, request=request, target=k)
            )
    return out


def _evaluation(targets: list[Any], ranks: dict[str, np.ndarray], disc: dict[str, np.ndarray]) -> Evaluation:
    judged = {
        name: Judged(ranks[name], np.where([t.repeat for t in targets], -1, disc[name])) for name in ranks
    }
    results = {name: split_metrics(targets, j) for name, j in judged.items()}
    return Evaluation(
        results=results,
        judged=judged,
        best_baseline="rep_live_pop",  # ranking's choice on HR@5 + NDCG@10 together
        best_pop="pop",
        repeat_share=0.5,
        targets=len(targets),
        viewers=np.array([t.viewer for t in targets]),
    )


def test_each_line_compares_with_the_baseline_best_on_that_figure() -> None:
    targets = _judged_targets()
    n = len(targets)
    rank = np.zeros(n, dtype=np.int64)
    # rep_pop: best HR@5 (everything in the top 5, never first); rep_live_pop: best NDCG@10 (half first,
    # half 7th). live_pop: better than pop on new targets on the full list, worse among never-watched.
    ranks = {
        "ranker": rank + 1,
        "ranker_no_lightfm": rank + 1,
        "rep_pop": rank + 4,
        "rep_live_pop": np.where(np.arange(n) % 2 == 0, 0, 6),
        "pop": rank + 8,
        "live_pop": rank + 3,
        "random": rank + 11,
    }
    disc = {name: r.copy() for name, r in ranks.items()}
    disc["pop"], disc["live_pop"] = rank + 2, rank + 9
    figures = world_evaluate.offline_figures(_evaluation(targets, ranks, disc), targets, seed=1)
    assert (figures["best_reppop"], figures["best_reppop_ndcg10"]) == ("rep_pop", "rep_live_pop")
    assert figures["hr5_reppop"] == 1.0  # rep_pop's, not rep_live_pop's 0.5
    assert figures["ndcg10_reppop"] == pytest.approx(0.5 + 0.5 / np.log2(8))  # rep_live_pop's
    assert figures["ndcg10_reppop"] > figures["methods"]["rep_pop"]["ndcg10"]
    assert figures["hr5_diff"] == 0.0 and figures["best_reppop_overall"] == "rep_live_pop"
    assert (figures["best_pop_new"], figures["best_pop"]) == ("live_pop", "pop")
    assert figures["hr5_new_pop"] == 1.0 and figures["hr5_new_diff"] == 0.0  # live_pop on the full list
    assert figures["hr5_new_discovery_pop"] == 1.0  # pop among the never-watched
    assert figures["discovery_judge"] == "page" and "hr5_new_discovery_ranker_as_judged" not in figures
    # Judged on each method's own order (discovery_beyond_page's hits): those are the line's figures, the
    # page judge's stay beside them.
    n_new = int(sum(not t.repeat for t in targets))
    own = {
        "ranker": {"hits": np.ones(n_new), "hr5": 1.0, "short_page": 0.25},
        "pop": {
            "hits": np.r_[np.ones(n_new // 2), np.zeros(n_new - n_new // 2)],
            "hr5": 0.5,
            "short_page": 0.0,
        },
        "live_pop": {"hits": np.zeros(n_new), "hr5": 0.0, "short_page": 0.0},
    }
    figures = world_evaluate.offline_figures(
        _evaluation(targets, ranks, disc), targets, seed=1, own_order=own
    )
    assert figures["best_pop"] == "pop" and figures["best_pop_as_judged"] == "pop"
    assert (figures["hr5_new_discovery_ranker"], figures["hr5_new_discovery_pop"]) == (1.0, 0.5)
    assert figures["hr5_new_discovery_ratio"] == 2.0 and figures["hr5_new_discovery_diff"] == 0.5
    assert figures["hr5_new_discovery_ranker_as_judged"] == 1.0  # the ranker's rank 1 under the page judge
    assert figures["hr5_new_discovery_ratio_as_judged"] == 1.0
    assert figures["discovery_short_page_ranker"] == 0.25


def test_the_discovery_ratio_interval_resamples_viewers() -> None:
    # The first 30 targets: a hit for a, not for b; the other 30: a and b hit the same every second one.
    a = np.array([1.0] * 30 + [0.0, 1.0] * 15)
    b = np.array([0.0] * 30 + [0.0, 1.0] * 15)
    one_viewer_each = world_evaluate.viewer_ratio_bootstrap(a, b, np.arange(60), seed=1)
    assert one_viewer_each["ratio"] == pytest.approx(45 / 15)
    assert one_viewer_each["ci_low"] < 3.0 < one_viewer_each["ci_high"]
    # The first 30 targets all of one viewer: its taste is one draw, and the interval says so.
    clustered = world_evaluate.viewer_ratio_bootstrap(a, b, np.r_[np.zeros(30), np.arange(1, 31)], seed=1)
    assert clustered["ratio"] == one_viewer_each["ratio"]
    width = clustered["ci_high"] - clustered["ci_low"]
    assert width > 1.5 * (one_viewer_each["ci_high"] - one_viewer_each["ci_low"])
    with pytest.raises(ValueError, match="one shape"):
        world_evaluate.viewer_ratio_bootstrap(a, b[:10], np.arange(60))
    assert np.isnan(world_evaluate.viewer_ratio_bootstrap(a, 0 * b, np.arange(60))["ratio"])


def test_every_key_issue_13_lists_is_in_the_summary_and_in_eval_json() -> None:
    from worlds.report import ISSUE_KEYS, missing_issue_keys, summarise

    run = _run(1, 0.01, 11.0)
    run["offline"].update(
        hr5_new_ranker_no_lightfm=0.28, ablation_new_ci_low=0.001, repeat_share=0.5, hr5_diff_ci_low=0.01
    )
    figures = summarise([run, _run(2, 0.02, 10.5) | {"offline": dict(run["offline"])}])
    assert missing_issue_keys({"w": figures}) == []
    assert missing_issue_keys({"w": dict(figures, repeat_share=float("nan"))}) == ["w.repeat_share"]
    stored = json.loads((Path(__file__).resolve().parents[2] / "bench/results/eval.json").read_text())
    metrics = stored["metrics"]
    assert len(metrics["worlds"]) >= 4 and missing_issue_keys(metrics["worlds"]) == []
    assert set(ISSUE_KEYS) <= set(next(iter(metrics["worlds"].values())))
    for key in ("ml100k_p10_pipeline", "ml100k_p10_plain", "cold_auc"):
        assert isinstance(metrics[key], float), key


def test_discovery_beyond_the_page_follows_the_methods_own_order() -> None:
    # 20 live rooms; rooms 0-6 watched before (favourites), 7-19 never watched. The target is room 12.
    entered = np.zeros(20, dtype=bool)
    entered[:7] = True

    def new_target(viewer: int, event: int) -> Any:
        return SimpleNamespace(
            viewer=viewer, event=event, repeat=False, entered_before=entered, target=12, rooms=np.arange(20)
        )

    def page(t: Any, scores: np.ndarray) -> np.ndarray:
        return np.argsort(-scores, kind="stable")[:10]  # a 10-room page by the scores

    # "favourites": its page is the 7 favourites then rooms 7-9; room 12 is its 4th never-watched room in
    # its own order (a hit), the first one off the page.
    favourites = np.r_[np.arange(30, 23, -1), 20, 19, 18, 5, 4, 17, 3, 2, 1, 0, 0, 0, 0].astype(float)
    # "discovery": never-watched first; room 12 is 6th of them (a miss either way).
    discovery = np.r_[np.zeros(7), np.arange(30, 17, -1)].astype(float)
    targets = [new_target(v, v) for v in range(6)]
    judged = world_evaluate.discovery_beyond_page(
        targets, {"favourites": lambda t: favourites, "discovery": lambda t: discovery}, page, seed=1
    )
    assert judged["favourites"]["hr5"] == 1.0 and judged["favourites"]["short_page"] == 1.0
    assert judged["discovery"]["hr5"] == 0.0 and judged["discovery"]["short_page"] == 0.0
    # The page judge ranks the 10 rooms off the favourites' page at random: room 12 is a hit only when the
    # draw puts it first or second of them.
    as_paged = judge(targets, page_method(lambda t: favourites, page), seed=1)
    assert (as_paged.discovery_ranks < 5).mean() < 1.0


def test_the_world_cache_key_is_the_same_in_every_process() -> None:
    code = (
        "from simulator.presets import world_config; from worlds.evaluate import _world_key; "
        "print(_world_key(world_config('loyal', 1, n_viewers=600, n_merchants=40, days=2)))"
    )
    keys = {
        subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
        for _ in range(2)
    }
    assert len(keys) == 1
    assert keys == {
        world_evaluate._world_key(world_config("loyal", 1, n_viewers=600, n_merchants=40, days=2)) + "\n"
    }
