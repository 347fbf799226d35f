"""Torch-free. GLUE tasks read from a folder of GLUE files (train.tsv / dev.tsv).
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from core.data.rotten_tomatoes import DEFAULT_TASK
from core.data.tables import _check_file, _read_table, _standard_columns
from core.runs.folders import REPO_ROOT

SHARED_GLUE_DIR = REPO_ROOT.parent / "shared" / "data" / "glue"


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


def _builtin_name(task: str) -> str | None:
    """'rotten_tomatoes', a GLUE key ('SST-2' -> 'sst2'), or None."""
    low = task.strip().lower()
    if low.replace("-", "_") == DEFAULT_TASK:
        return DEFAULT_TASK
    key = low.replace("-", "").replace("_", "")
    return key if key in GLUE_TASKS else None


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
    return _standard_columns(table, str(path), text=spec.text, pair=spec.pair, label=spec.label, path=path)


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
