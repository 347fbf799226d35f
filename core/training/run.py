"""Torch. A run folder's lifecycle: claim it, check the input before writing anything, train (in a staging
folder when replacing a run), write config.json, the weights and the dev-set cache, swap in when done.
"""
from __future__ import annotations

import platform
import shutil
import signal
import sys
import threading
import time
from pathlib import Path
from typing import Callable

import numpy as np
import torch

from core.data.splits import validation_split
from core.engine.cache import ExitCache
from core.models.multi_exit import ModelConfig, MultiExitModel
from core.runs.folders import (
    CACHE_FILE,
    CONFIG_FILE,
    JOB_FILE,
    METRICS_FILE,
    WEIGHTS_FILE,
    RunClaim,
    active_job,
    add_warnings,
    check_run_name,
    check_unclaimed,
    holds_run,
    own_job,
    staging_folder,
    swap_in,
    write_status,
    writer_fields,
)
from core.runs.io import atomic_write_json
from core.serving.predictor import EarlyExitPredictor
from core.training.batches import encode_rows, make_collate
from core.training.callbacks import BestEpoch, ProgressBar, RunWriter, dev_curve, weak_budget_warnings
from core.training.config import check_splits, command_line, load_task, resolve_config
from core.training.loop import Trainer, TrainingCancelled, exit_scores, predict


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

    Nothing is written before the options, the data and the backbone have been checked: an input error
    creates no folder (only a job's own folder, which its manager made, records it). Then the process
    claims the run (core.runs.folders.RunClaim: one writer per run folder; a second writer is refused naming the
    first's pid) and removes what a killed writer left there. A folder that already holds a run is
    refused unless `overwrite`; then the new run trains in the hidden sibling `.<run>.replacing`
    (core.runs.folders.staging_folder) and replaces the old one only when it has finished, so a failed or
    cancelled replacement leaves the old run as it was."""
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
    # where a failure may be recorded: until the run is claimed only a job's own folder, never a run
    where = {"record": job_folder(folder, overwrite) if folder is not None else None}
    claim = RunClaim(folder) if folder is not None else None
    flag = _StopFlag().install() if stop is None else None
    should_stop = stop or flag
    try:
        from accelerate import Accelerator
        from accelerate.utils import DistributedDataParallelKwargs

        # some steps leave parameters without gradients (ALT odd steps, 2ST stages): tell DDP
        accelerator = Accelerator(kwargs_handlers=[DistributedDataParallelKwargs(find_unused_parameters=True)])
        cfg = resolve_config(config)
        work = target_folder(folder, overwrite)
        cfg["command"] = command or command_line(cfg)
        cfg["canonical_command"] = command_line(cfg)
        if config_file:
            cfg["config_file"] = config_file

        def take_claim():  # on the main process, once the input has been checked: from here on it writes
            claim.acquire()
            if target_folder(folder, overwrite) != work:  # another run finished there meanwhile
                raise ValueError(f"--out {folder}: a run was written there while this command checked its "
                                 "input; run the command again (with --overwrite to replace that run)")
            where["record"] = work

        return _run(cfg, folder, accelerator, should_stop, work=work, claim=take_claim)
    except TrainingCancelled:
        record = where["record"]
        if record is not None and _is_main():
            write_status(record, "cancelled", finished=time.time(), eta_s=None, message="cancelled")
            _drop_staging(record, folder)
        raise
    except BaseException as e:
        record = where["record"]
        if record is not None and _is_main() and record.exists():
            try:
                if isinstance(e, KeyboardInterrupt):
                    write_status(record, "cancelled", finished=time.time(), eta_s=None, message="interrupted")
                else:
                    write_status(record, "failed", finished=time.time(), eta_s=None,
                                 error=f"{type(e).__name__}: {e}", message="failed")
            except OSError as w:  # an unwritable folder (or a full disk): the error still says what happened
                if isinstance(e, OSError):
                    e.add_note(f"the failure could not be recorded in {record} either")
                else:
                    print(f"core.train: cannot record the failure in {record}: {w}", file=sys.stderr)
            _drop_staging(record, folder)
        raise
    finally:
        if claim is not None:
            claim.release()
        if flag is not None:
            flag.restore()


def job_folder(folder: Path, overwrite: bool) -> Path | None:
    """The folder a job manager made for this very job (it holds job.json and no run yet; for a
    replacement, the staging sibling), where a failure found before the run is claimed is recorded."""
    found = staging_folder(folder) if holds_run(folder) else folder
    if (found == folder or overwrite) and (found / JOB_FILE).exists():
        if own_job(found) or not active_job(found):  # never another job's folder
            return found
    return None


def target_folder(folder: Path, overwrite: bool) -> Path:
    """The folder this run writes while it trains: `folder` itself when it holds no run yet; the
    staging sibling when it does and `overwrite` is set; ValueError (nothing written) otherwise."""
    if folder.exists() and not folder.is_dir():
        raise ValueError(f"--out {folder}: exists and is not a folder; choose another run name")
    check_unclaimed(folder)  # another writer, or a job of the app's queue: refused before any work
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
    """The working folder of a claimed run whose input has been checked: old outputs gone, status
    `running` (with the pid, its create time and the host, so readers can tell when it died),
    config.json, the data's warnings."""
    work.mkdir(parents=True, exist_ok=True)
    for name in (METRICS_FILE, CACHE_FILE, WEIGHTS_FILE):  # a new folder, a job's, or a staging one
        (work / name).unlink(missing_ok=True)
    write_status(work, "running", **writer_fields(), started=t_start, progress=0.0, step=0, total_steps=None,
                 epoch=0, eta_s=None, error=None, finished=None, message="tokenizing the data")
    atomic_write_json(work / CONFIG_FILE, cfg)
    if task.warnings:  # rows left out of the data, counted (shown on Home and the Train page)
        add_warnings(work, task.warnings)


def model_config(cfg: dict, num_labels: int):
    """The ModelConfig of a resolved training config."""

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


def _run(cfg: dict, folder: Path, accelerator, should_stop, work: Path | None = None,
         claim: Callable[[], None] | None = None) -> Path:
    from accelerate.utils import set_seed


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

        task.train, val_frame = validation_split(task.train, cfg["val_fraction"])
    check_splits(task)
    check_stop()
    mcfg = model_config(cfg, len(task.label_names))
    set_seed(cfg["seed"])
    model = MultiExitModel(mcfg)
    tokenizer = model.tokenizer
    check_stop()
    if main:  # the input is good: claim the run (one writer per folder), then write
        if claim is not None:
            claim()
        _begin_folder(work, cfg, task, t_start)
    for warning in task.warnings:
        print(f"core.train: warning: {warning}", file=sys.stderr)
    folder, final = work, folder  # everything below writes the working folder
    max_length = model.cfg.max_length  # the backbone may hold fewer positions than asked
    train_rows = encode_rows(task.train, tokenizer, max_length)
    dev_rows = encode_rows(task.dev, tokenizer, max_length)
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
        val_rows = encode_rows(val_frame, tokenizer, max_length)
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
        write_precisions(cfg, folder, writer, trainer, check_stop)
        _mark_done(folder, trainer, keeper, task.metric, labels, last_eval["scores"], t_start)
        if folder != final:
            swap_in(folder, final)  # the finished replacement takes the old run's place
    accelerator.wait_for_everyone()
    return final


def write_precisions(cfg: dict, folder: Path, writer, trainer, check_stop) -> None:
    """`--precisions`: each precision's exit cache beside cache.npz, through core.serving.cache_variant's
    make_variant (the command `python -m core.cache_variant` runs), from the weights just saved."""
    from core.serving.cache_variant import make_variant
    from core.training.config import precision_list

    for p in precision_list(cfg.get("precisions")):
        check_stop()
        writer.status(trainer, force=True, message=f"writing the {p} exit cache")
        device = "cpu" if p == "int8" else "cuda"
        if device == "cuda" and not torch.cuda.is_available():
            raise ValueError(f"--precisions {p} needs a CUDA device (none here); use int8 on CPU")
        make_variant(folder, p, device=device, command=f"{cfg['canonical_command']} (--precisions {cfg['precisions']})")


def measure_latency(model, tokenizer, task, n: int):
    """(embed_ms, layer_ms [L]) at batch size 1 on the first n dev rows (core.serving.predictor)."""

    texts = task.texts("dev")[:n]
    pred = EarlyExitPredictor(model, tokenizer)
    embed_ms, layer_ms = pred.measure_layer_ms(texts)
    return float(embed_ms), np.asarray(layer_ms, dtype=np.float64)
