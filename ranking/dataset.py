"""Datasets from the interaction log: the columnar `InteractionLog` and LightFM training matrices.

Owns reading the archive (`interactions` table in PostgreSQL, or the simulator's log in memory —
the same columns either way) and turning a time window of it into LightFM's inputs: users =
viewers, items = merchants, weights from dwell and purchases with exponential time decay, item
features from `RoomFeatures`, user features from attributed entries.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import scipy.sparse as sp

from events import vocabulary
from events.vocabulary import CODE
from ranking.features import RoomFeatures, item_feature_names, user_feature_names

# The `type` column holds events.vocabulary codes; these are the ones the builders read.
IMPRESSION, ENTER, LEAVE, PURCHASE = (
    CODE[vocabulary.IMPRESSION],
    CODE[vocabulary.ENTER],
    CODE[vocabulary.LEAVE],
    CODE[vocabulary.PURCHASE],
)
# The types read from the archive (the others carry nothing the dataset or a viewer's history uses).
ARCHIVE_TYPES = [
    vocabulary.IMPRESSION,
    vocabulary.ENTER,
    vocabulary.LEAVE,
    vocabulary.PURCHASE,
    vocabulary.FOLLOW,
]
_NAMES = np.array([*vocabulary.TYPES, ""], dtype=object)  # code -1 (a type outside the vocabulary) -> ""
log = logging.getLogger("ranking.dataset")
DAY_MS = 86_400_000


@dataclass
class InteractionLog:
    """Events as numpy columns over integer ids; the `*_ids` lists map them back to strings."""

    type: np.ndarray  # int8 code of events.vocabulary.CODE
    viewer: np.ndarray
    session: np.ndarray
    room: np.ndarray
    merchant: np.ndarray
    ts: np.ndarray  # epoch ms
    dwell_ms: np.ndarray  # -1 when absent
    amount: np.ndarray  # NaN when absent
    entry_code: np.ndarray  # bool: this enter came through the merchant's attribution code
    viewer_ids: list[str]
    merchant_ids: list[str]
    room_ids: list[str]

    def __len__(self) -> int:
        return int(self.type.shape[0])

    def type_names(self) -> np.ndarray:
        """Each event's type by name (object array; "" for a type outside the vocabulary)."""
        names: np.ndarray = _NAMES[self.type.astype(np.int64)]
        return names

    def before(self, until_ms: int) -> InteractionLog:
        return self.select(self.ts < until_ms)

    def select(self, mask: np.ndarray) -> InteractionLog:
        return InteractionLog(
            self.type[mask],
            self.viewer[mask],
            self.session[mask],
            self.room[mask],
            self.merchant[mask],
            self.ts[mask],
            self.dwell_ms[mask],
            self.amount[mask],
            self.entry_code[mask],
            self.viewer_ids,
            self.merchant_ids,
            self.room_ids,
        )


def from_simulator(market: Any) -> InteractionLog:
    """The simulator's log without going through dicts (same ids the events carry)."""
    log = market.log
    cfg = market.config
    return InteractionLog(
        type=log.type.astype(np.int8),
        viewer=log.viewer,
        session=log.session,
        room=log.room,
        merchant=log.merchant,
        ts=log.ts,
        dwell_ms=log.dwell_ms,
        amount=log.amount,
        entry_code=log.entry_code,
        viewer_ids=[f"v{i}" for i in range(cfg.n_viewers)],
        merchant_ids=[f"m{i}" for i in range(cfg.n_merchants)],
        room_ids=[f"r{j}" for j in range(len(market.world.r_merchant))],
    )


def _codes(values: Sequence[str]) -> tuple[np.ndarray, list[str]]:
    uniq, inv = np.unique(np.asarray(values, dtype=object).astype(str), return_inverse=True)
    return inv.astype(np.int64), [str(u) for u in uniq]


def from_events(events: Iterable[Mapping[str, Any]]) -> InteractionLog:
    """From event dicts (the ingest schema) or archive rows with the same field names."""
    rows = list(events)
    types = np.array([CODE.get(str(r["type"]), -1) for r in rows], dtype=np.int8)
    viewer, viewer_ids = _codes([str(r["viewer_id"]) for r in rows])
    session, _ = _codes([str(r["session_id"]) for r in rows])
    room, room_ids = _codes([str(r["room_id"]) for r in rows])
    merchant, merchant_ids = _codes([str(r.get("merchant_id") or "") for r in rows])
    ts = np.array([int(r["ts"]) for r in rows], dtype=np.int64)
    dwell = np.array(
        [int(r["dwell_ms"]) if r.get("dwell_ms") is not None else -1 for r in rows], dtype=np.int64
    )
    amount = np.array([float(r["amount"]) if r.get("amount") is not None else np.nan for r in rows])
    code = np.array([bool(r.get("entry_code_merchant_id")) for r in rows], dtype=bool)
    order = np.argsort(ts, kind="stable")
    return InteractionLog(
        types[order],
        viewer[order],
        session[order],
        room[order],
        merchant[order],
        ts[order],
        dwell[order],
        amount[order],
        code[order],
        viewer_ids,
        merchant_ids,
        room_ids,
    )


