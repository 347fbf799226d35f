"""Server time of one Explore rerun after a control moves, on the largest bundled run.

    python bench/bench_explore_rerun.py [--run NAME] [--repeats 7]

Drives the real page with Streamlit's AppTest (the whole script: app.py, the sidebar, the Explore
page, every figure and table serialized), moving one control at a time, and prints a table of the
wall time per rerun. The first, cold run includes loading the cache and sweeping every strategy
(cached afterwards, keyed by run path and cache mtime). Goal: a slider move <= 300 ms.
With no bundled run in checkpoints/ it benchmarks a synthetic run of realistic size (and says so).
"""
from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from core.app import rundata
from core.runs.folders import DEFAULT_ROOT  # noqa: E402

GOAL_MS = 300.0


def largest_run(root: Path) -> rundata.RunInfo | None:
    best, size = None, -1
    for info in rundata.scan_runs(root):
        if not info.has_cache:
            continue
        try:
            run = rundata.load_run(info.path)
        except ValueError:
            continue
        n = run.cache.N * run.L * run.cache.K
        if n > size:
            best, size = info, n
    return best


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--run", help="run folder name under the checkpoint root (default: the largest)")
    ap.add_argument("--repeats", type=int, default=7)
    args = ap.parse_args()

    root = rundata.checkpoint_root() if os.environ.get(rundata.ROOT_ENV) else DEFAULT_ROOT
    info = next((i for i in rundata.scan_runs(root) if i.name == args.run), None) if args.run else largest_run(root)
    note = ""
    if info is None:
        from tests.conftest import write_synthetic_run

        tmp = Path(tempfile.mkdtemp(prefix="eel-bench-"))
        write_synthetic_run(tmp / "synthetic-large", n=2000, num_layers=12, k=3, seed=0, lte=True)
        root, info = tmp, rundata.scan_runs(tmp)[0]
        note = " (no bundled run found: synthetic stand-in)"
    os.environ[rundata.ROOT_ENV] = str(root)
    run = rundata.load_run(info.path)
    print(f"run {info.name}{note}: N={run.cache.N} L={run.L} K={run.cache.K} "
          f"learned confidences={'yes' if run.cache.confidence is not None else 'no'}")

    from streamlit.testing.v1 import AppTest

    at = AppTest.from_file(str(REPO / "app.py"), default_timeout=300)
    at.query_params["run"] = info.name
    t0 = time.perf_counter()
    at.run()
    at.switch_page("pages/explore.py")
    at.run()
    cold = (time.perf_counter() - t0) * 1000
    assert not at.exception, [e.value for e in at.exception]

    def moves(key, values):
        return [(key, values[i % len(values)]) for i in range(args.repeats)]

    L = run.L
    cases = {
        "entropy threshold": ("Entropy", moves("entropy.threshold", [0.05, 0.2, 0.4, 0.1])),
        "max-prob threshold": ("Max-prob", moves("maxprob.threshold", [0.8, 0.95, 0.99, 0.9])),
        "budget layer": ("Budget", moves("budget.layer", [1, L // 2, L, 2])),
        "PABEE patience": ("PABEE", moves("patience.patience", [1, 3, 2, 4])),
        "PCEE threshold": ("PCEE", moves("pcee.threshold", [0.1, 0.3, 0.5, 0.2])),
        "DGE threshold": ("DGE", moves("dge.threshold", [0.1, 0.3, 0.6, 0.2])),
        "voting delta": ("Voting", moves("voting.delta", [1.0, 2.0, 3.0, 1.5])),
        "target speed-up": ("Entropy", moves("target", [1.5, 2.0, 3.0, 2.5])),
    }
    if run.cache.confidence is not None:
        cases["LTE threshold"] = ("LTE", moves("lte.threshold", [0.3, 0.5, 0.7, 0.9]))

    def move(at, key, value):
        """Set a plain slider to `value`; a quantile knob (a select slider of stops) to the stop nearest it."""
        try:
            at.slider(key=key).set_value(value).run()
        except KeyError:
            knob = at.select_slider(key=key)
            stops = [float(o) for o in knob.options]
            knob.set_value(min(stops, key=lambda v: abs(v - value))).run()

    rows = []
    for name, (tab, steps) in cases.items():
        at = AppTest.from_file(str(REPO / "app.py"), default_timeout=300)
        at.query_params["run"] = info.name
        at.run()
        at.switch_page("pages/explore.py")
        at.query_params["strategy"] = tab
        at.run()
        times = []
        for key, value in steps:
            t = time.perf_counter()
            move(at, key, value)
            times.append((time.perf_counter() - t) * 1000)
            assert not at.exception, (name, [e.value for e in at.exception])
        rows.append((name, statistics.median(times), max(times)))

    w = max(len(r[0]) for r in rows)
    print(f"\ncold first open (load + sweeps + render): {cold:8.0f} ms")
    print(f"\n{'control moved':<{w}}  {'median ms':>9}  {'max ms':>7}  {'median / goal':>13}")
    print("-" * (w + 37))
    for name, med, worst in rows:
        print(f"{name:<{w}}  {med:9.1f}  {worst:7.1f}  {med / GOAL_MS:13.2f}")
    overall = statistics.median([r[1] for r in rows])
    print("-" * (w + 37))
    print(f"{'median over controls':<{w}}  {overall:9.1f}  {max(r[2] for r in rows):7.1f}  {overall / GOAL_MS:13.2f}"
          f"   (goal <= {GOAL_MS:.0f} ms: {'met' if max(r[1] for r in rows) <= GOAL_MS else 'NOT met'})")


if __name__ == "__main__":
    main()
