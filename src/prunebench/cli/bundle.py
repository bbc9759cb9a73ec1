"""``prunebench bundle``: wheels for an offline GPU node, what prunebench needs there minus what it has.

    # on the node (no network):   python3 -m pip freeze --all > node-freeze.txt
    # here (with PyPI):
    prunebench bundle --target-freeze node-freeze.txt --python-version 3.12     # -> .whl/
    # copy .whl/ to the node, then there:
    python3 -m pip install --no-index --no-deps --target /tmp/site .whl/*.whl
    export PYTHONPATH=/tmp/site:$PYTHONPATH PATH=/tmp/site/bin:$PATH

The requirements (prunebench's own dependencies, read from its installed metadata, with the
extras ``--extra`` names; more as arguments) are resolved one package at a time: a requirement the node's ``pip freeze`` satisfies is left
out, with its dependencies (the node's installation is taken as consistent); any other is
downloaded as a wheel for the node's Python and platform (``--python-version``,
``--platform``), its own requirements read from the wheel and resolved in turn, environment
markers evaluated for the node.  A package with no wheel on the index is built here from its
sdist, and kept only if the result is pure Python.  A node package too old for a requirement
is bundled anyway (``/tmp/site`` comes first on ``PYTHONPATH``) and reported; ``--upgrade NAME``
bundles a package whatever the node has.  Without ``--target-freeze`` everything is bundled.  The bundle is
written to a temporary folder and moved into place complete, with ``bundle.json``: every
wheel and why it is there, every requirement the node satisfied.

A freeze line without a version (``torch``) counts as "installed, any version".
"""
from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from packaging.markers import default_environment
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name
from packaging.version import InvalidVersion, Version

DEFAULT_PLATFORMS = ("manylinux_2_28_x86_64", "manylinux_2_17_x86_64", "manylinux2014_x86_64")
ANY_VERSION = "*"


class BundleError(RuntimeError):
    """The bundle cannot be made as asked (a message naming the package or the file)."""


def parse_freeze(text: str, source: str = "freeze file") -> dict[str, str]:
    """``{canonical name: version}`` from ``pip freeze`` output (``name==1.0``, ``name @ url``,
    ``-e ...`` lines, comments); a bare name means any version."""
    out: dict[str, str] = {}
    for n, raw in enumerate(text.splitlines(), 1):
        line = raw.split("#", 1)[0].strip()
        if not line or line.startswith("-"):
            continue
        m = re.match(r"^([A-Za-z0-9][A-Za-z0-9._-]*)\s*(?:\[[^\]]*\])?\s*(?:==\s*([^\s;]+)|@\s*\S+)?\s*(?:;.*)?$", line)
        if not m:
            raise BundleError(f"{source}, line {n}: not a 'pip freeze' line: {raw!r}")
        out[canonicalize_name(m.group(1))] = m.group(2) or ANY_VERSION
    return out


def target_environment(python_version: str) -> dict[str, str]:
    """Marker environment of a Linux x86-64 CPython node of ``python_version`` (e.g. ``3.12``)."""
    if not re.fullmatch(r"3\.\d+", python_version):
        raise BundleError(f"--python-version: expected e.g. 3.12, got {python_version!r}")
    env = dict(default_environment())
    env.update(python_version=python_version, python_full_version=f"{python_version}.0",
               implementation_name="cpython", platform_python_implementation="CPython",
               sys_platform="linux", platform_system="Linux", os_name="posix", platform_machine="x86_64")
    return env


def satisfied(req: Requirement, have: dict[str, str]) -> bool | None:
    """``True``: the node has a version that fits; ``False``: it has one that does not;
    ``None``: it does not have the package."""
    v = have.get(canonicalize_name(req.name))
    if v is None:
        return None
    if v == ANY_VERSION or not req.specifier:
        return True
    try:
        return req.specifier.contains(Version(v), prereleases=True)
    except InvalidVersion:
        return True  # a local build's version string: trust the node


@dataclass
class Wheel:
    """A downloaded (or built) wheel: its file, name, version and ``Requires-Dist`` lines."""
    path: Path
    name: str
    version: str
    requires: list[str]
    built: bool = False


