"""``janeaustenr``: Jane Austen's six novels from the R package janeaustenr, as already installed.

Read from :data:`JANEAUSTENR_DIR` (e.g. installed by Debian's ``r-cran-janeaustenr``; the
pipeline never installs it and never runs a package manager).  The R data sets live in R's
lazy-load database ``data/Rdata.rdb``/``.rdx``, read with the ``rdata`` package.  **One
document per chapter** (269 in all); front matter joins the first chapter, "VOLUME II"-style
headings the chapter they open.  Hard-wrapped lines are re-flowed into paragraphs and the
``_italics_`` underscores removed.
"""
from __future__ import annotations

import bz2
import hashlib
import re
import struct
import zlib
from pathlib import Path

from .base import CorpusError, register
from .text import book_key, book_list, document, reflow

#: Where Debian's r-cran-janeaustenr installs the R package (read only if already there).
JANEAUSTENR_DIR = "/usr/lib/R/site-library/janeaustenr"
JANEAUSTENR_DATA = "data/Rdata"
#: R object name -> title (as in janeaustenr::austen_books()), in publication order.
AUSTEN_BOOKS = {
    "sensesensibility": "Sense & Sensibility",
    "prideprejudice": "Pride & Prejudice",
    "mansfieldpark": "Mansfield Park",
    "emma": "Emma",
    "northangerabbey": "Northanger Abbey",
    "persuasion": "Persuasion",
}

KEYS = {
    "books": {"type": "array", "items": {"type": "string"}, "minItems": 1,
              "description": "titles such as 'Pride & Prejudice'/'Pride and Prejudice' or R names such as "
                             "'prideprejudice' (default all six); the novels always come in publication order"},
    "version": {"type": ["string", "null"], "default": None,
                "description": "the R package version (from its DESCRIPTION) that must be installed, e.g. '1.0.0'"},
}

_CHAPTER = re.compile(r"^chapter\s+([0-9]+|[ivxlc]+)\.?$", re.I)
_VOLUME = re.compile(r"^volume\s+[ivx]+$", re.I)


def select_books(books) -> list[str]:
    """The R object names of the novels ``books`` names (all six for None), in publication order."""
    if books is None:
        return list(AUSTEN_BOOKS)
    book_list(books, "titles")
    lookup = {}
    for rname, title in AUSTEN_BOOKS.items():
        lookup[book_key(rname)] = rname
        lookup[book_key(title)] = rname
    wanted = set()
    for b in books:
        rname = lookup.get(book_key(str(b)))
        if rname is None:
            raise CorpusError(f"books: unknown title {b!r}; expected some of {list(AUSTEN_BOOKS.values())}")
        wanted.add(rname)
    return [r for r in AUSTEN_BOOKS if r in wanted]


def _rdb_object(rdb: bytes, offset: int, length: int):
    """Decode one entry of an R lazy-load database (``.rdb``) and convert it to Python."""
    import rdata

    blob = rdb[offset:offset + length]
    (size,) = struct.unpack(">I", blob[:4])
    kind = blob[4:5]
    if kind == b"2":
        raw = bz2.decompress(blob[5:])
    elif kind == b"X":
        import lzma
        raw = lzma.decompress(blob[5:])
    elif kind == b"0":
        raw = blob[5:]
    else:
        raw = zlib.decompress(blob[4:])
    if len(raw) != size:
        raise CorpusError(f"source: corrupt R lazy-load entry at offset {offset} ({len(raw)} != {size} bytes)")
    return rdata.conversion.convert(rdata.parser.parse_data(raw, extension=".rds"))


def _chapters(lines: list[str]) -> list[list[str]]:
    """Split a novel's lines into chapters; each chapter a list of paragraphs."""
    docs: list[list[str]] = [[]]
    seen_chapter = False  # the front matter joins the first chapter
    for para in reflow(lines):
        para = para.replace("_", "")  # Project Gutenberg _italics_
        if _CHAPTER.match(para.strip()):
            if seen_chapter:
                carry = []
                while docs[-1] and _VOLUME.match(docs[-1][-1]):
                    carry.insert(0, docs[-1].pop())
                docs.append(carry)
            seen_chapter = True
        docs[-1].append(para)
    return [d for d in docs if d]


def _r_description(path: Path) -> dict[str, str]:
    fields, key = {}, None
    for line in path.read_text(encoding="utf-8", errors="replace").splitlines():
        if line[:1].isspace() and key:
            fields[key] += " " + line.strip()
        elif ":" in line:
            key, value = line.split(":", 1)
            fields[key.strip()] = value.strip()
    return fields


def check(spec: dict) -> list[Path]:
    if "books" in spec:
        select_books(spec["books"])
    return []


@register("janeaustenr", KEYS, check)
def build(spec: dict, cache_dir: Path) -> tuple[list[str], str]:
    books = select_books(spec.get("books"))
    version = spec.get("version")
    if version is not None and not isinstance(version, str):
        raise CorpusError(f"version: expected an R package version string, got {version!r}")
    root = Path(JANEAUSTENR_DIR)
    rdx, rdb = root / (JANEAUSTENR_DATA + ".rdx"), root / (JANEAUSTENR_DATA + ".rdb")
    if not (rdx.is_file() and rdb.is_file()):
        raise CorpusError(f"source: 'janeaustenr' reads the R package janeaustenr already installed in {root} "
                          f"(e.g. Debian's r-cran-janeaustenr, installed by an administrator); "
                          f"{rdb} is not there, and the pipeline never installs system packages. "
                          f"Use source 'kjv' (a Python dependency, no root needed) or 'files'")
    desc = root / "DESCRIPTION"
    r_version = _r_description(desc).get("Version", "?") if desc.is_file() else "?"
    if version is not None and version != r_version:
        raise CorpusError(f"version: {version!r} is pinned but {root} holds janeaustenr {r_version}")
    import rdata

    index = rdata.conversion.convert(rdata.parser.parse_data(rdx.read_bytes(), extension=".rds"))
    variables = {str(k): v for k, v in index["variables"].items()}
    data = rdb.read_bytes()
    docs = []
    for rname in books:
        if rname not in variables:
            raise CorpusError(f"source: {rdb} lacks the R object {rname!r}")
        offset, length = (int(x) for x in variables[rname])
        lines = ["" if x is None else str(x) for x in _rdb_object(data, offset, length)]
        docs.extend(document(ch) for ch in _chapters(lines))
    origin = (f"R package janeaustenr {r_version} installed in {root}, lazy-load data {rdb.name} "
              f"(sha256 {hashlib.sha256(data).hexdigest()}), objects {', '.join(books)}; one document per chapter")
    return docs, origin
