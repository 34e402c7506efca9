"""The headroom oracles: the simulator's own truth at a test target, and how every method is judged on it."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

import numpy as np
import pytest

from ranking.dataset import ENTER, from_simulator
from simulator import Marketplace
from simulator.engine import stay_utility
from simulator.presets import world_config
from simulator.world import CATEGORIES
from worlds.headroom import (
    Truth,
    headroom,
    headroom_figures,
    oracle_methods,
    prior_favourite_share,
    with_true_taste,
)
from worlds.report import headroom_table, headroom_why

DAY_MS = 86_400_000


@pytest.fixture(scope="module")
def market() -> Marketplace:
    return Marketplace(config=world_config("live_buzz", seed=3, n_viewers=400, n_merchants=40, days=3))


def _target_at(market: Marketplace, row: int) -> Any:
    """A test target as ranking.replay builds it, for the simulator's enter at log row `row`: every room
    live at its moment is a candidate."""
    log = market.log
    w = market.world
    ts = int(log.ts[row])
    rooms = np.flatnonzero((w.r_start <= ts) & (w.r_end > ts))
    return SimpleNamespace(
        viewer=int(log.viewer[row]),
        event=row,
        rooms=rooms,
        target=int(np.flatnonzero(rooms == log.room[row])[0]),
        repeat=False,
        entered_before=np.zeros(rooms.size, dtype=bool),
    )


def test_the_oracles_read_what_the_simulated_viewer_reacts_to(market: Marketplace) -> None:
    # The oracle's signals at a target are those a SimulatedViewer of the same viewer, session intent and
    # day computes for the same rooms at the same moment (the viewer the A/B drives): taste, appeal,
    # intent, band fit, familiarity and buzz — and the choice oracle is the simulator's own stay utility.
    log = from_simulator(market)
    sessions = market.session_table
    rows = np.flatnonzero(log.type == ENTER)
    checked = 0
    for row in rows[:: max(1, rows.size // 25)]:
        t = _target_at(market, int(row))
        truth = Truth(market, log)
        signals, _ = truth.at(t)
        day = (int(log.ts[row]) - market.config.start_ms) // DAY_MS
        session = int(log.session[row])
        viewer = market.viewer(
            f"v{t.viewer}",
            "s",
            int(log.ts[row]),
            intent_category=CATEGORIES[int(sessions.intent[session])],
            day=int(day),
        )
        features = [market.rooms[int(j)].features for j in t.rooms]
        expected = viewer._signals(features, int(log.ts[row]))
        for field in ("match", "quality", "bandfit", "familiarity", "buzz"):
            np.testing.assert_allclose(
                getattr(signals, field), getattr(expected, field), rtol=1e-5, atol=1e-6
            )
        np.testing.assert_array_equal(signals.intent, expected.intent)
        np.testing.assert_allclose(truth.choice(t), stay_utility(market.world, signals))
        checked += 1
    assert checked >= 20


def test_the_logged_oracle_is_a_probability_over_the_live_rooms(market: Marketplace) -> None:
    # Without the following tab the logging policy's probabilities over the live rooms sum to at most one
    # (each times a stay probability below one), and exploration keeps every room possible.
    log = from_simulator(market)
    truth = Truth(market, log)
    methods = oracle_methods(truth)
    row = int(np.flatnonzero(log.type == ENTER)[len(log) // 3 % np.count_nonzero(log.type == ENTER)])
    t = _target_at(market, row)
    p = np.exp(methods["oracle_logged"](t))
    assert np.all(p > 0) and p.sum() <= 1.0 + 1e-9
    taste = methods["oracle_taste"](t)
    lifted = with_true_taste(lambda _: np.zeros(t.rooms.size), truth)(t)
    np.testing.assert_allclose(lifted, market.config.w_match * taste)


def _scored_target(viewer: int, target: int, entered: list[int], n: int = 8) -> Any:
    before = np.zeros(n, dtype=bool)
    before[entered] = True
    return SimpleNamespace(
        viewer=viewer, target=target, repeat=False, entered_before=before, rooms=np.arange(n)
    )


def test_headroom_ranks_each_method_among_the_never_watched_rooms_only() -> None:
    # "perfect" scores the target highest; "entered_first" scores the rooms the viewer entered above the
    # target (they do not count: only never-watched rooms are ordered); "last" puts the target below 6
    # never-watched rooms. A repeat target is left out.
    targets = [_scored_target(v, target=7, entered=[0, 1, 2], n=10) for v in range(4)]
    targets.append(SimpleNamespace(viewer=9, target=0, repeat=True, entered_before=np.ones(10, dtype=bool)))

    def perfect(t: Any) -> np.ndarray:
        s = np.zeros(10)
        s[t.target] = 1.0
        return s

    def entered_first(t: Any) -> np.ndarray:
        s = np.linspace(0.0, 0.5, 10)
        s[[0, 1, 2]] = 9.0
        s[t.target] = 1.0
        return s

    def last(t: Any) -> np.ndarray:
        s = np.arange(10, dtype=float)
        s[t.target] = -1.0
        return s

    h = headroom(
        targets, {"perfect": perfect, "entered_first": entered_first, "last": last}, correlate_with="perfect"
    )
    assert h["new_targets"] == 4
    assert h["methods"]["perfect"]["hr5"] == 1.0 and h["methods"]["perfect"]["auc"] == 1.0
    assert h["methods"]["entered_first"]["hr5"] == 1.0  # the entered rooms it put first are not judged
    assert h["methods"]["last"]["hr5"] == 0.0 and h["methods"]["last"]["auc"] == 0.0
    assert h["never_watched_candidates_median"] == 7.0


def test_headroom_figures_give_each_gain_an_interval_over_viewers() -> None:
    targets = [_scored_target(v, target=v % 8, entered=[]) for v in range(40)]

    def oracle(t: Any) -> np.ndarray:
        s = np.zeros(8)
        s[t.target] = 1.0
        return s

    def blind(t: Any) -> np.ndarray:
        return np.arange(8, dtype=float)  # rooms 3..7 first: the targets of viewers with v % 8 >= 3

    methods = {
        "oracle_taste": oracle,
        "oracle_choice": oracle,
        "ranker": blind,
        "ranker_no_lightfm": blind,
        "ranker_with_lightfm": blind,
        "ranker_true_taste": oracle,
        "pop": blind,
    }
    f = headroom_figures(targets, methods, seed=1)
    assert f["methods"]["ranker"]["hr5"] == pytest.approx(5 / 8)
    assert f["methods"]["oracle_taste"]["x_best_pop"] == pytest.approx(8 / 5)
    gain = f["diffs"]["ranker_true_taste-ranker_no_lightfm"]
    assert gain["diff"] == pytest.approx(3 / 8) and gain["ci_low"] > 0
    assert f["diffs"]["ranker_with_lightfm-ranker_no_lightfm"]["diff"] == 0.0


def _run_with(
    taste_gain: tuple[float, float, float], lightfm_gain: tuple[float, float, float], taste_hr5: float
) -> Any:
    def d(v: tuple[float, float, float]) -> dict[str, float]:
        return {"diff": v[0], "ci_low": v[1], "ci_high": v[2]}

    methods = {
        n: {"hr5": hr5, "rho_oracle_taste": rho}
        for n, hr5, rho in (
            ("oracle_taste", taste_hr5, 1.0),
            ("oracle_choice", 0.34, 0.9),
            ("oracle_logged", 0.5, 0.7),
            ("lightfm", 0.24, 0.1),
            ("live_pop", 0.28, 0.0),
        )
    }
    headroom_block = {
        "new_targets": 1700,
        "best_pop": "live_pop",
        "methods": methods,
        "diffs": {
            "ranker_true_taste-ranker_no_lightfm": d(taste_gain),
            "ranker_with_lightfm-ranker_no_lightfm": d(lightfm_gain),
        },
    }
    return {"seed": 1, "offline": {"headroom": headroom_block}}


def test_the_report_says_whether_the_world_or_the_training_holds_lightfm_back() -> None:
    training = headroom_why(_run_with((0.05, 0.02, 0.08), (0.008, -0.002, 0.018), taste_hr5=0.245))
    assert training is not None and "the training" in training and "recover 16%" in training
    assert "taste alone ranks new targets below live_pop" in training
    world = headroom_why(_run_with((0.004, -0.01, 0.02), (0.001, -0.01, 0.01), taste_hr5=0.4))
    assert world is not None and "the world: even the true taste adds nothing" in world
    assert "below" not in world
    learned = headroom_why(_run_with((0.05, 0.02, 0.08), (0.04, 0.02, 0.06), taste_hr5=0.4))
    assert learned is not None and "recover 80% of the taste" in learned and "the training:" not in learned
    caught_up = headroom_why(_run_with((0.024, -0.005, 0.053), (0.022, 0.002, 0.040), taste_hr5=0.4))
    assert caught_up is not None and "add as much as the true taste would" in caught_up
    assert headroom_why({"offline": {}}) is None
    table = headroom_table({"latent": [_run_with((0.05, 0.02, 0.08), (0.008, -0.002, 0.018), 0.245)]})
    assert "+0.050 (+0.020 … +0.080)" in table and table.count("\n") == 2


def test_a_target_the_viewer_favoured_before_the_log_is_counted_apart() -> None:
    class Known:
        def at(self, t: Any) -> tuple[None, np.ndarray]:
            affinity = np.zeros(4)
            affinity[1] = 2.0  # the viewer's favourite from before the log
            return None, affinity

    targets = [_scored_target(v, target=v % 2, entered=[], n=4) for v in range(4)]
    targets.append(SimpleNamespace(viewer=9, target=1, repeat=True, entered_before=np.ones(4, dtype=bool)))
    assert prior_favourite_share(targets, Known()) == 0.5  # type: ignore[arg-type]  # a stand-in for Truth
