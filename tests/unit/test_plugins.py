"""Methods as plug-ins (found by themselves, declaring what they need) and one place for
each name: the config schema's enums agree with the registries they come from."""
from __future__ import annotations

import json
import pkgutil
import sys

import pytest
import torch
import yaml

from conftest import tiny_arch
from prunebench import aggregate, cli, config as pbconfig
from prunebench import methods
from prunebench.methods import base as mbase


def _schema() -> dict:
    return yaml.safe_load(pbconfig.SCHEMA.read_text())


# --------------------------------------------------------------------------- registries vs schema

def test_backend_names_are_the_registry():
    from prunebench.backends import BACKENDS

    items = _schema()["properties"]["benchmark"]["properties"]["backends"]["items"]
    assert set(items["enum"]) == set(BACKENDS)


def test_dtypes_are_the_registry():
    from prunebench.devices import DTYPES

    assert set(_schema()["definitions"]["dtype"]["enum"]) == set(DTYPES)


def test_corpus_sources_are_the_registry():
    from prunebench.corpus import SOURCES

    corpus = _schema()["properties"]["corpora"]["additionalProperties"]
    assert set(corpus["properties"]["source"]["enum"]) == set(SOURCES)


def test_method_names_are_the_registry():
    """The schema names no method (a method is one file): the registry decides, before any job."""
    spec = _schema()["properties"]["methods"]
    assert "enum" not in spec["additionalProperties"]["properties"]["method"]
    assert not [n for n in methods.REGISTRY if n in spec["description"]]
    cfg = yaml.safe_load((pbconfig.SCHEMA.parents[3] / "config.yaml").read_text())
    cfg["methods"] = {f"m-{n}": {"method": n} for n in [*methods.REGISTRY, "no-such"]}
    pbconfig.schema_problems(cfg)  # fills the defaults the checks read
    errs = pbconfig.semantic_errors(cfg)
    unknown = [e for e in errs if "unknown method" in e]
    assert len(unknown) == 1 and unknown[0].startswith("config key methods.m-no-such.method: unknown method")
    assert str(sorted(methods.REGISTRY)) in unknown[0]


def test_schema_ships_with_the_package():
    import prunebench

    import tomllib
    from pathlib import Path

    assert pbconfig.SCHEMA.is_file() and pbconfig.SCHEMA.is_relative_to(Path(prunebench.__file__).parent)

    root = pbconfig.SCHEMA.parents[3]
    data = tomllib.loads((root / "pyproject.toml").read_text())["tool"]["setuptools"]["package-data"]["prunebench"]
    assert any(pbconfig.SCHEMA.match(f"prunebench/{pat}") for pat in data)
    assert [p for d in ("src", "workflow") for p in (root / d).rglob("*.schema.yaml")] == [pbconfig.SCHEMA]  # one copy


# --------------------------------------------------------------------------- discovery

def test_methods_are_the_modules_that_register():
    names = {m.name for m in pkgutil.iter_modules(methods.__path__)}
    helpers = {"base", "blocks", "width", "saliency", "passes"}
    assert helpers <= names
    assert methods.MODULES == {f"prunebench.methods.{n}" for n in names - helpers}
    assert {m.module for m in methods.REGISTRY.values()} == methods.MODULES


def test_a_new_file_is_a_new_method(tmp_path, monkeypatch):
    (tmp_path / "halve_nothing.py").write_text(
        "from prunebench.methods.base import PrunedModel, register\n"
        "@register('plugin-test', {'type': 'object', 'properties': {'k': {'type': 'integer', 'default': 3}}},\n"
        "          needs_calibration=False, wants_gpu=False)\n"
        "def prune(model, calibration, budget, settings):\n"
        "    return PrunedModel(model, {'k': settings['k']})\n")
    monkeypatch.setattr(methods, "__path__", [*methods.__path__, str(tmp_path)])
    try:
        methods._discover()
        m = methods.get_method("plugin-test")
        assert m.module == "prunebench.methods.halve_nothing"
        assert m.needs() == {"needs_calibration": False, "copies_weights": True, "wants_gpu": False}
        assert m(None, None, None, {}).report == {"k": 3}
    finally:
        mbase._METHODS.pop("plugin-test", None)
        sys.modules.pop("prunebench.methods.halve_nothing", None)


def test_declarations():
    dense = methods.get_method("dense")
    assert dense.needs() == {"needs_calibration": False, "copies_weights": False, "wants_gpu": False}
    for name, m in methods.REGISTRY.items():
        if name != "dense":
            assert m.needs() == {"needs_calibration": True, "copies_weights": True, "wants_gpu": True}, name
    blocks = {n for n, m in methods.REGISTRY.items() if "removed_blocks" in m.report_fields}
    assert blocks == {"depth", "shortgpt", "sleb", "angular"}
    assert methods.table_columns() == ["removed_blocks"]
    with pytest.raises(ValueError, match="takes no budget"):
        mbase.register("x", copies_weights=False, needs_calibration=False, reachable=lambda i, s: None)


# --------------------------------------------------------------------------- settings: defaults filled once

