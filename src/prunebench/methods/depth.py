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

The number of blocks to remove is solved from the budget: the count whose pruned
model has the parameter count closest to ``budget.target_params``.  Removal is
one-shot (all scores computed on the dense model), as in the paper.
"""
from __future__ import annotations

import math

import torch

from .base import Budget, PrunedModel, register
from .blocks import (REPORT_FIELDS, Skip as _Skip, keep_reach, nll_without, remove_blocks, remove_lowest,  # noqa: F401
                     solve_num_blocks)


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
         "then": {"properties": {"like": {"const": None}}}},
    ],
}


@register("depth", SETTINGS, keep_reach, report_fields=REPORT_FIELDS)
def prune(model, calibration: torch.Tensor, budget: Budget, settings: dict) -> PrunedModel:
    criterion, bs = settings["criterion"], settings["batch_size"]
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
