"""The exit rules of the papers, one block each: the rule (fire [L, N], pred_at, final over all samples
at once), the signal its swept knob crosses, the sentence that says why one sample exits where it
does, and its registry entry. Registry order is the app's and the report's order. Torch-free.

A rule fires at layer m looking only at layers <= m (causal). A sample exits at its first firing
layer; one that never fires exits at layer L with the rule's final prediction (layer L's argmax unless
the rule defines its own, as voting and PCEE-ensemble do).
"""
from __future__ import annotations

import math

import numpy as np

from core.engine.features import ExitFeatures, run_length
from core.engine.registry import Param, RuleResult, SignalResult, Strategy, Why, register

VOTING_KS = (0.0, 0.25, 0.5, 0.75)     # the paper's values of k (Sun et al. Appendix A.1)
PCEE_SPANS = ("all_passed", "confident_run")
SIGNAL_WORDS = {"entropy": "normalized entropy", "maxprob": "max-prob", "learned": "learned confidence"}
SIGNAL_COLUMNS = {"entropy": "entropy", "maxprob": "max-prob", "learned": "learned confidence"}


def _f(x: float) -> str:
    return f"{x:.3f}"


def _sentence(s: str) -> str:
    return s[0].upper() + s[1:]


def quantile_grid(values: np.ndarray, n: int, *, include=()) -> list[float]:
    qs = np.quantile(values, np.linspace(0, 1, n))
    return sorted({round(float(v), 6) for v in np.concatenate([qs, include])})


def _patience_grid(f: ExitFeatures, most: int, thresholds: list[float]) -> list[dict]:
    return [{"patience": p, "threshold": t} for p in range(1, most + 1) for t in thresholds]


def _window_extreme(x: np.ndarray, p: int, *, worst: str) -> np.ndarray:
    """[L, N] -> [L, N]: max (worst='max') or min of x over layers m-p+1..m; inf/-inf for m < p-1."""
    op = np.maximum if worst == "max" else np.minimum
    out = x.astype(np.float64, copy=True)
    for j in range(1, p):
        out[j:] = op(out[j:], x[:-j])
    out[: p - 1] = np.inf if worst == "max" else -np.inf
    return out


def _nice_ceil(x: float) -> float:
    if not np.isfinite(x) or x <= 0:
        return 1.0
    mag = 10 ** math.floor(math.log10(x))
    for m in (1, 2, 2.5, 5, 10):
        if m * mag >= x:
            return float(m * mag)
    return float(10 * mag)


_THRESHOLD = dict(kind=float, low=0.0, high=1.0)
_BY_LAYER = lambda f: [{"layer": m} for m in range(1, f.L + 1)]           # noqa: E731
_BY_PATIENCE = lambda f: [{"patience": q} for q in range(1, f.L + 1)]     # noqa: E731
# Thresholds of the grids are taken at quantiles of the signal itself, so the points spread along the
# speed-up axis whatever the model's calibration.


# ---- budgeted exit (PCEE-BERT's static baseline) ---------------------------------------------------
def _budget(f: ExitFeatures, *, layer: int) -> RuleResult:
    fire = np.zeros((f.L, f.N), dtype=bool)
    if layer <= f.L:          # a prefix of fewer layers (the predictor's `decide`) has not got there yet
        fire[layer - 1] = True
    return fire, None, None


def _budget_why(f, params, exit_layer, names, label) -> Why:
    return Why(exit_layer, f"The budgeted exit stops every sample at layer {params['layer']}.")


register(Strategy(
    "budget", _budget, {"layer": Param(int, None, 1, None, help="exit layer for everyone", up_to_layers=True)},
    title="Budgeted exit", source="PCEE-BERT", tab="Budget", color="#94a3b8",
    explain="Every example stops at the same layer. The static baseline every adaptive rule must beat.",
    labels={"layer": "Exit layer"}, knob="layer", why=_budget_why, grid=_BY_LAYER, settings=_BY_LAYER))


