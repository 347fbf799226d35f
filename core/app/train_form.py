"""The Train page's logic without Streamlit: form fields derived from `core.training.config.OPTIONS`, the form's
values -> a validated argv for `python -m core.train`, uploads saved and checked like the CLI checks
files, and the frames and figures of the live panel (losses, per-exit dev scores, Ω).

    fields = visible_fields(values)                 # which options the form shows for this method
    argv = build_argv(values)                       # ValueError naming the bad value
    summary = check_task(values)                    # core.training.config.load_task, the call core.train makes
    python -m core.app.train_form <argv> --out checkpoints/<run>   # what the JobManager starts

One source of truth: every default, type and help text comes from `core.training.config.OPTIONS` (the papers'
defaults live there: LeeBERT Table 3, BADGE Table 5, Sun et al. λ = 0.2); the method-dependent
defaults (LeeBERT's optimizer, the joint weights) come from `core.training.config.resolve_config`.

Uploads. A job's run folder may not exist before the JobManager creates it, so the page saves an
upload under `<root>/.uploads/<run>/` (hidden from run lists), checks it there with `load_task`, and
gives core.train the file's final path `<root>/<run>/uploads/<file>`. Jobs are started as
`python -m core.app.train_form ...`: `main` below moves the staged files into the run folder and then runs
`core.train.main` with the argv unchanged, so config.json records a plain, reproducible
`python -m core.train ... --train-file checkpoints/<run>/uploads/train.csv` command.
"""
from __future__ import annotations

import csv
import math
import os
import shutil
import sys
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from core.data.tables import guess_columns  # noqa: F401  (the pickers' guess: core.data's one rule)
from core.runs.folders import check_run_name, read_metrics
from core.runs.io import atomic_write_bytes
from core.training import config

UPLOAD_LIMIT_MB = 50
UPLOAD_TYPES = ("csv", "tsv", "jsonl")       # what the form's uploader accepts
UPLOADS_DIR = "uploads"                      # inside the run folder
STAGING_DIR = ".uploads"                     # inside the checkpoint root, hidden from run lists

# ---- form fields from core.training.config.OPTIONS --------------------------------------------------------
# Where each option goes on the form. The task options are drawn by the page's task section.
SECTIONS = {
    "task": ("task", "data_dir", "train_file", "dev_file", "text_column", "text_pair_column",
             "label_column", "metric", "max_train", "max_dev", "split_version"),
    "model": ("backbone", "exit_kind", "exit_dim", "pooling", "dropout", "bypass", "bypass_dim",
              "bypass_act", "lte", "max_length"),
    "method": ("method", "optimizer", "weights", "teachers", "temperature", "omega_lr", "cycle",
               "omega_grad", "lambda_div", "stage2_epochs"),
    "training": ("epochs", "budget", "batch_size", "lr", "head_lr", "weight_decay", "warmup_ratio", "max_grad_norm",
                 "seed", "eval_batch_size", "val_fraction", "patience"),
    "output": ("latency_samples", "save_weights", "fp16_weights", "precisions", "eval_every_epoch", "log_every"),
}
ALWAYS_PASSED = config.ALWAYS_PASSED   # written into argv even at their defaults

LABELS = {
    "task": "Task", "data_dir": "GLUE folder", "metric": "Metric", "max_train": "Max training rows",
    "max_dev": "Max dev rows", "backbone": "Backbone", "exit_kind": "Exit classifier",
    "exit_dim": "Exit width (0 = default)", "pooling": "Pooling", "dropout": "Exit dropout",
    "bypass": "Block-wise bypasses", "bypass_dim": "Bypass width r", "bypass_act": "Bypass activation",
    "lte": "Learned-exit heads (LTE)", "max_length": "Max tokens", "method": "Method",
    "optimizer": "Ω optimizer", "weights": "Loss weights", "teachers": "Teachers T(m)",
    "temperature": "Distillation temperature τ", "omega_lr": "Ω learning rate λ2",
    "cycle": "CLO-v2 cycle C", "omega_grad": "Ω gradient", "budget": "Budget rule", "lambda_div": "Diversity λ", "stage2_epochs": "Stage-2 epochs",
    "epochs": "Epochs", "batch_size": "Batch size", "lr": "Backbone learning rate λ1",
    "head_lr": "Head learning rate", "weight_decay": "Weight decay", "warmup_ratio": "Warm-up fraction",
    "max_grad_norm": "Gradient clipping", "seed": "Seed", "eval_batch_size": "Dev batch size",
    "latency_samples": "Latency samples", "save_weights": "Save weights", "fp16_weights": "Weights as float16",
    "eval_every_epoch": "Score the exits every epoch", "log_every": "Log every (steps)",
    "val_fraction": "Validation fraction (of training rows)", "patience": "Early-stopping patience (epochs)",
    "split_version": "Data split version", "precisions": "Extra precision cache (blank: fp32 only)",
}
PRECISION_CHOICES = ("", "int8")   # the Train form offers CPU's; fp16 / bf16 need CUDA (core.train --precisions)
_MINIMUM = {"epochs": 1, "batch_size": 1, "eval_batch_size": 1, "cycle": 1, "max_length": 8, "log_every": 1,
            "max_train": 1, "max_dev": 1, "stage2_epochs": 1, "latency_samples": 0, "exit_dim": 0,
            "bypass_dim": 1, "seed": 0, "patience": 0, "split_version": 1}


