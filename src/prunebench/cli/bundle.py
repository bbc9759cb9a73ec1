"""``prunebench bundle``: the wheels an offline GPU node needs to run prunebench, minus what it has.

On the node (any Python it will run prunebench with), write down what is installed
(``--all``: pip and setuptools too)::

    python3 -m pip freeze --all > node-freeze.txt

Here, with network access (the node's freeze copied over)::

    prunebench bundle --target-freeze node-freeze.txt --python-version 3.12   # -> .whl/

resolves prunebench's dependencies (this package's metadata, i.e. ``pyproject.toml``; more
requirements as arguments) for the node's interpreter and platform (``--python-version``,
``--platform``; default: this interpreter, Linux x86_64) and downloads the packages the node
lacks: a package of the node is used as it is where its version satisfies every requirement
on it, else (said on stderr) and with ``--upgrade NAME`` the bundle brings its own.  A
requirement published only as a source archive is built into a pure-Python wheel here.  On the node, with the checkout and ``.whl/`` copied over::

    python3 -m pip install --no-index --no-deps --target /tmp/site .whl/*.whl
    export PYTHONPATH=/tmp/site:$PWD/src PATH=/tmp/site/bin:$PATH

(``scripts/device_run.sh`` does this, and resumes an interrupted run; README: "Offline or
time-limited GPU nodes").
"""
from __future__ import annotations

import argparse
import json
import re
import shutil
import subprocess
import sys
import tempfile
from importlib import metadata
from pathlib import Path

PLATFORMS = ["manylinux_2_28_x86_64", "manylinux_2_17_x86_64", "manylinux2014_x86_64"]
_NAME = re.compile(r"^\s*([A-Za-z0-9][A-Za-z0-9._-]*)")


def canonical(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def requirements(extras: tuple[str, ...] = ()) -> list[str]:
    """prunebench's own requirements (with ``extras``), markers of other extras dropped."""
    try:
        declared = metadata.requires("prunebench") or []
    except metadata.PackageNotFoundError:  # run from a checkout without installing it
        declared = _pyproject_requirements()
    out = []
    for req in declared:
        spec, _, marker = req.partition(";")
        m = re.search(r"""extra\s*==\s*["']([^"']+)["']""", marker)
        if m and m.group(1) not in extras:
            continue
        marker = re.sub(r"""\s*(and\s+)?extra\s*==\s*["'][^"']+["']""", "", marker).strip()
        marker = re.sub(r"^and\s+", "", marker)
        out.append(spec.strip() + (f"; {marker}" if marker else ""))
    return out


def _pyproject_requirements() -> list[str]:
    import tomllib

    project = tomllib.loads((Path(__file__).resolve().parents[3] / "pyproject.toml").read_text())["project"]
    extra = [f'{r.split(";")[0]}; extra == "{name}"' + (f' and ({r.split(";", 1)[1].strip()})' if ";" in r else "")
             for name, reqs in project.get("optional-dependencies", {}).items() for r in reqs]
    return [*project["dependencies"], *extra]


def parse_freeze(text: str) -> dict[str, str | None]:
    """``{canonical name: version or None}`` of a ``pip freeze``: ``name==version`` pins; a
    package installed from a URL or path (``name @ ...``) is there at no known version."""
    have: dict[str, str | None] = {}
    for line in text.splitlines():
        line = line.split("#", 1)[0].strip()
        if not line or line.startswith("-"):
            continue
        m = _NAME.match(line)
        if m:
            pin = re.match(r"^[^=<>!~@ ]+\s*==\s*([^\s;]+)", line)
            have[canonical(m.group(1))] = pin.group(1) if pin else None
    return have


def _marker_env(python_version: str) -> dict:
    from packaging.markers import default_environment

    return {**default_environment(), "python_version": python_version, "python_full_version": f"{python_version}.0",
            "sys_platform": "linux", "platform_system": "Linux", "os_name": "posix", "platform_machine": "x86_64",
            "implementation_name": "cpython", "platform_python_implementation": "CPython", "extra": ""}


def unmet(install: list[dict], top: list[str], have: dict[str, str | None], python_version: str) -> dict[str, str]:
    """``{name: requirement}`` for the node's packages whose version fails a requirement on
    them (by the resolved packages, or ``top``, evaluated for the node's Python)."""
    from packaging.requirements import InvalidRequirement, Requirement
    from packaging.version import InvalidVersion, Version

    env = _marker_env(python_version)
    reqs = list(top) + [r for item in install for r in item["metadata"].get("requires_dist") or []]
    bad: dict[str, str] = {}
    for text in reqs:
        try:
            req = Requirement(text)
        except InvalidRequirement:
            continue
        name, version = canonical(req.name), have.get(canonical(req.name))
        if version is None or (req.marker is not None and not req.marker.evaluate(env)):
            continue
        try:
            ok = req.specifier.contains(Version(version), prereleases=True)
        except InvalidVersion:
            ok = True
        if not ok:
            bad.setdefault(name, f"{text.split(';')[0].strip()} (the node has {version})")
    return bad


def _pip(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "pip", *args], capture_output=True, text=True)


