"""Benchmark stage: time one cell (model, method, backend, input length, output length, batch).

The prompt is ``in_len`` seeded random token ids, repeated over the batch; exactly
``out_len`` tokens are generated greedily (``min_new_tokens = max_new_tokens``), so every
method does the same work.  ``backend`` (:mod:`prunebench.backends`) does the generating:
``hf-eager`` is ``model.generate``; ``compiled`` / ``cuda-graph`` run a static-cache greedy
loop replayed from CUDA graphs, prepared (compiled, captured) before any run -- that time is
``compile_s``, never part of a latency.  Compiled work is cached under ``cache_dir``
(inductor's and Triton's kernels, the GEMV choice per shape), so later cells of the same
model and later runs of the pipeline compile less.

Repetitions (``timing``, :mod:`prunebench.timing`): warm-up runs until the latency settles,
then timed runs until the 95 % interval of the median latency is narrower than
``target_rel_ci`` (relative half-width) or a cap (``max_runs``, ``max_seconds``) is hit;
``stable`` says which.  On CUDA each run is bracketed by ``torch.cuda.synchronize``.  Latency
is the wall time of one whole ``generate`` call; within it, time to first token (``ttft``:
the prefill and the first token's logits) and the decode steps are timed apart: ``decode
per token`` = (latency - ttft) / (out_len - 1).  Throughput = batch x out_len / latency.

Host or GPU: on CUDA one more generation of ``profile_tokens`` tokens runs under the
profiler; ``gpu_busy_frac`` = GPU kernel time / wall time of it.  Near 1 the cell measures
the model (the GPU never waits); far below 1 it measures the framework (Python, launches).
``host_before`` / ``host_after`` record the host's load around the timed runs.

Roofline (:mod:`prunebench.roofline`): ``hbm_bandwidth_gbs`` is a device-to-device copy of a
1 GiB buffer measured before the model is loaded; ``roofline_s`` = weight bytes read per
forward pass x out_len / that bandwidth; ``roofline_frac`` = roofline_s / latency_s.

A CUDA out-of-memory error is a result: the cell is written with ``status: "oom"``.  A cell
whose KV cache alone cannot fit in the memory left after the weights is written so at once,
without running (:func:`check_fits`; its ``error`` says "predicted, not run").

Cell file: ``results/<experiment>/bench/<model>/<method>/<backend>/in<I>_out<O>_bs<B>.json``,
fields listed in :data:`FIELDS` (lists ``latencies_s``, ``ttfts_s`` and ``warmup_latencies_s``
hold every run; ``backend_info`` is what the backend's ``prepare`` reports besides
``compile_s``; ``timing`` the repetition settings used; ``process_s`` the process's age when
the stage began, ``cell_wall_s`` the stage's own wall time: the cell's cost is their sum).
"""
from __future__ import annotations

import datetime as _dt
import logging
import os
import platform
import time

import torch
from tqdm.auto import tqdm

from . import backends as _backends
from . import timing as _timing
from .devices import (free_device_memory, host_load, kernel_time, measure_copy_bandwidth, process_age,
                      resolve_device, sync)
from .io import write_json
from .records import CELL_SCHEMA
from .roofline import kv_cache_bytes, roofline_seconds, weight_bytes

log = logging.getLogger(__name__)

SCHEMA = CELL_SCHEMA  #: the cell format (prunebench.records)
FIELDS = (
    "schema", "model", "method", "backend", "in_len", "out_len", "batch", "params", "num_layers",
    "weights", "dtype", "attn_implementation", "device", "device_name", "gpu_uuid", "status", "error",
    "latencies_s", "latency_s", "latency_ci_low_s", "latency_ci_high_s", "latency_rel_ci",
    "latency_p10_s", "latency_p90_s", "latency_spread", "runs", "stable", "stop_reason",
    "warmup_latencies_s", "throughput_tok_s",
    "ttfts_s", "ttft_s", "ttft_ci_low_s", "ttft_ci_high_s",
    "decode_per_token_s", "decode_per_token_ci_low_s", "decode_per_token_ci_high_s", "decode_tok_s",
    "gpu_busy_frac", "gpu_kernel_s", "gpu_wall_s", "profile_tokens", "host_before", "host_after", "threads",
    "process_s", "cell_wall_s",
    "peak_mem_gib", "load_s", "compile_s", "backend_info", "hbm_bandwidth_gbs", "roofline_s", "roofline_frac",
    "timing", "versions", "finished_at",
)

