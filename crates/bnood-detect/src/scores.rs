//! What detectors return: a score (and, for rank tests, a p-value) per image, with decisions
//! at a threshold and CSV/JSON output, and the metrics of two scored sets.

use crate::Result;

/// What a detector says about each test image, in the order of the scored set.
#[derive(Debug, Clone, PartialEq)]
pub struct Scores {
    /// One score per image; higher = more likely OoD.
    pub scores: Vec<f64>,
    /// One p-value per image for rank-based detectors (small = unlikely under the
    /// in-distribution reference), `None` otherwise.
    pub p_values: Option<Vec<f64>>,
    /// One verdict on the scored set as a whole, from detectors that test a pool (the BN
    /// test's pool modes); `None` otherwise.
    pub pool: Option<PoolVerdict>,
}

/// A detector's verdict on a whole test pool: "these images are not from the reference
/// distribution", with a p-value whose false-alarm rate on in-distribution pools is the
/// level asked for.
///
/// The BN test's pool modes compute it with the window statistic of
/// [`crate::WindowTest`] (the paper's effect, measured on the pool as a batch): the pool is
/// shuffled (seeded) and cut into `g` batches of `c ≤ b` images (`c` as equal as possible,
/// the last batch filled up with other pool images), and
/// `T = mean over batches of mean over rows (S₀(x) − S₁(x))` in nats, where `S₀` is
/// `ln p(x)` with running statistics and `S₁` with the batch's own statistics (`r = 1`):
/// OoD rows pull the batch statistics away from the running ones and lower `S₁`. Its null
/// comes from `K` batches of `c` in-distribution images the fitted test keeps (the mixing
/// part of the reference, and the held-out images with in-pool calibration), each drawn
/// without replacement and scored the same way; the p-value is
/// two-sided: `min(1, 2·min(p₊, p₋))` with `p₊ = (1 + #{null ≥ T}) / (1 + K)` and `p₋` the
/// same for `≤`, for `g = 1` (Monte Carlo); for `g > 1` the null values are
/// [`crate::POOL_RESAMPLES`] means of `g` null batch statistics (drawn with replacement).
/// Two-sided, unlike `bnood monitor`'s window test: OoD rows usually raise `T`, but a pool
/// that is OoD as a whole can fit its own batch statistics better than the running ones fit
/// it, which lowers `T` far below the null (`docs/results.md`, "The pool verdict").
///
/// With in-pool calibration a second test comes free: the two-sided Mann–Whitney U test of
/// the pool's Δs against the held-out images' Δs from the same mixed batches
/// (exchangeable on an in-distribution pool). It finds pools whose images differ one by one
/// where the batch statistic moves little, and misses pools whose batch effect reaches the
/// held-out images too. The verdict's `p_value` is then the Bonferroni combination
/// `min(1, 2·min(p_window, p_rank))`, whose false-alarm rate is at most α when each test's
/// is at most α/2.
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct PoolVerdict {
    /// p-value of "the pool is in-distribution" (small = out of distribution): the window
    /// test's, or with in-pool calibration the Bonferroni combination of both tests.
    pub p_value: f64,
    /// The window statistic's two-sided p-value.
    pub window_p_value: f64,
    /// With in-pool calibration: the rank test's two-sided p-value and its AUROC (pool Δs
    /// above the held-out images' Δs: > 0.5); `None` otherwise.
    pub rank: Option<(f64, f64)>,
    /// The pool's statistic `T` (nats per image).
    pub statistic: f64,
    /// Mean of the null batch statistics (nats per image): `T`'s expectation on an
    /// in-distribution pool.
    pub null_mean: f64,
    /// Standard deviation of one null batch statistic (nats per image); `T`'s is about
    /// `null_sd / √batches`.
    pub null_sd: f64,
    /// Batches the pool was cut into, `g`.
    pub batches: usize,
    /// Images per batch, `c`.
    pub batch_size: usize,
    /// Null batches of reference images, `K`.
    pub null_batches: usize,
    /// Images in the pool.
    pub pool_size: usize,
    /// In-distribution reference images the null batches were drawn from.
    pub reference_size: usize,
}

impl PoolVerdict {
    /// Whether the pool is declared out of distribution at level `alpha` (`p ≤ α`).
    pub fn is_ood(&self, alpha: f64) -> bool {
        self.p_value <= alpha
    }

    /// The verdict as JSON: its fields, `alpha` and the decision `ood`.
    pub fn to_json(&self, alpha: f64) -> serde_json::Value {
        serde_json::json!({
            "p_value": self.p_value,
            "window_p_value": self.window_p_value,
            "rank_p_value": self.rank.map(|r| r.0),
            "rank_auroc": self.rank.map(|r| r.1),
            "statistic": self.statistic,
            "null_mean": self.null_mean,
            "null_sd": self.null_sd,
            "batches": self.batches,
            "batch_size": self.batch_size,
            "null_batches": self.null_batches,
            "pool_size": self.pool_size,
            "reference_size": self.reference_size,
            "alpha": alpha,
            "ood": self.is_ood(alpha),
            "test": "BN window statistic of the pool, mean of ln p (running statistics) - ln p (the batch's own statistics) in nats, against null batches of reference images, two-sided; with in-pool calibration combined (Bonferroni) with the two-sided Mann-Whitney U test of the pool's deltas against the held-out images' from the same batches",
        })
    }
}

impl Scores {
    /// Number of scored images.
    pub fn len(&self) -> usize {
        self.scores.len()
    }

    /// Whether no image was scored.
    pub fn is_empty(&self) -> bool {
        self.scores.is_empty()
    }

