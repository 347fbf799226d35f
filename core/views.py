"""Page logic that is not drawing: finding and loading runs, control specs, trace tables, figures.

Nothing here imports streamlit, so it is testable and benchmarkable on its own; the pages call these
functions and only lay out what comes back. Figures are plotly `go.Figure`s with SVG traces (no
WebGL), so they render in any browser and their points can be clicked.
"""
from __future__ import annotations

import json
import math
import os
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np
import pandas as pd
import plotly.graph_objects as go
from plotly.subplots import make_subplots

from core import metrics as M
from core.cache import ExitCache
from core.history import distinct_colors
from core.plain import plot_text
from core.runs import CACHE_FILE, DEFAULT_ROOT, METRICS_FILE, list_runs, read_config, read_metrics, read_status
from core.strategies import STRATEGIES, apply_features, features

ROOT_ENV = "EEL_CHECKPOINTS"

# one colour per strategy, the same on every page
COLORS = {
    "budget": "#94a3b8", "entropy": "#2563eb", "maxprob": "#0891b2", "patience": "#16a34a",
    "pcee": "#9333ea", "dge": "#ea580c", "voting": "#db2777", "lte": "#ca8a04", "oracle": "#111827",
}
RUN_COLORS = ["#2563eb", "#ea580c", "#16a34a", "#9333ea", "#db2777", "#0891b2", "#ca8a04", "#64748b"]

# plain one-line explanations, shown under each strategy's controls
EXPLAIN = {
    "budget": "Every example stops at the same layer. The static baseline every adaptive rule must beat.",
    "entropy": "Stop as soon as the exit is sure enough: normalized entropy H(p)/log K below the threshold.",
    "maxprob": "Stop as soon as the top class probability reaches the threshold.",
    "patience": "PABEE: stop when the prediction has not changed for `patience` consecutive layers.",
    "pcee": "PCEE-BERT: stop after `patience` consecutive layers that are all confident under the signal. "
            "Choices the paper leaves open: max-prob and learned confidence count at >= the threshold; "
            "the ensemble averages layers 1..m (§4.6.3), or only the confident run (`confident_run` variant).",
    "dge": "BADGE's divergence-guided exit: stop when this layer's distribution is close (divergence below "
           "the threshold) to at least `patience` earlier layers.",
    "voting": "Sun et al.: each layer votes its class; stop when the majority's vote count / l^k reaches "
              "delta (a count scaled by l^k, not a share). Choice the paper leaves open: a tie goes to the "
              "class the latest of the tied layers predicted.",
    "lte": "Learned exit (BERxiT): a small head predicts whether this layer is right; stop when its "
           "confidence reaches the threshold.",
    "oracle": "Stops at the first layer that is right. It reads the labels, so it is a ceiling, not a method.",
}

PARAM_LABELS = {
    ("budget", "layer"): "Exit layer",
    ("entropy", "threshold"): "Entropy threshold",
    ("maxprob", "threshold"): "Max-prob threshold",
    ("patience", "patience"): "Patience (unchanged layers)",
    ("pcee", "patience"): "Patience (confident layers)",
    ("pcee", "threshold"): "Confidence threshold",
    ("pcee", "signal"): "Confidence signal",
    ("pcee", "ensemble"): "Ensemble",
    ("pcee", "ensemble_span"): "Ensemble over",
    ("dge", "patience"): "Patience (agreeing earlier layers)",
    ("dge", "threshold"): "Divergence threshold",
    ("dge", "measure"): "Divergence measure",
    ("voting", "k"): "Layer exponent k",
    ("voting", "delta"): "Vote threshold delta",
    ("lte", "threshold"): "Learned-confidence threshold",
}

AXES = {
    "layer_speedup": "Layer speed-up (L / mean exit layer)",
    "saved_fraction": "Saved fraction (1 - mean exit layer / L)",
    "wallclock_speedup": "Wall-clock speed-up (estimated, batch 1)",
}

AXIS_SHORT = {"layer_speedup": "layer speed-up", "saved_fraction": "saved fraction",
              "wallclock_speedup": "wall-clock speed-up"}

METRIC_NAMES = {"accuracy": "Accuracy", "f1": "F1", "acc_f1": "Mean of accuracy and F1",
                "mcc": "Matthews correlation", "macro_f1": "Macro-F1"}


def metric_name(metric: str) -> str:
    return METRIC_NAMES.get(metric, metric)


# ---- finding runs -------------------------------------------------------------------------------
def checkpoint_root() -> Path:
    """The folder of run folders: $EEL_CHECKPOINTS, else core.runs.DEFAULT_ROOT."""
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
        info.error = "; ".join(errors) or None
        out.append(info)
    return out


