"""prunebench bundle: the node's freeze, which of its packages serve, wheels only for the rest."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from prunebench.cli import bundle


def test_freeze_parsed_with_versions_and_urls():
    have = bundle.parse_freeze("# a comment\nTorch==2.11.0+cu130\nconnection_pool==0.0.3\n"
                               "-e git+https://example.org/x#egg=x\nmylib @ file:///wheels/mylib-1.0-py3-none-any.whl\n")
    assert have == {"torch": "2.11.0+cu130", "connection-pool": "0.0.3", "mylib": None}


def test_requirements_are_the_packages_own():
    reqs = bundle.requirements()
    assert any(r.startswith("torch>=") for r in reqs) and any(r.startswith("snakemake") for r in reqs)
    assert not any(r.startswith("pytest") for r in reqs)  # an extra, only when asked for
    assert any(r.startswith("pytest") for r in bundle.requirements(("test",)))
    # the checkout's pyproject.toml says the same (the fallback when prunebench is not installed)
    declared = [r.split(";")[0].replace(" ", "") for r in bundle._pyproject_requirements() if "extra" not in r]
    assert {r.split(">")[0].split("=")[0].split("<")[0] for r in declared} == {
        r.split(">")[0].split("=")[0].split("<")[0] for r in reqs}


def test_a_node_package_too_old_is_bundled_anyway():
    install = [{"metadata": {"name": "snakemake", "version": "9.27.1",
                             "requires_dist": ["connection_pool>=0.0.3", "tomli>=2; python_version < '3.11'"]}}]
    have = {"connection-pool": "0.0.2", "tomli": "1.0", "torch": "2.11.0+cu130"}
    # torch 2.11.0+cu130 satisfies >=2.4 (a local version); tomli's requirement does not apply on 3.12
    assert bundle.unmet(install, ["torch>=2.4"], have, "3.12") == {
        "connection-pool": "connection_pool>=0.0.3 (the node has 0.0.2)"}
    assert "tomli" in bundle.unmet(install, [], have, "3.10")


def test_wheelless_requirements_read_from_pips_log():
    assert bundle.without_wheels("ERROR: No matching distribution found for connection_pool>=0.0.3 (from x)") == [
        "connection_pool>=0.0.3"]
    log = ("    snakemake 9.9.0 depends on connection_pool>=0.0.3\n\nAdditionally, some packages in these conflicts "
           "have no matching distributions available for your environment:\n    connection-pool\n\nTo fix this")
    assert bundle.without_wheels(log) == ["connection_pool>=0.0.3"]
    assert bundle.without_wheels("ERROR: something else") == []


@pytest.mark.network
@pytest.mark.slow
def test_bundle_holds_only_what_the_node_lacks(tmp_path):
    """This environment as the node, without jsonschema: the bundle is jsonschema (and
    whatever `pip freeze --all` does not list), never torch."""
    freeze = subprocess.run([sys.executable, "-m", "pip", "freeze", "--all"], capture_output=True, text=True,
                            check=True).stdout
    node = tmp_path / "freeze.txt"
    node.write_text("\n".join(line for line in freeze.splitlines() if not line.lower().startswith("jsonschema==")))
    out = tmp_path / "whl"
    proc = subprocess.run([sys.executable, "-m", "prunebench", "bundle", "--target-freeze", str(node),
                           "--out", str(out)], capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stderr[-3000:]
    names = sorted(bundle.canonical(w.name.split("-")[0]) for w in Path(out).glob("*.whl"))
    assert "jsonschema" in names and "torch" not in names and len(names) <= 3, names
