"""PyTorch reference for `benches/mixed_batch.rs`: the same RealNVP (the paper's
Fashion-MNIST preset, `RealNvpConfig::paper_fmnist()` in
crates/bnood-models/src/realnvp.rs), timed the same way, on the CPU.

    python benches/reference/realnvp_torch.py --threads 2 --json out.json

Cases (samples per second; one iteration = one forward or training pass of b = 64 rows):
- score_mixed r=0.1 / r=0.9: a pool of two mixed batches, each of m = round(r*b) test rows
  and b - m reference rows, assembled from uint8 images on the host (pixel + 0.5),
  BatchNorm with the batch's own statistics and running averages untouched, no autograd;
  the m test log-likelihoods of each are read back. Throughput counts the 2m test samples.
- score_running b=64: log p of 64 images with running BatchNorm statistics (eval mode).
- train_step b=64: one Adam step (lr 1e-3, eps 1e-5 as burn's default) on 64 images,
  gradient clipped per parameter tensor to norm 100 (as burn's
  `GradientClippingConfig::Norm`), running statistics updated with momentum 0.1.

Architecture, mirrored line by line from realnvp.rs: logit preprocessing (alpha = 0.05);
3 checkerboard couplings (parities 0, 1, 0) on [1, 28, 28]; squeeze to [4, 14, 14]; 3
channel-wise couplings (flip no, yes, no); the first half of the channels is factored out;
4 checkerboard couplings (parities 0, 1, 0, 1) on [2, 14, 14]; standard normal prior.
Every coupling: s, t = ResNet(condition); s = w * tanh(s_raw); y = x * exp(s) + t. ResNet:
BatchNorm -> [x, -x] -> ReLU -> 3x3 conv (2c -> 32) -> 4 pre-activation residual blocks
(BN, ReLU, 3x3 conv, BN, ReLU, 3x3 conv, + x) -> BN -> ReLU -> 1x1 conv (32 -> out).

Images: Fashion-MNIST when --data-dir (or BNOOD_DATA_DIR) holds the idx files, otherwise
seeded random pixels, as the Rust bench. Prints a table and, with --json, writes the
figures with the torch version, thread count and machine.
"""

import argparse
import gzip
import json
import math
import os
import platform
import statistics
import time
from pathlib import Path

import torch
import torch.nn as nn
import torch.nn.functional as F

ALPHA = 0.05
BATCH = 64
RATIOS = (0.1, 0.9)
POOL_BATCHES = 2  # mixed batches per scored pool, as benches/mixed_batch.rs


class BatchNorm(nn.Module):
    """BatchNorm with an explicit mode, as bnood-norm's `StatsMode`: 'running' (eval),
    'batch' (batch statistics, running averages untouched) or 'train' (batch statistics,
    running averages updated with the unbiased variance)."""

    def __init__(self, c, momentum=0.1, eps=1e-5):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(c))
        self.bias = nn.Parameter(torch.zeros(c))
        self.register_buffer("running_mean", torch.zeros(c))
        self.register_buffer("running_var", torch.ones(c))
        self.momentum, self.eps = momentum, eps

    def forward(self, x, mode):
        if mode == "running":
            return F.batch_norm(x, self.running_mean, self.running_var, self.weight,
                                self.bias, False, 0.0, self.eps)
        if mode == "batch":
            return F.batch_norm(x, None, None, self.weight, self.bias, True, 0.0, self.eps)
        return F.batch_norm(x, self.running_mean, self.running_var, self.weight, self.bias,
                            True, self.momentum, self.eps)


