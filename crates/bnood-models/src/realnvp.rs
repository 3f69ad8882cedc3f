//! RealNVP (Dinh, Sohl-Dickstein & Bengio 2016) as configured in the paper's Appendix C.1:
//! multi-scale with one downscale; checkerboard and channel-wise affine couplings whose
//! scale/translation networks are residual networks with pre-activation BatchNorm
//! (Fashion-MNIST: 4 residual blocks of 32 channels; CIFAR: 8 blocks of 64).
//!
//! Layout for `downscales = 1` on `[N, 1, 28, 28]`: logit preprocessing (α = 0.05); 3
//! checkerboard couplings; squeeze to `[N, 4, 14, 14]`; 3 channel-wise couplings; half of
//! the channels are factored out to the prior; 4 checkerboard couplings on `[N, 2, 14, 14]`.
//! The prior is a standard normal on all `C·H·W` latent values.
//!
//! BatchNorm appears only inside the s/t networks, so every coupling stays triangular in a
//! sample's own coordinates whatever statistics the BatchNorm uses; in `Batch` mode the
//! density of one sample, with the rest of the batch fixed, still integrates to 1 (the
//! paper's Proposition 1).
//!
//! On the CPU devices of the backends this crate was built with (features `flex`,
//! `ndarray`), without autodiff, the s/t networks run in a layout made for CPUs (the
//! crate-private `cpu` module): the same values up to float rounding, about twice as fast,
//! and the same bits whatever the number of cores.

use std::f64::consts::PI;

use burn::module::{Module, Param};
use burn::nn::conv::Conv2d;
use burn::tensor::activation::{relu, tanh};
use burn::tensor::{Device, Tensor, TensorData};
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};

use bnood_data::LogitTransform;
use bnood_norm::{BatchNorm, BatchNormConfig, StatsMode};

use crate::init::conv2d;
use crate::{LikelihoodModel, ModelError, check_shape};

mod cpu;

/// Architecture and initialisation of a [`RealNvp`]. Serialisable, so checkpoints can carry
/// it and refuse a mismatching architecture.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RealNvpConfig {
    /// Image shape `[C, H, W]`; `H` and `W` must be divisible by `2^downscales`.
    pub image_shape: [usize; 3],
    /// Channels of every convolution inside the s/t residual networks.
    pub mid_channels: usize,
    /// Residual blocks per s/t network.
    pub num_blocks: usize,
    /// Number of squeeze-and-factor-out stages before the final stage (paper: 1).
    pub downscales: usize,
    /// α of the logit preprocessing (paper: 0.05).
    pub logit_alpha: f64,
    /// BatchNorm momentum (PyTorch default 0.1).
    pub bn_momentum: f64,
    /// BatchNorm ε (PyTorch default 1e-5).
    pub bn_epsilon: f64,
    /// Seed of the weight initialisation.
    pub seed: u64,
    /// Whether the last convolution of every s/t network starts at zero, making every
    /// coupling the identity at initialisation (standard for stable training). Tests turn
    /// it off to get a non-trivial untrained flow.
    pub zero_init_last: bool,
}

impl RealNvpConfig {
    /// The paper's Fashion-MNIST RealNVP (Appendix C.1): `[1, 28, 28]`, one downscale,
    /// 4 residual blocks of 32 channels per s/t network.
    pub fn paper_fmnist() -> Self {
        Self {
            image_shape: [1, 28, 28],
            mid_channels: 32,
            num_blocks: 4,
            downscales: 1,
            logit_alpha: bnood_data::transform::PAPER_LOGIT_ALPHA,
            bn_momentum: 0.1,
            bn_epsilon: 1e-5,
            seed: 0,
            zero_init_last: true,
        }
    }

    /// The paper's CIFAR-10 RealNVP: `[3, 32, 32]`, 8 residual blocks of 64 channels.
    pub fn paper_cifar10() -> Self {
        Self {
            image_shape: [3, 32, 32],
            mid_channels: 64,
            num_blocks: 8,
            ..Self::paper_fmnist()
        }
    }

