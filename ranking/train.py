"""Training from the archive: `roomfeed train` (once, or periodically with --every).

Owns one training round: read the archive window from PostgreSQL, hold out its last hours,
train LightFM on the rest, score the candidate and the promoted model on the same held-out
enters (availability taken from the archive), register the candidate and promote it only if it
is not worse. Merchant features come from a JSON file the rooms domain exports
(`{merchant_id: RoomFeatures fields}`), or identity features alone when there is none.
"""

from __future__ import annotations

import asyncio
import sys
import time
from collections.abc import Mapping
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import orjson
from prometheus_client import Counter, Gauge

from ranking.blend import LIGHTFM_COLUMNS, TUNED_WEIGHTS, BlendWeights
from ranking.dataset import InteractionLog, WeightParams, build_training_set, load_archive
from ranking.evaluation import collect_targets, evaluate
from ranking.features import RoomFeatures
from ranking.model import ModelParams, RankingModel, train_model
from ranking.offline import flatten_metrics, schedule_from_log
from ranking.registry import ModelRegistry
from ranking.scorer import Scorer
from roomfeed.leader import Leadership, always_lead

HOUR_MS = 3_600_000

# The trainer's metrics (served by `roomfeed train --metrics-port`).
TRAINER_ROUNDS = Counter("roomfeed_trainer_rounds_total", "training rounds by outcome", ["outcome"])
TRAINER_SECONDS = Gauge("roomfeed_trainer_round_seconds", "duration of the last training round")
TRAINER_LAST_SUCCESS = Gauge(
    "roomfeed_trainer_last_success_timestamp_seconds", "when a round last registered a model"
)


@dataclass(frozen=True)
class TrainingRound:
    version: str
    metrics: dict[str, float]
    promoted: bool
    seconds: float


def load_features(path: Path | None) -> dict[str, RoomFeatures]:
    if path is None:
        return {}
    raw = orjson.loads(Path(path).read_bytes())
    return {mid: RoomFeatures(**fields) for mid, fields in raw.items()}


def features_from_tokens(tokens_by_merchant: Mapping[str, list[str]]) -> dict[str, RoomFeatures]:
    """RoomFeatures from the rooms catalogue's feature tokens (`category:`, `price:`, `tag:`, `format:`, `host:`)."""
    out: dict[str, RoomFeatures] = {}
    for mid, tokens in tokens_by_merchant.items():
        by: dict[str, list[str]] = {}
        for t in tokens:
            kind, _, value = t.partition(":")
            by.setdefault(kind, []).append(value)
        out[mid] = RoomFeatures(
            room_id="",
            merchant_id=mid,
            category=(by.get("category") or ["unknown"])[0],
            tags=by.get("tag", []),
            price_band=(by.get("price") or ["mid"])[0],
            format=(by.get("format") or ["one_to_many"])[0],
            host=(by.get("host") or [""])[0],
        )
    return out


async def features_from_rooms(pool: Any) -> dict[str, RoomFeatures]:
    """Merchant features through the rooms domain's contract (`MerchantCatalog.merchant_features`)."""
    try:
        from rooms.catalog import MerchantCatalog
    except ImportError:
        return {}
    try:
        return features_from_tokens(await MerchantCatalog(pool).merchant_features())
    except Exception as exc:  # no rooms tables in this database: identity features only
        print(f"no merchant features from rooms ({exc}); training on identities", file=sys.stderr)
        return {}


def score_on(
    log: InteractionLog,
    model: RankingModel,
    features: Mapping[str, RoomFeatures],
    since_ms: int,
    until_ms: int,
    max_targets: int,
    weights: BlendWeights,
) -> dict[str, float]:
    (targets,) = collect_targets(
        log, schedule_from_log(log, features), Scorer(model), [(since_ms, until_ms)], [max_targets], weights
    )
    if len(targets) == 0:
        return {}
    without_lightfm = replace(weights, **dict.fromkeys(LIGHTFM_COLUMNS, 0.0))
    return flatten_metrics(evaluate(targets, weights, without_lightfm))


async def train_once(
    pool: Any,
    params: ModelParams,
    weights: WeightParams,
    days: float,
    eval_hours: float,
    features: Mapping[str, RoomFeatures],
    until_ms: int | None = None,
    blend_weights: BlendWeights | None = None,
    max_targets: int = 5_000,
    promote: bool = True,
) -> TrainingRound:
    t0 = time.perf_counter()
    until = until_ms or int(time.time() * 1000)
    since = until - int(days * 24 * HOUR_MS)
    split = until - int(eval_hours * HOUR_MS)
    log = await load_archive(pool, since, until)
    if len(log) == 0:
        raise RuntimeError("the archive has no interactions in the training window")
    if not (log.ts < split).any() or not (log.ts >= split).any():
        # A young archive (the demo) has less history than the held-out window: hold out its last fifth.
        split = int(np.quantile(log.ts, 0.8)) + 1
    data = build_training_set(log, features, split, weights)
    if data.n_interactions == 0:
        raise RuntimeError("no watched rooms (leave events) before the held-out window yet")
    version = (
        datetime.fromtimestamp(until / 1000, tz=UTC).strftime("%Y%m%dT%H%M%SZ") + f"-k{params.no_components}"
    )
    model = await asyncio.to_thread(train_model, data, params, version)
    bw = blend_weights or TUNED_WEIGHTS
    metrics = score_on(log, model, features, split, until, max_targets, bw)
    metrics["interactions"] = float(data.n_interactions)
    registry = ModelRegistry(pool)
    current_version = await registry.promoted_version()
    current_metrics = None
    if current_version is not None:
        current = await registry.load(current_version)
        current_metrics = score_on(log, current, features, split, until, max_targets, bw)
    await registry.register(model, metrics)
    promoted = await registry.promote_if_not_worse(version, "trainer", current_metrics) if promote else False
    return TrainingRound(version, metrics, promoted, time.perf_counter() - t0)


async def train_forever(
    pool: Any,
    every_s: float,
    refresh_features: bool = False,
    leadership: Leadership = always_lead,
    **kwargs: Any,
) -> None:
    """One round every `every_s` while this trainer holds the trainer lease (one trainer at a time,
    roomfeed.leader); a failed round is reported and the next one tries again."""
    while True:
        try:
            if not await leadership():
                TRAINER_ROUNDS.labels("standby").inc()
                await asyncio.sleep(every_s)
                continue
            started = time.monotonic()
            if refresh_features:
                kwargs["features"] = await features_from_rooms(pool)
            result = await train_once(pool, **kwargs)
            print(
                f"model {result.version}: promoted={result.promoted} in {result.seconds:.1f}s {result.metrics}",
                file=sys.stderr,
                flush=True,
            )
            TRAINER_ROUNDS.labels("promoted" if result.promoted else "registered").inc()
            TRAINER_SECONDS.set(time.monotonic() - started)
            TRAINER_LAST_SUCCESS.set(time.time())
        except RuntimeError as exc:
            TRAINER_ROUNDS.labels("skipped").inc()
            print(f"training skipped: {exc}", file=sys.stderr, flush=True)
        except Exception as exc:  # the trainer process outlives one bad round
            TRAINER_ROUNDS.labels("failed").inc()
            print(f"training round failed: {exc!r}", file=sys.stderr, flush=True)
        await asyncio.sleep(every_s)
