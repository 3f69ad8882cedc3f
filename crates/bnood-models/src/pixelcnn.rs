//! PixelCNN++ (Salimans, Karpathy, Chen & Kingma 2017) as the paper's Appendix C uses it:
//! the original architecture with **BatchNorm after each convolution instead of weight
//! normalisation** and 80 instead of 160 filters (footnote 3: the pclucas14/pixel-cnn-pp
//! PyTorch implementation with that change).
//!
//! ## Architecture (`[1, H, W]`, `H` and `W` divisible by 4; `F` filters, `R` blocks)
//! The input is the integer image on the `[−1, 1]` scale with a channel of ones appended
//! (so that the zero padding of the causal convolutions is told apart from black pixels).
//! Two streams run side by side: `u` sees the rows above a pixel, `ul` the rows above and
//! the pixels to its left in its own row (see [`layers`] for the causal convolutions).
//!
//! | part | `u` stream | `ul` stream | resolution |
//! |---|---|---|---|
//! | input | down-shifted 2×3 conv, output shifted down | down-shifted 1×3 conv shifted down + down-right-shifted 2×1 conv shifted right | H × W |
//! | up stage 1 | R gated blocks | R gated blocks, skip input `u` | H × W |
//! | downsample | down-shifted 2×3 conv, stride 2 | down-right-shifted 2×2 conv, stride 2 | H/2 × W/2 |
//! | up stage 2 | R blocks | R blocks | H/2 × W/2 |
//! | downsample | as above | as above | H/4 × W/4 |
//! | up stage 3 | R blocks | R blocks | H/4 × W/4 |
//! | down stage 1 | R blocks, skip: the matching up-pass `u` | R blocks, skip: `[u, up-pass ul]` | H/4 × W/4 |
//! | upsample | down-shifted 2×3 transposed conv, stride 2 | down-right-shifted 2×2 transposed conv | H/2 × W/2 |
//! | down stage 2 | R + 1 blocks | R + 1 blocks | H/2 × W/2 |
//! | upsample | as above | as above | H × W |
//! | down stage 3 | R + 1 blocks | R + 1 blocks | H × W |
//! | output | | 1×1 conv of `elu(ul)` to `3M` channels | H × W |
//!
//! Every up-pass block's output (and every downsampling output) is pushed on a stack and
//! popped by the down pass as the skip input of the block at the same position, as in the
//! reference. For 28×28 images the resolutions are 28, 14 and 7.
//!
//! ## BatchNorm
//! A `bnood-norm` BatchNorm follows every causal convolution and transposed convolution and
//! every 1×1 skip layer (where the reference normalises weights); the output layer, which
//! gives the mixture's parameters, has none. In `Running` mode BatchNorm is a per-channel
//! affine map, so the model is autoregressive: the mixture of pixel `i` (raster order)
//! depends on the pixels before `i` only, and `log_prob` is a normalised likelihood. In
//! `Batch`/`Train` mode the statistics are means over all pixels of all images of the batch,
//! so pixel `i`'s mixture also depends on *other images* and on its own image's later
//! pixels: the values are then no normalised likelihood of one image, which is exactly what
//! the paper's BN test exploits (tests/pixelcnn.rs pins both facts down).
//!
//! ## Likelihood
//! A discretized mixture of `M` logistics per pixel ([`LogisticMixture`], Salimans et al.
//! eq. 2, without the channel coupling, since images have one channel): `ln p(x)` is the
//! sum over pixels of `ln P(pixel)` in nats, exact (no density approximation of small bins).
//! Inputs are dequantised on `[0, 256)`; the integer pixel is `floor(x)`, so the
//! probability of the integer image equals the density on the 0–256 scale and bits/dim
//! compare with the other models'.
//!
//! ## Dropout
//! Channel dropout (PyTorch's `Dropout2d`, as in the reference) on the second concat-ELU of
//! every gated block, in [`LikelihoodModel::training_loss`] only; `log_prob` never drops. The
//! masks are drawn on the host from ChaCha8 seeded by [`PixelCnnConfig::seed`] and a hash of
//! the batch's raw `f32` bits, so training is reproducible on every backend.

