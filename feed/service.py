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

from events.live_stats import RecentVisits
from feed.config_store import ConfigWatcher
from feed.context import FeedContext, as_recent_visit
from feed.experiments import assign
from feed.impressions import ImpressionPublisher, served_events
from feed.pages import (
    PAGES_KEPT,
    PageExpired,
    PageLookup,
    PageMeta,
    PageNotFound,
    PageRecord,
    page_number,
    page_token,
)
from feed.pipeline import FeedPipeline
from feed.sessions import SessionBook, SessionState
from feed.sources import FeedInputs
from feed.stages import room_fields, shown
from ranking.viewer_state import ViewerStateRead, in_store
from roomfeed.auth import RateCharge
from roomfeed.errors import NotFound, ValidationFailed
from roomfeed.ids import new_id
from rooms.live_index import LiveRoom

log = logging.getLogger("feed.service")
FIRST_PAGE = 5
# Stages a preview skips: the alliance boost spends the pacing tokens of the rooms it places.
SIDE_EFFECT_STAGES = frozenset({"alliance_boost"})


def variant_key(experiment_id: str, variant: str) -> str:
    return f"rf:feed:exp:{experiment_id}:{variant}"


class FeedService:
    def __init__(
        self,
        inputs: FeedInputs,
        pipeline: FeedPipeline,
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
        self,
        viewer_id: str,
        session_id: str,
        count: int,
        charge: RateCharge | None = None,
        after: str | None = None,
    ) -> dict[str, Any]:
        """The page after page `after` (a page token of this session: the same page however often it
        is asked for), or without `after` a new page after the session's newest. `charge` (the
        request's rate-limit charge) rides the session's round trip and is settled (429) before
        anything is written. When Redis is down nothing is charged."""
        started = time.perf_counter()
        at = page_number(session_id, after) if after is not None else None
        live_since = self.pipeline.live_version()
        viewer = self._viewer_read(viewer_id)

        # The session's round trip, each part read by its owner: the rate-limit charge (auth), the
        # viewer's recent rooms (events), the page asked for when it exists already (feed.pages), the
        # rooms changed since this process's live snapshot (rooms).
        trip = self.sessions.trip()
        charged = trip.add(charge) if charge is not None else None
        recent_visits = trip.add(RecentVisits(viewer_id, 50))
        asked = trip.add(PageLookup(session_id, at + 1)) if at is not None else None
        changed = (
            trip.add(self.inputs.live_index.changes_after(live_since)) if live_since is not None else None
        )
        viewed = trip.add(viewer) if viewer is not None else None  # the viewer's model state (ranking)
        state = await self.sessions.load(session_id, viewer_id, trip)
        if charge is not None and charged is not None and trip.made:
            charge.settle(charged.value)  # 429 before anything is written
        if state is None or state.viewer_id != viewer_id:
            raise NotFound(f"session {session_id} does not exist")
        recent = recent_visits.value if trip.made else None
        known: tuple[int, str | None] | None = None
        if at is not None:
            known = (state.last_page, state.pages.get(at + 1))
            if asked is not None and trip.made:
                last, record = asked.value
                if last is not None:
                    known = (last, record)
        changes = changed.value if changed is not None and trip.made else None
        viewer_state = viewed.value if viewed is not None and trip.made else None
        if at is not None and known is not None and (known[1] is not None or known[0] != at):
            body = await self._again(state, at + 1, known)
        else:
            body = await self._page(
                state,
                count,
                entry_room=None,
                degraded=not state.from_redis,
                recent=recent,
                after=at,
                live_changes=changes,
                viewer=viewer_state,
            )
        body["timings_ms"]["session"] = round(
            (time.perf_counter() - started) * 1000 - sum(body["timings_ms"].values()), 3
        )
        return body

    def _viewer_read(self, viewer_id: str) -> ViewerStateRead | None:
        """The viewer's state under the serving model, to read with the session (when the model keeps
        its viewers in the viewer-state store rather than in this process)."""
        scorer = self.inputs.models.scorer
        if scorer is None or not in_store(scorer):
            return None
        return ViewerStateRead(scorer.model_version, viewer_id)

    async def _again(self, state: SessionState, number: int, known: tuple[int, str | None]) -> dict[str, Any]:
        """Page `number` once more, from its record (`known`: the newest page's number, the record):
        its rooms still live, with viewers now; 404 for a page never made, 410 for one forgotten."""
        last, raw = known
        if raw is None:
            if number > last + 1:
                raise PageNotFound(
                    "after names no page of this session", fields={"after": "names no page of this session"}
                )
            raise PageExpired(
                f"that page is older than the session's last {PAGES_KEPT} pages; ask without after",
                fields={"after": "is too old"},
            )
        record = PageRecord.parse(raw)
        snapshot = await self.inputs.live_index.snapshot()
        rooms = []
        for room_id, position, boosted in record.rooms:
            room = snapshot.by_id.get(room_id)
            if room is None or room.status != "live":
                continue  # ended since: never served again
            fields = room_fields(room, replay=False)
            fields["boosted"], fields["position"] = boosted, position
            rooms.append(fields)
        if rooms:
            try:
                trip = self.sessions.trip()
                presence = trip.add(self.inputs.presence.presence([r["room_id"] for r in rooms]))
                await trip.send()
                for served, n in zip(rooms, presence.value, strict=True):
                    served["viewers_now"] = int(n)
            except Exception as exc:
                log.warning("viewers now of a page served again not read: %s", exc)
        meta = record.meta
        return {
            "session_id": state.session_id,
            "page_token": page_token(state.session_id, number),
            "rooms": rooms,
            "model_version": meta.model_version,
            "config_version": meta.config_version,
            "variant": meta.variant,
            "experiment_id": meta.experiment_id,
            "degraded": False,
            "degraded_reasons": [],
            "timings_ms": {},
        }

    async def _page(
        self,
        state: SessionState,
        count: int,
        entry_room: Any | None,
        degraded: bool,
        recent: list[Any] | None = None,
        after: int | None = None,
        live_changes: dict[str, int] | None = None,
        viewer: Any = None,
    ) -> dict[str, Any]:
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
            live_changes=live_changes,
            # Without the rooms changed since this process's snapshot (read with the session), the
            # live index is read afresh: a room whose end has returned is never on the page.
            live_fresh=live_changes is None,
            viewer=viewer,
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
        header = PageMeta(
            ctx.model_version, ctx.config_version, ctx.variant, assignment.experiment_id
        ).header()
        counters = (
            variant_key(assignment.experiment_id, assignment.variant) if assignment.experiment_id else None
        )
        claim_started = time.perf_counter()
        page: list[dict[str, Any]] = []
        granted: set[str] = set()  # rooms the alliance boosted (and left a grant for) on this page
        mode, at = ("new", -1) if after is None else ("after", after)
        number = -1
        # Offered: first the page and its spares, the only rooms a page takes unless a concurrent
        # request of the session took more of them than the spares cover; then (same page, "more")
        # the rest of the ranked order (rooms a concurrent request took are skipped in Redis). When
        # even those run out while rooms remain (many concurrent requests), the pipeline ranks again
        # without the rooms taken and the page is topped up. Offering the page and spares alone keeps
        # the claim and its presence read to ~20 rooms instead of the ~70 the order holds: each room
        # offered costs a key, two arguments and a reply (~1 us of packing and parsing apiece).
        for _ in range(3):
            c = ctx.candidates
            fields = {r["room_id"]: r for r in ctx.page}
            order = np.asarray(ctx.order, dtype=np.int64)
            ranked = c.room_ids[order].tolist()
            boosted = set(c.room_ids[order[c.boosted[order]]].tolist())
            granted |= boosted
            if entry_room is not None:
                fields[entry_room.room_id] = self._entry(entry_room, 0)
                ranked = [entry_room.room_id, *ranked]
            head = len(ctx.page) + (entry_room is not None)
            for rest, offered in enumerate((ranked[:head], ranked[head:])):
                if rest and (not offered or len(page) >= count):
                    break  # full, or nothing more to offer (the first claim always runs: it makes the page)
                claim = await self.sessions.claim(
                    state,
                    offered,
                    count - len(page),
                    counters,
                    boosted.intersection(offered) if boosted else boosted,
                    self.inputs.presence.presence(offered),
                    mode=mode,
                    at=at,
                    header=header,
                )
                if claim.existing is not None:  # a concurrent request made this page first: its record
                    body = await self._again(state, at + 1, claim.existing)
                    body["timings_ms"] = {name: round(ms, 3) for name, ms in ctx.timings_ms.items()}
                    return body
                if claim.viewers is None and not degraded and offered:
                    ctx.degrade("redis")
                number = claim.number
                mode, at = "more", number  # whatever is claimed next goes on this page
                viewers = dict(zip(offered, claim.viewers, strict=True)) if claim.viewers is not None else {}
                taken = []
                for k, room_id in enumerate(claim.accepted):
                    room = fields.get(room_id)
                    if room is None:
                        i = c.index_of[room_id]
                        room = shown(c, i).copy()
                        room["boosted"] = bool(c.boosted[i])
                    room["viewers_now"] = viewers.get(room_id, 0)
                    room["position"] = claim.base + k
                    taken.append(room)
                page += taken
                displaced = {str(c.room_ids[b]): str(c.room_ids[d]) for b, d in ctx.displaced.items()}
                self.impressions.publish(
                    served_events(
                        state.viewer_id,
                        state.session_id,
                        taken,
                        meta,
                        int(time.time() * 1000),
                        displaced,
                        page_token(state.session_id, number),
                    )
                )
            if len(page) >= count or len(ranked) >= int(np.count_nonzero(c.whole.keep)) + (
                entry_room is not None
            ):
                break
            # Short while unseen rooms remain: the rooms offered were taken by concurrent requests.
            ctx.served = set(state.served) | set(ranked)
            ctx.count = count - len(page)
            ctx.first_position = claim.base + len(claim.accepted)
            entry_room = None
            await self.pipeline.run(ctx)
        ctx.timings_ms["claim"] = (time.perf_counter() - claim_started) * 1000
        lost = granted - {room["room_id"] for room in page}
        if lost and self.inputs.alliance_boost is not None:  # a concurrent request served them first
            c = ctx.candidates
            await self.inputs.alliance_boost.release(
                state.viewer_id, state.session_id, [(str(c.merchant_ids[c.index_of[r]]), r) for r in lost]
            )
        return {
            "session_id": state.session_id,
            "page_token": page_token(state.session_id, number),
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

    async def preview(self, viewer_id: str, count: int) -> dict[str, Any]:
        """What a new page for `viewer_id` would hold now and why (operators' explain): the same pipeline,
        the viewer's blocks and recent visits, but no session: nothing is claimed, served or recorded.
        Each room carries its score and the terms that make it (the rank stage's `terms`), whether the
        alliance boosted it and whether exploration placed it."""
        assignment = assign(viewer_id, self.config.current.config, self.config.experiments)
        ctx = FeedContext(
            viewer_id=viewer_id,
            session_id="preview",
            count=count,
            config=assignment.config,
            config_version=self.config.current.version,
            variant=assignment.variant,
            blocked_merchants=set(await self.sessions.blocks(viewer_id)),
            rng=self.rng,
        )
        for stage in self.pipeline.stages:
            if stage.name not in SIDE_EFFECT_STAGES:
                await stage.apply(ctx)
        c = ctx.candidates
        page = ctx.page[:count]
        rows = np.array([c.index_of[room["room_id"]] for room in page], dtype=np.int64)
        rank = next((stage for stage in self.pipeline.stages if stage.name == "rank"), None)
        terms = getattr(rank, "terms", None)
        split = terms(ctx, rows) if terms is not None and len(rows) else {}
        rooms = []
        for k, (room, i) in enumerate(zip(page, rows.tolist(), strict=True)):
            rooms.append(
                {
                    **room,
                    "viewers_now": 0,
                    "explain": {
                        "score": float(c.score[i]) if len(c.score) else 0.0,
                        "model_score": float(c.model_score[i]) if len(c.model_score) else None,
                        "terms": {name: round(float(values[k]), 6) for name, values in split.items()},
                        "signals": {
                            "room_enters": float(c.enters[i]),
                            "room_impressions": float(c.impressions[i]),
                            "room_dwell_s": float(c.dwell_s[i]),
                            "room_orders": float(c.orders[i]),
                        },
                        "boosted": bool(c.boosted[i]),
                        "displaced": c.room_ids[ctx.displaced[i]] if i in ctx.displaced else None,
                        "explored": i in ctx.explored,
                    },
                }
            )
        return {
            "viewer_id": viewer_id,
            "rooms": rooms,
            "candidates": int(np.count_nonzero(c.keep)) if len(c.keep) else 0,
            "recent_visits": len(ctx.recent),
            "model_version": ctx.model_version,
            "config_version": ctx.config_version,
            "variant": ctx.variant,
            "experiment_id": assignment.experiment_id,
            "degraded_reasons": ctx.degraded_reasons,
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
            "tags": list(room.tags),
            "price_band": room.price_band,
            "format": room.format,
            "started_at": room.started_at,
            "entry": True,
        }

    async def start_session(
        self,
        viewer_id: str,
        code: str | None,
        room_id: str | None,
        count: int = FIRST_PAGE,
        *,
        device_id: str | None = None,
        account_created_at: float | None = None,
    ) -> dict[str, Any]:
        """A new session; a code attributes the viewer (with the request's device and the account's
        creation time from the viewer's token: what the alliance's device and new-account rules read)
        and lands it in the code merchant's room."""
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
                    viewer_id,
                    session_id,
                    parsed,
                    time.time(),
                    code=code,
                    device_id=device_id,
                    account_created_at=account_created_at,
                )
                await self.inputs.code_book.record_open(
                    code, device=f"device:{device_id}" if device_id else f"viewer:{viewer_id}"
                )
            except Exception as exc:
                log.warning("session %s not attributed (alliance store unavailable): %s", session_id, exc)
                degraded = True
        elif room_id is not None:
            entry_room = await self._room(room_id)
        viewer = self._viewer_read(viewer_id)
        state, redis_down = await self.sessions.create(
            session_id, viewer_id, {"code": code, "room_id": room_id}, attribution, viewer
        )
        blocked = set(state.blocked) | self.sessions.local.blocks.of(viewer_id)
        if entry_room is not None and entry_room.merchant_id in blocked:
            entry_room = None  # a block wins over a code's (or a link's) landing room
        # An entry room that is not live (its replay) is never on the page of live rooms: the app
        # gets it on its own, marked as the replay it is.
        entry_replay = None
        if entry_room is not None and entry_room.status != "live":
            entry_replay, entry_room = self._entry(entry_room, 0), None
        body = await self._page(
            state,
            count,
            entry_room,
            degraded=degraded or redis_down,
            viewer=viewer.value if viewer is not None else None,
        )
        body["attribution"] = attribution
        body["entry_room_id"] = entry_room.room_id if entry_room is not None else None
        body["entry_replay"] = entry_replay
        return body

    def _parse_code(self, code: str) -> Any:
        try:
            return self.inputs.code_book.parse(code)
        except Exception as exc:
            raise ValidationFailed(
                "the attribution code is not valid", fields={"entry.code": "is not a valid attribution code"}
            ) from exc

    async def _room_of_merchant(self, merchant_id: str) -> LiveRoom | None:
        index = self.inputs.live_index
        try:
            room = await index.live_room_of_merchant(merchant_id)
            if room is not None:
                return room
            replays = await index.replays(200)
        except Exception as exc:
            log.warning("entry room of %s not found (live index unavailable): %s", merchant_id, exc)
            return None
        return next((r for r in replays if r.merchant_id == merchant_id and r.replay_url), None)

    async def _room(self, room_id: str) -> LiveRoom | None:
        """A deep-linked room: live now, else its replay, else None (the feed starts without it)."""
        index = self.inputs.live_index
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
