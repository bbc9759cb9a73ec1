"""The figure's batch labels never collide, and a row's panels of one output length share x."""
from __future__ import annotations

import itertools

import pandas as pd

from prunebench import figure


def _row(method, i, o, b, lat, **kw):
    return {"model": "A", "family": "A", "method": method, "backend": "hf-eager", "params": 1e8,
            "in_len": i, "out_len": o, "batch": b, "latency_s": lat, "throughput_tok_s": b * o / lat,
            "status": "ok", "device_name": "cpu", "dtype": "float32", "weights": "random", **kw}


def _label_boxes(ax):
    renderer = ax.figure.canvas.get_renderer()
    return [(t.get_text(), t.get_window_extent(renderer)) for t in ax.texts if t.get_text().isdigit()]


def test_batch_labels_of_coincident_points_do_not_overlap():
    """Three methods measured at the same latencies (the pruned models of one budget have
    near-identical speed): every batch label has its own place, none covers a marker."""
    rows = [_row(m, 12, 16, b, 0.2 * b ** 0.5 * (1 + 1e-4 * k))
            for k, m in enumerate(("dense", "depth", "flap")) for b in (1, 4, 16)]
    fig = figure.draw(pd.DataFrame(rows), "t")
    fig.canvas.draw()
    ax = fig.axes[0]
    boxes = _label_boxes(ax)
    assert sorted(t for t, _ in boxes) == sorted(["1", "4", "16"] * 3)
    for (ta, a), (tb, b) in itertools.combinations(boxes, 2):
        assert not a.overlaps(b), (ta, tb, a, b)
    points = ax.transData.transform([(r["latency_s"], r["throughput_tok_s"]) for r in rows])
    for _, box in boxes:
        assert not any(box.contains(px, py) for px, py in points)
    for _, box in boxes:  # every label is drawn inside its panel
        assert ax.bbox.x0 <= box.x0 and box.x1 <= ax.bbox.x1 and ax.bbox.y0 <= box.y0 and box.y1 <= ax.bbox.y1


def test_label_offsets_separate_identical_points():
    pts = [(1.0, 8.0, "16"), (1.0, 8.0, "16"), (1.0, 8.0, "16")]
    offsets = figure._label_offsets(pts, 300, 250, (0.0, 2.0), (1.0, 64.0))
    assert len(set(offsets)) == 3
    # a lone point keeps the first place: above right of its marker
    (dx, dy), = figure._label_offsets(pts[:1], 300, 250, (0.0, 2.0), (1.0, 64.0))
    assert dx > 0 and dy > 0


def test_panels_of_one_output_length_share_x_in_a_row():
    rows = []
    for i, o, scale in ((12, 16, 1.0), (82, 16, 1.6), (12, 64, 4.0)):
        rows += [_row(m, i, o, b, scale * f * b ** 0.3) for m, f in (("dense", 1.0), ("depth", 0.7))
                 for b in (1, 8)]
    fig = figure.draw(pd.DataFrame(rows), "t")
    a12, a12_64, a82 = fig.axes  # panels sorted by (in, out): (12,16), (12,64), (82,16)
    assert a12.get_xlim() == a82.get_xlim()
    lats16 = [r["latency_s"] for r in rows if r["out_len"] == 16]
    x0, x1 = a12.get_xlim()
    assert x0 < min(lats16) and max(lats16) < x1
    assert a12_64.get_xlim() != a12.get_xlim()  # another output length keeps its own range
    assert a12.get_ylim() != a82.get_ylim()  # y is not shared


def test_more_methods_than_markers_are_all_drawn():
    """A budget sweep makes a line per method and budget: more lines than markers or colours
    must still all be drawn (markers cycle), not fail."""
    n = len(figure.MARKERS) + 3
    df = pd.DataFrame([_row(f"m{k} @ r0.25", 12, 16, b, 1.0 + k / 10 + b / 100)
                       for k in range(n) for b in (1, 4)])
    fig = figure.draw(df)
    lines = [l for ax in fig.axes for l in ax.get_lines() if l.get_label().startswith("m")]
    assert len(lines) == n
    assert {l.get_marker() for l in lines} == set(figure.MARKERS)
