"""Model families: LLaMA, LLaMA-3 (llama3 rope scaling), Qwen2 (q/k/v biases, tied
embeddings), Mistral (sliding window) -- built from an ``architecture`` entry, counted,
and pruned by every method."""
from __future__ import annotations

import copy

import pytest
import torch
import yaml
from transformers import AutoModelForCausalLM

from prunebench import config as pbconfig
from prunebench.architecture import build_config, estimate_llama_params
from prunebench.methods import Budget, get_method
from prunebench.methods.width import TOLERANCE
from prunebench.models import build_random, count_params, layer_structure, load_model, save_model
from conftest import ROOT, assert_masked_dense  # noqa: E402

BASE = dict(hidden_size=64, intermediate_size=128, num_hidden_layers=6, vocab_size=128, max_position_embeddings=128)
FAMILIES = {
    "llama": dict(model_type="llama", num_attention_heads=4, num_key_value_heads=4, **BASE),
    "llama3": dict(model_type="llama", num_attention_heads=8, num_key_value_heads=2, rope_theta=500000.0,
                   rope_scaling={"rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0,
                                 "high_freq_factor": 4.0, "original_max_position_embeddings": 32}, **BASE),
    "qwen2": dict(model_type="qwen2", num_attention_heads=4, num_key_value_heads=2, tie_word_embeddings=True, **BASE),
    "mistral": dict(model_type="mistral", num_attention_heads=8, num_key_value_heads=2, sliding_window=8, **BASE),
}
METHODS = {
    "depth-ppl": ("depth", {"criterion": "ppl"}),
    "depth-taylor": ("depth", {"criterion": "taylor", "keep_first": 1, "keep_last": 1}),
    "depth-random": ("depth", {"criterion": "random"}),
    "shortgpt": ("shortgpt", {}),
    "sleb": ("sleb", {}),
    "angular": ("angular", {}),
    "llm-pruner": ("llm-pruner", {}),
    "flap": ("flap", {}),
    "wanda-sp": ("wanda-sp", {}),
    "minitron": ("minitron", {}),
}
DEPTH = {"depth", "shortgpt", "sleb", "angular"}


def family_model(family: str, seed: int = 0):
    """A tiny random model of ``family``; biases random too (HF initialises them to zero,
    which would hide a bias sliced out of step with its weight)."""
    torch.manual_seed(seed)
    model = AutoModelForCausalLM.from_config(build_config(FAMILIES[family])).eval()
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith(".bias"):
                p.normal_(0.0, 0.05)
    return model


def calib(n=4, seq=16, seed=1):
    return torch.randint(0, 128, (n, seq), generator=torch.Generator().manual_seed(seed))


def test_families_build_as_configured():
    llama3 = build_config(FAMILIES["llama3"])
    assert llama3.model_type == "llama" and llama3.rope_parameters["rope_type"] == "llama3"
    qwen = family_model("qwen2")
    assert qwen.lm_head.weight is qwen.model.embed_tokens.weight
    attn = qwen.model.layers[0].self_attn
    assert all(m.bias is not None for m in (attn.q_proj, attn.k_proj, attn.v_proj)) and attn.o_proj.bias is None
    assert build_config(FAMILIES["mistral"]).sliding_window == 8


@pytest.mark.parametrize("family", sorted(FAMILIES) + ["llama-biases"])
def test_estimate_counts_biases_and_tied_embeddings(family):
    arch = dict(FAMILIES["llama"], attention_bias=True, mlp_bias=True) if family == "llama-biases" else FAMILIES[family]
    model = build_random(build_config(arch), torch.float32, "meta")
    assert estimate_llama_params(arch) == count_params(model)


