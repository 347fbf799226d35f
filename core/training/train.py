"""Train a multi-exit model and write its run folder.

    python -m core.train --task rotten_tomatoes --backbone minilm-l6 --method leebert \
        --optimizer clo_v2 --out checkpoints/rt-leebert
    python -m core.train --config run.json --epochs 1 --out checkpoints/quick   # flags override the file
    accelerate launch -m core.train ...                                        # same command, any devices
    python -m core.train ... --out checkpoints/rt-leebert --overwrite           # replace a run (see train())

In-process: `train(config: dict) -> Path` (keys as the flags, with underscores). The options, their
defaults, config resolution and the CLI parser live in core.training.config (torch-free, shared with the Train
form); this module holds the loop (`Trainer`, one step object per stage kind) and the run.

Methods (each a plan of stages; see `plan_stages`):
    joint         Σ_m w_m CE_m / Σ_m w_m, w_m = m (PABEE; PCEE-BERT Eq. 1) or uniform (`--weights`)
    two_stage     2ST (DeeBERT, FastBERT; BADGE A.3.1): backbone + last exit on CE_L, then the
                  backbone and last exit frozen and exits 1..L-1 trained on their CE
    alternating   ALT (BERxiT; BADGE A.3.2): odd steps CE_L (Eq. 7), even steps Σ_m CE_m (Eq. 8: the
                  sum, not the mean, so both kinds of step weigh as the paper has them)
    self_distill  FastBERT: stage 1 as 2ST; stage 2 exits 1..L-1 learn KL(p_L || p_m), backbone frozen
    leebert       LeeBERT Eq. 5: CE + mutual distillation (LAE/LLE) weighted by Ω (core.training.omega), Ω
                  learned by slo | blo | clo_v1 | clo_v2, or fixed uniform / random weights
    badge         joint training with BADGE block-wise bypasses (ModelConfig.bypass = True)
    diversity     Sun et al. Eq. 14: Σ CE_i − λ Σ_{i≥2} min_{j<i} CE(x_i, x_j)
`--lte` adds learned-exit heads to any method, trained with their exits (BCE vs. "exit is correct").

Budget (`--budget`): `theta_steps` (the default) makes `--epochs` mean the same number of model (Θ)
steps for every method: an epoch is ceil(rows / batch) steps. LeeBERT's BLO / CLO take Θ steps on D1,
half the rows (§4.4), so their epoch cycles D1 twice (reshuffled) instead of passing over it once.
`epochs` is the rule before it existed (an epoch = one pass over the rows Θ trains on, so BLO / CLO took
half the steps); a run's config.json written before the option existed repeats with that rule.
`--omega-grad second_order` (BLO, CLO) gives Ω the DARTS hypergradient through one virtual Θ step
(core.training.omega); `first_order` (default) is the paper's.

The run folder (core.runs.folders): config.json (every effective option, the exact command, a canonical
command, the ModelConfig under "model", derived facts under "derived"; a run's config.json works as
`--config` to repeat it), status.json (running -> done | failed | cancelled), metrics.jsonl (train /
omega / eval records), model.safetensors (optional) and cache.npz (the dev-set ExitCache).

Defaults and where they come from:
    batch_size 32                        the project's brief; within the papers' grids
    lr 1e-4 (backbone)                   best validation S-avg of the grid {3e-5, 5e-5, 1e-4} x 3 epochs on
                                         Rotten Tomatoes (docs/TUNING.md: 0.785 vs 0.766 / 0.759, +-0.016)
    head_lr 1e-3                         fresh exits / bypasses / LTE heads learn faster than the backbone
    epochs 3                             Sun et al. grid {3, 4, 5}; short CPU runs
    omega_lr 1e-3, cycle 4               LeeBERT Table 3, RTE row; CoLA (8.5k rows, Rotten Tomatoes' size)
                                         also takes 1e-3. Ω moves about omega_lr per step under Adam, and a
                                         default run is a few hundred steps
    teachers lae, optimizer clo_v2       LeeBERT §4.4 main setting
    temperature 2.0                      not given by LeeBERT; measured τ ∈ {1, 2, 4} on 1.5k Rotten
                                         Tomatoes rows: dev S-avg 0.711 / 0.710 / 0.711 (no effect: Eq. 4
                                         divides KD by M|T(m)|), so the common KD value 2 stays
    warmup_ratio 0.1                     BADGE App. C (10 % warm-up); linear decay (HF default)
    bypass_dim 16, bypass_act gelu       BADGE App. C and Table 5 (most tasks pick GELU)
    lambda_div 0.2                       Sun et al. §4.3 (best λ on SST-2)
    weights: joint/badge linear (PCEE-BERT Eq. 1), alternating uniform (BADGE Eq. 8),
             diversity uniform (Sun et al. Eq. 14)
    weight_decay 0 (Adam, as all four papers), max_grad_norm 1.0 (HF Trainer default), seed 0
    val_fraction 0, patience 0           off unless asked (LeeBERT's protocol: tune on the training data,
                                         evaluate each epoch, patience); with a validation split the best
                                         validation epoch is kept. Grid for lr: docs/TUNING.md
    split_version 2                      the default task's test split stays out of training; 1 = before it

With --val-fraction, training carves a validation split from its rows and scores it every epoch; early
stopping and the kept epoch read it and never the dev set. Each run ends with `warnings` in status.json
when its exits are near chance on the dev set or the validation (else dev) score still rose at the last
epoch (`weak_budget_warnings`).
"""
from __future__ import annotations

