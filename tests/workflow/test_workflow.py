"""The Snakemake workflow itself: the paper DAG, an end-to-end run, targeted reruns."""
from __future__ import annotations

import json
import re

import pandas as pd
import pytest
import yaml

from prunebench import config as pbconfig
from workflow_util import ROOT, job_counts, snakemake, tiny_workdir

pytestmark = pytest.mark.workflow


def test_paper_dry_run_builds_every_cell(tmp_path):
    proc = snakemake(tmp_path, "-n", "--cores", "1", config=ROOT / "config.yaml")
    counts = job_counts(proc.stdout)
    cfg = pbconfig.validate(yaml.safe_load((ROOT / "config.yaml").read_text()), check_cuda=False)
    n_models, n_methods = len(cfg["models"]), len(cfg["methods"])
    n_timed = len(pbconfig.bench_methods(cfg))
    assert counts["benchmark"] == len(pbconfig.cells(cfg)) == n_models * n_timed * 2 * 2 * 8
    assert counts["prune"] == n_models * n_methods
    assert counts["perplexity"] == n_models * n_methods
    assert counts["source"] == n_models
    assert counts["corpus"] == 2 and counts["data"] == 2 * n_models
    assert counts["aggregate"] == 1 and counts["figure"] == 1
    # nothing was downloaded or written
    assert not (tmp_path / "results").exists()


def test_paper_random_preset_dry_run(tmp_path):
    # the GPU preset demands CUDA; a dry run on a CPU machine still plans the grid
    import shutil

    shutil.copy(ROOT / "config.yaml", tmp_path / "config.yaml")
    proc = snakemake(tmp_path, "-n", "--cores", "1", "--configfile",
                     str(ROOT / "workflow/presets/paper-random.yaml"))
    counts = job_counts(proc.stdout)
    assert counts["benchmark"] == 2 * 4 * 2 * 2 * 8 * 2  # models x methods x in x out x batch x backends
    assert "corpus" not in counts  # random weights: random token ids, no corpus


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    wd = tmp_path_factory.mktemp("wf")
    cfg = tiny_workdir(wd)
    proc = snakemake(wd, "--cores", "2", config=cfg)
    return wd, cfg, proc


def test_end_to_end(tiny_run):
    wd, cfg, _ = tiny_run
    bench = pd.read_csv(wd / "results/tiny/tables/benchmark.csv")
    assert len(bench) == 2 * 1 * 1 * 2  # methods x in x out x batch
    assert set(bench["status"]) == {"ok"}
    assert (bench["throughput_tok_s"] - bench["batch"] * 5 / bench["latency_s"]).abs().max() < 1e-6
    quality = pd.read_csv(wd / "results/tiny/tables/quality.csv").set_index("method")
    assert quality.loc["depth-ppl", "params"] < quality.loc["dense", "params"]
    assert quality["ppl"].notna().all()
    assert (wd / "results/tiny/figures/throughput_latency.png").stat().st_size > 10_000
    assert (wd / "results/tiny/figures/throughput_latency.pdf").stat().st_size > 1_000
    report = json.loads((wd / "results/tiny/prune/tiny/depth-ppl.json").read_text())
    assert report["removed_blocks"] and report["params_after"] == quality.loc["depth-ppl", "params"]
    # every rule wrote its log
    for stage in ("corpus", "data", "source", "prune", "perplexity", "bench"):
        assert any((wd / "results/tiny/logs" / stage).rglob("*.log")), stage
    # ... and its cost, one benchmark file per log (prunebench costs sums them)
    logs = {p.relative_to(wd / "results/tiny/logs").with_suffix("")
            for p in (wd / "results/tiny/logs").rglob("*.log")}
    tsvs = {p.relative_to(wd / "results/tiny/costs").with_suffix("")
            for p in (wd / "results/tiny/costs").rglob("*.tsv")}
    assert logs == tsvs
    from prunebench.cli import costs

    spent = costs.summary(costs.read_costs(wd / "results/tiny"))
    assert spent["total"]["jobs"] == len(logs) and spent["stages"]["bench"]["jobs"] == len(bench)
    # the depth-pruned checkpoint reloads with stock transformers
    from transformers import AutoModelForCausalLM

    m = AutoModelForCausalLM.from_pretrained(wd / "results/tiny/models/tiny/depth-ppl")
    assert m.config.num_hidden_layers == 8 - len(report["removed_blocks"])


