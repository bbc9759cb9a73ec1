"""Prune stage: base model folder + calibration tokens -> pruned model folder + report.

Writes ``results/<experiment>/models/<model>/<method>/`` (format: :mod:`prunebench.models`) and the
report ``results/<experiment>/prune/<model>/<method>.json``: method, settings (the method's defaults
filled in: the settings actually used), budget, parameter counts before/after, seconds, and
the method's own fields (block scores, removed blocks, per-layer widths, ...).

What the stage does follows the method's declarations (:mod:`prunebench.methods.base`): a
method that keeps the base weights gets a folder pointing at the base model (nothing
loaded); one that wants no GPU runs on the CPU whatever ``pruning.device`` says; one that
needs no calibration data is given none (``calibration_path`` may be empty).

The budget is checked against the range the method declares for the loaded model before
pruning, and the pruned model against the method's tolerance before anything is written
(:func:`prunebench.methods.budget_problem`, :func:`~prunebench.methods.result_problem`): a
miss is a ``ConfigError`` naming ``models.<name>.budget``, not a mislabelled model.

The report is tagged ``schema``: :data:`~prunebench.records.PRUNE_REPORT_SCHEMA` (read back
with :func:`prunebench.records.read_prune_report`).  The base folder must be ``model_name``'s
(its manifest's ``model``, ``method: base``) and the calibration windows tokenised for it.
"""
from __future__ import annotations

import contextlib
import time

import torch

from . import data as data_mod
from . import score_cache
from .io import write_json
from .config import ConfigError
from .variants import split_variant
from .methods import Budget, arch_info, budget_problem, get_method, result_problem
from .devices import resolve_device
from .models import count_params, load_model, read_manifest, save_model, save_reference, weights_kind
from .records import PRUNE_REPORT_SCHEMA



def run(base_dir: str, calibration_path: str | None, out_dir: str, report_path: str, *, model_name: str,
        method_name: str, method_spec: dict, budget_cfg: dict | None, device: str, dtype: str,
        seed: int = 0) -> dict:
    t0 = time.perf_counter()
    algo = method_spec["method"]
    try:
        method = get_method(algo)
    except KeyError as exc:
        raise ConfigError(f"config key methods.{method_name}.method: {exc.args[0]}") from None
    try:  # checked with the config already; completed with the method's defaults here, once
        settings = method.settings({k: v for k, v in method_spec.items() if k != "method"})
    except ValueError as exc:
        raise ConfigError(f"config key methods.{method_name}.{exc}") from None
    read_manifest(base_dir, model=model_name, method="base")
    weights = weights_kind(base_dir)
    if not method.copies_weights:
        # no copy of the weights: the folder points at the base model
        man = save_reference(base_dir, out_dir, model_name=model_name, method=method_name)
        report = {"params_before": man["params"], "params_after": man["params"]}
    else:
        # the budgets of a method that scores on calibration data one after the other: the later
        # reads the scores the earlier computed from the score cache (no lock without one);
        # waiting is not pruning time
        t_wait = time.perf_counter()
        lock = (score_cache.one_at_a_time(f"{model_name}--{split_variant(method_name)[0]}")
                if method.needs_calibration else contextlib.nullcontext())
        with lock:
            waited = time.perf_counter() - t_wait
            t0 += waited
            dev = resolve_device(device if method.wants_gpu else "cpu")
            torch.manual_seed(seed)
            model = load_model(base_dir, dtype=dtype, device=dev)
            calib, calib_meta = None, None
            if method.needs_calibration:
                if not calibration_path:
                    raise ConfigError(f"config key methods.{method_name}.method: {algo!r} needs calibration data "
                                      "and none was given (calibration_path)")
                calib, calib_meta = data_mod.load_tokens(calibration_path, model=model_name)
            key = f"models.{model_name}.budget"
            budget = Budget.from_config(budget_cfg, count_params(model), key=key)
            info = arch_info(model)
            _refuse(key, method_name, lambda: budget_problem(algo, info, settings, budget.target_params))
            result = method.prune(model, calib, budget, settings)
            report = result.report
            model = result.model
            # a result outside the method's tolerance is an error, not a mislabelled model
            _refuse(key, method_name, lambda: result_problem(algo, info, settings,
                                                             budget.target_params, count_params(model)))
        save_kind = "random" if weights == "random" else "safetensors"
        man = save_model(model, out_dir, model_name=model_name, method=method_name,
                         weights=save_kind, seed=seed)
        report.setdefault("params_before", budget.dense_params)
        report["params_after"] = count_params(model)
        report["budget"] = {"target_params": budget.target_params, "ratio": budget.ratio,
                            "error": report["params_after"] / budget.target_params - 1}
        if calib_meta is not None:
            report["calibration"] = calib_meta
        report["device"] = str(dev)
        report["lock_wait_s"] = round(waited, 2)
    report = {"schema": PRUNE_REPORT_SCHEMA, "model": model_name, "method": method_name, "algorithm": algo,
              "settings": settings, "weights": weights, **report,
              "structure": man.get("structure"), "num_layers": man["num_layers"],
              "seconds": round(time.perf_counter() - t0, 2)}
    write_json(report_path, report)
    return report


def _refuse(key: str, method_name: str, problem) -> None:
    """Raise ConfigError for the budget ``key`` where ``problem()`` names one (settings the
    model rules out are named by their own key)."""
    try:
        why = problem()
    except ValueError as exc:
        raise ConfigError(f"config key methods.{method_name}.{exc}") from None
    if why:
        raise ConfigError(f"config key {key}: methods.{method_name}: {why}")
