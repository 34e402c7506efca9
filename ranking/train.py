"""Training from the archive: `roomfeed train` (once, or periodically with --every).

Owns one training round: read the archive window from PostgreSQL, hold out its last hours, fit
LightFM and the learned ranker on the rest (ranking.offline.fit_model), judge the candidate, the
serving model and every simple baseline on the same held-out enters (availability taken from the
archive), and let the gate (ranking.registry.gate) decide: promote the candidate — refit on the whole
window, held-out hours included, before it serves —, keep the serving model, or, with none serving,
rank by the best simple baseline. Merchant features come from a JSON file the rooms domain exports
(`{merchant_id: RoomFeatures fields}`), or identity features alone when there is none.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import secrets
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import orjson
from prometheus_client import Counter, Gauge

from events import vocabulary
from ranking.dataset import WeightParams, load_archive
from ranking.evaluation import Evaluation, PageJudge, flatten
from ranking.features import RoomFeatures
from ranking.model import ModelParams, RankingModel
from ranking.offline import FitConfig, attach_ranker, evaluate_model, fit_model
from ranking.ranker import Ranker, baseline_ranker, judged_values, paired_gain
from ranking.registry import GateDecision, ModelRegistry, gate
from ranking.replay import Schedule, build_merchant_table, schedule_from_log
from ranking.viewer_state import ViewerStateStore
from roomfeed.leader import Leadership, always_lead
from rooms.catalog import MerchantCatalog

logger = logging.getLogger("roomfeed.ranking.train")

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
    metrics: dict[str, Any]
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
        return features_from_tokens(await MerchantCatalog(pool).merchant_features())
    except Exception as exc:  # no rooms tables in this database: identity features only
        logger.warning("no merchant features from rooms; training on identities: %s", exc)
        return {}


def gate_metrics(ev: Evaluation, serving: bool) -> dict[str, Any]:
    """What the registry keeps of a gate's evaluation: every method's figures and the best baselines."""
    flat: dict[str, Any] = flatten(ev.results)
    best = ev.best_baseline
    flat.update(
        best_baseline=best,
        hr5_best_baseline=flat[f"hr5_{best}"],
        ndcg10_best_baseline=flat[f"ndcg10_{best}"],
        gate_targets=ev.targets,
        repeat_share=round(ev.repeat_share, 4),
    )
    if ev.targets:
        # Viewers resampled with all their targets (ranking.evaluation.viewer_bootstrap): a heavy viewer's
        # dozens of held-out enters are one viewer's evidence, not dozens.
        d = ev.difference("ranker", best)
        flat.update(
            hr5_diff_ci_low=round(d["ci_low"], 4),
            hr5_diff_ci_high=round(d["ci_high"], 4),
            gate_viewers=int(d["viewers"]),
        )
    if serving and ev.targets:
        d = ev.difference("ranker", "serving")
        flat.update(hr5_vs_serving_ci_low=round(d["ci_low"], 4))
    if ev.targets >= 2 and "ranker_no_lightfm" in ev.judged and "ranker" in ev.judged:
        # The held-out ablation per target (HR@5 + NDCG@10, as validation judges), viewers as the unit.
        gain, se = paired_gain(
            judged_values(ev.judged["ranker_no_lightfm"].ranks),
            judged_values(ev.judged["ranker"].ranks),
            ev.viewers,
        )
        flat.update(lightfm_heldout_gain=round(-gain, 5), lightfm_heldout_gain_se=round(se, 5))
    return flat


def lightfm_hurts(metrics: Mapping[str, Any]) -> bool:
    """The held-out ablation: the ranker without LightFM's columns scores higher (HR@5 + NDCG@10 per
    target) on the gate's hours than the candidate with them by more than one standard error of the paired
    difference, viewers as the unit (`lightfm_heldout_gain` = with minus without, and its `_se`, from
    `gate_metrics`). Without the margin a difference of noise dropped the columns: the keep/drop flipped
    between rounds that differed only in their list counts (issue 13, ranker5's findings). The same
    one-standard-error rule that kept them on validation (ranking.ranker.choose_lightfm)."""
    if "lightfm_heldout_gain" not in metrics or "lightfm_heldout_gain_se" not in metrics:
        raise KeyError("lightfm_hurts needs gate_metrics' lightfm_heldout_gain and lightfm_heldout_gain_se")
    return -float(metrics["lightfm_heldout_gain"]) > float(metrics["lightfm_heldout_gain_se"])


def _serving_ranker(model: RankingModel) -> Ranker:
    """How a serving artifact ranks: its learned ranker, or (a LightFM-only artifact) REP-then-live-POP."""
    return model.ranker or baseline_ranker("rep_live_pop")


async def train_once(
    pool: Any,
    params: ModelParams,
    weights: WeightParams,
    days: float,
    eval_hours: float,
    features: Mapping[str, RoomFeatures],
    until_ms: int | None = None,
    max_targets: int = 5_000,
    promote: bool = True,
    fit: FitConfig | None = None,
    page_of: Callable[[Schedule], PageJudge] | None = None,
    states: ViewerStateStore | None = None,
) -> TrainingRound:
    """One round (module docstring). `page_of(schedule)` (the composition root hands in the feed's
    `feed.replay.FeedPage`) makes the gate judge the page the feed would serve, for every method.
    `states`: where a promoted model's viewers are written before it is promoted (API processes then
    read them per page instead of holding every viewer)."""
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
    if not ((log.ts < split) & (log.type_names() == vocabulary.LEAVE)).any():
        raise RuntimeError("no watched rooms (leave events) before the held-out window yet")
    version = (
        datetime.fromtimestamp(until / 1000, tz=UTC).strftime("%Y%m%dT%H%M%SZ")
        + f"-k{params.no_components}-{secrets.token_hex(2)}"  # two rounds over the same window are two models
    )
    cfg = fit or FitConfig(model=params, weights=weights)
    schedule = schedule_from_log(log, features)
    # The candidate the gate judges is fit on `decision_threads` (one thread, the model's seed): with the
    # trainer's multi-threaded (Hogwild) LightFM the same window gave a different candidate, so the
    # held-out ablation and the gate could decide differently on a rerun. Only the refit that serves,
    # after the decision, uses `num_threads`.
    judged_cfg = cfg
    if cfg.decision_threads:
        judged_cfg = dataclasses.replace(
            cfg, model=dataclasses.replace(cfg.model, num_threads=cfg.decision_threads)
        )
    candidate = await asyncio.to_thread(fit_model, log, features, schedule, split, judged_cfg, version)
    registry = ModelRegistry(pool)
    serving_version = await registry.promoted_version()
    judged: dict[str, tuple[RankingModel, Ranker]] = {"ranker": (candidate.model, candidate.ranker)}
    uses_lightfm = candidate.ranker.info.get("lightfm_used", 0.0) > 0
    if uses_lightfm:  # the held-out ablation: does LightFM's column still help on hours nobody fit on?
        judged["ranker_no_lightfm"] = (candidate.model, candidate.ranker_no_lightfm)
    if serving_version is not None:
        serving = await registry.load(serving_version)
        judged["serving"] = (serving, _serving_ranker(serving))
    page = page_of(schedule) if page_of is not None else None
    ev, _ = await asyncio.to_thread(
        evaluate_model, log, features, schedule, judged, (split, until), max_targets, 0, None, page
    )
    metrics: dict[str, Any] = gate_metrics(ev, "serving" in judged) if ev.targets else {"gate_targets": 0}
    if uses_lightfm and ev.targets and lightfm_hurts(metrics):
        # LightFM's columns cost viewers on the held-out hours: the candidate ranks without them (its
        # held-out figures are the ablation's), and the refit below never takes them back.
        metrics["lightfm_gate"] = (
            f"dropped: without LightFM's columns HR@5 {metrics['hr5_ranker_no_lightfm']:.4f} vs "
            f"{metrics['hr5_ranker']:.4f}, NDCG@10 {metrics['ndcg10_ranker_no_lightfm']:.4f} vs "
            f"{metrics['ndcg10_ranker']:.4f} on the held-out hours (gain with them "
            f"{metrics['lightfm_heldout_gain']:+.4f}, below minus one standard error "
            f"{metrics['lightfm_heldout_gain_se']:.4f})"
        )
        for key in ("hr5", "ndcg10"):
            metrics[f"{key}_ranker_with_lightfm"] = metrics[f"{key}_ranker"]
            metrics[f"{key}_ranker"] = metrics[f"{key}_ranker_no_lightfm"]
        d = ev.difference("ranker_no_lightfm", str(metrics["best_baseline"]))
        metrics.update(hr5_diff_ci_low=round(d["ci_low"], 4), hr5_diff_ci_high=round(d["ci_high"], 4))
        candidate.model.with_ranker(candidate.ranker_no_lightfm)
        cfg = dataclasses.replace(cfg, lightfm_columns=False)
    elif uses_lightfm and ev.targets:
        metrics["lightfm_gate"] = (
            "kept: LightFM's columns do not hurt on the held-out hours by more than one standard error "
            f"(gain with them {metrics['lightfm_heldout_gain']:+.4f}, se "
            f"{metrics['lightfm_heldout_gain_se']:.4f})"
        )
    decision = (
        gate(metrics, serving_version is not None)
        if ev.targets
        else GateDecision(
            "keep_serving" if serving_version else "rank_by_baseline",
            "no held-out enters to judge on",
            "rep_live_pop",
        )
    )
    metrics["interactions"] = float(candidate.model.user_repr.shape[0])
    metrics["gate"] = decision.action
    metrics["gate_reason"] = decision.reason
    promoted = False
    if decision.action == "promote" and promote:
        # Refit on the whole window, held-out hours included, before it serves.
        final = await asyncio.to_thread(fit_model, log, features, schedule, until, cfg, version)
        await registry.register(final.model, metrics)
        await _promote(registry, states, final.model, serving_version)
        promoted = True
    elif decision.action == "rank_by_baseline" and promote:
        model = candidate.model
        attach_ranker(model, baseline_ranker(decision.baseline), log, features, until)
        model.version = f"{version}-{decision.baseline}"
        await registry.register(model, {**metrics, "ranks_by": decision.baseline})
        await _promote(registry, states, model, serving_version)
        version, promoted = model.version, True
    else:
        if decision.action == "keep_serving" and promote and serving_version is not None:
            serving_model = judged["serving"][0]
            await _refresh_serving_table(
                registry, serving_version, serving_model, log, features, until, metrics
            )
        await registry.register(candidate.model, metrics)
    return TrainingRound(version, metrics, promoted, time.perf_counter() - t0)


async def _refresh_serving_table(
    registry: ModelRegistry,
    version: str,
    serving: RankingModel,
    log: Any,
    features: Mapping[str, RoomFeatures],
    until: int,
    metrics: dict[str, Any],
) -> None:
    """The model the gate keeps serves this round's merchant table (popularity and co-visitation as of
    `until`, in its merchant positions and category codes): the ranker's lists and the evaluation read the
    table of the trainer's last round (ranking.replay, 10-minute snapshots), and without this the served
    one stayed as old as the model for as long as the gate kept it (a day-old table cost the ranker -0.017
    HR@5 and -0.041 on new targets in the drifting world; bench/bench_ranker_live_pop.py "model_table").
    Weights, LightFM and viewers are the model's own: the artifact is rewritten under its version
    (`ModelRegistry.refresh_table`), so no viewer state is written again."""
    if serving.table is None:  # an artifact without a ranker: the feed ranks without its table
        return
    started = time.perf_counter()
    categories = list(serving.categories or [])
    table = await asyncio.to_thread(
        build_merchant_table, log, features, until, serving.merchant_ids, categories
    )
    if serving.table.rates is None:
        table.rates = None  # the serving ranker reads no merchant rate (ranking.offline.attach_ranker)
    await registry.refresh_table(version, table)
    metrics["serving_table_as_of_ms"] = until
    metrics["serving_table_s"] = round(time.perf_counter() - started, 3)


async def _promote(
    registry: ModelRegistry, states: ViewerStateStore | None, model: RankingModel, serving: str | None
) -> None:
    """The model's viewers into the store (whole, then marked ready), then the promotion (the pointer API
    processes follow); the state of versions older than the one a rollback returns to is deleted."""
    if states is not None:
        published = await states.publish(model)
        logger.info(
            "viewer state written",
            extra={
                "version": model.version,
                "viewers": published.viewers,
                "bytes": published.bytes,
                "seconds": round(published.seconds, 1),
            },
        )
    await registry.promote(model.version, "trainer", action="auto_promote")
    if states is not None:
        await states.retire({model.version, *([serving] if serving else [])})


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
            logger.info(
                "model %s registered (promoted: %s)",
                result.version,
                result.promoted,
                extra={
                    "fields": {
                        "version": result.version,
                        "promoted": result.promoted,
                        "seconds": round(result.seconds, 1),
                        "metrics": result.metrics,
                    }
                },
            )
            TRAINER_ROUNDS.labels("promoted" if result.promoted else "registered").inc()
            TRAINER_SECONDS.set(time.monotonic() - started)
            TRAINER_LAST_SUCCESS.set(time.time())
        except RuntimeError as exc:
            TRAINER_ROUNDS.labels("skipped").inc()
            logger.warning("training skipped: %s", exc)
        except Exception:  # the trainer process outlives one bad round
            TRAINER_ROUNDS.labels("failed").inc()
            logger.exception("training round failed")
        await asyncio.sleep(every_s)
