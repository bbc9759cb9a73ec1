"""Tiny LLaMA variants the backend tests share (dense MHA/GQA, depth-pruned, width-pruned with
per-layer widths), greedy-friendly random weights and prompts."""
from __future__ import annotations

import torch

from conftest import tiny_arch, tiny_model_of
from prunebench.methods.depth import remove_blocks
from prunebench.models import apply_structure, is_uniform

IN, OUT, BATCH = 6, 24, 3


def model(gqa: bool, attn: str = "sdpa", seed: int = 0):
    return tiny_model_of(tiny_arch(gqa=gqa), seed, attn)


def scramble(m, seed: int = 0):
    """Large random weights: greedy outputs vary token to token (the default init repeats one token)."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in m.named_parameters():
            if p.dim() == 2:
                p.copy_(torch.randn(p.shape, generator=g) * 0.2)
            elif name.endswith("bias"):
                p.copy_(torch.randn(p.shape, generator=g) * 0.1)
    return m


def width_pruned(gqa: bool, attn: str):
    """Every layer its own width (as FLAP / LLM-Pruner leave them), some with o/down biases."""
    m = model(gqa, attn)
    heads = [8, 6, 4, 8, 2, 8, 4, 6] if not gqa else [8, 4, 6, 8, 2, 4, 8, 2]
    kv = heads if not gqa else [2, 1, 3, 2, 1, 2, 1, 1]
    inter = [128, 96, 40, 128, 8, 64, 128, 33]
    apply_structure(m, {"layers": [
        {"heads": h, "kv_heads": k, "intermediate": i, "o_bias": j % 3 == 1, "down_bias": j % 2 == 1}
        for j, (h, k, i) in enumerate(zip(heads, kv, inter))]})
    assert not is_uniform(m)
    return m


def depth_pruned(gqa: bool, attn: str):
    m = model(gqa, attn)
    remove_blocks(m, [1, 4, 5])
    assert len(m.model.layers) == 5 == m.config.num_hidden_layers
    return m


VARIANTS = {
    "mha": lambda attn: model(False, attn),
    "gqa": lambda attn: model(True, attn),
    "depth": lambda attn: depth_pruned(True, attn),
    "width-mha": lambda attn: width_pruned(False, attn),
    "width-gqa": lambda attn: width_pruned(True, attn),
}


def prompt(vocab=300, batch=BATCH, in_len=IN, seed=1):
    # a different prompt per row: row mix-ups in the batch would show
    return torch.randint(100, vocab, (batch, in_len), generator=torch.Generator().manual_seed(seed))


def flap_like(seed: int = 0):
    """Per-layer widths as FLAP leaves them: every layer its own head count and MLP width, at
    least 2 heads per layer, and an o/down bias (FLAP's compensation) only in the layers that lost
    heads / MLP channels, so that some layers have a bias in a slot and others not."""
    m = model(False, "sdpa", seed)
    heads, inter = [8, 6, 4, 8, 2, 8, 4, 6], [128, 96, 40, 128, 8, 64, 128, 33]
    apply_structure(m, {"layers": [{"heads": h, "kv_heads": h, "intermediate": i, "o_bias": h < 8, "down_bias": i < 128}
                                   for h, i in zip(heads, inter)]})
    return scramble(m)


def llm_pruner_like(seed: int = 0):
    """Two layer shapes, as LLM-Pruner leaves them: the first two and the last layer whole, the
    others pruned to one width (6 of 8 heads, 96 of 128 MLP channels)."""
    m = model(False, "sdpa", seed)
    n = m.config.num_hidden_layers
    whole, pruned = (8, 128), (6, 96)
    apply_structure(m, {"layers": [{"heads": h, "kv_heads": h, "intermediate": i, "o_bias": False, "down_bias": False}
                                   for h, i in (whole if j < 2 or j == n - 1 else pruned for j in range(n))]})
    return scramble(m)
