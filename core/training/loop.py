"""Torch. The training loop: methods as stages (plan_stages), the Trainer that runs stages, epochs and
steps and tells its callbacks, one step object per stage kind (MethodStep, LeeBERTStep), evaluation.
"""
from __future__ import annotations

import math
import time
from collections import defaultdict
from dataclasses import dataclass
from typing import Callable

import numpy as np
import torch

from core.engine.metrics import score
from core.training import losses
from core.training.batches import model_inputs
from core.training.config import OLD_BUDGET, TWO_STAGE
from core.training.omega import Omega, OmegaOptimizer, split_d1_d2, uses_split


class TrainingCancelled(Exception):
    """Raised between steps after SIGTERM / SIGINT; the run folder's state becomes `cancelled`."""


# ---- methods as stages --------------------------------------------------------------------------
@dataclass
class Stage:
    name: str        # "train" | "stage1" | "stage2"
    epochs: int
    trainable: str   # "all" | "last" (backbone + exit L) | "intermediate" (exits 1..L-1)
    loss: str        # joint | alternating | diversity | leebert | last | intermediate | self_distill


def plan_stages(cfg: dict) -> list[Stage]:
    m, e = cfg["method"], cfg["epochs"]
    if m in TWO_STAGE:
        return [Stage("stage1", e, "last", "last"),
                Stage("stage2", cfg["stage2_epochs"], "intermediate",
                      "intermediate" if m == "two_stage" else "self_distill")]
    loss = {"joint": "joint", "badge": "joint", "alternating": "alternating",
            "diversity": "diversity", "leebert": "leebert"}[m]
    return [Stage("train", e, "all", loss)]


def _params(module) -> list[torch.nn.Parameter]:
    return list(module.parameters()) if module is not None else []


def stage_parameters(model, trainable: str) -> tuple[list, list]:
    """(backbone params, head params) a stage updates. Heads = exits, bypasses, LTE heads; exit m's
    bypass and LTE head go with exit m."""
    def heads(idx):
        out = []
        for part in (model.exits, model.bypasses, model.lte_heads):
            if part is not None:
                for i in idx:
                    out += _params(part[i])
        return out
    L = model.num_layers
    if trainable == "all":
        groups = model.param_groups()
        return groups["backbone"], groups["exits"] + groups["bypasses"] + groups["lte"]
    if trainable == "last":
        return _params(model.encoder), heads([L - 1])
    if trainable == "intermediate":
        return [], heads(range(L - 1))
    raise ValueError(f"unknown trainable set {trainable!r}")


def active_exits(loss: str, step_in_stage: int, L: int) -> tuple[str, list[int]]:
    """(effective loss, 0-based exits trained by it) for one step; ALT alternates by step parity."""
    if loss == "alternating":
        loss = "last" if step_in_stage % 2 == 1 else "joint_sum"
    if loss == "last":
        return loss, [L - 1]
    if loss in ("intermediate", "self_distill"):
        return loss, list(range(L - 1))
    return loss, list(range(L))


def method_loss(loss: str, logits, labels, cfg: dict):
    """(scalar loss, per-exit CE [L]) of a non-LeeBERT step."""
    if loss == "joint":
        return losses.joint_loss(logits, labels, cfg["weights"] or "linear")
    if loss == "joint_sum":
        return losses.summed_loss(logits, labels, cfg["weights"] or "uniform")
    if loss == "last":
        return losses.last_exit_loss(logits, labels)
    if loss == "intermediate":
        return losses.intermediate_loss(logits, labels)
    if loss == "self_distill":
        return losses.self_distill_loss(logits), losses.exit_ce(logits.detach(), labels)
    if loss == "diversity":
        return losses.diversity_loss(logits, labels, cfg["lambda_div"], cfg["weights"] or "uniform")
    raise ValueError(f"unknown loss {loss!r}")


def linear_schedule(optimizer, total: int, warmup: int):
    """Linear warm-up to the base rates, then linear decay to 0 (Hugging Face's default schedule)."""
    def f(step):
        if step < warmup:
            return (step + 1) / (warmup + 1)
        return max(0.0, (total - step) / max(1, total - warmup))
    return torch.optim.lr_scheduler.LambdaLR(optimizer, f)


