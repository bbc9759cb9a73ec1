"""``shortgpt``: remove the blocks of lowest Block Influence (ShortGPT, Men et al. 2024).

Paper: X. Men et al., "ShortGPT: Layers in Large Language Models are More Redundant
Than You Expect", arXiv:2403.03853 (2024).  Reference code:
github.com/icip-cas/ShortGPT (``shortgpt/metrics.py: block_influence``,
``shortgpt/shortgpt.py: compute_bi``).

Block Influence of block ``i`` with input ``X_i`` and output ``X_{i+1}`` (the residual
stream before and after it)::

    BI_i = 1 - E_{x, t} [ cos(X_{i,t}, X_{i+1,t}) ]

the expectation over every token ``t`` of every calibration window (one forward pass,
:func:`prunebench.methods.blocks.scan_hidden_states`).  A block that barely turns the
hidden state (BI near 0) is redundant; the lowest-BI blocks are removed, one-shot, as
many as land closest to the parameter budget (the ``depth`` method's solver).

One difference from the reference code: it takes Hugging Face's ``output_hidden_states``
as is, whose last entry carries the final norm, so the last block's BI compares a raw
input with a normalised output.  Here the last block's raw output is used, as the
paper's definition reads (every other block is scored identically).

Settings: ``keep_first`` / ``keep_last`` (blocks never removed, default 0: the paper
ranks every block), ``batch_size`` (calibration forward batch, 8).
"""
from __future__ import annotations

import torch

from .base import Budget, PrunedModel, register
from .blocks import cosine, remove_lowest, scan_hidden_states, keep_reach, REPORT_FIELDS

SETTINGS = {
    "type": "object",
    "additionalProperties": False,
    "properties": {
        "keep_first": {"type": "integer", "minimum": 0, "default": 0},
        "keep_last": {"type": "integer", "minimum": 0, "default": 0},
        "batch_size": {"type": "integer", "minimum": 1, "default": 8},
    },
}


class BlockInfluence:
    """Running mean over tokens of ``1 - cos(X_i, X_{i+1})`` for every block ``i``."""

    def __init__(self):
        self.total: torch.Tensor | None = None
        self.tokens = 0

    def update(self, hidden: list[torch.Tensor]) -> None:
        bi = torch.stack([(1 - cosine(a, b)).sum() for a, b in zip(hidden[:-1], hidden[1:])])
        self.total = bi if self.total is None else self.total + bi
        self.tokens += hidden[0].shape[0] * hidden[0].shape[1]

    @property
    def scores(self) -> list[float]:
        return (self.total / self.tokens).tolist()


def block_influence(model, calibration: torch.Tensor, batch_size: int) -> list[float]:
    bi = BlockInfluence()
    scan_hidden_states(model, calibration, batch_size, bi)
    return bi.scores


@register("shortgpt", SETTINGS, keep_reach, report_fields=REPORT_FIELDS)
def prune(model, calibration: torch.Tensor, budget: Budget, settings: dict) -> PrunedModel:
    scores = block_influence(model, calibration, settings["batch_size"])
    removal = remove_lowest(model, scores, budget, settings["keep_first"], settings["keep_last"])
    return PrunedModel(model, {
        "criterion": "block influence",
        "scores": scores,
        "score_meaning": "block influence 1 - mean cos(input, output) over calibration tokens "
                         "(higher = more important)",
        "calibration_tokens": int(calibration.numel()),
        **removal,
    })
