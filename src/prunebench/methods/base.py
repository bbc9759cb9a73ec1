"""The method interface, the registry and the parameter budget."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable, Protocol

import torch


@dataclass(frozen=True)
class Budget:
    """How many parameters the pruned model should have.

    Built from a config entry ``budget: {params: N}`` (absolute) or
    ``budget: {ratio: r}`` (remove the fraction ``r`` of the dense parameters).
    """

    target_params: int
    dense_params: int

    @classmethod
    def from_config(cls, cfg: dict | None, dense_params: int, key: str = "budget") -> "Budget":
        cfg = cfg or {}
        if "params" in cfg and cfg["params"] is not None:
            target = int(float(cfg["params"]))
        elif "ratio" in cfg and cfg["ratio"] is not None:
            target = int(round(dense_params * (1.0 - float(cfg["ratio"]))))
        else:
            target = dense_params
        if not 0 < target <= dense_params:
            raise ValueError(
                f"{key}: target of {target:,} parameters is not within (0, {dense_params:,}] "
                "(the dense model's size)"
            )
        return cls(target_params=target, dense_params=dense_params)

    @property
    def ratio(self) -> float:
        """Fraction of parameters to remove."""
        return 1.0 - self.target_params / self.dense_params


@dataclass
class PrunedModel:
    """What every method returns: the pruned model (in memory) and a JSON-able report."""

    model: torch.nn.Module
    report: dict = field(default_factory=dict)


class Method(Protocol):
    def __call__(
        self, model: torch.nn.Module, calibration: torch.Tensor, budget: Budget, settings: dict
    ) -> PrunedModel: ...


REGISTRY: dict[str, Method] = {}
#: JSON schema of each method's settings (the config entry minus ``method``), checked
#: with the rest of the config before any job runs.
SETTINGS_SCHEMAS: dict[str, dict] = {}


def register(name: str, settings_schema: dict | None = None) -> Callable[[Method], Method]:
    def deco(fn: Method) -> Method:
        if name in REGISTRY:
            raise ValueError(f"method {name!r} registered twice")
        REGISTRY[name] = fn
        if settings_schema is not None:
            SETTINGS_SCHEMAS[name] = settings_schema
        return fn

    return deco


def get_method(name: str) -> Method:
    try:
        return REGISTRY[name]
    except KeyError:
        raise KeyError(f"unknown method {name!r}; registered: {sorted(REGISTRY)}") from None


def with_defaults(schema: dict, settings: dict) -> dict:
    """``settings`` with the ``default`` of every property of ``schema`` it does not set."""
    out = {k: sub["default"] for k, sub in schema.get("properties", {}).items() if "default" in sub}
    out.update(settings)
    return out
