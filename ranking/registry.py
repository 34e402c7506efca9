"""The model registry (PostgreSQL) and the watcher that hot-swaps the promoted model in an API process.

Owns the `ranking_models` and `ranking_model_promotions` tables (migration 0300): registering a
trained candidate with its parameters, data window, metrics and artifact (a large object + sha256:
ranking/artifacts.py),
promotion (automatic only when not worse than the current model, or by an operator), rollback to
the previously promoted version, and `ModelWatcher`, which polls for the promoted version and
swaps in a new `Scorer` without a restart.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import orjson

from ranking import artifacts, viewer_state
from ranking.model import RankingModel
from ranking.ranker import MerchantTable
from ranking.scorer import Scorer
from roomfeed.paging import keyset_page
from roomfeed.tasks import cancel_and_wait

log = logging.getLogger(__name__)

# Metrics a candidate must not lose on (higher is better for all of them).
GATE_METRICS: tuple[str, ...] = ("hr5_ranker", "ndcg10_ranker")


@dataclass(frozen=True)
class GateDecision:
    """What a training round does with its candidate, and why (the console's Models view shows it)."""

    action: str  # "promote" | "keep_serving" | "rank_by_baseline"
    reason: str
    baseline: str  # the best simple baseline on the held-out hours


def gate(metrics: Mapping[str, Any], serving: bool) -> GateDecision:
    """The promotion rule that protects viewers, on figures of the same held-out hours.

    The candidate (LightFM + ranker) is promoted only if it beats the best simple baseline (the better
    of REP-then-POP and REP-then-live-POP) on HR@5 *and* NDCG@10 and is not worse than the serving model
    on either. Otherwise the serving model stays; with none serving, the feed ranks by that baseline.
    """
    best = str(metrics["best_baseline"])
    hr5, ndcg = float(metrics["hr5_ranker"]), float(metrics["ndcg10_ranker"])
    b_hr5, b_ndcg = float(metrics[f"hr5_{best}"]), float(metrics[f"ndcg10_{best}"])
    fallback = "keep_serving" if serving else "rank_by_baseline"
    if not (hr5 > b_hr5 and ndcg > b_ndcg):
        return GateDecision(
            fallback,
            f"below the best simple baseline {best}: HR@5 {hr5:.4f} vs {b_hr5:.4f}, NDCG@10 {ndcg:.4f} vs {b_ndcg:.4f}",
            best,
        )
    if serving:
        s_hr5, s_ndcg = float(metrics["hr5_serving"]), float(metrics["ndcg10_serving"])
        if hr5 < s_hr5 or ndcg < s_ndcg:
            return GateDecision(
                "keep_serving",
                f"worse than the serving model: HR@5 {hr5:.4f} vs {s_hr5:.4f}, NDCG@10 {ndcg:.4f} vs {s_ndcg:.4f}",
                best,
            )
    return GateDecision(
        "promote",
        f"beats {best} (HR@5 {hr5:.4f} vs {b_hr5:.4f}, NDCG@10 {ndcg:.4f} vs {b_ndcg:.4f})"
        + (
            f" and is not worse than the serving model (HR@5 {float(metrics['hr5_serving']):.4f})"
            if serving
            else ""
        ),
        best,
    )


@dataclass(frozen=True)
class ModelRecord:
    version: str
    status: str
    params: dict[str, Any]
    metrics: dict[str, Any]
    created_at: datetime
    data_since: datetime | None
    data_until: datetime | None
    promoted_at: datetime | None
    promoted_by: str | None


def _ts(ms: int) -> datetime | None:
    return datetime.fromtimestamp(ms / 1000.0, tz=UTC) if ms else None


def _object(text: str) -> dict[str, Any]:
    """A jsonb column's object. `register` hands asyncpg JSON text, which a pool with the json codec
    (roomfeed.db) encodes once more: such rows hold the object as a JSON string."""
    value = orjson.loads(text)
    return orjson.loads(value) if isinstance(value, str) else value  # type: ignore[no-any-return]


def _record(row: Mapping[str, Any]) -> ModelRecord:
    return ModelRecord(
        version=row["version"],
        status=row["status"],
        params=_object(row["params"]),
        metrics=_object(row["metrics"]),
        created_at=row["created_at"],
        data_since=row["data_since"],
        data_until=row["data_until"],
        promoted_at=row["promoted_at"],
        promoted_by=row["promoted_by"],
    )


_COLUMNS = (
    "version, status, params::text AS params, metrics::text AS metrics, created_at, data_since, "
    "data_until, promoted_at, promoted_by"
)


def not_worse(
    candidate: Mapping[str, Any],
    current: Mapping[str, Any],
    metrics: Sequence[str] = GATE_METRICS,
    tolerance: float = 0.0,
) -> bool:
    """True when the candidate is at least as good on every gate metric the current one has."""
    for key in metrics:
        if key not in current:
            continue
        if key not in candidate or float(candidate[key]) < float(current[key]) - tolerance:
            return False
    return True


class ModelRegistry:
    def __init__(self, pool: Any) -> None:
        self.pool = pool

    async def register(self, model: RankingModel, metrics: Mapping[str, Any]) -> str:
        """The model and its metrics; the viewers (user vectors, history rows) in an object of their own,
        which API processes never read (ranking.viewer_state)."""
        blob = await asyncio.to_thread(lambda: viewer_state.without_viewers(model).to_bytes())
        viewers = await asyncio.to_thread(viewer_state.viewers_blob, model)
        async with self.pool.acquire() as conn, conn.transaction():
            oid, checksum = await artifacts.write(conn, blob)  # a large object: no 1 GB ceiling
            v_oid, v_checksum = await artifacts.write(conn, viewers)
            await conn.execute(
                "INSERT INTO ranking_models (version, params, data_since, data_until, metrics, "
                "artifact_oid, artifact_bytes, checksum, viewers_oid, viewers_bytes, viewers_checksum) "
                "VALUES ($1, $2::jsonb, $3, $4, $5::jsonb, $6, $7, $8, $9, $10, $11)",
                model.version,
                orjson.dumps(model.params).decode(),
                _ts(model.since_ms),
                _ts(model.until_ms),
                orjson.dumps(dict(metrics)).decode(),
                oid,
                len(blob),
                checksum,
                v_oid,
                len(viewers),
                v_checksum,
            )
        return model.version

    async def get(self, version: str) -> ModelRecord | None:
        async with self.pool.acquire() as conn:
            row = await conn.fetchrow(f"SELECT {_COLUMNS} FROM ranking_models WHERE version = $1", version)  # noqa: S608
        return _record(row) if row else None

    async def promoted(self) -> ModelRecord | None:
        async with self.pool.acquire() as conn:
            row = await conn.fetchrow(f"SELECT {_COLUMNS} FROM ranking_models WHERE status = 'promoted'")  # noqa: S608
        return _record(row) if row else None

    async def promoted_artifact(self) -> tuple[str, str] | None:
        """(version, artifact checksum) of the promoted model: the checksum changes when an erasure
        rewrote the artifact, so watchers reload it."""
        async with self.pool.acquire() as conn:
            row = await conn.fetchrow(
                "SELECT version, checksum FROM ranking_models WHERE status = 'promoted'"
            )
        return (row["version"], row["checksum"]) if row is not None else None

    async def forget_viewer(self, viewer_id: str) -> int:
        """Rewrite every stored model that holds this viewer's vector without it; returns how many. The
        model is stored again as `register` stores it (the artifact, and its viewers apart), so neither
        part keeps the viewer."""
        async with self.pool.acquire() as conn:
            versions = [
                r["version"] for r in await conn.fetch("SELECT version FROM ranking_models ORDER BY version")
            ]
        rewritten = 0
        for version in versions:
            model = await self.load(version)
            if viewer_id not in model.user_ids:
                continue
            blob, viewers = await asyncio.to_thread(_without_viewer, model, viewer_id)
            async with self.pool.acquire() as conn, conn.transaction():
                old = await conn.fetchrow(
                    "SELECT artifact_oid, viewers_oid FROM ranking_models WHERE version = $1 FOR UPDATE",
                    version,
                )
                oid, checksum = await artifacts.write(conn, blob)
                v_oid, v_checksum = await artifacts.write(conn, viewers)
                await conn.execute(
                    "UPDATE ranking_models SET artifact = NULL, artifact_oid = $2, artifact_bytes = $3, "
                    "checksum = $4, viewers_oid = $5, viewers_bytes = $6, viewers_checksum = $7 "
                    "WHERE version = $1",
                    version,
                    oid,
                    len(blob),
                    checksum,
                    v_oid,
                    len(viewers),
                    v_checksum,
                )
                for stale in (old["artifact_oid"], old["viewers_oid"]) if old is not None else ():
                    if stale is not None:  # the old objects still hold the viewer's vector
                        await conn.execute("SELECT lo_unlink($1)", stale)
            rewritten += 1
        return rewritten

    async def refresh_table(self, version: str, table: MerchantTable) -> str:
        """Rewrite `version`'s artifact with `table` (its merchant popularity and co-visitation as of a later
        round; the same merchant positions, categories, LightFM and ranker): the artifact's checksum changes,
        so every `ModelWatcher` serving it reloads it (as after an erasure), and its viewers — the object
        apart and their state in the viewer-state store, both keyed by this version — stay as they are.
        Returns the new checksum."""
        model = await self.load(version, viewers=False)
        if table.pop_count.shape[0] != len(model.merchant_ids):
            raise ValueError(
                f"model {version!r}: a table of {table.pop_count.shape[0]} merchants for "
                f"{len(model.merchant_ids)} merchant positions"
            )
        model.table = table
        blob = await asyncio.to_thread(model.to_bytes)
        async with self.pool.acquire() as conn, conn.transaction():
            old = await conn.fetchval(
                "SELECT artifact_oid FROM ranking_models WHERE version = $1 FOR UPDATE", version
            )
            oid, checksum = await artifacts.write(conn, blob)
            await conn.execute(
                "UPDATE ranking_models SET artifact = NULL, artifact_oid = $2, artifact_bytes = $3, "
                "checksum = $4 WHERE version = $1",
                version,
                oid,
                len(blob),
                checksum,
            )
            if old is not None:
                await conn.execute("SELECT lo_unlink($1)", old)
        return str(checksum)

    async def promoted_version(self) -> str | None:
        async with self.pool.acquire() as conn:
            value: str | None = await conn.fetchval(
                "SELECT version FROM ranking_models WHERE status = 'promoted'"
            )
        return value

    async def versions(
        self, limit: int = 50, after: str | None = None
    ) -> tuple[list[ModelRecord], str | None]:
        """Model versions, newest first: a page after the cursor `after` (roomfeed.paging) and the
        next page's cursor."""
        rows, following = await keyset_page(
            self.pool,
            f"SELECT {_COLUMNS} FROM ranking_models"  # noqa: S608
            " WHERE ($1::timestamptz IS NULL OR created_at < $1 OR (created_at = $1 AND version > $2::text))"
            " ORDER BY created_at DESC, version LIMIT $3",
            (),
            after=after,
            limit=limit,
            key=("created_at", "version"),
        )
        return [_record(r) for r in rows], following

    async def load(self, version: str, viewers: bool = True) -> RankingModel:
        """The model; `viewers=False`: without its viewers' vectors and histories (what an API process
        loads when they are in the viewer-state store)."""
        async with self.pool.acquire() as conn:
            row = await conn.fetchrow(
                "SELECT artifact, artifact_oid, artifact_bytes, checksum, viewers_oid, viewers_bytes, "
                "viewers_checksum FROM ranking_models WHERE version = $1",
                version,
            )
            if row is None:
                raise KeyError(f"no model {version!r}")
            if row["artifact_oid"] is not None:
                blob, checksum = await artifacts.read(conn, row["artifact_oid"], row["artifact_bytes"])
            else:  # registered before artifacts moved to large objects (migration 0390)
                blob = bytes(row["artifact"])
                checksum = hashlib.sha256(blob).hexdigest()
            apart = None
            if viewers and row["viewers_oid"] is not None:
                apart, v_checksum = await artifacts.read(conn, row["viewers_oid"], row["viewers_bytes"])
                if v_checksum != row["viewers_checksum"]:
                    raise ValueError(f"model {version!r}: viewers checksum mismatch")
        if checksum != row["checksum"]:
            raise ValueError(f"model {version!r}: artifact checksum mismatch")
        model = await asyncio.to_thread(RankingModel.from_bytes, blob)
        if apart is not None:
            model = await asyncio.to_thread(viewer_state.with_viewers, model, apart)
        return model

    async def promote(self, version: str, by: str, action: str = "promote") -> None:
        """Make `version` the promoted model (the previous one is retired), atomically."""
        async with self.pool.acquire() as conn, conn.transaction():
            exists = await conn.fetchval(
                "SELECT 1 FROM ranking_models WHERE version = $1 FOR UPDATE", version
            )
            if not exists:
                raise KeyError(f"no model {version!r}")
            previous = await conn.fetchval(
                "UPDATE ranking_models SET status = 'retired' WHERE status = 'promoted' RETURNING version"
            )
            await conn.execute(
                "UPDATE ranking_models SET status = 'promoted', promoted_at = now(), promoted_by = $2 "
                "WHERE version = $1",
                version,
                by,
            )
            await conn.execute(
                "INSERT INTO ranking_model_promotions (version, previous, action, by_whom) VALUES ($1, $2, $3, $4)",
                version,
                previous,
                action,
                by,
            )

    async def promote_if_not_worse(
        self,
        version: str,
        by: str = "trainer",
        current_metrics: Mapping[str, Any] | None = None,
        tolerance: float = 0.0,
    ) -> bool:
        """Promote the candidate unless the current model beats it on a gate metric.

        `current_metrics` lets the trainer compare both models on the same held-out data; without
        it the metrics recorded at registration are compared.
        """
        candidate = await self.get(version)
        if candidate is None:
            raise KeyError(f"no model {version!r}")
        current = await self.promoted()
        if current is not None and current.version != version:
            baseline = current_metrics if current_metrics is not None else current.metrics
            if not not_worse(candidate.metrics, baseline, tolerance=tolerance):
                log.info("model %s not promoted: worse than %s", version, current.version)
                return False
        await self.promote(version, by, action="auto_promote")
        return True

    async def rollback_target(self) -> str | None:
        """The model that was promoted before the current one (what `rollback` promotes)."""
        async with self.pool.acquire() as conn:
            previous: str | None = await conn.fetchval(
                "SELECT previous FROM ranking_model_promotions p JOIN ranking_models m ON m.version = p.version "
                "WHERE m.status = 'promoted' ORDER BY p.id DESC LIMIT 1"
            )
        return previous

    async def rollback(self, by: str) -> str:
        """Promote again the model that was promoted before the current one; returns its version."""
        previous = await self.rollback_target()
        if previous is None:
            raise LookupError("nothing to roll back to")
        await self.promote(previous, by, action="rollback")
        return str(previous)


def _without_viewer(model: RankingModel, viewer_id: str) -> tuple[bytes, bytes]:
    """The model without this viewer as the registry stores it: (artifact, viewers)."""
    kept = model.without_viewer(viewer_id)
    return viewer_state.without_viewers(kept).to_bytes(), viewer_state.viewers_blob(kept)


class ModelWatcher:
    """Keeps an API process's `Scorer` on the promoted model; start()/stop() explicitly."""

    def __init__(
        self,
        registry: ModelRegistry,
        interval_s: float = 5.0,
        on_change: Callable[[Scorer], None] | None = None,
        states: viewer_state.ViewerStateStore | None = None,
    ) -> None:
        """`states`: where the viewers of a promoted model are (a model whose state is there is loaded
        without its viewers; one whose state is not, e.g. a Redis that lost it, with them, in memory)."""
        self.registry = registry
        self.states = states
        self.interval_s = interval_s
        self.on_change = on_change
        self.scorer: Scorer | None = None
        self.checksum: str | None = None
        self._task: asyncio.Task[None] | None = None

    @property
    def version(self) -> str | None:
        return self.scorer.model_version if self.scorer else None

    async def check(self) -> bool:
        """Load the promoted model if it changed; True when a new one was swapped in."""
        promoted = await self.registry.promoted_artifact()
        if promoted is None or promoted == (self.version, self.checksum):
            return False
        version, checksum = promoted
        ready = False
        if self.states is not None:
            try:
                ready = await self.states.ready(version)
            except Exception:  # Redis unreachable: serve with the viewers in memory
                log.warning(
                    "viewer state of model %s not checked (Redis unreachable)", version, exc_info=True
                )
        if self.states is not None and not ready:
            log.warning("model %s has no viewer state in Redis: loading its viewers into memory", version)
        model = await self.registry.load(version, viewers=not ready)
        scorer = await asyncio.to_thread(Scorer, model)
        self.scorer, self.checksum = scorer, checksum
        if self.on_change:
            self.on_change(scorer)
        log.info("model %s now serving", version)
        return True

    async def _run(self) -> None:
        while True:
            await asyncio.sleep(self.interval_s)
            try:
                await self.check()
            except Exception:  # keep serving the old model; the next poll retries
                log.exception("model watcher poll failed")

    async def start(self) -> None:
        """Load the promoted model now (errors propagate), then poll every `interval_s`."""
        await self.check()
        await self.start_polling()

    async def start_polling(self) -> None:
        if self._task is None:
            self._task = asyncio.create_task(self._run(), name="ranking-model-watcher")

    async def stop(self) -> None:
        await cancel_and_wait(self._task)
        self._task = None
