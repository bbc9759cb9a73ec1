"""Aggregate stage: cell and perplexity files -> ``benchmark.csv`` and ``quality.csv``.

``results/tables/benchmark.csv`` -- one row per cell: model, family, method, backend,
params, num_layers, in_len, out_len, batch, latency_s (median), latency_p10_s,
latency_p90_s, throughput_tok_s, peak_mem_gib, status, device, device_name, dtype,
weights, timed_runs, compile_s (backend preparation, excluded from latency),
backend_info (the backend's settings as compact JSON, e.g. inductor options; empty for
hf-eager and for cells written before the field existed), hbm_bandwidth_gbs, roofline_s, roofline_frac (see :mod:`prunebench.benchmark`), torch,
transformers.

``results/tables/quality.csv`` -- one row per (model, method): model, family, method,
params, params_ratio (vs dense), ppl, ppl_status, weights, removed_blocks.
"""
from __future__ import annotations

import json

import pandas as pd

from .io import read_json, write_csv

BENCH_COLUMNS = [
    "model", "family", "method", "backend", "params", "num_layers", "in_len", "out_len", "batch",
    "latency_s", "latency_p10_s", "latency_p90_s", "throughput_tok_s", "peak_mem_gib", "status",
    "device", "device_name", "gpu_uuid", "dtype", "weights", "timed_runs", "compile_s", "backend_info", "hbm_bandwidth_gbs",
    "roofline_s", "roofline_frac", "torch", "transformers",
]
QUALITY_COLUMNS = ["model", "family", "method", "params", "params_ratio", "ppl", "ppl_status",
                   "weights", "removed_blocks"]


def bench_table(cell_paths: list[str], families: dict[str, str]) -> pd.DataFrame:
    rows = []
    for p in cell_paths:
        rec = read_json(p, required=("model", "method", "status", "batch"))
        row = {k: rec.get(k) for k in BENCH_COLUMNS}
        row["family"] = families.get(rec["model"], rec["model"])
        v = rec.get("versions") or {}
        row["torch"], row["transformers"] = v.get("torch"), v.get("transformers")
        info = rec.get("backend_info")  # a dict (cells before it existed: absent -> empty)
        row["backend_info"] = json.dumps(info, sort_keys=True, separators=(",", ":")) if info else ""
        rows.append(row)
    df = pd.DataFrame(rows, columns=BENCH_COLUMNS)
    return df.sort_values(["model", "method", "backend", "in_len", "out_len", "batch"], kind="stable")


def quality_table(ppl_paths: list[str], report_paths: list[str], families: dict[str, str]) -> pd.DataFrame:
    reports = {}
    for p in report_paths:
        r = read_json(p, required=("model", "method", "params_after"))
        reports[(r["model"], r["method"])] = r
    rows = []
    for p in ppl_paths:
        rec = read_json(p, required=("model", "method", "params"))
        r = reports.get((rec["model"], rec["method"]), {})
        dense = r.get("params_before") or rec["params"]
        rows.append({
            "model": rec["model"], "family": families.get(rec["model"], rec["model"]),
            "method": rec["method"], "params": rec["params"], "params_ratio": rec["params"] / dense,
            "ppl": rec.get("ppl"), "ppl_status": rec.get("status"), "weights": rec.get("weights"),
            "removed_blocks": " ".join(map(str, r["removed_blocks"])) if r.get("removed_blocks") is not None else "",
        })
    return pd.DataFrame(rows, columns=QUALITY_COLUMNS).sort_values(["model", "params"], ascending=[True, False], kind="stable")


def run(cells: list[str], ppls: list[str], reports: list[str], bench_out: str, quality_out: str,
        families: dict[str, str]) -> None:
    write_csv(bench_out, bench_table(cells, families))
    write_csv(quality_out, quality_table(ppls, reports, families))
