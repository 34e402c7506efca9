"""Where a viewer's model state lives and how the feed reads it: the LightFM vector and the ranker's history.

Owns `ViewerState` — one viewer's share of a model version: the LightFM user representation and the
graded history with each merchant as of the model's round (ranking.history) — and the stores it is
read from: the artifact itself (`from_model`, for the offline replay, tests and a model loaded with
its viewers) and Redis (below), written by the trainer before a model is promoted, so an API process
holds no per-viewer state and its memory does not grow with the number of viewers.

The contract with the ranker: the feed's rank and score stages read `FeedContext.viewer` (a
`ViewerState` of the serving model's version) and nothing else about the viewer's past; a state
of another version, or none, is a viewer the model does not know (popularity, co-visitation of the
session, the visits since the round).
"""

from __future__ import annotations

import asyncio
import io
import struct
import time
from collections.abc import Collection, Iterable, Iterator
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np
import orjson

from ranking.history import STATS, S, ViewerHistories, ViewerHistory


@dataclass(frozen=True)
class ViewerState:
    """One viewer's state under model `version` (`found`: the store knew the viewer)."""

    version: str
    vector: np.ndarray | None = None  # (k,) float32 LightFM user representation
    bias: float = 0.0
    history: ViewerHistory = field(default_factory=ViewerHistory.empty)  # merchant positions of `version`
    found: bool = False

    @classmethod
    def missing(cls, version: str) -> ViewerState:
        return cls(version)


def from_model(scorer: Any, viewer_id: str) -> ViewerState:
    """The state a scorer's model carries in memory (none when it was loaded without its viewers)."""
    model = scorer.model
    user = scorer.user_vector(viewer_id) if scorer.is_known(viewer_id) else None
    histories = getattr(model, "histories", None)
    history = histories.of(viewer_id) if histories is not None else ViewerHistory.empty()
    if user is None and len(history) == 0:
        return ViewerState.missing(scorer.model_version)
    vector = np.asarray(user[0], dtype=np.float32) if user is not None else None
    return ViewerState(scorer.model_version, vector, float(user[1]) if user else 0.0, history, True)


# --- the Redis store -------------------------------------------------------------------------------
#
# rf:rank:vs:<version>:<viewer_id>  one viewer's state under model <version> (encode/decode below)
# rf:rank:vs-ready:<version>        written once every viewer of <version> is: the model may serve
# rf:rank:vs-versions               sorted set of versions with state, by when it was written
#
# A model version's state is written whole before the model is promoted (the registry's promoted row is
# the pointer that switches), and an API process reads the key of the version it serves: a request
# never combines one model's vector or history with another's merchants. Older versions are deleted
# once two newer ones have state (the promoted one and the one a rollback goes back to).

MAGIC = b"RVS1"
_HEAD = struct.Struct("<4sHI")  # magic, k (0: no vector), history rows
_HISTORY_STATS = tuple(i for i, name in enumerate(STATS) if name != "last_ms")
_LAST = S["last_ms"]
VERSIONS_KEY = "rf:rank:vs-versions"


def state_key(version: str, viewer_id: str) -> str:
    return f"rf:rank:vs:{version}:{viewer_id}"


def ready_key(version: str) -> str:
    return f"rf:rank:vs-ready:{version}"


# One row of a viewer's history as stored: the merchant position, the statistics but `last_ms` (float32,
# as the artifact keeps them) and `last_ms` (int64).
RECORD = np.dtype([("m", "<i4"), ("s", "<f4", (len(_HISTORY_STATS),)), ("t", "<i8")])


