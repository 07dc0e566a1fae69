"""Is a difference between two cells real? Welch's t on the repeats (each repeat its own seed).

Accuracy: the difference of means in points, with Welch's 95% confidence interval. Throughput and memory:
the ratio of geometric means, with the interval of the difference of log means mapped back (Welch on the
logs), since those quantities compare by factors. At n = 3 a t-interval is honest about its width where a
bootstrap over three values would not be. The n needed to separate a difference: a two-sided 5% test with
80% power, per cell, from the pooled spread.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from scipy import stats as st

Z_POWER = 0.8416  # 80% power
Z_ALPHA = 1.9600  # two-sided 5%


@dataclass(frozen=True)
class Comparison:
    """``a`` against ``b``: an estimate, its 95% interval (None when n is too small) and whether the
    interval excludes no difference (0 for differences, 1 for ratios)."""

    estimate: float
    low: float | None
    high: float | None
    n_a: int
    n_b: int
    kind: str  # "difference" | "ratio"
    n_needed: float | None = None  # per cell, to separate a difference of this size

    @property
    def too_small(self) -> bool:
        return self.low is None

    @property
    def significant(self) -> bool:
        if self.too_small:
            return False
        null = 0.0 if self.kind == "difference" else 1.0
        return self.low > null or self.high < null


def _welch(a: list[float], b: list[float]) -> tuple[float, float | None]:
    """(mean(a) - mean(b), half-width of its 95% interval); None if either side has one value."""
    na, nb = len(a), len(b)
    ma, mb = sum(a) / na, sum(b) / nb
    if na < 2 or nb < 2:
        return ma - mb, None
    va = sum((x - ma) ** 2 for x in a) / (na - 1)
    vb = sum((x - mb) ** 2 for x in b) / (nb - 1)
    se2 = va / na + vb / nb
    if se2 == 0:
        return ma - mb, 0.0  # identical in every repeat: the difference is exact
    df = se2**2 / ((va / na) ** 2 / (na - 1) + (vb / nb) ** 2 / (nb - 1))
    return ma - mb, float(st.t.ppf(0.975, df)) * math.sqrt(se2)


def n_to_separate(a: list[float], b: list[float]) -> float | None:
    """Repeats per cell that would separate a difference of the observed size (80% power, 5% two-sided)."""
    if len(a) < 2 or len(b) < 2:
        return None
    ma, mb = sum(a) / len(a), sum(b) / len(b)
    var = (sum((x - ma) ** 2 for x in a) + sum((x - mb) ** 2 for x in b)) / (len(a) + len(b) - 2)
    if ma == mb:
        return math.inf
    return max(2.0, 2 * ((Z_ALPHA + Z_POWER) ** 2) * var / (ma - mb) ** 2)


def difference(a: list[float], b: list[float]) -> Comparison:
    d, half = _welch(a, b)
    low, high = (None, None) if half is None else (d - half, d + half)
    return Comparison(d, low, high, len(a), len(b), "difference", n_to_separate(a, b))


def ratio(a: list[float], b: list[float]) -> Comparison:
    """Geometric-mean ratio a / b with Welch's interval on the logs (all values must be > 0)."""
    la, lb = [math.log(x) for x in a], [math.log(x) for x in b]
    d, half = _welch(la, lb)
    low, high = (None, None) if half is None else (math.exp(d - half), math.exp(d + half))
    return Comparison(math.exp(d), low, high, len(a), len(b), "ratio", n_to_separate(la, lb))


def factor(x: float) -> str:
    """8,040x, 12.3x, 1.05x, 0.42x."""
    if x >= 100:
        return f"{x:,.0f}x"
    if x >= 10:
        return f"{x:.1f}x"
    return f"{x:.2f}x"


def needed(c: Comparison) -> str:
    """How many repeats per cell would separate a difference of the observed size: always more than ran."""
    n, need = min(c.n_a, c.n_b), c.n_needed
    if need is None or math.isinf(need):
        return "no number of repeats would separate identical means"
    return f"~{max(n + 1, math.ceil(need))} repeats per cell would separate a difference this size"


def describe_ratio(c: Comparison, what: str) -> str:
    """'803x the training throughput (95% CI 790x-815x)', or with 'not distinguishable at n = 3; ~N repeats per
    cell would ...' where the interval holds 1x."""
    text = f"{factor(c.estimate)} {what}"
    n = min(c.n_a, c.n_b)
    if c.too_small:
        return f"{text} (n too small for an interval: n = {n})"
    if c.low == c.high:
        return f"{text} (the same in every repeat)"
    interval = f"95% CI {factor(c.low)}-{factor(c.high)}"
    if c.significant:
        return f"{text} ({interval})"
    return f"{text} ({interval}, not distinguishable at n = {n}; {needed(c)})"


def describe_accuracy(c: Comparison) -> str:
    """'accuracy +0.1 pt (95% CI -0.2...+0.4, not distinguishable at n = 3; ~40 repeats per cell would separate it)'."""
    pt = 100 * c.estimate
    text = f"accuracy {pt:+.2f} pt"
    n = min(c.n_a, c.n_b)
    if c.too_small:
        return f"{text} (n too small to tell: n = {n}; at least 2 repeats per cell give an interval)"
    interval = f"95% CI {100 * c.low:+.2f}...{100 * c.high:+.2f}"
    if c.significant:
        return f"{text} ({interval}, a real difference at n = {n})"
    return f"{text} ({interval}, not distinguishable at n = {n}; {needed(c)})"


def mean_interval(values: list[float]) -> tuple[float, float, float]:
    """(mean, low, high): the mean of one cell's repeats and its 95 % t-interval (NaN bounds under two repeats)."""
    n = len(values)
    mean = sum(values) / n if n else math.nan
    if n < 2:
        return mean, math.nan, math.nan
    half = st.t.ppf(0.975, n - 1) * st.tstd(values) / math.sqrt(n)
    return mean, mean - half, mean + half
