"""ShortGPT, SLEB, angular distance, Wanda-sp, Minitron and aligned widths (round_to) on
tiny random LLaMA models: scores against an independent computation, budget, reload."""
from __future__ import annotations

import copy
import math

import jsonschema
import pytest
import torch
import torch.nn.functional as F
from transformers import AutoModelForCausalLM, LlamaConfig, LlamaForCausalLM

from prunebench.methods import Budget, get_method
from prunebench.methods.width import TOLERANCE, channel_options, solve_plan
from prunebench.models import count_params, layer_structure, load_model, save_model
from conftest import assert_masked_dense, calibration, kept_columns, tiny_llama  # noqa: E402

GEOMETRIES = {"mha": (4, 4), "gqa": (8, 2)}


def run(method, model, ratio=0.3, calib=None, **settings):
    budget = Budget.from_config({"ratio": ratio}, count_params(model))
    calib = calibration() if calib is None else calib
    return get_method(method)(model, calib, budget, settings), budget


@torch.no_grad()
def boundaries(model, calib) -> list[torch.Tensor]:
    """The residual stream at every block boundary, by hooks on the blocks (float64):
    the input of each block, then the output of the last one."""
    got, hooks = {}, []
    layers = model.model.layers
    for i, layer in enumerate(layers):
        hooks.append(layer.register_forward_pre_hook(
            lambda m, a, kw, i=i: got.__setitem__(i, (a[0] if a else kw["hidden_states"]).double()), with_kwargs=True))
    hooks.append(layers[-1].register_forward_hook(
        lambda m, a, out: got.__setitem__(len(layers), (out[0] if isinstance(out, tuple) else out).double())))
    model(input_ids=calib, use_cache=False)
    for h in hooks:
        h.remove()
    return [got[i] for i in range(len(layers) + 1)]


def cos_by_hand(a, b):
    return (a * b).sum(-1) / (a.norm(dim=-1) * b.norm(dim=-1))


@torch.no_grad()
def make_identity(model, blocks):
    """Zero the output projections of ``blocks``: each adds nothing to the residual stream."""
    for i in blocks:
        model.model.layers[i].self_attn.o_proj.weight.zero_()
        model.model.layers[i].mlp.down_proj.weight.zero_()


def assert_reloads(model, tmp_path, stock=False):
    x = calibration(2, 16, seed=5)
    save_model(model, tmp_path / "m", model_name="tiny", method="m", weights="safetensors")
    with torch.no_grad():
        want = model(input_ids=x, use_cache=False).logits
        assert torch.isfinite(want).all()
        torch.testing.assert_close(load_model(tmp_path / "m")(input_ids=x, use_cache=False).logits, want)
        if stock:  # depth-pruned: a plain checkpoint of its family
            again = AutoModelForCausalLM.from_pretrained(tmp_path / "m").eval()
            torch.testing.assert_close(again(input_ids=x, use_cache=False).logits, want)


def assert_depth_budget(res, budget):
    per_block = res.report["params_per_block"][0]
    assert abs(count_params(res.model) - budget.target_params) <= per_block / 2
    assert res.report["params_after"] == count_params(res.model)
    assert len(res.model.model.layers) == res.report["num_layers_after"]


# --------------------------------------------------------------------------- ShortGPT

@pytest.mark.parametrize("geom", sorted(GEOMETRIES))
def test_shortgpt_block_influence_by_hand(geom, tmp_path):
    dense = tiny_llama(*GEOMETRIES[geom])
    make_identity(dense, [3])
    calib = calibration()
    x = boundaries(dense, calib)
    by_hand = [float(1 - cos_by_hand(x[i], x[i + 1]).mean()) for i in range(8)]
    res, budget = run("shortgpt", copy.deepcopy(dense), calib=calib, batch_size=3)
    assert res.report["scores"] == pytest.approx(by_hand, rel=1e-5, abs=1e-7)
    assert abs(by_hand[3]) < 1e-6  # an identity block does not turn the hidden state
    n = len(res.report["removed_blocks"])
    assert n >= 2 and res.report["removed_blocks"] == sorted(sorted(range(8), key=lambda i: by_hand[i])[:n])
    assert 3 in res.report["removed_blocks"]
    assert_depth_budget(res, budget)
    assert_reloads(res.model, tmp_path, stock=True)