    /// A Fashion-MNIST RealNVP sized to train to a useful model in about 20 minutes on a
    /// 2-core CPU: the paper's layout with 2 residual blocks of 16 channels.
    pub fn cpu_fmnist() -> Self {
        Self {
            mid_channels: 16,
            num_blocks: 2,
            ..Self::paper_fmnist()
        }
    }

    /// A preset by name: `paper` or `cpu` (Fashion-MNIST shape), `paper-cifar10`.
    ///
    /// # Errors
    /// [`ModelError::InvalidConfig`] naming the known presets.
    pub fn preset(name: &str) -> Result<Self, ModelError> {
        match name {
            "paper" | "paper-fmnist" => Ok(Self::paper_fmnist()),
            "cpu" | "cpu-fmnist" => Ok(Self::cpu_fmnist()),
            "paper-cifar10" => Ok(Self::paper_cifar10()),
            other => Err(ModelError::InvalidConfig(format!(
                "unknown RealNVP preset `{other}`: use paper, cpu or paper-cifar10"
            ))),
        }
    }

    /// Returns the config with another seed.
    pub fn with_seed(mut self, seed: u64) -> Self {
        self.seed = seed;
        self
    }

    /// Parameter values of a model of this configuration (see
    /// [`ModelConfig::parameter_count`](crate::ModelConfig::parameter_count)), without
    /// building it; saturating.
    pub fn parameter_count(&self) -> u128 {
        let mid = self.mid_channels as u128;
        let blocks = self.num_blocks as u128;
        let bn = |f: u128| f.saturating_mul(4);
        let conv = |cin: u128, cout: u128, k: u128| {
            cin.saturating_mul(cout)
                .saturating_mul(k * k)
                .saturating_add(cout)
        };
        let coupling = |cond: u128, out: u128| {
            let block = bn(mid).saturating_add(conv(mid, mid, 3)).saturating_mul(2);
            bn(cond)
                .saturating_add(conv(cond.saturating_mul(2), mid, 3))
                .saturating_add(blocks.saturating_mul(block))
                .saturating_add(bn(mid))
                .saturating_add(conv(mid, out, 1))
                .saturating_add(out / 2)
        };
        let mut c = self.image_shape[0] as u128;
        let mut total: u128 = 0;
        // More stages than bits of a size cannot be valid; stop before the channels overflow.
        for _ in 0..self.downscales.min(64) {
            total = total
                .saturating_add(coupling(c, c.saturating_mul(2)).saturating_mul(3))
                .saturating_add(
                    coupling(c.saturating_mul(2), c.saturating_mul(4)).saturating_mul(3),
                );
            c = c.saturating_mul(2);
        }
        total.saturating_add(coupling(c, c.saturating_mul(2)).saturating_mul(4))
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
        let Some(factor) = 1usize
            .checked_shl(self.downscales.try_into().unwrap_or(u32::MAX))
            .filter(|f| *f <= h.min(w))
        else {
            return bad(format!(
                "{} downscales halve the {h}×{w} image below one pixel: use at most {}",
                self.downscales,
                h.min(w).ilog2()
            ));
        };
        if h % factor != 0 || w % factor != 0 {
            return bad(format!(
                "image {h}×{w} is not divisible by 2^{} = {factor}, as {} downscale(s) need",
                self.downscales, self.downscales
            ));
        }
        if c * h * w < 2 && self.downscales == 0 {
            return bad("a flow needs at least 2 dimensions per image".into());
        }
        if self.mid_channels == 0 {
            return bad("mid_channels is 0".into());
        }
        if !(0.0..0.5).contains(&self.logit_alpha) {
            return bad(format!(
                "logit_alpha {} must lie in [0, 0.5)",
                self.logit_alpha
            ));
        }
        Ok(())
    }

