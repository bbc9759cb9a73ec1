"""Config validation: defaults filled, every bad value refused with the key named."""
from __future__ import annotations

import copy
from pathlib import Path

import pytest
import yaml

from prunebench import config as pbconfig

from conftest import ROOT  # noqa: E402


def paper():
    return yaml.safe_load((ROOT / "config.yaml").read_text())


def test_paper_config_valid_and_defaults_filled():
    cfg = pbconfig.validate(paper(), check_cuda=False)
    assert cfg["pruning"]["device"] == "auto"
    assert cfg["benchmark"]["backends"] == ["hf-eager"]
    assert cfg["models"]["llama-7b"]["seed"] == 0
    cells = pbconfig.cells(cfg)
    assert len(cells) == 2 * len(pbconfig.bench_methods(cfg)) * 1 * 2 * 2 * 8


def test_presets_valid():
    for preset in (ROOT / "workflow" / "presets").glob("*.yaml"):
        cfg = yaml.safe_load(preset.read_text())
        if "corpora" not in cfg:  # an overlay on config.yaml
            base = paper()
            pbconfig.merge(base, cfg)
            cfg = base
        pbconfig.validate(cfg, check_cuda=False)


def _set(cfg, dotted, value):
    *parts, last = dotted.split(".")
    node = cfg
    for p in parts:
        node = node[p]
    if value is _DELETE:
        del node[last]
    else:
        node[last] = value


_DELETE = object()

BAD = [
    # (dotted key to change, value, text the error must contain)
    ("methods.bogus", {"method": "no-such-method"}, "methods.bogus.method"),
    ("models.llama-7b.budget", {"params": 9e9}, "models.llama-7b.budget.params"),
    ("models.llama-7b.budget", {"ratio": 1.0}, "models.llama-7b.budget.ratio"),
    ("models.llama-7b.budget", {"ratio": 0}, "models.llama-7b.budget.ratio"),
    ("models.llama-7b.budget", {"ratio": 0.2, "params": 5e9}, "models.llama-7b.budget"),
    ("benchmark.batch_sizes", [0, 8], "benchmark.batch_sizes[0]"),
    ("benchmark.batch_sizes", [-4], "benchmark.batch_sizes[0]"),
    ("benchmark.batch_sizes", [], "benchmark.batch_sizes"),
    ("benchmark.input_lengths", [], "benchmark.input_lengths"),
    ("benchmark.output_lengths", [128, 128], "benchmark.output_lengths"),
    ("models.llama-7b.weights", "torrent", "models.llama-7b.weights"),
    ("models.llama-7b.weights", "gguf", "models.llama-7b.gguf_file"),
    ("benchmark.dtype", "float8", "benchmark.dtype"),
    ("benchmark.device", "tpu", "benchmark.device"),
    ("benchmark.timing", {"min_runs": 0}, "benchmark.timing.min_runs"),
    ("benchmark.timing", {"min_runs": 8, "max_runs": 6}, "benchmark.timing.max_runs"),
    ("benchmark.timing", {"max_runs_typo": 3}, "benchmark.timing"),
    ("benchmark.methods", ["dense", "nope"], "benchmark.methods"),
    ("calibration.corpus", "missing-corpus", "calibration.corpus"),
    ("calibration.n_samples", 0, "calibration.n_samples"),
    ("perplexity.seq_len", 1, "perplexity.seq_len"),
    ("corpora.wikitext2", {"source": "carrier-pigeon"}, "corpora.wikitext2.source"),
    ("corpora.wikitext2", {"source": "files"}, "corpora.wikitext2.paths"),
    ("methods.depth-ppl", {"method": "depth", "criterion": "vibes"}, "methods.depth-ppl.criterion"),
    ("methods.depth-ppl", {"method": "depth", "criterion": "ppl", "keep_frist": 2}, "methods.depth-ppl"),
    ("models.vicuna-13b.architecture.num_hidden_layers", 0, "models.vicuna-13b.architecture.num_hidden_layers"),
    ("models", {}, "config key models"),
    ("benchmark.attn_implementation", "flash-magic", "benchmark.attn_implementation"),
    ("typo_key", 1, "typo_key"),
    ("benchmark.input_lengths", _DELETE, "input_lengths"),
]


@pytest.mark.parametrize("key,value,needle", BAD, ids=[f"{k}={v!r}"[:60] for k, v, _ in BAD])
def test_bad_value_refused_naming_key(key, value, needle):
    cfg = paper()
    _set(cfg, key, copy.deepcopy(value))
    with pytest.raises(pbconfig.ConfigError) as exc:
        pbconfig.validate(cfg, check_cuda=False)
    assert needle in str(exc.value), str(exc.value)


