"""The operating-point file, version 2: one chosen exit rule of one trained run, ready to run.

    python -m core.export --run checkpoints/rotten_tomatoes-joint --strategy entropy \
        --params '{"threshold": 0.3}' [--precision int8] [--batch-size 32] --out entropy-0.3.json

Version 2 adds `precision` (fp32, int8, fp16, bf16: the weights are converted to it before they run, and
the promise is measured on that precision's cache, `cache-<precision>.npz`) and `batch_size` (what
core.predict runs it at by default, and the batch size its wall-clock speed-up over fp32 full was read
at from the caches' latency tables; null: core.predict's default, 32). A version-1 file still loads: it
reads as fp32 with batch size null (as before).

The file says which weights to load (the run folder, relative to the file where possible, and the
sha256 of its `model.safetensors`), how to read the exits (strategy and params, label names) and
what this setting promised on the rows it was measured on (score, full-model score, layer speed-up,
estimated wall-clock speed-up). Every promised number is `{"value": x, "interval": [lo, hi] | null}`;
`guarantee` holds a calibration guarantee (risk level, confidence) when the point came from one.
Both are null when unknown: this module does not compute intervals, it carries what it is given
(see `promise_from_evaluation(..., intervals=, guarantee=)`).

`read_point(path)` validates every field and, by default, the weights' hash; every error names the
file and the fault. Torch-free (json, hashlib): the app imports it.
"""
from __future__ import annotations

import argparse
import functools
import hashlib
import json
import math
import numbers
import os
import shlex
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from core.engine.registry import STRATEGIES, resolve_params
from core.runs.folders import CACHE_FILE, CONFIG_FILE, METRICS_FILE, STATUS_FILE, WEIGHTS_FILE
from core.runs.io import atomic_write_json, read_json

FORMAT = "early-exit-lab/operating-point"
FORMAT_VERSION = 2
READ_VERSIONS = (1, 2)   # version 1: no precision (fp32) and no batch size
PROMISED = ("score", "full_score", "layer_speedup", "wallclock_speedup")  # each {"value", "interval"}
_TOP_FIELDS = {"format": str, "format_version": int, "run": str, "run_name": str, "weights": dict,
               "backbone": str, "task": (str, type(None)), "metric": str, "label_names": list,
               "num_layers": int, "strategy": str, "params": dict, "promise": dict, "created": str}


@dataclass
class PointFile:
    """A loaded, validated operating-point file. `run_dir` is resolved against the file's folder."""
    path: Path
    data: dict
    run_dir: Path

    @property
    def strategy(self) -> str:
        return self.data["strategy"]

    @property
    def params(self) -> dict:
        return dict(self.data["params"])

    @property
    def label_names(self) -> list[str]:
        return list(self.data["label_names"])

    @property
    def promise(self) -> dict:
        return self.data["promise"]

    @property
    def precision(self) -> str:
        """The precision the point runs at (fp32 for a version-1 file)."""
        return self.data.get("precision", "fp32")

    @property
    def batch_size(self) -> int | None:
        """The batch size the point names (None for a version-1 file or when not named)."""
        return self.data.get("batch_size")

    def promised(self, name: str) -> tuple[float | None, list | None]:
        """(value, interval or None) of one promised number."""
        p = self.data["promise"].get(name) or {}
        return p.get("value"), p.get("interval")


# ---- hashing and the run's facts -----------------------------------------------------------------
def sha256_file(path: str | os.PathLike, chunk: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(chunk), b""):
            h.update(block)
    return h.hexdigest()


def rebuild_command(run_dir: str | os.PathLike) -> str:
    """How to rebuild a run's weights: its recorded command, or a generic hint."""
    cfg_path = Path(run_dir) / CONFIG_FILE
    try:
        cfg = read_json(cfg_path) if cfg_path.exists() else {}
    except ValueError:
        cfg = {}
    cmd = cfg.get("canonical_command") or cfg.get("command")
    if cmd and "--no-save-weights" not in cmd:
        return cmd
    return f"python -m core.train ... --out {run_dir} (weights are saved unless --no-save-weights)"


def _relative(target: Path, start: Path) -> str:
    """`target` relative to `start` when both are on one drive, else absolute."""
    try:
        return os.path.relpath(target.resolve(), start.resolve())
    except ValueError:  # different drives (Windows)
        return str(target.resolve())


