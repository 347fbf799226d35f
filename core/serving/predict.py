"""Apply an operating-point file to a file of texts, in batches, with early exit.

    python -m core.predict --point FILE.json --input FILE [--text-column C] [--text-pair-column C]
        [--label-column C] --output FILE.jsonl [--batch-size 32] [--compare-full]
    accelerate launch -m core.predict ...     # rows sharded over processes, one output in input order

Input: CSV, TSV, JSONL (read as `core.data.tasks` reads a training file: same column guessing and
messages), or `-` for standard input with one text per line (blank lines skipped). Output: one JSON
line per input row, in input order: {"row", "prediction" (label name), "exit_layer" (1-based),
"probability" (of the prediction at the exit)}, and with --compare-full "full_prediction" (the fp32 full
model's label). At the end a summary (core.engine.promise_check): for every promised number the measured
and the promised value with their intervals and a verdict (kept / outside the interval / no interval);
the guarantee the point carries and, with labels and --compare-full, the measured risk with its
Clopper-Pearson interval; and, without labels, whether the new texts exit at the layers the rows the
promise was measured on did (a chi-square test naming the layers that moved: a drift warning).
The point runs at its precision (a version-2 point: int8 is dynamic quantization on CPU) and, unless
--batch-size is given, at its batch size (32 when it names none); --compare-full runs the fp32 full
model on the same rows, the reference the promised wall-clock speed-up is over.

Every check comes before the model loads: each output can be written (not a folder, a folder where a
file can be made, room on its disk for the rows), none is the same file as the point, the input or a
file of the point's run, and the point agrees with its run (core.export.read_point). An existing --output that is no input is replaced atomically, and
the command says so.
"""
from __future__ import annotations

import argparse
import json
import math
import os
import sys
import time
from pathlib import Path

import numpy as np

from core.runs.io import atomic_write_json, atomic_write_text

PROGRESS_MIN_ROWS = 500   # tqdm bar from this many rows on


# ---- input ---------------------------------------------------------------------------------------
def read_input(path: str, *, text_column=None, text_pair_column=None, label_column=None,
               is_pair: bool = False) -> tuple[list[str], list[str] | None, "object | None", str]:
    """(texts, text_pairs | None, raw labels (pandas Series) | None, where) of an input file or '-'."""
    import pandas as pd

    from core.data.tables import _known_columns, _standard_columns
    from core.data.user_files import _read_user_file, _user_path
    if path == "-":
        if text_column or text_pair_column or label_column:
            raise ValueError("standard input holds one text per line: --text-column, --text-pair-column "
                             "and --label-column apply to CSV, TSV and JSONL files")
        if is_pair:
            raise ValueError("this point's task classifies sentence pairs; pass a CSV/TSV/JSONL file with "
                             "--text-column and --text-pair-column instead of standard input")
        texts = read_stdin().replace("\r\n", "\n").replace("\r", "\n").split("\n")  # universal newlines
        texts = [t for t in texts if t.strip()]
        if not texts:
            raise ValueError("standard input: no text lines")
        return texts, None, None, "standard input"
    fpath = _user_path(path, "--input")
    where = str(fpath)
    table = _read_user_file(fpath)
    available = [str(c) for c in table.columns]
    for what, name in (("--text-column", text_column), ("--text-pair-column", text_pair_column),
                       ("--label-column", label_column)):
        if name is not None and name not in available:
            raise ValueError(f"{where}: unknown {what} {name!r}; available columns: {', '.join(available)}")
    guess = _known_columns(available)   # core.data.tasks's one rule for column names
    text, pair = text_column, text_pair_column
    if text is None:
        text = guess["text"]
        if text is None:
            raise ValueError(f"{where}: no text column found; pass --text-column (available columns: "
                             f"{', '.join(available)})")
        pair = pair if pair is not None else guess["pair"]
    if is_pair and pair is None:
        raise ValueError(f"{where}: this point's task classifies sentence pairs; name the second text with "
                         f"--text-pair-column (available columns: {', '.join(available)})")
    if not is_pair and pair is not None:
        raise ValueError(f"{where}: this point's task classifies single texts, but a text pair column "
                         f"({pair!r}) was given or guessed; pass --text-column alone")
    label = label_column if label_column is not None else guess["label"]
    frame = _standard_columns(table, where, text=text, pair=pair, label=label, path=fpath)
    labels = frame["label"] if "label" in frame else None
    return (frame["text"].tolist(), frame["text_pair"].tolist() if pair else None,
            None if labels is None else pd.Series(labels), where)


