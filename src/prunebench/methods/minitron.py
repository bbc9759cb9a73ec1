"""``minitron``: width pruning by activation magnitude, one width for every layer (Minitron).

Paper: S. Muralidharan et al., "Compact Language Models via Pruning and Knowledge
Distillation", NeurIPS 2024 (arXiv:2407.14679), activation-based importance -- width
axes only (attention heads and MLP neurons; the embedding
channels, depth and the distillation step are not part of this method).  Reference
code: github.com/NVIDIA/Model-Optimizer (``modelopt/torch/prune/plugins/mcore_minitron.py``:
``_register_self_attention_importance``, ``_register_mlp_importance``;
``modelopt/torch/nas/plugins/megatron.py``: ``NumAttentionHeadsHp``).

One forward pass of the dense model over the calibration windows; for the input ``x``
of ``o_proj`` (the attention heads' outputs) and of ``down_proj`` (the MLP neurons'
activations, ``act(gate) * up``), per channel ``j``::

    A_j = sqrt( sum_b ( mean_s |x_{b,s,j}| )^2 )     (mean over the sequence, L2 over windows)

the paper's best aggregation and the reference's.  An MLP neuron scores ``A_j``; an
attention head the L2 norm of ``A`` over its ``head_dim`` channels.  Every layer keeps
its own highest-scoring heads and neurons, the same number in every layer (Minitron's
pruned models are uniform).

Grouped-query attention: as the reference's ``NumAttentionHeadsHp``, the KV groups are
kept and every group keeps its own best ``k`` query heads (the same ``k`` for all
groups); for multi-head attention a head goes with its k/v rows.

Budget: the LLM-Pruner solver (:func:`prunebench.methods.width.solve_plan`) over all
layers: the head count nearest the uniform ratio, then the neuron count that lands
within 0.5 % of the budget.  Settings: ``batch_size`` (calibration forward batch, 8),
``round_to`` (kept MLP width a multiple of it, default 1; the reference searches
widths in multiples of ``ffn_hidden_size_divisor``).
"""
from __future__ import annotations

import time

import torch

from ..models import count_params
from .base import Budget, PrunedModel, register
from .passes import feed_calibration
from .width import (attn_geometry, check_uniform, plan_report, prune_uniform, result_report,
                    solve_plan, UNIFORM_SETTINGS, uniform_reachable)

SETTINGS = UNIFORM_SETTINGS


class ActivationMagnitude:
    """``sum_b (mean_s |x_{b,s,j}|)^2`` over the calibration windows ``b``; ``score`` its root."""

    def __init__(self):
        self.sq: torch.Tensor | None = None

    def update(self, x: torch.Tensor) -> None:
        sq = x.float().abs().mean(dim=1).double().pow(2).sum(0)
        self.sq = sq if self.sq is None else self.sq + sq

    @property
    def score(self) -> torch.Tensor:
        return self.sq.sqrt().cpu()


@register("minitron", SETTINGS, uniform_reachable("minitron"))
def prune(model, calibration: torch.Tensor, budget: Budget, settings: dict) -> PrunedModel:
    t0 = time.perf_counter()
    layers = model.model.layers
    check_uniform(list(layers), "minitron")
    total = count_params(model)
    plan = solve_plan(layers[0], len(layers), total, budget.target_params, round_to=settings["round_to"],
                      method="minitron", hint="lower the budget ratio or round_to")
    acts = [(ActivationMagnitude(), ActivationMagnitude()) for _ in layers]
    hooks = {}
    for layer, (a, m) in zip(layers, acts):
        hooks[layer.self_attn.o_proj] = a.update
        hooks[layer.mlp.down_proj] = m.update
    feed_calibration(model, calibration, settings["batch_size"], hooks)
    head_scores = []
    with torch.no_grad():
        for layer, (a, m) in zip(layers, acts):
            g = attn_geometry(layer.self_attn)
            heads = a.score.view(g.heads, g.head_dim).norm(dim=1)
            prune_uniform(layer, heads, m.score, plan)
            head_scores.append(heads.tolist())
    after = count_params(model)
    if after != plan["params_after"]:
        raise RuntimeError(f"minitron: {after:,} parameters after pruning, planned {plan['params_after']:,}")
    return PrunedModel(model, {
        "metric": "activation magnitude sqrt(sum_b (mean_s |x|)^2) of o_proj / down_proj inputs; L2 per head",
        **plan_report(plan),
        "head_scores": head_scores,
        **result_report(model, total, after, budget, calibration, t0),
    })
