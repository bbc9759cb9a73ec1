"""Benchmark cell: record schema, exact output length, adaptive repetitions, prefill/decode
split, throughput arithmetic, OOM as a result, the compile caches."""
from __future__ import annotations

import json

import pytest
import torch

from prunebench import benchmark, timing
from prunebench.backends import hf_eager
from prunebench.models import save_model


@pytest.fixture
def model_dir(tiny_model, tmp_path):
    d = tmp_path / "m"
    save_model(tiny_model, d, model_name="tiny", method="dense", weights="safetensors")
    return d


def _run(model_dir, out, **kw):
    args = dict(model_name="tiny", method="dense", backend="hf-eager", in_len=5, out_len=6, batch=3,
                dtype="float32", device="cpu", attn_implementation="eager",
                timing={"min_runs": 3, "max_runs": 3, "warmup_new_tokens": 2}, seed=0)
    args.update(kw)
    return benchmark.run(str(model_dir), str(out), **args)


def test_the_aggregate_stage_reads_the_cells_the_benchmark_writes(model_dir, tmp_path):
    """One cell format: the schema the aggregate stage checks (kept torch-free) is the one written."""
    from prunebench import aggregate, records

    assert aggregate.CELL_SCHEMA == benchmark.SCHEMA == records.CELL_SCHEMA
    out = tmp_path / "bench" / "tiny" / "dense" / "hf-eager" / "in5_out6_bs3.json"
    _run(model_dir, out)
    assert aggregate.read_cells([str(out)])[0]["schema"] == benchmark.SCHEMA


def test_summary_splits_prefill_and_decode():
    lat, ttft = [2.0, 1.0, 4.0, 2.2, 1.8, 2.1], [0.5, 0.2, 1.0, 0.6, 0.4, 0.5]
    s = benchmark.summarise(lat, ttft, batch=8, out_len=128)
    assert s["latency_s"] == 2.05 and s["runs"] == 6
    assert s["throughput_tok_s"] == pytest.approx(8 * 128 / 2.05)
    assert (s["latency_ci_low_s"], s["latency_ci_high_s"]) == (1.0, 4.0)  # 6 runs: min..max
    per_tok = sorted((l - t) / 127 for l, t in zip(lat, ttft))
    assert s["decode_per_token_s"] == pytest.approx((per_tok[2] + per_tok[3]) / 2)
    assert s["decode_tok_s"] == pytest.approx(8 / s["decode_per_token_s"])
    assert s["ttft_s"] == 0.5
    one = benchmark.summarise([1.0], [1.0], batch=1, out_len=1)
    assert one["decode_per_token_s"] is None and one["latency_ci_low_s"] is None


def test_cell_record(model_dir, tmp_path):
    out = tmp_path / "cell.json"
    rec = _run(model_dir, out)
    on_disk = json.loads(out.read_text())
    assert set(on_disk) == set(benchmark.FIELDS)
    assert on_disk["status"] == "ok" and on_disk["schema"] == benchmark.SCHEMA
    assert len(on_disk["latencies_s"]) == len(on_disk["ttfts_s"]) == on_disk["runs"] == 3
    assert on_disk["stop_reason"] == "max_runs" or on_disk["stable"]
    assert on_disk["timing"]["min_runs"] == 3 and on_disk["timing"]["target_rel_ci"] == timing.DEFAULTS["target_rel_ci"]
    # the prefill/decode split of every run adds up to that run's latency
    for lat, ttft in zip(on_disk["latencies_s"], on_disk["ttfts_s"]):
        assert 0 < ttft < lat
    assert on_disk["host_before"]["cpus"] >= 1 and on_disk["threads"] >= 1
    assert on_disk["gpu_busy_frac"] is None  # CPU: no profile
    assert on_disk["throughput_tok_s"] == pytest.approx(3 * 6 / on_disk["latency_s"])
    assert on_disk["versions"]["torch"] == torch.__version__
    assert rec["params"] == on_disk["params"] > 0