def test_up_to_date_after_run(tiny_run):
    wd, cfg, _ = tiny_run
    proc = snakemake(wd, "-n", "--cores", "1", config=cfg)
    assert "Nothing to be done" in proc.stdout + proc.stderr


def _planned_outputs(dry_run_stdout: str) -> list[str]:
    """Every output file a dry run would write (its 'output:' lines)."""
    return [f.strip() for line in re.findall(r"^\s*output: (.+)$", dry_run_stdout, re.M) for f in line.split(",")]


def test_experiments_run_side_by_side(tiny_run):
    """Each config writes only under results/<experiment>/: the paper's plan after the tiny
    run touches nothing of it, a second experiment runs without rescheduling the first, and
    each is up to date after the other."""
    wd, cfg, _ = tiny_run
    mine = {p: p.stat().st_mtime_ns for p in (wd / "results/tiny").rglob("*") if p.is_file()}
    paper = snakemake(wd, "-n", "--cores", "1", config=ROOT / "config.yaml")
    planned = _planned_outputs(paper.stdout)
    assert planned and all(f.startswith("results/paper/") for f in planned), planned[:5]
    # another experiment: other methods, budget and grid (its tables' params differ)
    other = yaml.safe_load(cfg.read_text())
    other["experiment"] = "tiny-other"
    other["methods"] = {"dense": {"method": "dense"}}
    other["models"]["tiny"]["budget"] = {"ratio": 0.5}
    other["benchmark"]["batch_sizes"] = [1]
    other_cfg = wd / "cfg_other.yaml"
    other_cfg.write_text(yaml.safe_dump(other))
    first = snakemake(wd, "-n", "--cores", "1", config=other_cfg)
    assert all(f.startswith("results/tiny-other/") for f in _planned_outputs(first.stdout))
    snakemake(wd, "--cores", "2", config=other_cfg)
    assert len(pd.read_csv(wd / "results/tiny-other/tables/benchmark.csv")) == 1
    for c in (cfg, other_cfg):
        proc = snakemake(wd, "-n", "--cores", "1", config=c)
        assert "Nothing to be done" in proc.stdout + proc.stderr, c
    assert {p: p.stat().st_mtime_ns for p in (wd / "results/tiny").rglob("*") if p.is_file()} == mine


def test_one_cell_rerun(tiny_run):
    wd, cfg, _ = tiny_run
    cells = sorted((wd / "results/tiny/bench").rglob("*.json"))
    before = {p: p.stat().st_mtime_ns for p in cells}
    target = wd / "results/tiny/bench/tiny/depth-ppl/hf-eager/in4_out5_bs2.json"
    rel = str(target.relative_to(wd))
    # redo one cell: the target first, then --force (flags after paths may swallow them)
    proc = snakemake(wd, rel, "--cores", "1", "--force", config=cfg)
    assert job_counts(proc.stdout + proc.stderr) == {"benchmark": 1}
    changed = [p for p in cells if p.stat().st_mtime_ns != before[p]]
    assert changed == [target]
    # the tables and the figure follow, nothing else reruns
    dry = snakemake(wd, "-n", "--cores", "1", config=cfg)
    counts = job_counts(dry.stdout)
    assert counts.get("aggregate") == 1 and counts.get("figure") == 1
    assert "benchmark" not in counts and "prune" not in counts


