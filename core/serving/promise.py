"""Promise kept? Apply the default run's "lose at most 1 point" operating point to text it never saw.

    python -m core.promise [--run checkpoints/rotten_tomatoes-joint] [--max-drop 0.01] [--batch-size 32]

The default run trains on `max_train` rows drawn (with its seed) from the Rotten Tomatoes rows outside
its dev set (core.data.tasks); the rest of those rows are text the model never saw (runs made with the
held-out test split, split version 2, are checked on that split instead). This command
1. picks the fastest exact setting over every precision the run has caches for (cache.npz, cache-int8.npz)
   and every rule within `max_drop` of the fp32 full model, fastest in wall clock over fp32 full at
   `--batch-size` from the caches' latency tables (core.engine.frontier.pick_precision; a run with only
   its fp32 cache and no latency table: core.engine.metrics.pick by layer speed-up),
2. exports it as `<run>/promise-point.json` (core.export, v2: its precision and batch size),
3. runs `python -m core.predict --compare-full` on the unseen rows (with their labels) at that precision,
   the fp32 full model beside it, and
4. writes `<run>/promise.json`: the point, the command, and promised against measured numbers.
`python -m core.report` renders promise.json as a table in docs/RESULTS.md.
"""
from __future__ import annotations

import argparse
import os
import sys
import tempfile
from pathlib import Path

from core.runs.folders import CONFIG_FILE, DEFAULT_ROOT
from core.runs.io import atomic_write_json, read_json

POINT_FILE = "promise-point.json"
PROMISE_FILE = "promise.json"
DEFAULT_RUN = DEFAULT_ROOT / "rotten_tomatoes-joint"


def pick_within(caches, max_drop: float = 0.01, batch_size: int | None = 32) -> dict:
    """The goal picker's answer for "lose at most `max_drop`" over precision x rule x setting
    (core.engine.frontier.pick_precision): the fastest exact setting within `max_drop` of fp32 full, in
    wall clock at `batch_size` where every cache has a latency table there, else (fp32 only) by layer
    speed-up; with its bootstrap interval. `caches`: {precision: ExitCache}, or one fp32 ExitCache."""
    from core.engine import frontier

    if not isinstance(caches, dict):
        caches = {"fp32": caches}
    if batch_size is not None and not all(frontier.has_batch(c, batch_size) for c in caches.values()):
        caches, batch_size = {"fp32": caches["fp32"]}, None
    op = frontier.pick_precision(caches, max_drop=max_drop, batch_size=batch_size)
    return {"strategy": op.strategy, "params": dict(op.params), "score": float(op.score),
            "full_score": float(op.full_score), "layer_speedup": float(op.layer_speedup),
            "max_drop": float(max_drop), "score_interval": op.score_interval, "precision": op.precision,
            "batch_size": op.batch_size, "wallclock_speedup": op.batch_wallclock_speedup,
            "precisions_searched": sorted(caches)}


def unseen_rows(run_dir: Path):
    """(texts, labels) of default-task rows the run never trained on, in row order: for a run made with
    split version 2 or later, the held-out test split; for an older run, every non-dev row outside the
    `max_train` rows it drew (split version 1 kept every non-dev row in train)."""
    from core.data.rotten_tomatoes import DEFAULT_TASK
    from core.data.tasks import load_task, load_test_split

    cfg = read_json(run_dir / CONFIG_FILE)
    if cfg.get("task") != DEFAULT_TASK or cfg.get("train_file"):
        raise ValueError(f"{run_dir}: the promise check needs a run of the built-in task {DEFAULT_TASK!r}")
    version = int(cfg.get("split_version", 1))
    if version >= 2:
        test = load_test_split(DEFAULT_TASK)
        return test["text"].tolist(), test["label"].to_numpy()
    everything = load_task(DEFAULT_TASK, split_version=1)                  # all non-dev rows
    used = load_task(DEFAULT_TASK, max_train=cfg.get("max_train"), seed=cfg.get("seed", 0), split_version=1)
    if set(used.dev["row_id"]) != set(everything.dev["row_id"]):
        raise ValueError(f"{run_dir}: dev rows differ from the task's; cannot tell which rows are unseen")
    rest = everything.train[~everything.train["row_id"].isin(used.train["row_id"])]
    return rest["text"].tolist(), rest["label"].to_numpy()


def run_promise(run_dir: Path, *, max_drop: float = 0.01, batch_size: int = 32, threads: int | None = 1) -> dict:
    """Steps 1-4 of the module docstring. `threads`: torch's CPU threads while core.predict runs (default 1,
    the thread count the caches' latency tables are measured at; None: torch's default)."""
    import pandas as pd

    from core.engine.frontier import load_precisions
    from core.serving import predict
    from core.serving.export import write_point

    run_dir = Path(run_dir)
    caches = load_precisions(run_dir)
    cache = caches["fp32"]
    choice = pick_within(caches, max_drop, batch_size)
    point_path = run_dir / POINT_FILE
    iv = choice["score_interval"]
    write_point(run_dir, choice["strategy"], choice["params"], point_path,
                intervals=None if iv is None else {"score": iv}, precision=choice["precision"],
                batch_size=batch_size)
    texts, labels = unseen_rows(run_dir)
    with tempfile.TemporaryDirectory() as tmp:
        csv = Path(tmp) / "unseen.csv"
        pd.DataFrame({"text": texts, "label": [cache.label_names[i] for i in labels]}).to_csv(csv, index=False)
        argv = ["--point", str(point_path), "--input", str(csv), "--output", str(Path(tmp) / "pred.jsonl"),
                "--batch-size", str(batch_size), "--compare-full", "--summary-json", str(Path(tmp) / "s.json")]
        import torch

        old = torch.get_num_threads()
        torch.set_num_threads(threads or old)
        try:
            rc = predict.main(argv)
        finally:
            torch.set_num_threads(old)
        if rc != 0:
            raise RuntimeError(f"core.predict failed with exit status {rc}")
        summary = read_json(Path(tmp) / "s.json")
    record = {"point_file": POINT_FILE, "choice": choice, "summary": summary,
              "unseen_rows": len(texts), "torch_threads": threads or old,
              "load_average": list(os.getloadavg()),
              "command": f"python -m core.promise --run {_shown(run_dir)} --max-drop {max_drop} "
                         f"--batch-size {batch_size}" + (f" --threads {threads}" if threads else "")}
    atomic_write_json(run_dir / PROMISE_FILE, record)
    return record


def _shown(run_dir: Path) -> str:
    """The run folder relative to the repository when inside it."""
    try:
        return str(run_dir.resolve().relative_to(DEFAULT_ROOT.parent))
    except ValueError:
        return str(run_dir)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python -m core.promise", description=__doc__.split("\n\n")[0])
    ap.add_argument("--run", default=str(DEFAULT_RUN))
    ap.add_argument("--max-drop", type=float, default=0.01, help="largest dev-score loss allowed (0.01 = 1 point)")
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--threads", type=int, default=1, help="torch CPU threads for the measurement (default 1, "
                    "as the latency tables; 0: torch's default)")
    args = ap.parse_args(argv)
    try:
        rec = run_promise(Path(args.run), max_drop=args.max_drop, batch_size=args.batch_size,
                          threads=args.threads or None)
    except ValueError as e:
        print(f"core.promise: error: {e}", file=sys.stderr)
        return 2
    print(f"core.promise: wrote {Path(args.run) / PROMISE_FILE} ({rec['unseen_rows']} unseen rows)", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
