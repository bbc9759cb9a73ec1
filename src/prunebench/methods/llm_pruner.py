"""``llm-pruner``: block-wise width pruning of LLM-Pruner (Ma et al. 2023), LLaMA recipe.

In every decoder layer of a range (LLaMA-7B recipe: layers 4..29 of 32) the same
number of whole attention heads (q/k/v/o coupled) and of MLP intermediate channels
(gate/up/down coupled) is removed; embeddings, norms, ``lm_head`` and the layers
outside the range are untouched.  The coupling comes from torch-pruning's dependency
graph and its head-pruning mode (``tp.pruner.BasePruner`` with ``num_heads``,
``prune_num_heads=True``, ``prune_head_dims=False``): head and channel indices are
chosen and removed by torch-pruning, not by hand.

Grouped-query attention (fewer KV heads than query heads): torch-pruning's built-in
mapping is used -- the same number of query heads is removed from every KV group and
all KV heads are kept, so a layer keeps ``kv_heads * k`` query heads (``k`` = 1 ..
heads per KV head).  For multi-head attention a head is removed with its k/v rows.

Settings:

``importance``
    ``taylor`` (default) -- first-order Taylor ``|W * dL/dW|`` per weight, summed over
    the coupled group (LLM-Pruner's ``param_first``); ``L`` is the next-token loss of
    the calibration samples.  ``l2`` -- gradient-free: the sum of squared weights of
    the group (LLM-Pruner's ``l2``).  A head's importance is the mean over its channels.
``layer_start``, ``layer_end``
    layers pruned: ``[layer_start, layer_end)``, negative values count from the end.
    Default: the 32-layer recipe ``[4, 30)`` scaled to the model's depth (first
    ``round(4 n/32)`` and last ``round(2 n/32)`` layers kept, at least one of each):
    ``[4, 28)`` for 30 layers, ``[1, 7)`` for 8 layers.
``batch_size``
    calibration samples per forward/backward pass (Taylor only), default 4.
``num_examples``
    how many calibration samples the gradient uses (default: all of them).
``round_to``
    the kept MLP width of a pruned layer is a multiple of it (default 1: any width),
    e.g. 64 for GEMM-friendly shapes; heads are always whole.

Budget: the pruned layers are identical, so the parameter count is a function of the
heads ``a`` and channels ``c`` removed per layer.  ``r = (dense - target) /
(n_pruned_layers * layer_params)`` is the LLM-Pruner ratio (LLaMA-7B 6.74B -> 4.9B,
layers 4..29: r = 0.35).  Heads are coarse, so the head count whose fraction is
nearest to ``r`` (among those that can meet the budget) is taken, then the channel
count that lands closest to ``budget.target_params`` (fine: one channel is
``3 * hidden`` parameters per layer, ``round_to`` channels with alignment); the result is within 0.5 % of the target or
the method fails with the reachable range.  The report gives both ratios.
"""
from __future__ import annotations

import logging
import sys
import time
import warnings
from contextlib import ExitStack, contextmanager
from unittest import mock

import torch
from torch import nn

from ..models import count_params, layer_structure
from .base import Budget, PrunedModel, register
from .saliency import saliency
from .width import (attn_geometry, budget_report, check_uniform, plan_report, resolve_layer_range, solve_plan,
                    sync_attention_attrs, uniform_reach)

log = logging.getLogger(__name__)


SETTINGS = {
    "type": "object",
    "additionalProperties": False,
    "properties": {
        "importance": {"enum": ["taylor", "l2"], "default": "taylor"},
        "layer_start": {"type": ["integer", "null"], "default": None},
        "layer_end": {"type": ["integer", "null"], "default": None},
        "batch_size": {"type": "integer", "minimum": 1, "default": 4},
        "num_examples": {"type": ["integer", "null"], "minimum": 1, "default": None},
        "round_to": {"type": "integer", "minimum": 1, "default": 1},
    },
}


# --------------------------------------------------------------------------- importance

