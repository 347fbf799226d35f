"""Promise against measurement, in sentences: what core.predict's summary says it found. Torch-free.

- `verdict(name, measured, promised, ...)`: one promised number beside the measured one, each with its
  interval where it has one, and a verdict: "kept" (the measured value lies in the promised interval,
  or, when the promise has none, the promise lies in the measured interval), "outside the interval", or
  "no interval" (neither side carries one, so the gap cannot be judged);
- `clopper_pearson(k, n)`: the exact binomial interval of a proportion (scipy.stats.beta quantiles);
- `measured_risk(pred, full_pred, labels, ...)`: the risk a guarantee bounds (gap: an input the early
  exit gets wrong that the full model gets right; consistency: early exit != full model) on labelled
  new rows, with its Clopper-Pearson interval and what it says about the point's guarantee;
- `exit_drift(new_layers, ref_layers, L)`: the exit-layer histogram of the new texts against the rows
  the promise was measured on, a chi-square test of homogeneity (scipy.stats.chi2_contingency on the
  2 x L table of counts), and a warning naming the layers whose share moved, when the traffic exits
  differently enough that the promise may not hold. Needs no labels.
"""
from __future__ import annotations

import numpy as np
from scipy.stats import beta, chi2_contingency

LEVEL = 0.95
DRIFT_ALPHA = 0.01      # p-value below which the exit histogram is called different
DRIFT_RESIDUAL = 2.0    # |adjusted residual| from which a layer is named as one that moved
MIN_DRIFT_ROWS = 20     # fewer new rows than this: no test


def _fmt(x, digits: int = 4) -> str:
    return "n/a" if x is None else f"{x:.{digits}g}"


def _iv(iv) -> str:
    return "no interval" if iv is None else f"[{_fmt(iv[0])}, {_fmt(iv[1])}]"


def verdict(name: str, measured, promised, interval=None, measured_interval=None, *, note: str = "") -> dict:
    """One promised number against its measurement: {"name", "measured", "measured_interval",
    "promised", "promised_interval", "verdict", "sentence"}; verdict "kept", "outside the interval",
    "no interval", or "not measured" (measured or promised is None)."""
    out = {"name": name, "measured": measured, "measured_interval": measured_interval, "promised": promised,
           "promised_interval": interval, "verdict": "not measured", "sentence": ""}
    head = f"{name}: measured {_fmt(measured)} ({_iv(measured_interval)}), promised {_fmt(promised)} ({_iv(interval)})"
    tail = f" ({note})" if note else ""
    if measured is None or promised is None:
        out["sentence"] = (f"nothing promised for the {name}{tail}." if promised is None else
                           f"not measured here: the {name} (promised {_fmt(promised)}, {_iv(interval)}){tail}.")
        return out
    if interval is not None:
        inside = interval[0] <= measured <= interval[1]
        out["verdict"] = "kept" if inside else "outside the interval"
        out["sentence"] = (f"{head}: kept, the measured value lies inside the promised interval{tail}." if inside else
                           f"{head}: the measured value lies OUTSIDE the promised interval{tail}.")
    elif measured_interval is not None:
        inside = measured_interval[0] <= promised <= measured_interval[1]
        out["verdict"] = "kept" if inside else "outside the interval"
        out["sentence"] = (f"{head}: kept, the promise lies inside the measured {LEVEL:.0%} interval{tail}." if inside
                           else f"{head}: the promise lies OUTSIDE the measured {LEVEL:.0%} interval{tail}.")
    else:
        out["verdict"] = "no interval"
        out["sentence"] = (f"{head}: no interval on either side, so the gap of {_fmt(measured - promised, 3)} "
                           f"cannot be judged{tail}.")
    return out


def clopper_pearson(k: int, n: int, level: float = LEVEL) -> tuple[float, float]:
    """Exact (Clopper-Pearson) two-sided interval of a proportion k / n."""
    if n < 1 or not 0 <= k <= n:
        raise ValueError(f"clopper_pearson needs 0 <= k <= n and n >= 1, got k={k}, n={n}")
    a = 1 - level
    lo = 0.0 if k == 0 else float(beta.ppf(a / 2, k, n - k + 1))
    hi = 1.0 if k == n else float(beta.ppf(1 - a / 2, k + 1, n - k))
    return lo, hi


def risk_losses(pred, full_pred, labels, risk: str = "gap") -> np.ndarray:
    """[N] 0/1 losses: gap = early wrong where the full model is right; consistency = early != full."""
    pred, full_pred = np.asarray(pred), np.asarray(full_pred)
    if risk == "consistency":
        return (pred != full_pred).astype(np.int64)
    if risk != "gap":
        raise ValueError(f"unknown risk {risk!r}; valid: gap, consistency")
    labels = np.asarray(labels)
    return ((full_pred == labels) & (pred != labels)).astype(np.int64)


