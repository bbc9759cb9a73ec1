"""Choosing the Triton GEMV's configuration per weight shape, by timing (:mod:`prunebench.gemv`).

``plan(weights, x_dtype)``
    for every distinct ``(N, K)`` among ``weights``: the fastest of :data:`~prunebench.gemv.CONFIGS`
    and cuBLAS (``F.linear``), each captured in a CUDA graph that runs that shape's own matrices
    back to back (GPU time, read from HBM as a decode step reads them: :func:`_time_stream`);
    returns ``{(N, K): Config | None}`` (None = cuBLAS) and a report.  With ``cache_path``,
    choices are stored per (device name, dtype, shape, Triton version) and reused.
``choose``, ``near``, ``compile_candidates``, ``summary``
    the plan's parts: which candidates a shape times (all, or cuBLAS and the few fastest of
    a near shape timed fully), compiling them on several threads first, what a cell records.
``cache_key``, ``split_cached``, ``load_cache``, ``store_cache``
    the stored choices (``results/cache/gemv.json``).

On CPU (Triton's interpreter) ``plan`` times nothing: every shape gets
:data:`~prunebench.gemv.CPU_CONFIG`.
"""
from __future__ import annotations

import json
import os
import time

import torch
import torch.nn.functional as F

from .gemv import CONFIGS, CPU_CONFIG, Config, _kernel, available, gemv, interpreting

#: a shape within this relative distance of a fully timed one (the same other dimension) times
#: only that shape's :data:`SHORTLIST` fastest configurations and cuBLAS, not every candidate
NEAR_REL = 0.05
SHORTLIST = 6


def _stream_sequence(ws: list[torch.Tensor], l2: int, max_flushed: int = 64) -> tuple[list[torch.Tensor], bool]:
    """The matrices one timed pass of :func:`_time_stream` runs, and whether each call needs
    an L2 flush: every matrix at least once, cycling until three L2 sizes were read; with
    flushes (the matrices fit in twice the L2) at most ``max_flushed`` calls."""
    distinct = sum(w.numel() * w.element_size() for w in ws)
    need_flush = distinct < 2 * l2
    seq, total = [], 0
    while total < 3 * l2 or len(seq) < len(ws):
        w = ws[len(seq) % len(ws)]
        seq.append(w)
        total += w.numel() * w.element_size()
        if need_flush and len(seq) >= max(max_flushed, len(ws)):
            break
    return seq, need_flush


