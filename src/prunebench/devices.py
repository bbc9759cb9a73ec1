"""Device helpers, in one place: which device and dtype a stage runs on, waiting for it, what it can do.

``resolve_device``        ``auto``/``cpu``/``cuda`` -> a ``torch.device`` (claims a GPU first on a
                          machine of several, :mod:`prunebench.gpus`)
``DTYPES``, ``resolve_dtype``  the dtype names a config may give -> a ``torch.dtype``
``sync``                  wait for queued work (CUDA), for timing
``measure_copy_bandwidth`` the device's copy bandwidth (the roofline's denominator)
``free_device_memory``    free bytes after this process's cache is returned (CUDA)
``kernel_time``           GPU kernel time of one call against its wall time (CUDA, profiler)
``host_load``             what else the host is doing (load average, other running processes)
``process_age``           seconds since this process started

Importing this module does not import torch (each function does): the command line reads
:func:`process_age` in every stage, light ones too.
"""
from __future__ import annotations

import os
import time

from . import gpus

#: the dtype names a config may give (``float32``, ...), each the name of a ``torch`` dtype
DTYPES = ("float32", "float16", "bfloat16")


def resolve_dtype(name: str) -> torch.dtype:
    """A dtype name of :data:`DTYPES` -> the ``torch.dtype``."""
    import torch

    if name not in DTYPES:
        raise ValueError(f"unknown dtype {name!r}; expected one of {sorted(DTYPES)}")
    return getattr(torch, name)


def resolve_device(name: str) -> torch.device:
    """``auto`` -> cuda when available, else cpu. ``cuda`` without a GPU is an error.

    On a machine of several GPUs, ``cuda`` and ``auto`` first claim a free GPU for this
    process (:mod:`prunebench.gpus`), before anything starts CUDA: every GPU stage calls
    this before its first use of the device, and a stage that needs no device (dense
    pruning, perplexity of random weights) never claims one."""
    import torch

    if gpus.wants_claim(name):
        gpus.claim()
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise RuntimeError(
            f"device {name!r} was asked for (config key benchmark.device / pruning.device / perplexity.device) "
            "but torch sees no CUDA device on this machine"
        )
    if name.startswith("cuda"):
        gpus.verify()
    return torch.device(name)


def sync(device: torch.device | str) -> None:
    """Wait for the device's queued work (CUDA); a no-op elsewhere.  For timing."""
    import torch

    if torch.device(device).type == "cuda":
        torch.cuda.synchronize(device)


def measure_copy_bandwidth(device, nbytes: int | None = None, iters: int | None = None, trials: int = 5) -> float:
    """Memory bandwidth in bytes/s: (bytes read + bytes written) / time of a large copy, best of ``trials``.

    Default: 10 copies of 1 GiB on CUDA (far larger than L2; ~0.1 s in all), 3 of 64 MiB on CPU.
    Needs 2 x ``nbytes`` free memory; measure before loading a model.
    """
    import torch

    dev = torch.device(device)
    if dev.type == "cuda" and dev.index is None:
        dev = torch.device("cuda", torch.cuda.current_device())
    nbytes = nbytes or (1 << 30 if dev.type == "cuda" else 1 << 26)
    iters = iters or (10 if dev.type == "cuda" else 3)
    src = torch.empty(nbytes, dtype=torch.uint8, device=dev).fill_(1)
    dst = torch.empty_like(src)
    best = 0.0
    for _ in range(trials + 1):  # the first trial is a warm-up
        sync(dev)
        if dev.type == "cuda":
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record()
            for _ in range(iters):
                dst.copy_(src)
            end.record()
            end.synchronize()
            seconds = start.elapsed_time(end) / 1e3
        else:
            t0 = time.perf_counter()
            for _ in range(iters):
                dst.copy_(src)
            seconds = time.perf_counter() - t0
        best = max(best, 2 * nbytes * iters / seconds)
    del src, dst
    if dev.type == "cuda":
        torch.cuda.empty_cache()
    return best


def free_device_memory(device) -> int | None:
    """Free bytes on a CUDA device (this process's cached, unused blocks returned first);
    ``None`` for the CPU, which has no such bound."""
    import torch

    dev = torch.device(device)
    if dev.type != "cuda":
        return None
    torch.cuda.empty_cache()
    return torch.cuda.mem_get_info(dev)[0]


def kernel_time(fn, device, top: int = 0) -> dict:
    """Run ``fn()`` once under ``torch.profiler``: wall time, summed GPU kernel time, kernel
    count (and the ``top`` kernels by time).  ``kernel_s / wall_s`` near 1 means the GPU never
    waited for the host; far below 1, the call measures the framework (Python, launches), not
    the model.  CUDA only: ``None`` elsewhere."""
    import torch

    dev = torch.device(device)
    if dev.type != "cuda":
        return None
    from torch.profiler import ProfilerActivity, profile

    sync(dev)
    with profile(activities=[ProfilerActivity.CUDA]) as prof:
        t0 = time.perf_counter()
        fn()
        sync(dev)
        wall = time.perf_counter() - t0
    rows = []
    for e in prof.key_averages():
        us = getattr(e, "self_device_time_total", None)
        if us is None:
            us = getattr(e, "self_cuda_time_total", 0)
        if us and getattr(e, "device_type", None) is not None and "CUDA" in str(e.device_type):
            rows.append((us / 1e6, e.count, e.key))
    rows.sort(reverse=True)
    out = {"wall_s": wall, "kernel_s": sum(r[0] for r in rows), "kernels": sum(r[1] for r in rows)}
    if top:
        out["top"] = [{"s": round(t, 5), "count": c, "name": k[:90]} for t, c, k in rows[:top]]
    return out


def process_age() -> float | None:
    """Seconds since this process started (Linux ``/proc``), ``None`` where unknown: the
    interpreter's start and imports, a per-job cost worth knowing on a GPU."""
    try:
        with open("/proc/self/stat") as f:
            start_ticks = int(f.read().rsplit(")", 1)[1].split()[19])
        with open("/proc/uptime") as f:
            uptime = float(f.read().split()[0])
        return uptime - start_ticks / os.sysconf("SC_CLK_TCK")
    except (OSError, ValueError, IndexError):
        return None


def _running_processes(exclude: int) -> int:
    """Processes of this host in state R (running), other than ``exclude`` (Linux ``/proc``)."""
    n = 0
    try:
        names = os.listdir("/proc")
    except OSError:
        return -1
    for name in names:
        if not name.isdigit() or int(name) == exclude:
            continue
        try:
            with open(f"/proc/{name}/stat") as f:
                state = f.read().rsplit(")", 1)[1].split()[0]
        except (OSError, IndexError):
            continue
        n += state == "R"
    return n


def host_load() -> dict:
    """The 1-minute load average, the CPU count this process may use and the number of other
    processes running right now: a cell records it before and after timing, so a cell that
    shared its host shows it in the data."""
    try:
        load1 = os.getloadavg()[0]
    except OSError:
        load1 = None
    try:
        cpus = len(os.sched_getaffinity(0))
    except AttributeError:
        cpus = os.cpu_count()
    return {"load1": load1, "cpus": cpus, "other_running": _running_processes(os.getpid())}
