"""`prunebench costs`: per-stage sums of the jobs' Snakemake benchmark files; job_cost paths."""
from __future__ import annotations

import json

import pytest

from prunebench import paths
from prunebench.cli import costs, main

HEADER = "s\th:m:s\tmax_rss\tmax_vms\tmax_uss\tmax_pss\tio_in\tio_out\tmean_load\tcpu_time\n"


def _job(root, name, wall, cpu):
    f = root / "costs" / f"{name}.tsv"
    f.parent.mkdir(parents=True, exist_ok=True)
    f.write_text(HEADER + f"{wall}\t0:00:01\t100.5\t1\t1\t1\t0\t0\t50\t{cpu}\n")


def test_job_cost_is_the_log_under_costs():
    assert paths.job_cost("results/demo/logs/prune/m/depth-ppl.log") == "results/demo/costs/prune/m/depth-ppl.tsv"
    assert paths.job_cost("results/x/logs/bench/m/d/hf-eager/in1_out2_bs3.log") == "results/x/costs/bench/m/d/hf-eager/in1_out2_bs3.tsv"
    with pytest.raises(paths.PathError):
        paths.job_cost("results/demo/prune/m/depth-ppl.json")


def test_costs_sum_per_stage_and_in_total(tmp_path, capsys):
    _job(tmp_path, "prune/m/sleb", 10.0, 19.5)
    _job(tmp_path, "prune/m/dense", 2.0, 1.5)
    _job(tmp_path, "bench/m/dense/hf-eager/in1_out2_bs3", 4.0, 7.0)
    (tmp_path / "costs" / "perplexity").mkdir()
    (tmp_path / "costs" / "perplexity" / "m.tsv").write_text(HEADER + "NA\tNA\tNA\tNA\tNA\tNA\tNA\tNA\tNA\tNA\n")
    s = costs.summary(costs.read_costs(tmp_path))
    assert s["stages"]["prune"] == {"jobs": 2, "wall_s": 12.0, "cpu_s": 21.0}
    assert s["stages"]["bench"] == {"jobs": 1, "wall_s": 4.0, "cpu_s": 7.0}
    assert s["stages"]["perplexity"] == {"jobs": 1, "wall_s": 0.0, "cpu_s": 0.0}  # "NA": not measured
    assert s["total"] == {"jobs": 4, "wall_s": 16.0, "cpu_s": 28.0}
    assert main(["costs", str(tmp_path), "--json", "--jobs"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["total"]["cpu_s"] == 28.0 and {j["job"] for j in out["jobs"]} >= {"prune/m/sleb"}


def test_costs_refuse_what_is_not_a_benchmark_file(tmp_path, capsys):
    (tmp_path / "costs").mkdir()
    (tmp_path / "costs" / "x.tsv").write_text("a\tb\n1\t2\n")
    assert main(["costs", str(tmp_path)]) == 2
    assert "not a Snakemake benchmark file" in capsys.readouterr().err


def test_costs_take_the_cpu_seconds_a_job_logged(tmp_path):
    """A job whose log ends with its own CPU count: that count, not the sampled one."""
    from prunebench.cli.stages import CPU_LINE, cpu_line

    line = cpu_line()
    assert float(CPU_LINE.search(line).group("cpu")) > 0
    _job(tmp_path, "prune/m/sleb", 100.0, 70.0)  # sampled: the last 30 s missed
    _job(tmp_path, "prune/m/dense", 2.0, 1.5)
    log = tmp_path / "logs" / "prune" / "m" / "sleb.log"
    log.parent.mkdir(parents=True)
    log.write_text("...\n2026-12-02 INFO prunebench: prune done in 99.0 s, 98.6 s CPU in all (this process from "
                   "its start, user + system)\n{\"model\": \"m\"}\n")
    rows = {r["job"]: r for r in costs.read_costs(tmp_path)}
    assert rows["prune/m/sleb"]["cpu_s"] == 98.6 and rows["prune/m/sleb"]["cpu_from"] == "log"
    assert rows["prune/m/dense"]["cpu_s"] == 1.5 and rows["prune/m/dense"]["cpu_from"] == "sampled"
