"""Pruning methods: one file per method, all behind one interface.

A method is a function ``prune(model, calibration, budget, settings) -> PrunedModel`` in a
file of this package, registered under a name with :func:`register` together with what
the pipeline needs to know about it: the JSON schema of its settings (with their defaults),
the parameter counts it can reach, whether it reads calibration data, copies the weights or
wants a GPU, and the columns it adds to the tables (:mod:`.base`).  Every module of this
package is imported here; those that register a method are the methods (:data:`MODULES`),
the others are helpers (``base``, ``blocks``, ``width``, ``passes``, ``saliency``).  ``config.yaml`` names entries
of ``methods:`` whose ``method:`` key picks the registered method; the remaining keys of the
entry are its ``settings``.  Adding a method = adding one file here and one config entry.
"""
from __future__ import annotations

import importlib
import pkgutil

from .base import (REGISTRY, ArchInfo, Budget, Method, PrunedModel, Reach, arch_info,  # noqa: F401
                   budget_problem, get_method, register, result_problem, table_columns)


def _discover() -> None:
    for mod in sorted(m.name for m in pkgutil.iter_modules(__path__)):
        if not mod.startswith("_"):
            importlib.import_module(f"{__name__}.{mod}")


_discover()

#: the modules that registered a method (a method's file)
MODULES = frozenset(m.module for m in REGISTRY.values())
