"""GPU claiming for several GPU jobs on one machine (prunebench.gpus), with fake GPU counts."""
from __future__ import annotations

import fcntl
import os
import subprocess
import sys
import textwrap

import pytest
import torch

from prunebench import gpus


@pytest.fixture
def fake_gpus(monkeypatch, tmp_path):
    """``n`` visible GPUs that CUDA has not started on; lock files under tmp_path."""
    def make(n: int, visible: str | None = None):
        monkeypatch.setattr(torch.cuda, "device_count", lambda: n)
        monkeypatch.setattr(torch.cuda, "is_initialized", lambda: False)
        if visible is None:
            monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
        else:
            monkeypatch.setenv("CUDA_VISIBLE_DEVICES", visible)
        return tmp_path / "prunebench-gpus"

    monkeypatch.setenv("PRUNEBENCH_GPU_LOCKS", str(tmp_path))
    monkeypatch.delenv("PRUNEBENCH_GPU_CLAIM", raising=False)
    gpus.release()
    yield make
    gpus.release()


def as_another_job(monkeypatch):
    """The state a new job's process starts in: nothing claimed, all GPUs visible (the lock
    files this process holds stay held, as another job's would)."""
    gpus.CLAIMED = None
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES")


def test_claims_distinct_gpus_and_narrows_visible_devices(fake_gpus, monkeypatch):
    fake_gpus(3)
    assert gpus.claim() == "0"
    assert os.environ["CUDA_VISIBLE_DEVICES"] == "0"
    assert gpus.claim() == "0"  # the same process again: keeps its GPU, takes no other
    as_another_job(monkeypatch)
    assert gpus.claim() == "1"
    as_another_job(monkeypatch)
    assert gpus.claim() == "2"
    as_another_job(monkeypatch)
    with pytest.raises(TimeoutError, match="all 3 GPUs"):
        gpus.claim(wait_s=0.05, poll_s=0.01)
    gpus.release()
    assert gpus.claim() == "0"


def test_verify_catches_a_claim_that_cuda_ignored(fake_gpus, monkeypatch):
    fake_gpus(2)
    gpus.verify()  # nothing claimed: nothing to check
    assert gpus.claim() == "0"
    with pytest.raises(RuntimeError, match="claimed GPU 0 but CUDA sees 2 devices"):
        gpus.verify()  # CUDA started before the claim: still both GPUs
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    gpus.verify()


def test_uses_the_entries_of_cuda_visible_devices(fake_gpus):
    folder = fake_gpus(2, visible="5,7")
    assert gpus.claim() == "5"
    assert os.environ["CUDA_VISIBLE_DEVICES"] == "5"
    assert (folder / "5.lock").read_text().strip() == str(os.getpid())


def test_one_gpu_needs_no_claim_and_started_cuda_is_an_error(fake_gpus, monkeypatch):
    fake_gpus(1, visible="3")
    assert gpus.claim() is None
    assert os.environ["CUDA_VISIBLE_DEVICES"] == "3"
    monkeypatch.setattr(torch.cuda, "is_initialized", lambda: True)
    assert gpus.claim() is None  # one GPU: nothing to choose, started or not
    fake_gpus(4, visible="0,1,2,3")
    monkeypatch.setattr(torch.cuda, "is_initialized", lambda: True)
    with pytest.raises(RuntimeError, match="before a GPU was claimed"):
        gpus.claim()
    assert os.environ["CUDA_VISIBLE_DEVICES"] == "0,1,2,3"


def test_a_gpu_held_by_another_process_is_skipped_and_freed_when_it_dies(fake_gpus, monkeypatch):
    folder = fake_gpus(2)
    folder.mkdir(parents=True)
    holder = subprocess.Popen([sys.executable, "-c", textwrap.dedent(f"""
        import fcntl, os, sys
        fd = os.open({str(folder / '0.lock')!r}, os.O_CREAT | os.O_RDWR)
        fcntl.flock(fd, fcntl.LOCK_EX)
        print("held", flush=True)
        sys.stdin.read()
    """)], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        assert gpus.claim() == "1"
        gpus.release()
    finally:
        holder.kill()
        holder.wait()
    as_another_job(monkeypatch)
    assert gpus.claim() == "0"  # the dead holder left no stale lock


def test_waits_for_a_gpu_to_free(fake_gpus, monkeypatch):
    folder = fake_gpus(2)
    folder.mkdir(parents=True)
    fds = []
    for t in ("0", "1"):
        fd = os.open(folder / f"{t}.lock", os.O_CREAT | os.O_RDWR)
        fcntl.flock(fd, fcntl.LOCK_EX)
        fds.append(fd)
    calls = []

    def sleep(s):  # the second poll finds GPU 1 free
        calls.append(s)
        os.close(fds.pop())

    monkeypatch.setattr(gpus.time, "sleep", sleep)
    assert gpus.claim(poll_s=0.5) == "1"
    assert calls == [0.5]
    os.close(fds.pop())


@pytest.mark.parametrize("device, env, expect", [
    ("cuda", None, True), ("auto", None, True), ("cuda:1", None, False), ("cpu", None, False),
    ("cuda", "0", False), ("cuda", "1", True),
])
def test_wants_claim(monkeypatch, device, env, expect):
    if env is None:
        monkeypatch.delenv("PRUNEBENCH_GPU_CLAIM", raising=False)
    else:
        monkeypatch.setenv("PRUNEBENCH_GPU_CLAIM", env)
    assert gpus.wants_claim(device) is expect


class Claimed(Exception):
    pass


def test_resolve_device_claims_before_cuda_only_where_asked(monkeypatch):
    from prunebench.devices import resolve_device

    def claim(*a, **k):
        raise Claimed

    monkeypatch.delenv("PRUNEBENCH_GPU_CLAIM", raising=False)
    monkeypatch.setattr(gpus, "claim", claim)
    for name in ("cuda", "auto"):
        with pytest.raises(Claimed):
            resolve_device(name)
    assert resolve_device("cpu") == torch.device("cpu")
    monkeypatch.setenv("PRUNEBENCH_GPU_CLAIM", "0")
    assert resolve_device("auto").type in ("cpu", "cuda")  # turned off: no claim
