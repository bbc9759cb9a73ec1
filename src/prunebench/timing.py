"""Repetition statistics for the benchmark: when to stop timing, and how sure a number is.

Pure Python (no torch): the benchmark stage, the aggregate stage and the report all use it.

Median and its interval
    A cell's latency is the median of its timed runs.  Its 95 % confidence interval is
    distribution-free, from order statistics: with ``n`` runs sorted ``x(1) <= ... <= x(n)``,
    ``[x(j), x(n+1-j)]`` covers the true median with probability
    ``1 - 2 P(B <= j - 1)``, ``B ~ Binomial(n, 1/2)``; :func:`median_ci` takes the largest
    ``j`` whose coverage is still >= the level.  No such interval exists below 6 runs at
    95 % (``[x(1), x(5)]`` covers with probability 1 - 2/32 = 93.75 %): then the interval
    is ``None``.  Its *relative half-width* is ``(hi - lo) / (2 x median)``.

Stopping rule (:class:`StoppingRule`)
    Timed runs go on until the interval's relative half-width is at most ``target_rel_ci``
    (after at least ``min_runs``), or ``max_runs`` runs, or ``max_seconds`` of timed runs
    (whichever comes first).  The cell is ``stable`` when it stopped on the target; a cell
    stopped by a cap is recorded with its (wide or missing) interval and ``stable: false``.
    Warm-up lasts until the latency settles (:class:`Repeat`).

Ratios (:func:`ratio_ci`)
    The speed-up of a method over dense is ``median(dense) / median(method)``; its interval
    is a percentile bootstrap: both run sets resampled with replacement, seeded, so a
    report regenerates byte for byte.  There is no ratio interval where either cell has
    too few runs for an interval of its median (:func:`has_median_ci`: below 6 runs): a
    bootstrap over so few runs understates the uncertainty (over 2 runs a side, about a third of
    equally fast pairs come out faster or slower).  A method is *faster* only where the
    whole interval lies above 1 (:func:`verdict`).
"""
from __future__ import annotations

import math
import random
import statistics
from dataclasses import dataclass, field

LEVEL = 0.95


def quantile(values: list[float], q: float) -> float:
    """Linear-interpolated quantile (numpy's default method), ``q`` in [0, 1]."""
    xs = sorted(values)
    if not xs:
        raise ValueError("no values")
    pos = (len(xs) - 1) * q
    lo = int(pos)
    hi = min(lo + 1, len(xs) - 1)
    return xs[lo] + (xs[hi] - xs[lo]) * (pos - lo)


def _binom_cdf_half(k: int, n: int) -> float:
    """P(B <= k) for B ~ Binomial(n, 1/2)."""
    return sum(math.comb(n, i) for i in range(k + 1)) / 2 ** n


