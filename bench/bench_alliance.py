"""Alliance simulation: 3 alliances, 50 merchants, 24 simulated hours, paced exposure paid back.

    .venv/bin/python bench/bench_alliance.py [--seed 7] [--hours 24]

The marketplace simulator (`simulator.Marketplace`) supplies merchants, their broadcast schedule,
viewers' tastes and how viewers react to rooms. The alliance code under test is the real one, on
a real PostgreSQL database and a private Redis, in simulated time: `AttributionBook` for code
sessions, `AllianceSink` for every event (contributed visits, boosted impressions delivered),
`ExposureScheduler.recompute(now)` every simulated minute, and `AllianceBoost.apply` on the
feed's own `FeedContext` for every page. Kafka is not on this path (the sink gets the batches
directly); the worker's SinkRunner is what would feed it in production.

Each simulated minute: organic sessions from random viewers, plus code sessions of contributing
merchants that are live (heavy: 15 merchants, light: 15, none: 20). A session lands in the code's
room, then swipes through feed pages of 10 rooms ranked by a noisy model score
(true taste match + noise). For every page the unboosted ranking of the same candidates for the
same viewer is kept too, so the relevance cost (NDCG@10 against true match) is measured in the
same run (the baseline). Reports: delivered/earned per contributing merchant at the end of the
24 hours, its spread, delivery per hour against earning per hour, boosts of non-contributors.
"""

from __future__ import annotations

import argparse
import asyncio
import math
import shlex
import sys
import time
from collections import defaultdict
from datetime import UTC, datetime
from typing import Any

import numpy as np
from bench_live_index import REPO, BenchEnv, bench_env, write_results

sys.path.insert(0, str(REPO))

from alliance.alliances import AllianceBook, Terms  # noqa: E402
from alliance.attribution import AttributionBook  # noqa: E402
from alliance.boost import AllianceBoost  # noqa: E402
from alliance.codes import Attribution, CodeSigner  # noqa: E402
from alliance.consumer import AllianceSink  # noqa: E402
from alliance.ledger import Ledger  # noqa: E402
from alliance.scheduler import ExposureScheduler  # noqa: E402
from feed.config import RankingConfig  # noqa: E402
from feed.context import Candidates, FeedContext  # noqa: E402
from simulator import Marketplace  # noqa: E402

HOUR_MS = 3_600_000
PAGE = 10
TERMS = Terms(
    exchange_rate=3.0,
    min_dwell_ms=10_000,
    boost_share_cap=0.3,
    daily_earning_cap=20_000.0,
    relevance_floor=1.0,
    attribution_window_h=24,
)


def ndcg10(order: np.ndarray, gains: np.ndarray) -> float:
    discounts = 1.0 / np.log2(np.arange(2, PAGE + 2))
    ideal = np.sort(gains)[::-1][:PAGE]
    idcg = float((ideal * discounts[: len(ideal)]).sum())
    dcg = float((gains[order[:PAGE]] * discounts[: len(order[:PAGE])]).sum())
    return dcg / idcg if idcg > 0 else 1.0


