"""``prunebench reproduction-report``: a docs/reproduction/<device>/ folder from an experiment's
results folder of (possibly partial) GPU runs.

    prunebench reproduction-report results/paper-random docs/reproduction/h100

Copies every cell file and prune report (the raw data), writes ``benchmark.csv`` (the
pipeline's aggregation over the cells that exist), ``throughput_latency.{png,pdf}`` (the
grid, HF eager backend: the paper's setting; ``throughput_latency_compiled.{png,pdf}``: the
compiled backend's cells), ``speedups.csv`` (per model/input/output:
latency ratio dense/method at batch 1, throughput ratio method/dense at the largest batch
where both ran, and each one's best throughput over the batches it ran against dense's best),
``backends.csv`` (HF eager vs compiled where both ran), ``ratios.csv``
(every point where a method and dense ran the same cell: dense latency / method latency)
``intervals.csv`` (the pipeline's ``speedups.csv``: every cell against dense with a bootstrap
95 % interval and a verdict, faster/slower only where the interval excludes 1) and
``summary.txt`` (the statistics the reproduction document quotes: per backend and method, at
how many points the ratio is above 1 and at how many the method is faster -- or slower --
than dense by the interval's verdict (the interval excludes 1; cells of fewer than 6 timed
runs have no interval, so no verdict), min/median/max and the median per batch size; the
spread of the timed runs; the verdicts under the intervals).  ``--compare OTHER`` adds how
the ratios agree with another folder's ``ratios.csv`` (another device) on the points both
measured: on the same side of 1, and, by the verdicts of both folders' ``intervals.csv``,
where both say the same and where one says faster and the other slower.
The pipeline never writes into docs/, so these files are not overwritten by a rerun.

Cells of this version's format and of the earlier one (``prunebench-bench-cell/1``: fixed
repetitions, the archived grids) are read.

    prunebench reproduction-report results/paper-random docs/reproduction/h100 --compare docs/reproduction/h200

The rows' family labels come from the experiment's config (``--experiment NAME``; default: the
results folder's name, ``results/<experiment>``, when it is an experiment of the checkout).
"""
from __future__ import annotations

import argparse
import json
import shutil
import statistics
from pathlib import Path

import pandas as pd

from .. import aggregate, figure, paths
from .. import config as pbconfig
from ..io import atomic_path, write_csv
from .workflow import UsageError, checkout, experiments, load_config, resolve


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
                # each at its own best batch: a smaller KV cache may fit a batch dense cannot
                "best_batch": m["throughput_tok_s"].idxmax(),
                "best_throughput_tok_s": m["throughput_tok_s"].max(),
                "best_throughput_vs_dense": m["throughput_tok_s"].max() / dense["throughput_tok_s"].max(),
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


KEYS = ["model", "backend", "in_len", "out_len", "batch"]
#: cell formats the report reads: this version's and the archived grids' (fixed repetitions)
SCHEMAS = (aggregate.CELL_SCHEMA, "prunebench-bench-cell/1")


def method_ratios(df: pd.DataFrame) -> pd.DataFrame:
    """Every point where a method and dense ran the same cell (model, backend, lengths,
    batch): ``speedup`` = dense latency / method latency (= the throughput ratio there)."""
    ok = df[df["status"] == "ok"]
    dense = ok[ok["method"] == "dense"].set_index(KEYS)["latency_s"]
    rows = []
    for _, r in ok[ok["method"] != "dense"].iterrows():
        key = tuple(r[k] for k in KEYS)
        if key in dense.index:
            rows.append({**{k: r[k] for k in KEYS}, "method": r["method"], "dense_latency_s": dense[key],
                         "latency_s": r["latency_s"], "speedup": dense[key] / r["latency_s"]})
    return pd.DataFrame(rows, columns=[*KEYS, "method", "dense_latency_s", "latency_s", "speedup"])


def run_spreads(cells: list[Path], backend: str = "hf-eager") -> list[tuple[float, str]]:
    """(max - min) / median of each ``ok`` cell's timed latencies, with the cell's name, sorted."""
    out = []
    for c in cells:
        rec = json.loads(c.read_text())
        lat = rec.get("latencies_s") or []
        if rec.get("status") == "ok" and rec.get("backend") == backend and len(lat) > 1:
            name = paths.cell_name(rec)
            out.append(((max(lat) - min(lat)) / statistics.median(lat), name))
    return sorted(out)


