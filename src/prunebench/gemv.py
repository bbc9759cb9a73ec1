"""A Triton GEMV for batch-1 decode steps, with its configuration chosen per weight shape by timing.

At batch 1 a decode step multiplies one activation row by every weight matrix: each
product reads its matrix once and does 2 flops per weight, so it can only be as fast as
the memory.  cuBLAS picks its kernels by heuristics, which fit some shapes (above all the
irregular widths width pruning leaves) poorly; this kernel is tuned per shape instead
(measurements: docs/reproduction.md): :mod:`prunebench.gemv_plan` chooses the
configuration per shape by timing.  This module:

``gemv(x, w, b, cfg)``
    ``y = x @ w.T + b`` for ``x`` of one row (shape ``[..., K]`` with one row in all),
    ``w`` ``[N, K]`` with contiguous rows, fp32 accumulation, ``y`` in ``x``'s dtype.  A
    ``torch.library`` custom op (``prunebench::gemv``): ``torch.compile`` calls it as an
    opaque kernel and CUDA graphs capture it.  Each program computes ``block_n`` outputs,
    streaming ``block_k`` columns of its rows per loop step (no split-K, no second kernel).
``adopt(device, dtype, choice)`` and ``gemv_planned(x, w, b)``
    the same product with the kernel looked up by ``w``'s shape when the op runs, not when it
    is traced: one compiled graph with symbolic widths (layers of many widths) still runs each
    width on its own chosen kernel.

With ``TRITON_INTERPRET=1`` the kernel runs on CPU tensors (Triton's interpreter; the
tests use it) and :func:`prunebench.gemv_plan.plan` skips timing: every shape gets
:data:`CPU_CONFIG`.

Microbenchmark (GPU): :mod:`prunebench.tools.gemv_bench`.
"""
from __future__ import annotations

import os
from typing import NamedTuple

import torch
import torch.nn.functional as F


class Config(NamedTuple):
    block_n: int
    block_k: int
    num_warps: int
    num_stages: int


#: candidate configurations: rows per program x columns per loop step, warps, pipeline stages
CONFIGS: tuple[Config, ...] = tuple(
    Config(bn, bk, w, s)
    for bn, bk in ((1, 2048), (2, 1024), (2, 2048), (4, 512), (4, 1024), (4, 2048), (8, 256), (8, 512), (8, 1024),
                   (16, 256), (16, 512), (32, 128))
    for w in (4, 8)
    for s in (1, 3)
)
CPU_CONFIG = Config(32, 64, 1, 1)


def interpreting() -> bool:
    return os.environ.get("TRITON_INTERPRET", "0") == "1"


def available(device: torch.device | str) -> tuple[bool, str]:
    """Whether the Triton GEMV can run on ``device`` (and why not)."""
    dev = torch.device(device)
    try:
        import triton  # noqa: F401
    except ImportError:
        return False, "triton is not installed"
    if dev.type == "cuda" or (dev.type == "cpu" and interpreting()):
        return True, ""
    return False, f"the Triton GEMV needs a CUDA device or TRITON_INTERPRET=1 on the CPU (got {dev})"


_KERNELS: dict[bool, object] = {}


def _kernel():
    """The Triton kernel, defined on first use (``triton`` is optional, and Triton chooses
    the interpreter when ``triton.jit`` runs: one kernel object per mode)."""
    mode = interpreting()
    if mode not in _KERNELS:
        import triton
        import triton.language as tl

        @triton.jit
        def gemv_kernel(x_ptr, w_ptr, b_ptr, y_ptr, N, K, stride_wn,
                        HAS_BIAS: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr):
            rows = tl.program_id(0) * BLOCK_N + tl.arange(0, BLOCK_N)
            cols = tl.arange(0, BLOCK_K)
            row_ok = rows < N
            w_rows = w_ptr + rows[:, None].to(tl.int64) * stride_wn
            acc = tl.zeros((BLOCK_N, BLOCK_K), dtype=tl.float32)
            for k in range(0, K, BLOCK_K):
                kk = k + cols
                k_ok = kk < K
                x = tl.load(x_ptr + kk, mask=k_ok, other=0.0).to(tl.float32)
                w = tl.load(w_rows + kk[None, :], mask=row_ok[:, None] & k_ok[None, :], other=0.0,
                            eviction_policy="evict_first")
                acc += w.to(tl.float32) * x[None, :]
            y = tl.sum(acc, axis=1)
            if HAS_BIAS:
                y += tl.load(b_ptr + rows, mask=row_ok, other=0.0).to(tl.float32)
            tl.store(y_ptr + rows, y.to(y_ptr.dtype.element_ty), mask=row_ok)

        _KERNELS[mode] = gemv_kernel
    return _KERNELS[mode]


