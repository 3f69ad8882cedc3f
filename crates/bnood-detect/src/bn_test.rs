//! The paper's permutation test based on BatchNorm (section 5, eqs. 5–8).

use burn::tensor::Device;
use rand::seq::SliceRandom;
use rand::seq::index::sample;

use bnood_data::ImageSet;
use bnood_models::LikelihoodModel;
use bnood_norm::mixed_batch;

use base64::Engine;
use base64::engine::general_purpose::STANDARD as BASE64;
use serde::{Deserialize, Serialize};

use crate::detector::Fit;
use crate::params::{ParamGuard, ScoringParams, ValidScoringParams};
use crate::pool_verdict::{DEFAULT_POOL_NULL_BATCHES, NullCache, VerdictInputs, pool_verdict};
use crate::reference::ReferenceScores;
use crate::scores::PoolVerdict;
use crate::scoring::{
    check_shape, host, images_tensor, reject_nan, running_log_likelihoods, stream,
};
use crate::{DetectError, Detector, ProgressHook, Result, Scores};

/// Stream tags, so that the split, the held-out pool and test pools never share random draws.
const TAG_SPLIT: u64 = 1;
const TAG_HELD_OUT: u64 = 2;
const TAG_TEST: u64 = 3;
/// Per-input mode: every image's reference rows come from a stream of its own pixels.
const TAG_PER_INPUT: u64 = 4;

/// FNV-1a hash of an image's pixels: keys the per-input mode's stream to the image itself.
fn pixel_hash(pixels: &[u8]) -> u64 {
    pixels.iter().fold(0xcbf2_9ce4_8422_2325, |h, &p| {
        (h ^ u64::from(p)).wrapping_mul(0x0000_0100_0000_01b3)
    })
}

/// Checked [`BnTestParams`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct BnTestValidParams {
    batch_size: usize,
    r1: f64,
    r2: f64,
    draws: usize,
    seed: u64,
    held_out_fraction: f64,
    /// Absent in files written before it existed: they were calibrated with one draw.
    #[serde(default = "one")]
    calibration_draws: usize,
    /// Absent in files written before it existed: they were calibrated on the held-out pool.
    #[serde(default)]
    calibration: BnCalibration,
    /// Absent in files written before the window-statistic pool verdict: the default.
    #[serde(default = "default_pool_null_batches")]
    pool_null_batches: usize,
    scoring: ValidScoringParams,
}

/// Which Δs the pool mode ranks a test image's Δ against (eq. 8).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[cfg_attr(feature = "cli", derive(clap::ValueEnum))]
#[serde(rename_all = "kebab-case")]
pub enum BnCalibration {
    /// The paper's: at [`fit`](crate::Fit::fit), the held-out reference images are scored as a
    /// pool of their own, and every test image is ranked against their Δs. A pool whose
    /// images are all OoD gets small p-values throughout: this answers "is this pool OoD?".
    /// Per image it is **not** calibrated: the images of one mixed batch share its
    /// statistics, so a test pool's Δs carry that pool's own batch effects, which the
    /// held-out pool's do not (`docs/results.md`, "Calibration").
    #[default]
    HeldOut,
    /// Conformal, inside the pool: the held-out images are shuffled **into every scored
    /// pool** and scored in the same mixed batches as the test images, and each test image
    /// is ranked against their Δs from that run. When the test images are in-distribution
    /// they are exchangeable with the held-out ones, batch effects included, so
    /// `P(p ≤ α) ≤ α` for every test image (conformal prediction; the flags of one pool are
    /// still correlated, but their expected share is the target). This answers "which
    /// images of this mostly in-distribution pool are odd?"; it cannot flag a pool that is
    /// OoD as a whole (the held-out images then share its shifted batches), and it costs
    /// the held-out images' scoring on every call. Not with the per-input mode, whose Δs
    /// do not share batches.
    #[cfg_attr(feature = "cli", value(name = "in-pool"))]
    InPool,
}

fn one() -> usize {
    1
}

fn default_pool_null_batches() -> usize {
    DEFAULT_POOL_NULL_BATCHES
}

impl BnTestValidParams {
    /// Batch size `b` of every mixed batch.
    pub fn batch_size(&self) -> usize {
        self.batch_size
    }

    /// The first ratio `r1` of test images per batch.
    pub fn r1(&self) -> f64 {
        self.r1
    }

    /// The second ratio `r2`.
    pub fn r2(&self) -> f64 {
        self.r2
    }

    /// Monte Carlo draws per ratio: how many mixed batches each test image is scored in.
    pub fn draws(&self) -> usize {
        self.draws
    }

    /// Seed of every random choice (reference split, batch composition).
    pub fn seed(&self) -> u64 {
        self.seed
    }

    /// Fraction of the reference set held out to calibrate Δ.
    pub fn held_out_fraction(&self) -> f64 {
        self.held_out_fraction
    }

    /// How many independent batch compositions of the held-out images calibrate Δ.
    pub fn calibration_draws(&self) -> usize {
        self.calibration_draws
    }

    /// Which Δs a test image is ranked against ([`BnCalibration`]).
    pub fn calibration(&self) -> BnCalibration {
        self.calibration
    }

    /// Null batches `K` of the pool verdict ([`PoolVerdict`]); 0: no verdict.
    pub fn pool_null_batches(&self) -> usize {
        self.pool_null_batches
    }

