"""Exit strategies: where every sample leaves a multi-exit model, given every exit's probabilities.

    apply(strategy, probs, *, labels=None, confidence=None, **params) -> (exit_layer, pred)

`probs` is [N, L, K]; `exit_layer` counts from 1 to L. Every rule is written as two arrays over all
samples and layers, computed with numpy at once (no per-sample loop):

    fire[n, m]     the rule lets sample n out at layer m (it only looks at layers <= m: causal)
    pred_at[n, m]  what it predicts if it exits there

A sample exits at its first firing layer; one that never fires exits at layer L with the rule's final
prediction (layer L's argmax unless the rule defines its own, as voting and PCEE-ensemble do). Because
every rule is causal, `decide` on one sample's first m layers gives the same answer as `apply` on the
whole cache, which is what the real layer-by-layer predictor relies on.
"""
from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from functools import cached_property
from typing import Any, Callable

import numpy as np

EPS = 1e-12  # probabilities are clipped here before any log


def normalized_entropy(probs: np.ndarray, axis: int = -1, *, logp: np.ndarray | None = None) -> np.ndarray:
    """H(p) / log K over the class axis, in [0, 1]; `logp` (log probabilities clipped at EPS) when the
    caller has them already. The one implementation the rules, the app and the Playground use."""
    if logp is None:
        logp = np.log(np.clip(probs, EPS, None))
    return -(probs * logp).sum(axis) / np.log(probs.shape[axis])


# ---- per-cache features, computed once and shared by every rule and every grid point ------------
# Internally every array is layer-major ([L, N] or [K, L, N]): numpy is slow at reducing or scanning a
# short last axis (K is 2 or 3, L is 6 to 24), and fast at elementwise work on long contiguous rows,
# so the rules loop over the few layers or classes and stay vectorized over the samples.
class ExitFeatures:
    """Derived arrays of one probs tensor [N, L, K]; each computed on first use, all layer-major."""

    def __init__(self, probs: np.ndarray, confidence: np.ndarray | None = None,
                 labels: np.ndarray | None = None):
        self.probs = probs
        self.confidence = confidence
        self.labels = labels
        self.N, self.L, self.K = probs.shape

    @cached_property
    def planes(self) -> np.ndarray:  # [K, L, N] probabilities
        return np.ascontiguousarray(self.probs.transpose(2, 1, 0))

    @cached_property
    def log_planes(self) -> np.ndarray:  # [K, L, N] log probabilities, clipped at EPS
        return np.log(np.clip(self.planes, EPS, None))

    @cached_property
    def entropy(self) -> np.ndarray:  # [L, N] normalized entropy H(p) / log K, in [0, 1]
        return normalized_entropy(self.planes, axis=0, logp=self.log_planes)

    @cached_property
    def maxprob(self) -> np.ndarray:  # [L, N]
        return self.planes.max(0)

    @cached_property
    def argmax(self) -> np.ndarray:  # [L, N]; ties go to the lower class, as np.argmax does
        best = self.planes[0].copy()
        idx = np.zeros(best.shape, dtype=np.int64)
        for k in range(1, self.K):               # np.argmax(axis=0) would copy and transpose
            better = self.planes[k] > best
            idx[better] = k
            np.maximum(best, self.planes[k], out=best)
        return idx

    @cached_property
    def conf(self) -> np.ndarray:  # [L, N] learned confidence
        return np.ascontiguousarray(self.require_confidence("this rule").T)

    def argmax_at(self, layer0: np.ndarray) -> np.ndarray:
        """[N] argmax of each sample's probabilities at its 0-based layer `layer0[n]`."""
        if "argmax" in self.__dict__:
            return self.argmax[layer0, np.arange(self.N)]
        return self.probs[np.arange(self.N), layer0].argmax(-1)

    @cached_property
    def votes(self) -> tuple[np.ndarray, np.ndarray]:
        """Sun et al. §3.4: ([L, N] top vote count among layers 1..l, [L, N] the majority class).

        Ties go to the class that the latest of the tied layers predicted.
        """
        counts = np.zeros((self.K, self.N), dtype=np.int64)
        last_seen = np.zeros((self.K, self.N), dtype=np.int64)
        top = np.empty((self.L, self.N), dtype=np.int64)
        majority = np.empty((self.L, self.N), dtype=np.int64)
        classes = np.arange(self.K)[:, None]
        for m in range(self.L):
            hit = self.argmax[m][None, :] == classes                      # [K, N]
            counts += hit
            last_seen[hit] = m + 1
            top[m] = counts.max(0)
            majority[m] = (counts * (self.L + 1) + last_seen).argmax(0)  # count first, recency second
        return top, majority

    def divergence(self, measure: str) -> np.ndarray:
        """[L, L, N] S(p_m, p_i) at [m, i] for i < m (BADGE Eq. 3-4); +inf elsewhere."""
        key = f"_div_{measure}"
        if key not in self.__dict__:
            p, logp = self.planes[:, :, None, :], self.log_planes                # p_m: [K, m, 1, N]
            cross = -(p * logp[:, None, :, :]).sum(0)                              # -sum_k p_m log p_i
            if measure == "kd":  # Eq. 4
                s = cross
            elif measure == "kl":  # KL(p_m || p_i) = -H(p_m) + cross-entropy
                s = cross - self.entropy[:, None, :] * np.log(self.K)
            elif measure == "js":  # 1/2 KL(p_m || M) + 1/2 KL(p_i || M), M = (p_m + p_i) / 2
                q = self.planes[:, None, :, :]                                      # p_i: [K, 1, i, N]
                log_mix = np.log(np.clip(0.5 * (p + q), EPS, None))
                s = 0.5 * ((p * (logp[:, :, None, :] - log_mix)).sum(0)
                           + (q * (logp[:, None, :, :] - log_mix)).sum(0))
            else:
                raise ValueError(f"unknown divergence measure {measure!r}; valid: kd, kl, js")
            earlier = np.tri(self.L, k=-1, dtype=bool)[:, :, None]                 # [m, i, 1]: i < m
            self.__dict__[key] = np.where(earlier, s, np.inf)
        return self.__dict__[key]

    def confident(self, signal: str, threshold: float) -> np.ndarray:
        """[L, N] bool: is layer m confident under `signal` (PCEE-BERT §3.2)?"""
        if signal == "entropy":
            return self.entropy < threshold
        if signal == "maxprob":
            return self.maxprob >= threshold
        if signal == "learned":
            self.require_confidence("pcee with signal='learned'")
            return self.conf >= threshold
        raise ValueError(f"unknown confidence signal {signal!r}; valid: entropy, maxprob, learned")

    def require_confidence(self, who: str) -> np.ndarray:
        if self.confidence is None:
            raise ValueError(f"{who} needs `confidence` [N, L] (learned exit heads); this run has none")
        return self.confidence

    def require_labels(self, who: str) -> np.ndarray:
        if self.labels is None:
            raise ValueError(f"{who} needs `labels` [N]")
        return self.labels


