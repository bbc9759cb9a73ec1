"""``hf``: a Hugging Face dataset, ``datasets.load_dataset(dataset, name, split=split)``.

The text column is ``field``; ``group`` says how rows become documents -- "rows" (each
non-empty row is a document), "blank" (blank rows separate documents; the rows between are
its paragraphs), "wikitext" (a document starts at each top-level `` = Title = `` row, blank
rows are dropped, section heading rows lose their ``=`` marks, every row is a paragraph), or
"auto" ("wikitext" if the first non-blank row is such a heading, else "blank" if one of the
first 1000 rows is blank, else "rows").  Rows are read in batches and reading stops once
``max_chars`` is reached, so a large split (bookcorpus) is not materialised.
"""
from __future__ import annotations

import re
from pathlib import Path
from typing import Iterable, Iterator

from .base import CorpusError, register
from .text import document

HF_GROUPING = ("auto", "rows", "blank", "wikitext")

KEYS = {
    "dataset": {"type": "string", "description": "the dataset id, e.g. 'wikitext' (required)"},
    "name": {"type": ["string", "null"], "default": None, "description": "the dataset's configuration"},
    "split": {"type": "string", "default": "test"},
    "field": {"type": "string", "default": "text", "description": "the text column"},
    "revision": {"type": ["string", "null"], "default": None, "description": "a commit or tag of the dataset"},
    "group": {"type": "string", "enum": list(HF_GROUPING), "default": "auto",
              "description": "how rows become documents"},
}

_WIKITEXT_TITLE = re.compile(r"^ ?= [^=].* = ?$")
_WIKITEXT_HEADING = re.compile(r"^ ?(= )+[^=].*( =)+ ?$")

_AUTO_PEEK_ROWS = 1000


def _group_rows(rows: list[str], group: str) -> Iterator[list[str]]:
    """Yield documents (lists of paragraphs) from dataset rows, lazily."""
    if group == "auto":
        head = rows[:_AUTO_PEEK_ROWS]
        first = next((r for r in head if r.strip()), "")
        if _WIKITEXT_TITLE.match(first.rstrip("\n")):
            group = "wikitext"
        elif any(not r.strip() for r in head):
            group = "blank"
        else:
            group = "rows"
    doc: list[str] = []
    for r in rows:
        if not r.strip():
            if group == "blank" and doc:
                yield doc
                doc = []
            continue
        if group == "rows":
            yield [r]
            continue
        if group == "wikitext" and _WIKITEXT_TITLE.match(r.rstrip("\n")) and doc:
            yield doc
            doc = []
        if group == "wikitext" and _WIKITEXT_HEADING.match(r.rstrip("\n")):
            r = r.strip(" =\n")  # " = = Career = = " -> "Career"
        doc.append(r)
    if doc:
        yield doc


class _Rows:
    """The text column of a ``datasets.Dataset`` read in batches (bookcorpus has 74M rows)."""

    def __init__(self, ds, field: str, batch: int = 10_000):
        self.ds, self.field, self.batch = ds, field, batch

    def __getitem__(self, sl: slice) -> list[str]:
        return ["" if r is None else str(r) for r in self.ds[sl][self.field]]

    def __iter__(self) -> Iterator[str]:
        for start in range(0, self.ds.num_rows, self.batch):
            yield from self[start:start + self.batch]


def check(spec: dict) -> list[Path]:
    if not spec.get("dataset"):
        raise CorpusError("dataset: required for source 'hf'")
    return []


@register("hf", KEYS, check)
def build(spec: dict, cache_dir: Path) -> tuple[Iterable[str], str]:
    dataset = spec.get("dataset")
    if not isinstance(dataset, str) or not dataset:
        raise CorpusError(f"dataset: required for source 'hf' (a dataset id such as 'wikitext'), got {dataset!r}")
    name, split = spec.get("name"), spec.get("split", "test")
    field, group = spec.get("field", "text"), spec.get("group", "auto")
    if group not in HF_GROUPING:
        raise CorpusError(f"group: unknown grouping {group!r}; expected one of {list(HF_GROUPING)}")
    import datasets

    kwargs = {"split": split}
    if spec.get("revision") is not None:
        kwargs["revision"] = spec["revision"]
    try:
        ds = datasets.load_dataset(dataset, name, **kwargs)
    except Exception as exc:  # noqa: BLE001 - hub/network/config errors all land here
        raise CorpusError(f"dataset: could not load {dataset!r} (name={name!r}, split={split!r}): "
                          f"{type(exc).__name__}: {exc}") from exc
    if field not in ds.column_names:
        raise CorpusError(f"field: {dataset!r} has no column {field!r}; columns are {ds.column_names}")
    docs = (document(d) for d in _group_rows(_Rows(ds, field), group))
    fp = getattr(ds, "_fingerprint", None)
    origin = (f"Hugging Face dataset {dataset} (name={name}, split={split}, field={field}"
              f"{', revision=' + str(spec['revision']) if spec.get('revision') else ''}), "
              f"{ds.num_rows} rows, datasets {datasets.__version__}" + (f", fingerprint {fp}" if fp else ""))
    return docs, origin
