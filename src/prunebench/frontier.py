"""Frontier stage: quality against speed, ``frontier.csv`` and ``quality_speed.{png,pdf}``.

For every pruned model (method and budget) and evaluation corpus: its perplexity
(``quality.csv``) and its speed-up over dense at one benchmark cell (``speedups.csv``; the
cell is ``frontier`` in the config: backend, input and output length, batch).  A model
that was not timed at that cell takes the speed-up of a timed model of the same model
family with the same shapes (same layer count and per-layer widths, from the prune
reports): a model's speed depends on its shapes, not on its values, so every whole-block
method removing the same number of blocks shares one timed model (``timed_as`` names it).
Dense is the point (1, its perplexity).  ``stable`` (both cells stable) and ``verdict``
(``faster`` / ``slower`` only where the speed-up's interval excludes 1) come with the
speed-up from ``speedups.csv``; both are empty for dense.

``on_front``: the point is on the Pareto front of its (model, corpus) -- no other point is
at least as fast with at most its perplexity and better in one of the two
(:func:`pareto_front`), by the speed-up's point estimate: a point whose cells are unstable
(or too few runs for an interval) stays in the table and on the front, marked in the
figure.  ``note`` says where a method chose its layer widths from the weights
(``widths_from_weights`` in its report) and the weights are random: that shape is not the
method's shape on a trained model; and where its perplexity diverged (``ppl_status``
``diverged``: no perplexity, so the point stays in the table and is not drawn).

One panel per (model, corpus): perplexity on a log axis against speed-up, one marker per
method, each point labelled with its budget, 95 % intervals as bars, the front drawn as a
step line and its points named; a hollow marker is a speed-up from unstable cells
(``stable`` false: a wide interval, or none).

The tables are read with their identifier columns (model, method, budget, corpus...) as
text, as written: a model or method named ``NA``, ``null`` or ``7`` stays that name.
"""
from __future__ import annotations

import json
import math

import pandas as pd

from .io import write_csv
from .records import read_prune_report

COLUMNS = ["model", "family", "method", "budget", "params", "params_ratio", "corpus", "ppl", "ppl_ci_low",
           "ppl_ci_high", "held_out", "backend", "in_len", "out_len", "batch", "speedup", "speedup_ci_low",
           "speedup_ci_high", "stable", "verdict", "timed_as", "on_front", "weights", "note"]
#: columns read as text, never as numbers or missing values
ID_COLUMNS = ("model", "family", "method", "budget", "corpus", "backend", "weights", "ppl_status", "verdict",
              "timed_as", "note")
RANDOM_WIDTHS = "widths chosen from random weights: not the method's shape on a trained model"
#: the note of a point whose perplexity diverged (no perplexity: kept in the table, not drawn)
DIVERGED = "perplexity diverged (a window's NLL not finite, or the perplexity overflowing)"


def pareto_front(speed: list[float], ppl: list[float]) -> list[bool]:
    """Which points ``(speed[i], ppl[i])`` are on the front of higher speed and lower
    perplexity: no other point has ``speed >=`` and ``ppl <=`` with one of them strict
    (equal points are all on it).  A point with a missing value is not on it.  Sweep by
    speed, fastest first: a point is on the front when its perplexity is below that of
    every strictly faster point, and no equally fast point has a lower one."""
    ok = [i for i in range(len(speed)) if _finite(speed[i]) and _finite(ppl[i])]
    out = [False] * len(speed)
    best = math.inf  # lowest perplexity among strictly faster points
    ok.sort(key=lambda i: -speed[i])
    k = 0
    while k < len(ok):
        tie = [i for i in ok[k:] if speed[i] == speed[ok[k]]]
        low = min(ppl[i] for i in tie)
        for i in tie:
            out[i] = ppl[i] == low and ppl[i] < best
        best = min(best, low)
        k += len(tie)
    return out


def _finite(v) -> bool:
    return v is not None and not (isinstance(v, float) and math.isnan(v)) and math.isfinite(float(v))


def shape_key(report: dict) -> str:
    """What a model's speed depends on: its layer count and per-layer widths."""
    return json.dumps([report.get("num_layers"), report.get("structure")], sort_keys=True)