def conv(cin, cout, k):
    # PyTorch's default initialisation is the one bnood uses (uniform, bound 1/sqrt(fan_in)).
    return nn.Conv2d(cin, cout, k, padding=k // 2)


class ResidualBlock(nn.Module):
    def __init__(self, c):
        super().__init__()
        self.norm1, self.conv1 = BatchNorm(c), conv(c, c, 3)
        self.norm2, self.conv2 = BatchNorm(c), conv(c, c, 3)

    def forward(self, x, mode):
        h = self.conv1(F.relu(self.norm1(x, mode)))
        h = self.conv2(F.relu(self.norm2(h, mode)))
        return x + h


class ResNet(nn.Module):
    def __init__(self, cond, out, mid=32, blocks=4):
        super().__init__()
        self.in_norm = BatchNorm(cond)
        self.in_conv = conv(2 * cond, mid, 3)
        self.blocks = nn.ModuleList(ResidualBlock(mid) for _ in range(blocks))
        self.out_norm = BatchNorm(mid)
        self.out_conv = conv(mid, out, 1)

    def forward(self, x, mode):
        x = self.in_norm(x, mode)
        h = self.in_conv(F.relu(torch.cat([x, -x], 1)))
        for block in self.blocks:
            h = block(h, mode)
        return self.out_conv(F.relu(self.out_norm(h, mode)))


class Coupling(nn.Module):
    def __init__(self, kind, variant, channels, size):
        super().__init__()
        self.kind, self.variant = kind, variant
        cond, out = (channels, 2 * channels) if kind == "checkerboard" else (channels // 2, channels)
        self.net = ResNet(cond, out)
        self.rescale = nn.Parameter(torch.ones(out // 2))
        # Checkerboard mask b[i, j] = 1 where (i + j + parity) is even (a constant, not state).
        ij = torch.arange(size).view(size, 1) + torch.arange(size).view(1, size)
        self.mask = ((ij + variant) % 2 == 0).float().view(1, 1, size, size)

    def scale_shift(self, cond, mode):
        st = self.net(cond, mode)
        c = st.shape[1] // 2
        s_raw, t = st[:, :c], st[:, c:]
        return torch.tanh(s_raw) * self.rescale.view(1, c, 1, 1), t

    def forward(self, x, mode):
        n, c, h, w = x.shape
        if self.kind == "checkerboard":
            b = self.mask
            inv = 1.0 - b
            s, t = self.scale_shift(x * b, mode)
            s, t = s * inv, t * inv
            return x * torch.exp(s) + t, s.reshape(n, -1).sum(1)
        half = c // 2
        a, bpart = x[:, :half], x[:, half:]
        cond, trans = (bpart, a) if self.variant == 1 else (a, bpart)
        s, t = self.scale_shift(cond, mode)
        y = trans * torch.exp(s) + t
        out = torch.cat([y, cond], 1) if self.variant == 1 else torch.cat([cond, y], 1)
        return out, s.reshape(n, -1).sum(1)


def squeeze(x):
    n, c, h, w = x.shape
    return (x.reshape(n, c, h // 2, 2, w // 2, 2).permute(0, 1, 3, 5, 2, 4)
            .reshape(n, c * 4, h // 2, w // 2))


class RealNvp(nn.Module):
    """The paper's FMNIST RealNVP (one downscale, 4 blocks of 32 channels)."""

    def __init__(self, channels=1):
        super().__init__()
        c = channels
        self.checkerboard = nn.ModuleList(Coupling("checkerboard", p % 2, c, 28) for p in range(3))
        self.channelwise = nn.ModuleList(Coupling("channel", f % 2, 4 * c, 14) for f in range(3))
        self.last = nn.ModuleList(Coupling("checkerboard", p % 2, 2 * c, 14) for p in range(4))

    def log_prob(self, x, mode):
        n = x.shape[0]
        d = x[0].numel()
        y = x * ((1 - 2 * ALPHA) / 256) + ALPHA
        log_y, log_1my = torch.log(y), torch.log(1 - y)
        z = log_y - log_1my
        log_det = (-(log_y + log_1my)).reshape(n, -1).sum(1) \
            + d * (math.log(1 - 2 * ALPHA) - math.log(256))
        for cpl in self.checkerboard:
            z, ld = cpl(z, mode)
            log_det = log_det + ld
        z = squeeze(z)
        for cpl in self.channelwise:
            z, ld = cpl(z, mode)
            log_det = log_det + ld
        half = z.shape[1] // 2
        parts = [z[:, :half]]
        z = z[:, half:]
        for cpl in self.last:
            z, ld = cpl(z, mode)
            log_det = log_det + ld
        parts.append(z)
        prior = sum(-0.5 * p.pow(2).reshape(n, -1).sum(1) for p in parts)
        return prior - 0.5 * math.log(2 * math.pi) * d + log_det


def load_idx_images(path):
    with (gzip.open(path) if path.suffix == ".gz" else open(path, "rb")) as f:
        data = f.read()
    n, h, w = (int.from_bytes(data[i:i + 4], "big") for i in (4, 8, 12))
    return torch.frombuffer(bytearray(data[16:16 + n * h * w]), dtype=torch.uint8).reshape(n, 1, h, w)


def image_sets(data_dir):
    """(test pool source, reference set) as uint8 [512, 1, 28, 28]."""
    if data_dir:
        root = Path(data_dir) / "fashion_mnist"
        files = [root / f"{s}-images-idx3-ubyte.gz" for s in ("t10k", "train")]
        if all(f.is_file() for f in files):
            print("images: Fashion-MNIST (test pool, train reference)")
            return tuple(load_idx_images(f)[:512] for f in files)
    print("images: seeded random pixels")
    g = torch.Generator().manual_seed(1)
    return tuple(torch.randint(0, 256, (512, 1, 28, 28), dtype=torch.uint8, generator=g)
                 for _ in range(2))


def timed(fn, warm_up_s, measure_s, min_iters=10):
    """Mean and median seconds per call, after `warm_up_s` of warm-up, over at least
    `min_iters` calls and `measure_s` seconds (criterion's flat sampling, roughly)."""
    start = time.perf_counter()
    while time.perf_counter() - start < warm_up_s:
        fn()
    times = []
    start = time.perf_counter()
    while len(times) < min_iters or time.perf_counter() - start < measure_s:
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return statistics.fmean(times), statistics.median(times), len(times)


def setup(description, default_cases, make_model, extra_args=None):
    """The command line and setup shared by the reference scripts (this one,
    `vae_torch.py` and `pixelcnn_torch.py`): threads, data, the model, and
    `record(group, case, samples, fn)`, which times `fn` and appends its result.
    `extra_args(parser)`, if given, adds a script's own options. Returns `(args, model, test,
    reference, gen, cases, record, results)`."""
    ap = argparse.ArgumentParser(description=description)
    if extra_args:
        extra_args(ap)
    ap.add_argument("--threads", type=int, default=int(os.environ.get("RAYON_NUM_THREADS", 2)))
    ap.add_argument("--data-dir", default=os.environ.get("BNOOD_DATA_DIR"))
    ap.add_argument("--warm-up", type=float, default=2.0, help="seconds per case")
    ap.add_argument("--measure", type=float, default=10.0, help="seconds per case")
    ap.add_argument("--cases", default=default_cases)
    ap.add_argument("--json", help="write the results here")
    args = ap.parse_args()

    torch.set_num_threads(args.threads)
    torch.set_num_interop_threads(1)
    torch.manual_seed(0)
    test, reference = image_sets(args.data_dir)
    model = make_model()
    trainable = sum(p.numel() for p in model.parameters())
    buffers = sum(b.numel() for b in model.buffers())
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, "
          f"{trainable} trainable parameters + {buffers} running statistics = {trainable + buffers}")
    gen = torch.Generator().manual_seed(0)
    results = []
    cases = args.cases.split(",")

    def record(group, case, samples, fn):
        mean, median, iters = timed(fn, args.warm_up, args.measure)
        results.append(dict(group=group, case=case, samples_per_iter=samples,
                            mean_s=mean, median_s=median, iterations=iters,
                            samples_per_s=samples / mean))
        print(f"{group}/torch/{case}: {mean * 1e3:.1f} ms/iter (median {median * 1e3:.1f}, "
              f"{iters} iters), {samples / mean:.1f} samples/s")

    return args, model, test, reference, gen, cases, record, results


def record_train_step(record, group, model, loss_fn):
    """Times one Adam step (lr 1e-3, eps 1e-5 as burn's default; each parameter's gradient
    clipped to norm 100) of `loss_fn()` on a batch of `BATCH`."""
    opt = torch.optim.Adam(model.parameters(), lr=1e-3, eps=1e-5)

    def step():
        opt.zero_grad(set_to_none=True)
        loss = loss_fn()
        loss.backward()
        for p in model.parameters():
            torch.nn.utils.clip_grad_norm_([p], 100.0)
        opt.step()
        return loss.item()

    record(group, f"b={BATCH}", BATCH, step)


def write_results(args, model, results):
    """Writes the results as JSON to `--json`, if given (the form compare.py reads)."""
    if args.json:
        Path(args.json).write_text(json.dumps(dict(
            backend="torch", torch=torch.__version__, threads=torch.get_num_threads(),
            python=platform.python_version(), machine=platform.machine(),
            processor=platform.processor(),
            trainable_parameters=sum(p.numel() for p in model.parameters()),
            running_statistics=sum(b.numel() for b in model.buffers()), results=results),
            indent=2))


def main():
    args, model, test, reference, gen, cases, record, results = setup(
        __doc__.split("\n\n")[0], "score_mixed,score_running,train_step", RealNvp)

    if "score_mixed" in cases:
        for r in RATIOS:
            m = round(r * BATCH)

            def mixed(m=m):
                scores = []
                with torch.inference_mode():
                    for _ in range(POOL_BATCHES):
                        ti = torch.randperm(test.shape[0], generator=gen)[:m]
                        ri = torch.randperm(reference.shape[0], generator=gen)[:BATCH - m]
                        x = torch.cat([test[ti], reference[ri]]).float() + 0.5
                        scores += model.log_prob(x, "batch")[:m].tolist()
                return scores

            record("score_mixed", f"r={r}", POOL_BATCHES * m, mixed)
    if "score_running" in cases:
        x = test[:BATCH].float() + 0.5

        def running():
            with torch.inference_mode():
                return model.log_prob(x, "running").tolist()

        record("score_running", f"b={BATCH}", BATCH, running)
    if "train_step" in cases:
        x = reference[:BATCH].float() + 0.5
        record_train_step(record, "train_step", model, lambda: -model.log_prob(x, "train").mean())
    write_results(args, model, results)


if __name__ == "__main__":
    main()
