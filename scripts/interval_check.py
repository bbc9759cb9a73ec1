"""How far the benchmark's intervals can be trusted: two simulations on synthetic runs.

1. Ratios over few runs: two cells drawn from the same distribution (true speed-up 1,
   lognormal runs of spread ``--sigma``), ``n`` runs a side; how often a percentile bootstrap
   of the ratio of medians (as ``prunebench.timing.ratio_ci`` computes it) excludes 1, i.e.
   calls the pair faster or slower.  At 95 % this should be about 5 %.  ``ratio_ci`` gives no
   interval where either side has too few runs for an interval of its median (below 6).
2. Coverage of a cell's interval under the stopping rule: cells of i.i.d. lognormal runs
   (true median 1) timed with the default ``benchmark.timing`` rule, which stops as soon as
   the interval is narrow enough; how often the final interval holds the true median, over
   all cells and over the cells flagged stable.

    .venv/bin/python scripts/interval_check.py [--trials 1000] [--cells 4000]

Synthetic numbers only (no model, no GPU); seeded, so the output repeats exactly.
"""
from __future__ import annotations

import argparse
import random
import statistics
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

from prunebench import timing  # noqa: E402


def bootstrap_excludes_one(rng: random.Random, n: int, sigma: float, n_boot: int = 400) -> bool:
    base = [rng.lognormvariate(0, sigma) for _ in range(n)]
    other = [rng.lognormvariate(0, sigma) for _ in range(n)]
    boots = sorted(statistics.median(rng.choices(base, k=n)) / statistics.median(rng.choices(other, k=n))
                   for _ in range(n_boot))
    lo, hi = boots[int(0.025 * n_boot)], boots[int(0.975 * n_boot) - 1]
    return lo > 1 or hi < 1


def covered(rng: random.Random, sigma: float) -> tuple[bool, bool]:
    """(the final interval holds the true median 1, the cell is stable) for one simulated cell."""
    rule = timing.StoppingRule.from_config(None)
    draw = (lambda: rng.lognormvariate(0, sigma))
    rep = timing.Repeat(rule)
    ticks = iter(range(10 ** 6))
    rep.go(draw, draw, clock=lambda: float(next(ticks)) * 1e-3)  # time never caps
    ci = timing.median_ci(rep.latencies)
    return ci is not None and ci[0] <= 1 <= ci[1], rule.is_stable(rep.latencies)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--trials", type=int, default=1000, help="pairs per row of the ratio check")
    ap.add_argument("--cells", type=int, default=4000, help="cells per row of the coverage check")
    ap.add_argument("--sigma", type=float, default=0.05, help="spread of the runs in the ratio check")
    args = ap.parse_args()
    rng = random.Random(0)
    print(f"1. equally fast pairs called faster or slower by a 95 % bootstrap (spread {args.sigma:.0%}):")
    for n in (2, 3, 4, 6, 10, 20):
        wrong = sum(bootstrap_excludes_one(rng, n, args.sigma) for _ in range(args.trials))
        given = "given" if timing.has_median_ci(n) else "not given (fewer than 6 runs)"
        print(f"   {n:2d} runs a side: {wrong / args.trials:6.1%}   prunebench: interval {given}")
    print("2. cells whose final interval holds the true median, default stopping rule:")
    for sigma in (0.01, 0.02, 0.03, 0.05):
        results = [covered(rng, sigma) for _ in range(args.cells)]
        stable = [c for c, s in results if s]
        print(f"   spread {sigma:.0%}: all cells {sum(c for c, _ in results) / len(results):6.1%}, "
              f"stable cells {sum(stable) / max(len(stable), 1):6.1%} ({len(stable)} of {len(results)} stable)")


if __name__ == "__main__":
    main()
