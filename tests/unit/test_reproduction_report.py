"""prunebench reproduction-report: matched method/dense ratios, run spreads, the summary."""
from __future__ import annotations

import json
import statistics
from pathlib import Path

import pandas as pd
import pytest

from conftest import ROOT  # noqa: E402
from prunebench.io import ArtifactError  # noqa: E402


@pytest.fixture(scope="module")
def report():
    from prunebench.cli import reproduction

    return reproduction


def _row(method, batch, latency, backend="hf-eager", status="ok", model="m"):
    return {"model": model, "backend": backend, "in_len": 12, "out_len": 128, "batch": batch,
            "method": method, "latency_s": latency, "status": status}


def test_ratios_pair_only_the_same_cell(report):
    df = pd.DataFrame([
        _row("dense", 1, 4.0), _row("dense", 8, 4.4), _row("dense", 64, 5.0, status="oom"),
        _row("depth", 1, 2.0), _row("depth", 8, 4.0), _row("depth", 64, 3.0),  # no dense at 64: unpaired
        _row("width", 1, 5.0), _row("dense", 1, 1.0, backend="compiled"), _row("width", 1, 0.8, backend="compiled"),
    ])
    r = report.method_ratios(df).set_index(["backend", "method", "batch"])["speedup"]
    assert r.to_dict() == pytest.approx({("hf-eager", "depth", 1): 2.0, ("hf-eager", "depth", 8): 1.1,
                                         ("hf-eager", "width", 1): 0.8, ("compiled", "width", 1): 1.25})


def test_summary_counts_and_compares(report):
    ratios = report.method_ratios(pd.DataFrame([
        _row("dense", 1, 4.0), _row("dense", 8, 4.0), _row("dense", 16, 4.0),
        _row("depth", 1, 2.0), _row("depth", 8, 3.2), _row("depth", 16, 5.0)]))
    other = ratios.assign(speedup=[1.5, 0.9, 0.8])
    text = report.summary(ratios, [(0.01, "a"), (0.2, "b"), (0.3, "c")], other)
    # without intervals nothing is called faster: the ratio's side of 1 only
    assert ("depth: 3 points, ratio above 1 at 2, faster (interval above 1) at 0, slower (interval below 1) "
            "at 0, no interval at 3; min 0.80x, median 1.25x, max 2.00x") in text
    assert "faster than dense" not in text
    assert "median by batch: 1: 2.00x, 8: 1.25x, 16: 0.80x" in text
    assert "3 cells, median 20.0 %, maximum 30.0 % (c), 2 above 15 %" in text
    # same side of 1x: batch 1 (2.0 / 1.5) and 16 (0.8 / 0.8); relative differences 33 %, 39 %, 0 %
    assert ("depth: 3 points, ratio on the same side of 1x at 2; both verdicts faster or both slower at 0, "
            "one faster and one slower at 0; median |relative difference| 33.3 %") in text


def _intervals(ratios, verdicts, has_ci):
    return ratios.assign(budget="", verdict=verdicts, speedup_ci_low=[1.0 if c else None for c in has_ci],
                         stable=False)


def test_summary_counts_faster_by_the_intervals_verdict(report):
    """A ratio above 1 is not 'faster': only an interval above 1 is."""
    ratios = report.method_ratios(pd.DataFrame([
        _row("dense", 1, 4.0), _row("dense", 8, 4.0), _row("dense", 16, 4.0), _row("dense", 32, 4.0),
        _row("depth", 1, 2.0), _row("depth", 8, 3.2), _row("depth", 16, 5.0), _row("depth", 32, 3.9)]))
    intervals = _intervals(ratios, ["faster", "unclear", "slower", "unclear"], [True, True, True, False])
    text = report.summary(ratios, [], None, intervals)
    assert ("depth: 4 points, ratio above 1 at 3, faster (interval above 1) at 1, slower (interval below 1) at 1, "
            "no interval at 1; ") in text
    # against another folder: verdicts compared where both have one
    other = ratios.assign(speedup=[1.5, 1.3, 1.2, 0.9], verdict=["faster", "faster", "faster", "unclear"])
    text = report.summary(ratios, [], other, intervals)
    assert ("depth: 4 points, ratio on the same side of 1x at 2; both verdicts faster or both slower at 1, "
            "one faster and one slower at 1;") in text
    lines = report.verdicts(intervals)
    assert "faster   1  slower   1  unclear   2 (no interval   1)  of   4" in lines