# ---- entropy (BranchyNet, DeeBERT, FastBERT) and max-prob (Shallow-Deep, RightTool) ------------------
def _entropy(f: ExitFeatures, *, threshold: float) -> RuleResult:
    return f.entropy < threshold, None, None


def _maxprob(f: ExitFeatures, *, threshold: float) -> RuleResult:
    return f.maxprob >= threshold, None, None


register(Strategy(
    "entropy", _entropy, {"threshold": Param(default=0.3, help="exit when H(p)/log K < threshold", **_THRESHOLD)},
    title="Entropy", source="BranchyNet, DeeBERT, FastBERT", tab="Entropy", color="#2563eb",
    explain="Stop as soon as the exit is sure enough: normalized entropy H(p)/log K below the threshold.",
    labels={"threshold": "Entropy threshold"}, knob="threshold",
    signal=lambda f, p: (f.entropy, True, None, None), signal_name="normalized entropy", signal_column="entropy",
    # fires when H < t: thresholds just above observed entropies
    grid=lambda f: [{"threshold": min(1.0, t + 1e-6)} for t in quantile_grid(f.entropy, 40, include=[0.0, 1.0])]))

register(Strategy(
    "maxprob", _maxprob, {"threshold": Param(default=0.9, help="exit when max_k p(k) >= threshold", **_THRESHOLD)},
    title="Max-prob", source="Shallow-Deep, RightTool", tab="Max-prob", color="#0891b2",
    explain="Stop as soon as the top class probability reaches the threshold.",
    labels={"threshold": "Max-prob threshold"}, knob="threshold",
    signal=lambda f, p: (f.maxprob, False, None, None), signal_name="max-prob", signal_column="max-prob",
    grid=lambda f: [{"threshold": t} for t in quantile_grid(f.maxprob, 40, include=[1.0 / f.K, 1.0])]))


# ---- PABEE patience ----------------------------------------------------------------------------------
def _same_as_before(f: ExitFeatures) -> np.ndarray:
    same = np.zeros((f.L, f.N), dtype=bool)
    same[1:] = f.argmax[1:] == f.argmax[:-1]
    return same


def _patience(f: ExitFeatures, *, patience: int) -> RuleResult:
    # PABEE: cnt_1 = 0; cnt_m = cnt_{m-1} + 1 if argmax p_m == argmax p_{m-1} else 0
    return run_length(_same_as_before(f)) >= patience, None, None


def _patience_why(f, params, exit_layer, names, label) -> Why:
    p, m0, L = int(params["patience"]), exit_layer - 1, f.L
    run = run_length(_same_as_before(f))[:, 0]
    if run[m0] >= p:
        first = exit_layer - p
        return Why(exit_layer, f"The prediction ({names[int(f.argmax[m0, 0])]}) stayed the same for {p} "
                               f"layer{'s' if p > 1 else ''} after layer {first + 1} (layers {first + 1}-"
                               f"{exit_layer}), so it exits at layer {exit_layer}.",
                   window=(first + 1, exit_layer))
    return Why(exit_layer, f"The prediction never stays the same for {p} more layers (longest run "
                           f"{int(run.max())}), so it runs to the last layer {L}.")


register(Strategy(
    "patience", _patience, {"patience": Param(int, 2, 1, None, help="consecutive unchanged predictions")},
    title="PABEE patience", source="PABEE (LeeBERT)", tab="PABEE", color="#16a34a",
    explain="PABEE: stop when the prediction has not changed for `patience` consecutive layers.",
    labels={"patience": "Patience (unchanged layers)"}, knob="patience", why=_patience_why,
    grid=_BY_PATIENCE, settings=_BY_PATIENCE))


# ---- PCEE-BERT: patient and confident ------------------------------------------------------------------
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


def _pcee_signal(f: ExitFeatures, p: dict) -> SignalResult | None:
    if p["ensemble"]:
        return None   # its predictions depend on the knob
    # PCEE-BERT Eq. 2-3: pct_m >= patience <=> the last `patience` layers are all confident
    if p["signal"] == "entropy":
        return _window_extreme(f.entropy, p["patience"], worst="max"), True, None, None
    base = f.maxprob if p["signal"] == "maxprob" else f.conf
    return _window_extreme(base, p["patience"], worst="min"), False, None, None