class GroupImportance:
    """Importance of each channel of a torch-pruning group, computed in float32.

    ``taylor``: sum over the group's weights of ``|W * grad|``, from the rows and columns
    of the calibration gradient's saliency (:mod:`prunebench.methods.saliency`, shared with
    Taylor+ and the other budgets); ``l2``: sum of ``W**2``.  Layers whose indices do not
    map to the root (k/v of a GQA group, kept whole) are skipped, as torch-pruning does.
    """

    def __init__(self, kind: str, sal=None, names: dict | None = None):
        self.kind, self.sal, self.names = kind, sal, names or {}

    @torch.no_grad()
    def __call__(self, group) -> torch.Tensor | None:
        import torch_pruning as tp

        imp = None
        for item in group:
            dep, idxs = item[0], item[1]
            layer, fn, root_idxs = dep.target.module, dep.handler, getattr(item, "root_idxs", None)
            if not isinstance(layer, nn.Linear) or root_idxs is None or any(r is None for r in root_idxs):
                continue
            if fn == tp.prune_linear_out_channels:  # bound methods: compare with ==
                dim = 0
            elif fn == tp.prune_linear_in_channels:
                dim = 1
            else:
                continue
            w = layer.weight.detach()
            sel = torch.as_tensor(idxs, dtype=torch.long, device=w.device)
            if self.kind == "taylor":
                name = self.names.get(layer)
                if self.sal is None or name not in self.sal.rows:
                    raise RuntimeError(f"taylor importance: no gradient for {layer}")
                sums = (self.sal.rows if dim == 0 else self.sal.cols)[name]
                local = sums.index_select(0, sel.cpu()).float().to(w.device)
            else:
                local = w.index_select(dim, sel).float().pow(2).sum(dim=1 - dim)
            if imp is None:
                imp = torch.zeros(len(group[0].idxs), dtype=torch.float32, device=w.device)
            imp.scatter_add_(0, torch.as_tensor(root_idxs, dtype=torch.long, device=w.device), local)
        return imp


# --------------------------------------------------------------------------- tracing

def _rotary_standin(q, k, cos, sin, *args, **kwargs):
    return q * cos + q * sin, k * cos + k * sin


@contextmanager
def traceable(model):
    """Run the model in a form whose autograd graph torch-pruning maps correctly.

    * eager attention: ``repeat_kv``'s expand gives torch-pruning its GQA index mapping
      (query head -> KV head); fused SDPA looks like an element-wise op coupling query
      and key channels one to one, which is wrong for GQA;
    * rotary embedding replaced by an element-wise stand-in: ``rotate_half`` (slice +
      cat inside each head) sends torch-pruning's index mapping round a cycle forever
      for some shapes (e.g. 2 query heads per KV head).  Heads are removed whole, so the
      mixing inside a head does not change which channels are coupled.
    * every parameter requires grad (the graph is read from ``grad_fn``).
    The model is restored afterwards.
    """
    cfg = model.config
    old_impl = cfg._attn_implementation
    flags = [(p, p.requires_grad) for p in model.parameters()]
    with ExitStack() as stack:
        mods = {sys.modules[type(layer.self_attn).__module__] for layer in model.model.layers}
        for mod in mods:
            if hasattr(mod, "apply_rotary_pos_emb"):
                stack.enter_context(mock.patch.object(mod, "apply_rotary_pos_emb", _rotary_standin))
        try:
            cfg._attn_implementation = "eager"
            for p, _ in flags:
                p.requires_grad_(True)
            with torch.enable_grad():
                yield
        finally:
            cfg._attn_implementation = old_impl
            for p, f in flags:
                p.requires_grad_(f)


def build_pruner(model, example: torch.Tensor, layers: list, plan: dict, importance):
    """A torch-pruning BasePruner that prunes only the heads/channels of ``layers``."""
    import torch_pruning as tp

    chosen = set()
    for layer in layers:
        chosen.update(layer.self_attn.modules())
        chosen.update(layer.mlp.modules())
    ignored = [m for m in model.modules() if isinstance(m, (nn.Linear, nn.Embedding)) and m not in chosen]
    # norm weights are plain parameters in the hidden-size group; ignored like the embeddings
    ignored += [p for n, p in model.named_parameters() if "norm" in n]
    num_heads, head_ratio, ratio = {}, {}, {}
    H, I = plan["heads"], plan["intermediate"]
    a, c = plan["heads_removed"], plan["channels_removed"]
    for layer in layers:
        attn = layer.self_attn
        g = attn_geometry(attn)
        num_heads.update({attn.q_proj: g.heads, attn.k_proj: g.kv_heads, attn.v_proj: g.kv_heads})
        if a:
            # torch-pruning removes ceil(r * heads) (then ceil(./kv_heads) per KV group)
            head_ratio[attn] = (a - 0.5) / H
            # head pruning runs only in a scope with a positive width ratio; head dims
            # themselves are never pruned (prune_head_dims=False)
            ratio[attn.q_proj] = 0.5
        if c:
            # it removes n - int(n * (1 - r)) channels: exactly c for r = (c - 0.5) / n
            ratio[layer.mlp.gate_proj] = (c - 0.5) / I
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*[Uu]nwrapped parameters.*")
        with traceable(model):
            pruner = tp.pruner.BasePruner(
                model,
                example_inputs=example,
                importance=importance,
                forward_fn=lambda m, x: m(input_ids=x, use_cache=False),
                global_pruning=False,
                pruning_ratio=0.0,
                pruning_ratio_dict=ratio,
                ignored_layers=ignored,
                num_heads=num_heads,
                prune_num_heads=True,
                prune_head_dims=False,
                head_pruning_ratio=0.0,
                head_pruning_ratio_dict=head_ratio,
            )
    kv_modules = {m for layer in layers if attn_geometry(layer.self_attn).group > 1
                  for m in (layer.self_attn.k_proj, layer.self_attn.v_proj)}
    if kv_modules:
        pruner.DG.check_pruning_group = _keep_kv_heads(pruner.DG.check_pruning_group, kv_modules)
    return pruner, chosen


