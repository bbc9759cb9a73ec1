"""Layer surgery on LLaMA-layout decoders (``model.model.layers[i]`` with ``self_attn.{q,k,v,o}_proj``
and ``mlp.{gate,up,down}_proj``): the parameter count, the per-layer widths, rebuilding layers
to given widths, keeping attention's head bookkeeping and the layer numbering consistent.

The per-layer widths are the ``structure`` of a model folder's manifest
(:mod:`prunebench.models.folder`): ``{"layers": [{"heads", "kv_heads", "intermediate",
"o_bias", "down_bias"}, ...]}``.
"""
from __future__ import annotations

import torch

from ..io import ArtifactError


def count_params(model: torch.nn.Module) -> int:
    """Number of distinct parameters (tied embeddings counted once)."""
    return sum(p.numel() for p in model.parameters())


def layer_structure(model) -> dict:
    """Per-layer widths of a LLaMA-style model (the ``structure`` of the manifest)."""
    layers = []
    for layer in model.model.layers:
        attn, mlp = layer.self_attn, layer.mlp
        hd = attn.head_dim
        layers.append(
            {
                "heads": attn.q_proj.out_features // hd,
                "kv_heads": attn.k_proj.out_features // hd,
                "intermediate": mlp.gate_proj.out_features,
                "o_bias": attn.o_proj.bias is not None,
                "down_bias": mlp.down_proj.bias is not None,
            }
        )
    return {"layers": layers}


def is_uniform(model) -> bool:
    """Whether every layer has the widths the config gives (no ``structure`` needed)."""
    cfg = model.config
    kv = getattr(cfg, "num_key_value_heads", None) or cfg.num_attention_heads
    want = {
        "heads": cfg.num_attention_heads,
        "kv_heads": kv,
        "intermediate": cfg.intermediate_size,
        "o_bias": bool(getattr(cfg, "attention_bias", False)),
        "down_bias": bool(getattr(cfg, "mlp_bias", False)),
    }
    return all(l == want for l in layer_structure(model)["layers"])


def resized_linear(old: torch.nn.Linear, in_f: int, out_f: int, bias: bool) -> torch.nn.Linear:
    """A fresh (uninitialised) ``in_f -> out_f`` linear on ``old``'s device and dtype."""
    w = old.weight
    return torch.nn.Linear(in_f, out_f, bias=bias, device=w.device, dtype=w.dtype)


def apply_structure(model, structure: dict) -> None:
    """Give every layer the widths in ``structure`` (fresh, uninitialised weights)."""
    layers = structure["layers"]
    if len(layers) != len(model.model.layers):
        raise ArtifactError(
            f"structure has {len(layers)} layers but the config builds {len(model.model.layers)}"
        )
    for layer, spec in zip(model.model.layers, layers):
        attn, mlp = layer.self_attn, layer.mlp
        hd = attn.head_dim
        h = attn.q_proj.in_features
        q, kv, inter = spec["heads"] * hd, spec["kv_heads"] * hd, spec["intermediate"]
        qb = attn.q_proj.bias is not None
        attn.q_proj = resized_linear(attn.q_proj, h, q, qb)
        attn.k_proj = resized_linear(attn.k_proj, h, kv, attn.k_proj.bias is not None)
        attn.v_proj = resized_linear(attn.v_proj, h, kv, attn.v_proj.bias is not None)
        attn.o_proj = resized_linear(attn.o_proj, q, h, spec["o_bias"])
        set_kv_groups(attn, spec["heads"], spec["kv_heads"])
        mlp.gate_proj = resized_linear(mlp.gate_proj, h, inter, mlp.gate_proj.bias is not None)
        mlp.up_proj = resized_linear(mlp.up_proj, h, inter, mlp.up_proj.bias is not None)
        mlp.down_proj = resized_linear(mlp.down_proj, inter, h, spec["down_bias"])


def set_kv_groups(attn, heads: int, kv_heads: int) -> None:
    """Keep eager attention's ``repeat_kv`` consistent with the layer's head counts."""
    if kv_heads <= 0 or heads % kv_heads:
        raise ValueError(f"layer {attn.layer_idx}: {heads} query heads not divisible by {kv_heads} KV heads")
    attn.num_key_value_groups = heads // kv_heads
    # attribute names used by some transformers versions / other code
    for name, val in (("num_heads", heads), ("num_key_value_heads", kv_heads)):
        if hasattr(attn, name):
            setattr(attn, name, val)


def renumber_layers(model, kept: list[int] | None = None) -> None:
    """After removing blocks: layer_idx 0..n-1 and a config that matches.

    ``kept``: the original indices of the remaining blocks (to subset per-layer config lists).
    """
    layers = model.model.layers
    for i, layer in enumerate(layers):
        layer.self_attn.layer_idx = i
        if hasattr(layer, "layer_idx"):
            layer.layer_idx = i
    cfg = model.config
    cfg.num_hidden_layers = len(layers)
    if getattr(cfg, "layer_types", None) is not None:
        cfg.layer_types = [cfg.layer_types[i] for i in kept] if kept else cfg.layer_types[: len(layers)]