    /// Builds the model on `device` with weights drawn from `seed` (backend-independent).
    ///
    /// # Errors
    /// [`ModelError::InvalidConfig`] for an impossible configuration.
    pub fn init(&self, device: &Device) -> Result<RealNvp, ModelError> {
        self.validate()?;
        let mut rng = ChaCha8Rng::seed_from_u64(self.seed);
        let bn = BatchNormConfig::new(1)
            .with_momentum(self.bn_momentum)
            .with_epsilon(self.bn_epsilon);
        let mut make = |kind: CouplingKind, channels: usize| -> Result<Coupling, ModelError> {
            let (cond, out) = match kind {
                CouplingKind::Checkerboard { .. } => (channels, 2 * channels),
                CouplingKind::Channel { .. } => (channels / 2, channels),
            };
            Coupling::new(kind, cond, out, self, &bn, &mut rng, device)
        };
        let [mut c, _, _] = self.image_shape;
        let mut scales = Vec::with_capacity(self.downscales);
        for _ in 0..self.downscales {
            let checker = (0..3)
                .map(|p| make(CouplingKind::checkerboard(p), c))
                .collect::<Result<_, _>>()?;
            let channel = (0..3)
                .map(|f| make(CouplingKind::Channel { flip: f % 2 == 1 }, 4 * c))
                .collect::<Result<_, _>>()?;
            scales.push(Scale {
                checkerboard: checker,
                channelwise: channel,
            });
            c *= 2;
        }
        let last = (0..4)
            .map(|p| make(CouplingKind::checkerboard(p), c))
            .collect::<Result<_, _>>()?;
        let [c0, h0, w0] = self.image_shape;
        Ok(RealNvp {
            scales,
            last,
            channels: c0,
            height: h0,
            width: w0,
            logit_alpha: self.logit_alpha,
            config: self.clone(),
        })
    }
}

/// Which part of a coupling's input conditions the transform of the rest.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum CouplingKind {
    /// A spatial checkerboard: the pixels `(i, j)` whose `i + j` has this parity condition,
    /// the others are transformed.
    Checkerboard { parity: Parity },
    /// Channel halves: the first half conditions and the second is transformed, or the
    /// reverse with `flip`.
    Channel { flip: bool },
}

impl CouplingKind {
    /// Checkerboard coupling `index` of a run: parities alternate, so that consecutive
    /// couplings transform complementary pixels.
    fn checkerboard(index: usize) -> Self {
        CouplingKind::Checkerboard {
            parity: Parity::alternating(index),
        }
    }
}

/// Parity of `i + j` on a checkerboard.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Parity {
    Even,
    Odd,
}

impl Parity {
    /// `Even`, `Odd`, `Even`, … for `index` = 0, 1, 2, …
    fn alternating(index: usize) -> Self {
        if index.is_multiple_of(2) {
            Parity::Even
        } else {
            Parity::Odd
        }
    }
}

/// Pre-activation residual block: `x + conv(relu(bn(conv(relu(bn(x))))))`.
#[derive(Module, Debug)]
pub struct ResidualBlock {
    norm1: BatchNorm,
    conv1: Conv2d,
    norm2: BatchNorm,
    conv2: Conv2d,
}

impl ResidualBlock {
    fn forward(&self, x: Tensor<4>, mode: &StatsMode) -> Result<Tensor<4>, ModelError> {
        let h = self
            .conv1
            .forward(relu(self.norm1.forward(x.clone(), mode)?));
        let h = self.conv2.forward(relu(self.norm2.forward(h, mode)?));
        Ok(x + h)
    }
}

/// The s/t network of a coupling: BatchNorm → CReLU (`[x, −x]` then ReLU) → 3×3 conv →
/// residual blocks → BatchNorm → ReLU → 1×1 conv giving `[s_raw, t]`.
#[derive(Module, Debug)]
pub struct ResNet {
    in_norm: BatchNorm,
    in_conv: Conv2d,
    blocks: Vec<ResidualBlock>,
    out_norm: BatchNorm,
    out_conv: Conv2d,
}

impl ResNet {
    fn forward(&self, x: Tensor<4>, mode: &StatsMode) -> Result<Tensor<4>, ModelError> {
        let x = self.in_norm.forward(x, mode)?;
        let x = relu(Tensor::cat(vec![x.clone(), x.neg()], 1));
        if cpu::takes_rows_layout(&x) {
            return cpu::forward(self, x, mode);
        }
        if let Some(out) = cpu::forward_differentiable(self, &x, mode) {
            return out;
        }
        let mut h = self.in_conv.forward(x);
        for block in &self.blocks {
            h = block.forward(h, mode)?;
        }
        Ok(self.out_conv.forward(relu(self.out_norm.forward(h, mode)?)))
    }
}