ARCHIVE_QUERY = """
SELECT event_id, type, viewer_id, session_id, room_id, merchant_id,
       (extract(epoch FROM ts) * 1000)::bigint AS ts, dwell_ms, amount::float8 AS amount,
       payload ->> 'entry_code_merchant_id' AS entry_code_merchant_id
FROM interactions
WHERE ts >= to_timestamp($1::float8 / 1000) AND ts < to_timestamp($2::float8 / 1000)
  AND type = ANY($3::text[])
ORDER BY ts
"""


async def load_archive(pool: Any, since_ms: int, until_ms: int) -> InteractionLog:
    """Read the archive window [since_ms, until_ms) from PostgreSQL (the `interactions` table)."""
    async with pool.acquire() as conn:
        rows = await conn.fetch(ARCHIVE_QUERY, since_ms, until_ms, ARCHIVE_TYPES)
    return from_events(dict(r) for r in rows)


@dataclass(frozen=True)
class WeightParams:
    """How interactions weigh in LightFM's training matrix.

    Time decay is relative to the training window: the half-life is at least `min_window_share` of the
    window's span (a 3-day half-life over months of ratings would erase all but the last weeks), every
    event keeps at least `decay_floor` of its weight, and `build_training_set` warns when more than
    `warn_share` of the events would have carried almost no weight (below 1e-3) without the floor.
    """

    half_life_days: float = 3.0
    dwell_unit_s: float = 30.0
    purchase_weight: float = 2.0
    min_dwell_s: float = 5.0
    decay_floor: float = 0.25
    min_window_share: float = 0.5
    warn_share: float = 0.5
    # A rating-style log (no leaves; e.g. MovieLens) counts every enter as one watch of `dwell_unit_s`.
    enters_as_watches: bool = False


def decay_weights(ts: np.ndarray, until_ms: int, params: WeightParams) -> np.ndarray:
    """Per event, its time-decay factor in [decay_floor, 1] relative to the training window."""
    if ts.size == 0:
        return np.ones(0)
    span_days = max(until_ms - int(ts.min()), 0) / DAY_MS
    half_life = max(params.half_life_days, params.min_window_share * span_days)
    raw = np.power(0.5, np.maximum(until_ms - ts, 0) / DAY_MS / half_life)
    faint = float((raw < 1e-3).mean())
    if faint > params.warn_share:
        log.warning(
            "time decay leaves %.0f%% of the training events with almost no weight (half-life %.1f days "
            "over a %.1f-day window); they keep the floor %.2f",
            100 * faint,
            half_life,
            span_days,
            params.decay_floor,
        )
    out: np.ndarray = np.maximum(raw, params.decay_floor)
    return out


@dataclass
class TrainingSet:
    interactions: sp.coo_matrix
    weights: sp.coo_matrix
    user_features: sp.csr_matrix
    item_features: sp.csr_matrix
    user_ids: list[str]
    merchant_ids: list[str]
    user_feature_names: list[str]
    item_feature_names: list[str]
    merchant_popularity: np.ndarray
    since_ms: int
    until_ms: int
    identity_share: float = 0.0  # of a merchant's representation (0: the mean of its features)

    @property
    def n_interactions(self) -> int:
        return int(self.interactions.nnz)


# The share of a merchant's LightFM representation that is its own (identity) embedding; the shared
# features (category, tags, band, format, host) split the rest. LightFM's Dataset row-normalises, which
# gives the identity 1/(1 + number of features): 1/7 for a merchant with three tags, so the richer a
# merchant's metadata, the less the model could learn about the merchant itself — on a world where
# taste is latent (not in the metadata), LightFM ranked new merchants below plain popularity.
# Measured (8,000 viewers, 400 merchants, LightFM alone, discovery HR@5): latent world 0.207 -> 0.234
# (seed 1) and 0.207 -> 0.229 (seed 2), category world 0.237 -> 0.242; share 0.7 and 30 epochs worse.
IDENTITY_SHARE = 0.5


def _feature_matrix(
    rows: list[list[str]], vocab: dict[str, int], identity_share: float | None = None
) -> sp.csr_matrix:
    """Rows of feature names as a CSR matrix. Each row sums to 1: the mean of its parts, or with
    `identity_share`, the row's first name (its identity) weighs that share and the others the rest."""
    indptr: list[int] = [0]
    indices: list[int] = []
    data: list[float] = []
    for names in rows:
        indices.extend(vocab[n] for n in names)
        indptr.append(len(indices))
        if identity_share is None or len(names) < 2:
            data.extend([1.0 / max(len(names), 1)] * len(names))
        else:
            data.append(identity_share)
            data.extend([(1.0 - identity_share) / (len(names) - 1)] * (len(names) - 1))
    return sp.csr_matrix(
        (np.array(data, dtype=np.float32), np.array(indices, dtype=np.int32), np.array(indptr)),
        shape=(len(rows), len(vocab)),
        dtype=np.float32,
    )


