"""``files``: local text files, ``paths`` a list of files or glob patterns (``**`` allowed).

Relative paths are resolved against the current directory.  **Each file is one document**;
each non-blank line of it is one paragraph (blank lines are dropped, lines are not
re-flowed).  Files are read as UTF-8 (a BOM is dropped).  Files matched twice are used
once, in first-match order.
"""
from __future__ import annotations

import glob
import os
from pathlib import Path

from .base import CorpusError, register
from .text import document

KEYS = {
    "paths": {"type": "array", "items": {"type": "string"}, "minItems": 1,
              "description": "text files or glob patterns (relative ones against the current directory)"},
}


def resolve_files(paths) -> list[Path]:
    """The files a ``files`` spec's ``paths`` names (globs expanded, each once, in order)."""
    if isinstance(paths, (str, os.PathLike)):
        paths = [paths]
    if not isinstance(paths, (list, tuple)) or not paths:
        raise CorpusError(f"paths: expected a non-empty list of files or glob patterns, got {paths!r}")
    files: list[Path] = []
    for entry in paths:
        if not isinstance(entry, (str, os.PathLike)) or not os.fspath(entry):
            raise CorpusError(f"paths: expected file names or glob patterns, got {entry!r}")
        entry = os.fspath(entry)
        if glob.has_magic(entry):
            matches = sorted(glob.glob(entry, recursive=True))
            matches = [m for m in matches if os.path.isfile(m)]
            if not matches:
                raise CorpusError(f"paths: pattern {entry!r} matches no file (cwd {os.getcwd()})")
        else:
            if not os.path.exists(entry):
                raise CorpusError(f"paths: file not found: {entry!r} (cwd {os.getcwd()})")
            if not os.path.isfile(entry):
                raise CorpusError(f"paths: not a regular file: {entry!r}")
            matches = [entry]
        for m in matches:
            p = Path(m).resolve()
            if p not in files:
                files.append(p)
    return files


def check(spec: dict) -> list[Path]:
    if not (isinstance(spec.get("paths"), list) and spec["paths"]):
        raise CorpusError("paths: a non-empty list of files or glob patterns is required for source 'files'")
    return resolve_files(spec["paths"])


@register("files", KEYS, check)
def build(spec: dict, cache_dir: Path) -> tuple[list[str], str]:
    files = resolve_files(spec.get("paths"))
    docs = []
    for p in files:
        try:
            text = p.read_text(encoding="utf-8-sig")
        except UnicodeDecodeError as exc:
            raise CorpusError(f"paths: {str(p)!r} is not UTF-8 text ({exc})") from None
        docs.append(document(text.splitlines()))
    shown = ", ".join(str(p) for p in files[:5]) + (f", ... ({len(files)} files)" if len(files) > 5 else "")
    return docs, f"local files: {shown}; one document per file"
