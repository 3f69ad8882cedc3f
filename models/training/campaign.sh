#!/usr/bin/env bash
# The paper-quality training campaign (issue 24): trains the jobs below, in order, in chunks
# of $CHUNK_MINUTES, each resuming from its training state in models/training/ (parameters,
# BatchNorm running statistics, Adam's moments, step count and learning curve: a run is a
# pure function of its configuration and step, so chunks on any machine give the same model
# as one long run). A job is done when its held-out curve stops it (--stop-when-flat), its
# epoch budget is spent, or its Fashion-MNIST-test bits/dim (Running) reach its target.
#
#   BNOOD_DATA_DIR=../shared/datasets nice -n 19 models/training/campaign.sh >> runs/campaign.log 2>&1 &
#
# Stop between chunks with `touch runs/campaign.stop` (the chunk in progress finishes and
# saves its state first). Per-evaluation parameter snapshots go to runs/snapshots/ (not
# committed: 3 MB each), for the Rotation-versus-epochs study.
set -euo pipefail
cd "$(dirname "$0")/../.."
BIN="${BNOOD_BIN:-${CARGO_TARGET_DIR:-$HOME/.cache/bnood-target}/release/bnood}"
CHUNK_MINUTES="${CHUNK_MINUTES:-20}"
STATE=models/training
STOP=runs/campaign.stop
mkdir -p runs/snapshots

# name | target FMNIST-test bits/dim (Running), "-" for none | bnood train arguments
JOBS=(
  "realnvp-fmnist-paper-seed0|2.97|--model realnvp --preset paper --seed 0 --epochs 100 --eval-images 2000 --stop-when-flat 0.005 --flat-epochs 3 --lr-halvings 1"
  "pixelcnn-fmnist-cpu-seed0|-|--model pixelcnn --preset cpu --seed 0 --epochs 2 --eval-images 1000"
  "pixelcnn-mnist-cpu-seed0|-|--model pixelcnn --preset cpu --seed 0 --epochs 2 --dataset mnist-train"
  "vae-fmnist-paper-seed0|3.24|--model vae --preset paper --seed 0 --epochs 100 --eval-images 500 --eval-every 1874 --stop-when-flat 0.005 --flat-epochs 3 --lr-halvings 1"
  "realnvp-fmnist-paper-seed1|-|--model realnvp --preset paper --seed 1 --epochs 10 --eval-images 2000"
  "realnvp-fmnist-paper-seed2|-|--model realnvp --preset paper --seed 2 --epochs 10 --eval-images 2000"
  "vae-fmnist-paper-seed1|-|--model vae --preset paper --seed 1 --epochs 10 --eval-images 500"
  "vae-fmnist-paper-seed2|-|--model vae --preset paper --seed 2 --epochs 10 --eval-images 500"
  "realnvp-fmnist-background-paper-seed0|-|--model realnvp --preset paper --seed 0 --steps @MAIN_STEPS@ --background-mutation 0.2 --weight-decay 1e-4"
)
MAIN=realnvp-fmnist-paper-seed0

# Whether job $1 with target $2 is finished: its last run said so, or the curve met the target.
finished() {
  local name=$1 target=$2
  [ -f "$STATE/$name.done" ] && return 0
  [ "$target" = "-" ] && return 1
  local curve="$STATE/$name.bpk.curve.csv"
  [ -f "$curve" ] || return 1
  local row
  row=$(tail -n 1 "$curve" | awk -F, -v t="$target" '$6 != "" && $6+0 <= t+0 {print}')
  [ -n "$row" ] || return 1
  # Recorded like a stopped run, so that `bnood models list` shows it finished.
  echo "reached its target of $target bits/dim (FMNIST test, Running) at curve row: $row" > "$STATE/$name.done"
}

while [ ! -e "$STOP" ]; do
  job=""
  for j in "${JOBS[@]}"; do
    IFS='|' read -r name target args <<<"$j"
    if ! finished "$name" "$target"; then job=$j; break; fi
  done
  [ -n "$job" ] || { echo "$(date -u +%FT%TZ) campaign: every job is finished"; break; }
  IFS='|' read -r name target args <<<"$job"
  # The background model trains as many steps as the finished main RealNVP.
  # (its shipped copy in models/ once finished, else its training state).
  main_sidecar=models/$MAIN.bpk.json
  [ -f "$main_sidecar" ] || main_sidecar=$STATE/$MAIN.bpk.json
  main_steps=$(grep -o '"step": *[0-9]*' "$main_sidecar" 2>/dev/null | grep -o '[0-9]*$' || echo 0)
  args=${args//@MAIN_STEPS@/$main_steps}
  echo "$(date -u +%FT%TZ) campaign: $name, a chunk of $CHUNK_MINUTES min"
  # shellcheck disable=SC2086
  out=$("$BIN" -q train $args --minutes "$CHUNK_MINUTES" --resume \
        --snapshots runs/snapshots --out "$STATE/$name.bpk" 2>&1) || { echo "$out"; exit 1; }
  echo "$out"
  # The budget is spent when the run took no step beyond the epochs asked for.
  if grep -q "^stopped: the held-out curve is flat" <<<"$out" \
     || grep -q "budget spent" <<<"$out"; then
    echo "$out" | tail -n 3 > "$STATE/$name.done"
  fi
done
