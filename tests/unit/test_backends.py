"""Backends: the compiled backend's greedy tokens equal model.generate's (MHA, GQA, depth- and
width-pruned models, eager and SDPA attention), exact output shape, compile time kept out of
generation, roofline arithmetic."""
from __future__ import annotations

import os
import shutil

import pytest
import torch

from prunebench import backends, devices, roofline
from prunebench.backends import CompiledBackend
from prunebench.backends import compiled as compiled_mod
from prunebench.backends import dynamo
from prunebench.backends import hf_eager
from prunebench.tools import selfcheck
from prunebench.tools.selfcheck import check_equivalence
from prunebench.backends.hf_eager import generate_once
from prunebench.models import is_uniform, layer_structure

from conftest import tiny_arch, tiny_model_of  # noqa: F401
from model_variants import (BATCH, IN, OUT, VARIANTS, depth_pruned as _depth_pruned, flap_like as _flap_like,  # noqa: E402
                            model as _model, prompt as _prompt, scramble as _scramble, width_pruned as _width_pruned)

@pytest.fixture(autouse=True)
def _one_thread():
    """Tiny models: threads only cost (OpenMP spinning on a busy machine made this file 10x slower)."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


@pytest.mark.parametrize("attn", ["eager", "sdpa"])
@pytest.mark.parametrize("variant", list(VARIANTS))
def test_tokens_equal_eager(variant, attn):
    model = _scramble(VARIANTS[variant](attn))
    prompt = _prompt()
    ok, info = check_equivalence(model, prompt, OUT, CompiledBackend())
    assert ok, info
    assert info["compiled"] is False and info["cuda_graphs"] is False  # CPU defaults
    ref = generate_once(model, prompt, OUT)[:, IN:]
    assert min(len(set(r)) for r in ref.tolist()) > OUT // 2  # the check is not vacuous


@pytest.mark.parametrize("fuse", [False, True])
def test_unfused_and_fused_weights(fuse):
    model = _scramble(_width_pruned(True, "eager"))
    before = {k: v.clone() for k, v in model.state_dict().items()}
    ok, info = check_equivalence(model, _prompt(), OUT, CompiledBackend(fuse=fuse))
    assert ok, info
    # fusion turns parameters into views of one weight: same values, same structure
    after = model.state_dict()
    assert before.keys() == after.keys() and all(torch.equal(before[k], after[k]) for k in before)
    assert not is_uniform(model) and layer_structure(model)["layers"][2]["heads"] == 6
    # preparing again reuses the fused weights
    be = CompiledBackend(fuse=fuse)
    be.prepare(model, BATCH, IN, OUT)
    assert torch.equal(be.generate(_prompt(), OUT), generate_once(model, _prompt(), OUT))


def test_logits_match_step_by_step():
    """Stronger than argmax: every step's logits equal a full forward over the same tokens."""
    model = _scramble(_width_pruned(True, "sdpa"))
    seen = []

    class Recording(CompiledBackend):
        def _next_token(self, x):
            seen.append(self.lm_head(self.norm(x[:, -1:, :]))[:, -1, :].float().clone())
            return super()._next_token(x)

    be = Recording()
    be.prepare(model, BATCH, IN, OUT)
    seen.clear()
    out = be.generate(_prompt(), OUT)
    assert len(seen) == OUT
    with torch.no_grad():
        full = model(input_ids=out[:, :-1], use_cache=False).logits.float()
    for t, logits in enumerate(seen):
        torch.testing.assert_close(logits, full[:, IN - 1 + t], rtol=1e-4, atol=1e-4)


def test_eos_is_never_generated():
    """Like min_new_tokens = max_new_tokens: EOS is forbidden even where it would win."""
    model = _scramble(_model(False))
    eos = model.generation_config.eos_token_id
    with torch.no_grad():
        model.lm_head.weight[eos] = model.lm_head.weight[150] * 5  # EOS would often be the argmax
    ok, info = check_equivalence(model, _prompt(), OUT, CompiledBackend())
    assert ok, info
    be = CompiledBackend()
    be.prepare(model, BATCH, IN, OUT)
    assert not (be.generate(_prompt(), OUT)[:, IN:] == eos).any()
    be_no_mask = CompiledBackend()
    be_no_mask.prepare(model, BATCH, IN, OUT)
    be_no_mask.eos = None
    assert (be_no_mask.generate(_prompt(), OUT)[:, IN:] == eos).any()  # the test has teeth


