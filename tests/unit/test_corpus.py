"""Tests of prunebench.corpus (network tests: ``-m network`` / ``-m "not network"``)."""
from __future__ import annotations

import hashlib
import json
import shutil
import subprocess
from pathlib import Path

import pytest

from prunebench.corpus import CorpusError, gensim_enwiki, janeaustenr, prepare_corpus


def _prepare(tmp_path, spec, cache=None):
    out_text, out_meta = tmp_path / "out" / "corpus.txt", tmp_path / "out" / "corpus.json"
    meta = prepare_corpus(spec, out_text, out_meta, cache or tmp_path / "cache")
    return meta, out_text.read_bytes().decode("utf-8"), out_text, out_meta


def _check_meta(meta, text, out_text, out_meta, source):
    assert json.loads(out_meta.read_text()) == meta
    assert meta["source"] == source
    assert meta["sha256"] == hashlib.sha256(out_text.read_bytes()).hexdigest()
    assert meta["n_chars"] == len(text)
    assert meta["n_documents"] == len(text.rstrip("\n").split("\n\n"))
    assert isinstance(meta["origin"], str) and meta["origin"]
    assert "\n\n\n" not in text and text.endswith("\n") and not text.endswith("\n\n")
    # atomic writes leave no temporary files behind
    assert sorted(p.name for p in out_text.parent.iterdir()) == sorted({out_text.name, out_meta.name})


# --------------------------------------------------------------------------- files

def test_files_documents_whitespace_and_meta(tmp_path):
    a = tmp_path / "a.txt"
    a.write_text("  Title   of\tA \n\n\nfirst  paragraph\nsecond line\n\n", encoding="utf-8")
    b = tmp_path / "b.txt"
    b.write_text("\ufeffCafé  crème\u00a0noir\r\nend", encoding="utf-8")
    spec = {"source": "files", "paths": [str(a), str(b)]}
    meta, text, out_text, out_meta = _prepare(tmp_path, spec)
    assert text == "Title of A\nfirst paragraph\nsecond line\n\nCafé crème noir\nend\n"
    assert meta["n_documents"] == 2
    assert meta["spec"] == spec
    _check_meta(meta, text, out_text, out_meta, "files")


def test_files_glob_relative_and_dedup(tmp_path, monkeypatch):
    (tmp_path / "docs" / "sub").mkdir(parents=True)
    for name, body in [("docs/x.txt", "x"), ("docs/y.txt", "y"), ("docs/sub/z.txt", "z"), ("docs/w.md", "w")]:
        (tmp_path / name).write_text(body + "\n")
    monkeypatch.chdir(tmp_path)
    spec = {"source": "files", "paths": ["docs/y.txt", "docs/**/*.txt"]}
    meta, text, *_ = _prepare(tmp_path, spec)
    assert text == "y\n\nz\n\nx\n"  # y first (listed first), then glob matches in sorted order, y once
    assert meta["n_documents"] == 3


def test_files_missing_path_names_it(tmp_path):
    ok = tmp_path / "ok.txt"
    ok.write_text("fine")
    missing = tmp_path / "no_such_file.txt"
    with pytest.raises(CorpusError, match=r"^paths: .*no_such_file\.txt"):
        prepare_corpus({"source": "files", "paths": [str(ok), str(missing)]},
                       tmp_path / "c.txt", tmp_path / "c.json", tmp_path / "cache")
    with pytest.raises(CorpusError, match=r"^paths: pattern .*nothing_\*\.txt.* matches no file"):
        prepare_corpus({"source": "files", "paths": [str(tmp_path / "nothing_*.txt")]},
                       tmp_path / "c.txt", tmp_path / "c.json", tmp_path / "cache")
    assert not (tmp_path / "c.txt").exists() and not (tmp_path / "c.json").exists()


def test_files_not_utf8(tmp_path):
    bad = tmp_path / "latin1.txt"
    bad.write_bytes("caf\xe9".encode("latin-1"))
    with pytest.raises(CorpusError, match=r"^paths: .*latin1\.txt.*not UTF-8"):
        prepare_corpus({"source": "files", "paths": [str(bad)]}, tmp_path / "c.txt", tmp_path / "c.json", tmp_path)


# --------------------------------------------------------------------------- spec errors

