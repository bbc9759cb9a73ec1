"""Model directories: load a model from its weight source, save and reload pruned models.

One format for every model the pipeline writes (``results/models/<model>/<method>/``):

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
import importlib.util
import logging
import os
from pathlib import Path
from typing import Any

import torch

from .architecture import build_config, estimate_llama_params  # noqa: F401 (re-exported)
from .devices import sync
from .io import ArtifactError, atomic_path, read_json, write_json

log = logging.getLogger(__name__)

MANIFEST = "prunebench.json"
FORMAT = "prunebench-model"
VERSION = 1

DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}


def resolve_dtype(name: str) -> torch.dtype:
    try:
        return DTYPES[name]
    except KeyError:
        raise ValueError(f"unknown dtype {name!r}; expected one of {sorted(DTYPES)}") from None


def resolve_path(path: str) -> str:
    """``pkg:<name>`` -> the folder of installed Python package ``<name>`` (not imported)."""
    if path.startswith("pkg:"):
        name = path[4:]
        spec = importlib.util.find_spec(name)
        if spec is None or not spec.submodule_search_locations:
            raise FileNotFoundError(f"path {path!r}: Python package {name!r} is not installed")
        return list(spec.submodule_search_locations)[0]
    return path


# --------------------------------------------------------------------------- counting

def count_params(model: torch.nn.Module) -> int:
    """Number of distinct parameters (tied embeddings counted once)."""
    return sum(p.numel() for p in model.parameters())


# --------------------------------------------------------------------------- building

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
    _materialise_buffers(model, config, device)
    sync(device)
    log.info("random weights on %s: structure %.1f s (transformers imports included), allocation %.1f s, "
             "values %.1f s", device, t1 - t0, t2 - t1, time.perf_counter() - t2)
    return model.eval()


def _strip_quantization(config):
    config = copy.deepcopy(config)
    if hasattr(config, "quantization_config"):
        delattr(config, "quantization_config")
    return config


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
        config = _strip_quantization(loaded.config)
        with torch.device("meta"):
            model = AutoModelForCausalLM.from_config(config, dtype=dtype, **kwargs)
        missing, unexpected = model.load_state_dict(
            {k: v.to(dtype) for k, v in loaded.state_dict().items()}, strict=False, assign=True)
        if unexpected or set(missing) - {"lm_head.weight"}:
            raise RuntimeError(f"{gguf_file}: weights do not fit the config (missing {missing}, unexpected {unexpected})")
        model.tie_weights()
        _materialise_buffers(model, config)
        model = model.to(device=device)
        del loaded
        return model.eval(), tokenizer
    if weights == "pretrained":
        tokenizer = AutoTokenizer.from_pretrained(path)
        model = AutoModelForCausalLM.from_pretrained(path, dtype=dtype, **kwargs).to(device)
        return model.eval(), tokenizer
    raise ValueError(f"models.*.weights: unknown weight source {weights!r}")


# --------------------------------------------------------------------------- structure

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


def _resized_linear(old: torch.nn.Linear, in_f: int, out_f: int, bias: bool) -> torch.nn.Linear:
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
        attn.q_proj = _resized_linear(attn.q_proj, h, q, qb)
        attn.k_proj = _resized_linear(attn.k_proj, h, kv, attn.k_proj.bias is not None)
        attn.v_proj = _resized_linear(attn.v_proj, h, kv, attn.v_proj.bias is not None)
        attn.o_proj = _resized_linear(attn.o_proj, q, h, spec["o_bias"])
        set_kv_groups(attn, spec["heads"], spec["kv_heads"])
        mlp.gate_proj = _resized_linear(mlp.gate_proj, h, inter, mlp.gate_proj.bias is not None)
        mlp.up_proj = _resized_linear(mlp.up_proj, h, inter, mlp.up_proj.bias is not None)
        mlp.down_proj = _resized_linear(mlp.down_proj, inter, h, spec["down_bias"])


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


# --------------------------------------------------------------------------- save / load

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
    cfg = _strip_quantization(cfg)
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


def read_manifest(model_dir: str | os.PathLike) -> dict:
    man = read_json(Path(model_dir) / MANIFEST, required=("format", "weights", "params"))
    if man.get("format") != FORMAT:
        raise ArtifactError(f"{Path(model_dir) / MANIFEST}: not a prunebench model manifest")
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
    _materialise_buffers(model, config)
    return model.to(device).eval()


def _materialise_buffers(model, config, device: torch.device | str = "cpu") -> None:
    """Non-persistent buffers (rotary inv_freq) are not in the state dict: recompute them."""
    rotary_cls = type(model.model.rotary_emb)
    with torch.device("cpu"):
        model.model.rotary_emb = rotary_cls(config=config).to(device)
    for name, buf in list(model.named_buffers()):
        if buf.is_meta:
            raise ArtifactError(f"buffer {name} could not be materialised")