def _pcee_why(f, params, exit_layer, names, label) -> Why:
    signal, t, p, m0, L = params.get("signal", "entropy"), float(params["threshold"]), int(params["patience"]), \
        exit_layer - 1, f.L
    values = getattr(f, {"entropy": "entropy", "maxprob": "maxprob", "learned": "conf"}[signal])[:, 0]
    word, column = SIGNAL_WORDS[signal], SIGNAL_COLUMNS[signal]
    op = "<" if signal == "entropy" else ">="
    run = run_length(f.confident(signal, t))[:, 0]
    if run[m0] >= p:
        first = exit_layer - p + 1
        s = (f"{word} {op} {_f(t)} at {p} layer{'s' if p > 1 else ''} in a row (layers {first}-{exit_layer}: "
             + ", ".join(_f(v) for v in values[first - 1:exit_layer]) + f"), so it exits at layer {exit_layer}.")
        return Why(exit_layer, _sentence(s), column, t, (first, exit_layer))
    s = (f"{word} is never {op} {_f(t)} for {p} layers in a row (longest run {int(run.max())}), "
         f"so it runs to the last layer {L}.")
    return Why(exit_layer, _sentence(s), column, t)


register(Strategy(
    "pcee", _pcee, {
        "patience": Param(int, 2, 1, None, help="consecutive confident layers", most=lambda L: L),
        "threshold": Param(default=0.3, help="confidence threshold (entropy: <, others: >=)", **_THRESHOLD),
        "signal": Param(str, "entropy", choices=("entropy", "maxprob", "learned")),
        "ensemble": Param(bool, False, help="predict the mean of p over layers, not layer m's own p"),
        "ensemble_span": Param(str, "all_passed", choices=PCEE_SPANS,
                               help="layers the ensemble averages: all_passed = 1..m (PCEE-BERT §4.6.3), "
                                    "confident_run = the last `patience` confident layers (a variant)"),
    }, option_needs={("signal", "learned"): "confidence"},
    title="PCEE patient & confident", source="PCEE-BERT", tab="PCEE", color="#9333ea",
    explain="PCEE-BERT: stop after `patience` consecutive layers that are all confident under the signal. "
            "Choices the paper leaves open: max-prob and learned confidence count at >= the threshold; "
            "the ensemble averages layers 1..m (§4.6.3), or only the confident run (`confident_run` variant).",
    labels={"patience": "Patience (confident layers)", "threshold": "Confidence threshold",
            "signal": "Confidence signal", "ensemble": "Ensemble", "ensemble_span": "Ensemble over"},
    knob="threshold", signal=_pcee_signal, why=_pcee_why,
    search=lambda f: {"patience": list(range(1, f.L + 1))},
    grid=lambda f: _patience_grid(f, min(f.L, 4), [min(1.0, t + 1e-6) for t in quantile_grid(f.entropy, 12)])))


# ---- BADGE: divergence-guided exit ---------------------------------------------------------------------
def _dge(f: ExitFeatures, *, patience: int, threshold: float, measure: str = "kd") -> RuleResult:
    # BADGE Eq. 3: cnt_m = sum_{i<m} 1(S(p_m, p_i) < tau); exit when cnt_m >= patience
    cnt = (f.divergence(measure) < threshold).sum(1)
    return cnt >= patience, None, None


def _dge_signal(f: ExitFeatures, p: dict) -> SignalResult:
    # BADGE Eq. 3: cnt_m >= patience <=> the patience-th smallest S(p_m, p_i), i < m, is < tau
    key = f"_sorted_div_{p['measure']}"
    if key not in f.__dict__:
        f.__dict__[key] = np.sort(f.divergence(p["measure"]), axis=1)    # [m, sorted i, N]
    div = f.__dict__[key]
    sig = div[:, p["patience"] - 1, :] if p["patience"] <= f.L else np.full((f.L, f.N), np.inf)
    return sig, True, None, None


