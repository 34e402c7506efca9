"""The scorer the feed calls once per request: one viewer against every live room.

Owns turning a `RankingModel` into scores with one matrix product (item matrix · user vector +
biases), the per-merchant cache of item representations (a merchant first seen at scoring time
is built from its features and cached), and the fallbacks: an unknown viewer is scored from
entry-source features when there are any, else by training popularity. Also the in-session
signal in LightFM's item space (`session_similarity`): how close each live room's merchant is
to what the viewer watched in this session, which works for a viewer the model never saw.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from ranking.features import RoomFeatures, item_feature_names, user_feature_names
from ranking.model import RankingModel, metadata_representation


@dataclass
class LiveItems:
    """Item representations gathered for one snapshot of live rooms (reuse it while the set holds)."""

    rooms: Sequence[RoomFeatures]
    matrix: np.ndarray  # (n_rooms, k) float32
    bias: np.ndarray  # (n_rooms,) float32
    popularity: np.ndarray  # (n_rooms,) float32
    positions: np.ndarray | None = None  # (n_rooms,) the merchant's position in the model
    _unit: np.ndarray | None = field(default=None, repr=False)
    # A retrieved subset's unit rows, gathered from the whole block's when first read (only a session with
    # visits reads them: gathering them with every subset was ~80 kB copied per page for nothing). The
    # whole block's are made once per snapshot (feed.stages.Score.warm): a subset that scaled its own rows
    # every request spent ~45 us of a page at 100,000 live rooms on it.
    _unit_of: tuple[LiveItems, np.ndarray] | None = field(default=None, repr=False)

    @property
    def unit(self) -> np.ndarray:
        """Rows of `matrix` scaled to unit length (computed once per snapshot)."""
        if self._unit is None:
            if self._unit_of is not None:
                whole, rows = self._unit_of
                self._unit = whole.unit[rows]
            else:
                self._unit = unit_rows(self.matrix)
        return self._unit

    def take(self, rows: np.ndarray) -> LiveItems:
        """The block of these rooms only (a retrieved subset of the snapshot)."""
        return LiveItems(
            self.rooms,  # the snapshot's rooms (a subset reads positions and vectors, not rooms)
            self.matrix[rows],
            self.bias[rows],
            self.popularity[rows],
            self.positions[rows] if self.positions is not None else None,
            _unit_of=(self, rows),
        )


def unit_rows(matrix: np.ndarray) -> np.ndarray:
    norms = np.linalg.norm(matrix, axis=1, keepdims=True)
    out: np.ndarray = (matrix / np.maximum(norms, 1e-9)).astype(np.float32)
    return out


def watch_weight(dwell_s: float) -> float:
    """What one watch says about this session's taste: log1p(dwell / 30 s), as in training weights."""
    return math.log1p(max(dwell_s, 0.0) / 30.0)


def session_cosine(unit_rooms: np.ndarray, watched: np.ndarray | None) -> np.ndarray:
    """Cosine of each room's unit item vector with the session's watched vector (0 if none)."""
    norm = float(np.linalg.norm(watched)) if watched is not None else 0.0
    if watched is None or norm < 1e-9:
        return np.zeros(unit_rooms.shape[0], dtype=np.float32)
    out: np.ndarray = unit_rooms @ (watched / norm).astype(np.float32)
    return out