def test_output_shape_and_shorter_runs():
    model = _scramble(_model(True))
    be = CompiledBackend()
    be.prepare(model, 2, 5, 9)
    p = _prompt(batch=2, in_len=5)
    out = be.generate(p, 9)
    assert out.shape == (2, 5 + 9) and out.dtype == torch.long and torch.equal(out[:, :5], p)
    short = be.generate(p, 3)  # warm-up runs may ask for fewer tokens
    assert short.shape == (2, 8) and torch.equal(short, out[:, :8])
    assert torch.equal(be.generate(p, 9), out)  # repeatable: the static cache is reset by prefill
    one = CompiledBackend()
    one.prepare(model, 2, 5, 1)
    assert torch.equal(one.generate(p, 1), out[:, :6])
    with pytest.raises(ValueError, match="prepared for"):
        be.generate(p, 10)
    with pytest.raises(ValueError, match="prepared for"):
        be.generate(_prompt(batch=3, in_len=5), 9)


def test_compile_time_reported_and_excluded(monkeypatch):
    model = _scramble(_model(False))
    be = CompiledBackend()
    with pytest.raises(RuntimeError, match="prepare"):
        be.generate(_prompt(), OUT)
    info = be.prepare(model, BATCH, IN, OUT)
    assert isinstance(info["compile_s"], float) and info["compile_s"] >= 0
    assert info["max_len"] >= IN + OUT and info["max_len"] % 16 == 0

    # generate never compiles, captures or allocates caches: all of that is prepare's (compile_s)
    def forbidden(*a, **k):
        raise AssertionError("generate must not prepare")

    monkeypatch.setattr(torch, "compile", forbidden)
    monkeypatch.setattr(CompiledBackend, "_capture", forbidden)
    monkeypatch.setattr(CompiledBackend, "prepare", forbidden)
    cache = be.k[0]
    out = be.generate(_prompt(), OUT)
    assert out.shape == (BATCH, IN + OUT) and be.k[0] is cache


def test_registry_and_hf_eager_backend(monkeypatch):
    assert {"hf-eager", "compiled"} <= set(backends.BACKENDS)
    with pytest.raises(ValueError, match="benchmark.backends"):
        backends.make_backend("nope")
    model = _model(True)
    be = backends.make_backend("hf-eager")
    assert be.prepare(model, BATCH, IN, OUT) == {"compile_s": 0.0}
    assert torch.equal(be.generate(_prompt(), OUT), generate_once(model, _prompt(), OUT))
    monkeypatch.setattr(hf_eager, "generate_once", lambda m, p, n, cb=None: "patched")
    assert be.generate(_prompt(), OUT) == "patched"  # the benchmark's OOM test relies on this


def test_cuda_graphs_need_cuda():
    if torch.cuda.is_available():
        pytest.skip("CPU-only check")
    with pytest.raises(ValueError, match="CUDA"):
        CompiledBackend(cuda_graphs=True).prepare(_model(False), 1, 4, 4)


@pytest.mark.slow
@pytest.mark.skipif(not os.environ.get("PRUNEBENCH_SLOW"), reason="torch.compile on CPU: ~40 s; PRUNEBENCH_SLOW=1")
@pytest.mark.parametrize("gemv", [None, "triton"])
def test_torch_compile_on_cpu(gemv):
    """torch.compile(fullgraph=True) traces the decode step, with the Triton GEMV's custom op too."""
    if gemv == "triton" and os.environ.get("TRITON_INTERPRET") != "1":
        pytest.skip("the Triton GEMV on the CPU needs Triton's interpreter")
    model = _scramble(_width_pruned(True, "eager"))
    prompt = _prompt(batch=1) if gemv else _prompt()
    ok, info = check_equivalence(model, prompt, OUT, CompiledBackend(compile=True, gemv=gemv))
    assert ok and info["compiled"], info
    assert info["gemv"] == (gemv or "cublas")


# --------------------------------------------------------------------------- roofline

def test_roofline_arithmetic():
    # LLaMA-7B fp16: 13.5 GB x 128 tokens at 4 TB/s (read+write copy rate) = 0.432 s
    assert roofline.roofline_seconds(13.5e9, 128, 4.0e12) == pytest.approx(0.432)
    assert roofline.roofline_seconds(1e9, 10, 1e12, kv_read_bytes=5e9) == pytest.approx(0.015)
    with pytest.raises(ValueError):
        roofline.roofline_seconds(1e9, 10, 0)


