"""Aggregate stage: cell and perplexity files -> ``benchmark.csv``, ``speedups.csv``, ``quality.csv``.

``results/<experiment>/tables/benchmark.csv`` -- one row per cell (:data:`BENCH_COLUMNS`; fields as in
:mod:`prunebench.benchmark`): the median latency with its 95 % interval
(``latency_ci_low_s``/``latency_ci_high_s``, ``latency_rel_ci``), the number of timed
``runs``, ``stable`` (the interval reached its target) and why timing stopped; time to first
token and decode time per token with their intervals; ``gpu_busy_frac`` (GPU kernel time /
wall time: far below 1 = host-bound, the cell measures the framework); the host's load
around the timed runs (``host_load1``: the larger 1-minute load average of before and after,
``host_other_running``: the most other running processes seen); compile_s (backend
preparation, excluded from latency), backend_info (the backend's settings as compact JSON),
roofline columns, torch, transformers.

``results/<experiment>/tables/speedups.csv`` -- one row per cell of a method other than the baseline
(the methods entry whose method keeps the base weights, ``dense``: :func:`baseline`) whose baseline cell (same model, backend, lengths, batch) also ran: ``speedup``
= baseline latency / method latency, its bootstrap interval (``speedup_ci_low``,
``speedup_ci_high``; :func:`prunebench.timing.ratio_ci`; empty where either cell has too
few runs for an interval of its median, below 6), ``verdict`` (``faster`` / ``slower``
only where the whole interval is on that side of 1, else ``unclear``, also where there is
no interval) and ``stable`` (both cells stable).  The same for time to first token and
decode per token (``ttft_speedup``, ``decode_speedup``, medians' ratios).  Cells measured
on different devices (``device`` or ``device_name`` differ, e.g. ``device: auto`` on hosts
with and without a GPU) are not paired: the pair is left out with a warning naming both.

Every cell file must carry the current cell format's ``schema`` (:data:`CELL_SCHEMA`);
a cell of another format is refused, naming the file.

``results/<experiment>/tables/quality.csv`` -- one row per (model, method, budget, evaluation corpus):
model, family, method, budget, params, params_ratio (vs dense), corpus, ppl with its 95 %
interval (``ppl_ci_low``/``ppl_ci_high``), the mean NLL with its interval, n_windows,
held_out (the corpus is also the calibration corpus: its windows avoid the calibration
windows), ppl_status, weights, widths_from_weights (the method chose its layer widths from
the weights; with random weights that shape is not the method's), then the columns the
methods add from their prune reports (:meth:`prunebench.methods.Method.table_fields`:
removed_blocks of the whole-block methods; empty for a method that does not add the column).

Every table row carries its ``budget`` (the budget tag, :func:`prunebench.config.budget_tag`;
empty for dense) beside ``method`` (the config's method name): ``variants`` maps each pruned
model's folder name to both; without it the folder name is the method and the budget is empty.
"""
from __future__ import annotations

import json
import logging

import pandas as pd

from .io import ArtifactError, cell_identity, check_record, read_json, write_csv
from .paths import cell_name
from .records import CELL_SCHEMA, read_perplexity, read_prune_report

log = logging.getLogger(__name__)


BENCH_COLUMNS = [
    "model", "family", "method", "budget", "backend", "params", "num_layers", "in_len", "out_len", "batch",
    "latency_s", "latency_ci_low_s", "latency_ci_high_s", "latency_rel_ci", "runs", "stable", "stop_reason",
    "latency_p10_s", "latency_p90_s", "throughput_tok_s",
    "ttft_s", "ttft_ci_low_s", "ttft_ci_high_s", "decode_per_token_s", "decode_per_token_ci_low_s",
    "decode_per_token_ci_high_s", "decode_tok_s", "gpu_busy_frac", "host_load1", "host_other_running", "threads",
    "peak_mem_gib", "status", "device", "device_name", "gpu_uuid", "dtype", "attn_implementation", "weights",
    "compile_s", "load_s", "backend_info", "hbm_bandwidth_gbs", "roofline_s", "roofline_frac", "torch", "transformers",
]
SPEEDUP_COLUMNS = [
    "model", "family", "method", "budget", "backend", "in_len", "out_len", "batch", "params", "baseline_params",
    "speedup", "speedup_ci_low", "speedup_ci_high", "verdict", "stable", "ttft_speedup", "decode_speedup",
]
BASELINE = "dense"
QUALITY_COLUMNS = ["model", "family", "method", "budget", "params", "params_ratio", "corpus", "ppl",
                   "ppl_ci_low", "ppl_ci_high", "nll", "nll_ci_low", "nll_ci_high", "n_windows", "held_out",
                   "ppl_status", "weights", "widths_from_weights"]


