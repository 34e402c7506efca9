"""The feed service: start a session, serve the next page, record what was served.

Composes the pipeline with the session book, the config watcher and the impression publisher.
Never touches PostgreSQL on the page path and never waits on Kafka; when Redis is unreachable
it serves from the cached live index and the in-process session copy and says `degraded: true`.
"""

from __future__ import annotations

import logging
import time
from typing import Any

import numpy as np

from feed.config_store import ConfigWatcher
from feed.context import FeedContext, as_recent_visit
from feed.experiments import assign
from feed.impressions import ImpressionPublisher, impression_events
from feed.pipeline import FeedPipeline
from feed.sessions import SessionBook, SessionState
from feed.sources import FeedInputs
from roomfeed.auth import RateCharge
from roomfeed.errors import NotFound, Unavailable, ValidationFailed
from roomfeed.ids import new_id

try:  # events' pipelined reads (the feed serves without them, one round trip more)
    from events.heat import queue_viewer_recent, recent_visits
except ImportError:  # pragma: no cover - a build without events
    queue_viewer_recent = recent_visits = None  # type: ignore[assignment]

log = logging.getLogger("feed.service")
FIRST_PAGE = 5


def variant_key(experiment_id: str, variant: str) -> str:
    return f"rf:feed:exp:{experiment_id}:{variant}"


