"""README.md's bash blocks work as pasted, in order, and its counts are the configs'.

The blocks run in a copy of the checkout whose ``.venv`` is this test's environment, with
three substitutions, each said here: the demo preset is swapped for a tiny model of the same
name whose grid holds the cell the README redoes (the real demo takes minutes and the
network); commands on a paper-scale experiment get ``-n`` (a dry run: the plan, not the
GPU-hours); ``bash scripts/demo.sh`` runs with ``INSTALL=0`` (the environment is already
there).  Commands that need a GPU or the paper's model folders are listed in ``NOT_RUN``
with the reason, and each entry must still match a README command.  Every ``# prints N``
is checked against the command's output, on the unswapped copy.
"""
from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from prunebench import paths

from conftest import ROOT  # noqa: E402
VENV = Path(sys.executable).parent.parent

pytestmark = pytest.mark.workflow

#: README commands not run here (a substring of the command -> why)
NOT_RUN = {
    ".venv/bin/python -m pytest": "the test suite itself",
    "scripts/roofline.py results/paper/models/": "needs the paper's model folders (a GPU run)",
    "prunebench.tools.selfcheck": "GPU only",
    "scripts/backend_variants.sh": "GPU only",
    "prunebench.tools.gemv_bench": "GPU only",
    "# on the node": "runs on an offline GPU node",
    "prunebench bundle": "downloads wheels from PyPI (tests/unit/test_cli_bundle.py, marked network)",
}
#: commands on an experiment of paper scale: run as dry runs
PAPER_SCALE = re.compile(r"prunebench (run|report) paper\b|prunebench cell results/paper")
PRINTS = re.compile(r"#\s*prints (\d+)\s*$")


def commands() -> list[str]:
    """The README's bash blocks, one command per entry (continuation lines joined)."""
    text = (ROOT / "README.md").read_text()
    out = []
    for block in re.findall(r"^```bash\n(.*?)^```", text, re.S | re.M):
        cmd = ""
        for line in block.splitlines():
            cmd += line
            if cmd.endswith("\\"):
                cmd = cmd[:-1] + " "
                continue
            if cmd.strip():
                out.append(cmd.strip())
            cmd = ""
    return out


def _shell(cmd: str, cwd: Path, env: dict, timeout: int = 900) -> subprocess.CompletedProcess:
    proc = subprocess.run(["bash", "-c", "set -eo pipefail; " + cmd], cwd=cwd, env=env, capture_output=True,
                          text=True, timeout=timeout)
    assert proc.returncode == 0, f"README command failed ({proc.returncode}): {cmd}\n{proc.stdout[-3000:]}\n{proc.stderr[-5000:]}"
    return proc


def _tiny_demo(copy: Path, cell: dict) -> dict:
    """The demo preset with a tiny local model of the same name, text-file corpora and a grid
    of dense and the README's cell (its method's settings as the demo has them)."""
    from conftest import make_pretrained, make_text, tiny_arch

    demo = yaml.safe_load((ROOT / "workflow/presets/demo.yaml").read_text())
    text = make_text(60)
    (copy / "calib.txt").write_text(text)
    (copy / "eval.txt").write_text(make_text(30, seed=1))
    make_pretrained(copy / "tiny", tiny_arch(gqa=True), text)
    [(name, spec)] = demo["models"].items()
    assert cell["model"] == name
    demo["models"] = {name: {"family": spec["family"], "weights": "pretrained", "path": "tiny",
                             "budget": spec["budget"]}}
    demo["methods"] = {m: demo["methods"][m] for m in ("dense", cell["method"])}
    demo["corpora"] = {"calib": {"source": "files", "paths": ["calib.txt"]},
                       "ev": {"source": "files", "paths": ["eval.txt"]}}
    demo["calibration"].update(corpus="calib", n_samples=4, seq_len=32)
    demo["perplexity"].update(corpus="ev", seq_len=32, max_windows=8)
    demo["benchmark"].update(methods=list(demo["methods"]), backends=[cell["backend"]], input_lengths=[cell["in_len"]],
                             output_lengths=[cell["out_len"]], batch_sizes=[cell["batch"]],
                             timing={"min_runs": 2, "max_runs": 2, "warmup_new_tokens": 2})
    demo["frontier"] = {k: cell[k] for k in ("backend", "in_len", "out_len", "batch")}  # the one cell
    return demo