# ---- writing -------------------------------------------------------------------------------------
def promise_from_evaluation(ev: dict, *, n_rows: int, split: str = "dev", task: str | None = None,
                            intervals: dict | None = None, guarantee: dict | None = None,
                            file: str = CACHE_FILE) -> dict:
    """The promise block from a `core.engine.metrics.evaluate` result.

    `intervals` maps names in PROMISED to [lo, hi] (e.g. bootstrap intervals); `guarantee` is a
    calibration guarantee dict. Both stay null when not given: unknown, not zero-width.
    """
    intervals = intervals or {}
    unknown = set(intervals) - set(PROMISED)
    if unknown:
        raise ValueError(f"intervals for unknown numbers {sorted(unknown)}; known: {', '.join(PROMISED)}")
    out = {}
    for name in PROMISED:
        v = ev.get(name)
        iv = intervals.get(name)
        out[name] = {"value": None if v is None else float(v),
                     "interval": None if iv is None else [float(iv[0]), float(iv[1])]}
    out["mean_exit_layer"] = float(ev["mean_exit_layer"])
    out["wallclock_note"] = ev.get("wallclock_note") or (
        "estimated from the run's batch-1 per-layer latencies (cache layer_ms)"
        if ev.get("wallclock_speedup") is not None else "no per-layer latencies in this run")
    out["wallclock_batch_size"] = ev.get("wallclock_batch_size", 1 if ev.get("wallclock_speedup") is not None else None)
    out["measured_on"] = {"split": split, "rows": int(n_rows), "task": task, "file": file}
    out["guarantee"] = guarantee
    return out


def check_precision(precision, batch_size, *, where: str = "") -> None:
    """A precision core.predict can run and a batch size that is a positive integer or None."""
    from core.engine.cache import PRECISIONS

    if precision not in PRECISIONS:
        shown = repr(precision) if isinstance(precision, str) and len(precision) <= 40 else _shown(precision)
        raise ValueError(f"{where}precision {shown} is not one of {', '.join(PRECISIONS)}")
    if batch_size is not None and (not isinstance(batch_size, int) or isinstance(batch_size, bool) or batch_size < 1):
        raise ValueError(f"{where}batch_size must be a positive integer or null, got {_shown(batch_size)}")


def evaluate_at(run_dir: str | os.PathLike, strategy: str, params: dict, *, precision: str = "fp32",
                batch_size: int | None = None, cache=None) -> tuple:
    """(cache of `precision`, evaluation) of a setting: scored on that precision's cache, its full score
    fp32 full's, and its wall-clock speed-up over fp32 full at `batch_size` from the latency tables
    (precisions other than fp32 with no batch size: at batch size 1; None where no table has it).
    `cache` (optional): that precision's cache already loaded."""
    from core.engine import metrics
    from core.engine.cache import ExitCache, variant_file

    check_precision(precision, batch_size)
    run_dir = Path(run_dir)
    path = run_dir / variant_file(precision)
    if cache is None and precision == "fp32":
        cache = ExitCache.load(run_dir)
    if cache is None:
        if not path.is_file():
            raise ValueError(f"{run_dir}: no {precision} cache ({path.name}); write it with "
                             f"`python -m core.cache_variant --run {run_dir} --precision {precision}`")
        cache = ExitCache.load(path)
    ref = cache if precision == "fp32" else ExitCache.load(run_dir)
    full = metrics.score(ref.metric, ref.labels, ref.probs[:, -1].argmax(-1))
    ev = metrics.evaluate(cache, strategy, full_score=full,
                          **check_params(strategy, params, cache.L, where="params", complete=False))
    at = batch_size if batch_size is not None else (None if precision == "fp32" else 1)
    if at is not None:
        try:
            ev["wallclock_speedup"] = metrics.batch_wallclock_speedup(ev["exit_layer"], cache, at, reference=ref)
            ev["wallclock_note"] = (f"over fp32 full at batch size {at}, from the latency tables of the {precision} "
                                    f"and fp32 caches ({(cache.latency or {}).get('threads', '?')} thread(s), "
                                    f"{(cache.latency or {}).get('machine', 'machine unknown')})")
            ev["wallclock_batch_size"] = at
        except ValueError as e:
            ev["wallclock_speedup"], ev["wallclock_batch_size"] = None, None
            ev["wallclock_note"] = f"no wall-clock estimate: {e}"
    return cache, ev


