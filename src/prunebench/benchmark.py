"""Benchmark stage: time one cell (model, method, backend, input length, output length, batch).

The prompt is ``in_len`` seeded random token ids, repeated over the batch; exactly
``out_len`` tokens are generated greedily (``min_new_tokens = max_new_tokens``), so every
method does the same work.  ``backend`` (:mod:`prunebench.backends`) does the generating: ``hf-eager`` is
``model.generate``; ``compiled`` / ``cuda-graph`` run a static-cache greedy loop replayed from
CUDA graphs, prepared (compiled, captured) before any run -- that time is ``compile_s``,
never part of a latency.  ``warmup_runs`` untimed generations (of ``warmup_new_tokens``
tokens; ``None`` = the full ``out_len``, needed for stable numbers at large batches because
the first full-length run grows the CUDA caching allocator) precede ``timed_runs`` timed ones; on CUDA each run is bracketed by
``torch.cuda.synchronize``.  Latency is the wall time of one whole ``generate`` call
(prefill + decode); throughput = batch x out_len / latency (generated tokens per second).

Roofline: ``hbm_bandwidth_gbs`` is a device-to-device copy of a 1 GiB buffer measured before
the model is loaded ((bytes read + written) / time, GB/s); ``roofline_s`` = weight bytes read
per forward pass x out_len / that bandwidth (the least time any implementation needs at small
batch); ``roofline_frac`` = roofline_s / latency_s.

A CUDA out-of-memory error is a result: the cell is written with ``status: "oom"``.  A cell
whose KV cache alone cannot fit in the memory left after the weights is written so at once,
without running (:func:`check_fits`; its ``error`` says "predicted, not run").

Cell file: ``results/bench/<model>/<method>/<backend>/in<I>_out<O>_bs<B>.json``, fields
listed in :data:`FIELDS` (``latencies_s`` holds every timed run; ``backend_info`` is what
the backend's ``prepare`` reports besides ``compile_s``: for ``compiled``, whether it compiled
and captured CUDA graphs, and the inductor options; ``{}`` for ``hf-eager``).
"""
from __future__ import annotations

import datetime as _dt
import logging
import platform
import statistics
import time

import torch
from tqdm.auto import tqdm

from . import backends as _backends
from .io import write_json
from .models import sync

log = logging.getLogger(__name__)

SCHEMA = "prunebench-bench-cell/1"
FIELDS = (
    "schema", "model", "method", "backend", "in_len", "out_len", "batch", "params", "num_layers",
    "weights", "dtype", "attn_implementation", "device", "device_name", "gpu_uuid", "status", "error",
    "latencies_s", "latency_s", "latency_p10_s", "latency_p90_s", "throughput_tok_s",
    "peak_mem_gib", "load_s", "compile_s", "backend_info", "hbm_bandwidth_gbs", "roofline_s", "roofline_frac",
    "warmup_runs", "warmup_new_tokens", "timed_runs", "versions", "finished_at",
)

BACKENDS = tuple(_backends.BACKENDS)  # ("hf-eager", "compiled", "cuda-graph")


def quantile(values: list[float], q: float) -> float:
    """Linear-interpolated quantile (numpy's default method), ``q`` in [0, 1]."""
    xs = sorted(values)
    if not xs:
        raise ValueError("no values")
    pos = (len(xs) - 1) * q
    lo = int(pos)
    hi = min(lo + 1, len(xs) - 1)
    return xs[lo] + (xs[hi] - xs[lo]) * (pos - lo)


def summarise(latencies: list[float], batch: int, out_len: int) -> dict:
    med = statistics.median(latencies)
    return {
        "latency_s": med,
        "latency_p10_s": quantile(latencies, 0.10),
        "latency_p90_s": quantile(latencies, 0.90),
        "throughput_tok_s": batch * out_len / med,
    }


def versions() -> dict:
    import transformers

    v = {"python": platform.python_version(), "torch": torch.__version__,
         "transformers": transformers.__version__}
    if torch.cuda.is_available():
        v["cuda"] = torch.version.cuda
    return v


def is_oom(exc: BaseException) -> bool:
    if isinstance(exc, torch.OutOfMemoryError):
        return True
    return isinstance(exc, RuntimeError) and "out of memory" in str(exc).lower()


def check_fits(model, batch: int, in_len: int, out_len: int, device) -> None:
    """Raise ``torch.OutOfMemoryError`` at once where the cell's KV cache alone exceeds the
    device memory left after the weights: such a generation must run out of memory, and HF's
    growing cache would find out only late in it (a minute of GPU time for a large cell).
    The cell is then recorded as ``oom`` like one that failed while running; the error says
    it was predicted.  Nothing is predicted for the CPU, nor where the bound holds."""
    free = _backends.free_device_memory(device)
    need = _backends.kv_cache_bytes(model, batch, in_len, out_len)
    if free is not None and need > free:
        raise torch.OutOfMemoryError(
            f"out of memory (predicted, not run): the KV cache of {batch} x {in_len + out_len - 1} "
            f"positions alone needs {need / 2**30:.1f} GiB, {free / 2**30:.1f} GiB free after the weights")