BACKENDS = tuple(_backends.BACKENDS)  # ("hf-eager", "compiled", "cuda-graph")

#: ``benchmark.timing`` keys beyond the stopping rule's, with their defaults
EXTRA_TIMING = {"warmup_new_tokens": None, "profile_tokens": 32}


def summarise(latencies: list[float], ttfts: list[float], batch: int, out_len: int) -> dict:
    """The cell's statistics from its timed runs (``ttfts``: time to first token of each run)."""
    lat = _timing.summary(latencies)
    ttft = _timing.summary(ttfts)
    rec = {
        "latency_s": lat["median"], "latency_ci_low_s": lat["ci_low"], "latency_ci_high_s": lat["ci_high"],
        "latency_rel_ci": lat["rel_ci"], "latency_p10_s": lat["p10"], "latency_p90_s": lat["p90"],
        "latency_spread": lat["spread"], "runs": len(latencies),
        "throughput_tok_s": batch * out_len / lat["median"],
        "ttft_s": ttft["median"], "ttft_ci_low_s": ttft["ci_low"], "ttft_ci_high_s": ttft["ci_high"],
        "decode_per_token_s": None, "decode_per_token_ci_low_s": None, "decode_per_token_ci_high_s": None,
        "decode_tok_s": None,
    }
    if out_len > 1:
        per_tok = [(l - t) / (out_len - 1) for l, t in zip(latencies, ttfts)]
        dec = _timing.summary(per_tok)
        rec.update(decode_per_token_s=dec["median"], decode_per_token_ci_low_s=dec["ci_low"],
                   decode_per_token_ci_high_s=dec["ci_high"],
                   decode_tok_s=batch / dec["median"] if dec["median"] > 0 else None)
    return rec


def versions() -> dict:
    import transformers

    v = {"python": platform.python_version(), "torch": torch.__version__,
         "transformers": transformers.__version__}
    if torch.cuda.is_available():
        v["cuda"] = torch.version.cuda
    return v


def is_oom(exc: BaseException) -> bool:
    """An out-of-memory failure: CUDA's, or the host's (``MemoryError``, or the CPU
    allocator's ``RuntimeError``: "DefaultCPUAllocator: can't allocate memory: ...")."""
    if isinstance(exc, MemoryError):
        if not str(exc):  # Python's own has no message; the cell's error field needs one
            exc.args = ("out of host memory (MemoryError)",)
        return True
    if isinstance(exc, torch.OutOfMemoryError):
        return True
    msg = str(exc).lower()
    return isinstance(exc, RuntimeError) and any(
        s in msg for s in ("out of memory", "can't allocate memory", "cannot allocate memory", "defaultcpuallocator"))


def check_fits(model, batch: int, in_len: int, out_len: int, device) -> None:
    """Raise ``torch.OutOfMemoryError`` at once where the cell's KV cache alone exceeds the
    device memory left after the weights: such a generation must run out of memory, and HF's
    growing cache would find out only late in it (a minute of GPU time for a large cell).
    The cell is then recorded as ``oom`` like one that failed while running; the error says
    it was predicted.  Nothing is predicted for the CPU, nor where the bound holds."""
    free = free_device_memory(device)
    need = kv_cache_bytes(model, batch, in_len, out_len)
    if free is not None and need > free:
        raise torch.OutOfMemoryError(
            f"out of memory (predicted, not run): the KV cache of {batch} x {in_len + out_len - 1} "
            f"positions alone needs {need / 2**30:.1f} GiB, {free / 2**30:.1f} GiB free after the weights")


