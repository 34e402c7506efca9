"""Benchmark: CPU of the feed's score and rank stages per request at 10,000 live rooms, against a baseline commit.

`.venv/bin/python bench/bench_rank_stage.py [--baseline 9a42ed9,edaecf9] [--rooms 10000] [--repeats 3] [--recent 12]`

In-process (no HTTP, no Redis): 10,000 live rooms of 5,000 merchants, the synthetic model of
`bench/bench_feed.py` (`_model`: LightFM k=32 and, in this tree, the learned ranker with its merchant
table, co-visitation and 8 merchants of history per viewer), a viewer with 12 recent visits; process
CPU time of `Score.apply` + the ranking stage (`Rank` here, `Blend` in a commit before the learned
ranker) per request, median of `--repeats` runs of 400 requests. `--baseline REV[,REV...]` runs the same in a
git worktree of each REV, alternating with this tree, in the same run. `--recent N`: the viewer's
session visits (12; 0 is a fresh session, as bench_feed's pages: written as rank_stage_recent0). Both trees read one fixed clock, so
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
n_recent = int(sys.argv[4]) if len(sys.argv) > 4 else 12
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
    ctx.recent = [RecentVisit(f"room_{(v * 7 + k) % n_rooms}", f"mer_{((v * 7 + k) % n_rooms) % n_m:016x}", int(rng.integers(1000, 200000)), int(now * 1000) - k * 60000, False) for k in range(n_recent)]
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


def measure(tree: Path, rooms: int, recent: int = 12) -> tuple[str, float, str]:
    """(stage name, CPU ms per request, digest of every request's scores and best rooms) in `tree`, for
    viewers with `recent` visits in the session."""
    with tempfile.NamedTemporaryFile("w", suffix=".py", delete=False) as f:
        f.write(RUN)
    out = subprocess.run(
        [sys.executable, f.name, str(tree), str(rooms), str(CLOCK), str(recent)],
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
    ap.add_argument(
        "--recent",
        type=int,
        default=12,
        help="visits in the viewer's session (0: a fresh session, as bench_feed's pages)",
    )
    args = ap.parse_args()
    import os

    # Each baseline commit in a worktree of its own; repeats alternate this tree and every baseline.
    trees: dict[str, Path] = {}
    for ref in args.baseline.split(",") if args.baseline else []:
        tree = Path(tempfile.mkdtemp(prefix="rf-rank-baseline-")) / "tree"
        subprocess.run(
            ["git", "worktree", "add", "--detach", str(tree), ref], cwd=ROOT, check=True, capture_output=True
        )
        trees[ref] = tree
    runs: dict[str, list[float]] = {"": [], **{ref: [] for ref in trees}}
    names: dict[str, str] = {}
    digests: dict[str, str] = {}
    loads = [os.getloadavg()[0]]
    try:
        for _ in range(args.repeats):
            for ref, tree in [("", ROOT), *trees.items()]:
                names[ref], ms, digests[ref] = measure(tree, args.rooms, args.recent)
                runs[ref].append(ms)
        loads.append(os.getloadavg()[0])
    finally:
        for tree in trees.values():
            subprocess.run(["git", "worktree", "remove", "--force", str(tree)], cwd=ROOT, check=False)
    mine = statistics.median(runs[""])
    metrics: dict[str, object] = {
        "rooms": args.rooms,
        "recent_visits": args.recent,
        "score_rank_cpu_ms": round(mine, 3),
        "load_avg_1m": [round(x, 1) for x in loads],
    }
    lines = [
        f"{args.rooms:,} live rooms, {args.recent} session visits per viewer, load {loads[0]:.1f} -> {loads[1]:.1f}: "
        f"score + {names[''].lower()} {mine:.3f} ms CPU per request (runs {[round(m, 3) for m in runs['']]})"
    ]
    baselines: dict[str, dict[str, object]] = {}
    for ref in trees:
        theirs = statistics.median(runs[ref])
        entry: dict[str, object] = {"score_rank_cpu_ms": round(theirs, 3), "ratio": round(mine / theirs, 2)}
        lines.append(
            f"{ref}: score + {names[ref].lower()} {theirs:.3f} ms (runs {[round(m, 3) for m in runs[ref]]}); "
            f"ratio {entry['ratio']}"
        )
        if names[ref] == names[""] and digests[ref]:
            # The same stage in both trees: the same scores (every bit) and the same best rooms?
            entry["same_scores_as_baseline"] = digests[ref] == digests[""]
            lines.append(
                f"Scores and best 20 rooms of 400 requests, same clock, bit for bit: "
                f"{'identical' if digests[ref] == digests[''] else 'DIFFERENT'} to {ref}'s"
            )
        baselines[ref] = entry
    if baselines:
        first = next(iter(baselines.values()))
        metrics["baseline_score_rank_cpu_ms"] = first["score_rank_cpu_ms"]
        metrics["ratio"] = first["ratio"]
        metrics["baselines"] = baselines
    print("\n".join(lines))
    # One record per kind of viewer: with a session (the default) and fresh (bench_feed's pages).
    name = "rank_stage" if args.recent == 12 else f"rank_stage_recent{args.recent}"
    write_results(
        name, command_line(), metrics, lines, f"{name} — the feed's score and rank stages per request"
    )


if __name__ == "__main__":
    main()
