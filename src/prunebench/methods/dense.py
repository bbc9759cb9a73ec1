"""``dense``: no pruning -- the baseline of every chart."""
from __future__ import annotations

from ..models import count_params
from .base import Budget, PrunedModel, register


@register("dense", {"type": "object", "additionalProperties": False})
def prune(model, calibration, budget: Budget, settings: dict) -> PrunedModel:
    n = count_params(model)
    return PrunedModel(model, {"params_before": n, "params_after": n})
