"""Torch-free. Label values to class ids and names: integers, names, or mixed kinds refused.
"""
from __future__ import annotations

import numbers
from typing import Any

import numpy as np
import pandas as pd

from core.data.tables import _rows_text

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
