"""What a feed stage sees: the request (`FeedContext`) and its candidates (`Candidates`).

Candidates are a struct of arrays, aligned by index, because a request ranks every live room
(10,000 or more) and per-room Python objects would cost more than the ranking itself. A stage
reads and writes whole arrays (numpy), never loops over all candidates. Who may write what is in
docs/feed.md ("Writing a stage"); in short: `model_score` (score), `score` (blend and any boost),
`boosted` (a boost), `keep` (filters only clear it), `order` (diversity and exploration).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Generator, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol, TypeVar, cast

import numpy as np

from feed.config import RankingConfig
from ranking.retrieval import sorted_unique

T = TypeVar("T")


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


class Visit(Protocol):
    """A room a viewer recently left, as the live stats answer it (events.live_stats.RecentVisit)."""

    @property
    def room_id(self) -> str: ...
    @property
    def merchant_id(self) -> str | None: ...
    @property
    def dwell_ms(self) -> int: ...
    @property
    def ts(self) -> int: ...
    @property
    def swiped_away(self) -> bool: ...


def as_recent_visit(v: Visit) -> RecentVisit:
    """events' RecentVisit (or anything shaped like it) as the feed's."""
    if isinstance(v, RecentVisit):
        return v
    return RecentVisit(
        room_id=v.room_id,
        merchant_id=v.merchant_id or "",
        dwell_ms=int(v.dwell_ms),
        ts=int(v.ts),
        swiped_away=bool(v.swiped_away),
    )


class MerchantRooms(Mapping[str, np.ndarray]):
    """merchant_id → the indices of its rooms, ascending: slices of one stable sort by merchant code,
    made on demand (a request asks for the few merchants a viewer touched, not all 5,000)."""

    def __init__(self, codes: dict[str, int], merchant_codes: np.ndarray) -> None:
        self._codes = codes
        self._order = np.argsort(merchant_codes, kind="stable")
        self._bounds = np.concatenate(([0], np.cumsum(np.bincount(merchant_codes, minlength=len(codes)))))

    def __getitem__(self, merchant_id: str) -> np.ndarray:
        code = self._codes[merchant_id]
        return self._order[self._bounds[code] : self._bounds[code + 1]]

    def get(self, merchant_id: str, default: Any = None) -> Any:
        code = self._codes.get(merchant_id)
        return default if code is None else self._order[self._bounds[code] : self._bounds[code + 1]]

    def __contains__(self, merchant_id: object) -> bool:
        return merchant_id in self._codes

    def __iter__(self) -> Iterator[str]:
        return iter(self._codes)

    def __len__(self) -> int:
        return len(self._codes)


class Gathered(Sequence[Any]):
    """`items[rows]` of a list, without copying it (a retrieved subset's rooms)."""

    def __init__(self, items: Sequence[Any], rows: np.ndarray) -> None:
        self._items = items
        self._rows = rows

    def __len__(self) -> int:
        return int(self._rows.shape[0])

    def __getitem__(self, i: Any) -> Any:
        if isinstance(i, slice):
            return [self._items[j] for j in self._rows[i].tolist()]
        return self._items[int(self._rows[i])]


class GatheredColumn:
    """`values[rows]` of an object column (room or merchant ids) of a retrieved subset, gathered only where
    read: a page reads a dozen of its few hundred ids, and gathering them all cost ~0.5 ms a page at 100,000
    live rooms (each id's object is touched for its reference count, far apart in memory: cache misses).
    Indexing, `tolist()`, iteration and any numpy function (`__array__`) give what `values[rows]` would."""

    def __init__(self, values: np.ndarray, rows: np.ndarray) -> None:
        self._values = values
        self._rows = rows

    def __len__(self) -> int:
        return int(self._rows.shape[0])

    def __getitem__(self, i: Any) -> Any:
        return self._values[self._rows[i]]

    def __array__(self, dtype: Any = None, copy: Any = None) -> np.ndarray:
        out: np.ndarray = self._values[self._rows]
        return out if dtype is None else out.astype(dtype)

    def __iter__(self) -> Iterator[Any]:
        return iter(self.tolist())

    def tolist(self) -> list[Any]:
        out: list[Any] = self._values[self._rows].tolist()
        return out

    @property
    def shape(self) -> tuple[int]:
        return (len(self),)


class PositionOf(Mapping[str, int]):
    """room_id → index in a small set, built on first use (most requests never ask)."""

    def __init__(self, room_ids: np.ndarray) -> None:
        self._ids = room_ids
        self._map: dict[str, int] | None = None

    def _built(self) -> dict[str, int]:
        if self._map is None:
            ids = self._ids.tolist()
            self._map = dict(zip(ids, range(len(ids)), strict=True))
        return self._map

    def __getitem__(self, room_id: str) -> int:
        return self._built()[room_id]

    def get(self, room_id: str, default: Any = None) -> Any:
        return self._built().get(room_id, default)

    def __contains__(self, room_id: object) -> bool:
        return room_id in self._built()

    def __iter__(self) -> Iterator[str]:
        return iter(self._built())

    def __len__(self) -> int:
        return len(self._ids)


class SortedMerchantRooms(Mapping[str, np.ndarray]):
    """merchant_id → the indices of its rooms in a small set (a retrieved subset): binary searches in its
    rooms sorted by merchant code, with the whole set's codes (no pass over every merchant)."""

    def __init__(self, codes: dict[str, int], merchant_codes: np.ndarray) -> None:
        self._codes = codes
        self._order = np.argsort(merchant_codes, kind="stable")
        self._sorted = merchant_codes[self._order]

    def get(self, merchant_id: str, default: Any = None) -> Any:
        code = self._codes.get(merchant_id)
        if code is None:
            return default
        lo, hi = np.searchsorted(self._sorted, [code, code + 1])
        return self._order[lo:hi]

    def __getitem__(self, merchant_id: str) -> np.ndarray:
        rows = self.get(merchant_id)
        if rows is None:
            raise KeyError(merchant_id)
        return rows  # type: ignore[no-any-return]

    def __contains__(self, merchant_id: object) -> bool:
        return isinstance(merchant_id, str) and len(self.get(merchant_id, ())) > 0

    def __iter__(self) -> Iterator[str]:
        present = set(self._sorted.tolist())
        return (m for m, code in self._codes.items() if code in present)

    def __len__(self) -> int:
        return len(set(self._sorted.tolist()))


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
    index_of: Mapping[str, int]  # room_id → index
    rooms_of_merchant: Mapping[str, np.ndarray]  # merchant_id → indices (ascending)
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
    # What stages derive from this set (heat alignment, the scorer's item block), shared by its copies.
    memo: dict[str, Any] = field(default_factory=dict)
    # A retrieved subset (feed.retrieval): the request's whole set and the rows of it these are, and the
    # rows exploration may draw from (the exploration source's draw; None: decide from impressions).
    parent: Candidates | None = None
    rows: np.ndarray | None = None
    pool: np.ndarray | None = None
    # What this request reads of the set's viewer-independent arrays of the moment (`Frame`), taken once
    # by the candidate source; None: the stages derive them themselves (a small set, a replay, a test).
    frame: Frame | None = None
    # Rows a stage set `keep` False for in this request (the candidate source's, the filters'), so that
    # `not_kept` lists the rows not kept without a scan of every room.
    dropped: list[np.ndarray] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.rooms)

    def drop(self, rows: np.ndarray | list[int]) -> None:
        """Not keep these rows (indices) for this request, remembered for `not_kept`."""
        rows = np.asarray(rows, dtype=np.intp)
        self.keep[rows] = False
        self.dropped.append(rows)

    def not_kept(self) -> np.ndarray:
        """The rows not kept, ascending: np.flatnonzero(~keep), from the rows dropped through `drop` when
        they are every row not kept (a count checks it: ~60 us less a request at 100,000 rooms than a
        scan of every room), else from the scan."""
        kept = int(np.count_nonzero(self.keep))
        if kept == self.keep.size:
            return np.zeros(0, dtype=np.intp)
        if self.dropped:
            rows: np.ndarray = sorted_unique(np.concatenate(self.dropped))
            rows = rows[~self.keep[rows]]
            if rows.size == self.keep.size - kept:
                return rows
        return np.flatnonzero(~self.keep)

    @classmethod
    def of(cls, rooms: Sequence[Any], replay_ids: frozenset[str] = frozenset()) -> Candidates:
        """Built whenever the live set changes (rooms start and end every second at 10,000 live
        rooms): columns from lists in one conversion each, merchants' rooms as slices of one sort;
        per-room numpy writes and an array per merchant made this a ~7 ms stall per change (~3 ms now)."""
        steps = cls._steps(rooms, replay_ids, max(1, len(rooms)))
        while True:
            try:
                next(steps)
            except StopIteration as done:
                return done.value  # type: ignore[no-any-return]

    @classmethod
    async def of_in_steps(cls, rooms: Sequence[Any], step: int = 2_000) -> Candidates:
        """`of(rooms)`, yielding to the event loop every `step` rooms (for a set built in the background)."""
        steps = cls._steps(rooms, frozenset(), step)
        while True:
            try:
                next(steps)
            except StopIteration as done:
                return done.value  # type: ignore[no-any-return]
            await asyncio.sleep(0)

    @classmethod
    def _steps(
        cls, rooms: Sequence[Any], replay_ids: frozenset[str], step: int
    ) -> Generator[None, None, Candidates]:
        n = len(rooms)
        merchants: dict[str, int] = {}
        categories: dict[str, int] = {}
        index_of: dict[str, int] = {}
        room_ids = np.empty(n, dtype=object)
        merchant_ids = np.empty(n, dtype=object)
        merchant_codes = np.empty(n, dtype=np.int32)
        category_codes = np.empty(n, dtype=np.int32)
        started_at = np.empty(n, dtype=np.float64)
        for start in range(0, n, step):
            part = rooms[start : start + step]
            end = start + len(part)
            ids = [room.room_id for room in part]
            owners = [room.merchant_id for room in part]
            room_ids[start:end] = ids
            merchant_ids[start:end] = owners
            merchant_codes[start:end] = np.fromiter(
                (merchants.setdefault(m, len(merchants)) for m in owners), np.int32, len(part)
            )
            category_codes[start:end] = np.fromiter(
                (categories.setdefault(room.category, len(categories)) for room in part), np.int32, len(part)
            )
            started_at[start:end] = np.fromiter((room.started_at for room in part), np.float64, len(part))
            index_of.update(zip(ids, range(start, end), strict=True))
            if end < n:
                yield
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
            rooms_of_merchant=MerchantRooms(merchants, merchant_codes),
            enters=zeros,
            impressions=zeros,
            dwell_s=zeros,
            orders=zeros,
        )

    def derived(self, name: str, key: tuple[Any, ...], make: Callable[[], T]) -> T:
        """What a stage derives from this set (kept in `memo`, shared by its copies), made again when
        `key` changes: arrays and configs compared by identity (a heat refresh or a new config is a
        new object), whole seconds by value."""
        held = self.memo.get(name)
        if held is not None and all(
            a is b or (type(a) is int and a == b) for a, b in zip(held[0], key, strict=True)
        ):
            return held[1]  # type: ignore[no-any-return]
        value = make()
        self.memo[name] = (key, value)
        return value

    def subset(self, rows: np.ndarray, pool: np.ndarray | None = None) -> Candidates:
        """These candidates' `rows` (ascending) as a candidate set of their own, for one request: what a
        stage derives per room (the scorer's item block, the ranker's columns, the page's fields) is
        gathered from this set's (see `parent`); `pool` masks the rows exploration may draw."""
        rows = np.asarray(rows, dtype=np.int64)
        # The id columns are gathered where read (GatheredColumn: ndarray-like, numpy converts it).
        room_ids = cast(np.ndarray, GatheredColumn(self.room_ids, rows))
        codes = self.merchant_codes[rows]
        n = int(rows.shape[0])
        return Candidates(
            rooms=Gathered(self.rooms, rows),
            room_ids=room_ids,
            merchant_ids=cast(np.ndarray, GatheredColumn(self.merchant_ids, rows)),
            merchant_codes=codes,
            category_codes=self.category_codes[rows],
            started_at=self.started_at[rows],
            is_replay=self.is_replay[rows],
            index_of=PositionOf(room_ids),
            rooms_of_merchant=SortedMerchantRooms(getattr(self.rooms_of_merchant, "_codes", {}), codes),
            enters=self.enters[rows],
            impressions=self.impressions[rows],
            dwell_s=self.dwell_s[rows],
            orders=self.orders[rows],
            model_score=np.zeros(n, dtype=np.float32),
            score=np.zeros(n, dtype=np.float32),
            boosted=np.zeros(n, dtype=bool),
            keep=self.keep[rows].copy(),
            parent=self,
            rows=rows,
            pool=pool,
            frame=self.frame,
        )

    @property
    def whole(self) -> Candidates:
        """The request's whole candidate set (this one, unless this is a retrieved subset)."""
        return self.parent if self.parent is not None else self

    def fresh_copy(self) -> Candidates:
        """This candidate set with its per-request arrays reset (the shared arrays are read-only)."""
        n = len(self.rooms)
        # Every field as this set has it (a plain instance dict: ~1 us, where rebuilding the dataclass
        # from its fields by name took ~10 us a request), then the per-request arrays.
        copy = object.__new__(type(self))
        copy.__dict__.update(self.__dict__)
        # The scores are replaced by the stages that compute them, never written in place: one read-only
        # zeros array per set (two 400 kB allocations per request at 100,000 rooms were ~0.1 ms).
        copy.model_score = copy.score = self.derived(
            "zero_scores", (), lambda: _read_only(np.zeros(n, np.float32))
        )
        copy.boosted = np.zeros(n, dtype=bool)
        copy.keep = np.ones(n, dtype=bool)
        copy.dropped = []
        return copy


