"""The learning-rate grid as a Markdown table: validation S-avg (the task metric averaged over exits)
per learning rate and epoch, from the run folders `scripts/lr_grid.sh` writes.

    python scripts/lr_grid_table.py [grid-root] > docs/TUNING.md      (default runs-scratch/lr-grid)

Every score carries its binomial standard error sqrt(s (1 - s) / n_val), a rough guide for a mean of
accuracies over exits measured on the same rows. The winner is read from the validation split only;
the dev column is the kept weights' dev S-avg, shown for the record and not used to choose.
"""
from __future__ import annotations

import math
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from core.runs.folders import read_config, read_status  # noqa: E402
from core.runs.io import read_jsonl  # noqa: E402

PLANNED_LRS = (3e-5, 5e-5, 1e-4)  # scripts/lr_grid.sh's grid: rows for those not started yet


def load_grid(root: Path) -> list[dict]:
    """One dict per run folder under `root` that has a config.json: lr, state, val curve, kept epoch."""
    rows = []
    for folder in sorted(p for p in root.iterdir() if (p / "config.json").is_file()):
        cfg, status = read_config(folder), read_status(folder) or {}
        recs = read_jsonl(folder / "metrics.jsonl")
        val = {int(r["epoch"]): float(r["s_avg"]) for r in recs if r.get("kind") == "val"}
        dev = [r for r in recs if r.get("kind") == "eval"]
        derived = cfg.get("derived", {})
        setting = (f"{derived.get('task', cfg.get('task'))}, `{cfg.get('backbone')}` "
                   f"({derived.get('num_layers', '?')} exits), {cfg.get('method')} training, batch "
                   f"{cfg.get('batch_size')}, head lr {cfg.get('head_lr'):g}")
        rows.append(dict(run=folder.name, lr=float(cfg["lr"]), epochs=int(cfg["epochs"]), setting=setting,
                         patience=int(cfg.get("patience") or 0), n_val=cfg.get("derived", {}).get("n_val"),
                         n_train=cfg.get("derived", {}).get("n_train"), metric=cfg.get("derived", {}).get("metric"),
                         state=status.get("state", "?"), step=status.get("step"),
                         total=status.get("total_steps"), kept=status.get("kept_epoch"), val=val,
                         dev=float(dev[-1]["s_avg"]) if dev and status.get("state") == "done" else None,
                         seconds=status.get("seconds")))
    return sorted(rows, key=lambda r: r["lr"])


def _cell(score: float | None, n: int | None) -> str:
    if score is None:
        return "–"
    se = math.sqrt(score * (1 - score) / n) if n else float("nan")
    return f"{score:.4f} ± {se:.4f}"


def table(rows: list[dict]) -> str:
    """The Markdown document: grid table, winner sentence, how it was made."""
    if not rows:
        return "# Tuning\n\nNo grid runs found.\n"
    max_ep = max(r["epochs"] for r in rows)
    metric = rows[0]["metric"] or "score"
    head = ["lr", *[f"epoch {e}" for e in range(1, max_ep + 1)], "kept epoch", "state",
            "dev S-avg of kept weights (not used to choose)", "minutes"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in rows:
        cells = [_cell(r["val"].get(e), r["n_val"]) for e in range(1, max_ep + 1)]
        state = r["state"] if r["state"] != "running" else f"running (step {r['step']} of {r['total']})"
        minutes = f"{r['seconds'] / 60:.0f}" if r["seconds"] else "–"
        lines.append("| " + " | ".join([f"{r['lr']:g}", *cells, str(r["kept"] or "–"), state,
                                          f"{r['dev']:.4f}" if r["dev"] is not None else "–", minutes]) + " |")
    missing = [lr for lr in PLANNED_LRS if all(abs(r["lr"] - lr) > 1e-12 for r in rows)]
    for lr in missing:
        lines.append("| " + " | ".join([f"{lr:g}", *["–"] * max_ep, "–", "not started", "–", "–"]) + " |")
    done = [r for r in rows if r["state"] == "done" and r["val"]]
    best = max(done, key=lambda r: max(r["val"].values()), default=None)
    if best is None:
        verdict = "No run has finished yet: no winner."
    else:
        score = max(best["val"].values())
        se = math.sqrt(score * (1 - score) / best["n_val"])
        close = [f"{r['lr']:g}" for r in done if r is not best and max(r["val"].values()) >= score - 2 * se]
        verdict = (f"Best validation S-avg: lr {best['lr']:g} at epoch {best['kept']} ({score:.4f} ± {se:.4f}). "
                   + (f"Within two standard errors of it: lr {', '.join(close)}. " if close else "")
                   + ("The grid is complete." if len(done) == len(rows) and not missing else
                      f"Only {len(done)} of {len(rows) + len(missing)} runs have finished: the winner is "
                      "provisional."))
    r0 = rows[0]
    return "\n".join([
        "# Tuning: learning rate and epochs for the default backbone",
        "",
        f"{r0['setting']}. Scores are the validation "
        f"{metric} averaged over the exits (S-avg) on a stratified split of the training rows "
        f"({r0['n_val']} rows; {r0['n_train']} left to train on), after each epoch; the dev set and the "
        "held-out test split play no part in the choice. ± is the binomial standard error.",
        "",
        *lines,
        "",
        verdict,
        "",
        "Made by `bash scripts/lr_grid.sh` (one thread, sequential; rerunning it resumes at the first "
        "unfinished learning rate) and `python scripts/lr_grid_table.py > docs/TUNING.md`.",
        "",
    ])


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    root = Path(argv[0]) if argv else REPO / "runs-scratch" / "lr-grid"
    if not root.is_dir():
        print(f"lr_grid_table: no grid folder {root}; run bash scripts/lr_grid.sh first", file=sys.stderr)
        return 2
    sys.stdout.write(table(load_grid(root)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
