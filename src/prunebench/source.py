"""Source stage: materialise a model's weight source as a prunebench model folder.

``results/<experiment>/models/<model>/base/`` -- GGUF files are dequantised once (slow) and saved as
safetensors; hub ids / local folders are loaded and saved once, so every later job reads
plain safetensors; ``random`` saves the config only (weights are drawn at load time).
"""
from __future__ import annotations

import time

from .devices import resolve_dtype
from .models import load_source, save_model


def run(spec: dict, out_dir: str, *, model_name: str, dtype: str) -> dict:
    t0 = time.perf_counter()
    if spec["weights"] == "random":
        # structure only: build on the meta device, nothing is allocated
        model, tok = load_source(spec, resolve_dtype(dtype), device="meta")
        weights = "random"
    else:
        model, tok = load_source(spec, resolve_dtype(dtype), device="cpu")
        weights = "safetensors"
    manifest = save_model(model, out_dir, model_name=model_name, method="base", weights=weights,
                          tokenizer=tok, seed=spec.get("seed", 0),
                          extra={"source": {k: spec.get(k) for k in ("weights", "path", "gguf_file")},
                                 "seconds": round(time.perf_counter() - t0, 2)})
    return manifest
