"""The settlement rules' binomial and Poisson tails equal scipy.stats' survival functions, without
importing scipy.stats in the product (its import cost every API process ~0.45 s of CPU)."""

from __future__ import annotations

import itertools

import pytest
from scipy.stats import binom, poisson

from alliance.settlement import binomial_tail, poisson_tail


@pytest.mark.parametrize(
    ("n", "p"), list(itertools.product([1, 2, 5, 12, 60, 400], [0.001, 0.02, 0.1, 0.37, 0.5, 0.9, 1.0]))
)
def test_the_binomial_tail_is_binom_sf_across_the_support_and_beyond(n: int, p: float) -> None:
    for k in range(-3, n + 3):
        assert binomial_tail(k, n, p) == pytest.approx(float(binom.sf(k, n, p)), rel=1e-9, abs=1e-300)


@pytest.mark.parametrize("mean", [0.0, 0.05, 0.5, 1.0, 3.7, 12.0, 90.0])
def test_the_poisson_tail_is_poisson_sf_across_the_support_and_below_it(mean: float) -> None:
    for k in range(-3, 150):
        assert poisson_tail(k, mean) == pytest.approx(float(poisson.sf(k, mean)), rel=1e-9, abs=1e-300)


def test_the_api_assembly_no_longer_imports_scipy_stats() -> None:
    import subprocess
    import sys

    code = "import sys, roomfeed.assembly; print('scipy.stats' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"
