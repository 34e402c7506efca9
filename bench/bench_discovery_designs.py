"""Benchmark: designs of the ranker's discovery part and known-merchant offsets against main, on one fit's lists.

    .venv/bin/python bench/bench_discovery_designs.py WORLD:SEED [WORLD:SEED ...] [--design NAME:FIELD=VALUE,...]
        [--viewers 10000 --merchants 500 --targets 4000 --world-cache reports/worlds/cache --name NAME]

Per world and seed (simulator.presets, days 0-5 the log, day 6 the test day): the ranker's training and
validation lists are made ONCE (`ranking.offline.ranker_lists`: the LightFM "a" fits, the replayed enters),
and LightFM is fit once on the whole window; each design is `ranking.offline.choose_rankers` on those same
lists with its FitConfig fields changed, so a difference between designs is the design alone (no list draw,
no LightFM draw). Every choice inside a design is made on the validation lists. Per design: its validation
value minus main's (HR@5 + NDCG@10 per validation list, viewers the unit: `ranking.ranker.paired_gain`), and
on the same test-day targets, judged by the page the feed would serve (feed.replay.FeedPage): HR@5 overall,
new targets on the full list and discovery (own order among never-watched live rooms) minus main's, each with
an interval that resamples viewers; and where main and the better popularity baseline lose new targets, by
repeat band (`bench_ranker_validation.where_new_are_lost`). Default designs: `l2wide` (the discovery part's L2
from 1e-3 .. 1), `pairwise` (the discovery part fit by a pairwise logistic loss), `pool` (a repeat band too
small for its own known-merchant offset chooses it with its neighbour band). Writes bench/results/NAME.json.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "bench"))

DESIGNS = (
    "l2wide:discovery_l2_grid=[0.001,0.01,0.1,1.0]",
    "pairwise:discovery_objective=pairwise",
    "pool:known_offset_small_bands=pool",
)
from bench_ranker_validation import SPLITS  # noqa: E402 - after the bench directory is on the path

# --cap: at most m of the viewer's known merchants above the discovery rooms, m per repeat band (walking down
# from no cap, the lowest m within one standard error of the band's best on the validation lists, as the
# known-merchant offsets' "discovery" rule); the rest sink by CAP_DROP (below every discovery room, still
# under the favourites-first lift). A screen only: the feed does not serve it.
CAP_GRID = (1_000, 5, 3, 2, 1, 0)
CAP_DROP = 1e3


def _capped_rows(scores: Any, known: Any, seg: Any, caps: Any) -> Any:
    """Per row: 1 where a known row ranks at or beyond its list's cap among the list's known rows."""
    import numpy as np

    order = np.lexsort((-scores, seg))
    k = known[order]
    counts = np.cumsum(k)
    starts = np.searchsorted(seg[order], np.arange(int(seg.max()) + 1 if seg.size else 0))
    before = np.concatenate([[0], counts])[starts][seg[order]]
    rank = counts - before - 1  # 0-based rank among the list's known rows (for known rows)
    out = np.zeros(scores.shape[0])
    out[order[k & (rank >= caps[seg[order]])]] = 1.0
    return out


def with_known_cap(ranker: Any, validation: Any) -> Any:
    """`ranker` (with its offsets) and a known-merchant cap per repeat band chosen on `validation`."""
    import numpy as np

    from ranking.ranker import MIN_BAND_LISTS, REPEAT_BANDS, F, _first_ranks, judged_values, paired_gain

    scores = ranker.validation_scores
    n_bands = len(REPEAT_BANDS) + 1
    bands, viewers = validation.bands(), validation.viewers()
    seg = np.repeat(np.arange(len(validation)), np.diff(validation.offsets))
    known = validation.x[:, F["h_entered"]] > 0
    off = np.asarray(ranker.known_offset or (0.0,) * n_bands)[bands][seg] * known
    k = (
        np.asarray(ranker.first_by_share, dtype=np.int64)[bands]
        if ranker.first_by_share
        else np.full(len(validation), ranker.favourites_first, dtype=np.int64)
    )
    base = scores + off
    per = {
        m: judged_values(
            _first_ranks(
                base - CAP_DROP * _capped_rows(base, known, seg, np.full(len(validation), m)), validation, k
            )
        )
        for m in CAP_GRID
    }
    chosen = [CAP_GRID[0]] * n_bands
    values = per[CAP_GRID[0]].copy()
    for b in range(n_bands):
        inside = bands == b
        if inside.sum() < MIN_BAND_LISTS:
            continue
        best = max(CAP_GRID, key=lambda m: (float(per[m][inside].mean()), m))
        pick = best
        for m in CAP_GRID[CAP_GRID.index(best) + 1 :]:
            gain, se = paired_gain(per[m][inside], per[best][inside], viewers[inside])
            if gain < -se:
                break
            pick = m
        chosen[b] = pick
        values[inside] = per[pick][inside]
    return CappedRanker(
        ranker.weights,
        info=dict(ranker.info),
        favourites_first=ranker.favourites_first,
        validation_values=values,
        discovery=ranker.discovery,
        first_by_share=ranker.first_by_share,
        known_offset=ranker.known_offset,
        validation_scores=scores,
        caps=tuple(chosen),
    )


def _capped_class() -> Any:
    import dataclasses as dc

    import numpy as np

    from ranking.ranker import FEATURES, Ranker, favourites_first, repeat_band, viewer_columns

    @dc.dataclass
    class Capped(Ranker):
        caps: tuple[int, ...] = ()

        def score(self, table: Any, req: Any) -> Any:
            plain = Ranker(
                self.weights, FEATURES, self.info, 0, discovery=self.discovery, known_offset=self.known_offset
            )
            out = plain.score(table, req)
            cols = viewer_columns(table, req)
            band = repeat_band(req.history)
            if cols.rows.size and self.caps:
                entered = cols.rows[cols.sparse["h_entered"] > 0]
                m = self.caps[band]
                if entered.size > m:
                    drop = entered[np.argsort(-out[entered], kind="stable")[m:]]
                    out[drop] -= np.float32(CAP_DROP)
            k = self.first_count(req.history, band)
            if cols.favourite_rows.size and k > 0:
                favourites_first(out, cols.favourite_rows, cols.swiped_rows, k)
            return out

    return Capped


def CappedRanker(*args: Any, **kwargs: Any) -> Any:  # noqa: N802 - a class made on first use (lazy imports)
    global _CAPPED
    if _CAPPED is None:
        _CAPPED = _capped_class()
    return _CAPPED(*args, **kwargs)


_CAPPED: Any = None


def design_spec(text: str) -> tuple[str, dict[str, Any]]:
    """NAME:FIELD=VALUE,FIELD=VALUE (values read as JSON; lists become tuples)."""
    from bench_ranker_validation import fit_overrides

    name, sep, rest = text.partition(":")
    if not sep or not name:
        raise SystemExit(f"--design takes NAME:FIELD=VALUE[,FIELD=VALUE], got {text!r}")
    pairs, depth, cur = [], 0, ""
    for ch in rest:  # split on commas outside [...]
        depth += ch == "["
        depth -= ch == "]"
        if ch == "," and depth == 0:
            pairs.append(cur)
            cur = ""
        else:
            cur += ch
    pairs.append(cur)
    fields = fit_overrides([p for p in pairs if p])
    return name, {k: tuple(v) if isinstance(v, list) else v for k, v in fields.items()}


def choices(r: Any) -> dict[str, Any]:
    return {
        "lightfm_used": r.info.get("lightfm_used"),
        "lightfm_discovery_only": r.info.get("lightfm_discovery_only"),
        "two_part": r.info.get("two_part"),
        "discovery_l2": r.info.get("discovery_l2"),
        "first_by_share": list(r.first_by_share),
        "known_offset": list(r.known_offset),
        "caps": list(getattr(r, "caps", ())),
    }


def run(
    world: str, seed: int, designs: dict[str, dict[str, Any]], args: argparse.Namespace
) -> dict[str, Any]:
    import numpy as np
    from bench_lightfm_parts import INTERVAL
    from bench_ranker_validation import _viewer_interval, where_new_are_lost
    from world_screen import against_popularity

    from feed.replay import FeedPage
    from ranking.dataset import build_training_set
    from ranking.evaluation import baseline, ranker_method
    from ranking.model import ModelParams, train_model
    from ranking.offline import FitConfig, attach_ranker, choose_rankers, evaluate_model, ranker_lists
    from ranking.ranker import paired_gain
    from worlds.evaluate import DAY_MS, world_log

    opened = world_log(world, seed, args.viewers, args.merchants, Path(args.world_cache))
    log, features, schedule, until = opened.log, opened.features, opened.schedule, opened.split
    base = FitConfig(model=ModelParams(num_threads=1), seed=seed)
    timings: dict[str, float] = {}
    t0 = time.perf_counter()
    lists, validation = ranker_lists(log, features, schedule, until, base, "main", (), timings)
    timings["lists_total_s"] = round(time.perf_counter() - t0, 1)
    rankers: dict[str, Any] = {}
    out: dict[str, Any] = {"lists": len(lists), "validation_lists": len(validation)}
    for name, fields in {"main": {}, **designs}.items():
        t0 = time.perf_counter()
        rankers[name], _, _ = choose_rankers(lists, validation, dataclasses.replace(base, **fields))
        out[name] = choices(rankers[name])
        out[name]["fit_s"] = round(time.perf_counter() - t0, 1)
    if args.cap:
        rankers["cap"] = with_known_cap(rankers["main"], validation)
        out["cap"] = choices(rankers["cap"])
        designs = {**designs, "cap": {}}
    viewers_v = validation.viewers()
    for name in designs:
        a, b = rankers[name].validation_values, rankers["main"].validation_values
        gain, se = paired_gain(a, b, viewers_v) if a is not None and b is not None else (0.0, 0.0)
        out[name]["validation_minus_main"] = {"gain": round(gain, 4), "se": round(se, 4)}
    t0 = time.perf_counter()
    model = train_model(
        build_training_set(log, features, until, base.weights), base.model, "main", progress=False
    )
    attach_ranker(model, rankers["main"], log, features, until)
    timings["lightfm_s"] = round(time.perf_counter() - t0, 1)
    page = FeedPage(schedule.room_features, seed=seed)
    t0 = time.perf_counter()
    ev, targets = evaluate_model(
        log,
        features,
        schedule,
        {name: (model, r) for name, r in rankers.items()},
        (until, until + DAY_MS),
        max_targets=args.targets,
        seed=seed,
        page=page,
    )
    methods = {name: ranker_method(r) for name, r in rankers.items()}
    own, own_pop, figures = against_popularity(ev, targets, methods, page, seed)
    pop = ev.best_pop
    for name in rankers:
        out[name].update(figures[name])
    viewers = np.array([t.viewer for t in targets if not t.repeat])
    for name in designs:
        for split in SPLITS:
            d = ev.difference(name, "main", split, seed=seed)
            out[name][f"minus_main_{split}"] = {k: round(d[k], 4) for k in INTERVAL}
        out[name]["minus_main_discovery"] = _viewer_interval(
            own[name]["hits"] - own["main"]["hits"], viewers, seed
        )
    out["where_new_are_lost"] = where_new_are_lost(
        targets, {"main": methods["main"], pop: baseline(pop, seed)}, page
    )
    timings["evaluate_s"] = round(time.perf_counter() - t0, 1)
    out.update(
        best_reppop=ev.best_baseline,
        hr5_reppop=round(ev.results[ev.best_baseline]["overall"]["hr5"], 4),
        best_pop=pop,
        hr5_new_pop=round(ev.results[pop]["new"]["hr5"], 4),
        hr5_new_discovery_pop=round(own_pop, 4),
        targets=len(targets),
        timings={k: round(v, 1) for k, v in timings.items()},
    )
    return out


def summary(runs: dict[str, Any], designs: list[str]) -> list[str]:
    """One table row per design and world-seed, and each design's means across the world-seeds."""

    def ci(d: dict[str, float]) -> str:
        return f"{d['diff']:+.4f} ({d['ci_low']:+.3f}..{d['ci_high']:+.3f})"

    lines = [
        "| design | world-seed | validation - main (SE) | HR@5 - main | new on full list - main | discovery - main "
        "| discovery ratio main / design | choices (discovery L2, offsets) |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for name in designs:
        means: dict[str, list[float]] = {"validation": [], "overall": [], "new": [], "discovery": []}
        for spec, r in runs.items():
            if name not in r:
                continue
            d = r[name]
            v = d["validation_minus_main"]
            lines.append(
                f"| {name} | {spec} | {v['gain']:+.4f} ({v['se']:.4f}) | {ci(d['minus_main_overall'])} "
                f"| {ci(d['minus_main_new'])} | {ci(d['minus_main_discovery'])} "
                f"| {r['main']['discovery_ratio']}x / {d['discovery_ratio']}x "
                f"| {r['main']['discovery_l2']} -> {d['discovery_l2']}, {r['main']['known_offset']} -> {d['known_offset']} |"
            )
            means["validation"].append(v["gain"])
            for split in means:
                if split != "validation":
                    means[split].append(d[f"minus_main_{split}"]["diff"])
        if means["overall"]:
            lines.append(
                f"| {name} | mean of {len(means['overall'])} | "
                + " | ".join(f"{sum(v) / len(v):+.4f}" for v in means.values())
                + " | | |"
            )
    lines += [
        "",
        "where main loses new targets on the full list (main / the better popularity baseline; test day, page):",
        "",
        "| world-seed | new hit | lost to favourites | lost in the discovery order | favourites in the top five "
        "| band 2 hit (targets) | band 3 hit (targets) |",
        "|---|---|---|---|---|---|---|",
    ]
    for spec, r in runs.items():
        m, p = r["where_new_are_lost"]["main"], r["where_new_are_lost"][r["best_pop"]]

        bands = {
            b: f"{m['by_band'][b]['hit']:.3f} / {p['by_band'][b]['hit']:.3f} ({m['by_band'][b]['targets']})"
            if b in m["by_band"]
            else "-"
            for b in ("2", "3")
        }
        lines.append(
            f"| {spec} | {m['hit']:.3f} / {p['hit']:.3f} | {m['lost_to_favourites']:.3f} / "
            f"{p['lost_to_favourites']:.3f} | {m['lost_in_discovery']:.3f} / {p['lost_in_discovery']:.3f} "
            f"| {m['favourites_on_top']:.2f} / {p['favourites_on_top']:.2f} | {bands['2']} | {bands['3']} |"
        )
    return lines


def main() -> None:
    from bench_scorer import command_line, write_results
    from world_args import add_world_args, world_seed

    ap = argparse.ArgumentParser()
    add_world_args(ap, nargs="*")
    ap.add_argument("--design", action="append", default=None, help="NAME:FIELD=VALUE,... of FitConfig")
    ap.add_argument("--cap", action="store_true", help="also screen a known-merchant cap per band (post-fit)")
    ap.add_argument("--name", default="discovery_designs", help="bench/results/NAME.json")
    ap.add_argument(
        "--out", default=None, help="write the runs as JSON here after each world-seed (no record)"
    )
    ap.add_argument("--runs", nargs="*", default=[], help="record runs saved by --out instead of running")
    ap.add_argument("--made-by", nargs="*", default=[], help="with --runs: the command line of each file")
    args = ap.parse_args()
    designs = dict(design_spec(d) for d in (args.design if args.design is not None else DESIGNS) if d)
    runs: dict[str, Any] = {}
    for path in args.runs:
        runs.update(json.loads(Path(path).read_text()))
    for spec in [] if args.runs else args.worlds:
        world, seed = world_seed(spec)
        t0 = time.perf_counter()
        runs[spec] = run(world, seed, designs, args)
        runs[spec]["wall_s"] = round(time.perf_counter() - t0, 1)
        print(json.dumps({spec: runs[spec]}), flush=True)
        if args.out:
            Path(args.out).write_text(json.dumps(runs, indent=1))
    names = sorted(
        {k for r in runs.values() for k in r if isinstance(r[k], dict) and "validation_minus_main" in r[k]}
    )
    lines = summary(runs, names)
    print("\n".join(lines))
    if args.out:
        return
    write_results(
        args.name,
        command_line(),
        {
            "viewers": args.viewers,
            "merchants": args.merchants,
            "designs": designs,
            "made_by": args.made_by,
            "runs": runs,
        },
        lines,
        "Discovery-part and known-offset designs against main on one fit's lists, same test day",
    )


if __name__ == "__main__":
    main()
