"""The corpus source interface: the registry, each source's key schema, the check of a spec's keys.

A source is a function ``build(spec, cache_dir) -> (documents, origin)`` registered with
:func:`register` under the name that ``corpora.<name>.source`` gives, with

``keys``   the JSON schema ``properties`` of the source's own keys (type, default,
           description); with the :data:`COMMON_KEYS` they are the only keys a spec of that
           source may have (:func:`schema`), and the keys of type ``string`` must be text
           (or null);
``check``  (optional) ``check(spec) -> [files]``: what can be checked without building the
           corpus (no download), run on the config before any job; returns the local files
           the corpus will read.

``build`` returns the documents (an iterable of texts made with
:func:`prunebench.corpus.text.document`; empty ones are dropped) and ``origin``, a sentence
saying where the text came from.  It may download into ``cache_dir`` and reuse what is
there.  Every problem raises :class:`CorpusError` whose message starts with the spec key at
fault.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterable

Build = Callable[[dict, Path], tuple[Iterable[str], str]]
Check = Callable[[dict], list[Path]]


class CorpusError(ValueError):
    """The corpus spec is invalid or its source cannot be obtained/read."""


@dataclass(frozen=True)
class Source:
    name: str
    keys: dict  # JSON schema properties of the source's own keys
    build: Build
    check: Check | None = None


#: source name -> :class:`Source`, in registration order (the order error messages list them in)
REGISTRY: dict[str, Source] = {}

#: keys every spec may have, whatever its source
COMMON_KEYS: dict[str, dict] = {
    "source": {"type": "string", "description": "the registered source that builds the corpus"},
    "max_chars": {"type": ["integer", "null"], "minimum": 1,
                  "description": "keep whole documents while the corpus (separators included) stays within "
                                 "this many characters"},
    "description": {"type": ["string", "null"], "description": "free text"},
}


def register(name: str, keys: dict, check: Check | None = None) -> Callable[[Build], Build]:
    """Register ``build`` as source ``name`` with its key schema (and offline ``check``)."""
    def deco(build: Build) -> Build:
        if name in REGISTRY:
            raise ValueError(f"corpus source {name!r} registered twice")
        clash = set(keys) & set(COMMON_KEYS)
        if clash:
            raise ValueError(f"corpus source {name!r} redefines the common keys {sorted(clash)}")
        REGISTRY[name] = Source(name, keys, build, check)
        return build

    return deco


def schema(name: str) -> dict:
    """The JSON schema of a spec of source ``name`` (the common keys and the source's own)."""
    return {"type": "object", "additionalProperties": False, "required": ["source"],
            "properties": {**COMMON_KEYS, "source": {**COMMON_KEYS["source"], "const": name},
                           **REGISTRY[name].keys}}


def _is_text(prop: dict) -> bool:
    types = prop.get("type")
    types = [types] if isinstance(types, str) else list(types or [])
    return "string" in types


def check_keys(spec) -> Source:
    """The :class:`Source` of ``spec`` after checking its keys against the source's schema:
    no unknown key, ``max_chars`` a positive integer, text keys text (or null)."""
    if not isinstance(spec, dict):
        raise CorpusError(f"source: the corpus spec must be a mapping, got {type(spec).__name__}")
    name = spec.get("source")
    if name not in REGISTRY:
        what = "missing" if name is None else f"unknown source {name!r}"
        raise CorpusError(f"source: {what}; expected one of {list(REGISTRY)}")
    source = REGISTRY[name]
    props = {**COMMON_KEYS, **source.keys}
    unknown = sorted(set(map(str, spec)) - set(props))
    if unknown:
        raise CorpusError(f"{unknown[0]}: unknown key for source {name!r}; allowed keys are {sorted(props)}")
    max_chars = spec.get("max_chars")
    if max_chars is not None and (isinstance(max_chars, bool) or not isinstance(max_chars, int) or max_chars <= 0):
        raise CorpusError(f"max_chars: expected a positive integer, got {max_chars!r}")
    text_keys = {k for k, p in props.items() if k != "source" and _is_text(p)}
    for key in sorted(set(spec) & text_keys):
        if spec[key] is not None and not isinstance(spec[key], str):
            raise CorpusError(f"{key}: expected text, got {spec[key]!r}")
    return source
