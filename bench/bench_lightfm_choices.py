"""Benchmark: how often the ranker's discrete validation choices flip with LightFM's draw, and choice rules
that hold across draws.

    .venv/bin/python bench/bench_lightfm_choices.py fit WORLD:SEED [...] [--lightfm-seeds 42,43,44 --store DIR]
    .venv/bin/python bench/bench_lightfm_choices.py judge WORLD:SEED [...] [--design NAME ...] [--store DIR]
    .venv/bin/python bench/bench_lightfm_choices.py merge NAME [NAME ...] --name lightfm_choices

The ranker's choices on its validation lists are discrete (LightFM's columns everywhere, in the discovery part
only or not at all; one score or two parts; the favourites-first count and its per-band counts; the known
merchants' offsets), and one WARP fit's draw (ModelParams.seed) moves the LightFM column they are made on
(ranker13: seed 43 instead of 42 drops LightFM in category 1 and moves HR@5 ~0.01 with intervals off 0).
`fit`: per world-seed (simulator.presets; days 0-5 the log, day 6 the test day) and LightFM seed, `fit_model`
as the trainer runs it (one LightFM thread), the test day replayed once with that fit's serving model; the
lists, the validation lists, the model and the test-day targets are stored (pickles in --store, ~170 MB each).
`judge`: per design (a rule that turns one draw's stored lists into a ranker), the ranker of each LightFM seed,
judged on its own seed's test day by the page the feed would serve: HR@5 overall, new targets on the full
list, discovery (own order among never-watched live rooms; worlds.evaluate.discovery_beyond_page) and the
ablation without LightFM on new targets (viewer-resampled interval); per world-seed the spread (max - min)
across LightFM seeds and the mean, and which discrete choices each seed's ranker made. Designs (DESIGNS):
main (fit_model's choices), lightfm_se2 (LightFM's columns must win by 2 standard errors), pooled (one
LightFM choice on the draws' validation lists pooled), offsets_mid (the known offsets' "middle" rule), soft
(the mean of the three rankers' scores — everywhere, discovery part only, none: `blend_rankers`), soft_mid
(soft with the "middle" offsets), soft_dw (discovery part only + none), soft_wd (everywhere + discovery part
only = FitConfig.lightfm_choice "blend"). `merge` joins earlier judge records (bench/results/NAME.json).
Writes bench/results/NAME.json and the docs/benchmarks.md block.
"""

from __future__ import annotations

import argparse
import io
import json
import pickle
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "bench"))


def stored(store: Path, spec: str, lseed: int) -> Path:
    return store / f"{spec.replace(':', '-')}-lf{lseed}.pickle"


def fit(spec: str, lseeds: list[int], args: argparse.Namespace) -> None:
    from world_args import world_seed

    from ranking.model import ModelParams
    from ranking.offline import FitConfig, fit_model
    from ranking.replay import replay
    from ranking.scorer import Scorer
    from worlds.evaluate import DAY_MS, world_log

    world, seed = world_seed(spec)
    opened = world_log(world, seed, args.viewers, args.merchants, Path(args.world_cache))
    log, features, schedule, until = opened.log, opened.features, opened.schedule, opened.split
    for lseed in lseeds:
        path = stored(Path(args.store), spec, lseed)
        if path.exists():
            continue
        t0 = time.perf_counter()
        cfg = FitConfig(model=ModelParams(num_threads=1, seed=lseed), seed=seed)
        fitted = fit_model(log, features, schedule, until, cfg, version=f"lf{lseed}", say=io.StringIO())
        fit_s = time.perf_counter() - t0
        (targets,) = replay(
            log,
            schedule,
            features,
            Scorer(fitted.model),
            [(until, until + DAY_MS)],
            [args.targets],
            seed=seed,
        )
        blob = {
            "lists": fitted.lists,
            "validation": fitted.validation,
            "model": fitted.model,
            "targets": targets,
            "main": (fitted.ranker, fitted.ranker_no_lightfm, fitted.ranker_lightfm),
            "fit_s": fit_s,
            "timings": fitted.timings,
        }
        tmp = path.with_suffix(".tmp")
        with tmp.open("wb") as f:
            pickle.dump(blob, f, protocol=pickle.HIGHEST_PROTOCOL)
        tmp.rename(path)
        print(
            f"{spec} lightfm seed {lseed}: fit {fit_s:.0f} s, total {time.perf_counter() - t0:.0f} s, "
            f"{choices(fitted.ranker)}",
            flush=True,
        )


def choices(r: Any) -> dict[str, Any]:
    """The discrete choices a ranker carries."""
    info = r.info
    lightfm = (
        "discovery" if info.get("lightfm_discovery_only") else "yes" if info.get("lightfm_used") else "no"
    )
    return {
        "lightfm": lightfm,
        "two_part": int(info.get("two_part", 0.0)),
        "k": int(r.favourites_first),
        "k_bands": list(r.first_by_share),
        "offsets": list(r.known_offset),
        "l2": info.get("l2"),
    }


