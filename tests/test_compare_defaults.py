"""Compare opens with a method's seeds together and says 'one seed' where there is one (issue 23 item 10)."""
from types import SimpleNamespace

import pandas as pd

from core.app.rundata import compare_defaults
from core.app.trust_views import seed_table_text


def _infos(names, task="rt"):
    return [SimpleNamespace(name=n, config={"task": task}) for n in names]


def test_the_sidebar_run_comes_with_its_seeds_and_seeded_methods_come_whole():
    names = ["a", "b", "c", "d", "a-seed1", "a-seed2", "c-seed1", "c-seed2", "d-seed1"]
    infos = _infos(names) + _infos(["other"], task="sst2")
    picked = compare_defaults(infos, "a", limit=6)
    assert picked[:3] == ["a", "a-seed1", "a-seed2"]
    assert picked[3:] == ["c", "c-seed1", "c-seed2"]   # d's group (2) would not fit after c's: left out whole
    assert compare_defaults(infos, "a-seed2", limit=3) == ["a-seed2", "a", "a-seed1"]
    assert "other" not in compare_defaults(infos, "a", limit=20)
    assert set(compare_defaults(infos, "a", limit=20)) == set(names)


def test_a_group_of_one_says_one_seed():
    seeds = pd.DataFrame({"group": ["a", "b"], "seeds": [3, 1], "last exit s.d.": [0.01234, float("nan")],
                          "S-best s.d.": [0.002, float("nan")]})
    shown = seed_table_text(seeds)
    assert list(shown["last exit s.d."]) == ["0.0123", "one seed"]
    assert list(shown["S-best s.d."]) == ["0.0020", "one seed"]
