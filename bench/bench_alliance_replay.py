"""The member-graph rules of settlement replayed on finished bench_alliance runs: which attacks' visits a
checkout's rules would have left standing, and which honest visits they would have clawed back.

    .venv/bin/python bench/bench_alliance_replay.py /tmp/rf-bench-alliance-XXXX [...] [--step-hours 0.5]

A 24 h run through the real stack takes 78 minutes of a shared host; the rules that read the member
graph (`alliance.settlement.member_graph_patterns`: reciprocal, ring, chain, focused flows, clique
members) are pure functions of the counted visits by contributor, host and alliance hour. A run
directory keeps both halves of that: `outcome.pickle` (each judged visit: contributor, room, state,
clawback reason, the enter's event id) and the run's own Kafka log (`kafka/log-dirs`: every enter
with its arrival time, every served room with its merchant). This replays the rules of *this*
checkout on them, as the scheduler does: a pass every `--step-hours` alliance hours over the trailing
evidence window, until it has slid past the last counted visit (the run's tail); a visit clawed back
once stays clawed back. The other rules (bursts, new accounts,
repeat viewers, never converts) are not replayed: visits they clawed back in the run stay so.

What it says is what these rules would have done with the same visits; a run of the rules in the
stack could differ where a clawback changes later traffic (it does not in the bench: attackers do not
react). To compare two designs, replay the same runs from a detached worktree of each commit.
"""

from __future__ import annotations

import argparse
import glob
import pickle
import sys
from collections import Counter, defaultdict
from datetime import datetime
from pathlib import Path
from typing import Any

import orjson
from aiokafka.record.memory_records import MemoryRecords

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

import bench_alliance  # noqa: E402

from alliance.clock import AllianceClock  # noqa: E402
from alliance.contribution import Policy  # noqa: E402
from alliance.settlement import Hourly, Patterns, Settlement, member_graph_patterns  # noqa: E402
from events.vocabulary import ENTER, SERVED  # noqa: E402

HOUR = 3600.0
GRAPH_RULES = {"reciprocal_pattern", "ring_pattern", "chain_pattern", "focused_flow", "clique_member"}


class _Outcomes(pickle.Unpickler):
    """bench_alliance pickles its outcome from `__main__` (it runs as a script)."""

    def find_class(self, module: str, name: str) -> Any:
        if module == "__main__":
            return getattr(bench_alliance, name)
        return super().find_class(module, name)


def _epoch(value: Any) -> float:
    if isinstance(value, int | float):
        return value / 1000.0 if value > 1e11 else float(value)
    return datetime.fromisoformat(str(value)).timestamp()


def kafka_facts(run_dir: Path) -> tuple[dict[str, float], dict[str, str]]:
    """From the run's Kafka log: each enter's arrival (epoch s) by event id, each served room's merchant."""
    arrived: dict[str, float] = {}
    merchant_of: dict[str, str] = {}
    for path in sorted(glob.glob(str(run_dir / "kafka" / "log-dirs" / "*viewer-events-*" / "*.log"))):
        records = MemoryRecords(Path(path).read_bytes())
        while records.has_next():
            batch = records.next_batch()
            if batch is None:
                break
            for record in batch:
                if record.value is None:
                    continue
                try:
                    event = orjson.loads(record.value)
                except orjson.JSONDecodeError:
                    continue
                if event.get("type") == ENTER:
                    arrived[event["event_id"]] = _epoch(event.get("received_at") or event["ts"])
                elif event.get("type") == SERVED and event.get("merchant_id"):
                    merchant_of[event["room_id"]] = event["merchant_id"]
    return arrived, merchant_of