    /// Whether a test image's score depends on that image and the reference set only: one
    /// ratio is `0` (running statistics) and the other puts exactly one test image in each
    /// mixed batch (`round(r·b) = 1`), so no two test images share a batch.
    pub fn is_per_input(&self) -> bool {
        let rows = [self.test_rows(self.r1), self.test_rows(self.r2)];
        rows.contains(&0) && rows.contains(&1)
    }

    /// Scoring parameters (dequantisation; batch size for `r = 0`).
    pub fn scoring(&self) -> &ValidScoringParams {
        &self.scoring
    }

    /// Test rows per mixed batch at ratio `r`: `round(r·b)`, 0 for `r = 0` (running
    /// statistics, no batch).
    pub fn test_rows(&self, r: f64) -> usize {
        (r * self.batch_size as f64).round() as usize
    }

    fn ratios(&self) -> [Ratio; 2] {
        [self.ratio(self.r1), self.ratio(self.r2)]
    }

    fn ratio(&self, r: f64) -> Ratio {
        let test = self.test_rows(r);
        let reference = if test == 0 { 0 } else { self.batch_size - test };
        Ratio { r, test, reference }
    }
}

/// Composition of the mixed batches at one ratio.
#[derive(Debug, Clone, Copy)]
struct Ratio {
    r: f64,
    /// Test rows per batch, `m = round(r·b)`; 0 means running statistics.
    test: usize,
    /// Reference rows per batch, `b − m` (0 for running statistics).
    reference: usize,
}

/// Unchecked parameters of a [`BnTest`]. Defaults follow the paper's section 6: `b = 64`,
/// `r1 = 0.1`, `r2 = 0.9`, one draw, seed 0, half of the reference set held out.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct BnTestParams(BnTestValidParams);

impl Default for BnTestParams {
    fn default() -> Self {
        Self(BnTestValidParams {
            batch_size: 64,
            r1: 0.1,
            r2: 0.9,
            draws: 1,
            seed: 0,
            held_out_fraction: 0.5,
            calibration_draws: DEFAULT_CALIBRATION_DRAWS,
            calibration: BnCalibration::HeldOut,
            pool_null_batches: DEFAULT_POOL_NULL_BATCHES,
            scoring: ValidScoringParams::default(),
        })
    }
}

/// The most Monte Carlo draws ([`BnTestParams::draws`], and
/// [`BnTestParams::calibration_draws`]) a BN test takes: each draw costs one more scoring of
/// every image, so 1,000 draws of a 2,000-image pool already take hours on a CPU.
pub const MAX_DRAWS: usize = 1000;

/// Default [`BnTestParams::calibration_draws`]: one, the paper's calibration. Ten draws did
/// not bring the pool mode's share of flagged in-distribution images to the target
/// (`docs/results.md`, "Calibration"): the excess comes mostly from each test pool's own
/// batch effects, which no reference draw removes.
pub const DEFAULT_CALIBRATION_DRAWS: usize = 1;

impl BnTestParams {
    /// The paper's defaults (see the type).
    pub fn new() -> Self {
        Self::default()
    }

    /// The **per-input** mode: `r1 = 0` (running statistics) and `r2 = 1/b`, one test image
    /// per mixed batch of `b = 64` with `b − 1` reference images, so an image's score depends
    /// on that image and the reference set only, never on the other images scored with it.
    /// Its reference rows are drawn from a stream keyed by the seed and the image's pixels,
    /// so the same image gets the same score in any test set. Change `b` with
    /// [`per_input_batch_size`](Self::per_input_batch_size).
    pub fn per_input() -> Self {
        Self::new().per_input_batch_size(64)
    }

    /// Turns these parameters into the per-input mode ([`per_input`](Self::per_input)) with
    /// batch size `b`: `r1 = 0`, `r2 = 1/b`, one calibration draw (the held-out
    /// images' Δs are already independent of each other in this mode; set more with
    /// [`calibration_draws`](Self::calibration_draws) afterwards) and the held-out
    /// calibration.
    pub fn per_input_batch_size(mut self, b: usize) -> Self {
        self.0.batch_size = b;
        self.0.r1 = 0.0;
        self.0.r2 = 1.0 / b.max(1) as f64;
        self.0.calibration_draws = 1;
        self.0.calibration = BnCalibration::HeldOut;
        self
    }

    /// Which Δs the pool mode ranks a test image against (default
    /// [`BnCalibration::HeldOut`], the paper's); [`BnCalibration::InPool`] gives per-image
    /// p-values that are calibrated within mostly in-distribution pools.
    pub fn calibration(mut self, calibration: BnCalibration) -> Self {
        self.0.calibration = calibration;
        self
    }

    /// Whether these parameters select the per-input mode (see
    /// [`BnTestValidParams::is_per_input`]).
    pub fn is_per_input(&self) -> bool {
        self.0.is_per_input()
    }

    /// Independent batch compositions of the held-out images used to calibrate Δ (at least
    /// 1; default [`DEFAULT_CALIBRATION_DRAWS`]): each adds `n_held_out` reference Δs, so
    /// p-values get a finer grid. In the pool mode every image of a mixed batch shares the
    /// batch's statistics; more compositions average the held-out side's batch effects but
    /// not a test pool's own, and 10 draws did not bring the pool mode's flagged share to
    /// the target (`docs/results.md`, "Calibration").
    pub fn calibration_draws(mut self, draws: usize) -> Self {
        self.0.calibration_draws = draws;
        self
    }