@pytest.mark.parametrize("spec, pattern", [
    ({"source": "x"}, r"^source: unknown source 'x'; expected one of \['kjv', 'janeaustenr', 'gensim-enwiki', 'hf', 'files'\]"),
    ({"paths": ["a"]}, r"^source: missing; expected one of"),
    ({"source": "janeaustenr", "book": ["Emma"]}, r"^book: unknown key for source 'janeaustenr'"),
    ({"source": "files", "paths": []}, r"^paths: expected a non-empty list"),
    ({"source": "files", "paths": ["a"], "max_chars": 0}, r"^max_chars: expected a positive integer"),
    ({"source": "hf"}, r"^dataset: required"),
    ({"source": "hf", "dataset": "d", "group": "lines"}, r"^group: unknown grouping 'lines'"),
    ({"source": "janeaustenr", "books": ["Ulysses"]}, r"^books: unknown title 'Ulysses'"),
])
def test_spec_errors(tmp_path, spec, pattern):
    with pytest.raises(CorpusError, match=pattern):
        prepare_corpus(spec, tmp_path / "c.txt", tmp_path / "c.json", tmp_path / "cache")
    assert issubclass(CorpusError, ValueError)


# --------------------------------------------------------------------------- hf

WIKITEXT_ROWS = [
    "", " = Robert Boulter = \n", "", " Robert Boulter is an English film , television and theatre actor . \n",
    "", " = = Career = = \n", "", " In 2000 Boulter had a  guest @-@ starring role . \n", " Second paragraph . \n",
    "", " = Du Fu = \n", "", " Du Fu was a prominent Chinese poet . \n", "",
]


def _fake_load_dataset(rows, calls):
    import datasets

    def load_dataset(path, name=None, split=None, **kwargs):
        calls.append((path, name, split, kwargs))
        return datasets.Dataset.from_dict({"text": rows, "other": list(range(len(rows)))})
    return load_dataset


def test_hf_wikitext_grouping(tmp_path, monkeypatch):
    import datasets

    calls = []
    monkeypatch.setattr(datasets, "load_dataset", _fake_load_dataset(WIKITEXT_ROWS, calls))
    spec = {"source": "hf", "dataset": "wikitext", "name": "wikitext-2-raw-v1"}
    meta, text, out_text, out_meta = _prepare(tmp_path, spec)
    assert calls == [("wikitext", "wikitext-2-raw-v1", "test", {})]
    assert text == ("Robert Boulter\nRobert Boulter is an English film , television and theatre actor .\n"
                    "Career\nIn 2000 Boulter had a guest @-@ starring role .\nSecond paragraph .\n\n"
                    "Du Fu\nDu Fu was a prominent Chinese poet .\n")
    assert meta["n_documents"] == 2
    assert "wikitext" in meta["origin"] and "wikitext-2-raw-v1" in meta["origin"]
    _check_meta(meta, text, out_text, out_meta, "hf")


def test_hf_rows_blank_and_field(tmp_path, monkeypatch):
    import datasets

    calls = []
    rows = ["first doc", "", "second  doc\nline two", "  ", "third"]
    monkeypatch.setattr(datasets, "load_dataset", _fake_load_dataset(rows, calls))
    base = {"source": "hf", "dataset": "some/ds", "split": "validation"}
    _, text, *_ = _prepare(tmp_path, base)  # auto -> blank rows separate documents
    assert text == "first doc\n\nsecond doc line two\n\nthird\n"
    _, text, *_ = _prepare(tmp_path, {**base, "group": "rows", "revision": "abc"})
    assert text == "first doc\n\nsecond doc line two\n\nthird\n"
    _, text, *_ = _prepare(tmp_path, {**base, "group": "blank", "max_chars": 31})
    assert text == "first doc\n\nsecond doc line two\n"
    assert calls[0] == ("some/ds", None, "validation", {}) and calls[1][3] == {"revision": "abc"}
    with pytest.raises(CorpusError, match=r"^field: 'some/ds' has no column 'body'; columns are \['text', 'other'\]"):
        _prepare(tmp_path, {**base, "field": "body"})


def test_hf_load_failure_names_dataset(tmp_path, monkeypatch):
    import datasets

    def boom(*a, **k):
        raise ConnectionError("no hub here")
    monkeypatch.setattr(datasets, "load_dataset", boom)
    with pytest.raises(CorpusError, match=r"^dataset: could not load 'wikitext'.*no hub here"):
        _prepare(tmp_path, {"source": "hf", "dataset": "wikitext"})


# --------------------------------------------------------------------------- max_chars

def test_max_chars_truncates_at_document_boundary(tmp_path):
    paths = []
    for i in range(5):
        p = tmp_path / f"d{i}.txt"
        p.write_text(f"document {i} " + "x" * 20)  # 31 chars each
        paths.append(str(p))
    full_meta, full, *_ = _prepare(tmp_path, {"source": "files", "paths": paths})
    assert full_meta["n_documents"] == 5
    # 3 documents = 3*31 + 2*2 separators + final newline = 98 chars
    for max_chars, n_docs in [(98, 3), (99, 3), (97, 2), (10_000, 5)]:
        meta, text, out_text, out_meta = _prepare(tmp_path, {"source": "files", "paths": paths, "max_chars": max_chars})
        assert meta["n_documents"] == n_docs
        assert len(text) <= max_chars
        assert full.startswith(text.rstrip("\n") + ("\n\n" if n_docs < 5 else "\n"))
        _check_meta(meta, text, out_text, out_meta, "files")
    with pytest.raises(CorpusError, match=r"^max_chars: 10 is smaller than the first document"):
        _prepare(tmp_path, {"source": "files", "paths": paths, "max_chars": 10})