def test_weight_bytes():
    m = _model(True)  # untied: the input embedding table is not read by a decode step
    emb = 300 * 64 * 4
    total = sum(p.numel() for p in m.parameters()) * 4
    assert roofline.weight_bytes(m, decode_read=False) == total
    assert roofline.weight_bytes(m) == total - emb
    # KV bytes: per token 2 (K and V) x kv_heads x head_dim x 4 bytes x layers
    per_tok = 2 * 2 * 8 * 4 * 8
    assert roofline.kv_read_bytes(m, 2, 10, 3) == 2 * per_tok * (11 + 12)
    assert roofline.weight_bytes(m.half()) == (total - emb) // 2
    # tied: the one table is the output head, read every step
    tied = tiny_model_of({**tiny_arch(), "tie_word_embeddings": True})
    assert roofline.weight_bytes(tied) == sum(p.numel() for p in tied.parameters()) * 4


@pytest.mark.parametrize("variant", list(VARIANTS))
def test_kv_cache_bytes_is_the_cache_generate_leaves(variant):
    """The predicted KV-cache size equals what HF generate's cache holds at the end, for
    GQA, depth- and width-pruned (per-layer widths) models."""
    model = VARIANTS[variant]("eager")
    batch, in_len, out_len = 3, 5, 7
    out = model.generate(input_ids=_prompt(batch=batch, in_len=in_len), do_sample=False, min_new_tokens=out_len,
                         max_new_tokens=out_len, pad_token_id=0, use_cache=True, return_dict_in_generate=True)
    cache = out.past_key_values
    layers = getattr(cache, "layers", None)
    tensors = ([t for lay in layers for t in (lay.keys, lay.values)] if layers is not None
               else [*cache.key_cache, *cache.value_cache])
    held = sum(t.numel() * t.element_size() for t in tensors)
    assert held == roofline.kv_cache_bytes(model, batch, in_len, out_len)
    assert held == batch * roofline.kv_bytes_per_token(model) * (in_len + out_len - 1)


def test_free_device_memory_only_bounds_cuda():
    assert devices.free_device_memory("cpu") is None


def test_copy_bandwidth_cpu():
    bw = devices.measure_copy_bandwidth("cpu", nbytes=1 << 22, iters=2, trials=2)
    assert 1e8 < bw < 1e13  # bytes/s, read + written


def test_check_equivalence_catches_a_bug(monkeypatch):
    """A decode step that forgets the newest token is reported, with a margin that is no tie."""
    model = _scramble(_model(True, "sdpa"))
    real = compiled_mod.attend_decode

    def forgetful(eager, *args):
        *head, mask, add_mask = args
        newest = mask.long().sum(-1, keepdim=True) - 1
        mask = mask.clone().scatter_(-1, newest, False)
        if add_mask is not None:
            add_mask = torch.zeros(mask.shape, dtype=add_mask.dtype).masked_fill(~mask, torch.finfo(add_mask.dtype).min)
        return real(eager, *head, mask, add_mask)

    monkeypatch.setattr(compiled_mod, "attend_decode", forgetful)
    ok, info = check_equivalence(model, _prompt(), OUT, CompiledBackend())
    assert not ok and info["first_mismatch"]["step"] == 1 and not info["first_mismatch"]["tie"], info


@pytest.mark.parametrize("method", ["flap", "llm-pruner"])
def test_width_pruning_methods(method):
    """Models as the width-pruning methods leave them (per-layer widths, FLAP's biases)."""
    from prunebench.methods import REGISTRY, Budget, get_method
    from prunebench.models import count_params

    if method not in REGISTRY:
        pytest.skip(f"{method} not available")
    model = _model(True, "eager")
    n = count_params(model)
    calib = torch.randint(0, 300, (4, 32), generator=torch.Generator().manual_seed(1))
    pruned = get_method(method)(model, calib, Budget(target_params=int(n * 0.8), dense_params=n), {}).model
    assert not is_uniform(pruned)
    ok, info = check_equivalence(_scramble(pruned), _prompt(), OUT, CompiledBackend())
    assert ok, info


