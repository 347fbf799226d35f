"""Run folders: names, layout and the status file every writer and reader shares.

A run folder `checkpoints/<run>/` holds
    config.json        what was asked, including the exact command
    status.json        state, progress, error (atomic writes)
    metrics.jsonl      one JSON record per event (losses, learning rates, Ω, per-exit dev scores)
    cache.npz          the dev-set ExitCache (see core.engine.cache)
    model.safetensors  weights (optional)
    train.log          stdout/stderr of a background job (optional)
"""
from __future__ import annotations

import contextlib
import fcntl
import os
import re
import shutil
import time
from pathlib import Path

from core.runs.io import atomic_write_json, read_json, read_jsonl

REPO_ROOT = Path(__file__).resolve().parents[2]   # the checkout: core/runs/folders.py -> ../../
DEFAULT_ROOT = REPO_ROOT / "checkpoints"
CONFIG_FILE = "config.json"
STATUS_FILE = "status.json"
METRICS_FILE = "metrics.jsonl"
CACHE_FILE = "cache.npz"
WEIGHTS_FILE = "model.safetensors"
LOG_FILE = "train.log"
JOB_FILE = "job.json"
UPLOADS_DIR = "uploads"
LOCK_FILE = ".jobs.lock"          # under the checkpoint root: the job manager's lock, also held by a swap
REPLACING_SUFFIX = ".replacing"   # <root>/.<run>.replacing: a replacement of <run> being trained
# files a job manager writes into a fresh run folder before the training process starts: a folder
# holding only these (and dotfiles) is not a run yet
_JOB_ONLY = {JOB_FILE, STATUS_FILE, LOG_FILE, UPLOADS_DIR}

STATES = ("queued", "running", "done", "failed", "cancelled")
_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,99}$")


def check_run_name(name: str) -> str:
    """Return `name` if it is a safe run-folder name; else raise ValueError saying what is allowed."""
    if not isinstance(name, str) or not _NAME_RE.match(name) or ".." in name:
        raise ValueError(
            f"invalid run name {name!r}: use 1-100 letters, digits, '.', '_' or '-', starting with a "
            "letter or digit, with no path separators and no '..'"
        )
    return name


def list_runs(root: str | os.PathLike | None = None) -> list[Path]:
    """Run folders under `root` (any folder with a config, status or cache file), sorted by name."""
    root = Path(root) if root is not None else DEFAULT_ROOT
    if not root.is_dir():
        return []
    return sorted(
        p for p in root.iterdir()
        if p.is_dir() and not p.name.startswith(".")
        and any((p / f).exists() for f in (CONFIG_FILE, STATUS_FILE, CACHE_FILE))
    )


def write_status(folder: str | os.PathLike, state: str, **fields) -> dict:
    """Atomically replace status.json with `state` plus `fields`, keeping earlier fields not given."""
    if state not in STATES:
        raise ValueError(f"unknown state {state!r}; valid: {', '.join(STATES)}")
    path = Path(folder) / STATUS_FILE
    try:
        status = read_status(folder) or {}
    except ValueError:
        status = {}
    status.update(fields)
    status["state"] = state
    status["updated"] = time.time()
    atomic_write_json(path, status)
    return status


def read_object(path: str | os.PathLike) -> dict:
    """A JSON file that must hold an object: ValueError naming the file when it is corrupt or holds
    anything else (a list, a number, a string)."""
    data = read_json(path)
    if not isinstance(data, dict):
        raise ValueError(f"{path}: expected a JSON object {{...}}, found a {type(data).__name__}; delete "
                         "or repair the file")
    return data


def add_warnings(folder: str | os.PathLike, warnings: list[str]) -> list[str]:
    """Append plain-sentence warnings to status.json's `warnings` (kept in order, no repeats; other
    writers' warnings stay). Returns the full list."""
    try:
        status = read_status(folder) or {}
    except ValueError:
        status = {}
    current = status.get("warnings")
    current = [str(w) for w in current] if isinstance(current, list) else []
    merged = current + [str(w) for w in warnings if str(w) not in current]
    write_status(folder, status.get("state") if status.get("state") in STATES else "running", warnings=merged)
    return merged


