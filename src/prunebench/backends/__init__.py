"""Generation backends: how one benchmark call turns a prompt into ``out_len`` new tokens.

Every backend does the same work: greedy decoding of exactly ``out_len`` new tokens (the EOS
token is never chosen, as with ``min_new_tokens = max_new_tokens``), one call = prefill of
the ``in_len`` prompt tokens + ``out_len - 1`` decode steps, same dtype.

``hf-eager``   (:mod:`.hf_eager`) ``transformers``' ``model.generate``: a Python loop that
               launches every kernel one by one; at batch 1 it mostly measures the framework.
``compiled``   (:mod:`.compiled`) a static-cache greedy loop, the decoder layer compiled with
               ``torch.compile``, prefill and decode step replayed from CUDA graphs.
``cuda-graph`` ``compiled`` without ``torch.compile``: CUDA graphs of the eager kernels.

API (the benchmark stage calls it)::

    be = make_backend(name, **options)
    info = be.prepare(model, batch, in_len, out_len)     # {"compile_s": ..., ...}; not timed
    ids = be.generate(prompt, n, on_first_token=None)    # [batch, in_len + n], n <= out_len

``prepare`` does everything that is not generation (cache allocation, weight fusion,
compilation, graph capture, warm-up); its wall time is ``compile_s`` and never part of a
latency.  ``generate`` never compiles.  ``on_first_token`` is called once, as soon as the
first new token's logits exist (after the prefill): the benchmark times the prefill with it
(time to first token) and the decode steps as the rest of the call.

The GPU self-check and timing command line is :mod:`prunebench.tools.selfcheck`.
"""
from __future__ import annotations

from typing import Callable, Protocol

import torch

from .compiled import CompiledBackend, CudaGraphBackend
from .hf_eager import HFEagerBackend


class Backend(Protocol):
    name: str

    def prepare(self, model, batch: int, in_len: int, out_len: int) -> dict: ...

    def generate(self, prompt: torch.Tensor, out_len: int,
                 on_first_token: Callable[[], None] | None = None) -> torch.Tensor: ...


BACKENDS: dict[str, type] = {b.name: b for b in (HFEagerBackend, CompiledBackend, CudaGraphBackend)}


def make_backend(name: str, **options) -> Backend:
    try:
        cls = BACKENDS[name]
    except KeyError:
        raise ValueError(f"benchmark.backends: unknown backend {name!r}; expected one of {sorted(BACKENDS)}") from None
    return cls(**options)