import math
import os
import platform
import shutil
import signal
import sys
import threading
import time
import traceback
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import torch

from core.runs.folders import (
    CACHE_FILE,
    CONFIG_FILE,
    JOB_FILE,
    METRICS_FILE,
    WEIGHTS_FILE,
    add_warnings,
    check_run_name,
    holds_run,
    read_metrics,
    staging_folder,
    swap_in,
    write_status,
)
from core.runs.io import append_jsonl, atomic_write_json
from core.training import losses
from core.training.config import (
    CLI_SWITCHES,
    OLD_BUDGET,
    TWO_STAGE,
    check_splits,
    command_line,
    load_task,
    out_from_argv,
    parse_cli,
    resolve_config,
)
from core.training.omega import Omega, OmegaOptimizer, split_d1_d2, uses_split


class TrainingCancelled(Exception):
    """Raised between steps after SIGTERM / SIGINT; the run folder's state becomes `cancelled`."""



# ---- data ---------------------------------------------------------------------------------------
def encode_rows(df, tokenizer, max_length: int) -> list[dict]:
    """Tokenize a TaskData frame (text, [text_pair], label) without padding (dynamic padding later)."""
    texts = df["text"].astype(str).tolist()
    pairs = df["text_pair"].astype(str).tolist() if "text_pair" in df.columns else None
    enc = tokenizer(texts, pairs, truncation=True, max_length=max_length)
    labels = df["label"].astype(int).tolist()
    keys = [k for k in ("input_ids", "token_type_ids", "attention_mask") if k in enc]
    return [{**{k: enc[k][i] for k in keys}, "labels": labels[i], "idx": i} for i in range(len(labels))]


def make_collate(pad_id: int) -> Callable[[list[dict]], dict]:
    def collate(rows: list[dict]) -> dict:
        T = max(len(r["input_ids"]) for r in rows)
        B = len(rows)
        ids = torch.full((B, T), pad_id, dtype=torch.long)
        mask = torch.zeros((B, T), dtype=torch.long)
        tt = torch.zeros((B, T), dtype=torch.long) if "token_type_ids" in rows[0] else None
        for i, r in enumerate(rows):
            n = len(r["input_ids"])
            ids[i, :n] = torch.tensor(r["input_ids"])
            mask[i, :n] = 1
            if tt is not None:
                tt[i, :n] = torch.tensor(r["token_type_ids"])
        batch = {"input_ids": ids, "attention_mask": mask,
                 "labels": torch.tensor([r["labels"] for r in rows], dtype=torch.long),
                 "idx": torch.tensor([r["idx"] for r in rows], dtype=torch.long)}
        if tt is not None:
            batch["token_type_ids"] = tt
        return batch
    return collate


def model_inputs(batch: dict) -> dict:
    return {k: batch[k] for k in ("input_ids", "attention_mask", "token_type_ids") if k in batch}


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
    from core.engine.metrics import score

    pred = probs.argmax(-1)
    return [score(metric, labels, pred[:, m]) for m in range(probs.shape[1])]


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
    from core.engine.health import majority_score

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


# ---- the run ------------------------------------------------------------------------------------
class _StopFlag:
    """SIGTERM / SIGINT set a flag the loop checks between steps (handlers only in the main thread)."""

    def __init__(self):
        self.flag = False
        self.previous = {}

    def __call__(self) -> bool:
        return self.flag

    def _handler(self, signum, frame):
        self.flag = True

    def install(self):
        if threading.current_thread() is not threading.main_thread():
            return self
        for sig in (signal.SIGTERM, signal.SIGINT):
            self.previous[sig] = signal.signal(sig, self._handler)
        return self

    def restore(self):
        for sig, h in self.previous.items():
            signal.signal(sig, h)
        self.previous = {}


