"""Block inputs kept between calibration-NLL calls (SLEB's steps, a screen's rescoring
rounds): the same tensors, and the same NLLs, as a full pass each time."""
from __future__ import annotations

import pytest
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


def _rescaled_embeddings(model, scale: float):
    """``model`` as a family whose forward multiplies the embeddings by ``scale`` before the
    first block (Gemma's normaliser), whether they come from ``input_ids`` or ``inputs_embeds``."""
    inner = model.model
    inner.embed_tokens.register_forward_hook(lambda _m, _a, out: out * scale)

    def given(_m, args, kwargs):
        if kwargs.get("inputs_embeds") is not None:
            kwargs = {**kwargs, "inputs_embeds": kwargs["inputs_embeds"] * scale}
        return args, kwargs

    inner.register_forward_pre_hook(given, with_kwargs=True)
    return model


def test_criteria_start_from_block_inputs_whatever_the_family_does_to_embeddings(calib):
    """The PPL criterion's NLL without a block, and Wanda-sp's layer-by-layer stream, start from
    recorded block inputs: for a family that rescales its embeddings they still equal a full
    pass (fed as inputs_embeds, the recorded inputs would be rescaled a second time)."""
    from prunebench.methods.blocks import Skip, nll_without
    from prunebench.methods.passes import LayerByLayer
    from prunebench.perplexity import mean_nll

    model = _rescaled_embeddings(tiny_model_of(tiny_arch()), 4.0)
    cands = [0, 3, 7]
    got = nll_without(model, calib, [5], cands, 3)
    for b in cands:
        with Skip(model, [5, b]):
            assert got[b] == pytest.approx(mean_nll(model, calib, 3), rel=1e-6, abs=1e-6)
    stream = LayerByLayer(model, calib, 3)
    for i in range(3):
        stream.advance(i)
    seen = []
    hook = model.model.layers[3].register_forward_pre_hook(lambda _m, args: seen.append(args[0]))
    with torch.no_grad():
        for s in range(0, calib.shape[0], 3):
            model.model(input_ids=calib[s:s + 3], use_cache=False)
    hook.remove()
    assert all(torch.allclose(a, b, rtol=1e-5, atol=1e-6) for a, b in zip(stream.states, seen))
