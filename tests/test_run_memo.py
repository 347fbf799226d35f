"""RunData.memo under many sessions: one loaded run serves every session (st.cache_resource), each
session's script in its own thread, so memo must make a value once and never lose one to another
thread's eviction."""
import threading
import time

import numpy as np

from core.app import rundata
from core.engine.cache import ExitCache
from tests.helpers import random_cache

THREADS = 12


def _run() -> rundata.RunData:
    probs, labels, _ = random_cache(0, n=60, num_layers=4, k=2)
    cache = ExitCache(probs=probs, labels=labels, label_names=["neg", "pos"], texts=["t"] * 60,
                      meta={"task": "toy", "metric": "accuracy"})
    return rundata.RunData(name="toy", path=None, cache=cache)


def _together(work):
    """Start THREADS threads running work(i) at the same moment; their results in order."""
    start = threading.Barrier(THREADS)
    out, errors = [None] * THREADS, []

    def body(i):
        start.wait()
        try:
            out[i] = work(i)
        except Exception as e:  # noqa: BLE001 - the test reports any failure of any thread
            errors.append(e)

    threads = [threading.Thread(target=body, args=(i,)) for i in range(THREADS)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert not errors, errors
    return out


def test_one_key_asked_by_many_sessions_at_once_is_made_once():
    run = _run()
    made = []

    def make():
        made.append(1)
        time.sleep(0.05)          # a slow derivation (a sweep, a bootstrap): the others arrive meanwhile
        return np.arange(3)

    got = _together(lambda i: run.memo(("slow", "same"), make))
    assert len(made) == 1
    assert all(g is got[0] for g in got)


def test_sweeps_are_computed_once_for_sessions_opening_together():
    run = _run()
    got = _together(lambda i: run.sweeps())
    assert all(g is got[0] for g in got)
    assert run.has_sweeps and len(got[0])


def test_eviction_by_other_sessions_never_loses_a_value_being_returned():
    run = _run()

    def work(i):
        values = []
        for j in range(20):   # more keys of one kind than the limit: every session keeps evicting
            key = ("knob", i, j)
            values.append(run.memo(key, lambda i=i, j=j: (time.sleep(0.001), (i, j))[1], limit=4))
        return values

    got = _together(work)
    assert got == [[(i, j) for j in range(20)] for i in range(THREADS)]
    assert len(run._memo) <= 4