@dataclass(frozen=True)
class Field:
    """One option as a widget: name, kind (int | float | str | bool), default, help, choices."""
    name: str
    kind: str
    default: object
    help: str
    label: str
    choices: tuple | None = None
    optional: bool = False          # None is a valid value (empty input)
    minimum: float | None = None
    step: float | None = None
    fmt: str | None = None


def _choices() -> dict[str, tuple]:
    return {"method": config.METHODS, "optimizer": config.OPTIMIZERS, "omega_grad": config.OMEGA_GRADS, "budget": config.BUDGETS,
            "teachers": config.TEACHERS, "exit_kind": config.EXIT_KINDS, "pooling": config.POOLINGS,
            "bypass_act": config.ACTIVATION_NAMES, "metric": config.METRICS, "precisions": PRECISION_CHOICES}


def _float_widget(default) -> tuple[float, str]:
    """(step, printf format) for a float option's number input."""
    d = abs(float(default or 0.0))
    if d == 0:
        return 0.01, "%.3f"
    step = 10.0 ** math.floor(math.log10(d))
    return (step, "%.2e") if d < 1e-2 else (min(step, 0.05) if d < 1 else step, "%.3f" if d < 1 else "%.2f")


def fields() -> dict[str, Field]:
    """Every core.train option (but --out) as a Field, in OPTIONS order."""
    choices = _choices()
    out = {}
    for name, typ, default, help_ in config.OPTIONS:
        if name == "out":
            continue
        kind = {int: "int", float: "float", bool: "bool"}.get(typ, "str")
        step = fmt = None
        if kind == "float":
            step, fmt = _float_widget(default)
        elif kind == "int":
            step = 1
        out[name] = Field(name, kind, default, help_, LABELS.get(name, name.replace("_", " ")),
                          choices=choices.get(name), optional=default is None,
                          minimum=_MINIMUM.get(name, 0.0 if kind == "float" else None), step=step, fmt=fmt)
    return out


def method_defaults(method: str) -> dict:
    """core.training.config.resolve_config's effective values for `method` with every other option at its default
    (fills the method-dependent defaults: LeeBERT's clo_v2 / learned, joint's linear weights, ...)."""
    cfg = config.resolve_config({"method": method, "out": "checkpoints/form-defaults"})
    cfg.pop("notes", None)
    return cfg


def weight_choices(method: str) -> tuple[str, ...]:
    if method == "leebert":
        return config.OMEGA_WEIGHTS
    return config.JOINT_WEIGHTS if method in config.JOINT_LIKE else ()


def relevant(name: str, values: dict) -> bool:
    """Does option `name` do anything for the method and settings in `values`?"""
    method = values.get("method", "joint")
    leebert = method == "leebert"
    learned = leebert and (values.get("weights") or "learned") == "learned"
    rules = {
        "optimizer": learned,
        "weights": leebert or method in config.JOINT_LIKE,
        "teachers": leebert, "temperature": leebert,
        "omega_lr": learned,
        "cycle": learned and (values.get("optimizer") or "clo_v2") == "clo_v2",
        "omega_grad": learned and (values.get("optimizer") or "clo_v2") != "slo",
        "lambda_div": method == "diversity",
        "stage2_epochs": method in config.TWO_STAGE,
        "bypass": method != "badge",
        "bypass_dim": method == "badge" or bool(values.get("bypass")),
        "bypass_act": method == "badge" or bool(values.get("bypass")),
        "exit_dim": values.get("exit_kind", "linear") in ("mlp", "mha"),
        "fp16_weights": values.get("save_weights", True) is not False,
        "precisions": values.get("save_weights", True) is not False,
    }
    return rules.get(name, True)


