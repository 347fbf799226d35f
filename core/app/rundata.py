"""Run data for the pages: finding run folders, loading one (`RunData`), its caches, control specs,
and the tables the pages show (runs, traces, one sample's signals). No streamlit and no plotly here;
every figure is in core.app.figures.

`RunData` memoizes what it derives from its cache: `sweeps()`, `controls()`, `intervals()`, and a
general `memo(key, make)` that figures and trust views use for their own derived parts.
"""
from __future__ import annotations

import json
import math
import os
import re
import threading
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np
import pandas as pd

from core.engine import metrics
from core.engine.cache import ExitCache
from core.engine.features import features, normalized_entropy
from core.engine.registry import STRATEGIES, RegistryField
from core.engine.strategies import apply_features
from core.runs.folders import (
    CACHE_FILE,
    DEFAULT_ROOT,
    DIED,
    METRICS_FILE,
    list_runs,
    live_status,
    read_config,
    read_metrics,
    read_status,
)

ROOT_ENV = "EEL_CHECKPOINTS"

# a rule's explanation, title, tab label and parameter labels live in its core.engine.strategies registry entry
EXPLAIN = RegistryField("explain")

def metric_name(metric: str) -> str:
    return metrics.METRIC_WORDS.get(metric, metric)


# ---- finding runs -------------------------------------------------------------------------------
def checkpoint_root() -> Path:
    """The folder of run folders: $EEL_CHECKPOINTS, else core.runs.folders.DEFAULT_ROOT."""
    env = os.environ.get(ROOT_ENV, "").strip()
    return Path(env).expanduser() if env else DEFAULT_ROOT


@dataclass
class RunInfo:
    """What the run folder says about itself, read without loading the cache."""
    name: str
    path: Path
    config: dict | None = None
    status: dict | None = None
    has_cache: bool = False
    mtime: float = 0.0          # cache.npz modification time: the key of every cached derivation
    error: str | None = None    # config/status unreadable

    @property
    def state(self) -> str:
        return (self.status or {}).get("state", "done" if self.has_cache else "unknown")

    @property
    def died(self) -> str | None:
        """The sentence saying the run's training process died before it finished (state `died`)."""
        return (self.status or {}).get("died") if self.state == DIED else None


def scan_runs(root: str | os.PathLike | None = None) -> list[RunInfo]:
    """Every run folder under `root`; a folder whose files are corrupt is listed with its error."""
    out = []
    for path in list_runs(root if root is not None else checkpoint_root()):
        info = RunInfo(name=path.name, path=path)
        cache_file = path / CACHE_FILE
        if cache_file.exists():
            info.has_cache = True
            try:
                info.mtime = cache_file.stat().st_mtime
            except OSError:
                pass
        errors = []
        for attr, reader in (("config", read_config), ("status", read_status)):
            try:
                setattr(info, attr, reader(path))
            except (ValueError, OSError) as e:
                errors.append(str(e))
        info.status = live_status(path, info.status) if info.status is not None else None  # died?
        info.error = "; ".join(errors) or None
        out.append(info)
    return out


def default_run(runs: list[RunInfo]) -> str | None:
    """The run a first visit opens: rotten_tomatoes-joint if present, else the first with a cache."""
    names = [r.name for r in runs if r.has_cache]
    if "rotten_tomatoes-joint" in names:
        return "rotten_tomatoes-joint"
    return names[0] if names else None


