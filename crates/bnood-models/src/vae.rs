//! A convolutional VAE (Kingma & Welling 2013; layout of van den Berg et al. 2018) as
//! configured in the paper's Appendix C.1 / Table 3, with BatchNorm after every convolution
//! and deconvolution except the last two deconvolutions, and a per-pixel 256-way
//! categorical likelihood.
//!
//! ## Architecture (`[C, H, W]`, `H` and `W` divisible by 4; widths of [`VaeConfig::paper`])
//! Every layer marked BN is followed by BatchNorm then ReLU (the paper names no activation;
//! its reference implementation uses gated convolutions — we use ReLU).
//!
//! Inference network `q(z|x)`, input `floor(x)/127.5 − 1`:
//!
//! | layer | channels | kernel | stride | padding | output |
//! |---|---|---|---|---|---|
//! | 1 conv, BN | 32c | 5 | 1 | 2 | H × W |
//! | 2 conv, BN | 32c | 5 | 2 | 2 | H/2 × W/2 |
//! | 3 conv, BN | 32c | 5 | 1 | 2 | H/2 × W/2 |
//! | 4 conv, BN | 64c | 5 | 2 | 2 | H/4 × W/4 |
//! | 5 conv, BN | 64c | 5 | 1 | 2 | H/4 × W/4 |
//! | 6 conv, BN | 256 | k = W/4 (H/4 × W/4) | 1 | 0 | 1 × 1 |
//! | fully connected | 2·latent_dim | | | | μ, ln σ² |
//!
//! Generator `p(x|z)`:
//!
//! | layer | channels | kernel | stride | padding | output padding | output |
//! |---|---|---|---|---|---|---|
//! | fully connected, BN | 64c × H/4 × W/4 | | | | | H/4 × W/4 |
//! | 1 deconv, BN | 64c | 5 | 1 | 2 | 0 | H/4 × W/4 |
//! | 2 deconv, BN | 64c | 5 | 2 | 2 | 1 | H/2 × W/2 |
//! | 3 deconv, BN | 64c | 5 | 1 | 2 | 0 | H/2 × W/2 |
//! | 4 deconv, BN | 32c | 5 | 2 | 2 | 1 | H × W |
//! | 5 deconv, BN | 32c | 5 | 1 | 2 | 0 | H × W |
//! | 6 deconv, BN | 32c | 5 | 1 | 2 | 0 | H × W |
//! | 7 deconv, ReLU (no BN) | 256 | 5 | 1 | 2 | 0 | H × W |
//! | 8 deconv (no BN) | 256c | 1 | 1 | 0 | 0 | H × W |
//!
//! Our readings of Table 3: the table starts the generator with a 5×5 deconvolution but says
//! nothing about how `z` becomes a spatial map; we use a fully connected layer from `z` to a
//! `64c × H/4 × W/4` map, followed by BatchNorm (over its 64c channels) and ReLU, as the
//! reference implementation's first (k×k) deconvolution from a 1×1 map would have. Layer 6
//! of the inference network uses a `H/4 × W/4` kernel (`k × k` for square images), so its
//! output is 1×1. Stride-2 deconvolutions use output padding 1 so they double the size.
//!
//! Layer 8 gives `256·C` logits per pixel position, read as `[N, 256, C, H, W]` (channel
//! `j = class·C + c`), and `p(x|z) = Π softmax(logits)[x]` over the 256 pixel values. With
//! `x` dequantised, the integer pixel is `floor(x)` (clamped to 0..=255): the discrete
//! probability equals the density on the 0–256 scale, so bits/dim compare with RealNVP's.
//!
//! ## Likelihood and training objective
//! - [`LikelihoodModel::training_loss`]: the negative ELBO per sample in nats,
//!   `−ln p(x|z) + KL(q(z|x) ‖ N(0, I))`, one reparameterised sample `z = μ + σ·ε` and the
//!   KL in closed form.
//! - [`LikelihoodModel::log_prob`]: the importance-weighted estimate (Burda et al. 2015)
//!   `ln (1/K Σ_k p(x|z_k) p(z_k) / q(z_k|x))`, `z_k ~ q(z|x)`, with log-sum-exp; `K =`
//!   [`VaeConfig::iw_samples`]. It is a stochastic lower bound of `ln p(x)` whose gap
//!   shrinks as K grows (K = 1 is the ELBO with a sampled KL).
//!
//! ## BatchNorm statistics
//! The inference network sees the N images of the batch. The generator runs on all `N·K`
//! latent samples as **one batch**, so in `Batch`/`Train` mode its BatchNorm layers
//! normalise with the statistics of all `N·K` decoder inputs (K per image). Layers 7 and 8
//! have no BatchNorm and are evaluated in chunks of samples to bound memory; this does not
//! change any number. The inference network's layer 6 has a 1×1 output, so batch
//! statistics need at least 2 images.
//!
//! ## Noise and determinism
//! ε is drawn on the host from ChaCha8 streams, **one stream per image**, seeded from a
//! seed and a hash of that image's own values, so the same inputs and seed give the same
//! numbers on every backend, and in `Running` mode an image's estimate does not depend on
//! its position or neighbours in the batch:
//! - `log_prob`: seed [`VaeConfig::eval_seed`], hash of the integer pixels `floor(x)` (so
//!   the estimate is a function of the discrete image only).
//! - `training_loss`: seed [`VaeConfig::seed`], hash of the raw `f32` bits of the
//!   dequantised `x`. The training loop draws fresh dequantisation noise every step, so ε
//!   differs between steps even for the same image; with a fixed dequantisation (e.g. +0.5)
//!   an image would get the same ε every epoch. [`Vae::negative_elbo`] takes the seed
//!   explicitly.
//!
//! This reads the batch back to the host once per call.

