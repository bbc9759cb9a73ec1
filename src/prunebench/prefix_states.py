"""The base model's block inputs on the evaluation windows, shared by the perplexity jobs.

A model pruned by removing whole blocks computes, up to its first removed block, exactly
what the base model computes: the same embedding and the same first blocks, on the same
tokens.  The perplexity job of the base model records the input of every block on every
evaluation window; the job of a pruned model starts from the recorded input of the first
block where it differs from the base model and runs only the blocks from there on.  The
numbers are the plain computation's, bit for bit: the recorded tensors are the values the
plain computation would feed that block, the batches are the same (the batch size is part
of the key), and every operation after that point is the plain computation's.

Which blocks are "the same" is not taken from a report but checked on the weights: a chain
of SHA-256 digests, ``chain[0]`` over the computation's settings (the model config without
its depth, the dtype, the device type, the batch size and the token windows) and the
embedding's bytes, ``chain[k + 1]`` over ``chain[k]`` and block ``k``'s parameters (names
within the block, shapes, dtypes, bytes).  A model may start at boundary ``k`` when its own
``chain[k]`` is the recorded one; a width-pruned model differs at block 0 and is scored
from the tokens, as before.

File format: ``<dir>/<key>.safetensors``, ``key`` a digest of the settings and tokens (one
file per evaluation corpus); tensors ``input.<k>`` (``[windows, seq_len, hidden]``, the
input of block ``k`` for ``k`` below the base model's depth), metadata ``chain`` (JSON list
of hex digests, one per boundary).  Written once, atomically, by the base model's job;
nothing is read or written without a directory.
"""
from __future__ import annotations

import hashlib
import json
from pathlib import Path

import torch

#: config keys that differ between a model and its block-pruned copies without changing
#: what a block computes (the depth and per-layer lists follow the blocks' digests)
_DEPTH_KEYS = ("num_hidden_layers", "layer_types", "_name_or_path", "transformers_version", "architectures",
               "torch_dtype", "dtype")


def _settings(model, ids: torch.Tensor, batch_size: int) -> bytes:
    cfg = {k: v for k, v in model.config.to_dict().items() if k not in _DEPTH_KEYS}
    p0 = next(model.parameters())
    text = json.dumps({"config": cfg, "attn": getattr(model.config, "_attn_implementation", None),
                       "dtype": str(p0.dtype), "device": p0.device.type, "batch_size": batch_size,
                       "shape": list(ids.shape)}, sort_keys=True, default=str)
    return text.encode() + ids.detach().cpu().contiguous().numpy().tobytes()


def key(model, ids: torch.Tensor, batch_size: int) -> str:
    """The file key: the settings and the token windows (not the weights)."""
    return hashlib.sha256(_settings(model, ids, batch_size)).hexdigest()[:32]


def _digest(h: "hashlib._Hash", module: torch.nn.Module) -> None:
    for name, p in module.state_dict().items():
        t = p.detach().cpu().contiguous()
        h.update(f"{name}|{tuple(t.shape)}|{t.dtype}".encode())
        h.update(t.reshape(-1).view(torch.uint8).numpy() if t.numel() else b"")  # the buffer, no copy


def chain(model, ids: torch.Tensor, batch_size: int, upto: int | None = None):
    """``chain[0]``, ``chain[1]``, ... ``chain[upto]`` of ``model`` (module docstring), one
    at a time (a caller that stops early hashes no more blocks); every boundary by default."""
    n = len(model.model.layers)
    upto = n if upto is None else min(upto, n)
    h = hashlib.sha256(_settings(model, ids, batch_size))
    _digest(h, model.get_input_embeddings())
    last = h.hexdigest()
    yield last
    for k in range(upto):
        h = hashlib.sha256(last.encode())
        _digest(h, model.model.layers[k])
        last = h.hexdigest()
        yield last


class Store:
    """The recorded block inputs of one corpus's windows (``path`` None: nothing kept)."""

    def __init__(self, path: Path | None):
        self.path = path

    def recorded_chain(self) -> list[str] | None:
        if self.path is None or not self.path.exists():
            return None
        from safetensors import SafetensorError, safe_open

        try:
            with safe_open(str(self.path), framework="pt") as f:
                return json.loads((f.metadata() or {}).get("chain", "null"))
        except (SafetensorError, OSError, ValueError):
            return None  # unreadable: scored from the tokens

    def start(self, model, ids: torch.Tensor, batch_size: int) -> tuple[int, torch.Tensor | None]:
        """The furthest boundary ``k`` where ``model`` computes what the recorded model did,
        with the recorded input of block ``k`` (``(0, None)``: start from the tokens)."""
        rec = self.recorded_chain()
        if not rec:
            return 0, None
        n = len(model.model.layers)
        k = -1
        for k_next, digest in enumerate(chain(model, ids, batch_size, upto=min(n - 1, len(rec) - 2))):
            if digest != rec[k_next]:
                break
            k = k_next  # blocks 0 .. k - 1 are the recorded model's: block k's input is recorded
        if k <= 0:
            return 0, None
        from safetensors import safe_open

        with safe_open(str(self.path), framework="pt") as f:
            return k, f.get_tensor(f"input.{k}")

    def record(self, model, ids: torch.Tensor, batch_size: int, inputs: list[torch.Tensor]) -> None:
        """Write ``inputs[k]`` (block ``k``'s input on every window) with the model's chain."""
        if self.path is None:
            return
        from safetensors.torch import save_file

        from .io import atomic_path

        self.path.parent.mkdir(parents=True, exist_ok=True)
        tensors = {f"input.{k}": t.contiguous() for k, t in enumerate(inputs)}
        with atomic_path(self.path) as tmp:
            save_file(tensors, str(tmp), metadata={"chain": json.dumps(list(chain(model, ids, batch_size)))})


def open_for(states_dir: str | None, model, ids: torch.Tensor, batch_size: int) -> Store:
    if not states_dir:
        return Store(None)
    return Store(Path(states_dir) / f"{key(model, ids, batch_size)}.safetensors")
