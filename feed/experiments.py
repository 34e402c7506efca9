"""Experiments: variants of the ranking config, a stable per-viewer assignment, per-variant metrics.

An experiment splits viewers into variants by traffic share; each variant overrides some ranking
config fields (validated like the config itself). A viewer's variant is a stable hash of
(experiment id, viewer id) into 10,000 buckets, so every API process and every later call agree
without storing anything. Several experiments may run; a viewer is in the newest running one
(experiments are layered by time, not crossed). Metrics and their 95% intervals are computed from
per-variant sums (`VariantTotals`), whatever the source of those sums.
"""

from __future__ import annotations

import builtins
import hashlib
import math
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import asyncpg

from events.vocabulary import SWIPE_AWAY_MS
from feed.config import RankingConfig, apply_values
from roomfeed.errors import NotFound, ValidationFailed
from roomfeed.ids import new_id
from roomfeed.paging import keyset_page

BUCKETS = 10_000
CONTROL = "control"
Z95 = 1.959963984540054


@dataclass(frozen=True)
class Variant:
    name: str
    weight: float
    overrides: dict[str, float | int] = field(default_factory=dict)


@dataclass(frozen=True)
class Experiment:
    experiment_id: str
    name: str
    variants: tuple[Variant, ...]
    status: str = "running"
    author: str = ""
    created_at: datetime | None = None

    def variant_of(self, viewer_id: str) -> Variant:
        """The viewer's variant: stable across processes and calls (md5 of experiment and viewer)."""
        digest = hashlib.md5(f"{self.experiment_id}:{viewer_id}".encode(), usedforsecurity=False).digest()
        bucket = int.from_bytes(digest[:4], "big") % BUCKETS
        total = sum(v.weight for v in self.variants)
        edge = 0.0
        for variant in self.variants:
            edge += variant.weight / total * BUCKETS
            if bucket < edge:
                return variant
        return self.variants[-1]

    def public(self) -> dict[str, Any]:
        return {
            "experiment_id": self.experiment_id,
            "name": self.name,
            "status": self.status,
            "author": self.author,
            "created_at": self.created_at.isoformat() if self.created_at else None,
            "variants": [{"name": v.name, "weight": v.weight, "config": v.overrides} for v in self.variants],
        }


def check_variants(variants: list[tuple[str, float, dict[str, float | int]]]) -> tuple[Variant, ...]:
    """Variants (name, weight, overrides) whose fields are well-formed (feed.models.NewExperiment) as
    an experiment's: unique names, weights (traffic shares) summing to 1; ValidationFailed names
    each bad field."""
    errors: dict[str, str] = {}
    seen: set[str] = set()
    for i, (name, _, _) in enumerate(variants):
        if name in seen:
            errors[f"variants.{i}.name"] = "is used by another variant"
        seen.add(name)
    if not errors and abs(sum(weight for _, weight, _ in variants) - 1.0) > 1e-6:
        errors["variants"] = "weights (traffic shares) must sum to 1"
    if errors:
        raise ValidationFailed("the experiment has invalid fields", fields=errors)
    return tuple(Variant(name, weight, overrides) for name, weight, overrides in variants)


def _experiment(row: asyncpg.Record) -> Experiment:
    return Experiment(
        experiment_id=row["experiment_id"],
        name=row["name"],
        variants=tuple(Variant(v["name"], float(v["weight"]), v.get("config", {})) for v in row["variants"]),
        status=row["status"],
        author=row["author"],
        created_at=row["created_at"],
    )