use burn::module::Module;
use burn::nn::Linear;
use burn::nn::conv::{Conv2d, ConvTranspose2d};
use burn::tensor::activation::relu;
use burn::tensor::ops::ConvOptions;
use burn::tensor::{Device, Tensor, TensorData};
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};

use bnood_norm::{BatchNorm, BatchNormConfig, StatsMode};

use crate::categorical::{self, Pixels};
use crate::init::{conv_transpose2d, conv2d_strided, linear, splitmix64, standard_normals};
use crate::{LikelihoodModel, ModelError, check_shape};

/// Number of values of a pixel: the likelihood is a 256-way categorical per pixel.
pub const PIXEL_LEVELS: usize = 256;

/// Layers 7–8 of the generator and the log-softmax are evaluated on chunks of samples
/// holding at most about this many values per intermediate tensor (128 MiB in f32).
const TAIL_CHUNK_VALUES: usize = 1 << 25;

const EVAL_DOMAIN: u64 = 0x5641_455f_4556_414c; // "VAE_EVAL"
const TRAIN_DOMAIN: u64 = 0x5641_455f_5452_4e47; // "VAE_TRNG"

/// Architecture, likelihood estimator and seeds of a [`Vae`]. Serialisable, so checkpoints
/// can carry it and refuse a mismatching architecture.
///
/// Kernels, strides and paddings follow Table 3 and are not configurable; the widths are
/// ([`encoder_layers`](Self::encoder_layers) and [`decoder_layers`](Self::decoder_layers)
/// list the full layer table).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct VaeConfig {
    /// Image shape `[C, H, W]`; `H` and `W` must be divisible by 4.
    pub image_shape: [usize; 3],
    /// Output channels of the inference network's 6 convolutions (paper:
    /// `[32c, 32c, 32c, 64c, 64c, 256]`).
    pub encoder_channels: [usize; 6],
    /// Output channels of the generator's deconvolutions 1–7 (paper:
    /// `[64c, 64c, 64c, 32c, 32c, 32c, 256]`); the fully connected layer from `z` produces
    /// `decoder_channels[0]` maps, and layer 8 always has `256·C` outputs (the logits).
    pub decoder_channels: [usize; 7],
    /// Dimension of `z`. The paper does not give it; 64 is the default of the VAE code of
    /// van den Berg et al. (2018), whose architecture Table 3 reproduces.
    pub latent_dim: usize,
    /// K, importance samples of the `log_prob` estimate (≥ 1). Default 16: the bound's gap
    /// to `ln p(x)` shrinks like O(1/K) while the cost of `log_prob` grows like K
    /// generator passes; 16 is a common compromise (Burda et al. report K ∈ {1, 5, 50}).
    pub iw_samples: usize,
    /// BatchNorm momentum (PyTorch default 0.1).
    pub bn_momentum: f64,
    /// BatchNorm ε (PyTorch default 1e-5).
    pub bn_epsilon: f64,
    /// Seed of the weight initialisation, also mixed into the training noise.
    pub seed: u64,
    /// Seed of the importance-sampling noise of `log_prob`.
    pub eval_seed: u64,
}

/// One convolution or deconvolution of the layer table.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct LayerSpec {
    /// Input channels.
    pub in_channels: usize,
    /// Output channels.
    pub out_channels: usize,
    /// Kernel `[height, width]`.
    pub kernel: [usize; 2],
    /// Stride (both directions).
    pub stride: usize,
    /// Zero padding (both directions, both sides).
    pub padding: usize,
    /// Output padding of a transposed convolution (0 for convolutions).
    pub output_padding: usize,
    /// Whether BatchNorm follows the layer.
    pub batch_norm: bool,
}

const KERNEL: usize = 5;
const ENC_STRIDES: [usize; 6] = [1, 2, 1, 2, 1, 1];
const DEC_STRIDES: [usize; 8] = [1, 2, 1, 2, 1, 1, 1, 1];

impl VaeConfig {
    /// The paper's VAE (Table 3) for images of shape `[c, h, w]`: inference widths
    /// `32c, 32c, 32c, 64c, 64c, 256`, generator widths `64c, 64c, 64c, 32c, 32c, 32c, 256,
    /// 256c`; latent 64, K = 16.
    pub fn paper(image_shape: [usize; 3]) -> Self {
        let c = image_shape[0];
        Self {
            image_shape,
            encoder_channels: [32 * c, 32 * c, 32 * c, 64 * c, 64 * c, 256],
            decoder_channels: [64 * c, 64 * c, 64 * c, 32 * c, 32 * c, 32 * c, 256],
            latent_dim: 64,
            iw_samples: 16,
            bn_momentum: 0.1,
            bn_epsilon: 1e-5,
            seed: 0,
            eval_seed: 0,
        }
    }

    /// The paper's Fashion-MNIST VAE: [`paper`](Self::paper) for `[1, 28, 28]` (k = 7).
    pub fn paper_fmnist() -> Self {
        Self::paper([1, 28, 28])
    }