    /// Null batches `K` of reference images behind the pool verdict ([`PoolVerdict`];
    /// default [`DEFAULT_POOL_NULL_BATCHES`], at most [`crate::MAX_NULL_WINDOWS`]); each
    /// costs one batch-statistics forward pass of `c ≤ b` images, once per pool batch size
    /// per fitted test. 0 turns the verdict off.
    pub fn pool_null_batches(mut self, k: usize) -> Self {
        self.0.pool_null_batches = k;
        self
    }

    /// Batch size `b` (at least 2).
    pub fn batch_size(mut self, b: usize) -> Self {
        self.0.batch_size = b;
        self
    }

    /// Both ratios of test images per batch, each in `[0, 1]`; `0` means running
    /// statistics (Appendix C.4's `r → 0` limit), `1` a batch of test images only.
    pub fn ratios(mut self, r1: f64, r2: f64) -> Self {
        self.0.r1 = r1;
        self.0.r2 = r2;
        self
    }

    /// Monte Carlo draws of the mixed batches per ratio (at least 1).
    pub fn draws(mut self, draws: usize) -> Self {
        self.0.draws = draws;
        self
    }

    /// Seed of every random choice.
    pub fn seed(mut self, seed: u64) -> Self {
        self.0.seed = seed;
        self
    }

    /// Fraction of the reference set held out to calibrate Δ, strictly between 0 and 1;
    /// the rest supplies the reference rows of mixed batches.
    pub fn held_out_fraction(mut self, fraction: f64) -> Self {
        self.0.held_out_fraction = fraction;
        self
    }

    /// Dequantisation, and batch size of running-statistics scoring (`r = 0`).
    pub fn scoring(mut self, scoring: ScoringParams) -> Self {
        self.0.scoring = scoring.0;
        self
    }
}

impl ParamGuard for BnTestParams {
    type Checked = BnTestValidParams;

    fn check_ref(&self) -> Result<&BnTestValidParams> {
        let p = &self.0;
        let bad = |m: String| Err(DetectError::InvalidParameter(m));
        if p.batch_size < 2 {
            return bad(format!(
                "batch size b = {} must be at least 2: batch statistics need two rows (the paper uses 64)",
                p.batch_size
            ));
        }
        check_ratio("r1", p.r1, p.batch_size)?;
        check_ratio("r2", p.r2, p.batch_size)?;
        if p.test_rows(p.r1) == p.test_rows(p.r2) {
            return bad(format!(
                "r1 = {} and r2 = {} give the same batches (round(r·b) = {} test images of b = {}): Δ compares two different ratios (the paper uses 0.1 and 0.9)",
                p.r1,
                p.r2,
                p.test_rows(p.r1),
                p.batch_size
            ));
        }
        if p.draws == 0 || p.draws > MAX_DRAWS {
            return bad(format!(
                "draws = {} must lie in 1..={MAX_DRAWS}: each draw scores every test image once more in new mixed batches, so the run's time grows with it (1 is the paper's; 10 smooths S_{{b,r}})",
                p.draws
            ));
        }
        if p.calibration_draws == 0 || p.calibration_draws > MAX_DRAWS {
            return bad(format!(
                "calibration_draws = {} must lie in 1..={MAX_DRAWS}: it is how many batch compositions of the held-out images calibrate Δ ({DEFAULT_CALIBRATION_DRAWS} is the default)",
                p.calibration_draws
            ));
        }
        if p.pool_null_batches > crate::window::MAX_NULL_WINDOWS {
            return bad(format!(
                "pool_null_batches = {} exceeds {}: each null batch is one more batch-statistics forward pass (time) and one more value kept (memory); {DEFAULT_POOL_NULL_BATCHES} is the default, 0 turns the pool verdict off",
                p.pool_null_batches,
                crate::window::MAX_NULL_WINDOWS
            ));
        }
        if p.calibration == BnCalibration::InPool {
            if p.is_per_input() {
                return bad(
                    "in-pool calibration is for the pool mode, whose test images share mixed batches: the per-input mode's Δs are calibrated on the held-out images already (drop `--bn-calibration in-pool` or use `--mode pool`)".into(),
                );
            }
            if p.calibration_draws != 1 {
                return bad(format!(
                    "calibration_draws = {} with in-pool calibration: the held-out images are scored once inside every test pool, so there is nothing to draw again (drop `--calibration-draws`)",
                    p.calibration_draws
                ));
            }
        }
        if !(p.held_out_fraction > 0.0 && p.held_out_fraction < 1.0) {
            return bad(format!(
                "held_out_fraction = {} must lie strictly between 0 and 1: part of the reference set is mixed into batches, the rest calibrates Δ (0.5 is a good default)",
                p.held_out_fraction
            ));
        }
        if p.scoring.batch_size() == 0 {
            return bad("scoring batch size is 0: pass at least 1".into());
        }
        Ok(p)
    }

    fn check(self) -> Result<BnTestValidParams> {
        self.check_ref()?;
        Ok(self.0)
    }
}

