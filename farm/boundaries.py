"""Group-sequential boundaries: the nominal p-value each look of a schedule must beat, for a total error.

A run's repeats at successive looks are nested (look 2 holds look 1's values) and the baseline is the same at
every look, so the looks' test statistics are strongly correlated. In the normal approximation the statistic
at look k is Z_k = S_k / sqrt(I_k), where the information I_k = 1 / (1/n_k + 1/m) (n_k run values, m baseline
values) and S_k has independent increments (corr(Z_j, Z_k) = sqrt(I_j / I_k)): the canonical joint distribution
of group-sequential tests (Jennison & Turnbull, ch. 3). The error is spent over the looks as
``total * (I_k / I_K) ** RHO``; each look's boundary is found so that the chance of first crossing there is
its share, by numerical integration of S_k's density over the region where no earlier look crossed
(the Armitage-McPherson-Rowe recursion) on a fixed grid: deterministic, so a stored run re-decides the same.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import numpy as np
    from numpy.typing import NDArray

RHO = 2.0
"""Spending shape total * t**RHO over the information fraction t: 1 spends evenly (Pocock-like), 3 keeps most
for the last look (O'Brien-Fleming-like). Chosen by simulation (docs/adaptive-repeats.md)."""

GRID = 801  # points of the density grid per look; the crossing probabilities are exact to about 1e-6


def information(run_values: Sequence[int], base_values: int) -> tuple[float, ...]:
    """Information at each look: the inverse variance (in units of the noise) of the run-minus-baseline shift."""
    return tuple(1.0 / (1.0 / n + 1.0 / base_values) for n in run_values)


def nominal_levels(total: float, info: Sequence[float]) -> tuple[float, ...]:
    """The one-sided nominal p each look must beat so that the chance of ever crossing is ``total``."""
    return _levels(round(total, 12), tuple(round(i, 9) for i in info))


@functools.lru_cache(maxsize=256)
def _levels(total: float, info: tuple[float, ...]) -> tuple[float, ...]:
    from scipy.stats import norm

    spent = [total * (i / info[-1]) ** RHO for i in info]
    z: list[float] = []
    density: Density | None = None  # S_(k-1) below look k-1's boundary
    for k, info_k in enumerate(info):
        share = spent[k] - (spent[k - 1] if k else 0.0)
        if density is None:
            z.append(float(norm.isf(share)))
        else:
            z.append(_solve(functools.partial(_crossing, density, info_k - info[k - 1], info_k), share))
        density = _continue(density, z[-1], info_k, info[k - 1] if k else 0.0)
    return tuple(float(norm.sf(v)) for v in z)


Density = tuple["NDArray[np.float64]", "NDArray[np.float64]"]
"""(grid of S values, probability mass at each point)"""


def _crossing(density: Density, step_var: float, info_k: float, zk: float) -> float:
    """P(no earlier crossing and Z_k > zk)."""
    import numpy as np
    from scipy.stats import norm

    grid, mass = density
    return float(np.sum(mass * norm.sf((zk * math.sqrt(info_k) - grid) / math.sqrt(step_var))))


def _solve(crossing: Callable[[float], float], share: float) -> float:
    """The boundary z whose crossing probability is ``share`` (bisection: crossing falls as z rises)."""
    lo, hi = -1.0, 12.0
    for _ in range(50):
        mid = (lo + hi) / 2
        lo, hi = (mid, hi) if crossing(mid) > share else (lo, mid)
    return (lo + hi) / 2


def _continue(density: Density | None, z: float, info_k: float, info_prev: float) -> Density:
    """S_k's probability mass below look k's boundary, from S_(k-1)'s below look k-1's."""
    import numpy as np
    from scipy.stats import norm

    grid = np.linspace(-10 * math.sqrt(info_k), z * math.sqrt(info_k), GRID)
    width = np.gradient(grid)
    if density is None:
        return grid, norm.pdf(grid, scale=math.sqrt(info_k)) * width
    sd = math.sqrt(info_k - info_prev)
    prev_grid, prev_mass = density
    kernel = norm.pdf((grid[:, None] - prev_grid[None, :]) / sd) / sd
    return grid, (kernel @ prev_mass) * width
