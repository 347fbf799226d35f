"""Torch. The Trainer's callbacks: RunWriter (metrics.jsonl, status.json), ProgressBar, BestEpoch
(validation, early stopping, the kept epoch), and the weak-budget warnings a run ends with.
"""
from __future__ import annotations

import sys
import time
from pathlib import Path

import numpy as np

from core.engine.health import majority_score
from core.runs.folders import METRICS_FILE, read_metrics, write_status
from core.runs.io import append_jsonl
from core.training.loop import exit_scores, predict


# ---- callbacks that write the run folder --------------------------------------------------------
class RunWriter:
    """metrics.jsonl and status.json (throttled to about one write a second)."""

    def __init__(self, folder: Path, *, log_every: int, status_interval: float = 1.0, enabled: bool = True):
        self.folder, self.log_every, self.interval, self.enabled = folder, log_every, status_interval, enabled
        self.metrics = folder / METRICS_FILE
        self._acc: list[dict] = []
        self._last_status = 0.0
        self._omega_dirty = False
        self._t0 = time.time()

    def record(self, trainer, kind: str, **fields):
        if self.enabled:
            append_jsonl(self.metrics, {"kind": kind, "step": trainer.step, "epoch": trainer.epoch,
                                        "time": time.time(), **fields})

    def status(self, trainer, *, force: bool = False, message: str | None = None):
        now = time.time()
        if not self.enabled or (not force and now - self._last_status < self.interval):
            return
        self._last_status = now
        total = max(1, trainer.total_steps)
        done = trainer.step
        rate = (now - self._t0) / done if done else None
        eta = rate * (total - done) if rate is not None else None
        fields = dict(step=done, total_steps=trainer.total_steps, epoch=trainer.epoch,
                      progress=round(min(done / total, 0.99), 4), eta_s=None if eta is None else round(eta, 1))
        if message:
            fields["message"] = message
        write_status(self.folder, "running", **fields)

    # -- events --
    def on_train_start(self, trainer):
        self._t0 = time.time()
        self.status(trainer, force=True, message="training")

    def on_stage_start(self, trainer, stage):
        self._flush(trainer)  # records never average across stages

    def _flush(self, trainer):
        if not self._acc:
            return
        recs, self._acc = self._acc, []
        rec = dict(recs[-1])
        rec["loss"] = float(np.mean([r["loss"] for r in recs]))
        rec["exit_losses"] = np.mean([r["exit_losses"] for r in recs], axis=0).round(6).tolist()
        rec["steps_averaged"] = len(recs)
        self.record(trainer, "train", **rec)
        if self._omega_dirty:
            self._write_omega(trainer)

    def on_step_end(self, trainer, record):
        self._acc.append(record)
        last = trainer.step >= trainer.total_steps
        if trainer.step % self.log_every == 0 or trainer.step == 1 or last:
            self._flush(trainer)
        self.status(trainer, message=f"{trainer.stage.name}: epoch {trainer.epoch}")

    def on_omega(self, trainer, matrix):
        if matrix is not None:  # a snapshot at a stage start: write it now
            self._write_omega(trainer, matrix)
        else:
            self._omega_dirty = True

    def _write_omega(self, trainer, matrix=None):
        self._omega_dirty = False
        om = trainer.omega
        self.record(trainer, "omega", omega=matrix or om.matrix(), terms=om.terms,
                    optimizer=trainer.cfg["optimizer"], weights=trainer.cfg["weights"])

    def on_train_end(self, trainer):
        self._flush(trainer)
        if self._omega_dirty:
            self._write_omega(trainer)


class ProgressBar:
    def __init__(self, enabled: bool = True):
        self.enabled, self.bar = enabled, None

    def on_train_start(self, trainer):
        from tqdm.auto import tqdm

        tty = sys.stderr.isatty()
        self.bar = tqdm(total=trainer.total_steps, desc=trainer.cfg["method"], unit="step",
                        disable=not self.enabled, mininterval=0.2 if tty else 5.0, dynamic_ncols=True)

    def on_step_end(self, trainer, record):
        if self.bar is not None:
            self.bar.set_postfix(loss=f"{record['loss']:.4f}", ep=trainer.epoch, refresh=False)
            self.bar.update(1)

    def on_train_end(self, trainer):
        if self.bar is not None:
            self.bar.close()


