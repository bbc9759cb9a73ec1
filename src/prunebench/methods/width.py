"""Helpers shared by the width-pruning methods (``llm-pruner``, ``flap``).

* geometry of a LLaMA decoder layer (heads, KV heads, head dim, GQA group size);
* parameter counts of the prunable units (a query head, a KV group, an MLP channel);
* slicing heads / channels out of a layer (new ``nn.Linear`` modules, optional bias on
  ``o_proj`` / ``down_proj``), keeping eager attention's ``num_key_value_groups`` right;
* the layer range of a method (defaults given for 32 layers, scaled to any depth).

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