def default_run(runs: list[RunInfo]) -> str | None:
    """The run a first visit opens: rotten_tomatoes-joint if present, else the first with a cache."""
    names = [r.name for r in runs if r.has_cache]
    if "rotten_tomatoes-joint" in names:
        return "rotten_tomatoes-joint"
    return names[0] if names else None


def compare_defaults(runs: list[RunInfo], current: str | None, limit: int = 6) -> list[str]:
    """The runs Compare opens with: the sidebar's run first, then other runs of its task (same metric,
    same dev set), up to `limit`; methods before extra seeds of a method already shown."""
    by_name = {r.name: r for r in runs}
    task = (by_name[current].config or {}).get("task") if current in by_name else None
    same = [r for r in runs if r.name != current and (task is None or (r.config or {}).get("task") == task)]
    seeds = [r for r in same if (r.config or {}).get("seed", 0) not in (0, None)]
    ordered = ([current] if current in by_name else []) + [r.name for r in same if r not in seeds] + \
              [r.name for r in seeds]
    return ordered[:limit]


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
    _figs: dict = field(default_factory=dict, repr=False)       # static figure parts, built once
    _texts: tuple | None = field(default=None, repr=False)
    argmax: np.ndarray | None = field(default=None, repr=False)    # [N, L] each exit's prediction
    maxprob: np.ndarray | None = field(default=None, repr=False)   # [N, L] each exit's top probability

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
        return [s for s in M.available_strategies(self.cache) if s != "oracle"]

    # -- derived, cached on the object --------------------------------------------------------
    def sweeps(self) -> pd.DataFrame:
        """Default-grid sweeps of every strategy (Oracle included), computed on first use."""
        if self._sweeps is None:
            self._sweeps = M.sweep_all(self.cache, feats=self.feats)
        return self._sweeps

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
        best = M.best_at(pts[pts["strategy"] == strategy], START_SPEEDUP)
        return json.loads(best.iloc[0]["params"]) if len(best) else {}

    def default_params(self, strategy: str) -> dict:
        return {c.name: c.default for c in self.controls(strategy)}

    def coerce_params(self, strategy: str, values: dict) -> dict:
        """Params of `strategy` from `values` (anything, e.g. from a URL) made valid."""
        return {c.name: c.coerce(values.get(c.name)) for c in self.controls(strategy)}

    def evaluate(self, strategy: str, params: dict) -> dict:
        """metrics.evaluate's result for one setting, with the score computed without sklearn's
        input validation when the metric is accuracy (4 ms a call, twice per evaluate): this runs
        for several rules on every slider move. Same keys and values as metrics.evaluate."""
        if self.metric != "accuracy":
            return M.evaluate(self.cache, strategy, feats=self.feats, **params)
        exit_layer, pred = apply_features(strategy, self.feats, **params)
        s = float((pred == self.cache.labels).mean())
        return {"strategy": strategy, "params": params, "score": s, "full_score": self.full_score,
                "delta_vs_full": s - self.full_score, "exit_layer": exit_layer, "pred": pred,
                **M.efficiency(exit_layer, self.L, self.cache.layer_ms, self.cache.embed_ms)}

    def intervals(self, strategy: str, params: dict, pred: np.ndarray | None = None):
        """(score interval, interval of the difference to the full model) of one setting: 95% paired
        bootstrap over the dev samples, memoized per (rule, params) so a rerun pays only for new knobs."""
        key = ("trust-iv", strategy, json.dumps(params, sort_keys=True, default=str))
        if key not in self._figs:
            old = [k for k in self._figs if k[0] == "trust-iv"]
            if len(old) > 256:
                for k in old[:128]:
                    del self._figs[k]
            if pred is None:
                pred = apply_features(strategy, self.feats, **params)[1]
            self._figs[key] = M.point_intervals(self.cache, pred, full_pred=self.argmax[:, -1])
        return self._figs[key]

    def texts(self) -> tuple[list[str], str | None]:
        """([N] display strings, a note when the texts could not be had). Never raises."""
        if self._texts is None:
            note = None
            try:
                raw = self.cache.get_texts()
                if len(raw) != self.cache.N:
                    raise ValueError(f"got {len(raw)} texts for {self.cache.N} samples")
                shown = [format_text(t) for t in raw]
            except Exception as e:  # core.data missing, data source offline, ...: show ids instead
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
    per_exit = M.per_exit_scores(cache)
    return RunData(name=path.name, path=path, cache=cache, feats=feats, per_exit=per_exit,
                   full_score=float(per_exit[-1]))


def _nice_ceil(x: float) -> float:
    if not np.isfinite(x) or x <= 0:
        return 1.0
    mag = 10 ** math.floor(math.log10(x))
    for m in (1, 2, 2.5, 5, 10):
        if m * mag >= x:
            return float(m * mag)
    return float(10 * mag)


