"""Next-token likelihood of token windows under a model: what the perplexity stage reports and
what the calibration-perplexity criteria of the methods (``depth``'s ``ppl``, ``sleb``) score.

Every window is scored on its own (no context carried over); the loss of all predicted
tokens (``L - 1`` per window of length ``L``) is averaged.
"""
from __future__ import annotations

import torch
from tqdm.auto import tqdm


def token_nll(logits: torch.Tensor, ids: torch.Tensor) -> torch.Tensor:
    """Next-token NLL of every predicted token, ``[batch, L - 1]`` float32, from a model's
    ``logits`` ``[batch, L, vocab]`` on ``ids`` ``[batch, L]``: ``logsumexp(z) - z[target]``,
    i.e. ``-log_softmax(z)[target]`` without writing the whole log-softmax.  The one definition
    the perplexity stage, ``mean_nll`` and the block criteria share."""
    z = logits[:, :-1].float()
    return torch.logsumexp(z, dim=-1) - z.gather(-1, ids[:, 1:, None].to(z.device)).squeeze(-1)


@torch.no_grad()
def mean_nll(model, ids: torch.Tensor, batch_size: int = 8, progress: bool = False, desc: str = "nll") -> float:
    """Mean next-token negative log-likelihood of ``ids`` ([n, L]) under ``model``."""
    device = next(model.parameters()).device
    total, count = 0.0, 0
    batches = range(0, ids.shape[0], batch_size)
    for start in tqdm(batches, desc=desc, disable=not progress, mininterval=2):
        x = ids[start : start + batch_size].to(device)
        tok = token_nll(model(input_ids=x, use_cache=False).logits, x)
        total += tok.sum().item()
        count += tok.numel()
    return total / max(count, 1)