def compare_defaults(runs: list[RunInfo], current: str | None, limit: int = 9) -> list[str]:
    """The runs Compare opens with: the sidebar's run and its seeds first, then other runs of its task
    (same metric, same dev set), a method's seeds always together (so their spread shows), methods with
    several seeds before single runs, up to `limit` runs (a group that does not fit is left out whole)."""
    by_name = {r.name: r for r in runs}
    task = (by_name[current].config or {}).get("task") if current in by_name else None
    same = [r.name for r in runs if task is None or (r.config or {}).get("task") == task]
    groups: dict[str, list[str]] = {}
    for name in same:
        groups.setdefault(SEED_SUFFIX.sub("", name), []).append(name)
    mine = SEED_SUFFIX.sub("", current) if current in by_name else None
    order = sorted(groups, key=lambda g: (g != mine, len(groups[g]) == 1))  # stable: folder order otherwise
    picked: list[str] = []
    for g in order:
        members = sorted(groups[g], key=lambda n: n != current)
        if len(picked) + len(members) <= limit:
            picked += members
        elif g == mine:  # the sidebar's run always, even when its seeds do not all fit
            picked += members[:limit]
    return picked[:limit]


SEED_SUFFIX = re.compile(r"-seed\d+$")  # run names of one method's extra seeds: <run>-seed1, <run>-seed2


# ---- one loaded run ----------------------------------------------------------------------------
@dataclass(frozen=True)
class Control:
    """One widget for one strategy parameter, derived from the engine's Param spec and the data."""
    strategy: str
    name: str
    widget: str                 # "slider", "select", "toggle"
    label: str
    default: object
    low: float | None = None
    high: float | None = None
    step: float | None = None
    options: tuple = ()
    help: str = ""
    fmt: str | None = None

    @property
    def key(self) -> str:
        return f"{self.strategy}.{self.name}"

    def coerce(self, value):
        """`value` made valid for this control (clamped, rounded to the step, or the default)."""
        if value is None:
            return self.default
        if self.widget == "toggle":
            return bool(value)
        if self.widget == "select":
            return value if value in self.options else self.default
        try:
            v = float(value)
        except (TypeError, ValueError):
            return self.default
        if not math.isfinite(v):
            return self.default
        v = min(max(v, self.low), self.high)
        if isinstance(self.default, int) and not isinstance(self.default, bool):
            return int(round(v))
        return v  # unrounded: an exact candidate setting (a breakpoint) must survive loading


_MISSING = object()
START_SPEEDUP = 1.5   # the layer speed-up every rule's knobs open at (RunData.start_params)


