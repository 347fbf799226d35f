"""Torch-free. User files (CSV, TSV, JSON Lines, JSON, Parquet) as a task.
"""
from __future__ import annotations

from pathlib import Path

import pandas as pd

from core.data.glue import GLUE_TASKS, _builtin_name
from core.data.rotten_tomatoes import DEFAULT_TASK
from core.data.tables import USER_FILE_TYPES, _file_format, _read_table, _resolve_columns, _standard_columns

# ------------------------------------------------------------------------------------ user files

def _user_files_parts(task, train_file, dev_file, *, text_column, text_pair_column,
                      label_column) -> dict:
    """Raw rows of the user's train (and dev) file, columns chosen or guessed."""
    train_path = _user_path(train_file, "train_file")
    dev_path = _user_path(dev_file, "dev_file") if dev_file is not None else None
    train_table = _read_user_file(train_path)
    cols = _resolve_columns(train_table, str(train_path), text_column, text_pair_column,
                            label_column)
    train = _standard_columns(train_table, str(train_path), **cols, path=train_path)
    dev = None
    if dev_path is not None:
        dev = _standard_columns(_read_user_file(dev_path), str(dev_path), **cols, path=dev_path)
    name = _user_task_name(task, train_path)
    glue = _builtin_name(name)
    origin = {"kind": "files", "task": name, "text_column": cols["text"],
              "text_pair_column": cols["pair"], "label_column": cols["label"]}
    split_origin = {"train": {"file": str(train_path), "n_rows": len(train)}}
    split_origin["dev"] = ({"file": str(dev_path), "n_rows": len(dev)} if dev is not None
                           else dict(split_origin["train"]))
    return dict(name=name, metric=GLUE_TASKS[glue].metric if glue in GLUE_TASKS else "accuracy",
                label_names=None, train_raw=train, dev_raw=dev,
                where=(str(train_path), str(dev_path or train_path)), origin=origin,
                split_origin=split_origin)


def _user_task_name(task, train_path: Path) -> str:
    """The task's name: `task` unless it is missing or the default, else from the file name."""
    if task and str(task) != DEFAULT_TASK:
        return str(task)
    stem = train_path.name.split(".")[0]
    return train_path.resolve().parent.name if stem.lower() in ("train", "training") else stem


def _user_path(value, what: str) -> Path:
    """The resolved path of an existing file of a supported type."""
    path = Path(value).expanduser()
    if not path.exists():
        raise ValueError(f"{what}: file not found: {path}")
    if not path.is_file():
        raise ValueError(f"{what}: {path} is not a file")
    if _file_format(path) is None:
        raise ValueError(f"{path}: unsupported file type {path.suffix!r}; use one of "
                         f"{', '.join(USER_FILE_TYPES)}")
    return path.resolve()


def _read_user_file(path: Path) -> pd.DataFrame:
    """A user file as a DataFrame (all columns), checked to be non-empty."""
    fmt = _file_format(path)
    if fmt is None:
        raise ValueError(f"{path}: unsupported file type {path.suffix!r}")
    table = _read_table(path, fmt, header=True)
    if table.empty:
        raise ValueError(f"{path}: has no data rows")
    return table


def _files_restore(source: dict) -> tuple[pd.DataFrame, str]:
    """The user file a source names, as text / text_pair columns."""
    path = Path(str(source.get("file", "")))
    if not path.is_file():
        raise ValueError(f"the texts are no longer available: file not found: {path}")
    table = _read_user_file(path)
    cols = dict(text=source.get("text_column"), pair=source.get("text_pair_column"), label=None)
    return _standard_columns(table, str(path), **cols, path=path), str(path)
