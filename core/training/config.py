"""Training options without torch: the one option table (CLI, `--config` file, `train(config)` and the
Train form all read it), the method and name lists, config resolution, the CLI parser, the one argv
serializer, and the one way a config loads its task.

    cfg = resolve_config(parse_cli(argv))        # ValueError naming the first bad value
    argv = to_argv(values)                       # options -> flags (non-default values only)
    command_line(cfg)                            # the `python -m core.train ...` a run records
    task = load_task(cfg)                        # core.data.tasks.load_task with the config's arguments

Importing this module never imports torch (tests/test_train_page.py checks it), so the Streamlit
process can build the Train form without loading the training stack. core.training.losses, core.training.omega and
core.models.multi_exit take their name lists from here.
"""
from __future__ import annotations

import argparse
import math
import shlex
from pathlib import Path
from typing import Any

from core.data.splits import SPLIT_VERSION, SPLIT_VERSIONS
from core.data.tasks import METRICS  # noqa: F401  (the Train form reads METRICS here)
from core.data.tasks import load_task as load_named_task
from core.engine.cache import PRECISIONS
from core.runs.folders import check_run_name
from core.runs.io import read_json

# ---- names ---------------------------------------------------------------------------------------
JOINT_WEIGHTS = ("linear", "uniform")                 # joint-like loss weights (core.training.losses)
TEACHERS = ("lae", "lle")                             # LeeBERT teacher sets T(m) (core.training.losses)
OPTIMIZERS = ("slo", "blo", "clo_v1", "clo_v2")       # LeeBERT Ω optimizers (core.training.omega)
OMEGA_GRADS = ("first_order", "second_order")         # Ω's gradient on B2 (core.training.omega)
OMEGA_WEIGHTS = ("learned", "uniform", "random")      # LeeBERT Ω kinds (core.training.omega.WEIGHTS)
EXIT_KINDS = ("linear", "mlp", "mha")                 # exit classifiers (core.models.multi_exit)
POOLINGS = ("cls", "mean")                            # what exits read (core.models.multi_exit)
ACTIVATION_NAMES = ("gelu", "relu", "tanh", "swish", "leaky_relu", "identity")  # core.models.multi_exit.ACTIVATIONS
ALWAYS_PASSED = ("task", "backbone", "method")        # written into an argv even at their defaults

METHODS = ("joint", "two_stage", "alternating", "self_distill", "leebert", "badge", "diversity")
BUDGETS = ("theta_steps", "epochs")
OLD_BUDGET = "epochs"  # the rule of run configs written before `budget` existed
TWO_STAGE = ("two_stage", "self_distill")
JOINT_LIKE = ("joint", "alternating", "badge", "diversity")

CLI_SWITCHES = ("--overwrite", "--debug")  # read by core.train.main, not options of a run