def test_shortgpt_protects_blocks():
    res, _ = run("shortgpt", tiny_llama(4, 4), keep_first=2, keep_last=3)
    assert res.report["removed_blocks"] and all(2 <= i < 5 for i in res.report["removed_blocks"])


# --------------------------------------------------------------------------- angular distance

@pytest.mark.parametrize("tokens", ["last", "all"])
def test_angular_distances_by_hand(tokens, tmp_path):
    dense = tiny_llama(8, 2)
    make_identity(dense, [2, 3])  # x(2) == x(4): the run of blocks 2, 3 has distance 0
    calib = calibration()
    x = boundaries(dense, calib)
    if tokens == "last":
        x = [h[:, -1] for h in x]
    d = torch.tensor([[float((torch.arccos(cos_by_hand(a, b).clamp(-1, 1)) / math.pi).mean()) for b in x] for a in x],
                     dtype=torch.float64)
    per_block = sum(p.numel() for p in dense.model.layers[0].parameters())
    budget = Budget.from_config({"params": count_params(dense) - 2 * per_block}, count_params(dense))
    res = get_method("angular")(copy.deepcopy(dense), calib, budget, {"tokens": tokens, "batch_size": 3})
    rep = res.report
    torch.testing.assert_close(torch.tensor(rep["distances"], dtype=torch.float64), d.double(), rtol=1e-4, atol=1e-6)
    assert rep["tokens"] == tokens and rep["vectors"] == (8 if tokens == "last" else 8 * 32)
    assert rep["run"] == {"start": 2, "length": 2} and rep["removed_blocks"] == [2, 3]
    assert rep["scores"] == pytest.approx([float(d[l, l + 2]) for l in range(7)], rel=1e-4, abs=1e-6)
    assert_depth_budget(res, budget)
    assert_reloads(res.model, tmp_path, stock=True)


def test_angular_run_length_from_budget_and_protection():
    dense = tiny_llama(4, 4)
    make_identity(dense, [2, 3])
    res, budget = run("angular", copy.deepcopy(dense), ratio=0.3, keep_first=3, keep_last=1)
    rep = res.report
    assert rep["run"]["start"] >= 3 and rep["run"]["start"] + rep["run"]["length"] <= 7
    assert rep["removed_blocks"] == list(range(rep["run"]["start"], rep["run"]["start"] + rep["run"]["length"]))
    d = torch.tensor(rep["distances"])
    n = rep["run"]["length"]
    assert rep["run"]["start"] == min(range(3, 8 - 1 - n + 1), key=lambda l: float(d[l, l + n]))
    assert_depth_budget(res, budget)


# --------------------------------------------------------------------------- SLEB

@torch.no_grad()
def ppl_by_hand(model, calib, drop) -> float:
    m = copy.deepcopy(model)
    m.model.layers = torch.nn.ModuleList([l for i, l in enumerate(m.model.layers) if i not in drop])
    m.config.num_hidden_layers = len(m.model.layers)
    logits = m(input_ids=calib, use_cache=False).logits
    return math.exp(F.cross_entropy(logits[:, :-1].reshape(-1, logits.shape[-1]), calib[:, 1:].reshape(-1)).item())


