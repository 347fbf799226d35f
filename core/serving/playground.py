"""The Playground's logic without Streamlit: load a run's model once, run one text through the real
early-exit predictor (core.serving.predictor, the CLI's code path) and time it against running every layer.

    pm = load(run_folder)                        # ValueError with the command that makes the weights
    res = run_text(pm, "a gripping film", strategy="entropy", threshold=0.3)
    res.exit_layer, res.label, res.probs          # [m, K]: only the layers that ran
    res.latency_ms, res.full_ms, res.speedup      # medians over `repeats` interleaved runs
    core.app.figures.probs_figure(res)            # layers x classes heatmap, rows up to the exit

The full-model timing uses the same predictor with the budget rule at layer L (every layer and its
exit run, one decision per layer), so the two numbers differ only by the layers the exit skipped.
"""
from __future__ import annotations

import contextlib
import os
import threading
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from core.engine.features import normalized_entropy
from core.runs.folders import CONFIG_FILE, WEIGHTS_FILE, read_config


# ---- what a run has ------------------------------------------------------------------------------
def weights_mtime(folder: str | os.PathLike) -> float:
    """model.safetensors' modification time (0 when missing): the key for caching a loaded model."""
    try:
        return (Path(folder) / WEIGHTS_FILE).stat().st_mtime
    except OSError:
        return 0.0


def train_command(folder: str | os.PathLike) -> str | None:
    """The command that trains this run again, with weights: config.json's "command" (with
    --save-weights if the run switched them off); None when the run has no config."""
    try:
        cfg = read_config(folder) or {}
    except ValueError:
        return None
    cmd = cfg.get("command") or cfg.get("canonical_command")
    if not cmd:
        return None
    if cfg.get("save_weights") is False or "--no-save-weights" in cmd:
        cmd = cmd.replace(" --no-save-weights", "") + " --save-weights"
    return cmd


def missing_weights_message(folder: str | os.PathLike) -> str | None:
    """None when the run has weights; else what to run to make them."""
    folder = Path(folder)
    if (folder / WEIGHTS_FILE).is_file():
        return None
    cmd = train_command(folder)
    how = (f"Train it again with weights:\n\n    {cmd}" if cmd else
           f"Its {CONFIG_FILE} records no command; train a run with `python -m core.train ... --out "
           f"{folder}` (weights are saved unless --no-save-weights).")
    return f"Run {folder.name} has no {WEIGHTS_FILE} (its training saved no weights). {how}"


# ---- the loaded model ----------------------------------------------------------------------------
@dataclass
class PlaygroundModel:
    folder: Path
    model: object                 # core.models.multi_exit.MultiExitModel (eval mode, CPU)
    predictor: object             # core.serving.predictor.EarlyExitPredictor
    label_names: list[str]
    is_pair: bool
    task: str | None = None
    method: str | None = None

    @property
    def L(self) -> int:
        return int(self.model.num_layers)

    @property
    def K(self) -> int:
        return int(self.model.cfg.num_labels)

    @property
    def has_confidence(self) -> bool:
        return self.model.lte_heads is not None


def _fact(cfg: dict, key: str):
    """A fact core.train derived (under "derived" in config.json; top level in older runs)."""
    derived = cfg.get("derived") if isinstance(cfg.get("derived"), dict) else {}
    return derived.get(key, cfg.get(key))


def _cache(folder: Path):
    try:
        from core.engine.cache import ExitCache

        return ExitCache.load(folder)
    except Exception:  # no cache or unreadable: the callers fall back
        return None


def _label_names(folder: Path, cfg: dict, k: int) -> list[str]:
    names = _fact(cfg, "label_names")
    if not names:
        cache = _cache(folder)
        names = cache.label_names if cache is not None else None
    names = [str(n) for n in (names or [])]
    return names if len(names) == k else [f"class {j}" for j in range(k)]


def _is_pair(folder: Path, cfg: dict) -> bool:
    known = _fact(cfg, "is_pair")
    if known is not None:
        return bool(known)
    if cfg.get("text_pair_column"):
        return True
    cache = _cache(folder)
    if cache is not None and cache.texts is not None and len(cache.texts):
        return isinstance(cache.texts[0], (list, tuple))
    return False


def load(folder: str | os.PathLike) -> PlaygroundModel:
    """Rebuild the run's model from config.json + model.safetensors. ValueError (with the command that
    makes the weights) when there are none, or naming the file when they do not fit."""
    from core.models.multi_exit import MultiExitModel
    from core.serving.predictor import EarlyExitPredictor

    folder = Path(folder)
    msg = missing_weights_message(folder)
    if msg:
        raise ValueError(msg)
    try:
        cfg = read_config(folder) or {}
    except ValueError:
        cfg = {}
    try:
        model = MultiExitModel.from_run(folder)
    except ValueError:
        raise
    except Exception as e:  # SafetensorError (truncated, empty, garbage), OSError, RuntimeError, ...
        raise ValueError(weights_fault(folder / WEIGHTS_FILE, e)) from e
    if model.tokenizer is None:
        raise ValueError(f"{folder}: the backbone {model.cfg.backbone!r} brought no tokenizer")
    predictor = EarlyExitPredictor(model, model.tokenizer)
    k = int(model.cfg.num_labels)
    return PlaygroundModel(folder=folder, model=model, predictor=predictor,
                           label_names=_label_names(folder, cfg, k), is_pair=_is_pair(folder, cfg),
                           task=_fact(cfg, "task") or cfg.get("task"), method=cfg.get("method"))