# ---- options: one table for the CLI, the --config file and train(config) ------------------------
# (name, type, default, help); None defaults that depend on the method are filled by resolve_config.
OPTIONS: list[tuple[str, Any, Any, str]] = [
    ("task", str, "rotten_tomatoes", "task: rotten_tomatoes, a GLUE name (sst2, mrpc, ...), a dataset folder or hub "
     "name; with --train-file, the name to give your data"),
    ("backbone", str, "minilm-l6", "backbone alias, local folder or hub id"),
    ("method", str, "joint", f"training method: {', '.join(METHODS)}"),
    ("optimizer", str, None, f"LeeBERT Ω optimizer: {', '.join(OPTIMIZERS)} (default clo_v2)"),
    ("out", str, None, "run folder, checkpoints/<run> (its name must be a valid run name)"),
    ("data_dir", str, None, "GLUE folder with train.tsv / dev.tsv"),
    ("train_file", str, None, "user training file (csv, tsv, json, jsonl, parquet)"),
    ("dev_file", str, None, "user dev file"),
    ("text_column", str, None, "text column of user files"),
    ("text_pair_column", str, None, "second text column (pair tasks)"),
    ("label_column", str, None, "label column of user files"),
    ("metric", str, None, "task metric override: accuracy | acc_f1 | mcc | macro_f1 (default: the task's)"),
    ("epochs", int, 3, "training epochs (per stage for two_stage / self_distill); with --budget theta_steps "
     "an epoch is ceil(rows / batch size) model steps for every method"),
    ("budget", str, "theta_steps", "what --epochs counts: theta_steps (the same number of model steps for every "
     "method; LeeBERT BLO / CLO, which step the model on half the rows (D1), cycle D1 twice per epoch) or "
     "epochs (passes over the rows the model trains on: BLO / CLO then take half the steps of joint)"),
    ("stage2_epochs", int, None, "epochs of stage 2 (two_stage, self_distill); default = --epochs"),
    ("patience", int, 0, "early stopping: end a stage after this many epochs without a better validation "
     "score (needs --val-fraction; 0 = run every epoch). Either way the best validation epoch's weights are kept"),
    ("batch_size", int, 32, "training batch size"),
    ("eval_batch_size", int, 64, "dev-set batch size"),
    ("lr", float, 1e-4, "learning rate of the backbone (λ1 of LeeBERT; grid in docs/TUNING.md)"),
    ("head_lr", float, 1e-3, "learning rate of exits, bypasses and LTE heads"),
    ("omega_lr", float, 1e-3, "learning rate of LeeBERT's Ω (λ2; LeeBERT Table 3, CoLA / RTE rows)"),
    ("weight_decay", float, 0.0, "AdamW weight decay (0 = Adam, as the papers)"),
    ("warmup_ratio", float, 0.1, "linear warm-up fraction of each stage's steps (BADGE: 10%)"),
    ("max_grad_norm", float, 1.0, "gradient clipping of the model parameters (0 = off)"),
    ("temperature", float, 2.0, "LeeBERT distillation temperature τ (Eq. 2)"),
    ("teachers", str, "lae", "LeeBERT teachers T(m): lae (all other exits) or lle (later exits); a choice the "
     "paper leaves open: the teacher side of each distillation term is detached (only the student learns)"),
    ("weights", str, None, "loss weights: joint-like methods linear|uniform; leebert learned|uniform|random"),
    ("cycle", int, 4, "CLO-v2 cross-level cycle length C (LeeBERT Table 3)"),
    ("omega_grad", str, "first_order", "Ω's gradient on B2 for BLO / CLO: first_order (the paper) or second_order "
     "(DARTS Eq. 7-8 hypergradient through one virtual model step; about 3x a joint step's cost on "
     "cross-level steps)"),
    ("lambda_div", float, 0.2, "diversity loss λ (Sun et al. Eq. 14); a choice the paper leaves open: the "
     "earlier exit's distribution is detached, so only the later exit is pushed away from it"),
    ("exit_kind", str, "linear", "exit classifier: linear | mlp | mha"),
    ("exit_dim", int, 0, "mlp hidden / mha width (0 = default)"),
    ("pooling", str, "mean", "what exits read: mean | cls"),
    ("dropout", float, 0.1, "dropout inside the exit heads"),
    ("bypass", bool, None, "BADGE block-wise bypasses (always on for --method badge)"),
    ("bypass_dim", int, 16, "bypass bottleneck r (BADGE: 16)"),
    ("bypass_act", str, "gelu", "bypass activation g1 (BADGE Table 5: mostly GELU)"),
    ("lte", bool, False, "train learned-exit (LTE) confidence heads alongside"),
    ("max_length", int, 128, "tokenizer truncation length"),
    ("max_train", int, None, "use at most this many training rows"),
    ("max_dev", int, None, "use at most this many dev rows"),
    ("val_fraction", float, 0.0, "carve this stratified fraction of the training rows (fixed seed) as a "
     "validation split, scored every epoch; early stopping and the kept epoch read it, never the dev set (0 = none)"),
    ("split_version", int, SPLIT_VERSION, "data split version: 2 keeps the default task's held-out test rows "
     "out of training; 1 = the split of runs made before it (a run's config.json without this key means 1)"),
    ("seed", int, 0, "random seed (data order, D1/D2 split, initialization, dropout)"),
    ("save_weights", bool, True, "write model.safetensors"),
    ("fp16_weights", bool, False, "store the weights as float16"),
    ("latency_samples", int, 50, "dev sentences timed at batch size 1 for per-layer latency (0 = skip)"),
    ("precisions", str, None, ("also write these precisions' exit caches at the end of training, comma-separated: "
                               "int8 (dynamic quantization, CPU), fp16 / bf16 (CUDA); each as `python -m "
                               "core.cache_variant` writes it, with the latency tables at batch sizes 1 and 32 "
                               "(needs the weights saved)")),
    ("eval_every_epoch", bool, True, "score every exit on the dev set after each epoch"),
    ("log_every", int, 10, "write a train record every this many steps"),
]
DEFAULTS = {name: default for name, _, default, _ in OPTIONS}
TYPES = {name: typ for name, typ, _, _ in OPTIONS}
# keys of a run's config.json that are not options: a --config file may hold them (so a run's own
# config.json repeats the run) and they are ignored there
CONTROL_KEYS = ("command", "canonical_command", "config", "config_file", "model", "notes", "derived")


