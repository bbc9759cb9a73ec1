"""``gensim-enwiki``: the English Wikipedia sample shipped as test data in the ``gensim`` wheel.

The wheel (:data:`GENSIM_VERSION`, for a fixed platform) is downloaded once into the cache
folder and read without installing it: member :data:`GENSIM_ENWIKI_MEMBER`, a
bz2-compressed MediaWiki XML export.  One document per article; redirects, non-article
namespaces and pages shorter than ``min_chars`` (default :data:`WIKI_MIN_CHARS`) after
markup stripping are dropped.  References, tables, files/images, categories and
interlanguage links are removed, the rest goes through mwparserfromhell's ``strip_code``;
section headings stay as paragraphs.
"""
from __future__ import annotations

import bz2
import hashlib
import re
import zipfile
from pathlib import Path

from .base import CorpusError, register
from .download import pip_wheel
from .text import document, norm

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

KEYS = {
    "version": {"type": "string", "default": GENSIM_VERSION,
                "description": "the gensim release whose wheel is read (kept in the cache folder)"},
    "min_chars": {"type": "integer", "minimum": 0, "default": WIKI_MIN_CHARS,
                  "description": "pages shorter than this after markup stripping are dropped"},
}

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


def min_chars(spec: dict) -> int:
    m = spec.get("min_chars", WIKI_MIN_CHARS)
    if isinstance(m, bool) or not isinstance(m, int) or m < 0:
        raise CorpusError(f"min_chars: expected a non-negative integer, got {m!r}")
    return m


def check(spec: dict) -> list[Path]:
    min_chars(spec)
    return []


@register("gensim-enwiki", KEYS, check)
def build(spec: dict, cache_dir: Path) -> tuple[list[str], str]:
    import xml.etree.ElementTree as ET

    version = str(spec.get("version", GENSIM_VERSION))
    least = min_chars(spec)
    wheel = pip_wheel("gensim", version, Path(cache_dir), python=GENSIM_WHEEL_PYTHON,
                      platforms=GENSIM_WHEEL_PLATFORM, key="version")
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
                        title = norm(elem.findtext("{*}title", ""))
                        body = document(_strip_wikitext(elem.findtext("{*}revision/{*}text", "")))
                        if len(body) >= least:
                            docs.append(document([title]) + "\n" + body if title else body)
                    elem.clear()
    except zipfile.BadZipFile:
        raise CorpusError(f"version: {wheel} is not a valid wheel; delete it and rerun") from None
    origin = (f"PyPI wheel gensim {version} ({wheel.name}), member {GENSIM_ENWIKI_MEMBER} "
              f"(sha256 {member_sha}); {n_pages} pages, {n_redirects} redirects; markup stripped "
              f"with mwparserfromhell; pages under {least} chars dropped; one document per article")
    return docs, origin
