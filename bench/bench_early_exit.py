"""Does exiting at layer m really save what it should? Measured vs ideal wall-clock speed-up, batch 1.

For every exit layer m of the backbone (default minilm-l6, L = 6) this times, on a few dozen real
sentences, the plain full model (embed, L layers, last exit: `full_latency_ms`) and the early-exit
predictor forced out at m (`predict(strategy="budget", layer=m).latency_ms`: embed, m layers, m exits,
m softmaxes, m calls of core.engine.strategies). Both are model latencies from token ids; tokenization, the
same fixed cost either way, is timed apart and folded in only in the last column (end to end).
The Hugging Face encoder's own forward (from token ids, no exit) runs alongside as a reference.

Every sentence runs `--repeats` times; each time all variants run back to back in a shuffled order
(a "block", ~50 ms), so the variants of a block see the same machine load.

    latency(v)            mean over sentences of the median over repeats
    measured speed-up(m)  median over all blocks of latency(full) / latency(exit at m)  (paired, so
                          robust to other processes on a shared machine)
    ideal = L / m;  ratio(m) = measured / ideal;  goal: ratio >= 0.85 at every m

Run:  python -m bench.bench_early_exit [--threads 1] [--repeats 15] [--run checkpoints/<run>]
The exits are untrained unless --run names a trained run folder: latency does not depend on training.
"""
from __future__ import annotations

import argparse
import random
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from core.models.multi_exit import ModelConfig, MultiExitModel  # noqa: E402
from core.serving.predictor import EarlyExitPredictor  # noqa: E402