    /// A Fashion-MNIST VAE sized for a 2-core CPU: the paper's layout with a quarter of the
    /// widths (8/16 instead of 32/64, 64 instead of 256 in inference layer 6) and 64
    /// instead of 256 channels in generator layer 7 (the most expensive layer, together
    /// with the 256-logit layer 8, whose width is fixed). About 10× fewer multiply-adds per
    /// image than [`paper_fmnist`](Self::paper_fmnist). K = 16 as in the paper preset.
    pub fn cpu_fmnist() -> Self {
        Self::cpu([1, 28, 28])
    }

    /// The `cpu` layout for images of shape `[c, h, w]`: [`cpu_fmnist`](Self::cpu_fmnist)'s
    /// widths times `c`, except the fixed 64 of inference layer 6 and generator layer 7 (as
    /// [`paper`](Self::paper) scales the paper's).
    pub fn cpu(image_shape: [usize; 3]) -> Self {
        let c = image_shape[0];
        Self {
            image_shape,
            encoder_channels: [8 * c, 8 * c, 8 * c, 16 * c, 16 * c, 64],
            decoder_channels: [16 * c, 16 * c, 16 * c, 8 * c, 8 * c, 8 * c, 64],
            ..Self::paper(image_shape)
        }
    }

    /// A preset by name: `paper` (or `paper-fmnist`), `cpu` (or `cpu-fmnist`).
    ///
    /// # Errors
    /// [`ModelError::InvalidConfig`] naming the known presets.
    pub fn preset(name: &str) -> Result<Self, ModelError> {
        match name {
            "paper" | "paper-fmnist" => Ok(Self::paper_fmnist()),
            "cpu" | "cpu-fmnist" => Ok(Self::cpu_fmnist()),
            other => Err(ModelError::InvalidConfig(format!(
                "unknown VAE preset `{other}`: use paper or cpu"
            ))),
        }
    }

    /// Returns the config with another initialisation (and training-noise) seed.
    pub fn with_seed(mut self, seed: u64) -> Self {
        self.seed = seed;
        self
    }

    /// Returns the config with another seed for the `log_prob` noise.
    pub fn with_eval_seed(mut self, eval_seed: u64) -> Self {
        self.eval_seed = eval_seed;
        self
    }

    /// Returns the config with another number of importance samples K.
    pub fn with_iw_samples(mut self, k: usize) -> Self {
        self.iw_samples = k;
        self
    }

    /// The 6 convolutions of the inference network (Table 3, upper half). The fully
    /// connected layer `256 → 2·latent_dim` that follows is not listed.
    pub fn encoder_layers(&self) -> Vec<LayerSpec> {
        let [c, h, w] = self.image_shape;
        let mut cin = c;
        (0..6)
            .map(|i| {
                let last = i == 5;
                let spec = LayerSpec {
                    in_channels: cin,
                    out_channels: self.encoder_channels[i],
                    kernel: if last {
                        [h / 4, w / 4]
                    } else {
                        [KERNEL, KERNEL]
                    },
                    stride: ENC_STRIDES[i],
                    padding: if last { 0 } else { 2 },
                    output_padding: 0,
                    batch_norm: true,
                };
                cin = spec.out_channels;
                spec
            })
            .collect()
    }

    /// The 8 deconvolutions of the generator (Table 3, lower half). The fully connected
    /// layer `latent_dim → decoder_channels[0] × H/4 × W/4` (with BatchNorm) before them is
    /// not listed.
    pub fn decoder_layers(&self) -> Vec<LayerSpec> {
        let c = self.image_shape[0];
        let mut cin = self.decoder_channels[0];
        (0..8)
            .map(|i| {
                let last = i == 7;
                let spec = LayerSpec {
                    in_channels: cin,
                    out_channels: if last {
                        PIXEL_LEVELS * c
                    } else {
                        self.decoder_channels[i]
                    },
                    kernel: if last { [1, 1] } else { [KERNEL, KERNEL] },
                    stride: DEC_STRIDES[i],
                    padding: if last { 0 } else { 2 },
                    output_padding: usize::from(DEC_STRIDES[i] == 2),
                    batch_norm: i < 6,
                };
                cin = spec.out_channels;
                spec
            })
            .collect()
    }

    /// The largest K accepted: the generator decodes `batch × K` images at once, so memory
    /// grows with K (the default is 16; Burda et al. report up to 50 for training).
    pub const MAX_IW_SAMPLES: usize = 256;

    /// Parameter values of a model of this configuration (see
    /// [`ModelConfig::parameter_count`](crate::ModelConfig::parameter_count)), without
    /// building it; saturating.
    pub fn parameter_count(&self) -> u128 {
        let layer = |s: &LayerSpec| {
            let [kh, kw] = s.kernel;
            let out = s.out_channels as u128;
            let conv = (s.in_channels as u128)
                .saturating_mul(out)
                .saturating_mul(kh as u128 * kw as u128)
                .saturating_add(out);
            conv.saturating_add(if s.batch_norm {
                out.saturating_mul(4)
            } else {
                0
            })
        };
        let linear = |i: u128, o: u128| i.saturating_mul(o).saturating_add(o);
        let [_, h, w] = self.image_shape;
        let latent = self.latent_dim as u128;
        let d0 = self.decoder_channels[0] as u128;
        let maps = d0.saturating_mul((h / 4) as u128 * (w / 4) as u128);
        self.encoder_layers()
            .iter()
            .chain(&self.decoder_layers())
            .map(layer)
            .fold(0u128, u128::saturating_add)
            .saturating_add(linear(
                self.encoder_channels[5] as u128,
                latent.saturating_mul(2),
            ))
            .saturating_add(linear(latent, maps))
            .saturating_add(d0.saturating_mul(4))
    }

