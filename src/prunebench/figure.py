"""Figure stage: the paper's throughput-latency grid from ``benchmark.csv``.

One row of panels per model family, one panel per (input length, output length) pair,
one line per method with one marker per batch size (labelled with the batch size);
latency (s) on x, throughput (generated tokens/s) on a log2 y axis.  The panels of a row
with the same output length share their x range (their latencies are comparable).  Batch
labels are placed so that no two overlap and none covers a point: each tries positions
around its point, the nearest free one wins.  The legend gives each method's parameter count.  Uncertainty: horizontal bars span each cell's 95 % interval
of the median latency; a hollow marker is an unstable cell (its interval did not reach the
target before a cap: treat it with care).  Cells that ran out of memory are listed under the panel.
"""
from __future__ import annotations

import math
import textwrap

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import pandas as pd  # noqa: E402
import seaborn as sns  # noqa: E402

from .io import atomic_path  # noqa: E402


def _fmt_params(n: float) -> str:
    return f"{n / 1e9:.2f}B" if n >= 1e9 else f"{n / 1e6:.0f}M"


def _limits(ax, latency: pd.Series, throughput: pd.Series, octaves: float = 2.0,
            row_latency: pd.Series | None = None) -> None:
    """Axis limits that show every point away from the edges, with at least ``octaves``
    powers of 2 on the y axis (so it has labelled ticks when all points sit close together,
    e.g. one batch size per method) and at least 1 s, or 20 % of the latency, on the x axis.
    ``row_latency``: the latencies of every panel sharing this x axis (default ``latency``)."""
    if row_latency is not None:
        latency = row_latency
    lo, hi = float(throughput.min()), float(throughput.max())
    span = max(hi / lo, 2.0 ** octaves)
    mid = (lo * hi) ** 0.5
    ax.set_ylim(mid / span ** 0.5 / 1.25, mid * span ** 0.5 * 1.25)
    x0, x1 = float(latency.min()), float(latency.max())
    pad = max((x1 - x0) * 0.08, 0.5, 0.1 * x1)
    ax.set_xlim(max(0.0, x0 - pad), x1 + pad)


PANEL_W, PANEL_H = 4.2, 3.6  # inches per panel
LABEL_FONTSIZE = 6
_CHAR_EM, _ASCENT, _DESCENT = 0.65, 1.0, 0.3  # a digit's width and the text's extent, in font sizes
_MARKER_PT = 2.5  # half a marker's size, in points


def _label_offsets(points: list[tuple[float, float, str]], width_pt: float, height_pt: float,
                   xlim, ylim, fontsize: float = LABEL_FONTSIZE) -> list[tuple[float, float]]:
    """Offsets (points, from each point to its label's left baseline) such that no two labels
    overlap and no label covers a point.  ``points``: (latency, throughput, text) in placing
    order; the axes are ``width_pt`` x ``height_pt`` points, linear x, log y.  Each label tries
    8 directions around its point at growing distance and takes the first free place (a label
    that finds none keeps the first, above right)."""
    (x0, x1), (y0, y1) = xlim, ylim
    sx = width_pt / ((x1 - x0) or 1.0)
    sy = height_pt / (math.log2(y1 / y0) or 1.0)
    pos = [((x - x0) * sx, math.log2(y / y0) * sy) for x, y, _ in points]
    m = _MARKER_PT
    taken = [(px - m, py - m, px + m, py + m) for px, py in pos]  # the markers

    def free(box):
        return all(box[2] <= b[0] or box[0] >= b[2] or box[3] <= b[1] or box[1] >= b[3] for b in taken)

    out = []
    for (px, py), (_, _, text) in zip(pos, points):
        w, up, down = len(text) * fontsize * _CHAR_EM, fontsize * _ASCENT, fontsize * _DESCENT
        first = None
        for ring in (1.0, 2.2, 3.4, 4.6):
            gap = m + 0.5 + (ring - 1.0) * fontsize
            for dx, dy in ((gap, gap * 0.5 + down), (gap, -gap * 0.5 - up), (-gap - w, gap * 0.5 + down),
                           (-gap - w, -gap * 0.5 - up), (-w / 2, gap + down), (-w / 2, -gap - up),
                           (gap, -up / 2 + down / 2), (-gap - w, -up / 2 + down / 2)):
                box = (px + dx - 0.5, py + dy - down - 0.5, px + dx + w + 0.5, py + dy + up + 0.5)
                first = first or (dx, dy, box)
                if free(box):
                    break
            else:
                continue
            break
        else:
            dx, dy, box = first
        taken.append(box)
        out.append((dx, dy))
    return out


