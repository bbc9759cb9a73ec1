"""GPU self-check and timing of a backend against HF generate (a command line; nothing imports it).

fp16 + CUDA graphs + compiled kernels may round differently from eager: a first difference
where the two candidate tokens' logits are equal up to rounding is reported as a ROUNDING
TIE, exit 0; a real difference exits 1::

    python -m prunebench.tools.selfcheck results/<experiment>/models/llama-7b/dense \
        --dtype float16 --in-len 12 --out-len 128 --batch 1 64 --time 3
    python -m prunebench.tools.selfcheck --config config.yaml --model llama-7b ...   # random weights

``--time N`` also times hf-eager and the backend (median of N) and prints latency,
throughput, roofline fraction, compile_s and the speed-up, one JSON line per batch size;
``--profile`` adds one profiled call (kernel time against wall time, top kernels).
"""
from __future__ import annotations

import argparse
import sys
import time

import torch

from ..backends import Backend, CompiledBackend, make_backend
from ..backends.hf_eager import generate_once
from ..benchmark import make_prompt
from ..devices import kernel_time, measure_copy_bandwidth, resolve_device, resolve_dtype, sync
from ..models import load_model, load_source
from ..roofline import roofline_seconds, weight_bytes


def check_equivalence(model, prompt: torch.Tensor, n: int, backend: Backend | None = None) -> tuple[bool, dict]:
    """Greedy tokens of ``backend`` (default: a fresh ``compiled``) vs ``model.generate``.

    Returns ``(equal, info)``: ``equal`` is exact token equality; ``info`` holds the
    backend's ``prepare`` info, ``agree`` (fraction of equal new tokens) and
    ``first_mismatch``: ``None`` or ``{"row", "step", "eager", "backend", "margin",
    "logit_scale", "tie"}`` where ``margin`` = logit of the eager token minus logit of the
    backend's token at that step (a full forward of the eager sequence) and ``tie`` says
    ``|margin| <= 8 eps(dtype) x logit_scale``: the two tokens were equal up to rounding,
    so the divergence is a rounding tie (expected in fp16/bf16), not a bug.
    """
    backend = backend or CompiledBackend()
    batch, in_len = prompt.shape
    info = dict(backend.prepare(model, batch, in_len, n))
    with torch.inference_mode():
        ref = generate_once(model, prompt, n)
        out = backend.generate(prompt, n)
        if out.shape != ref.shape:
            raise AssertionError(f"shapes differ: backend {tuple(out.shape)} vs eager {tuple(ref.shape)}")
        new_ref, new_out = ref[:, in_len:], out[:, in_len:]
        diff = (new_ref != new_out)
        info["agree"] = 1.0 - diff.float().mean().item()
        info["first_mismatch"] = None
        if diff.any():
            steps = torch.where(diff.any(0))[0]
            step = int(steps[0])
            row = int(torch.where(diff[:, step])[0][0])
            seq = ref[row: row + 1, : in_len + step]
            logits = model(input_ids=seq, use_cache=False).logits[0, -1].float()
            a, b = int(new_ref[row, step]), int(new_out[row, step])
            margin, scale = float(logits[a] - logits[b]), float(logits.abs().max())
            tol = 8 * torch.finfo(next(model.parameters()).dtype).eps * max(scale, 1.0)
            info["first_mismatch"] = {"row": row, "step": step, "eager": a, "backend": b, "margin": margin,
                                      "logit_scale": scale, "tie": abs(margin) <= tol}
    return not bool(diff.any()), info


def time_backend(backend: Backend, prompt: torch.Tensor, out_len: int, runs: int = 3) -> list[float]:
    """Latencies (s) of ``runs`` calls after one untimed full-length call (backend prepared)."""
    dev = prompt.device
    backend.generate(prompt, out_len)
    lat = []
    for _ in range(runs):
        sync(dev)
        t0 = time.perf_counter()
        out = backend.generate(prompt, out_len)
        sync(dev)
        lat.append(time.perf_counter() - t0)
        assert out.shape == (prompt.shape[0], prompt.shape[1] + out_len)
    return lat


def profile_generate(backend: Backend, prompt: torch.Tensor, out_len: int, top: int = 12) -> dict:
    """One ``generate`` call (after an untimed one) under the profiler: wall time, summed GPU
    kernel time, kernel count and the ``top`` kernels (CUDA only)."""
    backend.generate(prompt, out_len)
    return kernel_time(lambda: backend.generate(prompt, out_len), prompt.device, top=top)


def _parse_option(text: str) -> tuple[str, object]:
    import json

    key, sep, value = text.partition("=")
    if not sep or not key:
        raise argparse.ArgumentTypeError(f"--option wants KEY=VALUE, got {text!r}")
    try:
        return key, json.loads(value)
    except json.JSONDecodeError:
        return key, value


