"""No silent wrong results: bad values refused before any job (naming the key), budgets
checked against what each method can reach, artifacts checked against what they claim."""
from __future__ import annotations

import copy
import json
from pathlib import Path

import pytest
import torch

from conftest import tiny_arch
from prunebench import aggregate, benchmark, cli, config as pbconfig
from prunebench.io import ArtifactError


@pytest.fixture
def cfg(tmp_path, monkeypatch):
    """A tiny random-weights config whose relative corpus paths resolve in tmp_path."""
    monkeypatch.chdir(tmp_path)
    (tmp_path / "corpus.txt").write_text("Some calibration text.\n")
    return {
        "experiment": "tiny",
        "models": {"tiny": {"weights": "random", "architecture": tiny_arch(gqa=True), "budget": {"ratio": 0.25}}},
        "methods": {"dense": {"method": "dense"}, "depth-ppl": {"method": "depth", "criterion": "ppl"},
                    "llm-pruner": {"method": "llm-pruner", "importance": "l2"}, "flap": {"method": "flap"}},
        "corpora": {"calib": {"source": "files", "paths": ["corpus.txt"]}},
        "calibration": {"corpus": "calib", "n_samples": 4, "seq_len": 32},
        "perplexity": {"corpus": "calib", "seq_len": 32},
        "benchmark": {"input_lengths": [4], "output_lengths": [5], "batch_sizes": [1, 2], "device": "cpu"},
    }


def refused(config) -> str:
    with pytest.raises(pbconfig.ConfigError) as exc:
        pbconfig.validate(config, check_cuda=False)
    return str(exc.value)


def test_tiny_config_is_valid(cfg):
    pbconfig.validate(cfg, check_cuda=False)


# --------------------------------------------------------------------------- subsets

@pytest.mark.parametrize("key", ["models", "methods"])
def test_benchmark_subsets_unique_and_non_empty(cfg, key):
    name = "tiny" if key == "models" else "dense"
    for bad in ([name, name], []):
        c = copy.deepcopy(cfg)
        c["benchmark"][key] = bad
        assert f"config key benchmark.{key}:" in refused(c)
    c = copy.deepcopy(cfg)
    c["benchmark"][key] = None  # null = all
    pbconfig.validate(c, check_cuda=False)
    cells = pbconfig.cells(c)
    assert len(cells) == len({tuple(x.values()) for x in cells}) == 4 * 2


# --------------------------------------------------------------------------- architectures

@pytest.mark.parametrize("change,key", [
    ({"num_key_value_head": 2}, "architecture.num_key_value_head"),  # misspelt: silently ignored before
    ({"num_key_value_heads": 3}, "architecture.num_key_value_heads"),  # does not divide 8 heads
    ({"num_attention_heads": 7}, "architecture.num_attention_heads"),  # does not divide hidden 64
    ({"head_dim": 5}, "architecture.head_dim"),                          # rotary needs an even head dim
    ({"hidden_act": "nope"}, "architecture.hidden_act"),                  # unknown to transformers
    ({"rms_norm_eps": "small"}, "architecture.rms_norm_eps"),
    ({"model_type": "lama"}, "architecture.model_type"),
    ({"model_type": "gpt2"}, "architecture."),
    ({"vocab_size": 0}, "architecture.vocab_size"),
    ({"num_hidden_layers": 2.0}, "architecture.num_hidden_layers"),
])
def test_bad_architecture_refused_naming_the_key(cfg, change, key):
    cfg["models"]["tiny"]["architecture"].update(change)
    msg = refused(cfg)
    assert f"config key models.tiny.{key}" in msg, msg


def test_misspelt_key_suggests_the_right_one(cfg):
    cfg["models"]["tiny"]["architecture"]["num_key_value_head"] = 2
    assert "did you mean 'num_key_value_heads'" in refused(cfg)


def test_legacy_fields_the_config_class_converts_are_accepted(cfg):
    cfg["models"]["tiny"]["architecture"]["rope_theta"] = 500000.0  # -> rope_parameters
    pbconfig.validate(cfg, check_cuda=False)


def test_architecture_checked_for_pretrained_models_too(cfg):
    """config.yaml gives pretrained models an architecture for weights: random: it must build."""
    cfg["models"]["tiny"].update(weights="pretrained", path="org/tiny")
    cfg["models"]["tiny"]["architecture"]["num_key_value_head"] = 2
    assert "models.tiny.architecture.num_key_value_head" in refused(cfg)


