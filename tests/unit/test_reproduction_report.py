"""prunebench reproduction-report: matched method/dense ratios, run spreads, the summary."""
from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest

from conftest import ROOT  # noqa: E402


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
    assert "depth: 3 points, faster than dense at 2; min 0.80x, median 1.25x, max 2.00x" in text
    assert "median by batch: 1: 2.00x, 8: 1.25x, 16: 0.80x" in text
    assert "3 cells, median 20.0 %, maximum 30.0 % (c), 2 above 15 %" in text
    # same side of 1x: batch 1 (2.0 / 1.5) and 16 (0.8 / 0.8); relative differences 33 %, 39 %, 0 %
    assert "depth: 3 points, same side of 1x at 2; median |relative difference| 33.3 %" in text


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