# ---- configuration ------------------------------------------------------------------------------
def precision_list(text) -> list[str]:
    """The extra precisions of `--precisions` ("int8" or "int8,bf16"; fp32 is the run's own cache), in order,
    once each. ValueError naming the unknown one."""
    names = [p.strip().lower() for p in str(text or "").split(",") if p.strip()]
    for p in names:
        if p not in PRECISIONS or p == "fp32":
            raise ValueError(f"--precisions: {p!r} is not a precision to add; valid: "
                             f"{', '.join(x for x in PRECISIONS if x != 'fp32')} (fp32 is the run's own cache)")
    return list(dict.fromkeys(names))


def _coerce(name: str, value):
    typ = TYPES[name]
    if value is None:
        return None
    try:
        if typ is bool:
            if isinstance(value, str):
                if value.lower() in ("1", "true", "yes", "on"):
                    return True
                if value.lower() in ("0", "false", "no", "off"):
                    return False
                raise ValueError
            return bool(value)
        if typ is int:
            if isinstance(value, float) and not value.is_integer():
                raise ValueError
            return int(value)
        return typ(value)
    except (TypeError, ValueError):
        raise ValueError(f"option {name!r}: expected {typ.__name__}, got {value!r}") from None


def normalize_keys(d: dict, where: str) -> dict:
    """Accept `batch-size` and `batch_size`; reject unknown keys naming the valid ones."""
    out = {}
    for k, v in d.items():
        key = str(k).replace("-", "_")
        if key in CONTROL_KEYS:
            continue
        if key not in DEFAULTS:
            raise ValueError(f"{where}: unknown option {k!r}; valid options: {', '.join(DEFAULTS)}")
        out[key] = _coerce(key, v)
    return out


