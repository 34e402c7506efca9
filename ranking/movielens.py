"""The real-data check of the LightFM pipeline: MovieLens-100k in LightFM's documented setup.

Owns locating ML-100k inside the `recbole` wheel (downloaded once with `pip download --no-deps
recbole==1.2.1` into `.data/wheels/`, read as a zip at run time, never committed or installed),
the split of LightFM's docs (every rating a positive, 10 ratings per user held out, as in ML-100k's
`ua` split), WARP training and precision@10 / AUC computed without excluding training items.
"""

from __future__ import annotations

import subprocess
import sys
import time
import zipfile
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import scipy.sparse as sp

from ranking.features import RoomFeatures
from roomfeed.settings import REPO_ROOT

WHEEL_SPEC = "recbole==1.2.1"
INTER_PATH = "recbole/dataset_example/ml-100k/ml-100k.inter"


def find_wheel(cache_dir: Path = REPO_ROOT / ".data" / "wheels", download: bool = True) -> Path:
    found = sorted(cache_dir.glob("recbole-1.2.1-*.whl"))
    if found:
        return found[0]
    if not download:
        raise FileNotFoundError(
            f"no recbole wheel in {cache_dir}; run: pip download --no-deps {WHEEL_SPEC} -d {cache_dir}"
        )
    cache_dir.mkdir(parents=True, exist_ok=True)
    subprocess.run(
        [sys.executable, "-m", "pip", "download", "--no-deps", WHEEL_SPEC, "-d", str(cache_dir), "-q"],
        check=True,
    )
    return sorted(cache_dir.glob("recbole-1.2.1-*.whl"))[0]


def load_ratings(wheel: Path) -> np.ndarray:
    """(n, 3) int array of user, item, rating from the wheel's ml-100k.inter."""
    with zipfile.ZipFile(wheel) as z:
        lines = z.read(INTER_PATH).decode().splitlines()[1:]
    rows = [line.split("\t") for line in lines if line]
    return np.array([[int(u), int(i), int(float(r))] for u, i, r, _ in rows], dtype=np.int64)


def ua_split(ratings: np.ndarray, per_user: int = 10, seed: int = 0) -> tuple[sp.coo_matrix, sp.coo_matrix]:
    """Every rating a positive; `per_user` random ratings of each user held out for test."""
    rng = np.random.default_rng(seed)
    users = ratings[:, 0] - 1
    items = ratings[:, 1] - 1
    shape = (int(users.max()) + 1, int(items.max()) + 1)
    order = rng.permutation(len(ratings))
    users, items = users[order], items[order]
    rank = np.zeros(len(users), dtype=np.int64)
    seen: dict[int, int] = {}
    for k, u in enumerate(users.tolist()):
        rank[k] = seen.get(u, 0)
        seen[u] = rank[k] + 1
    test = rank < per_user
    ones = np.ones(len(users), dtype=np.float32)
    train_m = sp.coo_matrix((ones[~test], (users[~test], items[~test])), shape=shape)
    test_m = sp.coo_matrix((ones[test], (users[test], items[test])), shape=shape)
    return train_m, test_m


@dataclass(frozen=True)
class MovielensCheck:
    precision_at_10: float
    auc: float
    seconds: float


def run_check(epochs: int = 10, threads: int = 2, seed: int = 0) -> MovielensCheck:
    from lightfm import LightFM
    from lightfm.evaluation import auc_score, precision_at_k

    t0 = time.perf_counter()
    train, test = ua_split(load_ratings(find_wheel()), seed=seed)
    model = LightFM(loss="warp", random_state=np.random.RandomState(seed))
    model.fit(train, epochs=epochs, num_threads=threads)
    p10 = float(precision_at_k(model, test, k=10, num_threads=threads).mean())
    auc = float(auc_score(model, test, num_threads=threads).mean())
    return MovielensCheck(p10, auc, time.perf_counter() - t0)


def load_ratings_with_time(wheel: Path) -> np.ndarray:
    """(n, 4) int array of user, item, rating, timestamp (seconds) from the wheel's ml-100k.inter."""
    with zipfile.ZipFile(wheel) as z:
        lines = z.read(INTER_PATH).decode().splitlines()[1:]
    rows = [line.split("\t") for line in lines if line]
    return np.array([[int(u), int(i), int(float(r)), int(float(t))] for u, i, r, t in rows], dtype=np.int64)


def time_split(ratings: np.ndarray, per_user: int = 10) -> tuple[np.ndarray, np.ndarray]:
    """Each user's last `per_user` ratings (by time, ties by item) held out: (train rows, test rows)."""
    order = np.lexsort((ratings[:, 1], ratings[:, 3], ratings[:, 0]))
    r = ratings[order]
    counts = np.bincount(r[:, 0])
    ends = np.cumsum(counts)[r[:, 0]]
    rank_from_end = ends - np.arange(len(r)) - 1
    test = rank_from_end < per_user
    return r[~test], r[test]


@dataclass(frozen=True)
class PipelineCheck:
    p10_pipeline: float
    p10_plain: float
    users: int
    seconds: float
    # P@10 of each user with test items (the same users, in one order, for both): what a paired interval
    # over users resamples.
    user_p10_pipeline: np.ndarray = field(default_factory=lambda: np.zeros(0), repr=False)
    user_p10_plain: np.ndarray = field(default_factory=lambda: np.zeros(0), repr=False)


def _user_precision_at_10(scores: np.ndarray, train: sp.csr_matrix, test: sp.csr_matrix) -> np.ndarray:
    """P@10 of each user with test items; items the user rated in training are not recommended."""
    scores = np.where(train.toarray() > 0, -np.inf, scores)
    top = np.argpartition(-scores, 10, axis=1)[:, :10]
    hits = np.take_along_axis(test.toarray() > 0, top, axis=1).sum(axis=1)
    has = np.asarray(test.sum(axis=1)).ravel() > 0
    out: np.ndarray = hits[has] / 10.0
    return out


