"""Data files inside installed Python distributions, checked against the wheel's RECORD; package folders.

``installed_file(dist, member)`` finds ``member`` (a path relative to site-packages, as
listed in the distribution's ``RECORD``) of the installed distribution ``dist`` without
importing it, checks the file's size and sha256 against ``RECORD`` (so a file edited or
truncated after installation is an error, not silently different text) and returns a
:class:`PackageFile` with the path, the distribution's version and the file's sha256.
``resolve_path("pkg:<name>")`` is the folder of the installed Python package ``<name>``
(found without importing it): how a config names a model shipped in a package.
"""
from __future__ import annotations

import base64
import hashlib
import importlib.metadata as md
import importlib.util
from dataclasses import dataclass
from pathlib import Path


class PackageDataError(LookupError):
    """The distribution is not installed, lacks the file, or the file differs from its RECORD."""


@dataclass(frozen=True)
class PackageFile:
    dist: str
    version: str
    member: str
    path: Path
    sha256: str  # hex digest of the file's bytes
    size: int


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def installed_file(dist: str, member: str) -> PackageFile:
    """The installed file ``member`` of distribution ``dist``, verified against its RECORD."""
    try:
        d = md.distribution(dist)
    except md.PackageNotFoundError:
        raise PackageDataError(f"the Python package {dist!r} is not installed "
                               f"(pip install {dist}; scripts/install.sh installs it)") from None
    entry = next((f for f in (d.files or []) if f.as_posix() == member), None)
    if entry is None:
        raise PackageDataError(f"{dist} {d.version} has no file {member} in its RECORD")
    path = Path(d.locate_file(entry))
    if not path.is_file():
        raise PackageDataError(f"{dist} {d.version}: {member} is listed but missing at {path}")
    digest = _sha256(path)
    size = path.stat().st_size
    if entry.hash is not None:
        if entry.hash.mode != "sha256":
            raise PackageDataError(f"{dist} {d.version}: RECORD hash of {member} is {entry.hash.mode}, not sha256")
        want = base64.urlsafe_b64decode(entry.hash.value + "=" * (-len(entry.hash.value) % 4)).hex()
        if want != digest or (entry.size is not None and entry.size != size):
            raise PackageDataError(f"{dist} {d.version}: {path} differs from its RECORD (sha256 {digest}, "
                                   f"{size} bytes; RECORD says {want}, {entry.size} bytes); reinstall {dist}")
    return PackageFile(dist=dist, version=d.version, member=member, path=path, sha256=digest, size=size)


def resolve_path(path: str) -> str:
    """``pkg:<name>`` -> the folder of installed Python package ``<name>`` (not imported);
    any other path is returned as it is."""
    if path.startswith("pkg:"):
        name = path[4:]
        spec = importlib.util.find_spec(name)
        if spec is None or not spec.submodule_search_locations:
            raise FileNotFoundError(f"path {path!r}: Python package {name!r} is not installed")
        return list(spec.submodule_search_locations)[0]
    return path