def replay(
    run_dir: Path, step_hours: float, patterns: Patterns, window_h: float, after_day: bool = False
) -> dict[str, Any]:
    """`after_day`: a visit is clawed back only by a pass after its alliance day has ended (one that
    judges the whole day); a pass before that only holds it (`held_then_released`: held, never clawed)."""
    with (run_dir / "outcome.pickle").open("rb") as f:
        out = _Outcomes(f).load()  # the bench's own file
    arrived, merchant_of = kafka_facts(run_dir)
    for page in out.seen.pages:
        for room in page["rooms"]:
            merchant_of.setdefault(room[0], room[1])
    scale = float(out.run["scale"])
    attack_of = {m.merchant_id: name for name in bench_alliance.ATTACKS for m in out.world.members(name)}
    alliance_of = {mid: m.alliance for mid, m in out.by_merchant_id.items()}
    role_of = {mid: m.role for mid, m in out.by_merchant_id.items()}
    visits = []
    for v in out.visits:
        if v["earned"] and v["visit_id"] in arrived and v["room_id"] in merchant_of:
            at = arrived[v["visit_id"]]
            visits.append({**v, "at": at, "host": merchant_of[v["room_id"]], "hour": int(at * scale // HOUR)})
    missing = sum(1 for v in out.visits if v["earned"]) - len(visits)
    clawed: set[int] = set()
    held: set[int] = set()
    if visits:
        first, last = min(v["at"] for v in visits), max(v["at"] for v in visits)
        step, window = step_hours * HOUR / scale, window_h * HOUR / scale
        # The run's settlement, for where its window starts (a checkout's rule: `Settlement.window_start`;
        # older checkouts: the plain trailing window). Its clock's origin is the run's midnight.
        origin = float(out.world.day_start) - float(out.run.get("start_hour", 0.0)) * HOUR / scale
        judge = Settlement.__new__(Settlement)
        judge.clock, judge.policy = AllianceClock(scale, origin), Policy()
        t = first + step
        while t < last + window + 2 * step:
            graphs: dict[int, Hourly] = defaultdict(lambda: defaultdict(int))
            since = judge.window_start(t) if hasattr(judge, "window_start") else t - window
            standing = [i for i, v in enumerate(visits) if since <= v["at"] <= t]
            for i in standing:
                v = visits[i]
                graphs[alliance_of[v["contributor_id"]]][(v["contributor_id"], v["host"], v["hour"])] += 1
            marked: set[tuple[str, str]] = set()
            for alliance, hourly in graphs.items():
                marked |= set().union(*member_graph_patterns({str(alliance): dict(hourly)}, patterns))
            hit = {i for i in standing if (visits[i]["contributor_id"], visits[i]["host"]) in marked}
            if after_day:
                day = judge.clock.wall(24 * HOUR)
                over = {i for i in hit if judge.clock.day_start(visits[i]["at"]) + day <= t}
                held |= hit - over
                hit = over
            clawed |= hit
            t += step
    kept: Counter[str] = Counter()
    kept_live: Counter[str] = Counter()
    honest_clawed: Counter[str] = Counter()
    honest_clawed_live: Counter[str] = Counter()
    honest: Counter[str] = Counter()
    for i, v in enumerate(visits):
        other_rule = v["state"] == "clawed_back" and v["clawback_reason"] not in GRAPH_RULES
        attack = attack_of.get(v["contributor_id"])
        if attack is not None:
            kept[attack] += int(not other_rule and i not in clawed)
            kept_live[attack] += int(v["state"] != "clawed_back")
        else:
            role = role_of[v["contributor_id"]]
            honest[role] += 1
            honest_clawed[role] += int(not other_rule and i in clawed)
            honest_clawed_live[role] += int(v["clawback_reason"] in GRAPH_RULES)
    return {
        "run": str(run_dir),
        "seed": out.run.get("seed"),
        "earned_visits": len(visits),
        "unmatched": missing,
        "attack_visits_kept": {k: n for k, n in sorted(kept.items()) if n},
        "attack_visits_kept_in_the_run": {k: n for k, n in sorted(kept_live.items()) if n},
        "honest_visits_clawed_by_graph_rules": dict(sorted(honest_clawed.items())),
        "honest_visits_clawed_by_graph_rules_in_the_run": dict(sorted(honest_clawed_live.items())),
        "honest_earned_visits": dict(sorted(honest.items())),
        "held_then_released": len(held - clawed),
    }


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument(
        "runs", nargs="+", type=Path, help="bench_alliance run directories (/tmp/rf-bench-alliance-*)"
    )
    p.add_argument(
        "--step-hours",
        type=float,
        default=0.02,
        help="alliance hours between settlement passes (0.5 misses the tail's)",
    )
    p.add_argument(
        "--after-day",
        action="store_true",
        help="the end-of-day design: member-graph verdicts only from passes after the visit's alliance day",
    )
    args = p.parse_args()
    window_h = Policy().evidence_window_s / HOUR
    print(".venv/bin/python bench/bench_alliance_replay.py " + " ".join(sys.argv[1:]))
    for run_dir in args.runs:
        if not (run_dir / "outcome.pickle").exists():
            print(f"{run_dir}: no outcome.pickle (a run that did not finish): skipped")
            continue
        r = replay(run_dir, args.step_hours, Patterns(), window_h, args.after_day)
        print(
            f"{r['run']} seed {r['seed']}: {r['earned_visits']} earned visits ({r['unmatched']} unmatched);"
            f" attack visits kept {r['attack_visits_kept']} (in the run {r['attack_visits_kept_in_the_run']});"
            f" honest visits clawed by the graph rules {r['honest_visits_clawed_by_graph_rules']}"
            f" (in the run {r['honest_visits_clawed_by_graph_rules_in_the_run']}) of {r['honest_earned_visits']};"
            f" held then released {r['held_then_released']}"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
