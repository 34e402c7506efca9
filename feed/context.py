"""What a feed stage sees: the request (`FeedContext`) and its candidates (`Candidates`).

Candidates are a struct of arrays, aligned by index, because a request ranks every live room
(10,000 or more) and per-room Python objects would cost more than the ranking itself. A stage
reads and writes whole arrays (numpy), never loops over all candidates. Who may write what is in
docs/feed.md ("Writing a stage"); in short: `model_score` (score), `score` (blend and any boost),
`boosted` (a boost), `keep` (filters only clear it), `order` (diversity and exploration).
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np

from feed.config import RankingConfig


class Room(Protocol):
    """The contract's `rooms.live_index.LiveRoom` as the feed reads it."""

    room_id: str
    merchant_id: str
    title: str
    category: str
    tags: tuple[str, ...]
    price_band: str
    format: str
    host: str
    started_at: float
    stream_url: str
    status: str
    replay_url: str | None


@dataclass(frozen=True)
class RecentVisit:
    """The contract's `events.live_stats.RecentVisit`: a room this viewer recently left."""

    room_id: str
    merchant_id: str
    dwell_ms: int
    ts: int
    swiped_away: bool


def as_recent_visit(v: Any) -> RecentVisit:
    """events' RecentVisit (or anything shaped like it) as the feed's."""
    if isinstance(v, RecentVisit):
        return v
    return RecentVisit(room_id=v.room_id, merchant_id=v.merchant_id or "", dwell_ms=int(v.dwell_ms), ts=int(v.ts),
                       swiped_away=bool(v.swiped_away))


@dataclass
class Candidates:
    """Every room the feed could show, one index per room; arrays are aligned with `rooms`."""

    rooms: Sequence[Any]
    room_ids: np.ndarray  # object (str)
    merchant_ids: np.ndarray  # object (str)
    merchant_codes: np.ndarray  # int32: equal merchants, equal codes (cheap run checks)
    category_codes: np.ndarray  # int32
    started_at: np.ndarray  # float64 epoch s
    is_replay: np.ndarray  # bool
    index_of: dict[str, int]  # room_id → index
    rooms_of_merchant: dict[str, np.ndarray]  # merchant_id → indices
    # Hydrated room heat (events.heat: counts decayed with a 15-minute half-life; zeros when unknown).
    enters: np.ndarray = field(default_factory=lambda: np.zeros(0, np.float32))
    impressions: np.ndarray = field(default_factory=lambda: np.zeros(0, np.float32))
    dwell_s: np.ndarray = field(default_factory=lambda: np.zeros(0, np.float32))
    orders: np.ndarray = field(default_factory=lambda: np.zeros(0, np.float32))
    # Written by stages.
    model_score: np.ndarray = field(default_factory=lambda: np.zeros(0, np.float32))
    score: np.ndarray = field(default_factory=lambda: np.zeros(0, np.float32))
    boosted: np.ndarray = field(default_factory=lambda: np.zeros(0, bool))
    keep: np.ndarray = field(default_factory=lambda: np.zeros(0, bool))

    def __len__(self) -> int:
        return len(self.rooms)

    @classmethod
    def of(cls, rooms: Sequence[Any], replay_ids: frozenset[str] = frozenset()) -> Candidates:
        n = len(rooms)
        room_ids = np.empty(n, dtype=object)
        merchant_ids = np.empty(n, dtype=object)
        merchant_codes = np.empty(n, dtype=np.int32)
        category_codes = np.empty(n, dtype=np.int32)
        started_at = np.empty(n, dtype=np.float64)
        merchants: dict[str, int] = {}
        categories: dict[str, int] = {}
        grouped: dict[str, list[int]] = {}
        index_of: dict[str, int] = {}
        for i, room in enumerate(rooms):
            room_ids[i] = room.room_id
            merchant_ids[i] = room.merchant_id
            merchant_codes[i] = merchants.setdefault(room.merchant_id, len(merchants))
            category_codes[i] = categories.setdefault(room.category, len(categories))
            started_at[i] = room.started_at
            index_of[room.room_id] = i
            grouped.setdefault(room.merchant_id, []).append(i)
        is_replay = np.zeros(n, dtype=bool)
        for room_id in replay_ids:
            if room_id in index_of:
                is_replay[index_of[room_id]] = True
        zeros = np.zeros(n, dtype=np.float32)
        return cls(
            rooms=rooms,
            room_ids=room_ids,
            merchant_ids=merchant_ids,
            merchant_codes=merchant_codes,
            category_codes=category_codes,
            started_at=started_at,
            is_replay=is_replay,
            index_of=index_of,
            rooms_of_merchant={m: np.asarray(ix, dtype=np.int64) for m, ix in grouped.items()},
            enters=zeros,
            impressions=zeros,
            dwell_s=zeros,
            orders=zeros,
        )

    def fresh_copy(self) -> Candidates:
        """This candidate set with its per-request arrays reset (the shared arrays are read-only)."""
        n = len(self.rooms)
        copy = Candidates(**{k: getattr(self, k) for k in self.__dataclass_fields__})
        copy.model_score = np.zeros(n, dtype=np.float32)
        copy.score = np.zeros(n, dtype=np.float32)
        copy.boosted = np.zeros(n, dtype=bool)
        copy.keep = np.ones(n, dtype=bool)
        return copy


@dataclass
class FeedContext:
    """One feed request as it flows through the stages."""

    viewer_id: str
    session_id: str
    count: int
    config: RankingConfig
    config_version: int = 0
    variant: str = "control"
    model_version: str = "popularity"
    now: float = field(default_factory=time.time)
    candidates: Candidates = field(default_factory=lambda: Candidates.of(()))
    served: set[str] = field(default_factory=set)  # room ids already served in this session
    blocked_merchants: set[str] = field(default_factory=set)
    recent: list[RecentVisit] = field(default_factory=list)
    recent_loaded: bool = False  # read with the session already (Hydrate then does not read it)
    first_position: int = 0  # how many rooms the session was served before this page
    order: list[int] = field(default_factory=list)  # candidate indices, best first
    explored: set[int] = field(default_factory=set)  # indices placed by exploration
    page: list[dict[str, Any]] = field(default_factory=list)  # the page plus spares, best first
    degraded: bool = False
    degraded_reasons: list[str] = field(default_factory=list)
    rng: np.random.Generator = field(default_factory=np.random.default_rng)
    timings_ms: dict[str, float] = field(default_factory=dict)

    def degrade(self, reason: str) -> None:
        self.degraded = True
        if reason not in self.degraded_reasons:
            self.degraded_reasons.append(reason)


class Stage(Protocol):
    """One step of the feed pipeline. Adding a stage is one line in `feed.pipeline`."""

    name: str

    async def apply(self, ctx: FeedContext) -> None: ...