def _dge_why(f, params, exit_layer, names, label) -> Why:
    p, t, measure, m0, L = int(params["patience"]), float(params["threshold"]), params.get("measure", "kd"), \
        exit_layer - 1, f.L
    div = f.divergence(measure)[:, :, 0]                     # [m, i]
    agree = (div < t).sum(1)
    close = ", ".join(f"{i + 1}: {_f(div[m0, i])}" for i in range(m0))
    if agree[m0] >= p:
        return Why(exit_layer, f"At layer {exit_layer}, {int(agree[m0])} earlier layers are within {measure} "
                               f"divergence {_f(t)} (needs {p}; layer: divergence {close}), so it exits here.")
    return Why(exit_layer, f"No layer has {p} earlier layers within {measure} divergence {_f(t)}, so it runs "
                           f"to layer {L}.")


def _kd_thresholds(f: ExitFeatures) -> list[float]:
    div = f.divergence("kd")
    return [t + 1e-6 for t in quantile_grid(div[np.isfinite(div)], 12)]


def _kd_slider(f: ExitFeatures) -> tuple[float, float, str]:
    # up to the largest divergence in the run, so every swept setting can be loaded
    div = f.divergence("kd")                                 # BADGE Eq. 4, [m, i] for i < m
    finite = div[np.isfinite(div)]
    high = _nice_ceil(float(finite.max())) if finite.size else 1.0
    return high, high / 2000, "%.4f"


register(Strategy(
    "dge", _dge, {
        # counts earlier layers: at most L - 1 of them on the slider
        "patience": Param(int, 2, 1, None, help="earlier layers that must agree", most=lambda L: L - 1,
                          slider=lambda f: (max(f.L - 1, 2), 1, None)),
        "threshold": Param(float, 0.3, 0.0, None, help="divergence below which two layers agree", slider=_kd_slider),
        "measure": Param(str, "kd", choices=("kd", "kl", "js")),
    }, title="DGE divergence-based", source="BADGE", tab="DGE", color="#ea580c",
    explain="BADGE's divergence-guided exit: stop when this layer's distribution is close (divergence below "
            "the threshold) to at least `patience` earlier layers.",
    labels={"patience": "Patience (agreeing earlier layers)", "threshold": "Divergence threshold",
            "measure": "Divergence measure"},
    knob="threshold", signal=_dge_signal, why=_dge_why,
    search=lambda f: {"patience": list(range(1, max(f.L - 1, 1) + 1))},
    grid=lambda f: _patience_grid(f, max(1, min(f.L - 1, 4)), _kd_thresholds(f))))


# ---- Sun et al.: ensemble voting -----------------------------------------------------------------------
def _vote_score(f: ExitFeatures, k: float) -> np.ndarray:
    # Sun et al. Eq. 23: V_l = max_c #{j <= l : argmax p_j = c} / l^k
    top, _ = f.votes
    return top / (np.arange(1, f.L + 1, dtype=np.float64)[:, None] ** k)


def _voting(f: ExitFeatures, *, k: float, delta: float) -> RuleResult:
    # exit when V_l >= delta (Eq. 23)
    majority = f.votes[1]
    return _vote_score(f, k) >= delta, majority, majority[-1]


def _voting_signal(f: ExitFeatures, p: dict) -> SignalResult:
    # Eq. 23, computed as _voting does so that every V_l value is exactly attainable as delta
    majority = f.votes[1]
    return _vote_score(f, p["k"]), False, majority, majority[-1]


