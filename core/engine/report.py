"""Results report: the seed papers' claims held up to the runs in checkpoints/.

    python -m core.report [--root checkpoints] [--out docs]

writes docs/RESULTS.md and its figures (PNG) from whatever run folders are there. The output depends
only on the committed run folders, so it regenerates byte for byte.
"""
from __future__ import annotations

import argparse
import io
import json
import math
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from core.engine import metrics
from core.engine.cache import ExitCache
from core.engine.calibrate import calibrate
from core.engine.health import assess
from core.engine.omega_drift import compare_to_drift
from core.engine.registry import deployable
from core.engine.strategies import apply
from core.runs.folders import DEFAULT_ROOT, DIED, REPO_ROOT, list_runs, live_status, read_config, read_metrics
from core.runs.io import atomic_write_bytes, atomic_write_text, read_json

DRIFT_HOLDS, DRIFT_FAILS = 0.5, 0.25  # ‖Ω − drift‖ / ‖Ω − start‖: above: differs; below: the drift explains Ω
STEP_COST_FILE = "step_cost.json"      # bench/bench_train_step.py --json, kept in a run folder
GRAD_SIZE_FILE = "omega_grad_size.json"  # bench/bench_omega_second_order.py --json, kept in a run folder
SAVINGS = (0.25, 0.50, 0.75)            # PCEE-BERT Table 2: matched saved-layer fractions
LOW_SPEEDUP, MID_SPEEDUP = 1.3, 2.0     # Sun et al. Fig. 5b (< 1.4x); LeeBERT Table 1 (about 2x)
STRATEGY_ORDER = deployable()   # registry order


@dataclass
class Run:
    name: str
    path: Path
    config: dict
    cache: ExitCache
    variant: str
    seed: int
    omega: dict | None = None
    sweep: pd.DataFrame = field(default=None, repr=False)
    label: str = ""   # the row name in method tables: the variant, with the budget where a task has several

    @property
    def task(self) -> str:
        return self.cache.meta.get("task") or self.config.get("task", "?")

    @property
    def budget(self) -> str:
        return budget_of(self.config)


PROTOCOL, QUICK = "protocol", "quick"


def budget_of(config: dict) -> str:
    """Which training budget made a run: `protocol` (every training row less a seeded validation part,
    several epochs, the best validation epoch kept: core.train --val-fraction) or `quick` (the first
    bundled runs: a few thousand rows, about one epoch's model steps, no validation split). Method
    comparisons only pair runs of the same budget."""
    return PROTOCOL if (config.get("val_fraction") or 0) > 0 else QUICK


def label_runs(runs: list[Run]) -> list[Run]:
    """Set each run's table label: its variant, plus its budget when the runs mix budgets."""
    mixed = len({r.budget for r in runs}) > 1
    for r in runs:
        r.label = f"{r.variant} ({r.budget})" if mixed else r.variant
    return runs


def variant_of(config: dict) -> str:
    """A short label for the training recipe: method plus what distinguishes it (not the seed)."""
    method = config.get("method", "?")
    parts = [method]
    if method == "leebert":
        weights = config.get("weights") or "learned"
        parts.append(config.get("teachers", "lae"))
        parts.append(config.get("optimizer") or "clo_v2" if weights == "learned" else weights)
        if config.get("omega_grad") == "second_order":
            parts.append("2nd-order")
    if config.get("lte"):
        parts.append("lte")
    if config.get("exit_kind", "linear") != "linear":
        parts.append(config["exit_kind"])
    return " ".join(parts)


def load_runs(root: Path) -> tuple[list[Run], list[str]]:
    """Every finished run with a cache; problems are listed, not raised."""
    runs, problems = [], []
    for folder in list_runs(root):
        try:
            status = live_status(folder)
        except ValueError as e:  # a damaged status.json: that run is left out, named
            problems.append(f"{folder.name}: {e}")
            continue
        if status and status.get("state") == DIED:
            problems.append(f"{folder.name}: {status['died']}; left out")
            continue
        if status and status.get("state") != "done":
            problems.append(f"{folder.name}: not finished (state {status.get('state')}); left out")
            continue
        try:
            config = read_config(folder) or {}
            cache = ExitCache.load(folder)
        except (ValueError, FileNotFoundError) as e:
            problems.append(f"{folder.name}: {e}")
            continue
        omega = None
        for rec in read_metrics(folder):
            if rec.get("kind") == "omega":
                omega = rec
        run = Run(folder.name, folder, config, cache, variant_of(config),
                  int(config.get("seed", cache.meta.get("seed", 0)) or 0), omega)
        run.sweep = metrics.sweep_all(cache)
        runs.append(run)
    return runs, problems


