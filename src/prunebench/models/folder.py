"""The model folder: one format for every model the pipeline writes
(``results/<experiment>/models/<model>/<method>/``), saved and reloaded.


``prunebench.json`` (the manifest, written last, atomically)
    ``format``: ``"prunebench-model"``, ``version``: 1, ``model``/``method``: names,
    ``weights``: where the weights are --
        ``"safetensors"``  ``model.safetensors`` in this folder;
        ``"random"``       none saved: random weights (seeded) are drawn at load time;
                           efficiency numbers only, perplexity is meaningless;
        ``"base"``         the same weights as the folder named in ``base`` (dense);
    ``structure``: ``null`` for a uniform model, else per-layer widths
        ``{"layers": [{"heads", "kv_heads", "intermediate", "o_bias", "down_bias"}, ...]}``
        (width pruning gives every layer its own width);
    ``params``: parameter count; ``dtype``: dtype of the saved weights; ``seed``.
``config.json``
    the Hugging Face config (for depth pruning ``num_hidden_layers`` is the new depth).
``model.safetensors``
    the state dict (tied weights stored once, as transformers does).

Depth-pruned and dense models with saved weights reload with stock
``transformers.AutoModelForCausalLM.from_pretrained(folder)``; every folder reloads
with :func:`load_model` (the one documented loader), which also rebuilds the
per-layer widths of width-pruned models.
"""
from __future__ import annotations

import copy
import os
from pathlib import Path

import torch

from ..devices import resolve_dtype
from ..io import ArtifactError, atomic_path, check_record, read_json, write_json
from .build import build_random, materialise_buffers, strip_quantization
from .structure import apply_structure, count_params, is_uniform, layer_structure

MANIFEST = "prunebench.json"
FORMAT = "prunebench-model"
VERSION = 1


def save_model(
    model,
    out_dir: str | os.PathLike,
    *,
    model_name: str,
    method: str,
    weights: str,
    tokenizer=None,
    base: str | None = None,
    seed: int = 0,
    extra: dict | None = None,
) -> dict:
    """Write a model folder in the documented format; the manifest is written last."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    (out / MANIFEST).unlink(missing_ok=True)  # a half-written folder is never "finished"
    cfg = copy.deepcopy(model.config)
    cfg = strip_quantization(cfg)
    if getattr(cfg, "head_dim", None) is None:
        cfg.head_dim = cfg.hidden_size // cfg.num_attention_heads
    cfg.num_hidden_layers = len(model.model.layers)
    with atomic_path(out / "config.json") as tmp:
        tmp.write_text(cfg.to_json_string())
    if weights == "safetensors":
        from safetensors.torch import save_file

        state = model.state_dict()
        if getattr(cfg, "tie_word_embeddings", False):
            state.pop("lm_head.weight", None)  # stored once, as transformers does
        state = {k: v.detach().contiguous() for k, v in state.items()}
        with atomic_path(out / "model.safetensors") as tmp:
            save_file(state, str(tmp), metadata={"format": "pt"})
    if tokenizer is not None:
        tokenizer.save_pretrained(out)
    manifest = {
        "format": FORMAT,
        "version": VERSION,
        "model": model_name,
        "method": method,
        "weights": weights,
        "base": base,
        "structure": None if is_uniform(model) else layer_structure(model),
        "params": count_params(model),
        "num_layers": len(model.model.layers),
        "dtype": str(next(model.parameters()).dtype).replace("torch.", ""),
        "seed": seed,
    }
    if extra:
        manifest.update(extra)
    write_json(out / MANIFEST, manifest)
    return manifest


def save_reference(base_dir: str | os.PathLike, out_dir: str | os.PathLike, *, model_name: str, method: str) -> dict:
    """A folder whose weights are those of ``base_dir`` (``weights: base``), nothing copied."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    base = read_manifest(base_dir)
    with atomic_path(out / "config.json") as tmp:
        tmp.write_text((Path(base_dir) / "config.json").read_text())
    manifest = {**base, "model": model_name, "method": method, "weights": "base",
                "base": os.path.relpath(base_dir, out)}
    for key in ("source", "seconds"):
        manifest.pop(key, None)
    write_json(out / MANIFEST, manifest)
    return manifest


