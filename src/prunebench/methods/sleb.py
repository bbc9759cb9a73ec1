"""``sleb``: iterative block elimination by calibration perplexity (SLEB, Song et al. 2024).

Paper: J. Song, K. Oh, T. Kim, H. Kim, Y. Kim, J.-J. Kim, "SLEB: Streamlining LLMs
through Redundancy Verification and Elimination of Transformer Blocks", ICML 2024
(arXiv:2402.09025).  Reference code: github.com/jiwonsong-dev/SLEB
(``sleb.py``: ``sleb``, ``get_loss``).

Each step tries every remaining block: the model without the blocks removed so far
and without that block scores the calibration windows (their total next-token loss,
i.e. their perplexity); the block whose removal gives the lowest perplexity goes, and
the remaining blocks are scored again on the model without it.  Unlike the one-shot
``depth`` criterion, every decision sees the blocks already removed.

Steps continue while one more block brings the parameter count closer to the budget
(with equal blocks: the ``depth`` method's block count).  As in the reference code
(``early_barrier``, ``latter_barrier``: 1 and 1), the first and the last block are
never removed (``keep_first`` / ``keep_last``).

Settings: ``keep_first``, ``keep_last`` (1, 1), ``batch_size`` (calibration batch, 8).
"""
from __future__ import annotations

import math

import torch

from ..models import count_params
from ..likelihood import mean_nll
from .base import Budget, PrunedModel, register
from .blocks import REPORT_FIELDS, Skip, block_params, keep_reach, nll_without, removable, removal_report

SETTINGS = {
    "type": "object",
    "additionalProperties": False,
    "properties": {
        "keep_first": {"type": "integer", "minimum": 0, "default": 1},
        "keep_last": {"type": "integer", "minimum": 0, "default": 1},
        "batch_size": {"type": "integer", "minimum": 1, "default": 8},
    },
}


def ppl_without(model, drop: list[int], calibration: torch.Tensor, batch_size: int) -> float:
    """Calibration perplexity of ``model`` with blocks ``drop`` left out."""
    with Skip(model, drop):
        return math.exp(min(mean_nll(model, calibration, batch_size), 700))


def eliminate(model, calibration: torch.Tensor, target: int, keep_first: int, keep_last: int,
              batch_size: int) -> list[dict]:
    """SLEB's steps: ``[{"removed": block, "ppl": ..., "candidates": {block: ppl}}, ...]``."""
    total, per_block = count_params(model), block_params(model)
    removed: list[int] = []
    steps: list[dict] = []
    current = total
    while True:
        candidates = [b for b in removable(len(per_block), keep_first, keep_last) if b not in removed]
        if not any(abs(current - per_block[b] - target) < abs(current - target) for b in candidates):
            break
        nll = nll_without(model, calibration, removed, candidates, batch_size)
        ppl = {b: math.exp(min(nll[b], 700)) for b in candidates}
        best = min(candidates, key=lambda b: (ppl[b], b))
        if abs(current - per_block[best] - target) >= abs(current - target):
            break  # unequal blocks: the chosen one overshoots the budget
        removed.append(best)
        current -= per_block[best]
        steps.append({"removed": best, "ppl": ppl[best], "candidates": ppl})
    return steps


@register("sleb", SETTINGS, keep_reach, report_fields=REPORT_FIELDS)
def prune(model, calibration: torch.Tensor, budget: Budget, settings: dict) -> PrunedModel:
    n_layers = len(model.model.layers)
    total, per_block = count_params(model), block_params(model)
    steps = eliminate(model, calibration, budget.target_params, settings["keep_first"], settings["keep_last"], settings["batch_size"])
    first = steps[0]["candidates"] if steps else {}
    removal = removal_report(model, [st["removed"] for st in steps], n_layers, total, per_block,
                             settings["keep_first"], settings["keep_last"])
    return PrunedModel(model, {
        "criterion": "iterative calibration PPL",
        # scores: the first step's PPL without each block (null: protected), as depth-ppl's
        "scores": [first.get(i) for i in range(n_layers)],
        "score_meaning": "calibration PPL without the block, on the dense model (higher = more important); "
                         "later steps in 'steps'",
        "removal_order": [st["removed"] for st in steps],
        "steps": [{"removed": st["removed"], "ppl": st["ppl"],
                   "candidates": [st["candidates"].get(i) for i in range(n_layers)]} for st in steps],
        **removal,
    })