/// Checks one ratio: in `[0, 1]`, and at least one test row per batch when positive.
fn check_ratio(name: &str, r: f64, batch_size: usize) -> Result<()> {
    if !(0.0..=1.0).contains(&r) {
        return Err(DetectError::InvalidParameter(format!(
            "{name} = {r} must lie in [0, 1]: it is the fraction of test images in a mixed batch (0 = running statistics)"
        )));
    }
    if r > 0.0 && (r * batch_size as f64).round() < 1.0 {
        return Err(DetectError::InvalidParameter(format!(
            "{name} = {r} with b = {batch_size} gives round(r·b) = 0 test images per batch: raise {name} to at least {}, raise b, or use {name} = 0 for running statistics",
            0.5 / batch_size as f64
        )));
    }
    Ok(())
}

/// Everything [`BnTest::score_detailed`] computes for a test pool, per image in pool order.
#[derive(Debug, Clone, PartialEq)]
pub struct BnTestScores {
    /// `S_{b,r1}(x)`: mean log-likelihood (nats) over the draws at ratio `r1` (eq. 6).
    pub s_r1: Vec<f64>,
    /// `S_{b,r2}(x)` (eq. 6).
    pub s_r2: Vec<f64>,
    /// `Δ(x) = |S_{b,r1}(x) − S_{b,r2}(x)|` (eq. 7), the score: higher = more OoD.
    pub delta: Vec<f64>,
    /// `T(x) = #{i : Δ(xᵢ) ≤ Δ(x)}` over the held-out reference images (eq. 8): their Δs
    /// from `fit`, or with [`BnCalibration::InPool`] from this pool's batches.
    pub rank: Vec<usize>,
    /// `(1 + #{i : Δ(xᵢ) ≥ Δ(x)}) / (1 + n_ref)`.
    pub p_values: Vec<f64>,
    /// The verdict on the pool as a whole ([`PoolVerdict`], from
    /// [`FittedBnTest::pool_verdict`]): `None` in the per-input mode, with
    /// `pool_null_batches = 0`, or when the fitted state keeps no reference images.
    pub pool: Option<PoolVerdict>,
}

impl From<BnTestScores> for Scores {
    fn from(s: BnTestScores) -> Self {
        Scores {
            scores: s.delta,
            p_values: Some(s.p_values),
            pool: s.pool,
        }
    }
}

/// What [`BnTest`]'s fit computes.
#[derive(Debug, Clone)]
struct Fitted {
    /// Reference images mixed into batches (`None` when no ratio needs them).
    mixing: Option<ImageSet>,
    /// Δ of the held-out reference images, in held-out order, once per calibration draw
    /// (draw 0's first).
    deltas: Vec<f64>,
    /// The same, for ranks and p-values.
    reference: ReferenceScores,
    /// The held-out images, kept for [`BnCalibration::InPool`] (`None` otherwise).
    held_out: Option<ImageSet>,
    /// The in-distribution images the pool verdict draws its null batches from (mixing and
    /// kept held-out images; `None` when there are none or the verdict is off).
    verdict_reference: Option<ImageSet>,
    /// What the pool verdict reuses between pools.
    verdict_cache: NullCache,
}

/// The state of a fitted [`BnTest`] in a detector file: `{"type": "bn_test", "deltas":
/// [...], "mixing": images or null, "held_out": images (in-pool calibration only)}`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum BnTestState {
    /// The held-out Δs (in held-out order), the images mixed into batches and, for in-pool
    /// calibration, the held-out images.
    BnTest {
        /// Δ of the held-out images, once per calibration draw.
        deltas: Vec<f64>,
        /// The reference images mixed into batches.
        mixing: Option<StoredImages>,
        /// The held-out images of in-pool calibration (absent otherwise, and in older files).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        held_out: Option<StoredImages>,
    },
}

/// Images stored in a detector file: `[N, C, H, W]` `u8` pixels, base64.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StoredImages {
    name: String,
    shape: [usize; 4],
    pixels_base64: String,
}

impl StoredImages {
    fn from_set(set: &ImageSet) -> Self {
        Self {
            name: set.name().to_string(),
            shape: set.shape(),
            pixels_base64: BASE64.encode(set.pixels()),
        }
    }

    fn into_set(self) -> Result<ImageSet> {
        let pixels = BASE64.decode(self.pixels_base64.as_bytes()).map_err(|e| {
            DetectError::InvalidParameter(format!(
                "the stored images `{}` are not valid base64 ({e}): the detector file is damaged, fit again",
                self.name
            ))
        })?;
        Ok(ImageSet::new(self.name, pixels, self.shape, None)?)
    }
}

