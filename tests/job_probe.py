"""A stand-in process for core.runs.jobs lifecycle tests: `python -m tests.job_probe --out FOLDER ...`.

Not a model of core.train; it only behaves like a job does towards its run folder: it writes
status.json (running with progress, then done / failed with `error` / cancelled on SIGTERM) through
core.runs.folders.write_status and prints to stdout.

    --steps N --sleep S   N steps of S seconds each
    --mode ok             finish with state done
    --mode raise          raise after the steps: write failed with the error, exit 1
    --mode exit           exit with --exit-code after the steps without writing a final status
    --mode hang           ignore SIGTERM and never finish (only SIGKILL ends it)
    --overwrite           as core.train: work in the run's staging sibling, swap it in when done
"""
from __future__ import annotations

import argparse
import os
import signal
import sys
import time
import traceback

from core.runs.folders import staging_folder, swap_in, write_status


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="job_probe")
    ap.add_argument("--out", required=True)
    ap.add_argument("--steps", type=int, default=3)
    ap.add_argument("--sleep", type=float, default=0.05)
    ap.add_argument("--mode", choices=["ok", "raise", "exit", "hang"], default="ok")
    ap.add_argument("--exit-code", type=int, default=3)
    ap.add_argument("--overwrite", action="store_true")
    args = ap.parse_args(argv)

    stop = []
    if args.mode == "hang":
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
    else:
        signal.signal(signal.SIGTERM, lambda *_: stop.append(True))

    out, started = (staging_folder(args.out) if args.overwrite else args.out), time.time()
    write_status(out, "running", pid=os.getpid(), started=started, step=0, total_steps=args.steps,
                 progress=0.0, message="probe running")
    print(f"probe: started pid={os.getpid()} argv={sys.argv[1:]}", flush=True)
    try:
        step = 0
        while args.mode == "hang" or step < args.steps:
            end = time.monotonic() + args.sleep
            while time.monotonic() < end and not stop:
                time.sleep(0.01)
            if stop:
                print("probe: got SIGTERM, stopping", flush=True)
                write_status(out, "cancelled", finished=time.time(), eta_s=None, message="cancelled")
                return 0
            step += 1
            print(f"probe: step {step}", flush=True)
            done = min(step / args.steps, 0.99) if args.steps else 0.0
            write_status(out, "running", step=step, progress=done,
                         eta_s=(time.time() - started) / step * max(args.steps - step, 0))
        if args.mode == "raise":
            raise RuntimeError(f"probe failure: boom at step {step}")
        if args.mode == "exit":
            print(f"probe: exiting with code {args.exit_code} without a final status", flush=True)
            os._exit(args.exit_code)
        write_status(out, "done", step=step, progress=1.0, eta_s=0.0, finished=time.time(),
                     message="done")
        if args.overwrite:
            swap_in(out, args.out)
        print("probe: done", flush=True)
        return 0
    except Exception as e:
        traceback.print_exc()
        write_status(out, "failed", error=f"{type(e).__name__}: {e}", finished=time.time(), eta_s=None)
        return 1


if __name__ == "__main__":
    sys.exit(main())