/// One affine coupling: `y = x ⊙ exp(s) + t` on the transformed part, `s = w ⊙ tanh(s_raw)`.
#[derive(Module, Debug)]
pub struct Coupling {
    net: ResNet,
    /// Per-channel scale `w` of `tanh(s_raw)`, initialised to 1.
    rescale: Param<Tensor<1>>,
    /// Which part of the input conditions the transform of the rest.
    #[module(skip)]
    kind: CouplingKind,
}

impl Coupling {
    fn new(
        kind: CouplingKind,
        cond: usize,
        out: usize,
        cfg: &RealNvpConfig,
        bn: &BatchNormConfig,
        rng: &mut ChaCha8Rng,
        device: &Device,
    ) -> Result<Self, ModelError> {
        let mid = cfg.mid_channels;
        let norm = |c: usize| {
            BatchNormConfig {
                num_features: c,
                ..bn.clone()
            }
            .init(device)
        };
        let blocks = (0..cfg.num_blocks)
            .map(|_| {
                Ok(ResidualBlock {
                    norm1: norm(mid)?,
                    conv1: conv2d(rng, [mid, mid], 3, false, device),
                    norm2: norm(mid)?,
                    conv2: conv2d(rng, [mid, mid], 3, false, device),
                })
            })
            .collect::<Result<Vec<_>, ModelError>>()?;
        let net = ResNet {
            in_norm: norm(cond)?,
            in_conv: conv2d(rng, [2 * cond, mid], 3, false, device),
            blocks,
            out_norm: norm(mid)?,
            out_conv: conv2d(rng, [mid, out], 1, cfg.zero_init_last, device),
        };
        Ok(Self {
            net,
            rescale: Param::from_tensor(Tensor::ones([out / 2], device)),
            kind,
        })
    }

    /// `[1, 1, h, w]`: 1 on the pixels whose `i + j` has `parity` (they condition), 0 on
    /// the others (they are transformed).
    fn checkerboard(parity: Parity, h: usize, w: usize, device: &Device) -> Tensor<4> {
        let mask: Vec<f32> = (0..h * w)
            .map(|i| {
                let even = (i / w + i % w).is_multiple_of(2);
                f32::from(u8::from(even == (parity == Parity::Even)))
            })
            .collect();
        Tensor::from_data(TensorData::new(mask, [1, 1, h, w]), device)
    }

    /// `s` and `t` for the conditioning input; `s` already scaled and bounded.
    fn scale_shift(
        &self,
        cond: Tensor<4>,
        mode: &StatsMode,
    ) -> Result<(Tensor<4>, Tensor<4>), ModelError> {
        let st = self.net.forward(cond, mode)?;
        let c = st.dims()[1] / 2;
        let s_raw = st.clone().narrow(1, 0, c);
        let t = st.narrow(1, c, c);
        let w = self.rescale.val().reshape([1, c, 1, 1]);
        Ok((tanh(s_raw) * w, t))
    }

    /// Splits `x` into the conditioning part and the part to transform, applies
    /// `transform(part, s, t)` to the latter with `s, t` from the conditioning part, and
    /// puts the parts back together. Returns the result and `s` (zero where nothing is
    /// transformed), whose sum per sample is the log-determinant of the forward map.
    fn couple(
        &self,
        x: Tensor<4>,
        mode: &StatsMode,
        transform: impl Fn(Tensor<4>, Tensor<4>, Tensor<4>) -> Tensor<4>,
    ) -> Result<(Tensor<4>, Tensor<4>), ModelError> {
        match self.kind {
            CouplingKind::Checkerboard { parity } => {
                let [_, _, h, w] = x.dims();
                let b = Self::checkerboard(parity, h, w, &x.device());
                let inv = b.clone().neg().add_scalar(1.0);
                let (s, t) = self.scale_shift(x.clone() * b, mode)?;
                // s = t = 0 on the conditioning pixels: the transform leaves them as they are.
                let (s, t) = (s * inv.clone(), t * inv);
                Ok((transform(x, s.clone(), t), s))
            }
            CouplingKind::Channel { flip } => {
                let half = x.dims()[1] / 2;
                let (a, b) = (x.clone().narrow(1, 0, half), x.narrow(1, half, half));
                let (cond, part) = if flip { (b, a) } else { (a, b) };
                let (s, t) = self.scale_shift(cond.clone(), mode)?;
                let y = transform(part, s.clone(), t);
                let out = if flip {
                    Tensor::cat(vec![y, cond], 1)
                } else {
                    Tensor::cat(vec![cond, y], 1)
                };
                Ok((out, s))
            }
        }
    }