def _batch_labels(ax, labels: list[tuple[float, float, str, object]]) -> None:
    """Annotate each (latency, throughput, text, colour) without collisions (see _label_offsets)."""
    if not labels:
        return
    fig = ax.figure
    box = ax.get_position()
    offsets = _label_offsets([(x, y, t) for x, y, t, _ in labels], box.width * fig.get_figwidth() * 72,
                             box.height * fig.get_figheight() * 72, ax.get_xlim(), ax.get_ylim())
    for (x, y, text, color), (dx, dy) in zip(labels, offsets):
        ax.annotate(text, (x, y), textcoords="offset points", xytext=(dx, dy), fontsize=LABEL_FONTSIZE,
                    color=color)


def _uncertainty(ax, s: pd.DataFrame, color, marker) -> None:
    """Latency intervals as horizontal bars; unstable cells as hollow (white-filled) markers."""
    if "latency_ci_low_s" in s:
        ci = s.dropna(subset=["latency_ci_low_s", "latency_ci_high_s"])
        if not ci.empty:
            ax.errorbar(ci["latency_s"], ci["throughput_tok_s"],
                        xerr=[ci["latency_s"] - ci["latency_ci_low_s"], ci["latency_ci_high_s"] - ci["latency_s"]],
                        fmt="none", ecolor=color, elinewidth=0.8, capsize=1.5, alpha=0.8)
    if "stable" in s:
        bad = s[s["stable"].astype("string").str.lower() == "false"]
        if not bad.empty:
            ax.plot(bad["latency_s"], bad["throughput_tok_s"], ls="none", marker=marker, ms=4,
                    mfc="white", mec=color, zorder=3)


def unstable_note(df: pd.DataFrame) -> str | None:
    """'hollow markers: N of M cells unstable' where any cell is, else None."""
    if "stable" not in df:
        return None
    flags = df["stable"].astype("string").str.lower()
    n_bad, n_known = int((flags == "false").sum()), int(flags.isin(["true", "false"]).sum())
    return f"hollow markers: {n_bad} of {n_known} cells unstable (95 % interval wider than its target)" if n_bad else None


def _fill(text: str, width_in: float, fontsize: float, char_em: float, min_chars: int = 1,
          break_on_hyphens: bool = True) -> str:
    """``text`` wrapped to ``width_in`` inches at ``fontsize`` points, a character taking
    ``char_em`` of the font size (an average width: the caller leaves room for wide ones)."""
    return textwrap.fill(text, width=max(min_chars, int(width_in * 72 / (fontsize * char_em))),
                         break_on_hyphens=break_on_hyphens)


def _oom_note(oom: pd.DataFrame, width_in: float, fontsize: float = 6) -> str:
    """'OOM: dense bs128, 256 · flap bs256', wrapped to 80 % of ``width_in`` inches: a long
    list must not widen its panel (tight_layout would shrink every panel to make room)."""
    per_method = {m: ", ".join(str(int(b)) for b in sorted(g["batch"])) for m, g in oom.groupby("method", sort=False)}
    txt = "OOM: " + " · ".join(f"{m} bs{b}" for m, b in per_method.items())
    return _fill(txt, 0.8 * width_in, fontsize, 0.6, break_on_hyphens=False)


MARKERS = "osD^vP*Xhp<>8dH"


