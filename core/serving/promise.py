"""Promise kept? Apply the default run's "lose at most 1 point" operating point to text it never saw.

    python -m core.promise [--run checkpoints/rotten_tomatoes-joint] [--max-drop 0.01] [--batch-size 32]

The default run trains on `max_train` rows drawn (with its seed) from the Rotten Tomatoes rows outside
its dev set (core.data.tasks); the rest of those rows are text the model never saw (runs made with the
held-out test split, split version 2, are checked on that split instead). This command
1. picks the fastest exact setting over every rule within `max_drop` of the full model (core.engine.metrics.pick),
2. exports it as `<run>/promise-point.json` (core.export, v1),
3. runs `python -m core.predict --compare-full` on the unseen rows (with their labels), and
4. writes `<run>/promise.json`: the point, the command, and promised against measured numbers.
`python -m core.report` renders promise.json as a table in docs/RESULTS.md.
"""
from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

from core.runs.folders import CONFIG_FILE, DEFAULT_ROOT
from core.runs.io import atomic_write_json, read_json

POINT_FILE = "promise-point.json"
PROMISE_FILE = "promise.json"
DEFAULT_RUN = DEFAULT_ROOT / "rotten_tomatoes-joint"


def pick_within(cache, max_drop: float = 0.01) -> dict:
    """The goal picker's answer (core.engine.metrics.pick) for "lose at most `max_drop`": the fastest exact
    setting over every deployable rule within `max_drop` of the full model, with its bootstrap interval."""
    from core.engine import metrics

    op = metrics.pick(cache, max_drop=max_drop)
    return {"strategy": op.strategy, "params": dict(op.params), "score": float(op.score),
            "full_score": float(op.full_score), "layer_speedup": float(op.layer_speedup),
            "max_drop": float(max_drop), "score_interval": op.score_interval}


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


def run_promise(run_dir: Path, *, max_drop: float = 0.01, batch_size: int = 32) -> dict:
    import pandas as pd

    from core.engine.cache import ExitCache
    from core.serving import predict
    from core.serving.export import write_point

    run_dir = Path(run_dir)
    cache = ExitCache.load(run_dir)
    choice = pick_within(cache, max_drop)
    point_path = run_dir / POINT_FILE
    iv = choice["score_interval"]
    write_point(run_dir, choice["strategy"], choice["params"], point_path,
                intervals=None if iv is None else {"score": iv})
    texts, labels = unseen_rows(run_dir)
    with tempfile.TemporaryDirectory() as tmp:
        csv = Path(tmp) / "unseen.csv"
        pd.DataFrame({"text": texts, "label": [cache.label_names[i] for i in labels]}).to_csv(csv, index=False)
        argv = ["--point", str(point_path), "--input", str(csv), "--output", str(Path(tmp) / "pred.jsonl"),
                "--batch-size", str(batch_size), "--compare-full", "--summary-json", str(Path(tmp) / "s.json")]
        rc = predict.main(argv)
        if rc != 0:
            raise RuntimeError(f"core.predict failed with exit status {rc}")
        summary = read_json(Path(tmp) / "s.json")
    import torch

    record = {"point_file": POINT_FILE, "choice": choice, "summary": summary,
              "unseen_rows": len(texts), "torch_threads": torch.get_num_threads(),
              "command": f"python -m core.promise --run {_shown(run_dir)} --max-drop {max_drop} "
                         f"--batch-size {batch_size}"}
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
    args = ap.parse_args(argv)
    try:
        rec = run_promise(Path(args.run), max_drop=args.max_drop, batch_size=args.batch_size)
    except ValueError as e:
        print(f"core.promise: error: {e}", file=sys.stderr)
        return 2
    print(f"core.promise: wrote {Path(args.run) / PROMISE_FILE} ({rec['unseen_rows']} unseen rows)", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
