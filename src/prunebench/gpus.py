"""One GPU per job on a machine with several: claim a free GPU before CUDA starts.

Snakemake's ``--resources gpu=N`` lets N GPU jobs run at once on one machine, but does not
say which GPU each may use; without help they would all land on ``cuda:0``.  Every GPU
stage (``prune``, ``perplexity``, ``benchmark``) therefore calls :func:`claim`, through
``devices.resolve_device``, before anything touches CUDA: it takes an exclusive ``flock`` on
one lock file per visible GPU, first free one wins, and narrows ``CUDA_VISIBLE_DEVICES`` to
that GPU, so the rest of the process sees exactly one device, ``cuda`` = ``cuda:0``.

- The lock is held by the open file until the process exits: a job that dies (killed,
  out of memory, crashed) frees its GPU at once, no stale lock is left.
- Where only one GPU is visible (a one-GPU machine, or a Slurm job that was handed one GPU
  through ``CUDA_VISIBLE_DEVICES``) nothing is claimed.
- When every GPU is claimed (more jobs allowed than GPUs), the job waits for one to free.
- Lock files live in ``$PRUNEBENCH_GPU_LOCKS`` (default: the temporary folder) under
  ``prunebench-gpus/``, named after the ``CUDA_VISIBLE_DEVICES`` entry (index or UUID).
- ``PRUNEBENCH_GPU_CLAIM=0`` turns it off; so does an explicit device such as ``cuda:1``.
"""
from __future__ import annotations

import fcntl
import logging
import os
import tempfile
import time
from pathlib import Path

log = logging.getLogger("prunebench.gpus")

_HELD: list[int] = []  # open lock files of this process (closing one frees its GPU)
CLAIMED: str | None = None  # the CUDA_VISIBLE_DEVICES entry this process claimed


def lock_dir() -> Path:
    return Path(os.environ.get("PRUNEBENCH_GPU_LOCKS") or tempfile.gettempdir()) / "prunebench-gpus"


def wants_claim(device: str | None) -> bool:
    """Whether a stage run with ``device`` should claim a GPU: ``cuda`` or ``auto``, not an
    explicit ``cuda:N``, not ``cpu``, and not turned off by ``PRUNEBENCH_GPU_CLAIM=0``."""
    if os.environ.get("PRUNEBENCH_GPU_CLAIM", "1") == "0":
        return False
    return device in ("cuda", "auto")


def count_without_torch() -> int:
    """NVIDIA GPUs this process may use, without importing torch (for the Snakefile, which
    must start fast): the driver's ``/proc/driver/nvidia/gpus`` entries, narrowed by
    ``CUDA_VISIBLE_DEVICES`` where it is set; 0 without the NVIDIA driver."""
    root = Path("/proc/driver/nvidia/gpus")
    n = len(list(root.iterdir())) if root.is_dir() else 0
    env = os.environ.get("CUDA_VISIBLE_DEVICES")
    if env is not None:
        n = min(n, len([t for t in env.split(",") if t.strip() and t.strip() != "-1"]))
    return n


def visible_tokens() -> list[str]:
    """The entries of ``CUDA_VISIBLE_DEVICES`` torch would use (indices when unset).

    Uses ``torch.cuda.device_count()``, which asks NVML and does not start CUDA."""
    import torch

    n = torch.cuda.device_count()
    env = os.environ.get("CUDA_VISIBLE_DEVICES")
    if env is None:
        return [str(i) for i in range(n)]
    return [t.strip() for t in env.split(",") if t.strip()][:n]


def claim(wait_s: float | None = None, poll_s: float = 2.0) -> str | None:
    """Claim a free GPU for this process; returns its ``CUDA_VISIBLE_DEVICES`` entry.

    Returns the held entry again when this process already claimed one, ``None`` when there
    is nothing to choose (one GPU or none).  Raises :class:`RuntimeError` when CUDA already
    started in this process (narrowing the visible devices would have no effect, and jobs
    would silently share a GPU).  Waits for a GPU to free up, at most ``wait_s`` seconds
    (None: no limit), then raises :class:`TimeoutError`.
    """
    global CLAIMED
    if CLAIMED is not None:  # already holds one
        return CLAIMED
    tokens = visible_tokens()
    if len(tokens) <= 1:
        return None
    import torch

    if torch.cuda.is_initialized():  # too late to narrow the devices: jobs would share cuda:0
        raise RuntimeError(f"CUDA was started before a GPU was claimed ({len(tokens)} visible); "
                           "claim() must run first (or set PRUNEBENCH_GPU_CLAIM=0 to use the default GPU)")
    folder = lock_dir()
    folder.mkdir(parents=True, exist_ok=True)
    t0, told = time.monotonic(), False
    while True:
        for token in tokens:
            fd = os.open(folder / f"{token.replace('/', '_')}.lock", os.O_CREAT | os.O_RDWR, 0o666)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                os.close(fd)
                continue
            os.ftruncate(fd, 0)
            os.write(fd, f"{os.getpid()}\n".encode())
            _HELD.append(fd)
            CLAIMED = os.environ["CUDA_VISIBLE_DEVICES"] = token
            log.info("claimed GPU %s of %s (lock %s)", token, ",".join(tokens), folder)
            return token
        if wait_s is not None and time.monotonic() - t0 >= wait_s:
            raise TimeoutError(f"all {len(tokens)} GPUs ({','.join(tokens)}) are claimed by other "
                               f"prunebench jobs (locks in {folder})")
        if not told:
            log.info("all %d GPUs are claimed by other prunebench jobs; waiting for one", len(tokens))
            told = True
        time.sleep(poll_s)


def verify() -> None:
    """After CUDA started: a process that claimed a GPU must see exactly one device (CUDA
    started early, e.g. by a library at import, would have ignored the narrowing)."""
    import torch

    if CLAIMED is not None and torch.cuda.device_count() != 1:
        raise RuntimeError(f"claimed GPU {CLAIMED} but CUDA sees {torch.cuda.device_count()} devices: "
                           "it was started before the claim")


def release() -> None:
    """Free every GPU this process claimed (exit does the same)."""
    global CLAIMED
    while _HELD:
        os.close(_HELD.pop())
    CLAIMED = None
