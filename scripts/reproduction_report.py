#!/usr/bin/env python3
"""Build a docs/reproduction/<device>/ folder from a results folder of (possibly partial) GPU runs.

    python scripts/reproduction_report.py RESULTS_DIR docs/reproduction/h100

Copies every cell file and prune report (the raw data), writes ``benchmark.csv`` (the
pipeline's aggregation over the cells that exist), ``throughput_latency.{png,pdf}`` (the
grid, HF eager backend: the paper's setting; ``throughput_latency_compiled.{png,pdf}``: the
compiled backend's cells), ``speedups.csv`` (per model/input/output:
latency ratio dense/method at batch 1, throughput ratio method/dense at the largest batch
where both ran) and ``backends.csv`` (HF eager vs compiled where both ran). The pipeline
never writes into docs/, so these files are not overwritten by a rerun.
"""
from __future__ import annotations

import shutil
import sys
from pathlib import Path

import pandas as pd

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

from prunebench import aggregate, figure  # noqa: E402
from prunebench.io import atomic_path, write_csv  # noqa: E402

FAMILIES = {"llama-7b": "LLaMA-7B", "vicuna-13b": "Vicuna-13B"}


def speedups(df: pd.DataFrame) -> pd.DataFrame:
    ok = df[df["status"] == "ok"]
    rows = []
    for (model, i, o), g in ok.groupby(["model", "in_len", "out_len"]):
        dense = g[g["method"] == "dense"].set_index("batch")
        for method, m in g.groupby("method"):
            m = m.set_index("batch")
            both = sorted(set(dense.index) & set(m.index))
            if not both:
                continue
            top = both[-1]
            rows.append({
                "model": model, "in_len": i, "out_len": o, "method": method,
                "params_b": m["params"].iloc[0] / 1e9,
                "latency_bs1_s": m.loc[1, "latency_s"] if 1 in m.index else None,
                "latency_speedup_bs1": dense.loc[1, "latency_s"] / m.loc[1, "latency_s"] if 1 in both else None,
                "largest_batch": top,
                "throughput_tok_s_largest": m.loc[top, "throughput_tok_s"],
                "throughput_speedup_largest": m.loc[top, "throughput_tok_s"] / dense.loc[top, "throughput_tok_s"],
                "peak_mem_gib_largest": m.loc[top, "peak_mem_gib"],
                "batches_measured": " ".join(str(b) for b in m.index.sort_values()),
            })
    return pd.DataFrame(rows)


def backend_table(df: pd.DataFrame) -> pd.DataFrame:
    ok = df[df["status"] == "ok"]
    comp = ok[ok["backend"] == "compiled"]
    eager = ok[ok["backend"] == "hf-eager"].set_index(["model", "method", "in_len", "out_len", "batch"])
    rows = []
    for _, r in comp.iterrows():
        key = (r["model"], r["method"], r["in_len"], r["out_len"], r["batch"])
        e = eager.loc[key] if key in eager.index else None
        rows.append({
            "model": r["model"], "method": r["method"], "in_len": r["in_len"], "out_len": r["out_len"],
            "batch": r["batch"], "eager_latency_s": None if e is None else e["latency_s"],
            "compiled_latency_s": r["latency_s"], "compile_s": r["compile_s"],
            "speedup_vs_eager": None if e is None else e["latency_s"] / r["latency_s"],
            "hbm_bandwidth_gbs": r["hbm_bandwidth_gbs"], "roofline_s": r["roofline_s"],
            "roofline_frac": r["roofline_frac"],
            "coordinate_descent_tuning": '"coordinate_descent_tuning":true' in (r["backend_info"] or ""),
        })
    return pd.DataFrame(rows)


def main(results: str, out: str) -> None:
    results, out = Path(results), Path(out)
    cells = sorted((results / "bench").rglob("*.json"))
    for src in cells + sorted((results / "prune").rglob("*.json")):
        dst = out / src.relative_to(results)
        dst.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(src, dst)
    df = aggregate.bench_table([str(c) for c in cells], FAMILIES)
    write_csv(out / "benchmark.csv", df)
    write_csv(out / "speedups.csv", speedups(df[df["backend"] == "hf-eager"]).round(4))
    write_csv(out / "backends.csv", backend_table(df).round(4))
    # one figure per backend: the paper's grid (HF eager) and the compiled backend's cells
    for backend, stem, what in (("hf-eager", "throughput_latency", "HF eager generate"),
                                ("compiled", "throughput_latency_compiled", "compiled backend (static cache, CUDA graphs)")):
        sub = df[df["backend"] == backend]
        if sub.empty:
            continue
        sep = " · " if sub[["in_len", "out_len"]].drop_duplicates().shape[0] > 2 else "\n"  # narrow figure: 2 lines
        fig = figure.draw(sub, f"{what}{sep}" + ", ".join(sorted(set(sub["device_name"])))
                          + " · float16 · random weights at the true shapes")
        for suffix in (".png", ".pdf"):
            with atomic_path(out / (stem + suffix), suffix=suffix) as tmp:
                fig.savefig(tmp, dpi=150, format=suffix[1:])
        figure.plt.close(fig)
    print(f"{len(cells)} cells -> {out}")


if __name__ == "__main__":
    main(*sys.argv[1:3])
