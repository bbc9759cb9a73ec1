"""Batch-1 GEMV microbenchmark: cuBLAS against the Triton kernel, per weight shape (GPU).

    python -m prunebench.tools.gemv_bench 12288x4096 4096x4096 22016x4096 4096x11008 32000x4096

prints, per shape, cuBLAS's and the best Triton config's time and bandwidth (bytes of the
matrix read per second) against the measured copy bandwidth (``--inductor``: also
``torch.compile(F.linear)``, which inductor turns into its own reduction kernel).
"""
from __future__ import annotations

import argparse
import json

import torch
import torch.nn.functional as F

from ..backends import CompiledBackend, dynamo
from ..devices import measure_copy_bandwidth
from ..gemv_plan import plan


def _shape(text: str) -> tuple[int, int]:
    try:
        n, k = (int(v) for v in text.lower().split("x"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"shape must be NxK (rows x columns), got {text!r}") from None
    return n, k


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m prunebench.tools.gemv_bench", description=__doc__.split("\n\n")[0])
    ap.add_argument("shapes", nargs="+", type=_shape, help="weight shapes NxK, e.g. 4096x11008")
    ap.add_argument("--dtype", default="float16", choices=["float16", "bfloat16", "float32"])
    ap.add_argument("--copies", type=int, default=4, help="matrices per shape (distinct buffers)")
    ap.add_argument("--reps", type=int, default=10)
    ap.add_argument("--inductor", action="store_true",
                    help="also time torch.compile(F.linear) with the compiled backend's inductor defaults "
                         "(coordinate-descent tuning: inductor writes its own GEMV)")
    ap.add_argument("--compile-workers", type=int, default=None,
                    help="threads compiling the candidates before timing (default: one per CPU; 1: each "
                         "compiles when first timed)")
    ap.add_argument("--no-shortlist", action="store_true",
                    help="time every candidate for every shape (default: a shape near one timed fully "
                         "times that one's fastest few and cuBLAS)")
    a = ap.parse_args(argv)
    if not torch.cuda.is_available():
        ap.error("needs a CUDA device")
    dev = torch.device("cuda")
    dtype = getattr(torch, a.dtype)
    bw = measure_copy_bandwidth(dev)
    ws = [torch.randn(n, k, dtype=dtype, device=dev) for n, k in a.shapes for _ in range(a.copies)]
    extra = {}
    if a.inductor:
        def compiled_linear(x, w):
            with dynamo.inductor_config(True, CompiledBackend.DEFAULT_INDUCTOR):
                return _compiled(x, w)

        _compiled = torch.compile(lambda x, w: F.linear(x, w), dynamic=False, fullgraph=True)
        torch._dynamo.config.cache_size_limit = max(torch._dynamo.config.cache_size_limit, 4 * len(a.shapes))
        extra["inductor"] = compiled_linear
    choice, report = plan(ws, dtype, reps=a.reps, extra=extra, shortlist=not a.no_shortlist,
                          compile_workers=a.compile_workers)
    for r in report["shapes"]:
        nbytes = r["n"] * r["k"] * ws[0].element_size()
        out = {"shape": f"{r['n']}x{r['k']}", "bytes": nbytes, "config": r["config"], "candidates": r["candidates"]}
        for name in ["cublas", "chosen", *extra]:
            out[f"{name}_us"] = round(r[f"{name}_s"] * 1e6, 2)
            out[f"{name}_frac_of_copy_bw"] = round(nbytes / r[f"{name}_s"] / bw, 3)
        print(json.dumps(out))
    print(json.dumps({"copy_bandwidth_gbs": bw / 1e9, "select_s": report["select_s"], "compile_s": report["compile_s"],
                      "shortlisted": report["shortlisted"], "step_chosen_us": report["step_chosen_s"] * 1e6,
                      "step_cublas_us": report["step_cublas_s"] * 1e6}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
