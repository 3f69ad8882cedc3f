"""PyTorch reference for the PixelCNN++ cases of `benches/mixed_batch.rs`: the same
PixelCNN++ (the Fashion-MNIST `cpu` preset of the shipped checkpoint
`models/pixelcnn-fmnist-cpu-seed0.bpk`, `PixelCnnConfig::cpu_fmnist()` in
crates/bnood-models/src/pixelcnn.rs), timed the same way, on the CPU.

    python benches/reference/pixelcnn_torch.py --threads 2 --json out.json
    python benches/reference/pixelcnn_torch.py --self-test

Cases (samples per second; one iteration = one forward or training pass of b = 64 rows):
- pixelcnn_score_mixed r=0.1 / r=0.9: a pool of two mixed batches, each of m = round(r*b)
  test rows and b - m reference rows, assembled from uint8 images on the host (pixel +
  0.5), BatchNorm with the batch's own statistics and running averages untouched, no
  autograd; the m test log-likelihoods of each are read back. Throughput counts the 2m test
  samples (as realnvp_torch.py's score_mixed).
- pixelcnn_score_running b=64: log p of 64 images with running BatchNorm statistics.
- pixelcnn_train_step b=64: one Adam step (lr 1e-3, eps 1e-5 as burn's default) on 64
  images, loss = mean -log p (the preset has no dropout), gradient clipped per parameter
  tensor to norm 100 (as burn's `GradientClippingConfig::Norm`), running statistics updated
  with momentum 0.1.

Architecture, mirrored from pixelcnn.rs and pixelcnn/layers.rs (F = 16 filters, R = 1
gated block per up stage, down stages R, R + 1, R + 1 blocks, M = 5 logistics, no dropout;
BatchNorm after every convolution, transposed convolution and 1x1 skip layer in place of
the original's weight normalisation):
- input: floor(x) clamped to 0..255, scaled to [-1, 1], with a channel of ones appended.
- down-shifted conv (u stream): padded kh - 1 rows on top and (kw - 1)/2 columns on each
  side; down-right-shifted (ul stream): kh - 1 on top and kw - 1 on the left. u_init: 2x3
  down conv, output shifted one row down; ul_init: 1x3 down conv shifted down + 2x1
  down-right conv shifted right.
- gated block: h = conv_in(concat_elu(x)) [+ nin(concat_elu(a))]; h = conv_out(concat_elu(h))
  to 2F channels; x + h1 * sigmoid(h2). Kernels 2x3 (u) and 2x2 (ul). Up-pass blocks: u
  without skip, ul with skip u; down-pass: u with the popped up-pass u, ul with
  [u, popped up-pass ul].
- down/upsampling between the 28, 14 and 7 resolutions: stride-2 shifted convs (2x3, 2x2)
  and stride-2 transposed convs (2x3, 2x2; output padding 1, cropped to stay causal).
- output: 1x1 conv of elu(ul) to 3M channels (no BatchNorm): weight logits, means,
  log-scales (clamped at -7) of a discretized logistic mixture per pixel, every bin the
  exact log-space difference of two logistic CDFs, as pixelcnn/mixture.rs.
148,703 values on both sides (trainable parameters + BatchNorm running statistics; the
Rust side's `PixelCnnConfig::parameter_count`, recomputed here by `rust_parameter_count`).
PyTorch's default initialisation is the one bnood uses (uniform +-1/sqrt(fan_in) for
weights and biases, fan_in of a transposed conv from dim 1); seed 0 (speed only).

`--self-test` checks, instead of timing: the parameter count; the untrained model's bits/dim
(about 8 on uniform random pixels, lower on Fashion-MNIST, whose black pixels fall in the
mixture's wide edge bin; bnood's first training step: 5.43); that the 256 probabilities of
a pixel sum to 1; that in running mode the gradient of pixel i's log-probability with
respect to pixel i and every later pixel is exactly zero (and non-zero for some earlier
pixel); and that in batch mode it is not (batch statistics couple the pixels, which the BN
test exploits).

On a machine whose cores are busy with other work, PyTorch's 2 OpenMP threads spin-wait at
the end of each of the forward pass's hundreds of small parallel operations and it runs up
to 10x slower than with 1 thread (OMP_WAIT_POLICY=PASSIVE recovers most of it); compare
against bnood on a quiet machine (docs/performance.md, PixelCNN++ against PyTorch).

Images: Fashion-MNIST when --data-dir (or BNOOD_DATA_DIR) holds the idx files, otherwise
seeded random pixels, as the Rust bench. Prints a table and, with --json, writes the
figures with the torch version, thread count and machine (the format of
realnvp_torch.py, which compare.py reads).
"""

