#!/bin/bash
# Usage: docs/bad-inputs-rss.sh BNOOD_BINARY WORKDIR — peak RSS and exit status of each
# refused input of docs/bad-inputs.md (needs python3, mkfifo, /usr/bin/time and the datasets
# in $BNOOD_DATA_DIR, default /work/shared/datasets).
B=$1; W=$2
[ -x "$B" ] && [ -n "$W" ] || { echo "usage: $0 BNOOD_BINARY WORKDIR" >&2; exit 2; }
rm -rf "$W"; mkdir -p "$W"; cd "$W" || exit 1
export BNOOD_DATA_DIR=${BNOOD_DATA_DIR:-/work/shared/datasets}
$B train --steps 1 --out m.bpk -q >/dev/null 2>&1 || echo "setup train failed"
$B train --model vae --steps 1 --out v.bpk -q >/dev/null 2>&1 || echo "setup vae failed"
python3 - <<'PY'
import struct, zlib
def chunk(k, d):
    return struct.pack('>I', len(d)) + k + d + struct.pack('>I', zlib.crc32(k + d) & 0xffffffff)
w = h = 20000
c = zlib.compressobj(9)
row = b'\x00' * (w + 1)
data = b''.join(c.compress(row) for _ in range(h)) + c.flush()
png = b'\x89PNG\r\n\x1a\n' + chunk(b'IHDR', struct.pack('>IIBBBBB', w, h, 8, 0, 0, 0, 0)) + chunk(b'IDAT', data) + chunk(b'IEND', b'')
import os
os.makedirs('huge', exist_ok=True)
for i in range(8):
    open(f'huge/{i}.png', 'wb').write(png)
# An IDX file of 20 user images.
n = 20
open('mine-idx3-ubyte', 'wb').write(bytes([0, 0, 8, 3]) + struct.pack('>III', n, 28, 28) + bytes((i * 7) % 256 for i in range(n * 784)))
PY
mkfifo pipe
cp m.bpk.json m.orig.json; cp v.bpk.json v.orig.json
edit() { python3 -c "import json,sys; j=json.load(open('$1')); j['config']['$2']=$3; json.dump(j, open('$4','w'))"; }
run() { # label, args...
  local label=$1; shift
  /usr/bin/time -v -o t.txt timeout 60 "$@" > out.txt 2> err.txt; local rc=$?
  local rss=$(grep "Maximum resident" t.txt | awk '{print $6}')
  local el=$(grep "Elapsed (wall" t.txt | awk '{print $8}')
  local msg=$( (grep "^error" err.txt || cat err.txt) | head -1 | cut -c1-150)
  local panic=$(grep -c panicked err.txt)
  printf "%s\t%s\t%s\t%s\t%s\t%s\n" "$label" "$rc" "$((rss/1024)) MB" "$el" "panic=$panic" "$msg"
}
T="--test mine-idx3-ubyte --detector logp --reference-size 100"
run "1 train --minutes=-1" $B train --minutes=-1 --out x.bpk
run "1 train --minutes NaN" $B train --minutes NaN --out x.bpk
run "1 train --minutes inf" $B train --minutes inf --out x.bpk
run "1 train --minutes 1e300" $B train --minutes 1e300 --out x.bpk
edit m.orig.json mid_channels 100000 m.bpk.json
run "2 sidecar mid_channels 100000" $B score --model m.bpk $T
edit m.orig.json mid_channels 2000 m.bpk.json
run "2 sidecar mid_channels 2000" $B score --model m.bpk $T
edit m.orig.json num_blocks 100000000 m.bpk.json
run "2 sidecar num_blocks 1e8" $B score --model m.bpk $T
cp m.orig.json m.bpk.json
edit v.orig.json latent_dim 100000000 v.bpk.json
run "2 VAE sidecar latent_dim 1e8" $B score --model v.bpk $T
cp v.orig.json v.bpk.json
run "2 score --vae-samples 100000" $B score --model v.bpk $T --vae-samples 100000
run "3 8 PNGs of 20000x20000" $B score --model m.bpk --detector logp --reference-size 100 --test huge
run "3 --test /dev/zero" $B score --model m.bpk --detector logp --reference-size 100 --test /dev/zero
run "3 --detector-file /dev/zero" $B score --detector-file /dev/zero --test mine-idx3-ubyte
run "3 --test FIFO" $B score --model m.bpk --detector logp --reference-size 100 --test pipe
run "5 train --out under a file" $B train --minutes 1 --out mine-idx3-ubyte/x.bpk
run "6 score --out = its model" $B score --model m.bpk $T --out m.bpk
run "6 score --out = sidecar" $B score --model m.bpk $T --out m.bpk.json
run "6 score --out = --test" $B score --model m.bpk $T --out mine-idx3-ubyte
run "8 --data-dir /typo" $B --data-dir /typo score --model m.bpk $T
run "9 train --steps 0" $B train --steps 0 --out x.bpk
run "9 waic same file twice" $B score --model m.bpk --ensemble ./m.bpk --detector waic --test mine-idx3-ubyte
run "9 waic mixed architectures" $B score --model m.bpk --ensemble v.bpk --detector waic --test mine-idx3-ubyte
run "9 logp threshold from 2 images" $B score --model m.bpk --detector logp --reference mine-idx3-ubyte --reference-size 2 --test mine-idx3-ubyte
run "9 --ensemble with logp" $B score --model m.bpk --ensemble v.bpk $T
run "11 --r1 -0.1" $B score --model m.bpk --detector bn --test mine-idx3-ubyte --r1 -0.1
run "11 --fpr 1.5" $B score --model m.bpk $T --fpr 1.5
echo '{"a":1}' > bad.json
run "11 report on non-report JSON" $B report bad.json
run "11 report /dev/zero" $B report /dev/zero