class Simulation:
    def __init__(self, env: BenchEnv, args: argparse.Namespace) -> None:
        self.env = env
        self.args = args
        self.rng = np.random.default_rng(args.seed)
        self.market = Marketplace(
            seed=args.seed,
            n_merchants=150,
            n_viewers=40_000,
            days=2,
            duration_min=(600, 1200),
            live_day_prob=(0.9, 1.0),
            second_broadcast_prob=0.3,
        )
        self.start_ms = self.market.config.start_ms + 12 * HOUR_MS  # broadcasts run from noon on
        self.end_ms = self.start_ms + args.hours * HOUR_MS
        w = self.market.world
        self.taste, self.latent, self.scale = w.v_taste, w.m_latent, w.match_scale
        self.sink = AllianceSink(env.pool, env.redis)
        self.attribution = AttributionBook(env.pool, env.redis)
        self.scheduler = ExposureScheduler(
            env.pool, env.redis, pacing_hours=args.pacing_hours, burst_hours=0.1
        )
        self.stage = AllianceBoost(env.redis, plan_ttl_s=1e12)
        self.signer = CodeSigner(env.settings.code_secret)
        self.ndcg_boosted: list[float] = []
        self.ndcg_plain: list[float] = []
        self.ndcg_boosted_pages: list[tuple[float, float]] = []
        self.boosted_impressions: dict[str, int] = defaultdict(int)
        self.sessions = 0
        self.code_sessions = 0
        self.pages = 0
        self.impressions = 0

    # --- set-up ---------------------------------------------------------------------------------
    async def form_alliances(self) -> None:
        hours: dict[str, float] = defaultdict(float)
        for room in self.market.rooms:
            a, b = max(room.live_from_ms, self.start_ms), min(room.live_until_ms, self.end_ms)
            if b > a:
                hours[room.features.merchant_id] += (b - a) / HOUR_MS
        members = sorted(hours, key=lambda m: -hours[m])[:50]  # the platform's most active broadcasters
        self.members = members
        book = AllianceBook(self.env.pool)
        self.alliance_of: dict[str, str] = {}
        for k in range(3):
            group = members[k::3]
            alliance = await book.create(group[0], f"alliance {k + 1}", TERMS)
            for m in group[1:]:
                await book.invite(alliance.alliance_id, group[0], m)
                await book.join(alliance.alliance_id, m)
            for m in group:
                self.alliance_of[m] = alliance.alliance_id
        order = self.rng.permutation(members)
        self.heavy = set(order[:15].tolist())
        self.light = set(order[15:30].tolist())
        self.silent = set(order[30:].tolist())
        # Each contributor's private domain: its own followers, disjoint viewer id ranges.
        n_v = self.taste.shape[0]
        self.followers: dict[str, np.ndarray] = {}
        for k, m in enumerate(sorted(self.heavy | self.light)):
            self.followers[m] = np.arange(20_000 + k * 600, 20_000 + (k + 1) * 600) % n_v

    # --- one session ----------------------------------------------------------------------------
    async def session(
        self, viewer: int, start_ms: int, live: list[Any], code_merchant: str | None
    ) -> list[dict[str, Any]]:
        sid = f"s{self.sessions}"
        self.sessions += 1
        viewer_id = f"v{viewer}"
        sim = self.market.viewer(
            viewer_id, sid, start_ms, seed=self.args.seed, entry_code_merchant_id=code_merchant
        )
        events: list[dict[str, Any]] = []
        served: set[str] = set()
        if code_merchant is not None:
            self.code_sessions += 1
            own = [r for r in live if r.features.merchant_id == code_merchant]
            if not own:
                return []
            code = self.signer.sign(Attribution(code_merchant))
            await self.attribution.attribute(
                viewer_id, sid, self.signer.parse(code), start_ms / 1000, code=code
            )
            room = own[0]
            events += sim.react(room.features, room.live_until_ms, position=0)
            served.add(room.features.room_id)
            self.impressions += 1
        position = len(served)
        for _ in range(6):
            if sim.done:
                break
            rooms = [
                r for r in live if r.features.room_id not in served and r.live_until_ms > sim.now_ms + 60_000
            ]
            if not rooms:
                break
            merchants = np.array([int(r.features.merchant_id[1:]) for r in rooms])
            relevance = (self.latent[merchants] @ self.taste[viewer]) / self.scale
            model = relevance + self.rng.normal(0.0, 0.5, len(rooms))  # an imperfect model
            ctx = FeedContext(
                viewer_id=viewer_id,
                session_id=sid,
                count=PAGE,
                config=RankingConfig(),
                candidates=Candidates.of([r.features for r in rooms]).fresh_copy(),
                served=served,
                rng=self.rng,
            )
            ctx.candidates.score = model.astype(np.float32)
            await self.stage.apply(ctx)
            boosted_scores = ctx.candidates.score
            plain = np.argsort(-model, kind="stable")[:PAGE]
            shown = np.argsort(-boosted_scores, kind="stable")[:PAGE]
            gains = np.maximum(relevance, 0.0)
            self.ndcg_plain.append(ndcg10(plain, gains))
            self.ndcg_boosted.append(ndcg10(shown, gains))
            if ctx.candidates.boosted.any():
                self.ndcg_boosted_pages.append((self.ndcg_plain[-1], self.ndcg_boosted[-1]))
            self.pages += 1
            for i in shown:
                if sim.done:
                    break
                room = rooms[int(i)]
                flag = bool(ctx.candidates.boosted[i])
                events += sim.react(room.features, room.live_until_ms, position=position, boosted=flag)
                served.add(room.features.room_id)
                position += 1
                self.impressions += 1
                if flag:
                    self.boosted_impressions[room.features.merchant_id] += 1
        return events

    # --- the day ----------------------------------------------------------------------------------
    async def run(self) -> None:
        await self.form_alliances()
        organic_per_min = self.args.organic_per_min
        pending: list[dict[str, Any]] = []
        minutes = self.args.hours * 60
        started = time.perf_counter()
        for t in range(minutes):
            now_ms = self.start_ms + t * 60_000
            if t % self.args.tick_minutes == 0:
                await self.scheduler.recompute(now_ms / 1000)
                await self.stage.refresh()
            live = self.market.live_rooms(now_ms)
            live_merchants = {r.features.merchant_id for r in live}
            starts: list[tuple[int, int, str | None]] = []
            for _ in range(self.rng.poisson(organic_per_min)):
                starts.append((int(self.rng.integers(0, self.taste.shape[0])), now_ms, None))
            for m in (self.heavy | self.light) & live_merchants:
                rate = self.args.heavy_per_min if m in self.heavy else self.args.light_per_min
                for _ in range(self.rng.poisson(rate)):
                    starts.append((int(self.rng.choice(self.followers[m])), now_ms, m))
            for viewer, at, code_merchant in starts:
                at += int(self.rng.integers(0, 60_000))
                pending += await self.session(viewer, at, live, code_merchant)
            # Events reach the sink in time order, as the stream delivers them (each in its minute).
            due = [e for e in pending if int(e["ts"]) < now_ms + 60_000]
            pending = [e for e in pending if int(e["ts"]) >= now_ms + 60_000]
            due.sort(key=lambda e: int(e["ts"]))
            if due:
                await self.sink.write(due)
            if t % 120 == 119:
                print(
                    f"  simulated {(t + 1) // 60:2d} h  sessions {self.sessions:6d}  pages {self.pages:6d}  "
                    f"({time.perf_counter() - started:5.1f} s)",
                    flush=True,
                )
        cutoff = [e for e in pending if int(e["ts"]) < self.end_ms]  # what happened within the 24 hours
        if cutoff:
            await self.sink.write(sorted(cutoff, key=lambda e: int(e["ts"])))

    # --- figures --------------------------------------------------------------------------------
    async def hourly(self) -> tuple[np.ndarray, np.ndarray, dict[str, tuple[np.ndarray, np.ndarray]]]:
        rows = await self.env.pool.fetch(
            """SELECT merchant_id, kind, floor(extract(epoch FROM at) * 1000 / $1) AS h, sum(amount) AS amount
               FROM ledger_transactions GROUP BY 1, 2, 3""",
            HOUR_MS,
        )
        first = self.start_ms // HOUR_MS
        n = self.args.hours
        earned, delivered = np.zeros(n), np.zeros(n)
        per: dict[str, tuple[np.ndarray, np.ndarray]] = defaultdict(lambda: (np.zeros(n), np.zeros(n)))
        for r in rows:
            h = int(r["h"]) - first
            if 0 <= h < n:
                target = earned if r["kind"] == "earned" else delivered if r["kind"] == "delivered" else None
                if target is not None:
                    target[h] += float(r["amount"])
                    per[r["merchant_id"]][0 if r["kind"] == "earned" else 1][h] += float(r["amount"])
        return earned, delivered, per