class ExperimentBook:
    def __init__(self, pool: asyncpg.Pool) -> None:
        self.pool = pool

    async def create(self, name: str, variants: tuple[Variant, ...], author: str) -> Experiment:
        row = await self.pool.fetchrow(
            "INSERT INTO feed_experiments (experiment_id, name, variants, author) VALUES ($1, $2, $3, $4)"
            " RETURNING experiment_id, name, variants, status, author, created_at",
            new_id("exp"),
            name,
            [{"name": v.name, "weight": v.weight, "config": v.overrides} for v in variants],
            author,
        )
        return _experiment(row)

    async def get(self, experiment_id: str) -> Experiment:
        row = await self.pool.fetchrow(
            "SELECT experiment_id, name, variants, status, author, created_at FROM feed_experiments"
            " WHERE experiment_id = $1",
            experiment_id,
        )
        if row is None:
            raise NotFound(f"experiment {experiment_id} does not exist")
        return _experiment(row)

    async def list(
        self, limit: int = 100, after: str | None = None
    ) -> tuple[builtins.list[Experiment], str | None]:
        """Experiments, newest first: a page after the cursor `after` and the next page's cursor."""
        rows, following = await keyset_page(
            self.pool,
            "SELECT experiment_id, name, variants, status, author, created_at FROM feed_experiments"
            " WHERE ($1::timestamptz IS NULL OR created_at < $1"
            " OR (created_at = $1 AND experiment_id > $2::text))"
            " ORDER BY created_at DESC, experiment_id LIMIT $3",
            (),
            after=after,
            limit=limit,
            key=("created_at", "experiment_id"),
        )
        return [_experiment(r) for r in rows], following

    async def running(self) -> builtins.list[Experiment]:  # `list` here is the method above
        rows = await self.pool.fetch(
            "SELECT experiment_id, name, variants, status, author, created_at FROM feed_experiments"
            " WHERE status = 'running' ORDER BY created_at DESC"
        )
        return [_experiment(r) for r in rows]

    async def stop(self, experiment_id: str) -> Experiment:
        row = await self.pool.fetchrow(
            "UPDATE feed_experiments SET status = 'stopped', stopped_at = coalesce(stopped_at, now())"
            " WHERE experiment_id = $1 RETURNING experiment_id, name, variants, status, author, created_at",
            experiment_id,
        )
        if row is None:
            raise NotFound(f"experiment {experiment_id} does not exist")
        return _experiment(row)


@dataclass(frozen=True)
class Assignment:
    config: RankingConfig
    experiment_id: str | None
    variant: str


def assign(viewer_id: str, base: RankingConfig, running: list[Experiment]) -> Assignment:
    """The config this viewer is ranked with: the base, with the newest running experiment's overrides."""
    if not running:
        return Assignment(base, None, CONTROL)
    experiment = running[0]
    variant = experiment.variant_of(viewer_id)
    return Assignment(variant_config(base, variant.overrides), experiment.experiment_id, variant.name)


# One config object per (base, overrides) value. The feed's stages keep what they derive from a config
# (the ranker's room part over every candidate, its multiplied weights, the exploration pool) per config
# object, so a variant's config made anew for every request recomputed all of that on every page while
# an experiment ran. Experiments and their variants are few; the bound only guards a runaway.
_VARIANT_CONFIGS: dict[tuple[RankingConfig, tuple[tuple[str, float | int], ...]], RankingConfig] = {}
VARIANT_CONFIGS_KEPT = 256


def variant_config(base: RankingConfig, overrides: dict[str, float | int]) -> RankingConfig:
    """`base` with a variant's `overrides`: the same object for the same values, request after request."""
    if not overrides:
        return base
    key = (base, tuple(sorted(overrides.items())))
    config = _VARIANT_CONFIGS.get(key)
    if config is None:
        if len(_VARIANT_CONFIGS) >= VARIANT_CONFIGS_KEPT:
            _VARIANT_CONFIGS.clear()
        config = _VARIANT_CONFIGS[key] = apply_values(base, overrides)
    return config


# --- metrics ----------------------------------------------------------------------------------


@dataclass
class VariantTotals:
    """Sums per variant from which every metric and interval follows."""

    impressions: int = 0
    enters: int = 0
    leaves: int = 0
    swipe_aways: int = 0
    dwell_ms_sum: float = 0.0
    dwell_ms_sq_sum: float = 0.0
    orders: int = 0
    gmv: float = 0.0
    gmv_sq_per_impression: float = 0.0  # Σ (gmv of one impression)² is unknown; Σ order amount² instead


def wilson(successes: int, trials: int) -> dict[str, float] | None:
    """Rate with its 95% Wilson interval (sound at small counts and near 0 or 1)."""
    if trials <= 0:
        return None
    p = successes / trials
    denom = 1 + Z95**2 / trials
    centre = (p + Z95**2 / (2 * trials)) / denom
    half = Z95 * math.sqrt(p * (1 - p) / trials + Z95**2 / (4 * trials**2)) / denom
    return {"value": p, "low": max(0.0, centre - half), "high": min(1.0, centre + half)}