    pub(crate) fn validate(&self) -> Result<(), ModelError> {
        let [c, h, w] = self.image_shape;
        let bad = |m: String| Err(ModelError::InvalidConfig(m));
        if c == 0 || h == 0 || w == 0 {
            return bad(format!(
                "image shape {:?} has a zero dimension",
                self.image_shape
            ));
        }
        if h % 4 != 0 || w % 4 != 0 {
            return bad(format!(
                "image {h}×{w} is not divisible by 4, as the VAE's two stride-2 layers need: pad or resize the images"
            ));
        }
        if let Some(i) = self.encoder_channels.iter().position(|&ch| ch == 0) {
            return bad(format!("encoder_channels[{i}] is 0"));
        }
        if let Some(i) = self.decoder_channels.iter().position(|&ch| ch == 0) {
            return bad(format!("decoder_channels[{i}] is 0"));
        }
        if self.latent_dim == 0 {
            return bad("latent_dim is 0".into());
        }
        if self.iw_samples == 0 {
            return bad(
                "iw_samples (K) is 0: the importance-weighted estimate needs at least 1 sample"
                    .into(),
            );
        }
        if self.iw_samples > Self::MAX_IW_SAMPLES {
            return bad(format!(
                "{} importance samples (K) are more than the limit of {}: scoring decodes batch × K images at once, which would not fit in memory; use 16 (the default) to {}",
                self.iw_samples,
                Self::MAX_IW_SAMPLES,
                Self::MAX_IW_SAMPLES
            ));
        }
        if !(self.bn_epsilon.is_finite() && self.bn_epsilon > 0.0) {
            return bad(format!(
                "bn_epsilon {} must be finite and positive",
                self.bn_epsilon
            ));
        }
        if !(0.0..=1.0).contains(&self.bn_momentum) {
            return bad(format!(
                "bn_momentum {} must lie in [0, 1]",
                self.bn_momentum
            ));
        }
        Ok(())
    }

    /// Builds the model on `device` with weights drawn on the host from `seed` (PyTorch's
    /// default initialisation; backend-independent). BatchNorm starts at γ = 1, β = 0.
    ///
    /// # Errors
    /// [`ModelError::InvalidConfig`] for an impossible configuration (zero sizes, `H` or
    /// `W` not divisible by 4, K = 0, bad BatchNorm settings).
    pub fn init(&self, device: &Device) -> Result<Vae, ModelError> {
        self.validate()?;
        let mut rng = ChaCha8Rng::seed_from_u64(self.seed);
        let bn = BatchNormConfig::new(1)
            .with_momentum(self.bn_momentum)
            .with_epsilon(self.bn_epsilon);
        let norm = |ch: usize| {
            BatchNormConfig {
                num_features: ch,
                ..bn.clone()
            }
            .init(device)
        };
        let [c, h, w] = self.image_shape;

        let mut encoder = Vec::with_capacity(6);
        for spec in self.encoder_layers() {
            let conv = conv2d_strided(
                &mut rng,
                [spec.in_channels, spec.out_channels],
                spec.kernel,
                spec.stride,
                spec.padding,
                device,
            );
            encoder.push(ConvBlock {
                conv,
                norm: norm(spec.out_channels)?,
            });
        }
        let features = self.encoder_channels[5];
        let to_latent = linear(&mut rng, features, 2 * self.latent_dim, device);

        let d0 = self.decoder_channels[0];
        let from_latent = linear(&mut rng, self.latent_dim, d0 * (h / 4) * (w / 4), device);
        let from_latent_norm = norm(d0)?;
        let specs = self.decoder_layers();
        let deconv = |s: &LayerSpec, rng: &mut ChaCha8Rng| {
            conv_transpose2d(
                rng,
                [s.in_channels, s.out_channels],
                s.kernel[0],
                s.stride,
                s.padding,
                s.output_padding,
                device,
            )
        };
        let mut decoder = Vec::with_capacity(6);
        for s in &specs[..6] {
            let conv = deconv(s, &mut rng);
            decoder.push(DeconvBlock {
                conv,
                norm: norm(s.out_channels)?,
            });
        }
        let hidden = deconv(&specs[6], &mut rng);
        let logits = deconv(&specs[7], &mut rng);
        Ok(Vae {
            encoder,
            to_latent,
            from_latent,
            from_latent_norm,
            decoder,
            hidden,
            logits,
            channels: c,
            height: h,
            width: w,
            latent_dim: self.latent_dim,
            config: self.clone(),
        })
    }
}

/// Convolution → BatchNorm (→ ReLU, applied by the caller).
#[derive(Module, Debug)]
pub struct ConvBlock {
    conv: Conv2d,
    norm: BatchNorm,
}

/// Transposed convolution → BatchNorm (→ ReLU, applied by the caller).
#[derive(Module, Debug)]
pub struct DeconvBlock {
    conv: ConvTranspose2d,
    norm: BatchNorm,
}

/// The VAE. Build it with [`VaeConfig::init`]; module docs describe the architecture,
/// the estimators and the noise.
#[derive(Module, Debug)]
pub struct Vae {
    encoder: Vec<ConvBlock>,
    to_latent: Linear,
    from_latent: Linear,
    from_latent_norm: BatchNorm,
    decoder: Vec<DeconvBlock>,
    /// Generator layer 7 (ReLU, no BatchNorm).
    hidden: ConvTranspose2d,
    /// Generator layer 8: the `256·C` logits (no BatchNorm, no activation).
    logits: ConvTranspose2d,
    channels: usize,
    height: usize,
    width: usize,
    latent_dim: usize,
    #[module(skip)]
    config: VaeConfig,
}