def build_point(run_dir: str | os.PathLike, strategy: str, params: dict, *, out: str | os.PathLike,
                intervals: dict | None = None, guarantee: dict | None = None,
                hash_weights: bool = True, precision: str = "fp32", batch_size: int | None = None) -> dict:
    """The v2 dict for `strategy`/`params` on the run in `run_dir` at `precision`, promise measured on
    that precision's dev cache (see `evaluate_at`). `out` is where the file will live (the run path is
    stored relative to it)."""
    from core.engine.cache import ExitCache, variant_file

    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise ValueError(f"{run_dir}: no such run folder")
    check_precision(precision, batch_size)
    cache = ExitCache.load(run_dir) if precision == "fp32" else None
    if precision != "fp32" and not (run_dir / variant_file(precision)).is_file():
        raise ValueError(f"{run_dir}: no {precision} cache ({variant_file(precision)}); write it with "
                         f"`python -m core.cache_variant --run {run_dir} --precision {precision}`")
    if strategy not in STRATEGIES:
        raise ValueError(f"unknown strategy {strategy!r}; valid: {', '.join(STRATEGIES)}")
    if "labels" in STRATEGIES[strategy].needs:
        raise ValueError(f"strategy {strategy!r} needs the gold labels; it is a ceiling, not a point to ship")
    if hash_weights and not (run_dir / WEIGHTS_FILE).is_file():
        raise ValueError(f"{run_dir}: no {WEIGHTS_FILE}, so this point could not run; rebuild the weights "
                         f"with: {rebuild_command(run_dir)}")
    cache, ev = evaluate_at(run_dir, strategy, params, precision=precision, batch_size=batch_size, cache=cache)
    return point_from_evaluation(run_dir, cache, ev, run_path=_relative(run_dir, Path(out).parent),
                                 intervals=intervals, guarantee=guarantee, hash_weights=hash_weights,
                                 precision=precision, batch_size=batch_size)


def point_from_evaluation(run_dir: str | os.PathLike, cache, ev: dict, *, run_path: str | None = None,
                          intervals: dict | None = None, guarantee: dict | None = None,
                          hash_weights: bool = True, precision: str = "fp32", batch_size: int | None = None) -> dict:
    """The v2 dict from an evaluation already made (`core.engine.metrics.evaluate` on the run's cache).
    `run_path` is what the file records as the run folder (default: its absolute path). The weights'
    sha256 is null when the run has none (or `hash_weights` is False); `read_point` refuses such files."""
    run_dir = Path(run_dir)
    cfg_path = run_dir / CONFIG_FILE
    cfg = read_json(cfg_path) if cfg_path.exists() else {}
    weights = run_dir / WEIGHTS_FILE
    sha = _cached_sha256(weights) if hash_weights and weights.is_file() else None
    backbone = (cfg.get("model") or {}).get("backbone") or cache.meta.get("backbone") or cfg.get("backbone")
    strategy = ev["strategy"]
    check_precision(precision, batch_size)
    from core.engine.cache import variant_file

    return {
        "format": FORMAT, "format_version": FORMAT_VERSION,
        "run": run_path if run_path is not None else str(run_dir.resolve()), "run_name": run_dir.resolve().name,
        "weights": {"file": WEIGHTS_FILE, "sha256": sha},
        "backbone": str(backbone or "unknown"), "task": cache.meta.get("task"), "metric": cache.metric,
        "label_names": list(cache.label_names), "num_layers": int(cache.L),
        "strategy": strategy, "params": resolve_params(strategy, dict(ev["params"]), cache.L),
        "precision": precision, "batch_size": batch_size,
        "promise": promise_from_evaluation(ev, n_rows=cache.N, task=cache.meta.get("task"),
                                           intervals=intervals, guarantee=guarantee, file=variant_file(precision)),
        "created": time.strftime("%Y-%m-%dT%H:%M:%S"),
    }


def _cached_sha256(path: Path) -> str:
    st = path.stat()
    return _sha256_version(str(path.resolve()), st.st_mtime_ns, st.st_size)


@functools.lru_cache(maxsize=16)
def _sha256_version(path: str, mtime_ns: int, size: int) -> str:
    """sha256 once per file version (the app rebuilds the point on every rerun)."""
    return sha256_file(path)


def write_point(run_dir, strategy: str, params: dict, out, **kw) -> dict:
    """Build, validate and atomically write an operating-point file; returns its dict."""
    data = build_point(run_dir, strategy, params, out=out, **kw)
    validate(data, where=str(out))
    try:
        atomic_write_json(out, data)
    except OSError as e:
        raise ValueError(f"{out}: cannot be written ({e.strerror or e})") from None
    return data


def point_json(data: dict) -> str:
    """The file's text, as `write_point` writes it (for downloads)."""
    return json.dumps(data, indent=2, sort_keys=True) + "\n"


def predict_command(point_file: str, input_file: str = "INPUT.csv", output_file: str = "predictions.jsonl") -> str:
    """The exact `core.predict` command that applies a point file."""
    return (f"python -m core.predict --point {shlex.quote(point_file)} --input {shlex.quote(input_file)} "
            f"--output {shlex.quote(output_file)}")


