"""``flap``: fluctuation-based adaptive structured pruning (FLAP, An et al. 2024).

Retraining-free width pruning of every decoder layer.  One forward pass of the dense
model over the calibration tokens collects, for each input channel of ``o_proj``
and ``down_proj``, the running mean and variance of its input (Chan/Welford
updates, float64 accumulators); then

* **metric** -- a score per input channel:
  ``wifv`` (default) ``var(x_j) * ||W[:, j]||^2`` (weighted input feature variance),
  ``ifv`` ``var(x_j)``, ``wifn`` ``sqrt(mean(x_j^2)) * mean_i |W[i, j]|``.
  As in the reference code, attention channel scores are squared.
* **structure** ``AL-AM`` (adaptive across layers and modules): scores are
  standardised within each layer and module type (mean 0, std 1 over the layer's
  attention channels, resp. MLP channels); an attention unit scores the mean of its
  channels.  All units of all layers are ranked together against one global
  threshold, a unit weighted by its parameter count (an MLP channel
  ``3 * hidden``, a head ``4 * hidden * head_dim``), so layers keep different widths.
  Every layer keeps at least one attention unit and one MLP channel.
* **bias compensation** (``bias_compensation: true``): the mean input of the removed
  channels, passed through their columns, ``W[:, removed] @ mean_x[removed]``,
  becomes a bias of ``o_proj`` / ``down_proj`` (saved as ``o_bias`` / ``down_bias``).

Grouped-query attention: query heads sharing a KV head read the same k/v, so the
attention unit is a whole KV group -- its query heads, the k/v head and their
``o_proj`` columns, ``(2 * group + 2) * hidden * head_dim`` parameters (one head of
``4 * hidden * head_dim`` for multi-head attention).  Any depth, head dimension and
GQA layout work; statistics are float32/float64 on the model's device.

Settings: ``metric`` (``wifv``|``ifv``|``wifn``), ``structure`` (``AL-AM``),
``bias_compensation`` (default true), ``batch_size`` (calibration forward batch, 8),
``round_to`` (default 1): every kept MLP width is a multiple of it (or the full
width) -- a layer's channels, best first, are ranked in chunks of ``round_to`` (a
chunk scores the mean of its channels) instead of one by one; heads are always whole.

Budget: with the units sorted by score, the pruned model's parameter count is a step
function of how many are kept, so the global threshold is solved from the budget:
the lowest score whose better units fit ``budget.target_params`` (bias parameters
included); the remainder, less than one unit, is filled with the next-best MLP
channels, which lands within one MLP channel (``3 * hidden`` parameters) of it
(``round_to`` channels with alignment).
"""
from __future__ import annotations

import logging
import time

import torch

from ..models import count_params
from .base import Budget, PrunedModel, Reach, register
from .width import (TOLERANCE, attn_geometry, result_report, head_channels, kv_group_params, mlp_channel_params,
                    prune_attention, prune_mlp, removed_input_bias)

log = logging.getLogger(__name__)


SETTINGS = {
    "type": "object",
    "additionalProperties": False,
    "properties": {
        "metric": {"enum": ["wifv", "ifv", "wifn"], "default": "wifv"},
        "structure": {"enum": ["AL-AM"], "default": "AL-AM"},
        "bias_compensation": {"type": "boolean", "default": True},
        "batch_size": {"type": "integer", "minimum": 1, "default": 8},
        "round_to": {"type": "integer", "minimum": 1, "default": 1},
    },
}


