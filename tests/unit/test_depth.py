"""Depth pruning: budget solver, equivalence with skipping blocks, reload with stock transformers."""
from __future__ import annotations

import json

import pytest
import torch
from transformers import AutoModelForCausalLM

from prunebench.methods import Budget, get_method
from prunebench.methods.blocks import Skip
from prunebench.methods.depth import remove_blocks, solve_num_blocks
from prunebench.models import count_params, load_model, save_model


def test_solver_picks_closest_count():
    # 10 blocks of 100 params + 50 others = 1050; target 780 -> remove 3 (750) not 2 (850)
    assert solve_num_blocks(1050, [100] * 10, list(range(10)), 780) == 3
    assert solve_num_blocks(1050, [100] * 10, list(range(10)), 1050) == 0
    # cannot go below what the candidates allow
    assert solve_num_blocks(1050, [100] * 10, [0, 1], 100) == 2


def test_solver_llama7b_budget():
    # LLaMA-7B: 6,738,415,616 params, 32 blocks of 202,383,360; 4.9B -> 9 blocks
    total, block = 6_738_415_616, 202_383_360
    n = solve_num_blocks(total, [block] * 32, list(range(32)), 4_900_000_000)
    assert n == 9
    assert abs(total - n * block - 4.9e9) / 4.9e9 < 0.03


def test_budget_from_config():
    b = Budget.from_config({"ratio": 0.25}, 1000)
    assert b.target_params == 750 and abs(b.ratio - 0.25) < 1e-9
    assert Budget.from_config({"params": 600}, 1000).target_params == 600
    with pytest.raises(ValueError, match="budget"):
        Budget.from_config({"params": 2000}, 1000)


@torch.no_grad()
def test_removed_model_equals_skipping(tiny_model, calib):
    drop = [2, 5]
    ref = tiny_model
    with Skip(ref, 2):
        pass  # context restores the model
    assert len(ref.model.layers) == 8
    # reference: run with the blocks skipped by hand
    layers = ref.model.layers
    ref.model.layers = torch.nn.ModuleList([l for i, l in enumerate(layers) if i not in drop])
    ref.config.num_hidden_layers = 6
    expected = ref(input_ids=calib, use_cache=False).logits
    ref.model.layers, ref.config.num_hidden_layers = layers, 8
    remove_blocks(ref, drop)
    got = ref(input_ids=calib, use_cache=False).logits
    torch.testing.assert_close(got, expected)
    assert [l.self_attn.layer_idx for l in ref.model.layers] == list(range(6))
    # generation with a KV cache works after renumbering
    out = ref.generate(input_ids=calib[:1, :5], max_new_tokens=4, min_new_tokens=4, do_sample=False, pad_token_id=0)
    assert out.shape == (1, 9)


@pytest.mark.parametrize("criterion", ["ppl", "taylor", "random"])
def test_depth_method_meets_budget_and_reloads(tiny_model, calib, criterion, tmp_path):
    dense = count_params(tiny_model)
    budget = Budget.from_config({"ratio": 0.3}, dense)
    res = get_method("depth")(tiny_model, calib, budget, {"criterion": criterion, "keep_first": 1, "keep_last": 1})
    removed = res.report["removed_blocks"]
    assert len(res.report["scores"]) == 8
    assert all(1 <= i <= 6 for i in removed)  # protected blocks kept
    per_block = res.report["params_per_block"][0]
    assert abs(count_params(res.model) - budget.target_params) <= per_block / 2
    assert res.report["params_after"] == count_params(res.model)
    save_model(res.model, tmp_path, model_name="t", method="depth", weights="safetensors")
    with torch.no_grad():
        want = res.model(input_ids=calib, use_cache=False).logits
        stock = AutoModelForCausalLM.from_pretrained(tmp_path).eval()
        assert stock.config.num_hidden_layers == 8 - len(removed)
        torch.testing.assert_close(stock(input_ids=calib, use_cache=False).logits, want)
        ours = load_model(tmp_path)
        torch.testing.assert_close(ours(input_ids=calib, use_cache=False).logits, want)