/// The BatchNorm permutation test (section 5). A **test on batches**: a test image is
/// scored inside mixed batches with other images of the same test pool, so its score
/// depends on that pool (see the crate docs).
///
/// **Statistic (eq. 6).** For a ratio `r > 0`, `S_{b,r}(x)` is the mean over `draws` Monte
/// Carlo draws of `ln p̃(x | batch)`, the log-likelihood (nats) of `x` in a mixed batch of
/// `m = round(r·b)` test images and `b − m` reference images, evaluated with the batch's
/// own BatchNorm statistics (`bnood_norm::mixed_batch`, eq. 5). Each draw shuffles the
/// test pool (seeded) and cuts it into groups of `m`, so **every test image is scored in
/// exactly one batch per draw**. When the pool size is not a multiple of `m`, the last
/// group is filled up with other images of the pool, drawn without replacement (seeded);
/// those filler rows shape the batch statistics but are *not* scored again (each image
/// counts once per draw, with its first appearance). The `b − m` reference rows of each
/// batch are drawn without replacement from the mixing part of the reference set.
/// For `r = 0` (Appendix C.4's cheap limit) `S_{b,0}(x) = ln p(x)` with running statistics,
/// computed once (it is deterministic).
///
/// **Score (eq. 7).** `Δ(x) = |S_{b,r1}(x) − S_{b,r2}(x)|`; higher = more OoD.
///
/// **Calibration (eq. 8).** [`fit`](Fit::fit) shuffles the reference set (seeded)
/// and holds out `round(held_out_fraction · N)` images; the rest is the mixing part. The
/// held-out images are scored exactly like a test pool, `calibration_draws` times with
/// independent batch compositions, giving `n_ref = n_held_out × calibration_draws`
/// reference Δ values. **In the pool mode these p-values are not calibrated per image:**
/// images sharing a mixed batch share its statistics, so a test pool's flags are correlated
/// and carry that pool's batch effects (at a 5 % target, 0–27 % between in-distribution
/// pools of 250 images over 40 seeds, 8.3 % on average — above the target even by an
/// interval that treats the pool as the unit — and more when a pool holds OoD images;
/// `docs/results.md`, "Calibration"). With that calibration the pool mode's decision unit
/// is the pool. [`BnCalibration::InPool`] instead shuffles the held-out images into every
/// scored pool and ranks each test image against *their* Δs from the same batches: per-image
/// p-values that are valid (conformal) when the pool is mostly in-distribution. The
/// per-input mode ([`BnTestParams::per_input`]) has exchangeable Δs and calibrated p-values.
/// A test image's rank is `T(x) = #{i : Δ(xᵢ) ≤ Δ(x)}` and its p-value
/// `(1 + #{i : Δ(xᵢ) ≥ Δ(x)}) / (1 + n_ref)`. If neither ratio needs reference rows
/// (`r ∈ {0, 1}`), nothing is mixed and the whole reference set is held out.
///
/// **Randomness.** The split, the shuffles, the fillers and the reference rows all come
/// from ChaCha8 streams derived from the seed, the pool (held-out or test), the ratio and
/// the draw: the same seed gives the same scores on every machine and thread count (up to
/// float rounding inside the backend).
#[derive(Debug, Clone)]
pub struct BnTest<M> {
    model: M,
    device: Device,
    params: BnTestValidParams,
    name: String,
    progress: ProgressHook,
}

/// A fitted [`BnTest`]: the detector, its held-out Δs and the reference images it mixes
/// into batches.
#[derive(Debug, Clone)]
pub struct FittedBnTest<M> {
    test: BnTest<M>,
    fitted: Fitted,
}

impl<M: LikelihoodModel> BnTest<M> {
    /// A BN test over `model` (trained with BatchNorm), which lives on `device`.
    ///
    /// # Errors
    /// [`DetectError::InvalidParameter`] naming the first invalid parameter.
    pub fn new(model: M, device: &Device, params: BnTestParams) -> Result<Self> {
        let params = params.check()?;
        let name = if params.is_per_input() {
            format!("BN test per-input (b = {})", params.batch_size)
        } else {
            let in_pool = match params.calibration {
                BnCalibration::InPool => ", in-pool calibration",
                BnCalibration::HeldOut => "",
            };
            format!(
                "BN test (b = {}, r1 = {}, r2 = {}{in_pool})",
                params.batch_size, params.r1, params.r2
            )
        };
        Ok(Self {
            model,
            device: device.clone(),
            params,
            name,
            progress: ProgressHook::none(),
        })
    }

    /// The model.
    pub fn model(&self) -> &M {
        &self.model
    }

    /// The checked parameters.
    pub fn params(&self) -> &BnTestValidParams {
        &self.params
    }

    /// Its name in reports, with `b` and the ratios (e.g. `"BN test (b = 64, r1 = 0.1, r2 = 0.9)"`).
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The in-distribution images the pool verdict draws null batches from: the mixing
    /// images and the kept held-out ones (`None` in the per-input mode, with the verdict
    /// off, or when the fitted state keeps no images).
    fn verdict_reference(
        &self,
        mixing: Option<&ImageSet>,
        held_out: Option<&ImageSet>,
    ) -> Result<Option<ImageSet>> {
        if self.params.is_per_input() || self.params.pool_null_batches == 0 {
            return Ok(None);
        }
        let kept: Vec<&ImageSet> = mixing.into_iter().chain(held_out).collect();
        if kept.is_empty() {
            return Ok(None);
        }
        Ok(Some(ImageSet::concat("reference (pool verdict)", &kept)?))
    }

    fn check_pool(&self, pool: &ImageSet, ratio: &Ratio) -> Result<()> {
        if ratio.test > pool.len() {
            return Err(DetectError::TestPoolTooSmall {
                pool: pool.len(),
                needed: ratio.test,
                ratio: ratio.r,
                batch_size: self.params.batch_size,
            });
        }
        Ok(())
    }