fn host_values(x: &Tensor<4>) -> Result<Vec<f32>, ModelError> {
    x.clone().into_data().try_into_vec_as::<f32>().map_err(|e| {
        ModelError::Data(bnood_data::DataError::Mismatch(format!(
            "cannot read the input batch back to the host: {e:?}"
        )))
    })
}

/// Integer pixel of a dequantised value.
fn pixel_of(v: f32) -> u32 {
    v.floor().clamp(0.0, 255.0) as u32
}

/// `conv` applied to `x` `[N, C_in, H, W]`. A stride-1 deconvolution (no output padding,
/// dilation or groups) is the convolution with the kernel's channel axes swapped and its
/// taps flipped, padded `k − 1 − p` (`5 × 5`, `p = 2`: "same"; `1 × 1`: none): the same
/// values, computed by the backend's convolution, or for a `1 × 1` kernel in training by
/// [`conv1x1_matmul`]. burn-flex's transposed convolution adds into a freshly zeroed
/// output, whose copy-on-write page faults took 40–57 % of VAE scoring time on 2 threads
/// (`perf`, docs/performance.md); stride-2 ones keep it.
fn deconv(conv: &ConvTranspose2d, x: Tensor<4>) -> Tensor<4> {
    let [k, p] = [conv.kernel_size, conv.padding];
    let plain = conv.stride == [1, 1]
        && conv.dilation == [1, 1]
        && conv.groups == 1
        && conv.padding_out == [0, 0]
        && p[0] < k[0]
        && p[1] < k[1];
    if !plain {
        return conv.forward(x);
    }
    let weight = conv.weight.val().swap_dims(0, 1).flip([2, 3]);
    let bias = conv.bias.as_ref().map(|b| b.val());
    if k == [1, 1] && x.device().is_autodiff() {
        return conv1x1_matmul(x, weight, bias);
    }
    burn::tensor::module::conv2d(
        x,
        weight,
        bias,
        ConvOptions::new([1, 1], [k[0] - 1 - p[0], k[1] - 1 - p[1]], [1, 1], 1),
    )
}

/// `1 × 1` convolution of `x` `[N, C, H, W]` with `weight` `[O, C, 1, 1]` as one batched
/// matrix product `[O, C] · [N, C, H·W]`, so that its gradients are matrix products too
/// (burn's matmul backward). burn 0.22's `conv2d` backward computes the weight gradient as
/// a convolution with an `H × W` kernel: with it, a VAE training step ran at 240 samples/s,
/// with this 375 (criterion, flex, 2 threads; docs/performance.md). In scoring (no
/// gradients) burn's `conv2d` is as fast, and it stays.
fn conv1x1_matmul(x: Tensor<4>, weight: Tensor<4>, bias: Option<Tensor<1>>) -> Tensor<4> {
    let [n, c, h, w] = x.dims();
    let o = weight.dims()[0];
    let out = weight.reshape([1, o, c]).matmul(x.reshape([n, c, h * w]));
    let out = match bias {
        Some(b) => out + b.reshape([1, o, 1]),
        None => out,
    };
    out.reshape([n, o, h, w])
}

impl Vae {
    /// The model's configuration.
    pub fn config(&self) -> &VaeConfig {
        &self.config
    }

    /// The same trained model with `k` importance samples in [`LikelihoodModel::log_prob`]
    /// (the parameters are untouched; a checkpoint saved afterwards records the new K).
    /// Fewer samples score faster but give a looser, noisier bound.
    ///
    /// # Errors
    /// [`ModelError::InvalidConfig`] for `k = 0`.
    pub fn with_iw_samples(mut self, k: usize) -> Result<Self, ModelError> {
        let config = self.config.clone().with_iw_samples(k);
        config.validate()?;
        self.config = config;
        Ok(self)
    }

    /// Dimension of `z`.
    pub fn latent_dim(&self) -> usize {
        self.latent_dim
    }

    /// Number of trainable scalars.
    pub fn num_trainable(&self) -> usize {
        self.num_params()
    }

    /// `q(z|x)` for `x` `[N, C, H, W]` (dequantised, `[0, 256)`): mean and log-variance,
    /// each `[N, latent_dim]`. The network sees `floor(x)/127.5 − 1`.
    ///
    /// # Errors
    /// Shape and BatchNorm errors (`Batch` mode needs N ≥ 2: layer 6's output is 1×1).
    pub fn encode(
        &self,
        x: Tensor<4>,
        mode: &StatsMode,
    ) -> Result<(Tensor<2>, Tensor<2>), ModelError> {
        check_shape(&x, self.image_shape())?;
        let mut h = x
            .floor()
            .clamp(0.0, 255.0)
            .div_scalar(127.5)
            .sub_scalar(1.0);
        for block in &self.encoder {
            h = relu(block.norm.forward(block.conv.forward(h), mode)?);
        }
        let [n, ch, hh, ww] = h.dims();
        let out = self.to_latent.forward(h.reshape([n, ch * hh * ww]));
        let l = self.latent_dim;
        Ok((out.clone().narrow(1, 0, l), out.narrow(1, l, l)))
    }