# ---- formatting ---------------------------------------------------------------------------------
def pct(x: float) -> str:
    return "–" if x is None or (isinstance(x, float) and math.isnan(x)) else f"{100 * x:.1f}"


def mean_sd(values) -> str:
    values = [v for v in values if v is not None]
    if not values:
        return "–"
    if len(values) == 1:
        return pct(values[0])
    return f"{100 * np.mean(values):.1f} ± {100 * np.std(values, ddof=1):.1f}"


def table(header: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)


def _variant_order(variants) -> list[str]:
    first = ["joint", "two_stage", "alternating", "self_distill"]
    return sorted(variants, key=lambda v: (f"({QUICK})" in v, v.split()[0] not in first,
                                           first.index(v.split()[0]) if v.split()[0] in first else 0, v))


# ---- sections -----------------------------------------------------------------------------------
def per_exit_section(runs: list[Run], task: str, fig_dir: Path, figures: dict) -> str:
    by_variant = defaultdict(list)
    for r in runs:
        by_variant[r.label].append(r)
    num_layers = max(r.cache.L for r in runs)
    header = (["method", "seeds"] + [f"exit {m}" for m in range(1, num_layers + 1)] + ["S-avg", "S-best"]
              + ["last exit, 95% interval (first seed)"])
    rows, curves = [], {}
    for variant in _variant_order(by_variant):
        group = by_variant[variant]
        scores = np.array([metrics.per_exit_scores(r.cache) for r in group])          # [seeds, L]
        curves[variant] = scores.mean(0)
        first = min(group, key=lambda r: (r.seed, r.name)).cache
        iv = metrics.score_interval(first.metric, first.labels, first.probs[:, -1].argmax(-1))
        rows.append([variant, len(group)] + [mean_sd(scores[:, m]) for m in range(scores.shape[1])]
                    + [mean_sd(scores.mean(1)), mean_sd(scores.max(1)), f"[{pct(iv.low)}, {pct(iv.high)}]"])
    figures[f"{task}_per_exit.png"] = _per_exit_figure(task, curves, runs[0].cache.metric)
    return (f"Per-exit dev {runs[0].cache.metric} (%; mean ± sample s.d. over seeds where there are several), "
            "with BADGE's S-avg (mean over exits) and S-best (best exit). The last column is the 95% bootstrap "
            "interval of the last exit's score over the dev samples (1,000 resamples, seed 0) of the method's "
            "first seed: how far one dev set lets a single score move.\n\n"
            + table(header, rows) + f"\n\n![per-exit scores, {task}]({fig_dir.name}/{task}_per_exit.png)\n")


def matched_savings_section(run: Run) -> str:
    header = ["strategy"] + [f"saved ≈ {int(s * 100)}%: score (saved)" for s in SAVINGS]
    rows = []
    for name in STRATEGY_ORDER:
        pts = run.sweep[run.sweep.strategy == name]
        if pts.empty:
            continue
        cells = []
        for s in SAVINGS:
            best = metrics.best_at(pts, s, by="saved_fraction")
            if best.empty:
                cells.append("unreachable")
                continue
            _, pred = apply(name, run.cache.probs, labels=run.cache.labels, confidence=run.cache.confidence,
                            **json.loads(best.params.iloc[0]))
            iv = metrics.score_interval(run.cache.metric, run.cache.labels, pred)
            cells.append(f"{pct(best.score.iloc[0])} [{pct(iv.low)}, {pct(iv.high)}] ({pct(best.saved_fraction.iloc[0])})")
        rows.append([name] + cells)
    oracle = run.sweep[run.sweep.strategy == "oracle"].iloc[0]
    rows.append(["oracle (ceiling)", f"{pct(oracle.score)} at saved {pct(oracle.saved_fraction)}", "", ""])
    full = metrics.per_exit_scores(run.cache)[-1]
    return (f"Run `{run.name}` ({run.label or run.variant}); full model {pct(full)}. Each cell is the best setting, among the "
            "rule's exact candidate settings (every knob value where some sample's exit changes), that saves at "
            "least that fraction of layers (`best_at`), with the 95% bootstrap interval of its score over the dev "
            "samples in brackets. The setting is chosen on the same dev set it is scored on, so the score is "
            "optimistic; the calibrated section below reports held-out numbers.\n\n" + table(header, rows) + "\n")


CALIBRATED = [("entropy", {}), ("pcee", {"patience": 2})]
EPSILONS = (0.01, 0.02)