def _versions() -> dict:
    import accelerate
    import transformers

    return {"python": platform.python_version(), "torch": torch.__version__,
            "transformers": transformers.__version__, "accelerate": accelerate.__version__}


def train(config: dict, *, stop: Callable[[], bool] | None = None, overwrite: bool = False) -> Path:
    """Train as configured (keys = the CLI options with underscores) and write the run folder.
    Returns the folder. Writes status failed (with `error`) and re-raises on any error; raises
    TrainingCancelled after SIGTERM / SIGINT with status cancelled.

    Nothing is written before the options and the data have been checked. A folder that already holds
    a run is refused unless `overwrite`; then the new run trains in the hidden sibling
    `.<run>.replacing` (core.runs.folders.staging_folder) and replaces the old one only when it has finished,
    so a failed or cancelled replacement leaves the old run as it was."""
    config = dict(config)
    command = config.pop("command", None)
    config_file = config.pop("config_file", None)
    out = config.get("out")
    folder = None
    if out:
        try:
            check_run_name(Path(out).name)
            folder = Path(out)
        except ValueError:
            folder = None
    # where a failure may be recorded: a new folder (or one a job manager made for this job), never a run
    record = folder if folder is not None and not holds_run(folder) else None
    flag = _StopFlag().install() if stop is None else None
    should_stop = stop or flag
    try:
        from accelerate import Accelerator
        from accelerate.utils import DistributedDataParallelKwargs

        # some steps leave parameters without gradients (ALT odd steps, 2ST stages): tell DDP
        accelerator = Accelerator(kwargs_handlers=[DistributedDataParallelKwargs(find_unused_parameters=True)])
        main = accelerator.is_main_process
        try:
            cfg = resolve_config(config)
            work = target_folder(folder, overwrite)
        except ValueError:
            if record is not None and main:
                record.mkdir(parents=True, exist_ok=True)  # so the failure can be recorded there
            raise
        record = work
        cfg["command"] = command or command_line(cfg)
        cfg["canonical_command"] = command_line(cfg)
        if config_file:
            cfg["config_file"] = config_file
        return _run(cfg, folder, accelerator, should_stop, work=work)
    except TrainingCancelled:
        if record is not None and _is_main():
            write_status(record, "cancelled", finished=time.time(), eta_s=None, message="cancelled")
            _drop_staging(record, folder)
        raise
    except BaseException as e:
        if record is not None and _is_main() and (record.exists() or record == folder):
            try:
                record.mkdir(parents=True, exist_ok=True)
                if isinstance(e, KeyboardInterrupt):
                    write_status(record, "cancelled", finished=time.time(), eta_s=None, message="interrupted")
                else:
                    write_status(record, "failed", finished=time.time(), eta_s=None,
                                 error=f"{type(e).__name__}: {e}", message="failed")
            except OSError as w:  # an unwritable folder: the error below still says what happened
                print(f"core.train: cannot record the failure in {record}: {w}", file=sys.stderr)
            _drop_staging(record, folder)
        raise
    finally:
        if flag is not None:
            flag.restore()


def target_folder(folder: Path, overwrite: bool) -> Path:
    """The folder this run writes while it trains: `folder` itself when it holds no run yet; the
    staging sibling when it does and `overwrite` is set; ValueError (nothing written) otherwise."""
    if folder.exists() and not folder.is_dir():
        raise ValueError(f"--out {folder}: exists and is not a folder; choose another run name")
    if not holds_run(folder):
        return folder
    if not overwrite:
        raise ValueError(f"--out {folder}: a run already exists there; choose another --out, or pass "
                         "--overwrite to replace it (the old run stays until the new one has finished)")
    return staging_folder(folder)


def _drop_staging(work: Path, folder: Path | None) -> None:
    """After a failed or cancelled replacement from the command line, delete its staging folder (a job
    manager's staging folder holds job.json and stays, so the page can show why the job ended)."""
    if folder is not None and work != folder and not (work / JOB_FILE).exists():
        shutil.rmtree(work, ignore_errors=True)