def time_generation(backend, prompt: torch.Tensor, out_len: int, rule: _timing.StoppingRule, *,
                    warmup_new_tokens: int | None, device: torch.device, clock=time.perf_counter) -> _timing.Repeat:
    """Warm-up and timed runs of a prepared ``backend`` under ``rule``; each timed run records
    its latency and its time to first token (``rep.ttfts``)."""
    warm_tokens = warmup_new_tokens or out_len
    rep = _timing.Repeat(rule)
    rep.ttfts = []
    first: list[float] = []

    def on_first():
        sync(device)
        first.append(clock())

    def warm():
        sync(device)
        t0 = clock()
        backend.generate(prompt, warm_tokens)
        sync(device)
        return clock() - t0

    def timed():
        first.clear()
        sync(device)
        t0 = clock()
        out = backend.generate(prompt, out_len, on_first_token=on_first)
        sync(device)
        t1 = clock()
        got = out.shape[1] - prompt.shape[1]
        if got != out_len:
            raise RuntimeError(f"generate produced {got} tokens, expected exactly {out_len}")
        if len(first) != 1:
            raise RuntimeError(f"backend {backend.name}: first-token hook called {len(first)} times, expected once")
        rep.ttfts.append(first[0] - t0)
        return t1 - t0

    bar = tqdm(total=rule.max_runs, desc="timed runs", mininterval=1)

    def progress(lat):
        bar.n = len(lat)
        rel = _timing.rel_halfwidth(lat)
        bar.set_postfix_str(f"median {sorted(lat)[len(lat) // 2]:.3f} s"
                            + ("" if rel is None else f", ±{100 * rel:.1f} %"), refresh=True)

    with torch.inference_mode():
        rep.go(warm, timed, clock, progress)
    bar.close()
    # a timed run that the settle rule re-labelled warm-up drops its first-token time too
    rep.ttfts = rep.ttfts[len(rep.ttfts) - len(rep.latencies):]
    return rep