def calibrated_section(run: Run) -> str:
    """Risk-controlled settings (core.engine.calibrate) of the run: half the dev set chooses, half reports."""
    rows = []
    for name, fixed in CALIBRATED:
        for risk in ("consistency", "gap"):
            for eps in EPSILONS:
                for method in ("ltt", "crc"):
                    cal = calibrate(run.cache, name, risk=risk, epsilon=eps, delta=0.1, method=method, seed=0, **fixed)
                    setting = ("full model (no setting passed)" if cal.fallback else
                               ", ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}"
                                         for k, v in cal.params.items() if k not in ("signal", "ensemble")))
                    rows.append([name, risk, f"{100 * eps:g}%", method.upper(), setting, pct(cal.calib_risk),
                                 pct(cal.test_risk), f"{pct(cal.test_score)} ({pct(cal.test_full_score)})",
                                 f"{cal.test_layer_speedup:.2f}x"])
    n_cal = int(round(0.5 * run.cache.N))
    return (f"Run `{run.name}`: the dev set is split (seed 0) into {n_cal} calibration samples that choose the "
            f"setting and {run.cache.N - n_cal} held-out samples that report it. Risk `consistency`: the exit's "
            "prediction differs from the full model's; `gap`: the exit is wrong where the full model is right. "
            "LTT (Learn then Test, Hoeffding-Bentkus p-values, fixed-sequence testing from the safest setting) "
            "holds the risk at most epsilon with probability at least 90%; CRC (conformal risk control) holds it "
            "in expectation. Risks and scores in %.\n\n"
            + table(["rule", "risk", "epsilon", "method", "setting", "calibration risk", "held-out risk",
                     "held-out score (full model)", "held-out layer speed-up"], rows) + "\n")


def patience_section(run: Run) -> str:
    pts = run.sweep[run.sweep.strategy == "patience"].sort_values("patience")
    rows = [[int(r.patience), f"{r.mean_exit_layer:.2f}", f"{r.layer_speedup:.2f}x", pct(r.score)]
            for r in pts.itertuples()]
    return (f"Run `{run.name}`: PABEE patience against mean exit layer (L = {run.cache.L}).\n\n"
            + table(["patience", "mean exit layer", "layer speed-up", "score"], rows) + "\n")


def methods_by_strategies_section(runs: list[Run], target: float) -> str:
    by_variant = defaultdict(list)
    for r in runs:
        by_variant[r.label].append(r)
    names = [s for s in STRATEGY_ORDER if s != "budget"]
    rows = []
    for variant in _variant_order(by_variant):
        cells = []
        for name in names:
            vals = []
            for r in by_variant[variant]:
                best = metrics.best_at(r.sweep[r.sweep.strategy == name], target)
                vals.append(None if best.empty else float(best.score.iloc[0]))
            cells.append("–" if all(v is None for v in vals) else mean_sd([v for v in vals if v is not None]))
        rows.append([variant] + cells)
    return (f"Best score of each strategy at layer speed-up ≥ {target:.1f}x (mean ± s.d. over seeds).\n\n"
            + table(["method"] + names, rows) + "\n")


def wallclock_section(run: Run) -> str:
    c = run.cache
    if c.layer_ms is None:
        return f"Run `{run.name}` has no measured per-layer latency.\n"
    lat = metrics.exit_latency_ms(c.layer_ms, c.embed_ms)                  # [L + 1] stopping after m layers
    rows = []
    for m in range(1, c.L + 1):
        est = lat[-1] / lat[m]
        rows.append([m, f"{c.L / m:.2f}x", f"{est:.2f}x"])
    text = (f"Run `{run.name}`, batch size 1. Layer speed-up of exiting everyone at layer m against the "
            f"wall-clock speed-up from the per-layer latencies measured when the run was made "
            f"(embeddings {c.embed_ms:.2f} ms, layers {', '.join(f'{x:.2f}' for x in c.layer_ms)} ms).\n\n")
    text += table(["exit layer m", "layer speed-up L/m", "wall-clock speed-up (measured per layer)"], rows) + "\n"
    measured = run.path / "latency.json"
    if measured.exists():
        data = read_json(measured)
        rows = [[r["layer"], f"{r['ideal']:.2f}x", f"{r['measured']:.2f}x", f"{r['ratio']:.2f}"]
                for r in data.get("rows", [])]
        text += ("\nEnd-to-end measurement with the real layer-by-layer predictor "
                 f"(`{data.get('command', 'bench/bench_early_exit.py')}`):\n\n"
                 + table(["exit layer", "ideal L/m", "measured full / exit-at-m", "measured / ideal"], rows) + "\n")
    return text


