"""The prunebench command: experiments and their config files, the Snakemake command lines
it builds, what it refuses before starting Snakemake, and that nothing imports it."""
from __future__ import annotations

import re
import sys
from pathlib import Path

import pytest

from prunebench.cli import main, workflow

from conftest import ROOT  # noqa: E402


def test_experiments_are_config_yaml_and_the_presets():
    exps = workflow.experiments(ROOT)
    assert exps["paper"] == workflow.Experiment("paper", (), False)
    # a complete preset replaces config.yaml, an overlay is merged over it
    assert exps["demo"].files == ("workflow/presets/demo.yaml",) and exps["demo"].replace
    assert exps["paper-random"].files == ("workflow/presets/paper-random.yaml",) and not exps["paper-random"].replace
    assert workflow.resolve(ROOT, "paper", random_weights=True) == exps["paper-random"]
    with pytest.raises(workflow.UsageError, match="demo-random"):
        workflow.resolve(ROOT, "demo", random_weights=True)
    with pytest.raises(workflow.UsageError, match="known: paper, "):
        workflow.resolve(ROOT, "nope")


def test_snakemake_command_puts_targets_first_and_config_files_last():
    demo = workflow.resolve(ROOT, "demo")
    cmd = workflow.snakemake_command(demo, ["-n", "--configfile", "more.yaml", "--forcerun", "aggregate"],
                                     front=["results/demo/bench/x.json", "--force"])
    assert cmd[:3] == [sys.executable, "-m", "snakemake"]
    assert cmd[3:] == ["results/demo/bench/x.json", "--force", "-n", "--forcerun", "aggregate", "--cores", "all",
                       "--configfile", "workflow/presets/demo.yaml", "more.yaml", "--replace-workflow-config"]
    paper = workflow.resolve(ROOT, "paper")
    assert workflow.snakemake_command(paper, ["--cores", "1"])[3:] == ["--cores", "1"]  # config.yaml: the default
    slurm = workflow.snakemake_command(paper, ["--workflow-profile", "workflow/profiles/slurm"])
    assert "--cores" not in slurm  # the profile decides
    rnd = workflow.snakemake_command(workflow.resolve(ROOT, "paper", True), ["-j4"])
    assert rnd[3:] == ["-j4", "--configfile", "workflow/presets/paper-random.yaml"]


def test_load_config_merges_like_snakemake():
    cfg = workflow.load_config(ROOT, workflow.resolve(ROOT, "paper-random"))
    assert cfg["experiment"] == "paper-random"
    assert cfg["models"]["llama-7b"]["weights"] == "random" and cfg["models"]["llama-7b"]["architecture"]
    assert cfg["benchmark"]["backends"] == ["hf-eager", "compiled"]
    assert "wikitext2" in cfg["corpora"]  # from config.yaml, under the overlay


@pytest.mark.parametrize("args,needle", [
    (["cell"], "usage: prunebench cell FILE"),
    (["cell", "results/demo/tables/benchmark.csv"], "not a cell path"),
    (["cell", "elsewhere/bench/m/dense/hf-eager/in1_out1_bs1.json"], "not under results/<experiment>/bench/"),
    (["cell", "results/demo/bench/smollm2-135m/flap/hf-eager/in82_out16_bs5.json"], "not a cell of experiment demo"),
    (["cell", "results/demo/bench/smollm2-135m/flap/hf-eager/in82_out16_bs4.json",
      "results/paper/bench/llama-7b/flap/hf-eager/in82_out512_bs64.json"], "several experiments"),
    (["cell", "results/nope/bench/m/dense/hf-eager/in1_out1_bs1.json"], "no experiment 'nope'"),
    (["run"], "NAME first"),
    (["run", "--cores", "2", "demo"], "NAME first"),
    (["report", "nope"], "no experiment 'nope'"),
])
def test_refused_before_snakemake_starts(args, needle, capsys, monkeypatch):
    monkeypatch.chdir(ROOT)
    monkeypatch.setattr(workflow.subprocess, "call", lambda *a, **k: pytest.fail("Snakemake was started"))
    assert main(args) == 2
    assert needle in capsys.readouterr().err


def test_the_cli_is_a_leaf():
    """No module of the package imports the CLI (only __main__ does)."""
    pkg = ROOT / "src" / "prunebench"
    pattern = re.compile(r"^\s*(from\s+(prunebench\.cli|\.+cli)\b|import\s+prunebench\.cli)", re.M)
    users = [p.relative_to(pkg).as_posix() for p in pkg.rglob("*.py")
             if "cli" not in p.relative_to(pkg).parts[:1] and pattern.search(p.read_text())]
    assert users == ["__main__.py"]
