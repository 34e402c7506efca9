"""Benchmark: what LightFM knows about new merchants, per training design, on VALIDATION new targets.

    .venv/bin/python bench/bench_lightfm_signal.py WORLD:SEED [WORLD:SEED ...] [--viewers 10000
        --merchants 500 --targets 6000 --designs default,ep30,... --world-cache reports/worlds/cache]

Per world and seed (simulator.presets, 7 days): LightFM fit on days 0-4 (as `fit_model`'s fit "a"), and
the enters of day 5 whose merchant the viewer never entered before (the ranker's validation day; the
test day is never read). Each target is ranked among the live rooms of merchants the viewer never
entered (the issue's discovery candidates). Per training design: LightFM alone (HR@5, AUC), and what it
adds to live popularity, long-term popularity and co-visitation (a conditional logit over the
standardised columns fit on the even targets, HR@5 on the odd ones). The ceiling beside it: the
simulator's own latent match (viewer taste x merchant position, ground truth no model can read) with
the two popularities. Writes bench/results/lightfm_signal.json and the docs/benchmarks.md block.

Designs: default (ModelParams/WeightParams), ep30 (30 epochs), lr01 (learning rate 0.1, 30 epochs),
k16 / k64 (components, 30 epochs for k64), bpr (BPR, 30 epochs), unweighted (every watched pair 1),
ipw (weights x merchant popularity^-0.5: exposure-debiased), negatives (logistic loss with the pairs
shown and never watched as -1, 30 epochs), watched_features (the merchants a viewer watched as user
features beside the identity).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import scipy.sparse as sp
from scipy.optimize import minimize

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "bench"))

DESIGNS = (
    "default",
    "ep30",
    "lr01",
    "k16",
    "k64",
    "bpr",
    "unweighted",
    "ipw",
    "negatives",
    "watched_features",
)


def _z(x: np.ndarray) -> np.ndarray:
    sd = float(x.std())
    return (x - x.mean()) / sd if sd > 0 else np.zeros_like(x)


def _hr5(scores: Sequence[np.ndarray], targets: Sequence[int]) -> float:
    """HR@5 with ties counted half against the target."""
    hits = [
        ((s > s[j]).sum() + 0.5 * ((s == s[j]).sum() - 1)) < 5 for s, j in zip(scores, targets, strict=True)
    ]
    return float(np.mean(hits)) if hits else float("nan")


def _auc(scores: Sequence[np.ndarray], targets: Sequence[int]) -> float:
    out = [
        1.0 - ((s > s[j]).sum() + 0.5 * ((s == s[j]).sum() - 1)) / max(s.size - 1, 1)
        for s, j in zip(scores, targets, strict=True)
    ]
    return float(np.mean(out)) if out else float("nan")


def _hits(scores: Sequence[np.ndarray], targets: Sequence[int]) -> np.ndarray:
    """Per list, 1 when the target is in the top five (ties counted half against it), as `_hr5`."""
    return np.array(
        [
            ((s > s[j]).sum() + 0.5 * ((s == s[j]).sum() - 1)) < 5
            for s, j in zip(scores, targets, strict=True)
        ],
        dtype=float,
    )


def _paired(a: np.ndarray, b: np.ndarray) -> tuple[float, float]:
    """Mean of a - b and its standard error (lists as the unit)."""
    d = a - b
    return float(d.mean()), float(d.std(ddof=1) / np.sqrt(d.size))


def _clogit_hits(xs: Sequence[np.ndarray], targets: Sequence[int]) -> np.ndarray:
    """`_clogit`'s score on the odd lists as hits per list (for paired differences between columns)."""
    _, b = _clogit(xs, targets)
    odd = range(1, len(xs), 2)
    return _hits([xs[i] @ np.array(b) for i in odd], [targets[i] for i in odd])


