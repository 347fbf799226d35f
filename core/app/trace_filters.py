"""Traces' filters in words: what to loosen when no sample matches, and why an open sample lies outside
the filters. Torch-free, no streamlit; reads the table of rundata.trace_table."""
from __future__ import annotations

from dataclasses import dataclass, replace

import pandas as pd

from core.app.rundata import filter_traces


@dataclass(frozen=True)
class Filters:
    """The filters of the Traces page, as its widgets hold them."""
    outcome: str = "all"
    layers: tuple[int, int] | None = None
    overthinking: bool = False
    query: str = ""

    def apply(self, table: pd.DataFrame) -> pd.DataFrame:
        return filter_traces(table, outcome=self.outcome, layers=self.layers, overthinking=self.overthinking,
                             query=self.query)

    def active(self, L: int) -> dict[str, str]:
        """Each filter that narrows the table, in words -> its field name."""
        out = {}
        if self.outcome != "all":
            out[f"'{self.outcome} at the exit'"] = "outcome"
        if self.layers is not None and tuple(self.layers) != (1, L):
            out["exit layers {}-{}".format(*self.layers)] = "layers"
        if self.overthinking:
            out["Overthinking"] = "overthinking"
        if (self.query or "").strip():
            out[f"the search '{self.query.strip()}'"] = "query"
        return out

    def without(self, field: str) -> Filters:
        return replace(self, **{field: getattr(Filters(), field)})


def loosen_advice(table: pd.DataFrame, filters: Filters, L: int) -> str:
    """One paragraph for an empty selection: how many samples match once each active filter is dropped,
    so the reader knows which one to loosen."""
    active = filters.active(L)
    if not active:
        return "The run has no samples to show."
    matched = {name: len(filters.without(field).apply(table)) for name, field in active.items()}
    best = max(matched, key=matched.get)
    if len(active) == 1:
        return f"No sample matches {best}; without it {matched[best]} of {len(table)} match. Loosen it."
    parts = [f"without {name}, {n} match" for name, n in matched.items()]
    return (f"No sample matches these {len(active)} filters together: " + "; ".join(parts)
            + f". Loosen {best} first.")


def outside_note(table: pd.DataFrame, pos: int, filters: Filters, L: int, *, n_match: int) -> str | None:
    """Why sample `pos` (a table index) does not match the filters, in words; None when it matches.
    `n_match`: how many samples do match (the note then points to the table, or to the filters)."""
    row = table.loc[pos]
    misses = []
    if filters.outcome == "right" and not row["right"]:
        misses.append("it is wrong at the exit")
    if filters.outcome == "wrong" and row["right"]:
        misses.append("it is right at the exit")
    if filters.layers is not None and tuple(filters.layers) != (1, L):
        lo, hi = filters.layers
        if not lo <= int(row["exit layer"]) <= hi:
            misses.append(f"it exits at layer {int(row['exit layer'])}, outside layers {lo}-{hi}")
    if filters.overthinking and not row["overthinking"]:
        misses.append("it does not overthink")
    if (filters.query or "").strip() and pos not in filters.apply(table.loc[[pos]]).index:
        misses.append(f"the search '{filters.query.strip()}' does not find it")
    if not misses:
        return None
    then = ("pick a row of the table to open a matching one" if n_match else
            "loosen the filters to see samples that match")
    return (f"Dev row {int(row['row'])} does not match the filters ({'; '.join(misses)}). It is shown because "
            f"it was opened by its row number; {then}.")