def mean_interval(total: float, sq_total: float, n: int) -> dict[str, float] | None:
    """Mean with its 95% normal interval (n large enough; None below 2 observations)."""
    if n <= 0:
        return None
    mean = total / n
    if n < 2:
        return {"value": mean, "low": mean, "high": mean}
    var = max(0.0, (sq_total - n * mean * mean) / (n - 1))
    half = Z95 * math.sqrt(var / n)
    return {"value": mean, "low": mean - half, "high": mean + half}


def variant_metrics(t: VariantTotals) -> dict[str, Any]:
    gmv_per_1000 = None
    if t.impressions > 0:
        # GMV per impression as a mean over impressions (most are 0): Σx = gmv, Σx² ≈ Σ amount².
        per = mean_interval(t.gmv, t.gmv_sq_per_impression, t.impressions)
        if per is not None:
            gmv_per_1000 = {k: v * 1000 for k, v in per.items()}
    return {
        "impressions": t.impressions,
        "enters": t.enters,
        "enter_rate": wilson(t.enters, t.impressions),
        "average_dwell_ms": mean_interval(t.dwell_ms_sum, t.dwell_ms_sq_sum, t.leaves),
        "swipe_away_rate": wilson(t.swipe_aways, t.leaves),
        "orders": t.orders,
        "conversion": wilson(min(t.orders, t.enters), t.enters),
        "gmv": t.gmv,
        "gmv_per_1000_impressions": gmv_per_1000,
    }


# Per-variant sums from the interaction archive (events.archive's `interactions` table): a session
# belongs to the variant its served records name; what the app reported seeing (impressions), its
# enters, leaves and purchases count for that variant.
_ARCHIVE_TOTALS = """
WITH sessions AS (
    SELECT DISTINCT session_id, payload->>'variant' AS variant
    FROM interactions
    WHERE type = 'served' AND payload->>'experiment_id' = $1
)
SELECT s.variant,
       count(*) FILTER (WHERE i.type = 'impression') AS impressions,
       count(*) FILTER (WHERE i.type = 'enter') AS enters,
       count(*) FILTER (WHERE i.type = 'leave') AS leaves,
       count(*) FILTER (WHERE i.type = 'leave' AND i.dwell_ms < $2) AS swipe_aways,
       coalesce(sum(i.dwell_ms::float8) FILTER (WHERE i.type = 'leave'), 0) AS dwell_sum,
       coalesce(sum(i.dwell_ms::float8 ^ 2) FILTER (WHERE i.type = 'leave'), 0) AS dwell_sq,
       count(*) FILTER (WHERE i.type = 'purchase') AS orders,
       coalesce(sum(i.amount::float8) FILTER (WHERE i.type = 'purchase'), 0) AS gmv,
       coalesce(sum(i.amount::float8 ^ 2) FILTER (WHERE i.type = 'purchase'), 0) AS gmv_sq
FROM sessions s JOIN interactions i ON i.session_id = s.session_id
GROUP BY s.variant
"""


async def experiment_report(pool: asyncpg.Pool, experiment: Experiment) -> dict[str, Any]:
    """The experiment with each variant's metrics from the archive: rates over what the viewers'
    apps reported seeing (impressions), never over rooms only served."""
    totals = {v.name: VariantTotals() for v in experiment.variants}
    notes: list[str] = []
    try:
        rows = await pool.fetch(_ARCHIVE_TOTALS, experiment.experiment_id, SWIPE_AWAY_MS)
        for row in rows:
            t = totals.get(row["variant"])
            if t is None:
                continue
            t.impressions = row["impressions"]
            t.enters, t.leaves, t.swipe_aways = row["enters"], row["leaves"], row["swipe_aways"]
            t.dwell_ms_sum, t.dwell_ms_sq_sum = float(row["dwell_sum"]), float(row["dwell_sq"])
            t.orders, t.gmv, t.gmv_sq_per_impression = row["orders"], float(row["gmv"]), float(row["gmv_sq"])
    except asyncpg.UndefinedTableError:
        notes.append("the interaction archive (events) is not present yet: only impressions are counted")
    except (asyncpg.PostgresError, OSError) as exc:
        notes.append(f"the interaction archive could not be read: {exc}")
    body = experiment.public()
    for variant in body["variants"]:
        variant["metrics"] = variant_metrics(totals[variant["name"]])
    body["notes"] = notes
    return body
