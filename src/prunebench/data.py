"""Data stage: corpus text -> token ids for one model's tokenizer.

Two splits, both ``[n, seq_len]`` int64 tensors in ``results/<experiment>/data/<model>/<split>.safetensors``
(key ``input_ids``) with a JSON sidecar ``<split>.json`` (corpus, tokenizer, seed, shape):

``calibration``  ``n_samples`` windows of ``seq_len`` tokens at seeded random offsets of
                 the tokenised corpus (the paper: 10 x 128 BookCorpus tokens).
``eval-<corpus>`` consecutive non-overlapping windows of ``seq_len`` tokens from the start
                 of one evaluation corpus (WikiText-2 style), at most ``max_windows``.  When
                 the evaluation corpus is also the calibration corpus (``held_out``: the
                 calibration settings), no window shares a token position with a
                 calibration window: the calibration windows' starts are drawn again from
                 the same stream and seed, and a window that would overlap one is skipped
                 (the next starts after it).  The sidecar records the windows' starts.

A model with ``weights: random`` and no ``tokenizer`` gets seeded random token ids:
such a model is only benchmarked, its perplexity is not computed.
"""
from __future__ import annotations

from pathlib import Path

import torch

from .config import ConfigError
from .io import ArtifactError, atomic_path, read_json, write_json


def get_tokenizer(spec: dict, saved: str | None = None):
    """The tokenizer of a ``models.<name>`` entry, or None for random token ids; ``saved``: a
    folder holding that tokenizer already (the source stage's base model folder)."""
    from transformers import AutoTokenizer

    from .pkgdata import resolve_path

    if saved:
        return AutoTokenizer.from_pretrained(saved)
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


def calibration_starts(n_tokens: int, n: int, seq_len: int, seed: int) -> list[int]:
    """Where the ``n`` calibration windows of a stream of ``n_tokens`` start (seeded)."""
    if n_tokens < seq_len + 1:
        raise ConfigError(f"config key calibration.seq_len: the corpus has {n_tokens} tokens, "
                          f"fewer than seq_len + 1 = {seq_len + 1}")
    g = torch.Generator().manual_seed(seed)
    return torch.randint(0, n_tokens - seq_len, (n,), generator=g).tolist()


def calibration_windows(stream: torch.Tensor, n: int, seq_len: int, seed: int) -> torch.Tensor:
    starts = calibration_starts(stream.numel(), n, seq_len, seed)
    return torch.stack([stream[s : s + seq_len] for s in starts])


def eval_starts(n_tokens: int, seq_len: int, max_windows: int | None,
                exclude: list[tuple[int, int]] = ()) -> list[int]:
    """Starts of consecutive non-overlapping windows from the stream's start, at most
    ``max_windows``; a window that would overlap a token range ``[a, b)`` of ``exclude`` is
    not taken, the next one starts at ``b``."""
    ranges = sorted(exclude)
    starts, s = [], 0
    while s + seq_len <= n_tokens and not (max_windows and len(starts) >= max_windows):
        hit = [b for a, b in ranges if a < s + seq_len and b > s]
        if hit:
            s = max(hit)
            continue
        starts.append(s)
        s += seq_len
    if not starts:
        raise ConfigError(f"config key perplexity.seq_len: the corpus has {n_tokens} tokens, "
                          f"no window of seq_len = {seq_len} outside the calibration windows")
    return starts


def eval_windows(stream: torch.Tensor, seq_len: int, max_windows: int | None,
                 held_out: dict | None = None) -> tuple[torch.Tensor, list[int]]:
    """Evaluation windows and their starts; ``held_out`` (calibration ``n_samples``,
    ``seq_len``, ``seed``): none overlaps a calibration window of the same stream."""
    exclude = []
    if held_out:
        c_len = held_out["seq_len"]
        exclude = [(a, a + c_len) for a in calibration_starts(stream.numel(), held_out["n_samples"], c_len,
                                                              held_out["seed"])]
    starts = eval_starts(stream.numel(), seq_len, max_windows, exclude)
    return torch.stack([stream[s : s + seq_len] for s in starts]), starts


def run(split: str, spec: dict, corpus_path: str, out_path: str, *, model_name: str,
        corpus_name: str, settings: dict, tokenizer_dir: str | None = None) -> dict:
    """``settings``: n_samples (calibration), seq_len, seed, max_windows and held_out (eval);
    ``tokenizer_dir``: the folder the source stage saved the model's tokenizer in (a GGUF
    file's tokenizer is otherwise parsed from the file again, seconds per job)."""
    n_samples, seq_len = settings.get("n_samples"), settings["seq_len"]
    extra: dict = {}
    seed, max_windows = settings.get("seed", 0), settings.get("max_windows")
    tokenizer = get_tokenizer(spec, tokenizer_dir or None)
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
            held_out = settings.get("held_out")
            ids, starts = eval_windows(stream, seq_len, max_windows, held_out)
            extra = {"starts": starts, "held_out_from_calibration": held_out}
        source, tok_name = corpus_name, getattr(tokenizer, "name_or_path", None)
    meta = {"model": model_name, "split": split, "corpus": source, "tokenizer": tok_name,
            "seed": seed, "shape": list(ids.shape), "seq_len": seq_len, **extra}
    save_tokens(out_path, ids, meta)
    return meta


def save_tokens(path: str, ids: torch.Tensor, meta: dict) -> None:
    """Write ``ids`` and their sidecar ``meta`` (``shape`` set to the ids' shape)."""
    from safetensors.torch import save_file

    sidecar(path).unlink(missing_ok=True)  # ids without their sidecar are never read
    with atomic_path(path) as tmp:
        save_file({"input_ids": ids.contiguous()}, str(tmp))
    write_json(sidecar(path), {**meta, "shape": list(ids.shape)})


def sidecar(path: str | Path) -> Path:
    return Path(path).with_suffix(".json")


def load_tokens(path: str | Path, *, model: str | None = None) -> tuple[torch.Tensor, dict]:
    """The token ids at ``path`` and their sidecar, which must be there and match them: its
    ``shape`` the ids' shape, and where ``model`` is given its ``model`` that name (the
    windows were tokenised for that model).  :class:`ArtifactError` naming the file."""
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    try:
        ids = load_file(str(path))["input_ids"]
    except (SafetensorError, OSError, KeyError) as exc:
        raise ArtifactError(f"{path}: cannot read token ids ({exc}); delete it and rerun") from None
    side = sidecar(path)
    if not side.exists():
        raise ArtifactError(f"{side}: file not found; the token ids {path} come with it (corpus, tokenizer, "
                            "shape) -- delete them and rerun")
    meta = read_json(side, required=("shape",) + (("model",) if model is not None else ()))
    if meta["shape"] != list(ids.shape):
        raise ArtifactError(f"{side}: shape {meta['shape']} but {path} holds {list(ids.shape)} -- the two were "
                            "written apart; delete them and rerun")
    if model is not None and meta["model"] != model:
        raise ArtifactError(f"{side}: the token ids are {meta['model']!r}'s, not {model!r}'s (another "
                            "tokenizer) -- delete them and rerun")
    return ids, meta