def test_sleb_picks_by_brute_force(tmp_path):
    dense = tiny_llama(8, 2)
    calib = calibration(6, 24)
    res, budget = run("sleb", copy.deepcopy(dense), calib=calib, batch_size=4)
    rep = res.report
    order = rep["removal_order"]
    assert len(order) >= 2 and rep["removed_blocks"] == sorted(order)
    # step 1: the block whose removal alone gives the lowest calibration PPL (blocks 1..6)
    first = {j: ppl_by_hand(dense, calib, [j]) for j in range(1, 7)}
    assert order[0] == min(first, key=first.get)
    assert [rep["scores"][j] for j in range(1, 7)] == pytest.approx([first[j] for j in range(1, 7)], rel=1e-4)
    assert rep["scores"][0] is None and rep["scores"][7] is None  # protected
    # step 2: re-scored on the model without the first block
    second = {j: ppl_by_hand(dense, calib, [order[0], j]) for j in range(1, 7) if j != order[0]}
    assert order[1] == min(second, key=second.get)
    assert rep["steps"][1]["ppl"] == pytest.approx(second[order[1]], rel=1e-4)
    assert_depth_budget(res, budget)
    assert_reloads(res.model, tmp_path, stock=True)


@pytest.mark.parametrize("margin", [0.01, 1e-6])
def test_sleb_screen_removes_what_full_precision_removes(margin):
    """Screened in bfloat16, rescored in float32: the same blocks in the same order, the
    same float32 perplexity of each step, also with a margin far below the screen's error
    (it grows to four times the error seen)."""
    dense, calib = tiny_llama(8, 2), calibration(6, 24)
    full, _ = run("sleb", copy.deepcopy(dense), ratio=0.4, calib=calib, batch_size=4)
    screened, _ = run("sleb", copy.deepcopy(dense), ratio=0.4, calib=calib, batch_size=4,
                      screen="bfloat16", screen_margin=margin)
    a, b = full.report, screened.report
    assert len(a["removal_order"]) >= 3 and b["removal_order"] == a["removal_order"]
    assert b["screen"] == {"dtype": "bfloat16", "margin": margin} and a["screen"] is None
    for sa, sb in zip(a["steps"], b["steps"]):
        assert sb["ppl"] == pytest.approx(sa["ppl"], rel=1e-6)
        checked = [i for i, v in enumerate(sb["verified"]) if v is not None]
        assert sa["removed"] in checked
        assert [sb["verified"][i] for i in checked] == pytest.approx([sa["candidates"][i] for i in checked], rel=1e-6)
        # the screen's own values are close to, not equal to, float32's
        scored = [i for i, v in enumerate(sa["candidates"]) if v is not None]
        assert [sb["candidates"][i] for i in scored] == pytest.approx([sa["candidates"][i] for i in scored], rel=0.05)
    assert all(p.dtype == torch.float32 for p in screened.model.parameters())


def test_sleb_budgets_share_their_steps(tmp_path, monkeypatch):
    """With the score cache, a larger budget continues the smaller one's steps: the same
    order as a fresh run, and only the new steps are scored."""
    from prunebench import score_cache
    from prunebench.methods import blocks

    dense, calib = tiny_llama(8, 2), calibration(6, 24)
    fresh, _ = run("sleb", copy.deepcopy(dense), ratio=0.4, calib=calib, batch_size=6)
    monkeypatch.setenv(score_cache.ENV, str(tmp_path))
    small, _ = run("sleb", copy.deepcopy(dense), ratio=0.2, calib=calib, batch_size=6)
    passes = []
    inputs = blocks._block_inputs
    monkeypatch.setattr(blocks, "_block_inputs", lambda *a: passes.append(1) or inputs(*a))
    large, _ = run("sleb", copy.deepcopy(dense), ratio=0.4, calib=calib, batch_size=6)
    n_small, order = len(small.report["removal_order"]), fresh.report["removal_order"]
    assert 0 < n_small < len(order)
    assert small.report["removal_order"] == order[:n_small] and large.report["removal_order"] == order
    assert len(passes) == len(order) - n_small  # one batch: one input pass per new step
    assert [s["ppl"] for s in large.report["steps"]] == pytest.approx([s["ppl"] for s in fresh.report["steps"]])


# --------------------------------------------------------------------------- width: helpers

