"""Training-step time: LeeBERT (CLO-v2, CLO-v1, SLO, BLO) against joint training, measured in one run.

    python bench/bench_train_step.py                  # minilm-l6, batch of 32 default sentences
    python bench/bench_train_step.py --rounds 5 --steps 8 --variants joint leebert:clo_v2
    python bench/bench_train_step.py --threads 1 --variants joint leebert:clo_v2 leebert:clo_v2:second_order \
        leebert:blo leebert:blo:second_order --json step_cost.json     # the second-order Ω gradient's cost

Every variant trains its own copy of the model on the same batch of the first 32 Rotten Tomatoes
training sentences (B2 of BLO/CLO is the same batch too), through the trainer's real step function
(`Trainer.make_step`), so the time includes everything a training step does: forward, losses,
backward, clipping, optimizer and, for LeeBERT, Ω's updates and the extra no-grad evaluations of the
cross-level steps. Rounds are interleaved across variants (one round = `--steps` steps of each) so
machine load drifts hit all variants alike; the table reports, per variant, the median and the best
round's ms/step in wall-clock and in process CPU time, and their ratios to joint. On a CPU shared with
other work, `--threads 1` and the best-round CPU ratio are the numbers to trust (wall time and
multi-threaded CPU time absorb the other load). `--steps` should be a multiple of the CLO-v2 cycle C (default 4) so
each round holds whole cycles. Goal (LeeBERT Table 2: 118 vs 109 min): leebert+clo_v2 / joint <= 1.25.
"""
from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

import torch  # noqa: E402

from core.training.batches import encode_rows, make_collate  # noqa: E402
from core.training.config import resolve_config  # noqa: E402
from core.training.loop import Trainer

DEFAULT_VARIANTS = ["joint", "leebert:clo_v2", "leebert:clo_v1", "leebert:slo", "leebert:blo"]


def build(variant: str, args, task, accelerator):
    from core.models.multi_exit import ModelConfig, MultiExitModel

    method, _, rest = variant.partition(":")
    optimizer, _, omega_grad = rest.partition(":")
    cfg = resolve_config({"method": method, "optimizer": optimizer or None, "backbone": args.backbone,
                          "omega_grad": omega_grad or "first_order",
                          "batch_size": args.batch_size, "cycle": args.cycle, "out": "bench-scratch"})
    torch.manual_seed(0)
    model = MultiExitModel(ModelConfig(backbone=cfg["backbone"], num_labels=len(task.label_names),
                                       pooling=cfg["pooling"], exit_kind=cfg["exit_kind"], bypass=cfg["bypass"]))
    rows = encode_rows(task.train, model.tokenizer, cfg["max_length"])
    collate = make_collate(model.tokenizer.pad_token_id)
    model = accelerator.prepare(model)
    tr = Trainer(cfg, model, rows, collate, accelerator)
    batch = {k: v.to(accelerator.device) for k, v in collate(rows[: args.batch_size]).items()}
    step = tr.make_step(tr.stages[0])
    model.train()
    return {"name": variant, "step": step, "batch": batch, "t": 0, "wall": [], "cpu": []}


def run_steps(v, n: int, sync) -> tuple[float, float]:
    """(wall seconds, process CPU seconds) per step over n steps."""
    sync()
    t0, c0 = time.perf_counter(), time.process_time()
    for _ in range(n):
        v["t"] += 1
        v["step"](v["batch"], v["t"], lambda: v["batch"])
    sync()
    return (time.perf_counter() - t0) / n, (time.process_time() - c0) / n


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--backbone", default="minilm-l6")
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--cycle", type=int, default=4, help="CLO-v2 cycle length C")
    ap.add_argument("--steps", type=int, default=8, help="steps per variant per round (a multiple of C)")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--warmup", type=int, default=4, help="untimed steps per variant first")
    ap.add_argument("--threads", type=int, default=None,
                    help="torch CPU threads (1 makes the CPU-time column robust to other load)")
    ap.add_argument("--variants", nargs="+", default=DEFAULT_VARIANTS,
                    help="method, method:optimizer or method:optimizer:omega_grad, e.g. joint leebert:clo_v2 "
                         "leebert:blo:second_order")
    ap.add_argument("--json", default=None, help="also write the table as JSON to this file")
    args = ap.parse_args(argv)
    if args.steps % args.cycle:
        print(f"note: --steps {args.steps} is not a multiple of the cycle {args.cycle}; "
              "CLO-v2 rounds hold partial cycles", file=sys.stderr)

    from accelerate import Accelerator

    from core.data.tasks import load_task

    if args.threads:
        torch.set_num_threads(args.threads)
    accelerator = Accelerator()
    dev = accelerator.device
    sync = (lambda: torch.cuda.synchronize(dev)) if dev.type == "cuda" else (lambda: None)
    task = load_task("rotten_tomatoes", max_train=None)
    task.train = task.train.iloc[: args.batch_size]  # the same 32 default sentences for every variant
    variants = [build(v, args, task, accelerator) for v in args.variants]
    for v in variants:
        run_steps(v, args.warmup, sync)
    for _ in range(args.rounds):
        for v in variants:
            wall, cpu = run_steps(v, args.steps, sync)
            v["wall"].append(wall)
            v["cpu"].append(cpu)

    stats = {v["name"]: {"wall": statistics.median(v["wall"]), "wall_min": min(v["wall"]),
                         "cpu": statistics.median(v["cpu"]), "cpu_min": min(v["cpu"])} for v in variants}
    base = stats.get("joint")
    print(f"\ntraining step time: backbone {args.backbone}, batch {args.batch_size}, device {dev}, "
          f"torch threads {torch.get_num_threads()}, C = {args.cycle}, {args.rounds} rounds x {args.steps} steps")
    print("ms per step: median and best (min) round, wall clock and process CPU time; ratios to joint")
    cols = ("wall", "wall_min", "cpu", "cpu_min")
    print(f"{'variant':<16}" + "".join(f"{c + ' ms':>13}" for c in cols) + "".join(f"{'x ' + c:>12}" for c in cols))
    for v in variants:
        st = stats[v["name"]]
        ratios = "".join(f"{st[c] / base[c]:>12.3f}" if base else f"{'-':>12}" for c in cols)
        print(f"{v['name']:<16}" + "".join(f"{st[c] * 1e3:>13.1f}" for c in cols) + ratios)
    if base and "leebert:clo_v2" in stats:
        st = stats["leebert:clo_v2"]
        r = {c: st[c] / base[c] for c in cols}
        verdict = "met" if r["cpu_min"] <= 1.25 else "NOT met"
        print(f"\nleebert+clo_v2 / joint: " + ", ".join(f"{c} {r[c]:.3f}" for c in cols)
              + f"  (goal <= 1.25: {verdict}; on a shared CPU trust the best-round CPU ratio)")
    if args.json:
        import platform

        from core.runs.io import atomic_write_json

        atomic_write_json(args.json, {
            "command": "python bench/bench_train_step.py " + " ".join(argv if argv is not None else sys.argv[1:]),
            "backbone": args.backbone, "batch_size": args.batch_size, "device": str(dev),
            "threads": torch.get_num_threads(), "rounds": args.rounds, "steps": args.steps, "cycle": args.cycle,
            "machine": platform.machine(), "ms_per_step": {k: {c: round(v[c] * 1e3, 2) for c in cols}
                                                         for k, v in stats.items()}})
    return 0


if __name__ == "__main__":
    sys.exit(main())