    /// `(S_{b,r1}, S_{b,r2})` of every image of `pool`; `pass` numbers the calibration
    /// draws (0 for test pools).
    fn statistics(
        &self,
        pool: &ImageSet,
        mixing: Option<&ImageSet>,
        tag: u64,
        pass: u64,
    ) -> Result<(Vec<f64>, Vec<f64>)> {
        let [r1, r2] = self.params.ratios();
        Ok((
            self.statistic_at(pool, mixing, &r1, tag, pass)?,
            self.statistic_at(pool, mixing, &r2, tag, pass)?,
        ))
    }

    /// `S_{b,r}` (eq. 6) of every image of `pool`; the pool's `tag`, the ratio, the draw and
    /// the calibration `pass` select the random stream (in the per-input mode: the ratio,
    /// the draw, the pass and the image's pixels).
    fn statistic_at(
        &self,
        pool: &ImageSet,
        mixing: Option<&ImageSet>,
        ratio: &Ratio,
        tag: u64,
        pass: u64,
    ) -> Result<Vec<f64>> {
        if ratio.test == 0 {
            return running_log_likelihoods(
                &self.model,
                pool,
                &self.params.scoring,
                &self.progress,
                &self.device,
            );
        }
        let n = pool.len();
        let m = ratio.test;
        let dequantization = self.params.scoring.dequantization();
        let mut sums = vec![0.0; n];
        let progress = &self.progress;
        progress.start(
            &format!("BN test r={:.2} on {}", ratio.r, pool.name()),
            (self.params.draws * n.div_ceil(m)) as u64,
        );
        let per_input = m == 1 && self.params.is_per_input();
        for draw in 0..self.params.draws {
            let mut rng = if pass == 0 {
                stream(self.params.seed, &[tag, ratio.r.to_bits(), draw as u64])
            } else {
                stream(
                    self.params.seed,
                    &[tag, ratio.r.to_bits(), draw as u64, pass],
                )
            };
            let mut order: Vec<usize> = (0..n).collect();
            if !per_input {
                order.shuffle(&mut rng);
            }
            for start in (0..n).step_by(m) {
                let scored = (n - start).min(m);
                let mut rows = order[start..start + scored].to_vec();
                if scored < m {
                    // Fill up the last group with other pool images; they are not scored.
                    let fillers = sample(&mut rng, start, m - scored);
                    rows.extend(fillers.iter().map(|k| order[k]));
                }
                let test_rows = images_tensor(pool, &rows, dequantization, &self.device)?;
                let reference_rows = match (ratio.reference, mixing) {
                    (0, _) => None,
                    (k, Some(mixing)) => {
                        let picked = if per_input {
                            let pixels = pool.image(rows[0]).unwrap_or_default();
                            let key = [
                                TAG_PER_INPUT,
                                ratio.r.to_bits(),
                                draw as u64,
                                pass,
                                pixel_hash(pixels),
                            ];
                            sample(&mut stream(self.params.seed, &key), mixing.len(), k).into_vec()
                        } else {
                            sample(&mut rng, mixing.len(), k).into_vec()
                        };
                        Some(images_tensor(
                            mixing,
                            &picked,
                            dequantization,
                            &self.device,
                        )?)
                    }
                    (_, None) => {
                        return Err(DetectError::InvalidParameter(format!(
                            "{} mixes reference images into its batches but has none: fit it first",
                            self.name
                        )));
                    }
                };
                let (log_probs, _) = mixed_batch(test_rows, reference_rows, |x, mode| {
                    self.model.log_prob(x, mode)
                })?; // eq. 5
                let values = host(log_probs)?;
                reject_nan(&values[..scored], pool, &rows[..scored])?;
                for (&i, v) in rows[..scored].iter().zip(&values) {
                    sums[i] += v;
                }
                progress.advance(1);
            }
        }
        let draws = self.params.draws as f64;
        Ok(sums.into_iter().map(|s| s / draws).collect())
    }
}

impl<M: LikelihoodModel> FittedBnTest<M> {
    /// The verdict on the pool `test` as a whole ([`PoolVerdict`]): `None` in the per-input
    /// mode, with `pool_null_batches = 0`, for a pool of one image, or when the fitted
    /// state keeps no reference images (ratios 0 and 1 with the paper's calibration).
    ///
    /// # Errors
    /// Model and shape errors.
    pub fn pool_verdict(&self, test: &ImageSet) -> Result<Option<PoolVerdict>> {
        let Some(reference) = &self.fitted.verdict_reference else {
            return Ok(None);
        };
        let detector = &self.test;
        check_shape(test, detector.model.image_shape())?;
        let inputs = VerdictInputs {
            model: &detector.model,
            device: &detector.device,
            scoring: &detector.params.scoring,
            progress: &detector.progress,
            seed: detector.params.seed,
            batch_size: detector.params.batch_size,
            null_batches: detector.params.pool_null_batches,
            reference,
        };
        pool_verdict(&inputs, &self.fitted.verdict_cache, test)
    }

    /// The unfitted detector.
    pub fn detector(&self) -> &BnTest<M> {
        &self.test
    }

    /// The checked parameters.
    pub fn params(&self) -> &BnTestValidParams {
        &self.test.params
    }

    /// Δ of the held-out reference images (in the order of the seeded split), once per
    /// calibration draw (`n_held_out × calibration_draws` values, draw 0's first).
    pub fn reference_deltas(&self) -> &[f64] {
        &self.fitted.deltas
    }