pub mod layers;
pub mod mixture;

use burn::module::Module;
use burn::nn::conv::Conv2d;
use burn::tensor::{Device, Tensor, TensorData};
use rand::{RngExt, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};

use bnood_norm::{BatchNormConfig, StatsMode};

use crate::init::{conv2d, splitmix64};
use crate::{LikelihoodModel, ModelError, check_shape};
use layers::{Builder, Causal, GatedResnet, OutputShift, ShiftedConv, ShiftedDeconv, elu};
pub use mixture::LogisticMixture;

/// Resolutions of the network: the input's, half and a quarter (two downsamplings).
pub const STAGES: usize = 3;

const DROPOUT_DOMAIN: u64 = 0x5043_4e4e_5f44_524f; // "PCNN_DRO"

/// Architecture and seed of a [`PixelCnn`]. Serialisable, so checkpoints can carry it and
/// refuse a mismatching architecture.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PixelCnnConfig {
    /// Image shape `[C, H, W]`; `C` must be 1, `H` and `W` divisible by 4.
    pub image_shape: [usize; 3],
    /// Channels `F` of both streams (the reference's `nr_filters`; paper: 80).
    pub filters: usize,
    /// Gated ResNet blocks `R` per up stage; the down stages have `R`, `R + 1`, `R + 1`
    /// (the reference's `nr_resnet`; original: 5).
    pub blocks_per_stage: usize,
    /// Logistic components `M` per pixel (the reference's `nr_logistic_mix`; original: 10).
    pub mixtures: usize,
    /// Probability of dropping a channel inside each gated block while training, in
    /// `[0, 1)` (original: 0.5).
    pub dropout: f64,
    /// BatchNorm momentum (PyTorch default 0.1).
    pub bn_momentum: f64,
    /// BatchNorm ε (PyTorch default 1e-5).
    pub bn_epsilon: f64,
    /// Seed of the weight initialisation and of the dropout masks.
    pub seed: u64,
}

impl PixelCnnConfig {
    /// The paper's PixelCNN++ for Fashion-MNIST-shaped images `[1, 28, 28]`: 80 filters,
    /// the original 5 blocks per stage, 10 logistics, dropout 0.5.
    pub fn paper_fmnist() -> Self {
        Self {
            image_shape: [1, 28, 28],
            filters: 80,
            blocks_per_stage: 5,
            mixtures: 10,
            dropout: 0.5,
            bn_momentum: 0.1,
            bn_epsilon: 1e-5,
            seed: 0,
        }
    }