def read_manifest(model_dir: str | os.PathLike, *, model: str | None = None, method: str | None = None) -> dict:
    """The manifest of a model folder, checked to be one of this :data:`VERSION`, and where
    given to be ``model``'s / ``method``'s (:class:`ArtifactError` naming the file if not)."""
    path = Path(model_dir) / MANIFEST
    man = read_json(path, required=("format", "weights", "params"))
    if man.get("format") != FORMAT:
        raise ArtifactError(f"{path}: not a prunebench model manifest")
    if man.get("version") != VERSION:
        raise ArtifactError(f"{path}: model folder format version {man.get('version')!r}, this prunebench reads "
                            f"version {VERSION} -- delete the folder and rerun")
    check_record(path, man, {k: ("the name asked for", v) for k, v in (("model", model), ("method", method))
                             if v is not None})
    return man


def weights_kind(model_dir: str | os.PathLike) -> str:
    """``safetensors`` or ``random``, following ``base`` references."""
    man = read_manifest(model_dir)
    while man["weights"] == "base":
        model_dir = Path(model_dir) / man["base"]
        man = read_manifest(model_dir)
    return man["weights"]


def load_model(
    model_dir: str | os.PathLike,
    *,
    dtype: torch.dtype | str = "float32",
    device: torch.device | str = "cpu",
    attn_implementation: str | None = None,
):
    """Reload any model folder the pipeline wrote (see the module docstring)."""
    from transformers import AutoConfig, AutoModelForCausalLM

    model_dir = Path(model_dir)
    if isinstance(dtype, str):
        dtype = resolve_dtype(dtype)
    man = read_manifest(model_dir)
    if man["weights"] == "base":
        base = (model_dir / man["base"]).resolve()
        return load_model(base, dtype=dtype, device=device, attn_implementation=attn_implementation)
    try:
        config = AutoConfig.from_pretrained(model_dir)
    except Exception as exc:  # noqa: BLE001 - report the file, not the traceback
        raise ArtifactError(f"{model_dir / 'config.json'}: cannot be read as a model config ({exc})") from None
    if attn_implementation:
        config._attn_implementation = attn_implementation
    if man["weights"] == "random":
        return build_random(config, dtype, device, seed=man.get("seed", 0), structure=man.get("structure"))
    if man["weights"] != "safetensors":
        raise ArtifactError(f"{model_dir / MANIFEST}: unknown weights kind {man['weights']!r}")
    st = model_dir / "model.safetensors"
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    try:
        state = load_file(str(st), device="cpu")
    except (SafetensorError, OSError, RuntimeError) as exc:
        raise ArtifactError(f"{st}: cannot be read ({exc}); the file is corrupt or truncated -- delete the folder and rerun") from None
    with torch.device("meta"):
        model = AutoModelForCausalLM.from_config(config, dtype=dtype)
    if man.get("structure"):
        apply_structure(model, man["structure"])
    state = {k: v.to(dtype) for k, v in state.items()}
    missing, unexpected = model.load_state_dict(state, strict=False, assign=True)
    tied = set(getattr(model, "_tied_weights_keys", None) or [])
    missing = [k for k in missing if k not in tied and not k.endswith("lm_head.weight")]
    if missing or unexpected:
        raise ArtifactError(f"{st}: weights do not match the structure (missing {missing[:5]}, unexpected {unexpected[:5]})")
    if getattr(config, "tie_word_embeddings", False):
        model.tie_weights()
    elif "lm_head.weight" not in state:
        raise ArtifactError(f"{st}: lm_head.weight missing")
    materialise_buffers(model, config)
    return model.to(device).eval()
