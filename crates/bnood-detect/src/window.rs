//! The window (pool) test: one p-value per window of `M` inputs for "this window contains
//! out-of-distribution inputs", from the BN test's batch statistics, with the classical
//! two-sample tests of drift detectors as baselines on the same windows.

use burn::tensor::Device;
use rand::seq::SliceRandom;
use rand::seq::index::sample;
use serde::{Deserialize, Serialize};

use bnood_data::ImageSet;
use bnood_models::LikelihoodModel;

use crate::params::{ParamGuard, ScoringParams, ValidScoringParams};
use crate::reference::{ReferenceScores, fitted};
use crate::scoring::{batch_gap_sum, check_shape, reject_nan, running_log_likelihoods, stream};
use crate::two_sample::{GaussianKernel, MmdReference, ks_statistic_sorted, sorted_sample};
use crate::{DetectError, ProgressHook, Result};

/// Stream tags: the reference split and each null window draw from their own streams.
const TAG_SPLIT: u64 = 11;
const TAG_NULL: u64 = 12;

/// The most null windows ([`WindowTestParams::null_windows`]) a window test draws: each is
/// scored like a test window (time) and kept for the p-values (memory).
pub const MAX_NULL_WINDOWS: usize = 100_000;

/// What a [`WindowTest`] computes for a window of `M` inputs (higher = more evidence of OoD
/// inputs). Each gets its p-value from the same Monte Carlo null (see [`WindowTest`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[cfg_attr(feature = "cli", derive(clap::ValueEnum))]
pub enum WindowStatistic {
    /// The BN window statistic `T = mean_{x ∈ window} (S₀(x) − S₁(x))` in nats: `S₀` is
    /// `ln p(x)` with running statistics, `S₁` with the window's own BatchNorm statistics
    /// (the paper's `r = 1` batch, eq. 5). OoD rows pull the batch statistics away from
    /// the running ones, which lowers `S₁` of every row of the window.
    #[serde(rename = "bn")]
    #[cfg_attr(feature = "cli", value(name = "bn"))]
    Bn,
    /// The two-sample Kolmogorov–Smirnov statistic between the window's `S₀` values and
    /// those of the reference's comparison sample ([`crate::ks_statistic`]).
    #[serde(rename = "ks")]
    #[cfg_attr(feature = "cli", value(name = "ks"))]
    KsLogP,
    /// The unbiased MMD² between the window's pixels and the comparison sample's, Gaussian
    /// kernel with the median-heuristic bandwidth of the comparison sample
    /// ([`crate::mmd2_unbiased`]).
    #[serde(rename = "mmd")]
    #[cfg_attr(feature = "cli", value(name = "mmd"))]
    MmdPixels,
}

impl WindowStatistic {
    /// All three, BN first.
    pub const ALL: [WindowStatistic; 3] = [Self::Bn, Self::KsLogP, Self::MmdPixels];

    /// The short name of the command line and of output rows: `bn`, `ks`, `mmd`.
    pub fn id(self) -> &'static str {
        match self {
            Self::Bn => "bn",
            Self::KsLogP => "ks",
            Self::MmdPixels => "mmd",
        }
    }

    /// A title for tables.
    pub fn title(self) -> &'static str {
        match self {
            Self::Bn => "BN window test",
            Self::KsLogP => "KS on log p",
            Self::MmdPixels => "MMD on pixels",
        }
    }

    /// Whether it compares the window with the reference's comparison sample.
    fn needs_comparison(self) -> bool {
        !matches!(self, Self::Bn)
    }
}

/// Checked [`WindowTestParams`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct WindowTestValidParams {
    window: usize,
    statistics: Vec<WindowStatistic>,
    null_windows: usize,
    alpha: f64,
    batch_size: usize,
    comparison_size: usize,
    seed: u64,
    scoring: ValidScoringParams,
}

impl WindowTestValidParams {
    /// Inputs per window, `M`.
    pub fn window(&self) -> usize {
        self.window
    }

    /// The statistics computed for every window, in output order.
    pub fn statistics(&self) -> &[WindowStatistic] {
        &self.statistics
    }