    /// `S_{b,r}(x)` (eq. 6) of every image of the test pool `pool` at any ratio `r ∈ [0, 1]`
    /// with this detector's `b`, draws and seed — e.g. to draw the paper's Figure 3
    /// (log-likelihood against the share of test images in the batch). At `r = r1` or
    /// `r2` it equals the `s_r1` / `s_r2` of [`score_detailed`](Self::score_detailed).
    ///
    /// # Errors
    /// [`DetectError::InvalidParameter`] for an invalid `r`, or one that needs
    /// reference rows when the detector's own ratios (0 or 1) kept none; pool-size, shape
    /// and model errors.
    pub fn statistic(&self, pool: &ImageSet, r: f64) -> Result<Vec<f64>> {
        let test = &self.test;
        check_ratio("r", r, test.params.batch_size)?;
        let ratio = test.params.ratio(r);
        check_shape(pool, test.model.image_shape())?;
        test.check_pool(pool, &ratio)?;
        let mixing = match ratio.reference {
            0 => None,
            _ => Some(self.fitted.mixing.as_ref().ok_or_else(|| {
                DetectError::InvalidParameter(format!(
                    "r = {r} needs reference images in every batch, but this detector's ratios (0 or 1) need none, so `fit` kept no reference images for mixing: use a detector whose r1 or r2 lies strictly between 0 and 1"
                ))
            })?),
        };
        test.statistic_at(pool, mixing, &ratio, TAG_TEST, 0)
    }

    /// Scores the test pool `test` with every intermediate quantity of the test.
    ///
    /// # Errors
    /// [`DetectError::TestPoolTooSmall`] if the pool holds fewer than `round(r·b)` images
    /// for a ratio `r > 0`; shape and model errors.
    pub fn score_detailed(&self, test: &ImageSet) -> Result<BnTestScores> {
        let fitted = &self.fitted;
        let detector = &self.test;
        check_shape(test, detector.model.image_shape())?;
        if test.is_empty() {
            return Err(DetectError::EmptySet(format!(
                "the test pool `{}` holds no image: give at least one",
                test.name()
            )));
        }
        let n = test.len();
        // In-pool calibration scores the held-out images in the same batches (shuffled in),
        // so the scored pool is the test images and the held-out ones together.
        let pool = match &fitted.held_out {
            Some(held_out) => {
                std::borrow::Cow::Owned(ImageSet::concat(test.name(), &[test, held_out])?)
            }
            None => std::borrow::Cow::Borrowed(test),
        };
        for ratio in detector.params.ratios() {
            detector.check_pool(&pool, &ratio)?;
        }
        let (mut s_r1, mut s_r2) =
            detector.statistics(&pool, fitted.mixing.as_ref(), TAG_TEST, 0)?;
        let mut delta: Vec<f64> = s_r1.iter().zip(&s_r2).map(|(a, b)| (a - b).abs()).collect();
        let in_pool = (fitted.held_out.is_some()).then(|| ReferenceScores::new(&delta[n..]));
        let reference = in_pool.as_ref().unwrap_or(&fitted.reference);
        let pool = match (self.pool_verdict(test)?, in_pool.is_some()) {
            (Some(verdict), true) => {
                let rank = bnood_metrics::mann_whitney(&delta[n..], &delta[..n])?;
                let p_rank = rank.p_value_two_sided;
                Some(PoolVerdict {
                    p_value: (2.0 * verdict.window_p_value.min(p_rank)).min(1.0),
                    rank: Some((p_rank, rank.auroc)),
                    ..verdict
                })
            }
            (verdict, _) => verdict,
        };
        for v in [&mut s_r1, &mut s_r2, &mut delta] {
            v.truncate(n);
        }
        let n_ref = reference.len() as f64;
        let (rank, p_values) = delta
            .iter()
            .map(|&d| {
                let (le, ge) = reference.counts_le_ge(d);
                (le, (1 + ge) as f64 / (1.0 + n_ref)) // eq. 8 and its p-value
            })
            .unzip();
        Ok(BnTestScores {
            s_r1,
            s_r2,
            delta,
            rank,
            p_values,
            pool,
        })
    }
}

impl<M: LikelihoodModel + Clone> Fit for BnTest<M> {
    type Fitted = FittedBnTest<M>;
    type State = BnTestState;

