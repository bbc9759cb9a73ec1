"""``dense``: no pruning -- the baseline of every chart.

It keeps the base weights: its model folder points at the base model's folder (no copy),
and the prune job loads no model, reads no calibration data and asks for no GPU."""
from __future__ import annotations

from ..models import count_params
from .base import Budget, PrunedModel, register


@register("dense", {"type": "object", "additionalProperties": False},
          needs_calibration=False, copies_weights=False, wants_gpu=False)
def prune(model, calibration, budget: Budget, settings: dict) -> PrunedModel:
    n = count_params(model)
    return PrunedModel(model, {"params_before": n, "params_after": n})
