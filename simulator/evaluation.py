"""`roomfeed evaluate`: the learned ranker judged on a simulated marketplace, against the simple baselines.

Owns driving ranking's public evaluation API with a simulated log: simulate `days` days, fit the
model on all but the last day exactly as `roomfeed train` does (`ranking.offline.fit_model`), judge
the last day (`ranking.offline.evaluate_model`: POP, live POP, REP-then-POP, REP-then-live-POP,
random, LightFM alone and the ranker without LightFM, all with the feed's session filter) and write
a table, a plot and JSON. The simulator depends on ranking here, never the other way round.
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import orjson

from ranking.dataset import from_simulator
from ranking.evaluation import PageJudge, baseline, page_method, ranker_method, table
from ranking.offline import FitConfig, evaluate_model, fit_model
from ranking.replay import Schedule
from simulator.market import Marketplace

DAY_MS = 86_400_000
METHODS = (
    "ranker",
    "ranker_lightfm",
    "ranker_no_lightfm",
    "lightfm",
    "rep_pop",
    "rep_live_pop",
    "pop",
    "live_pop",
    "random",
)
PAGE_METHODS = ("ranker_page", "rep_live_pop_page")
# Test targets judged in the default world (`roomfeed evaluate`); a world family run (`--world`) judges
# worlds.evaluate.RunConfig.test_targets per world-seed unless --targets says otherwise.
TARGETS = 6_000


def evaluate_market(
    market: Marketplace,
    targets: int = TARGETS,
    seed: int = 0,
    say: Any = None,
    page_of: Callable[[Schedule], PageJudge] | None = None,
) -> dict[str, Any]:
    """Fit on days [0, days - 1), judge the last day; figures and paired differences as a dict.

    `page_of(schedule)`: the feed's page judge (feed.replay.FeedPage), handed in by whoever may import
    the feed (a benchmark, the composition root); with it the table also has `*_page` rows."""
    out = say or sys.stderr
    t0 = time.perf_counter()
    log = from_simulator(market)
    w = market.world
    features: dict[str, Any] = {}
    for room in market.rooms:
        features.setdefault(room.features.merchant_id, room.features)
    schedule = Schedule(w.r_merchant, w.r_start, w.r_end, [r.features for r in market.rooms])
    start, days = market.config.start_ms, market.config.days
    split = start + (days - 1) * DAY_MS
    simulate_s = time.perf_counter() - t0
    print(f"simulated {len(log):,} events in {simulate_s:.0f}s; fitting on days 0-{days - 2}", file=out)
    fitted = fit_model(
        log, features, schedule, split, FitConfig(seed=seed), version=f"sim-{market.config.seed}"
    )
    print("judging the last day", file=out)
    extra: dict[str, Any] = {}
    if page_of is not None:  # the page the feed would serve: its diversity and exploration after the ranker
        page = page_of(schedule)
        extra = {
            "ranker_page": page_method(ranker_method(fitted.ranker), page),
            "rep_live_pop_page": page_method(baseline("rep_live_pop"), page),
        }
    ev, _ = evaluate_model(
        log,
        features,
        schedule,
        {
            "ranker": (fitted.model, fitted.ranker),
            "ranker_lightfm": (fitted.model, fitted.ranker_lightfm or fitted.ranker),
            "ranker_no_lightfm": (fitted.model, fitted.ranker_no_lightfm),
        },
        (split, split + DAY_MS),
        max_targets=targets,
        seed=seed,
        extra=extra,
    )
    r = ev.results
    best, pop = ev.best_baseline, ev.best_pop
    diff = ev.difference("ranker", best, seed=seed)
    ablation = ev.difference("ranker_lightfm", "ranker_no_lightfm", split="discovery", seed=seed)
    pages = {
        f"hr5_{k}": round(r[k]["overall"]["hr5"], 4) for k in ("ranker_page", "rep_live_pop_page") if k in r
    }
    return {
        **pages,
        "events": len(log),
        "targets": ev.targets,
        "repeat_share": round(ev.repeat_share, 3),
        "best_baseline": best,
        "best_pop": pop,
        "results": r,
        "table": table(r, [*METHODS, *(m for m in PAGE_METHODS if m in r)]),
        "hr5_ranker": round(r["ranker"]["overall"]["hr5"], 4),
        "ndcg10_ranker": round(r["ranker"]["overall"]["ndcg10"], 4),
        "hr5_reppop": round(r[best]["overall"]["hr5"], 4),
        "ndcg10_reppop": round(r[best]["overall"]["ndcg10"], 4),
        "hr5_diff": round(diff["diff"], 4),
        "hr5_diff_ci_low": round(diff["ci_low"], 4),
        "hr5_diff_ci_high": round(diff["ci_high"], 4),
        "ndcg10_diff": round(r["ranker"]["overall"]["ndcg10"] - r[best]["overall"]["ndcg10"], 4),
        "hr5_new_ranker": round(r["ranker"]["new"]["hr5"], 4),
        "hr5_new_pop": round(r[pop]["new"]["hr5"], 4),
        "hr5_new_discovery_ranker": round(r["ranker"]["discovery"]["hr5"], 4),
        "hr5_new_discovery_pop": round(r[pop]["discovery"]["hr5"], 4),
        "hr5_new_ranker_no_lightfm": round(r["ranker_no_lightfm"]["new"]["hr5"], 4),
        "hr5_new_discovery_ranker_no_lightfm": round(r["ranker_no_lightfm"]["discovery"]["hr5"], 4),
        "ablation_new_gain": round(ablation["diff"], 4),
        "ablation_new_ci_low": round(ablation["ci_low"], 4),
        "ablation_new_ci_high": round(ablation["ci_high"], 4),
        "hr5_purchase_ranker": round(r["ranker"]["purchase"]["hr5"], 4),
        "hr5_purchase_reppop": round(r[best]["purchase"]["hr5"], 4),
        "ranker_l2": fitted.ranker.info.get("l2"),
        "lightfm_used": bool(fitted.ranker.info.get("lightfm_used", 1.0)),
        "hr5_repeat_ranker": round(r["ranker"]["repeat"]["hr5"], 4),
        "hr5_repeat_reppop": round(r[best]["repeat"]["hr5"], 4),
        "weights": {k: round(v, 4) for k, v in fitted.ranker.as_dict().items()},
        "seconds": round(time.perf_counter() - t0, 1),
        **{k: round(v, 1) for k, v in fitted.timings.items()},
    }


def summary(run: dict[str, Any]) -> list[str]:
    ratio = run["hr5_new_discovery_ranker"] / max(run["hr5_new_discovery_pop"], 1e-9)
    return [
        f"{run['targets']} targets, repeat share {run['repeat_share']}, best REP baseline {run['best_baseline']}, "
        f"better POP {run['best_pop']} ({run['seconds']} s)",
        *run["table"].splitlines(),
        f"ranker - {run['best_baseline']}: HR@5 {run['hr5_diff']:+.4f} (95% CI {run['hr5_diff_ci_low']:+.4f} .. "
        f"{run['hr5_diff_ci_high']:+.4f}), NDCG@10 {run['ndcg10_diff']:+.4f}",
        f"new among never-entered: ranker {run['hr5_new_discovery_ranker']:.3f} vs {run['best_pop']} "
        f"{run['hr5_new_discovery_pop']:.3f} = {ratio:.2f}x; LightFM adds {run['ablation_new_gain']:+.4f} "
        f"(CI {run['ablation_new_ci_low']:+.4f} .. {run['ablation_new_ci_high']:+.4f}); "
        f"LightFM's columns {'kept' if run['lightfm_used'] else 'dropped'} by the validation lists",
    ]


def write_report(run: dict[str, Any], report_dir: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    report_dir.mkdir(parents=True, exist_ok=True)
    (report_dir / "eval.md").write_text(
        "# Ranking evaluation (availability-aware protocol, simulator's last day)\n\n"
        + "\n".join(summary(run))
        + "\n"
    )
    (report_dir / "eval.json").write_bytes(orjson.dumps(run, option=orjson.OPT_INDENT_2))
    res = run["results"]
    fig, axes = plt.subplots(1, 3, figsize=(15, 4))
    for ax, split in zip(axes, ("overall", "new", "discovery"), strict=True):
        x = list(range(len(METHODS)))
        ax.bar([i - 0.2 for i in x], [res[m][split]["hr5"] for m in METHODS], 0.4, label="HR@5")
        ax.bar([i + 0.2 for i in x], [res[m][split]["ndcg10"] for m in METHODS], 0.4, label="NDCG@10")
        ax.set_xticks(x, METHODS, rotation=35, ha="right")
        ax.set_title(f"{split} targets")
    axes[0].legend()
    fig.tight_layout()
    fig.savefig(report_dir / "eval.png", dpi=110)
    plt.close(fig)


def add_evaluate_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--sim-seed", type=int, default=7)
    parser.add_argument("--viewers", type=int, default=30_000)
    parser.add_argument("--merchants", type=int, default=1_500)
    parser.add_argument("--days", type=int, default=7)
    parser.add_argument("--targets", type=int, help=f"test targets (default {TARGETS:,})")
    parser.add_argument("--report", type=Path, default=Path("reports/eval"), help="report folder")


async def evaluate_command(settings: Any, args: argparse.Namespace) -> int:  # noqa: ARG001
    import asyncio

    market = Marketplace(
        seed=args.sim_seed, n_merchants=args.merchants, n_viewers=args.viewers, days=args.days
    )
    targets = args.targets if args.targets is not None else TARGETS
    run = await asyncio.to_thread(evaluate_market, market, targets, args.sim_seed)
    write_report(run, args.report)
    print("\n".join(summary(run)))
    print(f"report: {args.report}/eval.md, eval.png", file=sys.stderr)
    return 0