def test_ppl_criterion_scores_and_removes_lowest(tiny_model, calib):
    """A block whose output projections are zero is an identity: its score is the dense PPL."""
    with torch.no_grad():
        tiny_model.model.layers[3].self_attn.o_proj.weight.zero_()
        tiny_model.model.layers[3].mlp.down_proj.weight.zero_()
    from prunebench.methods.depth import ppl_scores
    from prunebench.likelihood import mean_nll
    import math

    scores = ppl_scores(tiny_model, calib, 4)
    dense_ppl = math.exp(mean_nll(tiny_model, calib))
    assert scores[3] == pytest.approx(dense_ppl, rel=1e-5)
    dense = count_params(tiny_model)
    per_block = sum(p.numel() for p in tiny_model.model.layers[0].parameters())
    budget = Budget.from_config({"params": dense - per_block}, dense)
    res = get_method("depth")(tiny_model, calib, budget, {"criterion": "ppl"})
    # the block whose removal gives the lowest calibration PPL goes
    assert res.report["removed_blocks"] == [min(range(8), key=lambda i: scores[i])]
    assert res.report["scores"] == pytest.approx(scores)


def test_taylor_defaults_protect_first4_last2(calib):
    from conftest import tiny_arch, tiny_model_of

    model = tiny_model_of(tiny_arch(layers=10))
    budget = Budget.from_config({"ratio": 0.5}, count_params(model))
    res = get_method("depth")(model, calib, budget, {"criterion": "taylor"})
    assert res.report["protected"] == {"first": 4, "last": 2}
    assert set(res.report["removed_blocks"]) <= {4, 5, 6, 7}
    assert len(res.report["removed_blocks"]) == 4  # the most it may remove


@pytest.mark.parametrize("removed", [(), (2,), (0, 5)])
def test_nll_without_matches_full_passes(tiny_model, calib, removed, tmp_path, monkeypatch):
    """Starting from a block's cached input gives the NLL of a full pass without the blocks,
    for every candidate, including the first and the last; the cache returns the same."""
    from prunebench.methods.blocks import Skip, nll_without
    from prunebench.perplexity import mean_nll
    from prunebench import score_cache

    cands = [b for b in range(8) if b not in removed]
    got = nll_without(tiny_model, calib, removed, cands, 3)
    for b in cands:
        with Skip(tiny_model, list(removed) + [b]):
            assert got[b] == pytest.approx(mean_nll(tiny_model, calib, 3), rel=1e-6, abs=1e-6)
    monkeypatch.setenv(score_cache.ENV, str(tmp_path))
    first = nll_without(tiny_model, calib, removed, cands, 3)
    assert first == pytest.approx(got)
    (f,) = tmp_path.glob("*.json")
    assert len(json.loads(f.read_text())) == len(cands)
    calls = []
    monkeypatch.setattr("prunebench.methods.blocks._block_inputs", lambda *a: calls.append(a))
    assert nll_without(tiny_model, calib, removed, cands, 3) == first and not calls  # all read back
    with torch.no_grad():
        tiny_model.model.layers[1].mlp.down_proj.weight.mul_(2)  # another model: another key
    monkeypatch.undo()
    monkeypatch.setenv(score_cache.ENV, str(tmp_path))
    nll_without(tiny_model, calib, removed, cands[:1], 3)
    assert len(list(tmp_path.glob("*.json"))) == 2


def test_random_control_draws_like_its_criterion(calib):
    """A random control 'like: taylor' removes only blocks Taylor+ may remove, as many."""
    from conftest import tiny_arch, tiny_model_of

    depth = get_method("depth")
    assert _keep({"criterion": "random", "like": "taylor"}) == _keep({"criterion": "taylor"}) == (4, 2)
    assert _keep({"criterion": "random"}) == (0, 0)
    for seed in range(6):
        model = tiny_model_of(tiny_arch(layers=10))
        budget = Budget.from_config({"ratio": 0.3}, count_params(model))
        res = depth(model, calib, budget, {"criterion": "random", "like": "taylor", "seed": seed})
        assert set(res.report["removed_blocks"]) <= set(range(4, 8)) and res.report["protected"] == {"first": 4, "last": 2}
    with pytest.raises(ValueError, match="like"):  # only a random control draws like another criterion
        depth(model, calib, budget, {"criterion": "ppl", "like": "taylor"})