def visible_fields(section: str, values: dict) -> list[Field]:
    """The fields of a form section that matter for `values` (e.g. Ω's options only for LeeBERT)."""
    all_fields = fields()
    return [all_fields[n] for n in SECTIONS[section] if n in all_fields and relevant(n, values)]


# ---- values -> argv -----------------------------------------------------------------------------
def build_argv(values: dict) -> list[str]:
    """The form's values -> argv for core.train (no --out: the JobManager adds it).

    Passes task, backbone and method always, every other relevant option only when it differs from
    its OPTIONS default (core.training.config.to_argv); empty strings and None mean "not given". The argv is
    parsed back with core.train's own parser and resolve_config, so a bad value raises ValueError here,
    with core.train's message, before any job starts.
    """
    unknown = sorted(set(values) - set(config.DEFAULTS))
    if unknown:
        raise ValueError(f"unknown option(s) {unknown}; valid: {', '.join(config.DEFAULTS)}")
    if "out" in values:
        raise ValueError("the run folder is set by the run name, not by an option")
    given = {}
    for name in config.DEFAULTS:
        if name not in values or not relevant(name, values):
            continue
        v = values[name]
        if v is None or (isinstance(v, str) and not v.strip()):
            continue
        if isinstance(v, str):
            v = v.strip()
        if config.TYPES[name] is float and isinstance(v, (int, float)) and not isinstance(v, bool):
            if not math.isfinite(float(v)):
                raise ValueError(f"{LABELS.get(name, name)} must be a finite number, got {v!r}")
            v = float(v)
        if config.TYPES[name] is int and isinstance(v, float):
            if not v.is_integer():
                raise ValueError(f"{LABELS.get(name, name)} must be a whole number, got {v!r}")
            v = int(v)
        given[name] = v
    argv = config.to_argv(given)
    try:
        cfg = config.parse_cli([*argv, "--out", "checkpoints/form-check"])
    except SystemExit:  # argparse rejected a value; say which
        raise ValueError(f"core.train does not accept these options: {' '.join(argv)}") from None
    cfg.pop("command", None)
    config.resolve_config(cfg)
    return argv


def display_command(argv: list[str], out: str | os.PathLike) -> str:
    """The `python -m core.train ...` command the job runs (as config.json will record it)."""
    import shlex

    return shlex.join(["python", "-m", "core.train", *argv, "--out", str(out)])


def suggest_run_name(root: str | os.PathLike, task: str, method: str) -> str:
    """`<task>-<method>` made a valid run name, with -2, -3, ... when that folder exists."""
    stem = "".join(c if c.isalnum() or c in "._-" else "-" for c in f"{Path(task).name}-{method}").strip("-._")
    stem = (stem or "run")[:90]
    root = Path(root)
    name, k = stem, 2
    while (root / name).exists():
        name, k = f"{stem}-{k}", k + 1
    return check_run_name(name)


def check_new_run(root: str | os.PathLike, name: str, *, overwrite: bool = False) -> Path:
    """The run folder for `name` under root (ValueError for a bad name, or an existing folder unless
    `overwrite`)."""
    name = (name or "").strip()
    check_run_name(name)
    folder = Path(root) / name
    if folder.exists() and not overwrite:
        raise ValueError(f"a run named {name!r} already exists in {root}; pick another name or tick "
                         "'replace it'")
    return folder


# ---- task check (what core.train does first) ----------------------------------------------------
@dataclass
class TaskSummary:
    name: str
    metric: str
    label_names: list[str]
    is_pair: bool
    n_train: int
    n_dev: int
    warnings: tuple[str, ...] = ()  # rows left out of the data, counted (core.data.tasks)

    def describe(self) -> str:
        kind = "sentence pairs" if self.is_pair else "sentences"
        return (f"{self.name}: {self.n_train} training and {self.n_dev} dev {kind}, "
                f"{len(self.label_names)} classes ({', '.join(map(str, self.label_names[:6]))}"
                f"{', ...' if len(self.label_names) > 6 else ''}), metric {self.metric}")


def check_task(values: dict, *, train_file=None, dev_file=None) -> TaskSummary:
    """Load the task exactly as core.train will (core.data.tasks.load_task with the same arguments);
    ValueError names the file or dataset and the fault. `train_file` / `dev_file` override the
    values' paths (to check staged uploads before they move into the run folder)."""
    task = config.load_task(values, train_file=train_file, dev_file=dev_file)
    config.check_splits(task)
    return TaskSummary(task.name, task.metric, list(map(str, task.label_names)), bool(task.is_pair),
                       len(task.train), len(task.dev), tuple(task.warnings))