@pytest.mark.parametrize("criterion,first,last", [("taylor", 4, 2), ("ppl", 0, 0), ("random", 0, 0)])
def test_depth_defaults_depend_on_the_criterion(criterion, first, last):
    """Taylor+ protects 4 first and 2 last blocks, the others none (unless set)."""
    s = methods.get_method("depth").settings({"criterion": criterion})
    assert s == {"criterion": criterion, "seed": 0, "batch_size": 8, "keep_first": first, "keep_last": last,
                 "like": None, "screen": None, "screen_margin": 0.01}
    assert methods.get_method("depth").settings({"criterion": criterion, "keep_first": 1})["keep_first"] == 1


def test_a_random_control_like_taylor_protects_what_taylor_protects():
    s = methods.get_method("depth").settings({"criterion": "random", "like": "taylor"})
    assert (s["keep_first"], s["keep_last"]) == (4, 2)
    assert methods.get_method("depth").settings({"criterion": "random", "like": "ppl"})["keep_first"] == 0


def test_every_setting_of_every_method_has_a_default():
    """Fill the defaults of every method (its required settings given): the result is complete."""
    required = {"depth": {"criterion": "ppl"}}
    for name, m in methods.REGISTRY.items():
        s = m.settings(required.get(name, {}))
        assert set(s) == set(m.settings_schema.get("properties", {})), name
        assert m.settings(s) == s  # filling twice changes nothing


def _prune(tmp, name, spec, calibration=True, ratio=0.3):
    rc = cli.main(["prune", f"base_dir={tmp / 'base'}",
                   f"calibration_path={tmp / 'calibration.safetensors' if calibration else ''}",
                   f"out_dir={tmp / name}", f"report_path={tmp / (name + '.json')}", "model_name=tiny",
                   f"method_name={name}", f"method_spec={json.dumps(spec)}", f'budget_cfg={{"ratio": {ratio}}}',
                   "device=cpu", "dtype=float32"])
    assert rc == 0
    return json.loads((tmp / (name + ".json")).read_text())


def test_prune_report_records_the_settings_used(base):
    # Taylor+ protects the first 4 and last 2 of the 8 blocks unless told otherwise
    rep = _prune(base, "d", {"method": "depth", "criterion": "taylor"}, ratio=0.15)
    assert rep["settings"] == {"criterion": "taylor", "seed": 0, "batch_size": 8, "keep_first": 4, "keep_last": 2,
                              "like": None, "screen": None, "screen_margin": 0.01}
    assert rep["protected"] == {"first": 4, "last": 2}
    assert all(4 <= b < 6 for b in rep["removed_blocks"])


def test_a_method_keeping_the_base_weights_needs_no_calibration(base):
    rep = _prune(base, "dense", {"method": "dense"}, calibration=False)
    assert rep["params_before"] == rep["params_after"] and "calibration" not in rep and "device" not in rep
    man = json.loads((base / "dense" / "prunebench.json").read_text())
    assert man["weights"] == "base"


def test_a_method_needing_calibration_refuses_none(base, capsys):
    rc = cli.main(["prune", f"base_dir={base / 'base'}", "calibration_path=", f"out_dir={base / 'x'}",
                   f"report_path={base / 'x.json'}", "model_name=tiny", "method_name=x",
                   'method_spec={"method": "shortgpt"}', 'budget_cfg={"ratio": 0.3}', "device=cpu",
                   "dtype=float32"])
    assert rc == 1 and "needs calibration data" in capsys.readouterr().err


# --------------------------------------------------------------------------- tables read the methods' fields

def test_quality_columns_come_from_the_methods(base):
    reports, ppls = [], []
    for name, spec in [("dense", {"method": "dense"}), ("sg", {"method": "shortgpt"}),
                       ("w", {"method": "wanda-sp"})]:
        rep = _prune(base, name, spec, calibration=name != "dense")
        reports.append(str(base / f"{name}.json"))
        ppl = base / f"ppl-{name}.json"
        ppl.write_text(json.dumps({"model": "tiny", "method": name, "params": rep["params_after"], "ppl": 1.0,
                                   "status": "ok", "weights": "random"}))
        ppls.append(str(ppl))
    df = aggregate.quality_table(ppls, reports, {}).set_index("method")
    assert list(df.columns[-1:]) == ["removed_blocks"]
    assert df.loc["sg", "removed_blocks"] == " ".join(map(str, json.loads((base / "sg.json").read_text())["removed_blocks"]))
    assert df.loc["dense", "removed_blocks"] == "" and df.loc["w", "removed_blocks"] == ""
    assert aggregate.baseline(reports) == "dense"
    assert aggregate.baseline(reports[1:]) == aggregate.BASELINE


# --------------------------------------------------------------------------- the rules read the declarations

def test_validation_gives_the_rules_the_declarations(tmp_path):
    cfg = yaml.safe_load((pbconfig.SCHEMA.parents[3] / "config.yaml").read_text())
    for stamp_dir in (None, tmp_path, tmp_path):  # from the registry, then written to and read from the stamp
        needs = {}
        pbconfig.validate(cfg, check_cuda=False, stamp_dir=stamp_dir, needs=needs)
        assert needs == pbconfig.method_needs(cfg)
        assert set(needs) == set(cfg["methods"])
        assert needs["dense"] == {"needs_calibration": False, "copies_weights": False, "wants_gpu": False}
    assert len(list(tmp_path.iterdir())) == 1