    /// Monte Carlo null windows `K`.
    pub fn null_windows(&self) -> usize {
        self.null_windows
    }

    /// Level `α` of the decisions (`p ≤ α` is flagged).
    pub fn alpha(&self) -> f64 {
        self.alpha
    }

    /// Most rows per batch-statistics forward pass.
    pub fn batch_size(&self) -> usize {
        self.batch_size
    }

    /// Reference images set aside as the comparison sample of KS and MMD.
    pub fn comparison_size(&self) -> usize {
        self.comparison_size
    }

    /// Seed of every random choice.
    pub fn seed(&self) -> u64 {
        self.seed
    }

    /// How `S₀` is computed (dequantisation, running-statistics batch size).
    pub fn scoring(&self) -> &ValidScoringParams {
        &self.scoring
    }

    /// The chunks a window is cut into for the BN statistic: `c = ⌈M/b⌉` consecutive runs of
    /// near-equal length (they differ by at most one row; each ≥ 2 since `b ≥ 4`).
    pub fn chunks(&self) -> Vec<std::ops::Range<usize>> {
        let c = self.window.div_ceil(self.batch_size);
        (0..c)
            .map(|k| (k * self.window / c)..((k + 1) * self.window / c))
            .collect()
    }

    fn needs_comparison(&self) -> bool {
        self.statistics.iter().any(|s| s.needs_comparison())
    }
}

/// Unchecked parameters of a [`WindowTest`]: windows of `M = 64`, the BN statistic only,
/// `K = 200` null windows, `α = 0.05`, batches of at most 256 rows, a comparison sample of
/// 500 reference images (KS, MMD), seed 0, midpoint dequantisation.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct WindowTestParams(WindowTestValidParams);

impl Default for WindowTestParams {
    fn default() -> Self {
        Self(WindowTestValidParams {
            window: 64,
            statistics: vec![WindowStatistic::Bn],
            null_windows: 200,
            alpha: 0.05,
            batch_size: 256,
            comparison_size: 500,
            seed: 0,
            scoring: ValidScoringParams::default(),
        })
    }
}

impl WindowTestParams {
    /// The defaults (see the type).
    pub fn new() -> Self {
        Self::default()
    }

    /// Inputs per window `M` (at least 2: batch statistics need two rows).
    pub fn window(mut self, m: usize) -> Self {
        self.0.window = m;
        self
    }

    /// The statistics to compute, each with its own p-value (at least one, no repeats).
    pub fn statistics(mut self, statistics: &[WindowStatistic]) -> Self {
        self.0.statistics = statistics.to_vec();
        self
    }

    /// Monte Carlo null windows `K`; the smallest p-value is `1/(K + 1)`, so `K ≥ 1/α − 1`.
    pub fn null_windows(mut self, k: usize) -> Self {
        self.0.null_windows = k;
        self
    }

    /// Level `α` of the decisions, strictly between 0 and 1.
    pub fn alpha(mut self, alpha: f64) -> Self {
        self.0.alpha = alpha;
        self
    }

    /// Most rows per batch-statistics forward pass `b` (at least 4); a window of `M > b`
    /// inputs is cut into `⌈M/b⌉` chunks, each with its own statistics.
    pub fn batch_size(mut self, b: usize) -> Self {
        self.0.batch_size = b;
        self
    }

    /// Reference images set aside as the comparison sample of KS and MMD (at least 2; not
    /// used by the BN statistic alone).
    pub fn comparison_size(mut self, n: usize) -> Self {
        self.0.comparison_size = n;
        self
    }

    /// Seed of every random choice (the reference split, the null windows).
    pub fn seed(mut self, seed: u64) -> Self {
        self.0.seed = seed;
        self
    }

    /// How `S₀` is computed.
    pub fn scoring(mut self, scoring: ScoringParams) -> Self {
        self.0.scoring = scoring.0;
        self
    }
}

impl ParamGuard for WindowTestParams {
    type Checked = WindowTestValidParams;

