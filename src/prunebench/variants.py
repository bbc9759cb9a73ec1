"""Budgets and variants: the names of pruned models in a budget sweep.

A pruned model is a *variant*: a method at one budget.  Its folder (and the ``method``
wildcard of every path) is the method's name for the budget of ``models.<name>.budget``
and ``<method>@<tag>`` for each entry of ``models.<name>.budgets``; ``dense`` takes no
budget and is one model.  The names are built here only (:func:`variants`) and read back
by :func:`split_variant`.  Also here: the evaluation corpora and the frontier's cell.
"""
from __future__ import annotations

VARIANT_SEP = "@"
#: the ``method`` wildcard: a methods key, optionally ``@`` and a budget tag
VARIANT_PATTERN = r"(?!base(?![A-Za-z0-9._@-]))[A-Za-z0-9][A-Za-z0-9._-]*(?:@[rp][0-9.e+-]+)?"


def budget_tag(budget: dict) -> str:
    """``r<ratio>`` or ``p<params>``: the budget in folder names and the tables' ``budget`` column."""
    if budget.get("params") is not None:
        p = float(budget["params"])
        return f"p{int(p)}" if p == p and abs(p) != float("inf") else f"p{p}"
    return f"r{float(budget['ratio'])!r}"


def takes_budget(method_spec: dict) -> bool:
    return method_spec["method"] != "dense"


def variants(config: dict, model: str, methods=None) -> list[dict]:
    """Every pruned model of ``model`` for ``methods`` (default all): ``{"name": folder name,
    "method": methods key, "budget": budget config (None for dense), "tag": budget tag
    ('' for dense)}``."""
    spec = config["models"][model]
    budgets = [(None, spec["budget"])] if spec.get("budget") else []
    budgets += [(budget_tag(b), b) for b in spec.get("budgets") or []]
    out = []
    for meth in (config["methods"] if methods is None else methods):
        if not takes_budget(config["methods"][meth]):
            out.append({"name": meth, "method": meth, "budget": None, "tag": ""})
            continue
        out += [{"name": meth if t is None else f"{meth}{VARIANT_SEP}{t}", "method": meth, "budget": b,
                 "tag": budget_tag(b)} for t, b in budgets]
    return out


def variant(config: dict, model: str, name: str) -> dict:
    """The variant of ``model`` whose folder is ``name``."""
    for v in variants(config, model):
        if v["name"] == name:
            return v
    from .config import ConfigError

    raise ConfigError(f"{name!r} is no pruned model of {model!r} in this config "
                      f"(known: {[v['name'] for v in variants(config, model)]})")


def split_variant(name: str) -> tuple[str, str | None]:
    """``(methods key, budget tag in the name or None)`` of a folder name."""
    meth, sep, tag = name.partition(VARIANT_SEP)
    return meth, (tag if sep else None)


def eval_corpora(config: dict) -> list[str]:
    """The evaluation corpora (``perplexity.corpus``: one name or a list)."""
    c = config["perplexity"]["corpus"]
    return [c] if isinstance(c, str) else list(c)


#: frontier cell key -> the benchmark list it is one of
FRONTIER_CELL = {"backend": "backends", "in_len": "input_lengths", "out_len": "output_lengths", "batch": "batch_sizes"}


def frontier_cell(config: dict) -> dict:
    """The cell the frontier's speed-ups come from (``frontier.*``, null = the defaults)."""
    f, b = config.get("frontier") or {}, config["benchmark"]
    cell = {k: f.get(k) if f.get(k) is not None else b[pool][0] for k, pool in FRONTIER_CELL.items()}
    if f.get("batch") is None:
        cell["batch"] = max(b["batch_sizes"])
    return cell
