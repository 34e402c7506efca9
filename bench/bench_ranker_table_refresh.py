"""Benchmark: what refreshing the serving model's merchant table costs per training round.

    .venv/bin/python bench/bench_ranker_table_refresh.py [--merchants 50000 --viewers 1000000
        --enters 5000000 --days 7 --repeats 3]

When the promotion gate keeps the serving model, `roomfeed train` gives it this round's merchant table
(ranking.train._refresh_serving_table): `build_merchant_table` over the round's archive window
(popularity and co-visitation as of the round), the artifact rewritten under its version
(`ModelRegistry.refresh_table`: the artifact without viewers serialised again) and, in every API
process, the `ModelWatcher`'s reload (the artifact parsed, `Scorer` built). No viewer state is written.
On a synthetic log of `--enters` enters over `--days` days (merchants by a Zipf law, viewers uniform) and
the feed's synthetic model (tests/synthetic_model.py) with `--merchants` merchants, in-process CPU time,
median of `--repeats`. Writes bench/results/ranker_table_refresh.json and the docs/benchmarks.md block.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "bench"))
sys.path.insert(0, str(ROOT))


def synthetic_log(merchants: int, viewers: int, enters: int, days: int, seed: int = 3) -> Any:
    import numpy as np

    from events.vocabulary import CODE, ENTER
    from ranking.dataset import InteractionLog

    rng = np.random.default_rng(seed)
    m = np.minimum(rng.zipf(1.3, enters) - 1, merchants - 1).astype(np.int64)
    ts = np.sort(rng.integers(0, days * 86_400_000, enters)).astype(np.int64) + 1_700_000_000_000
    return InteractionLog(
        type=np.full(enters, CODE[ENTER], dtype=np.int8),
        viewer=rng.integers(0, viewers, enters).astype(np.int64),
        session=np.arange(enters, dtype=np.int64),
        room=m.copy(),
        merchant=m,
        ts=ts,
        dwell_ms=np.full(enters, -1, dtype=np.int64),
        amount=np.full(enters, np.nan),
        entry_code=np.zeros(enters, dtype=bool),
        viewer_ids=[f"viewer-{i}" for i in range(viewers)],
        merchant_ids=[f"mer_{i:016x}" for i in range(merchants)],
        room_ids=[f"room-{i}" for i in range(merchants)],
    )


def main() -> None:
    import numpy as np
    from bench_scorer import command_line, write_results

    from ranking.features import RoomFeatures
    from ranking.model import RankingModel
    from ranking.replay import build_merchant_table
    from ranking.scorer import Scorer
    from ranking.viewer_state import without_viewers
    from tests.synthetic_model import CATEGORIES, synthetic_model

    ap = argparse.ArgumentParser()
    ap.add_argument("--merchants", type=int, default=50_000)
    ap.add_argument("--viewers", type=int, default=1_000_000)
    ap.add_argument("--enters", type=int, default=5_000_000)
    ap.add_argument("--days", type=int, default=7)
    ap.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args()
    log = synthetic_log(args.merchants, args.viewers, args.enters, args.days)
    model = without_viewers(synthetic_model(0, args.merchants, CATEGORIES))
    features = {
        m: RoomFeatures("", m, CATEGORIES[i % len(CATEGORIES)], [], "mid")
        for i, m in enumerate(model.merchant_ids)
    }
    until = int(log.ts.max()) + 1

    def cpu(fn: Any) -> tuple[float, Any]:
        times, out = [], None
        for _ in range(args.repeats):
            t = time.process_time()
            out = fn()
            times.append(time.process_time() - t)
        return float(np.median(times)), out

    build_s, table = cpu(lambda: build_merchant_table(log, features, until, model.merchant_ids, CATEGORIES))
    model.table = table
    write_s, blob = cpu(model.to_bytes)
    reload_s, _ = cpu(lambda: Scorer(RankingModel.from_bytes(blob)))
    metrics = {
        "merchants": args.merchants,
        "viewers": args.viewers,
        "enters": args.enters,
        "days": args.days,
        "build_table_cpu_s": round(build_s, 3),
        "artifact_bytes": len(blob),
        "serialise_cpu_s": round(write_s, 3),
        "api_reload_cpu_s": round(reload_s, 3),
        "viewer_state_written": 0,
    }
    lines = [
        "| merchants | enters in the window | table build (trainer) | artifact | serialise | reload per API process |",
        "|---|---|---|---|---|---|",
        f"| {args.merchants:,} | {args.enters:,} over {args.days} d | {build_s:.2f} s CPU | "
        f"{len(blob) / 1e6:.1f} MB | {write_s:.2f} s | {reload_s:.2f} s |",
    ]
    print("\n".join(lines))
    write_results(
        "ranker_table_refresh",
        command_line(),
        metrics,
        lines,
        "The serving model's merchant table refreshed each round: what it costs (no viewer state written)",
    )


if __name__ == "__main__":
    main()
