"""speedups.csv (ratios with intervals and verdicts) and the figure's uncertainty marks."""
from __future__ import annotations

import pandas as pd

from prunebench import aggregate, figure


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