def _controls_for(run: RunData, strategy: str) -> list[Control]:
    spec = STRATEGIES[strategy].params
    L = run.L
    out = []
    for name, p in spec.items():
        label = PARAM_LABELS.get((strategy, name), name)
        if p.kind is bool:
            out.append(Control(strategy, name, "toggle", label, bool(p.default), help=p.help))
        elif p.choices is not None:
            options = tuple(c for c in p.choices if not (c == "learned" and run.cache.confidence is None))
            default = p.default if p.default in options else options[0]
            out.append(Control(strategy, name, "select", label, default, options=options, help=p.help))
        elif p.kind is int:
            low = int(p.low if p.low is not None else 1)
            high = int(p.high) if p.high is not None else L
            if strategy == "dge" and name == "patience":
                high = max(L - 1, low + 1)  # counts earlier layers: at most L - 1 of them
            high = max(high, low + 1)
            default = p.default if p.default is not None else max(low, math.ceil(L / 2))
            out.append(Control(strategy, name, "slider", label, int(min(max(default, low), high)),
                               low, high, 1, help=p.help))
        else:  # float
            low = float(p.low if p.low is not None else 0.0)
            if p.high is not None:
                high, step, fmt = float(p.high), 0.001, "%.3f"
            elif strategy == "voting" and name == "k":
                high, step, fmt = 1.0, 0.05, "%.2f"
            elif strategy == "voting" and name == "delta":
                high, step, fmt = float(L), 0.05, "%.2f"
            elif strategy == "dge" and name == "threshold":
                # up to the largest divergence in the run, so every swept setting can be loaded
                finite = _kd_earlier(run.cache.probs)
                high = _nice_ceil(float(finite.max())) if finite.size else 1.0
                step, fmt = high / 2000, "%.4f"
            else:
                high, step, fmt = max(1.0, 2 * float(p.default)), 0.01, "%.2f"
            default = float(min(max(p.default, low), high))
            out.append(Control(strategy, name, "slider", label, default, low, high, step,
                               help=p.help, fmt=fmt))
    return out


def _kd_earlier(probs: np.ndarray) -> np.ndarray:
    """All S_kd(p_m, p_i) = -sum_k p_m(k) log p_i(k) for i < m (BADGE Eq. 4), flattened."""
    logp = np.log(np.clip(probs, 1e-12, None))
    kd = -np.einsum("nmk,nik->nmi", probs, logp)                     # [n, m, i]
    earlier = np.tri(probs.shape[1], k=-1, dtype=bool)
    return kd[:, earlier].ravel()


def describe_params(params: dict) -> str:
    """'threshold=0.3, patience=2' with short floats."""
    def fmt(v):
        return f"{v:.4g}" if isinstance(v, float) else str(v)
    return ", ".join(f"{k}={fmt(v)}" for k, v in params.items()) or "no parameters"


def strategy_title(strategy: str) -> str:
    s = STRATEGIES.get(strategy)
    return s.title if s and s.title else strategy


# ---- numbers for the current setting -------------------------------------------------------------
def summary_rows(ev: dict, L: int) -> dict:
    """The named quantities of one evaluation, ready to print."""
    wc = ev.get("wallclock_speedup")
    return {
        "score": ev["score"], "delta": ev["delta_vs_full"], "full": ev["full_score"],
        "mean_exit_layer": ev["mean_exit_layer"], "L": L,
        "layer_speedup": ev["layer_speedup"], "saved_fraction": ev["saved_fraction"],
        "wallclock_speedup": wc, "expected_ms": ev.get("expected_ms"),
    }


def operating_point(run: RunData, ev: dict) -> M.OperatingPoint:
    op = M.OperatingPoint.from_evaluation(run.name, run.cache, ev)
    op.extra = {k: run.meta.get(k) for k in ("task", "backbone", "method", "seed") if k in run.meta}
    if ev.get("expected_ms") is not None:
        op.extra["expected_ms"] = ev["expected_ms"]
        op.expected_ms = ev["expected_ms"]
    s_int, d_int = run.intervals(ev["strategy"], ev["params"], ev["pred"])
    op.score_interval, op.delta_interval = [s_int.low, s_int.high], [d_int.low, d_int.high]
    op.interval_note = (f"95% paired bootstrap over the {run.cache.N} dev samples "
                        f"({M.N_RESAMPLES} resamples, seed 0)")
    return op


def full_latency_ms(run: RunData) -> float | None:
    c = run.cache
    if c.layer_ms is None:
        return None
    return float(c.embed_ms or 0.0) + float(np.sum(c.layer_ms))


