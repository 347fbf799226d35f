"""Run folders: names, layout and the status file every writer and reader shares.

A run folder `checkpoints/<run>/` holds
    config.json        what was asked, including the exact command
    status.json        state, progress, error (atomic writes)
    metrics.jsonl      one JSON record per event (losses, learning rates, Ω, per-exit dev scores)
    cache.npz          the dev-set ExitCache (see core.cache)
    model.safetensors  weights (optional)
    train.log          stdout/stderr of a background job (optional)
"""
from __future__ import annotations

import os
import re
import time
from pathlib import Path

from core.io import atomic_write_json, read_json, read_jsonl

DEFAULT_ROOT = Path(__file__).resolve().parent.parent / "checkpoints"
CONFIG_FILE = "config.json"
STATUS_FILE = "status.json"
METRICS_FILE = "metrics.jsonl"
CACHE_FILE = "cache.npz"
WEIGHTS_FILE = "model.safetensors"
LOG_FILE = "train.log"

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


def run_dir(name: str, root: str | os.PathLike | None = None) -> Path:
    root = Path(root) if root is not None else DEFAULT_ROOT
    return root / check_run_name(name)


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
    status = {}
    if path.exists():
        try:
            status = read_json(path)
        except ValueError:
            status = {}
    status.update(fields)
    status["state"] = state
    status["updated"] = time.time()
    atomic_write_json(path, status)
    return status


def read_status(folder: str | os.PathLike) -> dict | None:
    path = Path(folder) / STATUS_FILE
    return read_json(path) if path.exists() else None


def read_config(folder: str | os.PathLike) -> dict | None:
    path = Path(folder) / CONFIG_FILE
    return read_json(path) if path.exists() else None


def read_metrics(folder: str | os.PathLike) -> list[dict]:
    return read_jsonl(Path(folder) / METRICS_FILE)