def test_unknown_model_type_refused():
    cfg = yaml.safe_load((ROOT / "config.yaml").read_text())
    cfg["models"]["llama-7b"]["architecture"]["model_type"] = "gpt2"
    with pytest.raises(pbconfig.ConfigError, match=r"config key models\.llama-7b\.architecture\.model_type: 'gpt2'"):
        pbconfig.validate(cfg, check_cuda=False)
    with pytest.raises(ValueError, match=r"architecture\.model_type: 'gpt2' is not supported"):
        build_config({"model_type": "gpt2", **BASE, "num_attention_heads": 4})
    for family in ("qwen2", "mistral"):  # accepted, and the budget check uses their count
        cfg = yaml.safe_load((ROOT / "config.yaml").read_text())
        cfg["models"]["llama-7b"]["architecture"] = dict(FAMILIES[family])
        cfg["models"]["llama-7b"]["budget"] = {"params": 10**9}
        with pytest.raises(pbconfig.ConfigError, match=r"models\.llama-7b\.budget\.params: .* not smaller"):
            pbconfig.validate(cfg, check_cuda=False)


def check_layers(dense, pruned):
    """Valid attention layouts (GQA: KV heads kept or pruned in whole groups) and every
    bias as long as its weight's rows."""
    dense_group = dense.config.num_attention_heads // dense.config.num_key_value_heads
    for spec, layer in zip(layer_structure(pruned)["layers"], pruned.model.layers):
        assert spec["heads"] % spec["kv_heads"] == 0
        assert spec["heads"] // spec["kv_heads"] in (dense_group, *range(1, dense_group + 1))
        assert layer.self_attn.num_key_value_groups == spec["heads"] // spec["kv_heads"]
        for mod in layer.modules():
            if isinstance(mod, torch.nn.Linear) and mod.bias is not None:
                assert mod.bias.shape == (mod.out_features,)


@pytest.mark.parametrize("method", sorted(METHODS))
@pytest.mark.parametrize("family", sorted(FAMILIES))
def test_every_method_on_every_family(family, method, tmp_path):
    algo, settings = METHODS[method]
    dense = family_model(family)
    n_dense = count_params(dense)
    budget = Budget.from_config({"ratio": 0.3}, n_dense)
    res = get_method(algo)(copy.deepcopy(dense), calib(), budget, dict(settings))
    pruned, rep = res.model, res.report
    after = count_params(pruned)
    assert rep["params_after"] == after < n_dense
    if algo in DEPTH:
        assert abs(after - budget.target_params) <= rep["params_per_block"][0] / 2
        assert pruned.config.num_hidden_layers == len(pruned.model.layers) == 6 - len(rep["removed_blocks"])
        if getattr(pruned.config, "layer_types", None) is not None:
            assert len(pruned.config.layer_types) == len(pruned.model.layers)
    else:
        assert abs(after / budget.target_params - 1) <= TOLERANCE
        check_layers(dense, pruned)
        if algo != "flap":  # no bias compensation: exactly the dense model with the units masked
            assert_masked_dense(dense, pruned)
    if family == "qwen2":
        assert pruned.lm_head.weight is pruned.model.embed_tokens.weight
    x = calib(2, 12, seed=3)
    with torch.no_grad():
        want = pruned(input_ids=x, use_cache=False).logits
        assert torch.isfinite(want).all()
        out = pruned.generate(input_ids=x[:1, :6], max_new_tokens=3, min_new_tokens=3, do_sample=False, pad_token_id=0)
        assert out.shape == (1, 9)
    save_model(pruned, tmp_path / "m", model_name=family, method=method, weights="safetensors")
    with torch.no_grad():
        torch.testing.assert_close(load_model(tmp_path / "m")(input_ids=x, use_cache=False).logits, want)
        if algo in DEPTH:  # a plain checkpoint of its family
            stock = AutoModelForCausalLM.from_pretrained(tmp_path / "m").eval()
            assert stock.config.model_type == dense.config.model_type
            torch.testing.assert_close(stock(input_ids=x, use_cache=False).logits, want)


@pytest.mark.parametrize("family", ["qwen2", "llama3"])
def test_width_pruned_random_weights_reload_with_their_shapes(family, tmp_path):
    """``weights: random`` folders rebuild the pruned shapes (biases included) at load time."""
    dense = family_model(family)
    res = get_method("minitron")(dense, calib(), Budget.from_config({"ratio": 0.3}, count_params(dense)), {})
    save_model(res.model, tmp_path / "r", model_name=family, method="minitron", weights="random")
    again = load_model(tmp_path / "r")
    assert layer_structure(again) == layer_structure(res.model)
    assert {n: p.shape for n, p in again.named_parameters()} == {n: p.shape for n, p in res.model.named_parameters()}