def run_length(flags: np.ndarray) -> np.ndarray:
    """[L, N] bool -> [L, N] int: cnt_m = cnt_{m-1} + 1 if flags_m else 0 (PABEE; PCEE-BERT Eq. 2)."""
    out = np.zeros(flags.shape, dtype=np.int64)
    out[0] = flags[0]
    for m in range(1, len(flags)):
        np.multiply(out[m - 1] + 1, flags[m], out=out[m])
    return out


# ---- the rules: each returns fire [L, N], pred_at [L, N] | None, final prediction [N] | None ------
RuleResult = tuple[np.ndarray, np.ndarray | None, np.ndarray | None]


def _budget(f: ExitFeatures, *, layer: int) -> RuleResult:
    fire = np.zeros((f.L, f.N), dtype=bool)
    fire[layer - 1] = True
    return fire, None, None


def _entropy(f: ExitFeatures, *, threshold: float) -> RuleResult:
    return f.entropy < threshold, None, None


def _maxprob(f: ExitFeatures, *, threshold: float) -> RuleResult:
    return f.maxprob >= threshold, None, None


def _patience(f: ExitFeatures, *, patience: int) -> RuleResult:
    # PABEE: cnt_1 = 0; cnt_m = cnt_{m-1} + 1 if argmax p_m == argmax p_{m-1} else 0
    same = np.zeros((f.L, f.N), dtype=bool)
    same[1:] = f.argmax[1:] == f.argmax[:-1]
    return run_length(same) >= patience, None, None


