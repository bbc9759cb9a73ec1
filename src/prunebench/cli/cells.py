"""``prunebench cells [NAME]``: an experiment's benchmark cell files, filtered -- to run the grid in slices.

    prunebench cells paper-random --model llama-7b --out 128 --batch 1 16 64   # paths, one a line
    prunebench cells paper --count                                              # how many

NAME is an experiment (``prunebench run NAME``; default config.yaml's); ``--random-weights``
and ``--configfile FILE...`` as for ``prunebench run``.  The paths are relative to the
checkout; ``--missing`` keeps those not there (from the current folder).  Give them to
``prunebench cell`` to run exactly those.

``--estimate DIR`` prints, on stderr, each listed cell's estimated GPU seconds and the total,
from the cell files under ``DIR/bench`` (e.g. ``docs/reproduction/h100``); ``--budget S`` stops
the list where the estimates add up to S seconds -- a slice that fits a time-limited node:

    prunebench cells paper-random --out 512 --missing --estimate docs/reproduction/h100 --budget 500

Estimate of a cell = 12 s of start-up (Python, CUDA, weights; measured 10-14 s) + its
compile time + (warm-up runs + timed runs) x its latency, the latency taken from the measured
cells of the same model, method, backend and input/output lengths (interpolated in log
batch), else from the other output length (scaled by the length ratio), else the other input
length.  Rough: it ignores how attention grows with length at large batches.
"""
from __future__ import annotations

import argparse
import json
import math
import sys
from pathlib import Path

from .. import config as pbconfig
from .. import paths
from .workflow import UsageError, checkout, experiments, load_config, resolve


STARTUP_S = 12.0


def measured(results: Path) -> dict:
    """{(model, method, backend, in_len, out_len): {batch: (latency_s, compile_s)}} of the ok cells."""
    out: dict = {}
    for f in sorted((results / "bench").rglob("*.json")):
        r = json.loads(f.read_text())
        if r.get("status") == "ok" and r.get("latency_s"):
            key = (r["model"], r["method"], r["backend"], r["in_len"], r["out_len"])
            out.setdefault(key, {})[r["batch"]] = (r["latency_s"], r.get("compile_s") or 0.0)
    return out


def _interp(points: dict, batch: int) -> tuple[float, float]:
    """(latency, compile) at ``batch`` from {batch: (latency, compile)}: linear in log batch, clamped."""
    bs = sorted(points)
    lo = max([b for b in bs if b <= batch], default=bs[0])
    hi = min([b for b in bs if b >= batch], default=bs[-1])
    if lo == hi:
        return points[lo]
    t = (math.log(batch) - math.log(lo)) / (math.log(hi) - math.log(lo))
    return tuple(a + (b - a) * t for a, b in zip(points[lo], points[hi]))


def estimate(cell: dict, known: dict, runs: int) -> float | None:
    """Estimated GPU seconds of one cell (see the module docstring), None if nothing is comparable."""
    m, me, be, i, o, b = (cell[k] for k in ("model", "method", "backend", "in_len", "out_len", "batch"))
    tries = [((m, me, be, i, o), 1.0)]
    tries += [((m, me, be, i, o2), o / o2) for (m2, me2, be2, i2, o2) in known if (m2, me2, be2, i2) == (m, me, be, i) and o2 != o]
    tries += [((m, me, be, i2, o), 1.0) for (m2, me2, be2, i2, o2) in known if (m2, me2, be2, o2) == (m, me, be, o) and i2 != i]
    for key, scale in tries:
        if key in known:
            lat, comp = _interp(known[key], b)
            return STARTUP_S + comp + runs * lat * scale
    return None


def main(argv: list[str]) -> int:
    ap = argparse.ArgumentParser(prog="prunebench cells", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("name", nargs="?", help="the experiment (default: config.yaml's)")
    ap.add_argument("--random-weights", action="store_true", help="the experiment NAME-random")
    ap.add_argument("--configfile", nargs="+", default=[], help="files merged over the experiment's config")
    ap.add_argument("--model", nargs="*")
    ap.add_argument("--method", nargs="*")
    ap.add_argument("--backend", nargs="*")
    ap.add_argument("--in", dest="in_len", type=int, nargs="*")
    ap.add_argument("--out", dest="out_len", type=int, nargs="*")
    ap.add_argument("--batch", type=int, nargs="*")
    ap.add_argument("--missing", action="store_true", help="only cells whose file does not exist")
    ap.add_argument("--count", action="store_true", help="print how many cells are listed, not their paths")
    ap.add_argument("--estimate", metavar="DIR", help="estimate GPU seconds from the cells under DIR/bench (stderr)")
    ap.add_argument("--budget", type=float, metavar="S", help="with --estimate: stop when the estimates reach S seconds")
    args = ap.parse_args(argv[1:])
    if args.budget is not None and not args.estimate:
        ap.error("--budget needs --estimate DIR")
    try:
        root = checkout()
        exp = resolve(root, args.name or next(iter(experiments(root))), args.random_weights)
    except UsageError as exc:
        ap.error(str(exc))
    cfg = pbconfig.validate(load_config(root, exp, args.configfile), check_cuda=False)
    results = paths.experiment_dir(cfg["experiment"])
    keep = {"model": args.model, "method": args.method, "backend": args.backend,
            "in_len": args.in_len, "out_len": args.out_len, "batch": args.batch}
    known = measured(Path(args.estimate)) if args.estimate else None
    t = cfg["benchmark"]["timing"]  # a stable cell's runs: warm-up + min_runs (an unstable one: up to max_runs)
    runs = t["warmup_runs"] + t["min_runs"]
    total, unknown, listed = 0.0, 0, 0
    for c in pbconfig.cells(cfg):
        if all(v is None or c[k] in v for k, v in keep.items()):
            path = paths.cell_path(results, c)
            if args.missing and Path(path).exists():
                continue
            if known is not None:
                est = estimate(c, known, runs)
                if est is not None and args.budget is not None and total + est > args.budget:
                    break
                total += est or 0.0
                unknown += est is None
                print(f"{'?' if est is None else round(est)} s\t{path}", file=sys.stderr)
            if not args.count:
                print(path)
            listed += 1
    if args.count:
        print(listed)
    if known is not None:
        print(f"{listed} cells, about {total / 60:.0f} min of GPU time"
              + (f" (+ {unknown} cells without an estimate)" if unknown else ""), file=sys.stderr)
    return 0
