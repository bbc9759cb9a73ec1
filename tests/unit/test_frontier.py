"""Budget sweeps, perplexity on several corpora (held-out windows, intervals) and the
quality-speed frontier: the pure functions against independent computations, and the
config checks."""
from __future__ import annotations

import copy
import json
import math
import random

import pandas as pd
import pytest
import torch

from prunebench import config as pbconfig
from prunebench.data import calibration_starts, eval_windows
from prunebench.frontier import COLUMNS, draw, pareto_front, read_table, run, shape_key, table, unstable
from prunebench.perplexity import nll_summary, t_quantile


# --------------------------------------------------------------------------- Pareto front

def _dominated(i, speed, ppl):
    """Brute force: some other point is at least as fast and as good, better in one."""
    return any(speed[j] >= speed[i] and ppl[j] <= ppl[i] and (speed[j] > speed[i] or ppl[j] < ppl[i])
               for j in range(len(speed)) if j != i)


@pytest.mark.parametrize("seed", range(40))
def test_pareto_front_matches_brute_force(seed):
    rng = random.Random(seed)
    n = rng.randint(1, 30)
    # a coarse grid: ties in speed, in perplexity and whole repeated points
    speed = [rng.choice([0.5, 0.8, 1.0, 1.2, 1.5, 2.0]) for _ in range(n)]
    ppl = [rng.choice([10.0, 20.0, 30.0, 50.0, 100.0]) for _ in range(n)]
    assert pareto_front(speed, ppl) == [not _dominated(i, speed, ppl) for i in range(n)]


def test_pareto_front_skips_missing_values():
    speed, ppl = [1.0, None, 2.0, float("nan")], [10.0, 1.0, 5.0, 1.0]
    assert pareto_front(speed, ppl) == [False, False, True, False]


# --------------------------------------------------------------------------- intervals

@pytest.mark.parametrize("df, want", [(1, 12.7062), (2, 4.3027), (9, 2.2622), (29, 2.0452), (100, 1.9840)])
def test_t_quantile_against_tables(df, want):
    assert t_quantile(0.975, df) == pytest.approx(want, abs=2e-4)


def test_nll_summary():
    x = torch.tensor([2.0, 2.5, 3.0, 2.2, 2.9], dtype=torch.float64)
    s = nll_summary(x)
    mean = sum(x.tolist()) / 5
    sd = math.sqrt(sum((v - mean) ** 2 for v in x.tolist()) / 4)
    half = 2.7764 * sd / math.sqrt(5)  # t(0.975, 4)
    assert s["nll"] == pytest.approx(mean)
    assert s["nll_ci_low"] == pytest.approx(mean - half, abs=1e-4)
    assert s["ppl"] == pytest.approx(math.exp(mean))
    assert s["ppl_ci_high"] == pytest.approx(math.exp(mean + half), rel=1e-4)
    one = nll_summary(torch.tensor([2.0], dtype=torch.float64))
    assert one["nll_ci_low"] is None and one["n_windows"] == 1


# --------------------------------------------------------------------------- held-out windows

@pytest.mark.parametrize("seed", range(5))
def test_eval_windows_avoid_calibration_windows(seed):
    n_tok, c_len, e_len = 5000, 64, 48
    stream = torch.randperm(n_tok)  # every token id once: a shared id is a shared position
    held = {"n_samples": 10, "seq_len": c_len, "seed": seed}
    ids, starts = eval_windows(stream, e_len, 40, held)
    calib = {int(t) for s in calibration_starts(n_tok, 10, c_len, seed) for t in stream[s:s + c_len]}
    assert ids.shape == (40, e_len)
    assert not calib & set(ids.flatten().tolist())
    assert len(set(ids.flatten().tolist())) == ids.numel()  # windows do not overlap each other
    for s, row in zip(starts, ids):
        assert torch.equal(row, stream[s:s + e_len])


def test_eval_windows_unchanged_without_calibration():
    stream = torch.arange(1000)
    ids, starts = eval_windows(stream, 100, 5)
    assert starts == [0, 100, 200, 300, 400]
    assert torch.equal(ids, stream[:500].view(5, 100))


