"""Block inputs kept between calibration-NLL calls (SLEB's steps, a screen's rescoring
rounds): the same tensors, and the same NLLs, as a full pass each time."""
from __future__ import annotations

import torch

from conftest import tiny_arch, tiny_model_of


def test_one_block_fewer_gives_the_full_pass_inputs(calib):
    from prunebench.methods.blocks import BlockInputs, _block_inputs

    model = tiny_model_of(tiny_arch(gqa=True))
    cache = BlockInputs()
    kept = list(range(8))
    with torch.no_grad():
        for gone in (None, 4, 0, 7, 5):
            if gone is not None:
                kept.remove(gone)
            got = cache.get(model, calib, 0, kept)
            want = _block_inputs(model, calib, kept)
            assert len(got) == len(kept) and all(torch.equal(a, b) for a, b in zip(got, want))
            assert cache.get(model, calib, 0, kept) is got  # the same blocks: read back
        kept = [1, 2, 6]  # not one block fewer: a full pass
        assert all(torch.equal(a, b) for a, b in zip(cache.get(model, calib, 0, kept), _block_inputs(model, calib, kept)))


def test_sleb_steps_with_kept_inputs_equal_fresh_passes(calib):
    from prunebench.methods.blocks import BlockInputs, nll_without

    model = tiny_model_of(tiny_arch())
    cache = BlockInputs()
    removed: list[int] = []
    for _ in range(3):
        cands = [b for b in range(8) if b not in removed]
        kept_run = nll_without(model, calib, removed, cands, 3, cache)
        fresh = nll_without(model, calib, removed, cands, 3)
        assert kept_run == fresh  # bit for bit
        removed.append(min(kept_run, key=kept_run.get))


def test_hidden_state_scan_read_back_from_the_score_cache(calib, tmp_path, monkeypatch):
    """ShortGPT's and angular distance's scan: the second job on the same model and tokens
    reads the boundaries the first kept, the same tensors, without a forward pass."""
    from prunebench import score_cache
    from prunebench.methods.blocks import scan_hidden_states

    class Keep:
        def __init__(self):
            self.got = []

        def update(self, hidden):
            self.got.append([h.clone() for h in hidden])

    model = tiny_model_of(tiny_arch())
    plain = Keep()
    scan_hidden_states(model, calib, 3, plain)  # no cache directory: nothing kept
    monkeypatch.setenv(score_cache.ENV, str(tmp_path))
    first, second = Keep(), Keep()
    scan_hidden_states(model, calib, 3, first)
    assert len(list(tmp_path.glob("*-hidden.safetensors"))) == 1

    def no_pass(*a, **k):
        raise AssertionError("the model ran")

    monkeypatch.setattr(model.model, "forward", no_pass)
    scan_hidden_states(model, calib, 3, second)
    for a, b, c in zip(plain.got, first.got, second.got):
        assert len(a) == 9 and all(torch.equal(x, y) and torch.equal(x, z) for x, y, z in zip(a, b, c))
