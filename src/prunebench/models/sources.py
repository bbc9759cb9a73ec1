"""A model from its weight source, a config entry ``models.<name>``: pretrained (a hub id or
local folder), GGUF (dequantised into a plain float model) or random weights (seeded).
"""
from __future__ import annotations

import os
from typing import Any

import torch

from ..architecture import build_config
from ..pkgdata import resolve_path
from .build import build_random, materialise_buffers, strip_quantization


def load_source(spec: dict, dtype: torch.dtype, device: torch.device | str = "cpu", attn_implementation: str | None = None):
    """Load a model from a config entry ``models.<name>``: pretrained, gguf or random weights.

    Returns ``(model, tokenizer_or_None)``.  GGUF files are dequantised into a plain
    float model (the quantizer is dropped so the model saves like any other).
    """
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

    weights = spec["weights"]
    kwargs: dict[str, Any] = {}
    if attn_implementation:
        kwargs["attn_implementation"] = attn_implementation
    if weights == "random":
        if spec.get("architecture"):
            config = build_config(spec["architecture"])
        else:
            config = AutoConfig.from_pretrained(resolve_path(spec["path"]))
        if attn_implementation:
            config._attn_implementation = attn_implementation
        return build_random(config, dtype, device, seed=spec.get("seed", 0)), None
    path = resolve_path(spec["path"])
    if weights == "gguf":
        gguf_file = spec["gguf_file"]
        if os.path.isdir(path) and not os.path.exists(os.path.join(path, gguf_file)):
            raise FileNotFoundError(f"models.*.gguf_file: {gguf_file!r} not found in {path}")
        tokenizer = AutoTokenizer.from_pretrained(path, gguf_file=gguf_file)
        loaded = AutoModelForCausalLM.from_pretrained(path, gguf_file=gguf_file, dtype=torch.float32)
        config = strip_quantization(loaded.config)
        with torch.device("meta"):
            model = AutoModelForCausalLM.from_config(config, dtype=dtype, **kwargs)
        missing, unexpected = model.load_state_dict(
            {k: v.to(dtype) for k, v in loaded.state_dict().items()}, strict=False, assign=True)
        if unexpected or set(missing) - {"lm_head.weight"}:
            raise RuntimeError(f"{gguf_file}: weights do not fit the config (missing {missing}, unexpected {unexpected})")
        model.tie_weights()
        materialise_buffers(model, config)
        model = model.to(device=device)
        del loaded
        return model.eval(), tokenizer
    if weights == "pretrained":
        tokenizer = AutoTokenizer.from_pretrained(path)
        model = AutoModelForCausalLM.from_pretrained(path, dtype=dtype, **kwargs).to(device)
        return model.eval(), tokenizer
    raise ValueError(f"models.*.weights: unknown weight source {weights!r}")