def _keep_kv_heads(check, kv_modules):
    """GQA: never touch k/v in a head-pruning group (all KV heads are kept).

    torch-pruning empties the k/v entries of a GQA group itself, but decides "GQA" by
    comparing the head counts *after* the update: when the kept query heads equal the KV
    heads (e.g. 4 heads / 2 KV heads, one removed per group) it keeps the k/v entries,
    its own over-pruning check rejects the group and nothing is pruned.  The check is
    the last step before a group is handed out, so the k/v entries are emptied here.
    """

    def wrapped(group):
        for i in range(len(group)):
            dep, idxs = group[i]
            if dep.target.module in kv_modules and len(idxs):
                group[i] = (dep, [])
        return check(group)

    return wrapped


# --------------------------------------------------------------------------- method

def reachable(info, settings: dict):
    """The uniform solver's range over the layer range; an empty range is refused even
    where the depth is not known yet."""
    start, end = settings["layer_start"], settings["layer_end"]
    if info is None:
        if start is not None and end is not None and (start < 0) == (end < 0) and start >= end:
            raise ValueError(f"layer_end: [{start}, {end}) is an empty layer range (end is exclusive)")
        return None
    try:
        s, e = resolve_layer_range(info.n_layers, start, end)
    except ValueError as exc:
        raise ValueError(f"layer_end: {exc}") from None
    return uniform_reach(info, e - s, settings["round_to"])


@register("llm-pruner", SETTINGS, reachable)
def prune(model, calibration: torch.Tensor, budget: Budget, settings: dict) -> PrunedModel:
    t0 = time.perf_counter()
    kind, bs = settings["importance"], settings["batch_size"]
    layers_all = model.model.layers
    n_layers = len(layers_all)
    start, end = resolve_layer_range(n_layers, settings["layer_start"], settings["layer_end"])
    layers = [layers_all[i] for i in range(start, end)]
    check_uniform(layers, "llm-pruner")
    total = count_params(model)
    plan = solve_plan(layers[0], len(layers), total, budget.target_params, round_to=settings["round_to"])
    log.info("llm-pruner: layers [%d, %d), remove %d heads and %d channels per layer (ratio %.3f)",
             start, end, plan["heads_removed"], plan["channels_removed"], plan["ratio"])

    loss, sal = None, None
    if plan["heads_removed"] or plan["channels_removed"]:
        if kind == "taylor":
            n_ex = settings["num_examples"] or calibration.shape[0]
            sal = saliency(model, calibration[:n_ex], bs)
            loss = sal.loss
        example = calibration[:1, : min(8, calibration.shape[1])].to(next(model.parameters()).device)
        names = {m: f"{n}.weight" for n, m in model.named_modules() if isinstance(m, nn.Linear)}
        pruner, chosen = build_pruner(model, example, layers, plan, GroupImportance(kind, sal, names))
        with torch.no_grad():
            for group in pruner.step(interactive=True):
                touched = {dep.target.module for dep, _ in group if isinstance(dep.target.module, nn.Module)}
                stray = [pruner.DG._module2name.get(m, str(m)) for m in touched
                         if isinstance(m, (nn.Linear, nn.Embedding)) and m not in chosen]
                if stray:
                    raise RuntimeError(f"llm-pruner: torch-pruning group reaches outside the pruned layers: {stray}")
                group.prune()
        del pruner
        for p in model.parameters():
            p.grad = None
    sync_attention_attrs(model)

    structure = layer_structure(model)["layers"]
    want_heads = plan["heads"] - plan["heads_removed"]
    want_ch = plan["intermediate"] - plan["channels_removed"]
    want_kv = want_heads if plan["kv_heads"] == plan["heads"] else plan["kv_heads"]
    for i, spec in enumerate(structure):
        inside = start <= i < end
        if inside and (spec["heads"], spec["kv_heads"], spec["intermediate"]) != (want_heads, want_kv, want_ch):
            raise RuntimeError(f"llm-pruner: layer {i} has {spec} after pruning, expected {want_heads} heads, "
                               f"{want_kv} KV heads, {want_ch} channels")
    after = count_params(model)
    if after != plan["params_after"]:
        raise RuntimeError(f"llm-pruner: {after:,} parameters after pruning, planned {plan['params_after']:,}")
    return PrunedModel(
        model,
        {
            "importance": kind,
            "pruned_layers": list(range(start, end)),
            **plan_report(plan),
            "gqa": "same number of query heads removed from every KV group; KV heads kept"
                   if plan["kv_heads"] != plan["heads"] else None,
            "calibration_loss": loss,
            "layers": structure,
            "params_before": total,
            "params_after": after,
            "budget": budget_report(budget, after),
            "prune_seconds": round(time.perf_counter() - t0, 2),
        },
    )