def draw(df: pd.DataFrame, title: str | None = None):
    ok = df[df["status"] == "ok"]
    families = list(dict.fromkeys(df["family"]))
    panels = sorted({(int(i), int(o)) for i, o in zip(df["in_len"], df["out_len"])})
    methods = list(dict.fromkeys(df["method"]))
    palette = dict(zip(methods, sns.color_palette("tab10", len(methods))))
    # as many methods (and method @ budget lines) as the config has: markers and colours cycle
    markers = {m: MARKERS[i % len(MARKERS)] for i, m in enumerate(methods)}
    fig, axes = plt.subplots(len(families), len(panels), figsize=(PANEL_W * len(panels), PANEL_H * len(families)),
                             squeeze=False)
    for r, fam in enumerate(families):
        row: list[tuple[object, int, pd.DataFrame, list]] = []
        for c, (i, o) in enumerate(panels):
            ax = axes[r][c]
            sub = ok[(ok["family"] == fam) & (ok["in_len"] == i) & (ok["out_len"] == o)]
            labels = []
            row.append((ax, o, sub, labels))
            for m in methods:
                s = sub[sub["method"] == m].sort_values("batch")
                if s.empty:
                    continue
                label = f"{m} ({_fmt_params(s['params'].iloc[0])})"
                ax.plot(s["latency_s"], s["throughput_tok_s"], marker=markers[m], color=palette[m],
                        label=label, lw=1.2, ms=4)
                _uncertainty(ax, s, palette[m], markers[m])
                labels += [(float(x), float(y), str(int(b)), palette[m])
                           for x, y, b in zip(s["latency_s"], s["throughput_tok_s"], s["batch"])]
            if sub.empty:
                ax.text(0.5, 0.5, "not measured", ha="center", va="center", transform=ax.transAxes,
                        color="grey")
            ax.set_yscale("log", base=2)
            ax.set_title(f"{fam}: in {i} / out {o} tokens", fontsize=9)
            ax.set_xlabel("latency (s)")
            ax.set_ylabel("throughput (tokens/s)")
            ax.grid(True, which="both", alpha=0.3)
            oom = df[(df["family"] == fam) & (df["in_len"] == i) & (df["out_len"] == o) & (df["status"] == "oom")]
            if not oom.empty:
                ax.annotate(_oom_note(oom, PANEL_W), (0, 0), xycoords="axes fraction", xytext=(0, -32),
                            textcoords="offset points", va="top", fontsize=6, color="crimson")
            if not sub.empty:
                ax.legend(fontsize=6, loc="best")
        for o in dict.fromkeys(out for _, out, _, _ in row):  # one x range per output length
            same = [(ax, sub, labels) for ax, out, sub, labels in row if out == o and not sub.empty]
            for ax, _, _ in same[1:]:
                ax.sharex(same[0][0])
            shared = pd.concat([sub["latency_s"] for _, sub, _ in same]) if same else None
            for ax, sub, labels in same:
                _limits(ax, sub["latency_s"], sub["throughput_tok_s"], row_latency=shared)
                _batch_labels(ax, labels)
    if title:  # wrapped to the figure's width: a one-panel figure would clip a long title
        fig.suptitle(_fill(title, fig.get_size_inches()[0], 10, 0.62, min_chars=30), fontsize=10)
    fig.tight_layout()
    return fig


def line_names(df: pd.DataFrame) -> pd.Series:
    """One line per method and budget: ``method`` where a method has one budget, else
    ``method @ budget`` (the ``budget`` column of a budget sweep)."""
    if "budget" not in df:
        return df["method"]
    budget = df["budget"].astype(object).where(df["budget"].notna(), "").astype(str)
    several = df.assign(budget=budget).groupby(["family", "method"])["budget"].transform("nunique") > 1
    return df["method"].where(~several, df["method"] + " @ " + budget)


def run(bench_csv: str, out_png: str, out_pdf: str) -> None:
    """One row of panels per model family -- per (family, backend) when several backends ran."""
    df = pd.read_csv(bench_csv)
    if df.empty:
        raise ValueError(f"{bench_csv}: no benchmark rows to plot")
    if df["backend"].nunique() > 1:
        df = df.assign(family=df["family"] + " · " + df["backend"])
    df = df.assign(method=line_names(df))
    devices = ", ".join(sorted(set(map(str, df["device_name"].dropna()))))
    weights = ", ".join(sorted(set(map(str, df["weights"].dropna()))))
    backends = ", ".join(sorted(set(map(str, df["backend"]))))
    title = f"{backends} · {devices} · {df['dtype'].iloc[0]} · weights: {weights}"
    note = unstable_note(df[df["status"] == "ok"])
    if note:
        title += f" · {note}"
    save(draw(df, title), out_png, out_pdf)


def save(fig, *paths) -> None:
    """Write ``fig`` to each path, the format from its suffix, atomically, and close it.  PDFs
    carry no creation date: the same figure gives the same bytes (no churn in committed files)."""
    for path in map(str, paths):
        suffix = "." + path.rsplit(".", 1)[-1]
        with atomic_path(path, suffix=suffix) as tmp:
            fig.savefig(tmp, dpi=150, format=suffix[1:],
                        metadata={"CreationDate": None} if suffix == ".pdf" else None)
    plt.close(fig)
