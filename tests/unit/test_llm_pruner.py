"""LLM-Pruner (block-wise, torch-pruning) on tiny random LLaMA models: MHA and GQA."""
from __future__ import annotations

import copy

import jsonschema
import pytest
import torch

from prunebench.methods import Budget, get_method
from prunebench.methods import llm_pruner
from prunebench.methods.width import default_layer_range, resolve_layer_range
from prunebench.models import count_params, layer_structure, load_model, save_model
from conftest import calibration, tiny_llama  # noqa: E402

# (heads, kv_heads): MHA, GQA with 4 and with 2 query heads per KV head
GEOMETRIES = {"mha": (4, 4), "gqa4": (8, 2), "gqa2": (4, 2)}


def run(model, ratio=0.25, **settings):
    budget = Budget.from_config({"ratio": ratio}, count_params(model))
    return get_method("llm-pruner")(model, calibration(), budget, settings), budget


def kept_columns(dense_w: torch.Tensor, pruned_w: torch.Tensor) -> list[int]:
    """Which input columns of ``dense_w`` survive in ``pruned_w`` (exact match, in order)."""
    out = []
    for j in range(pruned_w.shape[1]):
        hits = (dense_w == pruned_w[:, j:j + 1]).all(0).nonzero().flatten().tolist()
        assert len(hits) == 1, "a pruned column is not a column of the dense weight"
        out.append(hits[0])
    assert out == sorted(out)
    return out


@torch.no_grad()
def masked_dense(dense, pruned):
    """The dense model with the removed heads / channels zeroed at the o_proj / down_proj input.

    Pruning whole coupled groups must give exactly this function: a q head without its
    o_proj columns contributes nothing, the same for an MLP channel and down_proj.
    """
    ref = copy.deepcopy(dense)
    for dl, pl in zip(ref.model.layers, pruned.model.layers):
        for dmod, pmod in ((dl.self_attn.o_proj, pl.self_attn.o_proj), (dl.mlp.down_proj, pl.mlp.down_proj)):
            keep = kept_columns(dmod.weight, pmod.weight)
            mask = torch.zeros(dmod.in_features, dtype=torch.bool)
            mask[keep] = True
            dmod.weight[:, ~mask] = 0
    return ref


@pytest.mark.parametrize("geom", sorted(GEOMETRIES))
@pytest.mark.parametrize("importance", ["taylor", "l2"])
def test_prune_budget_structure_coupling(geom, importance, tmp_path):
    heads, kv = GEOMETRIES[geom]
    dense = tiny_llama(heads, kv)
    model = copy.deepcopy(dense)
    res, budget = run(model, importance=importance)
    rep, pruned = res.report, res.model
    after = count_params(pruned)
    assert abs(after / budget.target_params - 1) <= 0.005
    assert rep["params_after"] == after and rep["params_before"] == count_params(dense)
    assert rep["importance"] == importance

    # layers 1..6 of 8 pruned alike; first and last untouched; KV heads kept under GQA
    start, end = default_layer_range(8)
    assert (start, end) == (1, 7) and rep["pruned_layers"] == list(range(1, 7))
    layers = layer_structure(pruned)["layers"]
    assert rep["layers"] == layers
    for i, spec in enumerate(layers):
        if start <= i < end:
            assert spec["heads"] == heads - rep["heads_removed_per_layer"] < heads
            assert spec["intermediate"] == 128 - rep["channels_removed_per_layer"] < 128
            assert spec["kv_heads"] == (spec["heads"] if heads == kv else kv)
            assert spec["heads"] % spec["kv_heads"] == 0
        else:
            assert (spec["heads"], spec["kv_heads"], spec["intermediate"]) == (heads, kv, 128)
        assert not spec["o_bias"] and not spec["down_bias"]
    for dl, pl in zip(dense.model.layers, pruned.model.layers):  # hidden size untouched
        assert pl.self_attn.q_proj.in_features == 64 and pl.mlp.down_proj.out_features == 64
        assert pl.self_attn.num_key_value_groups == pl.self_attn.q_proj.out_features // pl.self_attn.k_proj.out_features
    assert torch.equal(pruned.model.embed_tokens.weight, dense.model.embed_tokens.weight)
    assert torch.equal(pruned.lm_head.weight, dense.lm_head.weight)

    x = calibration(2, 16, seed=5)
    with torch.no_grad():
        out = pruned(input_ids=x).logits
        assert torch.isfinite(out).all()
        # q/k/v/o and gate/up/down were cut consistently (and GQA heads map to their KV head)
        ref = masked_dense(dense, pruned)(input_ids=x).logits
    torch.testing.assert_close(out, ref, rtol=1e-4, atol=1e-5)

    save_model(pruned, tmp_path / "m", model_name="tiny", method="llm-pruner", weights="safetensors")
    again = load_model(tmp_path / "m")
    assert layer_structure(again) == layer_structure(pruned) and count_params(again) == after
    with torch.no_grad():
        assert torch.equal(again(input_ids=x).logits, out)


def test_taylor_and_l2_keep_different_channels():
    kept = {}
    for imp in ("taylor", "l2"):
        res, _ = run(tiny_llama(8, 2), importance=imp)
        layer = res.model.model.layers[3]
        kept[imp] = (layer.mlp.down_proj.weight.clone(), layer.self_attn.o_proj.weight.clone())
    dense = tiny_llama(8, 2).model.layers[3]
    ch = {k: kept_columns(dense.mlp.down_proj.weight, v[0]) for k, v in kept.items()}
    assert len(ch["taylor"]) == len(ch["l2"]) and ch["taylor"] != ch["l2"]