def test_data_stage_holds_out_the_calibration_corpus(tmp_path):
    from conftest import make_pretrained, make_text, tiny_arch
    from prunebench import data

    text = make_text(60)
    (tmp_path / "c.txt").write_text(text)
    make_pretrained(tmp_path / "tiny", tiny_arch(), text)
    spec = {"weights": "pretrained", "path": str(tmp_path / "tiny")}
    cal = {"n_samples": 6, "seq_len": 32, "seed": 3}
    data.run("calibration", spec, str(tmp_path / "c.txt"), str(tmp_path / "cal.safetensors"), model_name="t",
             corpus_name="c", settings=cal)
    meta = data.run("eval-c", spec, str(tmp_path / "c.txt"), str(tmp_path / "ev.safetensors"), model_name="t",
                    corpus_name="c", settings={"seq_len": 16, "max_windows": 30, "seed": 3, "held_out": cal})
    stream = data.tokenize_corpus(data.get_tokenizer(spec), text)
    cal_pos = {p for s in calibration_starts(stream.numel(), 6, 32, 3) for p in range(s, s + 32)}
    ev_pos = {p for s in meta["starts"] for p in range(s, s + 16)}
    assert not cal_pos & ev_pos and len(ev_pos) == 16 * meta["shape"][0]
    cal_ids, _ = data.load_tokens(tmp_path / "cal.safetensors")
    ev_ids, _ = data.load_tokens(tmp_path / "ev.safetensors")
    for s, row in zip(meta["starts"], ev_ids):
        assert torch.equal(row, stream[s:s + 16])
    assert cal_ids.shape == (6, 32)
    # the tokenizer the source stage saved in a model folder gives the same windows
    from prunebench import source

    source.run(spec, str(tmp_path / "base"), model_name="t", dtype="float32")
    again = data.run("calibration", spec, str(tmp_path / "c.txt"), str(tmp_path / "cal2.safetensors"), model_name="t",
                     corpus_name="c", settings=cal, tokenizer_dir=str(tmp_path / "base"))
    assert torch.equal(data.load_tokens(tmp_path / "cal2.safetensors")[0], cal_ids)
    assert again["tokenizer"] == str(tmp_path / "base")


# --------------------------------------------------------------------------- budgets in the config

BASE = {
    "models": {"m": {"weights": "random", "budget": {"ratio": 0.25}, "budgets": [{"ratio": 0.4}, {"params": 1000}]}},
    "methods": {"dense": {"method": "dense"}, "d": {"method": "depth", "criterion": "ppl"}},
    "corpora": {"c": {"source": "kjv"}},
    "calibration": {"corpus": "c"},
    "perplexity": {"corpus": ["c"]},
    "benchmark": {"input_lengths": [4, 8], "output_lengths": [5], "batch_sizes": [1, 2], "methods": ["dense"]},
    "frontier": {"methods": ["d"]},
}


def test_variants_and_cells():
    cfg = copy.deepcopy(BASE)
    names = [v["name"] for v in pbconfig.variants(cfg, "m")]
    assert names == ["dense", "d", "d@r0.4", "d@p1000"]
    assert [v["tag"] for v in pbconfig.variants(cfg, "m")] == ["", "r0.25", "r0.4", "p1000"]
    for n in names:
        assert pbconfig.variant(cfg, "m", n)["name"] == n
        assert pbconfig.split_variant(n)[0] in cfg["methods"]
    cfg["benchmark"]["backends"] = ["hf-eager"]
    cells = pbconfig.cells(cfg)
    grid = [c for c in cells if c["method"] == "dense"]
    assert len(grid) == 4  # dense on the whole grid, once
    front = [c for c in cells if c["method"] != "dense"]
    assert sorted(c["method"] for c in front) == ["d", "d@p1000", "d@r0.4"]
    assert all((c["in_len"], c["out_len"], c["batch"]) == (4, 5, 2) for c in front)  # the frontier cell
    import re
    assert all(re.fullmatch(pbconfig.VARIANT_PATTERN, n) for n in names)
    assert not re.fullmatch(pbconfig.VARIANT_PATTERN, "base")


def _errors(cfg):
    cfg = copy.deepcopy(cfg)
    bad = pbconfig.schema_problems(cfg)
    return [f"config key {pbconfig._path(p)}: {m}" for p, m in bad] + pbconfig.semantic_errors(cfg, [p for p, _ in bad])