def encode_many(
    vectors: np.ndarray | None,
    biases: np.ndarray | None,
    has_vector: np.ndarray,
    sizes: np.ndarray,
    merchants: np.ndarray,
    stats: np.ndarray,
    last_ms: np.ndarray,
) -> list[bytes]:
    """Viewers' states, one blob each: a header (magic, k or 0 without a vector, history rows), the
    vector and bias (float32), the history rows (RECORD). `sizes[j]` rows of `merchants`, `stats`
    (all STATS columns; `last_ms` is taken from `last_ms`) belong to viewer j, in order. Built per chunk
    with a few array operations (a viewer costs ~2 µs, so 10 million are written in minutes)."""
    n = int(sizes.shape[0])
    k = int(vectors.shape[1]) if vectors is not None else 0
    rows = np.zeros(int(sizes.sum()), dtype=RECORD)
    rows["m"] = merchants
    rows["s"] = np.asarray(stats, dtype=np.float32)[:, _HISTORY_STATS]
    rows["t"] = last_ms
    body = rows.tobytes()
    head = np.zeros(n, dtype=np.dtype([("magic", "S4"), ("k", "<u2"), ("n", "<u4")]))
    head["magic"] = MAGIC
    head["k"] = np.where(has_vector, k, 0)
    head["n"] = sizes
    heads = head.tobytes()
    vec = b""
    if vectors is not None and k:
        both = np.zeros((n, k + 1), dtype="<f4")
        both[:, :k] = vectors
        both[:, k] = biases if biases is not None else 0.0
        vec = both.tobytes()
    width, h, bounds = 4 * (k + 1), _HEAD.size, np.concatenate([[0], np.cumsum(sizes)]) * RECORD.itemsize
    out = []
    ends = bounds.tolist()
    with_vector = has_vector.tolist()
    for j in range(n):
        parts = heads[j * h : (j + 1) * h]
        if with_vector[j]:
            parts += vec[j * width : (j + 1) * width]
        out.append(parts + body[ends[j] : ends[j + 1]])
    return out


def encode(
    vector: np.ndarray | None,
    bias: float,
    merchants: np.ndarray,
    stats: np.ndarray,
    last_ms: np.ndarray,
) -> bytes:
    """One viewer's state (see `encode_many`)."""
    k = 0 if vector is None else int(vector.shape[0])
    return encode_many(
        np.asarray(vector, dtype=np.float32).reshape(1, k) if vector is not None else None,
        np.array([bias], dtype=np.float32),
        np.array([vector is not None]),
        np.array([merchants.shape[0]]),
        merchants,
        np.asarray(stats, dtype=np.float32).reshape(-1, len(STATS)),
        last_ms,
    )[0]


def decode(version: str, blob: bytes) -> ViewerState:
    magic, k, n = _HEAD.unpack_from(blob)
    if magic != MAGIC:
        raise ValueError("not a viewer state")
    at = _HEAD.size
    vector = None
    bias = 0.0
    if k:
        both = np.frombuffer(blob, dtype="<f4", count=k + 1, offset=at)
        vector, bias = both[:k], float(both[k])
        at += 4 * (k + 1)
    rows = np.frombuffer(blob, dtype=RECORD, count=n, offset=at)
    stats = np.zeros((n, len(STATS)))
    stats[:, _HISTORY_STATS] = rows["s"]
    stats[:, _LAST] = rows["t"]
    return ViewerState(version, vector, bias, ViewerHistory(rows["m"].astype(np.int64), stats), True)


def model_states(model: Any, chunk: int = 50_000) -> Iterator[tuple[list[str], list[bytes]]]:
    """Every viewer of a model with its viewers (LightFM users and history rows), encoded, in chunks."""
    users: dict[str, int] = {u: i for i, u in enumerate(model.user_ids)}
    histories: ViewerHistories | None = model.histories
    rows: dict[str, int] = {v: i for i, v in enumerate(histories.viewer_ids)} if histories is not None else {}
    viewers = list(dict.fromkeys([*model.user_ids, *rows]))
    k = model.user_repr.shape[1] if model.user_repr.ndim == 2 else 0
    for start in range(0, len(viewers), chunk):
        ids = viewers[start : start + chunk]
        u = np.array([users.get(v, -1) for v in ids], dtype=np.int64)
        has = u >= 0
        vectors = np.zeros((len(ids), k), np.float32)
        biases = np.zeros(len(ids), np.float32)
        if has.any():
            vectors[has] = model.user_repr[u[has]]
            biases[has] = model.user_bias[u[has]]
        r = np.array([rows.get(v, -1) for v in ids], dtype=np.int64)
        if histories is not None and (r >= 0).any():
            lo = np.where(r >= 0, histories.indptr[np.maximum(r, 0)], 0)
            hi = np.where(r >= 0, histories.indptr[np.maximum(r, 0) + 1], 0)
            sizes = hi - lo
            take = np.repeat(lo - np.concatenate([[0], np.cumsum(sizes)[:-1]]), sizes) + np.arange(
                int(sizes.sum())
            )
            m, st, last = histories.merchants[take], histories.stats[take], histories.last_ms[take]
        else:
            sizes = np.zeros(len(ids), np.int64)
            m, st, last = np.zeros(0, np.int64), np.zeros((0, len(STATS)), np.float32), np.zeros(0, np.int64)
        yield ids, encode_many(vectors if k else None, biases, has, sizes, m, st, last)