def app_export(run_dir: str | os.PathLike, cache, ev: dict, *, intervals: dict | None = None,
               guarantee: dict | None = None, suffix: str = "", precision: str = "fp32",
               batch_size: int | None = None) -> tuple[dict, str, str, str | None]:
    """What Explore's export shows for the current evaluation: (v1 dict with the run's absolute path, so
    the downloaded file works wherever it is saved on this machine; file name; the core.predict command
    for it; a plain sentence on why the point cannot run, or None). `intervals` and `guarantee` go into
    the promise as in `promise_from_evaluation`."""
    run_dir = Path(run_dir)
    data = point_from_evaluation(run_dir, cache, ev, intervals=intervals, guarantee=guarantee,
                                 precision=precision, batch_size=batch_size)
    fname = f"{run_dir.name}-{ev['strategy']}{'' if precision == 'fp32' else '-' + precision}{suffix}.json"
    problem = None
    if "labels" in STRATEGIES[ev["strategy"]].needs:
        problem = "This rule needs the gold labels: it is a ceiling to compare against, not a point to run."
    elif data["weights"]["sha256"] is None:
        problem = (f"This run saved no weights, so core.predict will refuse the file. Rebuild the weights with: "
                   f"{rebuild_command(run_dir)}")
    return data, fname, predict_command(fname), problem


# ---- what --intervals and --guarantee add: a command-line point carries what the app's downloads do --
GUARANTEE_KEYS = ("epsilon", "delta", "risk", "method", "seed", "calib_fraction")


def parse_guarantee(text: str | None) -> dict | None:
    """`--guarantee`'s value: a JSON object of calibrate's arguments (epsilon required, e.g.
    '{"epsilon": 0.01, "delta": 0.1}') or a bare epsilon ('0.01'). None when not given."""
    if text is None:
        return None
    example = '\'{"epsilon": 0.01, "delta": 0.1}\' or 0.01'
    try:
        value = json.loads(text)
    except json.JSONDecodeError as e:
        raise ValueError(f"--guarantee is not valid JSON ({e.msg}); write e.g. {example}") from None
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        value = {"epsilon": value}
    if not isinstance(value, dict):
        raise ValueError(f"--guarantee must be a JSON object or a number, e.g. {example}")
    unknown = sorted(set(value) - set(GUARANTEE_KEYS))
    if unknown:
        raise ValueError(f"--guarantee: unknown key(s) {unknown}; known: {', '.join(GUARANTEE_KEYS)}")
    if "epsilon" not in value:
        raise ValueError(f"--guarantee needs an epsilon, e.g. {example}")
    return value


def promise_extras(run_dir: str | os.PathLike, strategy: str, params: dict, *, intervals: bool = False,
                   guarantee: dict | None = None) -> tuple[str, dict, dict]:
    """(strategy, params, `write_point` keywords) for a point that carries what Explore's downloads carry.
    `guarantee` (calibrate's arguments) calibrates the rule's swept knob on held-out rows, the other knobs
    as given, and returns the calibrated setting with its guarantee record (the calibrated download);
    `intervals` adds the setting's 95% paired bootstrap interval of its dev score (the export beside the
    knobs). Neither: the arguments unchanged and no keywords."""
    if not intervals and guarantee is None:
        return strategy, params, {}
    from core.engine.cache import ExitCache
    from core.engine.calibrate import calibrate, guarantee_record
    from core.engine.metrics import cache_features, point_intervals
    from core.engine.strategies import apply_features

    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise ValueError(f"{run_dir}: no such run folder")
    cache = ExitCache.load(run_dir)
    f = cache_features(cache)
    extras = {}
    if guarantee is not None:
        knob = STRATEGIES[strategy].knob if strategy in STRATEGIES else None
        cal = calibrate(cache, strategy, feats=f, **guarantee, **{k: v for k, v in params.items() if k != knob})
        strategy, params = cal.strategy, dict(cal.params)
        extras["guarantee"] = guarantee_record(cal)
    if intervals:
        pred = apply_features(strategy, f, **resolve_params(strategy, dict(params), cache.L))[1]
        s_int, _ = point_intervals(cache, pred, full_pred=f.argmax[-1])
        extras["intervals"] = {"score": (s_int.low, s_int.high)}
    return strategy, params, extras