def promise_section(path: Path) -> str:
    """core.promise's record: the point promised on dev rows against core.predict on unseen rows."""
    rec = read_json(path)
    s, p, c = rec["summary"], rec["summary"]["promise"], rec["choice"]

    def ci(iv):
        return f" (95% interval {pct(iv[0])}–{pct(iv[1])})" if iv else " (no interval)"

    def promised(name, fmt):
        iv = s["promise_intervals"].get(name)
        return fmt(p[name]) + (f" [{fmt(iv[0])}, {fmt(iv[1])}]" if iv else " (no interval)")

    def x(v):
        return f"{v:.2f}x"

    rows = [[f"{s['metric']} % (early exit)", promised("score", pct), pct(s["score"]) + ci(s.get("score_interval"))],
            [f"{s['metric']} % (all layers)", promised("full_score", pct),
             pct(s["full_score"]) + ci(s.get("full_score_interval"))],
            ["layer speed-up", promised("layer_speedup", x), x(s["layer_speedup"]) + " (exact count)"],
            ["wall-clock speed-up", promised("wallclock_speedup", x) + f", estimated at batch size "
             f"{s.get('promise_batch_size') or 1} over fp32 full",
             x(s["measured_speedup"]) + f", batch size {s['batch_size']}, one run (no interval)"],
            ["rows per second", "–", f"{s['rows_per_s']:.1f} early exit, {s['full_rows_per_s']:.1f} all layers "
             f"({rec['torch_threads']} torch thread(s), shared machine)"]]
    inside = s.get("score_interval") and s["score_interval"][0] <= p["score"] <= s["score_interval"][1]
    return (f"The \"lose at most {100 * c['max_drop']:g} point\" pick (fastest setting over every rule within "
            f"{100 * c['max_drop']:g} point of the full model on dev"
            + (f", over the precisions {', '.join(c['precisions_searched'])}" if c.get("precisions_searched") else "")
            + f"): {c.get('precision', 'fp32')} {c['strategy']} "
            f"`{json.dumps(c['params'], sort_keys=True)}`, exported as `{rec['point_file']}` and applied with "
            f"`core.predict --compare-full` to the {s['rows']} Rotten Tomatoes rows outside the dev set that "
            f"training did not draw (`{rec['command']}`). Promised numbers are measured on the "
            f"{s['promise_rows']} dev rows.\n\n"
            + table(["", "promised (dev)", "measured (unseen rows)"], rows) + "\n\n"
            + ("The promised score lies inside the measured score's 95% interval. " if inside else
               "The promised score lies OUTSIDE the measured score's 95% interval. ")
            + f"Early exit agrees with all layers on {pct(s['agreement_with_full'])}% of the rows."
            + "".join(" " + s[k]["sentence"][:1].upper() + s[k]["sentence"][1:]
                      for k in ("measured_risk", "drift") if s.get(k)) + "\n")


# ---- claims -------------------------------------------------------------------------------------
def verdict(diffs: list[float], noise: float | None, what: str) -> str:
    """holds / does not hold / within seed noise, from per-run differences (positive = claim holds)."""
    d = np.array(diffs)
    mean = float(d.mean())
    spread = noise if noise is not None else (float(d.std(ddof=1)) if len(d) > 1 else 0.0)
    margin = max(2 * spread / math.sqrt(len(d)) if len(d) > 1 else 2 * spread, 0.002)
    if mean > margin and (d > 0).mean() >= 0.75:
        word = "**holds**"
    elif mean < -margin and (d < 0).mean() >= 0.75:
        word = "**does not hold**"
    else:
        word = "**within noise here**"
    return (f"{word}: {what}: mean difference {100 * mean:+.1f} points over {len(d)} run(s) "
            f"(positive in {int((d > 0).sum())}), noise margin ±{100 * margin:.1f}")


def _best(run: Run, name: str, target: float) -> float | None:
    best = metrics.best_at(run.sweep[run.sweep.strategy == name], target)
    return None if best.empty else float(best.score.iloc[0])


def _strategy_diffs(runs, a: str, b: str, target: float) -> list[float]:
    out = []
    for r in runs:
        x, y = _best(r, a, target), _best(r, b, target)
        if x is not None and y is not None:
            out.append(x - y)
    return out


def claims_section(runs: list[Run]) -> str:
    lines = []
    budgets = sorted({r.budget for r in runs}, key=lambda b: b != PROTOCOL)
    for budget in budgets:  # each claim is judged on the runs of one budget
        group = [r for r in runs if r.budget == budget]
        prefix = f"[{budget} runs] " if len(budgets) > 1 else ""
        lines += _method_claims(group, prefix) + _strategy_claims(group, prefix)
    return "\n".join(lines) + "\n"


