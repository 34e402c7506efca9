"""Benchmark: CPU of the feed's score and rank stages per request at 10,000 live rooms, against a baseline commit.

`.venv/bin/python bench/bench_rank_stage.py [--baseline 9a42ed9] [--rooms 10000] [--repeats 3]`

In-process (no HTTP, no Redis): 10,000 live rooms of 5,000 merchants, the synthetic model of
`bench/bench_feed.py` (`_model`: LightFM k=32 and, in this tree, the learned ranker with its merchant
table, co-visitation and 8 merchants of history per viewer), a viewer with 12 recent visits; process
CPU time of `Score.apply` + the ranking stage (`Rank` here, `Blend` in a commit before the learned
ranker) per request, median of `--repeats` runs of 400 requests. `--baseline REV` runs the same in a
git worktree of REV, alternating with this tree, in the same run. Both trees read one fixed clock, so
when REV has the same stages the run also says whether they made the same scores (every bit) and the
same best 20 rooms for 400 requests: the equivalence check of a faster path against the code it
replaces. Writes bench/results/rank_stage.json.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "bench"))

RUN = r"""
import asyncio, hashlib, json, sys, time
from types import SimpleNamespace
import numpy as np
if len(sys.argv) > 3:  # one fixed clock in every tree: popularity decay and room ages alike
    time.time = lambda: float(sys.argv[3])
sys.path.insert(0, sys.argv[1])
from bench.bench_feed import _model
import feed.stages as st
from feed.config import RankingConfig
from feed.context import Candidates, FeedContext, RecentVisit
from ranking.scorer import Scorer
from rooms.live_index import LiveRoom
CATS = ["food", "home", "beauty", "apparel", "electronics", "sports"]
n_rooms, n_m, n_v = int(sys.argv[2]), 5_000, 20_000
rng = np.random.default_rng(0)
scorer = Scorer(_model(n_v, n_m))
now = time.time()
rooms = [LiveRoom(f"room_{i}", f"mer_{i % n_m:016x}", "t", CATS[i % 6], (), "mid", "one_to_many", "", now - 60 * (i % 300), "u", "live", None) for i in range(n_rooms)]
watcher = SimpleNamespace(scorer=scorer)
stage = st.Rank(watcher) if hasattr(st, "Rank") else st.Blend(watcher)
score = st.Score(watcher)
base = Candidates.of(rooms)
base.enters = rng.random(n_rooms).astype(np.float32) * 20
cfg = RankingConfig()
async def one(v):
    ctx = FeedContext(f"viewer-{v}", "s", 10, cfg, now=now)
    ctx.rng = np.random.default_rng(v)
    ctx.candidates = base.fresh_copy()
    ctx.candidates.enters = base.enters
    ctx.recent = [RecentVisit(f"room_{(v * 7 + k) % n_rooms}", f"mer_{((v * 7 + k) % n_rooms) % n_m:016x}", int(rng.integers(1000, 200000)), int(now * 1000) - k * 60000, False) for k in range(12)]
    await score.apply(ctx)
    await stage.apply(ctx)
    return ctx
async def main():
    for v in range(50):
        await one(v)
    t = time.process_time()
    for v in range(400):
        await one(v)
    ms = (time.process_time() - t) / 400 * 1000
    # What the stages made, for comparing trees: every score's bits and the best 20 rooms, per request.
    digest = hashlib.sha256()
    for v in range(400):
        c = (await one(v)).candidates
        digest.update(np.asarray(c.score, dtype=np.float32).tobytes())
        digest.update(np.argsort(-c.score, kind="stable")[:20].tobytes())
    print(json.dumps({"stage": type(stage).__name__, "ms": ms, "digest": digest.hexdigest()}))
asyncio.run(main())
"""


# The clock every tree's run reads (time.time), so that both score the same market at the same moment.
CLOCK = 1_800_000_000.0


def measure(tree: Path, rooms: int) -> tuple[str, float, str]:
    """(stage name, CPU ms per request, digest of every request's scores and best rooms) in `tree`."""
    with tempfile.NamedTemporaryFile("w", suffix=".py", delete=False) as f:
        f.write(RUN)
    out = subprocess.run(
        [sys.executable, f.name, str(tree), str(rooms), str(CLOCK)],
        capture_output=True,
        text=True,
        check=True,
        env={"PYTHONPATH": str(tree), "PATH": "/usr/bin:/bin"},
    )
    got = json.loads(out.stdout.strip().splitlines()[-1])
    return str(got["stage"]), float(got["ms"]), str(got.get("digest", ""))


def main() -> None:
    from bench_scorer import command_line, write_results

    ap = argparse.ArgumentParser()
    ap.add_argument("--baseline", default=None)
    ap.add_argument("--rooms", type=int, default=10_000)
    ap.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args()
    base_tree = None
    if args.baseline:
        base_tree = Path(tempfile.mkdtemp(prefix="rf-rank-baseline-")) / "tree"
        subprocess.run(
            ["git", "worktree", "add", "--detach", str(base_tree), args.baseline],
            cwd=ROOT,
            check=True,
            capture_output=True,
        )
    try:
        mine, theirs = [], []
        name_mine = name_theirs = digest_mine = digest_theirs = ""
        for _ in range(args.repeats):
            name_mine, ms, digest_mine = measure(ROOT, args.rooms)
            mine.append(ms)
            if base_tree is not None:
                name_theirs, ms, digest_theirs = measure(base_tree, args.rooms)
                theirs.append(ms)
    finally:
        if base_tree is not None:
            subprocess.run(["git", "worktree", "remove", "--force", str(base_tree)], cwd=ROOT, check=False)
    metrics = {"rooms": args.rooms, "score_rank_cpu_ms": round(statistics.median(mine), 3)}
    lines = [
        f"{args.rooms:,} live rooms: score + {name_mine.lower()} {statistics.median(mine):.3f} ms CPU per request (runs {[round(m, 3) for m in mine]})"
    ]
    if theirs:
        metrics["baseline_score_rank_cpu_ms"] = round(statistics.median(theirs), 3)
        metrics["ratio"] = round(statistics.median(mine) / statistics.median(theirs), 2)
        lines.append(
            f"{args.baseline}: score + {name_theirs.lower()} {statistics.median(theirs):.3f} ms (runs {[round(m, 3) for m in theirs]}); "
            f"ratio {metrics['ratio']}"
        )
        if name_theirs == name_mine and digest_theirs:
            # The same stage in both trees: the same scores (every bit) and the same best rooms?
            metrics["same_scores_as_baseline"] = digest_mine == digest_theirs
            lines.append(
                f"Scores and best 20 rooms of 400 requests, same clock, bit for bit: "
                f"{'identical' if digest_mine == digest_theirs else 'DIFFERENT'} to {args.baseline}'s"
            )
    print("\n".join(lines))
    write_results(
        "rank_stage",
        command_line(),
        metrics,
        lines,
        "rank_stage — the feed's score and rank stages per request",
    )


if __name__ == "__main__":
    main()