# ---- validation, early stopping, weak-budget warnings --------------------------------------------
class BestEpoch:
    """Scores the validation rows after every epoch (the task metric averaged over exits, S-avg) and
    keeps each stage's best epoch: its weights are copied to CPU memory and put back when the stage
    ends; `patience` epochs without a better score end the stage early (0 = never). The dev set plays
    no part in any of it. Ties keep the earlier epoch."""

    def __init__(self, model, *, val_loader, labels: np.ndarray, metric: str, patience: int, accelerator,
                 writer: "RunWriter", should_stop):
        self.model, self.loader, self.labels, self.metric = model, val_loader, labels, metric
        self.patience, self.acc, self.writer, self.should_stop = patience, accelerator, writer, should_stop
        self.on_stage_start(None, None)

    def on_stage_start(self, trainer, stage=None):
        self.curve: list[tuple[int, float]] = []  # (epoch, validation S-avg) of the current stage
        self.best: float | None = None
        self.best_state: dict | None = None
        self.best_omega: dict | None = None
        self.kept_epoch: int | None = None
        self.wait = 0
        self.stopped_early = self.restored = False

    def scores(self, trainer) -> list[float]:
        """Each exit's task score on the validation rows."""
        probs, _ = predict(trainer.model, self.loader, self.acc, len(self.labels), should_stop=self.should_stop)
        return exit_scores(self.metric, self.labels, probs)

    def on_epoch_end(self, trainer, **_):
        scores = self.scores(trainer)
        score = float(np.mean(scores))
        self.curve.append((trainer.epoch, score))
        improved = self.best is None or score > self.best
        if improved:
            self.best, self.kept_epoch, self.wait = score, trainer.epoch, 0
            self.best_state = {k: v.detach().to("cpu", copy=True) for k, v in self.model.state_dict().items()}
            self.best_omega = ({k: v.detach().clone() for k, v in trainer.omega.state_dict().items()}
                               if trainer.omega is not None else None)
        else:
            self.wait += 1
            if self.patience and self.wait >= self.patience:
                trainer.stop_stage = self.stopped_early = True
        self.writer.record(trainer, "val", split="val", metric=self.metric, exit_scores=[round(x, 6) for x in scores],
                           s_avg=score, s_best=float(np.max(scores)), stage=trainer.stage.name, best=improved)

    def on_stage_end(self, trainer, stage):
        if self.best_state is not None and self.curve and self.kept_epoch != self.curve[-1][0]:
            self.model.load_state_dict(self.best_state)
            if self.best_omega is not None:  # LeeBERT: Ω as it was at the kept epoch, recorded again
                trainer.omega.load_state_dict(self.best_omega)
                trainer.trigger("on_omega", matrix=trainer.omega.matrix())
            self.restored = True
        self.best_state = None

    def summary(self) -> str:
        """One status sentence: which epoch's weights the run keeps and why."""
        if self.kept_epoch is None:
            return "no validation score recorded"
        last = self.curve[-1][0]
        why = (f"stopped early after {self.wait} epoch{'s' if self.wait > 1 else ''} without a better validation score"
               if self.stopped_early else f"the last epoch was {last}")
        return (f"kept the weights and cache of epoch {self.kept_epoch} (best validation {self.metric} avg "
                f"{self.best:.4f}); {why}")


CHANCE_MARGIN = 0.02   # an exit within this of the majority-class score counts as near chance
RISING_MIN = 0.002     # a last-epoch gain above this counts as still rising


def weak_budget_warnings(metric: str, labels: np.ndarray, scores, curve, *, curve_split: str,
                         stopped_early: bool = False) -> list[str]:
    """Plain sentences for status.json `warnings`: exits near chance on the dev set (against always
    answering the most common class), and a validation (or dev) S-avg still rising at the last epoch."""

    out = []
    chance = majority_score(metric, labels)
    near = [m for m, s in enumerate(scores) if s <= chance + CHANCE_MARGIN]
    if near:
        which = ", ".join(f"{m + 1} ({scores[m]:.3f})" for m in near)
        out.append(f"{len(near)} of {len(scores)} exits score near chance on the dev set: exit {which} in "
                   f"{metric}, where always answering the most common class scores {chance:.3f}. "
                   "More training rows or epochs may help.")
    if len(curve) >= 2 and not stopped_early:
        (e0, s0), (e1, s1) = curve[-2], curve[-1]
        if s1 > s0 + RISING_MIN:
            out.append(f"The {curve_split} {metric} (mean over exits) was still rising at the last epoch: "
                       f"{s0:.3f} after epoch {e0}, {s1:.3f} after epoch {e1}. More epochs may help.")
    return out


def dev_curve(folder: Path) -> list[tuple[int, float]]:
    """(epoch, dev S-avg) of the last stage's per-epoch dev records in the run's metrics.jsonl."""
    recs = [r for r in read_metrics(folder, "eval") if r.get("s_avg") is not None]
    if not recs:
        return []
    stage = recs[-1].get("stage")
    return sorted({int(r["epoch"]): float(r["s_avg"]) for r in recs if r.get("stage") == stage}.items())