def _with_verdicts(ratios: pd.DataFrame, intervals: pd.DataFrame | None) -> pd.DataFrame:
    """``ratios`` with the verdict of each point's interval (``verdict``; none where the
    point has no row in ``intervals``) and whether it has an interval (``has_ci``)."""
    if intervals is None or intervals.empty or "verdict" not in intervals:
        return ratios.assign(verdict=None, has_ci=False)
    v = intervals[[*KEYS, "method", "verdict", "speedup_ci_low"]]
    out = ratios.merge(v, on=[*KEYS, "method"], how="left")
    return out.assign(has_ci=out["speedup_ci_low"].notna()).drop(columns="speedup_ci_low")


def summary(ratios: pd.DataFrame, spreads: list[tuple[float, str]], other: pd.DataFrame | None = None,
            intervals: pd.DataFrame | None = None) -> str:
    """The statistics the reproduction document quotes, as text.  ``intervals``: the
    ``speedups.csv`` rows of the same cells (:func:`prunebench.aggregate.speedup_table`);
    a method is counted faster (slower) than dense only where its interval is above (below) 1.
    ``other``: another folder's ratios, with its verdicts where it has them."""
    lines = []
    ratios = _with_verdicts(ratios, intervals)
    for backend, g in ratios.groupby("backend"):
        lines.append(f"{backend}: speed-up against dense (dense latency / method latency) at the matched points")
        for method, m in g.groupby("method"):
            sp = m["speedup"]
            by_batch = ", ".join(f"{b}: {v:.2f}x" for b, v in m.groupby("batch")["speedup"].median().items())
            lines.append(f"  {method}: {len(sp)} points, ratio above 1 at {(sp > 1).sum()}, "
                         f"faster (interval above 1) at {(m['verdict'] == 'faster').sum()}, "
                         f"slower (interval below 1) at {(m['verdict'] == 'slower').sum()}, "
                         f"no interval at {(~m['has_ci']).sum()}; "
                         f"min {sp.min():.2f}x, median {sp.median():.2f}x, max {sp.max():.2f}x; "
                         f"median by batch: {by_batch}")
    if spreads:
        v = [x for x, _ in spreads]
        lines.append(f"spread of the timed runs, (max - min) / median, hf-eager: {len(v)} cells, median "
                     f"{100 * statistics.median(v):.1f} %, maximum {100 * v[-1]:.1f} % ({spreads[-1][1]}), "
                     f"{sum(x > 0.15 for x in v)} above 15 %")
    if other is not None and not other.empty and not ratios.empty:
        if "verdict" not in other:
            other = other.assign(verdict=None)
        both = ratios.merge(other[[*KEYS, "method", "speedup", "verdict"]], on=[*KEYS, "method"],
                            suffixes=("", "_other"))
        lines.append("against the other folder's ratios, at the points both measured:")
        for method, m in both.groupby("method"):
            same = ((m["speedup"] > 1) == (m["speedup_other"] > 1)).sum()
            diff = (m["speedup"] / m["speedup_other"] - 1).abs().median()
            decided = m[m["verdict"].isin(["faster", "slower"]) & m["verdict_other"].isin(["faster", "slower"])]
            agree = (decided["verdict"] == decided["verdict_other"]).sum()
            lines.append(f"  {method}: {len(m)} points, ratio on the same side of 1x at {same}; "
                         f"both verdicts faster or both slower at {agree}, one faster and one slower at "
                         f"{len(decided) - agree}; median |relative difference| {100 * diff:.1f} %")
    return "\n".join(lines) + "\n"