def test_budget_errors_name_their_key():
    cfg = copy.deepcopy(BASE)
    cfg["models"]["m"].update(weights="random", architecture={
        "model_type": "llama", "hidden_size": 64, "intermediate_size": 128, "num_hidden_layers": 4,
        "num_attention_heads": 4, "num_key_value_heads": 4, "vocab_size": 100})
    cfg["models"]["m"]["budgets"] = [{"ratio": 0.4}, {"rate": 0.1}]
    cfg["frontier"] = {"batch": 3, "methods": ["nope"]}
    errs = "\n".join(_errors(cfg))
    assert "config key models.m.budgets[1].rate: unknown key" in errs
    assert "config key frontier.batch: 3 is not one of benchmark.batch_sizes" in errs
    assert "frontier.methods: 'nope'" in errs
    cfg["models"]["m"]["budgets"] = [{"ratio": 0.4}, {"ratio": 0.25}]
    errs = "\n".join(_errors(cfg))
    assert "config key models.m.budgets[1]: the same budget (r0.25) as models.m.budget" in errs
    cfg["models"]["m"]["budgets"] = [{"ratio": 0.99}]
    errs = "\n".join(_errors(cfg))
    assert "config key models.m.budgets[0]: methods.d:" in errs and "outside what" in errs
    del cfg["models"]["m"]["budget"], cfg["models"]["m"]["budgets"]
    assert any("models.m.budget: required" in e for e in _errors(cfg))


# --------------------------------------------------------------------------- the frontier table

def test_frontier_table_shares_speed_by_shape():
    variants = {"m": {"dense": {"method": "dense", "budget": ""}, "a": {"method": "a", "budget": "r0.25"},
                      "b": {"method": "b", "budget": "r0.25"}, "w": {"method": "w", "budget": "r0.25"},
                      "u": {"method": "u", "budget": "r0.25"}}}
    reports = [{"model": "m", "method": "dense", "algorithm": "dense", "num_layers": 4, "structure": None},
               {"model": "m", "method": "a", "algorithm": "depth", "num_layers": 3, "structure": None},
               {"model": "m", "method": "b", "algorithm": "shortgpt", "num_layers": 3, "structure": None},
               {"model": "m", "method": "w", "algorithm": "flap", "num_layers": 4, "structure": {"layers": [1]},
                "widths_from_weights": True},
               {"model": "m", "method": "u", "algorithm": "flap", "num_layers": 4, "structure": {"layers": [2]}}]
    q = pd.DataFrame([{"model": "m", "family": "M", "method": m, "budget": t, "params": 1, "params_ratio": 1.0,
                       "corpus": "c", "ppl": p, "weights": "random", "held_out": False}
                      for m, t, p in [("dense", "", 10.0), ("a", "r0.25", 20.0), ("b", "r0.25", 15.0),
                                      ("w", "r0.25", 12.0), ("u", "r0.25", 11.0)]])
    cell = {"backend": "hf-eager", "in_len": 4, "out_len": 5, "batch": 2}
    sp = pd.DataFrame([{"model": "m", "method": m, "budget": "r0.25", **cell, "speedup": s, "speedup_ci_low": s,
                        "speedup_ci_high": s} for m, s in [("a", 1.5), ("w", 1.1)]]
                      + [{"model": "m", "method": "a", "budget": "r0.25", **cell, "batch": 1, "speedup": 9.0,
                          "speedup_ci_low": 9.0, "speedup_ci_high": 9.0}])
    df = table(q, sp, reports, cell, variants).set_index("method")
    assert df.loc["dense", "speedup"] == 1.0
    assert df.loc["a", "speedup"] == 1.5 and df.loc["b", "speedup"] == 1.5  # same shapes as a
    assert df.loc["b", "timed_as"] == "a @ r0.25"
    assert math.isnan(df.loc["u", "speedup"])  # no timed model of its shapes
    assert df.loc["w", "note"] and not df.loc["a", "note"]
    # front: dense (1.0, 10), w (1.1, 12), b (1.5, 15); a is beaten by b
    assert df["on_front"].to_dict() == {"dense": True, "a": False, "b": True, "w": True, "u": False}
    assert shape_key(reports[1]) == shape_key(reports[2]) != shape_key(reports[0])


def _frontier_inputs(speed):
    """A dense model and two pruned ones; ``speed``: method -> (speed-up, stable, verdict, ci)."""
    variants = {"m": {"dense": {"method": "dense", "budget": ""}, "a": {"method": "a", "budget": "r0.25"},
                      "b": {"method": "b", "budget": "r0.25"}}}
    reports = [{"model": "m", "method": "dense", "algorithm": "dense", "num_layers": 4, "structure": None},
               {"model": "m", "method": "a", "algorithm": "depth", "num_layers": 3, "structure": None},
               {"model": "m", "method": "b", "algorithm": "depth", "num_layers": 2, "structure": None}]
    q = pd.DataFrame([{"model": "m", "family": "M", "method": m, "budget": t, "params": 1, "params_ratio": 1.0,
                       "corpus": "c", "ppl": p, "weights": "random", "held_out": False, "note": ""}
                      for m, t, p in [("dense", "", 10.0), ("a", "r0.25", 12.0), ("b", "r0.25", 20.0)]])
    cell = {"backend": "hf-eager", "in_len": 4, "out_len": 5, "batch": 2}
    sp = pd.DataFrame([{"model": "m", "method": m, "budget": "r0.25", **cell, "speedup": s, "speedup_ci_low": ci,
                        "speedup_ci_high": ci and s * 1.1, "stable": st, "verdict": v}
                       for m, (s, st, v, ci) in speed.items()])
    return q, sp, reports, cell, variants