# ---- figures: Explore ----------------------------------------------------------------------------
# The hot path (a slider move on Explore) builds figures as plain dicts and wraps them without plotly's
# per-property validation, which costs ~10x more than the rest of the rerun; the colours and fonts come
# from Streamlit's chart theme.
_LAYOUT = dict(margin=dict(l=10, r=10, t=40, b=10),
               font=dict(family="Inter, system-ui, sans-serif", size=13),
               legend=dict(orientation="h", yanchor="bottom", y=1.02, xanchor="left", x=0))


def _fig(data: list[dict], layout: dict) -> go.Figure:
    """A go.Figure from trusted dicts, skipping plotly's (slow) validation where plotly allows it."""
    try:
        return go.Figure({"data": data, "layout": layout}, _validate=False)
    except TypeError:  # a plotly without the private switch
        return go.Figure({"data": data, "layout": layout})


def _own_front(df: pd.DataFrame, x: str) -> pd.DataFrame:
    """A strategy's own upper envelope (its Pareto points), for drawing one line per strategy."""
    return M.pareto(df, x=x, exclude=())


def _custom(df: pd.DataFrame) -> np.ndarray:
    """customdata of swept points: [strategy, params-json, title, readable setting] (a numpy string
    array: Streamlit deep-copies figures, and copying one array is cheaper than thousands of lists)."""
    return np.array([[s, p, strategy_title(s), describe_params(json.loads(p))]
                     for s, p in zip(df["strategy"], df["params"])], dtype=str).reshape(-1, 4)


def _hover(x: str) -> str:
    return ("<b>%{customdata[2]}</b><br>%{customdata[3]}<br>score %{y:.4f}<br>"
            + AXIS_SHORT[x] + " %{x:.3f}<extra></extra>")


def _static_traces(run: RunData, strategies: tuple[str, ...], x: str) -> list[dict]:
    """The parts of the trade-off chart that only depend on the run, the axis and the rules drawn
    (frontier, references, every swept point, each rule's envelope): built once per combination."""
    key = ("tradeoff", x, strategies)
    if key in run._figs:
        return run._figs[key]
    pts = run.sweeps()
    hover = _hover(x)
    data = []
    deployable = pts[pts["strategy"].isin(run.strategies)]
    front = M.pareto(deployable, x=x)
    if not front.empty:
        data.append(dict(type="scatter", x=front[x].to_numpy(dtype=float), y=front["score"].to_numpy(dtype=float), mode="lines",
                         name="Pareto frontier (all rules)", hoverinfo="skip",
                         line=dict(color="rgba(250,204,21,0.55)", width=12, shape="hv")))
    b = pts[pts["strategy"] == "budget"].sort_values(x)
    if not b.empty:
        data.append(dict(type="scatter", x=b[x].to_numpy(dtype=float), y=b["score"].to_numpy(dtype=float), mode="lines+markers",
                         name="Budgeted exit (static)", customdata=_custom(b), hovertemplate=hover,
                         line=dict(color=COLORS["budget"], dash="dash", width=1.5),
                         marker=dict(size=7, symbol="square", color=COLORS["budget"])))
    o = pts[pts["strategy"] == "oracle"]
    if not o.empty:
        data.append(dict(type="scatter", x=o[x].to_numpy(dtype=float), y=o["score"].to_numpy(dtype=float), mode="markers+text",
                         name="Oracle (reads labels)", text=["Oracle"], textposition="top center",
                         customdata=_custom(o), hovertemplate=hover,
                         marker=dict(size=14, symbol="star", color=COLORS["oracle"])))
    for s in strategies:
        df = pts[pts["strategy"] == s]
        if s == "budget" or df.empty:
            continue
        env = _own_front(df, x)
        color = COLORS.get(s, "#334155")
        data.append(dict(type="scatter", x=df[x].to_numpy(dtype=float), y=df["score"].to_numpy(dtype=float), mode="markers",
                         name=strategy_title(s), legendgroup=s, customdata=_custom(df), hovertemplate=hover,
                         marker=dict(size=7, color=color, opacity=0.35)))
        data.append(dict(type="scatter", x=env[x].to_numpy(dtype=float), y=env["score"].to_numpy(dtype=float), mode="lines",
                         legendgroup=s, showlegend=False, hoverinfo="skip", line=dict(color=color, width=2)))
    stale = [k for k in run._figs if k[0] == "tradeoff"]
    if len(stale) >= 48:  # many rule combinations seen: start over rather than grow
        for k in stale:
            del run._figs[k]
    run._figs[key] = data
    return data


BAND_POINTS = 40   # envelope points of the open rule that get a bootstrap interval (memoized per setting)