# ---- the trainer --------------------------------------------------------------------------------
class Trainer:
    """The training loop over stages, epochs and steps. It knows nothing of files: callbacks
    (minGPT-style, `add_callback(event, fn)`, fn(trainer, **info)) write metrics, status and progress.

    Events: on_train_start, on_stage_start(stage), on_step_end(record), on_omega(matrix),
    on_epoch_end(stage, epoch), on_stage_end(stage), on_train_end.
    """

    def __init__(self, cfg: dict, model, train_rows: list[dict], collate, accelerator, *,
                 should_stop: Callable[[], bool] = lambda: False):
        self.cfg, self.model, self.rows, self.collate = cfg, model, train_rows, collate
        self.acc = accelerator
        self.raw = accelerator.unwrap_model(model)  # attributes (exits, encoder) behind a DDP wrap
        self.should_stop = should_stop
        self.callbacks: dict[str, list] = defaultdict(list)
        self.stages = plan_stages(cfg)
        self.L = self.raw.num_layers
        self.step = 0                 # global optimizer steps done (1-based after the first)
        self.epoch = 0                # epochs finished + 1 while running (1-based)
        self.stage: Stage | None = None
        self.stage_index = 0
        self.omega: Omega | None = None
        self.omega_opt: OmegaOptimizer | None = None
        self.started = time.time()
        self.last: dict = {}
        self.stop_stage = False       # an on_epoch_end callback sets it to end the stage early
        if cfg["method"] in TWO_STAGE and self.L < 2:
            raise ValueError(f"--method {cfg['method']} needs a backbone with at least 2 layers (got {self.L})")
        if cfg["method"] == "leebert":
            self.omega = Omega(self.L, cfg["teachers"], cfg["weights"], seed=cfg["seed"]).to(accelerator.device)
        if cfg.get("omega_grad") == "second_order" and accelerator.num_processes > 1:
            raise ValueError("--omega-grad second_order runs on one process; launch it without several processes")
        self.total_steps = sum(s.epochs * self.steps_per_epoch(s) for s in self.stages)

    # -- callbacks --
    def add_callback(self, event: str, fn) -> None:
        self.callbacks[event].append(fn)

    def trigger(self, event: str, **info) -> None:
        for fn in self.callbacks.get(event, []):
            fn(self, **info)

    # -- sizes --
    def splits_rows(self, stage: Stage) -> bool:
        """Whether Θ trains on D1 only in this stage (LeeBERT BLO / CLO)."""
        return stage.loss == "leebert" and uses_split(self.cfg["optimizer"])

    def epoch_rows(self, stage: Stage) -> int:
        n = len(self.rows)
        if self.splits_rows(stage) and self.cfg["budget"] == OLD_BUDGET:
            return (n + 1) // 2  # one pass over D1; under theta_steps D1 is cycled to n rows' steps
        return n

    def steps_per_epoch(self, stage: Stage) -> int:
        batches = math.ceil(self.epoch_rows(stage) / self.cfg["batch_size"])
        return math.ceil(batches / max(1, self.acc.num_processes))

    def loader(self, indices: np.ndarray, *, shuffle_key: tuple | None):
        """A prepared DataLoader over rows[indices], shuffled by a numpy generator seeded with
        (seed, *shuffle_key) so every process and every repeat of the command draws the same order."""
        from torch.utils.data import DataLoader, Subset

        idx = np.asarray(indices)
        if shuffle_key is not None:
            idx = idx[np.random.default_rng([int(self.cfg["seed"]), *shuffle_key]).permutation(len(idx))]
        dl = DataLoader(Subset(self.rows, idx.tolist()), batch_size=self.cfg["batch_size"], shuffle=False,
                        collate_fn=self.collate)
        return self.acc.prepare(dl)

    # -- the loop --
    def run(self) -> None:
        self.trigger("on_train_start")
        for si, stage in enumerate(self.stages):
            self.stage_index, self.stage = si, stage
            self.run_stage(stage)
        self.trigger("on_train_end")

    def _set_trainable(self, stage: Stage):
        backbone, heads = stage_parameters(self.raw, stage.trainable)
        chosen = {id(p) for p in backbone + heads}
        for p in self.raw.parameters():
            p.requires_grad_(id(p) in chosen)
        return backbone, heads

    def make_step(self, stage: Stage) -> "StageStep":
        """Set up `stage` and return its step object: `step(batch, step_in_stage, next_b2=None) -> record`,
        one optimizer step on `batch` (LeeBERTStep for LeeBERT, MethodStep for every other loss)."""
        return (LeeBERTStep if stage.loss == "leebert" else MethodStep)(self, stage)

    def run_stage(self, stage: Stage, *, max_steps: int | None = None) -> None:
        """Train one stage: its epochs over the (shuffled) training rows, or D1 for BLO/CLO."""
        cfg = self.cfg
        self.stage = stage
        step_fn = self.make_step(stage)
        if stage.loss == "leebert":
            self.trigger("on_omega", matrix=self.omega.matrix())
        self.trigger("on_stage_start", stage=stage)
        self.model.train()
        n = len(self.rows)
        step_in_stage = 0
        for ep in range(stage.epochs):
            self.epoch += 1
            key = (self.stage_index, ep)
            next_b2 = None
            if self.splits_rows(stage):
                d1, d2 = split_d1_d2(n, seed=cfg["seed"], epoch=self.epoch)
                if cfg["budget"] == OLD_BUDGET:
                    train_dl = self.loader(d1, shuffle_key=(*key, 1))  # one pass over D1
                else:
                    train_dl = self._d1_batches(d1, key, self.steps_per_epoch(stage))
                next_b2 = self._cycler(d2, key)
            else:
                train_dl = self.loader(np.arange(n), shuffle_key=(*key, 1))
            for batch in train_dl:
                if self.should_stop():
                    raise TrainingCancelled("cancelled by signal")
                if max_steps is not None and step_in_stage >= max_steps:
                    return
                self.step += 1
                step_in_stage += 1
                rec = step_fn(batch, step_in_stage, next_b2)
                self.last = rec
                self.trigger("on_step_end", record=rec)
            self.trigger("on_epoch_end", stage=stage, epoch=self.epoch)
            if self.stop_stage:  # early stopping (set by an on_epoch_end callback)
                self.stop_stage = False
                break
        self.trigger("on_stage_end", stage=stage)

    def _d1_batches(self, d1: np.ndarray, key: tuple, steps: int):
        """`steps` batches from D1: passes over it, the first shuffled as one epoch's single pass was
        (so `--budget epochs` is unchanged), later passes reshuffled."""
        done, p = 0, 0
        while done < steps:
            for batch in self.loader(d1, shuffle_key=(*key, 1) if p == 0 else (*key, 1, p)):
                if done >= steps:
                    return
                done += 1
                yield batch
            p += 1

    def _cycler(self, d2: np.ndarray, key: tuple):
        """Endless B2 batches from D2, reshuffled on each pass."""
        state = {"pass": 0, "it": iter(self.loader(d2, shuffle_key=(*key, 2, 0)))}

        def nxt():
            while True:
                try:
                    return next(state["it"])
                except StopIteration:
                    state["pass"] += 1
                    state["it"] = iter(self.loader(d2, shuffle_key=(*key, 2, state["pass"])))
        return nxt


