"""Pruning methods: one file per method, all behind one interface.

A method is a function ``prune(model, calibration, budget, settings) -> PrunedModel``
registered under a name with :func:`register`, with the JSON schema of its settings and
``reachable(info, settings) -> Reach``: the parameter counts it can produce for an
architecture (checked against the budget before any job runs).  ``config.yaml`` names entries of
``methods:`` whose ``method:`` key picks the registered function; the remaining keys
of the entry are its ``settings``.  Adding a method = adding one file here (imported
below) and one config entry.
"""
from __future__ import annotations

from .base import (REACHABLE, REGISTRY, SETTINGS_SCHEMAS, ArchInfo, Budget, PrunedModel, Reach, arch_info,  # noqa: F401
                   budget_problem, get_method, register, result_problem)

# Each import registers its method.
from . import dense  # noqa: F401,E402
from . import angular, depth, shortgpt, sleb  # noqa: F401,E402  (whole blocks)
from . import flap, llm_pruner, minitron, wanda_sp  # noqa: F401,E402  (heads and channels)