def _strategy_claims(runs: list[Run], prefix: str) -> list[str]:
    lines = []
    # strategy claims, over every run of the task
    reach = [r.sweep[r.sweep.strategy == "patience"].layer_speedup.max() for r in runs]
    high = max(MID_SPEEDUP, min(reach) * 0.95) if reach else MID_SPEEDUP
    for label, a, b, target in (
        (f"PCEE beats PABEE at high speed-up (≥ {high:.2f}x, about the most PABEE reaches)", "pcee", "patience", high),
        (f"DGE beats PABEE at high speed-up (≥ {high:.2f}x)", "dge", "patience", high),
        (f"voting beats patience at low speed-up (≥ {LOW_SPEEDUP}x)", "voting", "patience", LOW_SPEEDUP),
        (f"voting beats entropy at low speed-up (≥ {LOW_SPEEDUP}x)", "voting", "entropy", LOW_SPEEDUP),
    ):
        diffs = _strategy_diffs(runs, a, b, target)
        lines.append(f"- {prefix}{label}: " + (verdict(diffs, None, f"best {a} minus best {b}") if diffs
                                               else "not reachable"))
    # overthinking
    over, beat = [], []
    for r in runs:
        preds = r.cache.probs.argmax(-1)
        right = preds == r.cache.labels[:, None]
        over.append(float((right[:, :-1].any(1) & ~right[:, -1]).mean()))
        full = metrics.per_exit_scores(r.cache)[-1]
        best_fast = r.sweep[(r.sweep.strategy != "oracle") & (r.sweep.layer_speedup > 1.0 + 1e-9)].score.max()
        beat.append(float(best_fast - full))
    lines.append(f"- {prefix}early exits can beat the full model (overthinking): on average "
                 f"{100 * np.mean(over):.1f}% of dev samples are right at some earlier exit and wrong at the last; "
                 + verdict(beat, None, "best strategy score at > 1x layer speed-up minus the full model"))
    return lines


def _method_claims(runs: list[Run], prefix: str) -> list[str]:
    lines = []
    savg = defaultdict(list)
    for r in runs:
        savg[r.variant].append(float(metrics.per_exit_scores(r.cache).mean()))
    joint = savg.get("joint", [])
    n_dev = runs[0].cache.N
    if len(joint) > 1:  # seed noise of one run's S-avg, from the joint seeds
        noise, noise_kind = float(np.std(joint, ddof=1)), f"s.d. of joint's S-avg over {len(joint)} seeds"
    elif joint:  # one seed: fall back to the dev set's sampling noise of an accuracy-like score
        p = float(np.mean(joint))
        noise, noise_kind = metrics.binomial_se(p, n_dev), f"one seed: binomial s.e. on N = {n_dev} dev samples"
    for label, key in (("LeeBERT (lae, clo_v2) raises S-avg over joint training", "leebert lae clo_v2"),
                       ("BADGE bypasses raise S-avg over joint training", "badge")):
        if joint and savg.get(key):
            diffs = [v - np.mean(joint) for v in savg[key]]
            sd = noise * math.sqrt(1 + 1 / len(joint))  # a run's S-avg minus joint's mean S-avg
            lines.append(f"- {prefix}{label}: " + verdict(diffs, sd, f"S-avg {mean_sd(savg[key])} vs joint "
                                                            f"{mean_sd(joint)}; noise: {noise_kind}"))
        else:
            lines.append(f"- {prefix}{label}: not measured (needs `joint` and `{key}` runs).")
    return lines


def default_at_2x_section(run: Run, target: float = 2.0) -> str:
    """The default run's best rule at >= `target` layer speed-up against its own full model (metrics.pick),
    with the paired bootstrap interval of the difference."""
    try:
        op = metrics.pick(run.cache, min_layer_speedup=target)
    except ValueError as e:
        return f"Run `{run.name}`: no rule reaches {target:.1f}x ({e}).\n"
    if op.delta_interval is None:  # too few dev samples for an interval: the note says so
        spread = f"({op.interval_note})"
    else:
        lo, hi = op.delta_interval
        spread = f"(95% interval [{100 * lo:+.1f}, {100 * hi:+.1f}]; {op.interval_note})"
    return (f"Run `{run.name}`: the best exact setting of any rule at layer speed-up ≥ {target:.1f}x is "
            f"{op.strategy} ({', '.join(f'{k} {v:.4g}' if isinstance(v, float) else f'{k} {v}' for k, v in sorted(op.params.items()))}): {pct(op.score)} against the full model's "
            f"{pct(op.full_score)}, a difference of {100 * (op.score - op.full_score):+.1f} points "
            f"{spread} at {op.layer_speedup:.2f}x "
            f"layer speed-up. It is chosen and scored on the same dev samples, so it is optimistic; the promise "
            f"table below measures a point on rows no choice read.\n")


# ---- figures ------------------------------------------------------------------------------------
def _png(fig) -> bytes:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110, metadata={"Software": None})
    return buf.getvalue()


def _per_exit_figure(task: str, curves: dict, metric: str) -> bytes:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4))
    for variant, ys in curves.items():
        ax.plot(range(1, len(ys) + 1), 100 * ys, marker="o", label=variant)
    ax.set_xlabel("exit layer")
    ax.set_ylabel(f"dev {metric} (%)")
    ax.set_title(f"{task}: every exit's score by training method")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, ncol=2)
    fig.tight_layout()
    data = _png(fig)
    plt.close(fig)
    return data