def read_stdin() -> str:
    """Standard input as UTF-8 text (a byte-order mark dropped); ValueError saying where it is not."""
    buffer = getattr(sys.stdin, "buffer", None)
    if buffer is None:  # a text stream put in place of stdin (tests, embedding)
        return sys.stdin.read()
    raw = buffer.read()
    try:
        return raw.decode("utf-8-sig")
    except UnicodeDecodeError as e:
        line = raw.count(b"\n", 0, e.start) + 1
        raise ValueError(f"standard input is not UTF-8 text (byte 0x{raw[e.start]:02x} at line {line}, byte "
                         f"{e.start + 1}); convert it first, e.g. iconv -f LATIN1 -t UTF-8") from None


def output_bytes(n_rows: int, label_names: list[str], num_layers: int) -> int:
    """An upper bound on the size of the --output file for n_rows rows (what `write_output` writes)."""
    longest = max(label_names, key=lambda name: len(json.dumps(name)))
    line = json.dumps({"row": max(n_rows - 1, 0), "prediction": longest, "exit_layer": num_layers,
                       "probability": 0.123456})
    return n_rows * (len(line) + 1)


def encode_labels(raw, label_names: list[str], where: str) -> np.ndarray:
    """Raw labels (ids or names) -> ids 0..K-1 of the point's label names; errors as core.data's."""
    from core.data.labels import _encode_labels

    ids, _ = _encode_labels([(raw, where)], list(label_names))
    return ids[0]


# ---- sharding over processes (accelerate launch) -------------------------------------------------
def _world() -> tuple[int, int]:
    """(rank, world size) from the launcher's environment; (0, 1) for a plain `python -m`."""
    return int(os.environ.get("RANK", 0)), int(os.environ.get("WORLD_SIZE", 1))


def _state():
    """The launcher's process group: gloo on CPUs (ACCELERATE_USE_CPU=1 or no GPU), NCCL on GPUs."""
    import torch
    from accelerate import PartialState

    cpu = os.environ.get("ACCELERATE_USE_CPU", "").lower() in ("1", "true", "yes") or not torch.cuda.is_available()
    return PartialState(cpu=cpu)


def shard(n: int, rank: int, world: int) -> tuple[int, int]:
    """[start, stop) of this process's contiguous block of n rows (blocks differ by at most one row)."""
    bounds = np.linspace(0, n, world + 1).round().astype(int)
    return int(bounds[rank]), int(bounds[rank + 1])


# ---- the run -------------------------------------------------------------------------------------
def _progress(total: int, desc: str, enabled: bool):
    from tqdm.auto import tqdm

    return tqdm(total=total, desc=desc, unit="row", disable=not enabled or total < PROGRESS_MIN_ROWS,
                mininterval=0.5 if sys.stderr.isatty() else 10.0, dynamic_ncols=True)


def run_rows(pred, texts, pairs, *, batch_size: int, compare_full: bool, show_progress: bool,
             full=None) -> dict:
    """Early exit (and with compare_full the full model: `full`, another predictor such as the fp32
    model of an int8 point, else `pred` itself) on these rows. Batches are length-sorted;
    the two variants alternate batch by batch so load on the machine hits both alike.
    -> {"exit_layer", "pred", "prob", "seconds", "full_seconds" | None, "full_pred" | None}."""
    strategy, params = pred._rule(None, None)
    encs = pred.encode_many(texts, pairs)
    n = len(encs)
    exit_layer = np.zeros(n, dtype=np.int64)
    preds = np.zeros(n, dtype=np.int64)
    prob = np.zeros(n)
    full_pred = np.zeros(n, dtype=np.int64) if compare_full else None
    secs = full_secs = 0.0
    bar = _progress(n, "predict", show_progress)
    with pred._inference():
        for idx in pred.batches(encs, batch_size):
            batch = [encs[j] for j in idx]
            t = time.perf_counter()
            layer, p, probs, _, _ = pred.run_batch(batch, strategy=strategy, params=params)
            secs += time.perf_counter() - t
            exit_layer[idx], preds[idx] = layer, p
            prob[idx] = probs[np.arange(len(idx)), layer - 1, p]
            if compare_full:
                t = time.perf_counter()
                full_pred[idx] = (full or pred).full_batch(batch).argmax(-1)
                full_secs += time.perf_counter() - t
            bar.update(len(idx))
    bar.close()
    return {"exit_layer": exit_layer, "pred": preds, "prob": prob, "seconds": secs,
            "full_seconds": full_secs if compare_full else None, "full_pred": full_pred}


