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
never removed (``keep_first`` / ``keep_last``).  The steps of a smaller budget are the
first steps of a larger one: with the score cache (:mod:`prunebench.score_cache`) the
budgets of one method share them, and a later budget continues where an earlier stopped.

Screening (setting ``screen``, off by default): every candidate is first scored on a
copy of the model in ``screen`` precision (``bfloat16``: about three times faster on a
CPU with bfloat16 matrix units, slower on one without), then every candidate within
``screen_margin`` (mean NLL, nats) of the screen's best is scored again in the pruning
precision, and those values decide.  If the screen's error on the rescored candidates
is more than a quarter of the margin, the margin grows to four times that error and the
newly covered candidates are rescored too.  The best candidate in the pruning precision
has a screened NLL within twice the screen's error of the screen's lowest, so it is
rescored (and chosen) as long as the screen errs on no candidate by more than twice the
largest error seen on the rescored ones: the blocks removed are those of scoring every
candidate in the pruning precision (tested; on the demo the screen errs by about 0.001
nats).  The report keeps both: each step's ``candidates`` (the screen's perplexities) and
``verified`` (the rescored ones).

Settings: ``keep_first``, ``keep_last`` (1, 1), ``batch_size`` (calibration batch, 8),
``screen`` (null or ``bfloat16``), ``screen_margin`` (0.01 nats: 1 % in perplexity).
"""
from __future__ import annotations

import math

import torch

from ..models import count_params
from ..likelihood import mean_nll
from .base import Budget, PrunedModel, register
from .blocks import (REPORT_FIELDS, BlockInputs, Skip, block_params, keep_reach, near_lowest, nll_without, removable,
                     removal_report, rescore, screen_copy, stored_nll)

SETTINGS = {
    "type": "object",
    "additionalProperties": False,
    "properties": {
        "keep_first": {"type": "integer", "minimum": 0, "default": 1},
        "keep_last": {"type": "integer", "minimum": 0, "default": 1},
        "batch_size": {"type": "integer", "minimum": 1, "default": 8},
        "screen": {"enum": [None, "bfloat16"], "default": None,
                   "description": "score every candidate in this precision first; the pruning precision decides"},
        "screen_margin": {"type": "number", "exclusiveMinimum": 0, "default": 0.01,
                          "description": "candidates within this many nats of the screen's best are rescored"},
    },
}


def ppl_without(model, drop: list[int], calibration: torch.Tensor, batch_size: int) -> float:
    """Calibration perplexity of ``model`` with blocks ``drop`` left out."""
    with Skip(model, drop):
        return math.exp(min(mean_nll(model, calibration, batch_size), 700))


def _ppl(nll: float) -> float:
    return math.exp(min(nll, 700))


def eliminate(model, calibration: torch.Tensor, target: int, keep_first: int, keep_last: int,
              batch_size: int, screen: str | None = None, margin: float = 0.01) -> list[dict]:
    """SLEB's steps: ``[{"removed": block, "ppl": ..., "candidates": {block: ppl},
    "verified": {block: ppl} (screened only)}, ...]``."""
    total, per_block = count_params(model), block_params(model)
    coarse_model = screen_copy(model, screen)
    # each model's block inputs kept from step to step: a step runs only the blocks after the
    # one the step before removed to get them (the same tensors as a full pass)
    fine_in, coarse_in = BlockInputs(), BlockInputs()
    removed: list[int] = []
    steps: list[dict] = []
    current = total
    while True:
        candidates = [b for b in removable(len(per_block), keep_first, keep_last) if b not in removed]
        if not any(abs(current - per_block[b] - target) < abs(current - target) for b in candidates):
            break
        step: dict = {}
        known = stored_nll(model, calibration, removed, candidates, batch_size) if coarse_model else None
        if known is not None:  # all scored in the pruning precision before (another budget, depth-ppl)
            nll = known
            step["candidates"] = {b: _ppl(v) for b, v in known.items()}
        elif coarse_model is None:
            nll = nll_without(model, calibration, removed, candidates, batch_size, fine_in)
        else:
            coarse = nll_without(coarse_model, calibration, removed, candidates, batch_size, coarse_in)
            nll, _ = rescore(model, calibration, removed, coarse, margin, batch_size, near_lowest, fine_in)
            step["candidates"] = {b: _ppl(coarse[b]) for b in candidates}
        ppl = {b: _ppl(v) for b, v in nll.items()}
        best = min(ppl, key=lambda b: (ppl[b], b))
        if abs(current - per_block[best] - target) >= abs(current - target):
            break  # unequal blocks: the chosen one overshoots the budget
        removed.append(best)
        current -= per_block[best]
        if coarse_model is None:
            step["candidates"] = ppl
        else:
            step["verified"] = ppl
        steps.append({"removed": best, "ppl": ppl[best], **step})
    return steps


@register("sleb", SETTINGS, keep_reach, report_fields=REPORT_FIELDS)
def prune(model, calibration: torch.Tensor, budget: Budget, settings: dict) -> PrunedModel:
    n_layers = len(model.model.layers)
    total, per_block = count_params(model), block_params(model)
    screen = settings["screen"]
    steps = eliminate(model, calibration, budget.target_params, settings["keep_first"], settings["keep_last"],
                      settings["batch_size"], screen, settings["screen_margin"])
    first = steps[0]["candidates"] if steps else {}
    removal = removal_report(model, [st["removed"] for st in steps], n_layers, total, per_block,
                             settings["keep_first"], settings["keep_last"])

    def by_block(values: dict) -> list:
        return [values.get(i) for i in range(n_layers)]

    precision = f"{screen} screen" if screen else "pruning precision"
    return PrunedModel(model, {
        "criterion": "iterative calibration PPL",
        # scores: the first step's PPL without each block (null: protected), as depth-ppl's
        "scores": by_block(first),
        "score_meaning": f"calibration PPL without the block, on the dense model ({precision}; higher = more "
                         "important); later steps in 'steps'",
        "screen": {"dtype": screen, "margin": settings["screen_margin"]} if screen else None,
        "removal_order": [st["removed"] for st in steps],
        "steps": [{"removed": st["removed"], "ppl": st["ppl"], "candidates": by_block(st["candidates"]),
                   **({"verified": by_block(st["verified"])} if "verified" in st else {})} for st in steps],
        **removal,
    })
