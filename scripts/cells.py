#!/usr/bin/env python3
"""Print the benchmark cell files of a config, filtered -- to run the grid in slices.

    snakemake $(python scripts/cells.py --configfile workflow/presets/paper-random.yaml \
        --model llama-7b --out 128 --batch 1 16 64) --cores 1 \
        --configfile workflow/presets/paper-random.yaml

The config files are merged over config.yaml like Snakemake does (``--replace`` to not).
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

from prunebench import config as pbconfig  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--configfile", nargs="*", default=[])
    ap.add_argument("--replace", action="store_true", help="do not start from config.yaml")
    ap.add_argument("--model", nargs="*")
    ap.add_argument("--method", nargs="*")
    ap.add_argument("--backend", nargs="*")
    ap.add_argument("--in", dest="in_len", type=int, nargs="*")
    ap.add_argument("--out", dest="out_len", type=int, nargs="*")
    ap.add_argument("--batch", type=int, nargs="*")
    ap.add_argument("--missing", action="store_true", help="only cells whose file does not exist")
    args = ap.parse_args()
    cfg = {} if args.replace else yaml.safe_load((ROOT / "config.yaml").read_text())
    for f in args.configfile:
        pbconfig.merge(cfg, yaml.safe_load(Path(f).read_text()))
    pbconfig.validate(cfg, check_cuda=False)
    keep = {"model": args.model, "method": args.method, "backend": args.backend,
            "in_len": args.in_len, "out_len": args.out_len, "batch": args.batch}
    for c in pbconfig.cells(cfg):
        if all(v is None or c[k] in v for k, v in keep.items()):
            path = (f"results/bench/{c['model']}/{c['method']}/{c['backend']}/"
                    f"in{c['in_len']}_out{c['out_len']}_bs{c['batch']}.json")
            if not (args.missing and Path(path).exists()):
                print(path)


if __name__ == "__main__":
    main()
