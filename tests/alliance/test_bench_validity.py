"""bench_alliance's validity rule: a run whose apps' events reached the server late (lag × scale over
the minimum dwell in any busy minute) or whose requests failed is not evidence."""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path
from typing import Any

import pytest

from roomfeed.settings import REPO_ROOT

sys.path.insert(0, str(REPO_ROOT / "bench"))

from bench_alliance import (  # noqa: E402
    LAG_LIMIT_S,
    autogroup_nice,
    autogroup_of,
    cost,
    payback_misses,
    validity,
)


def minute(p90: float, n: int = 50) -> dict[str, Any]:
    return {"minute": None, "n": n, "p50": p90 / 2, "p90": p90}


def test_a_run_whose_events_arrived_on_time_is_valid() -> None:
    check = validity([minute(0.04), minute(0.2)], scale=40, requests=10_000, errors=3, timeouts=0)
    assert check["valid"] and check["minutes"] == 2 and check["minutes_over"] == 0
    assert check["worst_minute_lag_p90_alliance_s"] == 8.0


def test_one_late_minute_makes_a_run_invalid_and_says_so() -> None:
    late = LAG_LIMIT_S / 40 + 0.01  # just over the limit at scale 40
    check = validity([minute(0.04), minute(late)], scale=40, requests=10_000, errors=0, timeouts=0)
    assert not check["valid"] and check["minutes_over"] == 1
    assert "lag p90 × scale over 10 alliance s" in check["reasons"][0]
    # The same lag at a slower clock is within the rule; a quiet minute (few events) is not judged.
    assert validity([minute(late)], scale=6, requests=100, errors=0, timeouts=0)["valid"]
    assert validity([minute(0.04), minute(99.0, n=3)], scale=40, requests=100, errors=0, timeouts=0)["valid"]


def test_failed_requests_or_no_events_make_a_run_invalid() -> None:
    assert not validity([minute(0.01)], scale=40, requests=1000, errors=1, timeouts=1)["valid"]
    assert not validity([], scale=40, requests=0, errors=0, timeouts=0)["valid"]


def test_cost_per_simulated_hour_and_payback_misses() -> None:
    hours = [
        {"sim_hours": 1.0, "cpu_s": {"api": 10.0, "worker": 8.0}, "load": 3.0},
        {"sim_hours": 1.0, "cpu_s": {"api": 20.0, "worker": 12.0}, "load": 5.0},
        {"sim_hours": 0.2, "cpu_s": {"api": 50.0, "worker": 50.0}, "load": 9.0},  # a partial hour: left out
    ]
    c = cost(hours)
    assert c["cpu_s_per_sim_hour_mean"] == {"api": 15.0, "worker": 10.0}
    assert c["cpu_s_per_sim_hour_total_peak"] == 32.0
    statements = {
        "a": {
            "balance": 4.0,
            "held": 1.0,
            "expired": 0.0,
            "delivered": 5.0,
            "earned": 10.0,
            "clawed_back": 0.0,
        },
        "b": {
            "balance": 0.0,
            "held": 0.0,
            "expired": 0.0,
            "delivered": 13.0,
            "earned": 10.0,
            "clawed_back": 0.0,
        },
        "c": {
            "balance": 0.0,
            "held": 0.0,
            "expired": 0.0,
            "delivered": 10.0,
            "earned": 10.0,
            "clawed_back": 0.0,
        },
    }
    misses = payback_misses({"a": 0.5, "b": 1.3, "c": 1.0}, statements)
    assert (
        misses["short"] == 1 and misses["short_with_balance_owed"] == 1 and misses["short_owed_total"] == 4.0
    )
    assert misses["over"] == 1 and misses["over_delivered_total"] == 3.0


def test_the_autogroup_option_takes_a_nice_the_kernel_accepts() -> None:
    """`--autogroup NICE`: -20 … 19, anything else a clear argparse error naming the range."""
    assert [autogroup_nice(t) for t in ("-10", "-20", "0", "19")] == [-10, -20, 0, 19]
    for bad in ("-21", "20", "ten", "-10.5", ""):
        with pytest.raises(argparse.ArgumentTypeError, match="-20 … 19"):
            autogroup_nice(bad)


def test_a_process_autogroup_is_read_as_the_kernel_shows_it() -> None:
    """What the report records for each process: the kernel's line, None for a process that is gone."""
    mine = autogroup_of(os.getpid())
    if os.path.exists("/proc/self/autogroup") and Path("/proc/self/autogroup").read_text().strip():
        assert mine is not None and mine.startswith("/autogroup-") and " nice " in mine
    else:  # a kernel without autogroups, or with them switched off (an empty file)
        assert mine is None
    assert autogroup_of(2**22 + 1) is None  # above the kernel's pid_max: no such process