def _voting_why(f, params, exit_layer, names, label) -> Why:
    k, delta, m0, L = float(params["k"]), float(params["delta"]), exit_layer - 1, f.L
    top, majority = f.votes
    layers = np.arange(1, L + 1, dtype=np.float64)
    v = top[:, 0] / layers ** k
    share_needed = tuple(float(delta * layer ** (k - 1)) for layer in layers)  # on vote share = top / l
    if v[m0] >= delta:
        s = (f"At layer {exit_layer}, {int(top[m0, 0])} of {exit_layer} layers vote "
             f"{names[int(majority[m0, 0])]}: V = {int(top[m0, 0])} / {exit_layer}^{k:g} = {_f(v[m0])} "
             f">= {delta:g}, so it exits here.")
    else:
        s = f"V = votes / l^{k:g} never reaches {delta:g} (at most {_f(v.max())}), so it runs to layer {L}."
    return Why(exit_layer, s, "vote share", None, per_layer=share_needed)


def _voting_grid(f: ExitFeatures) -> list[dict]:
    grid = []
    for k in VOTING_KS:
        # every value V_l can take: c / l^k for 1 <= c <= l <= L
        vals = sorted({c / l ** k for l in range(1, f.L + 1) for c in range(1, l + 1)})
        step = max(1, len(vals) // 12)
        grid += [{"k": k, "delta": round(v, 6)} for v in vals[::step]]
    return grid


register(Strategy(
    "voting", _voting, {
        "k": Param(float, 0.5, 0.0, None, help="layer-count exponent (paper: 0, 0.25, 0.5, 0.75)",
                   slider=lambda f: (1.0, 0.05, "%.2f")),
        "delta": Param(float, 2.0, 0.0, None, help="exit when V_l >= delta",
                       slider=lambda f: (float(f.L), 0.05, "%.2f")),
    }, title="Ensemble voting", source="Sun et al.", tab="Voting", color="#db2777",
    explain="Sun et al.: each layer votes its class; stop when the majority's vote count / l^k reaches "
            "delta (a count scaled by l^k, not a share). Choice the paper leaves open: a tie goes to the "
            "class the latest of the tied layers predicted.",
    labels={"k": "Layer exponent k", "delta": "Vote threshold delta"},
    knob="delta", signal=_voting_signal, why=_voting_why, search=lambda f: {"k": list(VOTING_KS)},
    grid=_voting_grid))


# ---- BERxiT: learned exit ------------------------------------------------------------------------------
def _lte(f: ExitFeatures, *, threshold: float) -> RuleResult:
    # BERxiT learned exit: first m with confidence_m >= threshold
    f.require_confidence("lte")
    return f.conf >= threshold, None, None


register(Strategy(
    "lte", _lte, {"threshold": Param(default=0.5, help="exit when learned confidence >= threshold", **_THRESHOLD)},
    needs=("confidence",), title="Learned exit (LTE)", source="BERxiT", tab="LTE", color="#ca8a04",
    explain="Learned exit (BERxiT): a small head predicts whether this layer is right; stop when its "
            "confidence reaches the threshold.",
    labels={"threshold": "Learned-confidence threshold"}, knob="threshold",
    signal=lambda f, p: (f.conf, False, None, None), signal_name="learned confidence",
    signal_column="learned confidence",
    grid=lambda f: [{"threshold": t} for t in quantile_grid(f.confidence, 40, include=[0.0, 1.0])]))


# ---- the Oracle (Sun et al.): a ceiling, not a method ----------------------------------------------------
def _oracle(f: ExitFeatures) -> RuleResult:
    # the first exit whose prediction is right; none right -> layer L
    labels = f.require_labels("oracle")
    return f.argmax == labels[None, :], None, None


def _oracle_why(f, params, exit_layer, names, label) -> Why:
    if (f.argmax[:, 0] == label).any():
        return Why(exit_layer, f"The Oracle peeks at the label: layer {exit_layer} is the first exit that "
                               f"predicts it ({names[int(label)]}).")
    return Why(exit_layer, f"No exit predicts the label, so the Oracle runs to the last layer {f.L}.")


register(Strategy(
    "oracle", _oracle, {}, needs=("labels",), title="Oracle", source="Sun et al.", tab="Oracle",
    color="#111827", explain="Stops at the first layer that is right. It reads the labels, so it is a "
                             "ceiling, not a method.",
    why=_oracle_why, grid=lambda f: [{}], settings=lambda f: [{}]))
