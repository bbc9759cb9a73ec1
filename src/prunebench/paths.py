"""Where an experiment's outputs live: the one place that builds and parses their paths.

Every output of a config lives under ``results/<experiment>/`` (the config key
``experiment``), so experiments run side by side without touching each other.  A benchmark
cell is ``results/<experiment>/bench/<model>/<method>/<backend>/in<I>_out<O>_bs<B>.json``;
its log is the same name under ``logs/bench/``.  The Snakemake rules build their patterns
with these functions (wildcards as values: ``cell_path(RESULTS, WILDCARDS)``), the CLI and
the aggregation parse paths with them.

Shared by all experiments: ``results/cache/`` -- the corpus downloads (the gensim wheel)
and the compiled backend's kernel caches and GEMV choices.  Both are keyed by what they
hold (a file's name and hash; GPU, dtype and weight shape), never by an experiment, so a
second experiment reuses them instead of downloading or tuning again.

Torch-free: the Snakefile imports this at start-up.
"""
from __future__ import annotations

import os
import re
from pathlib import Path

ROOT = "results"
#: the folder every experiment shares (not an experiment name)
CACHE = "cache"
#: the fields that name a cell, in path order
CELL_KEYS = ("model", "method", "backend", "in_len", "out_len", "batch")
_NAME = "{model}/{method}/{backend}/in{in_len}_out{out_len}_bs{batch}"
#: the wildcards of a cell's path in a Snakemake pattern
WILDCARDS = {k: "{" + k + "}" for k in CELL_KEYS}


class PathError(ValueError):
    """A path is not of the form an output of the pipeline has."""


def experiment_dir(experiment: str, root: str = ROOT) -> str:
    """``results/<experiment>``: every output of one config."""
    return f"{root}/{experiment}"


def cache_dir(root: str = ROOT) -> str:
    """``results/cache``: downloads and compiled kernels, shared by every experiment."""
    return f"{root}/{CACHE}"


def cell_name(cell: dict) -> str:
    """``<model>/<method>/<backend>/in<I>_out<O>_bs<B>``: a cell's name, without folder or suffix."""
    return _NAME.format(**{k: cell[k] for k in CELL_KEYS})


def job_cost(log: str) -> str:
    """The Snakemake ``benchmark:`` file of the job whose log is ``log``: the same name under
    ``costs/`` instead of ``logs/``, ``.tsv`` for ``.log`` (wall ``s``, ``cpu_time``,
    ``max_rss``... of the job's processes, one row)."""
    head, sep, tail = log.partition("/logs/")
    if not sep or not tail.endswith(".log"):
        raise PathError(f"not a job log under <experiment>/logs/: {log!r}")
    return f"{head}/costs/{tail[:-4]}.tsv"


def cell_path(results: str, cell: dict) -> str:
    """A cell's file under one experiment's folder ``results``."""
    return f"{results}/bench/{cell_name(cell)}.json"


def cell_log(results: str, cell: dict) -> str:
    """A cell's log under one experiment's folder ``results``."""
    return f"{results}/logs/bench/{cell_name(cell)}.log"


_CELL = re.compile(r"(?:^|/)bench/(?P<model>[^/]+)/(?P<method>[^/]+)/(?P<backend>[^/]+)/"
                   r"in(?P<in_len>\d+)_out(?P<out_len>\d+)_bs(?P<batch>\d+)\.json$")
_EXPERIMENT = re.compile(r"(?:^|/)" + re.escape(ROOT) + r"/(?P<experiment>[^/]+)/bench/")


def parse_cell(path: str | os.PathLike) -> dict:
    """What a cell file's path says the cell is: model, method, backend, in_len, out_len, batch."""
    m = _CELL.search(Path(path).as_posix())
    if m is None:
        raise PathError(f"{path}: not a cell path (.../bench/<model>/<method>/<backend>/in<I>_out<O>_bs<B>.json)")
    return {k: int(v) if k in ("in_len", "out_len", "batch") else v for k, v in m.groupdict().items()}


def experiment_of(path: str | os.PathLike) -> str:
    """The experiment a cell path lies in (``results/<experiment>/bench/...``)."""
    parse_cell(path)
    m = _EXPERIMENT.search(Path(path).as_posix())
    if m is None or m.group("experiment") == CACHE:
        raise PathError(f"{path}: not under {ROOT}/<experiment>/bench/")
    return m.group("experiment")