    fn check_ref(&self) -> Result<&WindowTestValidParams> {
        let p = &self.0;
        let bad = |m: String| Err(DetectError::InvalidParameter(m));
        if p.window < 2 {
            return bad(format!(
                "window size M = {} must be at least 2: a window's batch statistics need two inputs",
                p.window
            ));
        }
        if p.statistics.is_empty() {
            return bad("no window statistic chosen: pick at least one of bn, ks, mmd".into());
        }
        for (i, s) in p.statistics.iter().enumerate() {
            if p.statistics[..i].contains(s) {
                return bad(format!("window statistic `{}` is named twice", s.id()));
            }
        }
        if !(p.alpha > 0.0 && p.alpha < 1.0) {
            return bad(format!(
                "level α = {} must lie strictly between 0 and 1 (e.g. 0.05)",
                p.alpha
            ));
        }
        // The smallest attainable p-value is 1/(K + 1); below α nothing could be flagged.
        let needed = (1.0 / p.alpha - 1.0 - 1e-9).ceil().max(1.0) as usize;
        if p.null_windows > MAX_NULL_WINDOWS {
            return bad(format!(
                "K = {} null windows is above the limit of {MAX_NULL_WINDOWS}: each null window is scored like a test window, and {MAX_NULL_WINDOWS} already resolve p-values to 1/{}; use a few hundred to a few thousand",
                p.null_windows,
                MAX_NULL_WINDOWS + 1
            ));
        }
        if p.null_windows < needed {
            return bad(format!(
                "K = {} null windows give p-values of at least 1/(K + 1) = {:.4}, above α = {}: use at least {needed} null windows (a few hundred give a smooth null)",
                p.null_windows,
                1.0 / (p.null_windows + 1) as f64,
                p.alpha
            ));
        }
        if p.batch_size < 4 {
            return bad(format!(
                "batch size b = {} must be at least 4, so that every chunk of a window holds two or more rows",
                p.batch_size
            ));
        }
        if p.needs_comparison() && p.comparison_size < 2 {
            return bad(format!(
                "comparison size {} must be at least 2 for the KS and MMD statistics",
                p.comparison_size
            ));
        }
        if p.scoring.batch_size() == 0 {
            return bad("scoring batch size is 0: pass at least 1".into());
        }
        Ok(p)
    }

    fn check(self) -> Result<WindowTestValidParams> {
        self.check_ref()?;
        Ok(self.0)
    }
}

/// One statistic's verdict on one window.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct WindowOutcome {
    /// Which statistic.
    pub statistic: WindowStatistic,
    /// Its value on the window (higher = more evidence of OoD inputs).
    pub value: f64,
    /// `(1 + #{null ≥ value}) / (1 + K)`.
    pub p_value: f64,
    /// `p_value ≤ α`.
    pub flagged: bool,
}

/// What [`WindowTest::fit`] keeps.
#[derive(Debug, Clone)]
struct Fitted {
    /// `S₀` of the comparison sample, ascending (KS).
    comparison_log_p: Vec<f64>,
    /// The comparison sample's pixels (MMD).
    mmd: Option<MmdReference>,
    /// The null statistics, one set per statistic in parameter order.
    nulls: Vec<ReferenceScores>,
    /// Images the null windows were drawn from.
    calibration_size: usize,
}

