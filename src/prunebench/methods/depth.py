"""``depth``: remove whole transformer blocks (Shortened LLaMA, Kim et al. 2024).

Settings (``methods.<name>`` in the config):

``criterion``
    ``ppl``    -- remove one block at a time and measure the perplexity of the
                  calibration samples without it; the blocks whose removal hurts
                  least (lowest PPL) go.
    ``taylor`` -- Taylor+: score a block by sum |W * dL/dW| over its weights, L the
                  calibration loss; the lowest-scoring blocks go, but never the first
                  ``keep_first`` (4) nor the last ``keep_last`` (2) blocks.
    ``random`` -- a seeded random choice of blocks (``seed``): the control that shows
                  whether a criterion is better than chance.  ``like: <criterion>``
                  draws from the blocks that criterion may remove (its protected
                  blocks), so that chance competes on equal terms.
``keep_first``, ``keep_last``
    blocks protected from removal (defaults: 4/2 for ``taylor``, 0/0 for the others; for
    ``random``, those of ``like``).
``batch_size``
    calibration batch size for scoring (8).
``seed``
    of the ``random`` choice (0).
``screen``, ``screen_margin``
    ``ppl`` only: score every block first on a copy of the model in ``screen`` precision
    (``bfloat16``; null, the default: no screening), then rescore in the pruning precision
    the blocks whose screened NLL is within ``screen_margin`` nats (0.01) of the cut (the
    NLL halfway between the last block removed and the first kept): those values decide
    among them (:func:`~prunebench.methods.blocks.lowest_screened`; the blocks of scoring
    every block in the pruning precision, as SLEB's screen).  The report's ``scores`` are
    the screen's, ``verified`` the rescored ones.

The number of blocks to remove is solved from the budget: the count whose pruned
model has the parameter count closest to ``budget.target_params``.  Removal is
one-shot (all scores computed on the dense model), as in the paper.
"""
from __future__ import annotations

import math

import torch

from .base import Budget, PrunedModel, register
from ..models import count_params
from .blocks import (REPORT_FIELDS, Skip as _Skip, block_params, keep_reach, lowest_screened, nll_without,  # noqa: F401
                     removable, removal_report, remove_blocks, remove_lowest, screen_copy, solve_num_blocks)


SCORE_MEANING = {
    "ppl": "calibration PPL without the block (higher = more important)",
    "taylor": "sum |W*grad| of the block (higher = more important)",
    "random": "seeded uniform random number (control)",
}


def ppl_scores(model, calibration: torch.Tensor, batch_size: int) -> list[float]:
    """Calibration PPL without each block (:func:`~prunebench.methods.blocks.nll_without`:
    each pass starts from the block's cached input)."""
    nll = nll_without(model, calibration, (), list(range(len(model.model.layers))), batch_size)
    return [math.exp(min(nll[i], 700)) for i in range(len(model.model.layers))]


def taylor_scores(model, calibration: torch.Tensor, batch_size: int) -> list[float]:
    """Sum over each block's weights of |W * grad W|, gradient of the mean calibration NLL
    (:func:`~prunebench.methods.saliency.saliency`: computed once, shared with LLM-Pruner
    and the other budgets through the score cache)."""
    from .saliency import saliency

    sal = saliency(model, calibration, batch_size)
    return [sal.block(model, i) for i in range(len(model.model.layers))]