def wilson(k: int, n: int, z: float = 1.96) -> tuple[float, float]:
    """95 % Wilson interval of a proportion k / n."""
    p = k / n
    d = 1 + z * z / n
    c = (p + z * z / (2 * n)) / d
    h = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / d
    return c - h, c + h


def summarize(point, out: dict, labels: np.ndarray | None, *, batch_size: int) -> dict:
    """The measured numbers beside the point's promise (JSON-safe)."""
    from core.engine import promise_check
    from core.engine.metrics import score

    L = point.data["num_layers"]
    n = len(out["exit_layer"])
    mean_layer = float(out["exit_layer"].mean())
    s = {"rows": n, "batch_size": batch_size, "strategy": point.strategy, "params": point.params,
         "mean_exit_layer": mean_layer, "layer_speedup": L / mean_layer,
         "rows_per_s": n / out["seconds"] if out["seconds"] > 0 else None,
         "full_rows_per_s": None, "measured_speedup": None, "score": None, "score_interval": None,
         "full_score": None, "full_score_interval": None, "agreement_with_full": None,
         "metric": point.data["metric"]}
    if out["full_seconds"]:
        s["full_rows_per_s"] = n / out["full_seconds"]
        s["measured_speedup"] = out["full_seconds"] / out["seconds"]
        s["agreement_with_full"] = float((out["full_pred"] == out["pred"]).mean())
    if labels is not None:
        s["score"] = score(point.data["metric"], labels, out["pred"])
        if point.data["metric"] == "accuracy":
            s["score_interval"] = list(wilson(int((labels == out["pred"]).sum()), n))
        if out["full_pred"] is not None:
            s["full_score"] = score(point.data["metric"], labels, out["full_pred"])
            if point.data["metric"] == "accuracy":
                s["full_score_interval"] = list(wilson(int((labels == out["full_pred"]).sum()), n))
    s["promise"] = {k: point.promised(k)[0] for k in ("score", "full_score", "layer_speedup", "wallclock_speedup")}
    s["promise_intervals"] = {k: point.promised(k)[1] for k in ("score", "full_score", "layer_speedup",
                                                                 "wallclock_speedup")}
    s["promise_rows"] = point.promise.get("measured_on", {}).get("rows")
    s["precision"], s["point_batch_size"] = point.precision, point.batch_size
    s["promise_batch_size"] = point.promise.get("wallclock_batch_size", 1 if s["promise"]["wallclock_speedup"] else None)
    note = promise_check.mean_speedup_note(s["promise_batch_size"], batch_size)
    s["checks"] = [
        promise_check.verdict("layer speed-up", s["layer_speedup"], s["promise"]["layer_speedup"],
                              s["promise_intervals"]["layer_speedup"]),
        promise_check.verdict("wall-clock speed-up over fp32 full", s["measured_speedup"],
                              s["promise"]["wallclock_speedup"], s["promise_intervals"]["wallclock_speedup"],
                              note=note or ("one timed run, no interval" if s["measured_speedup"] is not None else "")),
        promise_check.verdict(point.data["metric"], s["score"], s["promise"]["score"],
                              s["promise_intervals"]["score"], s["score_interval"],
                              note="" if labels is not None else "no --label-column"),
        promise_check.verdict(f"{point.data['metric']} of the fp32 full model", s["full_score"],
                              s["promise"]["full_score"], s["promise_intervals"]["full_score"], s["full_score_interval"],
                              note="" if s["full_score"] is not None else
                              "needs --label-column and --compare-full")]
    g = point.promise.get("guarantee")
    s["guarantee"] = None if g is None else g.get("guarantee") or json.dumps(g, sort_keys=True)
    s["measured_risk"] = None
    if labels is not None and out["full_pred"] is not None:
        s["measured_risk"] = promise_check.measured_risk(out["pred"], out["full_pred"], labels, g)
    s["drift"] = _drift(point, out["exit_layer"])
    return s


