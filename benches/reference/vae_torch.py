"""PyTorch reference for the VAE cases of `benches/mixed_batch.rs`: the same VAE (the
Fashion-MNIST `cpu` preset of the shipped checkpoint `models/vae-fmnist-cpu-seed0.bpk`,
`VaeConfig::cpu_fmnist()` in crates/bnood-models/src/vae.rs), timed the same way, on the CPU.

    python benches/reference/vae_torch.py --threads 2 --json out.json

Cases (samples per second; one iteration = one forward or training pass of b = 64 images):
- vae_score_batch b=64: the importance-weighted log p(x) (K = 16) of 64 images with
  BatchNorm on the batch's own statistics (running averages untouched), no autograd; the
  generator runs all 64 * 16 = 1024 latent samples as one batch; read back to the host.
- vae_score_running b=64: the same with running BatchNorm statistics (eval mode).
- vae_train_step b=64: one Adam step (lr 1e-3, eps 1e-5 as burn's default) on 64 images,
  loss = mean negative ELBO (one reparameterised sample per image, closed-form KL),
  gradient clipped per parameter tensor to norm 100 (as burn's
  `GradientClippingConfig::Norm`), running statistics updated with momentum 0.1.

Architecture, mirrored from vae.rs (paper Appendix C.1 / Table 3 with the `cpu` widths),
input floor(x) / 127.5 - 1, every "BN" layer followed by BatchNorm then ReLU:
- inference network: conv 5x5 (stride 1, 2, 1, 2, 1; padding 2) with 8, 8, 8, 16, 16
  channels, BN; conv 7x7 (stride 1, padding 0) to 64 channels at 1x1, BN; fully connected
  64 -> 2 * 64 (mu, ln sigma^2); latent dim 64.
- generator: fully connected 64 -> 16 * 7 * 7, BN over the 16 maps; deconv 5x5 (stride 1,
  2, 1, 2, 1, 1; padding 2; output padding 1 at stride 2) with 16, 16, 16, 8, 8, 8
  channels, BN; deconv 5x5 8 -> 64, ReLU (no BN); deconv 1x1 64 -> 256 (no BN): 256 logits
  per pixel, a 256-way categorical over the integer pixel floor(x).
- log p(x) ~ logsumexp_k(log p(x|z_k) + log p(z_k) - log q(z_k|x)) - ln K, z_k = mu +
  sigma * eps_k (the -L/2 ln 2 pi terms cancel). As vae.rs, the last two deconvolutions
  and the categorical log-likelihood run on chunks of at most 2**25 values per tensor
  (167 samples) to bound memory; this changes no number.
The noise eps is drawn with torch.randn (bnood draws it on the host from ChaCha8; both
are a negligible part of the cost). PyTorch's default initialisation, seed 0 (speed only).

Images: Fashion-MNIST when --data-dir (or BNOOD_DATA_DIR) holds the idx files, otherwise
seeded random pixels, as the Rust bench. Prints a table and, with --json, writes the
figures with the torch version, thread count and machine (the format of
realnvp_torch.py, which compare.py reads).
"""

import math

import torch
import torch.nn as nn
import torch.nn.functional as F

from realnvp_torch import BATCH, BatchNorm, record_train_step, setup, write_results

PIXEL_LEVELS = 256
IW_SAMPLES = 16
LATENT = 64
IMAGE = (1, 28, 28)
ENCODER_CHANNELS = (8, 8, 8, 16, 16, 64)
DECODER_CHANNELS = (16, 16, 16, 8, 8, 8, 64)
ENC_STRIDES = (1, 2, 1, 2, 1, 1)
DEC_STRIDES = (1, 2, 1, 2, 1, 1, 1, 1)
KERNEL = 5
TAIL_CHUNK_VALUES = 1 << 25  # as vae.rs