def test_missing_gguf_file(tmp_path):
    cfg = paper()
    cfg["models"]["llama-7b"].update(weights="gguf", path=str(tmp_path), gguf_file="absent.gguf")
    with pytest.raises(pbconfig.ConfigError, match=r"models\.llama-7b\.gguf_file: 'absent.gguf' not found"):
        pbconfig.validate(cfg, check_cuda=False)


def test_random_without_architecture():
    cfg = paper()
    cfg["models"]["llama-7b"].update(weights="random", architecture=None)
    with pytest.raises(pbconfig.ConfigError, match=r"models\.llama-7b\.architecture"):
        pbconfig.validate(cfg, check_cuda=False)


def test_cuda_demanded_on_cpu_machine(monkeypatch):
    import torch

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    cfg = paper()
    cfg["benchmark"]["device"] = "cuda"
    with pytest.raises(pbconfig.ConfigError, match=r"benchmark\.device: 'cuda' is demanded"):
        pbconfig.validate(cfg, check_cuda=True)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    pbconfig.validate(paper() | {"benchmark": cfg["benchmark"]}, check_cuda=True)


def test_all_errors_reported_together():
    cfg = paper()
    cfg["benchmark"]["batch_sizes"] = [0]
    cfg["benchmark"]["dtype"] = "int3"
    with pytest.raises(pbconfig.ConfigError) as exc:
        pbconfig.validate(cfg, check_cuda=False)
    assert "benchmark.batch_sizes[0]" in str(exc.value) and "benchmark.dtype" in str(exc.value)


def test_every_config_names_its_own_experiment():
    """config.yaml is the experiment 'paper'; each preset is its own, named like its file
    (prunebench run <name>), so no two write the same results/<experiment>/."""
    assert paper()["experiment"] == "paper"
    for preset in (ROOT / "workflow" / "presets").glob("*.yaml"):
        assert yaml.safe_load(preset.read_text())["experiment"] == preset.stem, preset


@pytest.mark.parametrize("name", [None, "cache", "../up", "a/b", "", ".hidden", "x" * 101])
def test_experiment_name_is_a_safe_folder_name(name):
    cfg = paper()
    if name is None:
        del cfg["experiment"]
    else:
        cfg["experiment"] = name
    with pytest.raises(pbconfig.ConfigError, match=r"config key experiment: "):
        pbconfig.validate(cfg, check_cuda=False)


def test_token_lengths_beyond_the_models_context_refused():
    """LLaMA-7B's context is 2048 tokens (max_position_embeddings): windows and benchmark
    sequences longer than that are refused naming the key; 2048 itself is accepted."""
    cfg = paper()
    cfg["perplexity"]["seq_len"] = 4096
    cfg["calibration"]["seq_len"] = 2049
    cfg["benchmark"]["input_lengths"] = [12, 1600]  # + 512 generated: 2112
    with pytest.raises(pbconfig.ConfigError) as exc:
        pbconfig.validate(cfg, check_cuda=False)
    msg = str(exc.value)
    beyond = "beyond models.llama-7b's context (max_position_embeddings 2048)"
    assert f"config key perplexity.seq_len: 4096 tokens, {beyond}" in msg
    assert f"config key calibration.seq_len: 2049 tokens, {beyond}" in msg
    assert ("config key benchmark.input_lengths: a 1600-token prompt and 512 generated tokens "
            f"(benchmark.output_lengths) make 2112 tokens, {beyond}") in msg
    ok = paper()
    ok["perplexity"]["seq_len"] = ok["calibration"]["seq_len"] = 2048
    ok["benchmark"]["input_lengths"] = [1536]
    pbconfig.validate(ok, check_cuda=False)


def test_context_of_a_model_not_benchmarked_or_with_random_weights():
    """Only benchmarked models bound the benchmark's lengths, and a model with random weights
    (no perplexity computed) does not bound the perplexity windows."""
    cfg = paper()
    cfg["models"]["llama-7b"]["architecture"]["max_position_embeddings"] = 256
    cfg["benchmark"]["models"] = ["vicuna-13b"]
    cfg["models"]["llama-7b"]["weights"] = "random"
    cfg["perplexity"]["seq_len"] = 512
    pbconfig.validate(cfg, check_cuda=False)
    cfg = paper()
    cfg["models"]["llama-7b"]["architecture"]["max_position_embeddings"] = 256
    with pytest.raises(pbconfig.ConfigError, match=r"benchmark\.input_lengths: a 82-token prompt and 512 generated "
                                                   r"tokens .* beyond models\.llama-7b's context"):
        pbconfig.validate(cfg, check_cuda=False)