class FeedService:
    def __init__(
        self,
        inputs: FeedInputs,
        pipeline: FeedPipeline | None,
        sessions: SessionBook,
        config: ConfigWatcher,
        impressions: ImpressionPublisher,
    ) -> None:
        self.inputs = inputs
        self.pipeline = pipeline
        self.sessions = sessions
        self.config = config
        self.impressions = impressions
        # One generator for the process: seeding one from the OS per request cost ~30 µs of a page.
        self.rng = np.random.default_rng()

    async def next_page(
        self, viewer_id: str, session_id: str, count: int, charge: RateCharge | None = None
    ) -> dict[str, Any]:
        """The next page; `charge` (the request's rate-limit charge) rides the session's round trip and
        is settled (429) before anything is written. When Redis is down nothing is charged."""
        started = time.perf_counter()

        # The viewer's recent rooms (events' pipelined read) and the rate-limit charge ride the session's round trip.
        def also(pipe: Any) -> None:
            if charge is not None:
                charge.queue(pipe)
            if queue_viewer_recent is not None:
                queue_viewer_recent(pipe, viewer_id, 50)

        state, extra = await self.sessions.load(session_id, viewer_id, also)
        if extra is not None and charge is not None:
            charge.settle(extra[0])
            extra = extra[1:]
        if state is None or state.viewer_id != viewer_id:
            raise NotFound(f"session {session_id} does not exist")
        recent = recent_visits(extra[0]) if extra and recent_visits is not None else None
        body = await self._page(state, count, entry_room=None, degraded=not state.from_redis, recent=recent)
        body["timings_ms"]["session"] = round(
            (time.perf_counter() - started) * 1000 - sum(body["timings_ms"].values()), 3
        )
        return body

    async def _page(
        self,
        state: SessionState,
        count: int,
        entry_room: Any | None,
        degraded: bool,
        recent: list[Any] | None = None,
    ) -> dict[str, Any]:
        if self.pipeline is None:
            raise Unavailable(
                "the live-room index is not available in this build", headers={"Retry-After": "5"}
            )
        assignment = assign(state.viewer_id, self.config.current.config, self.config.experiments)
        ctx = FeedContext(
            viewer_id=state.viewer_id,
            session_id=state.session_id,
            count=count,
            config=assignment.config,
            config_version=self.config.current.version,
            variant=assignment.variant,
            # The session's own set unless an entry room joins it for this page only.
            served=set(state.served) if entry_room is not None else state.served,
            blocked_merchants=set(state.blocked) | self.sessions.local.blocks.of(state.viewer_id),
            first_position=len(state.served),
            rng=self.rng,
        )
        if recent is not None:
            ctx.recent, ctx.recent_loaded = [as_recent_visit(v) for v in recent], True
        if degraded:
            ctx.degrade("redis")
        if entry_room is not None:
            ctx.served.add(entry_room.room_id)
            ctx.first_position += 1
        await self.pipeline.run(ctx)
        meta = {
            "variant": ctx.variant,
            "experiment_id": assignment.experiment_id,
            "config_version": ctx.config_version,
            "model_version": ctx.model_version,
        }
        offered = ctx.page
        want = count
        if entry_room is not None:
            offered = [self._entry(entry_room, 0), *offered]
        claim_started = time.perf_counter()
        accepted, viewers = await self.sessions.claim(
            state,
            [r["room_id"] for r in offered],
            want,
            variant_key(assignment.experiment_id, assignment.variant) if assignment.experiment_id else None,
            {r["room_id"] for r in offered if r["boosted"]},
            self.inputs.heat,
        )
        ctx.timings_ms["claim"] = (time.perf_counter() - claim_started) * 1000
        if viewers is None and not degraded and offered:
            ctx.degrade("redis")
        keep = set(accepted)
        page = []
        for i, room in enumerate(offered):
            if room["room_id"] in keep:
                if viewers is not None:
                    room["viewers_now"] = viewers[i]
                room["position"] = ctx.first_position - (1 if entry_room is not None else 0) + len(page)
                page.append(room)
        self.impressions.publish(
            impression_events(state.viewer_id, state.session_id, page, meta, int(time.time() * 1000))
        )
        return {
            "session_id": state.session_id,
            "rooms": page,
            "model_version": ctx.model_version,
            "config_version": ctx.config_version,
            "variant": ctx.variant,
            "experiment_id": assignment.experiment_id,
            "degraded": ctx.degraded,
            "degraded_reasons": ctx.degraded_reasons,
            # Where this response's time went, by stage (ms): operators read it, the benchmark sums it.
            "timings_ms": {name: round(ms, 3) for name, ms in ctx.timings_ms.items()},
        }

    def _entry(self, room: Any, position: int) -> dict[str, Any]:
        replay = room.status != "live"
        return {
            "room_id": room.room_id,
            "merchant_id": room.merchant_id,
            "title": room.title,
            "category": room.category,
            "stream_url": room.replay_url if replay and room.replay_url else room.stream_url,
            "viewers_now": 0,
            "boosted": False,
            "position": position,
            "replay": replay,
            "explored": False,
            "tags": list(room.tags),
            "price_band": room.price_band,
            "format": room.format,
            "started_at": room.started_at,
            "entry": True,
        }

    async def start_session(
        self, viewer_id: str, code: str | None, room_id: str | None, count: int = FIRST_PAGE
    ) -> dict[str, Any]:
        session_id = new_id("ses")
        attribution: dict[str, Any] | None = None
        entry_room: Any | None = None
        degraded = False
        if code is not None:
            parsed = self._parse_code(code)
            attribution = {
                "merchant_id": parsed.merchant_id,
                "store_id": getattr(parsed, "store_id", None),
                "staff_id": getattr(parsed, "staff_id", None),
            }
            entry_room = await self._room_of_merchant(parsed.merchant_id)
            try:
                await self.inputs.attribution_book.attribute(
                    viewer_id, session_id, parsed, time.time(), code=code
                )
                record_open = getattr(self.inputs.code_book, "record_open", None)
                if record_open is not None:
                    await record_open(code)
            except Exception as exc:
                log.warning("session %s not attributed (alliance store unavailable): %s", session_id, exc)
                degraded = True
        elif room_id is not None:
            entry_room = await self._room(room_id)
        state, redis_down = await self.sessions.create(
            session_id, viewer_id, {"code": code, "room_id": room_id}, attribution
        )
        body = await self._page(state, count, entry_room, degraded=degraded or redis_down)
        body["attribution"] = attribution
        body["entry_room_id"] = entry_room.room_id if entry_room is not None else None
        return body

    def _parse_code(self, code: str) -> Any:
        if self.inputs.code_book is None or self.inputs.attribution_book is None:
            raise Unavailable(
                "attribution codes are not available in this build", headers={"Retry-After": "5"}
            )
        try:
            return self.inputs.code_book.parse(code)
        except Exception as exc:
            raise ValidationFailed(
                "the attribution code is not valid", fields={"entry.code": "is not a valid attribution code"}
            ) from exc

    async def _room_of_merchant(self, merchant_id: str) -> Any | None:
        index = self.inputs.live_index
        if index is None:
            return None
        try:
            room = await index.live_room_of_merchant(merchant_id)
            if room is not None:
                return room
            replays = await index.replays(200)
        except Exception as exc:
            log.warning("entry room of %s not found (live index unavailable): %s", merchant_id, exc)
            return None
        return next((r for r in replays if r.merchant_id == merchant_id and r.replay_url), None)

    async def _room(self, room_id: str) -> Any | None:
        """A deep-linked room: live now, else its replay, else None (the feed starts without it)."""
        index = self.inputs.live_index
        if index is None:
            return None
        try:
            snapshot = await index.snapshot()
            room = snapshot.by_id.get(room_id)
            if room is not None and room.status == "live":
                return room
            replays = await index.replays(200)
        except Exception as exc:
            log.warning("deep-linked room %s not read (live index unavailable): %s", room_id, exc)
            return None
        return next((r for r in replays if r.room_id == room_id), None)
