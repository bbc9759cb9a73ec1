"""The Triton GEMV (prunebench.gemv) and the compiled backend's gemv="triton": on the CPU
through Triton's interpreter (TRITON_INTERPRET=1); the timing-based choice of configurations
runs on a GPU only (`python -m prunebench.gemv ...`, docs/reproduction.md)."""
from __future__ import annotations

import shutil

import pytest
import torch
import torch.nn.functional as F

from prunebench import backends
from prunebench.backends import CompiledBackend
from prunebench.backends import compiled as compiled_mod
from prunebench.backends.hf_eager import generate_once
from prunebench.backends.layers import decode_weights
from prunebench.tools import selfcheck

pytest.importorskip("triton", reason="the Triton GEMV needs triton (pip install triton; CI installs it)")

from prunebench import gemv as gemv_mod  # noqa: E402
from prunebench import gemv_plan  # noqa: E402
from prunebench.gemv import Config, gemv  # noqa: E402

from model_variants import IN, VARIANTS, flap_like, prompt as _prompt, scramble as _scramble  # noqa: E402


@pytest.fixture
def interpret():
    if not gemv_mod.interpreting():
        pytest.skip("CPU tests of the kernel need TRITON_INTERPRET=1 (conftest sets it without CUDA)")


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16])
@pytest.mark.parametrize("n,k,bias", [(37, 50, False), (64, 128, True), (5, 300, True), (1, 7, False)])
@pytest.mark.parametrize("cfg", [Config(4, 32, 1, 1), Config(16, 64, 4, 3)])
def test_kernel_matches_linear(interpret, dtype, n, k, bias, cfg):
    """Ragged shapes (N, K not multiples of the blocks), bias or none, fp32 and fp16 (fp32 accumulation)."""
    g = torch.Generator().manual_seed(n * k)
    x = torch.randn(1, 1, k, generator=g).to(dtype)
    w = torch.randn(n, k, generator=g).to(dtype)
    b = torch.randn(n, generator=g).to(dtype) if bias else None
    y = gemv(x, w, b, cfg)
    ref = F.linear(x.float(), w.float(), None if b is None else b.float())
    assert y.shape == (1, 1, n) and y.dtype == dtype
    tol = 1e-5 if dtype == torch.float32 else 2e-3 * k ** 0.5
    torch.testing.assert_close(y.float(), ref, atol=tol, rtol=1e-3)


def test_kernel_reads_a_row_slice_of_a_fused_weight(interpret):
    """The backend passes views of fused Q/K/V weights: rows are contiguous, the row stride is K."""
    w = torch.randn(30, 24)
    x = torch.randn(1, 1, 24)
    part = w[10:20]
    torch.testing.assert_close(gemv(x, part, None, gemv_mod.CPU_CONFIG), F.linear(x, part))


def test_inputs_are_checked(interpret):
    with pytest.raises(ValueError, match="one row"):
        gemv(torch.randn(2, 1, 8), torch.randn(4, 8), None, gemv_mod.CPU_CONFIG)
    with pytest.raises(ValueError, match="contiguous rows"):
        gemv(torch.randn(1, 1, 8), torch.randn(8, 4).t(), None, gemv_mod.CPU_CONFIG)


def test_plan_groups_shapes_without_timing_on_cpu(interpret):
    ws = [torch.randn(8, 16), torch.randn(8, 16), torch.randn(4, 16)]
    choice, report = gemv_plan.plan(ws, torch.float32)
    assert choice == {(8, 16): gemv_mod.CPU_CONFIG, (4, 16): gemv_mod.CPU_CONFIG}
    assert report["timed"] is False


def test_needs_cuda_or_the_interpreter(monkeypatch):
    monkeypatch.setenv("TRITON_INTERPRET", "0")
    ok, why = gemv_mod.available("cpu")
    assert not ok and "TRITON_INTERPRET" in why
    model = VARIANTS["mha"]("eager")
    with pytest.raises(ValueError, match="gemv='triton'"):
        CompiledBackend(gemv="triton").prepare(model, 1, IN, 4)