def _interval_band(run: RunData, strategy: str, x: str) -> list[dict]:
    """A shaded 95% band (paired bootstrap over dev samples) around the open rule's envelope."""
    key = ("band", strategy, x)
    if key not in run._figs:
        pts = run.sweeps()
        env = _own_front(pts[pts["strategy"] == strategy], x) if strategy in set(pts["strategy"]) else pts.iloc[:0]
        if len(env) > BAND_POINTS:
            env = env.iloc[np.unique(np.linspace(0, len(env) - 1, BAND_POINTS).round().astype(int))]
        if env.empty or env[x].isna().all():
            run._figs[key] = []
        else:
            ivs = [run.intervals(strategy, json.loads(p))[0] for p in env["params"]]
            xs = env[x].to_numpy(dtype=float).tolist()
            color = COLORS.get(strategy, "#334155")
            run._figs[key] = [
                dict(type="scatter", x=xs, y=[i.low for i in ivs], mode="lines", line=dict(width=0),
                     showlegend=False, hoverinfo="skip", legendgroup=strategy),
                dict(type="scatter", x=xs, y=[i.high for i in ivs], mode="lines", line=dict(width=0),
                     fill="tonexty", fillcolor=_rgba(color, 0.15), name=f"{strategy_title(strategy)}: 95% interval",
                     hoverinfo="skip", legendgroup=strategy)]
    return run._figs[key]


def _rgba(hex_color: str, alpha: float) -> str:
    h = hex_color.lstrip("#")
    return f"rgba({int(h[0:2], 16)},{int(h[2:4], 16)},{int(h[4:6], 16)},{alpha})"


def tradeoff_figure(run: RunData, strategies: list[str], current: dict[str, dict], *, x: str = "layer_speedup",
                    target_x: float | None = None, best: pd.DataFrame | None = None,
                    focus: str | None = None) -> go.Figure:
    """Score against speed-up: each strategy's sweep (faint points + its envelope), the budgeted
    exits and the Oracle as references, the Pareto frontier over all strategies, the current
    settings as big markers, and the best setting per strategy at the target.

    Every swept point carries customdata [strategy, params-json, title, setting] so a click can load it.
    """
    pts = run.sweeps()
    if x not in pts or pts[x].isna().all():
        x = "layer_speedup"
    data = list(_static_traces(run, tuple(sorted(strategies)), x))
    shapes = [dict(type="line", xref="paper", x0=0, x1=1, y0=run.full_score, y1=run.full_score,
                   line=dict(color="#475569", dash="dot", width=1))]
    notes = [dict(xref="paper", x=1, y=run.full_score, yanchor="top", xanchor="right", showarrow=False,
                  text=f"full model {run.full_score:.4f}", font=dict(size=11, color="#475569"))]
    if target_x is not None:
        shapes.append(dict(type="line", yref="paper", y0=0, y1=1, x0=target_x, x1=target_x,
                           line=dict(color="#64748b", dash="dot", width=1)))
        notes.append(dict(yref="paper", y=0, x=target_x, xanchor="left", yanchor="bottom", showarrow=False,
                          text=" target", font=dict(size=11, color="#64748b")))
    if focus is not None:
        data += _interval_band(run, focus, x)
    if best is not None and not best.empty:
        data.append(dict(type="scatter", x=best[x].tolist(), y=best["score"].tolist(), mode="markers",
                         name="Best at target", hovertemplate=_hover(x),
                         customdata=[[s, p, strategy_title(s), d] for s, p, d in
                                     zip(best["strategy"], best["params"], best["setting"])],
                         marker=dict(size=15, symbol="diamond-open", color="#0f172a", line=dict(width=2)),
                         **({"error_y": dict(type="data", symmetric=False, thickness=1.5, width=4, color="#0f172a",
                                            array=(best["score_high"] - best["score"]).tolist(),
                                            arrayminus=(best["score"] - best["score_low"]).tolist())}
                            if "score_low" in best else {})))
    for s, ev in current.items():  # current settings last, on top
        xv = ev.get(x)
        if xv is None:
            continue
        big = s == focus
        data.append(dict(
            type="scatter", x=[xv], y=[ev["score"]], mode="markers", legendgroup=s, showlegend=False,
            name=f"{strategy_title(s)}: current",
            marker=dict(size=20 if big else 13, color=COLORS.get(s, "#334155"), symbol="circle",
                        line=dict(color="#0f172a" if big else "white", width=3 if big else 2)),
            hovertemplate=f"<b>{strategy_title(s)} (current)</b><br>{describe_params(ev['params'])}"
                          "<br>score %{y:.4f}<br>%{x:.3f}<extra></extra>"))
    layout = dict(**_LAYOUT, height=460, clickmode="event+select", hovermode="closest", dragmode="zoom",
                  shapes=shapes, annotations=notes,
                  xaxis=dict(title=dict(text=AXES[x])),
                  yaxis=dict(title=dict(text=f"{metric_name(run.metric)} on the dev set")))
    return _fig(data, layout)