    /// A Fashion-MNIST PixelCNN++ sized for a 2-core CPU: the same layout with 16 filters,
    /// 1 block per stage (1, 2, 2 in the down pass) and 5 logistics, no dropout (a short
    /// run on 60,000 images does not overfit such a small model).
    pub fn cpu_fmnist() -> Self {
        Self {
            filters: 16,
            blocks_per_stage: 1,
            mixtures: 5,
            dropout: 0.0,
            ..Self::paper_fmnist()
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
                "unknown PixelCNN++ preset `{other}`: use paper or cpu"
            ))),
        }
    }

    /// Returns the config with another seed.
    pub fn with_seed(mut self, seed: u64) -> Self {
        self.seed = seed;
        self
    }

    /// Gated blocks of each down stage: `R`, `R + 1`, `R + 1`.
    fn down_blocks(&self) -> [usize; STAGES] {
        let r = self.blocks_per_stage;
        [r, r.saturating_add(1), r.saturating_add(1)]
    }

    /// Parameter values of a model of this configuration (see
    /// [`ModelConfig::parameter_count`](crate::ModelConfig::parameter_count)), without
    /// building it; saturating.
    pub fn parameter_count(&self) -> u128 {
        let f = self.filters as u128;
        let c_in = self.image_shape[0] as u128 + 1;
        let bn = |n: u128| n.saturating_mul(4);
        let conv = |cin: u128, cout: u128, k: u128| {
            cin.saturating_mul(cout)
                .saturating_mul(k)
                .saturating_add(cout)
        };
        let normed = |cin: u128, cout: u128, k: u128| conv(cin, cout, k).saturating_add(bn(cout));
        // A gated block with kernel of k taps and a skip input of s·F channels.
        let block = |k: u128, s: u128| {
            let skip = if s == 0 {
                0
            } else {
                normed(f.saturating_mul(2 * s), f, 1)
            };
            normed(f.saturating_mul(2), f, k)
                .saturating_add(skip)
                .saturating_add(normed(f.saturating_mul(2), f.saturating_mul(2), k))
        };
        let r = self.blocks_per_stage as u128;
        let up = (r.saturating_mul(STAGES as u128))
            .saturating_mul(block(6, 0).saturating_add(block(4, 1)));
        let down_count = self
            .down_blocks()
            .iter()
            .fold(0u128, |a, &n| a.saturating_add(n as u128));
        let down = down_count.saturating_mul(block(6, 1).saturating_add(block(4, 2)));
        let resample = normed(f, f, 6).saturating_add(normed(f, f, 4));
        let inputs = normed(c_in, f, 6)
            .saturating_add(normed(c_in, f, 3))
            .saturating_add(normed(c_in, f, 2));
        let output = conv(f, 3u128.saturating_mul(self.mixtures as u128), 1);
        inputs
            .saturating_add(up)
            .saturating_add(down)
            .saturating_add(resample.saturating_mul(2 * (STAGES as u128 - 1)))
            .saturating_add(output)
    }

    pub(crate) fn validate(&self) -> Result<(), ModelError> {
        let [c, h, w] = self.image_shape;
        let bad = |m: String| Err(ModelError::InvalidConfig(m));
        if c != 1 {
            return bad(format!(
                "PixelCNN++ here models one-channel images, got {c} channels: the colour version's channel coupling is not implemented; convert the images to grey levels"
            ));
        }
        if h == 0 || w == 0 || h % 4 != 0 || w % 4 != 0 {
            return bad(format!(
                "image {h}×{w} is not a non-empty multiple of 4 in both directions, as PixelCNN++'s two downsamplings need: pad or crop the images"
            ));
        }
        if self.filters == 0 {
            return bad("filters is 0: use at least 1 (paper: 80)".into());
        }
        if self.mixtures == 0 {
            return bad("mixtures is 0: use at least 1 logistic per pixel (paper: 10)".into());
        }
        if !(0.0..1.0).contains(&self.dropout) {
            return bad(format!(
                "dropout {} must lie in [0, 1) (paper: 0.5)",
                self.dropout
            ));
        }
        Ok(())
    }

    /// Builds the model on `device` with weights drawn from `seed` (backend-independent).
    ///
    /// # Errors
    /// [`ModelError::InvalidConfig`] for an impossible configuration.
    pub fn init(&self, device: &Device) -> Result<PixelCnn, ModelError> {
        self.validate()?;
        let mut rng = ChaCha8Rng::seed_from_u64(self.seed);
        let bn = BatchNormConfig::new(1)
            .with_momentum(self.bn_momentum)
            .with_epsilon(self.bn_epsilon);
        let b = &mut Builder {
            rng: &mut rng,
            bn: &bn,
            device,
        };
        let f = self.filters;
        let c_in = self.image_shape[0] + 1;
        let u_init = ShiftedConv::new(b, Causal::Down, [c_in, f], [2, 3], 1, OutputShift::Down)?;
        let ul_init_above =
            ShiftedConv::new(b, Causal::Down, [c_in, f], [1, 3], 1, OutputShift::Down)?;
        let ul_init_left = ShiftedConv::new(
            b,
            Causal::DownRight,
            [c_in, f],
            [2, 1],
            1,
            OutputShift::Right,
        )?;
        let mut stage = |blocks: usize, u_skip: usize, ul_skip: usize| {
            let mut u = Vec::with_capacity(blocks);
            let mut ul = Vec::with_capacity(blocks);
            for _ in 0..blocks {
                u.push(GatedResnet::new(b, Causal::Down, f, u_skip)?);
                ul.push(GatedResnet::new(b, Causal::DownRight, f, ul_skip)?);
            }
            Ok::<_, ModelError>(Stage { u, ul })
        };
        let up = (0..STAGES)
            .map(|_| stage(self.blocks_per_stage, 0, 1))
            .collect::<Result<Vec<_>, _>>()?;
        let down = self
            .down_blocks()
            .into_iter()
            .map(|n| stage(n, 1, 2))
            .collect::<Result<Vec<_>, _>>()?;
        let mut downsample = Vec::with_capacity(STAGES - 1);
        let mut upsample = Vec::with_capacity(STAGES - 1);
        for _ in 1..STAGES {
            downsample.push(Resample {
                u: ShiftedConv::new(b, Causal::Down, [f, f], [2, 3], 2, OutputShift::None)?,
                ul: ShiftedConv::new(b, Causal::DownRight, [f, f], [2, 2], 2, OutputShift::None)?,
            });
        }
        for _ in 1..STAGES {
            upsample.push(Upsample {
                u: ShiftedDeconv::new(b, Causal::Down, [f, f])?,
                ul: ShiftedDeconv::new(b, Causal::DownRight, [f, f])?,
            });
        }
        let output = conv2d(b.rng, [f, 3 * self.mixtures], 1, false, device);
        let [channels, height, width] = self.image_shape;
        Ok(PixelCnn {
            u_init,
            ul_init_above,
            ul_init_left,
            up,
            downsample,
            down,
            upsample,
            output,
            channels,
            height,
            width,
            config: self.clone(),
        })
    }
}

