"""speedups.csv (ratios with intervals and verdicts) and the figure's uncertainty marks."""
from __future__ import annotations

import json

import pandas as pd
import pytest

from prunebench import aggregate, figure
from prunebench.io import ArtifactError


def _rec(method, batch, lats, stable=True, backend="hf-eager", ttft=0.1):
    return {"model": "m", "method": method, "backend": backend, "in_len": 4, "out_len": 8, "batch": batch,
            "status": "ok", "latencies_s": lats, "stable": stable, "params": 100 if method == "dense" else 70,
            "ttft_s": ttft, "decode_per_token_s": (sorted(lats)[len(lats) // 2] - ttft) / 7}


def test_speedup_rows_intervals_and_verdicts():
    recs = [
        _rec("dense", 1, [2.0, 2.02, 1.98, 2.01, 1.99, 2.0]),
        _rec("depth", 1, [1.4, 1.41, 1.39, 1.4, 1.42, 1.38]),          # clearly faster
        _rec("dense", 2, [2.0, 3.0, 1.5, 2.5, 2.2, 1.8], stable=False),
        _rec("depth", 2, [2.1, 1.6, 2.9, 1.9, 2.4, 2.0]),              # overlapping: unclear
        _rec("width", 1, [2.6, 2.61, 2.59, 2.6, 2.62, 2.58]),          # clearly slower
        _rec("width", 4, [1.0] * 6),                                   # no dense cell at batch 4: no row
        {**_rec("depth", 8, [1.0] * 6), "status": "oom"},
    ]
    df = aggregate.speedup_table(recs, {"m": "M"})
    got = {(r.method, r.batch): r for r in df.itertuples()}
    assert set(got) == {("depth", 1), ("depth", 2), ("width", 1)}
    d1 = got[("depth", 1)]
    assert d1.speedup == 2.0 / 1.4 and d1.speedup_ci_low < d1.speedup < d1.speedup_ci_high
    assert d1.verdict == "faster" and d1.stable and d1.family == "M"
    assert got[("depth", 2)].verdict == "unclear" and not got[("depth", 2)].stable
    assert got[("width", 1)].verdict == "slower"
    assert list(df.columns) == aggregate.SPEEDUP_COLUMNS


def test_single_run_cells_have_no_interval():
    df = aggregate.speedup_table([_rec("dense", 1, [2.0]), _rec("depth", 1, [1.0])], {})
    row = df.iloc[0]
    assert row["speedup"] == 2.0 and pd.isna(row["speedup_ci_low"]) and row["verdict"] == "unclear"


def test_figure_marks_unstable_cells_hollow_and_draws_intervals():
    rows = []
    for m, lat, stable in (("dense", 2.0, True), ("depth", 1.4, False)):
        for b in (1, 4):
            rows.append({"family": "M", "method": m, "in_len": 4, "out_len": 8, "batch": b, "status": "ok",
                         "params": 1e8, "latency_s": lat * b ** 0.2, "throughput_tok_s": 8 * b / (lat * b ** 0.2),
                         "latency_ci_low_s": lat * b ** 0.2 * 0.9, "latency_ci_high_s": lat * b ** 0.2 * 1.1,
                         "stable": stable})
    df = pd.DataFrame(rows)
    fig = figure.draw(df, "t")
    ax = fig.axes[0]
    hollow = [l for l in ax.get_lines() if l.get_markerfacecolor() == "white"]
    assert len(hollow) == 1 and len(hollow[0].get_xdata()) == 2  # depth's two unstable cells only
    assert len(ax.collections) >= 2  # one error-bar collection per method
    assert figure.unstable_note(df) == "hollow markers: 2 of 4 cells unstable (95 % interval wider than its target)"
    assert figure.unstable_note(df.assign(stable=True)) is None


def test_too_few_runs_for_a_median_interval_give_no_interval_and_no_verdict():
    # 2 runs a side: the bootstrap alone would give (1.204, 1.042, 1.368), "faster"
    df = aggregate.speedup_table([_rec("dense", 1, [1.0, 1.30]), _rec("depth", 1, [0.95, 0.96])], {})
    row = df.iloc[0]
    assert row["speedup"] == (1.0 + 1.30) / 2 / ((0.95 + 0.96) / 2)
    assert pd.isna(row["speedup_ci_low"]) and pd.isna(row["speedup_ci_high"]) and row["verdict"] == "unclear"
    # 5 runs on one side is still too few; 6 a side have an interval and a verdict
    five = aggregate.speedup_table([_rec("dense", 1, [2.0] * 6), _rec("depth", 1, [1.0] * 5)], {}).iloc[0]
    assert pd.isna(five["speedup_ci_low"]) and five["verdict"] == "unclear"
    six = aggregate.speedup_table([_rec("dense", 1, [2.0] * 6), _rec("depth", 1, [1.0] * 6)], {}).iloc[0]
    assert six["speedup_ci_low"] == 2.0 and six["verdict"] == "faster"


def test_cells_on_different_devices_are_not_paired(caplog):
    recs = [{**_rec("dense", 1, [2.0] * 6), "device": "cpu", "device_name": "x86_64"},
            {**_rec("depth", 1, [1.0] * 6), "device": "cuda", "device_name": "NVIDIA H100 80GB HBM3"},
            {**_rec("dense", 2, [2.0] * 6), "device": "cuda", "device_name": "NVIDIA H100 80GB HBM3"},
            {**_rec("depth", 2, [1.0] * 6), "device": "cuda", "device_name": "NVIDIA H200"},
            {**_rec("dense", 4, [2.0] * 6), "device": "cuda", "device_name": "NVIDIA H200"},
            {**_rec("depth", 4, [1.0] * 6), "device": "cuda", "device_name": "NVIDIA H200"}]
    with caplog.at_level("WARNING", logger="prunebench.aggregate"):
        df = aggregate.speedup_table(recs, {})
    assert list(df["batch"]) == [4]  # only the pair on one device
    text = caplog.text
    assert "m/dense/hf-eager/in4_out8_bs1" in text and "m/depth/hf-eager/in4_out8_bs1" in text
    assert "m/depth/hf-eager/in4_out8_bs2" in text and "NVIDIA H200" in text


def _cell_file(tmp_path, schema, method="dense"):
    p = tmp_path / "bench" / "m" / method / "hf-eager" / "in4_out8_bs1.json"
    p.parent.mkdir(parents=True, exist_ok=True)
    rec = {k: v for k, v in _rec(method, 1, [1.0] * 6).items()}
    if schema is not None:
        rec["schema"] = schema
    p.write_text(json.dumps(rec))
    return str(p)


@pytest.mark.parametrize("schema", ["prunebench-bench-cell/1", None, "something-else/2"])
def test_a_cell_of_another_format_is_refused(tmp_path, schema):
    p = _cell_file(tmp_path, schema)
    with pytest.raises(ArtifactError) as exc:
        aggregate.read_cells([p])
    msg = str(exc.value)
    assert msg.startswith(p) and repr(aggregate.CELL_SCHEMA) in msg and repr(schema) in msg


def test_a_cell_of_the_current_format_is_read_and_others_where_asked(tmp_path):
    assert aggregate.read_cells([_cell_file(tmp_path, aggregate.CELL_SCHEMA)])[0]["method"] == "dense"
    old = _cell_file(tmp_path, "prunebench-bench-cell/1", method="depth")
    assert aggregate.read_cells([old], schemas=(aggregate.CELL_SCHEMA, "prunebench-bench-cell/1"))