# ---- reading and validation ----------------------------------------------------------------------
def _shown(value, most: int = 40) -> str:
    """A value as a message quotes it: its JSON-ish repr cut to `most` characters, with its kind."""
    kinds = {list: "a list", tuple: "a list", dict: "an object", str: "a string", bool: "true/false",
             type(None): "null"}
    if isinstance(value, int) and not isinstance(value, bool) and abs(value) >= 10 ** most:
        return f"a {len(str(abs(value)))}-digit integer"
    text = repr(value)
    text = text if len(text) <= most else text[:most] + "..."
    kind = next((k for t, k in kinds.items() if isinstance(value, t)), None)
    return f"{text} ({kind})" if kind else text


def check_params(strategy: str, params, num_layers: int | None = None, *, where: str = "params",
                 complete: bool = True) -> dict:
    """The one check of an exit rule's knobs as a point file or `--params` gives them (used by
    `validate`, hence `read_point`, core.predict and `EarlyExitPredictor.from_point`, and by
    core.export's `--params`): every name is one the rule declares in `core.engine.strategies.STRATEGIES`
    (with `complete`, each declared one is there: a point file lists them all), of the declared type
    (numbers as numbers, not strings or lists; integers whole; finite) and in the declared range
    (a budget layer at most `num_layers`). Returns the params with defaults filled; ValueError
    '<where>: <rule>.<name> ...' otherwise."""
    def bad(msg):
        raise ValueError(f"{where}: {msg}")

    if strategy not in STRATEGIES:
        bad(f"unknown strategy {strategy!r}; valid: {', '.join(STRATEGIES)}")
    spec = STRATEGIES[strategy].params
    if not isinstance(params, dict):
        bad(f"must be a JSON object of {strategy}'s knobs ({', '.join(spec) or 'none'}), got {_shown(params)}")
    unknown = [k for k in params if k not in spec]
    if unknown:
        bad(f"unknown parameter {unknown[0]!r} for strategy {strategy!r}; valid: {', '.join(spec) or 'none'}")
    missing = [k for k in spec if k not in params]
    if complete and missing:
        bad(f"missing {', '.join(map(repr, missing))}: a point lists every knob of its rule "
            f"({strategy}: {', '.join(spec)}); export it again with `python -m core.export`")
    for name, value in params.items():
        p, knob = spec[name], f"{strategy}.{name}"
        if p.kind is bool:
            if not isinstance(value, bool):
                bad(f"{knob} must be true or false, got {_shown(value)}")
            continue
        if p.choices is not None:
            if not isinstance(value, str) or value not in p.choices:
                bad(f"{knob} must be one of {', '.join(p.choices)}; got {_shown(value)}")
            continue
        if isinstance(value, bool) or not isinstance(value, numbers.Real):
            bad(f"{knob} must be {'a whole number' if p.kind is int else 'a number'}, got {_shown(value)}")
        try:
            finite = math.isfinite(float(value))
        except OverflowError:
            bad(f"{knob} is too large to be a number here, got {_shown(value)}")
        if not finite:
            bad(f"{knob} must be a finite number, got {_shown(value)}")
        if p.kind is int and not float(value).is_integer():
            bad(f"{knob} must be a whole number, got {_shown(value)}")
        high = num_layers if (name == "layer" and num_layers is not None) else p.high
        if p.low is not None and value < p.low or high is not None and value > high:
            bad(f"{knob} = {_shown(value)} is out of range [{p.low}, {high if high is not None else 'inf'}]")
    try:
        return resolve_params(strategy, params, num_layers)
    except ValueError as e:
        bad(str(e))


def _check_metric(metric: str, num_labels: int, bad) -> None:
    """A metric core.engine.metrics.score knows, and F1-based ones only for two classes."""
    from core.engine.metrics import METRICS

    if metric not in METRICS:
        bad(f"metric {metric!r} is not one core.engine.metrics scores; valid: {', '.join(METRICS)}")
    if metric in ("f1", "acc_f1") and num_labels != 2:
        bad(f"metric {metric!r} needs two classes, label_names has {num_labels}")