def weights_fault(path: Path, error: Exception) -> str:
    """One sentence naming a weights file that does not load and what is wrong with it."""
    try:
        size = path.stat().st_size
    except OSError:
        size = None
    if size == 0:
        what = "is empty (0 bytes)"
    elif type(error).__name__ == "SafetensorError":
        what = f"is truncated or not a safetensors file ({error})"
    else:
        what = f"cannot be loaded ({type(error).__name__}: {error})"
    return f"{path} {what}; train the run again to write new weights, or delete the file"


# ---- one text ------------------------------------------------------------------------------------
@dataclass
class PlaygroundResult:
    text: str
    text_pair: str | None
    strategy: str
    params: dict
    probs: np.ndarray             # [m, K]: exits 1..m, the layers that ran
    exit_layer: int               # m
    pred: int
    label: str
    latency_ms: float             # median early-exit latency (tokenization to decision)
    full_ms: float                # median latency running all L layers (budget layer=L)
    layer_ms: list[float]         # [m] per layer, from the first early-exit run
    full_probs: np.ndarray        # [L, K] every exit, from the all-layers run
    full_pred: int
    full_label: str
    L: int
    label_names: list[str]
    confidence: np.ndarray | None = None
    runs_ms: list[float] = field(default_factory=list)
    full_runs_ms: list[float] = field(default_factory=list)

    @property
    def speedup(self) -> float:
        return self.full_ms / self.latency_ms if self.latency_ms > 0 else float("nan")

    @property
    def agrees(self) -> bool:
        return self.pred == self.full_pred


_THREADS_LOCK = threading.Lock()


@contextlib.contextmanager
def torch_threads(n: int | None):
    """Run with `n` intra-op torch threads (None: leave as is), then restore. At batch size 1 a tiny
    model on a busy machine is faster and far steadier on one thread than waiting for a pool."""
    if not n:
        yield
        return
    import torch

    with _THREADS_LOCK:
        before = torch.get_num_threads()
        torch.set_num_threads(int(n))
        try:
            yield
        finally:
            torch.set_num_threads(before)


def run_text(pm: PlaygroundModel, text: str, text_pair: str | None = None, *, strategy: str,
             repeats: int = 5, threads: int | None = 1, **params) -> PlaygroundResult:
    """Run `text` (and `text_pair`) through the predictor with `strategy` and with every layer (budget
    layer = L), `repeats` times each, alternating which goes first, after one untimed warm-up of each, on
    `threads` torch threads; latencies are medians. ValueError for empty text or bad strategy settings."""
    with torch_threads(threads):
        return _run_text(pm, text, text_pair, strategy=strategy, repeats=repeats, **params)


def _run_text(pm: PlaygroundModel, text: str, text_pair: str | None, *, strategy: str, repeats: int,
              **params) -> PlaygroundResult:
    text = (text or "").strip()
    text_pair = (text_pair or "").strip() or None
    if not text:
        raise ValueError("type a sentence first")
    if pm.is_pair and text_pair is None:
        raise ValueError("this run classifies sentence pairs: type the second sentence too")
    if not pm.is_pair:
        text_pair = None
    pred = pm.predictor
    full = dict(strategy="budget", layer=pm.L)
    first = pred.predict(text, text_pair, strategy=strategy, **params)   # also checks the settings
    whole = pred.predict(text, text_pair, **full)
    early_ms, full_ms = [], []
    for i in range(max(1, int(repeats))):
        # alternate which goes first (ABBA...), so neither gains from running right after the other
        for which in ((0, 1) if i % 2 == 0 else (1, 0)):
            if which == 0:
                early_ms.append(pred.predict(text, text_pair, strategy=strategy, **params).latency_ms)
            else:
                full_ms.append(pred.predict(text, text_pair, **full).latency_ms)
    names = pm.label_names
    return PlaygroundResult(
        text=text, text_pair=text_pair, strategy=strategy, params=dict(params), probs=np.asarray(first.probs),
        exit_layer=int(first.exit_layer), pred=int(first.pred), label=names[int(first.pred)],
        latency_ms=float(np.median(early_ms)), full_ms=float(np.median(full_ms)),
        layer_ms=[float(x) for x in first.layer_ms], full_probs=np.asarray(whole.probs),
        full_pred=int(whole.pred), full_label=names[int(whole.pred)], L=pm.L, label_names=list(names),
        confidence=None if first.confidence is None else np.asarray(first.confidence),
        runs_ms=early_ms, full_runs_ms=full_ms)


# ---- tables and figures --------------------------------------------------------------------------
def layers_table(res: PlaygroundResult) -> pd.DataFrame:
    """One row per layer that ran: each class's probability, the layer's top class, entropy, time."""
    p = res.probs                                                           # [m, K]
    ent = normalized_entropy(p, axis=1)
    df = pd.DataFrame(p, columns=res.label_names)
    df.insert(0, "layer", np.arange(1, len(p) + 1))
    df["top class"] = [res.label_names[j] for j in p.argmax(1)]
    df["max-prob"] = p.max(1)
    df["entropy (normalized)"] = ent
    if res.confidence is not None:
        df["learned confidence"] = res.confidence
    df["ms"] = res.layer_ms
    return df