def test_benchmark_cell_with_compiled_backend(tmp_path):
    """benchmark.run with backend=compiled: compile_s and roofline fields in the record."""
    from prunebench import benchmark
    from prunebench.models import save_model

    if "compiled" not in benchmark.BACKENDS:
        pytest.skip("benchmark.py does not offer the compiled backend yet")
    d = tmp_path / "m"
    save_model(_width_pruned(True, "eager"), d, model_name="tiny", method="w", weights="safetensors")
    rec = benchmark.run(str(d), str(tmp_path / "cell.json"), model_name="tiny", method="w", backend="compiled",
                        in_len=5, out_len=6, batch=2, dtype="float32", device="cpu", attn_implementation="eager",
                        timing={"min_runs": 2, "max_runs": 2, "warmup_new_tokens": 2}, seed=0)
    assert rec["status"] == "ok" and rec["compile_s"] >= 0 and rec["hbm_bandwidth_gbs"] > 0
    assert rec["roofline_frac"] == pytest.approx(rec["roofline_s"] / rec["latency_s"])
    # how the backend was built travels with the cell (CPU: no compile, no graphs, no inductor
    # options; one warm-up step, timed)
    assert rec["backend_info"].pop("first_step_s") >= 0
    assert rec["backend_info"] == {"compiled": False, "cuda_graphs": False, "fused": True, "max_len": 16,
                                   "gemv": "cublas", "attention": "eager", "inductor": {}, "compiled_regions": 0,
                                   "dynamic_widths": False, "symbolic_shapes": False, "padded_biases": 0,
                                   "compiled_graphs": 0,
                                   "compile_cache_hits": 0, "compile_cache_misses": 0}