/// The window test: given windows of `M` inputs, one p-value per window for "this window
/// contains out-of-distribution inputs", for one or more [`WindowStatistic`]s.
///
/// **Fit.** [`fit`](Self::fit) shuffles the reference set (held-out in-distribution images;
/// seeded) and, when KS or MMD is asked for, sets the first `comparison_size` images aside
/// as their comparison sample; the rest is the *calibration* set. `S₀` (running statistics)
/// is computed once per reference image. Then `K` null windows of `M` calibration images are
/// drawn — each without replacement, independently of the others, from its own seeded
/// stream — and every statistic is computed on each.
///
/// **Test.** [`test`](Self::test) computes the statistics of a window of exactly `M`
/// inputs; the p-value of a value `T` is `(1 + #{null ≥ T}) / (1 + K)`, and the window is
/// flagged when `p ≤ α`. When the window and the null windows are exchangeable (the window
/// is in-distribution and drawn like them) `P(p ≤ α) ≤ α`; the null windows come from a
/// finite calibration set of `N` images, so keep `N` well above `M` (≥ 10·M: the spread of a
/// window mean is then within about 5 % of that of fresh draws).
///
/// **Why `mean(S₀ − S₁)`.** `S₁` alone would inherit log-likelihood's failure (MNIST gets a
/// *higher* `ln p` than Fashion-MNIST); the difference cancels each image's own likelihood
/// level and keeps what the batch statistics add. The window's own statistics are the
/// paper's `r = 1` batch; mixing reference rows in (`r < 1`) would dilute a window that is
/// already mostly in-distribution, and a window of `M ≥ b` has no room for them. The
/// measured power of this choice against KS and MMD is in `docs/results.md`, "Window test".
///
/// **Chunks.** Windows longer than `b` (`batch_size`) are scored in `⌈M/b⌉` consecutive
/// chunks of near-equal length, each with its own batch statistics, null windows alike.
#[derive(Debug)]
pub struct WindowTest<M> {
    model: M,
    device: Device,
    params: WindowTestValidParams,
    progress: ProgressHook,
    fitted: Option<Fitted>,
}

impl<M: LikelihoodModel> WindowTest<M> {
    /// A window test over `model` (trained with BatchNorm), which lives on `device`.
    ///
    /// # Errors
    /// [`DetectError::InvalidParameter`] naming the first invalid parameter.
    pub fn new(model: M, device: &Device, params: WindowTestParams) -> Result<Self> {
        Ok(Self {
            model,
            device: device.clone(),
            params: params.check()?,
            progress: ProgressHook::none(),
            fitted: None,
        })
    }

    /// The checked parameters.
    pub fn params(&self) -> &WindowTestValidParams {
        &self.params
    }

    /// The model.
    pub fn model(&self) -> &M {
        &self.model
    }

    /// Reports the progress of later fits and tests to `progress`.
    pub fn set_progress(&mut self, progress: ProgressHook) {
        self.progress = progress;
    }

    /// The null statistics of `statistic` (ascending), once fitted and if it was asked for.
    pub fn null(&self, statistic: WindowStatistic) -> Option<&[f64]> {
        let fitted = self.fitted.as_ref()?;
        let k = self
            .params
            .statistics
            .iter()
            .position(|&s| s == statistic)?;
        Some(fitted.nulls[k].values())
    }

    /// The MMD kernel's bandwidth `σ` (median heuristic on the comparison sample, pixel
    /// units), once fitted with the MMD statistic.
    pub fn mmd_bandwidth(&self) -> Option<f64> {
        Some(self.fitted.as_ref()?.mmd.as_ref()?.kernel().sigma())
    }

    /// Images of the calibration set the null windows were drawn from, once fitted.
    pub fn calibration_size(&self) -> Option<usize> {
        self.fitted.as_ref().map(|f| f.calibration_size)
    }

    /// `S₀(x) = ln p(x)` in nats with running statistics for every image of `set`, as
    /// [`test_with_log_p`](Self::test_with_log_p) and
    /// [`fit_with_log_p`](Self::fit_with_log_p) take it.
    ///
    /// # Errors
    /// Shape and model errors.
    pub fn running_log_p(&self, set: &ImageSet) -> Result<Vec<f64>> {
        running_log_likelihoods(
            &self.model,
            set,
            &self.params.scoring,
            &self.progress,
            &self.device,
        )
    }

    /// Fits the test on `reference`, held-out in-distribution images (see the type).
    ///
    /// # Errors
    /// [`DetectError::ReferenceTooSmall`] when the calibration set would hold fewer than `M`
    /// images; shape and model errors.
    pub fn fit(&mut self, reference: &ImageSet) -> Result<()> {
        check_shape(reference, self.model.image_shape())?;
        self.check_reference_size(reference)?;
        let log_p = self.running_log_p(reference)?;
        self.fit_with_log_p(reference, &log_p)
    }