def table(quality: pd.DataFrame, speedups: pd.DataFrame, reports: list[dict], cell: dict,
          variants: dict) -> pd.DataFrame:
    """The frontier table (module docstring); ``variants``: folder name -> method and budget."""
    names = {(m, n): (v["method"], v["budget"]) for m, vs in variants.items() for n, v in vs.items()}
    info = {}
    for r in reports:
        meth, tag = names.get((r["model"], r["method"]), (r["method"], ""))
        info[(r["model"], meth, tag)] = r
    at = speedups
    for k in ("backend", "in_len", "out_len", "batch"):
        at = at[at[k] == cell[k]]
    timed = {(r.model, r.method, _tag(r.budget)): r for r in at.itertuples()}
    by_shape: dict[tuple, tuple] = {}
    for (model, meth, tag), r in sorted(timed.items()):
        rep = info.get((model, meth, tag))
        if rep is not None:
            by_shape.setdefault((model, shape_key(rep)), (model, meth, tag))
    rows = []
    for q in quality.itertuples():
        key = (q.model, q.method, _tag(q.budget))
        rep = info.get(key, {})
        src = key if key in timed else by_shape.get((q.model, shape_key(rep))) if rep else None
        is_dense = rep.get("algorithm") == "dense" or (not rep and q.method == "dense")
        sp = timed.get(src) if src else None
        row = {c: getattr(q, c, None) for c in COLUMNS if hasattr(q, c)}
        row.update(cell)
        row["budget"] = _tag(q.budget)
        if is_dense:
            row.update(speedup=1.0, speedup_ci_low=None, speedup_ci_high=None, stable=None, verdict="",
                       timed_as=q.method)
        elif sp is not None:
            row.update(speedup=sp.speedup, speedup_ci_low=sp.speedup_ci_low, speedup_ci_high=sp.speedup_ci_high,
                       stable=_flag(getattr(sp, "stable", None)), verdict=_tag(getattr(sp, "verdict", None)),
                       timed_as=_label(src[1], src[2]))
        else:
            row.update(speedup=None, speedup_ci_low=None, speedup_ci_high=None, stable=None, verdict="",
                       timed_as="")
        row["note"] = "; ".join(filter(None, [
            RANDOM_WIDTHS if rep.get("widths_from_weights") and q.weights == "random" else "",
            DIVERGED if getattr(q, "ppl_status", None) == "diverged" else ""]))
        rows.append(row)
    df = pd.DataFrame(rows, columns=COLUMNS)
    df["on_front"] = False
    for _, g in df.groupby(["model", "corpus"], sort=False):
        df.loc[g.index, "on_front"] = pareto_front(list(g["speedup"]), list(g["ppl"]))
    return df


def _tag(v) -> str:
    return "" if v is None or (isinstance(v, float) and math.isnan(v)) else str(v)


def _flag(v) -> bool | None:
    """A ``stable`` value as read (bool, or its text ``True`` / ``False``); None if missing."""
    text = _tag(v).strip().lower()
    return True if text == "true" else False if text == "false" else None


def unstable(df: pd.DataFrame) -> pd.Series:
    """The rows whose speed-up comes from unstable cells (``stable`` false)."""
    if "stable" not in df:
        return pd.Series(False, index=df.index)
    return df["stable"].map(_flag).eq(False)


def read_table(path: str) -> pd.DataFrame:
    """A CSV table with :data:`ID_COLUMNS` as text as written (empty: ``""``) and the other
    columns' empty fields as missing values."""
    cols = list(pd.read_csv(path, nrows=0).columns)
    return pd.read_csv(path, dtype={c: str for c in cols if c in ID_COLUMNS}, keep_default_na=False,
                       na_values={c: [""] for c in cols if c not in ID_COLUMNS})


def _label(method: str, budget: str) -> str:
    return f"{method} @ {budget}" if budget else method