def _time_stream(f, ws: list[torch.Tensor], l2: int, reps: int, flush: torch.Tensor,
                 flush_times: dict | None = None) -> float:
    """Median GPU seconds per call of ``f(w)``, every call reading its matrix from HBM, not L2.

    The calls are captured into a CUDA graph and replayed, so that the time is the GPU's,
    not Python's launch overhead (a custom op or a compiled function costs tens of
    microseconds to launch, more than a small GEMV runs).  Where the shape's matrices are
    together at least twice the L2 cache, the graph runs them back to back, as a decode step
    does, cycling until three L2 sizes were read; otherwise a read of ``flush`` goes before
    every call and the time of a graph of the flushes alone is subtracted (a read leaves no
    dirty lines whose write-back would be charged to the next call).  ``flush_times`` caches
    the flushes' time per sequence length across calls.
    """
    seq, need_flush = _stream_sequence(ws, l2)

    def capture(with_f: bool) -> torch.cuda.CUDAGraph:
        side = torch.cuda.Stream()
        side.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(side):
            for w in seq[:2]:  # warm-up outside the capture
                if with_f:
                    f(w)
        torch.cuda.current_stream().wait_stream(side)
        g = torch.cuda.CUDAGraph()
        with torch.cuda.graph(g):
            for w in seq:
                if need_flush:
                    flush.sum()
                if with_f:
                    f(w)
        return g

    def replay_time(g: torch.cuda.CUDAGraph) -> float:
        g.replay()
        events = [(torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)) for _ in range(reps)]
        for a, b in events:
            a.record()
            g.replay()
            b.record()
        torch.cuda.synchronize()
        ts = sorted(a.elapsed_time(b) / 1e3 for a, b in events)
        return ts[len(ts) // 2]

    t = replay_time(capture(True))
    if need_flush:
        cache = {} if flush_times is None else flush_times
        if len(seq) not in cache:
            cache[len(seq)] = replay_time(capture(False))
        t -= cache[len(seq)]
    return max(t, 0.0) / len(seq)


def cache_key(device_name: str, dtype: torch.dtype, n: int, k: int, configs: tuple[Config, ...] = CONFIGS) -> str:
    """Where a shape's choice is stored: device, dtype, shape, Triton version and the candidates."""
    import zlib

    import triton

    cands = zlib.crc32(repr(tuple(configs)).encode())
    return f"{device_name}|{str(dtype).removeprefix('torch.')}|{n}x{k}|triton {triton.__version__}|c{cands:08x}"


def split_cached(shapes: dict, device_name: str, dtype: torch.dtype, cached: dict,
                 configs: tuple[Config, ...] = CONFIGS) -> dict[tuple[int, int], Config | None]:
    """Take the shapes found in ``cached`` out of ``shapes`` (in place); return their choices."""
    choice = {}
    for (n, k) in list(shapes):
        key = cache_key(device_name, dtype, n, k, configs)
        if key in cached:
            c = cached[key]
            choice[(n, k)] = None if c is None else Config(*c)
            del shapes[(n, k)]
    return choice


def load_cache(path) -> dict:
    """The stored choices ``{key: [block_n, block_k, num_warps, num_stages] | None}`` ({} if none)."""
    try:
        with open(path) as f:
            data = json.load(f)
    except FileNotFoundError:
        return {}
    except (OSError, json.JSONDecodeError) as exc:
        raise RuntimeError(f"GEMV choice cache {path}: unreadable ({exc}); delete it to re-time every shape") from exc
    if not isinstance(data, dict) or data.get("format") != "prunebench-gemv-choices":
        raise RuntimeError(f"GEMV choice cache {path}: not a prunebench-gemv-choices file; delete it")
    return data["choices"]


def store_cache(path, new: dict) -> None:
    """Merge ``new`` into the cache file under an exclusive lock (cells of several GPUs share it)."""
    import fcntl

    from .io import write_json

    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    with open(f"{path}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        choices = load_cache(path)
        choices.update(new)
        write_json(path, {"format": "prunebench-gemv-choices", "choices": dict(sorted(choices.items()))})


def near(shape: tuple[int, int], timed: dict[tuple[int, int], list], rel: float = NEAR_REL) -> tuple[int, int] | None:
    """The nearest of ``timed``'s shapes with the same N or the same K as ``shape`` and the other
    dimension within ``rel`` of it (relative to ``shape``'s), or None."""
    n, k = shape
    best, dist = None, rel
    for (n2, k2) in timed:
        d = abs(n2 - n) / n if k2 == k else abs(k2 - k) / k if n2 == n else None
        if d is not None and d <= dist:
            best, dist = (n2, k2), d
    return best


def choose(shapes: list[tuple[int, int]], configs: tuple[Config, ...], time_shape, shortlist: bool = True,
           extra: list[str] = ()) -> list[dict]:
    """The choice per shape, in order of (N, K): ``time_shape(shape, candidates)`` gives each
    candidate's seconds (``None`` = cuBLAS, then ``extra``'s names, timed but never chosen).
    A shape :func:`near` a fully timed one (with ``shortlist``) times cuBLAS and that shape's
    :data:`SHORTLIST` fastest configurations; any other shape every candidate."""
    ranked: dict[tuple[int, int], list[Config]] = {}  # fully timed shapes: their configs, fastest first
    rows = []
    for N, K in sorted(shapes):
        other = near((N, K), ranked) if shortlist else None
        cands: list[Config | None] = [None, *(ranked[other][:SHORTLIST] if other else configs)]
        times = time_shape((N, K), cands)
        scores = times[:len(cands)]
        best = min(range(len(cands)), key=scores.__getitem__)
        if other is None:
            ranked[(N, K)] = [cands[i] for i in sorted(range(1, len(cands)), key=scores.__getitem__)]
        rows.append({"n": N, "k": K, "candidates": len(cands), "near": other, "cublas_s": scores[0],
                     "chosen_s": scores[best], "config": None if cands[best] is None else list(cands[best]),
                     **{f"{name}_s": t for name, t in zip(extra, times[len(cands):])}})
    return rows


def compile_candidates(shapes: dict[tuple[int, int], list[torch.Tensor]], x_dtype: torch.dtype,
                       configs: tuple[Config, ...], workers: int | None = None) -> float:
    """Compile every candidate configuration for every specialisation Triton makes among
    ``shapes`` (N and K divisible by 16 or not) at once, on ``workers`` threads (Triton's
    ``AsyncCompileMode``; ``None`` = one per CPU), so that the timing finds them compiled.
    Returns the seconds it took; 0 where Triton has no asynchronous compilation, ``workers``
    is 1 or nothing is to compile (each kernel then compiles when it is first timed)."""
    import triton

    mode = getattr(triton, "AsyncCompileMode", None)
    workers = workers or os.cpu_count() or 1
    if mode is None or workers < 2 or not shapes or interpreting():
        return 0.0
    from concurrent.futures import ThreadPoolExecutor

    kinds = {}
    for (n, k), ws in shapes.items():
        kinds.setdefault((n % 16 == 0, k % 16 == 0, n == 1, k == 1), ws[0])
    t0 = time.perf_counter()
    kern = _kernel()
    try:
        with ThreadPoolExecutor(workers) as pool, mode(pool):
            for w in kinds.values():
                n, k = w.shape
                x, y = torch.empty(k, dtype=x_dtype, device=w.device), torch.empty(n, dtype=x_dtype, device=w.device)
                for c in configs:
                    kern.warmup(x, w, w, y, n, k, w.stride(0), HAS_BIAS=False, BLOCK_N=c.block_n,
                                BLOCK_K=c.block_k, num_warps=c.num_warps, num_stages=c.num_stages, grid=(1,))
    except Exception as exc:  # only a head start: the timing compiles whatever is missing
        import logging

        logging.getLogger(__name__).warning("GEMV: compiling the candidates in parallel failed (%s); "
                                            "each compiles when first timed", exc)
        return 0.0
    return time.perf_counter() - t0


def plan(weights: list[torch.Tensor], x_dtype: torch.dtype, configs: tuple[Config, ...] = CONFIGS,
         reps: int = 5, extra: dict | None = None, cache_path: str | None = None,
         shortlist: bool = True, compile_workers: int | None = None,
         ) -> tuple[dict[tuple[int, int], Config | None], dict]:
    """Per distinct ``(N, K)`` of ``weights``: the fastest Triton config, or None where cuBLAS wins.

    Candidates are timed on that shape's own matrices (:func:`_time_stream`, median of
    ``reps``), after :func:`compile_candidates` compiled them (``compile_workers``).  Every
    candidate for a shape with no fully timed shape :func:`near` it; with ``shortlist``, a
    shape near one times cuBLAS and that one's :data:`SHORTLIST` fastest configurations only
    (FLAP's per-layer widths: one full timing per kind of matrix).  The report gives, per
    shape, the number of matrices, the candidates timed, cuBLAS's and the chosen kernel's time
    per call (seconds), and the predicted decode-step time of all matrices with cuBLAS only
    and with the choices.  ``extra``: more named candidates ``{name: f(x, w)}``, timed and
    reported (``<name>_s``) but never chosen (the CLI's ``--inductor``).
    """
    shapes: dict[tuple[int, int], list[torch.Tensor]] = {}
    for w in weights:
        shapes.setdefault((int(w.shape[0]), int(w.shape[1])), []).append(w)
    if not shapes:
        return {}, {"shapes": [], "select_s": 0.0}
    dev = weights[0].device
    if dev.type != "cuda":
        ok, why = available(dev)
        if not ok:
            raise RuntimeError(why)
        return {s: CPU_CONFIG for s in shapes}, {"shapes": [], "select_s": 0.0, "timed": False}
    t0 = time.perf_counter()
    dev_name = torch.cuda.get_device_name(dev)
    cached = load_cache(cache_path) if cache_path and not extra else {}
    choice = split_cached(shapes, dev_name, x_dtype, cached, configs)
    n_cached = len(choice)
    l2 = getattr(torch.cuda.get_device_properties(dev), "L2_cache_size", 64 << 20) or (64 << 20)
    flush = torch.ones(2 * l2, dtype=torch.uint8, device=dev) if shapes else None
    rows, step_cublas, step_chosen, flush_times = [], 0.0, 0.0, {}
    compile_s = compile_candidates(shapes, x_dtype, configs, compile_workers)
    with torch.no_grad():
        def time_shape(shape, cands):
            ws = shapes[shape]
            x = torch.randn(1, 1, shape[1], dtype=x_dtype, device=dev)
            scores = []
            for c in cands:
                f = (lambda w: F.linear(x, w)) if c is None else (lambda w, c=c: gemv(x, w, None, c))
                f(ws[0])  # Triton compiles (unless compiled above), cuBLAS picks its kernel
                scores.append(_time_stream(f, ws, l2, reps, flush, flush_times))
            for name, g in (extra or {}).items():
                g(x, ws[0])
                scores.append(_time_stream(lambda w, g=g: g(x, w), ws, l2, reps, flush, flush_times))
            return scores

        for row in choose(list(shapes), configs, time_shape, shortlist, list(extra or ())):
            n = len(shapes[(row["n"], row["k"])])
            choice[(row["n"], row["k"])] = None if row["config"] is None else Config(*row["config"])
            step_cublas += row["cublas_s"] * n
            step_chosen += row["chosen_s"] * n
            rows.append({"count": n, **row})
    del flush
    if cache_path and rows and not extra:
        store_cache(cache_path, {cache_key(dev_name, x_dtype, r["n"], r["k"], configs): r["config"] for r in rows})
    return choice, {"shapes": rows, "step_cublas_s": step_cublas, "step_chosen_s": step_chosen,
                    "select_s": time.perf_counter() - t0, "compile_s": compile_s, "timed": bool(rows),
                    "cached": n_cached, "shortlisted": sum(r["near"] is not None for r in rows)}


def summary(choice: dict[tuple[int, int], Config | None], report: dict) -> dict:
    """What a cell records of its plan: shapes, how many run on Triton, seconds to choose (and,
    where shapes were timed: to compile the candidates), shapes found stored or shortlisted, and
    the predicted decode-step GEMV time with cuBLAS only and with the choices (microseconds)."""
    info = {"gemv_shapes": len(choice), "gemv_triton_shapes": sum(c is not None for c in choice.values()),
            "gemv_select_s": round(report["select_s"], 3), "gemv_cached_shapes": report.get("cached", 0)}
    if report.get("timed"):
        info.update(gemv_step_cublas_us=round(report["step_cublas_s"] * 1e6, 1),
                    gemv_step_chosen_us=round(report["step_chosen_s"] * 1e6, 1),
                    gemv_compile_s=round(report["compile_s"], 3), gemv_shortlisted_shapes=report["shortlisted"])
    return info