def _in_work(path: str | None, folder: Path, work: Path) -> str | None:
    """A file option inside the run folder (a job's uploads/) read from the staging folder while a
    replacement trains; the config keeps the final path."""
    if not path or work == folder:
        return path
    try:
        rel = Path(path).resolve().relative_to(folder.resolve())
    except ValueError:
        return path
    return str(work / rel)


def _is_main() -> bool:
    try:
        from accelerate import PartialState

        return PartialState().is_main_process
    except Exception:
        return True


def _begin_folder(work: Path, cfg: dict, task, t_start: float) -> None:
    """The working folder of a run about to load its model: old outputs gone, status `running`,
    config.json, the data's warnings."""
    work.mkdir(parents=True, exist_ok=True)
    for name in (METRICS_FILE, CACHE_FILE, WEIGHTS_FILE):  # a new folder, a job's, or a staging one
        (work / name).unlink(missing_ok=True)
    write_status(work, "running", pid=os.getpid(), started=t_start, progress=0.0, step=0,
                 total_steps=None, epoch=0, eta_s=None, error=None, finished=None,
                 message="loading the model")
    atomic_write_json(work / CONFIG_FILE, cfg)
    if task.warnings:  # rows left out of the data, counted (shown on Home and the Train page)
        add_warnings(work, task.warnings)


def model_config(cfg: dict, num_labels: int):
    """The ModelConfig of a resolved training config."""
    from core.models.multi_exit import ModelConfig

    return ModelConfig(backbone=cfg["backbone"], num_labels=num_labels, exit_kind=cfg["exit_kind"],
                       pooling=cfg["pooling"], dropout=cfg["dropout"], bypass=cfg["bypass"],
                       bypass_dim=cfg["bypass_dim"], bypass_act=cfg["bypass_act"], lte=cfg["lte"],
                       max_length=cfg["max_length"], exit_dim=cfg["exit_dim"])


def derived_facts(cfg: dict, task, trainer: Trainer, *, n_val: int) -> dict:
    """config.json's "derived": the task's sizes and labels, the plan, the devices, the versions."""
    acc = trainer.acc
    derived = dict(
        task=task.name, metric=task.metric, label_names=list(task.label_names), is_pair=bool(task.is_pair),
        n_train=len(task.train), n_dev=len(task.dev), num_layers=trainer.raw.num_layers, n_val=n_val,
        total_steps=trainer.total_steps, stages=[vars(s) for s in trainer.stages],
        devices={"device": str(acc.device), "num_processes": acc.num_processes,
                 "mixed_precision": acc.mixed_precision},
        versions=_versions())
    if cfg["method"] == "leebert":
        derived["omega_terms"] = trainer.omega.terms
        derived["omega_d1_scale"] = cfg["lr"] / cfg["omega_lr"]  # λ1/λ2 on ∇Ω L_B1 (core.training.omega)
    return derived


def _add_callbacks(trainer: Trainer, writer: RunWriter, keeper: BestEpoch | None, evaluate, bar: ProgressBar):
    """The run's callbacks in their order: the writer, validation before the dev set (the dev set is
    scored for the record, never for choices), the kept epoch, the progress bar."""
    for ev in ("on_train_start", "on_stage_start", "on_step_end", "on_omega", "on_train_end"):
        trainer.add_callback(ev, getattr(writer, ev))
    if keeper is not None:
        trainer.add_callback("on_stage_start", keeper.on_stage_start)
        trainer.add_callback("on_epoch_end", keeper.on_epoch_end)
    if evaluate is not None:
        trainer.add_callback("on_epoch_end", evaluate)
    if keeper is not None:
        trainer.add_callback("on_stage_end", keeper.on_stage_end)
    for ev in ("on_train_start", "on_step_end", "on_train_end"):
        trainer.add_callback(ev, getattr(bar, ev))


def dev_cache(cfg: dict, task, last_eval: dict, labels: np.ndarray, *, layer_ms, embed_ms, run: str):
    """The run's dev-set ExitCache from the last evaluation."""
    from core.engine.cache import ExitCache

    source = task.source("dev")
    # built-in and GLUE texts are restored from `source`; other origins also keep a copy
    texts = None if source.get("kind") in ("builtin", "glue") else task.texts("dev")
    return ExitCache(
        probs=last_eval["probs"], labels=labels, label_names=list(task.label_names), texts=texts,
        source=source, confidence=last_eval["conf"], layer_ms=layer_ms, embed_ms=embed_ms,
        meta={"task": task.name, "metric": task.metric, "backbone": cfg["backbone"],
              "method": cfg["method"], "seed": cfg["seed"], "command": cfg["command"],
              "created": time.strftime("%Y-%m-%dT%H:%M:%S"), "run": run,
              "optimizer": cfg["optimizer"], "weights": cfg["weights"], "teachers": cfg["teachers"]
              if cfg["method"] == "leebert" else None, "lte": cfg["lte"], "bypass": cfg["bypass"],
              "exit_kind": cfg["exit_kind"], "exit_scores": last_eval["scores"]})


