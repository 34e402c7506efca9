"""Frames: a big candidate set's viewer-independent arrays of the moment, built off the request path.

Owns `FrameRefresher`. Every request of a second used to derive the same arrays over every live room the
first time it met a new second or a heat refresh: the rooms' heat aligned with the set, the ranker's room
part (and a two-part ranker's room delta), retrieval's live set with its trending and category lists,
exploration's eligible rooms. At 100,000 live rooms that was ~20 ms of CPU in ONE request a second (the
p99). The refresher now builds them as one `feed.context.Frame` in a background thread — after each heat
refresh and at least each `refresh_s` — and swaps it in with one assignment; the candidate source hands a
request the frame of its set once (`take`), so a request reads one whole frame and never waits for a
rebuild. Parts are the stages' own code (`frame_shared(c, shared)`, `frame_view(c, model, config, now,
view)`), so a frame holds exactly what the request would have derived, as of the frame's moment.

Staleness: a frame is at most `refresh_s` plus one build older than the request (the heat it carries at
most that plus the heat refresh). A frame older than `max_age_s` (the refresher idle, or behind) is not
used: the request derives what it needs itself, as before. So are a frame of another model (a promotion
between two builds) and a config no frame has yet (a new experiment variant: the next build adds it).

Where the build runs (`in_thread`): a thread by default — numpy releases the GIL in the big array
operations, so the event loop keeps serving while a frame is built (measured in docs/feed.md, "Frames");
on the event loop (`in_thread=False`) the build is off the request but still one stall of the loop.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from typing import Any

from feed.config import RankingConfig
from feed.context import Candidates, Frame
from roomfeed.tasks import cancel_and_wait

log = logging.getLogger("feed.frames")

SharedHook = Callable[[Candidates, dict[str, Any]], None]
ViewHook = Callable[[Candidates, Any, RankingConfig, float, dict[str, Any]], None]


class FrameRefresher:
    """Builds and refreshes the frame of the candidate set being served (see the module's docstring).

    `model()` is the rank model to build with (feed.stages.Rank.model); `version()` what says the inputs
    changed besides the clock (the heat refresh's generation); `shared`/`views` the stages' hooks, in
    pipeline order (set by feed.pipeline)."""

    def __init__(
        self,
        refresh_s: float = 1.0,
        max_age_s: float | None = None,
        in_thread: bool = True,
        idle_s: float = 10.0,
    ) -> None:
        if refresh_s <= 0:
            raise ValueError(f"refresh_s must be positive, got {refresh_s}")
        self.refresh_s = refresh_s
        self.max_age_s = 3 * refresh_s if max_age_s is None else max_age_s
        self.in_thread = in_thread
        self.idle_s = idle_s
        self.model: Callable[[], Any] = lambda: None
        self.version: Callable[[], Any] = lambda: None
        self.shared: list[SharedHook] = []
        self.views: list[ViewHook] = []
        self.builds = 0  # frames built (tests, benchmarks)
        self.last_build_s = 0.0  # CPU seconds of the last build (its thread's)
        self._configs: dict[RankingConfig, float] = {}  # configs requests asked for, and when last
        self._asked_at = 0.0
        self._target: Candidates | None = None  # the set being served
        self._built_for: tuple[Any, ...] | None = None
        self._built_at = 0.0
        self._task: asyncio.Task[None] | None = None
        self._lock = asyncio.Lock()
        self._stopping = False

    @property
    def active(self) -> bool:
        return bool(self.shared or self.views)

    def build(self, c: Candidates, configs: list[RankingConfig], now: float) -> Frame:
        """A frame of `c` as of `now` for each of `configs` (synchronous: the refresher's thread runs it)."""
        started = time.thread_time()
        model = self.model()
        work = c.fresh_copy()
        work.frame = None  # derive from the inputs, never from the frame being replaced
        shared: dict[str, Any] = {}
        for hook in self.shared:
            hook(work, shared)
        views: dict[RankingConfig, dict[str, Any]] = {}
        for config in configs:
            view: dict[str, Any] = {}
            for view_hook in self.views:
                view_hook(work, model, config, now, view)
            views[config] = view
        self.last_build_s = time.thread_time() - started
        self.builds += 1
        return Frame(model, now, shared, views)

    async def build_off_loop(self, c: Candidates, now: float | None = None) -> Frame:
        """`build` of `c` for the configs requests asked for lately, in a thread (or on the loop)."""
        at = time.time() if now is None else now
        configs = self.configs(at)
        if self.in_thread:
            return await asyncio.to_thread(self.build, c, configs, at)
        return self.build(c, configs, at)

    def configs(self, now: float) -> list[RankingConfig]:
        """The configs asked for within the last minute (the default config when none was)."""
        recent = [config for config, at in self._configs.items() if now - at <= 60.0]
        if len(recent) < len(self._configs):
            self._configs = {config: self._configs[config] for config in recent}
        return recent or [RankingConfig()]

    def install(self, c: Candidates, frame: Frame) -> None:
        """Make `frame` the frame of `c` (one assignment: a request sees the old one or this one)."""
        c.memo["frame"] = frame

    def take(self, served: Candidates, copy: Candidates, config: RankingConfig, now: float) -> None:
        """Hand the request's copy of the served set its frame (when fresh enough), note the config asked
        for, and keep the refresher running for this set."""
        asked = time.time()  # the clock the refresher runs on (a request's `now` may be another: a replay's)
        self._asked_at = asked
        if config not in self._configs or asked - self._configs[config] > 1.0:
            self._configs[config] = asked
        self._target = served
        frame: Frame | None = served.memo.get("frame")
        copy.frame = frame if frame is not None and now - frame.built_at <= self.max_age_s else None
        if (self._task is None or self._task.done()) and not self._stopping:
            self._task = asyncio.create_task(self._run(), name="feed-frames")

    async def prepare(self, c: Candidates) -> None:
        """The first frame of a set prepared in the background (before it is served)."""
        if self.active:
            async with self._lock:
                self.install(c, await self.build_off_loop(c))

    async def _run(self) -> None:
        """Each `refresh_s / 4`: rebuild the served set's frame when the version (heat), the model, the set
        or the configs changed since the last build, or it is two intervals old; stop after `idle_s`
        without a request."""
        while not self._stopping:
            await asyncio.sleep(self.refresh_s / 4)
            now = time.time()
            if now - self._asked_at > self.idle_s:
                return
            target = self._target
            if target is None:
                continue
            # Rebuilt when an input changed (a heat refresh, the model, the set, the configs asked for) —
            # about once a second, after each heat refresh — or, when the heat stalls, once the frame is two
            # intervals old. (Keyed also on the clock's turn, it built twice per interval: at the heat
            # refresh and at the turn, ~60 ms a second of CPU at 100,000 rooms instead of ~30.)
            key = (id(target), self.version(), id(self.model()), tuple(sorted(map(id, self.configs(now)))))
            if key == self._built_for and now - self._built_at < 2 * self.refresh_s:
                continue
            try:
                async with self._lock:
                    frame = await self.build_off_loop(target, now)
                self.install(target, frame)
                self._built_for, self._built_at = key, now
            except Exception:  # the requests derive what they need themselves meanwhile
                log.exception("building a frame failed")

    async def stop(self) -> None:
        self._stopping = True
        await cancel_and_wait(self._task)
        self._task = None
