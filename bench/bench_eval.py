"""Benchmark: ranking quality on the availability-aware protocol, and the ML-100k check.

`.venv/bin/python bench/bench_eval.py`

Runs `roomfeed evaluate`'s offline evaluation with its defaults (simulator 100k viewers, 5,000
merchants; train days 0-4, blend weights tuned on day 5, scored on day 6) and the MovieLens-100k
check in LightFM's documented setup. Writes the report folder (reports/eval/), bench/results/eval.json
and the ranking section of docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench_scorer import command_line, write_results  # noqa: E402

from ranking.movielens import run_check  # noqa: E402
from ranking.offline import OfflineConfig, run_offline_evaluation, table  # noqa: E402

KEYS = (
    "hr5_ranker",
    "ndcg10_ranker",
    "hr5_lightfm",
    "hr5_pop",
    "ndcg10_pop",
    "hr5_rep",
    "ndcg10_rep",
    "hr5_new_ranker",
    "hr5_new_ranker_no_lightfm",
    "hr5_new_lightfm",
    "hr5_new_pop",
    "cold_auc",
)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--viewers", type=int, default=OfflineConfig.n_viewers)
    ap.add_argument("--merchants", type=int, default=OfflineConfig.n_merchants)
    ap.add_argument("--report", type=Path, default=Path("reports/eval"))
    args = ap.parse_args()
    cfg = OfflineConfig(n_viewers=args.viewers, n_merchants=args.merchants)
    report = run_offline_evaluation(cfg, args.report)
    ml = run_check(epochs=10, threads=2)
    m = report["metrics"]
    metrics = {k: m[k] for k in KEYS}
    metrics.update(
        {
            "ml100k_p10": round(ml.precision_at_10, 4),
            "ml100k_auc": round(ml.auc, 4),
            "hr5_repeat_ranker": m["hr5_repeat_ranker"],
            "hr5_repeat_rep": m["hr5_repeat_rep"],
            "ndcg10_ranker_no_lightfm": m["ndcg10_ranker_no_lightfm"],
            "hr5_ranker_no_lightfm": m["hr5_ranker_no_lightfm"],
            "test_targets": report["targets"]["test"],
            "test_repeat_share": round(report["targets"]["test_repeat_share"], 3),
            "cold_targets": m["cold_targets"],
            "hr5_new_gain_lightfm": report["ablation"]["gain"],
            "hr5_new_gain_ci_low": report["ablation"]["ci_low"],
            "hr5_new_gain_ci_high": report["ablation"]["ci_high"],
            "hr5_new_gain_relative": report["ablation"]["relative"],
            "ndcg10_new_ranker": m["ndcg10_new_ranker"],
            "ndcg10_new_ranker_no_lightfm": m["ndcg10_new_ranker_no_lightfm"],
        }
    )
    ratio = m["hr5_new_ranker"] / max(m["hr5_new_pop"], 1e-9)
    lines = [
        f"simulator: {args.viewers:,} viewers, {args.merchants:,} merchants, {report['events']:,} events; "
        f"train days 0-4, weights tuned on day 5, test day 6",
        f"test targets {report['targets']['test']:,} (repeat share {report['targets']['test_repeat_share']:.2f}, "
        f"mean {report['targets']['test_mean_candidates']:.0f} live candidates)",
        "",
        *table(report["test"]).splitlines(),
        "",
        f"new targets: ranker HR@5 / POP HR@5 = {ratio:.2f}  (target >= 1.1, aim 1.2)",
        f"ablation: LightFM adds {report['ablation']['gain']:+.4f} HR@5 on new targets "
        f"(paired bootstrap 95% CI {report['ablation']['ci_low']:+.4f} .. {report['ablation']['ci_high']:+.4f}, "
        f"{100 * report['ablation']['relative']:+.1f}%)",
        "trade-off (test day, repeat weight varied; ranker vs without LightFM at the same repeat weight):",
        *(
            f"  repeat {r['repeat']:6.3g}: overall HR@5 {r['hr5_ranker']:.3f} vs {r['hr5_ranker_no_lightfm']:.3f}, "
            f"new HR@5 {r['hr5_new_ranker']:.3f} vs {r['hr5_new_ranker_no_lightfm']:.3f}"
            for r in report["tradeoff"]
        ),
        f"tuning objective: {report['objective']}",
        f"weights: ranker {report['weights']['ranker']}",
        f"weights: without LightFM {report['weights']['ranker_no_lightfm']}",
        f"cold-start AUC (merchants held out of training) {m['cold_auc']:.3f} over {m['cold_targets']} targets",
        f"MovieLens-100k (LightFM docs setup, WARP, 10 epochs): P@10 {ml.precision_at_10:.3f} (docs 0.11), "
        f"AUC {ml.auc:.3f} (>= 0.88)",
        f"report: {args.report}/eval.md, {args.report}/eval.png",
    ]
    print("\n".join(lines))
    write_results(
        "eval", command_line(), metrics, lines, "eval — availability-aware protocol on the simulator"
    )


if __name__ == "__main__":
    main()