def _mark_done(folder: Path, trainer: Trainer, keeper: BestEpoch | None, metric: str, labels: np.ndarray,
               scores: list[float], t_start: float) -> None:
    """status.json `done` with the dev score (and the kept epoch), then the weak-budget warnings."""
    message = f"done: dev {metric} avg {np.mean(scores):.4f}"
    kept = {}
    if keeper is not None:
        message += "; " + keeper.summary()
        kept = dict(kept_epoch=keeper.kept_epoch, stopped_early=keeper.stopped_early)
    curve = keeper.curve if keeper is not None else dev_curve(folder)
    warnings = weak_budget_warnings(metric, labels, scores, curve,
                                    curve_split="validation" if keeper is not None else "dev",
                                    stopped_early=bool(kept.get("stopped_early")))
    write_status(folder, "done", finished=time.time(), progress=1.0, step=trainer.step,
                 total_steps=trainer.total_steps, epoch=trainer.epoch, eta_s=0.0,
                 seconds=round(time.time() - t_start, 2), message=message, **kept)
    add_warnings(folder, warnings)  # after what the data loading recorded


def _run(cfg: dict, folder: Path, accelerator, should_stop, work: Path | None = None) -> Path:
    from accelerate.utils import set_seed

    from core.models.multi_exit import MultiExitModel

    work = folder if work is None else work
    main = accelerator.is_main_process
    t_start = time.time()
    for note in cfg["notes"]:
        print(f"core.train: note: {note}", file=sys.stderr)

    def check_stop():
        if should_stop():
            raise TrainingCancelled("cancelled by signal")

    # the data and the model first: a bad file or backbone fails before any file is written
    set_seed(cfg["seed"])
    task = load_task(cfg, train_file=_in_work(cfg["train_file"], folder, work),
                     dev_file=_in_work(cfg["dev_file"], folder, work))
    val_frame = None
    if cfg["val_fraction"] > 0:
        from core.data.splits import validation_split

        task.train, val_frame = validation_split(task.train, cfg["val_fraction"])
    check_splits(task)
    check_stop()
    if main:
        _begin_folder(work, cfg, task, t_start)
    for warning in task.warnings:
        print(f"core.train: warning: {warning}", file=sys.stderr)
    folder, final = work, folder  # everything below writes the working folder

    mcfg = model_config(cfg, len(task.label_names))
    set_seed(cfg["seed"])
    model = MultiExitModel(mcfg)
    tokenizer = model.tokenizer
    check_stop()
    train_rows = encode_rows(task.train, tokenizer, cfg["max_length"])
    dev_rows = encode_rows(task.dev, tokenizer, cfg["max_length"])
    collate = make_collate(tokenizer.pad_token_id or 0)
    check_stop()

    model = accelerator.prepare(model)
    raw = accelerator.unwrap_model(model)
    trainer = Trainer(cfg, model, train_rows, collate, accelerator, should_stop=should_stop)
    cfg["model"] = mcfg.to_dict()
    cfg["derived"] = derived_facts(cfg, task, trainer, n_val=0 if val_frame is None else len(val_frame))
    if main:
        atomic_write_json(folder / CONFIG_FILE, cfg)

    # dev evaluation (by length for speed; rows carry their index)
    from torch.utils.data import DataLoader, Subset

    def eval_loader(rows):
        order = np.argsort([len(r["input_ids"]) for r in rows], kind="stable")
        return accelerator.prepare(DataLoader(Subset(rows, order.tolist()), batch_size=cfg["eval_batch_size"],
                                              shuffle=False, collate_fn=collate))

    dev_dl = eval_loader(dev_rows)
    labels = task.dev["label"].astype(int).to_numpy()
    writer = RunWriter(folder, log_every=cfg["log_every"], enabled=main)
    last_eval: dict = {}
    keeper = None
    if val_frame is not None:
        val_rows = encode_rows(val_frame, tokenizer, cfg["max_length"])
        keeper = BestEpoch(raw, val_loader=eval_loader(val_rows), labels=val_frame["label"].to_numpy(dtype=int),
                           metric=task.metric, patience=cfg["patience"], accelerator=accelerator,
                           writer=writer, should_stop=should_stop)

    def evaluate(tr, **_):
        probs, conf = predict(model, dev_dl, accelerator, len(dev_rows), should_stop=should_stop)
        scores = exit_scores(task.metric, labels, probs)
        last_eval.update(step=tr.step, probs=probs, conf=conf, scores=scores)
        writer.record(tr, "eval", split="dev", metric=task.metric, exit_scores=[round(s, 6) for s in scores],
                      s_avg=float(np.mean(scores)), s_best=float(np.max(scores)), stage=tr.stage.name)
        writer.status(tr, force=True, message=f"epoch {tr.epoch}: dev {task.metric} avg {np.mean(scores):.4f}")

    _add_callbacks(trainer, writer, keeper, evaluate if cfg["eval_every_epoch"] else None,
                   ProgressBar(enabled=main))

    trainer.run()
    if last_eval.get("step") != trainer.step or (keeper is not None and keeper.restored):
        evaluate(trainer)  # the kept weights, when an earlier epoch validated best
    check_stop()
    if main:
        writer.status(trainer, force=True, message="measuring latency and writing the cache")
    accelerator.wait_for_everyone()

    if main:
        raw = accelerator.unwrap_model(model)
        embed_ms = layer_ms = None
        if cfg["latency_samples"] > 0:
            embed_ms, layer_ms = measure_latency(raw, tokenizer, task, cfg["latency_samples"])
        check_stop()
        dev_cache(cfg, task, last_eval, labels, layer_ms=layer_ms, embed_ms=embed_ms, run=final.name).save(folder)
        if cfg["save_weights"]:
            raw.save_pretrained(folder, dtype=torch.float16 if cfg["fp16_weights"] else torch.float32,
                                write_config=False)
        _mark_done(folder, trainer, keeper, task.metric, labels, last_eval["scores"], t_start)
        if folder != final:
            swap_in(folder, final)  # the finished replacement takes the old run's place
    accelerator.wait_for_everyone()
    return final


