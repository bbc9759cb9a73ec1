"""Next-token likelihood of token windows under a model: what the perplexity stage reports and
what the calibration-perplexity criteria of the methods (``depth``'s ``ppl``, ``sleb``) score.

Every window is scored on its own (no context carried over); the loss of all predicted
tokens (``L - 1`` per window of length ``L``) is averaged.
"""
from __future__ import annotations

import torch
from tqdm.auto import tqdm


@torch.no_grad()
def mean_nll(model, ids: torch.Tensor, batch_size: int = 8, progress: bool = False, desc: str = "nll") -> float:
    """Mean next-token negative log-likelihood of ``ids`` ([n, L]) under ``model``."""
    device = next(model.parameters()).device
    total, count = 0.0, 0
    batches = range(0, ids.shape[0], batch_size)
    for start in tqdm(batches, desc=desc, disable=not progress, mininterval=2):
        x = ids[start : start + batch_size].to(device)
        logits = model(input_ids=x, use_cache=False).logits.float()
        logp = torch.log_softmax(logits[:, :-1], dim=-1)
        tok = logp.gather(-1, x[:, 1:, None]).squeeze(-1)
        total -= tok.sum().item()
        count += tok.numel()
    return total / max(count, 1)