def run_facts(run_dir: str | os.PathLike) -> dict:
    """What a point must agree with about the run in `run_dir`: label_names (in order), backbone, task,
    num_layers, as its config.json records them (cache.npz's header for what config.json lacks, as
    `point_from_evaluation` reads them); a fact neither file holds is left out."""
    run_dir = Path(run_dir)
    cfg_path, facts = run_dir / CONFIG_FILE, {}
    if cfg_path.is_file():
        cfg = read_json(cfg_path)
        if not isinstance(cfg, dict):
            raise ValueError(f"{cfg_path}: not a run's config (the top level is not a JSON object)")
        derived = cfg.get("derived") if isinstance(cfg.get("derived"), dict) else {}
        model = cfg.get("model") if isinstance(cfg.get("model"), dict) else {}
        facts = {"label_names": derived.get("label_names"), "task": derived.get("task"),
                 "num_layers": derived.get("num_layers"), "backbone": model.get("backbone") or cfg.get("backbone")}
    if any(facts.get(k) is None for k in ("label_names", "task", "num_layers", "backbone")) \
            and (run_dir / CACHE_FILE).is_file():
        from core.engine.cache import ExitCache

        cache = ExitCache.load(run_dir)
        meta = cache.meta if isinstance(cache.meta, dict) else {}
        found = {"label_names": list(cache.label_names), "task": meta.get("task"), "num_layers": cache.L,
                 "backbone": meta.get("backbone")}
        facts = {k: facts.get(k) if facts.get(k) is not None else found[k] for k in found}
    return {k: v for k, v in facts.items() if v is not None}


def check_against_run(data: dict, run_dir: Path, *, where: str) -> None:
    """The point's label_names, backbone, task and num_layers are the run's (`run_facts`); ValueError
    naming the field otherwise (reordered label names would give every row another class's name)."""
    facts = run_facts(run_dir)
    for name in ("label_names", "backbone", "task", "num_layers"):
        if name not in facts or data.get(name) == facts[name]:
            continue
        mine, theirs = data.get(name), facts[name]
        why = ""
        if name == "label_names" and isinstance(theirs, list) and sorted(mine) == sorted(map(str, theirs)):
            why = " (the same names in another order: every prediction would get another class's name)"
        raise ValueError(f"{where}: {name} {json.dumps(mine)} is not the run's {json.dumps(theirs)} "
                         f"({run_dir}){why}; export the point again with `python -m core.export --run {run_dir}`")


# ---- where results go ----------------------------------------------------------------------------
def check_output_path(path: str | os.PathLike, what: str, *, make_folder: bool = False) -> bool:
    """Refuse, before any work, an output path that cannot be written atomically: a folder, a device or
    pipe, a missing folder (unless `make_folder`: atomic writes create it), a folder where no file can
    be created (read-only file system, permissions: tried with a probe file, removed at once).
    Returns whether a file is there already (it will be replaced). ValueError '<what>: ...'."""
    p = Path(path).expanduser()
    if p.is_dir():
        raise ValueError(f"{what}: {p} is a folder; name a file, e.g. {p / 'out.json'}")
    if p.exists() and not p.is_file():
        raise ValueError(f"{what}: {p} is not a regular file (a device or a pipe); name a file")
    folder = p.absolute().parent
    while make_folder and not folder.exists() and folder != folder.parent:
        folder = folder.parent
    if not folder.is_dir():
        raise ValueError(f"{what}: folder {folder} does not exist")
    try:
        fd, probe = tempfile.mkstemp(dir=folder, prefix=f".{p.name}.", suffix=".probe")
        os.close(fd)
        os.unlink(probe)
    except OSError as e:
        raise ValueError(f"{what}: cannot write in {folder} ({e.strerror or e})") from None
    return p.is_file()


def check_free_space(path: str | os.PathLike, what: str, need_bytes: int) -> None:
    """Refuse an output whose folder has less free space than `need_bytes` (ValueError '<what>: ...')."""
    folder = Path(path).expanduser().absolute().parent
    while not folder.exists() and folder != folder.parent:  # atomic writes create missing folders
        folder = folder.parent
    st = os.statvfs(folder)
    free = st.f_bavail * st.f_frsize
    if free < need_bytes:
        raise ValueError(f"{what}: {folder} has {free:,} bytes free, the output needs about {need_bytes:,} "
                         "(the disk is full); free some space or write elsewhere")


def same_file(a: str | os.PathLike, b: str | os.PathLike) -> bool:
    """Whether two paths name one file (same device and inode, so symlinks and `./` spellings are
    caught); for a path not there yet, whether both resolve to the same place."""
    try:
        return os.path.samefile(a, b)
    except OSError:
        return os.path.realpath(a) == os.path.realpath(b)


RUN_FILES = (CONFIG_FILE, STATUS_FILE, METRICS_FILE, CACHE_FILE, WEIGHTS_FILE)  # never an output


def refuse_inputs_as_outputs(outputs: dict, inputs: dict) -> None:
    """ValueError when an output (option -> path) is the same file as an input or another output."""
    named = [(k, v) for k, v in outputs.items() if v is not None]
    for i, (what, path) in enumerate(named):
        for other, src in [*inputs.items(), *named[:i]]:
            if src is not None and same_file(path, src):
                raise ValueError(f"{what} {path} is the same file as {other} ({src}); writing it would "
                                 f"destroy that {'input' if other in inputs else 'output'}: name another file")