# --------------------------------------------------------------------------- network

@pytest.fixture(scope="session")
def download_cache(tmp_path_factory):
    return tmp_path_factory.mktemp("corpus-cache")


def _forbid_downloads(monkeypatch):
    real_run = subprocess.run

    def run(cmd, *a, **k):
        if "download" in cmd:
            raise AssertionError(f"cache not used: {cmd}")
        return real_run(cmd, *a, **k)
    monkeypatch.setattr(subprocess, "run", run)


def test_janeaustenr_never_runs_a_package_manager(tmp_path, monkeypatch):
    monkeypatch.setattr(janeaustenr, "JANEAUSTENR_DIR", str(tmp_path / "site-library" / "janeaustenr"))

    def no_subprocess(cmd, *a, **k):
        raise AssertionError(f"janeaustenr ran {cmd}")
    monkeypatch.setattr(subprocess, "run", no_subprocess)
    with pytest.raises(CorpusError, match=r"^source: 'janeaustenr' reads the R package janeaustenr already "
                                          r"installed in .*site-library/janeaustenr.*never installs system "
                                          r"packages.*source 'kjv'"):
        prepare_corpus({"source": "janeaustenr"}, tmp_path / "c.txt", tmp_path / "c.json", tmp_path / "cache")
    assert not (tmp_path / "c.txt").exists()


@pytest.mark.skipif(not Path(janeaustenr.JANEAUSTENR_DIR, janeaustenr.JANEAUSTENR_DATA + ".rdb").is_file(),
                    reason="the R package janeaustenr is not installed (Debian: r-cran-janeaustenr)")
def test_janeaustenr_installed(tmp_path):
    meta, text, out_text, out_meta = _prepare(tmp_path, {"source": "janeaustenr"})
    _check_meta(meta, text, out_text, out_meta, "janeaustenr")
    assert "It is a truth universally acknowledged, that a single man in possession of a good fortune" in text
    assert "Emma Woodhouse, handsome, clever, and rich" in text
    assert len(text) > 3_000_000
    assert meta["n_documents"] == 269  # chapters: 50 + 61 + 48 + 55 + 31 + 24
    assert "_" not in text and janeaustenr.JANEAUSTENR_DIR in meta["origin"]

    meta2, text2, *_ = _prepare(tmp_path, {"source": "janeaustenr", "books": ["Pride and Prejudice", "persuasion"]})
    docs = text2.rstrip("\n").split("\n\n")
    assert meta2["n_documents"] == 61 + 24
    assert docs[0].startswith("PRIDE AND PREJUDICE\nBy Jane Austen\nChapter 1\nIt is a truth universally")
    assert docs[61].startswith("Persuasion\nby\nJane Austen\n(1818)\nChapter 1\n")
    assert all(d.split("\n")[0].lower().startswith("chapter") for d in docs[1:61])


@pytest.mark.network
def test_gensim_enwiki(tmp_path, download_cache, monkeypatch):
    meta, text, out_text, out_meta = _prepare(tmp_path, {"source": "gensim-enwiki"}, download_cache)
    _check_meta(meta, text, out_text, out_meta, "gensim-enwiki")
    assert 1_000_000 < len(text) < 6_000_000
    for markup in ("{{", "}}", "[[", "]]", "<ref", "</ref>", "&nbsp;", "thumb|", "{|"):
        assert markup not in text, markup
    docs = text.rstrip("\n").split("\n\n")
    assert 80 <= len(docs) <= 106  # 206 pages, 100 of them redirects, a few too short
    titles = [d.split("\n", 1)[0] for d in docs]
    assert "Anarchism" in titles and "AccessibleComputing" not in titles  # the latter is a redirect
    assert gensim_enwiki.GENSIM_VERSION in meta["origin"] and gensim_enwiki.GENSIM_ENWIKI_MEMBER in meta["origin"]

    _forbid_downloads(monkeypatch)  # the rerun must take the wheel from the cache
    meta2, text2, *_ = _prepare(tmp_path, {"source": "gensim-enwiki", "max_chars": 200_000, "min_chars": 20_000},
                                download_cache)
    assert len(text2) <= 200_000 and meta2["n_documents"] < len(docs)
    assert all(len(d) >= 20_000 for d in text2.rstrip("\n").split("\n\n"))
