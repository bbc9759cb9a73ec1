"""The offline-node bundle: freeze parsing, resolution against what the node has, the bundle folder."""
from __future__ import annotations

import json
import zipfile
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

from prunebench.cli import bundle

ENV = bundle.target_environment("3.12")


def _wheel(tmp: Path, name: str, version: str, requires: list[str]) -> Path:
    """A minimal wheel file: a dist-info METADATA with these Requires-Dist lines."""
    path = tmp / f"{name.replace('-', '_')}-{version}-py3-none-any.whl"
    meta = f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n" + "".join(f"Requires-Dist: {r}\n" for r in requires)
    with zipfile.ZipFile(path, "w") as z:
        z.writestr(f"{name.replace('-', '_')}-{version}.dist-info/METADATA", meta)
    return path


class FakeIndex:
    """``fetch`` over a dict of packages {name: (version, requires)}; records what was fetched."""

    def __init__(self, tmp: Path, packages: dict[str, tuple[str, list[str]]]):
        self.tmp, self.packages, self.fetched = tmp, packages, []

    def __call__(self, req: Requirement) -> bundle.Wheel:
        name = canonicalize_name(req.name)
        version, requires = self.packages[name]
        self.fetched.append(name)
        return bundle.read_wheel(_wheel(self.tmp, name, version, requires))


def test_freeze_lines_parsed():
    have = bundle.parse_freeze("# comment\nTorch==2.11.0+cu130\nsnake_case.pkg==1.0\n"
                               "-e git+https://x/y#egg=z\nlocal-pkg @ file:///tmp/a.whl\nbare\n\n")
    assert have == {"torch": "2.11.0+cu130", "snake-case-pkg": "1.0", "local-pkg": "*", "bare": "*"}
    with pytest.raises(bundle.BundleError, match="line 2"):
        bundle.parse_freeze("ok==1\n!!!\n", "f.txt")


def test_what_the_node_has_is_left_out_with_its_dependencies(tmp_path):
    index = FakeIndex(tmp_path, {
        "snakemake": ("9.27.1", ["pulp>=2.3", "pyyaml", "dpath>=2; python_version >= '3.8'",
                                 "legacy; python_version < '3.0'", "docs-thing; extra == 'docs'"]),
        "pulp": ("2.9.0", []), "dpath": ("2.2.0", []),
        "torch-pruning": ("1.6.1", ["torch", "numpy"]),
    })
    plan = bundle.resolve(["snakemake==9.27.1", "torch-pruning==1.6.1", "torch>=2.4"],
                          {"torch": "2.11.0+cu130", "numpy": "2.5.2", "pyyaml": "6.0.3"}, ENV, index)
    assert sorted(plan.wheels) == ["dpath", "pulp", "snakemake", "torch-pruning"]
    assert set(index.fetched) == set(plan.wheels)               # torch, numpy, pyyaml never downloaded
    assert {"torch", "numpy", "pyyaml"} <= set(plan.on_target)
    assert "legacy" not in index.fetched and "docs-thing" not in index.fetched  # markers, extras
    assert plan.why["pulp"] == ["snakemake 9.27.1 -> pulp>=2.3"]


def test_a_node_version_too_old_is_bundled_and_reported(tmp_path):
    index = FakeIndex(tmp_path, {"jsonschema": ("4.25.0", [])})
    plan = bundle.resolve(["jsonschema>=4.18"], {"jsonschema": "4.0.0"}, ENV, index)
    assert list(plan.wheels) == ["jsonschema"] and plan.upgraded == {"jsonschema": "4.0.0"}


def test_conflicting_requirements_refused(tmp_path):
    index = FakeIndex(tmp_path, {"a": ("1.0", ["c==1.0"]), "b": ("1.0", ["c>=2"]), "c": ("1.0", [])})
    with pytest.raises(bundle.BundleError, match="c: bundled 1.0, but .*c>=2"):
        bundle.resolve(["a", "b"], {}, ENV, index)


def test_markers_evaluated_for_the_node_python(tmp_path):
    index = FakeIndex(tmp_path, {"x": ("1", ["old; python_version < '3.11'", "new; python_version >= '3.12'"]),
                                 "old": ("1", []), "new": ("1", [])})
    assert sorted(bundle.resolve(["x"], {}, bundle.target_environment("3.10"), index).wheels) == ["old", "x"]
    assert sorted(bundle.resolve(["x"], {}, bundle.target_environment("3.12"), index).wheels) == ["new", "x"]
    with pytest.raises(bundle.BundleError, match="--python-version"):
        bundle.target_environment("twelve")


def test_bundle_folder_replaced_whole_with_its_record(tmp_path):
    index = FakeIndex(tmp_path, {"a": ("1.0", ["b"]), "b": ("2.0", [])})
    plan = bundle.resolve(["a"], {}, ENV, index)
    out = tmp_path / "whl"
    out.mkdir()
    (out / "stale-0-py3-none-any.whl").write_text("old")
    bundle.write_bundle(plan, out, {"python_version": "3.12"})
    files = sorted(p.name for p in out.iterdir())
    assert files == ["a-1.0-py3-none-any.whl", "b-2.0-py3-none-any.whl", "bundle.json"]
    rec = json.loads((out / "bundle.json").read_text())
    assert rec["schema"] == "prunebench-bundle/1"
    assert [(w["name"], w["version"]) for w in rec["wheels"]] == [("a", "1.0"), ("b", "2.0")]
    assert not list(tmp_path.glob(".whl.*"))  # no temporary folder left


def test_missing_freeze_file_named(tmp_path, capsys):
    assert bundle.main(["bundle", "--target-freeze", str(tmp_path / "nope.txt"), "--out", str(tmp_path / "o")]) == 1
    assert "--target-freeze: no such file" in capsys.readouterr().err


@pytest.mark.network
def test_real_download_of_a_small_pure_package(tmp_path, monkeypatch):
    """pip downloads a wheel for the node's platform; what the freeze lists is not downloaded."""
    freeze = tmp_path / "freeze.txt"
    freeze.write_text("six==1.16.0\n")
    out = tmp_path / "whl"
    monkeypatch.setattr(bundle, "own_requirements", lambda extras=(): [])  # only the named ones
    assert bundle.main(["bundle", "--target-freeze", str(freeze), "--out", str(out), "six>=1.10",
                        "python-dateutil==2.9.0.post0"]) == 0
    rec = json.loads((out / "bundle.json").read_text())
    assert [w["name"] for w in rec["wheels"]] == ["python-dateutil"]
    assert "six" in rec["on_target"]
    assert (out / rec["wheels"][0]["file"]).is_file()


def test_own_requirements_with_and_without_extras():
    """prunebench's metadata: runtime requirements always, an extra's only when asked for."""
    plain = {Requirement(r).name for r in bundle.own_requirements()}
    assert {"transformers", "snakemake", "jsonschema"} <= plain and "pytest" not in plain
    with_test = bundle.own_requirements(("test",))
    assert "pytest" in {Requirement(r).name for r in with_test}
    assert not any("extra" in r for r in with_test)  # the extra's clause is resolved, the rest kept
    for r in with_test:
        Requirement(r)  # still a valid requirement
