#!/usr/bin/env python3
"""Print the benchmark cell files of a config, filtered -- to run the grid in slices.

    snakemake $(python scripts/cells.py --configfile workflow/presets/paper-random.yaml \
        --model llama-7b --out 128 --batch 1 16 64) --cores 1 \
        --configfile workflow/presets/paper-random.yaml

The config files are merged over config.yaml like Snakemake does (``--replace`` to not).

``--estimate DIR`` prints, on stderr, each listed cell's estimated GPU seconds and the total,
from the cell files under ``DIR/bench`` (e.g. ``docs/reproduction/h100``); ``--budget S`` stops
the list where the estimates add up to S seconds -- a slice that fits one device call:

    python scripts/cells.py --configfile $P --out 512 --missing --estimate docs/reproduction/h100 --budget 500

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

import yaml

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

from prunebench import config as pbconfig  # noqa: E402


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


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--configfile", nargs="*", default=[])
    ap.add_argument("--replace", action="store_true", help="do not start from config.yaml")
    ap.add_argument("--model", nargs="*")
    ap.add_argument("--method", nargs="*")
    ap.add_argument("--backend", nargs="*")
    ap.add_argument("--in", dest="in_len", type=int, nargs="*")
    ap.add_argument("--out", dest="out_len", type=int, nargs="*")
    ap.add_argument("--batch", type=int, nargs="*")
    ap.add_argument("--missing", action="store_true", help="only cells whose file does not exist")
    ap.add_argument("--estimate", metavar="DIR", help="estimate GPU seconds from the cells under DIR/bench (stderr)")
    ap.add_argument("--budget", type=float, metavar="S", help="with --estimate: stop when the estimates reach S seconds")
    args = ap.parse_args()
    if args.budget is not None and not args.estimate:
        ap.error("--budget needs --estimate DIR")
    cfg = {} if args.replace else yaml.safe_load((ROOT / "config.yaml").read_text())
    for f in args.configfile:
        pbconfig.merge(cfg, yaml.safe_load(Path(f).read_text()))
    pbconfig.validate(cfg, check_cuda=False)
    keep = {"model": args.model, "method": args.method, "backend": args.backend,
            "in_len": args.in_len, "out_len": args.out_len, "batch": args.batch}
    known = measured(Path(args.estimate)) if args.estimate else None
    bench = cfg["benchmark"]
    t = bench["timing"]  # a stable cell's runs: warm-up + min_runs (an unstable one: up to max_runs)
    runs = t["warmup_runs"] + t["min_runs"]
    total, unknown, listed = 0.0, 0, 0
    for c in pbconfig.cells(cfg):
        if all(v is None or c[k] in v for k, v in keep.items()):
            path = (f"results/bench/{c['model']}/{c['method']}/{c['backend']}/"
                    f"in{c['in_len']}_out{c['out_len']}_bs{c['batch']}.json")
            if args.missing and Path(path).exists():
                continue
            if known is not None:
                est = estimate(c, known, runs)
                if est is not None and args.budget is not None and total + est > args.budget:
                    break
                total += est or 0.0
                unknown += est is None
                print(f"{'?' if est is None else round(est)} s\t{path}", file=sys.stderr)
            print(path)
            listed += 1
    if known is not None:
        print(f"{listed} cells, about {total / 60:.0f} min of GPU time"
              + (f" (+ {unknown} cells without an estimate)" if unknown else ""), file=sys.stderr)


if __name__ == "__main__":
    main()
