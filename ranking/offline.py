"""The offline evaluation run: simulator log → time split → train → tune on validation → test → report.

Owns the one-command evaluation behind `roomfeed evaluate`: days [0, train_days) train LightFM
(with a share of merchants held out entirely for cold start), the next day tunes the blend weights,
the day after is the test day that is only ever scored. Writes `eval.md` (table), `eval.png`
(plot) and `eval.json` into the report folder.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import orjson

from ranking.blend import BlendWeights
from ranking.dataset import InteractionLog, WeightParams, build_training_set, from_simulator
from ranking.evaluation import (
    METHODS,
    NEW_WEIGHT,
    Schedule,
    Targets,
    ablation_gain,
    cold_auc,
    collect_targets,
    evaluate,
    tradeoff_curve,
    tune_weights,
)
from ranking.features import RoomFeatures
from ranking.model import ModelParams, train_model
from ranking.scorer import Scorer

DAY_MS = 86_400_000
TUNING_OBJECTIVE = (
    "stage 1: discovery weights maximise HR@5 + NDCG@10 of new targets ranked among never-watched candidates; "
    f"stage 2: the repeat weight maximises HR@5 + NDCG@10 overall + {NEW_WEIGHT:g} x HR@5 on new targets; "
    "validation day only; the ablation is tuned the same way with every LightFM column at 0"
)


@dataclass(frozen=True)
class OfflineConfig:
    seed: int = 7
    n_viewers: int = 100_000
    n_merchants: int = 5_000
    days: int = 7
    train_days: int = 5
    holdout_merchant_share: float = 0.05
    val_targets: int = 4_000
    test_targets: int = 10_000
    model: ModelParams = field(default_factory=ModelParams)
    weights: WeightParams = field(default_factory=WeightParams)


def flatten_metrics(res: Mapping[str, Mapping[str, Mapping[str, float]]]) -> dict[str, float]:
    """{'hr5_ranker': …, 'hr5_new_ranker': …, 'ndcg10_repeat_pop': …} from evaluate()'s nesting."""
    flat: dict[str, float] = {}
    for method, splits in res.items():
        for split, m in splits.items():
            prefix = "" if split == "overall" else f"{split}_"
            for k in ("hr1", "hr5", "hr10", "ndcg10"):
                flat[f"{k}_{prefix}{method}"] = round(float(m[k]), 4)
    return flat


def schedule_from_market(market: Any) -> Schedule:
    w = market.world
    return Schedule(
        w.r_merchant, w.r_start, w.r_end, w.m_cat[w.r_merchant], [r.features for r in market.rooms]
    )


def merchant_features(rooms: Any) -> dict[str, RoomFeatures]:
    out: dict[str, RoomFeatures] = {}
    for r in rooms:
        f = r.features if hasattr(r, "features") else r
        out.setdefault(f.merchant_id, f)
    return out


def schedule_from_log(log: InteractionLog, features: Mapping[str, RoomFeatures]) -> Schedule:
    """Availability as the archive saw it: a room is live from its first to its last event."""
    n = len(log.room_ids)
    start = np.full(n, np.iinfo(np.int64).max, dtype=np.int64)
    end = np.zeros(n, dtype=np.int64)
    np.minimum.at(start, log.room, log.ts)
    np.maximum.at(end, log.room, log.ts + 1)
    merchant = np.zeros(n, dtype=np.int64)
    merchant[log.room] = log.merchant
    cats: dict[str, int] = {}
    room_cat = np.zeros(n, dtype=np.int64)
    room_features: list[RoomFeatures] = []
    for j in range(n):
        mid = log.merchant_ids[merchant[j]]
        f = features.get(mid) or RoomFeatures(room_id=log.room_ids[j], merchant_id=mid, category="unknown")
        room_cat[j] = cats.setdefault(f.category, len(cats))
        room_features.append(f)
    return Schedule(merchant, start, end, room_cat, room_features)


