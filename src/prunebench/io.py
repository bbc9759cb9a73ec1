"""Atomic writes and checked reads for every artifact of the pipeline.

Every file the pipeline produces is written to a temporary file in the same
folder and renamed into place, so a job killed at any moment leaves either the
old file, no file, or the complete new file -- never a truncated one that a
rerun could mistake for a finished result.  Reads go through ``read_json`` /
``read_csv`` so that a corrupt file produces an error naming the file.
"""
from __future__ import annotations

import contextlib
import json
import math
import os
import tempfile
from pathlib import Path
from typing import Any, Iterator

from .paths import PathError, parse_cell


class ArtifactError(RuntimeError):
    """A pipeline artifact is missing, truncated or malformed."""


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike, suffix: str = "") -> Iterator[Path]:
    """Yield a temporary path next to ``path``; rename it onto ``path`` on success.

    On any exception the temporary file is removed and ``path`` is untouched.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    for stale in path.parent.glob(f".{path.name}.*.tmp"):  # left by a killed writer
        stale.unlink(missing_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=suffix + ".tmp", dir=path.parent)
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
