"""The compiled viewer part (ranking.viewer_kernel) scores as the numpy formulation it replaces on the feed's path."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
import scipy.sparse as sp

from events.vocabulary import SWIPE_AWAY_MS
from ranking import viewer_kernel
from ranking.history import STATS, S, ViewerHistory
from ranking.ranker import (
    FEATURES,
    POPULARITY_HALF_LIVES_MS,
    MerchantTable,
    Ranker,
    RankRequest,
    SessionVisit,
)

NOW_MS = 1_800_000_000_000


def _table(rng: np.random.Generator, merchants: int) -> MerchantTable:
    # Some merchants without neighbours, float32 weights and int32 indices as scipy keeps them.
    cov = sp.random(merchants, merchants, density=6 / merchants, format="csr", dtype=np.float32, rng=rng)
    return MerchantTable(
        category=rng.integers(-1, 7, merchants),  # -1: a merchant whose category the model does not know
        band=rng.integers(-1, 4, merchants),
        pop_count=rng.random(merchants) * 100,
        pop_decayed=rng.random((merchants, len(POPULARITY_HALF_LIVES_MS))) * 10,
        as_of_ms=NOW_MS - 3_600_000,
        covisit=cov,
    )


def _history(rng: np.random.Generator, merchants: int, size: int) -> ViewerHistory:
    if size == 0:
        return ViewerHistory.empty()
    # Positions beyond the table (merchants the scorer added live) and a merchant listed twice.
    picked = np.sort(rng.integers(0, merchants + 5, size))
    stats = np.floor(rng.random((size, len(STATS))) * rng.integers(0, 4, (size, len(STATS))))
    stats[:, S["dwell_s"]] = rng.random(size) * 400 * (rng.random(size) < 0.8)
    stats[:, S["last_ms"]] = (NOW_MS - rng.integers(0, 9 * 86_400_000, size)) * (rng.random(size) < 0.9)
    return ViewerHistory(picked.astype(np.int64), stats)


def _request(rng: np.random.Generator, table: MerchantTable, rooms: int, sparse: bool) -> RankRequest:
    merchants = table.category.shape[0]
    if sparse:  # a retrieved subset: a few rooms of many merchants (binary searches, no table per merchant)
        items = rng.choice(merchants, rooms, replace=False).astype(np.int64)
    else:
        items = rng.integers(-1, merchants + 3, rooms).astype(np.int64)  # -1: a merchant the model lacks
    k = 8
    unit_of = rng.normal(size=(merchants + 5, k)).astype(np.float32)
    unit_of /= np.linalg.norm(unit_of, axis=1, keepdims=True)
    known = np.clip(items, 0, merchants + 4)
    req = RankRequest(
        now_ms=NOW_MS,
        items=items,
        category=np.where(items >= 0, table.category[np.clip(items, 0, merchants - 1)], -1),
        band=np.where(items >= 0, table.band[np.clip(items, 0, merchants - 1)], -1),
        started_ms=(NOW_MS - rng.integers(0, 7_200_000, rooms)).astype(np.float64),
        heat=rng.random(rooms) * 30,
        history=_history(rng, merchants, int(rng.choice([0, 1, 5, 12, 40]))),
        lightfm=rng.normal(size=rooms).astype(np.float32) if rng.random() < 0.85 else None,
        unit_items=unit_of[known],
        item_unit_of=unit_of,
    )
    if rng.random() < 0.6:
        visits = int(rng.integers(1, 10))
        req.session = [
            SessionVisit(
                int(rng.integers(-1, merchants + 5)),
                int(rng.choice([500, SWIPE_AWAY_MS - 1, SWIPE_AWAY_MS, 40_000, 200_000])),
                NOW_MS - int(rng.integers(0, 5_000_000)),  # some beyond the session window
            )
            for _ in range(visits)
        ]
    if req.lightfm is not None and rng.random() < 0.3:
        lf = req.lightfm.astype(np.float64)
        req.lightfm_moments = (float(rooms + 50), float(lf.sum()) + 3.0, float(lf @ lf) + 40.0)
    return req


def _rankers(rng: np.random.Generator) -> list[Ranker]:
    w, d = rng.normal(size=len(FEATURES)), rng.normal(size=len(FEATURES))
    return [
        Ranker(w),
        Ranker(w, discovery=d),
        Ranker(w, discovery=d, favourites_first=2),
        Ranker(w, discovery=d, first_by_share=(0, 1, 3, 5)),
        Ranker(w, discovery=d, first_by_share=(0, 1, 3, 5), known_offset=(0.5, 0.0, -1.0, -2.5)),
        Ranker(w, known_offset=(-1.5, 0.25, -0.5, -3.0)),
    ]


@pytest.mark.parametrize("sparse", [False, True], ids=["every-room", "retrieved-subset"])
def test_the_compiled_viewer_part_scores_as_the_numpy_formulation(sparse: bool, monkeypatch: Any) -> None:
    rng = np.random.default_rng(11 + sparse)
    identical = compared = 0
    for round_ in range(30):
        table = _table(rng, 3_000 if sparse else 400)
        req = _request(rng, table, 250 if sparse else 900, sparse)
        room_part = np.asarray(rng.normal(size=len(req.items)), dtype=np.float32)
        for ranker in _rankers(rng):
            delta = None
            if ranker.discovery is not None and round_ % 2:
                delta = np.asarray(rng.normal(size=len(req.items)), dtype=np.float32)
            expected = ranker.add_viewer_score(room_part, table, req, delta)
            with monkeypatch.context() as patched:
                # The compiled path, not the numpy one it falls back to for what it does not cover.
                patched.setattr(Ranker, "add_viewer_score", None)
                got = ranker.serve_viewer_score(room_part, table, req, delta)
            assert got.dtype == np.float32
            # The same order, and the same scores but for a float64 last bit reaching a float32 rounding.
            assert np.array_equal(np.argsort(-got, kind="stable"), np.argsort(-expected, kind="stable"))
            assert np.allclose(got, expected, rtol=1e-6, atol=1e-6)
            identical += int(np.array_equal(got, expected))
            compared += 1
    assert identical >= 0.95 * compared, (identical, compared)


def test_the_request_path_compiles_one_signature_whatever_arrays_it_gets() -> None:
    """Arrays of other dtypes, read-only or strided are made plain first: a page never waits for numba
    to compile another version (~10 s)."""
    viewer_kernel.warm()
    before = viewer_kernel.compiled_signatures()
    rng = np.random.default_rng(3)
    table = _table(rng, 300)
    table = MerchantTable(
        table.category.astype(np.int32),
        table.band.astype(np.int16),
        table.pop_count,
        table.pop_decayed,
        table.as_of_ms,
        table.covisit,
    )
    req = _request(rng, table, 500, sparse=False)
    req.history = _history(rng, 300, 12)
    req.history.stats = req.history.stats.astype(np.float32).astype(np.float64)[:, :]
    req.history.stats.setflags(write=False)
    req.items = np.asfortranarray(np.stack([req.items, req.items]))[0]  # strided
    req.lightfm = rng.normal(size=500).astype(np.float32)
    ranker = _rankers(rng)[1]
    expected = ranker.add_viewer_score(np.zeros(500, np.float32), table, req)
    got = ranker.serve_viewer_score(np.zeros(500, np.float32), table, req)
    assert np.allclose(got, expected, rtol=1e-6, atol=1e-6)
    assert viewer_kernel.compiled_signatures() == before == 1


def test_a_lightfm_column_that_is_not_float32_goes_the_numpy_way() -> None:
    rng = np.random.default_rng(4)
    table = _table(rng, 200)
    req = _request(rng, table, 300, sparse=False)
    req.lightfm = rng.normal(size=300)  # float64: the kernel's float32 sums would differ
    ranker = _rankers(rng)[1]
    room_part = np.zeros(300, np.float32)
    assert np.array_equal(
        ranker.serve_viewer_score(room_part, table, req), ranker.add_viewer_score(room_part, table, req)
    )


def test_numpys_pairwise_sum_is_reproduced_addition_for_addition() -> None:
    rng = np.random.default_rng(0)
    for n in [*range(0, 300), 1_000, 4_097, 10_007]:
        values = rng.normal(size=n) * 10 ** rng.uniform(-3, 6, size=n)
        assert viewer_kernel._pairwise_sum(values, n) == values.sum()
