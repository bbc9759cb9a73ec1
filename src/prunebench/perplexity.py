"""Perplexity stage: mean next-token NLL over non-overlapping windows, exponentiated.

Input: the token windows of the evaluation split (``[n_windows, seq_len]``) written by
the data stage.  Every window is scored independently (no context carried over), the
loss of all predicted tokens (``seq_len - 1`` per window) is averaged
(:func:`prunebench.likelihood.mean_nll`), ``ppl = exp``.
"""
from __future__ import annotations

import math
import time

import torch

from .likelihood import mean_nll


def perplexity(model, ids: torch.Tensor, batch_size: int = 8, progress: bool = False) -> float:
    nll = mean_nll(model, ids, batch_size, progress, desc="perplexity")
    return math.exp(nll) if nll < 700 else float("inf")


def run(model_dir: str, data_path: str, out_path: str, *, model_name: str, method: str,
        batch_size: int, device: str, dtype: str) -> dict:
    from . import data as data_mod
    from .io import write_json
    from .devices import resolve_device
    from .models import load_model, read_manifest, weights_kind

    man = read_manifest(model_dir)
    record = {"model": model_name, "method": method, "params": man["params"],
              "weights": weights_kind(model_dir)}
    if record["weights"] == "random":
        record.update(ppl=None, status="skipped",
                      reason="random weights: perplexity is meaningless, efficiency numbers only")
        write_json(out_path, record)
        return record
    ids, meta = data_mod.load_tokens(data_path)
    dev = resolve_device(device)
    model = load_model(model_dir, dtype=dtype, device=dev)
    t0 = time.perf_counter()
    ppl = perplexity(model, ids, batch_size=batch_size, progress=True)
    record.update(ppl=ppl, status="ok", n_windows=int(ids.shape[0]), seq_len=int(ids.shape[1]),
                  corpus=meta.get("corpus"), seconds=round(time.perf_counter() - t0, 3),
                  device=str(dev), dtype=dtype)
    write_json(out_path, record)
    return record