def median_ci_ranks(n: int, level: float = LEVEL) -> tuple[int, int] | None:
    """1-based ranks ``(j, n + 1 - j)`` of the order-statistic interval of the median, or None."""
    best = None
    for j in range(1, n // 2 + 1):
        if 1 - 2 * _binom_cdf_half(j - 1, n) >= level:
            best = j
        else:
            break
    return None if best is None else (best, n + 1 - best)


def has_median_ci(n: int, level: float = LEVEL) -> bool:
    """Whether ``n`` runs have a ``level`` interval of their median (at 95 %: ``n >= 6``)."""
    return median_ci_ranks(n, level) is not None


def median_ci(values: list[float], level: float = LEVEL) -> tuple[float, float] | None:
    """Distribution-free ``level`` interval of the median of ``values`` (None: too few values)."""
    ranks = median_ci_ranks(len(values), level)
    if ranks is None:
        return None
    xs = sorted(values)
    return xs[ranks[0] - 1], xs[ranks[1] - 1]


def rel_halfwidth(values: list[float], level: float = LEVEL) -> float | None:
    ci = median_ci(values, level)
    if ci is None:
        return None
    med = statistics.median(values)
    return (ci[1] - ci[0]) / (2 * med) if med > 0 else math.inf


def summary(values: list[float], level: float = LEVEL) -> dict:
    """Median, interval, relative half-width, p10/p90 and spread ((max - min) / median)."""
    med = statistics.median(values)
    ci = median_ci(values, level)
    return {
        "median": med,
        "ci_low": None if ci is None else ci[0],
        "ci_high": None if ci is None else ci[1],
        "rel_ci": None if ci is None else (ci[1] - ci[0]) / (2 * med) if med > 0 else None,
        "p10": quantile(values, 0.10),
        "p90": quantile(values, 0.90),
        "spread": (max(values) - min(values)) / med if med > 0 else None,
    }


# --------------------------------------------------------------------------- stopping

#: ``benchmark.timing`` keys and their defaults (the config schema is checked against these)
DEFAULTS = {
    "min_runs": 6,            # the fewest runs with a 95 % order-statistic interval
    "max_runs": 20,
    "target_rel_ci": 0.02,    # stop once the interval's half-width is <= 2 % of the median
    "max_seconds": 120.0,     # timed runs of one cell stop after this much time
    "warmup_runs": 1,         # at least this many warm-up runs ...
    "max_warmup_runs": 3,     # ... and more, up to this many, until two runs agree within settle_rel
    "settle_rel": 0.05,
}


@dataclass
class StoppingRule:
    min_runs: int = DEFAULTS["min_runs"]
    max_runs: int = DEFAULTS["max_runs"]
    target_rel_ci: float = DEFAULTS["target_rel_ci"]
    max_seconds: float = DEFAULTS["max_seconds"]
    warmup_runs: int = DEFAULTS["warmup_runs"]
    max_warmup_runs: int = DEFAULTS["max_warmup_runs"]
    settle_rel: float = DEFAULTS["settle_rel"]

    def __post_init__(self):
        if not 1 <= self.min_runs <= self.max_runs:
            raise ValueError(f"benchmark.timing: need 1 <= min_runs <= max_runs (got {self.min_runs}, {self.max_runs})")
        if not 0 <= self.warmup_runs <= self.max_warmup_runs:
            raise ValueError("benchmark.timing: need 0 <= warmup_runs <= max_warmup_runs "
                             f"(got {self.warmup_runs}, {self.max_warmup_runs})")

    @classmethod
    def from_config(cls, timing: dict | None) -> "StoppingRule":
        return cls(**{**DEFAULTS, **(timing or {})})

    def settled(self, first: float, second: float) -> bool:
        """Whether two consecutive full-length runs agree within ``settle_rel``."""
        return abs(first - second) <= self.settle_rel * max(first, second)

    def done(self, latencies: list[float], elapsed_s: float) -> tuple[bool, str | None]:
        """``(stop, reason)`` after these timed latencies; reason: target, max_runs, max_seconds."""
        n = len(latencies)
        if n >= self.min_runs:
            rel = rel_halfwidth(latencies)
            if rel is not None and rel <= self.target_rel_ci:
                return True, "target"
        if n >= self.max_runs:
            return True, "max_runs"
        if elapsed_s >= self.max_seconds:
            return True, "max_seconds"
        return False, None

    def is_stable(self, latencies: list[float]) -> bool:
        rel = rel_halfwidth(latencies) if len(latencies) >= self.min_runs else None
        return rel is not None and rel <= self.target_rel_ci


@dataclass
class Repeat:
    """Drive warm-up and timed runs; ``run_warmup()`` / ``run_timed()`` return one latency (s).

    ``warmup_runs`` warm-up runs come first.  Then, while the first two timed runs disagree
    by more than ``settle_rel``, the first is taken as one more warm-up run (up to
    ``max_warmup_runs`` warm-ups in all): warm-up lasts until the latency settles, at no cost
    where it already has.  ``max_seconds`` counts the runs that stay timed: a run taken as
    warm-up does not count.  ``clock`` is the time source of ``max_seconds`` (tests pass a fake)."""

    rule: StoppingRule
    warmups: list[float] = field(default_factory=list)
    latencies: list[float] = field(default_factory=list)
    stop_reason: str | None = None

    def go(self, run_warmup, run_timed, clock, progress=None) -> None:
        rule = self.rule
        for _ in range(rule.warmup_runs):
            self.warmups.append(run_warmup())
        t0 = clock()  # start of the first timed run: max_seconds counts timed runs only
        while True:
            start = clock()
            self.latencies.append(run_timed())
            if (len(self.latencies) == 2 and len(self.warmups) < rule.max_warmup_runs
                    and not rule.settled(*self.latencies)):
                self.warmups.append(self.latencies.pop(0))
                t0 = start  # the run taken as warm-up does not count against max_seconds
            if progress is not None:
                progress(self.latencies)
            stop, why = rule.done(self.latencies, clock() - t0)
            if stop:
                self.stop_reason = why
                return


# --------------------------------------------------------------------------- ratios

def ratio_ci(base: list[float], other: list[float], *, level: float = LEVEL, n_boot: int = 2000,
             seed: int = 0) -> tuple[float, float | None, float | None]:
    """``median(base) / median(other)`` and its percentile-bootstrap interval ``(ratio, lo, hi)``.

    ``lo = hi = None`` (no interval) where either side has too few runs for a ``level``
    interval of its median (:func:`has_median_ci`)."""
    if not base or not other:
        raise ValueError("ratio_ci: empty run list")
    point = statistics.median(base) / statistics.median(other)
    if not (has_median_ci(len(base), level) and has_median_ci(len(other), level)):
        return point, None, None
    rng = random.Random(seed)
    boots = []
    nb, no = len(base), len(other)
    for _ in range(n_boot):
        b = statistics.median([base[rng.randrange(nb)] for _ in range(nb)])
        o = statistics.median([other[rng.randrange(no)] for _ in range(no)])
        boots.append(b / o)
    alpha = (1 - level) / 2
    return point, quantile(boots, alpha), quantile(boots, 1 - alpha)


def verdict(lo: float | None, hi: float | None) -> str:
    """``faster`` (interval above 1), ``slower`` (below 1) or ``unclear`` (the interval
    holds 1, or there is none)."""
    if lo is None or hi is None:
        return "unclear"
    if lo > 1:
        return "faster"
    if hi < 1:
        return "slower"
    return "unclear"