import math
import sys

import torch
import torch.nn as nn
import torch.nn.functional as F

from realnvp_torch import (BATCH, POOL_BATCHES, RATIOS, BatchNorm, record_train_step, setup,
                           write_results)

IMAGE = (1, 28, 28)
FILTERS = 16
BLOCKS = 1  # per up stage; the down stages have R, R + 1, R + 1
MIXTURES = 5
STAGES = 3
MIN_LOG_SCALE = -7.0
HALF_BIN = 1.0 / 255.0
SERIES_BELOW = 0.5


def rust_parameter_count(f=FILTERS, r=BLOCKS, m=MIXTURES, c=IMAGE[0]):
    """`PixelCnnConfig::parameter_count` of pixelcnn.rs, transcribed (BatchNorm: 4 values
    per channel, weight, bias, running mean and variance)."""
    c_in = c + 1

    def conv(cin, cout, k):
        return cin * cout * k + cout

    def normed(cin, cout, k):
        return conv(cin, cout, k) + 4 * cout

    def block(k, s):
        skip = normed(2 * s * f, f, 1) if s else 0
        return normed(2 * f, f, k) + skip + normed(2 * f, 2 * f, k)

    up = r * STAGES * (block(6, 0) + block(4, 1))
    down = (r + 2 * (r + 1)) * (block(6, 1) + block(4, 2))
    resample = normed(f, f, 6) + normed(f, f, 4)
    inputs = normed(c_in, f, 6) + normed(c_in, f, 3) + normed(c_in, f, 2)
    return inputs + up + down + resample * 2 * (STAGES - 1) + conv(f, 3 * m, 1)


class ShiftedConv(nn.Module):
    """A causal ('down' or 'down_right') convolution, BatchNorm, optional output shift
    ('down': one zero row on top; 'right': one zero column on the left)."""

    def __init__(self, causal, cin, cout, kernel, stride=1, shift=None):
        super().__init__()
        kh, kw = kernel
        side = (kw - 1) // 2
        # F.pad order: left, right, top, bottom.
        self.pad = (side, side, kh - 1, 0) if causal == "down" else (kw - 1, 0, kh - 1, 0)
        self.conv = nn.Conv2d(cin, cout, kernel, stride)
        self.norm = BatchNorm(cout)
        self.shift = shift

    def forward(self, x, mode):
        y = self.norm(self.conv(F.pad(x, self.pad)), mode)
        if self.shift == "down":
            return F.pad(y[:, :, :-1], (0, 0, 1, 0))
        if self.shift == "right":
            return F.pad(y[:, :, :, :-1], (1, 0, 0, 0))
        return y


class ShiftedDeconv(nn.Module):
    """Causal stride-2 transposed conv (2x3 'down', 2x2 'down_right'), output padding 1,
    cropped so that output (r, c) sees inputs at or above (and at or left of) it; BatchNorm."""

    def __init__(self, causal, cin, cout):
        super().__init__()
        self.kernel = (2, 3) if causal == "down" else (2, 2)
        self.causal = causal
        self.deconv = nn.ConvTranspose2d(cin, cout, self.kernel, 2, output_padding=1)
        self.norm = BatchNorm(cout)

    def forward(self, x, mode):
        y = self.deconv(x)
        h, w = y.shape[2:]
        kh, kw = self.kernel
        y = y[:, :, :h - kh + 1]
        if self.causal == "down":
            side = (kw - 1) // 2
            y = y[:, :, :, side:w - side]
        else:
            y = y[:, :, :, :w - kw + 1]
        return self.norm(y, mode)


class Nin(nn.Module):
    """1x1 convolution and BatchNorm."""

    def __init__(self, cin, cout):
        super().__init__()
        self.conv = nn.Conv2d(cin, cout, 1)
        self.norm = BatchNorm(cout)

    def forward(self, x, mode):
        return self.norm(self.conv(x), mode)


