"""Helpers shared by the width-pruning methods (``llm-pruner``, ``flap``, ``wanda-sp``, ``minitron``).

* geometry of a decoder layer (heads, KV heads, head dim, GQA group size);
* parameter counts of the prunable units (a query head, a KV group, an MLP channel),
  biases included;
* slicing heads / channels out of a layer (new ``nn.Linear`` modules, their biases
  sliced with their rows, optional bias on ``o_proj`` / ``down_proj``), keeping eager
  attention's ``num_key_value_groups`` right;
* the layer range of a method (defaults given for 32 layers, scaled to any depth);
* uniform widths: the budget solver (same heads and channels removed in every pruned
  layer, kept MLP widths multiples of ``round_to``) and the heads and channels a layer
  keeps by their scores.

The calibration passes that hand module inputs to scorers are in :mod:`.passes`.

Nothing here changes the model config: per-layer widths are read back with
:func:`prunebench.models.layer_structure` and saved in the manifest's ``structure``.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from ..models import set_kv_groups

#: how close to ``budget.target_params`` a width method must land (0.5 %)
TOLERANCE = 0.005


@dataclass(frozen=True)
class AttnGeometry:
    heads: int
    kv_heads: int
    head_dim: int
    hidden: int

    @property
    def group(self) -> int:
        """Query heads per KV head (1 for multi-head attention)."""
        return self.heads // self.kv_heads


def attn_geometry(attn) -> AttnGeometry:
    hd = attn.head_dim
    return AttnGeometry(
        heads=attn.q_proj.out_features // hd,
        kv_heads=attn.k_proj.out_features // hd,
        head_dim=hd,
        hidden=attn.q_proj.in_features,
    )


def _rows_params(lin: nn.Linear, n_rows: int) -> int:
    """Parameters removed with ``n_rows`` output rows of ``lin`` (weight + bias)."""
    return n_rows * (lin.in_features + (1 if lin.bias is not None else 0))


def _cols_params(lin: nn.Linear, n_cols: int) -> int:
    return n_cols * lin.out_features


def query_head_params(attn) -> int:
    """Parameters of one query head (q rows + o_proj columns), KV heads kept."""
    hd = attn.head_dim
    return _rows_params(attn.q_proj, hd) + _cols_params(attn.o_proj, hd)


def kv_group_params(attn) -> int:
    """Parameters of one KV group: its query heads, its k/v head and their o_proj columns.

    For multi-head attention (group size 1) this is one head: ``4 * hidden * head_dim``.
    """
    g = attn_geometry(attn)
    hd = g.head_dim
    return (
        g.group * query_head_params(attn)
        + _rows_params(attn.k_proj, hd)
        + _rows_params(attn.v_proj, hd)
    )


def mlp_channel_params(mlp) -> int:
    """Parameters of one MLP intermediate channel (gate/up rows + down_proj column)."""
    return _rows_params(mlp.gate_proj, 1) + _rows_params(mlp.up_proj, 1) + _cols_params(mlp.down_proj, 1)


# --------------------------------------------------------------------------- layer range

def default_layer_range(n_layers: int, first32: int = 4, end32: int = 30) -> tuple[int, int]:
    """The 32-layer recipe ``[first32, end32)`` scaled to ``n_layers`` (half rounded up).

    ``[4, 30)`` (LLM-Pruner's LLaMA-7B recipe: layers 4..29 pruned, the first 4 and the
    last 2 kept) becomes ``[4, 28)`` for 30 layers, ``[1, 7)`` for 8 layers; at least
    one leading and one trailing layer is kept when the model has 3 or more layers.
    """
    start = int(n_layers * first32 / 32 + 0.5)
    keep_last = int(n_layers * (32 - end32) / 32 + 0.5)
    if n_layers >= 3:
        start, keep_last = max(start, 1), max(keep_last, 1)
    end = n_layers - keep_last
    if end <= start:  # tiny models: prune at least one layer
        start, end = min(start, n_layers - 1), min(start, n_layers - 1) + 1
    return start, end


def resolve_layer_range(n_layers: int, start: int | None, end: int | None) -> tuple[int, int]:
    """``layer_start``/``layer_end`` settings (end exclusive, negatives count from the end)."""
    d_start, d_end = default_layer_range(n_layers)
    s = d_start if start is None else (start + n_layers if start < 0 else start)
    e = d_end if end is None else (end + n_layers if end < 0 else end)
    if not 0 <= s < e <= n_layers:
        raise ValueError(
            f"layer_start/layer_end: [{start}, {end}) is not a non-empty range of the model's "
            f"{n_layers} layers (end is exclusive; negative values count from the end)"
        )
    return s, e


# --------------------------------------------------------------------------- slicing

def _index(idx, device) -> torch.Tensor:
    return torch.as_tensor(idx, dtype=torch.long, device=device)


def slice_linear(lin: nn.Linear, rows=None, cols=None, add_bias: torch.Tensor | None = None) -> nn.Linear:
    """A new Linear with the kept output ``rows`` / input ``cols`` of ``lin``.

    ``add_bias`` (float32 or the weight dtype, shape ``[out]``) is added to the bias;
    the new layer gets a bias when ``lin`` had one or ``add_bias`` is given.
    """
    w = lin.weight.detach()
    b = lin.bias.detach() if lin.bias is not None else None
    if rows is not None:
        r = _index(rows, w.device)
        w = w.index_select(0, r)
        b = b.index_select(0, r) if b is not None else None
    if cols is not None:
        w = w.index_select(1, _index(cols, w.device))
    has_bias = b is not None or add_bias is not None
    new = nn.Linear(w.shape[1], w.shape[0], bias=has_bias, device=w.device, dtype=w.dtype)
    with torch.no_grad():
        new.weight.copy_(w)
        if has_bias:
            total = torch.zeros(w.shape[0], dtype=torch.float32, device=w.device)
            if b is not None:
                total += b.float()
            if add_bias is not None:
                total += add_bias.to(device=w.device, dtype=torch.float32)
            new.bias.copy_(total.to(w.dtype))
    new.train(lin.training)
    return new


def head_channels(heads, head_dim: int) -> list[int]:
    """Channel indices of ``heads`` (each ``head_dim`` consecutive channels)."""
    return [h * head_dim + i for h in heads for i in range(head_dim)]


def removed_input_bias(lin: nn.Linear, removed: list[int], mean_in: torch.Tensor) -> torch.Tensor | None:
    """``W[:, removed] @ mean_in[removed]`` in float32: the mean contribution of the
    removed input channels, to be added as a bias (FLAP's bias compensation)."""
    if not removed:
        return None
    r = _index(removed, lin.weight.device)
    w = lin.weight.detach().index_select(1, r).float()
    return w @ mean_in.to(device=w.device, dtype=torch.float32).index_select(0, r)


def prune_attention(attn, keep_kv_heads: list[int], keep_heads: list[int],
                    o_bias: torch.Tensor | None = None) -> None:
    """Keep query heads ``keep_heads`` and KV heads ``keep_kv_heads`` of ``attn`` in place.

    Every kept KV head must keep the same number of query heads, listed in KV-group
    order (the layout ``repeat_kv`` expects).  ``o_bias`` is added to ``o_proj``'s bias.
    """
    g = attn_geometry(attn)
    keep_heads, keep_kv_heads = sorted(keep_heads), sorted(keep_kv_heads)
    if not keep_heads or not keep_kv_heads or len(keep_heads) % len(keep_kv_heads):
        raise ValueError(f"layer {attn.layer_idx}: cannot keep {len(keep_heads)} query heads on {len(keep_kv_heads)} KV heads")
    per = len(keep_heads) // len(keep_kv_heads)
    for j, kv in enumerate(keep_kv_heads):
        mine = keep_heads[j * per:(j + 1) * per]
        if any(h // g.group != kv for h in mine):
            raise ValueError(f"layer {attn.layer_idx}: query heads {mine} do not all belong to KV head {kv}")
    q_ch = head_channels(keep_heads, g.head_dim)
    kv_ch = head_channels(keep_kv_heads, g.head_dim)
    attn.q_proj = slice_linear(attn.q_proj, rows=q_ch)
    attn.k_proj = slice_linear(attn.k_proj, rows=kv_ch)
    attn.v_proj = slice_linear(attn.v_proj, rows=kv_ch)
    attn.o_proj = slice_linear(attn.o_proj, cols=q_ch, add_bias=o_bias)
    set_kv_groups(attn, len(keep_heads), len(keep_kv_heads))


def prune_mlp(mlp, keep: list[int], down_bias: torch.Tensor | None = None) -> None:
    """Keep intermediate channels ``keep`` of a LLaMA MLP in place (bias added to down_proj)."""
    keep = sorted(keep)
    if not keep:
        raise ValueError("an MLP must keep at least one channel")
    mlp.gate_proj = slice_linear(mlp.gate_proj, rows=keep)
    mlp.up_proj = slice_linear(mlp.up_proj, rows=keep)
    mlp.down_proj = slice_linear(mlp.down_proj, cols=keep, add_bias=down_bias)
    if hasattr(mlp, "intermediate_size"):
        mlp.intermediate_size = len(keep)


def sync_attention_attrs(model) -> None:
    """After any width change: ``num_key_value_groups`` (and friends) from the real shapes."""
    for layer in model.model.layers:
        g = attn_geometry(layer.self_attn)
        set_kv_groups(layer.self_attn, g.heads, g.kv_heads)
        if hasattr(layer.mlp, "intermediate_size"):
            layer.mlp.intermediate_size = layer.mlp.gate_proj.out_features


def budget_report(budget, params_after: int) -> dict:
    return {
        "target_params": budget.target_params,
        "dense_params": budget.dense_params,
        "ratio": budget.ratio,
        "params_after": params_after,
        "error": params_after / budget.target_params - 1,
    }


def plan_report(plan: dict) -> dict:
    """The report fields of a uniform-width plan (:func:`solve_plan`)."""
    return {
        "ratio": plan["ratio"],
        "head_ratio": plan["head_ratio"],
        "channel_ratio": plan["channel_ratio"],
        "heads_removed_per_layer": plan["heads_removed"],
        "channels_removed_per_layer": plan["channels_removed"],
        "round_to": plan["round_to"],
    }


def result_report(model, params_before: int, params_after: int, budget, calibration, t0: float) -> dict:
    """The report fields every width method ends with: widths, counts, budget, cost."""
    import time

    from ..models import layer_structure

    return {
        "layers": layer_structure(model)["layers"],
        "params_before": params_before,
        "params_after": params_after,
        "budget": budget_report(budget, params_after),
        "calibration_tokens": int(calibration.numel()),
        "prune_seconds": round(time.perf_counter() - t0, 2),
    }


# --------------------------------------------------------------------------- uniform widths

def layer_signature(layer) -> tuple:
    """Shapes (and biases) of a layer's projections: equal for layers of equal widths."""
    attn, mlp = layer.self_attn, layer.mlp
    return (
        tuple((m.in_features, m.out_features, m.bias is not None)
              for m in (attn.q_proj, attn.k_proj, attn.v_proj, attn.o_proj,
                        mlp.gate_proj, mlp.up_proj, mlp.down_proj)),
        attn.head_dim,
    )


def check_uniform(layers: list, method: str) -> None:
    if len({layer_signature(l) for l in layers}) != 1:
        raise ValueError(f"{method}: the layers to prune do not all have the same widths "
                         "(the method prunes the same number of heads and channels in every layer of a uniform model)")


def head_options(heads: int, kv_heads: int) -> list[int]:
    """Query heads that may be removed per layer: any count for MHA; for GQA a multiple
    of the KV-head count (same number from each KV group), always keeping one per group."""
    if kv_heads == heads:
        return list(range(heads))
    group = heads // kv_heads
    return [k * kv_heads for k in range(group)]


def channel_options(inter: int, round_to: int = 1) -> list[int]:
    """MLP channels that may be removed per layer: the kept width is a positive multiple
    of ``round_to`` (any width for 1), or the full width (nothing removed)."""
    return sorted({0} | {inter - k * round_to for k in range(1, inter // round_to + 1)})


def nearest_channels(ideal: float, inter: int, round_to: int = 1) -> int:
    """The allowed channel removal nearest to ``ideal`` (ties: the smaller one)."""
    if round_to == 1:
        return min(max(round(ideal), 0), inter - 1)
    return min(channel_options(inter, round_to), key=lambda c: (abs(c - ideal), c))


def solve_plan(layer, n_layers: int, total: int, target: int, tol: float = TOLERANCE, *, round_to: int = 1,
               method: str = "llm-pruner", hint: str = "widen layer_start/layer_end or lower the budget ratio") -> dict:
    """Heads and channels to remove in each of ``n_layers`` equal layers so that the model
    of ``total`` parameters lands near ``target``.

    ``r = (total - target) / (n_layers * layer_params)`` is the uniform ratio; heads are
    coarse, so the head count whose fraction is nearest to ``r`` (among those that can
    meet the budget) is taken, then the channel count (kept width a multiple of
    ``round_to``) that lands closest to the target.  Within ``tol`` or a ValueError that
    names the reachable range.
    """
    attn, mlp = layer.self_attn, layer.mlp
    g = attn_geometry(attn)
    inter = mlp.gate_proj.out_features
    mha = g.kv_heads == g.heads
    p_head = kv_group_params(attn) if mha else query_head_params(attn)
    p_chan = mlp_channel_params(mlp)
    layer_params = sum(m.weight.numel() + (m.bias.numel() if m.bias is not None else 0)
                       for m in (attn.q_proj, attn.k_proj, attn.v_proj, attn.o_proj,
                                 mlp.gate_proj, mlp.up_proj, mlp.down_proj))
    remove = total - target
    ratio = remove / (n_layers * layer_params)
    candidates = []
    for a in head_options(g.heads, g.kv_heads):
        c = nearest_channels((remove / n_layers - a * p_head) / p_chan, inter, round_to)
        after = total - n_layers * (a * p_head + c * p_chan)
        candidates.append({"heads_removed": a, "channels_removed": c, "params_after": after,
                           "error": after / target - 1})
    ok = [p for p in candidates if abs(p["error"]) <= tol]
    if not ok:
        best = min(candidates, key=lambda p: abs(p["error"]))
        lo = total - n_layers * (max(head_options(g.heads, g.kv_heads)) * p_head
                                 + max(channel_options(inter, round_to)) * p_chan)
        aligned = f", MLP widths multiples of {round_to}" if round_to > 1 else ""
        raise ValueError(
            f"{method}: cannot reach {target:,} parameters within {tol:.1%} by pruning {n_layers} layers{aligned} "
            f"(reachable: {lo:,} .. {total:,}; closest {best['params_after']:,}); {hint}"
        )
    plan = min(ok, key=lambda p: (abs(p["heads_removed"] / g.heads - ratio), abs(p["error"])))
    plan.update(
        ratio=ratio,
        head_ratio=plan["heads_removed"] / g.heads,
        channel_ratio=plan["channels_removed"] / inter,
        heads=g.heads, kv_heads=g.kv_heads, intermediate=inter, round_to=round_to,
        params_per_head=p_head, params_per_channel=p_chan,
    )
    return plan


#: settings of the uniform-width methods that take only these (minitron, wanda-sp)
UNIFORM_SETTINGS = {
    "type": "object",
    "additionalProperties": False,
    "properties": {
        "batch_size": {"type": "integer", "minimum": 1, "default": 8},
        "round_to": {"type": "integer", "minimum": 1, "default": 1},
    },
}


def uniform_reachable(method: str):
    """The ``reachable`` declaration of a method pruning every layer to one width (settings
    with ``round_to``)."""

    def reachable(info, settings: dict):
        if info is None:
            return None
        return uniform_reach(info, info.n_layers, settings["round_to"],
                             method=method, hint="lower the budget ratio or round_to")

    return reachable


def uniform_reach(info, n_layers: int, round_to: int = 1, **solver) -> "Reach":
    """What :func:`solve_plan` reaches removing the same heads and channels in ``n_layers``
    equal layers: from the smallest removal (one channel step, or one head step) to all but
    one head per KV group and one channel step; inside, :func:`solve_plan` itself says
    whether the steps land within :data:`TOLERANCE` (``round_to`` makes them coarse)."""
    from .base import Reach

    mha = info.kv_heads == info.heads
    p_head = info.kv_group_params if mha else info.query_head_params
    heads = [a for a in head_options(info.heads, info.kv_heads) if a]
    chans = [c for c in channel_options(info.intermediate, round_to) if c]
    most = (max(heads, default=0) * p_head + max(chans, default=0) * info.channel_params) * n_layers
    least = min([a * p_head for a in heads[:1]] + [c * info.channel_params for c in chans[:1]]) * n_layers
    check = (lambda t: solve_plan(info.layer, n_layers, info.total, t, round_to=round_to, **solver)) \
        if info.layer is not None else None
    return Reach(low=info.total - most, high=info.total - least, tolerance=TOLERANCE, check=check,
                 unit=f"the same heads and MLP channels in {n_layers} layers"
                      + (f", MLP widths multiples of {round_to}" if round_to > 1 else ""))


def top(scores: torch.Tensor, k: int) -> list[int]:
    """Indices of the ``k`` highest ``scores``, ascending (ties: the lower index)."""
    return sorted(int(i) for i in torch.argsort(scores, descending=True, stable=True)[:k])


def keep_heads(scores: torch.Tensor, kv_heads: int, n_remove: int) -> tuple[list[int], list[int]]:
    """Query heads and KV heads kept when ``n_remove`` query heads go, by ``scores``.

    Multi-head attention: the best heads stay, each with its k/v.  Grouped-query
    attention: every KV group loses ``n_remove / kv_heads`` of its query heads (its
    lowest-scoring ones) and all KV heads stay, so the layout stays valid GQA.
    """
    heads = scores.numel()
    if kv_heads == heads:
        keep = top(scores, heads - n_remove)
        return keep, keep
    group = heads // kv_heads
    per = group - n_remove // kv_heads
    keep = [kv * group + i for kv in range(kv_heads) for i in top(scores[kv * group:(kv + 1) * group], per)]
    return keep, list(range(kv_heads))


def prune_uniform(layer, head_scores: torch.Tensor, channel_scores: torch.Tensor, plan: dict) -> None:
    """Remove ``plan``'s heads and channels from ``layer``: the lowest-scoring ones."""
    attn, mlp = layer.self_attn, layer.mlp
    if plan["heads_removed"]:
        heads, kv = keep_heads(head_scores, attn_geometry(attn).kv_heads, plan["heads_removed"])
        prune_attention(attn, kv, heads)
    if plan["channels_removed"]:
        prune_mlp(mlp, top(channel_scores, mlp.gate_proj.out_features - plan["channels_removed"]))
