"""Torch-free. Hugging Face datasets as a task: a hub name (online users) or a dataset saved to disk.
"""
from __future__ import annotations

import difflib
from pathlib import Path

import pandas as pd

from core.data.glue import BUILTIN_TASKS
from core.data.tables import _DEV_SPLITS, _resolve_columns, _standard_columns

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