/// The gated blocks of one stage, `u` and `ul` stream side by side.
#[derive(Module, Debug)]
pub struct Stage {
    u: Vec<GatedResnet>,
    ul: Vec<GatedResnet>,
}

/// The stride-2 causal convolutions between two up stages.
#[derive(Module, Debug)]
pub struct Resample {
    u: ShiftedConv,
    ul: ShiftedConv,
}

/// The stride-2 causal transposed convolutions between two down stages.
#[derive(Module, Debug)]
pub struct Upsample {
    u: ShiftedDeconv,
    ul: ShiftedDeconv,
}

/// The PixelCNN++ model. Build it with [`PixelCnnConfig::init`].
#[derive(Module, Debug)]
pub struct PixelCnn {
    u_init: ShiftedConv,
    ul_init_above: ShiftedConv,
    ul_init_left: ShiftedConv,
    up: Vec<Stage>,
    downsample: Vec<Resample>,
    down: Vec<Stage>,
    upsample: Vec<Upsample>,
    output: Conv2d,
    channels: usize,
    height: usize,
    width: usize,
    #[module(skip)]
    config: PixelCnnConfig,
}

/// Dropout masks of one forward pass, `[blocks, N, 2F]`, handed out block by block in the
/// order the network runs them.
struct DropoutMasks {
    masks: Tensor<3>,
    next: usize,
}

impl DropoutMasks {
    fn next(masks: &mut Option<Self>) -> Option<Tensor<4>> {
        let m = masks.as_mut()?;
        let [_, n, c] = m.masks.dims();
        let mask = m.masks.clone().narrow(0, m.next, 1).reshape([n, c, 1, 1]);
        m.next += 1;
        Some(mask)
    }
}

impl PixelCnn {
    /// The model's configuration.
    pub fn config(&self) -> &PixelCnnConfig {
        &self.config
    }

    /// Number of gated blocks, each with one dropout mask.
    fn gated_blocks(&self) -> usize {
        self.up
            .iter()
            .chain(&self.down)
            .map(|s| s.u.len() + s.ul.len())
            .sum()
    }

