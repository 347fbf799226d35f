"""How much the second-order Ω gradient (core.training.omega.darts_b2_target, DARTS Eq. 7-8) changes Ω's gradient
on the real model, measured in one run.

    python bench/bench_omega_second_order.py --threads 1            # minilm-l6, Rotten Tomatoes, batch 32
    python bench/bench_omega_second_order.py --pairs 4 --scales 1 10 100 1000

For `--pairs` (B1, B2) batch pairs of Rotten Tomatoes training rows, at the model's start (pretrained
backbone, fresh exits) and uniform Ω, it computes ∇Ω of the B2 loss at the virtual step Θ* = Θ − ξ ∇Θ L_B1
twice: the direct term only (first order at Θ*) and with DARTS's second-order term, with ξ = the trainer's
learning rates (backbone λ1, heads head_lr) times each `--scale`. It prints, per scale, the relative size
‖second − first‖ / ‖first‖ and the cosine between them (mean ± s.d. over the pairs), and the seconds of one
second-order target. Scale 1 is what `--omega-grad second_order` uses.
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

from core.training import losses  # noqa: E402
from core.training.batches import encode_rows, make_collate, model_inputs  # noqa: E402
from core.training.config import DEFAULTS  # noqa: E402
from core.training.omega import Omega, darts_b2_target  # noqa: E402


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--backbone", default="minilm-l6")
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--pairs", type=int, default=3)
    ap.add_argument("--scales", type=float, nargs="+", default=[1.0, 10.0, 100.0, 1000.0])
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--json", default=None, help="also write the table as JSON to this file")
    args = ap.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)

    from core.data.tasks import load_task
    from core.models.multi_exit import ModelConfig, MultiExitModel

    task = load_task("rotten_tomatoes", max_train=2 * args.pairs * args.batch_size, seed=0)
    torch.manual_seed(0)
    model = MultiExitModel(ModelConfig(backbone=args.backbone, num_labels=len(task.label_names)))
    model.eval()  # no dropout: the comparison is between gradients, not draws
    rows = encode_rows(task.train, model.tokenizer, DEFAULTS["max_length"])
    collate = make_collate(model.tokenizer.pad_token_id)
    B = args.batch_size
    batches = [collate(rows[i * B:(i + 1) * B]) for i in range(2 * args.pairs)]
    om = Omega(model.num_layers, DEFAULTS["teachers"], "learned")
    mask, tau = om.mask, DEFAULTS["temperature"]
    heads = {id(p) for part in (model.exits,) for p in part.parameters()}
    params = [p for p in model.parameters() if p.requires_grad]

    def forward(b, grad, teacher=None, detach_teacher=True):
        with torch.set_grad_enabled(grad):
            out = model(**model_inputs(b))
            return losses.leebert_terms(out.logits, b["labels"], mask, tau, teacher, detach_teacher), None, out

    def omega_grad(target):
        om.logits.grad = None
        (om.weights() * target).sum().backward()
        return om.logits.grad.detach().clone()

    rel = {s: [] for s in args.scales}
    cos = {s: [] for s in args.scales}
    secs = []
    w = om.weights().detach()
    for k in range(args.pairs):
        b1, b2 = batches[2 * k], batches[2 * k + 1]
        for s in args.scales:
            theta = [(p, s * (DEFAULTS["head_lr"] if id(p) in heads else DEFAULTS["lr"])) for p in params]
            model.zero_grad(set_to_none=True)
            terms, _, out = forward(b1, True)
            (w * terms).sum().backward()
            t0 = time.perf_counter()
            full = darts_b2_target(forward, b1, b2, theta, w, teacher=out.logits.detach())
            secs.append(time.perf_counter() - t0)
            saved = [p.detach().clone() for p in params]
            with torch.no_grad():                       # the direct term alone, at the same Θ*
                for p, x in theta:
                    if p.grad is not None:
                        p.sub_(x * p.grad)
                direct = forward(b2, False)[0]
                for p, s0 in zip(params, saved):
                    p.copy_(s0)
            g_full, g_first = omega_grad(full), omega_grad(direct)
            rel[s].append(float((g_full - g_first).norm() / g_first.norm()))
            cos[s].append(float(torch.nn.functional.cosine_similarity(g_full.flatten(), g_first.flatten(), dim=0)))

    def ms(xs):
        return f"{statistics.mean(xs):.3g} ± {statistics.stdev(xs):.2g}" if len(xs) > 1 else f"{xs[0]:.3g}"
    print(f"\nsecond-order Ω gradient on {args.backbone}, batch {B}, {args.pairs} (B1, B2) pairs, "
          f"torch threads {torch.get_num_threads()}; ξ = scale x (λ1 = {DEFAULTS['lr']}, head_lr = {DEFAULTS['head_lr']})")
    print(f"{'scale':>8} {'‖2nd − 1st‖ / ‖1st‖':>24} {'cosine(2nd, 1st)':>22}")
    for s in args.scales:
        print(f"{s:>8g} {ms(rel[s]):>24} {ms(cos[s]):>22}")
    print(f"one second-order target: {ms(secs)} s (a B2 forward+backward and two B1 forwards)")
    if args.json:
        from core.runs.io import atomic_write_json

        atomic_write_json(args.json, {
            "command": "python bench/bench_omega_second_order.py " + " ".join(argv if argv is not None else sys.argv[1:]),
            "backbone": args.backbone, "batch_size": B, "pairs": args.pairs, "threads": torch.get_num_threads(),
            "lr": DEFAULTS["lr"], "head_lr": DEFAULTS["head_lr"],
            "rows": [{"scale": s, "rel_mean": statistics.mean(rel[s]), "rel_sd": statistics.stdev(rel[s]) if len(rel[s]) > 1 else None,
                      "cos_mean": statistics.mean(cos[s]), "cos_sd": statistics.stdev(cos[s]) if len(cos[s]) > 1 else None}
                     for s in args.scales]})
    return 0


if __name__ == "__main__":
    sys.exit(main())
