"""prunebench cells: an experiment's cell files, filtered; --missing; --count; GPU-time estimates and --budget."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from prunebench import config as pbconfig
from prunebench.cli import cells as cells_cli

from conftest import ROOT  # noqa: E402


@pytest.fixture(scope="module")
def cells_mod():
    return cells_cli


def _cell(root: Path, model, method, backend, i, o, b, latency, compile_s=0.0, status="ok"):
    p = root / "bench" / model / method / backend / f"in{i}_out{o}_bs{b}.json"
    p.parent.mkdir(parents=True, exist_ok=True)
    p.write_text(json.dumps({"model": model, "method": method, "backend": backend, "in_len": i, "out_len": o,
                             "batch": b, "status": status, "latency_s": latency, "compile_s": compile_s}))


def _run(cwd, *args):
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(ROOT / "src"), os.environ.get("PYTHONPATH", "")]))
    r = subprocess.run([sys.executable, "-m", "prunebench", "cells", *args], cwd=cwd, env=env,
                       capture_output=True, text=True, check=True)
    return r.stdout.split(), r.stderr


def test_estimate_interpolates_and_scales(cells_mod, tmp_path):
    _cell(tmp_path, "m", "dense", "hf-eager", 12, 128, 1, 2.0)
    _cell(tmp_path, "m", "dense", "hf-eager", 12, 128, 64, 8.0, compile_s=6.0)
    _cell(tmp_path, "m", "dense", "hf-eager", 12, 128, 256, 99.0, status="oom")  # not a measurement
    known = cells_mod.measured(tmp_path)
    assert known == {("m", "dense", "hf-eager", 12, 128): {1: (2.0, 0.0), 64: (8.0, 6.0)}}
    c = {"model": "m", "method": "dense", "backend": "hf-eager", "in_len": 12, "out_len": 128}
    s = cells_mod.STARTUP_S
    assert cells_mod.estimate({**c, "batch": 1}, known, 3) == pytest.approx(s + 3 * 2.0)
    # batch 8 lies halfway between 1 and 64 in log batch
    assert cells_mod.estimate({**c, "batch": 8}, known, 3) == pytest.approx(s + 3.0 + 3 * 5.0)
    assert cells_mod.estimate({**c, "batch": 384}, known, 3) == pytest.approx(s + 6.0 + 3 * 8.0)  # clamped
    # the other output length, scaled by the ratio; then the other input length
    assert cells_mod.estimate({**c, "out_len": 512, "batch": 1}, known, 3) == pytest.approx(s + 3 * 8.0)
    assert cells_mod.estimate({**c, "in_len": 82, "batch": 1}, known, 2) == pytest.approx(s + 2 * 2.0)
    assert cells_mod.estimate({**c, "method": "flap", "batch": 1}, known, 3) is None


def test_listing_missing_and_budget(tmp_path):
    sel = ["paper-random", "--model", "llama-7b", "--method", "dense", "--backend", "hf-eager",
           "--in", "12", "--out", "128"]
    paths, _ = _run(tmp_path, *sel)
    assert len(paths) == 8 and all(p.startswith("results/paper-random/bench/llama-7b/dense/hf-eager/in12_out128_bs") for p in paths)
    done = tmp_path / paths[0]
    done.parent.mkdir(parents=True)
    done.write_text("{}")
    missing, _ = _run(tmp_path, *sel, "--missing")
    assert missing == paths[1:]
    ref = tmp_path / "ref"
    for b in (1, 384):
        _cell(ref, "llama-7b", "dense", "hf-eager", 12, 128, b, 10.0)
    # a stable cell: 1 warm-up + 6 timed runs (timing.min_runs) of 10 s + 12 s start-up = 82 s: 170 s holds two
    listed, err = _run(tmp_path, *sel, "--missing", "--estimate", str(ref), "--budget", "170")
    assert listed == paths[1:3]
    assert "2 cells, about 3 min" in err and err.count("82 s\t") == 2
    with pytest.raises(subprocess.CalledProcessError):
        _run(tmp_path, *sel, "--budget", "100")  # --budget without --estimate


def test_counts_are_the_configs():
    """--count of an experiment is its config's cell count (config.yaml = paper; --random-weights)."""
    paper = pbconfig.validate(yaml.safe_load((ROOT / "config.yaml").read_text()), check_cuda=False)
    n, _ = _run(ROOT, "--count")
    assert int(n[0]) == len(pbconfig.cells(paper))
    rnd, _ = _run(ROOT, "paper", "--random-weights", "--backend", "hf-eager", "--count")
    listed, _ = _run(ROOT, "paper-random", "--backend", "hf-eager")
    assert int(rnd[0]) == len(listed) and all(p.startswith("results/paper-random/bench/") for p in listed)