def _cell(root, method, batch, lats, schema="prunebench-bench-cell/1"):
    p = root / "bench" / "m" / method / "hf-eager" / f"in12_out128_bs{batch}.json"
    p.parent.mkdir(parents=True, exist_ok=True)
    lat = statistics.median(lats)
    p.write_text(json.dumps({
        "schema": schema, "model": "m", "method": method, "backend": "hf-eager", "in_len": 12, "out_len": 128,
        "batch": batch, "status": "ok", "latencies_s": lats, "latency_s": lat, "throughput_tok_s": batch * 128 / lat,
        "params": 1e9 if method == "dense" else 7e8, "peak_mem_gib": 1.0, "device": "cuda",
        "device_name": "NVIDIA H100 80GB HBM3", "weights": "random", "dtype": "float16", "compile_s": None}))


def test_report_of_an_archived_two_run_grid_calls_nothing_faster(report, tmp_path):
    """Cells of the earlier format with 2 timed runs: read, counted by ratio, never called faster."""
    res = tmp_path / "results"
    for b in (1, 8):
        _cell(res, "dense", b, [1.0, 1.30])
        _cell(res, "depth", b, [0.95, 0.96])
    out = tmp_path / "report"
    report.build(str(res), str(out), {})
    text = (out / "summary.txt").read_text()
    assert "depth: 2 points, ratio above 1 at 2, faster (interval above 1) at 0" in text and "no interval at 2" in text
    iv = pd.read_csv(out / "intervals.csv")
    assert set(iv["verdict"]) == {"unclear"} and iv["speedup_ci_low"].isna().all()
    # a cell of neither format is refused
    _cell(res, "width", 1, [1.0, 1.1], schema="prunebench-bench-cell/0")
    with pytest.raises(ArtifactError, match="prunebench-bench-cell/0"):
        report.build(str(res), str(tmp_path / "again"), {})


def test_run_spreads_from_cell_files(report, tmp_path):
    def cell(name, lat, backend="hf-eager", status="ok"):
        p = tmp_path / f"{name}.json"
        p.write_text(json.dumps({"model": "m", "method": name, "backend": backend, "in_len": 12, "out_len": 128,
                                 "batch": 1, "status": status, "latencies_s": lat}))
        return p

    cells = [cell("a", [1.0, 1.1]), cell("b", [2.0, 2.0, 3.0]), cell("c", [1.0, 2.0], backend="compiled"),
             cell("d", None, status="oom")]
    spreads = report.run_spreads(cells)
    assert [n for _, n in spreads] == ["m/a/hf-eager/in12_out128_bs1", "m/b/hf-eager/in12_out128_bs1"]
    assert [x for x, _ in spreads] == pytest.approx([0.1 / 1.05, 0.5])


def test_speedups_largest_common_batch_and_best_throughput(report):
    """The throughput ratio at the largest batch both ran, and each method's best throughput
    (at whatever batch it fits) against dense's best: depth fits batch 64 where dense ran out."""
    def row(method, batch, latency, status="ok"):
        return {**_row(method, batch, latency, status=status), "params": 1e9, "peak_mem_gib": 1.0,
                "throughput_tok_s": batch * 128 / latency if status == "ok" else None}
    df = pd.DataFrame([row("dense", 1, 4.0), row("dense", 8, 4.0), row("dense", 64, None, status="oom"),
                       row("depth", 1, 2.0), row("depth", 8, 3.2), row("depth", 64, 4.0)])
    sp = report.speedups(df).set_index("method")
    assert sp.loc["depth", "latency_speedup_bs1"] == pytest.approx(2.0)
    assert sp.loc["depth", "largest_batch"] == 8
    assert sp.loc["depth", "throughput_speedup_largest"] == pytest.approx(4.0 / 3.2)
    assert sp.loc["depth", "best_batch"] == 64 and sp.loc["dense", "best_batch"] == 8
    assert sp.loc["depth", "best_throughput_vs_dense"] == pytest.approx((64 * 128 / 4.0) / (8 * 128 / 4.0))
    assert sp.loc["dense", "best_throughput_vs_dense"] == pytest.approx(1.0)


def test_family_labels_come_from_the_experiments_config(report, tmp_path):
    assert report.families_of(str(tmp_path / "results" / "paper-random"), None) == {
        "llama-7b": "LLaMA-7B", "vicuna-13b": "Vicuna-13B"}
    assert report.families_of(str(tmp_path / "h100"), None) == {}  # not an experiment's folder: model names
    assert report.families_of(str(tmp_path / "h100"), "demo") == {"smollm2-135m": "SmolLM2-135M"}
