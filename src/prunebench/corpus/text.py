"""Text helpers every source shares: normalised paragraphs and documents, re-flowed lines.

A document is its paragraphs joined by ``"\\n"`` (so it never contains a blank line); inside
a paragraph every run of whitespace is one space (:func:`norm`).
"""
from __future__ import annotations

import re
import unicodedata
from typing import Iterable

from .base import CorpusError

_WS = re.compile(r"\s+")
_CONTROL = re.compile(r"[\x00-\x08\x0e-\x1f\x7f\u200b\ufeff]")


def norm(s: str) -> str:
    """NFC, drop control characters, collapse whitespace runs to one space, strip."""
    s = unicodedata.normalize("NFC", s)
    return _WS.sub(" ", _CONTROL.sub("", s)).strip()


def document(paragraphs: Iterable[str]) -> str:
    """One document: the non-empty normalised paragraphs, one per line."""
    return "\n".join(p for p in (norm(p) for p in paragraphs) if p)


def reflow(lines: Iterable[str]) -> list[str]:
    """Group hard-wrapped lines into paragraphs (blank lines separate paragraphs)."""
    paras, cur = [], []
    for line in lines:
        if line.strip():
            cur.append(line.strip())
        elif cur:
            paras.append(" ".join(cur))
            cur = []
    if cur:
        paras.append(" ".join(cur))
    return paras


def book_key(s: str) -> str:
    """A book title or name reduced for lookup: lower case, ``&`` as "and", letters and digits only."""
    return re.sub(r"[^a-z0-9]", "", s.lower().replace("&", "and"))


def book_list(books, what: str = "titles") -> None:
    """Raise unless ``books`` (a spec's ``books`` key) is a non-empty list or tuple."""
    if isinstance(books, str) or not isinstance(books, (list, tuple)) or not books:
        raise CorpusError(f"books: expected a non-empty list of {what}, got {books!r}")