DESIGNS = ("main", "lightfm_se2", "soft", "pooled", "offsets_mid", "soft_mid", "soft_dw", "soft_wd")


def candidates(blob: dict[str, Any]) -> dict[str, Any]:
    """The three rankers `choose_rankers` chooses among: the stored fit's ranker with LightFM and its ablation
    are those of fit_model (their known-merchant offsets taken off again); the discovery-part variant is fit
    anew on the stored lists."""
    import dataclasses as dc

    from ranking.ranker import LIGHTFM_FEATURES, _first_ranks, fit_ranker, judged_values

    lists, val = blob["lists"], blob["validation"]

    def plain(r: Any) -> Any:
        k = (
            np.asarray(r.first_by_share, dtype=np.int64)[val.bands()]
            if r.first_by_share
            else np.full(len(val), r.favourites_first, dtype=np.int64)
        )
        values = judged_values(_first_ranks(r.validation_scores, val, k))
        info = {k2: v for k2, v in r.info.items() if not k2.startswith("known_offset")}
        return dc.replace(r, info=info, known_offset=(), validation_values=values)

    import numpy as np

    discovery = fit_ranker(lists, validation=val, drop=LIGHTFM_FEATURES, discovery_only=LIGHTFM_FEATURES)
    return {"with": plain(blob["main"][2]), "without": plain(blob["main"][1]), "discovery": discovery}


def designed(
    name: str, blobs: dict[int, dict[str, Any]], cands: dict[int, dict[str, Any]]
) -> dict[int, tuple[Any, Any]]:
    """Per LightFM seed, design `name`'s ranker and its ablation without LightFM."""
    import numpy as np

    from ranking.ranker import blend_rankers, choose_lightfm, paired_gain, with_known_offsets

    out: dict[int, tuple[Any, Any]] = {}

    rule = "middle" if name.endswith("_mid") else "discovery"

    def offsets(r: Any, val: Any) -> Any:
        return with_known_offsets(r, val, rule)

    for lseed, blob in blobs.items():
        val = blob["validation"]
        if name == "main":
            out[lseed] = (blob["main"][0], blob["main"][1])
            if cands:  # the candidates re-made here choose as fit_model did
                c = cands[lseed]
                again = offsets(
                    choose_lightfm(c["with"], c["without"], val.viewers(), c["discovery"], val), val
                )
                same = (
                    np.allclose(again.weights, blob["main"][0].weights)
                    and again.known_offset == blob["main"][0].known_offset
                )
                print(f"lightfm seed {lseed}: candidates re-made choose as fit_model: {same}", flush=True)
            continue
        c = cands[lseed]
        if name == "lightfm_se2":
            r = choose_lightfm(c["with"], c["without"], val.viewers(), c["discovery"], val, margin=2.0)
        elif name == "offsets_mid":
            r = choose_lightfm(c["with"], c["without"], val.viewers(), c["discovery"], val)
        elif name in ("soft", "soft_mid", "soft_dw", "soft_wd"):
            kinds = {"soft_dw": ("discovery", "without"), "soft_wd": ("with", "discovery")}.get(
                name, ("with", "discovery", "without")
            )
            r = blend_rankers([c[k] for k in kinds], val)
            r.info["lightfm_used"] = 1.0
        elif name == "pooled":
            continue
        else:
            raise SystemExit(f"unknown design {name!r}")
        out[lseed] = (offsets(r, val), offsets(c["without"], val))
    if name == "pooled":
        # One LightFM choice for every draw: the one-SE rule on the draws' validation lists pooled (the same
        # enters and viewers, each draw's column), then each draw's ranker of that kind.
        pool = cands
        seeds = list(blobs)
        viewers = np.concatenate([blobs[s]["validation"].viewers() for s in seeds])

        def pooled(kind: str, on: str) -> Any:
            return np.concatenate([pool[s][kind].validation_values for s in seeds])

        base = "without"
        d_parts = []
        from ranking.ranker import discovery_lists, discovery_values

        for s in seeds:
            on = discovery_lists(blobs[s]["validation"])
            d_parts.append(
                (
                    discovery_values(pool[s]["discovery"], on),
                    discovery_values(pool[s]["without"], on),
                    on.viewer,
                )
            )
        gain_d, se_d = paired_gain(
            np.concatenate([p[0] for p in d_parts]),
            np.concatenate([p[1] for p in d_parts]),
            np.concatenate([p[2] for p in d_parts]),
        )
        overall, overall_se = paired_gain(pooled("discovery", ""), pooled("without", ""), viewers)
        if pool[seeds[0]]["discovery"].discovery is not None and gain_d > se_d and overall >= -overall_se:
            base = "discovery"
        gain, se = paired_gain(pooled("with", ""), pooled(base, ""), viewers)
        kind = "with" if gain > se else base
        for s in seeds:
            r = pool[s][kind]
            r.info.update(
                lightfm_used=float(kind != "without"),
                lightfm_discovery_only=float(kind == "discovery"),
                lightfm_gain=round(gain, 4),
                lightfm_gain_se=round(se, 4),
            )
            val = blobs[s]["validation"]
            out[s] = (offsets(r, val), offsets(pool[s]["without"], val))
    return out


