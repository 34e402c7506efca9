"""Benchmark: the ranking scorer over 10,000 live rooms (target p50 < 1 ms).

`.venv/bin/python bench/bench_scorer.py`

Scores one viewer against every live room (one matrix product over cached merchant
representations), for many viewers, with the live snapshot held by the caller as the feed holds
it. Also measured in the same run: gathering a new snapshot (the live set changed), scoring
with 5% brand-new merchants (features only), an unknown viewer (popularity), and the floor —
the bare numpy product alone. Writes bench/results/scorer.json and the ranking section of
docs/benchmarks.md. The same module offers `write_results` to bench_train/bench_eval.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shlex
import sys
import time
from datetime import date
from pathlib import Path
from typing import Any

import numpy as np

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from ranking.features import PRICE_BANDS, RoomFeatures  # noqa: E402
from ranking.model import RankingModel  # noqa: E402
from ranking.scorer import Scorer  # noqa: E402


def machine() -> str:
    return f"{os.cpu_count()} cores, {platform.machine()}, Python {platform.python_version()}, {platform.system()}"


def command_line() -> str:
    return ".venv/bin/python " + " ".join(
        shlex.quote(a) for a in [os.path.relpath(sys.argv[0], REPO), *sys.argv[1:]]
    )


def write_results(name: str, command: str, metrics: dict[str, Any], lines: list[str], title: str) -> None:
    """bench/results/<name>.json, and this benchmark's block inside the `## ranking` section of docs/benchmarks.md."""
    result = {
        "name": name,
        "command": command,
        "date": date.today().isoformat(),
        "machine": machine(),
        "metrics": metrics,
    }
    results = REPO / "bench" / "results"
    results.mkdir(parents=True, exist_ok=True)
    (results / f"{name}.json").write_text(json.dumps(result, indent=2) + "\n")
    doc = REPO / "docs" / "benchmarks.md"
    text = doc.read_text() if doc.exists() else "# Benchmarks\n\nEach section is written by its benchmark.\n"
    outer_start, outer_end = "<!-- bench:ranking -->", "<!-- /bench:ranking -->"
    if outer_start not in text or outer_end not in text:
        text = text.rstrip("\n") + f"\n\n{outer_start}\n## ranking\n\n{outer_end}\n"
    start, end = f"<!-- bench:ranking:{name} -->", f"<!-- /bench:ranking:{name} -->"
    block = "\n".join(
        [
            start,
            f"### {title}",
            "",
            f"`{command}` — {result['date']}, {result['machine']}",
            "",
            "```",
            *lines,
            "```",
            end,
        ]
    )
    if start in text and end in text:
        text = text[: text.index(start)] + block + text[text.index(end) + len(end) :]
    else:
        i = text.index(outer_end)
        text = text[:i] + block + "\n\n" + text[i:]
    doc.write_text(text)


def synthetic_model(n_users: int, n_merchants: int, k: int, seed: int = 1) -> RankingModel:
    rng = np.random.default_rng(seed)
    features = [f"cat:c{i}" for i in range(12)] + [f"band:{b}" for b in PRICE_BANDS]
    return RankingModel(
        version="bench",
        params={},
        user_ids=[f"v{i}" for i in range(n_users)],
        merchant_ids=[f"m{i}" for i in range(n_merchants)],
        user_feature_names=[],
        item_feature_names=features,
        user_repr=rng.normal(size=(n_users, k)).astype(np.float32),
        user_bias=np.zeros(n_users, np.float32),
        item_repr=rng.normal(size=(n_merchants, k)).astype(np.float32),
        item_bias=rng.normal(size=n_merchants).astype(np.float32),
        user_feature_emb=np.zeros((0, k), np.float32),
        user_feature_bias=np.zeros(0, np.float32),
        item_feature_emb=rng.normal(size=(len(features), k)).astype(np.float32),
        item_feature_bias=np.zeros(len(features), np.float32),
        merchant_popularity=rng.random(n_merchants).astype(np.float32),
    )


def timed(fn: Any, n: int) -> np.ndarray:
    out = np.empty(n)
    for i in range(n):
        t = time.perf_counter()
        fn(i)
        out[i] = (time.perf_counter() - t) * 1000.0
    return out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rooms", type=int, default=10_000)
    ap.add_argument("--components", type=int, default=30)
    ap.add_argument("--requests", type=int, default=5_000)
    args = ap.parse_args()
    n_rooms, k = args.rooms, args.components
    model = synthetic_model(100_000, n_rooms, k)
    scorer = Scorer(model)
    rooms = [RoomFeatures(f"r{i}", f"m{i}", f"c{i % 12}", [], "mid") for i in range(n_rooms)]
    rng = np.random.default_rng(2)
    viewers = [f"v{int(i)}" for i in rng.integers(0, 100_000, args.requests)]
    scorer.score(viewers[0], rooms)  # warm: the snapshot's item block is gathered once
    warm = timed(lambda i: scorer.score(viewers[i], rooms), args.requests)
    same_rooms_new_list = timed(lambda i: scorer.score(viewers[i], list(rooms)), 1_000)
    shifted = [rooms[i:] + rooms[:i] for i in range(200)]
    fresh = timed(lambda i: scorer.score(viewers[i], shifted[i]), 200)  # the live set changed every call
    new = [
        RoomFeatures(f"n{i}", f"new{i}", f"c{i % 12}", [], "high") if i % 20 == 0 else r
        for i, r in enumerate(rooms)
    ]
    scorer.score(viewers[0], new)
    with_new = timed(lambda i: scorer.score(viewers[i], new), 1_000)
    unknown = timed(lambda i: scorer.score(f"stranger{i}", new), 1_000)
    items = np.ascontiguousarray(model.item_repr)
    floor = timed(lambda i: items @ model.user_repr[i], args.requests)
    p = np.percentile
    metrics = {
        "live_rooms": n_rooms,
        "score_p50_ms": round(float(p(warm, 50)), 4),
        "score_p99_ms": round(float(p(warm, 99)), 4),
        "new_snapshot_p50_ms": round(float(p(fresh, 50)), 3),
        "same_rooms_new_list_p50_ms": round(float(p(same_rooms_new_list, 50)), 3),
        "with_new_merchants_p50_ms": round(float(p(with_new, 50)), 4),
        "unknown_viewer_p50_ms": round(float(p(unknown, 50)), 4),
        "floor_matvec_p50_ms": round(float(p(floor, 50)), 4),
        "components": k,
    }
    lines = [
        f"live rooms {n_rooms:,}, {k} components, {args.requests:,} requests",
        f"score (snapshot held)              p50 {p(warm, 50):7.3f} ms  p99 {p(warm, 99):7.3f} ms  (target p50 < 1 ms)",
        f"score, 5% brand-new merchants      p50 {p(with_new, 50):7.3f} ms",
        f"score, unknown viewer (popularity) p50 {p(unknown, 50):7.3f} ms",
        f"same rooms, new list per request   p50 {p(same_rooms_new_list, 50):7.3f} ms",
        f"new snapshot (live set changed)    p50 {p(fresh, 50):7.3f} ms  (gathers {n_rooms:,} merchant rows)",
        f"floor: bare numpy item @ user      p50 {p(floor, 50):7.3f} ms",
    ]
    print("\n".join(lines))
    write_results("scorer", command_line(), metrics, lines, "scorer — one viewer against every live room")


if __name__ == "__main__":
    main()
