"""The perplexity record and the prune report: their schema tags and their checked reads.

Each record names its format in ``schema`` (``<format>/<version>``, as a benchmark cell
does): a reader refuses a file of another format or version, naming the file, instead of
reading fields that may mean something else.  A record without the tag was written before the
tags and is read as version 1 (the same fields; a perplexity record that says ``ok`` without a
finite perplexity is refused whatever its tag).  Torch-free: the aggregate and frontier stages
read these records, and :data:`CELL_SCHEMA` is the benchmark cell's tag.

``prunebench-perplexity/1`` (``results/<experiment>/perplexity/<model>/<method>.json``)
    ``status``: ``ok`` (every corpus's perplexity and interval finite), ``diverged`` (some
    window's NLL is NaN or infinite, or a perplexity overflows; ``reason`` and each corpus's
    ``diverged`` say what) or ``skipped`` (random weights; ``reason``).
``prunebench-prune-report/1`` (``results/<experiment>/prune/<model>/<method>.json``)
    the prune stage's report (:mod:`prunebench.prune`).
"""
from __future__ import annotations

import math
import os
from typing import Any

from .io import ArtifactError, check_record, read_json

#: the ``schema`` tag of the benchmark cells this version writes (:mod:`prunebench.benchmark`)
CELL_SCHEMA = "prunebench-bench-cell/2"
PERPLEXITY_SCHEMA = "prunebench-perplexity/1"
PRUNE_REPORT_SCHEMA = "prunebench-prune-report/1"
#: a perplexity record's ``status`` values
PERPLEXITY_STATUSES = ("ok", "diverged", "skipped")


def _read(path, want: str, what: str, required: tuple[str, ...]) -> dict:
    """The JSON record at ``path``, tagged ``want``, with the fields ``required``."""
    rec = read_json(path)
    if not isinstance(rec, dict):
        raise ArtifactError(f"{path}: not a {what} (a JSON {type(rec).__name__}) -- delete it and rerun")
    got = rec.get("schema", want.rsplit("/", 1)[0] + "/1")  # untagged: written before the tags, version 1
    if got != want:
        raise ArtifactError(f"{path}: schema is {got!r}, this prunebench reads {want!r} ({what}) -- "
                            "delete it and rerun")
    missing = [k for k in required if k not in rec]
    if missing:
        raise ArtifactError(f"{path}: missing field(s) {missing}; delete it and rerun")
    return rec


def _check_names(path, rec: dict, model: str | None, method: str | None) -> None:
    want = {k: ("the name asked for", v) for k, v in (("model", model), ("method", method)) if v is not None}
    check_record(path, rec, want)


def _finite(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


def read_perplexity(path: str | os.PathLike, *, model: str | None = None, method: str | None = None) -> dict:
    """A perplexity record, checked: its schema tag, its status (one of
    :data:`PERPLEXITY_STATUSES`; ``ok`` only with finite perplexities), and where given its
    ``model`` / ``method`` names.  :class:`~prunebench.io.ArtifactError` naming the file."""
    rec = _read(path, PERPLEXITY_SCHEMA, "perplexity record", ("model", "method", "params", "status"))
    _check_names(path, rec, model, method)
    status = rec["status"]
    if status not in PERPLEXITY_STATUSES:
        raise ArtifactError(f"{path}: status {status!r} is not one of {list(PERPLEXITY_STATUSES)} -- "
                            "delete it and rerun")
    if status == "ok":
        corpora = rec.get("corpora") if isinstance(rec.get("corpora"), dict) else {}
        bad = [name for name, c in corpora.items() if not isinstance(c, dict) or not _finite(c.get("ppl"))]
        if not _finite(rec.get("ppl")) or bad:  # (a record of one corpus has no ``corpora``)
            raise ArtifactError(f"{path}: status 'ok' without a finite perplexity"
                                f"{f' (corpora {bad})' if bad else ''} -- delete it and rerun")
    return rec


def read_prune_report(path: str | os.PathLike, *, model: str | None = None, method: str | None = None) -> dict:
    """A prune report, checked: its schema tag and where given its ``model`` / ``method``
    names.  :class:`~prunebench.io.ArtifactError` naming the file."""
    rec = _read(path, PRUNE_REPORT_SCHEMA, "prune report", ("model", "method", "params_after"))
    _check_names(path, rec, model, method)
    return rec