@pytest.mark.slow
def test_readme_commands_run_as_pasted(tmp_path):
    if not (VENV / "bin" / "prunebench").exists():
        pytest.skip(f"{VENV} has no prunebench command (install with scripts/install.sh)")
    cmds = commands()
    unused = [k for k in NOT_RUN if not any(k in c for c in cmds)]
    assert not unused, f"NOT_RUN entries that match no README command: {unused}"
    copy = tmp_path / "checkout"
    shutil.copytree(ROOT, copy, symlinks=True, ignore=shutil.ignore_patterns(
        ".venv", "results", ".snakemake", ".git", "docs", "__pycache__", ".pytest_cache", ".whl", "*.egg-info"))
    (copy / ".venv").symlink_to(VENV)
    env = dict(os.environ, PYTHONPATH=str(copy / "src"), HF_HUB_OFFLINE="1", HF_DATASETS_OFFLINE="1",
               TRANSFORMERS_OFFLINE="1", INSTALL="0")
    # 1. every count the README claims, on the unswapped configs
    for c in cmds:
        m = PRINTS.search(c)
        if m:
            got = _shell(c, copy, env).stdout.split()
            assert got[:1] == [m.group(1)], f"{c}: printed {got[:3]}"
    # 2. the blocks in order, on the tiny demo
    [cell_file] = {f for c in cmds for f in re.findall(r"results/demo/bench/\S+\.json", c)}
    (copy / "workflow/presets/demo.yaml").write_text(yaml.safe_dump(_tiny_demo(copy, paths.parse_cell(cell_file))))
    ran, cell_mtime = [], None
    for c in cmds:
        if any(k in c for k in NOT_RUN) or PRINTS.search(c):
            continue
        cmd = re.sub(r"\s+#.*$", "", c)
        if PAPER_SCALE.search(cmd):
            cmd += " -n"
        proc = _shell(cmd, copy, env)
        ran.append(cmd)
        if cmd.startswith("bash scripts/demo.sh"):
            lines = proc.stdout.splitlines()
            made = [line.strip() for line in lines[lines.index("== what the demo made ==") + 1:]]
            assert all(Path(f).is_file() for f in made), made  # the last lines: the files it made
            assert {Path(f).name for f in made} >= {"benchmark.csv", "quality.csv", "throughput_latency.png",
                                                     "frontier.csv", "quality_speed.png"}
            cell_mtime = (copy / cell_file).stat().st_mtime_ns
        if cmd.startswith(".venv/bin/prunebench cell results/demo/"):
            assert (copy / cell_file).stat().st_mtime_ns != cell_mtime  # redone
    assert ran[0].startswith("bash scripts/demo.sh")
    assert (copy / "results/demo/report.html").stat().st_size > 10_000
    assert not (copy / "results/paper").exists()  # paper-scale commands ran as dry runs
    # after the README, the demo is complete and up to date
    dry = _shell(".venv/bin/prunebench run demo -n", copy, env)
    assert "Nothing to be done" in dry.stdout + dry.stderr


def test_readme_demo_job_count_is_the_presets(tmp_path):
    """"the whole demo (N jobs)": what a dry run of the real demo preset plans."""
    from workflow_util import job_counts, snakemake

    claimed = re.search(r"the whole demo \((\d+) jobs\)", (ROOT / "README.md").read_text(), re.IGNORECASE)
    assert claimed, "README no longer states the demo's job count"
    shutil.copy(ROOT / "config.yaml", tmp_path / "config.yaml")
    proc = snakemake(tmp_path, "-n", "--cores", "2", config=ROOT / "workflow/presets/demo.yaml")
    assert sum(job_counts(proc.stdout).values()) == int(claimed.group(1))