# --------------------------------------------------------------------------- budgets

def test_depth_budget_of_one_parameter_refused(cfg):
    """budget params 1 once gave a 0-layer model: depth can remove all blocks but one."""
    cfg["models"]["tiny"]["budget"] = {"params": 1}
    msg = refused(cfg)
    assert "config key models.tiny.budget: methods.depth-ppl:" in msg and "outside what 'depth' can reach" in msg


def test_depth_keep_first_protecting_every_block_refused(cfg):
    """keep_first 100 once gave the dense model relabelled as pruned."""
    cfg["methods"]["depth-ppl"]["keep_first"] = 100
    msg = refused(cfg)
    assert "config key methods.depth-ppl.keep_first:" in msg and "no block can be removed" in msg


def test_budget_closer_to_dense_than_one_block_refused(cfg):
    from prunebench.architecture import dense_info

    info = dense_info(cfg["models"]["tiny"])
    cfg["methods"] = {"d": {"method": "depth", "criterion": "random"}}
    cfg["models"]["tiny"]["budget"] = {"params": info.total - info.block_params[0] // 4}
    assert "config key models.tiny.budget: methods.d:" in refused(copy.deepcopy(cfg))
    cfg["models"]["tiny"]["budget"] = {"params": info.total - info.block_params[0]}  # one block: fine
    pbconfig.validate(cfg, check_cuda=False)


@pytest.mark.parametrize("budget,needle", [
    ({"params": 0.4}, "rounds to 0 parameters"),
    ({"params": float("inf")}, "finite"),
    ({"ratio": 0.999999999}, "not within (0,"),
])
def test_budgets_that_round_to_nothing_refused(cfg, budget, needle):
    cfg["models"]["tiny"]["budget"] = budget
    msg = refused(cfg)
    assert "config key models.tiny.budget" in msg and needle in msg, msg


def test_budget_rounding_to_zero_refused_without_architecture(cfg):
    cfg["models"]["tiny"] = {"weights": "pretrained", "path": "org/tiny", "budget": {"params": 0.5}}
    assert "config key models.tiny.budget.params: 0.5 rounds to 0 parameters" in refused(cfg)


@pytest.mark.parametrize("known", [True, False], ids=["architecture known", "hub model"])
def test_inverted_llm_pruner_layer_range_refused(cfg, known):
    cfg["methods"]["llm-pruner"].update(layer_start=6, layer_end=2)
    if not known:
        cfg["models"]["tiny"] = {"weights": "pretrained", "path": "org/tiny", "budget": {"ratio": 0.2}}
    assert "config key methods.llm-pruner.layer_end: [6, 2)" in refused(cfg)


def test_llm_pruner_range_past_the_model_refused(cfg):
    cfg["methods"]["llm-pruner"].update(layer_start=1, layer_end=20)  # 8 layers
    assert "config key methods.llm-pruner.layer_end:" in refused(cfg)


RANGE_CASES = [
    ("depth", {"criterion": "random"}),
    ("depth", {"criterion": "random", "keep_first": 2, "keep_last": 1}),
    ("shortgpt", {}), ("sleb", {"keep_first": 0, "keep_last": 0}), ("angular", {"keep_last": 1}),
    ("flap", {}), ("flap", {"bias_compensation": False}), ("flap", {"round_to": 8}),
    ("llm-pruner", {"importance": "l2"}), ("llm-pruner", {"importance": "l2", "layer_start": 0, "layer_end": -1}),
    ("wanda-sp", {}), ("minitron", {"round_to": 16}),
]


def test_every_method_that_takes_a_budget_declares_its_range():
    from prunebench.methods import REGISTRY

    takes_budget = {name for name, m in REGISTRY.items() if m.reachable is not None}
    assert set(REGISTRY) - takes_budget == {"dense"}
    assert takes_budget == {name for name, _ in RANGE_CASES}


@pytest.mark.parametrize("name,settings", RANGE_CASES, ids=[f"{n}{s}" for n, s in RANGE_CASES])
@pytest.mark.parametrize("gqa", [False, True], ids=["mha", "gqa"])
def test_declared_range_is_what_the_method_reaches(name, settings, gqa):
    """At both ends of its declared range every method produces a model within its declared
    tolerance, with at least one block: the declaration is the method's real range."""
    from transformers import AutoConfig, AutoModelForCausalLM

    from prunebench.methods import Budget, arch_info, get_method
    from prunebench.models import count_params

    a = tiny_arch(gqa=gqa)
    a.pop("model_type")
    config = AutoConfig.for_model("llama", **a)
    torch.manual_seed(0)
    info = arch_info(AutoModelForCausalLM.from_config(copy.deepcopy(config)))
    reach = get_method(name).reach(info, settings)
    assert 0 < reach.low < reach.high < info.total
    calib = torch.randint(0, 300, (2, 16), generator=torch.Generator().manual_seed(1))
    for target in (reach.low, reach.high):
        if reach.check is not None:
            try:
                reach.check(target)
            except ValueError:
                continue  # a gap of coarse steps: refused up front, as the method would
        torch.manual_seed(0)
        model = AutoModelForCausalLM.from_config(copy.deepcopy(config)).eval()
        out = get_method(name)(model, calib, Budget(target_params=target, dense_params=info.total), settings).model
        after = count_params(out)
        assert after < info.total, (name, target)
        assert abs(after / target - 1) <= reach.tolerance + 1e-12, (name, target, after, reach)
        assert len(out.model.layers) >= 1


def test_gaps_of_coarse_steps_are_refused_up_front(cfg):
    """round_to makes the uniform solver's steps coarse: a budget between them is refused
    before any job, with the solver's own message."""
    from prunebench.architecture import dense_info
    from prunebench.methods import get_method

    cfg["methods"] = {"m": {"method": "minitron", "round_to": 64}}
    reach = get_method("minitron").reach(dense_info(cfg["models"]["tiny"]), {"round_to": 64})
    bad = [t for t in range(reach.low, reach.high, 500) if _refuses(reach, t)]
    assert bad, "round_to 64 on 128 channels leaves gaps"
    cfg["models"]["tiny"]["budget"] = {"params": bad[0]}
    assert "config key models.tiny.budget: methods.m: minitron: cannot reach" in refused(cfg)


def _refuses(reach, target) -> bool:
    try:
        reach.check(target)
    except ValueError:
        return True
    return False


# --------------------------------------------------------------------------- paths, corpora, types

def test_path_neither_folder_nor_hub_id_refused(cfg, tmp_path):
    cfg["models"]["tiny"].update(weights="pretrained", path="/no/such/folder")
    msg = refused(copy.deepcopy(cfg))
    assert "config key models.tiny.path: '/no/such/folder' is neither a local folder" in msg
    assert "Repo id must be" not in msg
    (tmp_path / "weights.bin").write_text("x")
    cfg["models"]["tiny"]["path"] = "weights.bin"
    assert "config key models.tiny.path: 'weights.bin' is a file" in refused(copy.deepcopy(cfg))
    cfg["models"]["tiny"]["path"] = "huggyllama/llama-7b"  # a well-formed hub id: checked by the source job
    pbconfig.validate(cfg, check_cuda=False)


def test_tokenizer_path_checked(cfg):
    cfg["models"]["tiny"]["tokenizer"] = "./no-such-tokenizer"
    assert "config key models.tiny.tokenizer:" in refused(cfg)


def test_missing_corpus_file_refused_up_front(cfg):
    cfg["corpora"]["calib"]["paths"] = ["corpus.txt", "missing.txt"]
    assert "config key corpora.calib.paths: file not found: 'missing.txt'" in refused(cfg)


def test_corpus_error_is_one_line_from_the_cli(tmp_path, capsys):
    spec = json.dumps({"source": "files", "paths": [str(tmp_path / "gone.txt")]})
    rc = cli.main(["corpus", f"spec={spec}", f"out_text={tmp_path / 'c.txt'}", f"out_meta={tmp_path / 'c.json'}",
                   f"cache_dir={tmp_path}"])
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 1 and len(err) == 1 and "paths: file not found" in err[0] and "Traceback" not in err[0]


@pytest.mark.parametrize("key,value", [
    ("batch_sizes", [2.0]), ("input_lengths", [True]), ("output_lengths", [5.5]),
])
def test_float_or_bool_is_not_an_integer(cfg, key, value):
    cfg["benchmark"][key] = value
    assert f"config key benchmark.{key}[0]" in refused(cfg)


def test_float_in_method_settings_refused(cfg):
    cfg["methods"]["depth-ppl"]["keep_first"] = 2.0
    assert "config key methods.depth-ppl.keep_first" in refused(cfg)


@pytest.mark.parametrize("section", ["models", "methods", "corpora"])
def test_odd_names_refused(cfg, section):
    cfg[section]["has space"] = copy.deepcopy(next(iter(cfg[section].values())))
    assert f"config key {section}.has space: name 'has space' is not allowed" in refused(cfg)


# --------------------------------------------------------------------------- all at once

def test_schema_errors_do_not_hide_the_cross_key_ones(cfg):
    cfg["benchmark"]["batch_sizes"] = [0]                  # schema
    cfg["calibration"]["corpus"] = "nowhere"               # across keys
    cfg["models"]["tiny"]["architecture"]["num_key_value_head"] = 2  # architecture
    cfg["models"]["other"] = {"weights": "random", "architecture": tiny_arch(), "budget": {"ratio": 0.2}}
    cfg["methods"]["depth-ppl"]["keep_first"] = 100         # method range (on the valid model)
    del cfg["benchmark"]["input_lengths"]                   # missing: named itself
    msg = refused(cfg)
    for needle in ("benchmark.batch_sizes[0]", "config key calibration.corpus: 'nowhere'",
                   "models.tiny.architecture.num_key_value_head", "methods.depth-ppl.keep_first",
                   "config key benchmark.input_lengths: required"):
        assert needle in msg, (needle, msg)
    assert all(line.strip().startswith("config key ") for line in msg.splitlines()[1:]), msg


def test_stamp_does_not_hide_a_deleted_corpus_file(cfg, tmp_path):
    stamp = tmp_path / "stamps"
    pbconfig.validate(copy.deepcopy(cfg), check_cuda=False, stamp_dir=stamp)
    assert len(list(stamp.iterdir())) == 1
    pbconfig.validate(copy.deepcopy(cfg), check_cuda=False, stamp_dir=stamp)  # stamp holds
    (tmp_path / "corpus.txt").unlink()
    with pytest.raises(pbconfig.ConfigError, match="corpora.calib.paths: file not found"):
        pbconfig.validate(copy.deepcopy(cfg), check_cuda=False, stamp_dir=stamp)


# --------------------------------------------------------------------------- prune stage

def _prune_args(tmp, spec, budget):
    return [f"base_dir={tmp / 'base'}", f"calibration_path={tmp / 'calibration.safetensors'}",
            f"out_dir={tmp / 'out'}", f"report_path={tmp / 'report.json'}", "model_name=tiny",
            "method_name=m", f"method_spec={json.dumps(spec)}", f"budget_cfg={json.dumps(budget)}",
            "device=cpu", "dtype=float32"]


def test_result_outside_tolerance_fails_the_prune_job(base, monkeypatch, capsys):
    """A method that misses its budget by more than it declares is an error, not a result."""
    from prunebench.methods import base as mbase

    def sloppy(model, calibration, budget, settings):  # claims 1 %, removes nothing
        return mbase.PrunedModel(model, {})

    monkeypatch.setitem(mbase._METHODS, "sloppy", mbase.Method(
        "sloppy", sloppy, {"type": "object"}, lambda info, s: info and mbase.Reach(1, info.total - 1, 0.01)))
    rc = cli.main(["prune", *_prune_args(base, {"method": "sloppy"}, {"ratio": 0.25})])
    err = capsys.readouterr().err
    assert rc == 1 and "config key models.tiny.budget: methods.m: 'sloppy' produced" in err
    assert "outside its tolerance of 1.00%" in err
    assert not (base / "report.json").exists() and not (base / "out" / "prunebench.json").exists()


def test_unreachable_budget_fails_before_pruning(base, monkeypatch, capsys):
    """Where the architecture was not known up front (a hub model), the prune job checks the
    budget on the loaded model before any scoring."""
    from prunebench.methods import depth

    monkeypatch.setattr(depth, "ppl_scores", lambda *a, **k: pytest.fail("scored an unreachable budget"))
    rc = cli.main(["prune", *_prune_args(base, {"method": "depth", "criterion": "ppl", "keep_first": 100},
                                         {"ratio": 0.25})])
    assert rc == 1 and "config key methods.m.keep_first" in capsys.readouterr().err
    rc = cli.main(["prune", *_prune_args(base, {"method": "depth", "criterion": "ppl"}, {"params": 1})])
    assert rc == 1 and "config key models.tiny.budget: methods.m:" in capsys.readouterr().err


def test_depth_report_within_tolerance(base):
    from prunebench import prune
    from prunebench.methods import arch_info, get_method
    from prunebench.models import load_model

    rep = prune.run(*[a.split("=", 1)[1] for a in _prune_args(base, {}, {})[:4]], model_name="tiny", method_name="d",
                    method_spec={"method": "depth", "criterion": "random"}, budget_cfg={"ratio": 0.3},
                    device="cpu", dtype="float32")
    reach = get_method("depth").reach(arch_info(load_model(base / "base")), {"criterion": "random"})
    assert abs(rep["budget"]["error"]) <= reach.tolerance and rep["num_layers"] < 8


# --------------------------------------------------------------------------- cells

def _cell(root: Path, **over) -> Path:
    rec = {"schema": "prunebench-bench-cell/2", "model": "tiny", "method": "dense", "backend": "hf-eager",
           "in_len": 4, "out_len": 5, "batch": 2, "status": "ok", "dtype": "float32", "attn_implementation": "sdpa",
           "timing": {"min_runs": 2, "max_runs": 2, "warmup_new_tokens": None}, "latencies_s": [1.0, 1.0]}
    rec.update(over)
    p = root / "bench/tiny/dense/hf-eager/in4_out5_bs2.json"
    p.parent.mkdir(parents=True, exist_ok=True)
    p.write_text(json.dumps(rec))
    return p


EXPECT = {"dtype": ["benchmark.dtype", "float32"], "attn_implementation": ["benchmark.attn_implementation", "sdpa"],
          "timing": ["benchmark.timing", {"min_runs": 2, "max_runs": 2, "warmup_new_tokens": None}]}


@pytest.mark.parametrize("over,needle", [
    ({"batch": 1}, "batch is 1 but its path is 2"),
    ({"model": "other"}, "model is 'other' but its path is 'tiny'"),
    ({"backend": "compiled"}, "backend is 'compiled' but its path is 'hf-eager'"),
    ({"in_len": 40}, "in_len is 40"),
    ({"dtype": "float16"}, "dtype is 'float16' but config key benchmark.dtype is 'float32'"),
    ({"attn_implementation": "eager"}, "config key benchmark.attn_implementation"),
    ({"timing": {"min_runs": 6, "max_runs": 20}}, "config key benchmark.timing"),
    ({"timing": None}, "config key benchmark.timing"),
])
def test_cell_that_is_not_what_its_path_and_config_say_is_refused(tmp_path, over, needle):
    p = _cell(tmp_path, **over)
    with pytest.raises(ArtifactError) as exc:
        aggregate.read_cells([str(p)], EXPECT)
    assert str(exc.value).startswith(str(p)) and needle in str(exc.value), str(exc.value)


def test_matching_cell_is_read(tmp_path):
    p = _cell(tmp_path)
    assert aggregate.read_cells([str(p)], EXPECT)[0]["batch"] == 2


def test_expectations_come_from_the_config(cfg):
    pbconfig.validate(cfg, check_cuda=False)
    exp = pbconfig.cell_expectations(cfg)
    assert exp["dtype"] == ["benchmark.dtype", cfg["benchmark"]["dtype"]]
    assert exp["timing"][1] == cfg["benchmark"]["timing"] and set(exp) == set(pbconfig.CELL_FIELDS)


# --------------------------------------------------------------------------- host memory

CPU_OOM = ("[enforce fail at alloc_cpu.cpp:117] data. DefaultCPUAllocator: can't allocate memory: "
           "you tried to allocate 85899345920 bytes. Error code 12 (Cannot allocate memory)")


def test_is_oom_recognises_host_memory_failures():
    assert benchmark.is_oom(RuntimeError(CPU_OOM))
    assert benchmark.is_oom(MemoryError())
    assert benchmark.is_oom(torch.OutOfMemoryError("CUDA out of memory"))
    assert not benchmark.is_oom(RuntimeError("shape mismatch"))
    assert not benchmark.is_oom(ValueError("can't allocate memory"))  # not an allocator's error


@pytest.mark.parametrize("exc", [RuntimeError(CPU_OOM), MemoryError()], ids=["allocator", "MemoryError"])
def test_host_out_of_memory_is_a_result(tiny_model, tmp_path, monkeypatch, exc):
    from prunebench.backends import hf_eager
    from prunebench.models import save_model

    save_model(tiny_model, tmp_path / "m", model_name="tiny", method="dense", weights="safetensors")

    def boom(*a, **k):
        raise exc

    monkeypatch.setattr(hf_eager, "generate_once", boom)
    rec = benchmark.run(str(tmp_path / "m"), str(tmp_path / "c.json"), model_name="tiny", method="dense",
                        backend="hf-eager", in_len=4, out_len=3, batch=2, dtype="float32", device="cpu",
                        attn_implementation="eager", timing={"min_runs": 1, "max_runs": 1})
    on_disk = json.loads((tmp_path / "c.json").read_text())
    assert rec["status"] == on_disk["status"] == "oom" and on_disk["latency_s"] is None


# --------------------------------------------------------------------------- the workflow

@pytest.mark.workflow
def test_snakemake_refuses_before_any_job_with_every_problem(tmp_path):
    import yaml

    from workflow_util import snakemake, tiny_workdir

    cfg = tiny_workdir(tmp_path)
    data = yaml.safe_load(cfg.read_text())
    data["models"]["tiny"] = {"weights": "random", "budget": {"params": 1},
                              "architecture": dict(tiny_arch(), num_key_value_head=2)}
    data["models"]["other"] = {"weights": "pretrained", "path": "/no/such/model", "budget": {"ratio": 0.2}}
    data["corpora"]["calib"]["paths"] = ["missing.txt"]
    data["benchmark"]["batch_sizes"] = [2.0]
    data["benchmark"]["models"] = ["tiny", "tiny"]
    cfg.write_text(yaml.safe_dump(data))
    proc = snakemake(tmp_path, "-n", "--cores", "1", config=cfg, check=False)
    out = proc.stdout + proc.stderr
    assert proc.returncode != 0
    for needle in ("models.tiny.architecture.num_key_value_head", "models.other.path: '/no/such/model' is neither",
                   "corpora.calib.paths: file not found: 'missing.txt'", "benchmark.batch_sizes[0]: 2.0",
                   "benchmark.models: ['tiny', 'tiny'] has non-unique elements"):
        assert needle in out, (needle, out[-3000:])
    assert not (tmp_path / "results").exists()


def test_tokenizer_larger_than_the_vocabulary_refused(tmp_path, monkeypatch):
    """A random-weights model fed by a tokenizer with more tokens than its embedding has rows
    would fail in the first job that runs it; it is refused up front."""
    from conftest import make_text, train_tokenizer

    monkeypatch.chdir(tmp_path)
    train_tokenizer(make_text(20), 300, tmp_path / "tok")
    (tmp_path / "c.txt").write_text(make_text(5))
    cfg = {"experiment": "tok", "models": {"m": {"weights": "random", "tokenizer": "tok", "budget": {"ratio": 0.25},
                            "architecture": dict(tiny_arch(), vocab_size=120)}},
           "methods": {"dense": {"method": "dense"}},
           "corpora": {"c": {"source": "files", "paths": ["c.txt"]}},
           "calibration": {"corpus": "c"}, "perplexity": {"corpus": "c"},
           "benchmark": {"input_lengths": [4], "output_lengths": [4], "batch_sizes": [1]}}
    msg = refused(copy.deepcopy(cfg))
    assert "config key models.m.tokenizer: its" in msg and "vocab_size (120)" in msg
    cfg["models"]["m"]["architecture"]["vocab_size"] = 400
    pbconfig.validate(cfg, check_cuda=False)


def test_each_missing_key_reported_once(cfg):
    """Several required keys missing at one level: one line per key, not one per key per key."""
    for key in ("calibration", "perplexity", "corpora"):
        del cfg[key]
    for key in ("input_lengths", "batch_sizes"):
        del cfg["benchmark"][key]
    lines = refused(cfg).splitlines()[1:]
    for key in ("calibration", "perplexity", "corpora", "benchmark.input_lengths", "benchmark.batch_sizes"):
        assert sum(f"config key {key}: required, missing" in line for line in lines) == 1, lines
    assert len(lines) == len(set(lines))
