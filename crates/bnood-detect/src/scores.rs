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

    /// The scores (and p-values) of the images in `range` of the scored set.
    ///
    /// # Panics
    /// If `range` reaches past [`len`](Self::len).
    pub fn slice(&self, range: std::ops::Range<usize>) -> Scores {
        Scores {
            scores: self.scores[range.clone()].to_vec(),
            p_values: self.p_values.as_ref().map(|p| p[range].to_vec()),
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
