"""Perplexity stage: mean next-token NLL over non-overlapping windows, exponentiated.

Input: the token windows of every evaluation corpus (``[n_windows, seq_len]`` each, written
by the data stage), scored by one job per methods entry (every budget of the method, one
model after the other, in one process; each model loaded once).  Every window is
scored independently (no context carried over), the loss of all predicted tokens
(``seq_len - 1`` per window) is averaged, ``ppl = exp``.  The windows are the sampling
units: the mean NLL's 95 % interval is Student's t over the windows' mean NLLs (every window
predicts the same number of tokens, so their mean is the mean over tokens), and the
perplexity's interval is its exponential.  The record holds one entry per corpus under
``corpora`` (``first_block_run``: the block its scoring started at, 0 unless it started from
the base model's recorded block inputs, :mod:`prunebench.prefix_states`); ``ppl`` is the
first corpus's.

A diverged evaluation is a result, not a perplexity: where a window's NLL is NaN or infinite,
or a perplexity (or its interval's end) overflows ``exp``, the corpus's entry has ``status:
"diverged"`` and ``diverged`` saying what (its non-finite values are written as null), and
so has the record (``reason``: every such corpus); ``status: "ok"`` only where every
perplexity is finite.  The record is tagged ``schema``:
:data:`~prunebench.records.PERPLEXITY_SCHEMA` (read back with
:func:`prunebench.records.read_perplexity`).
"""
from __future__ import annotations

import contextlib

import math
import time

import torch
from tqdm.auto import tqdm

from .likelihood import mean_nll, model_nll
from .records import PERPLEXITY_SCHEMA

#: the largest mean NLL whose exponential is reported; above it the perplexity overflows
MAX_NLL = 700.0


@torch.no_grad()
def window_nlls(model, ids: torch.Tensor, batch_size: int = 8, progress: bool = False,
                desc: str = "perplexity", start: int = 0, start_input: torch.Tensor | None = None,
                record: list | None = None) -> torch.Tensor:
    """Mean next-token NLL of each window of ``ids`` ([n, L]) under ``model`` ([n], float64).

    ``start``/``start_input``: the windows' input of block ``start`` (``[n, L, hidden]``),
    given: the blocks before it are not run, block ``start`` gets these values instead
    (:mod:`prunebench.prefix_states`).  ``record``: a list that receives the input of every
    block on every window (``record[k]``: ``[n, L, hidden]``)."""
    from .methods.blocks import Feed, Skip

    device = next(model.parameters()).device
    layers = list(model.model.layers)
    seen: list[list[torch.Tensor]] = [[] for _ in layers]
    hooks = []
    if record is not None:
        hooks += [layer.register_forward_pre_hook(
            lambda _m, args, kwargs, k=k: seen[k].append(args[0] if args else kwargs["hidden_states"]),
            with_kwargs=True) for k, layer in enumerate(layers)]
    out = []
    try:
        with Skip(model, range(start)):
            for s in tqdm(range(0, ids.shape[0], batch_size), desc=desc, disable=not progress, mininterval=2):
                x = ids[s : s + batch_size].to(device)
                with (Feed(model, start_input[s : s + batch_size].to(device)) if start_input is not None
                      else contextlib.nullcontext()):
                    out.append(model_nll(model, x).double().mean(dim=1).cpu())
    finally:
        for h in hooks:
            h.remove()
    if record is not None:
        record[:] = [torch.cat(k).cpu() for k in seen]
    return torch.cat(out)


def t_quantile(p: float, df: int) -> float:
    """Quantile ``p`` (> 0.5) of Student's t with ``df`` degrees of freedom, by bisection
    on its CDF (regularised incomplete beta, continued fraction)."""
    def cdf(t: float) -> float:
        x = df / (df + t * t)
        return 1.0 - 0.5 * _betainc(df / 2.0, 0.5, x)

    lo, hi = 0.0, 1.0
    while cdf(hi) < p:
        hi *= 2.0
    for _ in range(200):
        mid = (lo + hi) / 2.0
        lo, hi = (mid, hi) if cdf(mid) < p else (lo, mid)
    return (lo + hi) / 2.0


def _betainc(a: float, b: float, x: float) -> float:
    """Regularised incomplete beta I_x(a, b) (Lentz's continued fraction)."""
    if x <= 0.0:
        return 0.0
    if x >= 1.0:
        return 1.0
    if x > (a + 1.0) / (a + b + 2.0):
        return 1.0 - _betainc(b, a, 1.0 - x)
    front = math.exp(math.lgamma(a + b) - math.lgamma(a) - math.lgamma(b) + a * math.log(x) + b * math.log1p(-x)) / a
    tiny, f, c, d = 1e-300, 1.0, 1.0, 0.0
    for i in range(400):
        m = i // 2
        if i == 0:
            num = 1.0
        elif i % 2 == 0:
            num = m * (b - m) * x / ((a + 2 * m - 1) * (a + 2 * m))
        else:
            num = -(a + m) * (a + b + m) * x / ((a + 2 * m) * (a + 2 * m + 1))
        d = 1.0 + num * d
        d = 1.0 / (d if abs(d) > tiny else tiny)
        c = 1.0 + num / c
        c = c if abs(c) > tiny else tiny
        f *= c * d
        if abs(1.0 - c * d) < 1e-15:
            break
    return front * (f - 1.0)


def _exp(v: float | None) -> float | None:
    """``exp(v)``; inf above :data:`MAX_NLL`, NaN for NaN, None for None."""
    if v is None or math.isnan(v):
        return v
    return math.exp(v) if v < MAX_NLL else float("inf")