# ---- one optimizer step per stage kind ---------------------------------------------------------------
class StageStep:
    """A stage's set-up (trainable parameters, AdamW with the backbone and head rates, the linear
    schedule) and its optimizer step. Subclasses say how a step computes its loss (`loss_step`);
    `__call__` adds the learning rates and the stage to the record."""

    def __init__(self, trainer: Trainer, stage: Stage):
        cfg, acc = trainer.cfg, trainer.acc
        self.trainer, self.stage, self.cfg, self.acc, self.model = trainer, stage, cfg, acc, trainer.model
        self.L = trainer.L
        backbone, heads = trainer._set_trainable(stage)
        groups = [g for g in ({"params": backbone, "lr": cfg["lr"], "name": "backbone"},
                              {"params": heads, "lr": cfg["head_lr"], "name": "heads"}) if g["params"]]
        self.group_names = [g["name"] for g in groups]
        opt = torch.optim.AdamW(groups, lr=cfg["lr"], weight_decay=cfg["weight_decay"])
        stage_steps = stage.epochs * trainer.steps_per_epoch(stage)
        self.sched = linear_schedule(opt, stage_steps, int(cfg["warmup_ratio"] * stage_steps))
        self.opt = acc.prepare(opt)
        self.clip_params = backbone + heads
        raw = trainer.raw
        head_parts = [part for part in (raw.exits, raw.bypasses, raw.lte_heads) if part is not None]
        self.exit_params = {m: [p for part in head_parts for p in part[m].parameters() if p.requires_grad]
                            for m in range(self.L)}

    def __call__(self, batch, step_in_stage: int, next_b2=None) -> dict:
        rec = self.loss_step(batch, step_in_stage, next_b2)
        lrs = dict(zip(self.group_names, self.sched.get_last_lr()))
        rec["lr"], rec["head_lr"] = lrs.get("backbone", 0.0), lrs.get("heads", 0.0)
        rec["stage"] = self.stage.name
        return rec

    def loss_step(self, batch, step_in_stage: int, next_b2=None) -> dict:
        raise NotImplementedError

    def update_theta(self, loss, active=None, before_step=None) -> None:
        """Backward, clip, one optimizer and schedule step on the model (Θ)."""
        self.acc.backward(loss)
        if active is not None:
            # exits outside this step's loss still receive zero gradients (through the stacked
            # logits); drop them so Adam's momentum does not move them (ALT odd steps)
            for m in set(range(self.L)) - set(active):
                for p in self.exit_params[m]:
                    p.grad = None
        if before_step is not None:  # e.g. the second-order Ω gradient, which needs ∇Θ L_B1
            before_step()
        if self.cfg["max_grad_norm"] > 0:
            self.acc.clip_grad_norm_(self.clip_params, self.cfg["max_grad_norm"])
        self.opt.step()
        self.sched.step()
        self.opt.zero_grad(set_to_none=True)