def split_name(model: str, name: str, variants: dict | None) -> tuple[str, str]:
    """``(method, budget tag)`` of a pruned model's folder ``name`` (see the module docstring)."""
    v = (variants or {}).get(model, {}).get(name)
    return (v["method"], v["budget"]) if v else (name, "")


def read_cells(cell_paths: list[str], expect: dict | None = None,
               schemas: tuple[str, ...] = (CELL_SCHEMA,)) -> list[dict]:
    """Every cell, checked against its path, ``expect`` (``{field: [config key, value]}``,
    :func:`prunebench.config.cell_expectations`) and its format: its ``schema`` must be one
    of ``schemas`` (default: this version's, :data:`CELL_SCHEMA`)."""
    records = []
    for p in cell_paths:
        rec = read_json(p, required=("model", "method", "status", "batch"))
        check_record(p, rec, {**{f: ("its path", v) for f, v in cell_identity(p).items()},
                              **{f: (f"config key {key}", v) for f, (key, v) in (expect or {}).items()}})
        if rec.get("schema") not in schemas:
            raise ArtifactError(f"{p}: schema is {rec.get('schema')!r} but this version reads "
                                f"{' or '.join(map(repr, schemas))} -- written by another version of the "
                                "benchmark; delete it and rerun")
        records.append(rec)
    return records


def bench_table(records: list[dict], families: dict[str, str], variants: dict | None = None) -> pd.DataFrame:
    rows = []
    for rec in records:
        row = {k: rec.get(k) for k in BENCH_COLUMNS}
        row["family"] = families.get(rec["model"], rec["model"])
        row["method"], row["budget"] = split_name(rec["model"], rec["method"], variants)
        v = rec.get("versions") or {}
        row["torch"], row["transformers"] = v.get("torch"), v.get("transformers")
        info = rec.get("backend_info")  # a dict (cells before it existed: absent -> empty)
        row["backend_info"] = json.dumps(info, sort_keys=True, separators=(",", ":")) if info else ""
        hosts = [h for h in (rec.get("host_before"), rec.get("host_after")) if h]
        loads = [h["load1"] for h in hosts if h.get("load1") is not None]
        row["host_load1"] = max(loads) if loads else None
        others = [h["other_running"] for h in hosts if h.get("other_running") is not None]
        row["host_other_running"] = max(others) if others else None
        rows.append(row)
    df = pd.DataFrame(rows, columns=BENCH_COLUMNS)
    return df.sort_values(["model", "method", "budget", "backend", "in_len", "out_len", "batch"], kind="stable")


def _cell_key(rec: dict) -> tuple:
    return rec["model"], rec["method"], rec.get("backend"), rec.get("in_len"), rec.get("out_len"), rec["batch"]


def _device(rec: dict) -> str:
    return f"{rec.get('device')} ({rec.get('device_name')})"


