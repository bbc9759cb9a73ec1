"""Building a model without reading weights: the structure on the meta device, seeded random
weights, the buffers a state dict does not carry, a config without its quantizer.
"""
from __future__ import annotations

import copy
import logging

import torch

from ..devices import sync
from ..io import ArtifactError
from .structure import apply_structure

log = logging.getLogger(__name__)


def build_random(config, dtype: torch.dtype, device: torch.device | str = "cpu", seed: int = 0,
                 structure: dict | None = None):
    """A model of ``config``'s shapes (and per-layer ``structure``) with seeded random weights.

    Built on the meta device and materialised directly on ``device`` (a 7B model appears on
    a GPU in well under a second); weights ~ N(0, initializer_range), norms 1, biases 0.
    ``device="meta"`` gives the structure only.
    """
    import time

    from transformers import AutoModelForCausalLM

    t0 = time.perf_counter()
    with torch.device("meta"):
        model = AutoModelForCausalLM.from_config(config, dtype=dtype)
    if structure:
        apply_structure(model, structure)
    if torch.device(device).type == "meta":
        return model.eval()
    t1 = time.perf_counter()
    model.to_empty(device=device)
    if getattr(config, "tie_word_embeddings", False):
        model.tie_weights()
    sync(device)
    t2 = time.perf_counter()
    std = getattr(config, "initializer_range", 0.02)
    gen = torch.Generator(device=device).manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if p.ndim >= 2:
                p.normal_(0.0, std, generator=gen)
            elif "norm" in name:
                p.fill_(1.0)
            else:
                p.zero_()
    materialise_buffers(model, config, device)
    sync(device)
    log.info("random weights on %s: structure %.1f s (transformers imports included), allocation %.1f s, "
             "values %.1f s", device, t1 - t0, t2 - t1, time.perf_counter() - t2)
    return model.eval()


def strip_quantization(config):
    """A copy of ``config`` without its ``quantization_config`` (a dequantised model saves like any other)."""
    config = copy.deepcopy(config)
    if hasattr(config, "quantization_config"):
        delattr(config, "quantization_config")
    return config


def materialise_buffers(model, config, device: torch.device | str = "cpu") -> None:
    """Non-persistent buffers (rotary inv_freq) are not in the state dict: recompute them."""
    rotary_cls = type(model.model.rotary_emb)
    with torch.device("cpu"):
        model.model.rotary_emb = rotary_cls(config=config).to(device)
    for name, buf in list(model.named_buffers()):
        if buf.is_meta:
            raise ArtifactError(f"buffer {name} could not be materialised")