def measured_risk(pred, full_pred, labels, guarantee: dict | None = None, *, risk: str | None = None) -> dict:
    """The guarantee's risk on new labelled rows with its Clopper-Pearson interval, and a sentence on
    whether it agrees with the guarantee's bound (epsilon). `risk` defaults to the guarantee's (gap)."""
    risk = risk or (guarantee or {}).get("risk") or "gap"
    losses = risk_losses(pred, full_pred, labels, risk)
    k, n = int(losses.sum()), len(losses)
    lo, hi = clopper_pearson(k, n)
    out = {"risk": risk, "value": k / n, "count": k, "rows": n, "interval": [lo, hi], "epsilon": None, "verdict": None}
    what = ("inputs the early exit gets wrong that the full model gets right" if risk == "gap"
            else "inputs where the early exit disagrees with the full model")
    text = (f"measured {risk} risk ({what}): {k} of {n} = {k / n:.2%} ({LEVEL:.0%} Clopper-Pearson "
            f"{lo:.2%} to {hi:.2%})")
    eps = (guarantee or {}).get("epsilon")
    if isinstance(eps, (int, float)) and not isinstance(eps, bool):
        out["epsilon"] = float(eps)
        if hi <= eps:
            out["verdict"], text = "kept", text + f": kept, the whole interval lies at or below the guaranteed {eps:.2%}"
        elif lo > eps:
            out["verdict"] = "outside the interval"
            text += f": the guaranteed {eps:.2%} lies BELOW the interval, so on these rows the guarantee did not hold"
        else:
            out["verdict"] = "kept"
            text += f": consistent with the guaranteed {eps:.2%} (it lies inside the interval)"
    else:
        text += "; the point carries no guarantee to hold it against"
    out["sentence"] = text + "."
    return out


def histogram(layers, L: int) -> np.ndarray:
    """[L] counts of exit layers 1..L."""
    return np.bincount(np.asarray(layers, dtype=np.int64) - 1, minlength=L)[:L]


def exit_drift(new_layers, ref_layers, L: int, *, alpha: float = DRIFT_ALPHA, ref_name: str = "calibration rows") -> dict:
    """Do the new texts exit at other layers than the rows the promise was measured on? A chi-square
    test of homogeneity on the 2 x L table of exit-layer counts (layers no row of either side reaches
    left out). {"new_counts", "ref_counts", "chi2", "dof", "p_value", "layers" (named as moved),
    "warn", "sentence"}."""
    new, ref = histogram(new_layers, L), histogram(ref_layers, L)
    out = {"new_counts": new.tolist(), "ref_counts": ref.tolist(), "chi2": None, "dof": None, "p_value": None,
           "layers": [], "warn": False, "alpha": alpha}
    n_new, n_ref = int(new.sum()), int(ref.sum())
    if n_new < MIN_DRIFT_ROWS or n_ref < MIN_DRIFT_ROWS:
        out["sentence"] = (f"exit layers: no drift test ({n_new} new rows, {n_ref} {ref_name}; it needs at least "
                           f"{MIN_DRIFT_ROWS} on each side).")
        return out
    used = (new + ref) > 0
    if used.sum() < 2:
        out["sentence"] = f"exit layers: every row of both sides exits at layer {int(np.flatnonzero(used)[0]) + 1}; no drift."
        out["p_value"] = 1.0
        return out
    table = np.stack([new[used], ref[used]])
    chi2, p, dof, expected = chi2_contingency(table, correction=False)
    # adjusted (standardized) residuals of the new row: which layers moved
    total = table.sum()
    rows, cols = table.sum(1, keepdims=True) / total, table.sum(0, keepdims=True) / total
    resid = (table - expected) / np.sqrt(expected * (1 - rows) * (1 - cols))
    layer_ids = np.flatnonzero(used) + 1
    moved = [int(m) for m, r in zip(layer_ids, resid[0]) if abs(r) >= DRIFT_RESIDUAL]
    out.update(chi2=float(chi2), dof=int(dof), p_value=float(p), layers=moved, warn=bool(p < alpha))
    share_new, share_ref = new / n_new, ref / n_ref
    where = ", ".join(f"layer {m}: {share_new[m - 1]:.0%} of new rows against {share_ref[m - 1]:.0%}" for m in moved)
    small = " (some expected counts are below 5, so the p-value is approximate)" if (expected < 5).any() else ""
    if out["warn"]:
        out["sentence"] = (f"WARNING: the new texts exit at other layers than the {n_ref} {ref_name} (chi-square "
                           f"{chi2:.1f} on {dof} degrees of freedom, p = {p:.2g} < {alpha:g}{small})"
                           + (f"; {where}" if where else "")
                           + ". The promise was measured on traffic that exits like the calibration rows, so it may "
                           "not hold here.")
    else:
        out["sentence"] = (f"exit layers: the new texts exit like the {n_ref} {ref_name} (chi-square {chi2:.1f} on "
                           f"{dof} degrees of freedom, p = {p:.2g}, no drift at {alpha:g}{small}).")
    return out


def mean_speedup_note(promised_batch, measured_batch) -> str:
    """Why a measured wall-clock speed-up may not match its promise: another batch size."""
    if promised_batch is None or measured_batch is None or int(promised_batch) == int(measured_batch):
        return ""
    return f"promised at batch size {promised_batch}, measured at {measured_batch}"