def _keep(entry: dict) -> tuple[int, int]:
    """A depth entry's protected blocks (``method`` is the entry's, not a setting)."""
    s = get_method("depth").settings({k: v for k, v in entry.items() if k != "method"})
    return s["keep_first"], s["keep_last"]


def test_demo_controls_draw_from_taylor_blocks():
    """The demo's random controls: Taylor+'s eligible blocks, every budget."""
    import yaml

    from workflow_util import ROOT

    methods = yaml.safe_load((ROOT / "workflow/presets/demo.yaml").read_text())["methods"]
    controls = [s for s in methods.values() if s["method"] == "depth" and s["criterion"] == "random"]
    assert len(controls) >= 3
    assert all(_keep(s) == _keep(methods["depth-taylor"]) for s in controls)


@pytest.mark.parametrize("margin", [0.01, 1e-6])
@pytest.mark.parametrize("ratio", [0.2, 0.4])
def test_ppl_screen_removes_what_full_precision_removes(tiny_model, calib, ratio, margin):
    """Screened in bfloat16, decided in float32 at the cut: the blocks of scoring every
    block in float32; the rescored values are float32's."""
    import copy

    dense = count_params(tiny_model)
    budget = Budget.from_config({"ratio": ratio}, dense)
    full = get_method("depth")(copy.deepcopy(tiny_model), calib, budget, {"criterion": "ppl"}).report
    got = get_method("depth")(copy.deepcopy(tiny_model), calib, budget,
                              {"criterion": "ppl", "screen": "bfloat16", "screen_margin": margin}).report
    assert got["removed_blocks"] == full["removed_blocks"] and len(full["removed_blocks"]) >= 2
    assert got["screen"] == {"dtype": "bfloat16", "margin": margin}
    checked = [i for i, v in enumerate(got["verified"]) if v is not None]
    assert checked and [got["verified"][i] for i in checked] == pytest.approx([full["scores"][i] for i in checked], rel=1e-6)
    assert got["scores"] == pytest.approx(full["scores"], rel=0.05)


def test_screen_is_the_ppl_criterions_only(calib):
    with pytest.raises(ValueError, match="screen"):
        get_method("depth").settings({"criterion": "taylor", "screen": "bfloat16"})


def test_sleb_reads_a_step_depth_ppl_scored(tiny_model, calib, tmp_path, monkeypatch):
    """SLEB's first step is the PPL criterion's scores: with the score cache, SLEB after
    depth-ppl (float32) screens nothing at that step."""
    import copy

    from prunebench import score_cache
    from prunebench.methods import blocks

    monkeypatch.setenv(score_cache.ENV, str(tmp_path))
    budget = Budget.from_config({"ratio": 0.3}, count_params(tiny_model))
    get_method("depth")(copy.deepcopy(tiny_model), calib, budget, {"criterion": "ppl", "keep_first": 1, "keep_last": 1})
    screened = []
    real = blocks.nll_without
    monkeypatch.setattr(blocks, "nll_without", lambda m, *a: screened.append(next(m.parameters()).dtype) or real(m, *a))
    import prunebench.methods.sleb as sleb

    monkeypatch.setattr(sleb, "nll_without", blocks.nll_without)
    res = get_method("sleb")(copy.deepcopy(tiny_model), calib, budget, {"screen": "bfloat16"})
    first = res.report["steps"][0]
    assert first["candidates"] == first["verified"]  # every value float32, from the cache
    assert len(res.report["steps"]) >= 2 and screened.count(torch.bfloat16) == len(res.report["steps"]) - 1


def test_screen_or_like_with_another_criterion_says_so():
    """``screen`` with Taylor+ (or ``like`` without ``random``) is refused saying why, not
    "None was expected"; a misspelt criterion is one error, not one more for ``screen``."""
    from prunebench.config import settings_problems
    from prunebench.methods.depth import SETTINGS

    assert settings_problems(SETTINGS, {"criterion": "taylor", "screen": "bfloat16"}) == [
        ("screen", "applies only with criterion 'ppl'; leave it out for this criterion (got 'bfloat16')")]
    assert settings_problems(SETTINGS, {"criterion": "ppl", "like": "taylor"}) == [
        ("like", "applies only with criterion 'random'; leave it out for this criterion (got 'taylor')")]
    got = settings_problems(SETTINGS, {"criterion": "pplx", "screen": "bfloat16", "like": "ppl"})
    assert [k for k, _ in got] == ["criterion"] and "'pplx' is not one of" in got[0][1]