def concat_elu(x):
    return F.elu(torch.cat([x, -x], 1))


class GatedResnet(nn.Module):
    def __init__(self, causal, f, skip_streams):
        super().__init__()
        k = (2, 3) if causal == "down" else (2, 2)
        self.conv_in = ShiftedConv(causal, 2 * f, f, k)
        self.skip = Nin(2 * skip_streams * f, f) if skip_streams else None
        self.conv_out = ShiftedConv(causal, 2 * f, 2 * f, k)

    def forward(self, x, a, mode):
        h = self.conv_in(concat_elu(x), mode)
        if self.skip is not None:
            h = h + self.skip(concat_elu(a), mode)
        h = self.conv_out(concat_elu(h), mode)
        h1, h2 = h.chunk(2, 1)
        return x + h1 * torch.sigmoid(h2)


class Stage(nn.Module):
    def __init__(self, blocks, f, u_skip, ul_skip):
        super().__init__()
        self.u = nn.ModuleList(GatedResnet("down", f, u_skip) for _ in range(blocks))
        self.ul = nn.ModuleList(GatedResnet("down_right", f, ul_skip) for _ in range(blocks))


class PixelCnn(nn.Module):
    """The `cpu` preset PixelCNN++ of pixelcnn.rs (16 filters, 1 block per up stage, 5
    logistics), built in the order pixelcnn.rs builds it."""

    def __init__(self, image=IMAGE, f=FILTERS, r=BLOCKS, m=MIXTURES):
        super().__init__()
        c_in = image[0] + 1
        self.mixtures = m
        self.u_init = ShiftedConv("down", c_in, f, (2, 3), shift="down")
        self.ul_init_above = ShiftedConv("down", c_in, f, (1, 3), shift="down")
        self.ul_init_left = ShiftedConv("down_right", c_in, f, (2, 1), shift="right")
        self.up = nn.ModuleList(Stage(r, f, 0, 1) for _ in range(STAGES))
        self.down = nn.ModuleList(Stage(n, f, 1, 2) for n in (r, r + 1, r + 1))
        self.downsample = nn.ModuleList(nn.ModuleDict(dict(
            u=ShiftedConv("down", f, f, (2, 3), 2),
            ul=ShiftedConv("down_right", f, f, (2, 2), 2))) for _ in range(STAGES - 1))
        self.upsample = nn.ModuleList(nn.ModuleDict(dict(
            u=ShiftedDeconv("down", f, f), ul=ShiftedDeconv("down_right", f, f)))
            for _ in range(STAGES - 1))
        self.output = nn.Conv2d(f, 3 * m, 1)

    def network(self, scaled, mode):
        """[N, 1, H, W] on the [-1, 1] scale -> mixture parameters [N, 3M, H, W]."""
        x = torch.cat([scaled, torch.ones_like(scaled)], 1)
        u_list = [self.u_init(x, mode)]
        ul_list = [self.ul_init_above(x, mode) + self.ul_init_left(x, mode)]
        for i, stage in enumerate(self.up):
            for u_block, ul_block in zip(stage.u, stage.ul):
                u = u_block(u_list[-1], None, mode)
                ul = ul_block(ul_list[-1], u, mode)
                u_list.append(u)
                ul_list.append(ul)
            if i < len(self.downsample):
                u_list.append(self.downsample[i]["u"](u_list[-1], mode))
                ul_list.append(self.downsample[i]["ul"](ul_list[-1], mode))
        u, ul = u_list.pop(), ul_list.pop()
        for i, stage in enumerate(self.down):
            for u_block, ul_block in zip(stage.u, stage.ul):
                u = u_block(u, u_list.pop(), mode)
                ul = ul_block(ul, torch.cat([u, ul_list.pop()], 1), mode)
            if i < len(self.upsample):
                u = self.upsample[i]["u"](u, mode)
                ul = self.upsample[i]["ul"](ul, mode)
        assert not u_list and not ul_list
        return self.output(F.elu(ul))

    def pixel_log_probs_of_scaled(self, scaled, mode, pixels=None):
        """ln P(pixel) [N, 1, H, W] of the pixels `pixels` (default: `scaled`) under the
        mixtures the network gives for `scaled`."""
        out = self.network(scaled, mode)
        return mixture_log_prob(out, self.mixtures, scaled if pixels is None else pixels)

    def log_prob(self, x, mode):
        """ln p(x) [N] (nats) of dequantised images x [N, 1, H, W] on [0, 256)."""
        scaled = torch.floor(x).clamp(0, 255) / 127.5 - 1
        return self.pixel_log_probs_of_scaled(scaled, mode).flatten(1).sum(1)


