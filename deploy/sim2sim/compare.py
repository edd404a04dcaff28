"""Paired comparisons with confidence: the gate's decision from sample sizes.

Each episode (scenario x gate seed) gives one value per statistic on each side; the pairs share
the episode, so the per-episode difference removes what the scenario itself does (a sweep at
1 m/s moves the joints differently from standing). For each statistic the mean difference gets
a two-sided Student-t interval at confidence 1 - alpha / K (Bonferroni over the K statistics, so
that alpha bounds the chance of any false alarm in a verdict). A statistic is *different* when
the whole interval lies beyond its tolerance (calibrate.py: what two correct paths differ by),
*worse* (regression) when the interval's lower end exceeds the tolerance in the bad direction.

Regression (a candidate against the running bundle) runs every scenario, latency and doubled
noise included, where a policy that copes badly produces outliers (one episode rocking at 7 rad/s
among ones at 0.6) that make a mean's interval useless; it holds the *median* difference to a
distribution-free interval instead (order statistics of the differences, binomial coverage; the
sign test's interval), one-sided in the bad direction.

Effect sizes come with every row: the mean difference, in tolerance units and in units of the
differences' own spread (Cohen's d for paired samples)."""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from statistics import NormalDist

import numpy as np

ALPHA = 0.01


def t_quantile(p: float, dof: int) -> float:
    """Student-t quantile (Cornish-Fisher expansion around the normal one: within 1e-3 of the
    exact value for dof >= 5 at the tails used here; numpy has no t distribution and the robot
    computer does not install scipy)."""
    z = NormalDist().inv_cdf(p)
    v = float(dof)
    return (z + (z ** 3 + z) / (4 * v) + (5 * z ** 5 + 16 * z ** 3 + 3 * z) / (96 * v ** 2)
            + (3 * z ** 7 + 19 * z ** 5 + 17 * z ** 3 - 15 * z) / (384 * v ** 3)
            + (79 * z ** 9 + 776 * z ** 7 + 1482 * z ** 5 - 1920 * z ** 3 - 945 * z) / (92160 * v ** 4))


@dataclass
class Row:
    statistic: str
    pairs: int
    mean_a: float          # the side under test (deployment, or the candidate)
    mean_b: float          # the side it is held to (reference, or the running bundle)
    diff: float            # mean of a - b (the median in a regression)
    low: float             # confidence interval of diff
    high: float
    se: float              # standard error of diff
    tolerance: float
    effect: float          # diff / tolerance
    cohen_d: float         # diff / sd of the pair differences
    flagged: bool

    def to_dict(self) -> dict:
        return {k: (round(v, 6) if isinstance(v, float) and math.isfinite(v) else
                    (None if isinstance(v, float) else v)) for k, v in asdict(self).items()}

    def reason(self, what: str) -> str:
        return (f"{self.statistic}: {what} by {self.diff:+.4g} (interval [{self.low:+.4g}, "
                f"{self.high:+.4g}] over {self.pairs} pairs, tolerance {self.tolerance:.3g}, "
                f"d = {self.cohen_d:+.2f})")


def median_bounds(d: np.ndarray, alpha: float) -> tuple[float, float]:
    """One-sided (1 - alpha) bounds of the median of d: the k-th smallest and k-th largest value,
    k the largest with P(Binomial(n, 1/2) <= k - 1) <= alpha; (-inf, inf) when n is too small."""
    n, cdf, k = len(d), 0.0, 0
    while k < n:
        cdf += math.comb(n, k) / 2.0 ** n
        if cdf > alpha:
            break
        k += 1
    if k == 0:
        return -math.inf, math.inf
    s = np.sort(d)
    return float(s[k - 1]), float(s[n - k])


def paired(names: list[str], a: np.ndarray, b: np.ndarray, tolerance: dict[str, float],
           alpha: float = ALPHA, worse: dict[str, int] | None = None) -> list[Row]:
    """Rows for the statistics that have a tolerance. `a`, `b`: (pairs, statistics). With `worse`
    (statistic -> +1 where larger is worse, -1 where smaller is), only those statistics are
    tested, on the median difference, and only a one-sided move in the bad direction is flagged."""
    tested = [i for i, n in enumerate(names) if n in tolerance and (worse is None or n in worse)]
    k = max(1, len(tested))
    rows = []
    for i in tested:
        name = names[i]
        ok = np.isfinite(a[:, i]) & np.isfinite(b[:, i])
        d = a[ok, i] - b[ok, i]
        n, tol = int(ok.sum()), float(tolerance[name])
        if n < 3:
            rows.append(Row(name, n, math.nan, math.nan, math.nan, math.nan, math.nan, math.nan,
                            tol, math.nan, math.nan, False))
            continue
        mean, sd = float(d.mean()), float(d.std(ddof=1))
        se = sd / math.sqrt(n)
        if worse is None:
            half = t_quantile(1 - alpha / (2 * k), n - 1) * se
            low, high = mean - half, mean + half
            flagged = low > tol or high < -tol
        else:
            mean = float(np.median(d))
            low, high = median_bounds(d, alpha / k)
            flagged = (low > tol) if worse[name] > 0 else (high < -tol)
        rows.append(Row(name, n, float(a[ok, i].mean()), float(b[ok, i].mean()), mean, low, high,
                        se, tol, mean / tol if tol > 0 else math.inf, mean / sd if sd > 0 else
                        (0.0 if mean == 0 else math.copysign(math.inf, mean)), flagged))
    return rows