def test_cached_saliency_of_other_parameters_is_computed_again(calib, tmp_path, monkeypatch, caplog):
    """Saliency sums read from the score cache must be the model's block parameters', every
    one of them and of their shapes: a file missing a parameter's total (which would lower
    its block's score) or the loss is computed again, not read."""
    import copy

    from conftest import tiny_arch, tiny_model_of
    from safetensors.torch import load_file, save_file

    from prunebench import score_cache
    from prunebench.methods import saliency

    model = tiny_model_of(tiny_arch())
    monkeypatch.setenv(score_cache.ENV, str(tmp_path))
    want = saliency.saliency(copy.deepcopy(model), calib, 2)
    (f,) = tmp_path.glob("*-saliency.safetensors")
    t = load_file(str(f))
    name = "model.layers.3.mlp.down_proj.weight"
    with pytest.raises(ValueError, match=rf"missing \['{name}.total'\]"):
        saliency.Saliency.from_tensors({k: v for k, v in t.items() if k != f"{name}.total"},
                                       saliency.block_parameters(model))
    with pytest.raises(ValueError, match=r"missing \['loss'\]"):
        saliency.Saliency.from_tensors({k: v for k, v in t.items() if k != "loss"})
    with pytest.raises(ValueError, match=rf"wrong shapes \['{name}.rows \(3,\) \(expected \(64,\)\)'\]"):
        saliency.Saliency.from_tensors({**t, f"{name}.rows": torch.zeros(3, dtype=torch.float64)},
                                       saliency.block_parameters(model))
    for broken in ({k: v for k, v in t.items() if k not in (f"{name}.total", "loss")},
                   {**t, "model.layers.9.mlp.up_proj.weight.total": torch.tensor(1.0, dtype=torch.float64)}):
        save_file(broken, str(f))
        got = saliency.saliency(copy.deepcopy(model), calib, 2)
        assert got.total == want.total and got.loss == want.loss
        assert set(load_file(str(f))) == set(t)  # rewritten whole


def test_score_cache_keys_carry_the_code_version(calib, monkeypatch):
    """Bumping the score cache's version (or a tensor set's) gives other keys: values of
    older code are not read."""
    from conftest import tiny_arch, tiny_model_of

    from prunebench import score_cache

    model = tiny_model_of(tiny_arch())
    key = score_cache.fingerprint(model, calib, 2)
    assert score_cache.fingerprint(model, calib, 2, tag="saliency/1") != key
    monkeypatch.setattr(score_cache, "VERSION", score_cache.VERSION + 1)
    assert score_cache.fingerprint(model, calib, 2) != key


def test_prune_jobs_of_one_method_hold_one_lock_in_turn(tmp_path, monkeypatch):
    """The prune jobs of one method's budgets, started at once, prune one after the other (the
    later then reads the earlier's scores from the cache); another method's do not wait."""
    import threading
    import time

    from prunebench import score_cache

    monkeypatch.setenv(score_cache.ENV, str(tmp_path))
    order, entered = [], threading.Event()

    def job(tag, name, hold_s):
        with score_cache.one_at_a_time(name):
            order.append(f"{tag} in")
            entered.set()
            time.sleep(hold_s)
            order.append(f"{tag} out")

    first = threading.Thread(target=job, args=("a", "tiny--sleb", 0.5))
    first.start()
    entered.wait()
    others = [threading.Thread(target=job, args=("b", "tiny--sleb", 0)),
              threading.Thread(target=job, args=("c", "tiny--flap", 0))]
    for t in others:
        t.start()
    for t in [first, *others]:
        t.join()
    assert order.index("b in") > order.index("a out")   # same method: after the first
    assert order.index("c out") < order.index("a out")  # another method: alongside
