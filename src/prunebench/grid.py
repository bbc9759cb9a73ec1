"""The benchmark grid a validated config describes: its models, methods and cells, and the
values every cell must record (checked when the cells are aggregated).  Torch-free: the
Snakefile reads it (through :mod:`prunebench.config`, which re-exports it)."""
from __future__ import annotations

import itertools

from .variants import frontier_cell, split_variant, variants


def bench_models(config: dict) -> list[str]:
    return list(config["benchmark"].get("models") or config["models"])


def bench_methods(config: dict) -> list[str]:
    return list(config["benchmark"].get("methods") or config["methods"])




def cells(config: dict) -> list[dict]:
    """Every benchmark cell: the grid of ``benchmark.methods`` (at every budget, or, with
    ``benchmark.sweep_cells: frontier``, at ``models.*.budget`` and the frontier cell for
    the budgets of ``models.*.budgets``), and the frontier cell of ``frontier.methods`` at
    every budget; ``method`` is the variant's folder name."""
    b = config["benchmark"]
    fc = frontier_cell(config)
    whole = b.get("sweep_cells", "grid") == "grid"
    grid = [dict(backend=be, in_len=i, out_len=o, batch=bs) for be, i, o, bs in itertools.product(
        b["backends"], b["input_lengths"], b["output_lengths"], b["batch_sizes"])]
    out = []
    for m in bench_models(config):
        for v in variants(config, m, bench_methods(config)):
            swept = split_variant(v["name"])[1] is not None
            out += [dict(model=m, method=v["name"], **c) for c in (grid if whole or not swept else [fc])]
        extra = [x for x in (config.get("frontier") or {}).get("methods") or [] if x not in bench_methods(config)]
        out += [dict(model=m, method=v["name"], **fc) for v in variants(config, m, extra)]
    return out


#: cell fields that must equal a config value (field -> dotted config key); aggregation
#: refuses a cell file that says otherwise (:func:`prunebench.io.check_record`)
CELL_FIELDS = {
    "dtype": "benchmark.dtype",
    "attn_implementation": "benchmark.attn_implementation",
    "timing": "benchmark.timing",
}


def lookup(config: dict, dotted: str):
    node = config
    for part in dotted.split("."):
        node = node[part]
    return node


def cell_expectations(config: dict) -> dict:
    """``{cell field: (config key, value)}`` every cell of this config must record."""
    return {field: [key, lookup(config, key)] for field, key in CELL_FIELDS.items()}


def families(config: dict) -> dict[str, str]:
    return {name: spec.get("family", name) for name, spec in config["models"].items()}
