"""First-order Taylor saliency ``|W * dL/dW|`` of the calibration loss, shared by Taylor+
(``depth``, criterion ``taylor``) and LLM-Pruner (importance ``taylor``).

Both methods score weights by the gradient of one loss: the mean next-token loss of the
calibration windows (Hugging Face's ``labels`` loss), accumulated over batches of
``batch_size`` windows, on the dense model.  :func:`saliency` computes that gradient once
for every decoder-block parameter and keeps what the methods read of it, as float32 sums
of ``|W * g|``: each parameter's total (Taylor+ adds a block's totals), and for a 2-D
weight the sum over each row and over each column (LLM-Pruner adds the rows or columns a
coupled group removes).  The gradient itself is freed.

With the score cache (``PRUNEBENCH_SCORE_CACHE``, :mod:`prunebench.score_cache`) the sums
are saved and read back by the next job of the same model, calibration windows and batch
size -- the other budget of the method, or the other method: a demo that prunes Taylor+
and LLM-Pruner to two budgets each computes the gradient once instead of four times.
File: ``<score cache>/<key>-saliency.safetensors`` (the key includes :data:`VERSION`),
float64 tensors ``<param>.total`` (``[]``), ``<param>.rows`` and ``<param>.cols`` (2-D
weights) and ``loss`` (``[]``).  What is read is checked against the model's block
parameters (every name, every shape: :meth:`Saliency.from_tensors`); sums that do not fit
are computed again.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass

import torch

log = logging.getLogger(__name__)

#: what :func:`compute` stores: bumped where it changes, so that sums of older code are not read
VERSION = 1


@dataclass
class Saliency:
    """``sum |W * g|`` per block parameter (``total``, by parameter name), per row and per
    column of each 2-D weight (``rows``, ``cols``), and the calibration loss."""

    total: dict[str, float]
    rows: dict[str, torch.Tensor]
    cols: dict[str, torch.Tensor]
    loss: float

    def block(self, model, i: int) -> float:
        """Taylor+'s score of block ``i``: the sum of its parameters' totals."""
        prefix = _block_prefix(model, i)
        return sum(v for k, v in self.total.items() if k.startswith(prefix))

    def tensors(self) -> dict[str, torch.Tensor]:
        out = {f"{k}.total": torch.tensor(v, dtype=torch.float64) for k, v in self.total.items()}
        out.update({f"{k}.rows": v for k, v in self.rows.items()})
        out.update({f"{k}.cols": v for k, v in self.cols.items()})
        out["loss"] = torch.tensor(self.loss, dtype=torch.float64)
        return out

    @classmethod
    def from_tensors(cls, t: dict[str, torch.Tensor], params=None) -> "Saliency":
        """The sums of :meth:`tensors`; ``params`` (``[(name, parameter)]``, e.g.
        :func:`block_parameters`): they must be these parameters' sums, every one of them and
        no other, of their shapes.  ``ValueError`` saying what does not fit."""
        want = {"loss": ()}
        for name, p in params or ():
            want[f"{name}.total"] = ()
            if p.ndim == 2:
                want.update({f"{name}.rows": (p.shape[0],), f"{name}.cols": (p.shape[1],)})
        if params is None:
            want.update({k: tuple(v.shape) for k, v in t.items() if k != "loss"})
        missing = [k for k in want if k not in t]
        unexpected = [k for k in t if k not in want]
        shapes = [f"{k} {tuple(t[k].shape)} (expected {want[k]})" for k in want
                  if k in t and tuple(t[k].shape) != want[k]]
        if missing or unexpected or shapes:
            raise ValueError("saliency sums do not fit the model's block parameters: "
                             + "; ".join(f"{what} {items[:5]}{' ...' if len(items) > 5 else ''}"
                                         for what, items in (("missing", missing), ("unexpected", unexpected),
                                                             ("wrong shapes", shapes)) if items))
        part = {kind: {k[:-len(kind) - 1]: v for k, v in t.items() if k.endswith("." + kind)}
                for kind in ("total", "rows", "cols")}
        return cls(total={k: float(v) for k, v in part["total"].items()}, rows=part["rows"], cols=part["cols"],
                   loss=float(t["loss"]))


def _block_prefix(model, i: int) -> str:
    return f"{_layers_name(model)}.{i}."


def _layers_name(model) -> str:
    layers = model.model.layers
    return next(n for n, m in model.named_modules() if m is layers)


def block_parameters(model) -> list[tuple[str, torch.nn.Parameter]]:
    prefix = _layers_name(model) + "."
    return [(n, p) for n, p in model.named_parameters() if n.startswith(prefix)]


def compute(model, calibration: torch.Tensor, batch_size: int) -> Saliency:
    """The gradient of the mean calibration loss w.r.t. every block parameter, summarised."""
    device = next(model.parameters()).device
    params = block_parameters(model)
    flags = {p: p.requires_grad for p in model.parameters()}
    was_training = model.training
    model.eval()
    for p in model.parameters():
        p.requires_grad_(False)
        p.grad = None
    for _, p in params:
        p.requires_grad_(True)
    n, loss = calibration.shape[0], 0.0
    try:
        with torch.enable_grad():
            for start in range(0, n, batch_size):
                x = calibration[start:start + batch_size].to(device)
                part = model(input_ids=x, labels=x, use_cache=False).loss.float() * (x.shape[0] / n)
                part.backward()
                loss += part.item()
        total, rows, cols = {}, {}, {}
        with torch.no_grad():
            for name, p in params:
                s = (p.detach().float() * p.grad.float()).abs()
                total[name] = s.sum().item()
                if s.ndim == 2:
                    rows[name] = s.sum(dim=1).double().cpu()
                    cols[name] = s.sum(dim=0).double().cpu()
    finally:
        for p, f in flags.items():
            p.requires_grad_(f)
            p.grad = None
        model.train(was_training)
    return Saliency(total, rows, cols, loss)


def saliency(model, calibration: torch.Tensor, batch_size: int) -> Saliency:
    """:func:`compute`, read from the score cache where a job computed it before."""
    from .. import score_cache

    store = score_cache.open_tensors(model, calibration, batch_size, "saliency", VERSION)
    cached = store.load()
    if cached is not None:
        try:
            return Saliency.from_tensors(cached, block_parameters(model))
        except ValueError as exc:  # not this model's: computed again, the file replaced
            log.warning("%s: %s; computing them again", store.path, exc)
    result = compute(model, calibration, batch_size)
    store.save(result.tensors())
    return result
