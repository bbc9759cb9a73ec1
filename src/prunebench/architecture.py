"""Decoder families a model can be built from: ``models.<name>.architecture``.

``architecture.model_type`` picks the family (default ``llama``); the other keys are the
fields of that family's Hugging Face config:

``llama``    LLaMA-1/2/3 (LLaMA-3: ``rope_scaling: {rope_type: llama3, ...}`` and
             ``rope_theta``); optional ``attention_bias`` (q/k/v/o) and ``mlp_bias``
             (gate/up/down);
``mistral``  Mistral (grouped-query attention, ``sliding_window``), no biases;
``qwen2``    Qwen2 / Qwen2.5: biases on q/k/v (not o), often ``tie_word_embeddings``.

All three share the decoder layout every method relies on (``model.model.layers[i]``
with ``self_attn.{q,k,v,o}_proj`` and ``mlp.{gate,up,down}_proj``).
"""
from __future__ import annotations

#: model_type -> ``qkv_bias``: q/k/v always have biases; ``bias_options``: the config's
#: ``attention_bias`` / ``mlp_bias`` switches exist (LLaMA only)
FAMILIES: dict[str, dict[str, bool]] = {
    "llama": {"qkv_bias": False, "bias_options": True},
    "mistral": {"qkv_bias": False, "bias_options": False},
    "qwen2": {"qkv_bias": True, "bias_options": False},
}


def architecture_errors(arch: dict, key: str) -> list[str]:
    """Problems of an ``architecture`` entry that the config schema cannot see."""
    model_type = arch.get("model_type", "llama")
    if model_type not in FAMILIES:
        return [f"config key {key}.model_type: {model_type!r} is not supported; expected one of {sorted(FAMILIES)}"]
    return []


def build_config(arch: dict, key: str = "models.*.architecture"):
    """The Hugging Face config of ``arch`` (``model_type`` + that family's config fields)."""
    from transformers import AutoConfig

    errs = architecture_errors(arch, key)
    if errs:
        raise ValueError(errs[0])
    arch = dict(arch)
    model_type = arch.pop("model_type", "llama")
    return AutoConfig.for_model(model_type, **arch)


def estimate_llama_params(arch: dict) -> int:
    """Parameter count of a uniform model of ``arch`` (any family above), biases and tied
    embeddings included; equals the built model's count."""
    family = FAMILIES.get(arch.get("model_type", "llama"), FAMILIES["llama"])
    h = arch["hidden_size"]
    n_heads = arch["num_attention_heads"]
    kv = arch.get("num_key_value_heads") or n_heads
    hd = arch.get("head_dim") or h // n_heads
    inter = arch["intermediate_size"]
    vocab = arch["vocab_size"]
    attn_bias = family["bias_options"] and arch.get("attention_bias", False)
    mlp_bias = family["bias_options"] and arch.get("mlp_bias", False)
    attn = h * n_heads * hd * 2 + h * kv * hd * 2
    if attn_bias or family["qkv_bias"]:
        attn += n_heads * hd + 2 * kv * hd  # q, k, v
    if attn_bias:
        attn += h  # o_proj
    mlp = 3 * h * inter + ((2 * inter + h) if mlp_bias else 0)
    block = attn + mlp + 2 * h
    emb = vocab * h * (1 if arch.get("tie_word_embeddings", False) else 2)
    return arch["num_hidden_layers"] * block + emb + h