@dataclass(frozen=True)
class Frame:
    """A candidate set's viewer-independent arrays as of one moment, built off the request path.

    What every request of a second would otherwise derive over every live room — the rooms' heat aligned
    with the set, and per ranking config the ranker's room part, retrieval's live set with its trending
    and category lists, exploration's eligible rooms — made by the candidate source's refresher (a
    background thread, each `refresh_s`) and swapped in whole (one attribute assignment): a request takes
    the set's frame once and reads only that, so it never sees half of one frame and half of the next,
    and never waits for a rebuild. Stale by at most the refresh interval plus one build.

    `model` is the rank model (feed.stages.RankModel) the frame was built with: a request under another
    model (just promoted) never reads the parts that depend on it. `shared` holds what neither the config
    nor the model changes (`heat`); `views[config]` the rest, per config (experiments serve several).
    """

    model: Any
    built_at: float  # the `now` it was built for (epoch s)
    shared: Mapping[str, Any]
    views: Mapping[RankingConfig, Mapping[str, Any]]


def frame_part(c: Candidates, name: str, config: RankingConfig, model: Any = None) -> Any:
    """Part `name` of the frame this request took for the set, for `config` and (unless None) `model`;
    None when there is no frame, or none built for them: the caller derives the part itself."""
    frame = c.frame
    if frame is None or (model is not None and model is not frame.model):
        return None
    view = frame.views.get(config)
    return None if view is None else view.get(name)


