"""torch.compile settings and counters the compiled backend uses while it compiles.

``inductor_config(use_compile, options)``  ``torch._inductor.config`` values patched while
    compiling (unknown names refused);
``dynamo_config(dynamic_widths, symbolic)``  dynamo's shape settings: under dynamic widths the
    weights' shapes may be symbolic too; with only the batch and the cache length symbolic
    (``symbolic``, widths static), no other dimension becomes symbolic on a recompile, so
    layers of another width get a static graph of their own;
``graph_count()``, ``cache_counts()``  graphs compiled in this process, inductor's on-disk
    cache hits and misses so far.
"""
from __future__ import annotations

import contextlib

import torch


def inductor_config(use_compile: bool, options: dict):
    if not (use_compile and options):
        return contextlib.nullcontext()
    import torch._inductor.config as config

    unknown = sorted(k for k in options if not hasattr(config, k))
    if unknown:
        raise ValueError(f"compiled backend: unknown torch._inductor.config option(s) {unknown}")
    return config.patch(options)


def dynamo_config(dynamic_widths: bool, symbolic: bool):
    if dynamic_widths:  # dynamo keeps parameters' shapes static by default
        return torch._dynamo.config.patch(force_parameter_static_shapes=False)
    if symbolic:  # the marked dimensions only: a layer of another width recompiles static
        return torch._dynamo.config.patch(automatic_dynamic_shapes=False)
    return contextlib.nullcontext()


def graph_count() -> int:
    """Graphs dynamo has compiled in this process so far."""
    from torch._dynamo.utils import counters

    return int(counters["stats"]["unique_graphs"])


def cache_counts() -> dict:
    """Inductor's on-disk graph cache so far in this process: graphs found, graphs compiled."""
    from torch._dynamo.utils import counters

    c = counters["inductor"]
    return {"compile_cache_hits": int(c["fxgraph_cache_hit"]), "compile_cache_misses": int(c["fxgraph_cache_miss"])}