def _number(x) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x)


def validate(data, *, where: str) -> None:
    """Raise ValueError('<where>: <fault>') for any missing or malformed field."""
    def bad(msg):
        raise ValueError(f"{where}: {msg}")

    if not isinstance(data, dict):
        bad("not an operating-point file (the top level is not a JSON object)")
    if data.get("format") != FORMAT:
        bad(f"not an operating-point file (format is {data.get('format')!r}, expected {FORMAT!r}); "
            "write one with `python -m core.export` or Explore's export")
    if data.get("format_version") not in READ_VERSIONS:
        bad(f"format_version {data.get('format_version')!r} is not supported (this version reads "
            f"{' and '.join(map(str, READ_VERSIONS))})")
    if data["format_version"] >= 2:
        for name in ("precision", "batch_size"):
            if name not in data:
                bad(f"missing field {name!r} (a version-2 point names its precision and batch size)")
        try:
            check_precision(data["precision"], data["batch_size"])
        except ValueError as e:
            bad(str(e))
    for name, kind in _TOP_FIELDS.items():
        if name not in data:
            bad(f"missing field {name!r}")
        if not isinstance(data[name], kind) or isinstance(data[name], bool):
            bad(f"field {name!r} has the wrong type ({type(data[name]).__name__})")
    w = data["weights"]
    if w.get("file") != WEIGHTS_FILE:
        bad(f"weights.file must be {WEIGHTS_FILE!r}, got {w.get('file')!r}")
    sha = w.get("sha256")
    if sha is not None and (not isinstance(sha, str) or len(sha) != 64
                            or any(c not in "0123456789abcdef" for c in sha)):
        bad("weights.sha256 is not a 64-digit lowercase hex digest")
    names = data["label_names"]
    if len(names) < 2 or not all(isinstance(n, str) for n in names):
        bad("label_names must list at least two class names (strings)")
    if data["num_layers"] < 1:
        bad(f"num_layers must be >= 1, got {data['num_layers']}")
    if data["strategy"] not in STRATEGIES:
        bad(f"unknown strategy {data['strategy']!r}; valid: {', '.join(STRATEGIES)}")
    if "labels" in STRATEGIES[data["strategy"]].needs:
        bad(f"strategy {data['strategy']!r} needs the gold labels; it cannot run on new text")
    try:
        check_params(data["strategy"], data["params"], data["num_layers"], where="params")
    except ValueError as e:
        bad(str(e))
    _check_metric(data["metric"], len(names), bad)
    promise = data["promise"]
    for name in PROMISED:
        p = promise.get(name)
        if not isinstance(p, dict) or "value" not in p or "interval" not in p:
            bad(f"promise.{name} must be {{'value': number or null, 'interval': [lo, hi] or null}}")
        if p["value"] is not None and not _number(p["value"]):
            bad(f"promise.{name}.value is not a finite number")
        iv = p["interval"]
        if iv is not None and (not isinstance(iv, list) or len(iv) != 2 or not all(map(_number, iv))
                               or iv[0] > iv[1]):
            bad(f"promise.{name}.interval must be [lo, hi] with lo <= hi")
    for name in ("score", "full_score", "layer_speedup"):
        if promise[name]["value"] is None:
            bad(f"promise.{name}.value is missing")
    on = promise.get("measured_on")
    if not isinstance(on, dict) or not isinstance(on.get("rows"), int) or on["rows"] < 1:
        bad("promise.measured_on must say on how many rows (rows >= 1) the promise was measured")
    if "guarantee" not in promise or not isinstance(promise["guarantee"], (dict, type(None))):
        bad("promise.guarantee must be an object or null")


def read_point(path: str | os.PathLike, *, check_weights: bool = True) -> PointFile:
    """Load and validate an operating-point file; with `check_weights`, the run's weights must exist
    and match the recorded sha256. ValueError names the file and the fault."""
    path = Path(path)
    if not path.is_file():
        raise ValueError(f"{path}: operating-point file not found")
    try:
        data = read_json(path)
    except UnicodeDecodeError:
        raise ValueError(f"{path}: not a text file; an operating-point file is JSON") from None
    except RecursionError:
        raise ValueError(f"{path}: not an operating-point file (JSON nested too deeply to read)") from None
    except OSError as e:
        raise ValueError(f"{path}: cannot be read ({e.strerror or e})") from None
    validate(data, where=str(path))
    run_dir = Path(data["run"])
    if not run_dir.is_absolute():
        run_dir = (path.parent / run_dir)
    run_dir = Path(os.path.normpath(run_dir))
    if run_dir.is_dir():
        check_against_run(data, run_dir, where=str(path))
    if check_weights:
        weights = run_dir / WEIGHTS_FILE
        if not weights.is_file():
            raise ValueError(f"{path}: the weights it names are missing ({weights}); rebuild them with: "
                             f"{rebuild_command(run_dir)}")
        want = data["weights"]["sha256"]
        if want is None:
            raise ValueError(f"{path}: records no weights.sha256, so the weights cannot be checked; "
                             "export the point again with `python -m core.export`")
        got = sha256_file(weights)
        if got != want:
            raise ValueError(f"{path}: {weights} has sha256 {got[:12]}..., the point was made for "
                             f"{want[:12]}...; the run was retrained since: export the point again")
    return PointFile(path=path, data=data, run_dir=run_dir)