class Vae(nn.Module):
    """The `cpu` preset VAE of vae.rs (Table 3 layout, quarter widths)."""

    def __init__(self, image=IMAGE, enc=ENCODER_CHANNELS, dec=DECODER_CHANNELS, latent=LATENT):
        super().__init__()
        c, h, w = image
        self.image, self.latent, self.d0 = image, latent, dec[0]
        self.enc_convs, self.enc_norms = nn.ModuleList(), nn.ModuleList()
        cin = c
        for i, cout in enumerate(enc):
            last = i == 5
            k = (h // 4, w // 4) if last else KERNEL
            self.enc_convs.append(nn.Conv2d(cin, cout, k, ENC_STRIDES[i], 0 if last else 2))
            self.enc_norms.append(BatchNorm(cout))
            cin = cout
        self.to_latent = nn.Linear(enc[5], 2 * latent)
        self.from_latent = nn.Linear(latent, dec[0] * (h // 4) * (w // 4))
        self.from_latent_norm = BatchNorm(dec[0])
        self.dec_convs, self.dec_norms = nn.ModuleList(), nn.ModuleList()
        cin = dec[0]
        for i in range(6):
            s = DEC_STRIDES[i]
            self.dec_convs.append(nn.ConvTranspose2d(cin, dec[i], KERNEL, s, 2, int(s == 2)))
            self.dec_norms.append(BatchNorm(dec[i]))
            cin = dec[i]
        self.hidden = nn.ConvTranspose2d(cin, dec[6], KERNEL, 1, 2)
        self.logits = nn.ConvTranspose2d(dec[6], PIXEL_LEVELS * c, 1)

    def encode(self, x, mode):
        h = torch.floor(x).clamp(0, 255) / 127.5 - 1
        for conv, norm in zip(self.enc_convs, self.enc_norms):
            h = F.relu(norm(conv(h), mode))
        out = self.to_latent(h.flatten(1))
        return out[:, :self.latent], out[:, self.latent:]

    def decode_trunk(self, z, mode):
        _, h, w = self.image
        x = self.from_latent(z).reshape(z.shape[0], self.d0, h // 4, w // 4)
        x = F.relu(self.from_latent_norm(x, mode))
        for conv, norm in zip(self.dec_convs, self.dec_norms):
            x = F.relu(norm(conv(x), mode))
        return x

    def log_px(self, h, pixels):
        """ln p(x|z) [M] from the generator's layer-6 output h and integer pixels
        [M, C, H, W] (int64), in chunks of samples, as vae.rs."""
        c, hh, ww = self.image
        m = h.shape[0]
        widest = max(PIXEL_LEVELS * c, self.hidden.out_channels)
        chunk = max(TAIL_CHUNK_VALUES // (widest * hh * ww), 1)
        parts = []
        for s in range(0, m, chunk):
            logits = self.logits(F.relu(self.hidden(h[s:s + chunk])))
            logits = logits.reshape(-1, PIXEL_LEVELS, c, hh, ww)
            nll = F.cross_entropy(logits, pixels[s:s + chunk], reduction="none")
            parts.append(-nll.flatten(1).sum(1))
        return torch.cat(parts)

    def log_prob(self, x, mode, k=IW_SAMPLES, gen=None):
        """Importance-weighted estimate of ln p(x) [N] with k samples."""
        n = x.shape[0]
        eps = torch.randn(n, k, self.latent, generator=gen)
        mu, logvar = self.encode(x, mode)
        z = mu.unsqueeze(1) + (0.5 * logvar).exp().unsqueeze(1) * eps
        log_pz = -0.5 * z.pow(2).sum(2)
        log_qz = -0.5 * eps.pow(2).sum(2) - 0.5 * logvar.sum(1, keepdim=True)
        h = self.decode_trunk(z.reshape(n * k, self.latent), mode)
        pixels = torch.floor(x).clamp(0, 255).long().repeat_interleave(k, 0)
        log_w = self.log_px(h, pixels).reshape(n, k) + log_pz - log_qz
        return torch.logsumexp(log_w, 1) - math.log(k)

    def negative_elbo(self, x, mode, gen=None):
        """-ln p(x|z) + KL(q(z|x) || N(0, I)) [N], one reparameterised sample."""
        eps = torch.randn(x.shape[0], self.latent, generator=gen)
        mu, logvar = self.encode(x, mode)
        z = mu + (0.5 * logvar).exp() * eps
        pixels = torch.floor(x).clamp(0, 255).long()
        log_px = self.log_px(self.decode_trunk(z, mode), pixels)
        kl = 0.5 * (mu.pow(2) + logvar.exp() - logvar - 1).sum(1)
        return kl - log_px


def main():
    args, model, test, reference, gen, cases, record, results = setup(
        __doc__.split("\n\n")[0], "vae_score_batch,vae_score_running,vae_train_step", Vae)

    x_test = test[:BATCH].float() + 0.5
    for group, mode in (("vae_score_batch", "batch"), ("vae_score_running", "running")):
        if group in cases:
            def score(mode=mode):
                with torch.inference_mode():
                    return model.log_prob(x_test, mode, gen=gen).tolist()

            record(group, f"b={BATCH}", BATCH, score)
    if "vae_train_step" in cases:
        x = reference[:BATCH].float() + 0.5
        record_train_step(record, "vae_train_step", model,
                          lambda: model.negative_elbo(x, "train", gen=gen).mean())
    write_results(args, model, results)

if __name__ == "__main__":
    main()