def _precision_at_10(scores: np.ndarray, train: sp.csr_matrix, test: sp.csr_matrix) -> float:
    """Mean P@10 over users with test items; items the user rated in training are not recommended."""
    return float(_user_precision_at_10(scores, train, test).mean())


def run_pipeline_check(epochs: int = 10, threads: int = 2, seed: int = 0) -> PipelineCheck:
    """MovieLens-100k through roomfeed's pipeline (`from_events` → `build_training_set` → `train_model` →
    `Scorer`) beside plain LightFM on the same time-ordered split: every rating an `enter` of the
    user (viewer) into the film (merchant) at its timestamp."""
    from lightfm import LightFM

    from ranking.dataset import WeightParams, build_training_set, from_events
    from ranking.model import ModelParams, train_model
    from ranking.scorer import Scorer

    t0 = time.perf_counter()
    ratings = load_ratings_with_time(find_wheel())
    train, test = time_split(ratings)
    events = [
        {
            "type": "enter",
            "viewer_id": f"u{u}",
            "session_id": f"u{u}",
            "room_id": f"i{i}",
            "merchant_id": f"i{i}",
            "ts": t * 1000,
        }
        for u, i, _, t in train.tolist()
    ]
    log = from_events(events)
    until = int(log.ts.max()) + 1
    data = build_training_set(log, {}, until, WeightParams(enters_as_watches=True))
    model = train_model(
        data, ModelParams(epochs=epochs, num_threads=threads, seed=seed), "ml100k", progress=False
    )
    scorer = Scorer(model)
    users = sorted(set(test[:, 0].tolist()))
    items = sorted(set(ratings[:, 1].tolist()))
    rooms = [RoomFeatures(f"i{i}", f"i{i}", "film") for i in items]
    item_col = {i: k for k, i in enumerate(items)}
    user_row = {u: k for k, u in enumerate(users)}
    shape = (len(users), len(items))

    def matrix(rows: np.ndarray) -> sp.csr_matrix:
        keep = np.isin(rows[:, 0], users)
        r = rows[keep]
        return sp.csr_matrix(
            (np.ones(len(r)), ([user_row[u] for u in r[:, 0]], [item_col[i] for i in r[:, 1]])), shape=shape
        )

    train_m, test_m = matrix(train), matrix(test)
    live = scorer.prepare(rooms)
    pipeline_scores = np.stack([scorer.score(f"u{u}", live) for u in users])
    plain = LightFM(loss="warp", random_state=np.random.RandomState(seed))
    plain.fit(train_m, epochs=epochs, num_threads=threads)
    plain_scores = np.stack(
        [plain.predict(k, np.arange(len(items)), num_threads=threads) for k in range(len(users))]
    )
    mine = _user_precision_at_10(pipeline_scores, train_m, test_m)
    theirs = _user_precision_at_10(plain_scores, train_m, test_m)
    return PipelineCheck(
        float(mine.mean()), float(theirs.mean()), len(users), time.perf_counter() - t0, mine, theirs
    )


@dataclass(frozen=True)
class PipelineSeeds:
    """The pipeline check over several seeds, each fit on one thread (LightFM's Hogwild fit on two threads
    differs run to run: plain LightFM's P@10 moved 0.113 -> 0.107 between two runs of one seed)."""

    seeds: tuple[int, ...]
    p10_pipeline: float  # mean over seeds
    p10_plain: float
    per_seed_pipeline: tuple[float, ...]
    per_seed_plain: tuple[float, ...]
    diff: float  # pipeline - plain, mean over seeds
    diff_ci_low: float  # 95 %, users resampled (each user's difference averaged over the seeds)
    diff_ci_high: float
    users: int
    seconds: float


def summarise_seeds(
    checks: Sequence[PipelineCheck], seeds: Sequence[int], resamples: int = 2_000
) -> PipelineSeeds:
    """Seeds' checks as one figure: means over seeds, and a paired interval that resamples users."""
    if not checks or len(checks) != len(seeds):
        raise ValueError(f"{len(checks)} checks for {len(seeds)} seeds")
    per_user = np.mean([c.user_p10_pipeline - c.user_p10_plain for c in checks], axis=0)
    draws = np.random.default_rng(0).integers(0, per_user.size, (resamples, per_user.size))
    boots = per_user[draws].mean(axis=1)
    return PipelineSeeds(
        seeds=tuple(seeds),
        p10_pipeline=float(np.mean([c.p10_pipeline for c in checks])),
        p10_plain=float(np.mean([c.p10_plain for c in checks])),
        per_seed_pipeline=tuple(round(c.p10_pipeline, 4) for c in checks),
        per_seed_plain=tuple(round(c.p10_plain, 4) for c in checks),
        diff=float(per_user.mean()),
        diff_ci_low=float(np.quantile(boots, 0.025)),
        diff_ci_high=float(np.quantile(boots, 0.975)),
        users=checks[0].users,
        seconds=float(sum(c.seconds for c in checks)),
    )


def run_pipeline_seeds(seeds: Sequence[int] = (0, 1, 2), epochs: int = 10) -> PipelineSeeds:
    """`run_pipeline_check` at each seed on one thread (reproducible), summarised (`summarise_seeds`)."""
    return summarise_seeds([run_pipeline_check(epochs, threads=1, seed=s) for s in seeds], seeds)


if __name__ == "__main__":
    print(run_check())
    print(run_pipeline_check())
