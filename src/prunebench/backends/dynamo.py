"""torch.compile settings and counters the compiled backend uses while it compiles.

``inductor_config(use_compile, options)``  ``torch._inductor.config`` values patched while
    compiling (unknown names refused);
``dynamo_config(dynamic_widths, symbolic)``  dynamo's shape settings: under dynamic widths the
    weights' shapes may be symbolic too; with only the batch and the cache length symbolic
    (``symbolic``, widths static), no other dimension becomes symbolic on a recompile, so
    layers of another width get a static graph of their own;
``graph_count()``, ``cache_counts()``  graphs compiled in this process, inductor's on-disk
    cache hits and misses so far;
``mark(t, dims)``, ``symbolic_widths(layers)``  dimensions symbolic for the next trace: the
    batch and cache length, and under dynamic widths the widths that differ between layers.
"""
from __future__ import annotations

import contextlib
import os

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


def mark(t: torch.Tensor, dims) -> None:
    """Mark ``dims`` of ``t`` symbolic for the next trace (``torch._dynamo.maybe_mark_dynamic``)."""
    for d in dims:
        torch._dynamo.maybe_mark_dynamic(t, d)


def symbolic_widths(layers) -> bool:
    """Under dynamic widths: each layer's ``tensors`` become detached views of the same storage
    (the model's own parameters stay unmarked) with the dimensions that differ between layers
    marked symbolic, so that the first trace is already the graph every layer shares, not a
    static one that the next layer's widths recompile.  Returns whether the KV head count
    differs between layers (the caches' dimension 1 is then marked by the caller)."""
    def leaves(t, path=()):
        if isinstance(t, tuple):
            for i, x in enumerate(t):
                yield from leaves(x, (*path, i))
        elif t is not None:
            yield path, t

    shapes: dict[tuple, set] = {}
    for layer in layers:
        for path, t in leaves(layer.tensors):
            shapes.setdefault(path, set()).add(tuple(t.shape))
    vary = {path: [d for d in range(len(next(iter(s)))) if len({sh[d] for sh in s}) > 1]
            for path, s in shapes.items() if len({len(sh) for sh in s}) == 1}

    def rebuild(t, path=()):
        if isinstance(t, tuple):
            return tuple(rebuild(x, (*path, i)) for i, x in enumerate(t))
        if t is None:
            return None
        v = t.detach()
        mark(v, vary.get(path, ()))
        return v

    for layer in layers:
        layer.tensors = rebuild(layer.tensors)
    return len({layer.kv_heads for layer in layers}) > 1


def precompile_record(layers, device: torch.device, dtype: torch.dtype, batch_class: int,
                      options: list) -> str | None:
    """The file that says this machine's inductor cache already holds the graphs a precompile
    of ``batch_class`` for these layers' shapes, on this device and dtype with these compile
    ``options``, compiles: inside inductor's cache directory, so it goes wherever those graphs go; None where
    that directory is unknown.  A later cell that finds it skips the precompile; the record can
    only save time, never change what runs (a graph missing after all compiles when its cell
    needs it)."""
    import hashlib
    import json

    try:
        from torch._inductor.runtime.cache_dir_utils import cache_dir
    except ImportError:
        return None
    settings = {"torch": torch.__version__, "layers": sorted({repr(l.signature()) for l in layers}),
                "device": torch.cuda.get_device_name(device) if device.type == "cuda" else str(device),
                "dtype": str(dtype), "batch_class": batch_class, "options": options}
    key = hashlib.sha256(json.dumps(settings, sort_keys=True, default=repr).encode()).hexdigest()[:32]
    return os.path.join(cache_dir(), "prunebench-precompiled", key)


def note_precompiled(record: str | None) -> None:
    """Leave ``record`` (:func:`precompile_record`) once its batch class's graphs are compiled."""
    if record is not None and not os.path.exists(record):
        from ..io import write_json

        write_json(record, {"format": "prunebench-precompiled"})