def reachable(info, settings: dict):
    """From the smallest MLP unit removed to every layer keeping one attention unit and one
    MLP unit (``round_to`` channels; bias compensation adds a bias where a module loses
    channels); within :data:`TOLERANCE` of the budget."""
    if info is None:
        return None
    bias, round_to, inter = settings["bias_compensation"], settings["round_to"], info.intermediate
    o_extra = info.hidden if bias and not info.o_bias else 0
    down_extra = info.hidden if bias and not info.down_bias else 0
    smallest = inter - round_to * ((inter - 1) // round_to)  # the last chunk of a layer
    per_layer = (info.kv_heads - 1) * info.kv_group_params + (inter - min(round_to, inter)) * info.channel_params
    return Reach(low=info.total - info.n_layers * (per_layer - o_extra - down_extra),
                 high=info.total - smallest * info.channel_params + down_extra, tolerance=TOLERANCE,
                 unit="attention units and MLP channels, at least one of each per layer")


# --------------------------------------------------------------------------- statistics

class InputStats:
    """Running per-channel mean and variance of a Linear layer's input (float64)."""

    def __init__(self, n_channels: int, device):
        self.n = 0
        self.mean = torch.zeros(n_channels, dtype=torch.float64, device=device)
        self.m2 = torch.zeros(n_channels, dtype=torch.float64, device=device)

    def update(self, x: torch.Tensor) -> None:
        x = x.detach().reshape(-1, x.shape[-1]).float()
        nb = x.shape[0]
        if nb == 0:
            return
        b_mean = x.mean(0)
        b_m2 = (x - b_mean).pow(2).sum(0)
        b_mean, b_m2 = b_mean.double(), b_m2.double()
        n = self.n + nb
        delta = b_mean - self.mean
        self.mean += delta * (nb / n)
        self.m2 += b_m2 + delta.pow(2) * (self.n * nb / n)
        self.n = n

    @property
    def var(self) -> torch.Tensor:
        return self.m2 / max(self.n, 1)

    @property
    def mean_sq(self) -> torch.Tensor:
        return self.var + self.mean.pow(2)


@torch.no_grad()
def collect_stats(model, calibration: torch.Tensor, batch_size: int) -> list[dict[str, InputStats]]:
    """Input statistics of every layer's ``o_proj`` and ``down_proj`` on the dense model."""
    device = next(model.parameters()).device
    stats, handles = [], []
    for layer in model.model.layers:
        s = {"attn": InputStats(layer.self_attn.o_proj.in_features, device),
             "mlp": InputStats(layer.mlp.down_proj.in_features, device)}
        stats.append(s)
        for key, mod in (("attn", layer.self_attn.o_proj), ("mlp", layer.mlp.down_proj)):
            handles.append(mod.register_forward_pre_hook(lambda _m, args, st=s[key]: st.update(args[0])))
    try:
        for start in range(0, calibration.shape[0], batch_size):
            x = calibration[start:start + batch_size].to(device)
            model.model(input_ids=x, use_cache=False)  # the decoder only: no logits needed
    finally:
        for h in handles:
            h.remove()
    return stats


def channel_metric(metric: str, weight: torch.Tensor, st: InputStats) -> torch.Tensor:
    """Score of each input channel of a Linear with ``weight`` [out, in] (float32)."""
    w = weight.detach().float()
    if metric == "ifv":
        return st.var.float()
    if metric == "wifv":
        return st.var.float() * w.pow(2).sum(0)
    if metric == "wifn":
        return st.mean_sq.float().sqrt() * w.abs().mean(0)
    raise ValueError(f"flap: unknown metric {metric!r}")


def _standardise(x: torch.Tensor) -> torch.Tensor:
    x = x.double()
    std = x.std() if x.numel() > 1 else x.new_tensor(0.0)
    return (x - x.mean()) / (std if std > 0 else 1.0)


# --------------------------------------------------------------------------- selection

def unit_scores(model, stats, metric: str) -> list[dict]:
    """Per layer: standardised scores of attention units (KV groups) and MLP channels."""
    out = []
    for layer, st in zip(model.model.layers, stats):
        attn, mlp = layer.self_attn, layer.mlp
        g = attn_geometry(attn)
        a = channel_metric(metric, attn.o_proj.weight, st["attn"]).pow(2)
        a = _standardise(a).view(g.kv_heads, g.group * g.head_dim).mean(1)
        m = _standardise(channel_metric(metric, mlp.down_proj.weight, st["mlp"]))
        out.append({"attn": a.cpu(), "mlp": m.cpu(),
                    "attn_params": kv_group_params(attn), "mlp_params": mlp_channel_params(mlp)})
    return out


def select_units(scores: list[dict], fixed: int, target: int) -> tuple[list[torch.Tensor], list[torch.Tensor], float, int]:
    """Global threshold: keep the best units (each layer's best attention unit and MLP
    channel always) so that ``fixed`` + their parameters lands closest to ``target``.
    A kind's ``*_params`` is one count for all its units or a tensor of one per unit.

    The threshold is the lowest score whose prefix stays within the budget; the rest
    of the budget (less than one unit) is filled with the next-best MLP channels, so a
    large attention unit at the threshold cannot throw the count off by more than one
    MLP channel.  Returns per-layer boolean keep masks (attention units, MLP channels),
    the threshold and the planned parameter count.
    """
    vals, params, is_mlp, owner = [], [], [], []
    for li, s in enumerate(scores):
        for kind in ("attn", "mlp"):
            v = s[kind].clone().double()
            v[int(torch.argmax(v))] = float("inf")  # never prune a layer to zero width
            vals.append(v)
            params.append(torch.as_tensor(s[f"{kind}_params"], dtype=v.dtype).expand_as(v).clone())
            is_mlp.append(torch.full((v.numel(),), kind == "mlp"))
            owner.append((li, kind, v.numel()))
    v_all, p_all, mlp_all = torch.cat(vals), torch.cat(params), torch.cat(is_mlp)
    order = torch.argsort(v_all, descending=True, stable=True)
    cum = fixed + torch.cumsum(p_all[order], 0)  # params with the top-k units kept, k = 1..N
    n_protected = int(torch.isinf(v_all).sum())
    k = max(n_protected, int((cum <= target).sum()))  # cum is increasing
    planned = float(cum[k - 1])
    keep = torch.zeros_like(v_all, dtype=torch.bool)
    keep[order[:k]] = True
    rest = order[k:][mlp_all[order[k:]]]  # remaining MLP channels, best first
    if rest.numel():
        fill = planned + torch.cumsum(p_all[rest], 0)
        errs = torch.cat([torch.tensor([abs(planned - target)], dtype=fill.dtype), (fill - target).abs()])
        j = int(torch.argmin(errs))
        keep[rest[:j]] = True
        planned = planned + float(p_all[rest[:j]].sum())
    threshold = float(v_all[order[k - 1]]) if k < v_all.numel() else float("-inf")
    masks_attn, masks_mlp = [None] * len(scores), [None] * len(scores)
    pos = 0
    for li, kind, n in owner:
        (masks_attn if kind == "attn" else masks_mlp)[li] = keep[pos:pos + n].clone()
        pos += n
    return masks_attn, masks_mlp, threshold, int(round(planned))


def chunk_mlp(scores: list[dict], round_to: int) -> tuple[list[dict], list[list[torch.Tensor]]]:
    """MLP units of ``round_to`` channels: each layer's channels best first, cut into
    chunks (the last one smaller when the width is not a multiple), a chunk scoring the
    mean of its channels.  Chunk scores fall within a layer, so the global threshold
    keeps a prefix of them: every kept width is a multiple of ``round_to`` (or the full
    width).  Returns the chunked scores and each layer's chunks (channel indices)."""
    out, chunks = [], []
    for s in scores:
        order = torch.argsort(s["mlp"], descending=True, stable=True)
        parts = list(torch.split(order, round_to))
        out.append({**s, "mlp": torch.stack([s["mlp"][c].mean() for c in parts]),
                    "mlp_params": torch.tensor([len(c) * s["mlp_params"] for c in parts], dtype=torch.float64)})
        chunks.append(parts)
    return out, chunks


def unchunk(mask: torch.Tensor, parts: list[torch.Tensor], width: int) -> torch.Tensor:
    """Channel keep mask of a layer from its chunk keep mask."""
    keep = torch.zeros(width, dtype=torch.bool)
    for kept, c in zip(mask.tolist(), parts):
        if kept:
            keep[c] = True
    return keep


# --------------------------------------------------------------------------- compression

def compress_layer(layer, attn_keep: torch.Tensor, mlp_keep: torch.Tensor, st: dict[str, InputStats],
                   bias: bool) -> None:
    """Remove the unkept KV groups / MLP channels of ``layer`` (bias-compensated)."""
    attn, mlp = layer.self_attn, layer.mlp
    g = attn_geometry(attn)
    if not bool(attn_keep.all()):
        kv_keep = [int(i) for i in torch.nonzero(attn_keep).flatten()]
        heads = [kv * g.group + j for kv in kv_keep for j in range(g.group)]
        kept_ch = set(head_channels(heads, g.head_dim))
        removed = [c for c in range(g.heads * g.head_dim) if c not in kept_ch]
        ob = removed_input_bias(attn.o_proj, removed, st["attn"].mean) if bias else None
        prune_attention(attn, kv_keep, heads, o_bias=ob)
    if not bool(mlp_keep.all()):
        keep = [int(i) for i in torch.nonzero(mlp_keep).flatten()]
        removed = [int(i) for i in torch.nonzero(~mlp_keep).flatten()]
        db = removed_input_bias(mlp.down_proj, removed, st["mlp"].mean) if bias else None
        prune_mlp(mlp, keep, down_bias=db)


def _params_after(model, masks_attn, masks_mlp, scores, bias: bool) -> int:
    """Exact parameter count of the pruned model, before pruning (biases included)."""
    total = count_params(model)
    for layer, ma, mm, s in zip(model.model.layers, masks_attn, masks_mlp, scores):
        total -= int((~ma).sum()) * s["attn_params"] + int((~mm).sum()) * s["mlp_params"]
        if bias and not bool(ma.all()) and layer.self_attn.o_proj.bias is None:
            total += layer.self_attn.o_proj.out_features
        if bias and not bool(mm.all()) and layer.mlp.down_proj.bias is None:
            total += layer.mlp.down_proj.out_features
    return total


# --------------------------------------------------------------------------- method

@register("flap", SETTINGS, reachable)
def prune(model, calibration: torch.Tensor, budget: Budget, settings: dict) -> PrunedModel:
    t0 = time.perf_counter()
    metric, structure, bias, bs, round_to = (settings[k] for k in ("metric", "structure", "bias_compensation",
                                                             "batch_size", "round_to"))
    layers = model.model.layers
    total = count_params(model)

    stats = collect_stats(model, calibration, bs)
    scores = unit_scores(model, stats, metric)
    prunable = sum(s["attn"].numel() * s["attn_params"] + s["mlp"].numel() * s["mlp_params"] for s in scores)
    # biases added where a module loses channels: assume every layer (a few hidden-size
    # vectors), then correct with the exact count below
    extra = 0
    if bias:
        extra = sum((l.self_attn.o_proj.bias is None) * l.self_attn.o_proj.out_features
                    + (l.mlp.down_proj.bias is None) * l.mlp.down_proj.out_features for l in layers)
    if round_to == 1:
        masks_attn, masks_mlp, threshold, _ = select_units(scores, total - prunable + extra, budget.target_params)
    else:
        chunked, parts = chunk_mlp(scores, round_to)
        masks_attn, masks_chunks, threshold, _ = select_units(chunked, total - prunable + extra, budget.target_params)
        masks_mlp = [unchunk(m, p, sc["mlp"].numel()) for m, p, sc in zip(masks_chunks, parts, scores)]
    planned = _params_after(model, masks_attn, masks_mlp, scores, bias)
    if abs(planned / budget.target_params - 1) > TOLERANCE:
        unit = f"{round_to} channels" if round_to > 1 else "one channel"
        raise ValueError(f"flap: cannot reach {budget.target_params:,} parameters within {TOLERANCE:.1%} "
                         f"(closest {planned:,}; every layer keeps at least one head unit and {unit}"
                         f"{', MLP widths multiples of %d' % round_to if round_to > 1 else ''})")

    with torch.no_grad():
        for layer, ma, mm, st in zip(layers, masks_attn, masks_mlp, stats):
            compress_layer(layer, ma, mm, st, bias)
    after = count_params(model)
    if after != planned:
        raise RuntimeError(f"flap: {after:,} parameters after pruning, planned {planned:,}")
    g0 = attn_geometry(layers[0].self_attn) if len(layers) else None
    return PrunedModel(
        model,
        {
            "metric": metric,
            "structure": structure,
            # AL-AM: each layer's widths follow from the weights' scores (random weights:
            # a shape that says nothing about the method on a trained model)
            "widths_from_weights": True,
            "bias_compensation": bias,
            "round_to": round_to,
            "attention_unit": ("KV group (query heads sharing a KV head + the k/v head)"
                               if g0 is not None and g0.group > 1 else "head"),
            "threshold": threshold if abs(threshold) != float("inf") else None,
            "removed_fraction_attention_units": [float((~m).float().mean()) for m in masks_attn],
            "removed_fraction_mlp_channels": [float((~m).float().mean()) for m in masks_mlp],
            **result_report(model, total, after, budget, calibration, t0),
        },
    )