    /// Generator layers up to 6: `z` `[M, latent_dim]` → `[M, decoder_channels[5], H, W]`.
    fn decode_trunk(&self, z: Tensor<2>, mode: &StatsMode) -> Result<Tensor<4>, ModelError> {
        let m = z.dims()[0];
        let d0 = self.config.decoder_channels[0];
        let h = self
            .from_latent
            .forward(z)
            .reshape([m, d0, self.height / 4, self.width / 4]);
        let mut h = relu(self.from_latent_norm.forward(h, mode)?);
        for block in &self.decoder {
            h = relu(block.norm.forward(deconv(&block.conv, h), mode)?);
        }
        Ok(h)
    }

    /// Generator layers 7–8 (no BatchNorm): `[M, 256, C, H, W]` logits.
    fn decode_tail(&self, h: Tensor<4>) -> Tensor<5> {
        let m = h.dims()[0];
        let out = deconv(&self.logits, relu(deconv(&self.hidden, h)));
        out.reshape([m, PIXEL_LEVELS, self.channels, self.height, self.width])
    }

    /// The generator's logits for latent samples `z` `[M, latent_dim]`:
    /// `[M, 256, C, H, W]`, `log_softmax` over dimension 1 gives `ln p(pixel = v | z)`.
    /// All M samples form one batch for the generator's BatchNorm.
    ///
    /// # Errors
    /// BatchNorm errors; [`ModelError::Shape`] if `z` is not `[M, latent_dim]`.
    pub fn decoder_logits(&self, z: Tensor<2>, mode: &StatsMode) -> Result<Tensor<5>, ModelError> {
        self.check_latent(&z)?;
        Ok(self.decode_tail(self.decode_trunk(z, mode)?))
    }

    fn check_latent(&self, z: &Tensor<2>) -> Result<(), ModelError> {
        let d = z.dims();
        if d[0] == 0 || d[1] != self.latent_dim {
            return Err(ModelError::InvalidConfig(format!(
                "latent samples must be [M, {}] with M ≥ 1, got {d:?}",
                self.latent_dim
            )));
        }
        Ok(())
    }

    /// `ln p(x|z)` `[M]` from the layer-6 output `h` `[M, ...]` and the integer pixels of
    /// the M samples, in chunks of samples (layers 7–8 are per-sample).
    fn log_px(&self, h: Tensor<4>, pixels: &Pixels) -> Tensor<1> {
        let m = h.dims()[0];
        let widest = (PIXEL_LEVELS * self.channels).max(self.config.decoder_channels[6]);
        let chunk = (TAIL_CHUNK_VALUES / (widest * self.height * self.width)).max(1);
        let one = |h: Tensor<4>, first: usize| {
            let len = h.dims()[0];
            let logits = self
                .decode_tail(h)
                .reshape([len, PIXEL_LEVELS, self.dims()]);
            categorical::log_likelihood(logits, pixels, first)
        };
        if m <= chunk {
            return one(h, 0);
        }
        let parts = (0..m)
            .step_by(chunk)
            .map(|s| one(h.clone().narrow(0, s, chunk.min(m - s)), s))
            .collect();
        Tensor::cat(parts, 0)
    }

    /// Integer pixels of the images `values` (`[N, C·H·W]`, read back from the input), each
    /// image used by `k` consecutive samples.
    fn pixels(&self, values: &[f32], k: usize) -> Pixels {
        let pixels = values.iter().map(|&v| pixel_of(v) as u8).collect();
        Pixels::new(pixels, self.dims(), k)
    }

    /// Standard normal noise `[N, k, latent_dim]` on `device`, one ChaCha8 stream per image
    /// of `values` (`[N, C·H·W]`, read back from the input) seeded by `seed` and a hash of
    /// `key(value)` over the image's values.
    fn noise(
        &self,
        values: &[f32],
        device: &Device,
        k: usize,
        seed: u64,
        domain: u64,
        key: fn(f32) -> u32,
    ) -> Tensor<3> {
        let per_image = self.dims();
        let n = values.len() / per_image;
        let mut eps = Vec::with_capacity(n * k * self.latent_dim);
        for image in values.chunks(per_image) {
            let mut h = splitmix64(seed ^ domain);
            for &v in image {
                h = (h ^ u64::from(key(v))).wrapping_mul(0x0000_0100_0000_01B3); // FNV-1a step
            }
            let mut rng = ChaCha8Rng::seed_from_u64(splitmix64(h ^ seed));
            eps.extend(standard_normals(&mut rng, k * self.latent_dim));
        }
        Tensor::from_data(TensorData::new(eps, [n, k, self.latent_dim]), device)
    }

    /// The noise ε `[N, k, latent_dim]` that [`log_prob_iw`](Self::log_prob_iw) uses for
    /// `x` with `seed`: per image, seeded by `seed` and a hash of its integer pixels.
    ///
    /// # Errors
    /// [`ModelError::Shape`]; a data error if `x` cannot be read back.
    pub fn eval_noise(&self, x: &Tensor<4>, k: usize, seed: u64) -> Result<Tensor<3>, ModelError> {
        check_shape(x, self.image_shape())?;
        Ok(self.noise(
            &host_values(x)?,
            &x.device(),
            k,
            seed,
            EVAL_DOMAIN,
            pixel_of,
        ))
    }