def _curves_figure(run: Run) -> bytes:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4))
    for name in STRATEGY_ORDER:
        pts = metrics.pareto(run.sweep[run.sweep.strategy == name])
        if not pts.empty:
            ax.plot(pts.layer_speedup, 100 * pts.score, marker=".", label=name)
    oracle = run.sweep[run.sweep.strategy == "oracle"].iloc[0]
    ax.scatter([oracle.layer_speedup], [100 * oracle.score], marker="*", s=120, color="k", label="oracle")
    ax.set_xlabel("layer speed-up (L / mean exit layer)")
    ax.set_ylabel(f"dev {run.cache.metric} (%)")
    ax.set_title(f"{run.name}: speed-up against score, each strategy's best points")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, ncol=3)
    fig.tight_layout()
    data = _png(fig)
    plt.close(fig)
    return data


# ---- the document -------------------------------------------------------------------------------
def reference_run(runs: list[Run]) -> Run:
    """The task's joint run with the lowest seed (else the first run by name)."""
    joint = sorted((r for r in runs if r.variant == "joint"), key=lambda r: (r.budget != PROTOCOL, r.seed, r.name))
    return joint[0] if joint else sorted(runs, key=lambda r: r.name)[0]


def omega_section(runs: list[Run]) -> str:
    """Ω at the last snapshot of each LeeBERT run: the own-CE weight per exit for every run, and the
    whole matrix of the first run (rows = exits, columns = terms; each row sums to 1)."""
    lines = ["Row m of Ω weighs exit m's loss terms: its own cross-entropy (ce) and its distillation from "
             "each teacher exit t (kd:t); every row sums to 1. Learned Ω starts uniform over the exit's terms; "
             "`uniform` and `random` keep their starting weights (LeeBERT's fixed baselines).", "",
             "| run | variant | step | own-CE weight, exit 1 … L | mean distillation weight |", "|---|---|---|---|---|"]
    for r in runs:
        om = np.array(r.omega["omega"], dtype=float)
        kd = om[:, 1:]
        mean_kd = float(kd[kd > 0].mean()) if (kd > 0).any() else float("nan")
        fixed = r.config.get("weights") in ("uniform", "random")
        step = "fixed" if fixed else r.omega.get("step", "–")
        lines.append(f"| `{r.name}` | {r.label or r.variant} | {step} | "
                     f"{' / '.join(f'{x:.3f}' for x in om[:, 0])} | {mean_kd:.3f} |")
    first = runs[0]
    om = np.array(first.omega["omega"], dtype=float)
    terms = list(first.omega["terms"])
    lines += ["", f"The whole Ω of `{first.name}`:", "", "| exit | " + " | ".join(terms) + " |",
              "|---|" + "---|" * len(terms)]
    for m, row in enumerate(om, start=1):
        lines.append(f"| {m} | " + " | ".join(f"{x:.3f}" for x in row) + " |")
    return "\n".join(lines)


def _budget_note(runs: list[Run]) -> str:
    """How the task's runs count epochs (core.train --budget); configs without the key used `epochs`."""
    rules = sorted({r.config.get("budget") or "epochs" for r in runs})
    if rules == ["epochs"]:
        return "budget rule `epochs`: BLO/CLO LeeBERT epochs pass over half the rows, D1"
    if rules == ["theta_steps"]:
        return "budget rule `theta_steps`: every method takes the same number of model steps per epoch"
    return "budget rules " + " and ".join(f"`{x}`" for x in rules) + " (`epochs`: BLO/CLO LeeBERT epochs pass " \
        "over half the rows; `theta_steps`: the same model steps for every method)"


def _drift_verdict(ratios: list[float]) -> str:
    r = np.array(ratios)
    if (r >= DRIFT_HOLDS).mean() >= 0.75:
        word = "**holds**"
    elif (r < DRIFT_FAILS).mean() >= 0.75:
        word = "**does not hold**"
    else:
        word = "**partly**"
    return (f"{word}: ‖Ω − drift‖ / ‖Ω − start‖ = {' / '.join(f'{x:.2f}' for x in r)} over {len(r)} run(s) "
            f"(holds when at least 3 runs in 4 reach {DRIFT_HOLDS}; does not hold when at least 3 in 4 stay below "
            f"{DRIFT_FAILS}, i.e. the drift explains over three quarters of Ω's movement)")


