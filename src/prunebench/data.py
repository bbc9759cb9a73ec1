"""Data stage: corpus text -> token ids for one model's tokenizer.

Two splits, both ``[n, seq_len]`` int64 tensors in ``results/<experiment>/data/<model>/<split>.safetensors``
(key ``input_ids``) with a JSON sidecar ``<split>.json`` (corpus, tokenizer, seed, shape):

``calibration``  ``n_samples`` windows of ``seq_len`` tokens at seeded random offsets of
                 the tokenised corpus (the paper: 10 x 128 BookCorpus tokens).
``eval``         consecutive non-overlapping windows of ``seq_len`` tokens from the start
                 of the evaluation corpus (WikiText-2 style), at most ``max_windows``.

A model with ``weights: random`` and no ``tokenizer`` gets seeded random token ids:
such a model is only benchmarked, its perplexity is not computed.
"""
from __future__ import annotations

from pathlib import Path

import torch

from .config import ConfigError
from .io import ArtifactError, atomic_path, read_json, write_json


def get_tokenizer(spec: dict):
    """The tokenizer of a ``models.<name>`` entry, or None for random token ids."""
    from transformers import AutoTokenizer

    from .pkgdata import resolve_path

    if spec.get("tokenizer"):
        return AutoTokenizer.from_pretrained(resolve_path(spec["tokenizer"]))
    if spec["weights"] == "random":
        return None
    path = resolve_path(spec["path"])
    if spec["weights"] == "gguf":
        return AutoTokenizer.from_pretrained(path, gguf_file=spec["gguf_file"])
    return AutoTokenizer.from_pretrained(path)


def vocab_size(spec: dict) -> int:
    if spec.get("architecture"):
        return int(spec["architecture"]["vocab_size"])
    from transformers import AutoConfig

    from .pkgdata import resolve_path

    return int(AutoConfig.from_pretrained(resolve_path(spec["path"])).vocab_size)


def tokenize_corpus(tokenizer, text: str) -> torch.Tensor:
    docs = [d for d in text.split("\n\n") if d.strip()]
    sep = [tokenizer.eos_token_id] if tokenizer.eos_token_id is not None else []
    ids: list[int] = []
    for doc in docs:
        ids.extend(tokenizer(doc, add_special_tokens=False)["input_ids"])
        ids.extend(sep)
    return torch.tensor(ids, dtype=torch.long)


def calibration_windows(stream: torch.Tensor, n: int, seq_len: int, seed: int) -> torch.Tensor:
    if stream.numel() < seq_len + 1:
        raise ConfigError(f"config key calibration.seq_len: the corpus has {stream.numel()} tokens, "
                          f"fewer than seq_len + 1 = {seq_len + 1}")
    g = torch.Generator().manual_seed(seed)
    starts = torch.randint(0, stream.numel() - seq_len, (n,), generator=g)
    return torch.stack([stream[s : s + seq_len] for s in starts.tolist()])


def eval_windows(stream: torch.Tensor, seq_len: int, max_windows: int | None) -> torch.Tensor:
    n = stream.numel() // seq_len
    if max_windows:
        n = min(n, max_windows)
    if n == 0:
        raise ConfigError(f"config key perplexity.seq_len: the corpus has {stream.numel()} tokens, "
                          f"fewer than seq_len = {seq_len}")
    return stream[: n * seq_len].view(n, seq_len).clone()


def run(split: str, spec: dict, corpus_path: str, out_path: str, *, model_name: str,
        corpus_name: str, settings: dict) -> dict:
    """``settings``: n_samples (calibration), seq_len, seed, max_windows (eval)."""
    n_samples, seq_len = settings.get("n_samples"), settings["seq_len"]
    seed, max_windows = settings.get("seed", 0), settings.get("max_windows")
    tokenizer = get_tokenizer(spec)
    if tokenizer is None:
        vocab = vocab_size(spec)
        g = torch.Generator().manual_seed(seed)
        n = n_samples if split == "calibration" else (max_windows or 32)
        ids = torch.randint(0, vocab, (n, seq_len), generator=g)
        source, tok_name = "random-tokens", None
    else:
        text = Path(corpus_path).read_text()
        stream = tokenize_corpus(tokenizer, text)
        if split == "calibration":
            ids = calibration_windows(stream, n_samples, seq_len, seed)
        else:
            ids = eval_windows(stream, seq_len, max_windows)
        source, tok_name = corpus_name, getattr(tokenizer, "name_or_path", None)
    meta = {"model": model_name, "split": split, "corpus": source, "tokenizer": tok_name,
            "seed": seed, "shape": list(ids.shape), "seq_len": seq_len}
    save_tokens(out_path, ids, meta)
    return meta


def save_tokens(path: str, ids: torch.Tensor, meta: dict) -> None:
    from safetensors.torch import save_file

    with atomic_path(path) as tmp:
        save_file({"input_ids": ids.contiguous()}, str(tmp))
    write_json(sidecar(path), meta)


def sidecar(path: str | Path) -> Path:
    return Path(path).with_suffix(".json")


def load_tokens(path: str | Path) -> tuple[torch.Tensor, dict]:
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    try:
        ids = load_file(str(path))["input_ids"]
    except (SafetensorError, OSError, KeyError) as exc:
        raise ArtifactError(f"{path}: cannot read token ids ({exc}); delete it and rerun") from None
    meta = read_json(sidecar(path)) if sidecar(path).exists() else {}
    return ids, meta
