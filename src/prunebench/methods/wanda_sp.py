"""``wanda-sp``: structured Wanda, ``|W| * ||X||`` per attention head and MLP channel.

The structured-pruning baseline ("Wanda-sp") of FLAP's experiments (An et al.,
"Fluctuation-based Adaptive Structured Pruning for Large Language Models", AAAI 2024), which
carries Wanda's metric (Sun et al., "A Simple and Effective Pruning Approach for Large
Language Models", ICLR 2024) over to whole heads and channels.  Reference code:
github.com/CASIA-IVA-Lab/FLAP (``lib/prune.py: prune_wanda_sp``,
``lib/layerwrapper.py: WrappedGPT``).

For the input ``x`` of ``o_proj`` (attention) and of ``down_proj`` (MLP), with
``||X_j||^2`` the squared norm of input channel ``j`` over the calibration tokens (per
calibration window, as the reference's ``scaler_row``), the channel score is::

    S_j = mean_i |W_ij| * ||X_j||        (W the o_proj / down_proj weight, i its rows)

an MLP channel scores ``S_j``, an attention head the sum of ``S_j`` over its
``head_dim`` channels.  In every layer the same number of heads and of channels is
removed, the lowest-scoring ones (the reference prunes every layer by one ratio); no
bias compensation.  As in the reference, layers are pruned one after the other: the
statistics of layer ``i`` are taken on the model whose layers ``0 .. i-1`` are already
pruned (each layer's calibration input is kept from the pruned layer before it,
:class:`~prunebench.methods.passes.LayerByLayer`, as the reference keeps ``inps``).

Grouped-query attention (the reference covers multi-head LLaMA only): the same number
of query heads leaves every KV group, the group's lowest-scoring ones, and all KV heads
stay; for multi-head attention a head goes with its k/v rows.

Budget: the LLM-Pruner solver (:func:`prunebench.methods.width.solve_plan`) over all
layers: the head count nearest the uniform ratio, then the channel count that lands
within 0.5 % of the budget.  Settings: ``batch_size`` (calibration forward batch, 8),
``round_to`` (kept MLP width a multiple of it, default 1).
"""
from __future__ import annotations

import time

import torch

from ..models import count_params
from .base import Budget, PrunedModel, register
from .passes import LayerByLayer
from .width import (attn_geometry, check_uniform, plan_report, prune_uniform, result_report,
                    solve_plan, UNIFORM_SETTINGS, uniform_reachable)

SETTINGS = UNIFORM_SETTINGS


class InputNorm:
    """Squared norm of each input channel over the tokens seen, per calibration window."""

    def __init__(self):
        self.sq: torch.Tensor | None = None
        self.windows = 0

    def update(self, x: torch.Tensor) -> None:
        sq = x.float().pow(2).sum(dim=(0, 1)).double()
        self.sq = sq if self.sq is None else self.sq + sq
        self.windows += x.shape[0]

    @property
    def norm(self) -> torch.Tensor:
        return (self.sq / self.windows).sqrt()


def channel_scores(weight: torch.Tensor, st: InputNorm) -> torch.Tensor:
    """``mean_i |W_ij| * ||X_j||`` for every input channel ``j`` (float64)."""
    return (weight.detach().double().abs() * st.norm.to(weight.device)).mean(0).cpu()


@register("wanda-sp", SETTINGS, uniform_reachable("wanda-sp"))
def prune(model, calibration: torch.Tensor, budget: Budget, settings: dict) -> PrunedModel:
    t0 = time.perf_counter()
    layers = model.model.layers
    check_uniform(list(layers), "wanda-sp")
    total = count_params(model)
    plan = solve_plan(layers[0], len(layers), total, budget.target_params, round_to=settings["round_to"],
                      method="wanda-sp", hint="lower the budget ratio or round_to")
    head_scores = []
    with torch.no_grad():
        stream = LayerByLayer(model, calibration, settings["batch_size"])
        for i, layer in enumerate(layers):
            attn_in, mlp_in = InputNorm(), InputNorm()
            stream.feed(i, {layer.self_attn.o_proj: attn_in.update, layer.mlp.down_proj: mlp_in.update})
            g = attn_geometry(layer.self_attn)
            heads = channel_scores(layer.self_attn.o_proj.weight, attn_in).view(g.heads, g.head_dim).sum(1)
            channels = channel_scores(layer.mlp.down_proj.weight, mlp_in)
            prune_uniform(layer, heads, channels, plan)
            head_scores.append(heads.tolist())
            if i + 1 < len(layers):
                stream.advance(i)
    after = count_params(model)
    if after != plan["params_after"]:
        raise RuntimeError(f"wanda-sp: {after:,} parameters after pruning, planned {plan['params_after']:,}")
    return PrunedModel(model, {
        "metric": "mean_i |W_ij| * ||X_j|| (o_proj / down_proj inputs), summed per head",
        **plan_report(plan),
        "head_scores": head_scores,
        **result_report(model, total, after, budget, calibration, t0),
    })
