"""Writes scikit-learn's 8×8 handwritten digits (the UCI "optdigits" test set that ships
inside the scikit-learn package, 1,797 images of 0–9, 17 gray levels) as IDX files that
`bnood train --dataset` and `bnood eval --reference/--in/--ood` read:

    pip install scikit-learn
    python3 examples/digits/make_digits.py runs/digits

writes, after one seeded shuffle (`numpy.random.default_rng(0)`: the package's order groups
writers, and a split by position puts different writers in each part, which the pool
verdict detects as a shift), `digits-train-idx3-ubyte` (1,000 images, to train on),
`digits-val-idx3-ubyte` (300: the reference set of the detectors, images the model never saw — a reference
drawn from the training images makes in-distribution test images look odd once the model
has overfitted them), `digits-test-idx3-ubyte` (the other 497) and their labels. Pixels 0–16
become 0–255 (× 255/16, rounded). The split is fixed, so every run writes the same files.
"""

import struct
import sys
from pathlib import Path

import numpy as np
from sklearn.datasets import load_digits


def write_idx(path, array):
    array = np.ascontiguousarray(array, dtype=np.uint8)
    header = struct.pack(">BBBB", 0, 0, 0x08, array.ndim)
    header += b"".join(struct.pack(">I", d) for d in array.shape)
    path.write_bytes(header + array.tobytes())


def main():
    out = Path(sys.argv[1] if len(sys.argv) > 1 else "runs/digits")
    out.mkdir(parents=True, exist_ok=True)
    digits = load_digits()
    images = np.rint(digits.images * 255.0 / 16.0).clip(0, 255).astype(np.uint8)
    labels = digits.target.astype(np.uint8)
    order = np.random.default_rng(0).permutation(len(images))
    images, labels = images[order], labels[order]
    parts = [("train", slice(0, 1000)), ("val", slice(1000, 1300)), ("test", slice(1300, None))]
    for name, part in parts:
        write_idx(out / f"digits-{name}-idx3-ubyte", images[part])
        write_idx(out / f"digits-{name}-labels-idx1-ubyte", labels[part])
        print(f"{out / f'digits-{name}-idx3-ubyte'}: {images[part].shape[0]} images 8×8")


if __name__ == "__main__":
    main()
