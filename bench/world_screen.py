"""What the world-seed screens (bench_discovery_designs, bench_ranker_live_pop, bench_ranker_validation) report
for each method beside the better popularity baseline: one place for the page judge's per-method figures."""

from __future__ import annotations

from typing import Any


def against_popularity(
    ev: Any,
    targets: Any,
    methods: dict[str, Any],
    page: Any,
    seed: int,
    *,
    ndcg: bool = False,
) -> tuple[dict[str, Any], float, dict[str, dict[str, Any]]]:
    """(each method's discovery beyond the page, the better popularity baseline's discovery HR@5, each
    method's figures): HR@5 overall and on new targets (and NDCG@10 when `ndcg`), discovery HR@5 and its
    ratio to the popularity baseline's, and the paired intervals of new targets minus
    that baseline and of overall minus the best REP-then-popularity baseline."""
    from bench_lightfm_parts import INTERVAL

    from ranking.evaluation import baseline
    from worlds.evaluate import discovery_beyond_page

    own = discovery_beyond_page(targets, methods, page, seed)
    pop = ev.best_pop
    own_pop = float(discovery_beyond_page(targets, {pop: baseline(pop, seed)}, page, seed)[pop]["hr5"])
    figures: dict[str, dict[str, Any]] = {}
    for name in methods:
        res = ev.results[name]
        row: dict[str, Any] = {"hr5": round(res["overall"]["hr5"], 4)}
        if ndcg:
            row["ndcg10"] = round(res["overall"]["ndcg10"], 4)
        row.update(
            hr5_new=round(res["new"]["hr5"], 4),
            hr5_new_discovery=round(float(own[name]["hr5"]), 4),
            discovery_ratio=round(float(own[name]["hr5"]) / own_pop, 3) if own_pop else None,
        )
        d = ev.difference(name, pop, "new", seed=seed)
        row["new_minus_pop"] = {k: round(d[k], 4) for k in INTERVAL}
        d = ev.difference(name, ev.best_baseline, "overall", seed=seed)
        row["overall_minus_reppop"] = {k: round(d[k], 4) for k in INTERVAL}
        figures[name] = row
    return own, own_pop, figures
