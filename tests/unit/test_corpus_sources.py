"""The corpus source registry: every source declares the schema of its keys, the config
schema names exactly the registered sources, and the registry imports light."""
from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from jsonschema import Draft202012Validator

from prunebench.config import SCHEMA
from prunebench.corpus import COMMON_KEYS, REGISTRY, SOURCES, CorpusError, check_keys, schema

from conftest import ROOT  # noqa: E402


def test_sources_are_the_registry():
    assert SOURCES == tuple(REGISTRY) and len(SOURCES) >= 5
    assert all(REGISTRY[name].name == name and callable(REGISTRY[name].build) for name in SOURCES)


def test_config_schema_enum_matches_the_registry():
    config_schema = yaml.safe_load(Path(SCHEMA).read_text())
    source = config_schema["properties"]["corpora"]["additionalProperties"]["properties"]["source"]
    assert sorted(source["enum"]) == sorted(SOURCES)


@pytest.mark.parametrize("name", SOURCES)
def test_every_source_has_a_key_schema(name):
    keys = REGISTRY[name].keys
    assert isinstance(keys, dict) and not set(keys) & set(COMMON_KEYS)
    for key, prop in keys.items():
        assert prop.get("type"), f"{name}.{key} has no type"
    full = schema(name)
    Draft202012Validator.check_schema(full)
    assert set(full["properties"]) == set(COMMON_KEYS) | set(keys)
    # the schema's defaults are values the schema accepts
    defaults = {k: p["default"] for k, p in keys.items() if "default" in p}
    assert not list(Draft202012Validator(full).iter_errors({"source": name, **defaults}))


@pytest.mark.parametrize("name", SOURCES)
def test_the_key_check_follows_the_schema(name):
    props = schema(name)["properties"]
    with pytest.raises(CorpusError, match=rf"^bogus: unknown key for source '{name}'; allowed keys are "
                                          rf"{re.escape(str(sorted(props)))}"):
        check_keys({"source": name, "bogus": 1})
    for key, prop in props.items():
        types = prop["type"] if isinstance(prop["type"], list) else [prop["type"]]
        if key != "source" and "string" in types:
            with pytest.raises(CorpusError, match=rf"^{key}: expected text, got 3"):
                check_keys({"source": name, key: 3})
            assert check_keys({"source": name, key: None}) is REGISTRY[name]


def test_the_registry_imports_no_heavy_package():
    code = ("import json, sys; from prunebench.corpus import SOURCES; "
            "print(json.dumps([m for m in ('torch', 'transformers', 'datasets', 'mwparserfromhell', 'rdata') "
            "if m in sys.modules]))")
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120,
                         env={"PYTHONPATH": str(ROOT / "src"), "PATH": "/usr/bin:/bin"})
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout.strip().splitlines()[-1]) == []
