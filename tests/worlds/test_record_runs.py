"""The world record's per-world-seed reports kept in the repository (bench/results/worlds_record), so that a
candidate is compared with the record world-seed by world-seed on a fresh machine (`bench_eval --compare`)."""

from __future__ import annotations

import sys
from pathlib import Path

import orjson
import pytest

from roomfeed.settings import REPO_ROOT
from worlds.cli import kept_runs
from worlds.report import paired_table

sys.path.insert(0, str(REPO_ROOT / "bench"))

import bench_eval  # noqa: E402


def test_the_kept_record_is_every_world_both_seeds_of_one_commit() -> None:
    names = sorted(p.name for p in bench_eval.RECORD_RUNS.iterdir() if p.is_dir())
    runs = kept_runs(bench_eval.RECORD_RUNS, names)
    assert len(names) >= 4 and all(len(r) == 2 for r in runs.values())
    commits = {run["code"]["commit"] for r in runs.values() for run in r}
    assert len(commits) == 1, commits
    # a record compared with itself: the paired table reads every world-seed of it
    table = paired_table(runs, runs)
    assert all(name in table for name in names)


def test_a_new_record_replaces_the_kept_runs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    kept = tmp_path / "worlds_record"
    monkeypatch.setattr(bench_eval, "RECORD_RUNS", kept)
    (kept / "loyal").mkdir(parents=True)
    (kept / "loyal" / "seed3.json").write_bytes(b"{}")  # a seed the new record does not have
    reports = tmp_path / "reports"
    (reports / "loyal").mkdir(parents=True)
    for seed in (1, 2):
        (reports / "loyal" / f"seed{seed}.json").write_bytes(orjson.dumps({"seed": seed}))
    (reports / "loyal" / "table.md").write_text("not a run")
    bench_eval.keep_record_runs(reports, ["loyal"])
    assert sorted(p.name for p in (kept / "loyal").iterdir()) == ["seed1.json", "seed2.json"]
    assert orjson.loads((kept / "loyal" / "seed2.json").read_bytes()) == {"seed": 2}
    bench_eval.keep_record_runs(kept, ["loyal"])  # assembling from the kept runs themselves keeps them
    assert sorted(p.name for p in (kept / "loyal").iterdir()) == ["seed1.json", "seed2.json"]