def _check(x: torch.Tensor, w: torch.Tensor, b: torch.Tensor | None) -> None:
    if x.numel() != x.shape[-1]:
        raise ValueError(f"gemv: x must hold one row, got shape {tuple(x.shape)}")
    if w.dim() != 2 or w.shape[1] != x.shape[-1] or w.stride(1) != 1:
        raise ValueError(f"gemv: w must be [N, K={x.shape[-1]}] with contiguous rows, got {tuple(w.shape)} "
                         f"strides {w.stride()}")
    if b is not None and (b.shape != (w.shape[0],) or not b.is_contiguous()):
        raise ValueError(f"gemv: bias must be contiguous [N={w.shape[0]}], got {tuple(b.shape)}")


@torch.library.custom_op("prunebench::gemv", mutates_args=())
def _gemv_op(x: torch.Tensor, w: torch.Tensor, b: torch.Tensor | None,
             block_n: int, block_k: int, num_warps: int, num_stages: int) -> torch.Tensor:
    _check(x, w, b)
    N, K = w.shape
    xv = x.reshape(K).contiguous()
    y = torch.empty(N, dtype=x.dtype, device=x.device)
    grid = (-(-N // block_n),)
    _kernel()[grid](xv, w, w if b is None else b, y, N, K, w.stride(0),
                    HAS_BIAS=b is not None, BLOCK_N=block_n, BLOCK_K=block_k,
                    num_warps=num_warps, num_stages=num_stages)
    return y.view(*x.shape[:-1], N)


@_gemv_op.register_fake
def _(x, w, b, block_n, block_k, num_warps, num_stages):
    return x.new_empty(*x.shape[:-1], w.shape[0])


def gemv(x: torch.Tensor, w: torch.Tensor, b: torch.Tensor | None, cfg: Config) -> torch.Tensor:
    """``F.linear(x, w, b)`` for a single row ``x`` with the Triton kernel and configuration ``cfg``."""
    return _gemv_op(x, w, b, cfg.block_n, cfg.block_k, cfg.num_warps, cfg.num_stages)


#: the choices :func:`gemv_planned` follows, per (device, dtype, N, K): a configuration, or None for cuBLAS
_ADOPTED: dict[tuple[str, torch.dtype, int, int], Config | None] = {}


def adopt(device: torch.device | str, dtype: torch.dtype, choice: dict[tuple[int, int], Config | None]) -> None:
    """Make ``choice`` (what :func:`plan` chose for ``device`` and activations of ``dtype``) the one
    :func:`gemv_planned` follows.  A choice depends only on (device, dtype, shape), so the plans
    of several models on one device merge without conflict."""
    dev = str(torch.device(device))
    for (n, k), cfg in choice.items():
        _ADOPTED[(dev, dtype, int(n), int(k))] = cfg


@torch.library.custom_op("prunebench::gemv_planned", mutates_args=())
def _gemv_planned_op(x: torch.Tensor, w: torch.Tensor, b: torch.Tensor | None) -> torch.Tensor:
    cfg = _ADOPTED.get((str(x.device), x.dtype, int(w.shape[0]), int(w.shape[1])))
    if cfg is None:
        return F.linear(x, w, b)
    return _gemv_op(x, w, b, cfg.block_n, cfg.block_k, cfg.num_warps, cfg.num_stages)


@_gemv_planned_op.register_fake
def _(x, w, b):
    return x.new_empty(*x.shape[:-1], w.shape[0])


def gemv_planned(x: torch.Tensor, w: torch.Tensor, b: torch.Tensor | None) -> torch.Tensor:
    """``F.linear(x, w, b)`` for a single row ``x``, the kernel chosen when the op runs: the adopted
    configuration for ``w``'s shape (:func:`adopt`), cuBLAS where none was adopted or cuBLAS won.

    The choice is made at run time, inside an op ``torch.compile`` treats as opaque, so a graph
    compiled with symbolic weight shapes serves every shape with its own tuned kernel (a CUDA
    graph captures whichever kernel the capture ran)."""
    return _gemv_planned_op(x, w, b)
