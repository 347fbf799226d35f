"""Traces' dead ends in words (core.app.trace_filters): which filter to loosen when nothing matches, and
why an open sample lies outside the filters. The counts are checked against a plain loop over the rows."""
from __future__ import annotations

import numpy as np
import pandas as pd

from core.app.trace_filters import Filters, loosen_advice, outside_note

L = 4


def _table(n: int = 60, seed: int = 3) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    exit_layer = rng.integers(1, L + 1, n)
    right = rng.random(n) < 0.7
    over = (rng.random(n) < 0.2) & (exit_layer >= 2)
    words = np.array(["good film", "dull plot", "fine acting", "bad"])
    return pd.DataFrame({"row": np.arange(100, 100 + n), "text": words[rng.integers(0, 4, n)],
                         "exit layer": exit_layer, "right": right, "overthinking": over})


def _count(table, *, outcome="all", layers=None, over=False, query=""):
    n = 0
    for _, r in table.iterrows():
        ok = (outcome == "all" or (outcome == "right") == bool(r["right"]))
        ok &= layers is None or layers[0] <= r["exit layer"] <= layers[1]
        ok &= (not over) or bool(r["overthinking"])
        ok &= (not query) or query.lower() in r["text"].lower()
        n += ok
    return n


def test_an_empty_selection_names_each_filter_and_what_dropping_it_gives():
    table = _table()
    f = Filters(layers=(1, 1), overthinking=True)  # overthinking samples exit at layer 2 or later here
    assert f.apply(table).empty
    text = loosen_advice(table, f, L)
    without_layers = _count(table, over=True)
    without_over = _count(table, layers=(1, 1))
    assert f"without exit layers 1-1, {without_layers} match" in text
    assert f"without Overthinking, {without_over} match" in text
    first = "exit layers 1-1" if without_layers >= without_over else "Overthinking"
    assert text.endswith(f"Loosen {first} first.")


def test_one_filter_alone_says_how_many_match_without_it():
    table = _table()
    text = loosen_advice(table, Filters(query="zzz"), L)
    assert text == f"No sample matches the search 'zzz'; without it {len(table)} of {len(table)} match. Loosen it."


def test_the_full_layer_range_is_no_filter():
    assert Filters(layers=(1, L)).active(L) == {}
    assert list(Filters(outcome="wrong", layers=(2, 3)).active(L).values()) == ["outcome", "layers"]


def test_a_sample_outside_the_filters_says_why_and_a_matching_one_says_nothing():
    table = _table()
    f = Filters(outcome="right", layers=(2, 2))
    inside = f.apply(table).index[0]
    assert outside_note(table, inside, f, L, n_match=1) is None
    wrong_early = table.index[(~table["right"]) & (table["exit layer"] == 1)][0]
    note = outside_note(table, wrong_early, f, L, n_match=len(f.apply(table)))
    row = int(table.at[wrong_early, "row"])
    assert note.startswith(f"Dev row {row} does not match the filters (it is wrong at the exit; it exits at "
                           "layer 1, outside layers 2-2)")
    assert "pick a row of the table" in note
    assert "loosen the filters" in outside_note(table, wrong_early, f, L, n_match=0)
