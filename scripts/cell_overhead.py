#!/usr/bin/env python3
"""What a slice of cells cost besides timing: start-up, load, compile + capture, per cell.

    python scripts/cell_overhead.py results/paper/bench/llama-7b --backend compiled

For every cell file under the folders given (in the order the cells finished): the process's
start-up and imports (``process_s``), the weights' load (``load_s``), the backend's preparation
(``compile_s``: compilation, CUDA-graph capture, GEMV choice), the warm-up and timed runs, and
the overhead = everything but the runs, and ``prepare_s`` = load + compile + capture, marked
``first`` for the first cell of each (model, method) in the listing.  Last line: the slice's
overhead fraction (overhead / the cells' whole cost) and the largest ``prepare_s`` of the first
and of the later cells.  Cells written before these fields existed are skipped.  Where the cell
recorded them (``backend_info``), the preparation's parts follow: the GEMV choice
(``gemv_select_s``), the first prefill and decode step with the cell's own compilation
(``first_step_s``), the precompile (``precompile_s``) and the capture (``capture_s``).
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path


#: the parts of the preparation a cell's ``backend_info`` records
PARTS = ("gemv_select_s", "first_step_s", "precompile_s", "capture_s")


def cost(rec: dict) -> dict | None:
    if rec.get("status") != "ok" or rec.get("cell_wall_s") is None:
        return None
    runs = sum(rec.get("latencies_s") or []) + sum(rec.get("warmup_latencies_s") or [])
    info = rec.get("backend_info") or {}
    whole = (rec.get("process_s") or 0.0) + rec["cell_wall_s"]
    return {"cell": f"{rec['model']}/{rec['method']}/{rec['backend']}/in{rec['in_len']}_out{rec['out_len']}_bs{rec['batch']}",
            "process_s": rec.get("process_s"), "load_s": rec.get("load_s"), "compile_s": rec.get("compile_s"),
            "prepare_s": (rec.get("load_s") or 0.0) + (rec.get("compile_s") or 0.0),
            "runs_s": runs, "overhead_s": whole - runs, "whole_s": whole, "finished_at": rec.get("finished_at"),
            **{k: info[k] for k in PARTS if k in info}}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("folders", nargs="+")
    ap.add_argument("--backend", help="only cells of this backend")
    a = ap.parse_args(argv)
    rows = []
    for folder in a.folders:
        for p in sorted(Path(folder).rglob("*.json")):
            rec = json.loads(p.read_text())
            if a.backend and rec.get("backend") != a.backend:
                continue
            c = cost(rec)
            if c:
                rows.append(c)
    rows.sort(key=lambda r: r["finished_at"] or "")
    seen = set()
    for r in rows:
        key = r["cell"].split("/")[:2]
        r["first"] = tuple(key) not in seen
        seen.add(tuple(key))
    for r in rows:
        print(json.dumps({k: (round(v, 2) if isinstance(v, float) else v) for k, v in r.items()}))
    if rows:
        over, whole = sum(r["overhead_s"] for r in rows), sum(r["whole_s"] for r in rows)
        first = [r["prepare_s"] for r in rows if r["first"]]
        later = [r["prepare_s"] for r in rows if not r["first"]]
        print(json.dumps({"cells": len(rows), "overhead_s": round(over, 1), "whole_s": round(whole, 1),
                          "overhead_frac": round(over / whole, 3),
                          "first_prepare_max_s": round(max(first), 1),
                          "later_prepare_max_s": round(max(later), 1) if later else None,
                          "later_within_20_s": f"{sum(p <= 20 for p in later)} of {len(later)}"}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