    /// The network: `scaled` `[N, 1, H, W]` on the `[−1, 1]` scale to the mixture
    /// parameters `[N, 3M, H, W]`.
    fn network(
        &self,
        scaled: Tensor<4>,
        mode: &StatsMode,
        mut dropout: Option<DropoutMasks>,
    ) -> Result<Tensor<4>, ModelError> {
        let [n, _, h, w] = scaled.dims();
        let ones = Tensor::ones([n, 1, h, w], &scaled.device());
        let x = Tensor::cat(vec![scaled, ones], 1);
        let mut u_list = vec![self.u_init.forward(x.clone(), mode)?];
        let mut ul_list = vec![
            self.ul_init_above.forward(x.clone(), mode)? + self.ul_init_left.forward(x, mode)?,
        ];
        for (i, stage) in self.up.iter().enumerate() {
            for (u_block, ul_block) in stage.u.iter().zip(&stage.ul) {
                let u_prev = u_list.last().expect("the stack starts non-empty").clone();
                let ul_prev = ul_list.last().expect("the stack starts non-empty").clone();
                let u = u_block.forward(u_prev, None, DropoutMasks::next(&mut dropout), mode)?;
                let ul = ul_block.forward(
                    ul_prev,
                    Some(u.clone()),
                    DropoutMasks::next(&mut dropout),
                    mode,
                )?;
                u_list.push(u);
                ul_list.push(ul);
            }
            if let Some(resample) = self.downsample.get(i) {
                let u = u_list.last().expect("non-empty").clone();
                let ul = ul_list.last().expect("non-empty").clone();
                u_list.push(resample.u.forward(u, mode)?);
                ul_list.push(resample.ul.forward(ul, mode)?);
            }
        }
        let missing = || ModelError::InvalidConfig("the up pass left too few skip inputs".into());
        let mut u = u_list.pop().ok_or_else(missing)?;
        let mut ul = ul_list.pop().ok_or_else(missing)?;
        for (i, stage) in self.down.iter().enumerate() {
            for (u_block, ul_block) in stage.u.iter().zip(&stage.ul) {
                let u_skip = u_list.pop().ok_or_else(missing)?;
                let ul_skip = ul_list.pop().ok_or_else(missing)?;
                u = u_block.forward(u, Some(u_skip), DropoutMasks::next(&mut dropout), mode)?;
                ul = ul_block.forward(
                    ul,
                    Some(Tensor::cat(vec![u.clone(), ul_skip], 1)),
                    DropoutMasks::next(&mut dropout),
                    mode,
                )?;
            }
            if let Some(upsample) = self.upsample.get(i) {
                u = upsample.u.forward(u, mode)?;
                ul = upsample.ul.forward(ul, mode)?;
            }
        }
        Ok(self.output.forward(elu(ul)))
    }

    /// The per-pixel mixtures for network inputs `scaled` `[N, 1, H, W]` on the `[−1, 1]`
    /// scale (pixel `k` at `k/127.5 − 1`), without dropout. Differentiable in `scaled`,
    /// which lets tests check causality by gradients; [`mixture`](Self::mixture) takes
    /// dequantised images.
    ///
    /// # Errors
    /// [`ModelError::Shape`]; BatchNorm errors (batch too small for batch statistics).
    pub fn mixture_of_scaled(
        &self,
        scaled: Tensor<4>,
        mode: &StatsMode,
    ) -> Result<LogisticMixture, ModelError> {
        check_shape(&scaled, self.image_shape())?;
        let out = self.network(scaled, mode, None)?;
        Ok(LogisticMixture::from_output(out, self.config.mixtures))
    }

    /// The per-pixel mixtures `[N, M, H, W]` of dequantised images `x` `[N, 1, H, W]` on the
    /// `[0, 256)` scale: the network sees the integer pixels `floor(x)`.
    ///
    /// # Errors
    /// As [`mixture_of_scaled`](Self::mixture_of_scaled).
    pub fn mixture(&self, x: Tensor<4>, mode: &StatsMode) -> Result<LogisticMixture, ModelError> {
        self.mixture_of_scaled(scaled_pixels(x), mode)
    }

    /// `ln P(pixel)` in nats for every pixel of the dequantised images `x` `[N, 1, H, W]`:
    /// `[N, 1, H, W]`; their sum over a image is [`LikelihoodModel::log_prob`].
    ///
    /// # Errors
    /// As [`mixture_of_scaled`](Self::mixture_of_scaled).
    pub fn pixel_log_probs(&self, x: Tensor<4>, mode: &StatsMode) -> Result<Tensor<4>, ModelError> {
        check_shape(&x, self.image_shape())?;
        let scaled = scaled_pixels(x);
        Ok(self
            .mixture_of_scaled(scaled.clone(), mode)?
            .log_prob(scaled))
    }