def test_frontier_carries_stable_and_verdict():
    q, sp, reports, cell, variants = _frontier_inputs({"a": (1.3, False, "unclear", None),
                                                       "b": (1.6, True, "faster", 1.5)})
    df = table(q, sp, reports, cell, variants).set_index("method")
    assert list(table(q, sp, reports, cell, variants).columns) == COLUMNS
    assert df.loc["a", "stable"] is False and df.loc["a", "verdict"] == "unclear"
    assert df.loc["b", "stable"] is True and df.loc["b", "verdict"] == "faster"
    assert df.loc["dense", "stable"] is None and df.loc["dense", "verdict"] == ""
    # a is on the front (by its point estimate) though its cells are unstable: kept, and marked
    assert df["on_front"].to_dict() == {"dense": True, "a": True, "b": True}
    assert unstable(df).to_dict() == {"dense": False, "a": True, "b": False}


def test_frontier_figure_marks_points_from_unstable_cells_hollow():
    q, sp, reports, cell, variants = _frontier_inputs({"a": (1.3, False, "unclear", None),
                                                       "b": (1.6, True, "faster", 1.5)})
    df = table(q, sp, reports, cell, variants)
    ax = draw(df, "t").axes[0]
    hollow = [l for l in ax.get_lines() if l.get_markerfacecolor() == "white" and len(l.get_xdata())]
    assert [list(l.get_xdata()) for l in hollow] == [[1.3]]
    labels = [t.get_text() for t in ax.get_legend().get_texts()]
    assert any(t.startswith("hollow: speed-up from unstable cells") for t in labels)
    stable = draw(table(q, sp.assign(stable=True), reports, cell, variants), "t").axes[0]
    assert not [l for l in stable.get_lines() if l.get_markerfacecolor() == "white"]
    assert not any("hollow" in t.get_text() for t in stable.get_legend().get_texts())


def test_frontier_reads_identifiers_as_written(tmp_path):
    """A model named NA, methods named null and 7: names, not missing values or numbers."""
    variants = {"NA": {"dense": {"method": "dense", "budget": ""}, "null@r0.25": {"method": "null", "budget": "r0.25"},
                       "7@r0.25": {"method": "7", "budget": "r0.25"}}}
    reports = []
    for name, alg, layers in (("dense", "dense", 4), ("null@r0.25", "depth", 3), ("7@r0.25", "depth", 2)):
        p = tmp_path / f"{name}.json"
        p.write_text(json.dumps({"model": "NA", "method": name, "algorithm": alg, "num_layers": layers,
                                 "structure": None, "params_after": 1}))
        reports.append(str(p))
    pd.DataFrame([{"model": "NA", "family": "NA", "method": m, "budget": t, "params": 1, "params_ratio": 1.0,
                   "corpus": "null", "ppl": p, "ppl_ci_low": None, "ppl_ci_high": None, "weights": "random",
                   "held_out": False}
                  for m, t, p in [("dense", "", 10.0), ("null", "r0.25", 12.0), ("7", "r0.25", 14.0)]]
                 ).to_csv(tmp_path / "quality.csv", index=False)
    cell = {"backend": "hf-eager", "in_len": 4, "out_len": 5, "batch": 2}
    pd.DataFrame([{"model": "NA", "family": "NA", "method": m, "budget": "r0.25", **cell, "speedup": s,
                   "speedup_ci_low": None, "speedup_ci_high": None, "verdict": "unclear", "stable": False}
                  for m, s in [("null", 1.3), ("7", 1.7)]]).to_csv(tmp_path / "speedups.csv", index=False)
    out = tmp_path / "frontier.csv"
    run(str(tmp_path / "quality.csv"), str(tmp_path / "speedups.csv"), reports, cell, str(out),
        str(tmp_path / "f.png"), str(tmp_path / "f.pdf"), variants)
    got = read_table(str(out)).set_index("method")
    assert set(got["model"]) == {"NA"} and set(got["corpus"]) == {"null"}
    assert got.loc["null", "speedup"] == 1.3 and got.loc["7", "speedup"] == 1.7 and got.loc["dense", "speedup"] == 1.0
    assert got.loc["7", "timed_as"] == "7 @ r0.25" and got.loc["dense", "verdict"] == ""
    assert pd.isna(got.loc["null", "speedup_ci_low"])  # an empty number is still missing