class MethodStep(StageStep):
    """joint, two-stage, alternating, self-distillation, BADGE and diversity steps: the stage's loss
    on the exits it trains (`active_exits`), LTE heads with their exits, one model step."""

    def loss_step(self, batch, step_in_stage: int, next_b2=None) -> dict:
        loss_name, active = active_exits(self.stage.loss, step_in_stage, self.L)
        out = self.model(**model_inputs(batch))
        labels = batch["labels"]
        loss, ce = method_loss(loss_name, out.logits, labels, self.cfg)
        if out.confidence is not None:  # LTE heads train with their exits
            loss = loss + losses.lte_loss(out.confidence, out.logits, labels, exits=active)
        self.update_theta(loss, active)
        if self.acc.num_processes > 1:  # log the global batch's loss: mean over processes' equal shards
            loss, ce = self.acc.reduce(loss.detach(), reduction="mean"), self.acc.reduce(ce.detach(), reduction="mean")
        return {"loss": float(loss.detach()), "exit_losses": ce.detach().float().cpu().tolist(),
                "objective": loss_name}


class LeeBERTStep(StageStep):
    """LeeBERT (Eq. 5): the CE and distillation terms weighted by Ω, Θ and Ω stepped by the trainer's
    OmegaOptimizer (SLO / BLO / CLO, core.training.omega)."""

    def __init__(self, trainer: Trainer, stage: Stage):
        super().__init__(trainer, stage)
        cfg, acc = self.cfg, self.acc
        self.mask = losses.term_mask(self.L, cfg["teachers"], device=acc.device)
        reduce = (lambda g: acc.reduce(g, reduction="mean")) if acc.num_processes > 1 else None
        trainer.omega_opt = OmegaOptimizer(cfg["optimizer"], trainer.omega, lr=cfg["omega_lr"],
                                           theta_lr=cfg["lr"], cycle=cfg["cycle"], reduce_grad=reduce,
                                           omega_grad=cfg.get("omega_grad", "first_order"), theta=self.theta)

    def theta(self) -> list:
        """(parameter, ξ = its group's learning rate at this step) of the model parameters trained."""
        return [(p, g["lr"]) for g in self.opt.param_groups for p in g["params"] if p.requires_grad]

    def forward(self, b, grad, teacher=None, detach_teacher=True):
        """(LeeBERT terms [L, 1 + L], LTE loss or None, model output) of batch `b`."""
        with torch.set_grad_enabled(grad):
            out = self.model(**model_inputs(b))
            terms = losses.leebert_terms(out.logits, b["labels"], self.mask, self.cfg["temperature"], teacher,
                                     detach_teacher)
            extra = None
            if grad and out.confidence is not None:
                extra = losses.lte_loss(out.confidence, out.logits, b["labels"])
        return terms, extra, out

    def loss_step(self, batch, step_in_stage: int, next_b2=None) -> dict:
        info = self.trainer.omega_opt.step(step_in_stage, batch, forward=self.forward,
                                           update_theta=self.update_theta, next_b2=next_b2)
        if info.omega_updated:
            self.trainer.trigger("on_omega", matrix=None)
        return {"loss": info.loss, "exit_losses": info.terms[:, 0].float().cpu().tolist(),
                "objective": "leebert", "cross_level": info.cross}


# ---- evaluation ---------------------------------------------------------------------------------
@torch.no_grad()
def predict(model, loader, accelerator, n: int, *, should_stop=lambda: False):
    """Softmax of every exit on every row: (probs [n, L, K] float32, confidence [n, L] | None),
    in row order (rows carry their index, so sharding and sorting do not matter)."""
    was_training = model.training
    model.eval()
    probs = conf = None
    for batch in loader:
        if should_stop():
            raise TrainingCancelled("cancelled by signal")
        out = model(**model_inputs(batch))
        p = torch.softmax(out.logits.float(), dim=-1)
        idx = batch["idx"]
        c = out.confidence.float() if out.confidence is not None else None
        idx, p = accelerator.gather_for_metrics((idx, p))
        if c is not None:
            c = accelerator.gather_for_metrics(c)
        if probs is None:
            probs = np.zeros((n, p.shape[1], p.shape[2]), dtype=np.float32)
            conf = np.zeros((n, p.shape[1]), dtype=np.float32) if c is not None else None
        ii = idx.cpu().numpy()
        probs[ii] = p.cpu().numpy()
        if c is not None:
            conf[ii] = c.cpu().numpy()
    model.train(was_training)
    return probs, conf


def exit_scores(metric: str, labels: np.ndarray, probs: np.ndarray) -> list[float]:

    pred = probs.argmax(-1)
    return [score(metric, labels, pred[:, m]) for m in range(probs.shape[1])]