def _read_only(values: np.ndarray) -> np.ndarray:
    values.flags.writeable = False
    return values


# No candidates yet: built once (an empty set is ~30 us of array set-up, and a context made per request
# made one each time); every context takes its own copy, as the candidate source's sets are handed out.
_NO_ROOMS = Candidates.of(())


def no_candidates() -> Candidates:
    return _NO_ROOMS.fresh_copy()


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
    candidates: Candidates = field(default_factory=no_candidates)
    served: set[str] = field(default_factory=set)  # room ids already served in this session
    blocked_merchants: set[str] = field(default_factory=set)
    recent: list[RecentVisit] = field(default_factory=list)
    recent_loaded: bool = False  # read with the session already (Hydrate then does not read it)
    first_position: int = 0  # how many rooms the session was served before this page
    order: list[int] = field(default_factory=list)  # candidate indices, best first
    explored: set[int] = field(default_factory=set)  # indices placed by exploration
    displaced: dict[int, int] = field(
        default_factory=dict
    )  # boosted index → the index it pushed off the page
    page: list[dict[str, Any]] = field(default_factory=list)  # the page plus spares, best first
    degraded: bool = False
    degraded_reasons: list[str] = field(default_factory=list)
    rng: np.random.Generator = field(default_factory=np.random.default_rng)
    # Rooms changed in the live index since the candidate source's snapshot (room id → index version),
    # read with the session: dropped from this page. Without them (`live_fresh`) the snapshot is read anew.
    live_changes: dict[str, int] | None = None
    live_fresh: bool = True
    # The viewer's state as of the serving model (ranking.viewer_state.ViewerState: LightFM vector and
    # history), read with the session's round trip or from the artifact; None: no model.
    viewer: Any = None
    # What retrieval worked out for the rank stage: the viewer's history with the visits since the
    # model's round and the session's visits (ranking's positions), the LightFM moments over all rooms.
    viewer_inputs: Any = None
    lightfm_moments: tuple[float, float, float] | None = None
    timings_ms: dict[str, float] = field(default_factory=dict)

    def degrade(self, reason: str) -> None:
        self.degraded = True
        if reason not in self.degraded_reasons:
            self.degraded_reasons.append(reason)


class Stage(Protocol):
    """One step of the feed pipeline. Adding a stage is one line in `feed.pipeline`."""

    name: str

    async def apply(self, ctx: FeedContext) -> None: ...