def exit_histogram(exit_layer: np.ndarray, right: np.ndarray, L: int) -> go.Figure:
    """How many samples leave at each layer, split into right and wrong at the exit."""
    layers = list(range(1, L + 1))
    n_right = np.bincount(exit_layer[right], minlength=L + 1)[1:].tolist()
    n_wrong = np.bincount(exit_layer[~right], minlength=L + 1)[1:].tolist()
    data = [dict(type="bar", x=layers, y=n_right, name="right at exit", marker=dict(color="#16a34a")),
            dict(type="bar", x=layers, y=n_wrong, name="wrong at exit", marker=dict(color="#dc2626"))]
    layout = dict(**_LAYOUT, barmode="stack", height=300,
                  xaxis=dict(title=dict(text="Exit layer"), tickmode="linear", dtick=1, range=[0.4, L + 0.6]),
                  yaxis=dict(title=dict(text="Samples")))
    return _fig(data, layout)


# ---- figures: Home ------------------------------------------------------------------------------
def home_threshold(run: RunData) -> float:
    """The entropy threshold Home illustrates: the run's starting knob (RunData.start_params)."""
    return float(run.default_params("entropy")["threshold"])


def home_rule_text(run: RunData) -> str:
    """Home's words for the rule its bars show."""
    text = f"normalized entropy below {home_threshold(run):.2f}"
    if run.start_params("entropy"):
        text += ", the setting that scores best on this run while saving at least a third of the layers"
    return text


