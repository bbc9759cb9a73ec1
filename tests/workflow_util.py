"""Helpers for running the real Snakefile on small configs in temporary folders."""
from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import yaml

from conftest import ROOT  # noqa: E402  (one place: the checkout)


def snakemake(workdir: Path, *args: str, config: Path | None = None, check: bool = True,
              timeout: int = 900) -> subprocess.CompletedProcess:
    cmd = [sys.executable, "-m", "snakemake", "-s", str(ROOT / "Snakefile"), "-d", str(workdir)]
    cmd += list(args)
    if config is not None:
        cmd += ["--configfile", str(config), "--replace-workflow-config"]
    env = dict(os.environ, HF_HUB_OFFLINE="1", HF_DATASETS_OFFLINE="1", TRANSFORMERS_OFFLINE="1",
               PYTHONPATH=os.pathsep.join([str(ROOT / "src"), os.environ.get("PYTHONPATH", "")]))
    proc = subprocess.run(cmd, cwd=workdir, env=env, capture_output=True, text=True, timeout=timeout)
    if check and proc.returncode != 0:
        raise AssertionError(f"snakemake failed ({proc.returncode}):\n{proc.stdout[-4000:]}\n{proc.stderr[-6000:]}")
    return proc


def job_counts(output: str) -> dict[str, int]:
    """Parse the 'Job stats' table Snakemake prints (dry run or real run)."""
    counts: dict[str, int] = {}
    m = re.search(r"Job stats:\n(.*?)\n\s*\n", output + "\n\n", re.S)
    if not m:
        return counts
    for line in m.group(1).splitlines():
        parts = line.split()
        if len(parts) == 2 and parts[1].isdigit() and parts[0] != "total":
            counts[parts[0]] = int(parts[1])
    return counts


def tiny_workdir(tmp: Path, methods: dict | None = None, cells: dict | None = None) -> Path:
    """A folder with a tiny local 'pretrained' model, text corpora and a config (cfg.yaml)."""
    from conftest import make_pretrained, make_text, tiny_arch

    text = make_text(60)
    (tmp / "corpus.txt").write_text(text)
    (tmp / "eval.txt").write_text(make_text(30, seed=1))
    make_pretrained(tmp / "tiny", tiny_arch(gqa=True), text)
    cfg = {
        "experiment": "tiny",
        "models": {"tiny": {"family": "Tiny", "weights": "pretrained", "path": "tiny",
                            "budget": {"ratio": 0.25}}},
        "methods": methods or {"dense": {"method": "dense"},
                               "depth-ppl": {"method": "depth", "criterion": "ppl"}},
        "corpora": {"calib": {"source": "files", "paths": ["corpus.txt"]},
                    "ev": {"source": "files", "paths": ["eval.txt"]}},
        "calibration": {"corpus": "calib", "n_samples": 4, "seq_len": 32},
        "perplexity": {"corpus": "ev", "seq_len": 32, "max_windows": 8, "device": "cpu"},
        "pruning": {"device": "cpu"},
        "benchmark": {"input_lengths": [4], "output_lengths": [5], "batch_sizes": [1, 2],
                      "dtype": "float32", "device": "cpu", "timing": {"min_runs": 2, "max_runs": 2},
                      **(cells or {})},
    }
    (tmp / "cfg.yaml").write_text(yaml.safe_dump(cfg, sort_keys=False))
    # a config.yaml in the working directory, as in a checkout: the preset must replace it
    # in every job (jobs spawned into subprocesses re-read the config)
    (tmp / "config.yaml").write_text((ROOT / "config.yaml").read_text())
    return tmp / "cfg.yaml"