def log_one_minus_exp_neg(log_delta):
    """ln(1 - e^-d) for d = e^log_delta > 0, as mixture.rs (series below d = 0.5)."""
    delta = log_delta.clamp(max=10.0).exp()
    d2 = delta * delta
    series = log_delta - 0.5 * delta + d2 / 24 - d2 * d2 / 2880
    direct = torch.log(1 - torch.exp(-delta.clamp(min=SERIES_BELOW)))
    return torch.where(delta < SERIES_BELOW, series, direct)


def mixture_log_prob(out, m, pixels):
    """mixture.rs `LogisticMixture::log_prob`: ln P(pixel) [N, 1, H, W] for the network's
    output [N, 3M, H, W] and the pixels [N, 1, H, W] on the [-1, 1] scale."""
    logits, means, log_scales = out[:, :m], out[:, m:2 * m], out[:, 2 * m:3 * m]
    log_scales = log_scales.clamp(min=MIN_LOG_SCALE)
    inv_scale = torch.exp(-log_scales)
    centred = pixels - means
    upper = (centred + HALF_BIN) * inv_scale
    lower = (centred - HALF_BIN) * inv_scale
    first_bin = -F.softplus(-upper)
    last_bin = -F.softplus(lower)
    log_delta = math.log(2 * HALF_BIN) - log_scales
    inner = upper - F.softplus(upper) - F.softplus(lower) + log_one_minus_exp_neg(log_delta)
    per_component = torch.where(pixels < -1 + HALF_BIN, first_bin,
                                torch.where(pixels > 1 - HALF_BIN, last_bin, inner))
    return torch.logsumexp(F.log_softmax(logits, 1) + per_component, 1, keepdim=True)