def test_tied_embeddings_and_layer_override(tmp_path):
    dense = tiny_llama(4, 4, tied=True)
    res, budget = run(copy.deepcopy(dense), ratio=0.2, layer_start=2, layer_end=-1, importance="l2")
    assert res.report["pruned_layers"] == list(range(2, 7))
    assert res.model.lm_head.weight is res.model.model.embed_tokens.weight
    assert abs(res.report["params_after"] / budget.target_params - 1) <= 0.005
    save_model(res.model, tmp_path / "m", model_name="tiny", method="llm-pruner", weights="safetensors")
    x = calibration(2, 16, seed=7)
    with torch.no_grad():
        assert torch.equal(load_model(tmp_path / "m")(input_ids=x).logits, res.model(input_ids=x).logits)


def test_layer_range_scaling():
    assert default_layer_range(32) == (4, 30)  # LLaMA-7B recipe: layers 4..29
    assert default_layer_range(30) == (4, 28)
    assert default_layer_range(8) == (1, 7)
    assert default_layer_range(64) == (8, 60)
    assert resolve_layer_range(32, None, None) == (4, 30)
    assert resolve_layer_range(30, 3, -2) == (3, 28)
    with pytest.raises(ValueError):
        resolve_layer_range(8, 5, 3)


def test_llama7b_ratio():
    """LLaMA-7B 6.74B -> 4.9B over layers 4..29 is LLM-Pruner's ratio 0.35."""
    from transformers import LlamaConfig
    from transformers.models.llama.modeling_llama import LlamaDecoderLayer

    cfg = LlamaConfig(hidden_size=4096, intermediate_size=11008, num_attention_heads=32, num_key_value_heads=32)
    with torch.device("meta"):
        layer = LlamaDecoderLayer(cfg, 4)
    total = 6_738_415_616
    plan = llm_pruner.solve_plan(layer, 26, total, 4_900_000_000)
    assert plan["ratio"] == pytest.approx(0.35, abs=0.005)
    assert abs(plan["params_after"] / 4.9e9 - 1) <= 0.005
    assert plan["heads_removed"] == 11  # 11/32 = 0.34, nearest to 0.35
    with pytest.raises(ValueError, match="cannot reach"):
        llm_pruner.solve_plan(layer, 26, total, 1_000_000_000)


def test_settings_schema():
    schema = get_method("llm-pruner").settings_schema
    jsonschema.validate({"importance": "taylor", "layer_start": 4, "layer_end": 30, "batch_size": 2}, schema)
    for bad in ({"importance": "l1"}, {"ratio": 0.2}, {"batch_size": 0}):
        with pytest.raises(jsonschema.ValidationError):
            jsonschema.validate(bad, schema)


def test_saliency_is_the_gradient_and_is_shared(tmp_path, monkeypatch):
    """The saliency sums are |W * grad| of the mean calibration loss (gradient by hand);
    with the score cache, Taylor+ and LLM-Pruner at two budgets compute it once and prune
    as they do without the cache."""
    from prunebench import score_cache
    from prunebench.methods import saliency

    dense, calib = tiny_llama(8, 2), calibration()
    sal = saliency.compute(copy.deepcopy(dense), calib, 4)
    ref = copy.deepcopy(dense)
    loss = sum(ref(input_ids=calib[i:i + 4], labels=calib[i:i + 4]).loss * (len(calib[i:i + 4]) / len(calib))
               for i in range(0, len(calib), 4))
    loss.backward()
    w = ref.model.layers[2].mlp.down_proj.weight
    s = (w * w.grad).abs().detach()
    name = "model.layers.2.mlp.down_proj.weight"
    assert torch.allclose(sal.rows[name].float(), s.sum(1), rtol=1e-4) and torch.allclose(sal.cols[name].float(), s.sum(0), rtol=1e-4)
    block2 = sum((p * p.grad).abs().sum().item() for p in ref.model.layers[2].parameters())
    assert sal.block(dense, 2) == pytest.approx(block2, rel=1e-4) and sal.loss == pytest.approx(loss.item(), rel=1e-5)
    assert sal.block(dense, 2) == pytest.approx(sum(v for k, v in sal.total.items() if ".layers.2." in k))

    def prune_all():
        out = {}
        for ratio in (0.2, 0.3):
            budget = Budget.from_config({"ratio": ratio}, count_params(dense))
            out["llm", ratio] = get_method("llm-pruner")(copy.deepcopy(dense), calib, budget, {"batch_size": 4})
            out["taylor", ratio] = get_method("depth")(copy.deepcopy(dense), calib, budget,
                                                       {"criterion": "taylor", "keep_first": 1, "keep_last": 1,
                                                        "batch_size": 4})
        return out

    fresh = prune_all()
    computed = []
    real = saliency.compute
    monkeypatch.setattr(saliency, "compute", lambda *a: computed.append(1) or real(*a))
    monkeypatch.setenv(score_cache.ENV, str(tmp_path))
    cached = prune_all()
    assert len(computed) == 1 and len(list(tmp_path.glob("*-saliency.safetensors"))) == 1
    for key, res in cached.items():
        assert layer_structure(res.model) == layer_structure(fresh[key].model)
        for p, q in zip(res.model.parameters(), fresh[key].model.parameters()):
            assert torch.equal(p, q)
    assert cached["taylor", 0.2].report["scores"] == fresh["taylor", 0.2].report["scores"]
