"""FLAP (WIFV metric, AL-AM structure, bias compensation) on tiny random LLaMA models."""
from __future__ import annotations

import copy

import jsonschema
import pytest
import torch

from prunebench.methods import Budget, get_method
from prunebench.methods import flap
from prunebench.models import count_params, layer_structure, load_model, save_model
from conftest import calibration, kept_columns, tiny_llama  # noqa: E402

GEOMETRIES = {"mha": (4, 4), "gqa4": (8, 2), "gqa2": (4, 2)}


def run(model, ratio=0.25, calib=None, **settings):
    budget = Budget.from_config({"ratio": ratio}, count_params(model))
    calib = calibration() if calib is None else calib
    return get_method("flap")(model, calib, budget, settings), budget


@pytest.mark.parametrize("geom", sorted(GEOMETRIES))
def test_prune_budget_structure_reload(geom, tmp_path):
    heads, kv = GEOMETRIES[geom]
    dense = tiny_llama(heads, kv, layers=10)
    res, budget = run(copy.deepcopy(dense), ratio=0.3)
    rep, pruned = res.report, res.model
    after = count_params(pruned)
    assert abs(after / budget.target_params - 1) <= 0.005
    assert rep["params_after"] == after and rep["params_before"] == count_params(dense)
    assert rep["metric"] == "wifv" and rep["structure"] == "AL-AM" and rep["bias_compensation"]
    layers = layer_structure(pruned)["layers"]
    assert rep["layers"] == layers and len(layers) == 10
    group = heads // kv
    for spec, pl in zip(layers, pruned.model.layers):
        assert 1 <= spec["kv_heads"] <= kv and spec["heads"] == spec["kv_heads"] * group  # whole KV groups
        assert 1 <= spec["intermediate"] <= 128
        assert spec["down_bias"] == (spec["intermediate"] < 128)
        assert spec["o_bias"] == (spec["heads"] < heads)
        assert pl.self_attn.num_key_value_groups == group
    # adaptive across layers: the MLP widths differ between layers
    assert len({s["intermediate"] for s in layers}) > 1

    x = calibration(2, 16, seed=5)
    with torch.no_grad():
        out = pruned(input_ids=x).logits
    assert torch.isfinite(out).all()
    save_model(pruned, tmp_path / "m", model_name="tiny", method="flap", weights="safetensors")
    again = load_model(tmp_path / "m")
    assert layer_structure(again)["layers"] == layers and count_params(again) == after
    with torch.no_grad():
        assert torch.equal(again(input_ids=x).logits, out)


def test_attention_units_are_pruned():
    """A budget deep enough that some heads (KV groups) go as well as MLP channels."""
    for heads, kv in ((4, 4), (8, 4)):
        res, budget = run(tiny_llama(heads, kv), ratio=0.45)
        layers = res.report["layers"]
        assert any(s["heads"] < heads for s in layers)
        assert abs(res.report["params_after"] / budget.target_params - 1) <= 0.005


@torch.no_grad()
def _module_inputs(model, calib, names=("o_proj", "down_proj")):
    got = {}
    hooks = []
    for i, layer in enumerate(model.model.layers):
        for mod, name in ((layer.self_attn.o_proj, "o_proj"), (layer.mlp.down_proj, "down_proj")):
            hooks.append(mod.register_forward_pre_hook(
                lambda m, a, key=(i, name): got.setdefault(key, []).append(a[0].reshape(-1, a[0].shape[-1]))))
    model(input_ids=calib)
    for h in hooks:
        h.remove()
    return {k: torch.cat(v) for k, v in got.items()}


