"""Torch. `python -m core.train`: train a multi-exit model and write its run folder.

    python -m core.train --task rotten_tomatoes --backbone minilm-l6 --method leebert \
        --optimizer clo_v2 --out checkpoints/rt-leebert
    python -m core.train --config run.json --epochs 1 --out checkpoints/quick   # flags override the file
    accelerate launch -m core.train ...                                        # same command, any devices
    python -m core.train ... --out checkpoints/rt-leebert --overwrite           # replace a run (see train())

In-process: `train(config: dict) -> Path` (keys as the flags, with underscores). The options, their
defaults, config resolution and the CLI parser live in core.training.config (torch-free, shared with the Train
form); core.training.loop holds the loop (`Trainer`, one step object per stage kind), callbacks its
callbacks, run the run folder's lifecycle; this module is the command (`main`).

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

import os
import sys
import time
import traceback
from pathlib import Path

from core.runs.folders import check_run_name, write_status
from core.runs.io import WriteError
from core.training.config import CLI_SWITCHES, out_from_argv, parse_cli
from core.training.loop import TrainingCancelled
from core.training.run import job_folder, train


def _record_cli_error(argv: list[str], error: Exception, overwrite: bool = False) -> None:
    """A command line that does not parse still fails its job's folder (the folder a job manager made,
    or its staging folder of a replacement: see job_folder); no folder is created and an existing run
    is never touched."""
    out = out_from_argv(argv)
    try:
        if not out:
            return
        check_run_name(Path(out).name)
        record = job_folder(Path(out), overwrite)
        if record is not None:
            write_status(record, "failed", pid=os.getpid(), finished=time.time(), eta_s=None,
                         error=f"bad command line: {error}", message="failed")
    except (ValueError, OSError):
        pass


# errors that mean "the input is wrong" (or the disk is full): one line and exit code 2 (a traceback
# only with --debug)
EXPECTED_ERRORS = (ValueError, FileNotFoundError, IsADirectoryError, NotADirectoryError, PermissionError,
                   WriteError)


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
        notes = "".join(f"; {n}" for n in getattr(e, "__notes__", ()))
        hint = "; free some space there (or choose another --out) and run again" if isinstance(e, WriteError) else ""
        print(f"core.train: error: {e}{notes}{hint}", file=sys.stderr)
        return 2
    except Exception as e:
        traceback.print_exc()
        print(f"core.train: error: {type(e).__name__}: {e}", file=sys.stderr)
        return 1
    print(f"core.train: done -> {folder}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
