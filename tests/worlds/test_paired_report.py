"""A candidate ranking's world runs beside a record's: `worlds.report.paired_table`."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import orjson
import pytest

from worlds.evaluate import code_version
from worlds.report import done_when, paired_table, write_world_report


def _run(seed: int, discovery: float, ablation_low: float, viewers: float = 600.0) -> dict[str, Any]:
    """One world-seed run as `worlds.evaluate.run_world` reports it, with the figures the table reads."""
    offline = {
        "hr5_ranker": 0.60,
        "ndcg10_ranker": 0.50,
        "hr5_reppop": 0.58,
        "ndcg10_reppop": 0.48,
        "hr5_diff": 0.02,
        "hr5_diff_ci_low": 0.01,
        "hr5_new_ranker": 0.25,
        "hr5_new_pop": 0.24,
        "hr5_new_diff_ci_low": -0.01,
        "hr5_new_diff_ci_high": 0.03,
        "hr5_new_discovery_ranker": discovery,
        "hr5_new_discovery_pop": 0.40,
        "hr5_new_discovery_ratio_ci_low": discovery / 0.40 - 0.05,
        "hr5_new_discovery_ratio_ci_high": discovery / 0.40 + 0.05,
        "hr5_new_ranker_no_lightfm": 0.24,
        "ablation_new_gain": ablation_low + 0.01,
        "ablation_new_ci_low": ablation_low,
        "ablation_new_ci_high": ablation_low + 0.02,
        "repeat_share": 0.6,
        "targets": 4000.0,
        "test_viewers": viewers,
    }
    arm = {
        "watch_min_per_session": 10.0,
        "orders_per_1k": 20.0,
        "gmv_per_1k": 900.0,
        "watch_rate": 0.3,
        "sessions": 500,
    }
    span = {"value": 0.0, "ci_low": -0.1, "ci_high": 0.1}
    return {
        "world": "latent",
        "seed": seed,
        "config": {"seed": seed, "n_viewers": 10_000},
        "offline": offline,
        "ranker": {"lightfm_used": 1.0, "lightfm_discovery_only": 1.0},
        "ab": {
            "arms": {"ranker": arm, "baseline": dict(arm, orders_per_1k=19.0)},
            "diff": {"watch_min_per_session": span, "orders_per_1k": span},
        },
    }


def test_candidate_beside_record_shows_each_figure_before_and_after() -> None:
    before = {"latent": [_run(1, 0.42, -0.01), _run(2, 0.46, 0.002)]}
    after = {"latent": [_run(1, 0.48, 0.004), _run(2, 0.47, 0.003)]}
    table = paired_table(before, after)
    row = next(line for line in table.splitlines() if line.startswith("| `latent` | 1 |"))
    assert "1.05x (1.00) → 1.20x (1.15)" in row
    assert "+0.000 (-0.010) → +0.014 (+0.004)" in row
    assert "yes (discovery part) → yes (discovery part)" in row
    before_lines, after_lines = table.split("\nafter:\n")
    assert "fails in latent 1 (1.05x" in before_lines
    assert (
        "LightFM ablation on new targets with the interval above 0 in every seed (the worse seed) in at least 2 worlds: none"
        in before_lines
    )
    assert "every world-seed" in after_lines.splitlines()[1]
    assert "in at least 2 worlds: 1 (latent)" in after_lines


def test_only_world_seeds_in_both_folders_are_compared() -> None:
    table = paired_table(
        {"latent": [_run(1, 0.42, 0.0)]}, {"latent": [_run(1, 0.44, 0.0), _run(2, 0.5, 0.0)]}
    )
    assert "| `latent` | 1 |" in table
    assert "| `latent` | 2 |" not in table
    with pytest.raises(ValueError, match="no world-seed is in both"):
        paired_table({"latent": [_run(1, 0.42, 0.0)]}, {"latent": [_run(2, 0.5, 0.0)]})


def test_a_different_world_or_target_set_is_refused() -> None:
    other_size = _run(1, 0.44, 0.0)
    other_size["config"] = {"seed": 1, "n_viewers": 30_000}
    with pytest.raises(ValueError, match="latent 1: .*simulator settings differ \\(n_viewers\\)"):
        paired_table({"latent": [_run(1, 0.42, 0.0)]}, {"latent": [other_size]})
    with pytest.raises(ValueError, match="different test targets"):
        paired_table({"latent": [_run(1, 0.42, 0.0)]}, {"latent": [_run(1, 0.44, 0.0, viewers=590.0)]})


def test_a_run_names_the_commit_of_its_code(tmp_path: Path) -> None:
    here = code_version()  # the tests run from a git checkout (a clone in CI)
    assert isinstance(here["commit"], str) and len(here["commit"]) == 40 and int(here["commit"], 16) >= 0
    assert isinstance(here["dirty"], bool)
    assert code_version(tmp_path) == {"commit": None, "dirty": None}


def test_lightfm_line_marks_a_world_short_of_seeds() -> None:
    lifted_once = _run(1, 0.44, 0.004)
    runs = {"latent": [_run(1, 0.44, 0.004), _run(2, 0.44, 0.003)], "grid": [dict(lifted_once, world="grid")]}
    line = next(x for x in done_when(runs) if x.startswith("- LightFM ablation"))
    assert "in at least 2 worlds: 2 (grid (only seed 1), latent)" in line


def test_a_run_read_back_from_json_reports_without_cold_targets(tmp_path: Path) -> None:
    """A world-seed with no cold target has a NaN cold AUC, which JSON keeps as null (the 10k `grid` 2 report of
    the f805c64 record, as run_world wrote it): `--from-reports` must still write its table."""
    run = orjson.loads((Path(__file__).parent / "data" / "grid_seed2_no_cold_targets.json").read_bytes())
    assert run["offline"]["cold_auc"] is None and run["offline"]["cold_targets"] == 0
    write_world_report("grid", [run], tmp_path)
    table = (tmp_path / "grid" / "table.md").read_text()
    assert "(cold, from features) nan on 0 targets; known merchants 0.802" in table