# ---- uploads ------------------------------------------------------------------------------------
def staging_dir(root: str | os.PathLike, run: str, session: str | None = None) -> Path:
    """Where the page stages a run's uploads: <root>/.uploads/<session>/<run>/ (one folder per browser
    session, so two sessions naming the same run never share a file), or <root>/.uploads/<run>/."""
    base = Path(root) / STAGING_DIR
    return (base / check_run_name(session) if session else base) / check_run_name(run)


def upload_name(role: str, filename: str) -> str:
    """The saved name of an upload: `train.csv` / `dev.jsonl` (never the user's path)."""
    suffix = Path(filename or "").suffix.lower()
    if suffix.lstrip(".") not in UPLOAD_TYPES:
        raise ValueError(f"{filename!r}: unsupported file type {suffix or '(none)'}; upload "
                         f"{', '.join('.' + t for t in UPLOAD_TYPES)}")
    if role not in ("train", "dev"):
        raise ValueError(f"unknown upload role {role!r}")
    return f"{role}{suffix}"


def save_upload(data: bytes, filename: str, folder: str | os.PathLike, *, role: str = "train",
                limit_mb: float = UPLOAD_LIMIT_MB) -> Path:
    """Save an uploaded file's bytes as <folder>/<role><suffix> (atomic). ValueError when it is empty,
    over `limit_mb` megabytes, or of a type core.data.tasks does not read."""
    name = upload_name(role, filename)
    size = len(data)
    if size == 0:
        raise ValueError(f"{filename!r} is empty")
    if size > limit_mb * 1024 * 1024:
        raise ValueError(f"{filename!r} is {size / 1024 / 1024:.1f} MB; uploads are limited to {limit_mb:g} MB")
    path = Path(folder) / name
    atomic_write_bytes(path, bytes(data))
    return path


def peek_columns(source, filename: str | None = None, rows: int = 200) -> list[str]:
    """The column names of a CSV / TSV / JSONL file (a path, or the bytes of an upload named
    `filename`), read from its first `rows` rows, for the column pickers. ValueError naming the file
    when it cannot be read."""
    import io

    if isinstance(source, (bytes, bytearray, memoryview)):
        name = filename or "upload"
        handle = io.BytesIO(bytes(source))
    else:
        name = filename or Path(source).name
        handle = Path(source)
    suffix = Path(name).suffix.lower()
    try:
        if suffix == ".csv":
            df = pd.read_csv(handle, nrows=rows, encoding="utf-8-sig", keep_default_na=False)
        elif suffix in (".tsv", ".tab"):
            df = pd.read_csv(handle, nrows=rows, sep="\t", quoting=csv.QUOTE_NONE, encoding="utf-8-sig",
                             keep_default_na=False)
        elif suffix in (".jsonl", ".ndjson"):
            df = pd.read_json(handle, lines=True, nrows=rows, dtype=False, convert_dates=False)
        else:
            raise ValueError(f"unsupported file type {suffix or '(none)'}; upload "
                             f"{', '.join('.' + t for t in UPLOAD_TYPES)}")
    except (ValueError, pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError, OSError) as e:
        raise ValueError(f"{name}: cannot be read ({type(e).__name__}: {e})") from e
    cols = [str(c) for c in df.columns]
    if not cols:
        raise ValueError(f"{name}: no columns found")
    return cols


def adopt_uploads(out: str | os.PathLike, src: str | os.PathLike | None = None, *,
                  dest: str | os.PathLike | None = None) -> list[Path]:
    """Move the files staged for run folder `out` (`src`, by default <root>/.uploads/<run>/) into
    <dest>/uploads/ (`dest` defaults to `out`; a replacement trains in its staging folder)."""
    out = Path(out)
    src = Path(src) if src is not None else out.parent / STAGING_DIR / out.name
    if not src.is_dir():
        return []
    dest = Path(dest if dest is not None else out) / UPLOADS_DIR
    dest.mkdir(parents=True, exist_ok=True)
    moved = []
    for f in sorted(src.iterdir()):
        if f.is_file():
            target = dest / f.name
            shutil.move(str(f), str(target))
            moved.append(target)
    shutil.rmtree(src, ignore_errors=True)
    return moved


UPLOADS_FROM = "--uploads-from"  # core.app.train_form's own option: the staged folder this job trains on


