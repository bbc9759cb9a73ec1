"""The one next-token NLL definition against transformers' own loss (an independent computation)."""
from __future__ import annotations

import pytest
import torch

from prunebench.likelihood import mean_nll, token_nll
from prunebench.perplexity import window_nlls


def test_token_nll_is_transformers_cross_entropy(tiny_model):
    torch.manual_seed(0)
    ids = torch.randint(0, tiny_model.config.vocab_size, (5, 12))
    with torch.no_grad():
        per_window = torch.stack([tiny_model(input_ids=ids[i:i + 1], labels=ids[i:i + 1]).loss for i in range(5)])
        tok = token_nll(tiny_model(input_ids=ids).logits, ids)
    assert tok.shape == (5, 11) and (tok > 0).all()
    assert tok.mean(dim=1).tolist() == pytest.approx(per_window.tolist(), rel=1e-5)
    # the stage's per-window values and the criteria's mean, batched differently, agree
    assert window_nlls(tiny_model, ids, batch_size=2).tolist() == pytest.approx(per_window.tolist(), rel=1e-5)
    assert mean_nll(tiny_model, ids, batch_size=3) == pytest.approx(float(per_window.mean()), rel=1e-5)


def test_sliced_output_layer_gives_the_full_logits_nll(tiny_model, monkeypatch):
    """The output layer applied a few tokens at a time (slices crossing window boundaries)
    scores every token as the whole logits tensor does."""
    from prunebench import likelihood

    torch.manual_seed(1)
    ids = torch.randint(0, tiny_model.config.vocab_size, (3, 10))
    with torch.no_grad():
        full = token_nll(tiny_model(input_ids=ids).logits, ids)
        monkeypatch.setattr(likelihood, "SLICE_VALUES", 4 * tiny_model.config.vocab_size)  # 4 tokens a slice
        sliced = likelihood.model_nll(tiny_model, ids)
    assert sliced.shape == full.shape == (3, 9)
    assert torch.allclose(sliced, full, rtol=1e-6, atol=1e-6)