def omega_drift_section(runs: list[Run]) -> str:
    """The claim "learned Ω differs from the drift a data-free update gives" (core.engine.omega_drift), per run,
    with a verdict for first-order (the paper's) and second-order (DARTS) Ω gradients, and the measured
    step cost of the second-order gradient where a run folder holds bench/bench_train_step.py's JSON."""
    rows, ratios, cost, size = [], defaultdict(list), [], []
    for r in runs:
        cmp_ = compare_to_drift([m for m in read_metrics(r.path) if m.get("kind") == "omega"], r.config)
        if cmp_ is None:
            continue
        order = r.config.get("omega_grad") or "first_order"
        ratios[order].append(cmp_["ratio"])
        rows.append([f"`{r.name}`", r.label or r.variant, cmp_["steps"], f"{cmp_['moved']:.4f}", f"{cmp_['off_drift']:.4f}",
                     f"{cmp_['ratio']:.2f}", f"{cmp_['ce_spread']:.4f} / {cmp_['drift_ce_spread']:.4f}"])
        if (r.path / STEP_COST_FILE).exists():
            cost.append(read_json(r.path / STEP_COST_FILE))
        if (r.path / GRAD_SIZE_FILE).exists():
            size.append(read_json(r.path / GRAD_SIZE_FILE))
    if not rows:
        return ""
    lines = ["Ω's gradient moves weight toward each exit's smallest term, and Eq. 4 makes the distillation terms "
             "far smaller than CE, whatever the data. The data-free drift replays each run's own Ω updates (Adam, "
             "its λ2, its steps, CLO's plain / cross-level gradient scale) on constant terms, CE 1 and every "
             "distillation term 0 (`core.engine.omega_drift`). A run's Ω that lands where the drift lands has learned "
             "its update schedule, not the task. Norms are Frobenius norms of the whole matrix; one number per "
             "run from a deterministic replay, so no uncertainty is attached (the seed runs show the spread).", "",
             table(["run", "variant", "Ω steps", "‖Ω − start‖", "‖Ω − drift‖", "ratio",
                    "own-CE spread over exits (run / drift)"], rows), ""]
    for order, label in (("first_order", "first-order Ω gradient (the paper's SLO / BLO / CLO)"),
                         ("second_order", "second-order Ω gradient (DARTS Eq. 7-8, `--omega-grad second_order`)")):
        if ratios.get(order):
            lines.append(f"- Claim \"learned Ω differs from the drift a data-free update gives\", {label}: "
                         + _drift_verdict(ratios[order]))
    for g in size:
        def pm(mean, sd, fmt):
            return format(mean, fmt) + ("" if sd is None else " ± " + format(sd, ".2g"))
        grows = [[f"{x['scale']:g}", pm(x["rel_mean"], x["rel_sd"], ".3g"), pm(x["cos_mean"], x["cos_sd"], ".4f")]
                 for x in g.get("rows", [])]
        lines += ["", "How much the second-order term changes Ω's gradient on the real model "
                  f"(`{g.get('command', 'bench/bench_omega_second_order.py')}`; pretrained {g.get('backbone')} with "
                  f"fresh exits, uniform Ω, mean ± s.d. over {g.get('pairs')} (B1, B2) pairs of {g.get('batch_size')} "
                  f"rows; ξ = scale × the learning rates λ1 = {g.get('lr')}, head_lr = {g.get('head_lr')}; scale 1 is "
                  "what `--omega-grad second_order` uses):", "",
                  table(["scale of ξ", "‖∇Ω 2nd − ∇Ω 1st‖ / ‖∇Ω 1st‖", "cosine"], grows)]
    for c in cost:
        ms = c.get("ms_per_step", {})
        base = ms.get("joint")
        if not base:
            continue
        crow = [[k, f"{v['cpu_min']:.0f}", f"{v['cpu_min'] / base['cpu_min']:.2f}x", f"{v['wall']:.0f}"]
                for k, v in ms.items()]
        lines += ["", f"Measured step cost (`{c.get('command', 'bench/bench_train_step.py')}`; {c.get('device')}, "
                  f"{c.get('threads')} thread(s), batch {c.get('batch_size')}, best of {c.get('rounds')} rounds of "
                  f"{c.get('steps')} steps; CPU time, which other load on the machine does not inflate as it does "
                  "wall time; one measurement, no uncertainty):", "",
                  table(["variant", "CPU ms / step (best round)", "vs joint", "wall ms / step (median)"], crow)]
    return "\n".join(lines)


