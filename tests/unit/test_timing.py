"""Repetition statistics: the median's interval, the stopping rule, ratio intervals."""
from __future__ import annotations

import math
import random
import statistics

import pytest

from prunebench import timing


def _coverage(n: int, j: int) -> float:
    """P(x(j) <= median <= x(n+1-j)) for a continuous distribution, by direct summation:
    the interval misses when fewer than j values fall below the median, or fewer than j above."""
    below = sum(math.comb(n, i) for i in range(j)) / 2 ** n
    return 1 - 2 * below


@pytest.mark.parametrize("n", range(1, 31))
def test_median_ci_ranks_are_the_narrowest_with_95_coverage(n):
    ranks = timing.median_ci_ranks(n)
    feasible = [j for j in range(1, n // 2 + 1) if _coverage(n, j) >= 0.95]
    if not feasible:
        assert ranks is None
    else:
        j = max(feasible)
        assert ranks == (j, n + 1 - j)


def test_no_interval_below_six_runs():
    assert timing.median_ci([1.0, 2, 3, 4, 5]) is None
    assert timing.median_ci([3.0, 1, 2, 6, 5, 4]) == (1.0, 6.0)


def test_median_ci_covers_the_true_median_at_least_95_percent():
    rng = random.Random(1)
    for n in (6, 10, 20):
        hits = 0
        trials = 3000
        for _ in range(trials):  # lognormal: skewed like latencies; true median = 1
            xs = [math.exp(rng.gauss(0, 0.3)) for _ in range(n)]
            lo, hi = timing.median_ci(xs)
            hits += lo <= 1.0 <= hi
        assert hits / trials >= 0.93, (n, hits / trials)


def test_summary_fields():
    xs = [1.0, 1.1, 0.9, 1.05, 0.95, 1.02]
    s = timing.summary(xs)
    assert s["median"] == statistics.median(xs)
    assert (s["ci_low"], s["ci_high"]) == (0.9, 1.1)
    assert s["rel_ci"] == pytest.approx(0.2 / (2 * s["median"]))
    assert s["spread"] == pytest.approx(0.2 / s["median"])
    assert timing.summary([2.0])["ci_low"] is None


class FakeClock:
    def __init__(self):
        self.t = 0.0

    def __call__(self):
        return self.t


def _drive(rule, sequence, seconds_per_run=1.0):
    clock = FakeClock()
    it = iter(sequence)

    def one():
        clock.t += seconds_per_run
        return next(it)

    rep = timing.Repeat(rule)
    rep.go(one, one, clock)
    return rep


def test_stable_sequence_stops_at_min_runs():
    rule = timing.StoppingRule(min_runs=6, max_runs=20, target_rel_ci=0.02, warmup_runs=1)
    rep = _drive(rule, [5.0] + [1.0 + 0.001 * (i % 3) for i in range(50)])
    assert rep.stop_reason == "target"
    assert len(rep.latencies) == 6
    assert rule.is_stable(rep.latencies)


def test_noisy_sequence_runs_to_the_cap_and_is_unstable():
    rng = random.Random(0)
    noisy = [rng.uniform(1.0, 2.0) for _ in range(100)]
    rule = timing.StoppingRule(min_runs=6, max_runs=15, target_rel_ci=0.02, max_seconds=1e9,
                               warmup_runs=1, max_warmup_runs=1)
    rep = _drive(rule, noisy)
    assert rep.stop_reason == "max_runs"
    assert len(rep.latencies) == 15
    assert not rule.is_stable(rep.latencies)


def test_time_cap_stops_before_min_runs():
    rule = timing.StoppingRule(min_runs=6, max_runs=20, max_seconds=3.5, warmup_runs=0)
    rep = _drive(rule, [1.0] * 50, seconds_per_run=1.0)
    assert rep.stop_reason == "max_seconds"
    assert len(rep.latencies) == 4
    assert not rule.is_stable(rep.latencies)


def test_time_cap_counts_only_the_runs_kept_timed():
    # 9.0 and 3.0 are taken as warm-up after they ran timed: their 2 s do not count against the
    # 3.5 s cap, which then allows 4 timed runs as without warm-up (test_time_cap_stops_before_min_runs)
    rule = timing.StoppingRule(min_runs=6, max_runs=20, max_seconds=3.5, warmup_runs=0, max_warmup_runs=2)
    rep = _drive(rule, [9.0, 3.0] + [1.0] * 50, seconds_per_run=1.0)
    assert rep.warmups == [9.0, 3.0]
    assert rep.stop_reason == "max_seconds"
    assert rep.latencies == [1.0] * 4


def test_warmup_lasts_until_the_latency_settles():
    # a slow first timed run (allocator growth, lazy init) is taken as warm-up, not timed
    rule = timing.StoppingRule(min_runs=6, warmup_runs=1, max_warmup_runs=3, settle_rel=0.05)
    rep = _drive(rule, [9.0, 3.0, 1.0] + [1.0] * 20)
    assert rep.warmups == [9.0, 3.0]
    assert rep.latencies == [1.0] * 6
    # and no more than max_warmup_runs in all
    rep = _drive(timing.StoppingRule(min_runs=6, warmup_runs=1, max_warmup_runs=2),
                 [9.0, 5.0, 3.0, 1.0] + [1.0] * 20)
    assert rep.warmups == [9.0, 5.0]
    assert rep.latencies[0] == 3.0


def test_rule_checks_its_settings():
    with pytest.raises(ValueError, match="min_runs"):
        timing.StoppingRule(min_runs=5, max_runs=3)
    with pytest.raises(ValueError, match="warmup"):
        timing.StoppingRule(warmup_runs=4, max_warmup_runs=3)


def _independent_bootstrap(a, b, n_boot, rng):
    """Ratio of medians, resampled with numpy-free plain loops (a second implementation)."""
    out = []
    for _ in range(n_boot):
        ra = sorted(rng.choice(a) for _ in a)
        rb = sorted(rng.choice(b) for _ in b)
        out.append(statistics.median(ra) / statistics.median(rb))
    out.sort()
    return out[int(0.025 * n_boot)], out[int(0.975 * n_boot) - 1]


def test_ratio_ci_against_an_independent_bootstrap():
    rng = random.Random(3)
    dense = [2.0 * math.exp(rng.gauss(0, 0.05)) for _ in range(10)]
    pruned = [1.4 * math.exp(rng.gauss(0, 0.05)) for _ in range(10)]
    r, lo, hi = timing.ratio_ci(dense, pruned, n_boot=4000, seed=1)
    assert r == pytest.approx(statistics.median(dense) / statistics.median(pruned))
    lo2, hi2 = _independent_bootstrap(dense, pruned, 4000, random.Random(7))
    assert lo == pytest.approx(lo2, rel=0.02) and hi == pytest.approx(hi2, rel=0.02)
    assert lo < r < hi
    assert timing.verdict(lo, hi) == "faster"


def test_ratio_ci_noise_free_is_the_point_and_seeded():
    r, lo, hi = timing.ratio_ci([2.0] * 6, [1.0] * 6)
    assert (r, lo, hi) == (2.0, 2.0, 2.0)
    a, b = [1.0, 1.2, 0.9, 1.1, 1.05, 0.97], [1.0, 1.3, 0.8, 1.1, 1.2, 0.9]
    assert timing.ratio_ci(a, b, seed=5) == timing.ratio_ci(a, b, seed=5)


def test_ratio_ci_has_no_interval_without_a_median_interval_on_both_sides():
    # 2 runs a side: a bootstrap would say (1.204, 1.042, 1.368); no 95 % interval of either median exists
    r, lo, hi = timing.ratio_ci([1.0, 1.30], [0.95, 0.96])
    assert r == pytest.approx(1.15 / 0.955) and lo is None and hi is None
    assert timing.verdict(lo, hi) == "unclear"
    assert timing.ratio_ci([2.0] * 6, [1.0] * 5)[1:] == (None, None)
    assert timing.ratio_ci([2.0] * 5, [1.0] * 6)[1:] == (None, None)
    assert [n for n in range(1, 12) if timing.has_median_ci(n)] == list(range(6, 12))


def test_verdict_needs_the_whole_interval_on_one_side():
    assert timing.verdict(1.01, 1.5) == "faster"
    assert timing.verdict(0.5, 0.99) == "slower"
    assert timing.verdict(0.9, 1.1) == "unclear"
    assert timing.verdict(None, None) == "unclear"
