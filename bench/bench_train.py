"""Benchmark: training from the interaction log (30 components, 10 epochs, 2 threads).

`.venv/bin/python bench/bench_train.py`

Simulates the full marketplace (100k viewers, 5,000 merchants, 7 days; not timed), then times the
whole training pipeline — log → weighted, time-decayed viewer×merchant matrix with item and user
features → LightFM WARP → representations → artifact bytes — and, in the same run on the same
matrices, LightFM's fit alone (the ceiling the pipeline is judged against).
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import numpy as np  # noqa: E402
from bench_scorer import command_line, write_results  # noqa: E402

from ranking.dataset import ARCHIVE_TYPES, WeightParams, build_training_set, from_simulator  # noqa: E402
from ranking.model import ModelParams, fit_lightfm, to_ranking_model  # noqa: E402
from ranking.offline import merchant_features  # noqa: E402
from simulator import Marketplace  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--viewers", type=int, default=100_000)
    ap.add_argument("--merchants", type=int, default=5_000)
    ap.add_argument("--days", type=int, default=7)
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()
    t = time.perf_counter()
    market = Marketplace(seed=7, n_viewers=args.viewers, n_merchants=args.merchants, days=args.days)
    log = from_simulator(market)
    features = merchant_features(market.rooms)
    sim_s = time.perf_counter() - t
    until = market.config.start_ms + args.days * 86_400_000
    params = ModelParams(no_components=30, epochs=10, num_threads=args.threads)

    t = time.perf_counter()
    data = build_training_set(log, features, until, WeightParams())
    dataset_s = time.perf_counter() - t
    t = time.perf_counter()
    lfm = fit_lightfm(data, params, progress=True)
    fit_in_pipeline_s = time.perf_counter() - t
    t = time.perf_counter()
    blob = to_ranking_model(lfm, data, params, "bench").to_bytes()
    artifact_s = time.perf_counter() - t
    pipeline_s = dataset_s + fit_in_pipeline_s + artifact_s

    t = time.perf_counter()
    fit_lightfm(data, params, progress=False)
    lightfm_only_s = time.perf_counter() - t

    rows = int(np.isin(log.type_names(), ARCHIVE_TYPES).sum())
    metrics = {
        "interactions": len(log),
        "archive_rows_read": rows,
        "pairs": data.n_interactions,
        "users": len(data.user_ids),
        "items": len(data.merchant_ids),
        "seconds": round(pipeline_s, 2),
        "lightfm_only_seconds": round(lightfm_only_s, 2),
        "dataset_seconds": round(dataset_s, 2),
        "artifact_seconds": round(artifact_s, 2),
        "artifact_mb": round(len(blob) / 1e6, 1),
        "threads": args.threads,
    }
    lines = [
        f"log: {len(log):,} events ({rows:,} impression/enter/leave/purchase rows), simulated in {sim_s:.0f} s (not timed)",
        f"matrix: {len(data.user_ids):,} viewers x {len(data.merchant_ids):,} merchants, {data.n_interactions:,} weighted pairs",
        f"pipeline total        {pipeline_s:6.1f} s  (dataset {dataset_s:.1f} s + fit {fit_in_pipeline_s:.1f} s "
        f"+ representations/artifact {artifact_s:.1f} s, {len(blob) / 1e6:.1f} MB)",
        f"LightFM fit alone     {lightfm_only_s:6.1f} s  (same matrices, same run; 30 components, 10 epochs, "
        f"{args.threads} threads, WARP)",
    ]
    print("\n".join(lines))
    write_results("train", command_line(), metrics, lines, "train — LightFM on the interaction log")


if __name__ == "__main__":
    main()