@pytest.mark.parametrize("geom", ["mha", "gqa4"])
def test_bias_compensation_reduces_layer_error(geom):
    """On the calibration data, each pruned o_proj / down_proj with the compensation bias is
    closer to the dense module's output than without it (same kept channels)."""
    heads, kv = GEOMETRIES[geom]
    dense = tiny_llama(heads, kv)
    calib = calibration(8, 32)
    res, _ = run(copy.deepcopy(dense), ratio=0.35, calib=calib)
    inputs = _module_inputs(dense, calib)
    checked = 0
    for i, (dl, pl) in enumerate(zip(dense.model.layers, res.model.model.layers)):
        for name, dmod, pmod in (("o_proj", dl.self_attn.o_proj, pl.self_attn.o_proj),
                                 ("down_proj", dl.mlp.down_proj, pl.mlp.down_proj)):
            if pmod.in_features == dmod.in_features:
                assert pmod.bias is None
                continue
            x = inputs[(i, name)]
            keep = kept_columns(dmod.weight, pmod.weight)
            target = dmod(x)
            with_bias = pmod(x[:, keep])
            without = torch.nn.functional.linear(x[:, keep], pmod.weight)
            err_b = (with_bias - target).pow(2).mean().item()
            err_n = (without - target).pow(2).mean().item()
            assert err_b < err_n, (i, name, err_b, err_n)
            checked += 1
    assert checked >= 8


def test_no_bias_compensation():
    res, budget = run(tiny_llama(4, 4), bias_compensation=False)
    assert not any(s["o_bias"] or s["down_bias"] for s in res.report["layers"])
    assert abs(res.report["params_after"] / budget.target_params - 1) <= 0.005


@pytest.mark.parametrize("metric", ["ifv", "wifn"])
def test_other_metrics(metric):
    res, budget = run(tiny_llama(8, 2), metric=metric, batch_size=3)
    assert res.report["metric"] == metric
    assert abs(res.report["params_after"] / budget.target_params - 1) <= 0.005
    with torch.no_grad():
        assert torch.isfinite(res.model(input_ids=calibration(1, 8)).logits).all()


def test_running_statistics_match_direct():
    torch.manual_seed(0)
    chunks = [torch.randn(3, 7, 5) * 3 + 1, torch.randn(1, 2, 5), torch.randn(4, 9, 5) - 2]
    st = flap.InputStats(5, "cpu")
    for c in chunks:
        st.update(c)
    flat = torch.cat([c.reshape(-1, 5) for c in chunks]).double()
    torch.testing.assert_close(st.mean, flat.mean(0))
    torch.testing.assert_close(st.var, flat.var(0, unbiased=False))


def test_every_layer_keeps_one_unit():
    # layer 0 scores lowest everywhere: under a tight budget it still keeps its best
    # attention unit and its best MLP channel; the others fill the rest of the budget
    scores = []
    for li in range(3):
        base = -100.0 if li == 0 else 0.0
        scores.append({"attn": torch.arange(4.0) + base, "mlp": torch.arange(16.0) + base,
                       "attn_params": 40, "mlp_params": 3})
    protected = 3 * (40 + 3)
    ma, mm, _, planned = flap.select_units(scores, 100, 100 + protected + 1)
    for a, m in zip(ma, mm):
        assert int(a.sum()) == 1 and int(m.sum()) == 1
    assert bool(ma[0][3]) and bool(mm[0][15])  # its best ones
    assert planned == 100 + protected
    for target in (100 + protected + 100, 100 + protected + 333):
        ma, mm, _, planned = flap.select_units(scores, 100, target)
        assert int(ma[0].sum()) == 1 and bool(ma[0][3])
        assert abs(planned - target) <= 3 / 2  # within half an MLP channel
        assert planned == 100 + sum(int(a.sum()) * 40 + int(m.sum()) * 3 for a, m in zip(ma, mm))


def test_settings_schema():
    schema = get_method("flap").settings_schema
    jsonschema.validate({"metric": "wifv", "structure": "AL-AM", "bias_compensation": True, "batch_size": 4}, schema)
    for bad in ({"metric": "magnitude"}, {"structure": "UL-UM"}, {"ratio": 0.2}):
        with pytest.raises(jsonschema.ValidationError):
            jsonschema.validate(bad, schema)