class Scorer:
    def __init__(self, model: RankingModel) -> None:
        self.model = model
        self._user_pos = {u: i for i, u in enumerate(model.user_ids)}
        self._item_feature_pos = {n: i for i, n in enumerate(model.item_feature_names)}
        self._user_feature_pos = {n: i for i, n in enumerate(model.user_feature_names)}
        n, k = model.item_repr.shape
        cap = max(16, int(n * 1.25))
        self._items = np.zeros((cap, k), dtype=np.float32)
        self._items[:n] = model.item_repr
        self._bias = np.zeros(cap, dtype=np.float32)
        self._bias[:n] = model.item_bias
        self._pop = np.zeros(cap, dtype=np.float32)
        self._pop[:n] = model.merchant_popularity
        self._n = n
        self._merchant_pos = {m: i for i, m in enumerate(model.merchant_ids)}
        # New merchants are cached per feature set: same features, same representation.
        self._by_features: dict[tuple[str, ...], int] = {}
        self._last: LiveItems | None = None
        self._unit_items: np.ndarray | None = None
        self._last_key: tuple[str, ...] = ()

    @property
    def model_version(self) -> str:
        return self.model.version

    def _features_only(self, names: list[str]) -> tuple[np.ndarray, float]:
        idx = [self._item_feature_pos[n] for n in names if n in self._item_feature_pos]
        share = float(self.model.params.get("identity_share", 0.0))
        return metadata_representation(self.model.item_feature_emb, self.model.item_feature_bias, idx, share)

    def _append(self, vec: np.ndarray, bias: float) -> int:
        if self._n == self._items.shape[0]:
            grow = self._items.shape[0] * 2
            self._items = np.resize(self._items, (grow, self._items.shape[1]))
            self._bias = np.resize(self._bias, grow)
            self._pop = np.resize(self._pop, grow)
        i = self._n
        self._items[i], self._bias[i], self._pop[i] = vec, bias, 0.0
        self._n += 1
        return int(i)

    def merchant_position(self, room: RoomFeatures) -> int:
        pos = self._merchant_pos.get(room.merchant_id)
        if pos is not None:
            return pos
        names = item_feature_names(room)
        key = tuple(sorted(names))
        pos = self._by_features.get(key)
        if pos is None:
            vec, bias = self._features_only(names)
            pos = self._append(vec, bias)
            self._by_features[key] = pos
        self._merchant_pos[room.merchant_id] = pos
        return pos

    def prepare(self, rooms: Sequence[RoomFeatures]) -> LiveItems:
        """Gather the item block for a live-room snapshot; cheap to score against repeatedly."""
        mp = self._merchant_pos
        pos = np.fromiter([mp.get(r.merchant_id, -1) for r in rooms], dtype=np.int64, count=len(rooms))
        for i in np.flatnonzero(pos < 0).tolist():
            pos[i] = self.merchant_position(rooms[i])
        return LiveItems(rooms, np.ascontiguousarray(self._items[pos]), self._bias[pos], self._pop[pos], pos)

    def _live(self, rooms: Sequence[RoomFeatures] | LiveItems) -> LiveItems:
        if isinstance(rooms, LiveItems):
            return rooms
        last = self._last
        if last is not None and last.rooms is rooms:
            return last
        # The feed may hand a new list per request; the same rooms in the same order reuse the block.
        key = tuple([r.merchant_id for r in rooms])
        if last is not None and self._last_key == key:
            return last
        self._last = self.prepare(rooms)
        self._last_key = key
        return self._last

    def user_vector(
        self, viewer_id: str, entry_merchant_ids: Sequence[str] = ()
    ) -> tuple[np.ndarray, float] | None:
        i = self._user_pos.get(viewer_id)
        if i is not None:
            return self.model.user_repr[i], float(self.model.user_bias[i])
        idx = [
            self._user_feature_pos[n]
            for n in user_feature_names(entry_merchant_ids)
            if n in self._user_feature_pos
        ]
        if not idx:
            return None
        return self.model.user_feature_emb[idx].mean(axis=0), float(self.model.user_feature_bias[idx].mean())

    def unit_items(self) -> np.ndarray:
        """Every cached item representation scaled to unit length (rows as `merchant_position`; kept
        until a merchant the model never saw is added)."""
        held = self._unit_items
        if held is None or held.shape[0] != self._n:
            held = self._unit_items = unit_rows(self._items[: self._n])
        return held

    def position_of(self, merchant_id: str) -> int:
        """The merchant's position, -1 for a merchant neither trained on nor seen live yet."""
        return int(self._merchant_pos.get(merchant_id, -1))

    def session_similarity(
        self, rooms: Sequence[RoomFeatures] | LiveItems, watched: Sequence[tuple[RoomFeatures, float]]
    ) -> np.ndarray:
        """Per room: cosine with the dwell-weighted mean of merchants watched this session.

        `watched` is (room, dwell seconds) for every leave so far in the session. This is
        `blend`'s `session_lightfm` input; it needs no viewer history, so it serves new viewers too.
        """
        live = self._live(rooms)
        if not watched:
            return np.zeros(live.matrix.shape[0], dtype=np.float32)
        k = self._items.shape[1]
        vec = np.zeros(k, dtype=np.float32)
        for room, dwell_s in watched:
            item = self._items[self.merchant_position(room)]
            vec += watch_weight(dwell_s) * item / max(float(np.linalg.norm(item)), 1e-9)
        return session_cosine(live.unit, vec)

    def is_personal(self, viewer_id: str, entry_merchant_ids: Sequence[str] = ()) -> bool:
        """Whether `score` has a vector for this viewer (else it returns training popularity)."""
        return self.user_vector(viewer_id, entry_merchant_ids) is not None

    def is_known(self, viewer_id: str) -> bool:
        return viewer_id in self._user_pos

    def item_block(self) -> tuple[np.ndarray, np.ndarray]:
        """Every cached item vector and bias, rows as `merchant_position` (views: read, never write)."""
        return self._items[: self._n], self._bias[: self._n]

    def items_at(self, positions: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """The item vectors and biases of these merchant positions (retrieval's live-merchant block)."""
        return self._items[positions], self._bias[positions]

    @staticmethod
    def score_vector(live: LiveItems, vector: np.ndarray) -> np.ndarray:
        """float32 score per room of `live` for a viewer vector read from the viewer-state store (as
        `score`: the viewer's own bias shifts every room alike and is left out)."""
        out: np.ndarray = live.matrix @ np.asarray(vector, dtype=np.float32)
        out += live.bias
        return out

    def score(
        self,
        viewer_id: str,
        rooms: Sequence[RoomFeatures] | LiveItems,
        entry_merchant_ids: Sequence[str] = (),
    ) -> np.ndarray:
        """float32 score per room, in the order given; higher is better."""
        live = self._live(rooms)
        user = self.user_vector(viewer_id, entry_merchant_ids)
        if user is None:
            return live.popularity.copy()
        vec, _ = user
        out: np.ndarray = live.matrix @ vec
        out += live.bias
        return out