    /// [`fit`](Self::fit) with `S₀` of the reference images already computed
    /// ([`running_log_p`](Self::running_log_p)), for callers who fit several tests on one
    /// reference set.
    ///
    /// # Errors
    /// As [`fit`](Self::fit); [`DetectError::InvalidParameter`] when `log_p` does not hold
    /// one value per image.
    pub fn fit_with_log_p(&mut self, reference: &ImageSet, log_p: &[f64]) -> Result<()> {
        check_shape(reference, self.model.image_shape())?;
        check_log_p(reference, log_p)?;
        self.check_reference_size(reference)?;
        let p = &self.params;
        let n = reference.len();
        let mut order: Vec<usize> = (0..n).collect();
        order.shuffle(&mut stream(p.seed, &[TAG_SPLIT]));
        let n_cmp = if p.needs_comparison() {
            p.comparison_size
        } else {
            0
        };
        let (comparison, calibration) = order.split_at(n_cmp);
        let comparison_log_p = comparison.iter().map(|&i| log_p[i]).collect::<Vec<_>>();
        let comparison_log_p = if n_cmp > 0 {
            sorted_sample("comparison", &comparison_log_p)?
        } else {
            Vec::new()
        };
        let mmd = if p.statistics.contains(&WindowStatistic::MmdPixels) {
            let rows = pixels(reference, comparison);
            let kernel = GaussianKernel::median_heuristic(&rows, reference.dims_per_image())?;
            Some(MmdReference::new(rows, reference.dims_per_image(), kernel)?)
        } else {
            None
        };
        let mut fitted = Fitted {
            comparison_log_p,
            mmd,
            nulls: Vec::new(),
            calibration_size: calibration.len(),
        };
        let k = p.null_windows;
        let mut null_values = vec![Vec::with_capacity(k); p.statistics.len()];
        self.progress.start(
            &format!("{k} null windows of {} on {}", p.window, reference.name()),
            k as u64,
        );
        for w in 0..k {
            let mut rng = stream(p.seed, &[TAG_NULL, w as u64]);
            let rows: Vec<usize> = sample(&mut rng, calibration.len(), p.window)
                .iter()
                .map(|i| calibration[i])
                .collect();
            let window_log_p: Vec<f64> = rows.iter().map(|&i| log_p[i]).collect();
            let values = self.statistics(&fitted, reference, &rows, &window_log_p)?;
            for (null, v) in null_values.iter_mut().zip(values) {
                null.push(v);
            }
            self.progress.advance(1);
        }
        fitted.nulls = null_values
            .iter()
            .map(|v| ReferenceScores::new(v))
            .collect();
        self.fitted = Some(fitted);
        Ok(())
    }

    /// The verdict of every statistic (in parameter order) on `window`, which must hold
    /// exactly `M` images.
    ///
    /// # Errors
    /// [`DetectError::NotFitted`]; [`DetectError::InvalidParameter`] for a window of
    /// another size; shape and model errors.
    pub fn test(&self, window: &ImageSet) -> Result<Vec<WindowOutcome>> {
        check_shape(window, self.model.image_shape())?;
        self.check_window(window)?;
        let log_p = if self.params.statistics == [WindowStatistic::MmdPixels] {
            vec![0.0; window.len()] // MMD alone never reads S₀
        } else {
            self.running_log_p(window)?
        };
        self.test_with_log_p(window, &log_p)
    }

    /// [`test`](Self::test) with `S₀` of the window's images already computed
    /// ([`running_log_p`](Self::running_log_p)), for callers who test the same images in
    /// many windows.
    ///
    /// # Errors
    /// As [`test`](Self::test); [`DetectError::InvalidParameter`] when `log_p` does not
    /// hold one value per image.
    pub fn test_with_log_p(&self, window: &ImageSet, log_p: &[f64]) -> Result<Vec<WindowOutcome>> {
        let fitted = fitted(self.fitted.as_ref(), "window test", "test")?;
        check_shape(window, self.model.image_shape())?;
        self.check_window(window)?;
        check_log_p(window, log_p)?;
        let rows: Vec<usize> = (0..window.len()).collect();
        let values = self.statistics(fitted, window, &rows, log_p)?;
        let k = self.params.null_windows as f64;
        Ok(self
            .params
            .statistics
            .iter()
            .zip(values)
            .zip(&fitted.nulls)
            .map(|((&statistic, value), null)| {
                let (_, ge) = null.counts_le_ge(value);
                let p_value = (1 + ge) as f64 / (1.0 + k);
                WindowOutcome {
                    statistic,
                    value,
                    p_value,
                    flagged: p_value <= self.params.alpha,
                }
            })
            .collect())
    }

