"""Benchmark cell: record schema, exact output length, throughput arithmetic, OOM as a result."""
from __future__ import annotations

import json

import pytest
import torch

from prunebench import benchmark
from prunebench.models import save_model


@pytest.fixture
def model_dir(tiny_model, tmp_path):
    d = tmp_path / "m"
    save_model(tiny_model, d, model_name="tiny", method="dense", weights="safetensors")
    return d


def _run(model_dir, out, **kw):
    args = dict(model_name="tiny", method="dense", backend="hf-eager", in_len=5, out_len=6, batch=3,
                dtype="float32", device="cpu", attn_implementation="eager", warmup_runs=1,
                warmup_new_tokens=2, timed_runs=3, seed=0)
    args.update(kw)
    return benchmark.run(str(model_dir), str(out), **args)


def test_quantile_and_summary():
    assert benchmark.quantile([1.0, 2.0, 3.0, 4.0, 5.0], 0.1) == pytest.approx(1.4)
    assert benchmark.quantile([3.0], 0.9) == 3.0
    s = benchmark.summarise([2.0, 1.0, 4.0], batch=8, out_len=128)
    assert s["latency_s"] == 2.0
    assert s["throughput_tok_s"] == pytest.approx(8 * 128 / 2.0)
    assert s["latency_p10_s"] <= s["latency_s"] <= s["latency_p90_s"]


def test_cell_record(model_dir, tmp_path):
    out = tmp_path / "cell.json"
    rec = _run(model_dir, out)
    on_disk = json.loads(out.read_text())
    assert set(on_disk) == set(benchmark.FIELDS)
    assert on_disk["status"] == "ok" and on_disk["schema"] == benchmark.SCHEMA
    assert len(on_disk["latencies_s"]) == 3
    assert on_disk["throughput_tok_s"] == pytest.approx(3 * 6 / on_disk["latency_s"])
    assert on_disk["versions"]["torch"] == torch.__version__
    assert rec["params"] == on_disk["params"] > 0


def test_exact_output_length(tiny_model):
    prompt = benchmark.make_prompt(300, 7, 2, seed=0, device="cpu")
    assert prompt.shape == (2, 7) and torch.equal(prompt[0], prompt[1])
    lat = benchmark.time_generation(tiny_model, prompt, 11, warmup_runs=0, warmup_new_tokens=1,
                                    timed_runs=1, device=torch.device("cpu"))
    assert len(lat) == 1 and lat[0] > 0


def test_oom_is_a_result(model_dir, tmp_path, monkeypatch):
    def boom(*a, **k):
        raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 20.00 GiB")

    monkeypatch.setattr(benchmark, "generate_once", boom)
    out = tmp_path / "oom.json"
    rec = _run(model_dir, out)
    assert rec["status"] == "oom" and "out of memory" in rec["error"]
    assert json.loads(out.read_text())["latency_s"] is None


def test_a_cell_that_cannot_fit_is_recorded_without_running(model_dir, tiny_model, tmp_path, monkeypatch):
    """Where the KV cache alone exceeds the free memory after the weights, the cell is an
    OOM result at once (the error says predicted); with exactly enough memory it runs."""
    from prunebench import backends

    need = backends.kv_cache_bytes(tiny_model, 3, 5, 6)  # _run's cell: batch 3, 5 -> 6 tokens
    free = {"bytes": need - 1}
    monkeypatch.setattr(backends, "free_device_memory", lambda device: free["bytes"])
    real_generate = benchmark.generate_once

    def never(*a, **k):
        raise AssertionError("generate ran although the cell cannot fit")

    monkeypatch.setattr(benchmark, "generate_once", never)
    out = tmp_path / "pred.json"
    rec = _run(model_dir, out)
    assert rec["status"] == "oom" and rec["error"].startswith("out of memory (predicted, not run)")
    assert json.loads(out.read_text())["latency_s"] is None
    free["bytes"] = need
    monkeypatch.setattr(benchmark, "generate_once", real_generate)
    assert _run(model_dir, tmp_path / "fits.json")["status"] == "ok"


def test_other_errors_fail_and_write_nothing(model_dir, tmp_path, monkeypatch):
    def bad(*a, **k):
        raise ValueError("something else")

    monkeypatch.setattr(benchmark, "generate_once", bad)
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