def generate_once(model, prompt: torch.Tensor, new_tokens: int) -> torch.Tensor:
    return model.generate(
        input_ids=prompt,
        attention_mask=torch.ones_like(prompt),
        do_sample=False,
        min_new_tokens=new_tokens,
        max_new_tokens=new_tokens,
        pad_token_id=0,
        use_cache=True,
    )


def time_generation(model, prompt: torch.Tensor, out_len: int, *, warmup_runs: int,
                    warmup_new_tokens: int | None, timed_runs: int, device: torch.device,
                    backend=None) -> list[float]:
    """Latencies of ``timed_runs`` calls; ``backend`` (prepared) or, if None, ``model.generate``."""
    def gen(p, n):
        return backend.generate(p, n) if backend is not None else generate_once(model, p, n)

    warmup_new_tokens = warmup_new_tokens or out_len
    with torch.inference_mode():
        for _ in tqdm(range(warmup_runs), desc="warm-up", mininterval=1):
            gen(prompt, warmup_new_tokens)
        sync(device)
        latencies = []
        for _ in tqdm(range(timed_runs), desc="timed runs", mininterval=1):
            sync(device)
            t0 = time.perf_counter()
            out = gen(prompt, out_len)
            sync(device)
            latencies.append(time.perf_counter() - t0)
            got = out.shape[1] - prompt.shape[1]
            if got != out_len:
                raise RuntimeError(f"generate produced {got} tokens, expected exactly {out_len}")
    return latencies


def make_prompt(vocab_size: int, in_len: int, batch: int, seed: int, device) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    low = min(100, vocab_size // 2)  # stay clear of special tokens
    ids = torch.randint(low, vocab_size, (1, in_len), generator=g)
    return ids.expand(batch, in_len).contiguous().to(device)


def run(model_dir: str, out_path: str, *, model_name: str, method: str, backend: str,
        in_len: int, out_len: int, batch: int, dtype: str, device: str, attn_implementation: str,
        warmup_runs: int, warmup_new_tokens: int | None, timed_runs: int, seed: int = 0) -> dict:
    from .models import load_model, read_manifest, resolve_device, weights_kind

    if backend not in BACKENDS:
        raise ValueError(f"benchmark.backends: unknown backend {backend!r}; expected one of {BACKENDS}")
    dev = resolve_device(device)
    man = read_manifest(model_dir)
    rec = {k: None for k in FIELDS}
    rec.update(schema=SCHEMA, model=model_name, method=method, backend=backend, in_len=in_len,
               out_len=out_len, batch=batch, params=man["params"], num_layers=man["num_layers"],
               weights=weights_kind(model_dir), dtype=dtype, attn_implementation=attn_implementation,
               device=dev.type, device_name=torch.cuda.get_device_name(dev) if dev.type == "cuda" else platform.processor() or "cpu",
               warmup_runs=warmup_runs, warmup_new_tokens=warmup_new_tokens or out_len, timed_runs=timed_runs,
               versions=versions())
    if dev.type == "cuda":  # which physical card (several GPUs of one machine run cells side by side)
        rec["gpu_uuid"] = str(torch.cuda.get_device_properties(dev).uuid)
    model = be = None
    t0 = time.perf_counter()
    bandwidth = _backends.measure_copy_bandwidth(dev)  # before the model: needs 2 GiB free
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
        rec["roofline_s"] = _backends.roofline_seconds(_backends.weight_bytes(model), out_len, bandwidth)
        check_fits(model, batch, in_len, out_len, dev)
        be = _backends.make_backend(backend)
        log.info("model loaded in %.1f s", rec["load_s"])
        info = be.prepare(model, batch, in_len, out_len)
        rec["compile_s"] = info.pop("compile_s")
        log.info("backend %s prepared in %.1f s", backend, rec["compile_s"])
        rec["backend_info"] = info  # what the backend did: compiled, cuda_graphs, inductor options, ...
        prompt = make_prompt(model.config.vocab_size, in_len, batch, seed, dev)
        lat = time_generation(model, prompt, out_len, warmup_runs=warmup_runs,
                              warmup_new_tokens=warmup_new_tokens, timed_runs=timed_runs, device=dev,
                              backend=be)
        rec.update(status="ok", latencies_s=lat, **summarise(lat, batch, out_len))
        rec["roofline_frac"] = rec["roofline_s"] / rec["latency_s"]
    except Exception as exc:  # noqa: BLE001
        if not is_oom(exc):
            raise
        rec.update(status="oom", error=str(exc).splitlines()[0][:300])
    finally:
        if dev.type == "cuda":
            rec["peak_mem_gib"] = torch.cuda.max_memory_allocated(dev) / 2**30
        del model, be
    rec["finished_at"] = _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")
    write_json(out_path, rec)
    return rec