def make_prompt(vocab_size: int, in_len: int, batch: int, seed: int, device) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    low = min(100, vocab_size // 2)  # stay clear of special tokens
    ids = torch.randint(low, vocab_size, (1, in_len), generator=g)
    return ids.expand(batch, in_len).contiguous().to(device)


def _use_cache_dir(cache_dir: str | None) -> str | None:
    """Point inductor's and Triton's on-disk caches at ``cache_dir`` (before anything compiles);
    returns the GEMV choice file there."""
    if not cache_dir:
        return None
    cache_dir = os.path.abspath(cache_dir)
    os.environ.setdefault("TORCHINDUCTOR_CACHE_DIR", os.path.join(cache_dir, "inductor"))
    os.environ.setdefault("TRITON_CACHE_DIR", os.path.join(cache_dir, "triton"))
    return os.path.join(cache_dir, "gemv.json")


def run(model_dir: str, out_path: str, *, model_name: str, method: str, backend: str,
        in_len: int, out_len: int, batch: int, dtype: str, device: str, attn_implementation: str,
        timing: dict | None = None, seed: int = 0, threads: int | None = None,
        cache_dir: str | None = None) -> dict:
    from .models import load_model, read_manifest, weights_kind

    t_start, age = time.perf_counter(), process_age()
    if backend not in BACKENDS:
        raise ValueError(f"benchmark.backends: unknown backend {backend!r}; expected one of {BACKENDS}")
    settings = {**_timing.DEFAULTS, **EXTRA_TIMING, **(timing or {})}
    unknown = sorted(set(settings) - set(_timing.DEFAULTS) - set(EXTRA_TIMING))
    if unknown:
        raise ValueError(f"benchmark.timing: unknown key(s) {unknown}")
    rule = _timing.StoppingRule.from_config({k: settings[k] for k in _timing.DEFAULTS})
    gemv_cache = _use_cache_dir(cache_dir)
    if threads:
        torch.set_num_threads(int(threads))
    dev = resolve_device(device)
    man = read_manifest(model_dir, model=model_name, method=method)
    rec = {k: None for k in FIELDS}
    rec.update(schema=SCHEMA, model=model_name, method=method, backend=backend, in_len=in_len,
               out_len=out_len, batch=batch, params=man["params"], num_layers=man["num_layers"],
               weights=weights_kind(model_dir), dtype=dtype, attn_implementation=attn_implementation,
               device=dev.type, device_name=torch.cuda.get_device_name(dev) if dev.type == "cuda" else platform.processor() or "cpu",
               timing=settings, threads=torch.get_num_threads(), versions=versions())
    if dev.type == "cuda":  # which physical card (several GPUs of one machine run cells side by side)
        rec["gpu_uuid"] = str(torch.cuda.get_device_properties(dev).uuid)
    model = be = None
    t0 = time.perf_counter()
    bandwidth = measure_copy_bandwidth(dev)  # before the model: needs 2 GiB free
    rec["hbm_bandwidth_gbs"] = bandwidth / 1e9
    log.info("copy bandwidth %.0f GB/s (measured in %.1f s, CUDA start included)", bandwidth / 1e9,
             time.perf_counter() - t0)
    t0 = time.perf_counter()
    from transformers import AutoConfig, AutoModelForCausalLM  # noqa: F401 - first import: seconds, kept out of load_s

    log.info("transformers imported in %.1f s", time.perf_counter() - t0)
    try:
        if dev.type == "cuda":
            torch.cuda.empty_cache()
            torch.cuda.reset_peak_memory_stats(dev)
        t0 = time.perf_counter()
        model = load_model(model_dir, dtype=dtype, device=dev, attn_implementation=attn_implementation)
        sync(dev)
        rec["load_s"] = time.perf_counter() - t0
        ran = getattr(model.config, "_attn_implementation", None)
        if ran is not None and ran != attn_implementation:  # transformers may fall back
            log.warning("attention %s asked for, %s loaded", attn_implementation, ran)
            rec["attn_implementation"] = ran
        rec["roofline_s"] = roofline_seconds(weight_bytes(model), out_len, bandwidth)
        check_fits(model, batch, in_len, out_len, dev)
        options = {"gemv_cache": gemv_cache} if backend != "hf-eager" and gemv_cache else {}
        be = _backends.make_backend(backend, **options)
        log.info("model loaded in %.1f s", rec["load_s"])
        info = be.prepare(model, batch, in_len, out_len)
        rec["compile_s"] = info.pop("compile_s")
        log.info("backend %s prepared in %.1f s", backend, rec["compile_s"])
        rec["backend_info"] = info  # what the backend did: compiled, cuda_graphs, inductor options, ...
        prompt = make_prompt(model.config.vocab_size, in_len, batch, seed, dev)
        rec["host_before"] = host_load()
        rep = time_generation(be, prompt, out_len, rule, warmup_new_tokens=settings["warmup_new_tokens"],
                              device=dev)
        rec["host_after"] = host_load()
        rec.update(status="ok", latencies_s=rep.latencies, ttfts_s=rep.ttfts, warmup_latencies_s=rep.warmups,
                   stop_reason=rep.stop_reason, stable=rule.is_stable(rep.latencies),
                   **summarise(rep.latencies, rep.ttfts, batch, out_len))
        rec["roofline_frac"] = rec["roofline_s"] / rec["latency_s"]
        n_prof = min(int(settings["profile_tokens"] or 0), out_len)
        if n_prof and dev.type == "cuda":
            with torch.inference_mode():
                prof = kernel_time(lambda: be.generate(prompt, n_prof), dev)
            rec.update(profile_tokens=n_prof, gpu_kernel_s=prof["kernel_s"], gpu_wall_s=prof["wall_s"],
                       gpu_busy_frac=prof["kernel_s"] / prof["wall_s"])
        log.info("latency %.4f s (95 %% CI %s..%s, %d runs, %s), ttft %.4f s, busy %s", rec["latency_s"],
                 rec["latency_ci_low_s"], rec["latency_ci_high_s"], rec["runs"],
                 "stable" if rec["stable"] else f"unstable: {rep.stop_reason}", rec["ttft_s"], rec["gpu_busy_frac"])
    except Exception as exc:  # noqa: BLE001
        if not is_oom(exc):
            raise
        rec.update(status="oom", error=str(exc).splitlines()[0][:300])
    finally:
        if dev.type == "cuda":
            rec["peak_mem_gib"] = torch.cuda.max_memory_allocated(dev) / 2**30
        del model, be
    rec["process_s"] = age  # interpreter start and imports before this function ran
    rec["cell_wall_s"] = time.perf_counter() - t_start
    rec["finished_at"] = _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")
    write_json(out_path, rec)
    return rec
