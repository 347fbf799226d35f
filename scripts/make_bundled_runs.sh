#!/usr/bin/env bash
# Re-create the bundled runs in checkpoints/ with the project's own CLI (CPU, about an hour on 2 cores).
# Subsets are documented in docs/RESULTS.md: Rotten Tomatoes 4,000 training sentences, 1 epoch;
# SST-2 2,000 sentences, 1 epoch; MRPC and RTE 1,000 pairs, 2 epochs. Dev sets are complete.
# Usage: bash scripts/make_bundled_runs.sh [run-name-filter]
set -uo pipefail
cd "$(dirname "$0")/.."
. .venv/bin/activate
export TOKENIZERS_PARALLELISM=false
only="${1:-}"
train() {  # train <run> <flags...>
  local name=$1; shift
  [[ -n "$only" && "$name" != *$only* ]] && return 0
  [[ -f "checkpoints/$name/cache.npz" ]] && { echo "skip $name (exists)"; return 0; }
  echo "== $name: $*"
  python -m core.train "$@" --out "checkpoints/$name" > "/tmp/bundled-$name.log" 2>&1 \
    && echo "   done: $(python -c "import json;print(json.load(open('checkpoints/$name/status.json'))['message'])")" \
    || echo "   FAILED (see /tmp/bundled-$name.log)"
}
RT="--task rotten_tomatoes --max-train 4000 --epochs 1"
NW="--no-save-weights"
train rotten_tomatoes-joint        $RT --method joint --fp16-weights
train rotten_tomatoes-leebert      $RT --method leebert $NW
train rotten_tomatoes-badge        $RT --method badge $NW
train rotten_tomatoes-diversity    $RT --method diversity $NW
train rotten_tomatoes-joint-lte    $RT --method joint --lte $NW
train rotten_tomatoes-two_stage    $RT --method two_stage $NW
train rotten_tomatoes-alternating  $RT --method alternating $NW
train rotten_tomatoes-self_distill $RT --method self_distill $NW
train rotten_tomatoes-leebert-lle  $RT --method leebert --teachers lle $NW
train rotten_tomatoes-leebert-slo  $RT --method leebert --optimizer slo $NW
train rotten_tomatoes-leebert-clo_v1 $RT --method leebert --optimizer clo_v1 $NW
train rotten_tomatoes-leebert-uniform $RT --method leebert --weights uniform $NW
train rotten_tomatoes-leebert-random  $RT --method leebert --weights random $NW
train rotten_tomatoes-leebert-blo  $RT --method leebert --optimizer blo $NW
for s in 1 2; do
  train rotten_tomatoes-joint-seed$s   $RT --method joint --seed $s $NW
  train rotten_tomatoes-leebert-seed$s $RT --method leebert --seed $s $NW
  train rotten_tomatoes-badge-seed$s   $RT --method badge --seed $s $NW
done
for t in sst2 mrpc rte; do
  case $t in sst2) G="--task sst2 --max-train 2000 --epochs 1";; *) G="--task $t --max-train 1000 --epochs 2";; esac
  for m in joint leebert badge diversity; do
    train $t-$m $G --method $m $NW
  done
done
echo "all bundled runs attempted"