def plot(
    path: Any,
    earned: np.ndarray,
    delivered: np.ndarray,
    per: dict[str, tuple[np.ndarray, np.ndarray]],
    ratios: dict[str, float],
    examples: list[str],
) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    hours = np.arange(len(earned))
    fig, axes = plt.subplots(1, 3, figsize=(16, 4.5))
    ax = axes[0]
    ax.bar(hours - 0.2, earned, width=0.4, label="earned (impressions owed)")
    ax.bar(hours + 0.2, delivered, width=0.4, label="delivered (boosted impressions)")
    ax.set_xlabel("simulated hour")
    ax.set_ylabel("impressions per hour")
    ax.set_title("All contributors: delivery per hour follows earning per hour")
    ax.legend()
    ax = axes[1]
    for m in examples:
        e, d = per[m]
        line = ax.plot(hours, np.cumsum(e), label=f"{m} earned")[0]
        ax.plot(hours, np.cumsum(d), linestyle="--", color=line.get_color(), label=f"{m} delivered")
    ax.set_xlabel("simulated hour")
    ax.set_ylabel("cumulative impressions")
    ax.set_title("Three merchants: cumulative earned vs delivered")
    ax.legend(fontsize=7)
    ax = axes[2]
    ax.hist(list(ratios.values()), bins=np.linspace(0.5, 1.5, 41))
    ax.axvspan(0.9, 1.1, alpha=0.15, color="green")
    ax.set_xlabel("delivered / earned at hour 24")
    ax.set_ylabel("contributing merchants")
    ax.set_title("Delivery ratio per contributing merchant")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)