def test_deleted_cell_is_the_only_benchmark_rerun(tiny_run):
    wd, cfg, _ = tiny_run
    target = wd / "results/tiny/bench/tiny/dense/hf-eager/in4_out5_bs1.json"
    target.unlink()
    dry = snakemake(wd, "-n", "--cores", "1", config=cfg)
    counts = job_counts(dry.stdout)
    assert counts.get("benchmark") == 1 and "prune" not in counts and "source" not in counts


def test_param_change_reruns_only_what_it_touches(tiny_run):
    wd, cfg, _ = tiny_run
    data = yaml.safe_load(cfg.read_text())
    data["benchmark"]["timing"]["max_runs"] = 3
    changed = wd / "cfg_timed3.yaml"
    changed.write_text(yaml.safe_dump(data))
    dry = snakemake(wd, "-n", "--cores", "1", config=changed)
    counts = job_counts(dry.stdout)
    assert counts.get("benchmark") == 4  # every cell, because timing is a benchmark param
    assert "prune" not in counts and "perplexity" not in counts and "data" not in counts


def _dry_run_after(wd, cfg, name, change) -> dict:
    """The jobs a dry run plans after ``change`` of the config beyond those it plans without
    (the tests before may have left a cell to redo)."""
    data = yaml.safe_load(cfg.read_text())
    change(data)
    changed = wd / f"cfg_{name}.yaml"
    changed.write_text(yaml.safe_dump(data))
    before = job_counts(snakemake(wd, "-n", "--cores", "1", config=cfg).stdout)
    after = job_counts(snakemake(wd, "-n", "--cores", "1", config=changed).stdout)
    return {k: n - before.get(k, 0) for k, n in after.items() if n > before.get(k, 0)}


def test_a_param_change_reruns_every_job_it_touches_when_an_upstream_one_reruns(tiny_run):
    """perplexity.batch_size is a param of dense's perplexity job and of depth-ppl's: both rerun,
    although dense's reruns in the same run (the depth-ppl job is scheduled after dense's by
    priority, not by an input edge, so Snakemake still checks its params)."""
    wd, cfg, _ = tiny_run
    counts = _dry_run_after(wd, cfg, "ppl_batch", lambda d: d["perplexity"].update(batch_size=3))
    assert counts.get("perplexity") == 2, counts
    assert "prune" not in counts and "benchmark" not in counts and "data" not in counts


def test_settings_a_job_does_not_read_rerun_nothing_of_it(tiny_run):
    """The figure's label of a model (family) reaches no source or data job; the pruning seed
    and dtype reach no job of dense (it keeps the base weights), so neither reruns it."""
    wd, cfg, _ = tiny_run
    counts = _dry_run_after(wd, cfg, "family", lambda d: d["models"]["tiny"].update(family="Other"))
    assert not {"source", "data", "prune", "perplexity", "benchmark"} & set(counts), counts
    counts = _dry_run_after(wd, cfg, "seed", lambda d: d["pruning"].update(seed=7, dtype="bfloat16"))
    assert counts.get("prune") == 1 and counts.get("perplexity") == 1, counts  # depth-ppl's
    assert counts.get("benchmark") == 2, counts  # depth-ppl's two cells, not dense's


def test_bad_config_refused_before_any_job(tmp_path):
    cfg = tiny_workdir(tmp_path)
    data = yaml.safe_load(cfg.read_text())
    data["benchmark"]["batch_sizes"] = [0]
    data["methods"]["dense"]["method"] = "densest"
    cfg.write_text(yaml.safe_dump(data))
    proc = snakemake(tmp_path, "--cores", "1", config=cfg, check=False)
    out = proc.stdout + proc.stderr
    assert proc.returncode != 0
    assert "benchmark.batch_sizes[0]" in out
    assert not (tmp_path / "results").exists()


def test_report(tiny_run):
    wd, cfg, _ = tiny_run
    out = wd / "report.html"
    snakemake(wd, "--report", str(out), config=cfg)
    html = out.read_text(errors="replace")
    for name in ("throughput_latency.png", "benchmark.csv", "quality.csv"):
        assert name in html
    assert "Throughput (generated tokens/s" in html  # the figure's caption