    /// Every statistic on the window `rows` of `set`, whose `S₀` values are `log_p`.
    fn statistics(
        &self,
        fitted: &Fitted,
        set: &ImageSet,
        rows: &[usize],
        log_p: &[f64],
    ) -> Result<Vec<f64>> {
        self.params
            .statistics
            .iter()
            .map(|s| match s {
                WindowStatistic::Bn => self.bn_statistic(set, rows, log_p),
                WindowStatistic::KsLogP => {
                    let window = sorted_sample("window", log_p)?;
                    Ok(ks_statistic_sorted(&window, &fitted.comparison_log_p))
                }
                WindowStatistic::MmdPixels => fitted
                    .mmd
                    .as_ref()
                    .expect("fit builds the MMD comparison whenever MMD is asked for")
                    .mmd2(&pixels(set, rows)),
            })
            .collect()
    }

    /// `T = mean(S₀ − S₁)` over the window `rows` of `set`, `S₁` in the window's own batch
    /// statistics, chunk by chunk.
    fn bn_statistic(&self, set: &ImageSet, rows: &[usize], log_p: &[f64]) -> Result<f64> {
        let dequantization = self.params.scoring.dequantization();
        let mut sum = 0.0;
        for chunk in self.params.chunks() {
            sum += batch_gap_sum(
                &self.model,
                &self.device,
                dequantization,
                set,
                &rows[chunk.clone()],
                &log_p[chunk],
            )?;
        }
        Ok(sum / rows.len() as f64)
    }

    fn check_window(&self, window: &ImageSet) -> Result<()> {
        if window.len() != self.params.window {
            return Err(DetectError::InvalidParameter(format!(
                "window `{}` holds {} image(s) but the test was fitted for windows of M = {}: pass exactly {} images (null windows of another size do not calibrate it)",
                window.name(),
                window.len(),
                self.params.window,
                self.params.window
            )));
        }
        Ok(())
    }

    fn check_reference_size(&self, reference: &ImageSet) -> Result<()> {
        let p = &self.params;
        let n_cmp = if p.needs_comparison() {
            p.comparison_size
        } else {
            0
        };
        let n = reference.len();
        if n < n_cmp + p.window {
            return Err(DetectError::ReferenceTooSmall(format!(
                "`{}` holds {n} image(s), but {n_cmp} go to the comparison sample and the null windows need at least M = {} more (better ≥ 10·M): pass more reference images (`--reference-size`), a smaller comparison sample (`--comparison-size`) or a smaller window (`--window`)",
                reference.name(),
                p.window
            )));
        }
        Ok(())
    }
}

/// Fails unless `log_p` holds one finite-or-infinite, non-NaN value per image of `set`.
fn check_log_p(set: &ImageSet, log_p: &[f64]) -> Result<()> {
    if log_p.len() != set.len() {
        return Err(DetectError::InvalidParameter(format!(
            "{} log-likelihood(s) given for the {} image(s) of `{}`: pass one per image",
            log_p.len(),
            set.len(),
            set.name()
        )));
    }
    let indices: Vec<usize> = (0..set.len()).collect();
    reject_nan(log_p, set, &indices)
}

/// The pixels of images `rows` of `set`, flattened, as f32.
fn pixels(set: &ImageSet, rows: &[usize]) -> Vec<f32> {
    let d = set.dims_per_image();
    let mut out = Vec::with_capacity(rows.len() * d);
    for &i in rows {
        let image = set.image(i).expect("row indices come from the set itself");
        out.extend(image.iter().map(|&p| f32::from(p)));
    }
    out
}
