"""Torch-free. Reading a table file (the one reader of train, dev and predict files) and finding its text, pair and label columns.
"""
from __future__ import annotations

import csv
import functools
import json
import numbers
import os
from pathlib import Path

import numpy as np
import pandas as pd

USER_FILE_TYPES = (".csv", ".tsv", ".tab", ".jsonl", ".ndjson", ".json", ".parquet", ".pq")

# the one column-guessing rule (core.data.tasks for files and datasets, the Train form's pickers); names match
# case-insensitively, pairs before single texts
_PAIR_GUESSES = (("sentence1", "sentence2"), ("premise", "hypothesis"), ("question1", "question2"),
                 ("question", "sentence"), ("text", "text_pair"), ("#1 String", "#2 String"),
                 ("text_a", "text_b"), ("text1", "text2"))
_TEXT_GUESSES = ("text", "sentence", "review", "content", "document", "tweet")
_LABEL_GUESSES = ("label", "labels", "gold_label", "Quality", "is_duplicate", "sentiment", "class")
_DEV_SPLITS = ("validation", "validation_matched", "dev", "valid", "val", "test")


def _file_format(path: Path) -> str | None:
    """'csv', 'tsv', 'jsonl', 'json' or 'parquet' by suffix; None if unsupported."""
    suffix = path.suffix.lower()
    return {".csv": "csv", ".tsv": "tsv", ".tab": "tsv", ".jsonl": "jsonl", ".ndjson": "jsonl",
            ".json": "json", ".parquet": "parquet", ".pq": "parquet"}.get(suffix)


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


class _TableFault(ValueError):
    """A fault in a file's rows whose message already says where (reported as it is)."""


@functools.lru_cache(maxsize=8)
def _read_table_cached(path: str, mtime_ns: int, size: int, fmt: str, header: bool,
                       usecols: tuple[int, ...] | None, ncols: int | None) -> pd.DataFrame:
    """Parse once per file version; callers must not modify the frame in place."""
    try:
        if ncols is not None:
            _check_field_counts(path, ncols)
        return _parse_file(path, fmt, header, usecols)
    except _TableFault as e:
        raise ValueError(f"{path}: {e}") from None
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


def _refuse_long_rows(path: str, fmt: str) -> None:
    """_TableFault naming the first line of a CSV/TSV file with more fields than its header (pandas
    would read the extra leading fields of such rows as an index, cutting the text short)."""
    kw = {"delimiter": "\t", "quoting": csv.QUOTE_NONE} if fmt == "tsv" else {}
    with open(path, encoding="utf-8-sig", newline="") as f:
        reader = csv.reader(f, **kw)
        try:
            head = next(row for row in reader if row)
            start = reader.line_num + 1
            for row in reader:
                if len(row) > len(head):
                    break
                start = reader.line_num + 1
            else:
                return
        except (csv.Error, StopIteration):  # a field over csv's size limit: pandas' own message
            return
    sep = "tab" if fmt == "tsv" else "comma"
    fix = ("a text must not hold a tab" if fmt == "tsv" else
           'put a text that holds commas in double quotes, e.g. "terrible, film",negative')
    raise _TableFault(f"line {start} has {len(row)} {sep}-separated fields but the header has {len(head)} "
                      f"({', '.join(head[:6])}{', ...' if len(head) > 6 else ''}); {fix}")


def _parse_file(path: str, fmt: str, header: bool, usecols) -> pd.DataFrame:
    """pandas read of one file; TSV with QUOTE_NONE, CSV keeping 'NA'-like texts."""
    if fmt in ("csv", "tsv"):
        extra = dict(sep="\t", quoting=csv.QUOTE_NONE) if fmt == "tsv" else {}
        if header:  # user files: let pandas infer dtypes, but keep "NA"/"null" texts as text
            try:
                table = pd.read_csv(path, encoding="utf-8-sig", keep_default_na=False, **extra)
            except pd.errors.ParserError:
                _refuse_long_rows(path, fmt)
                raise
            if not isinstance(table.index, pd.RangeIndex):
                # pandas read the first data row's extra leading fields as an index: a text cut short
                _refuse_long_rows(path, fmt)
            return table
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
                      label: str | None, path: Path | None = None) -> pd.DataFrame:
    """text, [text_pair], [label (raw)], row_id (= position in `table`).

    `path` is the file the table was read from. CSV/TSV cells are text by nature (a number cell keeps
    its digits); from any other source (JSON, JSONL, parquet, a dataset) a text must be a string, not
    a number, list or object. Rows of a JSON-lines file are named by their line in it."""
    available = [str(c) for c in table.columns]
    fmt = None if path is None else _file_format(Path(path))
    place = functools.partial(_lines_text, Path(path)) if fmt == "jsonl" else _rows_text
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
            values = _text_values(values, where, col, typed=fmt not in ("csv", "tsv"), place=place)
        out[dest] = values.to_numpy()
    out["row_id"] = np.arange(len(table), dtype=np.int64)
    return pd.DataFrame(out)


def _text_values(values: pd.Series, where: str, col: str, *, typed: bool = True,
                 place=None) -> pd.Series:
    """A text column as strings; missing values raise naming the rows, and so do values of a typed
    source that are not strings (`place(rows)` words where rows are, `_rows_text` by default)."""
    place = place or _rows_text
    missing = np.flatnonzero(values.isna().to_numpy())
    if len(missing):
        raise ValueError(f"{where}: missing text in column {col!r} at {place(missing)}")
    if typed and pd.api.types.infer_dtype(values, skipna=False) not in ("string", "empty"):
        bad = np.flatnonzero([not isinstance(v, str) for v in values.tolist()])
        first = values.iloc[bad[0]]
        kind = ("a list" if isinstance(first, (list, tuple, np.ndarray)) else "an object" if isinstance(first, dict)
                else "true/false" if isinstance(first, (bool, np.bool_)) else "a number"
                if isinstance(first, numbers.Number) else f"a {type(first).__name__}")
        try:
            shown = json.dumps(first.tolist() if isinstance(first, np.ndarray) else first, ensure_ascii=False)
        except (TypeError, ValueError):
            shown = repr(first)
        shown = shown if len(shown) <= 40 else shown[:40] + "..."
        more = f" ({len(bad)} rows have such texts)" if len(bad) > 1 else ""
        raise ValueError(f"{where}: the text in column {col!r} at {place(bad[:1])} is {kind} ({shown}), "
                         f"not a string{more}; write each text as a string, e.g. \"a fine film\"")
    return values.astype(str)


def _lines_text(path: Path, rows) -> str:
    """'line 4' (lines 4, 9, ...) of a JSON-lines file's data rows (blank lines are skipped in reading)."""
    with open(path, "rb") as f:
        lines = [number for number, line in enumerate(f, 1) if line.strip()]
    shown = [str(lines[int(r)]) if int(r) < len(lines) else "?" for r in rows]
    listed = ", ".join(shown[:5]) + (f" and {len(shown) - 5} more" if len(shown) > 5 else "")
    return f"line{'s' if len(shown) > 1 else ''} {listed}"


def _rows_text(rows) -> str:
    """'data rows 3, 8 (counting from 1, header excluded)' with at most five listed."""
    rows = [int(r) + 1 for r in rows]
    shown = ", ".join(map(str, rows[:5])) + (f" and {len(rows) - 5} more" if len(rows) > 5 else "")
    return f"data row{'s' if len(rows) > 1 else ''} {shown} (counting from 1, header excluded)"
