"""Benchmark: an API process's memory for the model as viewers grow — viewers in Redis vs in the process.

    .venv/bin/python bench/bench_api_memory.py [--viewers 100000,1000000] [--merchants 5000]

For each viewer count the synthetic model of bench/bench_feed.py (k=32, 8 merchants of history per
viewer) is built and stored as the registry stores it: the artifact an API process loads
(`ranking.viewer_state.without_viewers`, the viewers in Redis) and, for comparison, the whole model
(what an API process loaded before issue 18, and still loads when a model's state is not in Redis).
A fresh process loads each blob as `ModelRegistry.load` does (`RankingModel.from_bytes`), builds the
feed's `Scorer` and reports its resident memory (VmRSS; a bare interpreter with the same imports is
subtracted as `rss_mb_model`). Both layouts alternate in the same run. Writes bench/results/api_memory.json
and its block in docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "bench"))
sys.path.insert(0, str(ROOT))

LOAD = r"""
import gc, json, sys
from pathlib import Path
from ranking.model import RankingModel
from ranking.scorer import Scorer
def rss():
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
bare = rss()
blob = Path(sys.argv[1]).read_bytes() if sys.argv[1] != "-" else None
scorer = Scorer(RankingModel.from_bytes(blob)) if blob is not None else None
del blob
gc.collect()
print(json.dumps({"rss_mb": round(rss(), 1), "bare_mb": round(bare, 1)}))
"""


def _load(path: str) -> dict[str, float]:
    out = subprocess.run(
        [sys.executable, "-c", LOAD, path],
        capture_output=True,
        text=True,
        check=True,
        cwd=ROOT,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )
    got: dict[str, float] = json.loads(out.stdout.strip().splitlines()[-1])
    return got


def main() -> None:
    from bench_feed import _model
    from bench_scorer import command_line, write_results

    from ranking.viewer_state import without_viewers

    ap = argparse.ArgumentParser()
    ap.add_argument("--viewers", default="100000,1000000")
    ap.add_argument("--merchants", type=int, default=5_000)
    ap.add_argument("--no-write", action="store_true")
    args = ap.parse_args()
    runs: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory() as folder:
        for v in (int(x) for x in args.viewers.split(",")):
            model = _model(v, args.merchants)
            apart, whole = Path(folder) / "apart.bin", Path(folder) / "whole.bin"
            apart.write_bytes(without_viewers(model).to_bytes())
            whole.write_bytes(model.to_bytes())
            del model
            run: dict[str, Any] = {
                "viewers": v,
                "artifact_bytes_viewers_in_redis": apart.stat().st_size,
                "artifact_bytes_whole": whole.stat().st_size,
            }
            for label, path in (("viewers_in_redis", apart), ("viewers_in_process", whole)):
                got = _load(str(path))
                run[f"api_rss_mb_{label}"] = got["rss_mb"]
                run[f"rss_mb_model_{label}"] = round(got["rss_mb"] - got["bare_mb"], 1)
            runs.append(run)
            print(run, flush=True)
    first = runs[0]
    load = os.getloadavg()[0]
    lines = [
        f"synthetic model (k=32, {args.merchants:,} merchants, 8 merchants of history per viewer); a fresh "
        "process loads the artifact and builds the Scorer; VmRSS",
        "",
        "| viewers | API RSS MB, viewers in Redis | vs first row | API RSS MB, viewers in the process | vs first row | artifact MB (Redis layout / whole) |",
        "|---:|---:|---:|---:|---:|---|",
    ]
    for r in runs:
        a = r["api_rss_mb_viewers_in_redis"] / first["api_rss_mb_viewers_in_redis"]
        b = r["api_rss_mb_viewers_in_process"] / first["api_rss_mb_viewers_in_process"]
        r["rss_vs_first_viewers_in_redis"], r["rss_vs_first_viewers_in_process"] = round(a, 3), round(b, 3)
        lines.append(
            f"| {r['viewers']:,} | {r['api_rss_mb_viewers_in_redis']} | {a:.3f} | {r['api_rss_mb_viewers_in_process']} "
            f"| {b:.3f} | {r['artifact_bytes_viewers_in_redis'] / 1e6:.1f} / {r['artifact_bytes_whole'] / 1e6:.1f} |"
        )
    print("\n".join(lines))
    if not args.no_write:
        write_results(
            "api_memory",
            command_line(),
            {"runs": runs, "load_avg_1m_at_end": round(load, 2)},
            lines,
            "api_memory — an API process's memory for the model as viewers grow",
        )


if __name__ == "__main__":
    main()