    /// Importance-weighted estimate of `ln p(x)` `[N]` (nats) with `k` samples and noise
    /// seed `seed`: `ln (1/k Σ_j p(x|z_j) p(z_j) / q(z_j|x))`, `z_j = μ + σ·ε_j`, ε from
    /// [`eval_noise`](Self::eval_noise). The generator runs on all `N·k` samples as one batch.
    ///
    /// # Errors
    /// [`ModelError::InvalidConfig`] for `k = 0`; shape and BatchNorm errors.
    pub fn log_prob_iw(
        &self,
        x: Tensor<4>,
        mode: &StatsMode,
        k: usize,
        seed: u64,
    ) -> Result<Tensor<1>, ModelError> {
        if k == 0 {
            return Err(ModelError::InvalidConfig(
                "the importance-weighted estimate needs k ≥ 1 samples".into(),
            ));
        }
        check_shape(&x, self.image_shape())?;
        let n = x.dims()[0];
        let l = self.latent_dim;
        // The images on the host, once: for the noise and for the pixels' likelihood.
        let values = host_values(&x)?;
        let eps = self.noise(&values, &x.device(), k, seed, EVAL_DOMAIN, pixel_of);
        let (mu, logvar) = self.encode(x, mode)?;
        let std = logvar.clone().mul_scalar(0.5).exp();
        let z = mu.unsqueeze_dim::<3>(1) + std.unsqueeze_dim::<3>(1) * eps.clone();
        // ln p(z) − ln q(z|x); the −(L/2) ln 2π terms cancel. (z − μ)/σ = ε exactly.
        let log_pz = z
            .clone()
            .powi_scalar(2)
            .sum_dim(2)
            .reshape([n, k])
            .mul_scalar(-0.5);
        let log_qz = eps
            .powi_scalar(2)
            .sum_dim(2)
            .reshape([n, k])
            .mul_scalar(-0.5)
            - logvar.sum_dim(1).mul_scalar(0.5);
        let h = self.decode_trunk(z.reshape([n * k, l]), mode)?;
        let log_px = self.log_px(h, &self.pixels(&values, k)).reshape([n, k]);
        let log_w = log_px + log_pz - log_qz;
        let max = log_w.clone().detach().max_dim(1);
        let lse = (log_w - max.clone()).exp().sum_dim(1).log() + max;
        Ok(lse.reshape([n]).sub_scalar((k as f64).ln()))
    }

    /// Negative ELBO `[N]` (nats): `−ln p(x|z) + KL(q(z|x) ‖ N(0, I))` with one
    /// reparameterised sample `z = μ + σ·ε` and the KL in closed form. ε is drawn per image
    /// from ChaCha8 seeded by `seed` and a hash of the raw bits of the image's values.
    ///
    /// # Errors
    /// Shape and BatchNorm errors.
    pub fn negative_elbo(
        &self,
        x: Tensor<4>,
        mode: &StatsMode,
        seed: u64,
    ) -> Result<Tensor<1>, ModelError> {
        check_shape(&x, self.image_shape())?;
        let n = x.dims()[0];
        let values = host_values(&x)?;
        let eps = self
            .noise(&values, &x.device(), 1, seed, TRAIN_DOMAIN, f32::to_bits)
            .reshape([n, self.latent_dim]);
        let (mu, logvar) = self.encode(x, mode)?;
        let z = mu.clone() + logvar.clone().mul_scalar(0.5).exp() * eps;
        let h = self.decode_trunk(z, mode)?;
        let log_px = self.log_px(h, &self.pixels(&values, 1));
        let kl = (mu.powi_scalar(2) + logvar.clone().exp() - logvar)
            .sub_scalar(1.0)
            .sum_dim(1)
            .reshape([n])
            .mul_scalar(0.5);
        Ok(kl - log_px)
    }
}

impl LikelihoodModel for Vae {
    fn image_shape(&self) -> [usize; 3] {
        [self.channels, self.height, self.width]
    }

    /// Importance-weighted estimate with K = [`VaeConfig::iw_samples`] and noise seeded by
    /// [`VaeConfig::eval_seed`] (see [`Vae::log_prob_iw`]).
    fn log_prob(&self, x: Tensor<4>, mode: &StatsMode) -> Result<Tensor<1>, ModelError> {
        self.log_prob_iw(x, mode, self.config.iw_samples, self.config.eval_seed)
    }

    /// Negative ELBO, noise seeded by [`VaeConfig::seed`] (see [`Vae::negative_elbo`]).
    fn training_loss(&self, x: Tensor<4>, mode: &StatsMode) -> Result<Tensor<1>, ModelError> {
        self.negative_elbo(x, mode, self.config.seed)
    }
}

impl crate::Trainable for Vae {
    fn model_config(&self) -> crate::ModelConfig {
        crate::ModelConfig::Vae(self.config.clone())
    }
}

#[cfg(test)]
mod tests {
    use burn::nn::PaddingConfig2d;
    use burn::nn::conv::{Conv2d, ConvTranspose2d};
    use burn::tensor::{Device, Distribution, Tensor};

    use super::{LayerSpec, Vae, VaeConfig, conv1x1_matmul, deconv};

