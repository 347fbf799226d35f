"""Torch-free. Splits and subsets: the seeded dev draw, the default task's held-out test rows, validation parts, blank texts.
"""
from __future__ import annotations

import numpy as np
import pandas as pd

from core.data.tables import _rows_text

DEV_FRACTION = 0.1
SPLIT_SEED = 0
SPLIT_VERSION = 2  # 1: train = every non-dev row; 2: the default task also holds out its test split
SPLIT_VERSIONS = (1, 2)
TEST_ROWS = 850    # size of the default task's held-out test split (split version 2)
TEST_SEED = 1      # its own seed, so the test rows do not mirror the dev draw


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