def measure_latency(model, tokenizer, task, n: int):
    """(embed_ms, layer_ms [L]) at batch size 1 on the first n dev rows (core.serving.predictor)."""
    from core.serving.predictor import EarlyExitPredictor

    texts = task.texts("dev")[:n]
    pred = EarlyExitPredictor(model, tokenizer)
    embed_ms, layer_ms = pred.measure_layer_ms(texts)
    return float(embed_ms), np.asarray(layer_ms, dtype=np.float64)


def _record_cli_error(argv: list[str], error: Exception, overwrite: bool = False) -> None:
    """A command line that does not parse still fails its run folder, when --out names a folder that
    holds no run yet (a job's fresh folder), or the job's staging folder of a replacement; an existing
    run is never touched."""
    out = out_from_argv(argv)
    try:
        if not out:
            return
        if holds_run(out):
            if not (overwrite and (staging_folder(out) / JOB_FILE).exists()):
                return
            out = staging_folder(out)  # a replacement job: its own folder gets the failure
        else:
            check_run_name(Path(out).name)
        Path(out).mkdir(parents=True, exist_ok=True)
        write_status(out, "failed", pid=os.getpid(), finished=time.time(), eta_s=None,
                     error=f"bad command line: {error}", message="failed")
    except (ValueError, OSError):
        pass


# errors that mean "the input is wrong": one line and exit code 2 (a traceback only with --debug)
EXPECTED_ERRORS = (ValueError, FileNotFoundError, IsADirectoryError, NotADirectoryError, PermissionError)


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    overwrite, debug = "--overwrite" in argv, "--debug" in argv
    argv = [a for a in argv if a not in CLI_SWITCHES]
    try:
        config = parse_cli(argv)
    except ValueError as e:
        print(f"core.train: error: {e}", file=sys.stderr)
        _record_cli_error(argv, e, overwrite)
        return 2
    try:
        folder = train(config, overwrite=overwrite)
    except TrainingCancelled:
        print("core.train: cancelled", file=sys.stderr)
        return 0
    except KeyboardInterrupt:
        print("core.train: interrupted", file=sys.stderr)
        return 130
    except EXPECTED_ERRORS as e:
        if debug:
            traceback.print_exc()
        print(f"core.train: error: {e}", file=sys.stderr)
        return 2
    except Exception as e:
        traceback.print_exc()
        print(f"core.train: error: {type(e).__name__}: {e}", file=sys.stderr)
        return 1
    print(f"core.train: done -> {folder}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