    /// Forward: `y = x ⊙ exp(s) + t` on the transformed part; returns `y` and the
    /// log-determinant per sample `[N]`.
    fn forward(
        &self,
        x: Tensor<4>,
        mode: &StatsMode,
    ) -> Result<(Tensor<4>, Tensor<1>), ModelError> {
        let (y, s) = self.couple(x, mode, |x, s, t| x * s.exp() + t)?;
        let [n, c, h, w] = s.dims();
        let log_det = s.reshape([n, c * h * w]).sum_dim(1).reshape([n]);
        Ok((y, log_det))
    }

    /// Inverse: `x = (y − t) ⊙ exp(−s)` on the transformed part.
    fn inverse(&self, y: Tensor<4>, mode: &StatsMode) -> Result<Tensor<4>, ModelError> {
        Ok(self.couple(y, mode, |y, s, t| (y - t) * s.neg().exp())?.0)
    }
}

/// One multi-scale stage: checkerboard couplings, squeeze, channel-wise couplings.
#[derive(Module, Debug)]
pub struct Scale {
    checkerboard: Vec<Coupling>,
    channelwise: Vec<Coupling>,
}

/// The RealNVP flow. Build it with [`RealNvpConfig::init`].
#[derive(Module, Debug)]
pub struct RealNvp {
    scales: Vec<Scale>,
    last: Vec<Coupling>,
    channels: usize,
    height: usize,
    width: usize,
    logit_alpha: f64,
    #[module(skip)]
    config: RealNvpConfig,
}

/// `[N, C, H, W]` → `[N, 4C, H/2, W/2]`: each 2×2 spatial block becomes 4 channels.
fn squeeze(x: Tensor<4>) -> Tensor<4> {
    let [n, c, h, w] = x.dims();
    x.reshape([n, c, h / 2, 2, w / 2, 2])
        .permute([0, 1, 3, 5, 2, 4])
        .reshape([n, c * 4, h / 2, w / 2])
}

/// Inverse of [`squeeze`].
fn unsqueeze(x: Tensor<4>) -> Tensor<4> {
    let [n, c4, h2, w2] = x.dims();
    let c = c4 / 4;
    x.reshape([n, c, 2, 2, h2, w2])
        .permute([0, 1, 4, 2, 5, 3])
        .reshape([n, c, h2 * 2, w2 * 2])
}

impl RealNvp {
    fn logit(&self) -> LogitTransform {
        LogitTransform::new(self.logit_alpha).expect("alpha was validated when the model was built")
    }

    /// Maps logit-space `z0` `[N, C, H, W]` to the latent parts (factored-out tensors, last
    /// part last) and the flow's log-determinant per sample `[N]` (nats).
    ///
    /// # Errors
    /// BatchNorm errors (batch too small for batch statistics).
    pub fn forward_latent(
        &self,
        z0: Tensor<4>,
        mode: &StatsMode,
    ) -> Result<(Vec<Tensor<4>>, Tensor<1>), ModelError> {
        let n = z0.dims()[0];
        let mut log_det = Tensor::<1>::zeros([n], &z0.device());
        let mut x = z0;
        let mut parts = Vec::new();
        for scale in &self.scales {
            for c in &scale.checkerboard {
                let (y, ld) = c.forward(x, mode)?;
                x = y;
                log_det = log_det + ld;
            }
            x = squeeze(x);
            for c in &scale.channelwise {
                let (y, ld) = c.forward(x, mode)?;
                x = y;
                log_det = log_det + ld;
            }
            let half = x.dims()[1] / 2;
            parts.push(x.clone().narrow(1, 0, half));
            x = x.narrow(1, half, half);
        }
        for c in &self.last {
            let (y, ld) = c.forward(x, mode)?;
            x = y;
            log_det = log_det + ld;
        }
        parts.push(x);
        Ok((parts, log_det))
    }

