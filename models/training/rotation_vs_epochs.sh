#!/usr/bin/env bash
# The Rotation question of issue 24: AUROC of log p, T_perm and the BN test against Rotation
# (and MNIST, for contrast) for every parameter snapshot the campaign kept
# (runs/snapshots/<job>-step<N>.bpk, one per held-out evaluation), written as one CSV row per
# snapshot and detector to runs/rotation_vs_epochs/<job>-n<SUBSET>.csv.
#
#   BNOOD_DATA_DIR=../shared/datasets models/training/rotation_vs_epochs.sh realnvp-fmnist-paper-seed0 [SUBSET]
#
# SUBSET images per pool (default 500, the main job's); each snapshot is evaluated once and
# its report kept, so a re-run only evaluates new snapshots.
set -euo pipefail
cd "$(dirname "$0")/../.."
BIN="${BNOOD_BIN:-${CARGO_TARGET_DIR:-$HOME/.cache/bnood-target}/release/bnood}"
job=${1:?usage: rotation_vs_epochs.sh JOB [SUBSET]}
subset=${2:-500}
out=runs/rotation_vs_epochs
mkdir -p "$out"
csv="$out/$job-n$subset.csv"
echo "step,epoch,detector,ood,auroc" > "$csv"
for snap in $(ls runs/snapshots/"$job"-step*.bpk | sort -V); do
  step=${snap##*-step}; step=${step%.bpk}
  dir="$out/$job-step$step-n$subset"
  if [ ! -f "$dir/eval.json" ]; then
    "$BIN" -q eval --model "$snap" --ood rotation,mnist --detectors logp,tperm,bn \
      --subset "$subset" --out "$dir" > /dev/null
  fi
  python3 - "$dir/eval.json" "$step" >> "$csv" <<'PY'
import json, sys
rep = json.load(open(sys.argv[1]))
step = int(sys.argv[2])
for row in rep["table2"]:
    print(f'{step},{step / 937:.3f},{row["detector"]},{row["ood"]},{row["auroc"]:.4f}')
PY
done
cat "$csv"
