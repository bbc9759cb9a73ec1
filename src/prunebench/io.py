"""Atomic writes and checked reads for every artifact of the pipeline.

Every file the pipeline produces is written to a temporary file in the same
folder and renamed into place, so a job killed at any moment leaves either the
old file, no file, or the complete new file -- never a truncated one that a
rerun could mistake for a finished result.  Reads go through ``read_json`` /
``read_csv`` so that a corrupt file produces an error naming the file.
"""
from __future__ import annotations

import contextlib
import glob
import hashlib
import json
import math
import os
import re
import socket
import tempfile
import time
from pathlib import Path
from typing import Any, Iterator

from .paths import PathError, parse_cell


class ArtifactError(RuntimeError):
    """A pipeline artifact is missing, truncated or malformed."""


#: a temporary file whose writer cannot be asked whether it runs (another host, an older
#: name without one) is left by a killed writer once it is this old (seconds)
STALE_AGE = 24 * 3600


def _writer_tag() -> str:
    """This host and process namespace, short: a temporary file's writer is asked whether it
    still runs only where it ran on the same host, in the same process namespace."""
    try:
        ns = os.readlink("/proc/self/ns/pid")
    except OSError:
        ns = ""
    return hashlib.sha1(f"{socket.gethostname()}|{ns}".encode()).hexdigest()[:8]


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:  # exists, another user's
        return True
    return True


def _remove_stale(path: Path) -> None:
    """Remove the temporary files of ``path`` left by killed writers, never one a writer
    still writes: a temporary file's name carries its writer's pid and :func:`_writer_tag`;
    one written on this host in this namespace is removed once its writer has exited, any
    other (another host's, or named without a writer) once it is :data:`STALE_AGE` old."""
    prefix, tag = f".{path.name}.", _writer_tag()
    own = re.compile(r"(\d+)-([0-9a-f]{8})\.")
    for stale in path.parent.glob(f"{glob.escape(prefix)}*.tmp"):
        m = own.match(stale.name[len(prefix):])
        try:
            if m and m.group(2) == tag:
                gone = not _alive(int(m.group(1)))
            else:
                gone = time.time() - stale.stat().st_mtime > STALE_AGE
            if gone:
                stale.unlink()
        except OSError:  # removed meanwhile, or not ours to remove
            pass


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike, suffix: str = "") -> Iterator[Path]:
    """Yield a temporary path next to ``path``; rename it onto ``path`` on success.

    On any exception the temporary file is removed and ``path`` is untouched.  Several
    writers of one path (threads, processes, hosts) may run at once: each has its own
    temporary file, the last rename wins, and no writer removes another's file while it runs
    (:func:`_remove_stale`).
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    _remove_stale(path)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.{os.getpid()}-{_writer_tag()}.", suffix=suffix + ".tmp",
                               dir=path.parent)
    os.close(fd)
    tmp_path = Path(tmp)
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(tmp_path, 0o666 & ~umask)  # mkstemp makes 0600; outputs are ordinary files
    try:
        yield tmp_path
        with open(tmp_path, "rb") as fh:
            os.fsync(fh.fileno())
        os.replace(tmp_path, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            tmp_path.unlink()
        raise


def _clean(obj: Any) -> Any:
    """Make floats JSON-safe (NaN/inf -> None) recursively."""
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    if isinstance(obj, dict):
        return {str(k): _clean(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_clean(v) for v in obj]
    return obj


def write_json(path: str | os.PathLike, obj: Any) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(_clean(obj), indent=2, sort_keys=False) + "\n", encoding="utf-8")


def write_text(path: str | os.PathLike, text: str) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(text, encoding="utf-8")


def read_json(path: str | os.PathLike, required: tuple[str, ...] = ()) -> Any:
    """Read a JSON artifact; raise ``ArtifactError`` naming the file if it is unusable."""
    path = Path(path)
    if not path.exists():
        raise ArtifactError(f"{path}: file not found")
    try:
        obj = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ArtifactError(
            f"{path}: not valid JSON ({exc}); the file is corrupt or truncated -- delete it and rerun"
        ) from None
    missing = [k for k in required if not isinstance(obj, dict) or k not in obj]
    if missing:
        raise ArtifactError(f"{path}: missing field(s) {missing}; delete it and rerun")
    return obj


def cell_identity(path: str | os.PathLike) -> dict:
    """What a cell file's path says the cell is (:func:`prunebench.paths.parse_cell`);
    ``ArtifactError`` for a path that is not a cell's."""
    try:
        return parse_cell(path)
    except PathError as exc:
        raise ArtifactError(str(exc)) from None


def _same(got: Any, want: Any) -> bool:
    if isinstance(want, dict):  # the fields asked for; a record may hold more
        return isinstance(got, dict) and all(_same(got.get(k), v) for k, v in want.items())
    if isinstance(want, bool) or isinstance(got, bool):
        return type(got) is type(want) and got == want
    return got == want


def check_record(path: str | os.PathLike, rec: Any, expected: dict[str, tuple[str, Any]]) -> None:
    """Raise ``ArtifactError`` naming ``path`` where a field of ``rec`` differs from its
    expected value; ``expected``: ``{field: (who says so, value)}``, e.g.
    ``{"dtype": ("config key benchmark.dtype", "float16")}``."""
    wrong = [f"{field} is {rec.get(field) if isinstance(rec, dict) else None!r} but {who} is {want!r}"
             for field, (who, want) in expected.items()
             if not _same(rec.get(field) if isinstance(rec, dict) else None, want)]
    if wrong:
        raise ArtifactError(f"{path}: {'; '.join(wrong)} -- written for another cell or other settings; "
                            "delete it and rerun")


def write_csv(path: str | os.PathLike, frame) -> None:
    """Write a pandas DataFrame atomically."""
    with atomic_path(path) as tmp:
        frame.to_csv(tmp, index=False)