def judge(spec: str, designs: list[str], lseeds: list[int], args: argparse.Namespace) -> dict[str, Any]:
    import numpy as np
    from world_args import world_seed

    from feed.replay import FeedPage
    from ranking.evaluation import Evaluation, page_method, ranker_method, split_metrics
    from ranking.evaluation import judge as judge_ranks
    from worlds.evaluate import discovery_beyond_page, world_log

    world, seed = world_seed(spec)
    opened = world_log(world, seed, args.viewers, args.merchants, Path(args.world_cache))
    page = FeedPage(opened.schedule.room_features, seed=seed)
    blobs = {}
    for s in lseeds:
        with stored(Path(args.store), spec, s).open("rb") as f:
            blobs[s] = pickle.load(f)
    t0 = time.perf_counter()
    cands = {s: candidates(blobs[s]) for s in lseeds}
    fit_s = time.perf_counter() - t0
    per_design = {d: designed(d, blobs, cands) for d in designs}
    out: dict[str, Any] = {"candidates_s": round(fit_s, 1)}
    for s in lseeds:
        targets = blobs[s]["targets"]
        viewers = np.array([t.viewer for t in targets], dtype=np.int64)
        # Designs often make the same ranker (and share their ablation): each distinct one is judged once.
        key_of: dict[str, str] = {}
        unique: dict[str, Any] = {}
        for d in designs:
            for tag, r in ((d, per_design[d][s][0]), (f"{d}_no_lightfm", per_design[d][s][1])):
                key = fingerprint(r)
                key_of[tag] = key
                unique.setdefault(key, r)
        judged = {
            k: judge_ranks(targets, page_method(ranker_method(r), page), seed) for k, r in unique.items()
        }
        own = discovery_beyond_page(targets, {k: ranker_method(r) for k, r in unique.items()}, page, seed)
        ev = Evaluation(
            results={k: split_metrics(targets, j) for k, j in judged.items()},
            judged=judged,
            best_baseline="",
            best_pop="",
            repeat_share=float(np.mean([t.repeat for t in targets])),
            targets=len(targets),
            viewers=viewers,
        )
        for d in designs:
            r, k, ka = per_design[d][s][0], key_of[d], key_of[f"{d}_no_lightfm"]
            res = ev.results[k]
            abl = ev.difference(k, ka, "new", seed=seed)
            out.setdefault(d, {})[f"lf{s}"] = {
                "choices": choices(r),
                "validation": r.info.get("validation"),
                "hr5": round(res["overall"]["hr5"], 4),
                "ndcg10": round(res["overall"]["ndcg10"], 4),
                "hr5_new": round(res["new"]["hr5"], 4),
                "hr5_new_discovery": round(float(own[k]["hr5"]), 4),
                "ablation_new": round(abl["diff"], 4),
                "ablation_new_ci_low": round(abl["ci_low"], 4),
            }
        print(f"{spec} lightfm seed {s}: {len(unique)} distinct rankers judged", flush=True)
    for d in designs:
        rows = [out[d][f"lf{s}"] for s in lseeds]
        summary: dict[str, Any] = {}
        for key in ("hr5", "hr5_new", "hr5_new_discovery", "ablation_new"):
            xs = np.array([r[key] for r in rows])
            summary[key] = {
                "mean": round(float(xs.mean()), 4),
                "spread": round(float(xs.max() - xs.min()), 4),
            }
        for key in ("lightfm", "two_part", "k", "k_bands", "offsets"):
            summary[f"{key}_distinct"] = len({json.dumps(r["choices"][key]) for r in rows})
        summary["ablation_ci_above_0"] = sum(r["ablation_new_ci_low"] > 0 for r in rows)
        out[d]["summary"] = summary
    return out


def fingerprint(r: Any) -> str:
    """What makes two rankers rank alike: weights, discovery weights, the favourites-first policy, offsets."""
    import hashlib

    import numpy as np

    h = hashlib.blake2b(np.asarray(r.weights, dtype=np.float64).tobytes(), digest_size=8)
    if r.discovery is not None:
        h.update(np.asarray(r.discovery, dtype=np.float64).tobytes())
    h.update(repr((r.favourites_first, r.first_by_share, r.known_offset)).encode())
    return h.hexdigest()