def resolve_config(config: dict) -> dict:
    """Defaults + `config` -> the effective configuration (method-dependent defaults filled in).
    Raises ValueError naming the first bad value."""
    cfg = dict(DEFAULTS)
    cfg.update(normalize_keys(config, "config"))
    notes = []

    def bad(msg):
        raise ValueError(msg)

    m = cfg["method"]
    if m not in METHODS:
        bad(f"unknown method {m!r}; valid: {', '.join(METHODS)}")
    if not cfg["out"]:
        bad("no output folder: pass --out checkpoints/<run>")
    check_run_name(Path(cfg["out"]).name)
    for k in ("epochs", "batch_size", "eval_batch_size", "cycle", "max_length", "log_every"):
        if cfg[k] is None or cfg[k] < 1:
            bad(f"{k} must be an integer >= 1, got {cfg[k]!r}")
    for k in ("max_train", "max_dev", "stage2_epochs"):
        if cfg[k] is not None and cfg[k] < 1:
            bad(f"{k} must be >= 1 when given, got {cfg[k]!r}")
    for k in ("lr", "head_lr", "omega_lr", "temperature"):
        if not (cfg[k] is not None and math.isfinite(cfg[k]) and cfg[k] > 0):
            bad(f"{k} must be a positive number, got {cfg[k]!r}")
    for k in ("weight_decay", "max_grad_norm", "lambda_div"):
        if not (math.isfinite(cfg[k]) and cfg[k] >= 0):
            bad(f"{k} must be a number >= 0, got {cfg[k]!r}")
    if not 0 <= cfg["warmup_ratio"] < 1:
        bad(f"warmup_ratio must be in [0, 1), got {cfg['warmup_ratio']!r}")
    if cfg["latency_samples"] is None or cfg["latency_samples"] < 0:
        bad(f"latency_samples must be >= 0, got {cfg['latency_samples']!r}")
    if not (math.isfinite(cfg["val_fraction"]) and 0 <= cfg["val_fraction"] < 0.5):
        bad(f"val_fraction must be in [0, 0.5), got {cfg['val_fraction']!r}")
    if cfg["patience"] is None or cfg["patience"] < 0:
        bad(f"patience must be an integer >= 0, got {cfg['patience']!r}")
    if cfg["patience"] and not cfg["val_fraction"]:
        bad("--patience needs a validation split to watch: add --val-fraction (e.g. 0.1)")
    cfg["precisions"] = ",".join(precision_list(cfg["precisions"])) or None
    if cfg["precisions"] and not cfg["save_weights"]:
        bad("--precisions converts the saved weights: it needs them written (drop --no-save-weights)")
    if cfg["split_version"] not in SPLIT_VERSIONS:
        bad(f"split_version must be one of {', '.join(map(str, SPLIT_VERSIONS))}, got {cfg['split_version']!r}")
    if cfg["teachers"] not in TEACHERS:
        bad(f"unknown teachers {cfg['teachers']!r}; valid: {', '.join(TEACHERS)}")
    if cfg["budget"] not in BUDGETS:
        bad(f"unknown budget {cfg['budget']!r}; valid: {', '.join(BUDGETS)}")
    if cfg["omega_grad"] not in OMEGA_GRADS:
        bad(f"unknown omega_grad {cfg['omega_grad']!r}; valid: {', '.join(OMEGA_GRADS)}")

    # method-dependent defaults and checks
    if m == "leebert":
        cfg["weights"] = cfg["weights"] or "learned"
        if cfg["weights"] not in OMEGA_WEIGHTS:
            bad(f"--weights {cfg['weights']!r} is not valid for leebert; valid: {', '.join(OMEGA_WEIGHTS)}")
        if cfg["weights"] == "learned":
            cfg["optimizer"] = cfg["optimizer"] or "clo_v2"
            if cfg["optimizer"] not in OPTIMIZERS:
                bad(f"unknown optimizer {cfg['optimizer']!r}; valid: {', '.join(OPTIMIZERS)}")
        elif cfg["optimizer"]:
            notes.append(f"optimizer {cfg['optimizer']} unused: Ω is fixed ({cfg['weights']} weights)")
            cfg["optimizer"] = None
        if cfg["omega_grad"] == "second_order" and cfg["optimizer"] not in ("blo", "clo_v1", "clo_v2"):
            bad(f"--omega-grad second_order needs learned Ω with --optimizer blo, clo_v1 or clo_v2 "
                f"(got weights {cfg['weights']}, optimizer {cfg['optimizer']})")
    else:
        if cfg["omega_grad"] == "second_order":
            bad(f"--omega-grad second_order is for --method leebert (BLO / CLO), not {m}")
        if m in JOINT_LIKE:
            default = "uniform" if m in ("alternating", "diversity") else "linear"
            cfg["weights"] = cfg["weights"] or default
            if cfg["weights"] not in JOINT_WEIGHTS:
                bad(f"--weights {cfg['weights']!r} is not valid for {m}; valid: {', '.join(JOINT_WEIGHTS)}")
        elif cfg["weights"]:
            notes.append(f"weights {cfg['weights']} unused by {m}")
            cfg["weights"] = None
        if cfg["optimizer"]:
            notes.append(f"optimizer {cfg['optimizer']} unused: only --method leebert learns Ω")
            cfg["optimizer"] = None
    if m == "badge":
        if cfg["bypass"] is False:
            bad("--method badge trains with bypasses; drop --no-bypass")
        cfg["bypass"] = True
    cfg["bypass"] = bool(cfg["bypass"])
    if m in TWO_STAGE:
        cfg["stage2_epochs"] = cfg["stage2_epochs"] or cfg["epochs"]
    elif cfg["stage2_epochs"] is not None:
        notes.append(f"stage2_epochs unused by {m}")
        cfg["stage2_epochs"] = None
    cfg["notes"] = notes
    return cfg


def to_argv(values: dict, *, always: tuple[str, ...] = ALWAYS_PASSED) -> list[str]:
    """Options -> `--flag value` argv in OPTIONS order: the names in `always` whenever given, every other
    one only when it differs from its default (an unset switch whose default is None, --bypass, is off).
    The one serializer of options: the recorded command (`command_line`) and the Train form use it."""
    argv: list[str] = []
    for name, typ, default, _ in OPTIONS:
        v = values.get(name)
        if v is None:
            continue
        if typ is bool and default is None:
            default = False
        if name not in always and v == default and type(v) is type(default):
            continue
        flag = "--" + name.replace("_", "-")
        if typ is bool:
            argv.append(flag if v else "--no-" + name.replace("_", "-"))
        else:
            argv += [flag, str(v)]
    return argv