@pytest.mark.parametrize("variant", list(VARIANTS))
def test_gemv_reduce_tokens_equal_eager(variant, monkeypatch):
    """gemv="reduce" (batch-1 decode steps as summed products) keeps the greedy tokens, and
    really replaces every one-row matmul: F.linear then sees only the multi-row prefill."""
    model = _scramble(VARIANTS[variant]("eager"))
    rows_seen = []
    real_linear = compiled_mod.F.linear

    def spy(x, w, b=None):
        rows_seen.append(x.numel() // x.shape[-1])
        return real_linear(x, w, b)

    be = CompiledBackend(gemv="reduce")
    prompt = _prompt(batch=1)
    with monkeypatch.context() as m:
        m.setattr(compiled_mod.F, "linear", spy)
        be.prepare(model, 1, IN, OUT)
        rows_seen.clear()  # prepare's own runs do not count
        out = be.generate(prompt, OUT)
    assert rows_seen and min(rows_seen) == IN  # prefill only: the IN-row prompt
    ref = generate_once(model, prompt, OUT)
    assert torch.equal(out, ref)
    assert be.prepare(model, 1, IN, OUT)["gemv"] == "reduce"
    # at batch > 1 decode steps go back to F.linear (the summed product would read W per row)
    ok, info = check_equivalence(model, _prompt(), OUT, CompiledBackend(gemv="reduce"))
    assert ok, info


@pytest.mark.parametrize("variant", ["gqa", "width-gqa"])
def test_sdpa_attention_option_on_an_eager_model(variant):
    """attention="sdpa" runs SDPA kernels for a model that HF runs with eager math: same tokens."""
    model = _scramble(VARIANTS[variant]("eager"))
    ok, info = check_equivalence(model, _prompt(), OUT, CompiledBackend(attention="sdpa"))
    assert ok, info
    assert info["attention"] == "sdpa"
    assert CompiledBackend().prepare(model, 1, IN, 4)["attention"] == "eager"


def test_backend_options_are_checked():
    with pytest.raises(ValueError, match="gemv must be one of"):
        CompiledBackend(gemv="magic")
    with pytest.raises(ValueError, match="attention must be one of"):
        CompiledBackend(attention="flash")
    with pytest.raises(ValueError, match="unknown torch._inductor.config option"):
        dynamo.inductor_config(True, {"no_such_inductor_option": 1})
    import torch._inductor.config as inductor_config

    before = inductor_config.coordinate_descent_tuning
    with dynamo.inductor_config(True, {"coordinate_descent_tuning": not before}):
        assert inductor_config.coordinate_descent_tuning is (not before)
    assert inductor_config.coordinate_descent_tuning is before
    # no compilation: inductor options do not apply, and are reported as such
    info = CompiledBackend(inductor={"coordinate_descent_tuning": True}).prepare(_model(False), 1, 4, 4)
    assert info["compiled"] is False and info["inductor"] == {}


def test_cli_option_parsing():
    assert selfcheck._parse_option("gemv=reduce") == ("gemv", "reduce")
    assert selfcheck._parse_option('inductor={"coordinate_descent_tuning": true}') == (
        "inductor", {"coordinate_descent_tuning": True})
    assert selfcheck._parse_option("fuse=false") == ("fuse", False)
    import argparse

    with pytest.raises(argparse.ArgumentTypeError, match="KEY=VALUE"):
        selfcheck._parse_option("gemv")


def test_layers_of_one_shape_share_one_compiled_region():
    """Regional compilation: a uniform model's layers have one signature; a width-pruned model
    has one per distinct layer width (what torch.compile compiles once each)."""
    uniform = _model(True)
    be = CompiledBackend()
    be.prepare(uniform, 1, IN, 4)
    assert len({l.signature() for l in be.layers}) == 1
    pruned = _width_pruned(True, "eager")
    be = CompiledBackend()
    be.prepare(pruned, 1, IN, 4)
    widths = {tuple(sorted(l.items())) for l in layer_structure(pruned)["layers"]}  # widths and biases
    assert len({l.signature() for l in be.layers}) == len(widths) > 1


@pytest.mark.slow
@pytest.mark.skipif(not os.environ.get("PRUNEBENCH_SLOW"), reason="torch.compile on CPU: ~40 s; PRUNEBENCH_SLOW=1")
def test_regional_compile_traces_one_graph_for_a_uniform_model():
    from torch._dynamo.utils import counters

    torch._dynamo.reset()
    counters.clear()
    model = _scramble(_model(True))
    ok, info = check_equivalence(model, _prompt(), OUT, CompiledBackend(compile=True))
    assert ok and info["compiled"] and info["compiled_regions"] == 1, info
    assert counters["stats"]["unique_graphs"] == 1  # every layer reuses the first one's graph


@pytest.mark.skipif(not shutil.which("cc") and not shutil.which("gcc"),
                    reason="torch.compile on CPU needs a C compiler")
def test_dynamic_widths_compile_one_graph_for_layers_of_every_width():
    """Regional compilation with dynamic widths: a model whose layers all differ in width, some
    with an o/down bias and some without (FLAP's compensation), compiles 1 graph (the widths that
    differ between layers symbolic from the first trace, the missing biases zeros) instead of one
    per layer or per bias pattern, and its greedy tokens still equal HF's."""
    torch._dynamo.reset()
    model = _flap_like()
    ok, info = check_equivalence(model, _prompt(), OUT, CompiledBackend(compile=True))
    assert ok, info
    assert info["dynamic_widths"] is True
    assert info["compiled_regions"] == 7  # 7 distinct (heads, width) pairs
    assert info["padded_biases"] == 6     # o: the 3 layers of 8 heads; down: the 3 of 128 channels
    assert info["compiled_graphs"] == 1, info


def test_pad_biases_gives_every_layer_the_biases_some_layers_have():
    """Zeros where a layer lacks a bias that another layer has in the same slot (FLAP's o/down
    compensation); slots no layer has a bias in (fused q/k/v, gate/up) stay without; the model's
    own modules keep theirs; afterwards every layer has the same structure, and a second call
    adds nothing."""
    from prunebench.backends.layers import Layer, pad_biases

    def nones(t):
        return tuple(nones(x) for x in t) if isinstance(t, tuple) else t is None

    model = _flap_like()
    mods = list(model.model.layers)
    had = [(m.self_attn.o_proj.bias is not None, m.mlp.down_proj.bias is not None) for m in mods]
    layers = [Layer(m, True) for m in mods]
    assert len({nones(l.tensors) for l in layers}) > 1
    assert pad_biases(layers) == sum(not o for o, _ in had) + sum(not d for _, d in had) == 6
    for l, m, (had_o, had_d) in zip(layers, mods, had):
        for (w, b), mod_bias, had_b in ((l.tensors[3], m.self_attn.o_proj.bias, had_o),
                                        (l.tensors[5], m.mlp.down_proj.bias, had_d)):
            if had_b:
                assert b is mod_bias
            else:
                assert mod_bias is None and b.shape == (w.shape[0],) and b.dtype == w.dtype and not b.any()
        assert l.tensors[2][0][1] is None and l.tensors[4][0][1] is None
    assert len({nones(l.tensors) for l in layers}) == 1
    assert pad_biases(layers) == 0


def test_dynamic_widths_follow_the_option_and_the_model():
    """Automatic: on only for a compiled model of several layer shapes; the option overrides it."""
    be = CompiledBackend()  # CPU: no compile, so never dynamic
    info = be.prepare(_flap_like(), 2, IN, 4)
    assert info["dynamic_widths"] is False and info["compiled_graphs"] == 0
    assert CompiledBackend(dynamic_widths=False).dynamic_widths is False