def run_warnings(status: dict | None) -> list[str]:
    """The `warnings` of a status dict as a list of strings (empty when absent or malformed)."""
    found = (status or {}).get("warnings")
    return [str(w) for w in found] if isinstance(found, list) else []


def read_status(folder: str | os.PathLike) -> dict | None:
    path = Path(folder) / STATUS_FILE
    return read_object(path) if path.exists() else None


def read_config(folder: str | os.PathLike) -> dict | None:
    path = Path(folder) / CONFIG_FILE
    return read_object(path) if path.exists() else None


def read_metrics(folder: str | os.PathLike, kind: str | None = None, *, unreadable_ok: bool = False) -> list[dict]:
    """The records of a run's metrics.jsonl ([] when it has none), only those of `kind` when given. A
    corrupt line raises ValueError naming the file, unless `unreadable_ok` (a live panel polling a run
    being written), which gives [] for an unreadable file instead."""
    try:
        records = read_jsonl(Path(folder) / METRICS_FILE)
    except (ValueError, OSError):
        if not unreadable_ok:
            raise
        return []
    return records if kind is None else [r for r in records if r.get("kind") == kind]


# ---- replacing a run without losing it ---------------------------------------------------------------
def holds_run(folder: str | os.PathLike) -> bool:
    """True when `folder` holds results of a run (anything beyond what a job manager writes before the
    training process starts: job.json, status.json, train.log, uploads/)."""
    folder = Path(folder)
    try:
        names = [p.name for p in folder.iterdir()]
    except (FileNotFoundError, NotADirectoryError):
        return folder.exists()
    return any(n not in _JOB_ONLY and not n.startswith(".") for n in names)


def staging_folder(folder: str | os.PathLike) -> Path:
    """Where a replacement of run `folder` trains: the hidden sibling <root>/.<run>.replacing."""
    folder = Path(folder)
    return folder.parent / f".{check_run_name(folder.name)}{REPLACING_SUFFIX}"


def replaced_name(staging: str | os.PathLike) -> str | None:
    """The run a staging folder replaces (`.<run>.replacing` -> `<run>`), else None."""
    name = Path(staging).name
    if name.startswith(".") and name.endswith(REPLACING_SUFFIX):
        inner = name[1:-len(REPLACING_SUFFIX)]
        try:
            return check_run_name(inner)
        except ValueError:
            return None
    return None


@contextlib.contextmanager
def root_lock(root: str | os.PathLike):
    """An exclusive flock on <root>/.jobs.lock (the lock core.runs.jobs holds while it changes job state)."""
    Path(root).mkdir(parents=True, exist_ok=True)
    fd = os.open(Path(root) / LOCK_FILE, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        fcntl.flock(fd, fcntl.LOCK_UN)
        os.close(fd)


def swap_in(staging: str | os.PathLike, folder: str | os.PathLike, *, lock: bool = True) -> None:
    """Replace run `folder` by the finished run in `staging`: the old folder is renamed to a hidden
    backup, the new one renamed in, then the backup deleted. Two renames under the root's lock, so a
    reader sees the old run or the new one, and a job manager never acts on a half-moved folder."""
    staging, folder = Path(staging), Path(folder)
    backup = folder.parent / f".{folder.name}.old"
    ctx = root_lock(folder.parent) if lock else contextlib.nullcontext()
    with ctx:
        if backup.exists():
            shutil.rmtree(backup)
        had_old = folder.exists()
        if had_old:
            os.rename(folder, backup)
        try:
            os.rename(staging, folder)
        except OSError:
            if had_old:
                os.rename(backup, folder)
            raise
    shutil.rmtree(backup, ignore_errors=True)
