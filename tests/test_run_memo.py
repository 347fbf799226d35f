"""RunData.memo under many sessions: one loaded run serves every session (st.cache_resource), each
session's script in its own thread, so memo must make a value once and never lose one to another
thread's eviction."""
import time

import numpy as np

from core.app import rundata
from core.engine.cache import ExitCache
from tests.helpers import THREADS, at_once, random_cache


def _run() -> rundata.RunData:
    probs, labels, _ = random_cache(0, n=60, num_layers=4, k=2)
    cache = ExitCache(probs=probs, labels=labels, label_names=["neg", "pos"], texts=["t"] * 60,
                      meta={"task": "toy", "metric": "accuracy"})
    return rundata.RunData(name="toy", path=None, cache=cache)


def test_one_key_asked_by_many_sessions_at_once_is_made_once():
    run = _run()
    made = []

    def make():
        made.append(1)
        time.sleep(0.05)          # a slow derivation (a sweep, a bootstrap): the others arrive meanwhile
        return np.arange(3)

    got = at_once(lambda i: run.memo(("slow", "same"), make))
    assert len(made) == 1
    assert all(g is got[0] for g in got)


def test_eviction_by_other_sessions_never_loses_a_value_being_returned():
    run = _run()

    def work(i):
        values = []
        for j in range(20):   # more keys of one kind than the limit: every session keeps evicting
            key = ("knob", i, j)
            values.append(run.memo(key, lambda i=i, j=j: (time.sleep(0.001), (i, j))[1], limit=4))
        return values

    got = at_once(work)
    assert got == [[(i, j) for j in range(20)] for i in range(THREADS)]
    assert len(run._memo) <= 4