def build_training_set(
    log: InteractionLog,
    merchant_features: Mapping[str, RoomFeatures],
    until_ms: int,
    params: WeightParams = WeightParams(),
    exclude_merchants: Iterable[str] = (),
) -> TrainingSet:
    """LightFM matrices from the log before `until_ms`; `exclude_merchants` are held out entirely."""
    excluded = {log.merchant_ids.index(m) for m in exclude_merchants if m in log.merchant_ids}
    mask = log.ts < until_ms
    if excluded:
        mask &= ~np.isin(log.merchant, np.fromiter(excluded, dtype=np.int64))
    w = log.select(mask)
    is_leave = (w.type == LEAVE) & (w.dwell_ms >= params.min_dwell_s * 1000)
    is_buy = w.type == PURCHASE
    value = np.zeros(len(w))
    value[is_leave] = np.log1p(w.dwell_ms[is_leave] / (params.dwell_unit_s * 1000.0))
    if params.enters_as_watches:
        value[w.type == ENTER] = np.log1p(1.0)
    value[is_buy] = params.purchase_weight
    value *= decay_weights(w.ts, until_ms, params)
    keep = value > 0
    v, m, val = w.viewer[keep], w.merchant[keep], value[keep]

    users = np.unique(v)
    user_index = np.full(len(log.viewer_ids), -1, dtype=np.int64)
    user_index[users] = np.arange(users.size)
    items = [mid for i, mid in enumerate(log.merchant_ids) if i not in excluded and mid]
    known = set(items) | {log.merchant_ids[i] for i in excluded}
    items.extend(mid for mid in merchant_features if mid not in known)
    item_pos = {mid: k for k, mid in enumerate(items)}
    merchant_to_item = np.array([item_pos.get(mid, -1) for mid in log.merchant_ids], dtype=np.int64)
    rows, cols = user_index[v], merchant_to_item[m]
    agg = sp.coo_matrix((val, (rows, cols)), shape=(users.size, len(items))).tocsr()
    agg.sum_duplicates()
    agg = agg.tocoo()
    # Repeat visits saturate: the first visits carry the taste signal, the blend's repeat term the rest.
    weights = sp.coo_matrix((np.log1p(agg.data).astype(np.float32), (agg.row, agg.col)), shape=agg.shape)
    interactions = sp.coo_matrix(
        (np.ones_like(agg.data, dtype=np.float32), (agg.row, agg.col)), shape=agg.shape
    )

    # Item features: identity + the merchant's room features.
    item_rows: list[list[str]] = []
    for mid in items:
        names = [f"id:{mid}"]
        f = merchant_features.get(mid)
        if f is not None:
            names.extend(item_feature_names(f))
        item_rows.append(names)
    item_vocab: dict[str, int] = {}
    for names in item_rows:
        for n in names:
            item_vocab.setdefault(n, len(item_vocab))

    # User features: identity + entry source (merchants whose codes brought the viewer in).
    code_enters = w.entry_code & (w.type == ENTER)
    entry_of: dict[int, set[str]] = {}
    for vv, mm in zip(w.viewer[code_enters].tolist(), w.merchant[code_enters].tolist(), strict=True):
        entry_of.setdefault(vv, set()).add(log.merchant_ids[mm])
    user_ids = [log.viewer_ids[u] for u in users.tolist()]
    user_rows = [
        [f"id:{uid}", *user_feature_names(sorted(entry_of.get(u, ())))]
        for uid, u in zip(user_ids, users.tolist(), strict=True)
    ]
    user_vocab: dict[str, int] = {}
    for names in user_rows:
        for n in names:
            user_vocab.setdefault(n, len(user_vocab))

    popularity = np.asarray(agg.sum(axis=0)).ravel() if agg.nnz else np.zeros(len(items))
    return TrainingSet(
        interactions=interactions,
        weights=weights,
        user_features=_feature_matrix(user_rows, user_vocab),
        item_features=_feature_matrix(item_rows, item_vocab, IDENTITY_SHARE),
        user_ids=user_ids,
        merchant_ids=items,
        user_feature_names=list(user_vocab),
        item_feature_names=list(item_vocab),
        merchant_popularity=np.log1p(popularity).astype(np.float32),
        since_ms=int(w.ts.min()) if len(w) else until_ms,
        until_ms=until_ms,
        identity_share=IDENTITY_SHARE,
    )
