"""``prunebench costs NAME|RESULTS``: what an experiment's jobs cost, from their Snakemake
``benchmark:`` files (``results/<experiment>/costs/<stage>/...tsv``, one per job, written next to
each job's log).

    prunebench costs demo                  # per stage: jobs, wall seconds, CPU seconds; total
    prunebench costs demo --jobs           # and every job, most CPU first
    prunebench costs results/demo --json   # the same as one JSON object

Wall seconds are each job's own (jobs that ran side by side overlap, so their sum is more
than the run's wall time); CPU seconds are user + system time of the job's processes, the
measure of work that does not depend on how many jobs ran at once.  Where the job's log
ends with the CPU seconds its process counted itself (every ``prunebench <stage>`` job
logs them), that number is taken: Snakemake samples a job's processes every second for
the first 30 s, then every 30 s, and its ``cpu_time`` misses whatever ran after the last
sample (up to 30 s of a long job, most of a short one).
"""
from __future__ import annotations

import argparse
import csv
import json
import sys
from pathlib import Path

from .. import paths
from .workflow import UsageError, checkout, experiments


def read_costs(results: Path) -> list[dict]:
    """One row per job: ``{"job", "stage", "wall_s", "cpu_s", "max_rss_mib"}``, from every
    ``costs/**/*.tsv`` under ``results``; a file that is not a Snakemake benchmark table is refused."""
    rows = []
    root = results / "costs"
    for f in sorted(root.rglob("*.tsv")):
        with open(f, newline="") as fh:
            table = list(csv.DictReader(fh, delimiter="\t"))
        if not table or not {"s", "cpu_time"} <= set(table[0]):
            raise UsageError(f"{f}: not a Snakemake benchmark file (columns 's' and 'cpu_time' expected)")
        r = table[-1]  # a job benchmarked with repeats: the last run
        name = f.relative_to(root).with_suffix("").as_posix()
        own = logged_cpu(results / "logs" / f"{name}.log")
        rows.append({"job": name, "stage": name.split("/")[0], "wall_s": _num(r, "s"),
                     "cpu_s": _num(r, "cpu_time") if own is None else own, "max_rss_mib": _num(r, "max_rss"),
                     "cpu_from": "sampled" if own is None else "log"})
    return rows


def logged_cpu(log: Path) -> float | None:
    """The CPU seconds a job's log ends with (:func:`prunebench.cli.stages.cpu_line`), or None."""
    from .stages import CPU_LINE

    try:
        with open(log, "rb") as fh:
            fh.seek(0, 2)
            fh.seek(max(0, fh.tell() - 16384))
            tail = fh.read().decode("utf-8", "replace")
    except OSError:
        return None
    found = CPU_LINE.findall(tail)
    return float(found[-1]) if found else None


def _num(row: dict, key: str) -> float:
    try:
        return float(row.get(key) or 0.0)
    except ValueError:  # Snakemake writes "NA" where it could not measure
        return 0.0


def summary(rows: list[dict]) -> dict:
    """Per stage and in total: jobs, summed wall seconds, summed CPU seconds."""
    stages: dict = {}
    for r in rows:
        s = stages.setdefault(r["stage"], {"jobs": 0, "wall_s": 0.0, "cpu_s": 0.0})
        s["jobs"] += 1
        s["wall_s"] += r["wall_s"]
        s["cpu_s"] += r["cpu_s"]
    total = {"jobs": len(rows), "wall_s": sum(r["wall_s"] for r in rows), "cpu_s": sum(r["cpu_s"] for r in rows)}
    return {"stages": stages, "total": total}


def _results_dir(target: str) -> Path:
    p = Path(target)
    if p.is_dir() and (p / "costs").is_dir():
        return p
    root = checkout()
    if target in experiments(root):
        return root / paths.experiment_dir(target)
    raise UsageError(f"{target!r} is neither an experiment of this checkout nor a results folder with costs/")


def main(argv: list[str]) -> int:
    ap = argparse.ArgumentParser(prog="prunebench costs", description=__doc__.split("\n\n")[0])
    ap.add_argument("target", help="an experiment name or a results/<experiment> folder")
    ap.add_argument("--jobs", action="store_true", help="list every job too, most CPU first")
    ap.add_argument("--json", action="store_true", help="print one JSON object")
    args = ap.parse_args(argv[1:])
    try:
        results = _results_dir(args.target)
        rows = read_costs(results)
    except UsageError as e:
        print(f"prunebench costs: {e}", file=sys.stderr)
        return 2
    if not rows:
        print(f"prunebench costs: no job costs under {results}/costs (the jobs have not run yet)", file=sys.stderr)
        return 1
    s = summary(rows)
    if args.json:
        print(json.dumps({**s, **({"jobs": rows} if args.jobs else {})}, indent=1))
        return 0
    print(f"{'stage':<12}{'jobs':>6}{'wall s':>10}{'CPU s':>10}")
    for name, st in sorted(s["stages"].items(), key=lambda kv: -kv[1]["cpu_s"]):
        print(f"{name:<12}{st['jobs']:>6}{st['wall_s']:>10.1f}{st['cpu_s']:>10.1f}")
    t = s["total"]
    print(f"{'total':<12}{t['jobs']:>6}{t['wall_s']:>10.1f}{t['cpu_s']:>10.1f}")
    sampled = sum(r["cpu_from"] == "sampled" for r in rows)
    if sampled:
        print(f"({sampled} of {len(rows)} jobs' CPU seconds sampled by Snakemake, not logged by the job: a lower bound)")
    if args.jobs:
        print()
        for r in sorted(rows, key=lambda r: -r["cpu_s"]):
            print(f"{r['cpu_s']:>9.1f} s CPU {r['wall_s']:>8.1f} s wall  {r['job']}")
    return 0