def home_figure(run: RunData, threshold: float | None = None) -> go.Figure:
    """For a newcomer: each exit's score, and where an entropy rule lets the samples out."""
    L = run.L
    threshold = home_threshold(run) if threshold is None else threshold
    ev = run.evaluate("entropy", {"threshold": threshold})
    share = np.bincount(ev["exit_layer"], minlength=L + 1)[1:] / run.cache.N
    layers = np.arange(1, L + 1)
    fig = make_subplots(specs=[[{"secondary_y": True}]])
    fig.add_trace(go.Bar(x=layers, y=share * 100, name=f"% of samples that stop here (entropy < {threshold:.2f})",
                         marker_color="rgba(37,99,235,0.35)"), secondary_y=False)
    fig.add_trace(go.Scatter(x=layers, y=run.per_exit, mode="lines+markers",
                             name=f"{metric_name(run.metric)} if every sample stopped here",
                             line=dict(color="#0f172a", width=2.5)), secondary_y=True)
    fig.update_layout(**_LAYOUT, height=340, bargap=0.3)
    fig.update_xaxes(title_text="Layer (exit)", tickmode="linear", dtick=1)
    fig.update_yaxes(title_text="% of samples", secondary_y=False)
    fig.update_yaxes(title_text=metric_name(run.metric), secondary_y=True, showgrid=False, tickformat=".2f",
                     tickmode="auto")
    return fig


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
    logp = np.log(np.clip(p, 1e-12, None))
    layers = np.arange(1, L + 1)
    am = p.argmax(-1)
    counts = np.cumsum(am[:, None] == np.arange(K)[None, :], axis=0)  # [L, K] votes so far
    kd = -(p @ logp.T)                                               # [m, i] S_kd(p_m, p_i)
    mean_div = np.array([kd[m, :m].mean() if m else np.nan for m in range(L)])
    names = run.cache.label_names
    out = pd.DataFrame({
        "layer": layers,
        "prediction": [names[k] for k in am],
        "entropy": -(p * logp).sum(-1) / np.log(K),
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


def sample_figure(run: RunData, i: int, exits: pd.DataFrame) -> go.Figure:
    """Three strips over the same layer axis: the layers x classes heatmap of the probabilities, the
    per-layer signals the rules read, and where each rule lets the sample out."""
    c = run.cache
    L = run.L
    sig = sample_signals(run, i)
    layers = np.arange(1, L + 1)
    n_ex = max(len(exits), 1)
    heights = np.array([34 * c.K + 30, 230, 24 * n_ex + 30], dtype=float)
    fig = make_subplots(rows=3, cols=1, shared_xaxes=True, vertical_spacing=0.07,
                        row_heights=list(heights / heights.sum()),
                        subplot_titles=("Class probabilities at each exit (✓ = label)",
                                        "Signals the exit rules read", "Where each rule lets it out"))
    probs = c.probs[i].T                                             # [K, L]
    fig.add_trace(go.Heatmap(
        z=probs, x=layers, y=[plot_text(n) + (" ✓" if k == c.labels[i] else "") for k, n in enumerate(c.label_names)],
        zmin=0, zmax=1, colorscale="Blues", showscale=False,
        text=np.round(probs, 2), texttemplate="%{text:.2f}" if L * c.K <= 300 else None,
        hovertemplate="layer %{x}<br>%{y}: %{z:.3f}<extra></extra>"), row=1, col=1)
    styles = {"entropy": ("#2563eb", None), "max-prob": ("#0891b2", None), "vote share": ("#db2777", None),
              "divergence to earlier (mean KD)": ("#ea580c", "dot"), "learned confidence": ("#ca8a04", "dash")}
    for col, (color, dash) in styles.items():
        if col in sig:
            fig.add_trace(go.Scatter(x=layers, y=sig[col], mode="lines+markers", name=col,
                                     line=dict(color=color, dash=dash, width=2), marker=dict(size=6)),
                          row=2, col=1)
    if not exits.empty:
        ex = exits.iloc[::-1]                                        # first rule on top
        fig.add_trace(go.Scatter(
            x=ex["exit layer"], y=ex["title"], mode="markers", showlegend=False, name="exit",
            marker=dict(symbol="diamond", size=13, color=["#16a34a" if r else "#dc2626" for r in ex["right"]],
                        line=dict(color="white", width=1)),
            customdata=np.stack([ex["setting"], np.where(ex["right"], "right", "wrong"),
                                 [plot_text(p) for p in ex["prediction"]]], axis=-1),
            hovertemplate="<b>%{y}</b> exits at layer %{x}<br>%{customdata[0]}<br>"
                          "predicts %{customdata[2]} (%{customdata[1]})<extra></extra>"), row=3, col=1)
        for layer, title in zip(ex["exit layer"], ex["title"]):
            fig.add_shape(type="line", x0=0.5, x1=layer, y0=title, y1=title, row=3, col=1,
                          line=dict(color="#cbd5e1", width=2))
    # first class on top; categorical, so label names made of digits ("0", "1") stay names, not numbers
    fig.update_yaxes(autorange="reversed", type="category", row=1, col=1)
    fig.update_yaxes(title_text="value", row=2, col=1)
    fig.update_yaxes(showgrid=False, row=3, col=1)
    fig.update_xaxes(tickmode="linear", dtick=1, range=[0.5, L + 0.5])
    fig.update_xaxes(title_text="Layer", row=3, col=1)
    fig.update_layout(**{**_LAYOUT, "margin": dict(l=10, r=10, t=40, b=10)}, height=int(heights.sum() + 140))
    top = fig.layout.yaxis2.domain[1]
    fig.update_layout(legend=dict(orientation="v", x=1.01, xanchor="left", y=top, yanchor="top",
                                  font=dict(size=12)))
    for ann in fig.layout.annotations:
        ann.update(x=0, xanchor="left", font=dict(size=13, color="#334155"))
    return fig


def samples_scatter(df: pd.DataFrame, L: int, *, current: int | None = None, limit: int = 1500,
                    seed: int = 0) -> go.Figure:
    """Every (filtered) sample as a point: exit layer (jittered) against max-prob at its exit; the open
    sample ringed. customdata[0] is the sample's position in the cache, for click-to-open."""
    if len(df) > limit:
        df = df.sample(limit, random_state=seed)
    jitter = np.random.default_rng(seed).uniform(-0.28, 0.28, len(df))
    data = []
    for ok, name, color in ((True, "right at exit", "#16a34a"), (False, "wrong at exit", "#dc2626")):
        mask = (df["right"] == ok).to_numpy()
        d = df[mask]
        data.append(dict(
            type="scatter", x=(d["exit layer"].to_numpy() + jitter[mask]).tolist(), y=d["max-prob at exit"].tolist(),
            mode="markers", name=name,
            marker=dict(size=8, color=color, opacity=0.6, line=dict(color="white", width=0.5)),
            customdata=[[int(i), int(r), plot_text(str(t)[:90])] for i, r, t in zip(d.index, d["row"], d["text"])],
            hovertemplate="row %{customdata[1]}<br>%{customdata[2]}<br>max-prob %{y:.3f}<extra></extra>"))
    if current is not None and current in df.index:
        k = df.index.get_loc(current)
        data.append(dict(type="scatter", x=[float(df["exit layer"].iloc[k] + jitter[k])],
                         y=[float(df["max-prob at exit"].iloc[k])], mode="markers", name="open sample",
                         hoverinfo="skip", marker=dict(size=18, color="rgba(0,0,0,0)",
                                                       line=dict(color="#0f172a", width=2.5))))
    layout = dict(**_LAYOUT, height=320, clickmode="event+select", hovermode="closest",
                  xaxis=dict(title=dict(text="Exit layer (jittered)"), tickmode="linear", dtick=1, range=[0.5, L + 0.5]),
                  yaxis=dict(title=dict(text="Max-prob at exit")))
    return _fig(data, layout)


# ---- compare ------------------------------------------------------------------------------------
def run_summary(run: RunData) -> dict:
    sab = M.s_avg_best(run.per_exit)
    meta = run.meta
    return {"run": run.name, "task": meta.get("task"), "method": meta.get("method"),
            "backbone": meta.get("backbone"), "seed": meta.get("seed"), "metric": run.metric,
            "layers": run.L, "samples": run.cache.N, "S-avg": sab["s_avg"], "S-best": sab["s_best"],
            "best exit": sab["best_exit"], "last exit": float(run.per_exit[-1]),
            "overthinking gap": sab["s_best"] - float(run.per_exit[-1])}


def per_exit_figure(runs: list[RunData]) -> go.Figure:
    fig = go.Figure()
    for k, r in enumerate(runs):
        color = distinct_colors(len(runs))[k]  # apart for 30 runs
        layers = np.arange(1, r.L + 1)
        best = int(r.per_exit.argmax())
        fig.add_trace(go.Scatter(x=layers, y=r.per_exit, mode="lines+markers", name=r.name,
                                 line=dict(color=color, width=2.5), legendgroup=r.name,
                                 hovertemplate=f"{r.name}<br>exit %{{x}}: %{{y:.4f}}<extra></extra>"))
        fig.add_trace(go.Scatter(x=[best + 1], y=[r.per_exit[best]], mode="markers", showlegend=False,
                                 legendgroup=r.name, hoverinfo="skip",
                                 marker=dict(symbol="star", size=14, color=color, line=dict(color="white", width=1))))
    metrics = sorted({r.metric for r in runs})
    fig.update_layout(**_LAYOUT, height=380, xaxis=dict(title="Exit layer", tickmode="linear", dtick=1),
                      yaxis_title=" / ".join(metric_name(m) for m in metrics) + " of each exit on its own")
    return fig


def strategy_across_runs_figure(runs: list[RunData], strategy: str, x: str = "layer_speedup") -> go.Figure:
    fig = go.Figure()
    for k, r in enumerate(runs):
        pts = r.sweeps()
        df = pts[pts["strategy"] == strategy]
        if df.empty or df[x].isna().all():
            continue
        env = _own_front(df, x)
        color = distinct_colors(len(runs))[k]  # apart for 30 runs
        fig.add_trace(go.Scatter(x=df[x], y=df["score"], mode="markers", legendgroup=r.name, showlegend=False,
                                 marker=dict(size=6, color=color, opacity=0.3), hoverinfo="skip"))
        fig.add_trace(go.Scatter(x=env[x], y=env["score"], mode="lines+markers", name=r.name,
                                 legendgroup=r.name, line=dict(color=color, width=2.5), marker=dict(size=6),
                                 customdata=[describe_params(json.loads(p)) for p in env["params"]],
                                 hovertemplate=f"{r.name}<br>%{{customdata}}<br>score %{{y:.4f}}"
                                               "<br>%{x:.3f}<extra></extra>"))
    fig.update_layout(**_LAYOUT, height=380, xaxis_title=AXES[x], yaxis_title="Score on the dev set",
                      title=dict(text=strategy_title(strategy), x=0.0, y=0.98, font=dict(size=14)))
    return fig


def omega_records(path: str | os.PathLike) -> list[dict]:
    """The run's Ω records (kind "omega"), oldest first; [] when none or unreadable lines."""
    try:
        recs = read_metrics(path)
    except (ValueError, OSError):
        return []
    return [r for r in recs if r.get("kind") == "omega" and r.get("omega")]


def omega_figure(record: dict, title: str = "") -> go.Figure:
    om = np.asarray(record["omega"], dtype=float)                    # [L, T]
    terms = record.get("terms") or [f"term {j + 1}" for j in range(om.shape[1])]
    fig = go.Figure(go.Heatmap(
        z=om, x=terms, y=[f"exit {m + 1}" for m in range(om.shape[0])], colorscale="Viridis",
        text=np.round(om, 2), texttemplate="%{text:.2f}" if om.size <= 200 else None,
        hovertemplate="%{y}, %{x}: %{z:.3f}<extra></extra>", colorbar=dict(thickness=10)))
    sub = f"step {record.get('step', '?')}, epoch {record.get('epoch', '?')}"
    fig.update_layout(**{**_LAYOUT, "margin": dict(l=10, r=10, t=50, b=10)},
                      height=120 + 28 * om.shape[0], title=dict(text=f"{title}<br><sup>{sub}</sup>", x=0, font=dict(size=14)))
    fig.update_yaxes(autorange="reversed")
    return fig


def metrics_mtime(path: str | os.PathLike) -> float:
    p = Path(path) / METRICS_FILE
    try:
        return p.stat().st_mtime
    except OSError:
        return 0.0