# ---- command line --------------------------------------------------------------------------------
def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m core.export",
                                 description="Write an operating-point file (version 2) for a run's exit rule.")
    ap.add_argument("--run", required=True, help="run folder (with cache.npz and model.safetensors)")
    ap.add_argument("--strategy", required=True, help=f"exit rule: {', '.join(STRATEGIES)}")
    ap.add_argument("--params", default="{}", help='the rule\'s knobs as JSON, e.g. \'{"threshold": 0.3}\'')
    ap.add_argument("--out", required=True, help="where to write the .json file")
    ap.add_argument("--precision", default="fp32", help="fp32 (default), int8 (CPU), fp16 / bf16 (CUDA): the run "
                    "needs that precision's cache (python -m core.cache_variant)")
    ap.add_argument("--batch-size", type=int, default=None, help="the batch size core.predict runs it at and its "
                    "wall-clock promise is read at (the caches' latency tables: 1 or 32)")
    ap.add_argument("--intervals", action="store_true",
                    help="add the setting's 95%% bootstrap interval of its dev score (as Explore's download does)")
    ap.add_argument("--guarantee", metavar="JSON", help='calibrate the rule\'s swept knob on held-out rows and '
                    'write that setting with its guarantee, e.g. \'{"epsilon": 0.01, "delta": 0.1}\' (also risk, '
                    'method, seed, calib_fraction; a bare number is epsilon); the other knobs come from --params')
    args = ap.parse_args(argv)
    try:
        try:
            params = json.loads(args.params)
        except json.JSONDecodeError as e:
            raise ValueError(f"--params is not valid JSON ({e.msg}); write e.g. '{{\"threshold\": 0.3}}'") from None
        except RecursionError:
            raise ValueError("--params is nested too deeply; write e.g. '{\"threshold\": 0.3}'") from None
        if not isinstance(params, dict):
            raise ValueError("--params must be a JSON object, e.g. '{\"threshold\": 0.3}'")
        if args.strategy in STRATEGIES:  # the knobs' types and ranges before any file is read
            check_params(args.strategy, params, where="--params", complete=False)
        check_precision(args.precision, args.batch_size, where="--")
        check_output_path(args.out, "--out", make_folder=True)
        check_free_space(args.out, "--out", 16 * 1024)  # a point file is a few kB
        refuse_inputs_as_outputs({"--out": args.out}, {f"the run's {f}": Path(args.run) / f for f in RUN_FILES})
        strategy, params, extras = promise_extras(args.run, args.strategy, params, intervals=args.intervals,
                                                  guarantee=parse_guarantee(args.guarantee))
        if args.precision != "fp32" and "guarantee" in extras:
            raise ValueError("--guarantee calibrates on the fp32 cache; use it with --precision fp32")
        data = write_point(args.run, strategy, params, args.out, precision=args.precision,
                           batch_size=args.batch_size, **extras)
    except (ValueError, OSError) as e:
        print(f"core.export: error: {e}", file=sys.stderr)
        return 2
    p = data["promise"]
    print(f"core.export: wrote {args.out}: {data['strategy']} {json.dumps(data['params'], sort_keys=True)}, "
          f"dev {data['metric']} {p['score']['value']:.4f} (full model {p['full_score']['value']:.4f}), "
          f"layer speed-up {p['layer_speedup']['value']:.2f}x, {data['precision']}"
          + (f", wall-clock {p['wallclock_speedup']['value']:.2f}x over fp32 full at batch size "
             f"{p['wallclock_batch_size']}" if p['wallclock_speedup']['value'] is not None else ""), file=sys.stderr)
    if p["guarantee"] is not None:
        print(f"guarantee: {p['guarantee']['guarantee']}", file=sys.stderr)
    print(f"run it with: {predict_command(args.out)}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
