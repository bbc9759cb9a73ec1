"""Fault tolerance: a job killed (SIGKILL, with its Snakemake) while writing leaves nothing a
rerun mistakes for finished; the rerun completes and loses no finished cell."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

from workflow_util import ROOT, job_counts, snakemake, tiny_workdir

pytestmark = pytest.mark.workflow
#: its sitecustomize.py arms the fault in every Python process of a run (the product has no hook)
FAULTS = Path(__file__).resolve().parent / "faultinject"


def killed_run(wd, cfg, needle: str, *targets: str) -> int:
    """Run snakemake in its own process group with the fault armed; return its exit status."""
    env = dict(os.environ, PRUNEBENCH_FAULT_INJECT=needle,
               PYTHONPATH=os.pathsep.join([str(FAULTS), str(ROOT / "src"), os.environ.get("PYTHONPATH", "")]))
    cmd = [sys.executable, "-m", "snakemake", "-s", str(ROOT / "Snakefile"), "-d", str(wd), *targets,
           "--cores", "1", "--configfile", str(cfg), "--replace-workflow-config"]
    proc = subprocess.run(cmd, cwd=wd, env=env, capture_output=True, text=True, timeout=900,
                          start_new_session=True)
    return proc.returncode


@pytest.fixture(scope="module")
def workdir(tmp_path_factory):
    wd = tmp_path_factory.mktemp("faults")
    cfg = tiny_workdir(wd)
    return wd, cfg


def test_kill_during_pruning_benchmark_and_aggregation(workdir):
    wd, cfg = workdir
    # 1. the node dies while the depth-pruned checkpoint is being written
    rc = killed_run(wd, cfg, "models/tiny/depth-ppl/model.safetensors")
    assert rc != 0
    pruned = wd / "results/tiny/models/tiny/depth-ppl"
    assert not (pruned / "prunebench.json").exists()  # not mistaken for a finished model
    assert not (pruned / "model.safetensors").exists()
    # 2. rerun (after the lock a killed Snakemake leaves) -> the node dies inside one cell; a
    # cell of the model step 1 killed, so certainly not done yet (a dense cell may have run
    # before the kill: Snakemake's job order is not fixed)
    snakemake(wd, "--unlock", config=cfg)
    cell = "bench/tiny/depth-ppl/hf-eager/in4_out5_bs2.json"
    rc = killed_run(wd, cfg, cell)
    assert rc != 0
    assert not (wd / "results" / cell).exists()
    done = {p: p.stat().st_mtime_ns for p in (wd / "results/tiny/bench").rglob("*.json")}
    # 3. ... and once more during aggregation
    snakemake(wd, "--unlock", config=cfg)
    rc = killed_run(wd, cfg, "tables/benchmark.csv")
    assert rc != 0
    assert not (wd / "results/tiny/tables/benchmark.csv").exists()
    cells_before = {p: p.stat().st_mtime_ns for p in (wd / "results/tiny/bench").rglob("*.json")}
    assert all(cells_before[p] == t for p, t in done.items())  # finished cells untouched
    # 4. the rerun completes, redoing only what was not finished
    snakemake(wd, "--unlock", config=cfg)
    proc = snakemake(wd, "--cores", "1", config=cfg)
    counts = job_counts(proc.stdout + proc.stderr)
    assert "prune" not in counts and counts.get("aggregate") == 1
    assert all(p.stat().st_mtime_ns == t for p, t in cells_before.items())
    bench = pd.read_csv(wd / "results/tiny/tables/benchmark.csv")
    assert len(bench) == 4 and set(bench["status"]) == {"ok"}
    assert not list((wd / "results").rglob("*.tmp"))  # temp files of killed writers are gone


def test_corrupt_cell_is_named_by_aggregation(workdir):
    wd, cfg = workdir
    cell = wd / "results/tiny/bench/tiny/depth-ppl/hf-eager/in4_out5_bs1.json"
    if not cell.exists():
        pytest.skip("needs the run of the previous test")
    cell.write_text(cell.read_text()[:40])
    # make the tables outdated so aggregation runs over the corrupt file
    os.utime(cell)
    proc = snakemake(wd, "--cores", "1", config=cfg, check=False)
    assert proc.returncode != 0
    log = (wd / "results/tiny/logs/aggregate.log").read_text() + proc.stdout + proc.stderr
    assert "in4_out5_bs1.json: not valid JSON" in log


def test_kill_between_two_outputs_of_one_job_recovers_by_the_readme_recipe(tmp_path):
    """The node dies after the prune job renamed its model folder's manifest into place and
    before its report: one output exists, Snakemake marks it incomplete.  The README's
    recipe -- `snakemake --unlock`, then the same command again -- redoes that job (the
    profiles say rerun-incomplete) instead of stopping with IncompleteFilesException."""
    cfg = tiny_workdir(tmp_path)
    target = "results/tiny/prune/tiny/depth-ppl.json"
    rc = killed_run(tmp_path, cfg, "prune/tiny/depth-ppl.json", target)
    assert rc != 0
    manifest = tmp_path / "results/tiny/models/tiny/depth-ppl/prunebench.json"
    assert manifest.exists() and not (tmp_path / target).exists()  # killed between the two
    snakemake(tmp_path, "--unlock", config=cfg)
    proc = snakemake(tmp_path, target, "--cores", "1", config=cfg)
    out = proc.stdout + proc.stderr
    assert "IncompleteFilesException" not in out
    assert job_counts(out) == {"prune": 1}  # only the interrupted job is redone
    report = json.loads((tmp_path / target).read_text())
    assert report["params_after"] == json.loads(manifest.read_text())["params"]
    assert "Nothing to be done" in snakemake(tmp_path, target, "-n", "--cores", "1", config=cfg).stdout


def test_cell_that_is_not_what_its_path_says_is_named_by_aggregation(workdir):
    """A cell file copied over another (or left from other settings) is not aggregated into
    the wrong row: aggregation stops naming the file and the field."""
    wd, cfg = workdir
    bench = wd / "results/tiny/bench/tiny/depth-ppl/hf-eager"
    if not (bench / "in4_out5_bs2.json").exists():
        pytest.skip("needs the run of the first test")
    (bench / "in4_out5_bs1.json").write_text((bench / "in4_out5_bs2.json").read_text())
    proc = snakemake(wd, "--cores", "1", config=cfg, check=False)
    assert proc.returncode != 0
    log = (wd / "results/tiny/logs/aggregate.log").read_text()
    assert "in4_out5_bs1.json: batch is 2 but its path is 1" in log
    assert len(log.strip().splitlines()[-1]) < 400 and "Traceback" not in log