def _clogit(xs: Sequence[np.ndarray], targets: Sequence[int]) -> tuple[float, list[float]]:
    """Conditional logit fit on the even lists, HR@5 of its score on the odd ones."""
    fit = range(0, len(xs), 2)
    k = xs[0].shape[1]

    def loss(b: np.ndarray) -> tuple[float, np.ndarray]:
        ll, grad = 0.0, np.zeros(k)
        for i in fit:
            s = xs[i] @ b
            p = np.exp(s - s.max())
            p /= p.sum()
            ll += float(np.log(p[targets[i]] + 1e-300))
            grad += xs[i][targets[i]] - p @ xs[i]
        return -ll + 5e-3 * float(b @ b), -grad + 1e-2 * b

    b = minimize(loss, np.zeros(k), jac=True, method="L-BFGS-B").x
    odd = range(1, len(xs), 2)
    return _hr5([xs[i] @ b for i in odd], [targets[i] for i in odd]), [round(float(v), 3) for v in b]


def _training_set(design: str, log: Any, features: Any, until: int) -> tuple[Any, Any]:
    from ranking.dataset import ENTER, IMPRESSION, WeightParams, _feature_matrix, build_training_set
    from ranking.model import ModelParams

    if design not in DESIGNS:
        raise ValueError(f"unknown design {design!r}; one of {', '.join(DESIGNS)}")
    data = build_training_set(log, features, until, WeightParams())
    params = ModelParams(num_threads=1)
    epochs30 = dataclasses.replace(params, epochs=30)
    params = {
        "ep30": epochs30,
        "lr01": dataclasses.replace(epochs30, learning_rate=0.1),
        "k16": dataclasses.replace(params, no_components=16),
        "k64": dataclasses.replace(epochs30, no_components=64),
        "bpr": dataclasses.replace(epochs30, loss="bpr"),
        "negatives": dataclasses.replace(epochs30, loss="logistic"),
    }.get(design, params)
    if design == "unweighted":
        data = dataclasses.replace(data, weights=data.interactions.copy())
    elif design == "ipw":
        pop = np.asarray(data.interactions.tocsr().sum(axis=0)).ravel()
        w = data.weights.tocoo()
        scaled = w.data * np.power(np.maximum(pop[w.col], 1.0), -0.5)
        scaled *= w.data.sum() / scaled.sum()
        data = dataclasses.replace(data, weights=sp.coo_matrix((scaled, (w.row, w.col)), shape=w.shape))
    elif design == "negatives":
        before = log.ts < until
        n_m = len(log.merchant_ids)
        shown = (
            log.viewer[before & (log.type == IMPRESSION)] * n_m
            + log.merchant[before & (log.type == IMPRESSION)]
        )
        entered = log.viewer[before & (log.type == ENTER)] * n_m + log.merchant[before & (log.type == ENTER)]
        pairs = np.setdiff1d(np.unique(shown), entered)
        user = {u: i for i, u in enumerate(data.user_ids)}
        item = {m: i for i, m in enumerate(data.merchant_ids)}
        rows, cols = [], []
        for p in pairs.tolist():
            u, i = user.get(log.viewer_ids[p // n_m]), item.get(log.merchant_ids[p % n_m])
            if u is not None and i is not None:
                rows.append(u)
                cols.append(i)
        pos = data.interactions.tocoo()
        r, c = np.concatenate([pos.row, rows]), np.concatenate([pos.col, cols])
        value = np.concatenate([np.ones(pos.nnz), -np.ones(len(rows))]).astype(np.float32)
        weight = np.concatenate([data.weights.tocoo().data, np.ones(len(rows))]).astype(np.float32)
        data = dataclasses.replace(
            data,
            interactions=sp.coo_matrix((value, (r, c)), shape=pos.shape),
            weights=sp.coo_matrix((weight, (r, c)), shape=pos.shape),
        )
    elif design == "watched_features":
        w = data.weights.tocsr()
        user_rows = [
            [f"id:{uid}"]
            + [f"watched:{data.merchant_ids[m]}" for m in w.indices[w.indptr[u] : w.indptr[u + 1]]]
            for u, uid in enumerate(data.user_ids)
        ]
        vocab: dict[str, int] = {}
        for names in user_rows:
            for n in names:
                vocab.setdefault(n, len(vocab))
        data = dataclasses.replace(
            data, user_features=_feature_matrix(user_rows, vocab), user_feature_names=list(vocab)
        )
    return data, params


def run_world(world: str, seed: int, args: argparse.Namespace) -> dict[str, Any]:
    from ranking.history import S
    from ranking.model import fit_lightfm
    from ranking.replay import replay
    from worlds.evaluate import DAY_MS, world_log

    opened = world_log(world, seed, args.viewers, args.merchants, Path(args.world_cache))
    market, log, features, schedule = opened.market, opened.log, opened.features, opened.schedule
    until = opened.split - DAY_MS  # LightFM "a"'s end; day 5 validates
    (targets,) = replay(log, schedule, features, None, [(until, until + DAY_MS)], [args.targets], seed=seed)
    new = [t for t in targets if not t.repeat]
    keeps = [~t.entered_before for t in new]
    at = [int(np.flatnonzero(np.flatnonzero(k) == t.target)[0]) for t, k in zip(new, keeps, strict=True)]
    latent = np.array([int(m[1:]) if m.startswith("m") else -1 for m in log.merchant_ids])
    base: list[list[np.ndarray]] = []
    for t, keep in zip(new, keeps, strict=True):
        h = t.request.history
        dwell = h.stats[:, S["dwell_s"]] if len(h) else np.zeros(0)
        cov = t.table.covisit
        near = np.zeros(cov.shape[1])
        for m, d in zip(h.merchants[dwell > 0].tolist(), dwell[dwell > 0].tolist(), strict=True):
            row = cov.getrow(m)
            near[row.indices] += np.log1p(d / 60.0) * row.data
        items = t.request.items[keep]
        truth = market.world.m_latent[latent[items]] @ market.world.v_taste[int(log.viewer_ids[t.viewer][1:])]
        base.append(
            [
                _z(np.log1p(t.live_pop[keep].astype(float))),
                _z(np.log1p(t.pop[keep].astype(float))),
                _z(np.log1p(near[items])),
                _z(truth),
            ]
        )
    out: dict[str, Any] = {
        "new_targets": len(new),
        "live_pop": round(_hr5([b[0] for b in base], at), 4),
        "pop": round(_hr5([b[1] for b in base], at), 4),
        "live_pop_odd": round(_hr5([b[0] for b in base[1::2]], at[1::2]), 4),
        "pops_covisit": _clogit([np.stack(b[:3], 1) for b in base], at)[0],
        "ceiling_latent_and_pops": _clogit([np.stack([b[0], b[1], b[3]], 1) for b in base], at)[0],
        "designs": {},
    }
    for design in args.designs:
        t0 = time.perf_counter()
        # --stale-days: LightFM fit that many days before the targets' day (fit "a" before a longer ranker window).
        data, params = _training_set(design, log, features, until - int(args.stale_days * DAY_MS))
        model = fit_lightfm(data, params, progress=False)
        _, user_emb = model.get_user_representations(data.user_features)
        item_bias, item_emb = model.get_item_representations(data.item_features)
        user_of = {u: i for i, u in enumerate(data.user_ids)}
        item_of = {m: i for i, m in enumerate(data.merchant_ids)}
        to_item = np.array([item_of.get(m, -1) for m in log.merchant_ids])
        watched = np.diff(data.interactions.tocsr().indptr)  # merchants each user watched in the window
        scores, tastes, biases, confidence = [], [], [], []
        for t, keep in zip(new, keeps, strict=True):
            items = to_item[t.request.items[keep]]
            u = user_of.get(log.viewer_ids[t.viewer])
            taste = item_emb[items] @ user_emb[u] if u is not None else np.zeros(items.size)
            s = taste + item_bias[items] if u is not None else item_bias[items].copy()
            scores.append(np.where(items >= 0, s, -1e9))
            tastes.append(np.where(items >= 0, taste, taste.min(initial=0.0)))
            biases.append(np.where(items >= 0, item_bias[items], -1e9))
            confidence.append(float(np.log1p(watched[u])) if u is not None else 0.0)
        combined, weights = _clogit(
            [np.stack([*b[:3], _z(s)], 1) for b, s in zip(base, scores, strict=True)], at
        )
        # The same fit, other columns for the ranker: what of LightFM's score is taste, not popularity.
        columns = {
            "taste_only": [np.stack([*b[:3], _z(x)], 1) for b, x in zip(base, tastes, strict=True)],
            "taste_and_bias": [
                np.stack([*b[:3], _z(x), _z(y)], 1) for b, x, y in zip(base, tastes, biases, strict=True)
            ],
            "score_x_confidence": [
                np.stack([*b[:3], _z(s), c * _z(s)], 1)
                for b, s, c in zip(base, scores, confidence, strict=True)
            ],
            "taste_x_confidence": [
                np.stack([*b[:3], _z(x), c * _z(x)], 1)
                for b, x, c in zip(base, tastes, confidence, strict=True)
            ],
            "percentile": [
                np.stack([*b[:3], _z(np.argsort(np.argsort(s)).astype(float))], 1)
                for b, s in zip(base, scores, strict=True)
            ],
        }
        variants = {name: _clogit(xs, at) for name, xs in columns.items()}
        reference = _clogit_hits(
            [np.stack([*b[:3], _z(s)], 1) for b, s in zip(base, scores, strict=True)], at
        )
        no_lightfm = _clogit_hits([np.stack(b[:3], 1) for b in base], at)
        paired = {name: _paired(_clogit_hits(xs, at), reference) for name, xs in columns.items()}
        paired["lightfm_vs_none"] = _paired(reference, no_lightfm)
        out["designs"][design] = {
            "hr5": round(_hr5(scores, at), 4),
            "auc": round(_auc(scores, at), 4),
            "taste_only_hr5": round(_hr5(tastes, at), 4),
            "with_pops_covisit": round(combined, 4),
            "weights": weights,
            "columns": {
                name: {
                    "with_pops_covisit": round(v[0], 4),
                    "weights": v[1],
                    "minus_score_column": [round(x, 4) for x in paired[name]],
                }
                for name, v in variants.items()
            },
            "score_column_minus_none": [round(x, 4) for x in paired["lightfm_vs_none"]],
            "seconds": round(time.perf_counter() - t0, 1),
        }
        print(f"{world} {seed} {design}: {out['designs'][design]}", flush=True)
    out["pops_covisit"] = round(out["pops_covisit"], 4)
    out["ceiling_latent_and_pops"] = round(out["ceiling_latent_and_pops"], 4)
    return out


def main() -> None:
    from bench_scorer import command_line, write_results
    from world_args import add_world_args, world_seed

    ap = argparse.ArgumentParser()
    add_world_args(ap, targets=6_000)
    ap.add_argument("--designs", type=lambda s: s.split(","), default=list(DESIGNS))
    ap.add_argument("--stale-days", type=float, default=0.0, help="LightFM's fit ends this many days earlier")
    ap.add_argument("--name", default="lightfm_signal", help="the record's name (bench/results/NAME.json)")
    args = ap.parse_args()
    unknown = set(args.designs) - set(DESIGNS)
    if unknown:
        ap.error(f"unknown designs {sorted(unknown)}; one of {', '.join(DESIGNS)}")
    runs: dict[str, Any] = {}
    lines: list[str] = []
    for spec in args.worlds:
        world, seed = world_seed(spec)
        r = run_world(world, seed, args)
        runs[f"{world}-{seed}"] = r
        lines.append(
            f"{world} {seed} ({r['new_targets']} validation new targets, odd half judged): live POP "
            f"{r['live_pop_odd']:.3f}, POPs + co-visitation {r['pops_covisit']:.3f}, ceiling (latent match + POPs) "
            f"{r['ceiling_latent_and_pops']:.3f}; LightFM alone / + POPs + co-visitation: "
            + ", ".join(f"{d} {v['hr5']:.3f} / {v['with_pops_covisit']:.3f}" for d, v in r["designs"].items())
            + "; the default's column vs none "
            + "{:+.4f} (SE {:.4f})".format(*r["designs"][args.designs[0]]["score_column_minus_none"])
            + ", other columns of that fit vs its score: "
            + ", ".join(
                f"{c} {v['minus_score_column'][0]:+.4f} ({v['minus_score_column'][1]:.4f})"
                for c, v in r["designs"][args.designs[0]]["columns"].items()
            )
        )
        print(lines[-1], flush=True)
    write_results(
        args.name,
        command_line(),
        {"viewers": args.viewers, "merchants": args.merchants, "stale_days": args.stale_days, "runs": runs},
        lines,
        f"{args.name} — LightFM among never-watched live rooms on validation, per training design"
        + (f" (LightFM fit {args.stale_days:g} days before the targets' day)" if args.stale_days else ""),
    )
    print(json.dumps({k: len(v["designs"]) for k, v in runs.items()}))


if __name__ == "__main__":
    main()
