#!/usr/bin/env bash
# Same scores from two builds of `bnood`: trains small checkpoints with the first binary,
# scores them with every detector and runs one `bnood eval` with both, and compares; fits
# detector files with both (they must be byte-identical) and scores with the first
# binary's files through both (a file written before a change must load and score the same).
# Usage: benches/reference/same_scores.sh OLD_BNOOD NEW_BNOOD [WORK_DIR]
# (needs BNOOD_DATA_DIR or ../shared/datasets; python3 for the report comparison).
set -euo pipefail
B=$1; A=$2; W=${3:-/tmp/bnood-same-scores}
export BNOOD_DATA_DIR=${BNOOD_DATA_DIR:-../shared/datasets} RAYON_NUM_THREADS=${RAYON_NUM_THREADS:-2}
rm -rf $W; mkdir -p $W
$B train --model realnvp --preset cpu --steps 40 --out $W/m0.bpk -q >/dev/null
$B train --model realnvp --preset cpu --steps 20 --seed 1 --out $W/m1.bpk -q >/dev/null
$B train --model vae --preset cpu --steps 30 --out $W/v0.bpk -q >/dev/null
for bin in before after; do
  X=$B; [ $bin = after ] && X=$A
  for det in logp tperm bn; do
    $X score --model $W/m0.bpk --detector $det --test kmnist --test-size 300 --reference-size 600 --out $W/$bin-$det.csv -q 2>/dev/null
    $X score --model $W/v0.bpk --detector $det --test mnist --test-size 200 --reference-size 400 --vae-samples 4 --out $W/$bin-vae-$det.csv -q 2>/dev/null
  done
  $X score --model $W/m0.bpk --ensemble $W/m1.bpk --detector waic --test kmnist --test-size 300 --reference-size 600 --format json --out $W/$bin-waic.json -q 2>/dev/null
  for det in logp tperm bn typicality input-complexity; do
    $X fit --model $W/m0.bpk --detector $det --reference-size 600 --out $W/$bin-det-$det.json -q 2>/dev/null
    $X score --detector-file $W/before-det-$det.json --test kmnist --test-size 300 --out $W/$bin-old-file-$det.csv -q 2>/dev/null
  done
  $X fit --model $W/m0.bpk --ensemble $W/m1.bpk --detector waic --reference-size 600 --out $W/$bin-det-waic.json -q 2>/dev/null
  $X eval --model $W/m0.bpk,$W/m1.bpk --ood kmnist,rotation --subset 200 --reference-size 400 --table5 0.5 --sweep 0,0.5,1 --sweep-size 100 --contamination mnist --fractions 0.1,1 --pool-size 200 --out $W/$bin-eval -q > /dev/null
done
for f in logp tperm bn vae-logp vae-tperm vae-bn; do cmp $W/before-$f.csv $W/after-$f.csv && echo "identical: $f.csv ($(wc -l < $W/after-$f.csv) lines)"; done
cmp $W/before-waic.json $W/after-waic.json && echo "identical: waic.json"
for det in logp tperm bn typicality input-complexity waic; do cmp $W/before-det-$det.json $W/after-det-$det.json && echo "identical detector file: $det ($(wc -c < $W/after-det-$det.json) bytes)"; done
for det in logp tperm bn typicality input-complexity; do cmp $W/before-old-file-$det.csv $W/after-old-file-$det.csv && echo "identical scores from the first binary's detector file: $det"; done
python3 - "$W" <<'PY'
import json, sys
b=json.load(open(sys.argv[1]+'/before-eval/eval.json')); a=json.load(open(sys.argv[1]+'/after-eval/eval.json'))
def cells(r, key):
    return [(c['ood'], c['auroc'], c['average_precision'], c['fpr_at_95_tpr'], c['roc']) for c in r[key]]
for key in ['table2','table5']:
    assert cells(b,key)==cells(a,key), key
    print(f"identical: eval {key} ({len(a[key])} cells: AUROC, AP, FPR@95, ROC points)")
assert b['sweep']==a['sweep']; print("identical: eval sweep")
strip=lambda r:[[{k:v for k,v in row.items() if k!='seconds'} for row in rows] for _,rows in r['contamination']]
assert strip(b)==strip(a); print("identical: eval contamination")
PY