def speedup_table(records: list[dict], families: dict[str, str], baseline: str = BASELINE,
                  variants: dict | None = None) -> pd.DataFrame:
    """Every measured cell against its baseline cell (see the module docstring)."""
    from .timing import ratio_ci, verdict

    by_key = {_cell_key(r): r for r in records if r.get("status") == "ok" and r.get("latencies_s")}
    rows = []
    for key, rec in by_key.items():
        model, method, backend, i, o, b = key
        base = by_key.get((model, baseline, backend, i, o, b))
        if method == baseline or base is None:
            continue
        if _device(base) != _device(rec):
            log.warning("not paired: %s ran on %s, %s on %s -- a ratio across devices measures the devices",
                        cell_name(base), _device(base), cell_name(rec), _device(rec))
            continue
        r, lo, hi = ratio_ci(base["latencies_s"], rec["latencies_s"])  # no interval below 6 runs a side
        ratio = (lambda f: base[f] / rec[f] if base.get(f) and rec.get(f) else None)
        meth, tag = split_name(model, method, variants)
        rows.append({
            "model": model, "family": families.get(model, model), "method": meth, "budget": tag, "backend": backend,
            "in_len": i, "out_len": o, "batch": b, "params": rec.get("params"), "baseline_params": base.get("params"),
            "speedup": r, "speedup_ci_low": lo, "speedup_ci_high": hi, "verdict": verdict(lo, hi),
            "stable": bool(base.get("stable")) and bool(rec.get("stable")),
            "ttft_speedup": ratio("ttft_s"), "decode_speedup": ratio("decode_per_token_s"),
        })
    df = pd.DataFrame(rows, columns=SPEEDUP_COLUMNS)
    return df.sort_values(["model", "method", "budget", "backend", "in_len", "out_len", "batch"], kind="stable")


def quality_table(ppl_paths: list[str], report_paths: list[str], families: dict[str, str],
                  variants: dict | None = None) -> pd.DataFrame:
    from .methods import REGISTRY, table_columns

    extra = table_columns()
    reports = {}
    for p in report_paths:
        r = read_prune_report(p)
        reports[(r["model"], r["method"])] = r
    rows = []
    for p in ppl_paths:
        rec = read_perplexity(p)
        r = reports.get((rec["model"], rec["method"]))
        if r is None:  # its parameter ratio and method columns come from the report
            raise ArtifactError(f"{p}: no prune report of model {rec['model']!r}, method {rec['method']!r} "
                                f"among the {len(report_paths)} given")
        dense = r.get("params_before") or rec["params"]
        meth, tag = split_name(rec["model"], rec["method"], variants)
        method = REGISTRY.get(r.get("algorithm"))
        base = {
            "model": rec["model"], "family": families.get(rec["model"], rec["model"]),
            "method": meth, "budget": tag, "params": rec["params"], "params_ratio": rec["params"] / dense,
            "weights": rec.get("weights"),
            "widths_from_weights": bool(r.get("widths_from_weights")),
            **dict.fromkeys(extra, ""), **(method.table_fields(r) if method else {}),
        }
        corpora = rec.get("corpora")
        if not corpora:  # skipped (random weights), or a record of one corpus
            corpora = {rec.get("corpus"): {k: rec.get(k) for k in ("ppl", "n_windows")}}
        for corpus, c in corpora.items():
            rows.append({**base, "corpus": corpus, "ppl_status": c.get("status", rec.get("status")),
                         "held_out": bool(c.get("held_out_from_calibration")),
                         **{k: c.get(k) for k in ("ppl", "ppl_ci_low", "ppl_ci_high", "nll", "nll_ci_low",
                                                  "nll_ci_high", "n_windows")}})
    return pd.DataFrame(rows, columns=QUALITY_COLUMNS + extra).sort_values(
        ["model", "corpus", "params"], ascending=[True, True, False], kind="stable")


def baseline(report_paths: list[str]) -> str:
    """The methods entry the speed-ups are measured against: the one whose method keeps the
    base weights (:attr:`prunebench.methods.Method.copies_weights`), by its prune reports;
    :data:`BASELINE` where none or several do (then the entry of that name, if any)."""
    from .methods import REGISTRY

    found = set()
    for p in report_paths:
        r = read_prune_report(p)
        m = REGISTRY.get(r.get("algorithm"))
        if m is not None and not m.copies_weights:
            found.add(r["method"])
    return found.pop() if len(found) == 1 else BASELINE


def run(cells: list[str], ppls: list[str], reports: list[str], bench_out: str, quality_out: str,
        families: dict[str, str], speedups_out: str | None = None, expect: dict | None = None,
        variants: dict | None = None) -> None:
    records = read_cells(cells, expect)
    write_csv(bench_out, bench_table(records, families, variants))
    if speedups_out:
        write_csv(speedups_out, speedup_table(records, families, baseline(reports), variants=variants))
    write_csv(quality_out, quality_table(ppls, reports, families, variants))
