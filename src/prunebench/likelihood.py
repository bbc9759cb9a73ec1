"""Next-token likelihood of token windows under a model: what the perplexity stage reports and
what the calibration-perplexity criteria of the methods (``depth``'s ``ppl``, ``sleb``) score.

Every window is scored on its own (no context carried over); the loss of all predicted
tokens (``L - 1`` per window of length ``L``) is averaged.

The output layer is applied a slice of tokens at a time (:func:`nll_from_hidden`): the
logits of a whole batch (1,024 tokens x 49,152 words: 200 MB in float32) are never held at
once.  Each slice's logits stay under :data:`SLICE_VALUES` (24 MB), small enough for the
allocator to reuse its memory instead of mapping fresh pages for every batch (on the demo's
CPU, 128-token slices took 0.47 s where the whole batch took 0.54-0.62 s); every token's NLL
is the same ``logsumexp(z) - z[target]`` as :func:`token_nll`.
"""
from __future__ import annotations

import torch
from tqdm.auto import tqdm

#: most logits one slice of the output layer holds (6 M float32 values, 24 MB: 128 tokens of
#: a 49,152-word vocabulary)
SLICE_VALUES = 6 << 20
#: config keys of families whose logits are more than ``lm_head(hidden)``: scored from the
#: model's own logits instead
_LOGIT_TRANSFORMS = ("final_logit_softcapping", "logit_scale", "logits_scaling")


def token_nll(logits: torch.Tensor, ids: torch.Tensor) -> torch.Tensor:
    """Next-token NLL of every predicted token, ``[batch, L - 1]`` float32, from a model's
    ``logits`` ``[batch, L, vocab]`` on ``ids`` ``[batch, L]``: ``logsumexp(z) - z[target]``,
    i.e. ``-log_softmax(z)[target]`` without writing the whole log-softmax.  The one definition
    the perplexity stage, ``mean_nll`` and the block criteria share."""
    z = logits[:, :-1].float()
    return torch.logsumexp(z, dim=-1) - z.gather(-1, ids[:, 1:, None].to(z.device)).squeeze(-1)


def nll_from_hidden(model, hidden: torch.Tensor, ids: torch.Tensor) -> torch.Tensor:
    """:func:`token_nll` of the logits ``model``'s output layer gives for ``hidden`` (the
    decoder's last hidden states, final norm applied, ``[batch, L, hidden]``), computed a
    slice of tokens at a time (module docstring); ``[batch, L - 1]`` float32."""
    head = model.get_output_embeddings()
    b, n = hidden.shape[0], hidden.shape[1] - 1
    h = hidden[:, :-1].reshape(b * n, hidden.shape[-1])
    target = ids[:, 1:].reshape(b * n, 1).to(h.device)
    step = max(1, SLICE_VALUES // head.out_features)
    out = torch.empty(b * n, dtype=torch.float32, device=h.device)
    for s in range(0, b * n, step):
        z = head(h[s:s + step]).float()
        out[s:s + step] = torch.logsumexp(z, dim=-1) - z.gather(-1, target[s:s + step]).squeeze(-1)
    return out.view(b, n)


def model_nll(model, ids: torch.Tensor) -> torch.Tensor:
    """Per-token NLL ``[batch, L - 1]`` of ``ids`` under ``model`` (a pass that starts from
    recorded block inputs replaces them with hooks: :class:`prunebench.methods.blocks.Feed`)."""
    inputs = {"input_ids": ids}
    if any(getattr(model.config, k, None) for k in _LOGIT_TRANSFORMS):
        return token_nll(model(**inputs, use_cache=False).logits, ids)
    hidden = model.model(**inputs, use_cache=False).last_hidden_state
    return nll_from_hidden(model, hidden, ids)


@torch.no_grad()
def mean_nll(model, ids: torch.Tensor, batch_size: int = 8, progress: bool = False, desc: str = "nll") -> float:
    """Mean next-token negative log-likelihood of ``ids`` ([n, L]) under ``model``."""
    device = next(model.parameters()).device
    total, count = 0.0, 0
    batches = range(0, ids.shape[0], batch_size)
    for start in tqdm(batches, desc=desc, disable=not progress, mininterval=2):
        x = ids[start : start + batch_size].to(device)
        tok = model_nll(model, x)
        total += tok.sum().item()
        count += tok.numel()
    return total / max(count, 1)
