"""Roofline arithmetic, in one place: the bytes a generation must move and the least time that takes.

A decode step reads every weight once, so ``roofline_s = weight_bytes x out_len / bandwidth``
is the least time any implementation can take at small batch (KV-cache reads ignored, or
added with ``kv_read_bytes``).  ``bandwidth`` is measured with a device-to-device copy of a
large buffer and counts bytes read + bytes written per second
(:func:`prunebench.devices.measure_copy_bandwidth`), i.e. it assumes that streaming reads run
at the rate of copy traffic.  ``weight_bytes`` counts the bytes one decode step reads: every
parameter, except an untied input embedding table (only ``batch`` rows of it are read).
The KV-cache sizes also bound memory: :func:`kv_cache_bytes` is what a cell needs beyond the
weights (the benchmark's out-of-memory prediction).
"""
from __future__ import annotations


def weight_bytes(model, *, decode_read: bool = True) -> int:
    """Bytes of the model's parameters (tied weights once).

    ``decode_read`` (default): the bytes a decode step reads, i.e. without an input
    embedding table that is not tied to the output head (a step reads only ``batch`` rows of it).
    """
    total = sum(p.numel() * p.element_size() for p in model.parameters())
    if decode_read:
        emb = model.get_input_embeddings().weight
        out = model.get_output_embeddings()
        tied = out is not None and (out.weight is emb or (
            emb.device.type != "meta" and out.weight.data_ptr() == emb.data_ptr()))
        if not tied:
            total -= emb.numel() * emb.element_size()
    return total


def roofline_seconds(weight_bytes: float, out_len: int, bandwidth: float, kv_read_bytes: float = 0.0) -> float:
    """Least time for ``out_len`` forward passes that each read ``weight_bytes`` at ``bandwidth`` bytes/s.

    ``kv_read_bytes``: optional total KV-cache bytes read over the whole generation
    (:func:`kv_read_bytes`); 0 = weights only (the usual batch-1 roofline).
    """
    if bandwidth <= 0:
        raise ValueError("bandwidth must be > 0")
    return (weight_bytes * out_len + kv_read_bytes) / bandwidth


def kv_bytes_per_token(model) -> int:
    """KV-cache bytes one position of one sequence takes: K and V of every layer, at each
    layer's own width (width-pruned layers keep fewer heads; depth-pruned models have fewer
    layers), in the projections' dtype."""
    total = 0
    for layer in model.model.layers:
        attn = layer.self_attn
        for proj in (attn.k_proj, attn.v_proj):
            total += proj.out_features * proj.weight.element_size()
    return total


def kv_read_bytes(model, batch: int, in_len: int, out_len: int) -> int:
    """KV-cache bytes the decode steps read (step t attends to in_len + t positions)."""
    positions = sum(in_len + t for t in range(1, out_len))
    return batch * kv_bytes_per_token(model) * positions


def kv_cache_bytes(model, batch: int, in_len: int, out_len: int) -> int:
    """Bytes of the KV cache when ``generate`` ends: ``in_len + out_len - 1`` positions (the
    last token is never fed back) of ``batch`` sequences -- a lower bound on the memory a
    generation needs beyond the weights."""
    return batch * kv_bytes_per_token(model) * (in_len + out_len - 1)