@torch.no_grad()
def module_inputs(model, calib, layer_ids=None):
    """Inputs of o_proj / down_proj of each layer ([windows, seq, features], float64)."""
    got, hooks = {}, []
    for i, layer in enumerate(model.model.layers):
        if layer_ids is not None and i not in layer_ids:
            continue
        for name, mod in (("o_proj", layer.self_attn.o_proj), ("down_proj", layer.mlp.down_proj)):
            hooks.append(mod.register_forward_pre_hook(lambda m, a, key=(i, name): got.__setitem__(key, a[0].double())))
    model(input_ids=calib, use_cache=False)
    for h in hooks:
        h.remove()
    return got


def top(scores, k):
    return sorted(torch.argsort(torch.as_tensor(scores), descending=True, stable=True)[:k].tolist())


def assert_width_budget(res, budget):
    after = count_params(res.model)
    assert abs(after / budget.target_params - 1) <= TOLERANCE
    assert res.report["params_after"] == after
    assert res.report["layers"] == layer_structure(res.model)["layers"]


def kept_heads(dense_attn, pruned_attn) -> list[int]:
    hd = dense_attn.head_dim
    cols = kept_columns(dense_attn.o_proj.weight, pruned_attn.o_proj.weight)
    return sorted({c // hd for c in cols})


# --------------------------------------------------------------------------- Wanda-sp

def wanda_by_hand(weight, x, heads=None):
    norm = (x.pow(2).sum(dim=(0, 1)) / x.shape[0]).sqrt()
    s = (weight.double().abs() * norm).mean(0)
    return s.view(heads, -1).sum(1) if heads else s


@pytest.mark.parametrize("geom", sorted(GEOMETRIES))
def test_wanda_sp_scores_sequential_and_budget(geom, tmp_path):
    heads, kv = GEOMETRIES[geom]
    dense = tiny_llama(heads, kv)
    calib = calibration()
    res, budget = run("wanda-sp", copy.deepcopy(dense), ratio=0.3, calib=calib, batch_size=3)
    rep, pruned = res.report, res.model
    assert rep["heads_removed_per_layer"] > 0 and rep["channels_removed_per_layer"] > 0
    inputs = module_inputs(dense, calib, {0, 1})
    # layer 0 sees the dense model's inputs
    h0 = wanda_by_hand(dense.model.layers[0].self_attn.o_proj.weight, inputs[(0, "o_proj")], heads)
    assert rep["head_scores"][0] == pytest.approx(h0.tolist(), rel=1e-4)
    c0 = wanda_by_hand(dense.model.layers[0].mlp.down_proj.weight, inputs[(0, "down_proj")])
    kept = kept_columns(dense.model.layers[0].mlp.down_proj.weight, pruned.model.layers[0].mlp.down_proj.weight)
    assert kept == top(c0, 128 - rep["channels_removed_per_layer"])
    if heads == kv:
        assert kept_heads(dense.model.layers[0].self_attn, pruned.model.layers[0].self_attn) == \
            top(h0, heads - rep["heads_removed_per_layer"])
    # layer 1 is scored on the model whose layer 0 is already pruned (as the reference)
    seq = copy.deepcopy(dense)
    seq.model.layers[0] = copy.deepcopy(pruned.model.layers[0])
    h1 = wanda_by_hand(dense.model.layers[1].self_attn.o_proj.weight, module_inputs(seq, calib, {1})[(1, "o_proj")], heads)
    assert rep["head_scores"][1] == pytest.approx(h1.tolist(), rel=1e-4)
    h1_dense = wanda_by_hand(dense.model.layers[1].self_attn.o_proj.weight, inputs[(1, "o_proj")], heads)
    assert not torch.allclose(h1, h1_dense)
    # the same widths in every layer; GQA: KV heads kept, same count from every group
    specs = {(s["heads"], s["kv_heads"], s["intermediate"]) for s in rep["layers"]}
    assert specs == {(heads - rep["heads_removed_per_layer"], kv if kv < heads else heads - rep["heads_removed_per_layer"],
                      128 - rep["channels_removed_per_layer"])}
    assert_width_budget(res, budget)
    assert_masked_dense(dense, pruned)
    assert_reloads(pruned, tmp_path)


def test_wanda_sp_layer_by_layer_is_the_full_pass_per_layer():
    """Each layer's input kept from the pruned layer before it gives the scores and widths
    of running the whole model up to the layer for every layer (the same numbers)."""
    from prunebench.methods.wanda_sp import InputNorm, channel_scores
    from prunebench.methods.passes import feed_calibration
    from prunebench.methods.width import attn_geometry, prune_uniform, solve_plan

    dense, calib = tiny_llama(8, 2), calibration()
    res, budget = run("wanda-sp", copy.deepcopy(dense), ratio=0.3, calib=calib, batch_size=3)
    ref = copy.deepcopy(dense)
    layers = ref.model.layers
    plan = solve_plan(layers[0], len(layers), count_params(ref), budget.target_params)
    want = []
    with torch.no_grad():
        for layer in layers:
            a, m = InputNorm(), InputNorm()
            feed_calibration(ref, calib, 3, {layer.self_attn.o_proj: a.update, layer.mlp.down_proj: m.update},
                             stop_after=layer)
            g = attn_geometry(layer.self_attn)
            heads = channel_scores(layer.self_attn.o_proj.weight, a).view(g.heads, g.head_dim).sum(1)
            prune_uniform(layer, heads, channel_scores(layer.mlp.down_proj.weight, m), plan)
            want.append(heads.tolist())
    assert res.report["head_scores"] == want
    assert layer_structure(res.model) == layer_structure(ref)
    for p, q in zip(res.model.parameters(), ref.parameters()):
        assert torch.equal(p, q)


# --------------------------------------------------------------------------- Minitron

def minitron_by_hand(x, heads=None):
    a = x.abs().mean(dim=1).pow(2).sum(0).sqrt()
    return a.view(heads, -1).norm(dim=1) if heads else a


@pytest.mark.parametrize("geom", sorted(GEOMETRIES))
def test_minitron_scores_and_uniform_widths(geom, tmp_path):
    heads, kv = GEOMETRIES[geom]
    dense = tiny_llama(heads, kv)
    calib = calibration()
    res, budget = run("minitron", copy.deepcopy(dense), ratio=0.3, calib=calib, batch_size=5)
    rep, pruned = res.report, res.model
    a, c = rep["heads_removed_per_layer"], rep["channels_removed_per_layer"]
    assert a > 0 and c > 0
    inputs = module_inputs(dense, calib)  # one pass over the dense model scores every layer
    group = heads // kv
    for i, (dl, pl) in enumerate(zip(dense.model.layers, pruned.model.layers)):
        hs = minitron_by_hand(inputs[(i, "o_proj")], heads)
        assert rep["head_scores"][i] == pytest.approx(hs.tolist(), rel=1e-4)
        ch = minitron_by_hand(inputs[(i, "down_proj")])
        assert kept_columns(dl.mlp.down_proj.weight, pl.mlp.down_proj.weight) == top(ch, 128 - c)
        got = kept_heads(dl.self_attn, pl.self_attn)
        if heads == kv:
            assert got == top(hs, heads - a)
        else:  # every KV group keeps its own best heads, the same number
            want = [g * group + j for g in range(kv) for j in top(hs[g * group:(g + 1) * group], group - a // kv)]
            assert got == want
            assert pl.self_attn.k_proj.out_features == dl.self_attn.k_proj.out_features
    assert len({(s["heads"], s["kv_heads"], s["intermediate"]) for s in rep["layers"]}) == 1
    assert_width_budget(res, budget)
    assert_masked_dense(dense, pruned)
    assert_reloads(pruned, tmp_path)


# --------------------------------------------------------------------------- round_to

def wide_llama(heads=4, kv=4, layers=4, inter=1024, seed=0):
    cfg = LlamaConfig(vocab_size=128, hidden_size=32, intermediate_size=inter, num_hidden_layers=layers,
                      num_attention_heads=heads, num_key_value_heads=kv, head_dim=32 // heads,
                      max_position_embeddings=64, tie_word_embeddings=False)
    torch.manual_seed(seed)
    return LlamaForCausalLM(cfg).eval()


def test_channel_options():
    assert channel_options(10, 4) == [0, 2, 6]  # kept 10 (all), 8, 4
    assert channel_options(8, 1) == list(range(8))
    assert channel_options(128, 64) == [0, 64]


@pytest.mark.parametrize("method,settings", [("llm-pruner", {"importance": "l2"}), ("flap", {}),
                                             ("wanda-sp", {}), ("minitron", {})])
@pytest.mark.parametrize("geom", ["mha", "gqa"])
def test_round_to_aligns_mlp_widths(method, settings, geom, tmp_path):
    heads, kv = {"mha": (4, 4), "gqa": (4, 2)}[geom]
    res, budget = run(method, wide_llama(heads, kv), ratio=0.25, calib=calibration(4, 16), round_to=8, **settings)
    widths = [s["intermediate"] for s in res.report["layers"]]
    assert all(w % 8 == 0 for w in widths) and min(widths) < 1024, widths
    assert res.report["round_to"] == 8
    assert abs(res.report["params_after"] / budget.target_params - 1) <= TOLERANCE
    assert res.report["params_after"] == count_params(res.model)
    if method == "flap":
        assert len(set(widths)) > 1  # still adaptive across layers
    assert_reloads(res.model, tmp_path)


def test_flap_round_to_not_dividing_the_width():
    # 1024 = 42 * 24 + 16: a kept width is a multiple of 24, or the whole 1024
    res, budget = run("flap", wide_llama(), ratio=0.25, calib=calibration(4, 16), round_to=24)
    widths = [s["intermediate"] for s in res.report["layers"]]
    assert all(w % 24 == 0 or w == 1024 for w in widths) and min(widths) < 1024
    assert abs(res.report["params_after"] / budget.target_params - 1) <= TOLERANCE


def test_round_to_unreachable_budget_says_what_is_reachable():
    # kept widths 512 or 1024 in all 4 layers: 25 % off is out of reach within 0.5 %
    model = wide_llama()
    for method, extra in (("wanda-sp", {}), ("minitron", {}), ("llm-pruner", {"layer_start": 0, "layer_end": 4})):
        with pytest.raises(ValueError, match=r"cannot reach .*multiples of 512.*reachable: [\d,]+ \.\. [\d,]+"):
            run(method, copy.deepcopy(model), ratio=0.25, calib=calibration(2, 8), round_to=512, **extra)


def test_round_to_64_on_llama7b_shapes():
    from transformers.models.llama.modeling_llama import LlamaDecoderLayer

    cfg = LlamaConfig(hidden_size=4096, intermediate_size=11008, num_attention_heads=32, num_key_value_heads=32)
    with torch.device("meta"):
        layer = LlamaDecoderLayer(cfg, 4)
    total = 6_738_415_616
    for n_layers in (26, 32):  # llm-pruner's layers 4..29; wanda-sp / minitron: all
        plan = solve_plan(layer, n_layers, total, 4_900_000_000, round_to=64)
        assert (11008 - plan["channels_removed"]) % 64 == 0
        assert abs(plan["params_after"] / 4.9e9 - 1) <= TOLERANCE
    assert solve_plan(layer, 26, total, 4_900_000_000)["heads_removed"] == 11  # round_to 1 unchanged


# --------------------------------------------------------------------------- settings

@pytest.mark.parametrize("name", ["shortgpt", "sleb", "angular", "wanda-sp", "minitron", "llm-pruner", "flap"])
def test_settings_schemas_hold_defaults(name):
    schema = get_method(name).settings_schema
    props = schema["properties"]
    assert props and all("default" in p for p in props.values()), name
    jsonschema.validate({k: p["default"] for k, p in props.items()}, schema)
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate({"no_such_setting": 1}, schema)
    if "round_to" in props:
        assert props["round_to"]["default"] == 1
        with pytest.raises(jsonschema.ValidationError):
            jsonschema.validate({"round_to": 0}, schema)