PCEE_SPANS = ("all_passed", "confident_run")


def _pcee(f: ExitFeatures, *, patience: int, threshold: float, signal: str = "entropy",
          ensemble: bool = False, ensemble_span: str = "all_passed") -> RuleResult:
    # PCEE-BERT Eq. 2-3: pct_m = pct_{m-1} + 1 if layer m is confident else 0; exit when pct_m >= patience.
    # Choice (the paper leaves it open): max-prob and learned confidence count as confident at >= the
    # threshold (entropy at <), as `ExitFeatures.confident` has it.
    run = run_length(f.confident(signal, threshold))
    fire = run >= patience
    if not ensemble:
        return fire, None, None
    if ensemble_span == "all_passed":
        # §4.6.3 cross-layer ensemble "across layers that the forward pass has gone through already":
        # the mean of p_1..p_m at layer m (layers 1..L when the rule never fires); argmax of the sum
        return fire, (csum := np.cumsum(f.planes, axis=1)).argmax(0), csum[:, -1].argmax(0)
    # variant `confident_run`: average p over the confident run that triggered the exit, i.e. the
    # last `patience` layers up to m. Without an exit, the confident run ending at L (if any), else p_L.
    csum = np.zeros((f.K, f.L + 1, f.N), dtype=np.float64)
    np.cumsum(f.planes, axis=1, out=csum[:, 1:])
    span = np.where(fire, patience, np.maximum(run, 1))                     # [L, N] layers averaged
    start = np.arange(1, f.L + 1)[:, None] - span                           # [L, N] window start (0-based)
    window = csum[:, 1:, :] - np.take_along_axis(csum, np.broadcast_to(start, (f.K, f.L, f.N)), axis=1)
    pred_at = window.argmax(0)
    return fire, pred_at, pred_at[-1]


def _dge(f: ExitFeatures, *, patience: int, threshold: float, measure: str = "kd") -> RuleResult:
    # BADGE Eq. 3: cnt_m = sum_{i<m} 1(S(p_m, p_i) < tau); exit when cnt_m >= patience
    cnt = (f.divergence(measure) < threshold).sum(1)
    return cnt >= patience, None, None


def _voting(f: ExitFeatures, *, k: float, delta: float) -> RuleResult:
    # Sun et al. Eq. 23: V_l = max_c #{j <= l : argmax p_j = c} / l^k; exit when V_l >= delta
    top, majority = f.votes
    fire = top / (np.arange(1, f.L + 1, dtype=np.float64)[:, None] ** k) >= delta
    return fire, majority, majority[-1]


def _lte(f: ExitFeatures, *, threshold: float) -> RuleResult:
    # BERxiT learned exit: first m with confidence_m >= threshold
    f.require_confidence("lte")
    return f.conf >= threshold, None, None


def _oracle(f: ExitFeatures) -> RuleResult:
    # Sun et al.: the first exit whose prediction is right; none right -> layer L
    labels = f.require_labels("oracle")
    return f.argmax == labels[None, :], None, None


# ---- registry -----------------------------------------------------------------------------------
@dataclass(frozen=True)
class Param:
    kind: type
    default: Any
    low: float | None = None
    high: float | None = None
    choices: tuple | None = None
    help: str = ""


@dataclass(frozen=True)
class Strategy:
    """Everything about one exit rule, in one place: the engine reads `rule`, `params`, `needs` and
    the settings; the app and the report read the words, the colour and the order (registry order)."""
    name: str
    rule: Callable[..., RuleResult]
    params: dict[str, Param] = field(default_factory=dict)
    needs: tuple[str, ...] = ()  # "labels", "confidence"
    title: str = ""
    source: str = ""
    tab: str = ""                # short label (Explore's tab, pickers)
    color: str = "#334155"       # the same on every page
    explain: str = ""            # one plain line under the rule's controls
    labels: dict[str, str] = field(default_factory=dict)    # param name -> widget label
    grid: Callable[[ExitFeatures], list[dict]] | None = None      # quantile grid (metrics.default_grid)
    settings: Callable[[ExitFeatures], list[dict]] | None = None  # every candidate setting, where the
    #   rule has no single swept signal (exit_signal); None: the signal's breakpoints

    @property
    def label(self) -> str:
        return self.tab or self.title or self.name