    /// The scores of per-image detectors: `scores` with their p-values (if any) and no pool
    /// verdict.
    pub fn new(scores: Vec<f64>, p_values: Option<Vec<f64>>) -> Self {
        Self {
            scores,
            p_values,
            pool: None,
        }
    }

    /// The scores (and p-values) of the images in `range` of the scored set (a part of a
    /// pool has no pool verdict).
    ///
    /// # Panics
    /// If `range` reaches past [`len`](Self::len).
    pub fn slice(&self, range: std::ops::Range<usize>) -> Scores {
        Scores {
            scores: self.scores[range.clone()].to_vec(),
            p_values: self.p_values.as_ref().map(|p| p[range].to_vec()),
            pool: None,
        }
    }

    /// Which images are flagged as OoD at `threshold`, a value from
    /// [`Detector::threshold_for_fpr`](crate::Detector::threshold_for_fpr) of the same detector: with p-values, `p ≤ threshold`;
    /// without, `score > threshold`.
    pub fn decisions(&self, threshold: f64) -> Vec<bool> {
        match &self.p_values {
            Some(p) => p.iter().map(|&p| p <= threshold).collect(),
            None => self.scores.iter().map(|&s| s > threshold).collect(),
        }
    }
}

/// Where a scored image came from, so that an output row can be traced back to it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImageOrigin {
    /// Index of the image in the file, folder or catalogue set it was read from (not its
    /// position in a random subset).
    pub index: usize,
    /// Its file name, for images read from a folder of PNG files.
    pub file: Option<String>,
}

impl Scores {
    /// The scores as CSV, one line per image after a header: `index,score,p_value,ood`,
    /// with `ood` the decision at `threshold` ([`decisions`](Self::decisions)) and an
    /// empty p-value for detectors without p-values. `index` is the position in the scored
    /// set; [`to_csv_traced`](Self::to_csv_traced) gives the images' origins instead.
    pub fn to_csv(&self, threshold: f64) -> String {
        self.to_csv_traced(threshold, None)
    }

    /// [`to_csv`](Self::to_csv) with `index` taken from `origins` (one per image, in the
    /// order scored) and, when they carry file names, a `file` column after it.
    pub fn to_csv_traced(&self, threshold: f64, origins: Option<&[ImageOrigin]>) -> String {
        let with_files = origins.is_some_and(|o| o.iter().any(|o| o.file.is_some()));
        let mut s = String::from(if with_files {
            "index,file,score,p_value,ood\n"
        } else {
            "index,score,p_value,ood\n"
        });
        for (i, (score, ood)) in self
            .scores
            .iter()
            .zip(self.decisions(threshold))
            .enumerate()
        {
            let p = self
                .p_values
                .as_ref()
                .map_or(String::new(), |p| p[i].to_string());
            let origin = origins.and_then(|o| o.get(i));
            let index = origin.map_or(i, |o| o.index);
            if with_files {
                let file = origin.and_then(|o| o.file.as_deref()).unwrap_or("");
                s.push_str(&format!("{index},{},{score},{p},{ood}\n", csv_field(file)));
            } else {
                s.push_str(&format!("{index},{score},{p},{ood}\n"));
            }
        }
        s
    }

    /// The scores as a JSON document: the detector's and the test set's names, the
    /// threshold and what it applies to, and a row per image (`index`, `score`, `p_value`,
    /// `ood`).
    pub fn to_json(&self, detector: &str, test_set: &str, threshold: f64) -> serde_json::Value {
        self.to_json_traced(detector, test_set, threshold, None)
    }

    /// [`to_json`](Self::to_json) with each row's `index` (and `file`, when known) taken from
    /// `origins`.
    pub fn to_json_traced(
        &self,
        detector: &str,
        test_set: &str,
        threshold: f64,
        origins: Option<&[ImageOrigin]>,
    ) -> serde_json::Value {
        let rows: Vec<serde_json::Value> = self
            .decisions(threshold)
            .into_iter()
            .enumerate()
            .map(|(i, ood)| {
                let p = self.p_values.as_ref().map(|p| p[i]);
                let origin = origins.and_then(|o| o.get(i));
                let index = origin.map_or(i, |o| o.index);
                let mut row = serde_json::json!({"index": index, "score": self.scores[i], "p_value": p, "ood": ood});
                if let Some(file) = origin.and_then(|o| o.file.as_deref()) {
                    row["file"] = serde_json::Value::from(file);
                }
                row
            })
            .collect();
        serde_json::json!({
            "detector": detector,
            "test_set": test_set,
            "threshold": threshold,
            "threshold_applies_to": if self.p_values.is_some() { "p_value (flag if ≤)" } else { "score (flag if >)" },
            "rows": rows,
        })
    }
}

/// A CSV field, quoted when it holds a comma, a quote or a line break.
fn csv_field(text: &str) -> String {
    if text.contains([',', '"', '\n', '\r']) {
        format!("\"{}\"", text.replace('"', "\"\""))
    } else {
        text.to_string()
    }
}

/// AUROC, average precision, AUPR-in/out and FPR@95%TPR of a detector from the scores of
/// an in-distribution test set and an OoD test set (scored separately: each is its own
/// test pool).
///
/// # Errors
/// [`DetectError::Metrics`](crate::DetectError::Metrics) for empty sets or NaN scores.
pub fn evaluate(in_distribution: &Scores, ood: &Scores) -> Result<bnood_metrics::OodMetrics> {
    Ok(bnood_metrics::evaluate(
        &in_distribution.scores,
        &ood.scores,
    )?)
}