def self_test(model, test, reference):
    """Checks instead of timing (see the module doc); exits non-zero on a failure."""
    failures = []

    def check(ok, what):
        print(f"{'ok  ' if ok else 'FAIL'} {what}")
        if not ok:
            failures.append(what)

    trainable = sum(p.numel() for p in model.parameters())
    buffers = sum(b.numel() for b in model.buffers())
    want = rust_parameter_count()
    check(trainable + buffers == want,
          f"{trainable} trainable + {buffers} running statistics = {trainable + buffers}, "
          f"PixelCnnConfig::cpu_fmnist().parameter_count() = {want}")

    # Untrained bits/dim: about 8 (a uniform 256-way guess) on uniform random pixels; lower
    # on Fashion-MNIST, whose many black pixels fall in the edge bin (-inf, -1 + 1/255],
    # which holds a good share of an untrained mixture's mass (bnood's first training step
    # of this preset on Fashion-MNIST, seed 0, batch statistics: 5.43 bits/dim).
    d = math.prod(IMAGE)
    g = torch.Generator().manual_seed(2)
    uniform = torch.randint(0, 256, (BATCH, *IMAGE), dtype=torch.uint8, generator=g)
    sets = [("uniform random", uniform, 7.0, 10.0), ("test", test, 4.0, 10.0),
            ("reference", reference, 4.0, 10.0)]
    with torch.inference_mode():
        for mode in ("running", "batch"):
            for name, images, lo, hi in sets:
                lp = model.log_prob(images[:BATCH].float() + 0.5, mode)
                bpd = (-lp / (d * math.log(2))).mean().item()
                check(math.isfinite(bpd) and lo < bpd < hi,
                      f"untrained bits/dim, {mode} mode, {name} images: {bpd:.3f} "
                      f"(expect {lo:g}-{hi:g})")

        # The 256 probabilities of a pixel sum to 1, for the network's own mixtures.
        out = model.network(test[:2].float() / 127.5 - 1, "running")
        values = (torch.arange(256.0) / 127.5 - 1).view(256, 1, 1, 1)
        lps = torch.stack([mixture_log_prob(out[i:i + 1].expand(256, -1, -1, -1), MIXTURES,
                                            values.expand(256, 1, *IMAGE[1:]))
                           for i in range(2)])  # [2, 256, 1, H, W]
        total = torch.logsumexp(lps.double(), 1).exp()
        err = (total - 1).abs().max().item()
        check(err < 1e-4, f"sum over the 256 values of P(pixel) - 1: max |error| {err:.2e}")
        # One logistic with extreme log-scales: finite, and its 256 bins sum to 1.
        for ls in (-20.0, 0.0, 20.0):
            params = torch.tensor([0.0, 0.3, ls]).view(1, 3, 1, 1).expand(256, 3, 1, 1)
            p = mixture_log_prob(params, 1, values)
            s = p.double().exp().sum().item()
            check(bool(torch.isfinite(p).all()) and abs(s - 1) < 1e-3,
                  f"one logistic, log-scale {ls}: finite, 256 bins sum to {s:.5f}")

    # Causality by gradients, in running mode: copy i of an image scores its pixel i only,
    # so one backward pass per chunk of copies gives d ln P(pixel i) / d pixel j for all j;
    # it must be exactly 0 for j >= i, and non-zero for some j < i (i > 0).
    h, w = IMAGE[1:]
    pixels = h * w
    base = test[:1].float() / 127.5 - 1
    later, no_past = 0.0, []
    chunk = 112
    for start in range(0, pixels, chunk):
        idx = torch.arange(start, min(start + chunk, pixels))
        scaled = base.expand(len(idx), -1, -1, -1).clone().requires_grad_(True)
        per_pixel = model.pixel_log_probs_of_scaled(scaled, "running", pixels=scaled.detach())
        select = torch.zeros(len(idx), pixels)
        select[torch.arange(len(idx)), idx] = 1
        (per_pixel.flatten(1) * select).sum().backward()
        grad = scaled.grad.flatten(1).abs()
        for k, i in enumerate(idx.tolist()):
            later = max(later, grad[k, i:].max().item())
            if i > 0 and grad[k, :i].max().item() == 0:
                no_past.append(i)
    model.zero_grad(set_to_none=True)
    check(later == 0.0, f"running mode, all {pixels} pixels: max |d ln P(pixel i) / d pixel "
          f"j| over j >= i = {later:.1e}")
    check(not no_past, f"running mode: every pixel i > 0 depends on an earlier pixel "
          f"(none on no earlier one: {no_past[:10]})")

    # Batch mode: batch statistics make pixel 0 depend on its own later pixels.
    scaled = (test[:8].float() / 127.5 - 1).requires_grad_(True)
    model.zero_grad(set_to_none=True)
    per_pixel = model.pixel_log_probs_of_scaled(scaled, "batch", pixels=scaled.detach())
    per_pixel[0, 0, 0, 0].backward()
    g = scaled.grad
    own_later = g[0].flatten()[1:].abs().max().item()
    others = g[1:].abs().max().item()
    check(own_later > 0 and others > 0,
          f"batch mode: pixel 0 of image 0 depends on its own later pixels "
          f"(max |grad| {own_later:.1e}) and on other images ({others:.1e})")

    print("self-test:", "FAILED " + "; ".join(failures) if failures else "passed")
    return not failures


def main():
    args, model, test, reference, gen, cases, record, results = setup(
        __doc__.split("\n\n")[0],
        "pixelcnn_score_mixed,pixelcnn_score_running,pixelcnn_train_step", PixelCnn,
        lambda ap: ap.add_argument("--self-test", action="store_true",
                                   help="check the model instead of timing it"))
    if args.self_test:
        sys.exit(0 if self_test(model, test, reference) else 1)

    if "pixelcnn_score_mixed" in cases:
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

            record("pixelcnn_score_mixed", f"r={r}", POOL_BATCHES * m, mixed)
    if "pixelcnn_score_running" in cases:
        x = test[:BATCH].float() + 0.5

        def running():
            with torch.inference_mode():
                return model.log_prob(x, "running").tolist()

        record("pixelcnn_score_running", f"b={BATCH}", BATCH, running)
    if "pixelcnn_train_step" in cases:
        x = reference[:BATCH].float() + 0.5
        record_train_step(record, "pixelcnn_train_step", model,
                          lambda: -model.log_prob(x, "train").mean())
    write_results(args, model, results)


if __name__ == "__main__":
    main()