    #[test]
    fn stride_one_deconvolutions_as_convolutions_equal_burn_conv_transpose() {
        use burn::nn::conv::ConvTranspose2dConfig;
        let device = Device::flex();
        // The generator's kinds: 5×5 "same" (p = 2), 1×1, and a stride-2 one (kept as is).
        for (kernel, padding, stride, out_pad) in
            [(5, 2, 1, 0), (1, 0, 1, 0), (3, 1, 1, 0), (5, 2, 2, 1)]
        {
            let conv = ConvTranspose2dConfig::new([3, 4], [kernel, kernel])
                .with_padding([padding, padding])
                .with_stride([stride, stride])
                .with_padding_out([out_pad, out_pad])
                .init(&device);
            let x = Tensor::<4>::random([2, 3, 6, 5], Distribution::Normal(0.0, 1.0), &device);
            let expected = conv
                .forward(x.clone())
                .into_data()
                .try_to_vec::<f32>()
                .expect("f32");
            let got = deconv(&conv, x)
                .into_data()
                .try_to_vec::<f32>()
                .expect("f32");
            assert_eq!(got.len(), expected.len(), "k = {kernel}, stride {stride}");
            for (a, b) in got.iter().zip(&expected) {
                assert!(
                    (a - b).abs() < 1e-4,
                    "k = {kernel}, stride {stride}: {a} vs {b}"
                );
            }
        }
    }

    #[test]
    fn one_by_one_convolution_as_a_matrix_product_has_burn_conv2ds_values_and_gradients() {
        let device = Device::flex().autodiff();
        for (kernel, padding, [h, w]) in [(1, 0, [4, 5]), (1, 0, [1, 1])] {
            let x = Tensor::<4>::random([3, 4, h, w], Distribution::Normal(0.0, 1.0), &device);
            let weight = Tensor::<4>::random(
                [5, 4, kernel, kernel],
                Distribution::Normal(0.0, 1.0),
                &device,
            );
            let bias = Tensor::<1>::random([5], Distribution::Normal(0.0, 1.0), &device);
            let run = |matmul: bool| {
                let (x, weight, bias) = (
                    x.clone().require_grad(),
                    weight.clone().require_grad(),
                    bias.clone().require_grad(),
                );
                let out = if matmul {
                    conv1x1_matmul(x.clone(), weight.clone(), Some(bias.clone()))
                } else {
                    burn::tensor::module::conv2d(
                        x.clone(),
                        weight.clone(),
                        Some(bias.clone()),
                        burn::tensor::ops::ConvOptions::new([1, 1], [padding; 2], [1, 1], 1),
                    )
                };
                // A loss that weights every output differently.
                let probe = out.clone().mul_scalar(0.0).add_scalar(1.0).cumsum(3);
                let grads = (out.clone() * probe).sum().backward();
                let values = |t: Tensor<4>| t.into_data().try_to_vec::<f32>().expect("f32");
                [
                    values(out.detach()),
                    values(x.grad(&grads).expect("x gradient")),
                    values(weight.grad(&grads).expect("weight gradient")),
                    bias.grad(&grads)
                        .expect("bias gradient")
                        .into_data()
                        .try_to_vec::<f32>()
                        .expect("f32"),
                ]
            };
            let (got, want) = (run(true), run(false));
            for (part, (g, w)) in ["output", "x", "weight", "bias"]
                .iter()
                .zip(got.iter().zip(&want))
            {
                assert_eq!(g.len(), w.len(), "{part}, k = {kernel}");
                let scale = w.iter().fold(1.0_f32, |a, v| a.max(v.abs()));
                for (a, b) in g.iter().zip(w) {
                    assert!(
                        (a - b).abs() <= 1e-5 * scale,
                        "{part}, k = {kernel}: {a} vs {b}"
                    );
                }
            }
        }
    }

    fn conv_spec(conv: &Conv2d, batch_norm: bool) -> LayerSpec {
        let [out_channels, in_channels, kh, kw] = conv.weight.dims();
        let padding = match conv.padding {
            PaddingConfig2d::Explicit(top, ..) => top,
            PaddingConfig2d::Valid => 0,
            PaddingConfig2d::Same => kh / 2,
        };
        LayerSpec {
            in_channels,
            out_channels,
            kernel: [kh, kw],
            stride: conv.stride[0],
            padding,
            output_padding: 0,
            batch_norm,
        }
    }

    fn deconv_spec(conv: &ConvTranspose2d, batch_norm: bool) -> LayerSpec {
        let [in_channels, out_channels, kh, kw] = conv.weight.dims();
        LayerSpec {
            in_channels,
            out_channels,
            kernel: [kh, kw],
            stride: conv.stride[0],
            padding: conv.padding[0],
            output_padding: conv.padding_out[0],
            batch_norm,
        }
    }

    /// The inference network's 6 convolutions as built (read from the modules' weights).
    fn encoder_layers(model: &Vae) -> Vec<LayerSpec> {
        model
            .encoder
            .iter()
            .map(|b| conv_spec(&b.conv, true))
            .collect()
    }

    /// The generator's 8 deconvolutions as built (read from the modules' weights).
    fn decoder_layers(model: &Vae) -> Vec<LayerSpec> {
        let mut v: Vec<LayerSpec> = model
            .decoder
            .iter()
            .map(|b| deconv_spec(&b.conv, true))
            .collect();
        v.push(deconv_spec(&model.hidden, false));
        v.push(deconv_spec(&model.logits, false));
        v
    }

    /// The built modules have exactly the layers of the configuration's table (which
    /// tests/vae.rs pins to the paper's Table 3).
    #[test]
    fn built_modules_have_the_layers_of_the_table() {
        for cfg in [VaeConfig::paper_fmnist(), VaeConfig::cpu_fmnist()] {
            let model = cfg.init(&Device::flex()).expect("valid");
            assert_eq!(encoder_layers(&model), cfg.encoder_layers());
            assert_eq!(decoder_layers(&model), cfg.decoder_layers());
        }
    }
}
