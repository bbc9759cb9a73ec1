"""``angular``: remove the contiguous run of blocks that turns the hidden state least
(Gromov et al. 2024).

Paper: A. Gromov et al., "The Unreasonable Ineffectiveness of the Deeper Layers",
arXiv:2403.17887 (2024): the similarity-informed layer pruning algorithm, without its
QLoRA "healing" step.
Reference code: the paper publishes none; github.com/arcee-ai/PruneMe
(``compute_block_similarity/utils.py``: ``angular_distance``, ``compute_block_distances``,
on the last non-padded token) is the widely used implementation of the rule.  It
drops the embedding entry of ``output_hidden_states`` (so no run can start at block 0)
and its last entry carries the final norm; here the distances are between the raw
residual stream at every block boundary, embeddings included, as the paper defines.

For a run of ``n`` blocks starting at block ``l`` (blocks ``l .. l+n-1``), the angular
distance between its input ``x^(l)`` and its output ``x^(l+n)`` (residual stream)::

    d(x^(l), x^(l+n)) = arccos( x^(l) . x^(l+n) / (|x^(l)| |x^(l+n)|) ) / pi

averaged over the calibration windows; the run ``l* = argmin_l d(x^(l), x^(l+n))`` is
removed.  ``n`` comes from the parameter budget: for each run length its best run is
found, and the length whose pruned model lands closest to the budget is taken (with
equal blocks this is the ``depth`` method's block count).  All distances, for every
``l`` and ``n``, come from one forward pass
(:func:`prunebench.methods.blocks.scan_hidden_states`).

Which tokens (setting ``tokens``):

``last`` (default)
    the final token of each window, as the paper defines ``d`` ("the final token T of
    the sequence"): under causal attention it is the only position that has seen the
    whole window, and it is the one that predicts what follows.  The average is then
    over ``n_samples`` windows (10 in the paper's setup), the paper's estimator.
``all``
    every token of every window (``n_samples * seq_len`` vectors): a lower-variance
    estimate from a small calibration set, which weighs short-context positions as
    much as long-context ones.

Settings: ``tokens``, ``keep_first`` / ``keep_last`` (blocks no run may include,
default 0), ``batch_size`` (calibration forward batch, 8).
"""
from __future__ import annotations

import math

import torch

from ..models import count_params
from .base import Budget, PrunedModel, register
from .blocks import block_params, removal_report, scan_hidden_states, keep_reach, REPORT_FIELDS

SETTINGS = {
    "type": "object",
    "additionalProperties": False,
    "properties": {
        "tokens": {"enum": ["last", "all"], "default": "last"},
        "keep_first": {"type": "integer", "minimum": 0, "default": 0},
        "keep_last": {"type": "integer", "minimum": 0, "default": 0},
        "batch_size": {"type": "integer", "minimum": 1, "default": 8},
    },
}


class AngularDistances:
    """Running mean of ``arccos(cos(x^(i), x^(j))) / pi`` for every pair of block
    boundaries ``i, j`` (an ``[n_layers + 1, n_layers + 1]`` matrix)."""

    def __init__(self, tokens: str):
        self.tokens = tokens
        self.total: torch.Tensor | None = None
        self.count = 0

    def update(self, hidden: list[torch.Tensor]) -> None:
        # float64: arccos is steep near 1, where float32 rounding of a cosine of 1 reads as
        # a distance of ~1e-4
        h = torch.stack([x[:, -1] if self.tokens == "last" else x.flatten(0, 1) for x in hidden]).double()
        h = torch.nn.functional.normalize(h, dim=-1, eps=1e-12)  # [L+1, vectors, hidden]
        cos = torch.einsum("ind,jnd->ijn", h, h).clamp(-1.0, 1.0)
        d = (torch.arccos(cos) / math.pi).sum(-1)
        self.total = d if self.total is None else self.total + d
        self.count += h.shape[1]

    @property
    def matrix(self) -> torch.Tensor:
        return self.total / self.count


def best_run(dist: torch.Tensor, n: int, starts: range) -> int:
    """The start ``l`` in ``starts`` of least ``dist[l, l + n]`` (the first one on ties)."""
    return min(starts, key=lambda l: (float(dist[l, l + n]), l))


def choose_run(dist: torch.Tensor, per_block: list[int], total: int, target: int,
               keep_first: int, keep_last: int) -> tuple[int, int]:
    """``(start, length)`` of the run to remove: for every length its best run, and of
    those the one whose pruned model is closest to ``target`` (length 0 = nothing)."""
    n_layers = len(per_block)
    best, best_err = (0, 0), abs(total - target)
    for n in range(1, n_layers - keep_first - keep_last + 1):
        l = best_run(dist, n, range(keep_first, n_layers - keep_last - n + 1))
        err = abs(total - sum(per_block[l:l + n]) - target)
        if err < best_err:
            best, best_err = (l, n), err
    return best


@register("angular", SETTINGS, keep_reach, report_fields=REPORT_FIELDS)
def prune(model, calibration: torch.Tensor, budget: Budget, settings: dict) -> PrunedModel:
    n_layers = len(model.model.layers)
    total, per_block = count_params(model), block_params(model)
    ad = AngularDistances(settings["tokens"])
    scan_hidden_states(model, calibration, settings["batch_size"], ad)
    dist = ad.matrix
    start, n = choose_run(dist, per_block, total, budget.target_params, settings["keep_first"], settings["keep_last"])
    removal = removal_report(model, list(range(start, start + n)), n_layers, total, per_block,
                             settings["keep_first"], settings["keep_last"])
    return PrunedModel(model, {
        "criterion": "angular distance",
        "tokens": settings["tokens"],
        "run": {"start": start, "length": n},
        # scores[l]: distance across the run of the chosen length starting at block l
        "scores": [float(dist[l, l + n]) for l in range(n_layers - n + 1)] if n else [],
        "score_meaning": "mean angular distance arccos(cos(x_l, x_(l+n)))/pi between the input of "
                         "block l and the output of block l+n-1 (lower = more redundant run)",
        "distances": dist.tolist(),
        "vectors": ad.count,
        **removal,
    })