class _Clocked:
    """A backend whose generate advances a fake clock: prefill then per-token steps."""

    name = "fake"

    def __init__(self, clock, prefill, step, noise=None):
        self.clock, self.prefill, self.step, self.noise = clock, prefill, step, noise or (lambda: 0.0)

    def generate(self, prompt, n, on_first_token=None):
        self.clock.t += self.prefill + self.noise()
        if on_first_token is not None:
            on_first_token()
        self.clock.t += self.step * (n - 1)
        return torch.zeros(prompt.shape[0], prompt.shape[1] + n, dtype=torch.long)


class _Clock:
    t = 0.0

    def __call__(self):
        return self.t


def test_time_generation_measures_ttft_and_decode_and_stops_when_stable():
    clock = _Clock()
    be = _Clocked(clock, prefill=0.3, step=0.01)
    rule = timing.StoppingRule(min_runs=6, max_runs=20, target_rel_ci=0.02)
    rep = benchmark.time_generation(be, torch.zeros(1, 4, dtype=torch.long), 11, rule,
                                    warmup_new_tokens=None, device=torch.device("cpu"), clock=clock)
    assert rep.stop_reason == "target" and len(rep.latencies) == 6
    assert rep.ttfts == pytest.approx([0.3] * 6)
    assert rep.latencies == pytest.approx([0.3 + 0.1] * 6)


def test_time_generation_noisy_runs_to_the_cap_and_drops_relabelled_warmups():
    import random

    rng = random.Random(0)
    clock = _Clock()
    be = _Clocked(clock, prefill=0.3, step=0.01, noise=lambda: rng.uniform(0, 0.5))
    rule = timing.StoppingRule(min_runs=6, max_runs=9, target_rel_ci=0.01, max_warmup_runs=3)
    rep = benchmark.time_generation(be, torch.zeros(1, 4, dtype=torch.long), 11, rule,
                                    warmup_new_tokens=None, device=torch.device("cpu"), clock=clock)
    assert rep.stop_reason == "max_runs" and len(rep.latencies) == 9
    assert not rule.is_stable(rep.latencies)
    assert len(rep.ttfts) == len(rep.latencies)
    for lat, ttft in zip(rep.latencies, rep.ttfts):  # each pair from the same run
        assert lat - ttft == pytest.approx(0.1)


def test_exact_output_length(tiny_model):
    from prunebench.backends import make_backend

    prompt = benchmark.make_prompt(300, 7, 2, seed=0, device="cpu")
    assert prompt.shape == (2, 7) and torch.equal(prompt[0], prompt[1])
    be = make_backend("hf-eager")
    be.prepare(tiny_model, 2, 7, 11)
    rule = timing.StoppingRule(min_runs=1, max_runs=1, warmup_runs=0, max_warmup_runs=0)
    rep = benchmark.time_generation(be, prompt, 11, rule, warmup_new_tokens=1, device=torch.device("cpu"))
    assert len(rep.latencies) == 1 and rep.latencies[0] > rep.ttfts[0] > 0


def test_ttft_is_the_prefill_of_hf_generate(tiny_model, monkeypatch):
    """The first-token hook fires once, after the prefill forward and before any decode step."""
    calls = []
    real_forward = tiny_model.forward

    def forward(*a, **k):
        calls.append(k["input_ids"].shape[1] if "input_ids" in k and k["input_ids"] is not None else None)
        return real_forward(*a, **k)

    monkeypatch.setattr(tiny_model, "forward", forward)
    seen = []
    prompt = benchmark.make_prompt(300, 7, 1, seed=0, device="cpu")
    hf_eager.generate_once(tiny_model, prompt, 5, on_first_token=lambda: seen.append(len(calls)))
    assert seen == [1]        # after exactly one forward: the 7-token prefill
    assert calls[0] == 7 and len(calls) == 5