def _take_option(argv: list[str], flag: str) -> tuple[list[str], str | None]:
    """argv without `flag VALUE` / `flag=VALUE`, and VALUE (the last one given)."""
    rest, value, i = [], None, 0
    while i < len(argv):
        a = argv[i]
        if a == flag and i + 1 < len(argv):
            value, i = argv[i + 1], i + 2
            continue
        if a.startswith(flag + "="):
            value = a.split("=", 1)[1]
        else:
            rest.append(a)
        i += 1
    return rest, value


def main(argv: list[str] | None = None) -> int:
    """`python -m core.app.train_form <core.train argv> [--uploads-from DIR] --out <run folder>`: adopt the
    run's staged uploads (exactly the folder DIR the page checked, under <root>/.uploads/), then run
    core.train with the remaining argv."""
    argv, src = _take_option(list(sys.argv[1:] if argv is None else argv), UPLOADS_FROM)
    out = config.out_from_argv(argv)
    claim = None
    if out:
        from core.runs.folders import ClaimRefused, RunClaim, holds_run, staging_folder

        # the job's folder is the manager's already: claim the run (the one writer, as core.train
        # does) before the uploads move in, and hold it while core.train runs
        try:
            claim = RunClaim(out)
            claim.acquire()
        except (ClaimRefused, ValueError, OSError) as e:
            print(f"core.app.train_form: error: {e}", file=sys.stderr)
            return 2
        # a replacement (core.train --overwrite of a folder holding a run) trains in the staging folder
        dest = staging_folder(out) if "--overwrite" in argv and holds_run(out) else Path(out)
        try:
            if src is not None:
                allowed = (Path(out).parent / STAGING_DIR).resolve()
                if allowed not in Path(src).resolve().parents:
                    print(f"core.app.train_form: error: {UPLOADS_FROM} must name a folder under {allowed}",
                          file=sys.stderr)
                    claim.release()
                    return 2
            for path in adopt_uploads(out, src, dest=dest):
                print(f"core.app.train_form: using upload {path}", file=sys.stderr)
        except OSError as e:
            print(f"core.app.train_form: error: cannot move the uploads into {dest}: {e}", file=sys.stderr)
            claim.release()
            return 1
    from core.training.cli import main as train_main

    try:
        return train_main(argv)
    finally:
        if claim is not None:
            claim.release()


# ---- live panel (its figures: core.app.figures) -------------------------------------------------
from core.app.figures import exit_colors, losses_figure, omega_frame, omega_heatmap, omega_lines_figure, scores_figure  # noqa: E402,F401


def read_records(folder: str | os.PathLike) -> list[dict]:
    """metrics.jsonl of a run (possibly being written): [] when missing or unreadable."""
    return read_metrics(folder, unreadable_ok=True)


@dataclass
class LiveData:
    train: pd.DataFrame     # step, epoch, loss, exit, exit_loss (long: one row per step and exit)
    evals: pd.DataFrame     # epoch, step, exit, score, metric
    omega: list[dict]       # the omega records, oldest first
    metric: str | None

    @property
    def empty(self) -> bool:
        return self.train.empty and self.evals.empty and not self.omega


def live_data(records: list[dict]) -> LiveData:
    """The metrics.jsonl records as plotting frames."""
    tr, ev, om, metric = [], [], [], None
    for r in records:
        kind = r.get("kind")
        if kind == "train" and r.get("exit_losses") is not None:
            for m, v in enumerate(r["exit_losses"]):
                tr.append({"step": r.get("step"), "epoch": r.get("epoch"), "loss": r.get("loss"),
                           "exit": m + 1, "exit_loss": v})
        elif kind == "eval" and r.get("exit_scores") is not None:
            metric = r.get("metric") or metric
            for m, v in enumerate(r["exit_scores"]):
                ev.append({"epoch": r.get("epoch"), "step": r.get("step"), "exit": m + 1, "score": v,
                           "metric": r.get("metric")})
        elif kind == "omega" and r.get("omega"):
            om.append(r)
    return LiveData(pd.DataFrame(tr, columns=["step", "epoch", "loss", "exit", "exit_loss"]),
                    pd.DataFrame(ev, columns=["epoch", "step", "exit", "score", "metric"]), om, metric)


def fmt_seconds(s: float | None) -> str:
    if s is None or not math.isfinite(s):
        return "–"
    s = int(round(s))
    if s < 60:
        return f"{s} s"
    if s < 3600:
        return f"{s // 60} min {s % 60:02d} s"
    return f"{s // 3600} h {(s % 3600) // 60:02d} min"


if __name__ == "__main__":
    sys.exit(main())