@dataclass
class Plan:
    wheels: dict[str, Wheel] = field(default_factory=dict)
    why: dict[str, list[str]] = field(default_factory=dict)        # name -> requirements that asked for it
    on_target: dict[str, list[str]] = field(default_factory=dict)  # name -> requirements the node satisfied
    upgraded: dict[str, str] = field(default_factory=dict)         # name -> the node's version, too old


def resolve(requirements: list[str], have: dict[str, str], env: dict[str, str],
            fetch: Callable[[Requirement], Wheel]) -> Plan:
    """Every wheel the node lacks for ``requirements`` (breadth first; ``fetch`` downloads one)."""
    plan, todo = Plan(), [(Requirement(r), "requested") for r in requirements]
    while todo:
        req, parent = todo.pop(0)
        if req.marker is not None and not req.marker.evaluate({**env, "extra": ""}):
            continue
        name = canonicalize_name(req.name)
        asked = f"{parent} -> {req}"
        if name in plan.wheels:
            w = plan.wheels[name]
            if req.specifier and not req.specifier.contains(Version(w.version), prereleases=True):
                raise BundleError(f"{name}: bundled {w.version}, but {asked} (conflicting requirements)")
            plan.why[name].append(asked)
            continue
        ok = satisfied(req, have)
        if ok:
            plan.on_target.setdefault(name, []).append(asked)
            continue
        if ok is False:
            plan.upgraded[name] = have[name]
        w = fetch(req)
        plan.wheels[name], plan.why[name] = w, [asked]
        todo += [(Requirement(r), f"{w.name} {w.version}") for r in w.requires]
    return plan


def read_wheel(path: Path, built: bool = False) -> Wheel:
    with zipfile.ZipFile(path) as z:
        meta = next((n for n in z.namelist() if n.endswith(".dist-info/METADATA")), None)
        if meta is None:
            raise BundleError(f"{path.name}: no METADATA in the wheel")
        text = z.read(meta).decode()
    field_ = lambda k: re.search(rf"^{k}: (.+)$", text, re.M)  # noqa: E731
    if not field_("Name") or not field_("Version"):
        raise BundleError(f"{path.name}: METADATA without Name or Version")
    return Wheel(path, canonicalize_name(field_("Name").group(1).strip()), field_("Version").group(1).strip(),
                 [r.strip() for r in re.findall(r"^Requires-Dist: (.+)$", text, re.M)], built)


def pip_fetcher(dest: Path, python_version: str, platforms: tuple[str, ...], python: str = sys.executable):
    """``fetch`` for :func:`resolve`: ``pip download --no-deps`` of a wheel for the node; an
    sdist-only package is built here and must come out pure Python."""
    def run(args: list[str]) -> subprocess.CompletedProcess:
        return subprocess.run([python, "-m", "pip", *args], capture_output=True, text=True)

    def fetch(req: Requirement) -> Wheel:
        spec = f"{req.name}{req.specifier}"
        before = set(dest.iterdir())
        plat = [a for p in (*platforms, "any") for a in ("--platform", p)]
        r = run(["download", "-q", "--no-deps", "--only-binary=:all:", "--implementation", "cp",
                 "--python-version", python_version, *plat, "-d", str(dest), spec])
        built = False
        if r.returncode != 0:
            if "No matching distribution" not in r.stderr:
                raise BundleError(f"{spec}: pip download failed:\n{r.stderr.strip()[-2000:]}")
            r = run(["wheel", "-q", "--no-deps", "-w", str(dest), spec])
            if r.returncode != 0:
                raise BundleError(f"{spec}: no wheel on the index, and building one failed:\n{r.stderr.strip()[-2000:]}")
            built = True
        new = sorted(set(dest.iterdir()) - before)
        wheels = [p for p in new if p.suffix == ".whl"]
        if len(wheels) != 1:
            raise BundleError(f"{spec}: expected one new wheel in {dest}, found {[p.name for p in new]}")
        if built and not re.search(r"-py[23](\.py3)?-none-any\.whl$", wheels[0].name):
            raise BundleError(f"{spec}: built from its sdist into {wheels[0].name}, which is not pure Python: "
                              "it would not run on the node")
        return read_wheel(wheels[0], built)

    return fetch