SETTINGS = {
    "type": "object",
    "additionalProperties": False,
    "required": ["criterion"],
    "properties": {
        "criterion": {"enum": list(SCORE_MEANING)},
        "seed": {"type": "integer", "default": 0},
        "like": {"enum": ["ppl", "taylor", None], "default": None,
                 "description": "random: draw from the blocks this criterion may remove"},
        "keep_first": {"type": "integer", "minimum": 0},
        "keep_last": {"type": "integer", "minimum": 0},
        "batch_size": {"type": "integer", "minimum": 1, "default": 8},
        "screen": {"enum": [None, "bfloat16"], "default": None,
                   "description": "ppl: score every block in this precision first; the pruning precision decides"},
        "screen_margin": {"type": "number", "exclusiveMinimum": 0, "default": 0.01,
                          "description": "ppl: blocks within this many nats of the cut are rescored"},
    },
    # the protected blocks' defaults depend on the criterion: Taylor+ keeps the first 4 and
    # the last 2 (the paper's choice), the others protect none; a random control drawn
    # "like" Taylor+ protects what Taylor+ protects
    "allOf": [
        {"if": {"anyOf": [{"properties": {"criterion": {"const": "taylor"}}},
                          {"properties": {"like": {"const": "taylor"}}, "required": ["like"]}]},
         "then": {"properties": {"keep_first": {"default": 4}, "keep_last": {"default": 2}}},
         "else": {"properties": {"keep_first": {"default": 0}, "keep_last": {"default": 0}}}},
        # only a random control draws "like" another criterion (refused up front, at its key)
        {"if": {"not": {"properties": {"criterion": {"const": "random"}}}},
         "then": {"properties": {"like": {"const": None, "message": "applies only with criterion 'random'; "
                                                                    "leave it out for this criterion"}}}},
        # only the PPL criterion screens
        {"if": {"not": {"properties": {"criterion": {"const": "ppl"}}}},
         "then": {"properties": {"screen": {"const": None, "message": "applies only with criterion 'ppl'; "
                                                                      "leave it out for this criterion"}}}},
    ],
}


@register("depth", SETTINGS, keep_reach, report_fields=REPORT_FIELDS)
def prune(model, calibration: torch.Tensor, budget: Budget, settings: dict) -> PrunedModel:
    criterion, bs = settings["criterion"], settings["batch_size"]
    if criterion == "ppl" and settings["screen"]:
        return _screened_ppl(model, calibration, budget, settings)
    if criterion == "ppl":
        scores = ppl_scores(model, calibration, bs)
    elif criterion == "taylor":
        scores = taylor_scores(model, calibration, bs)
    else:
        g = torch.Generator().manual_seed(settings["seed"])
        scores = torch.rand(len(model.model.layers), generator=g).tolist()
    removal = remove_lowest(model, scores, budget, settings["keep_first"], settings["keep_last"])
    return PrunedModel(model, {"criterion": criterion, "scores": scores, "like": settings.get("like"),
                               "score_meaning": SCORE_MEANING[criterion], **removal})


def _screened_ppl(model, calibration: torch.Tensor, budget: Budget, settings: dict) -> PrunedModel:
    """The PPL criterion with its blocks screened (``screen``): the blocks scored in the
    pruning precision decide at the cut."""
    n_layers, bs = len(model.model.layers), settings["batch_size"]
    keep = settings["keep_first"], settings["keep_last"]
    total, per_block = count_params(model), block_params(model)
    cands = removable(n_layers, *keep)
    if len({per_block[b] for b in cands}) > 1:  # unequal blocks: the count depends on the order
        scores = ppl_scores(model, calibration, bs)
        return PrunedModel(model, {"criterion": "ppl", "scores": scores, "like": None,
                                   "screen": "not used: blocks of unequal size",
                                   "score_meaning": SCORE_MEANING["ppl"], **remove_lowest(model, scores, budget, *keep)})
    n = solve_num_blocks(total, per_block, cands, budget.target_params)
    coarse_model = screen_copy(model, settings["screen"])
    drop, coarse, fine = lowest_screened(model, coarse_model, calibration, (), cands, n, settings["screen_margin"], bs)
    ppl = lambda nll: math.exp(min(nll, 700))  # noqa: E731
    return PrunedModel(model, {
        "criterion": "ppl",
        "scores": [ppl(coarse[i]) if i in coarse else None for i in range(n_layers)],
        "verified": [ppl(fine[i]) if i in fine else None for i in range(n_layers)],
        "like": None,
        "screen": {"dtype": settings["screen"], "margin": settings["screen_margin"]},
        "score_meaning": SCORE_MEANING["ppl"] + f", {settings['screen']} screen; 'verified': rescored in the "
                         "pruning precision, which decides at the cut",
        **removal_report(model, sorted(drop), n_layers, total, per_block, *keep),
    })