    /// `ln p(x)` `[N]` (nats) with dropout masks drawn from `seed` and the batch's bits
    /// (the training objective's likelihood), or without dropout when the configuration
    /// has none.
    ///
    /// # Errors
    /// As [`mixture_of_scaled`](Self::mixture_of_scaled); a data error if `x` cannot be
    /// read back to the host.
    pub fn log_prob_with_dropout(
        &self,
        x: Tensor<4>,
        mode: &StatsMode,
        seed: u64,
    ) -> Result<Tensor<1>, ModelError> {
        check_shape(&x, self.image_shape())?;
        let masks = self.dropout_masks(&x, seed)?;
        let scaled = scaled_pixels(x);
        let out = self.network(scaled.clone(), mode, masks)?;
        let per_pixel = LogisticMixture::from_output(out, self.config.mixtures).log_prob(scaled);
        Ok(sum_per_image(per_pixel))
    }

    /// Channel dropout masks for every gated block, `None` without dropout.
    fn dropout_masks(&self, x: &Tensor<4>, seed: u64) -> Result<Option<DropoutMasks>, ModelError> {
        let p = self.config.dropout;
        if p == 0.0 {
            return Ok(None);
        }
        let values = x
            .clone()
            .into_data()
            .try_into_vec_as::<f32>()
            .map_err(|e| {
                ModelError::Data(bnood_data::DataError::Mismatch(format!(
                    "cannot read the input batch back to the host: {e:?}"
                )))
            })?;
        let mut h = splitmix64(seed ^ DROPOUT_DOMAIN);
        for v in values {
            h = (h ^ u64::from(v.to_bits())).wrapping_mul(0x0000_0100_0000_01B3); // FNV-1a step
        }
        let mut rng = ChaCha8Rng::seed_from_u64(splitmix64(h ^ seed));
        let n = x.dims()[0];
        let c = 2 * self.config.filters;
        let blocks = self.gated_blocks();
        let keep = (1.0 / (1.0 - p)) as f32;
        let mask: Vec<f32> = (0..blocks * n * c)
            .map(|_| if rng.random::<f64>() < p { 0.0 } else { keep })
            .collect();
        Ok(Some(DropoutMasks {
            masks: Tensor::from_data(TensorData::new(mask, [blocks, n, c]), &x.device()),
            next: 0,
        }))
    }
}

/// Integer pixels `floor(x)` (clamped to 0..=255) of dequantised `x`, on the `[−1, 1]`
/// scale.
fn scaled_pixels(x: Tensor<4>) -> Tensor<4> {
    x.floor()
        .clamp(0.0, 255.0)
        .div_scalar(127.5)
        .sub_scalar(1.0)
}

/// `[N, C, H, W]` → `[N]`, the sum over each image.
fn sum_per_image(t: Tensor<4>) -> Tensor<1> {
    let [n, c, h, w] = t.dims();
    t.reshape([n, c * h * w]).sum_dim(1).reshape([n])
}

impl LikelihoodModel for PixelCnn {
    fn image_shape(&self) -> [usize; 3] {
        [self.channels, self.height, self.width]
    }

    /// The exact `ln p(x)` of the integer image `floor(x)`, without dropout.
    fn log_prob(&self, x: Tensor<4>, mode: &StatsMode) -> Result<Tensor<1>, ModelError> {
        Ok(sum_per_image(self.pixel_log_probs(x, mode)?))
    }

    /// `−ln p(x)` with dropout ([`PixelCnnConfig::dropout`]), masks seeded by
    /// [`PixelCnnConfig::seed`] (see [`PixelCnn::log_prob_with_dropout`]).
    fn training_loss(&self, x: Tensor<4>, mode: &StatsMode) -> Result<Tensor<1>, ModelError> {
        Ok(self.log_prob_with_dropout(x, mode, self.config.seed)?.neg())
    }
}

impl crate::Trainable for PixelCnn {
    fn model_config(&self) -> crate::ModelConfig {
        crate::ModelConfig::PixelCnn(self.config.clone())
    }
}