def without_wheels(log: str) -> list[str]:
    """The requirements pip found no wheel for, from its log: ``No matching distribution found
    for X``, or the packages a failed resolution lists as having none (with the version range
    a dependant asks for)."""
    m = re.search(r"No matching distribution found for (\S+)", log)
    if m:
        return [m.group(1)]
    block = re.search(r"no matching distributions available for your environment:\n((?:[ \t]+\S+\n?)+)", log)
    out = []
    for name in (block.group(1).split() if block else []):
        asks = [r for r in re.findall(r"depends on (\S+)", log) if canonical(_NAME.match(r).group(1)) == canonical(name)]
        out.append(asks[0] if asks else name)
    return out


def resolve(reqs: list[str], target: list[str], work: Path) -> list[dict]:
    """pip's report of everything ``reqs`` need on the target (``install`` items); a
    requirement without a wheel is built from its source archive into ``work/built`` (pure
    Python only)."""
    built, tried = work / "built", set()
    built.mkdir(exist_ok=True)
    while True:
        proc = _pip("install", "--dry-run", "--ignore-installed", "--report", str(work / "report.json"),
                    "--target", str(work / "target"), "--find-links", str(built), *target, *reqs)
        if proc.returncode == 0:
            break
        todo = [r for r in without_wheels(proc.stdout + proc.stderr) if r not in tried]
        if not todo:
            raise SystemExit(f"prunebench bundle: pip could not resolve the requirements:\n{proc.stderr[-3000:]}")
        for req in todo:
            tried.add(req)
            print(f"no wheel for {req}: building one from its source archive", file=sys.stderr)
            wheel = _pip("wheel", "--quiet", "--no-deps", "-w", str(built), req)
            if wheel.returncode != 0:
                raise SystemExit(f"prunebench bundle: building {req} failed:\n{wheel.stderr[-3000:]}")
    impure = [w.name for w in built.glob("*.whl") if not w.name.endswith("-none-any.whl")]
    if impure:
        raise SystemExit(f"prunebench bundle: built wheels are not pure Python (they would not run on the node): {impure}")
    return json.loads((work / "report.json").read_text())["install"]


def main(argv: list[str]) -> int:
    ap = argparse.ArgumentParser(prog="prunebench bundle", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("requirements", nargs="*", help="more requirements besides prunebench's own")
    ap.add_argument("--target-freeze", metavar="FILE", help="the node's `pip freeze` (without it: bundle everything)")
    ap.add_argument("--out", default=".whl", help="the wheel folder, emptied first (default .whl)")
    ap.add_argument("--python-version", default=f"{sys.version_info.major}.{sys.version_info.minor}",
                    help="the node's Python, e.g. 3.12 (default: this one's)")
    ap.add_argument("--platform", action="append", help=f"wheel platform tags of the node (default: {' '.join(PLATFORMS)})")
    ap.add_argument("--extra", action="append", default=[], help="a prunebench extra to include (e.g. test)")
    ap.add_argument("--upgrade", action="append", default=[], help="bundle this package even if the node has it")
    a = ap.parse_args(argv[1:])
    have = parse_freeze(Path(a.target_freeze).read_text()) if a.target_freeze else {}
    upgrade = {canonical(n) for n in a.upgrade}
    target = ["--only-binary=:all:", "--implementation", "cp", "--python-version", a.python_version,
              *[x for p in (a.platform or PLATFORMS) for x in ("--platform", p)]]
    reqs = [*requirements(tuple(a.extra)), *a.requirements]
    with tempfile.TemporaryDirectory(prefix="prunebench-bundle-") as tmp:
        work = Path(tmp)
        install = resolve(reqs, target, work)
        for name, why in sorted(unmet(install, reqs, have, a.python_version).items()):
            print(f"bundled although the node has it: {why}", file=sys.stderr)
            upgrade.add(name)
        needed = [(i["metadata"]["name"], i["metadata"]["version"]) for i in install]
        fetch = [(n, v) for n, v in needed if canonical(n) not in have or canonical(n) in upgrade]
        out = Path(a.out)
        shutil.rmtree(out, ignore_errors=True)
        out.mkdir(parents=True)
        if fetch:
            proc = _pip("download", "--quiet", "--no-deps", "-d", str(out), "--find-links", str(work / "built"),
                        *target, *[f"{n}=={v}" for n, v in fetch])
            if proc.returncode != 0:
                raise SystemExit(f"prunebench bundle: download failed:\n{proc.stderr[-3000:]}")
    wheels = sorted(out.glob("*.whl"))
    for w in wheels:
        print(w.name)
    size = sum(w.stat().st_size for w in wheels)
    print(f"{len(wheels)} wheels, {size / 2**20:.1f} MiB in {out}/ ({len(needed) - len(fetch)} of "
          f"{len(needed)} packages already on the node)", file=sys.stderr)
    return 0