    fn fit(&self, reference: &ImageSet) -> Result<FittedBnTest<M>> {
        check_shape(reference, self.model.image_shape())?;
        let ratios = self.params.ratios();
        let needs_mixing = ratios.iter().any(|r| r.reference > 0);
        let n = reference.len();
        let (held_out, mixing) = if needs_mixing {
            let held = (self.params.held_out_fraction * n as f64).round() as usize;
            if held == 0 || held >= n {
                return Err(DetectError::EmptySet(format!(
                    "splitting the reference set `{}` of {n} image(s) with held_out_fraction {} leaves an empty part ({held} held out, {} to mix into batches): pass more reference images",
                    reference.name(),
                    self.params.held_out_fraction,
                    n.saturating_sub(held)
                )));
            }
            let mut order: Vec<usize> = (0..n).collect();
            order.shuffle(&mut stream(self.params.seed, &[TAG_SPLIT]));
            let held_out = reference
                .select(&order[..held])?
                .with_name(format!("{} (held out)", reference.name()));
            let mixing = reference
                .select(&order[held..])?
                .with_name(format!("{} (mixing)", reference.name()));
            (held_out, Some(mixing))
        } else {
            (reference.clone(), None)
        };
        for ratio in ratios {
            let mixing_len = mixing.as_ref().map_or(0, ImageSet::len);
            if ratio.reference > mixing_len {
                return Err(DetectError::ReferenceTooSmall(format!(
                    "r = {} with b = {} needs {} reference images per mixed batch but only {mixing_len} of the {n} reference images are left for mixing after holding out {}: pass more reference images, lower held_out_fraction (`--held-out-fraction`), or lower b (`--batch-size`)",
                    ratio.r,
                    self.params.batch_size,
                    ratio.reference,
                    held_out.len()
                )));
            }
            if ratio.test > held_out.len() {
                return Err(DetectError::ReferenceTooSmall(format!(
                    "r = {} with b = {} puts {} test images in every mixed batch but only {} reference images are held out to calibrate Δ: pass more reference images, raise held_out_fraction (`--held-out-fraction`), or lower b (`--batch-size`)",
                    ratio.r,
                    self.params.batch_size,
                    ratio.test,
                    held_out.len()
                )));
            }
        }
        let mut deltas = Vec::with_capacity(held_out.len() * self.params.calibration_draws);
        for pass in 0..self.params.calibration_draws as u64 {
            let (s_r1, s_r2) = self.statistics(&held_out, mixing.as_ref(), TAG_HELD_OUT, pass)?;
            deltas.extend(s_r1.iter().zip(&s_r2).map(|(a, b)| (a - b).abs()));
        }
        let held_out = (self.params.calibration == BnCalibration::InPool).then_some(held_out);
        Ok(FittedBnTest {
            test: self.clone(),
            fitted: Fitted {
                verdict_reference: self.verdict_reference(mixing.as_ref(), held_out.as_ref())?,
                mixing,
                reference: ReferenceScores::new(&deltas),
                deltas,
                held_out,
                verdict_cache: NullCache::default(),
            },
        })
    }

    fn restore(&self, state: BnTestState) -> Result<FittedBnTest<M>> {
        let BnTestState::BnTest {
            deltas,
            mixing,
            held_out,
        } = state;
        let reference = ReferenceScores::try_from(deltas.clone()).map_err(|e| {
            DetectError::InvalidParameter(format!("the saved state of {}: {e}", self.name))
        })?;
        let mixing = mixing.map(StoredImages::into_set).transpose()?;
        let held_out = held_out.map(StoredImages::into_set).transpose()?;
        for set in mixing.iter().chain(&held_out) {
            check_shape(set, self.model.image_shape())?;
        }
        let fitted = Fitted {
            verdict_reference: self.verdict_reference(mixing.as_ref(), held_out.as_ref())?,
            mixing,
            deltas,
            reference,
            held_out,
            verdict_cache: NullCache::default(),
        };
        let in_pool = self.params.calibration == BnCalibration::InPool;
        if in_pool != fitted.held_out.is_some() {
            return Err(inconsistent_state(
                &self.name,
                fitted.held_out.is_some(),
                "held-out images",
                if in_pool { "in-pool" } else { "held-out" },
                in_pool,
            ));
        }
        let needs_mixing = self.params.ratios().iter().any(|r| r.reference > 0);
        if needs_mixing != fitted.mixing.is_some() {
            return Err(inconsistent_state(
                &self.name,
                fitted.mixing.is_some(),
                "reference images for mixing",
                "ratios",
                needs_mixing,
            ));
        }
        Ok(FittedBnTest {
            test: self.clone(),
            fitted,
        })
    }

    fn set_progress(&mut self, progress: ProgressHook) {
        self.progress = progress;
    }
}

impl<M: LikelihoodModel> Detector for FittedBnTest<M> {
    fn name(&self) -> &str {
        &self.test.name
    }

    fn score(&self, test: &ImageSet) -> Result<Scores> {
        Ok(self.score_detailed(test)?.into())
    }

    fn set_progress(&mut self, progress: ProgressHook) {
        self.test.progress = progress;
    }

    fn threshold_for_fpr(&self, target_fpr: f64) -> Result<f64> {
        let reference = &self.fitted.reference;
        reference.p_value_threshold(target_fpr, 1.0 / (reference.len() + 1) as f64)
    }

    fn is_per_input(&self) -> bool {
        self.test.params.is_per_input()
    }

    fn per_image_flags_calibrated(&self) -> bool {
        self.is_per_input() || self.test.params.calibration == BnCalibration::InPool
    }

    fn state(&self) -> Box<dyn erased_serde::Serialize + '_> {
        let fitted = &self.fitted;
        Box::new(BnTestState::BnTest {
            deltas: fitted.deltas.clone(),
            mixing: fitted.mixing.as_ref().map(StoredImages::from_set),
            held_out: fitted.held_out.as_ref().map(StoredImages::from_set),
        })
    }
}

/// The error for a saved state of `detector` that `holds` (or not) `what`, where its
/// `setting` (ratios, calibration) `needs` them (or not).
fn inconsistent_state(
    detector: &str,
    holds: bool,
    what: &str,
    setting: &str,
    needs: bool,
) -> DetectError {
    DetectError::InvalidParameter(format!(
        "the saved state of {detector} {} {what}, but with its {setting} setting it needs {}: the file is inconsistent, fit the detector again",
        if holds { "holds" } else { "holds no" },
        if needs { "them" } else { "none" },
    ))
}