# --------------------------------------------------------------------------- the workflow

@pytest.fixture(scope="module")
def sweep_run(tmp_path_factory):
    import yaml
    from workflow_util import snakemake, tiny_workdir

    wd = tmp_path_factory.mktemp("sweep")
    cfg = tiny_workdir(wd, methods={"dense": {"method": "dense"}, "depth-ppl": {"method": "depth", "criterion": "ppl"},
                                    "shortgpt": {"method": "shortgpt"}, "flap": {"method": "flap"}})
    d = yaml.safe_load(cfg.read_text())
    d["models"]["tiny"]["budgets"] = [{"ratio": 0.4}]
    d["perplexity"]["corpus"] = ["ev", "calib"]
    d["benchmark"].update(methods=["dense", "depth-ppl"], batch_sizes=[2])
    d["frontier"] = {"methods": ["flap"]}
    cfg.write_text(yaml.safe_dump(d, sort_keys=False))
    snakemake(wd, "--cores", "2", config=cfg)
    return wd, cfg


@pytest.mark.workflow
def test_sweep_end_to_end(sweep_run):
    wd, _ = sweep_run
    q = pd.read_csv(wd / "results/tiny/tables/quality.csv", keep_default_na=False)
    got = {(m, b) for m, b in zip(q["method"], q["budget"])}
    assert got == {("dense", ""), *((m, b) for m in ("depth-ppl", "shortgpt", "flap") for b in ("r0.25", "r0.4"))}
    assert set(q["corpus"]) == {"ev", "calib"} and len(q) == 7 * 2
    assert set(q.loc[q["corpus"] == "calib", "held_out"]) == {True}
    assert (q["ppl_ci_low"] < q["ppl"]).all() and (q["ppl"] < q["ppl_ci_high"]).all()
    assert (wd / "results/tiny/models/tiny/depth-ppl@r0.4/prunebench.json").exists()
    assert not (wd / "results/tiny/models/tiny/dense@r0.4").exists()  # dense: one model
    sp = pd.read_csv(wd / "results/tiny/tables/speedups.csv")
    assert set(zip(sp["method"], sp["budget"])) == {("depth-ppl", "r0.25"), ("depth-ppl", "r0.4"),
                                                     ("flap", "r0.25"), ("flap", "r0.4")}
    fr = pd.read_csv(wd / "results/tiny/tables/frontier.csv", keep_default_na=False)
    assert len(fr) == len(q) and fr["on_front"].astype(str).isin(["True", "False"]).all()
    short = fr[fr["method"] == "shortgpt"]
    assert set(short["timed_as"]) <= {"depth-ppl @ r0.25", "depth-ppl @ r0.4"}
    assert set(fr.loc[fr["method"] == "flap", "note"]) == {""}  # trained (not random) weights
    for f in ("quality_speed.png", "quality_speed.pdf"):
        assert (wd / "results/tiny/figures" / f).stat().st_size > 1_000


@pytest.mark.workflow
def test_sweep_one_cell_rerun(sweep_run):
    from workflow_util import job_counts, snakemake

    wd, cfg = sweep_run
    cells = sorted((wd / "results/tiny/bench").rglob("*.json"))
    before = {p: p.stat().st_mtime_ns for p in cells}
    target = wd / "results/tiny/bench/tiny/depth-ppl@r0.4/hf-eager/in4_out5_bs2.json"
    proc = snakemake(wd, str(target.relative_to(wd)), "--cores", "1", "--force", config=cfg)
    assert job_counts(proc.stdout + proc.stderr) == {"benchmark": 1}
    assert [p for p in cells if p.stat().st_mtime_ns != before[p]] == [target]


def test_a_diverged_perplexity_stays_in_the_frontier_table_with_a_note():
    from prunebench.frontier import DIVERGED

    q, sp, reports, cell, variants = _frontier_inputs({"a": (1.3, True, "faster", 1.2),
                                                       "b": (1.6, True, "faster", 1.5)})
    q["ppl_status"] = "ok"
    q.loc[q["method"] == "b", ["ppl", "ppl_status"]] = [float("nan"), "diverged"]
    df = table(q, sp, reports, cell, variants).set_index("method")
    assert df.loc["b", "note"] == DIVERGED and df.loc["a", "note"] == ""
    assert not df.loc["b", "on_front"] and df.loc["b", "speedup"] == 1.6