def command_line(cfg: dict) -> str:
    """A `python -m core.train ...` command that repeats the run (non-default values only)."""
    return shlex.join(["python", "-m", "core.train", *to_argv(cfg, always=(*ALWAYS_PASSED, "out"))])


def out_from_argv(argv: list[str]) -> str | None:
    """The value of the last `--out DIR` / `--out=DIR` in a core.train argv (None without one)."""
    out = None
    for i, a in enumerate(argv):
        if a == "--out" and i + 1 < len(argv):
            out = argv[i + 1]
        elif a.startswith("--out="):
            out = a.split("=", 1)[1]
    return out


class _Parser(argparse.ArgumentParser):
    def error(self, message):  # raise instead of exiting, so main() can record it in the run folder
        raise ValueError(message)


def build_parser() -> argparse.ArgumentParser:
    ap = _Parser(
        prog="python -m core.train", description="Train a multi-exit model and write its run folder.",
        argument_default=argparse.SUPPRESS)
    ap.add_argument("--config", help="JSON file of options (same names); flags given here override it")
    ap.add_argument("--overwrite", action="store_true", help="replace the run already in --out; the old run "
                    "stays whole until the new one has finished (a failed or cancelled run leaves it as it was)")
    ap.add_argument("--debug", action="store_true", help="print the traceback of an input error too")
    for name, typ, default, help_ in OPTIONS:
        flag = "--" + name.replace("_", "-")
        shown = (f"{help_} (default: {default})" if default is not None else help_).replace("%", "%%")
        if typ is bool:
            ap.add_argument(flag, dest=name, action=argparse.BooleanOptionalAction, help=shown)
        else:
            ap.add_argument(flag, dest=name, type=typ, help=shown, metavar=name.upper())
    return ap


def parse_cli(argv: list[str]) -> dict:
    """argv -> the config dict train() takes: --config file first, then the flags on top."""
    args = vars(build_parser().parse_args(argv))
    for switch in CLI_SWITCHES:  # read by main(), not options of the run
        args.pop(switch.lstrip("-"), None)
    cfg = {}
    path = args.pop("config", None)
    if path:
        p = Path(path)
        if not p.is_file():
            raise ValueError(f"--config {path}: no such file")
        data = read_json(p)
        if not isinstance(data, dict):
            raise ValueError(f"--config {path}: expected a JSON object of options")
        cfg.update(normalize_keys(data, f"--config {path}"))
        if "derived" in data and "budget" not in data:
            cfg["budget"] = OLD_BUDGET  # a run's config.json from before --budget: repeat it as it ran
        if "split_version" not in data and ("command" in data or "derived" in data):
            cfg["split_version"] = 1  # a run's config.json from before split versions: the old split
        cfg["config_file"] = str(p)
    cfg.update(args)
    cfg["command"] = shlex.join(["python", "-m", "core.train", *argv])
    return cfg


# ---- the task of a config ------------------------------------------------------------------------
def _given(values: dict, key: str):
    """values[key], with None and blank strings meaning "not given"."""
    v = values.get(key)
    return None if (v is None or (isinstance(v, str) and not v.strip())) else v


def load_task(values: dict, *, train_file=None, dev_file=None):
    """core.data.tasks.load_task with a config's (or the form's) arguments: the one call core.train and the
    Train form's check make. `train_file` / `dev_file` override the values' paths (a run's staging
    folder, the form's staged uploads). ValueError names the file or dataset and the fault, or an
    empty split."""
    task = load_named_task(_given(values, "task") or DEFAULTS["task"], data_dir=_given(values, "data_dir"),
                train_file=train_file if train_file is not None else _given(values, "train_file"),
                dev_file=dev_file if dev_file is not None else _given(values, "dev_file"),
                text_column=_given(values, "text_column"), text_pair_column=_given(values, "text_pair_column"),
                label_column=_given(values, "label_column"), max_train=_given(values, "max_train"),
                max_dev=_given(values, "max_dev"), seed=int(values.get("seed") or 0), metric=_given(values, "metric"),
                split_version=int(_given(values, "split_version") or SPLIT_VERSION))
    return task


def check_splits(task) -> None:
    """ValueError when a task has no training or no dev rows."""
    if len(task.train) == 0 or len(task.dev) == 0:
        raise ValueError(f"task {task.name!r}: empty split (train {len(task.train)} rows, dev {len(task.dev)} rows)")
