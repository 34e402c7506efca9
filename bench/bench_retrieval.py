"""Benchmark: the ranker with retrieval against the ranker over every live room, on the same held-out enters.

`.venv/bin/python bench/bench_retrieval.py [--viewers 20000] [--merchants 1000] [--days 7] [--seed 7] [--scales 1,0.25,0.1]`

Simulates a world (simulator.Marketplace), fits the model on all days but the last as `roomfeed train`
does (`ranking.offline.fit_model`), and judges the last day with `ranking.offline.evaluate_model`: the
ranker over every room live at each target (minus the session's rooms) against the same ranker on the
rooms `ranking.retrieval.retrieve` gives (the code the feed's Retrieve stage runs), with the budget as
shipped and scaled down (`--scales`): a simulated world has a few hundred rooms live at once, which the
shipped budget nearly covers, so the scaled budgets show how the sources hold up when they retrieve a
small share of the live rooms, as at 10,000 live rooms. Differences are paired bootstraps.
Writes bench/results/retrieval.json and a block in docs/benchmarks.md.

`--stores 100000`: instead, the Retrieve stage's per-viewer stores (best-merchant lists, history picks): CPU
per page with them hitting (viewers asking again), on every viewer's first page, and off, alternating in one
process. Writes bench/results/retrieval_stores.json and its block.

`--cpu 10000,50000,100000`: instead, the CPU of the feed's stages per page as live rooms grow, in-process
(no HTTP, no Redis: the process's CPU time, which the host's load disturbs far less than latency):
filters → viewer → retrieve → score → rank → diversity → exploration on N live rooms of max(5,000, N/2)
merchants (the synthetic model of bench_feed, k=32), with retrieval and without it (every live room
ranked, as before retrieval) alternating in the same process; medians of `--repeats` runs of
`--pages` pages. Writes bench/results/retrieval_cpu.json and its block.
"""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import fields, replace
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench_scorer import command_line, write_results  # noqa: E402

from feed.config import RankingConfig  # noqa: E402
from ranking import retrieval as rt  # noqa: E402
from ranking.dataset import from_simulator  # noqa: E402
from ranking.offline import FitConfig, evaluate_model, fit_model  # noqa: E402
from ranking.replay import Schedule  # noqa: E402
from simulator import Marketplace  # noqa: E402

DAY_MS = 86_400_000
RANKER_SEED: int | None = None  # --ranker-seed: one synthetic ranker for every size (see _synthetic_set)
STAGE_NAMES = ("filters", "viewer", "retrieve", "score", "rank", "diversity", "exploration")


def report(
    args: argparse.Namespace, name: str, metrics: dict[str, Any], lines: list[str], title: str
) -> None:
    """Print the figures; unless `--no-write`, bench/results/<name>.json and its block in docs/benchmarks.md."""
    print("\n".join(lines), flush=True)
    if not args.no_write:
        write_results(name, command_line(), metrics, lines, title)


def scaled(budget: rt.Budget, factor: float) -> rt.Budget:
    return replace(
        budget, **{f.name: max(1, int(round(getattr(budget, f.name) * factor))) for f in fields(budget)}
    )


def _stage_rooms(n: int, merchants: int, now: float) -> list[Any]:
    from bench_feed import CATEGORIES as cats

    from rooms.live_index import LiveRoom

    return [
        LiveRoom(
            f"room_{i}",
            f"mer_{i % merchants:016x}",
            f"t{i}",
            cats[i % len(cats)],
            (),
            "mid",
            "one_to_many",
            f"host{i % 300}",
            now - (i % 7200),
            f"https://s/{i}",
            "live",
            None,
        )
        for i in range(n)
    ]


