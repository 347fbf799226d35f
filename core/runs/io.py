"""Atomic file writes and JSON helpers shared by every module that writes a run folder."""
from __future__ import annotations

import errno
import json
import os
import tempfile
from pathlib import Path
from typing import Any

_UMASK = os.umask(0)
os.umask(_UMASK)

TMP_SUFFIX = ".tmp"  # an atomic write's partial file is <folder>/.<name>.<random>.tmp until it is renamed
NO_ROOM = (errno.ENOSPC, errno.EFBIG, errno.EDQUOT)  # disk full, file too large, quota exceeded


class WriteError(OSError):
    """A file that could not be written for want of room (disk full, file too large, quota): its text
    names the file, `filename` is the file meant (not the partial file that was removed)."""

    def __str__(self) -> str:
        return f"cannot write {self.filename}: {self.strerror}"


def _named(e: OSError, path: Path) -> OSError:
    """`e` as a WriteError naming `path` when it says there is no room; else `e` itself."""
    if isinstance(e, WriteError) or e.errno not in NO_ROOM:
        return e
    return WriteError(e.errno, e.strerror or os.strerror(e.errno), str(path))


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> None:
    """Write `data` to `path` so readers see either the old file or the new one, never half. A full
    disk (or a file size limit) raises WriteError naming `path`."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=TMP_SUFFIX)
    except OSError as e:
        named = _named(e, path)
        if named is e:
            raise
        raise named from e
    try:
        os.chmod(tmp, 0o644 & ~_UMASK)  # mkstemp makes 0600; give the file the usual permissions
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException as e:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        named = _named(e, path) if isinstance(e, OSError) else e
        if named is e:
            raise
        raise named from e


def atomic_write_text(path: str | os.PathLike, text: str) -> None:
    atomic_write_bytes(path, text.encode("utf-8"))


def atomic_write_json(path: str | os.PathLike, obj: Any) -> None:
    atomic_write_text(path, json.dumps(obj, indent=2, sort_keys=True, default=_json_default) + "\n")


def read_json(path: str | os.PathLike) -> Any:
    """Read a JSON file; a corrupt file raises ValueError naming the file."""
    path = Path(path)
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as e:
        raise ValueError(f"{path}: not valid JSON ({e.msg} at line {e.lineno}); delete or repair the file") from e


def append_jsonl(path: str | os.PathLike, record: dict) -> None:
    """Append one JSON record as a line (a single write call, so a reader never sees half a line)."""
    line = json.dumps(record, sort_keys=True, default=_json_default) + "\n"
    try:
        with open(path, "a", encoding="utf-8") as f:
            f.write(line)
            f.flush()
    except OSError as e:
        named = _named(e, Path(path))
        if named is e:
            raise
        raise named from e


def read_jsonl(path: str | os.PathLike) -> list[dict]:
    """Read a JSON-lines file, skipping a torn last line (a writer may be mid-append)."""
    path = Path(path)
    if not path.exists():
        return []
    records = []
    lines = path.read_text(encoding="utf-8").splitlines()
    for i, line in enumerate(lines):
        if not line.strip():
            continue
        try:
            records.append(json.loads(line))
        except json.JSONDecodeError as e:
            if i == len(lines) - 1:
                break
            raise ValueError(f"{path}: line {i + 1} is not valid JSON ({e.msg})") from e
    return records


def _json_default(obj: Any) -> Any:
    import numpy as np

    if isinstance(obj, np.integer):
        return int(obj)
    if isinstance(obj, np.floating):
        return float(obj)
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    if isinstance(obj, Path):
        return str(obj)
    raise TypeError(f"{type(obj).__name__} is not JSON serializable")