def _drift(point, exit_layer) -> dict | None:
    """The exit-layer drift check against the rows the promise was measured on (the point's cache at
    its precision, the rule applied to it); None with no cache to compare with."""
    from core.engine import promise_check, strategies
    from core.engine.cache import ExitCache

    path = point.run_dir / point.promise.get("measured_on", {}).get("file", "cache.npz")
    if not path.is_file():
        return None
    try:
        cache = ExitCache.load(path)
        ref, _ = strategies.apply(point.strategy, cache.probs, confidence=cache.confidence, **point.params)
    except ValueError:
        return None
    return promise_check.exit_drift(exit_layer, ref, point.data["num_layers"],
                                    ref_name=f"dev rows of {path.name} the promise was measured on")


def summary_lines(s: dict) -> list[str]:
    """The summary core.predict prints: what ran, then one verdict sentence per promised number, the
    guarantee and the measured risk, and the drift check."""
    rows = [(f"rows: {s['rows']} (batch size {s['batch_size']}, {s.get('precision', 'fp32')}, {s['strategy']} "
             f"{json.dumps(s['params'], sort_keys=True)}; promise measured on {s['promise_rows']} dev rows)")]
    rows.append(f"mean exit layer: {s['mean_exit_layer']:.3f}")
    if s["rows_per_s"] is not None:
        rows.append(f"rows per second (early exit, model time after tokenization): {s['rows_per_s']:.1f}")
    if s["full_rows_per_s"] is not None:
        rows.append(f"rows per second (fp32 full model, same rows and batches): {s['full_rows_per_s']:.1f}; "
                    f"measured speed-up {s['measured_speedup']:.3f}x; early exit agrees with it on "
                    f"{100 * s['agreement_with_full']:.1f}% of rows")
    rows.append("promised against measured:")
    rows += [f"  {c['sentence']}" for c in s.get("checks", [])]
    rows.append("guarantee: " + (s["guarantee"] or "none (the point carries no calibration guarantee)"))
    if s.get("measured_risk"):
        rows.append("  " + s["measured_risk"]["sentence"])
    elif s["score"] is not None:
        rows.append("  (the measured risk needs the full model's answers: add --compare-full)")
    if s.get("drift"):
        rows.append(s["drift"]["sentence"])
    return rows


def write_output(path: str, out: dict, label_names: list[str], offset: int = 0) -> None:
    full = out.get("full_pred")
    lines = [json.dumps({"row": offset + i, "prediction": label_names[int(p)], "exit_layer": int(m),
                         "probability": round(float(q), 6),
                         **({} if full is None else {"full_prediction": label_names[int(full[i])]})})
             for i, (p, m, q) in enumerate(zip(out["pred"], out["exit_layer"], out["prob"]))]
    atomic_write_text(path, "".join(line + "\n" for line in lines))


def build_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="python -m core.predict", description=__doc__.split("\n\n")[0])
    ap.add_argument("--point", required=True, help="operating-point file (python -m core.export, or Explore's export)")
    ap.add_argument("--input", required=True, help="CSV, TSV or JSONL file, or - for standard input (one text per line)")
    ap.add_argument("--text-column")
    ap.add_argument("--text-pair-column")
    ap.add_argument("--label-column", help="gold labels (names or ids): adds the score to the summary")
    ap.add_argument("--output", required=True, help="JSONL file to write, one line per input row")
    ap.add_argument("--batch-size", type=int, default=None,
                    help="rows per batch (default: the point's batch size, else 32)")
    ap.add_argument("--compare-full", action="store_true",
                    help="also run the fp32 full model on the same rows: the measured speed-up, and with "
                         "labels the measured risk")
    ap.add_argument("--summary-json", help="also write the summary numbers to this JSON file")
    return ap


def check_outputs(args) -> bool:
    """--output and --summary-json can be written (core.export.check_output_path), before anything is
    read. Returns whether --output exists already (it is then replaced atomically)."""
    from core.serving.export import check_output_path

    replaced = check_output_path(args.output, "--output")
    if args.summary_json:
        check_output_path(args.summary_json, "--summary-json")
    return replaced


def refuse_inputs(args, point) -> None:
    """No output is the same file as an input: the point, the input file, the run's own files."""
    from core.serving.export import RUN_FILES, refuse_inputs_as_outputs

    inputs = {"--point": args.point, **({} if args.input == "-" else {"--input": args.input}),
              **{f"the run's {f}": point.run_dir / f for f in RUN_FILES}}
    refuse_inputs_as_outputs({"--output": args.output, "--summary-json": args.summary_json}, inputs)