def own_requirements(extras: tuple[str, ...] = (), dist: str = "prunebench") -> list[str]:
    """The requirements of the installed ``dist``: the runtime ones, and those of ``extras``
    (their ``extra == ...`` clause evaluated here, the rest of the marker kept)."""
    from importlib.metadata import PackageNotFoundError, requires

    try:
        reqs = requires(dist) or []
    except PackageNotFoundError:
        raise BundleError(f"{dist} is not installed here: name the requirements on the command line") from None
    out = []
    for text in reqs:
        req = Requirement(text)
        if req.marker is None or "extra" not in str(req.marker):
            out.append(text)
        elif any(req.marker.evaluate({"extra": e}) for e in extras):
            rest = re.sub(r"""\s*(and\s+)?extra\s*==\s*["'][^"']+["']""", "", text.split(";", 1)[1]).strip()
            rest = re.sub(r"^and\s+", "", rest).strip()
            if rest.startswith("(") and rest.endswith(")"):
                rest = rest[1:-1].strip()
            out.append(f"{req.name}{req.specifier}" + (f"; {rest}" if rest else ""))
    return out


def write_bundle(plan: Plan, out: Path, meta: dict) -> None:
    """Move the plan's wheels into ``out`` (replaced whole, atomically) with ``bundle.json``."""
    out = out.resolve()
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.", dir=out.parent))
    try:
        for w in plan.wheels.values():
            shutil.copy2(w.path, tmp / w.path.name)
        record = {"schema": "prunebench-bundle/1", **meta,
                  "wheels": [{"file": w.path.name, "name": n, "version": w.version, "built_from_sdist": w.built,
                              "required_by": plan.why[n]} for n, w in sorted(plan.wheels.items())],
                  "on_target": dict(sorted(plan.on_target.items())),
                  "bundled_over_older_on_target": dict(sorted(plan.upgraded.items()))}
        (tmp / "bundle.json").write_text(json.dumps(record, indent=1) + "\n")
        old = out.with_name(f".{out.name}.old")
        if out.exists():
            if old.exists():
                shutil.rmtree(old)
            out.rename(old)
        tmp.rename(out)
        if old.exists():
            shutil.rmtree(old)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def main(argv: list[str]) -> int:
    ap = argparse.ArgumentParser(prog="prunebench bundle", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("requirements", nargs="*", help="more requirements besides prunebench's own")
    ap.add_argument("--target-freeze", metavar="FILE", help="the node's `pip freeze --all` (without it: bundle everything)")
    ap.add_argument("--extra", action="append", default=[], help="a prunebench extra to include (e.g. test)")
    ap.add_argument("--upgrade", action="append", default=[], help="bundle this package even if the node has it")
    ap.add_argument("--out", default=".whl", help="the bundle folder, replaced whole (default .whl)")
    ap.add_argument("--python-version", default="3.12", help="the node's Python (default 3.12)")
    ap.add_argument("--platform", action="append", help=f"wheel platform tags (default {', '.join(DEFAULT_PLATFORMS)})")
    a = ap.parse_args(argv[1:])
    try:
        have, freeze = {}, None
        if a.target_freeze:
            freeze = Path(a.target_freeze)
            if not freeze.is_file():
                raise BundleError(f"--target-freeze: no such file {freeze}")
            have = parse_freeze(freeze.read_text(), str(freeze))
        for name in a.upgrade:
            have.pop(canonicalize_name(name), None)
        reqs = [*own_requirements(tuple(a.extra)), *a.requirements]
        env = target_environment(a.python_version)
        platforms = tuple(a.platform or DEFAULT_PLATFORMS)
        with tempfile.TemporaryDirectory() as dl:
            plan = resolve(reqs, have, env, pip_fetcher(Path(dl), a.python_version, platforms))
            write_bundle(plan, Path(a.out), {"python_version": a.python_version, "platforms": list(platforms),
                                             "requirements": reqs,
                                             "target_freeze": os.path.abspath(freeze) if freeze else None})
    except BundleError as exc:
        print(f"bundle: {exc}", file=sys.stderr)
        return 1
    size = sum(f.stat().st_size for f in Path(a.out).glob("*.whl"))
    for name in sorted(plan.upgraded):
        print(f"note: the node has {name} {plan.upgraded[name]}, too old: bundled "
              f"{plan.wheels[name].version}", file=sys.stderr)
    print(f"{len(plan.wheels)} wheels, {size / 2**20:.1f} MiB -> {a.out} "
          f"({len(plan.on_target)} requirements already on the node)")
    return 0