def draw(df: pd.DataFrame, title: str):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import seaborn as sns

    panels = list(dict.fromkeys(zip(df["family"], df["corpus"])))
    methods = list(dict.fromkeys(df["method"]))
    colors = sns.color_palette("tab20", 20)
    strong_first = colors[0::2] + colors[1::2]
    shapes = "osD^vP*Xhp<>8dH"
    # any number of methods: colours and markers cycle
    palette = {m: strong_first[i % len(strong_first)] for i, m in enumerate(methods)}
    markers = {m: shapes[i % len(shapes)] for i, m in enumerate(methods)}
    noted = set(df.loc[df["note"] != "", "method"])
    fig, axes = plt.subplots(1, len(panels), figsize=(7.6 * len(panels), 4.8), squeeze=False)
    for ax, (fam, corpus) in zip(axes[0], panels):
        sub = df[(df["family"] == fam) & (df["corpus"] == corpus)]
        pts = sub[sub["speedup"].notna() & sub["ppl"].notna()]
        weak = unstable(pts)
        for m in methods:
            s = pts[pts["method"] == m]
            if s.empty:
                continue
            label = m + (" (widths from random weights)" if m in noted else "")
            ax.errorbar(s["speedup"], s["ppl"],
                        yerr=_err(s, "ppl"), xerr=_err(s, "speedup"), fmt=markers[m], color=palette[m],
                        ms=5, elinewidth=0.7, capsize=1.5, label=label, ls="none")
            hollow = s[weak[s.index]]
            if not hollow.empty:  # over the filled marker: white inside, the method's colour around
                ax.plot(hollow["speedup"], hollow["ppl"], ls="none", marker=markers[m], ms=5, mfc="white",
                        mec=palette[m], zorder=3)
            for x, y, b in zip(s["speedup"], s["ppl"], s["budget"]):
                if b:
                    ax.annotate(b, (x, y), textcoords="offset points", xytext=(4, -8), fontsize=5, color="dimgrey")
        if weak.any():
            ax.plot([], [], ls="none", marker="o", ms=5, mfc="white", mec="grey",
                    label="hollow: speed-up from unstable cells (wide interval or none)")
        front = pts[pts["on_front"]].sort_values("speedup")
        if not front.empty:
            ax.step(front["speedup"], front["ppl"], where="post", color="black", lw=0.9, alpha=0.6,
                    label="Pareto front", zorder=0)
            for x, y, m, b in zip(front["speedup"], front["ppl"], front["method"], front["budget"]):
                ax.annotate(_label(m, b), (x, y), textcoords="offset points", xytext=(5, 4), fontsize=6)
        missing = sub[sub["speedup"].isna() & (sub["method"] != "dense")]
        if not missing.empty:
            txt = "no timed model of the same shapes: " + ", ".join(
                sorted({_label(m, b) for m, b in zip(missing["method"], missing["budget"])}))
            ax.annotate(txt, (0, 0), xycoords="axes fraction", xytext=(0, -30), textcoords="offset points",
                        va="top", fontsize=6, color="crimson", wrap=True)
        if pts.empty:
            ax.text(0.5, 0.5, "no perplexity or speed-up to plot", ha="center", va="center",
                    transform=ax.transAxes, color="grey")
        else:
            ax.set_yscale("log")
            ax.legend(fontsize=6, loc="upper left", bbox_to_anchor=(1.01, 1.0), borderaxespad=0)
        held = bool(sub["held_out"].any()) if "held_out" in sub else False
        ax.set_title(f"{fam}: {corpus}" + (" (held out from calibration)" if held else ""), fontsize=9)
        ax.set_xlabel("speed-up over dense (dense latency / latency)")
        ax.set_ylabel(f"perplexity ({corpus}, log scale)")
        ax.grid(True, which="both", alpha=0.3)
    fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    return fig


def _err(s: pd.DataFrame, col: str):
    lo, hi = s.get(f"{col}_ci_low"), s.get(f"{col}_ci_high")
    if lo is None or hi is None or lo.isna().all():
        return None
    return [(s[col] - lo).fillna(0).clip(lower=0), (hi - s[col]).fillna(0).clip(lower=0)]


def run(quality_csv: str, speedups_csv: str, reports: list[str], cell: dict, table_out: str, out_png: str,
        out_pdf: str, variants: dict | None = None) -> None:
    from .figure import save

    quality = read_table(quality_csv)
    speedups = read_table(speedups_csv)
    recs = [read_prune_report(p) for p in reports]
    df = table(quality, speedups, recs, cell, variants or {})
    write_csv(table_out, df)
    weights = ", ".join(sorted(set(map(str, df["weights"].dropna()))))
    title = (f"speed-up at {cell['backend']}, in {cell['in_len']} / out {cell['out_len']} tokens, "
             f"batch {cell['batch']} · weights: {weights}")
    save(draw(df, title), out_png, out_pdf)