def _cli_model(a, dev):
    if a.model_dir:
        return load_model(a.model_dir, dtype=a.dtype, device=dev, attn_implementation=a.attn)
    import yaml

    spec = yaml.safe_load(open(a.config))["models"][a.model]
    model, _ = load_source({**spec, "weights": "random", "seed": 0}, resolve_dtype(a.dtype), dev,
                           attn_implementation=a.attn)
    return model


def main(argv: list[str] | None = None) -> int:
    import json
    import statistics

    ap = argparse.ArgumentParser(
        prog="python -m prunebench.tools.selfcheck",
        description="Check that a backend's greedy tokens equal model.generate's, optionally time both "
                    "against the weight-streaming roofline.")
    ap.add_argument("model_dir", nargs="?", help="a model folder written by the pipeline")
    ap.add_argument("--config", help="or: config YAML ...")
    ap.add_argument("--model", help="... and a model name in it: random weights of models.<name>.architecture")
    ap.add_argument("--backend", default="compiled")
    ap.add_argument("--dtype", default="float16")
    ap.add_argument("--device", default="auto")
    ap.add_argument("--attn", default="sdpa", help="attn_implementation: sdpa (transformers' default) | eager")
    ap.add_argument("--in-len", type=int, default=12)
    ap.add_argument("--out-len", type=int, default=128)
    ap.add_argument("--batch", type=int, nargs="+", default=[1])
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--time", type=int, default=0, metavar="RUNS",
                    help="also time hf-eager and the backend (RUNS timed calls each, median)")
    ap.add_argument("--no-check", action="store_true", help="skip the token check")
    ap.add_argument("--skip-eager", action="store_true", help="with --time: time only the backend")
    ap.add_argument("--option", type=_parse_option, action="append", default=[], metavar="KEY=VALUE",
                    help="backend option (VALUE is JSON if it parses), e.g. gemv=reduce "
                         "inductor='{\"coordinate_descent_tuning\": true}'; repeatable")
    ap.add_argument("--profile", action="store_true",
                    help="also profile one call of the backend (CUDA): kernel time vs wall time, top kernels")
    a = ap.parse_args(argv)
    if bool(a.model_dir) == bool(a.config and a.model):
        ap.error("give a model folder, or --config and --model")
    dev = resolve_device(a.device)
    bw = measure_copy_bandwidth(dev) if a.time else None
    model = _cli_model(a, dev)
    name = a.model_dir or a.model
    failed = False
    for batch in a.batch:
        prompt = make_prompt(model.config.vocab_size, a.in_len, batch, a.seed, dev)
        tag = f"{name} {a.dtype} attn={a.attn} bs={batch} {a.in_len}+{a.out_len} on {dev}"
        fast, fast_info = make_backend(a.backend, **dict(a.option)), None
        if not a.no_check:  # prepares ``fast``: the timing below reuses it (one compilation per batch)
            ok, info = check_equivalence(model, prompt, a.out_len, fast)
            fast_info = info
            mm = info["first_mismatch"]
            verdict = "EQUAL" if ok else f"ROUNDING TIE at step {mm['step']}" if mm["tie"] else "DIFFERENT"
            failed |= not (ok or mm["tie"])
            print(f"check  {a.backend} vs hf-eager, {tag}: {verdict}; {info}", flush=True)
        if a.time:
            row = {"model": name, "dtype": a.dtype, "batch": batch, "in_len": a.in_len, "out_len": a.out_len,
                   "hbm_bandwidth_gbs": bw / 1e9,
                   "roofline_s": roofline_seconds(weight_bytes(model), a.out_len, bw)}
            fast_info = fast_info or fast.prepare(model, batch, a.in_len, a.out_len)
            timed = [(fast, fast_info)]
            if not a.skip_eager:
                eager = make_backend("hf-eager")
                timed.insert(0, (eager, eager.prepare(model, batch, a.in_len, a.out_len)))
            for be, info in timed:
                lat = statistics.median(time_backend(be, prompt, a.out_len, a.time))
                row[be.name] = {"latency_s": lat, "throughput_tok_s": batch * a.out_len / lat,
                                "roofline_frac": row["roofline_s"] / lat, "compile_s": info["compile_s"]}
            if not a.skip_eager:
                row["speedup"] = row["hf-eager"]["latency_s"] / row[a.backend]["latency_s"]
            row["options"] = dict(a.option)
            row["backend_info"] = {k: v for k, v in fast_info.items() if k not in ("compile_s", "agree", "first_mismatch")}
            print(f"time   {tag}: " + json.dumps(row), flush=True)
        if a.profile and dev.type == "cuda":
            if fast_info is None:
                fast.prepare(model, batch, a.in_len, a.out_len)
            print(f"profile {a.backend} {tag}: " + json.dumps(profile_generate(fast, prompt, a.out_len)), flush=True)
        del fast
        torch._dynamo.reset()  # compiled code of this batch size (and the caches it refers to) go
        if dev.type == "cuda":
            torch.cuda.empty_cache()
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
