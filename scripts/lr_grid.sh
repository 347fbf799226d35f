#!/usr/bin/env bash
# Learning-rate grid for the default backbone on the default task, chosen on a validation split carved
# from the training rows (never the dev set): joint training, lr in {3e-5, 5e-5, 1e-4}, up to 3 epochs
# (4 did not fit the shared 2-core machine: 2.8-5.5 s a step measured), early stopping with patience 2 on
# the validation S-avg (core.train --val-fraction / --patience).
# The held-out test split is excluded from training (split version 2). One run at a time, one thread.
# Usage: bash scripts/lr_grid.sh [out-root]       (default runs-scratch/lr-grid; finished runs are skipped,
#        so rerunning the same command resumes the grid at the first unfinished learning rate)
# Then:  python scripts/lr_grid_table.py [out-root] > docs/TUNING.md
set -uo pipefail
cd "$(dirname "$0")/.."
[[ -f .venv/bin/activate ]] && . .venv/bin/activate
export TOKENIZERS_PARALLELISM=false OMP_NUM_THREADS=1 MKL_NUM_THREADS=1
root="${1:-runs-scratch/lr-grid}"
src="${GRID_SRC:-.}"   # where core/ is imported from (a frozen copy keeps edits out of a running grid)
mkdir -p "$root" && root="$(cd "$root" && pwd)"
for lr in 3e-5 5e-5 1e-4; do
  out="$root/rotten_tomatoes-joint-lr$lr"
  if grep -q '"state": "done"' "$out/status.json" 2>/dev/null; then echo "skip $out (done)"; continue; fi
  echo "== lr $lr -> $out ($(date +%H:%M:%S))"
  (cd "$src" && python -c 'import sys, torch; torch.set_num_threads(1); torch.set_num_interop_threads(1)
from core.train import main; sys.exit(main())' \
    --task rotten_tomatoes --method joint --lr "$lr" --epochs 3 --val-fraction 0.1 --patience 2 \
    --no-eval-every-epoch --latency-samples 0 --no-save-weights --out "$out") \
    > "$out.log" 2>&1 && echo "   $(python -c "import json;print(json.load(open('$out/status.json'))['message'])")" \
    || echo "   FAILED (see $out.log)"
done
echo "grid finished $(date +%H:%M:%S)"