def _synthetic_set(rooms: int, viewers: int) -> tuple[int, Any, Any, float]:
    """(merchants, a model watcher, the candidate set with heat, now): `rooms` live rooms of max(5,000,
    rooms / 2) merchants served by bench_feed's synthetic model (k=32) of `viewers` viewers."""
    import time
    from types import SimpleNamespace

    from bench_feed import _model

    from feed.context import Candidates
    from ranking.scorer import Scorer

    merchants = max(5_000, rooms // 2)
    model = _model(viewers, merchants)
    if RANKER_SEED is not None:
        # bench_feed's synthetic ranker draws its weights after every factor, so each size has its own
        # random ranker: one draw for every size, to compare sizes on the same ranker.
        from ranking.ranker import FEATURES

        draw = np.random.default_rng(RANKER_SEED)
        model.ranker_weights = draw.normal(size=len(FEATURES))
        model.ranker_discovery = draw.normal(size=len(FEATURES))
    watcher = SimpleNamespace(scorer=Scorer(model))
    now = time.time()
    base = Candidates.of(_stage_rooms(rooms, merchants, now))
    rng = np.random.default_rng(3)
    base.enters = (rng.random(rooms) * 20).astype(np.float32)
    base.impressions = (rng.random(rooms) * 60).astype(np.float32)
    return merchants, watcher, base, now


def _request(
    v: int,
    base: Any,
    merchants: int,
    viewers: int,
    now: float,
    rng: np.random.Generator,
    dwell: Any,
    cfg: Any,
) -> Any:
    """Request number `v` over the synthetic set: viewer, session, 20 rooms served, 12 recent visits.
    `cfg`: one config object for every request, as the feed's config store hands out (what a stage
    keeps per set is keyed by the config object: a new one per request would recompute it)."""
    from feed.context import FeedContext, RecentVisit

    rooms = len(base)
    ctx = FeedContext(f"viewer-{(v * 7919) % viewers}", f"ses_{v}", 10, cfg, now=now, rng=rng)
    ctx.candidates = base.fresh_copy()
    ctx.candidates.enters, ctx.candidates.impressions = base.enters, base.impressions
    ctx.served = {f"room_{(v * 13 + j) % rooms}" for j in range(20)}
    ctx.recent = [
        RecentVisit(
            f"room_{(v * 7 + k) % rooms}",
            f"mer_{((v * 7 + k) % rooms) % merchants:016x}",
            dwell(k),
            int(now * 1000) - k * 60_000,
            False,
        )
        for k in range(12)
    ]
    return ctx


def stage_cpu(rooms: int, viewers: int, pages: int, repeats: int, only: str | None = None) -> dict[str, Any]:
    """Process CPU ms per page of the feed's stages over `rooms` live rooms, with and without retrieval."""
    import asyncio
    import statistics
    import time

    from threadpoolctl import threadpool_limits

    from feed.context import Stage
    from feed.retrieval import Retrieve, ViewerStep
    from feed.stages import Diversity, Exploration, Filters, Rank, Score

    merchants, watcher, base, now = _synthetic_set(rooms, viewers)
    cfg = RankingConfig()
    rng = np.random.default_rng(3)
    rank = Rank(watcher)
    arms: dict[str, list[Stage]] = {
        # min_rooms=0: retrieval at every size (the feed turns it on above RETRIEVAL_FROM_ROOMS, the crossover)
        "retrieval": [
            Filters(),
            ViewerStep(watcher),
            Retrieve(watcher, rank, min_rooms=0),
            Score(watcher),
            rank,
        ],
        "all_rooms": [Filters(), ViewerStep(watcher), Score(watcher), rank],
    }
    if only is not None:  # one arm alone (a profile of it)
        arms = {only: arms[only]}
    tail: list[Stage] = [Diversity(), Exploration()]
    sizes: dict[str, list[int]] = {name: [] for name in arms}
    # Process CPU per stage (ms summed over the measured pages), for "where the page's time goes".
    per_stage: dict[str, dict[str, float]] = {name: {} for name in arms}
    measuring = [False]

    async def page(name: str, v: int) -> None:
        ctx = _request(
            v, base, merchants, viewers, now, rng, lambda k: int(rng.integers(1_000, 200_000)), cfg
        )
        spent = per_stage[name]
        for stage in [*arms[name], *tail]:
            t = time.process_time()
            await stage.apply(ctx)
            if measuring[0]:
                spent[stage.name] = spent.get(stage.name, 0.0) + (time.process_time() - t) * 1000
        sizes[name].append(len(ctx.candidates))

    async def run() -> dict[str, list[float]]:
        for name in arms:  # warm: what is kept per candidate set is built once
            for v in range(20):
                await page(name, v)
        out: dict[str, list[float]] = {name: [] for name in arms}
        measuring[0] = True
        for r in range(repeats):  # alternating, so the host's load hits both alike
            for name in arms:
                t = time.process_time()
                for v in range(pages):
                    await page(name, 1_000 * (r + 1) + v)
                out[name].append((time.process_time() - t) / pages * 1000)
        return out

    with threadpool_limits(1, user_api="blas"):  # as the API process runs (feed.http's start)
        got = asyncio.run(run())
    stages = {
        name: {k: round(v / (pages * repeats), 3) for k, v in spent.items()}
        for name, spent in per_stage.items()
    }
    med = {name: statistics.median(ms) for name, ms in got.items()}
    if only is not None:
        return {"rooms": rooms, "cpu_ms_per_page": round(med[only], 3), "stages_ms": stages[only]}
    return {
        "rooms": rooms,
        "merchants": merchants,
        "cpu_ms_per_page_retrieval": round(med["retrieval"], 3),
        "cpu_ms_per_page_all_rooms": round(med["all_rooms"], 3),
        "ratio": round(med["retrieval"] / med["all_rooms"], 3),
        "rooms_ranked_retrieval": int(np.median(sizes["retrieval"])),
        "runs_ms": {name: [round(m, 3) for m in ms] for name, ms in got.items()},
        "stages_ms": stages,
    }


def _designs(
    items: np.ndarray, bias: np.ndarray, popularity: np.ndarray, viewers: np.ndarray, want: int
) -> tuple[dict[str, Any], list[set[int]]]:
    """Each discovery design as viewer vector -> merchant rows, and the exact answer per viewer."""
    merchants = items.shape[0]
    positions = np.arange(merchants)

    def items_of(p: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        return items[p], bias[p]

    exact_set = rt.LiveSet.of(positions, np.zeros(merchants, np.int64), items_of)
    truth = [set(rt._best(rt.merchant_scores_of(exact_set, v), positions, want).tolist()) for v in viewers]
    designs: dict[str, Any] = {
        "exact": lambda v: rt._best(rt.merchant_scores_of(exact_set, v), positions, want)
    }
    for probe in (1_024, 2_048):
        index = rt.ItemClusters.of(items, probe=probe, exact_below=0)
        live = rt.LiveSet.of(positions, np.zeros(merchants, np.int64), items_of, clusters=index)
        assert live.clusters is not None
        designs[f"clusters_probe_{probe}"] = lambda v, c=live.clusters: c.best(v, 1.0, want)
    pool = np.sort(np.argsort(-popularity)[:4_096])  # the 4,096 most popular live merchants
    pool_m, pool_b = items[pool], bias[pool]
    designs["popular_pool_4096"] = lambda v: pool[rt._best(pool_m @ v + pool_b, np.arange(pool.size), want)]
    return designs, truth


def discovery_designs(merchants: int, queries: int, want: int, seed: int = 1) -> list[dict[str, Any]]:
    """Discovery's designs at `merchants` live merchants (k=32): CPU per query (one thread) and recall of
    the exact top `want` merchants by LightFM score, on two kinds of item and viewer vectors:
    `random` (independent normal vectors: no structure for an index to use, the worst case and what the
    synthetic model of bench_feed serves) and `taste` (64 taste centres plus noise, as trained factors
    group merchants of a kind)."""
    import time

    from threadpoolctl import threadpool_limits

    rng = np.random.default_rng(seed)
    k = 32
    out: list[dict[str, Any]] = []
    for kind in ("random", "taste"):
        if kind == "random":
            items = rng.normal(size=(merchants, k)).astype(np.float32)
            viewers = rng.normal(size=(queries, k)).astype(np.float32)
        else:
            centres = rng.normal(size=(64, k))
            items = (centres[rng.integers(0, 64, merchants)] + 0.5 * rng.normal(size=(merchants, k))).astype(
                np.float32
            )
            viewers = (centres[rng.integers(0, 64, queries)] + 0.5 * rng.normal(size=(queries, k))).astype(
                np.float32
            )
        bias = rng.normal(size=merchants).astype(np.float32)
        designs, truth = _designs(items, bias, rng.random(merchants), viewers, want)
        with threadpool_limits(1, user_api="blas"):
            for name, best in designs.items():
                for v in viewers[:20]:  # warm
                    best(v)
                started = time.process_time()
                got = [best(v) for v in viewers]
                cpu = (time.process_time() - started) / queries * 1000
                recall = float(np.mean([len(truth[i] & set(g.tolist())) / want for i, g in enumerate(got)]))
                out.append(
                    {
                        "merchants": merchants,
                        "vectors": kind,
                        "design": name,
                        "cpu_ms_per_query": round(cpu, 4),
                        "recall": round(recall, 3),
                    }
                )
                print(out[-1], flush=True)
    return out


def page_agreement(rooms: int, viewers: int, pages: int) -> dict[str, Any]:
    """How much of the page retrieval changes at `rooms` live rooms (bench_feed's synthetic model: random
    LightFM vectors, the worst case for the item clusters): the top 10 after diversity of (a) the ranker
    over every room, (b) retrieval with exact discovery, (c) retrieval with discovery through the item
    clusters, for the same viewers and sessions; overlap@10 of (b) and (c) with (a), and of (c) with (b)."""
    import asyncio

    from threadpoolctl import threadpool_limits

    from feed.context import Stage
    from feed.retrieval import Retrieve, ViewerStep
    from feed.stages import Diversity, Filters, Rank, Score

    merchants, watcher, base, now = _synthetic_set(rooms, viewers)
    cfg = RankingConfig()
    rank = Rank(watcher)
    arms: dict[str, list[Stage]] = {
        "all_rooms": [Filters(), ViewerStep(watcher), Score(watcher), rank],
        "exact_discovery": [
            Filters(),
            ViewerStep(watcher),
            Retrieve(watcher, rank, min_rooms=0, exact_below=10**9),
            Score(watcher),
            rank,
        ],
        "clustered_discovery": [
            Filters(),
            ViewerStep(watcher),
            Retrieve(watcher, rank, min_rooms=0, exact_below=0),
            Score(watcher),
            rank,
        ],
    }

    async def page(name: str, v: int) -> list[str]:
        ctx = _request(
            v, base, merchants, viewers, now, np.random.default_rng(v), lambda k: 60_000 + 1_000 * k, cfg
        )
        for stage in [*arms[name], Diversity()]:
            await stage.apply(ctx)
        c = ctx.candidates
        return [str(c.room_ids[i]) for i in ctx.order[:10]]

    async def run() -> dict[str, list[list[str]]]:
        return {name: [await page(name, v) for v in range(pages)] for name in arms}

    with threadpool_limits(1, user_api="blas"):
        got = asyncio.run(run())

    def overlap(a: str, b: str) -> float:
        return round(
            float(np.mean([len(set(x) & set(y)) / 10 for x, y in zip(got[a], got[b], strict=True)])), 3
        )

    return {
        "rooms": rooms,
        "merchants": merchants,
        "pages": pages,
        "overlap10_exact_discovery_vs_all_rooms": overlap("exact_discovery", "all_rooms"),
        "overlap10_clustered_vs_all_rooms": overlap("clustered_discovery", "all_rooms"),
        "overlap10_clustered_vs_exact_discovery": overlap("clustered_discovery", "exact_discovery"),
    }


def store_routing(
    rooms: int, viewers: int, sessions: int, pages: int, processes: int, visits: int
) -> dict[str, Any]:
    """The Retrieve stage's per-viewer stores (`TopMerchants` lists, `HistoryPicks`) when a session's pages
    reach `processes` API processes at random (no session affinity; 1: every page the same process): one
    Retrieve stage per process, `sessions` sessions (each its own viewer) of `pages` pages, `visits` of each
    page's rooms entered before the next page. Per page: discovery through the probe (the viewer's first
    page in that process), its best-merchant list made (its second) or looked up (a hit), and its history
    picks taken again or kept; and the median stage CPU per page (thread time)."""
    import asyncio
    import statistics
    import time

    from threadpoolctl import threadpool_limits

    from feed.context import FeedContext, RecentVisit
    from feed.retrieval import Retrieve, ViewerStep
    from feed.stages import Diversity, Filters, Rank, Score

    merchants, watcher, base, now0 = _synthetic_set(rooms, viewers)
    cfg = RankingConfig()
    rank = Rank(watcher)
    stages = [Retrieve(watcher, rank) for _ in range(processes)]
    made = {"lists": 0, "picks": 0}
    real_top, real_picks = rt.TopMerchants.of, rt.HistoryPicks.of

    def top_of(*a: Any, **k: Any) -> Any:
        made["lists"] += 1
        return real_top(*a, **k)

    def picks_of(*a: Any, **k: Any) -> Any:
        made["picks"] += 1
        return real_picks(*a, **k)

    rt.TopMerchants.of = top_of  # type: ignore[method-assign]
    rt.HistoryPicks.of = picks_of  # type: ignore[method-assign]
    counts = {"probe": 0, "list_made": 0, "list_hit": 0, "picks_made": 0, "picks_kept": 0}
    cpu: list[float] = []
    rng = np.random.default_rng(5)

    async def run() -> None:
        for v in range(sessions):
            served = {f"room_{(v * 13 + j) % rooms}" for j in range(20)}
            recent: list[Any] = []
            now = now0
            for _ in range(pages):
                retrieve = stages[int(rng.integers(processes))]
                ctx = FeedContext(
                    f"viewer-{(v * 7919) % viewers}",
                    f"ses_{v}",
                    10,
                    cfg,
                    now=now,
                    rng=np.random.default_rng(v),
                )
                ctx.candidates = base.fresh_copy()
                ctx.candidates.enters, ctx.candidates.impressions = base.enters, base.impressions
                ctx.served, ctx.recent = set(served), list(recent)
                warm = base.fresh_copy()  # this second's lists: the frame thread's work in the feed
                warm.enters, warm.impressions = base.enters, base.impressions
                stages[0].frame_view(warm, rank.model(), cfg, now, {})
                lists, picks = made["lists"], made["picks"]
                started = time.thread_time()
                for stage in (Filters(), ViewerStep(watcher), retrieve, Score(watcher), rank, Diversity()):
                    await stage.apply(ctx)
                cpu.append((time.thread_time() - started) * 1000)
                top = next(
                    (t for (who, _), (t, _) in retrieve._tops[1].items() if who == ctx.viewer_id), None
                )
                if made["lists"] > lists:
                    counts["list_made"] += 1
                elif top is None:
                    counts["probe"] += 1
                else:
                    counts["list_hit"] += 1
                counts["picks_made" if made["picks"] > picks else "picks_kept"] += 1
                shown = [str(ctx.candidates.room_ids[i]) for i in ctx.order[:10]]
                served |= set(shown)
                now += 10.0
                for j, room_id in enumerate(shown[:visits]):
                    i = base.index_of[room_id]
                    recent.append(
                        RecentVisit(
                            room_id,
                            str(base.merchant_ids[i]),
                            30_000,
                            int(now * 1000) - (visits - j) * 1_000,
                            False,
                        )
                    )

    try:
        with threadpool_limits(1, user_api="blas"):
            asyncio.run(run())
    finally:
        rt.TopMerchants.of, rt.HistoryPicks.of = real_top, real_picks  # type: ignore[method-assign]
    total = sessions * pages
    return {
        "rooms": rooms,
        "processes": processes,
        "sessions": sessions,
        "pages": pages,
        "visits_between_pages": visits,
        "share": {k: round(n / total, 3) for k, n in counts.items()},
        "stage_cpu_ms_per_page": round(statistics.median(cpu), 3),
    }


def routing_main(args: argparse.Namespace) -> None:
    import os

    points = [
        store_routing(int(n), args.cpu_viewers, args.pages, args.session_pages, processes, visits)
        for n in args.routing.split(",")
        for visits in (0, args.visits)
        for processes in (1, 2, 4)
    ]
    load = os.getloadavg()[0]
    lines = [
        f"the Retrieve stage's per-viewer stores with a session's pages spread at random over N API processes "
        f"(one Retrieve stage each; 1: session affinity), {args.pages} sessions (each its own viewer) x "
        f"{args.session_pages} pages, bench_feed's synthetic model; share of pages; stage CPU: median per page "
        f"(thread time, one BLAS thread); load average at the end {load:.1f}",
        "",
        "| live rooms | visits between pages | processes | discovery by the probe (first page here) | list made "
        "(second) | list looked up (hit) | history picks taken again | kept (hit) | stage CPU ms/page |",
        "|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for p in points:
        sh = p["share"]
        lines.append(
            f"| {p['rooms']:,} | {p['visits_between_pages']} | {p['processes']} | {sh['probe']} | {sh['list_made']} "
            f"| {sh['list_hit']} | {sh['picks_made']} | {sh['picks_kept']} | {p['stage_cpu_ms_per_page']} |"
        )
    report(
        args,
        "retrieval_routing",
        {"runs": points, "load_avg_1m_at_end": round(load, 2)},
        lines,
        "retrieval_routing — the per-viewer stores' hits with and without session affinity",
    )


def sum_ceiling(rooms: int, viewers: int, sessions: int, pages: int, visits: int) -> dict[str, Any]:
    """What retrieval misses, and what a source ranking rooms by the ranker's two largest column groups
    summed (popularity + LightFM, `Rank.terms`: what a threshold algorithm over trending and the viewer's best
    merchants would find) would add: over `sessions` sessions of `pages` pages (the page served, `visits` of
    its rooms entered and 10 s between pages), the top 10 of ranking every room, and the share of those
    rooms among the rows the shipped sources retrieved, with and without the top N by that sum."""
    import asyncio

    from threadpoolctl import threadpool_limits

    from feed.context import FeedContext, RecentVisit
    from feed.retrieval import Retrieve, ViewerStep
    from feed.stages import Diversity, Filters, Rank, Score

    merchants, watcher, base, now0 = _synthetic_set(rooms, viewers)
    cfg = RankingConfig()
    rank = Rank(watcher)
    every, shipped = Retrieve(watcher, rank, min_rooms=10**9), Retrieve(watcher, rank)
    rng = np.random.default_rng(11)
    depths = (150, 300, 600)
    n = {"places": 0, "retrieved": 0, **{f"retrieved_or_sum_top{d}": 0 for d in depths}}

    async def page(r: Retrieve, v: int, served: set[str], recent: list[Any], now: float) -> Any:
        ctx = FeedContext(
            f"viewer-{(v * 7919) % viewers}", f"ses_{v}", 10, cfg, now=now, rng=np.random.default_rng(v)
        )
        ctx.candidates = base.fresh_copy()
        ctx.candidates.enters, ctx.candidates.impressions = base.enters, base.impressions
        ctx.served, ctx.recent = set(served), list(recent)
        for stage in (Filters(), ViewerStep(watcher), r, Score(watcher), rank, Diversity()):
            await stage.apply(ctx)
        return ctx

    async def run() -> None:
        for v in range(sessions):
            served = {f"room_{(v * 13 + j) % rooms}" for j in range(20)}
            recent: list[Any] = []
            now = now0
            for p in range(pages):
                full = await page(every, v, served, recent, now)
                got = await page(shipped, v, served, recent, now)
                if p > 0:
                    c = full.candidates
                    retrieved = set(np.asarray(got.candidates.room_ids).tolist())
                    kept = np.flatnonzero(c.keep)
                    terms = rank.terms(full, kept)
                    by_sum = kept[np.argsort(-(terms["popularity"] + terms["lightfm"]), kind="stable")]
                    tops = {d: set(by_sum[:d].tolist()) for d in depths}
                    for i in full.order[:10]:
                        hit = str(c.room_ids[i]) in retrieved
                        n["places"] += 1
                        n["retrieved"] += hit
                        for d in depths:
                            n[f"retrieved_or_sum_top{d}"] += hit or i in tops[d]
                shown = [str(full.candidates.room_ids[i]) for i in full.order[:10]]
                served |= set(shown)
                now += 10.0
                for j, room_id in enumerate(shown[:visits]):
                    i = base.index_of[room_id]
                    recent.append(
                        RecentVisit(
                            room_id,
                            str(base.merchant_ids[i]),
                            int(rng.integers(20_000, 140_000)),
                            int(now * 1000) - (visits - j) * 1_000,
                            j == visits - 1,
                        )
                    )

    with threadpool_limits(1, user_api="blas"):
        asyncio.run(run())
    return {
        "rooms": rooms,
        "ranker_seed": RANKER_SEED,
        "sessions": sessions,
        "pages": pages,
        "visits_between_pages": visits,
        "top10_places": n["places"],
        "recall_retrieved": round(n["retrieved"] / n["places"], 3),
        **{f"recall_with_sum_top{d}": round(n[f"retrieved_or_sum_top{d}"] / n["places"], 3) for d in depths},
    }


def agreement_main(args: argparse.Namespace) -> None:
    import os

    points = [page_agreement(int(n), args.cpu_viewers, args.pages) for n in args.agreement.split(",")]
    load = os.getloadavg()[0]
    lines = [
        f"the page retrieval serves against the ranker over every live room, {args.pages} viewers per point, "
        f"top 10 after diversity, bench_feed's synthetic model (random LightFM vectors: the item clusters' "
        f"worst case); load average at the end {load:.1f}",
        "",
        "| live rooms | merchants | overlap@10 exact discovery vs every room | clustered vs every room "
        "| clustered vs exact discovery |",
        "|---:|---:|---:|---:|---:|",
    ]
    for p in points:
        lines.append(
            f"| {p['rooms']:,} | {p['merchants']:,} | {p['overlap10_exact_discovery_vs_all_rooms']} "
            f"| {p['overlap10_clustered_vs_all_rooms']} | {p['overlap10_clustered_vs_exact_discovery']} |"
        )
    report(
        args,
        "retrieval_agreement",
        {"runs": points, "load_avg_1m_at_end": round(load, 2)},
        lines,
        "retrieval_agreement — how much of the page retrieval changes at scale",
    )


def discovery_main(args: argparse.Namespace) -> None:
    import os

    points = [p for n in args.discovery.split(",") for p in discovery_designs(int(n), args.queries, 120)]
    load = os.getloadavg()[0]
    lines = [
        f"discovery designs, top 120 merchants by LightFM score (k=32), {args.queries} viewers, one BLAS thread, "
        f"process CPU per query; load average at the end {load:.1f}",
        "",
        "| live merchants | vectors | design | CPU ms/query | recall of the exact top 120 |",
        "|---:|---|---|---:|---:|",
    ]
    for p in points:
        lines.append(
            f"| {p['merchants']:,} | {p['vectors']} | {p['design']} | {p['cpu_ms_per_query']} | {p['recall']} |"
        )
    report(
        args,
        "retrieval_discovery",
        {"runs": points, "load_avg_1m_at_end": round(load, 2)},
        lines,
        "retrieval_discovery — discovery's designs as live merchants grow: CPU and recall",
    )


def viewer_stores(rooms: int, viewers: int, pages: int, repeats: int, cycle: int = 200) -> dict[str, Any]:
    """Process CPU per page of the stages with retrieval at `rooms` live rooms, three arms alternating in one
    process: the Retrieve stage's per-viewer stores on with `cycle` viewers asking again and again (the
    best-merchant lists and history picks hit), on with every page a new viewer's first, and off
    (`viewers_kept` = 0: every page as before the stores)."""
    import asyncio
    import statistics
    import time

    from threadpoolctl import threadpool_limits

    from feed.context import Stage
    from feed.retrieval import Retrieve, ViewerStep
    from feed.stages import Diversity, Exploration, Filters, Rank, Score

    merchants, watcher, base, now = _synthetic_set(rooms, viewers)
    cfg = RankingConfig()
    rng = np.random.default_rng(3)
    rank = Rank(watcher)

    def stages(kept: int | None) -> list[Stage]:
        retrieve = Retrieve(watcher, rank, min_rooms=0)
        if kept is not None:
            retrieve.viewers_kept = kept
        return [Filters(), ViewerStep(watcher), retrieve, Score(watcher), rank, Diversity(), Exploration()]

    arms: dict[str, tuple[list[Stage], int | None]] = {
        "stores_on_viewers_again": (stages(None), cycle),
        "stores_on_first_pages": (stages(None), None),
        "stores_off": (stages(0), cycle),
    }
    fresh = [cycle]  # the next new viewer
    spent: dict[str, dict[str, float]] = {name: {} for name in arms}

    async def page(name: str, v: int, measure: bool) -> None:
        chain, cyc = arms[name]
        if cyc is None:
            fresh[0] += 1
            who = fresh[0]
        else:
            who = v % cyc
        ctx = _request(who, base, merchants, viewers, now, rng, lambda k: 60_000 + 1_000 * k, cfg)
        for stage in chain:
            t = time.process_time()
            await stage.apply(ctx)
            if measure:
                spent[name][stage.name] = spent[name].get(stage.name, 0.0) + (time.process_time() - t) * 1000

    async def run() -> dict[str, list[float]]:
        for name in arms:  # warm: what is kept per candidate set, and each cycling viewer's second page
            for v in range(2 * cycle + 20):
                await page(name, v, False)
        out: dict[str, list[float]] = {name: [] for name in arms}
        for _ in range(repeats):
            for name in arms:
                t = time.process_time()
                for v in range(pages):
                    await page(name, v, True)
                out[name].append((time.process_time() - t) / pages * 1000)
        return out

    with threadpool_limits(1, user_api="blas"):
        got = asyncio.run(run())
    return {
        "rooms": rooms,
        "merchants": merchants,
        "cpu_ms_per_page": {name: round(statistics.median(ms), 3) for name, ms in got.items()},
        "runs_ms": {name: [round(m, 3) for m in ms] for name, ms in got.items()},
        "stages_ms": {
            name: {k: round(v / (pages * repeats), 3) for k, v in by.items()} for name, by in spent.items()
        },
    }


def stores_main(args: argparse.Namespace) -> None:
    import os

    points = [
        viewer_stores(int(n), args.cpu_viewers, args.pages, args.repeats) for n in args.stores.split(",")
    ]
    load = os.getloadavg()[0]
    arms = ("stores_on_viewers_again", "stores_on_first_pages", "stores_off")
    lines = [
        "feed stages filters → viewer → retrieve → score → rank → diversity → exploration with retrieval, in-process, "
        f"process CPU per page, medians of {args.repeats} runs of {args.pages} pages, the three arms alternating "
        "in one process: the per-viewer stores (best-merchant lists, history picks) on with 200 viewers asking "
        "again and again / on with every page a new viewer's first / off; load average at the end "
        f"{load:.1f}",
        "",
        "| live rooms | stores on, viewers again | stores on, first pages | stores off | retrieve stage (same order) |",
        "|---:|---:|---:|---:|---|",
    ]
    for p in points:
        ms, st = p["cpu_ms_per_page"], p["stages_ms"]
        lines.append(
            f"| {p['rooms']:,} | {ms[arms[0]]} | {ms[arms[1]]} | {ms[arms[2]]} | "
            + " / ".join(str(st[a].get("retrieve", "")) for a in arms)
            + " |"
        )
    report(
        args,
        "retrieval_stores",
        {"runs": points, "load_avg_1m_at_end": round(load, 2)},
        lines,
        "retrieval_stores — the Retrieve stage's per-viewer stores: a page when they hit, on a first page, without them",
    )


def cpu_main(args: argparse.Namespace) -> None:
    import os

    points = [stage_cpu(int(n), args.cpu_viewers, args.pages, args.repeats) for n in args.cpu.split(",")]
    first = points[0]["cpu_ms_per_page_retrieval"]
    load = os.getloadavg()[0]
    lines = [
        f"feed stages filters → viewer → retrieve → score → rank → diversity → exploration, in-process, "
        f"process CPU per page, medians of {args.repeats} runs of {args.pages} pages, arms alternating; "
        f"{args.cpu_viewers:,} viewers in the model; load average at the end {load:.1f}",
        "",
        "| live rooms | merchants | CPU ms/page with retrieval | rooms ranked | CPU ms/page over all rooms | with / without | with retrieval vs the first row |",
        "|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for p in points:
        p["vs_first"] = round(p["cpu_ms_per_page_retrieval"] / first, 3)
        lines.append(
            f"| {p['rooms']:,} | {p['merchants']:,} | {p['cpu_ms_per_page_retrieval']} | {p['rooms_ranked_retrieval']} "
            f"| {p['cpu_ms_per_page_all_rooms']} | {p['ratio']} | {p['vs_first']} |"
        )
    lines += [
        "",
        "Where a page's stage CPU goes (ms per page, process CPU around each stage, with retrieval / over all rooms):",
        "",
        "| live rooms | " + " | ".join(STAGE_NAMES) + " |",
        "|---:|" + "---:|" * len(STAGE_NAMES),
    ]
    for p in points:
        ours, theirs = p["stages_ms"]["retrieval"], p["stages_ms"]["all_rooms"]
        cells = [
            f"{ours.get(n, 0.0):.3f} / {theirs[n]:.3f}" if n in theirs else f"{ours.get(n, 0.0):.3f}"
            for n in STAGE_NAMES
        ]
        lines.append(f"| {p['rooms']:,} | " + " | ".join(cells) + " |")
    report(
        args,
        "retrieval_cpu",
        {"runs": points, "load_avg_1m_at_end": round(load, 2)},
        lines,
        "retrieval_cpu — CPU of the feed's stages per page as live rooms grow, with and without retrieval",
    )


def frames_run(rooms: int, viewers: int, design: str, rate: float, seconds: float) -> dict[str, Any]:
    """One in-process open-loop run of the feed's pipeline at `rooms` live rooms (candidates → ... → page,
    retrieval on) at `rate` pages/s for `seconds`, with every room's heat changing each second (a heat
    source of random values, refreshed each second on the loop as the API's RoomHeatCache does), under
    one of three designs for the per-second arrays (room part, room delta, trending and category lists,
    exploration's eligible rooms, heat alignment): `request` — derived by the first request that meets a
    new second (before frames), `loop` — a frame built off the request but on the event loop, `thread` —
    a frame built in a thread (shipped). Latency is from each page's scheduled time (queueing counts)."""
    import asyncio
    import statistics
    import time

    from threadpoolctl import threadpool_limits

    from events.heat import HeatSnapshot
    from feed.context import FeedContext, RecentVisit, Stage
    from feed.frames import FrameRefresher
    from feed.pipeline import FeedPipeline
    from feed.retrieval import RETRIEVAL_FROM_ROOMS, Retrieve, ViewerStep
    from feed.sources import RoomHeatCache
    from feed.stages import CandidateSource, Diversity, Exploration, Filters, Hydrate, Page, Rank, Score
    from rooms.live_index import LiveRoom, LiveSnapshot

    merchants, watcher, base, now0 = _synthetic_set(rooms, viewers)
    live_rooms = list(base.rooms)
    snapshot = LiveSnapshot(1, tuple(live_rooms), {r.room_id: r for r in live_rooms})
    ids = [r.room_id for r in live_rooms]
    rows = {
        r: i for i, r in enumerate(ids)
    }  # as events.heat.HeatTable keeps it: one layout while no room is added

    class Index:
        async def snapshot(self) -> LiveSnapshot:
            return snapshot

        async def replays(self, limit: int) -> list[LiveRoom]:
            return []

        async def live_room_of_merchant(self, merchant_id: str) -> LiveRoom | None:
            return None

    class Heat:
        reads = 0

        async def snapshot(self, now: float | None = None) -> HeatSnapshot:
            Heat.reads += 1
            values = np.random.default_rng(Heat.reads).random((len(ids), 4)) * np.array([20.0, 60.0, 600, 2])
            return HeatSnapshot(time.time(), ids, values, rows, layout=1)

    stats = RoomHeatCache(Heat(), refresh_seconds=1.0)
    source = CandidateSource(
        Index(), background_from=2_000, frames=FrameRefresher(in_thread=design == "thread")
    )
    rank = Rank(watcher)
    stages: list[Stage] = [
        source,
        Hydrate(stats, None),
        Filters(),
        ViewerStep(watcher),
        Retrieve(watcher, rank, min_rooms=RETRIEVAL_FROM_ROOMS if rooms > RETRIEVAL_FROM_ROOMS else 0),
        Score(watcher),
        rank,
        Diversity(),
        Exploration(),
        Page(),
    ]
    pipeline = FeedPipeline(stages)
    if design == "request":
        source.frames.shared, source.frames.views = [], []
    cfg = RankingConfig()
    rng = np.random.default_rng(3)

    async def page(v: int) -> None:
        ctx = FeedContext(f"viewer-{(v * 7919) % viewers}", f"ses_{v}", 10, cfg, rng=rng)
        ctx.served = {f"room_{(v * 13 + j) % rooms}" for j in range(20)}
        ctx.recent = [
            RecentVisit(
                f"room_{(v * 7 + k) % rooms}",
                f"mer_{((v * 7 + k) % rooms) % merchants:016x}",
                60_000 + 1_000 * k,
                int(ctx.now * 1000) - k * 60_000,
                False,
            )
            for k in range(12)
        ]
        ctx.recent_loaded = True
        await pipeline.run(ctx)

    async def run() -> dict[str, Any]:
        await stats.start()
        for v in range(30):  # warm: the set, its columns, the first frame
            await page(v)
        await asyncio.sleep(1.5)
        latencies: list[float] = []
        page_cpu: list[float] = []
        builds_before, tasks = source.frames.builds, []
        cpu0, loop0, start = time.process_time(), time.thread_time(), time.perf_counter()
        total = int(rate * seconds)

        async def timed(v: int, due: float) -> None:
            cpu = time.thread_time()  # the page's own CPU: the stages never wait here (no I/O)
            await page(v)
            page_cpu.append((time.thread_time() - cpu) * 1000)
            latencies.append((time.perf_counter() - due) * 1000)

        for v in range(total):
            due = start + v / rate
            delay = due - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
            tasks.append(asyncio.create_task(timed(10_000 + v, due)))
        await asyncio.gather(*tasks)
        cpu = time.process_time() - cpu0
        loop_cpu = time.thread_time() - loop0
        wall = time.perf_counter() - start
        await pipeline.stop()
        await stats.stop()
        lat, own = sorted(latencies), sorted(page_cpu)
        return {
            "rooms": rooms,
            "design": design,
            "rate": rate,
            "pages": len(lat),
            "achieved_rps": round(len(lat) / wall, 1),
            "p50_ms": round(statistics.median(lat), 2),
            "p99_ms": round(lat[int(0.99 * (len(lat) - 1))], 2),
            "max_ms": round(lat[-1], 2),
            "cpu_ms_per_page": round(cpu / len(lat) * 1000, 3),
            "page_cpu_p50_ms": round(statistics.median(own), 3),
            "page_cpu_p99_ms": round(own[int(0.99 * (len(own) - 1))], 3),
            "page_cpu_max_ms": round(own[-1], 3),
            # the event loop's CPU outside pages per second: frames built on the loop, the heat refresh
            "loop_cpu_outside_pages_ms_per_s": round((loop_cpu - sum(own) / 1000) / wall * 1000, 2),
            "frames_built": source.frames.builds - builds_before,
            "frame_build_cpu_ms": round(source.frames.last_build_s * 1000, 2),
        }

    with threadpool_limits(1, user_api="blas"):
        return asyncio.run(run())


def frames_main(args: argparse.Namespace) -> None:
    import os

    load0 = os.getloadavg()[0]
    designs = args.frame_designs.split(",")
    runs = []
    for n in (int(x) for x in args.frames.split(",")):
        for r in range(args.repeats):  # designs alternating, so the host's load hits each alike
            for design in designs:
                got = frames_run(n, args.cpu_viewers, design, args.rate, args.seconds)
                got["repeat"] = r
                runs.append(got)
                print(got, flush=True)
    load = os.getloadavg()[0]
    lines = [
        f"the feed's pipeline in-process (candidates → hydrate → filters → viewer → retrieve → score → rank → "
        f"diversity → exploration → page; retrieval above 45,000 rooms), open loop at {args.rate:g} pages/s for "
        f"{args.seconds:g} s per run, every room's heat changing each second; latency from the scheduled time; "
        f"{args.repeats} runs per design alternating; load average {load0:.1f} at the start, {load:.1f} at the end",
        "",
        "| live rooms | design | latency p50 / p99 / max ms | page's own CPU p50 / p99 / max ms | loop CPU outside pages ms/s "
        "| process CPU ms/page | frame build CPU ms |",
        "|---:|---|---:|---:|---:|---:|---:|",
    ]
    for p in runs:
        lines.append(
            f"| {p['rooms']:,} | {p['design']} | {p['p50_ms']} / {p['p99_ms']} / {p['max_ms']} "
            f"| {p['page_cpu_p50_ms']} / {p['page_cpu_p99_ms']} / {p['page_cpu_max_ms']} "
            f"| {p['loop_cpu_outside_pages_ms_per_s']} | {p['cpu_ms_per_page']} | {p['frame_build_cpu_ms']} |"
        )
    report(
        args,
        "feed_frames",
        {"runs": runs, "load_avg_1m_at_start": round(load0, 2), "load_avg_1m_at_end": round(load, 2)},
        lines,
        "feed_frames — the per-second arrays in the request, on the loop, or in a thread: page latency",
    )


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--viewers", type=int, default=20_000)
    ap.add_argument("--merchants", type=int, default=1_000)
    ap.add_argument("--days", type=int, default=7)
    ap.add_argument("--seed", type=int, default=7)
    ap.add_argument("--targets", type=int, default=4_000)
    ap.add_argument("--scales", default="1,0.25,0.1")
    ap.add_argument("--no-write", action="store_true")
    ap.add_argument("--cpu", default=None, help="live-room counts: the stages' CPU per page instead")
    ap.add_argument("--cpu-viewers", type=int, default=20_000)
    ap.add_argument(
        "--stores",
        default=None,
        help="live-room counts: a page with the per-viewer stores hitting, missing, off",
    )
    ap.add_argument(
        "--discovery", default=None, help="live-merchant counts: discovery's designs (CPU, recall)"
    )
    ap.add_argument("--queries", type=int, default=300)
    ap.add_argument(
        "--agreement", default=None, help="live-room counts: retrieval's pages against every room's"
    )
    ap.add_argument("--pages", type=int, default=200)
    ap.add_argument(
        "--ranker-seed",
        type=int,
        default=None,
        help="the synthetic set's ranker weights from this seed at every size (default: bench_feed's, "
        "which differ with the number of merchants)",
    )
    ap.add_argument(
        "--routing", default=None, help="live-room counts: the per-viewer stores' hits over 1, 2, 4 processes"
    )
    ap.add_argument(
        "--session-pages", type=int, default=8, help="--routing, --sum-ceiling: pages per session"
    )
    ap.add_argument(
        "--sum-ceiling",
        default=None,
        help="live-room counts: the top 10 of ranking every room among retrieval's rows, and with the top N "
        "by popularity + LightFM added",
    )
    ap.add_argument("--visits", type=int, default=3, help="--routing: rooms entered between two pages")
    ap.add_argument(
        "--frames", default=None, help="live-room counts: page latency under the per-second arrays' designs"
    )
    ap.add_argument("--frame-designs", default="request,loop,thread")
    ap.add_argument("--rate", type=float, default=150.0)
    ap.add_argument("--seconds", type=float, default=12.0)
    ap.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args()
    global RANKER_SEED
    RANKER_SEED = args.ranker_seed
    if args.frames:
        frames_main(args)
        return
    if args.discovery:
        discovery_main(args)
        return
    if args.agreement:
        agreement_main(args)
        return
    if args.routing:
        routing_main(args)
        return
    if args.sum_ceiling:
        for rooms in args.sum_ceiling.split(","):
            print(
                json.dumps(
                    sum_ceiling(int(rooms), args.cpu_viewers, args.pages, args.session_pages, args.visits)
                ),
                flush=True,
            )
        return
    if args.routing:
        routing_main(args)
        return
    if args.sum_ceiling:
        for rooms in args.sum_ceiling.split(","):
            print(
                json.dumps(
                    sum_ceiling(int(rooms), args.cpu_viewers, args.pages, args.session_pages, args.visits)
                ),
                flush=True,
            )
        return
    if args.cpu:
        cpu_main(args)
        return
    if args.stores:
        stores_main(args)
        return
    market = Marketplace(seed=args.seed, n_merchants=args.merchants, n_viewers=args.viewers, days=args.days)
    log = from_simulator(market)
    w = market.world
    features: dict[str, Any] = {}
    for room in market.rooms:
        features.setdefault(room.features.merchant_id, room.features)
    schedule = Schedule(w.r_merchant, w.r_start, w.r_end, [r.features for r in market.rooms])
    split = market.config.start_ms + (args.days - 1) * DAY_MS
    fitted = fit_model(log, features, schedule, split, FitConfig(seed=args.seed), version="retrieval")
    scales = [float(s) for s in args.scales.split(",")]
    methods = {
        f"retrieval_x{s:g}": rt.retrieval_method(fitted.ranker, scaled(rt.Budget(), s)) for s in scales
    }
    ev, targets = evaluate_model(
        log,
        features,
        schedule,
        {"ranker": (fitted.model, fitted.ranker)},
        (split, split + DAY_MS),
        max_targets=args.targets,
        seed=args.seed,
        extra=methods,
    )
    live = np.array([t.rooms.size for t in targets])
    sizes: dict[str, float] = {}
    for s in scales:  # how many rooms each budget retrieves, on a sample of the targets
        budget = scaled(rt.Budget(), s)
        got = []
        for t in targets[:: max(1, len(targets) // 400)]:
            lv = rt.replayed_live_set(fitted.ranker, t.table, t.request)
            viewer = rt.Viewer(t.request.history, rt.replayed_merchant_scores(lv, t.request))
            found = rt.retrieve(
                lv, np.ones(len(lv), bool), viewer, t.table, budget, eligible=np.arange(len(lv))
            )
            got.append(found.rows.size / max(len(lv), 1))
        sizes[f"retrieval_x{s:g}"] = float(np.mean(got))
    r = ev.results
    base = r["ranker"]["overall"]
    metrics: dict[str, Any] = {
        "targets": ev.targets,
        "live_rooms_mean": round(float(live.mean()), 1),
        "live_rooms_max": int(live.max()),
        "hr5_ranker_all_rooms": round(base["hr5"], 4),
        "ndcg10_ranker_all_rooms": round(base["ndcg10"], 4),
    }
    lines = [
        f"simulator seed {args.seed}, {args.viewers:,} viewers, {args.merchants:,} merchants, {args.days} days; "
        f"fit on days 0-{args.days - 2}, {ev.targets:,} enters of the last day judged; "
        f"live rooms per target: mean {live.mean():.0f}, max {live.max()}",
        "",
        "| method | share of live rooms ranked | HR@5 | NDCG@10 | HR@5 vs all rooms | NDCG@10 vs all rooms | HR@5 diff (95 % CI) |",
        "|---|---:|---:|---:|---:|---:|---|",
        f"| ranker over all live rooms | 1.00 | {base['hr5']:.4f} | {base['ndcg10']:.4f} | | | |",
    ]
    for name in methods:
        m = r[name]["overall"]
        d = ev.difference(name, "ranker", seed=args.seed)
        rel_hr, rel_ndcg = m["hr5"] / base["hr5"] - 1, m["ndcg10"] / base["ndcg10"] - 1
        metrics[name] = {
            "share_ranked": round(sizes[name], 3),
            "hr5": round(m["hr5"], 4),
            "ndcg10": round(m["ndcg10"], 4),
            "hr5_rel": round(rel_hr, 4),
            "ndcg10_rel": round(rel_ndcg, 4),
            "hr5_diff_ci": [round(d["ci_low"], 4), round(d["ci_high"], 4)],
        }
        lines.append(
            f"| ranker on retrieval, budget x{name.split('_x')[1]} | {sizes[name]:.2f} | {m['hr5']:.4f} "
            f"| {m['ndcg10']:.4f} | {100 * rel_hr:+.2f} % | {100 * rel_ndcg:+.2f} % "
            f"| {d['diff']:+.4f} ({d['ci_low']:+.4f} … {d['ci_high']:+.4f}) |"
        )
    report(args, "retrieval", metrics, lines, "retrieval — the ranker with retrieval vs over all live rooms")


if __name__ == "__main__":
    main()
