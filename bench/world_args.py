"""The command line the world-family bench scripts share: which world-seeds to run (`WORLD:SEED`) and the
world's size, so each script (bench_ranker_*, bench_lightfm_*, bench_discovery_*, bench_gate_repeat) states
only what is its own."""

from __future__ import annotations

import argparse


def add_world_args(ap: argparse.ArgumentParser, targets: int | None = 4_000, nargs: str = "+") -> None:
    """`worlds` (WORLD:SEED ...), --viewers, --merchants, --targets (unless `targets` is None) and
    --world-cache, with the quick family's size as defaults."""
    ap.add_argument("worlds", nargs=nargs, help="WORLD:SEED")
    ap.add_argument("--viewers", type=int, default=10_000)
    ap.add_argument("--merchants", type=int, default=500)
    if targets is not None:
        ap.add_argument("--targets", type=int, default=targets)
    ap.add_argument("--world-cache", default="reports/worlds/cache")


def world_seed(spec: str) -> tuple[str, int]:
    """`loyal:2` -> ("loyal", 2); a world without a seed is seed 1."""
    world, _, seed = spec.partition(":")
    return world, int(seed or 1)
