"""Calibration NLLs shared between prune jobs.

The PPL criterion and SLEB score "the calibration NLL of the model without the blocks S"
for many sets S; the values depend only on the dense model, the calibration tokens, the
batch size, the device type and the dtype, not on the budget.  A budget sweep prunes the
same method to several budgets: with the directory in ``PRUNEBENCH_SCORE_CACHE`` (the
prune rule sets it), the values one job computed are read by the next (the prune jobs of
one method's budgets hold one lock while they prune, :func:`one_at_a_time`, so they run one
after the other: SLEB's later budget continues from the earlier one's steps, and the PPL
criterion scores once), and a method scoring
the same sets (SLEB's first step is the PPL criterion's) finds them too.

One JSON file per key (a hash of :data:`VERSION`, the calibration tokens, the batch size,
device type, dtype and a sample of every parameter: shapes and 4096 strided values of each
tensor), ``{"<sorted blocks>": nll}``; writes merge with what is there under an exclusive
lock and replace the file atomically.  Without the variable nothing is read or written.

Besides NLLs, named sets of tensors (:func:`open_tensors`): ``<key>-<name>.safetensors``,
the key hashing also the set's name and its own version (the code that computes it), written
once, atomically, under the same lock -- the calibration gradient's saliency sums that
Taylor+ and LLM-Pruner share (:mod:`prunebench.methods.saliency`, which checks what it reads
against the model's parameters and computes again where it does not fit).

Values of older code are never read: :data:`VERSION` (and a tensor set's version) is part of
the key, so bumping it when what a value means or how it is computed changes leaves the old
files unread (they can be deleted).
"""
from __future__ import annotations

import contextlib
import hashlib
import json
import os
from pathlib import Path
from typing import Iterator

import torch

ENV = "PRUNEBENCH_SCORE_CACHE"
SAMPLE = 4096
#: version of the keys and of the calibration NLLs: bumped where they change meaning
VERSION = 2


def fingerprint(model, calibration: torch.Tensor, batch_size: int, tag: str = "") -> str:
    """The key of ``model``'s values on ``calibration`` in batches of ``batch_size``
    (module docstring); ``tag``: what else the values depend on (a tensor set's name and
    version)."""
    h = hashlib.sha256(f"prunebench-score-cache/{VERSION}|{tag}|".encode())
    h.update(calibration.detach().cpu().contiguous().numpy().tobytes())
    p0 = next(model.parameters())
    h.update(f"{calibration.shape}|{batch_size}|{p0.device.type}|{p0.dtype}".encode())
    for name, p in model.named_parameters():
        flat = p.detach().reshape(-1)
        step = max(1, flat.numel() // SAMPLE)
        h.update(f"{name}|{tuple(p.shape)}|{p.dtype}".encode())
        h.update(flat[::step][:SAMPLE].float().cpu().numpy().tobytes())
    return h.hexdigest()[:32]


class Store:
    """``{sorted blocks removed: mean NLL}`` for one key; ``path`` None: nothing kept."""

    def __init__(self, path: Path | None):
        self.path = path
        self.values: dict[str, float] = {}
        self.new: dict[str, float] = {}
        if path is not None and path.exists():
            try:
                self.values = {str(k): float(v) for k, v in json.loads(path.read_text()).items()}
            except (ValueError, TypeError, AttributeError):
                self.values = {}  # unreadable: recomputed, rewritten on save

    @staticmethod
    def _key(blocks) -> str:
        return ",".join(map(str, sorted(blocks)))

    def get(self, blocks) -> float | None:
        k = self._key(blocks)
        return self.new.get(k, self.values.get(k))

    def put(self, blocks, nll: float) -> None:
        self.new[self._key(blocks)] = float(nll)

    def save(self) -> None:
        if self.path is None or not self.new:
            return
        from .io import write_json

        with _exclusive(self.path.with_suffix(".lock")):
            merged = Store(self.path).values
            merged.update(self.new)
            write_json(self.path, merged)
        self.values, self.new = merged, {}


class TensorStore:
    """A named set of tensors for one key; ``path`` None: nothing kept."""

    def __init__(self, path: Path | None):
        self.path = path

    def load(self) -> dict[str, torch.Tensor] | None:
        if self.path is None or not self.path.exists():
            return None
        from safetensors import SafetensorError
        from safetensors.torch import load_file

        try:
            return load_file(str(self.path))
        except (SafetensorError, OSError):
            return None  # unreadable: recomputed, rewritten on save

    def save(self, tensors: dict[str, torch.Tensor]) -> None:
        if self.path is None:
            return
        from safetensors.torch import save_file

        from .io import atomic_path

        with _exclusive(self.path.with_suffix(".lock")):
            with atomic_path(self.path) as tmp:
                save_file({k: v.contiguous() for k, v in tensors.items()}, str(tmp))


def _root() -> Path | None:
    root = os.environ.get(ENV)
    return Path(root) if root else None


@contextlib.contextmanager
def one_at_a_time(name: str) -> Iterator[None]:
    """Hold the exclusive lock ``<dir>/<name>.lock`` while the block runs, so that the jobs of
    one name (the prune jobs of one method's budgets) score one after the other and the later
    reads what the earlier computed, whatever order and however many at once the scheduler
    starts them.  Without the variable: no lock."""
    root = _root()
    if root is None:
        yield
        return
    with _exclusive(root / f"{name}.lock"):
        yield


@contextlib.contextmanager
def _exclusive(lock_path: Path) -> Iterator[None]:
    """Hold an exclusive ``flock`` on ``lock_path`` (created with its folder) while the block runs."""
    import fcntl

    lock_path.parent.mkdir(parents=True, exist_ok=True)
    with open(lock_path, "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        yield


def open_tensors(model, calibration: torch.Tensor, batch_size: int, name: str, version: int = 1) -> TensorStore:
    """The tensor set ``name`` of the code at ``version`` (bumped where that code changes what
    it stores: sets of older code are not read)."""
    root = _root()
    if root is None:
        return TensorStore(None)
    key = fingerprint(model, calibration, batch_size, tag=f"{name}/{version}")
    return TensorStore(root / f"{key}-{name}.safetensors")


def open_for(model, calibration: torch.Tensor, batch_size: int) -> Store:
    root = _root()
    if root is None:
        return Store(None)
    return Store(root / f"{fingerprint(model, calibration, batch_size)}.json")