class RegistryField(Mapping):
    """A live read-only {rule name: one field of its entry} over STRATEGIES, so a rule registered
    later (a test, a plug-in) shows up wherever the app looks one up."""

    def __init__(self, attr: str):
        self.attr = attr

    def __getitem__(self, name: str):
        return getattr(STRATEGIES[name], self.attr)

    def __iter__(self):
        return iter(STRATEGIES)

    def __len__(self) -> int:
        return len(STRATEGIES)


def quantile_grid(values: np.ndarray, n: int, *, include=()) -> list[float]:
    qs = np.quantile(values, np.linspace(0, 1, n))
    return sorted({round(float(v), 6) for v in np.concatenate([qs, include])})


def _patience_grid(f: ExitFeatures, most: int, thresholds: list[float]) -> list[dict]:
    return [{"patience": p, "threshold": t} for p in range(1, most + 1) for t in thresholds]


def _voting_grid(f: ExitFeatures) -> list[dict]:
    grid = []
    for k in VOTING_KS:
        # every value V_l can take: c / l^k for 1 <= c <= l <= L
        vals = sorted({c / l ** k for l in range(1, f.L + 1) for c in range(1, l + 1)})
        step = max(1, len(vals) // 12)
        grid += [{"k": k, "delta": round(v, 6)} for v in vals[::step]]
    return grid


def _kd_thresholds(f: ExitFeatures) -> list[float]:
    div = f.divergence("kd")
    return [t + 1e-6 for t in quantile_grid(div[np.isfinite(div)], 12)]


_THRESHOLD = dict(kind=float, low=0.0, high=1.0)
_BY_LAYER = lambda f: [{"layer": m} for m in range(1, f.L + 1)]           # noqa: E731
_BY_PATIENCE = lambda f: [{"patience": q} for q in range(1, f.L + 1)]     # noqa: E731
# Thresholds of the grids are taken at quantiles of the signal itself, so the points spread along the
# speed-up axis whatever the model's calibration.
STRATEGIES: dict[str, Strategy] = {s.name: s for s in [
    Strategy("budget", _budget, {"layer": Param(int, None, 1, None, help="exit layer for everyone")},
             title="Budgeted exit", source="PCEE-BERT", tab="Budget", color="#94a3b8",
             explain="Every example stops at the same layer. The static baseline every adaptive rule must beat.",
             labels={"layer": "Exit layer"}, grid=_BY_LAYER, settings=_BY_LAYER),
    Strategy("entropy", _entropy, {"threshold": Param(default=0.3, help="exit when H(p)/log K < threshold", **_THRESHOLD)},
             title="Entropy", source="BranchyNet, DeeBERT, FastBERT", tab="Entropy", color="#2563eb",
             explain="Stop as soon as the exit is sure enough: normalized entropy H(p)/log K below the threshold.",
             labels={"threshold": "Entropy threshold"},
             # fires when H < t: thresholds just above observed entropies
             grid=lambda f: [{"threshold": min(1.0, t + 1e-6)} for t in quantile_grid(f.entropy, 40, include=[0.0, 1.0])]),
    Strategy("maxprob", _maxprob, {"threshold": Param(default=0.9, help="exit when max_k p(k) >= threshold", **_THRESHOLD)},
             title="Max-prob", source="Shallow-Deep, RightTool", tab="Max-prob", color="#0891b2",
             explain="Stop as soon as the top class probability reaches the threshold.",
             labels={"threshold": "Max-prob threshold"},
             grid=lambda f: [{"threshold": t} for t in quantile_grid(f.maxprob, 40, include=[1.0 / f.K, 1.0])]),
    Strategy("patience", _patience, {"patience": Param(int, 2, 1, None, help="consecutive unchanged predictions")},
             title="PABEE patience", source="PABEE (LeeBERT)", tab="PABEE", color="#16a34a",
             explain="PABEE: stop when the prediction has not changed for `patience` consecutive layers.",
             labels={"patience": "Patience (unchanged layers)"}, grid=_BY_PATIENCE, settings=_BY_PATIENCE),
    Strategy("pcee", _pcee, {
        "patience": Param(int, 2, 1, None, help="consecutive confident layers"),
        "threshold": Param(default=0.3, help="confidence threshold (entropy: <, others: >=)", **_THRESHOLD),
        "signal": Param(str, "entropy", choices=("entropy", "maxprob", "learned")),
        "ensemble": Param(bool, False, help="predict the mean of p over layers, not layer m's own p"),
        "ensemble_span": Param(str, "all_passed", choices=PCEE_SPANS,
                               help="layers the ensemble averages: all_passed = 1..m (PCEE-BERT §4.6.3), "
                                    "confident_run = the last `patience` confident layers (a variant)"),
    }, title="PCEE patient & confident", source="PCEE-BERT", tab="PCEE", color="#9333ea",
        explain="PCEE-BERT: stop after `patience` consecutive layers that are all confident under the signal. "
                "Choices the paper leaves open: max-prob and learned confidence count at >= the threshold; "
                "the ensemble averages layers 1..m (§4.6.3), or only the confident run (`confident_run` variant).",
        labels={"patience": "Patience (confident layers)", "threshold": "Confidence threshold",
                "signal": "Confidence signal", "ensemble": "Ensemble", "ensemble_span": "Ensemble over"},
        grid=lambda f: _patience_grid(f, min(f.L, 4), [min(1.0, t + 1e-6) for t in quantile_grid(f.entropy, 12)])),
    Strategy("dge", _dge, {
        "patience": Param(int, 2, 1, None, help="earlier layers that must agree"),
        "threshold": Param(float, 0.3, 0.0, None, help="divergence below which two layers agree"),
        "measure": Param(str, "kd", choices=("kd", "kl", "js")),
    }, title="DGE divergence-based", source="BADGE", tab="DGE", color="#ea580c",
        explain="BADGE's divergence-guided exit: stop when this layer's distribution is close (divergence below "
                "the threshold) to at least `patience` earlier layers.",
        labels={"patience": "Patience (agreeing earlier layers)", "threshold": "Divergence threshold",
                "measure": "Divergence measure"},
        grid=lambda f: _patience_grid(f, max(1, min(f.L - 1, 4)), _kd_thresholds(f))),
    Strategy("voting", _voting, {
        "k": Param(float, 0.5, 0.0, None, help="layer-count exponent (paper: 0, 0.25, 0.5, 0.75)"),
        "delta": Param(float, 2.0, 0.0, None, help="exit when V_l >= delta"),
    }, title="Ensemble voting", source="Sun et al.", tab="Voting", color="#db2777",
        explain="Sun et al.: each layer votes its class; stop when the majority's vote count / l^k reaches "
                "delta (a count scaled by l^k, not a share). Choice the paper leaves open: a tie goes to the "
                "class the latest of the tied layers predicted.",
        labels={"k": "Layer exponent k", "delta": "Vote threshold delta"}, grid=_voting_grid),
    Strategy("lte", _lte, {"threshold": Param(default=0.5, help="exit when learned confidence >= threshold", **_THRESHOLD)},
             needs=("confidence",), title="Learned exit (LTE)", source="BERxiT", tab="LTE", color="#ca8a04",
             explain="Learned exit (BERxiT): a small head predicts whether this layer is right; stop when its "
                     "confidence reaches the threshold.",
             labels={"threshold": "Learned-confidence threshold"},
             grid=lambda f: [{"threshold": t} for t in quantile_grid(f.confidence, 40, include=[0.0, 1.0])]),
    Strategy("oracle", _oracle, {}, needs=("labels",), title="Oracle", source="Sun et al.", tab="Oracle",
             color="#111827", explain="Stops at the first layer that is right. It reads the labels, so it is a "
                                      "ceiling, not a method.",
             grid=lambda f: [{}], settings=lambda f: [{}]),
]}


def deployable() -> list[str]:
    """The rules a model can deploy (every registered one but the label-reading Oracle), in registry order."""
    return [n for n, s in STRATEGIES.items() if "labels" not in s.needs]


def resolve_params(strategy: str, params: dict, num_layers: int | None = None) -> dict:
    """Check names, types and ranges of `params` for `strategy`; fill defaults. ValueError otherwise."""
    if strategy not in STRATEGIES:
        raise ValueError(f"unknown strategy {strategy!r}; valid: {', '.join(STRATEGIES)}")
    spec = STRATEGIES[strategy].params
    unknown = set(params) - set(spec)
    if unknown:
        valid = ", ".join(spec) or "none"
        raise ValueError(f"unknown parameter(s) {sorted(unknown)} for strategy {strategy!r}; valid: {valid}")
    out = {}
    for name, p in spec.items():
        value = params.get(name, p.default)
        if value is None:
            raise ValueError(f"strategy {strategy!r} needs parameter {name!r}")
        if p.kind is bool:
            if not isinstance(value, (bool, np.bool_)):
                raise ValueError(f"{strategy}.{name} must be True or False, got {value!r}")
            value = bool(value)
        elif p.kind is int:
            if isinstance(value, (bool, np.bool_)) or not float(value).is_integer():
                raise ValueError(f"{strategy}.{name} must be an integer, got {value!r}")
            value = int(value)
        elif p.kind is float:
            value = float(value)
            if not np.isfinite(value):
                raise ValueError(f"{strategy}.{name} must be a finite number, got {value!r}")
        elif p.choices is not None and value not in p.choices:
            raise ValueError(f"{strategy}.{name} must be one of {', '.join(p.choices)}; got {value!r}")
        high = num_layers if (name == "layer" and num_layers is not None) else p.high
        if p.low is not None and value < p.low or high is not None and value > high:
            rng = f"[{p.low}, {high if high is not None else 'inf'}]"
            raise ValueError(f"{strategy}.{name} = {value!r} is out of range {rng}")
        out[name] = value
    return out


def _check_probs(probs) -> np.ndarray:
    probs = np.asarray(probs)
    if probs.ndim != 3:
        raise ValueError(f"probs must be [N, L, K] (samples, layers, classes); got shape {probs.shape}")
    if probs.shape[0] == 0 or probs.shape[1] == 0 or probs.shape[2] < 2:
        raise ValueError(f"probs needs N >= 1, L >= 1 and K >= 2; got shape {probs.shape}")
    if not np.issubdtype(probs.dtype, np.floating):
        raise ValueError(f"probs must be floating point, got {probs.dtype}")
    if np.isnan(probs).any():
        raise ValueError("probs contains NaN")
    return probs


def features(probs, *, labels=None, confidence=None) -> ExitFeatures:
    """Validate inputs once and wrap them for repeated evaluation (sweeps)."""
    probs = _check_probs(probs)
    n, num_layers, _ = probs.shape
    if labels is not None:
        labels = np.asarray(labels)
        if labels.shape != (n,):
            raise ValueError(f"labels must have shape [{n}], got {labels.shape}")
    if confidence is not None:
        confidence = np.asarray(confidence)
        if confidence.shape != (n, num_layers):
            raise ValueError(f"confidence must have shape [{n}, {num_layers}], got {confidence.shape}")
        if np.isnan(confidence).any():
            raise ValueError("confidence contains NaN")
    return ExitFeatures(probs, confidence=confidence, labels=labels)


def apply_features(strategy: str, f: ExitFeatures, **params) -> tuple[np.ndarray, np.ndarray]:
    """`apply` on precomputed features (what sweeps call in their inner loop)."""
    params = resolve_params(strategy, params, f.L)
    fire, pred_at, final = STRATEGIES[strategy].rule(f, **params)   # [L, N]
    fired = fire.any(axis=0)
    first = np.where(fired, fire.argmax(axis=0), f.L - 1)              # 0-based exit layer
    if pred_at is None:
        pred = f.argmax_at(first)
    else:
        pred = np.where(fired, pred_at[first, np.arange(f.N)], final)
    return (first + 1).astype(np.int64), pred.astype(np.int64)


def apply(strategy: str, probs, *, labels=None, confidence=None, **params) -> tuple[np.ndarray, np.ndarray]:
    """Exit layer (1..L) and prediction of every sample under `strategy` with `params`."""
    if strategy not in STRATEGIES:
        raise ValueError(f"unknown strategy {strategy!r}; valid: {', '.join(STRATEGIES)}")
    return apply_features(strategy, features(probs, labels=labels, confidence=confidence), **params)


def decide(strategy: str, probs_prefix, *, confidence=None, label=None, **params) -> tuple[bool, int]:
    """For ONE sample's layers 1..m ([m, K]): does the rule fire at layer m, and what does it predict?

    The rules are causal, so a predictor that stops at the first m where this fires makes the same
    decision as `apply` on the full cache.
    """
    probs_prefix = np.asarray(probs_prefix)
    if probs_prefix.ndim != 2:
        raise ValueError(f"probs_prefix must be [m, K] for one sample, got shape {probs_prefix.shape}")
    conf = None if confidence is None else np.asarray(confidence, dtype=np.float32)[None, : probs_prefix.shape[0]]
    labels = None if label is None else np.asarray([label])
    f = features(probs_prefix[None], labels=labels, confidence=conf)
    spec_params = resolve_params(strategy, params)
    if strategy == "budget" and spec_params["layer"] > f.L:
        return False, int(f.argmax[-1, 0])
    fire, pred_at, _ = STRATEGIES[strategy].rule(f, **spec_params)
    pred = f.argmax[-1, 0] if pred_at is None else pred_at[-1, 0]
    return bool(fire[-1, 0]), int(pred)


# ---- exact candidate settings: the knob values where some sample's exit changes -----------------
# Every rule with a continuous knob fires at layer m exactly when one per-(layer, sample) signal
# crosses the knob, so its breakpoints are finitely many and can be listed. (Issue 9.)
@dataclass
class ExitSignal:
    """A rule at fixed other knobs, written as `fire[m, n] = signal[m, n] < knob` (fires_below) or
    `signal[m, n] >= knob` (not fires_below). Same fire, pred_at and final as the rule itself."""
    strategy: str
    knob: str                         # the swept parameter ("threshold" or "delta")
    fixed: dict                       # the other knobs, resolved
    signal: np.ndarray                # [L, N] float64; +-inf where the rule can never fire
    fires_below: bool
    pred_at: np.ndarray | None        # [L, N] or None (the exit's own argmax)
    final: np.ndarray | None          # [N] or None (layer L's argmax)
    low: float | None
    high: float | None

    def records(self) -> np.ndarray:
        """[L, N] bool: layers where the signal reaches a new extreme toward firing (a breakpoint). The
        last layer is never one: firing there or running to the end gives the same exit and prediction."""
        s = self.signal if self.fires_below else -self.signal
        rec = np.zeros(s.shape, dtype=bool)
        rec[0] = np.isfinite(s[0])
        best = s[0].copy()
        for m in range(1, len(s)):
            rec[m] = s[m] < best
            np.minimum(best, s[m], out=best)
        rec[-1] = False
        return rec & np.isfinite(s)

    def knob_values(self, breakpoints: np.ndarray | None = None, *, in_range_only: bool = True) -> np.ndarray:
        """One knob value per distinct exit configuration, from the safest (fewest samples fire) to the
        most aggressive. Fires-below rules get midpoints between breakpoints (robust to rounding);
        fires-at-or-above rules get the breakpoints themselves (exactly attainable values, e.g. V_l)."""
        u = np.unique(self.signal[self.records()]) if breakpoints is None else breakpoints  # ascending
        if self.fires_below:
            if u.size == 0:
                return u
            upper = u[-1] + 1e-6 if self.high is None else min(u[-1] + 1e-6, self.high)
            mid = (u[:-1] + u[1:]) / 2
            mid = np.where(mid > u[:-1], mid, u[1:])   # adjacent floats: u[j+1] itself still separates them
            vals = np.concatenate([[u[0]], mid, [upper] if upper > u[-1] else []])
        else:
            u = u[::-1]
            top = u[0] + 1e-6 if u.size else None
            head = [] if top is None or (self.high is not None and top > self.high) else [top]
            vals = np.concatenate([head, u])
        return vals[self.in_range(vals)] if in_range_only else vals

    def in_range(self, vals: np.ndarray) -> np.ndarray:
        lo = -np.inf if self.low is None else self.low
        hi = np.inf if self.high is None else self.high
        return (vals >= lo) & (vals <= hi)


VOTING_KS = (0.0, 0.25, 0.5, 0.75)     # the paper's values of k (Sun et al. Appendix A.1)


def _window_extreme(x: np.ndarray, p: int, *, worst: str) -> np.ndarray:
    """[L, N] -> [L, N]: max (worst='max') or min of x over layers m-p+1..m; inf/-inf for m < p-1."""
    op = np.maximum if worst == "max" else np.minimum
    out = x.astype(np.float64, copy=True)
    for j in range(1, p):
        out[j:] = op(out[j:], x[:-j])
    out[: p - 1] = np.inf if worst == "max" else -np.inf
    return out


def exit_signal(strategy: str, f: ExitFeatures, **fixed) -> ExitSignal | None:
    """The rule `strategy` at the knobs `fixed` as one signal and one swept knob; None for rules
    without a continuous knob (budget, patience, oracle) or whose predictions depend on the knob
    (PCEE with the cross-layer ensemble)."""
    num = lambda x: np.asarray(x, dtype=np.float64)  # noqa: E731
    if strategy == "entropy":
        return ExitSignal(strategy, "threshold", {}, num(f.entropy), True, None, None, 0.0, 1.0)
    if strategy == "maxprob":
        return ExitSignal(strategy, "threshold", {}, num(f.maxprob), False, None, None, 0.0, 1.0)
    if strategy == "lte":
        return ExitSignal(strategy, "threshold", {}, num(f.conf), False, None, None, 0.0, 1.0)
    if strategy == "pcee":
        p = resolve_params("pcee", {"threshold": 0.0, **fixed}, f.L)
        p.pop("threshold")
        if p["ensemble"]:
            return None
        # PCEE-BERT Eq. 2-3: pct_m >= patience <=> the last `patience` layers are all confident
        if p["signal"] == "entropy":
            sig, below = _window_extreme(f.entropy, p["patience"], worst="max"), True
        else:
            base = f.maxprob if p["signal"] == "maxprob" else f.conf
            sig, below = _window_extreme(base, p["patience"], worst="min"), False
        return ExitSignal(strategy, "threshold", p, sig, below, None, None, 0.0, 1.0)
    if strategy == "dge":
        p = resolve_params("dge", {"threshold": 0.0, **fixed}, f.L)
        p.pop("threshold")
        # BADGE Eq. 3: cnt_m >= patience <=> the patience-th smallest S(p_m, p_i), i < m, is < tau
        key = f"_sorted_div_{p['measure']}"
        if key not in f.__dict__:
            f.__dict__[key] = np.sort(f.divergence(p["measure"]), axis=1)    # [m, sorted i, N]
        div = f.__dict__[key]
        sig = num(div[:, p["patience"] - 1, :]) if p["patience"] <= f.L else np.full((f.L, f.N), np.inf)
        return ExitSignal(strategy, "threshold", p, sig, True, None, None, 0.0, None)
    if strategy == "voting":
        p = resolve_params("voting", {"delta": 0.0, **fixed}, f.L)
        p.pop("delta")
        # Eq. 23, computed as _voting does so that every V_l value is exactly attainable as delta
        top, majority = f.votes
        sig = top / (np.arange(1, f.L + 1, dtype=np.float64)[:, None] ** p["k"])
        return ExitSignal(strategy, "delta", p, sig, False, majority, majority[-1], 0.0, None)
    return None


def fixed_choices(strategy: str, f: ExitFeatures, **fixed) -> list[dict]:
    """The settings of the non-swept knobs a search covers: every patience for PCEE and DGE, the
    paper's k values for voting; knobs given in `fixed` are kept as given."""
    if strategy == "pcee" and "patience" not in fixed:
        return [{**fixed, "patience": q} for q in range(1, f.L + 1)]
    if strategy == "dge" and "patience" not in fixed:
        return [{**fixed, "patience": q} for q in range(1, max(f.L - 1, 1) + 1)]
    if strategy == "voting" and "k" not in fixed:
        return [{**fixed, "k": k} for k in VOTING_KS]
    return [dict(fixed)]


def candidate_settings(strategy: str, f: ExitFeatures, **fixed) -> list[dict]:
    """Every setting of `strategy` with a distinct exit configuration on these features (the
    breakpoints of the rule's signal), safest first within each choice of the other knobs."""
    spec = STRATEGIES[strategy]
    if spec.settings is not None:
        return spec.settings(f)
    out = []
    for fx in fixed_choices(strategy, f, **fixed):
        sig = exit_signal(strategy, f, **fx)
        if sig is None:  # PCEE ensemble: the breakpoints of the plain rule at the same knobs
            sig = exit_signal(strategy, f, **{**fx, "ensemble": False})
        out += [{**fx, sig.knob: float(v)} for v in sig.knob_values()]
    return out