@pytest.mark.parametrize("variant", ["gqa", "depth", "width-mha"])
def test_backend_gemv_triton_tokens_equal_eager(interpret, variant, monkeypatch):
    """gemv="triton" keeps the greedy tokens of HF generate, and every one-row product goes
    through the Triton op (F.linear sees only the multi-row prefill)."""
    out_len = 10
    model = _scramble(VARIANTS[variant]("eager"))
    rows_seen, triton_calls = [], []
    real_linear, real_gemv = compiled_mod.F.linear, gemv_mod.gemv

    def spy_linear(x, w, b=None):
        rows_seen.append(x.numel() // x.shape[-1])
        return real_linear(x, w, b)

    def spy_gemv(x, w, b, cfg):
        triton_calls.append(tuple(w.shape))
        return real_gemv(x, w, b, cfg)

    be = CompiledBackend(gemv="triton")
    prompt = _prompt(batch=1)
    info = be.prepare(model, 1, IN, out_len)
    assert info["gemv"] == "triton" and info["gemv_shapes"] == info["gemv_triton_shapes"] > 0
    with monkeypatch.context() as m:
        m.setattr(compiled_mod.F, "linear", spy_linear)
        m.setattr(gemv_mod, "gemv", spy_gemv)
        out = be.generate(prompt, out_len)
    assert rows_seen and min(rows_seen) == IN
    n_layers = len(model.model.layers)
    assert len(triton_calls) == (out_len - 1) * (4 * n_layers + 1) + 1  # decode steps + prefill's lm_head
    assert torch.equal(out, generate_once(model, prompt, out_len))


def test_planned_gemv_follows_the_adopted_choice_per_shape(interpret, monkeypatch):
    """gemv_planned looks the kernel up by the weight's shape when it runs: the adopted config
    for that (device, dtype, shape), cuBLAS (F.linear) for a shape adopted as None or never adopted."""
    monkeypatch.setattr(gemv_mod, "_ADOPTED", {})
    calls = []
    real_op = gemv_mod._gemv_op

    def spy_op(x, w, b, *cfg):
        calls.append((tuple(w.shape), cfg))
        return real_op(x, w, b, *cfg)

    monkeypatch.setattr(gemv_mod, "_gemv_op", spy_op)
    x = torch.randn(1, 1, 24)
    a, b_, c = torch.randn(10, 24), torch.randn(7, 24), torch.randn(5, 24)
    gemv_mod.adopt("cpu", torch.float32, {(10, 24): Config(4, 32, 1, 1), (7, 24): None})
    for w in (a, b_, c):
        torch.testing.assert_close(gemv_mod.gemv_planned(x, w, None), F.linear(x, w))
    assert calls == [((10, 24), (4, 32, 1, 1))]  # 7x24: cuBLAS won; 5x24: never planned
    gemv_mod.gemv_planned(x.double(), a.double(), None)  # another dtype: not adopted for it
    assert len(calls) == 1


@pytest.mark.skipif(not shutil.which("cc") and not shutil.which("gcc"), reason="torch.compile on CPU needs a C compiler")
def test_dynamic_widths_at_batch_1_keep_each_widths_gemv(interpret, monkeypatch):
    """FLAP-like widths (every layer its own) at batch 1 with the Triton GEMV: 1 compiled graph,
    not one per layer shape, the kernel still chosen per weight shape when it runs (every
    decode-step product of every layer through the planned op), HF's greedy tokens kept."""
    torch._dynamo.reset()
    out_len = 5
    model = flap_like()
    seen = []

    class Recording(dict):  # the op's own lookup: it runs when the op runs, never while tracing
        def get(self, key, default=None):
            seen.append(key[2:])
            return super().get(key, default)

    be = CompiledBackend(compile=True, gemv="triton")
    prompt = _prompt(batch=1)
    monkeypatch.setattr(gemv_mod, "_ADOPTED", Recording())
    info = be.prepare(model, 1, IN, out_len)
    assert info["dynamic_widths"] is True and info["gemv_chosen_at"] == "run", info
    assert info["compiled_regions"] == 7 and info["compiled_graphs"] == 1, info
    seen.clear()
    out = be.generate(prompt, out_len)
    n_layers = len(model.model.layers)
    assert len(seen) == (out_len - 1) * (4 * n_layers + 1) + 1  # decode steps + prefill's lm_head
    assert set(seen) == {tuple(w.shape) for w in decode_weights(be.layers, be.lm_head)}
    assert torch.equal(out, generate_once(model, prompt, out_len))


def test_backends_cli_times_and_reports_the_gemv_plan(interpret, tmp_path, capsys):
    """`python -m prunebench.tools.selfcheck MODEL --time 1 --option gemv=triton`: token check, one
    JSON line with the roofline fraction and how the backend was built."""
    import json

    model = _scramble(VARIANTS["gqa"]("eager"))
    from prunebench.models import save_model

    save_model(model, tmp_path / "m", model_name="t", method="dense", weights="safetensors")
    rc = selfcheck.main([str(tmp_path / "m"), "--dtype", "float32", "--device", "cpu", "--in-len", "5",
                        "--out-len", "6", "--time", "1", "--option", "gemv=triton"])
    out = capsys.readouterr().out
    assert rc == 0
    assert "EQUAL" in out
    row = json.loads(next(line for line in out.splitlines() if line.startswith("time")).split(": ", 1)[1])
    assert row["compiled"]["roofline_frac"] == pytest.approx(row["roofline_s"] / row["compiled"]["latency_s"])
    assert row["options"] == {"gemv": "triton"}
    assert row["backend_info"]["gemv"] == "triton" and row["backend_info"]["gemv_triton_shapes"] > 0


def test_stream_sequence_reads_from_hbm_not_l2():
    """What the selection times (GPU only): the model's matrices back to back when they
    overflow the L2 cache, with an L2 flush before each call when they fit in it."""
    l2 = 50 << 20
    mb = 1 << 20

    def mats(n, rows):  # fp16 [rows, 1024 * 512 / 2] = rows MiB each; meta: no memory
        return [torch.empty(rows, 512 * 1024, dtype=torch.float16, device="meta") for _ in range(n)]

    big = mats(32, 100)                                    # 32 x 100 MiB (Q/K/V of 32 layers)
    seq, flush = gemv_plan._stream_sequence(big, l2)
    assert not flush and seq == big                         # each once: 3.2 GB >> L2

    two = mats(2, 60)                                      # 120 MiB: over twice the L2 -> no flush
    seq, flush = gemv_plan._stream_sequence(two, l2)
    assert not flush and sum(w.numel() * 2 for w in seq) >= 3 * l2 and set(map(id, seq)) == set(map(id, two))

    one = mats(1, 40)                                      # one 40 MiB matrix fits in L2: flush each call
    seq, flush = gemv_plan._stream_sequence(one, l2)
    assert flush and len(seq) * 40 * mb >= 3 * l2 and all(w is one[0] for w in seq)

    tiny = mats(3, 1)                                      # 1 MiB each: the cap bounds the pass
    seq, flush = gemv_plan._stream_sequence(tiny, l2)
    assert flush and len(seq) == 64


def test_gemv_choice_cache_roundtrip(tmp_path):
    """Choices stored per (device, dtype, shape, Triton version, candidates) are found again:
    a second plan takes those shapes out of the timing and reuses the stored configuration."""
    path = str(tmp_path / "cache" / "gemv.json")
    assert gemv_plan.load_cache(path) == {}
    dev = "NVIDIA H200"
    k1 = gemv_plan.cache_key(dev, torch.float16, 4096, 11008)
    k2 = gemv_plan.cache_key(dev, torch.float16, 11008, 4096)
    gemv_plan.store_cache(path, {k1: [8, 512, 4, 1]})
    gemv_plan.store_cache(path, {k2: None})  # merged, not replaced: cuBLAS won this one
    cached = gemv_plan.load_cache(path)
    assert cached == {k1: [8, 512, 4, 1], k2: None}
    shapes = {(4096, 11008): ["w"], (11008, 4096): ["w"], (4096, 4096): ["w"]}
    choice = gemv_plan.split_cached(shapes, dev, torch.float16, cached)
    assert choice == {(4096, 11008): Config(8, 512, 4, 1), (11008, 4096): None}
    assert list(shapes) == [(4096, 4096)]  # only this one is left to time
    # another card, dtype or candidate list is another key
    assert gemv_plan.split_cached({(4096, 11008): ["w"]}, "NVIDIA H100", torch.float16, cached) == {}
    assert gemv_plan.split_cached({(4096, 11008): ["w"]}, dev, torch.bfloat16, cached) == {}
    assert gemv_plan.cache_key(dev, torch.float16, 4096, 11008, gemv_mod.CONFIGS[:3]) != k1


def test_gemv_cache_refuses_a_foreign_file(tmp_path):
    p = tmp_path / "gemv.json"
    p.write_text('{"something": 1}')
    with pytest.raises(RuntimeError, match="delete it"):
        gemv_plan.load_cache(str(p))
    p.write_text("{not json")
    with pytest.raises(RuntimeError, match="unreadable"):
        gemv_plan.load_cache(str(p))


def test_near_finds_the_closest_shape_sharing_a_dimension():
    timed = {(12552, 4096): [], (4096, 6276): [], (4096, 11008): []}
    assert gemv_plan.near((12800, 4096), timed) == (12552, 4096)          # same K, N 2 % away
    assert gemv_plan.near((4096, 6414), timed) == (4096, 6276)            # same N, K 2.2 % away
    assert gemv_plan.near((4096, 6700), timed) is None                    # 6.3 % from 6276, far from 11008
    assert gemv_plan.near((12800, 4000), timed) is None                   # shares neither dimension
    assert gemv_plan.near((4096, 6300), {**timed, (4096, 6290): []}) == (4096, 6290)  # the nearest


def test_choose_shortlists_shapes_near_a_fully_timed_one():
    """A synthetic timer: a shape near one timed with every candidate times cuBLAS and that
    shape's SHORTLIST fastest configurations only, in that order, and keeps the fastest it
    timed; without the shortlist, or far from every timed shape, every candidate is timed."""
    configs = gemv_mod.CONFIGS
    speed = {c: 1.0 + 0.01 * ((i * 7) % len(configs)) for i, c in enumerate(configs)}  # a fixed ranking
    calls = {}

    def seconds(shape, cands):
        # cuBLAS slow except on the 11008-wide shape; a config's time depends on the shape a little
        return [2.0 if shape[1] != 11008 else 0.5] + [speed[c] * (1 + 1e-4 * (hash((shape, c)) % 7)) for c in cands[1:]]

    def time_shape(shape, cands):
        calls[shape] = list(cands)
        return seconds(shape, cands)

    shapes = [(12828, 4096), (12552, 4096), (4096, 6276), (4096, 6414), (4096, 11008)]
    rows = {(r["n"], r["k"]): r for r in gemv_plan.choose(shapes, configs, time_shape)}
    full = {(12552, 4096), (4096, 6276), (4096, 11008)}     # the first of each kind, in (N, K) order
    for s in full:
        assert calls[s] == [None, *configs] and rows[s]["near"] is None and rows[s]["candidates"] == len(configs) + 1
    ranking = sorted(configs, key=lambda c: seconds((12552, 4096), [None, c])[1])
    assert calls[(12828, 4096)] == [None, *ranking[:gemv_plan.SHORTLIST]]
    assert rows[(12828, 4096)]["near"] == (12552, 4096)
    assert rows[(4096, 6414)]["near"] == (4096, 6276) and len(calls[(4096, 6414)]) == gemv_plan.SHORTLIST + 1
    for s, r in rows.items():                              # the fastest of what was timed, cuBLAS included
        times = seconds(s, calls[s])
        assert r["chosen_s"] == min(times) and r["cublas_s"] == times[0]
        assert (r["config"] is None) == (times[0] == min(times))
    assert rows[(4096, 11008)]["config"] is None           # cuBLAS won there
    calls.clear()
    plain = gemv_plan.choose(shapes, configs, time_shape, shortlist=False)
    assert all(len(c) == len(configs) + 1 for c in calls.values()) and all(r["near"] is None for r in plain)
