#!/usr/bin/env python3
"""Weight-streaming roofline of greedy generation, and how close a measured latency comes to it.

A decode step reads every weight once, so ``out_len`` new tokens (prefill + ``out_len - 1``
decode steps = ``out_len`` forward passes) take at least

    roofline_s = weight_bytes x out_len / bandwidth

``weight_bytes``: the bytes a step reads (all parameters in the benchmark dtype, tied weights
once, without an untied input embedding table); ``bandwidth``: measured device-to-device copy
of a 1 GiB buffer, counted as (bytes read + bytes written) / time (so a read-only stream is
assumed to run at copy-traffic rate).  ``--with-kv`` adds the KV-cache reads of the decode
steps (matters at large batch x length).  fraction = roofline_s / latency.

The model is built on the meta device (no weights loaded), from one of
    a model folder written by the pipeline (any method: per-layer widths, fewer layers),
    --config config.yaml --model llama-7b   (models.<name>.architecture),
    --arch '{"hidden_size": 4096, ...}'     (a LLaMA config as JSON).

Examples:
    scripts/roofline.py results/paper/models/llama-7b/dense --out-len 128 --latency 0.55
    scripts/roofline.py --config config.yaml --model llama-7b --cell results/paper/bench/llama-7b/dense/compiled/in12_out128_bs1.json
    scripts/roofline.py --config config.yaml --model llama-7b --bandwidth-gbs 3000   # no GPU needed
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))


def meta_model(model_dir: str | None, arch: dict | None, dtype):
    """The model's modules with meta tensors of the right shapes and dtype (nothing allocated)."""
    from transformers import AutoConfig

    from prunebench.architecture import build_config
    from prunebench.models import build_random, read_manifest

    structure = None
    if model_dir is not None:
        d = Path(model_dir)
        man = read_manifest(d)
        while man["weights"] == "base":
            d = (d / man["base"]).resolve()
            man = read_manifest(d)
        config = AutoConfig.from_pretrained(d)
        structure = man.get("structure")
    else:
        config = build_config(arch)
    return build_random(config, dtype, "meta", structure=structure)


def main(argv=None) -> int:
    import torch
    import yaml

    from prunebench.devices import measure_copy_bandwidth, resolve_device
    from prunebench.devices import resolve_dtype
    from prunebench.roofline import kv_read_bytes, roofline_seconds, weight_bytes

    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("model_dir", nargs="?", help="a model folder (prunebench.json inside)")
    ap.add_argument("--config", help="config YAML with models.<name>.architecture")
    ap.add_argument("--model", help="model name in --config")
    ap.add_argument("--arch", help="architecture as JSON")
    ap.add_argument("--dtype", default=None, help="default: the cell's dtype, else float16")
    ap.add_argument("--device", default="auto", help="where to measure bandwidth")
    ap.add_argument("--bandwidth-gbs", type=float, help="use this bandwidth (GB/s) instead of measuring")
    ap.add_argument("--in-len", type=int, default=12)
    ap.add_argument("--out-len", type=int, default=128)
    ap.add_argument("--batch", type=int, default=1)
    ap.add_argument("--latency", type=float, help="measured latency (s) of one call (prefill + out_len tokens)")
    ap.add_argument("--cell", help="a benchmark cell JSON: latency, lengths, batch, dtype (and bandwidth) from it")
    ap.add_argument("--with-kv", action="store_true", help="add the decode steps' KV-cache reads")
    a = ap.parse_args(argv)

    cell = json.loads(Path(a.cell).read_text()) if a.cell else {}
    if cell:
        a.latency = a.latency or cell.get("latency_s")
        a.in_len, a.out_len, a.batch = cell["in_len"], cell["out_len"], cell["batch"]
        a.bandwidth_gbs = a.bandwidth_gbs or cell.get("hbm_bandwidth_gbs")
    dtype = resolve_dtype(a.dtype or cell.get("dtype") or "float16")
    if sum(x is not None for x in (a.model_dir, a.arch, a.config)) != 1:
        ap.error("give exactly one of: a model folder, --config/--model, --arch")
    arch = None
    if a.config:
        if not a.model:
            ap.error("--config needs --model")
        spec = yaml.safe_load(Path(a.config).read_text())["models"][a.model]
        arch = spec.get("architecture") or ap.error(f"models.{a.model} has no architecture")
    elif a.arch:
        arch = json.loads(a.arch)
    model = meta_model(a.model_dir, arch, dtype)

    wb = weight_bytes(model)
    if a.bandwidth_gbs:
        bw, where = a.bandwidth_gbs * 1e9, "given"
    else:
        dev = resolve_device(a.device)
        bw = measure_copy_bandwidth(dev)
        where = torch.cuda.get_device_name(dev) if dev.type == "cuda" else "cpu"
    kv = kv_read_bytes(model, a.batch, a.in_len, a.out_len) if a.with_kv else 0
    roof = roofline_seconds(wb, a.out_len, bw, kv_read_bytes=kv)
    n_layers = len(model.model.layers)
    print(f"model            {a.model_dir or a.model or 'arch'}: {n_layers} layers, {str(dtype).replace('torch.', '')}")
    print(f"weight bytes     {wb / 1e9:.6g} GB per forward pass (untied input embedding excluded)")
    print(f"bandwidth        {bw / 1e9:.0f} GB/s ({where}; copy: (read + written) / time)")
    if kv:
        print(f"KV reads         {kv / 1e9:.6g} GB over the decode steps (batch {a.batch}, {a.in_len}+{a.out_len})")
    print(f"roofline         {roof:.4f} s for {a.out_len} tokens  ({a.batch * a.out_len / roof:.0f} tok/s at batch {a.batch})")
    if a.latency:
        print(f"measured         {a.latency:.4f} s  -> {roof / a.latency:.1%} of the roofline")
    return 0


if __name__ == "__main__":
    sys.exit(main())