    /// Inverse of [`forward_latent`](Self::forward_latent): latent parts back to logit space.
    ///
    /// # Errors
    /// BatchNorm errors.
    pub fn inverse_latent(
        &self,
        parts: &[Tensor<4>],
        mode: &StatsMode,
    ) -> Result<Tensor<4>, ModelError> {
        let mut rest = parts.to_vec();
        let mut x = rest
            .pop()
            .ok_or_else(|| ModelError::InvalidConfig("no latent parts".into()))?;
        for c in self.last.iter().rev() {
            x = c.inverse(x, mode)?;
        }
        for scale in self.scales.iter().rev() {
            let factored = rest
                .pop()
                .ok_or_else(|| ModelError::InvalidConfig("too few latent parts".into()))?;
            x = Tensor::cat(vec![factored, x], 1);
            for c in scale.channelwise.iter().rev() {
                x = c.inverse(x, mode)?;
            }
            x = unsqueeze(x);
            for c in scale.checkerboard.iter().rev() {
                x = c.inverse(x, mode)?;
            }
        }
        Ok(x)
    }

    /// `ln p(z0)` of the flow in logit space (no preprocessing term), `[N]` nats.
    ///
    /// # Errors
    /// BatchNorm errors.
    pub fn log_prob_latent(
        &self,
        z0: Tensor<4>,
        mode: &StatsMode,
    ) -> Result<Tensor<1>, ModelError> {
        let n = z0.dims()[0];
        let (parts, log_det) = self.forward_latent(z0, mode)?;
        let mut prior = Tensor::<1>::zeros([n], &log_det.device());
        let mut dims = 0;
        for p in parts {
            let [_, c, h, w] = p.dims();
            dims += c * h * w;
            prior = prior
                + p.powi_scalar(2)
                    .reshape([n, c * h * w])
                    .sum_dim(1)
                    .reshape([n])
                    .mul_scalar(-0.5);
        }
        Ok(prior.add_scalar(-0.5 * (2.0 * PI).ln() * dims as f64) + log_det)
    }

    /// Maps dequantised pixels `[0, 256)` to latent parts; inverse of [`decode`](Self::decode).
    ///
    /// # Errors
    /// Shape and BatchNorm errors.
    pub fn encode(&self, x: Tensor<4>, mode: &StatsMode) -> Result<Vec<Tensor<4>>, ModelError> {
        check_shape(&x, self.image_shape())?;
        Ok(self.forward_latent(self.logit().forward(x).0, mode)?.0)
    }

    /// Maps latent parts back to pixels on the `[0, 256)` scale.
    ///
    /// # Errors
    /// BatchNorm errors.
    pub fn decode(&self, parts: &[Tensor<4>], mode: &StatsMode) -> Result<Tensor<4>, ModelError> {
        Ok(self.logit().inverse(self.inverse_latent(parts, mode)?))
    }
}

impl LikelihoodModel for RealNvp {
    fn image_shape(&self) -> [usize; 3] {
        [self.channels, self.height, self.width]
    }

    fn log_prob(&self, x: Tensor<4>, mode: &StatsMode) -> Result<Tensor<1>, ModelError> {
        check_shape(&x, self.image_shape())?;
        let (z0, log_det_pre) = self.logit().forward(x);
        Ok(self.log_prob_latent(z0, mode)? + log_det_pre)
    }
}

impl crate::Trainable for RealNvp {
    fn model_config(&self) -> crate::ModelConfig {
        crate::ModelConfig::RealNvp(self.config.clone())
    }
}