def run_offline_evaluation(
    cfg: OfflineConfig, report_dir: Path | None = None, market: Any = None, log_stream: Any = None
) -> dict[str, Any]:
    from simulator import Marketplace  # the simulator is only needed for offline evaluation

    say = log_stream or sys.stderr
    timings: dict[str, float] = {}
    t0 = time.perf_counter()
    if market is None:
        market = Marketplace(
            seed=cfg.seed, n_merchants=cfg.n_merchants, n_viewers=cfg.n_viewers, days=cfg.days
        )
    log = from_simulator(market)
    timings["simulate_s"] = time.perf_counter() - t0
    print(f"simulated {len(log):,} events in {timings['simulate_s']:.1f}s", file=say)
    start = market.config.start_ms
    split_val, split_test = start + cfg.train_days * DAY_MS, start + (cfg.train_days + 1) * DAY_MS
    end = start + (cfg.train_days + 2) * DAY_MS
    rng = np.random.default_rng(cfg.seed)
    n_m = market.config.n_merchants
    held = set(rng.choice(n_m, int(n_m * cfg.holdout_merchant_share), replace=False).tolist())
    features = merchant_features(market.rooms)

    t0 = time.perf_counter()
    data = build_training_set(
        log, features, split_val, cfg.weights, exclude_merchants=[f"m{i}" for i in held]
    )
    model = train_model(data, cfg.model, version=f"offline-{cfg.seed}")
    timings["train_s"] = time.perf_counter() - t0
    print(f"trained on {data.n_interactions:,} viewer-merchant pairs in {timings['train_s']:.1f}s", file=say)

    t0 = time.perf_counter()
    base = BlendWeights()
    val, test = collect_targets(
        log,
        schedule_from_market(market),
        Scorer(model),
        [(split_val, split_test), (split_test, end)],
        [cfg.val_targets, cfg.test_targets],
        base,
        held,
        seed=cfg.seed,
    )
    timings["replay_s"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    w_ranker, _ = tune_weights(val, base, use_lightfm=True, seed=cfg.seed)
    w_ablation, _ = tune_weights(val, base, use_lightfm=False, seed=cfg.seed)
    timings["tune_s"] = time.perf_counter() - t0
    results = evaluate(test, w_ranker, w_ablation, seed=cfg.seed)
    val_results = evaluate(val, w_ranker, w_ablation, seed=cfg.seed)
    auc, n_cold = cold_auc(test)
    gain = ablation_gain(test, w_ranker, w_ablation, seed=cfg.seed)
    report: dict[str, Any] = {
        "objective": TUNING_OBJECTIVE,
        "ablation": {k: round(v, 4) if isinstance(v, float) else v for k, v in gain.items()},
        "tradeoff": tradeoff_curve(test, w_ranker, w_ablation),
        "config": {**asdict(cfg)},
        "test": results,
        "validation": val_results,
        "metrics": {**flatten_metrics(results), "cold_auc": round(auc, 4), "cold_targets": n_cold},
        "weights": {"ranker": w_ranker.to_dict(), "ranker_no_lightfm": w_ablation.to_dict()},
        "targets": {
            "validation": len(val),
            "test": len(test),
            "test_repeat_share": float(test.repeat.mean()),
            "test_mean_candidates": float(np.diff(test.offsets).mean()) if len(test) else 0.0,
        },
        "events": len(log),
        "train_pairs": data.n_interactions,
        "timings": timings,
    }
    if report_dir is not None:
        write_report(report, test, Path(report_dir))
    return report


def table(results: Mapping[str, Mapping[str, Mapping[str, float]]]) -> str:
    lines = ["| method | split | n | HR@1 | HR@5 | HR@10 | NDCG@10 |", "|---|---|---:|---:|---:|---:|---:|"]
    for method in METHODS:
        for split in ("overall", "repeat", "new"):
            m = results[method][split]
            lines.append(
                f"| {method} | {split} | {m['n']} | {m['hr1']:.3f} | {m['hr5']:.3f} | {m['hr10']:.3f} "
                f"| {m['ndcg10']:.3f} |"
            )
    return "\n".join(lines)


def write_report(report: Mapping[str, Any], test: Targets, report_dir: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    report_dir.mkdir(parents=True, exist_ok=True)
    res = report["test"]
    md = [
        "# Ranking evaluation (availability-aware protocol, simulator test day)",
        "",
        table(res),
        "",
        f"Cold-start AUC (merchants held out of training): {report['metrics']['cold_auc']:.3f} "
        f"over {report['metrics']['cold_targets']} targets.",
        f"Test targets: {report['targets']['test']} (repeat share {report['targets']['test_repeat_share']:.2f}, "
        f"mean {report['targets']['test_mean_candidates']:.0f} live candidates).",
        "",
        f"What LightFM adds on new targets (ranker minus ranker_no_lightfm, HR@5, paired bootstrap over "
        f"{report['ablation']['new_targets']} new targets): {report['ablation']['gain']:+.4f} "
        f"(95 % CI {report['ablation']['ci_low']:+.4f} … {report['ablation']['ci_high']:+.4f}; "
        f"{100 * report['ablation']['relative']:+.1f} %).",
        "",
        "Trade-off (test day, the favourites weight `repeat` varied, everything else as tuned):",
        "",
        "| repeat | ranker HR@5 | ranker new HR@5 | no-LightFM HR@5 | no-LightFM new HR@5 |",
        "|---:|---:|---:|---:|---:|",
        *(
            f"| {r['repeat']:.3g} | {r['hr5_ranker']:.3f} | {r['hr5_new_ranker']:.3f} | {r['hr5_ranker_no_lightfm']:.3f} "
            f"| {r['hr5_new_ranker_no_lightfm']:.3f} |"
            for r in report["tradeoff"]
        ),
        "",
        f"Tuning objective: {report['objective']}.",
        "",
        "Blend weights (tuned on the validation day):",
        "",
        "```",
        orjson.dumps(report["weights"], option=orjson.OPT_INDENT_2).decode(),
        "```",
    ]
    (report_dir / "eval.md").write_text("\n".join(md) + "\n")
    (report_dir / "eval.json").write_bytes(
        orjson.dumps(report, option=orjson.OPT_INDENT_2 | orjson.OPT_SERIALIZE_NUMPY)
    )
    fig, axes = plt.subplots(1, 4, figsize=(17, 4))
    for ax, split in zip(axes[:3], ("overall", "repeat", "new"), strict=True):
        x = np.arange(len(METHODS))
        ax.bar(x - 0.2, [res[m][split]["hr5"] for m in METHODS], 0.4, label="HR@5")
        ax.bar(x + 0.2, [res[m][split]["ndcg10"] for m in METHODS], 0.4, label="NDCG@10")
        ax.set_xticks(x, METHODS, rotation=35, ha="right")
        ax.set_title(f"{split} targets")
    axes[0].legend()
    curve = report["tradeoff"]
    for name, label in (("ranker", "ranker"), ("ranker_no_lightfm", "without LightFM")):
        axes[3].plot(
            [r[f"hr5_{name}"] for r in curve], [r[f"hr5_new_{name}"] for r in curve], "o-", label=label
        )
    axes[3].set_xlabel("overall HR@5")
    axes[3].set_ylabel("new-target HR@5")
    axes[3].set_title("trade-off as the repeat weight varies")
    axes[3].legend()
    fig.suptitle("Availability-aware evaluation on the simulator's test day")
    fig.tight_layout()
    fig.savefig(report_dir / "eval.png", dpi=110)
    plt.close(fig)