@dataclass(frozen=True)
class Published:
    version: str
    viewers: int
    bytes: int
    seconds: float


class ViewerStateStore:
    """Viewer states in Redis: written per model version before promotion, read one key per page."""

    def __init__(self, redis: Any, batch: int = 1_000) -> None:
        self.redis = redis
        self.batch = batch  # keys per MSET (or pipelined SETs on a Redis Cluster)

    # -- the read, in the page's round trip --

    def queue(self, pipe: Any, version: str, viewer_id: str) -> None:
        pipe.execute_command("GET", state_key(version, viewer_id))

    @staticmethod
    def parse(version: str, reply: Any) -> ViewerState:
        """The state in a GET reply (a viewer the store does not have: `ViewerState.missing`)."""
        if not reply:
            return ViewerState.missing(version)
        return decode(version, bytes(reply))

    async def get(self, version: str, viewer_id: str) -> ViewerState:
        return self.parse(version, await self.redis.get(state_key(version, viewer_id)))

    async def ready(self, version: str) -> bool:
        """Whether every viewer of `version` was written (the model may serve from this store)."""
        return bool(await self.redis.exists(ready_key(version)))

    # -- the write, by the trainer (or an operator's promotion) before a model serves --

    async def publish(self, model: Any) -> Published:
        """Every viewer of `model` (a model with its viewers) under its version, then the ready mark."""
        return await self.publish_chunks(model.version, model_states(model))

    async def publish_chunks(
        self, version: str, chunks: Iterable[tuple[list[str], list[bytes]]]
    ) -> Published:
        started = time.perf_counter()
        viewers = size = 0
        cluster = not hasattr(self.redis, "connection_pool") or type(self.redis).__name__ == "RedisCluster"
        pending: asyncio.Task[Any] | None = None
        for ids, blobs in chunks:  # encode the next chunk while the last one is on its way
            if pending is not None:
                await pending
            pending = asyncio.create_task(self._write(version, ids, blobs, cluster))
            viewers += len(ids)
            size += sum(len(b) for b in blobs)
            await asyncio.sleep(0)
        if pending is not None:
            await pending
        seconds = time.perf_counter() - started
        mark = orjson.dumps({"viewers": viewers, "bytes": size, "seconds": round(seconds, 3)})
        await self.redis.set(ready_key(version), mark)
        await self.redis.zadd(VERSIONS_KEY, {version: time.time()})
        return Published(version, viewers, size, seconds)

    async def _write(self, version: str, ids: list[str], blobs: list[bytes], cluster: bool) -> None:
        """One pipeline per `8 x batch` keys (a few MB: one huge write would stall the socket)."""
        step = 8 * self.batch
        for at in range(0, len(ids), step):
            pipe = self.redis.pipeline(transaction=False)
            for start in range(at, min(at + step, len(ids)), self.batch):
                pairs = zip(ids[start : start + self.batch], blobs[start : start + self.batch], strict=True)
                if cluster:  # keys of one MSET must share a slot on a cluster: one SET each
                    for viewer, blob in pairs:
                        pipe.set(state_key(version, viewer), blob)
                else:
                    args: list[Any] = []
                    for viewer, blob in pairs:
                        args += (state_key(version, viewer), blob)
                    pipe.execute_command("MSET", *args)
            await pipe.execute()

    async def versions(self) -> list[str]:
        return [
            v.decode() if isinstance(v, bytes) else str(v)
            for v in await self.redis.zrange(VERSIONS_KEY, 0, -1)
        ]

    async def forget(self, viewer_id: str) -> int:
        """Delete this viewer's state under every version (erasure); the number of keys deleted. One
        DEL per key: on a Redis Cluster the versions' keys sit in different slots."""
        deleted = 0
        for version in await self.versions():
            deleted += int(await self.redis.delete(state_key(version, viewer_id)))
        return deleted

    async def retire(self, keep: Collection[str]) -> int:
        """Delete the state of every version but `keep` (ready mark first: it is never served again);
        the number of keys deleted."""
        deleted = 0
        for version in await self.versions():
            if version in keep:
                continue
            await self.redis.delete(ready_key(version))
            batch: list[Any] = []
            async for key in self.redis.scan_iter(match=f"rf:rank:vs:{version}:*", count=10_000):
                batch.append(key)
                if len(batch) >= 10_000:
                    deleted += int(await self.redis.unlink(*batch))
                    batch = []
            if batch:
                deleted += int(await self.redis.unlink(*batch))
            await self.redis.zrem(VERSIONS_KEY, version)
        return deleted