@dataclass
class RunData:
    """A loaded run: the cache plus what every page derives from it, each computed once."""
    name: str
    path: Path
    cache: ExitCache
    feats: object = None
    per_exit: np.ndarray | None = None
    full_score: float = float("nan")
    _sweeps: pd.DataFrame | None = field(default=None, repr=False)
    _controls: dict = field(default_factory=dict, repr=False)
    _memo: dict = field(default_factory=dict, repr=False)       # memo(): derived parts, built once
    _texts: tuple | None = field(default=None, repr=False)
    argmax: np.ndarray | None = field(default=None, repr=False)    # [N, L] each exit's prediction
    maxprob: np.ndarray | None = field(default=None, repr=False)   # [N, L] each exit's top probability
    # one RunData serves every session (st.cache_resource), each session's script in its own thread
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False, compare=False)
    _making: dict = field(default_factory=dict, repr=False, compare=False)   # memo key -> Lock while being made

    def __post_init__(self):
        self.argmax = self.cache.probs.argmax(-1)
        self.maxprob = self.cache.probs.max(-1)

    @property
    def L(self) -> int:
        return self.cache.L

    @property
    def metric(self) -> str:
        return self.cache.metric

    @property
    def meta(self) -> dict:
        return self.cache.meta

    @property
    def strategies(self) -> list[str]:
        """Strategies with controls (all the engine has that this run supports, Oracle aside)."""
        return [s for s in metrics.available_strategies(self.cache) if s != "oracle"]

    # -- derived, cached on the object --------------------------------------------------------
    def sweeps(self) -> pd.DataFrame:
        """Default-grid sweeps of every strategy (Oracle included), computed on first use (once, however
        many sessions open the run at the same time)."""
        if self._sweeps is None:
            self._sweeps = self.memo(("sweeps",), lambda: metrics.sweep_all(self.cache, feats=self.feats))
        return self._sweeps

    @property
    def has_sweeps(self) -> bool:
        """Whether `sweeps()` has run (the first call takes seconds on a large run)."""
        return self._sweeps is not None

    def memo(self, key: tuple, make, *, limit: int | None = None):
        """The value stored under `key` (a tuple whose first item names its kind), made by `make()` on
        first use. With `limit`: once that many values of the key's kind are stored, the older half is
        dropped before a new one is added, so a long session of knob moves does not grow without bound.

        Safe across threads: sessions asking for one key at once get one `make()`, the others wait for
        its value; a key's eviction by another session never loses the value being returned."""
        found = self._memo.get(key, _MISSING)
        if found is not _MISSING:
            return found
        with self._lock:
            gate = self._making.setdefault(key, threading.Lock())
        with gate:
            found = self._memo.get(key, _MISSING)
            if found is not _MISSING:
                return found
            value = make()
            with self._lock:
                if limit is not None:
                    same = [k for k in self._memo if k[0] == key[0]]
                    if len(same) >= limit:
                        for k in same[: max(len(same) // 2, 1)]:
                            del self._memo[k]
                self._memo[key] = value
                self._making.pop(key, None)
        return value

    def controls(self, strategy: str) -> list[Control]:
        """The widgets of `strategy`, their defaults set to the run's starting knobs (`start_params`)."""
        if strategy not in self._controls:
            start = self.start_params(strategy)
            self._controls[strategy] = [replace(c, default=c.coerce(start[c.name])) if c.name in start else c
                                        for c in _controls_for(self, strategy)]
        return self._controls[strategy]

    def start_params(self, strategy: str) -> dict:
        """The knobs a rule opens with on this run: its best swept setting at >= START_SPEEDUP layer
        speed-up. The papers' fixed defaults (entropy 0.3, ...) let almost nothing out on a model whose
        exits are rarely that sure (binary MiniLM exits: mean exit 5.8 of 6); this starts every rule at
        a setting that saves about a third of the layers. {} (the engine's defaults) if none gets there."""
        pts = self.sweeps()
        best = metrics.best_at(pts[pts["strategy"] == strategy], START_SPEEDUP)
        return json.loads(best.iloc[0]["params"]) if len(best) else {}

    def default_params(self, strategy: str) -> dict:
        return {c.name: c.default for c in self.controls(strategy)}

    def coerce_params(self, strategy: str, values: dict) -> dict:
        """Params of `strategy` from `values` (anything, e.g. from a URL) made valid."""
        return {c.name: c.coerce(values.get(c.name)) for c in self.controls(strategy)}

    def evaluate(self, strategy: str, params: dict) -> dict:
        """metrics.evaluate's result for one setting (the full score reused, not recomputed)."""
        return metrics.evaluate(self.cache, strategy, feats=self.feats, full_score=self.full_score, **params)

    def intervals(self, strategy: str, params: dict, pred: np.ndarray | None = None):
        """(score interval, interval of the difference to the full model) of one setting: 95% paired
        bootstrap over the dev samples, memoized per (rule, params) so a rerun pays only for new knobs."""
        def make():
            p = apply_features(strategy, self.feats, **params)[1] if pred is None else pred
            return metrics.point_intervals(self.cache, p, full_pred=self.argmax[:, -1])
        return self.memo(("trust-iv", strategy, json.dumps(params, sort_keys=True, default=str)), make, limit=256)

    def texts(self) -> tuple[list[str], str | None]:
        """([N] display strings, a note when the texts could not be had). Never raises."""
        if self._texts is None:
            note = None
            try:
                raw = self.cache.get_texts()
                if len(raw) != self.cache.N:
                    raise ValueError(f"got {len(raw)} texts for {self.cache.N} samples")
                shown = [format_text(t) for t in raw]
            except Exception as e:  # core.data.tasks missing, data source offline, ...: show ids instead
                raw = shown = [f"row {i}" for i in self.row_ids()]
                note = (f"The texts of this run could not be restored ({type(e).__name__}: {e}); "
                        "samples are shown by their row id in the dev set.")
            self._texts = (shown, note, raw)
        return self._texts[:2]

    def raw_text(self, i: int) -> list[str]:
        """Sample i's text as a list: one sentence, or the two of a pair."""
        self.texts()
        t = self._texts[2][i]
        return [str(x) for x in t] if isinstance(t, (list, tuple)) else [str(t)]

    def row_ids(self) -> list[int]:
        src = self.cache.source or {}
        ids = src.get("row_ids")
        return [int(i) for i in ids] if ids is not None else list(range(self.cache.N))


def format_text(t) -> str:
    if isinstance(t, (list, tuple)):
        return "  ‖  ".join(str(x) for x in t)
    return str(t)


def load_run(path: str | os.PathLike) -> RunData:
    """Load a run folder's cache and its cheap derivations. ValueError names the file when corrupt."""
    path = Path(path)
    if path.is_dir() and not (path / CACHE_FILE).exists():
        raise ValueError(f"{path / CACHE_FILE}: no exit cache yet (is the run still training?)")
    try:
        cache = ExitCache.load(path)
    except FileNotFoundError as e:
        raise ValueError(f"{path}: no such run folder") from e
    feats = features(cache.probs, labels=cache.labels, confidence=cache.confidence)
    per_exit = metrics.per_exit_scores(cache)
    return RunData(name=path.name, path=path, cache=cache, feats=feats, per_exit=per_exit,
                   full_score=float(per_exit[-1]))


def _controls_for(run: RunData, strategy: str) -> list[Control]:
    """The widgets of `strategy`'s knobs on this run, from the registry entry: kinds, ranges (a knob's
    own `slider` ends where it has no upper bound), and choices this run can serve."""
    spec = STRATEGIES[strategy]
    L = run.L
    out = []
    for name, p in spec.params.items():
        label = spec.labels.get(name, name)
        if p.kind is bool:
            out.append(Control(strategy, name, "toggle", label, bool(p.default), help=p.help))
        elif p.choices is not None:
            needs = {c: spec.option_needs.get((name, c)) for c in p.choices}
            options = tuple(c for c in p.choices if needs[c] != "confidence" or run.cache.confidence is not None)
            default = p.default if p.default in options else options[0]
            out.append(Control(strategy, name, "select", label, default, options=options, help=p.help))
        elif p.kind is int:
            low = int(p.low if p.low is not None else 1)
            high = int(p.slider(run.feats)[0]) if p.slider else (int(p.high) if p.high is not None else L)
            high = max(high, low + 1)
            default = p.default if p.default is not None else max(low, math.ceil(L / 2))
            out.append(Control(strategy, name, "slider", label, int(min(max(default, low), high)),
                               low, high, 1, help=p.help))
        else:  # float
            low = float(p.low if p.low is not None else 0.0)
            if p.high is not None:
                high, step, fmt = float(p.high), 0.001, "%.3f"
            elif p.slider is not None:
                high, step, fmt = p.slider(run.feats)
            else:
                high, step, fmt = max(1.0, 2 * float(p.default)), 0.01, "%.2f"
            default = float(min(max(p.default, low), high))
            out.append(Control(strategy, name, "slider", label, default, low, high, step,
                               help=p.help, fmt=fmt))
    return out


def describe_params(params: dict) -> str:
    """'threshold=0.3, patience=2' with short floats."""
    def fmt(v):
        return f"{v:.4g}" if isinstance(v, float) else str(v)
    return ", ".join(f"{k}={fmt(v)}" for k, v in params.items()) or "no parameters"


def strategy_title(strategy: str) -> str:
    s = STRATEGIES.get(strategy)
    return s.title if s and s.title else strategy


# ---- numbers for the current setting -------------------------------------------------------------
def full_latency_ms(run: RunData) -> float | None:
    return metrics.full_latency_ms(run.cache)


def latency_range_ms(run: RunData) -> tuple[float, float]:
    """(batch-1 latency when every sample stops at exit 1, that of the full model); needs layer_ms."""
    lat = metrics.exit_latency_ms(run.cache.layer_ms, run.cache.embed_ms)
    return float(lat[1]), float(lat[-1])


# ---- Home's words -------------------------------------------------------------------------------
def home_threshold(run: RunData) -> float:
    """The entropy threshold Home illustrates: the run's starting knob (RunData.start_params)."""
    return float(run.default_params("entropy")["threshold"])


def home_rule_text(run: RunData) -> str:
    """Home's words for the rule its bars show."""
    text = f"normalized entropy below {home_threshold(run):.2f}"
    if run.start_params("entropy"):
        text += ", the setting that scores best on this run while saving at least a third of the layers"
    return text


def runs_table(infos: list[RunInfo], loaded: dict[str, RunData | str]) -> pd.DataFrame:
    """One row per run folder; `loaded[name]` is the RunData, or the error text."""
    rows = []
    for info in infos:
        cfg = info.config or {}
        item = loaded.get(info.name)
        row = {"run": info.name, "state": info.state, "task": cfg.get("task"), "method": cfg.get("method"),
               "backbone": cfg.get("backbone"), "samples": None, "layers": None, "full model": None,
               "best exit": None, "note": info.error or ""}
        if isinstance(item, RunData):
            meta = item.meta
            row.update(task=meta.get("task", row["task"]), method=meta.get("method", row["method"]),
                       backbone=meta.get("backbone", row["backbone"]), samples=item.cache.N, layers=item.L,
                       **{"full model": round(item.full_score, 4),
                          "best exit": f"{int(item.per_exit.argmax()) + 1} ({item.per_exit.max():.4f})"})
        elif isinstance(item, str):
            row["state"], row["note"] = "unreadable", item
        if info.died:
            row["note"] = "; ".join(n for n in (info.died, row["note"]) if n)
        elif not info.has_cache:
            row["note"] = row["note"] or "no exit cache yet"
        rows.append(row)
    return pd.DataFrame(rows)


# ---- traces -------------------------------------------------------------------------------------
def trace_table(run: RunData, exit_layer: np.ndarray, pred: np.ndarray) -> pd.DataFrame:
    """One row per sample under the current exit rule (index = sample position in the cache)."""
    c = run.cache
    y = c.labels
    names = np.asarray(c.label_names, dtype=object)
    am = run.argmax                                                  # [N, L]
    right_at = am == y[:, None]
    first_right = np.where(right_at.any(1), right_at.argmax(1) + 1, 0)
    overthink = right_at[:, :-1].any(1) & ~right_at[:, -1]
    texts, _ = run.texts()
    conf = run.maxprob[np.arange(c.N), exit_layer - 1]
    return pd.DataFrame({
        "row": run.row_ids(),
        "text": texts,
        "label": names[y],
        "prediction": names[pred],
        "exit layer": exit_layer,
        "right": pred == y,
        "max-prob at exit": conf.round(4),
        "first right layer": first_right,
        "full model right": right_at[:, -1],
        "overthinking": overthink,
    })


def filter_traces(df: pd.DataFrame, *, outcome: str = "all", layers: tuple[int, int] | None = None,
                  overthinking: bool = False, query: str = "") -> pd.DataFrame:
    """Rows matching every filter. `outcome`: all, right, wrong. `query`: case-insensitive substring
    of the text (or the row id when the query is a number)."""
    keep = np.ones(len(df), dtype=bool)
    if outcome == "right":
        keep &= df["right"].to_numpy()
    elif outcome == "wrong":
        keep &= ~df["right"].to_numpy()
    if layers is not None:
        lo, hi = layers
        el = df["exit layer"].to_numpy()
        keep &= (el >= lo) & (el <= hi)
    if overthinking:
        keep &= df["overthinking"].to_numpy()
    q = (query or "").strip()
    if q:
        hit = df["text"].str.contains(q, case=False, regex=False, na=False).to_numpy(dtype=bool, copy=True)
        if q.isdigit():
            hit = hit | (df["row"].to_numpy() == int(q))
        keep &= hit
    return df[keep]


def sample_signals(run: RunData, i: int) -> pd.DataFrame:
    """Per layer for sample i: the signals the rules look at (computed here from its [L, K] probs)."""
    p = run.cache.probs[i].astype(np.float64)                        # [L, K]
    L, K = p.shape
    layers = np.arange(1, L + 1)
    am = p.argmax(-1)
    counts = np.cumsum(am[:, None] == np.arange(K)[None, :], axis=0)  # [L, K] votes so far
    kd = features(p[None]).divergence("kd")[:, :, 0]                 # [m, i] S_kd(p_m, p_i), i < m
    mean_div = np.array([kd[m, :m].mean() if m else np.nan for m in range(L)])
    names = run.cache.label_names
    out = pd.DataFrame({
        "layer": layers,
        "prediction": [names[k] for k in am],
        "entropy": normalized_entropy(p),
        "max-prob": p.max(-1),
        "vote share": counts.max(-1) / layers,
        "divergence to earlier (mean KD)": mean_div,
    })
    if run.cache.confidence is not None:
        out["learned confidence"] = run.cache.confidence[i]
    return out


def sample_exits(run: RunData, i: int, settings: dict[str, dict]) -> pd.DataFrame:
    """Where each strategy (at the given settings) lets sample i out, and what it predicts there."""
    c = run.cache
    sl = slice(i, i + 1)
    f = features(c.probs[sl], labels=c.labels[sl], confidence=None if c.confidence is None else c.confidence[sl])
    rows = []
    for s in [*run.strategies, "oracle"]:
        params = settings.get(s, run.default_params(s) if s != "oracle" else {})
        try:
            el, pr = apply_features(s, f, **params)
        except ValueError:
            continue
        rows.append({"strategy": s, "title": strategy_title(s), "setting": describe_params(params),
                     "exit layer": int(el[0]), "prediction": c.label_names[int(pr[0])],
                     "right": bool(pr[0] == c.labels[i])})
    return pd.DataFrame(rows)


# ---- compare ------------------------------------------------------------------------------------
def run_summary(run: RunData) -> dict:
    sab = metrics.s_avg_best(run.per_exit)
    meta = run.meta
    return {"run": run.name, "task": meta.get("task"), "method": meta.get("method"),
            "backbone": meta.get("backbone"), "seed": meta.get("seed"), "metric": run.metric,
            "layers": run.L, "samples": run.cache.N, "S-avg": sab["s_avg"], "S-best": sab["s_best"],
            "best exit": sab["best_exit"], "last exit": float(run.per_exit[-1]),
            "overthinking gap": sab["s_best"] - float(run.per_exit[-1])}


def omega_records(path: str | os.PathLike) -> list[dict]:
    """The run's Ω records (kind "omega"), oldest first; [] when none or unreadable lines."""
    try:
        recs = read_metrics(path)
    except (ValueError, OSError):
        return []
    return [r for r in recs if r.get("kind") == "omega" and r.get("omega")]


def metrics_mtime(path: str | os.PathLike) -> float:
    p = Path(path) / METRICS_FILE
    try:
        return p.stat().st_mtime
    except OSError:
        return 0.0


def config_of(folder) -> dict:
    """A run folder's config.json, or {} when it is missing or unreadable (the figure then has no drift)."""
    try:
        return read_config(folder) or {}
    except (ValueError, OSError):
        return {}
