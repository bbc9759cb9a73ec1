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

Checked before any job runs (:func:`dense_info`): every key must be a field of that
family's config class -- a misspelt ``num_key_value_head`` would otherwise be accepted and
ignored, giving another model than the one asked for -- and the model is built on the meta
device (shapes only, no memory), so that an architecture transformers cannot build is
refused naming the key.  Where no architecture is given, the ``config.json`` of a local
model folder (``path``) serves.  The built model gives the exact dense parameter count and
the layout the methods' reachable ranges read (:class:`prunebench.methods.ArchInfo`).
torch and transformers are imported only when a check runs.
"""
from __future__ import annotations

import difflib
import os
import re
from pathlib import Path

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


# --------------------------------------------------------------------------- checks

#: fields every architecture gives, each a positive integer
REQUIRED = ("hidden_size", "intermediate_size", "num_hidden_layers", "num_attention_heads", "vocab_size")


class ArchitectureError(ValueError):
    """``problems``: ``(key, what is wrong)`` pairs, the key below ``models.<name>``
    (``architecture.<field>``, ``path``)."""

    def __init__(self, key: str, message: str, *more: tuple[str, str]):
        super().__init__(message)
        self.problems = [(key, message), *more]


def _posint(v) -> bool:
    return isinstance(v, int) and not isinstance(v, bool) and v >= 1


def config_class(model_type: str):
    from transformers import CONFIG_MAPPING

    return CONFIG_MAPPING[model_type]


def _known_keys(cls) -> set[str]:
    import inspect

    from transformers import PretrainedConfig

    keys = set(cls().to_dict()) | set(getattr(cls, "attribute_map", {}) or {})
    for c in (cls, PretrainedConfig):
        keys |= {p for p in inspect.signature(c.__init__).parameters if p not in ("self", "kwargs")}
    return keys | {"model_type"}


def _consumed(cls, key: str, value) -> bool:
    """A legacy field the class turns into others (``rope_theta`` -> ``rope_parameters``)."""
    try:
        base, probe = cls().to_dict(), cls(**{key: value}).to_dict()
    except Exception:  # noqa: BLE001 - the build below reports a bad value
        return True
    return any(base.get(k) != probe.get(k) for k in set(base) | set(probe) if k != key)


def key_errors(arch: dict) -> list[ArchitectureError]:
    """Problems with the keys and the integer fields of an ``architecture`` mapping."""
    errs: list[ArchitectureError] = []
    bad_names = [k for k in arch if not isinstance(k, str)]
    for k in bad_names:
        errs.append(ArchitectureError(f"architecture[{k!r}]", f"key {k!r} is not a string"))
    model_type = arch.get("model_type", "llama")
    if not isinstance(model_type, str) or model_type not in FAMILIES:
        close = difflib.get_close_matches(str(model_type), sorted(FAMILIES), n=1)
        hint = f"; did you mean {close[0]!r}?" if close else ""
        return errs + [ArchitectureError("architecture.model_type", f"{model_type!r} is not supported; expected one "
                                                                   f"of {sorted(FAMILIES)}{hint}")]
    missing = [k for k in REQUIRED if k not in arch]
    if missing:
        errs.append(ArchitectureError("architecture", f"missing {missing}"))
    for k in REQUIRED + ("num_key_value_heads", "head_dim"):
        if k in arch and not (arch[k] is None and k not in REQUIRED) and not _posint(arch[k]):
            errs.append(ArchitectureError(f"architecture.{k}", f"must be a positive integer, got {arch[k]!r}"))
    cls = config_class(model_type)
    known = _known_keys(cls)
    for k in arch:
        if isinstance(k, str) and k not in known and not _consumed(cls, k, arch[k]):
            close = difflib.get_close_matches(k, sorted(known), n=1)
            hint = f"; did you mean {close[0]!r}?" if close else ""
            errs.append(ArchitectureError(f"architecture.{k}", f"not a field of {cls.__name__} "
                                                               f"(model_type {model_type!r}){hint}"))
    if errs:
        return errs
    heads, kv = arch["num_attention_heads"], arch.get("num_key_value_heads") or arch["num_attention_heads"]
    if heads % kv:
        errs.append(ArchitectureError("architecture.num_key_value_heads",
                                      f"{kv} does not divide num_attention_heads ({heads})"))
    if not arch.get("head_dim") and arch["hidden_size"] % heads:
        errs.append(ArchitectureError("architecture.num_attention_heads",
                                      f"{heads} does not divide hidden_size ({arch['hidden_size']}) "
                                      "and no head_dim is given"))
    return errs


def _key_of(exc: BaseException, arch: dict) -> str:
    """The architecture key an exception of transformers is about (best effort)."""
    msg = str(exc)
    m = re.search(r"field '(\w+)'", msg)
    if m and m.group(1) in arch:
        return f"architecture.{m.group(1)}"
    if isinstance(exc, KeyError) and exc.args:
        for k, v in arch.items():
            vals = v.values() if isinstance(v, dict) else [v]
            if any(isinstance(x, (str, int)) and x == exc.args[0] for x in vals):
                return f"architecture.{k}"
    named = sorted((k for k in arch if isinstance(k, str) and re.search(rf"\b{re.escape(k)}\b", msg)), key=len)
    return f"architecture.{named[-1]}" if named else "architecture"


def _build(config):
    import torch

    from .models import build_random

    return build_random(config, torch.float32, device="meta")


def _check_layout(model, key: str):
    from .methods import arch_info

    try:
        layers = model.model.layers
        for layer in layers:
            a, m = layer.self_attn, layer.mlp
            (a.q_proj, a.k_proj, a.v_proj, a.o_proj, m.gate_proj, m.up_proj, m.down_proj)
        info = arch_info(model)
    except (AttributeError, IndexError, TypeError) as exc:
        raise ArchitectureError(key, f"{type(model).__name__} does not have the LLaMA layout the methods and "
                                     f"backends work on (model.layers[i].self_attn.q_proj, .mlp.gate_proj, ...): {exc}") from None
    return info


def local_config(path) -> Path | None:
    """``<path>/config.json`` of a local model folder (``pkg:`` resolved), else None."""
    if not isinstance(path, str) or not path:
        return None
    from .pkgdata import resolve_path

    try:
        folder = resolve_path(path)
    except FileNotFoundError:
        return None
    f = Path(folder) / "config.json"
    return f if f.is_file() else None


def dense_info(spec: dict):
    """The :class:`~prunebench.methods.ArchInfo` of a ``models.<name>`` entry's dense model:
    from ``architecture``, else from a local folder's config.json (not for GGUF); None where
    neither is known before the source stage runs.  Raises :class:`ArchitectureError`."""
    arch = spec.get("architecture")
    if arch:
        errs = key_errors(arch)
        if errs:
            raise ArchitectureError(*errs[0].problems[0], *(e.problems[0] for e in errs[1:]))
        try:
            model = _build(build_config(arch))
        except Exception as exc:  # noqa: BLE001 - any failure to build is the config's
            raise ArchitectureError(_key_of(exc, arch), f"cannot build the model: {_first_line(exc)}") from None
        return _check_layout(model, "architecture.model_type")
    cfg = local_config(spec.get("path")) if spec.get("weights") in ("pretrained", "random") else None
    if cfg is None:
        return None
    from transformers import AutoConfig

    try:
        model = _build(AutoConfig.from_pretrained(cfg.parent))
    except Exception as exc:  # noqa: BLE001
        raise ArchitectureError("path", f"{cfg}: cannot build the model it describes: {_first_line(exc)}") from None
    return _check_layout(model, "path")


def _first_line(exc: BaseException) -> str:
    if isinstance(exc, KeyError) and exc.args:
        return f"unknown value {exc.args[0]!r}"
    lines = [l.strip() for l in str(exc).splitlines() if l.strip()]
    text = " ".join(lines[:3]) or type(exc).__name__
    return text[:300]


#: a Hugging Face hub id: ``name`` or ``namespace/name`` (letters, digits, ``-_.``)
HUB_ID = re.compile(r"^(?:[A-Za-z0-9][\w.-]{0,95}/)?[A-Za-z0-9][\w.-]{0,95}$")


def path_problem(path: str, *, what: str = "model") -> str | None:
    """Why ``path`` is neither a local folder nor a well-formed hub id (None: it is one)."""
    if path.startswith("pkg:"):
        from .pkgdata import resolve_path

        try:
            resolve_path(path)
        except FileNotFoundError as exc:
            return str(exc)
        return None
    if os.path.isdir(path):
        return None
    if os.path.exists(path):
        return f"{path!r} is a file; expected a local {what} folder or a hub id (namespace/name)"
    if HUB_ID.match(path) and ".." not in path and "--" not in path and not path.endswith(".git"):
        return None
    return (f"{path!r} is neither a local folder (none at {os.path.abspath(path)!r}) "
            "nor a hub id of the form 'name' or 'namespace/name'")


def tokenizer_problem(path: str, vocab: int) -> str | None:
    """Why the tokenizer at ``path`` (a local folder) cannot feed a model of ``vocab``
    token ids; None where it can, or where the tokenizer is not local (a hub id)."""
    from .pkgdata import resolve_path

    folder = resolve_path(path)
    if not os.path.isdir(folder):
        return None
    from transformers import AutoTokenizer

    try:
        n = len(AutoTokenizer.from_pretrained(folder))
    except Exception as exc:  # noqa: BLE001
        return f"{folder!r} cannot be loaded as a tokenizer: {_first_line(exc)}"
    if n > vocab:
        return f"its {n:,} tokens do not fit the model's vocab_size ({vocab:,}): token ids would index past the embedding"
    return None