GOAL = 0.85
SENTENCES = [
    "A gripping thriller that never lets go.",
    "The plot is thin, but the performances are wonderful.",
    "I have rarely been this bored in a cinema.",
    "A warm, funny and surprisingly moving film about growing old.",
    "The dialogue feels like it was written by a committee.",
    "Beautifully shot, though the story drags in the second half.",
    "An instant classic.",
    "Nothing in this movie makes any sense, and not in a fun way.",
    "The director knows exactly when to hold back and when to let the music speak.",
    "It is loud, long and utterly forgettable.",
    "A clever script elevates what could have been a routine romantic comedy.",
    "The lead actor gives the performance of his career.",
    "Too many subplots, too little heart.",
    "Charming from the first frame to the last.",
    "The special effects cannot hide how hollow the whole thing is.",
    "I laughed, I cried, and I will certainly watch it again.",
    "A tedious exercise in style over substance.",
    "Smart, sharp and often hilarious.",
    "The ending is rushed and the twist is obvious from the start.",
    "A quiet, patient film that rewards attention.",
    "Even the talented cast cannot save this mess.",
    "The soundtrack alone is worth the price of admission.",
    "It tries to be profound and ends up merely pretentious.",
    "One of the most original films of the decade.",
    "The pacing is so slow that I checked my watch several times.",
    "Full of energy, color and genuine affection for its characters.",
    "A sequel nobody asked for, made with no visible enthusiasm.",
    "The documentary paints a vivid portrait of a forgotten musician.",
    "Predictable, but pleasant enough for a rainy afternoon.",
    "The jokes land more often than not.",
    "An overlong, overstuffed and overly sentimental drama.",
    "Its heart is in the right place, even when its script is not.",
    "The villain is more memorable than the hero.",
    "A small film with big ideas and the courage to follow them through.",
    "Dull characters stuck in a dull story.",
    "By the end I cared deeply about every one of these people.",
]


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--backbone", default="minilm-l6")
    ap.add_argument("--run", default=None, help="a trained run folder (model.safetensors) instead of fresh exits")
    ap.add_argument("--threads", type=int, default=1, help="torch intra-op threads (default 1)")
    ap.add_argument("--repeats", type=int, default=15)
    ap.add_argument("--sentences", type=int, default=len(SENTENCES))
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--json", default=None, help="also write the table here (e.g. checkpoints/<run>/latency.json, "
                    "which core.report shows beside the layer speed-up)")
    args = ap.parse_args(argv)

    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    rng = random.Random(args.seed)
    if args.run:
        model = MultiExitModel.from_run(args.run)
    else:
        model = MultiExitModel.from_config(ModelConfig(backbone=args.backbone, num_labels=2))
    pred = EarlyExitPredictor(model)
    L = model.num_layers
    texts = SENTENCES[: max(1, args.sentences)]
    encoded = [dict(model.tokenize(t, return_tensors="pt")) for t in texts]

    variants = ["full", "hf"] + list(range(1, L + 1))
    tok_ms = []

    def run(v, s):
        if v == "full":
            return pred.full_latency_ms(texts[s])
        if v == "hf":  # reference: the HF encoder's own forward from token ids
            with torch.inference_mode():
                t0 = time.perf_counter()
                model.encoder(**encoded[s])
                return (time.perf_counter() - t0) * 1e3
        r = pred.predict(texts[s], strategy="budget", layer=v)
        tok_ms.append(r.tokenize_ms)
        return r.latency_ms

    for s in range(min(8, len(texts))):  # warm-up
        for v in variants:
            run(v, s)
    times = {v: np.empty((len(texts), args.repeats)) for v in variants}  # [S, R] ms
    t_start = time.perf_counter()
    for r in range(args.repeats):
        for s in range(len(texts)):
            order = variants[:]
            rng.shuffle(order)
            for v in order:
                times[v][s, r] = run(v, s)
    wall = time.perf_counter() - t_start
    lat = {v: float(np.median(times[v], axis=1).mean()) for v in variants}
    tok = float(np.median(tok_ms))
    embed_ms, layer_ms = pred.measure_layer_ms(texts, repeats=3)
    tokens = [int(e["input_ids"].shape[1]) for e in encoded]

    print(f"backbone {model.cfg.backbone} (L={L}), batch 1, torch threads {args.threads}, "
          f"{len(texts)} sentences ({min(tokens)}-{max(tokens)} tokens, mean {np.mean(tokens):.1f}), "
          f"{args.repeats} repeats, variants interleaved; {wall:.1f} s")
    print(f"full model {lat['full']:.2f} ms from token ids (HF AutoModel forward: {lat['hf']:.2f} ms); "
          f"tokenization {tok:.3f} ms; embeddings {embed_ms:.3f} ms; layer+exit "
          + " ".join(f"{x:.2f}" for x in layer_ms) + " ms")
    print()
    print(f"{'exit m':>6} {'latency ms':>11} {'measured speed-up':>18} {'ideal L/m':>10} {'measured/ideal':>15}"
          f" {'end-to-end measured/ideal':>26}")
    worst = np.inf
    rows = []
    for m in range(1, L + 1):
        ideal = L / m
        measured = float(np.median(times["full"] / times[m]))
        e2e = float(np.median((times["full"] + tok) / (times[m] + tok))) / ideal
        worst = min(worst, measured / ideal)
        print(f"{m:>6} {lat[m]:>11.2f} {measured:>17.2f}x {ideal:>9.2f}x {measured / ideal:>15.3f} {e2e:>26.3f}")
        rows.append({"layer": m, "latency_ms": round(lat[m], 3), "measured": round(measured, 3),
                     "ideal": round(ideal, 3), "ratio": round(measured / ideal, 3), "end_to_end_ratio": round(e2e, 3)})
    ok = worst >= GOAL
    if args.json:
        from core.runs.io import atomic_write_json
        command = "python -m bench.bench_early_exit " + " ".join(argv if argv is not None else sys.argv[1:])
        atomic_write_json(args.json, {"command": command.strip(), "threads": args.threads,
                                      "full_ms": round(lat["full"], 3), "tokenize_ms": round(tok, 3), "rows": rows})
    print(f"\nworst measured/ideal = {worst:.3f}; goal >= {GOAL} at every m: {'PASS' if ok else 'FAIL'}")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