def _write_failed(what: str, path: str, e: OSError) -> int:
    print(f"core.predict: error: {what}: cannot write {path} ({e.strerror or e})", file=sys.stderr)
    return 2


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    rank, world = _world()
    state = _state() if world > 1 else None
    try:
        if args.batch_size is not None and args.batch_size < 1:
            raise ValueError(f"--batch-size must be >= 1, got {args.batch_size}")
        from core.serving.export import check_free_space, read_point

        replaced = check_outputs(args)
        point = read_point(args.point)
        refuse_inputs(args, point)
        is_pair = bool(_point_is_pair(point))
        texts, pairs, raw_labels, where = read_input(
            args.input, text_column=args.text_column, text_pair_column=args.text_pair_column,
            label_column=args.label_column, is_pair=is_pair)
        labels = None if raw_labels is None else encode_labels(raw_labels, point.label_names, where)
        need = output_bytes(len(texts), point.label_names, point.data["num_layers"])
        if world > 1:  # each process's block goes to a side file beside the output first
            need += len(texts) * 48 + world * 1024
        check_free_space(args.output, "--output", need)
        if args.summary_json:
            check_free_space(args.summary_json, "--summary-json", 16 * 1024)
        from core.serving.predictor import EarlyExitPredictor

        device = state.device if state is not None else "cpu"
        pred = EarlyExitPredictor.from_point(args.point, device=device)
        full = (EarlyExitPredictor.from_point(args.point, device=device, precision="fp32")
                if args.compare_full and point.precision != "fp32" else None)
        batch_size = args.batch_size or point.batch_size or 32
    except (ValueError, OSError) as e:
        print(f"core.predict: error: {e}", file=sys.stderr)
        return 2
    n = len(texts)
    start, stop = shard(n, rank, world)
    out = run_rows(pred, texts[start:stop], None if pairs is None else pairs[start:stop],
                   batch_size=batch_size, compare_full=args.compare_full, show_progress=rank == 0, full=full)
    if state is not None:
        out = _gather(state, args.output, out, rank, world)
        if out is None:
            return 0
    s = summarize(point, out, labels, batch_size=batch_size)
    s["processes"], s["output_replaced"] = world, replaced
    try:
        write_output(args.output, out, point.label_names)
    except OSError as e:
        return _write_failed("--output", args.output, e)
    print(f"core.predict: wrote {n} rows to {args.output}"
          + (" (replaced the file that was there)" if replaced else ""), file=sys.stderr)
    for line in summary_lines(s):
        print(line)
    if args.summary_json:
        try:
            atomic_write_json(args.summary_json, s)
        except OSError as e:
            return _write_failed("--summary-json", args.summary_json, e)
    return 0


def _point_is_pair(point) -> bool:
    from core.runs.folders import read_config

    cfg = read_config(point.run_dir) or {}
    return bool((cfg.get("derived") or {}).get("is_pair"))


def _gather(state, output: str, out: dict, rank: int, world: int) -> dict | None:
    """Every process writes its block to a side file; the main process joins them in input order and
    returns the whole (others return None). Seconds are the slowest process's (the wall time)."""
    part = Path(f"{output}.part{rank}-of-{world}.npz")
    arrays = {k: v for k, v in out.items() if isinstance(v, np.ndarray)}
    np.savez(part, **arrays, seconds=out["seconds"],
             full_seconds=-1.0 if out["full_seconds"] is None else out["full_seconds"])
    state.wait_for_everyone()
    if not state.is_main_process:
        state.wait_for_everyone()
        return None
    parts = [np.load(Path(f"{output}.part{r}-of-{world}.npz")) for r in range(world)]
    merged = {k: np.concatenate([p[k] for p in parts]) for k in arrays}
    merged["seconds"] = max(float(p["seconds"]) for p in parts)
    fs = [float(p["full_seconds"]) for p in parts]
    merged["full_seconds"] = None if fs[0] < 0 else max(fs)
    merged.setdefault("full_pred", None)
    for r in range(world):
        Path(f"{output}.part{r}-of-{world}.npz").unlink(missing_ok=True)
    state.wait_for_everyone()
    return merged


if __name__ == "__main__":
    sys.exit(main())