def test_oom_is_a_result(model_dir, tmp_path, monkeypatch):
    def boom(*a, **k):
        raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 20.00 GiB")

    monkeypatch.setattr(hf_eager, "generate_once", boom)
    out = tmp_path / "oom.json"
    rec = _run(model_dir, out)
    assert rec["status"] == "oom" and "out of memory" in rec["error"]
    assert json.loads(out.read_text())["latency_s"] is None


def test_a_cell_that_cannot_fit_is_recorded_without_running(model_dir, tiny_model, tmp_path, monkeypatch):
    """Where the KV cache alone exceeds the free memory after the weights, the cell is an
    OOM result at once (the error says predicted); with exactly enough memory it runs."""
    from prunebench import roofline

    need = roofline.kv_cache_bytes(tiny_model, 3, 5, 6)  # _run's cell: batch 3, 5 -> 6 tokens
    free = {"bytes": need - 1}
    monkeypatch.setattr(benchmark, "free_device_memory", lambda device: free["bytes"])
    real_generate = hf_eager.generate_once

    def never(*a, **k):
        raise AssertionError("generate ran although the cell cannot fit")

    monkeypatch.setattr(hf_eager, "generate_once", never)
    out = tmp_path / "pred.json"
    rec = _run(model_dir, out)
    assert rec["status"] == "oom" and rec["error"].startswith("out of memory (predicted, not run)")
    assert json.loads(out.read_text())["latency_s"] is None
    free["bytes"] = need
    monkeypatch.setattr(hf_eager, "generate_once", real_generate)
    assert _run(model_dir, tmp_path / "fits.json")["status"] == "ok"


def test_other_errors_fail_and_write_nothing(model_dir, tmp_path, monkeypatch):
    def bad(*a, **k):
        raise ValueError("something else")

    monkeypatch.setattr(hf_eager, "generate_once", bad)
    out = tmp_path / "bad.json"
    with pytest.raises(ValueError):
        _run(model_dir, out)
    assert not out.exists()


def test_unknown_backend(model_dir, tmp_path):
    with pytest.raises(ValueError, match="benchmark.backends"):
        _run(model_dir, tmp_path / "x.json", backend="nope")


def test_cuda_demanded_without_gpu(model_dir, tmp_path):
    if torch.cuda.is_available():
        pytest.skip("a GPU is present")
    with pytest.raises(RuntimeError, match="no CUDA device"):
        _run(model_dir, tmp_path / "x.json", device="cuda")


def test_timing_defaults_are_the_schemas():
    """One place for the repetition defaults: the schema's equal timing.DEFAULTS + the stage's extras."""
    import yaml

    from prunebench.config import SCHEMA

    schema = yaml.safe_load(SCHEMA.read_text())
    props = schema["properties"]["benchmark"]["properties"]["timing"]["properties"]
    assert {k: v["default"] for k, v in props.items()} == {**timing.DEFAULTS, **benchmark.EXTRA_TIMING}


def test_unknown_timing_key(model_dir, tmp_path):
    with pytest.raises(ValueError, match="benchmark.timing"):
        _run(model_dir, tmp_path / "x.json", timing={"min_run": 3})


def test_cache_dir_points_inductor_and_triton_there(model_dir, tmp_path, monkeypatch):
    monkeypatch.delenv("TORCHINDUCTOR_CACHE_DIR", raising=False)
    monkeypatch.delenv("TRITON_CACHE_DIR", raising=False)
    rec = _run(model_dir, tmp_path / "c.json", cache_dir=str(tmp_path / "cache"))
    assert rec["status"] == "ok"
    import os

    assert os.environ["TORCHINDUCTOR_CACHE_DIR"] == str(tmp_path / "cache" / "inductor")
    assert os.environ["TRITON_CACHE_DIR"] == str(tmp_path / "cache" / "triton")