def nll_summary(nlls: torch.Tensor, level: float = 0.95) -> dict:
    """Mean NLL over windows with its ``level`` interval (Student's t), and the perplexity
    with the interval's exponential (null interval for a single window)."""
    n = int(nlls.numel())
    mean = float(nlls.mean())
    half = None
    if n >= 2:
        half = t_quantile(0.5 + level / 2, n - 1) * float(nlls.std(unbiased=True)) / math.sqrt(n)
    lo, hi = (mean - half, mean + half) if half is not None else (None, None)
    return {"ppl": _exp(mean), "ppl_ci_low": _exp(lo), "ppl_ci_high": _exp(hi), "nll": mean,
            "nll_ci_low": lo, "nll_ci_high": hi, "n_windows": n}


def divergence(nlls: torch.Tensor, summary: dict) -> str | None:
    """What is not finite in one corpus's scores (``nlls``: each window's mean NLL,
    ``summary``: :func:`nll_summary` of them); None where every value is finite."""
    nan, inf = int(torch.isnan(nlls).sum()), int(torch.isinf(nlls).sum())
    if nan or inf:
        kinds = ", ".join(f"{k} {w}" for k, w in ((nan, "NaN"), (inf, "infinite")) if k)
        return f"{nan + inf} of {nlls.numel()} windows have a non-finite mean NLL ({kinds})"
    if nlls.numel() == 0:
        return "no windows scored"
    for key, nll_key, what in (("ppl", "nll", "the mean NLL"), ("ppl_ci_high", "nll_ci_high",
                                                                  "the upper end of its 95 % interval")):
        v = summary.get(key)
        if v is not None and not math.isfinite(v):
            return f"{what} ({summary[nll_key]:.6g}) is too large for exp (above {MAX_NLL:g}): the perplexity overflows"
    return None


def perplexity(model, ids: torch.Tensor, batch_size: int = 8, progress: bool = False) -> float:
    return _exp(mean_nll(model, ids, batch_size, progress, desc="perplexity"))


def run(models: dict, data_paths: dict, *, model_name: str, batch_size: int, device: str, dtype: str,
        states_dir: str = "") -> dict:
    """Score every model of ``models`` (``{folder name: {"model_dir": ..., "out_path": ...}}``,
    one record each, in this order: the budgets of one method in one process) on
    ``data_paths`` (``{corpus name: evaluation windows}``, scored in this order).

    ``states_dir``: where the base model's job records the input of every block on every
    window and a block-pruned model's job starts from them (:mod:`prunebench.prefix_states`;
    the same numbers, fewer blocks run); empty: every model scored from its tokens.
    Returns ``{folder name: perplexity on the first corpus}``."""
    from . import data as data_mod

    windows = {name: data_mod.load_tokens(path, model=model_name) for name, path in data_paths.items()}
    return {name: score(m["model_dir"], windows, m["out_path"], model_name=model_name, method=name,
                        batch_size=batch_size, device=device, dtype=dtype, states_dir=states_dir)["ppl"]
            for name, m in models.items()}


def score(model_dir: str, windows: dict, out_path: str, *, model_name: str, method: str, batch_size: int,
          device: str, dtype: str, states_dir: str = "") -> dict:
    """One model's record (module docstring), written to ``out_path``; ``windows``:
    ``{corpus name: (token ids, metadata)}``."""
    from . import prefix_states
    from .io import write_json
    from .devices import resolve_device
    from .models import load_model, read_manifest, weights_kind

    man = read_manifest(model_dir, model=model_name, method=method)
    record = {"schema": PERPLEXITY_SCHEMA, "model": model_name, "method": method, "params": man["params"],
              "weights": weights_kind(model_dir)}
    if record["weights"] == "random":
        record.update(ppl=None, status="skipped", corpora={},
                      reason="random weights: perplexity is meaningless, efficiency numbers only")
        write_json(out_path, record)
        return record
    is_base = man["weights"] == "base"  # the base model's weights: its block inputs are recorded
    dev = resolve_device(device)
    model = load_model(model_dir, dtype=dtype, device=dev)
    corpora = {}
    for name, (ids, meta) in windows.items():
        t0 = time.perf_counter()
        store = prefix_states.open_for(states_dir, model, ids, batch_size)
        start, start_input = (0, None) if is_base else store.start(model, ids, batch_size)
        seen = [] if is_base and store.path is not None else None
        nlls = window_nlls(model, ids, batch_size=batch_size, progress=True, desc=f"perplexity {method} {name}",
                           start=start, start_input=start_input, record=seen)
        if seen:
            store.record(model, ids, batch_size, seen)
        summary = nll_summary(nlls)
        why = divergence(nlls, summary)
        corpora[name] = {**summary, "status": "diverged" if why else "ok", "diverged": why,
                         "seq_len": int(ids.shape[1]), "corpus": meta.get("corpus"),
                         "held_out_from_calibration": bool(meta.get("held_out_from_calibration")),
                         "first_block_run": start, "seconds": round(time.perf_counter() - t0, 3)}
    first = next(iter(corpora.values()))
    diverged = [f"{name}: {c['diverged']}" for name, c in corpora.items() if c["diverged"]]
    record.update(ppl=first["ppl"], status="diverged" if diverged else "ok", corpora=corpora,
                  n_windows=first["n_windows"], seq_len=first["seq_len"], corpus=first["corpus"], device=str(dev),
                  dtype=dtype, seconds=round(sum(c["seconds"] for c in corpora.values()), 3))
    if diverged:
        record["reason"] = "diverged evaluation: " + "; ".join(diverged)
    write_json(out_path, record)
    return record