def verdicts(intervals: pd.DataFrame) -> str:
    """Per backend and method: how many cells are faster / slower / unclear under the intervals."""
    lines = ["", "verdicts under the 95 % bootstrap intervals (faster/slower: the interval excludes 1; "
                 "no interval: a cell of fewer than 6 timed runs, counted unclear):"]
    for (backend, method), g in intervals.groupby(["backend", "method"], sort=True):
        n = g["verdict"].value_counts()
        lines.append(f"  {backend:9s} {method:11s} faster {n.get('faster', 0):3d}  slower {n.get('slower', 0):3d}  "
                     f"unclear {n.get('unclear', 0):3d} (no interval {int(g['speedup_ci_low'].isna().sum()):3d})  "
                     f"of {len(g):3d}; both cells stable at {int(g['stable'].sum())}")
    return "\n".join(lines) + "\n"


def build(results: str, out: str, families: dict[str, str], compare: str | None = None) -> None:
    results, out = Path(results), Path(out)
    cells = sorted((results / "bench").rglob("*.json"))
    for src in cells + sorted((results / "prune").rglob("*.json")):
        dst = out / src.relative_to(results)
        dst.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(src, dst)
    records = aggregate.read_cells([str(c) for c in cells], schemas=SCHEMAS)
    df = aggregate.bench_table(records, families)
    write_csv(out / "benchmark.csv", df)
    write_csv(out / "speedups.csv", speedups(df[df["backend"] == "hf-eager"]).round(4))
    write_csv(out / "backends.csv", backend_table(df).round(4))
    # one figure per backend: the paper's grid (HF eager) and the compiled backend's cells
    for backend, stem, what in (("hf-eager", "throughput_latency", "HF eager generate"),
                                ("compiled", "throughput_latency_compiled", "compiled backend (static cache, CUDA graphs)")):
        sub = df[df["backend"] == backend]
        if sub.empty:
            continue
        fig = figure.draw(sub, f"{what} · " + ", ".join(sorted(set(sub["device_name"])))
                          + " · float16 · random weights at the true shapes")  # wrapped to the figure's width
        figure.save(fig, out / (stem + ".png"), out / (stem + ".pdf"))
    ratios = method_ratios(df)
    write_csv(out / "ratios.csv", ratios.round(4))
    intervals = aggregate.speedup_table(records, families)
    write_csv(out / "intervals.csv", intervals.round(4))
    other = read_other(compare) if compare else None
    text = summary(ratios, run_spreads(cells), other, intervals) + verdicts(intervals)
    with atomic_path(out / "summary.txt", suffix=".txt") as tmp:
        Path(tmp).write_text(text)
    print(text, end="")
    print(f"{len(cells)} cells -> {out}")


def read_other(folder: str) -> pd.DataFrame:
    """Another report folder's ``ratios.csv``, with the verdicts of its ``intervals.csv``
    where it has one (``verdict``: empty where it has none)."""
    ids = {"model": str, "backend": str, "method": str}
    ratios = pd.read_csv(Path(folder) / "ratios.csv", dtype=ids, keep_default_na=False,
                         na_values={c: [""] for c in ("dense_latency_s", "latency_s", "speedup")})
    path = Path(folder) / "intervals.csv"
    if not path.exists():
        return ratios.assign(verdict=None)
    iv = pd.read_csv(path, dtype={**ids, "verdict": str}, keep_default_na=False)
    return ratios.merge(iv[[*KEYS, "method", "verdict"]], on=[*KEYS, "method"], how="left")


def families_of(results: str, experiment: str | None) -> dict[str, str]:
    """Row labels of the models: the experiment's ``models.<name>.family`` (none known: {})."""
    root = checkout()
    name = experiment or Path(results).resolve().name
    if experiment is None and name not in experiments(root):
        return {}
    return pbconfig.families(load_config(root, resolve(root, name)))


def main(argv: list[str]) -> int:
    ap = argparse.ArgumentParser(prog="prunebench reproduction-report", description=__doc__.split("\n\n")[0])
    ap.add_argument("results", help="an experiment's results folder (bench/, prune/), e.g. results/paper-random")
    ap.add_argument("out", help="the report folder, e.g. docs/reproduction/h100")
    ap.add_argument("--compare", help="another report folder whose ratios.csv to compare with")
    ap.add_argument("--experiment", help="the experiment whose config labels the models (default: the folder's name)")
    a = ap.parse_args(argv[1:])
    try:
        families = families_of(a.results, a.experiment)
    except UsageError as exc:
        ap.error(str(exc))
    build(a.results, a.out, families, a.compare)
    return 0