def build(root: Path, out: Path) -> tuple[str, dict[str, bytes]]:
    runs, problems = load_runs(root)
    fig_dir = out / "figures"
    figures: dict[str, bytes] = {}
    parts = ["# Results: the seed papers' claims on our own runs", "",
             f"Generated by `python -m core.report` from the {len(runs)} run folder(s) in `checkpoints/`; "
             "do not edit by hand. Scores are dev-set scores in %, computed from each run's cached per-exit "
             "probabilities. Speed-ups are named: layer speed-up = L / mean exit layer; saved = 1 − mean exit "
             "layer / L (PCEE-BERT's \"speed-up\"); wall-clock from measured batch-1 latencies.", ""]
    if problems:
        parts += ["Run folders left out:", ""] + [f"- {p}" for p in problems] + [""]
    unhealthy = [(r.name, s) for r in runs for s in assess(r.cache)]
    if unhealthy:  # core.engine.health: a run that learned nothing usable is flagged before its numbers
        parts += ["Runs whose exits learned nothing usable (their numbers below compare guesses):", ""]
        parts += [f"- {name}: {sentence}" for name, sentence in unhealthy] + [""]
    by_task = defaultdict(list)
    for r in runs:
        by_task[r.task].append(r)
    for task in sorted(by_task, key=lambda t: (t != "rotten_tomatoes", t)):
        task_runs = label_runs(sorted(by_task[task], key=lambda r: r.name))
        ref = reference_run(task_runs)
        c = ref.cache
        parts += [f"## {task}", "",
                  f"{len(task_runs)} run(s); dev set N = {c.N}, L = {c.L} exits, K = {c.K} classes, "
                  f"metric {c.metric}, backbone `{c.meta.get('backbone', '?')}`. Training budgets used: "
                  + "; ".join(sorted({f"{r.config.get('max_train') or 'all'} training rows x "
                                      f"{r.config.get('epochs')} epoch(s)" for r in task_runs}))
                  + f" ({_budget_note(task_runs)}). The exact command of every run is in its config.json."
                  + (f" Method rows and claims keep the two budgets apart: `{PROTOCOL}` runs train on every "
                     "training row less a seeded validation part and keep their best validation epoch "
                     f"(`--val-fraction`); `{QUICK}` runs are the first, short bundled runs."
                     if len({r.budget for r in task_runs}) > 1 else ""), ""]
        parts += ["### Every exit's score by training method (BADGE Table 1 form)", "",
                  per_exit_section(task_runs, task, fig_dir, figures), ""]
        if any(r.config.get("method") == "alternating" for r in task_runs):
            parts += ["ALT (`alternating`) trains CE of the last exit on odd steps and Σ_m CE_m on even steps: the "
                      "sum of BADGE App. A.3.2 Eq. 8, not the mean, so an even step weighs about L times an odd one "
                      "in Adam's moments and under clipping, as the paper has it.", ""]
        parts += ["### Strategies at matched savings (PCEE-BERT Table 2 form)", "", matched_savings_section(ref), ""]
        parts += ["### Calibrated operating points (risk control on held-out samples)", "", calibrated_section(ref), ""]
        figures[f"{task}_curves.png"] = _curves_figure(ref)
        parts += [f"![speed-up against score, {ref.name}](figures/{task}_curves.png)", ""]
        parts += ["### PABEE patience against mean exit layer (PCEE-BERT Table 1 form)", "", patience_section(ref), ""]
        parts += [f"### Methods against strategies at about {MID_SPEEDUP:.0f}x (LeeBERT Table 1 form)", "",
                  methods_by_strategies_section(task_runs, MID_SPEEDUP), ""]
        if task == "rotten_tomatoes":
            parts += [f"### The default run at {MID_SPEEDUP:.0f}x against its full model", "",
                      default_at_2x_section(ref, MID_SPEEDUP), ""]
            parts += ["### Wall-clock against layer speed-up (default run)", "", wallclock_section(ref), ""]
            if (ref.path / "promise.json").exists():
                parts += ["### Promise kept? The exported point on unseen rows (default run)", "",
                          promise_section(ref.path / "promise.json"), ""]
        omega_runs = [r for r in task_runs if r.omega]
        if omega_runs:
            parts += ["### Learned loss weights Ω at the end of training (LeeBERT)", "", omega_section(omega_runs), ""]
            drift_text = omega_drift_section(omega_runs)
            if drift_text:
                parts += ["### What learned Ω learns: Ω against its data-free drift", "", drift_text, ""]
        parts += ["### The papers' claims here", "", claims_section(task_runs), ""]
    if not runs:
        parts.append("No runs yet: train some with `python -m core.train`.")
    return "\n".join(parts).rstrip() + "\n", figures


def main(argv=None):
    ap = argparse.ArgumentParser(description="Regenerate docs/RESULTS.md and its figures from checkpoints/.")
    ap.add_argument("--root", default=str(DEFAULT_ROOT))
    ap.add_argument("--out", default=str(REPO_ROOT / "docs"))
    args = ap.parse_args(argv)
    out = Path(args.out)
    text, figures = build(Path(args.root), out)
    for name, data in sorted(figures.items()):
        atomic_write_bytes(out / "figures" / name, data)
    atomic_write_text(out / "RESULTS.md", text)
    print(f"wrote {out / 'RESULTS.md'} and {len(figures)} figure(s)")


if __name__ == "__main__":
    main()
