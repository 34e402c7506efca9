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
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import scipy.sparse as sp

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


if __name__ == "__main__":
    print(run_check())