async def run(args: argparse.Namespace) -> dict[str, Any]:
    async with bench_env() as env:
        sim = Simulation(env, args)
        t0 = time.perf_counter()
        await sim.run()
        seconds = time.perf_counter() - t0
        balances = await Ledger(env.pool).balances()
        earned: dict[str, float] = defaultdict(float)
        delivered: dict[str, float] = defaultdict(float)
        visits: dict[str, int] = defaultdict(int)
        for b in balances:
            earned[b.merchant_id] += b.earned
            delivered[b.merchant_id] += b.delivered
            visits[b.merchant_id] += b.visits
        contributors = sorted(m for m in earned if earned[m] > 0)
        ratios = {m: delivered[m] / earned[m] for m in contributors}
        in_band = [m for m in contributors if 0.9 <= ratios[m] <= 1.1]
        noncontributor_boosts = sum(n for m, n in sim.boosted_impressions.items() if earned.get(m, 0) == 0)
        values = np.array(list(ratios.values())) if ratios else np.zeros(1)
        plain, boosted = float(np.mean(sim.ndcg_plain)), float(np.mean(sim.ndcg_boosted))
        bp = np.array(sim.ndcg_boosted_pages) if sim.ndcg_boosted_pages else np.ones((1, 2))
        hourly_e, hourly_d, per = await sim.hourly()
        corr = float(np.corrcoef(hourly_e[1:], hourly_d[1:])[0, 1]) if hourly_e[1:].std() > 0 else math.nan
        lagged = (
            float(np.corrcoef(hourly_e[:-1], hourly_d[1:])[0, 1]) if hourly_e[:-1].std() > 0 else math.nan
        )
        peak_share = float(hourly_d.max() / hourly_d.sum()) if hourly_d.sum() else 0.0
        rejected = {
            r["reason"]: int(r["n"])
            for r in await env.pool.fetch(
                "SELECT reason, count(*) AS n FROM alliance_visits GROUP BY reason ORDER BY reason"
            )
        }
        metrics = {
            "share_ratio_in_band": round(len(in_band) / max(1, len(contributors)), 4),
            "ratio_spread": round(float(values.std()), 4),
            "relevance_cost_pct": round((1 - boosted / plain) * 100, 3),
            "noncontributor_boosts": int(noncontributor_boosts),
            "contributing_merchants": len(contributors),
            "ratio_median": round(float(np.median(values)), 4),
            "ratio_p10": round(float(np.percentile(values, 10)), 4),
            "ratio_p90": round(float(np.percentile(values, 90)), 4),
            "ratio_min": round(float(values.min()), 4),
            "ratio_max": round(float(values.max()), 4),
            "earned_total": round(sum(earned.values()), 1),
            "delivered_total": round(sum(delivered.values()), 1),
            "ndcg10_unboosted": round(plain, 4),
            "ndcg10_boosted": round(boosted, 4),
            "relevance_cost_pct_boosted_pages": round((1 - bp[:, 1].mean() / bp[:, 0].mean()) * 100, 3),
            "boosted_pages": len(sim.ndcg_boosted_pages),
            "pages": sim.pages,
            "sessions": sim.sessions,
            "code_sessions": sim.code_sessions,
            "impressions": sim.impressions,
            "boosted_impression_share": round(
                sum(sim.boosted_impressions.values()) / max(1, sim.impressions), 4
            ),
            "hourly_corr_same_hour": round(corr, 4),
            "hourly_corr_lag_1h": round(lagged, 4),
            "peak_hour_delivery_share": round(peak_share, 4),
            "heavy_contributors_earning": sum(1 for m in sim.heavy if earned.get(m, 0) > 0),
            "light_contributors_earning": sum(1 for m in sim.light if earned.get(m, 0) > 0),
            "silent_members_earning": sum(1 for m in sim.silent if earned.get(m, 0) > 0),
            "pacing_hours": args.pacing_hours,
            "simulated_hours": args.hours,
            "wall_seconds": round(seconds, 1),
        }
        examples = sorted(contributors, key=lambda m: -earned[m])[:: max(1, len(contributors) // 3)][:3]
        plot(REPO / "docs" / "img" / "alliance_pacing.png", hourly_e, hourly_d, per, ratios, examples)
        hourly_lines = [
            f"  h{h:02d}  earned {hourly_e[h]:8.1f}  delivered {hourly_d[h]:8.1f}" for h in range(args.hours)
        ]
        per_merchant = [
            f"  {m:>5}  {'heavy' if m in sim.heavy else 'light' if m in sim.light else 'other'}  visits {visits[m]:5d}"
            f"  earned {earned[m]:8.1f}  delivered {delivered[m]:8.1f}  ratio {ratios[m]:.3f}"
            for m in sorted(contributors, key=lambda m: -earned[m])
        ]
        return {
            "metrics": metrics,
            "hourly": hourly_lines,
            "per_merchant": per_merchant,
            "rejected": rejected,
        }


def write_report(command: str, lines: list[str]) -> None:
    """The simulation report section of docs/alliance.md (between its markers; the rest untouched)."""
    doc = REPO / "docs" / "alliance.md"
    text = doc.read_text()
    start, end = "<!-- sim:results -->", "<!-- /sim:results -->"
    section = "\n".join(
        [
            start,
            f"`{command}` — {datetime.now(UTC).date()}",
            "",
            "![pacing](img/alliance_pacing.png)",
            "",
            "```",
            *lines,
            "```",
            end,
        ]
    )
    if start in text and end in text:
        text = text[: text.index(start)] + section + text[text.index(end) + len(end) :]
    else:
        text = text.rstrip("\n") + "\n\n" + section + "\n"
    doc.write_text(text)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--hours", type=int, default=24)
    parser.add_argument("--organic-per-min", type=float, default=6.0)
    parser.add_argument("--heavy-per-min", type=float, default=0.1)
    parser.add_argument("--light-per-min", type=float, default=0.02)
    parser.add_argument("--pacing-hours", type=float, default=0.25)
    parser.add_argument("--tick-minutes", type=int, default=1, help="scheduler tick (servers tick every 5 s)")
    parser.add_argument("--no-write", action="store_true", help="print only (no results file, no docs)")
    args = parser.parse_args()
    command = ".venv/bin/python bench/bench_alliance.py " + shlex.join(sys.argv[1:])
    print(f"$ {command.strip()}")
    out = asyncio.run(run(args))
    m = out["metrics"]
    lines = [
        f"contributing merchants                      {m['contributing_merchants']}"
        f"  (heavy {m['heavy_contributors_earning']}/15, light {m['light_contributors_earning']}/15,"
        f" silent members earning {m['silent_members_earning']}/20)",
        f"delivered/earned in [0.9, 1.1]              {m['share_ratio_in_band'] * 100:.1f} % of contributors   (target >= 90 %)",
        f"ratio median / p10 / p90 / min / max        {m['ratio_median']:.3f} / {m['ratio_p10']:.3f} / "
        f"{m['ratio_p90']:.3f} / {m['ratio_min']:.3f} / {m['ratio_max']:.3f}",
        f"ratio spread (std across merchants)         {m['ratio_spread']:.4f}",
        f"earned / delivered impressions              {m['earned_total']:.0f} / {m['delivered_total']:.0f}",
        f"boosted impressions of non-contributors     {m['noncontributor_boosts']}   (target 0)",
        f"NDCG@10 unboosted (baseline) / boosted      {m['ndcg10_unboosted']:.4f} / {m['ndcg10_boosted']:.4f}",
        f"relevance cost, all pages                   {m['relevance_cost_pct']:.2f} %   (target <= 3 %)",
        f"relevance cost, pages with a boost          {m['relevance_cost_pct_boosted_pages']:.2f} %"
        f"   ({m['boosted_pages']} of {m['pages']} pages)",
        f"boosted share of all impressions            {m['boosted_impression_share'] * 100:.2f} %",
        f"pacing: corr(earned h, delivered h)         {m['hourly_corr_same_hour']:.3f}   lagged 1 h {m['hourly_corr_lag_1h']:.3f}"
        f"   peak hour = {m['peak_hour_delivery_share'] * 100:.1f} % of delivery",
        f"sessions / code sessions / impressions      {m['sessions']} / {m['code_sessions']} / {m['impressions']}",
        f"visits judged, by reason                    {out['rejected']}",
        f"simulated hours / wall time                 {m['simulated_hours']} h / {m['wall_seconds']} s"
        f"   (pacing window {m['pacing_hours']} h)",
        "",
        "hourly, all contributors:",
        *out["hourly"],
        "",
        "per contributing merchant:",
        *out["per_merchant"],
    ]
    print("\n".join(lines))
    if not args.no_write:
        write_results(
            "alliance",
            command.strip(),
            m,
            lines[:15] + ["", "(hourly and per-merchant tables: docs/alliance.md)"],
            "alliance — paced exposure payback in a 24 h simulation (alliance)",
        )
        write_report(command.strip(), lines)
    print(f"date {datetime.now(UTC).date()}")


if __name__ == "__main__":
    main()