# --- the artifact: the viewers apart from what every API process loads -----------------------------


def without_viewers(model: Any) -> Any:
    """The model as API processes load it: no LightFM user vectors, no per-viewer history rows (their
    round's time kept: the feed adds the visits since)."""
    histories: ViewerHistories | None = model.histories
    k = model.user_repr.shape[1] if model.user_repr.ndim == 2 else 0
    return replace(
        model,
        user_ids=[],
        user_repr=np.zeros((0, k), np.float32),
        user_bias=np.zeros(0, np.float32),
        histories=None
        if histories is None
        else ViewerHistories(
            [],
            np.zeros(1, np.int64),
            np.zeros(0, np.int64),
            np.zeros((0, len(STATS)), np.float32),
            np.zeros(0, np.int64),
            histories.until_ms,
        ),
    )


def viewers_blob(model: Any) -> bytes:
    """The model's viewers (user vectors and history rows) as one npz, no pickle."""
    h: ViewerHistories | None = model.histories
    ids = "\n".join(model.user_ids).encode()
    arrays: dict[str, np.ndarray] = {
        "user_ids": np.frombuffer(ids, dtype=np.uint8),
        "user_repr": model.user_repr,
        "user_bias": model.user_bias,
    }
    if h is not None:
        arrays.update(
            h_viewers=np.frombuffer("\n".join(h.viewer_ids).encode(), dtype=np.uint8),
            h_indptr=h.indptr,
            h_merchants=h.merchants,
            h_stats=h.stats,
            h_last_ms=h.last_ms,
        )
    buf = io.BytesIO()
    np.savez(buf, **arrays)  # type: ignore[arg-type]
    return buf.getvalue()


def with_viewers(model: Any, blob: bytes) -> Any:
    """`model` (loaded without its viewers) with the viewers of `viewers_blob`."""

    def ids(raw: np.ndarray) -> list[str]:
        text = raw.tobytes().decode()
        return text.split("\n") if text else []

    with np.load(io.BytesIO(blob), allow_pickle=False) as z:
        out = replace(model, user_ids=ids(z["user_ids"]), user_repr=z["user_repr"], user_bias=z["user_bias"])
        if "h_indptr" in z.files and model.histories is not None:
            out.histories = ViewerHistories(
                ids(z["h_viewers"]),
                z["h_indptr"],
                z["h_merchants"],
                z["h_stats"],
                z["h_last_ms"],
                model.histories.until_ms,
            )
    return out


@dataclass
class ViewerStateRead:
    """Part of the page's first Redis round trip: the viewer's state under the serving model `version`
    (one GET; its reply read into `value`)."""

    version: str
    viewer_id: str
    value: ViewerState | None = None

    def queue(self, pipe: Any) -> None:
        pipe.execute_command("GET", state_key(self.version, self.viewer_id))

    def read(self, replies: list[Any]) -> ViewerState:
        self.value = ViewerStateStore.parse(self.version, replies[0])
        return self.value


def in_store(scorer: Any) -> bool:
    """Whether the scorer's model was loaded without its viewers (their state is read from the store)."""
    model = scorer.model
    return len(model.user_ids) == 0 and (model.histories is None or len(model.histories.viewer_ids) == 0)