def judge_lines(runs: dict[str, Any], designs: list[str]) -> list[str]:
    lines = [
        "| world-seed | design | LightFM per draw | two parts | k | k per band | offsets distinct "
        "| HR@5 mean (spread) | new mean (spread) | discovery mean (spread) | ablation on new mean (spread), CI>0 |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for spec, r in runs.items():
        for d in [d for d in designs if d in r]:
            x = r[d]
            seeds = [k for k in x if k.startswith("lf")]
            sm = x["summary"]

            def ms(key: str, sm: dict[str, Any] = sm) -> str:
                return f"{sm[key]['mean']:.4f} ({sm[key]['spread']:.4f})"

            lines.append(
                f"| {spec} | {d} | {'/'.join(x[s]['choices']['lightfm'] for s in seeds)} "
                f"| {'/'.join(str(x[s]['choices']['two_part']) for s in seeds)} "
                f"| {'/'.join(str(x[s]['choices']['k']) for s in seeds)} "
                f"| {' / '.join(str(x[s]['choices']['k_bands']) for s in seeds)} | {sm['offsets_distinct']} "
                f"| {ms('hr5')} | {ms('hr5_new')} | {ms('hr5_new_discovery')} "
                f"| {ms('ablation_new')}, {sm['ablation_ci_above_0']}/{len(seeds)} |"
            )
    for d in designs:
        have = [r for r in runs.values() if d in r and "main" in r]
        if not have:
            continue
        xs, mains = [r[d]["summary"] for r in have], [r["main"]["summary"] for r in have]
        parts = [f"{d} over {len(xs)} world-seeds ({', '.join(s for s, r in runs.items() if d in r)}):"]
        for key in ("hr5", "hr5_new", "hr5_new_discovery", "ablation_new"):
            mean = sum(x[key]["mean"] - m[key]["mean"] for x, m in zip(xs, mains, strict=True)) / len(xs)
            spread = sum(x[key]["spread"] for x in xs) / len(xs)
            main_spread = sum(m[key]["spread"] for m in mains) / len(xs)
            parts.append(f"{key} mean - main {mean:+.4f}, mean spread {spread:.4f} (main {main_spread:.4f});")
        flips = sum(x["lightfm_distinct"] > 1 for x in xs)
        above = sum(x["ablation_ci_above_0"] for x in xs)
        parts.append(
            f"LightFM choice differs across draws in {flips}; ablation CI above 0 in {above} of {3 * len(xs)} fits"
        )
        lines.append(" ".join(parts))
    return lines


def main() -> None:
    from world_args import add_world_args

    ap = argparse.ArgumentParser()
    ap.add_argument("phase", choices=["fit", "judge", "merge"], help="merge: the worlds are result NAMEs")
    add_world_args(ap)
    ap.add_argument("--lightfm-seeds", type=lambda s: [int(x) for x in s.split(",")], default=[42, 43, 44])
    ap.add_argument("--store", default="reports/lightfm_choices")
    ap.add_argument("--design", action="append")
    ap.add_argument("--name", default="lightfm_choices")
    args = ap.parse_args()
    Path(args.store).mkdir(parents=True, exist_ok=True)
    if args.phase == "fit":
        for spec in args.worlds:
            fit(spec, args.lightfm_seeds, args)
        return
    from bench_lightfm_fits import record

    designs = args.design or list(DESIGNS)
    runs: dict[str, Any] = {}
    made_by: list[str] = []
    for name in args.worlds if args.phase == "merge" else []:
        # Earlier judge runs' records (bench/results/NAME.json), their designs merged per world-seed.
        earlier = json.loads((ROOT / "bench" / "results" / f"{name}.json").read_text())
        made_by.append(str(earlier.get("command", name)))
        for spec, r in earlier["metrics"]["runs"].items():
            runs.setdefault(spec, {}).update(r)
    for spec in [] if args.phase == "merge" else args.worlds:
        t0 = time.perf_counter()
        runs[spec] = judge(spec, designs, args.lightfm_seeds, args)
        runs[spec]["wall_s"] = round(time.perf_counter() - t0, 1)
        print("\n".join(judge_lines({spec: runs[spec]}, designs)[2:]), flush=True)
        print(json.dumps({spec: runs[spec]}), flush=True)
    record(
        args,
        judge_lines(runs, designs),
        {"lightfm_seeds": args.lightfm_seeds, "designs": designs, "runs_made_by": made_by, "runs": runs},
        f"{args.name} — the ranker's discrete choices across LightFM's draws, per choice rule",
    )


if __name__ == "__main__":
    main()
