//! The learning curve a training run writes beside its checkpoint (`<file>.curve.csv`): one
//! row per held-out evaluation, and the schedule decisions (learning-rate halvings, the
//! stop when the curve is flat) that follow from those rows alone, so that a resumed run
//! takes exactly the decisions an uninterrupted one would have taken.
//!
//! Columns: `step`, `epoch` (steps / steps per epoch), `lr` (the learning rate of the last
//! step before the row), `train_bpd` (mean training loss in bits/dim of this run's steps
//! since the previous row), `seconds` (training wall time of the steps before the row,
//! summed over runs; the steps a run took after its last row, before it ended, are not
//! counted: their time is in that run's own report), then
//! one column per held-out metric in bits/dim, in the order the evaluator returns them (the
//! first is the one the flat rule watches).

use std::path::{Path, PathBuf};

use serde::Serialize;

use crate::ModelError;

/// Path of the learning curve of checkpoint `path`: `<file>.curve.csv` (its plot, drawn by
/// `bnood train` and `bnood report`, is the same path with `.png`).
pub fn curve_path(path: &Path) -> PathBuf {
    crate::checkpoint::with_suffix(path, ".curve.csv")
}

/// The fixed columns before the metrics.
pub const FIXED_COLUMNS: [&str; 5] = ["step", "epoch", "lr", "train_bpd", "seconds"];

/// One held-out evaluation.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct CurveRow {
    /// Optimiser steps taken when the evaluation ran.
    pub step: usize,
    /// `step / steps_per_epoch`.
    pub epoch: f64,
    /// Learning rate of the last step before the evaluation.
    pub lr: f64,
    /// Mean training loss (bits/dim) of this run's steps since the previous row (`NaN` when
    /// this run took none, e.g. the evaluation of a resumed checkpoint).
    pub train_bpd: f64,
    /// Training wall time in seconds, summed over runs (evaluations excluded).
    pub seconds: f64,
    /// The held-out metrics, bits/dim, in the order of [`LearningCurve::metrics`].
    pub values: Vec<f64>,
}

/// A learning curve: the metric names and the rows so far.
#[derive(Debug, Clone, PartialEq, Default, Serialize)]
pub struct LearningCurve {
    /// Names of the held-out metrics (e.g. `fmnist_test_running_bpd`).
    pub metrics: Vec<String>,
    /// Rows in step order.
    pub rows: Vec<CurveRow>,
}

/// When the held-out curve counts as flat: its first metric fell by less than
/// `min_gain_per_epoch` bits/dim per epoch over the last `epochs` epochs of rows.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct FlatRule {
    /// Bits/dim per epoch below which the curve is flat (the paper-quality issue: 0.005).
    pub min_gain_per_epoch: f64,
    /// Epochs the gain is measured over (3).
    pub epochs: usize,
}

/// What the rows decide: how often the learning rate has been halved, and whether training
/// is over.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Schedule {
    /// Halvings so far: the learning rate is `base · 0.5^halvings`.
    pub halvings: u32,
    /// The curve went flat with no halving left: stop.
    pub stopped: bool,
}

impl LearningCurve {
    /// An empty curve with these metric columns.
    pub fn new(metrics: Vec<String>) -> Self {
        Self {
            metrics,
            rows: Vec::new(),
        }
    }

    /// Reads a curve written by [`write`](Self::write).
    ///
    /// # Errors
    /// [`ModelError::Checkpoint`] naming the file when it cannot be read or a row is not
    /// numbers of the header's width.
    pub fn read(path: &Path) -> Result<Self, ModelError> {
        let bad = |reason: String| ModelError::Checkpoint {
            path: path.display().to_string(),
            reason: format!(
                "{reason}: this learning curve cannot be continued; move it aside to start a new one"
            ),
        };
        let mut reader = csv::Reader::from_path(path).map_err(|e| bad(e.to_string()))?;
        let header = reader.headers().map_err(|e| bad(e.to_string()))?.clone();
        let names: Vec<&str> = header.iter().collect();
        if names.len() < FIXED_COLUMNS.len() || names[..FIXED_COLUMNS.len()] != FIXED_COLUMNS {
            return Err(bad(format!(
                "the header is {names:?}, not {FIXED_COLUMNS:?} followed by metrics"
            )));
        }
        let metrics: Vec<String> = names[FIXED_COLUMNS.len()..]
            .iter()
            .map(|s| s.to_string())
            .collect();
        let mut rows = Vec::new();
        for (i, record) in reader.records().enumerate() {
            let record = record.map_err(|e| bad(e.to_string()))?;
            let num = |j: usize| -> Result<f64, ModelError> {
                record
                    .get(j)
                    .and_then(|s| s.parse::<f64>().ok())
                    .ok_or_else(|| bad(format!("row {} column {} is not a number", i + 2, j + 1)))
            };
            let step = record
                .get(0)
                .and_then(|s| s.parse::<usize>().ok())
                .ok_or_else(|| bad(format!("row {} has no step count", i + 2)))?;
            rows.push(CurveRow {
                step,
                epoch: num(1)?,
                lr: num(2)?,
                train_bpd: num(3)?,
                seconds: num(4)?,
                values: (FIXED_COLUMNS.len()..names.len())
                    .map(num)
                    .collect::<Result<_, _>>()?,
            });
        }
        Ok(Self { metrics, rows })
    }

    /// Writes the whole curve to `path` atomically (a temporary file renamed into place).
    ///
    /// # Errors
    /// [`ModelError::Checkpoint`] when the file cannot be written.
    pub fn write(&self, path: &Path) -> Result<(), ModelError> {
        let bad = |e: String| ModelError::Checkpoint {
            path: path.display().to_string(),
            reason: format!("cannot write the learning curve: {e}"),
        };
        let header: Vec<&str> = FIXED_COLUMNS
            .iter()
            .copied()
            .chain(self.metrics.iter().map(String::as_str))
            .collect();
        bnood_data::atomic::write_atomically(path, |file| {
            let mut w = csv::Writer::from_writer(file);
            w.write_record(&header)?;
            for r in &self.rows {
                let mut fields = vec![
                    r.step.to_string(),
                    format!("{:.4}", r.epoch),
                    format!("{:e}", r.lr),
                    format!("{:.5}", r.train_bpd),
                    format!("{:.1}", r.seconds),
                ];
                fields.extend(r.values.iter().map(|v| format!("{v:.5}")));
                w.write_record(&fields)?;
            }
            w.flush()
        })
        .map_err(|e| bad(e.to_string()))
    }

    /// The decisions the rows take under `rule` with at most `max_halvings` halvings of the
    /// learning rate, replayed from the first row: at each row, the curve is flat when the
    /// first metric fell by less than `rule.min_gain_per_epoch` per epoch since the row
    /// `rule.epochs` epochs earlier (rows before the last halving do not count, so every
    /// learning rate gets `rule.epochs` epochs); a flat curve halves the learning rate while
    /// halvings are left, and stops training otherwise. No rule: never flat.
    pub fn schedule(&self, rule: Option<FlatRule>, max_halvings: u32) -> Schedule {
        let mut s = Schedule::default();
        let Some(rule) = rule else { return s };
        let mut since = 0usize; // first row of the current learning rate's window
        for i in 0..self.rows.len() {
            if s.stopped {
                break;
            }
            let now = &self.rows[i];
            // The latest earlier row at least `rule.epochs` epochs back, within the window.
            let back = (since..i)
                .rev()
                .find(|&j| now.epoch - self.rows[j].epoch >= rule.epochs as f64 - 1e-9);
            let Some(j) = back else { continue };
            let (Some(v0), Some(v1)) = (self.rows[j].values.first(), now.values.first()) else {
                continue;
            };
            let gain = (v0 - v1) / (now.epoch - self.rows[j].epoch);
            if gain.is_finite() && gain < rule.min_gain_per_epoch {
                if s.halvings < max_halvings {
                    s.halvings += 1;
                    since = i;
                } else {
                    s.stopped = true;
                }
            }
        }
        s
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn curve(values: &[f64]) -> LearningCurve {
        LearningCurve {
            metrics: vec!["m".into()],
            rows: values
                .iter()
                .enumerate()
                .map(|(i, &v)| CurveRow {
                    step: 10 * (i + 1),
                    epoch: (i + 1) as f64,
                    lr: 1e-3,
                    train_bpd: v + 0.1,
                    seconds: i as f64,
                    values: vec![v],
                })
                .collect(),
        }
    }

    const RULE: FlatRule = FlatRule {
        min_gain_per_epoch: 0.005,
        epochs: 3,
    };

    #[test]
    fn a_curve_still_falling_is_not_flat() {
        let c = curve(&[4.0, 3.9, 3.8, 3.7, 3.6]);
        assert_eq!(c.schedule(Some(RULE), 0), Schedule::default());
    }

    #[test]
    fn a_flat_curve_halves_then_stops_with_every_rate_given_its_epochs() {
        // Gains of 0.001/epoch from row 4 on: flat at row index 3 (epochs 1→4).
        let c = curve(&[3.0, 2.999, 2.998, 2.997]);
        assert_eq!(
            c.schedule(Some(RULE), 0),
            Schedule {
                halvings: 0,
                stopped: true
            }
        );
        assert_eq!(
            c.schedule(Some(RULE), 1),
            Schedule {
                halvings: 1,
                stopped: false
            }
        );
        // The halved rate needs 3 epochs of its own before it can be judged flat.
        let c = curve(&[3.0, 2.999, 2.998, 2.997, 2.996, 2.995]);
        assert!(!c.schedule(Some(RULE), 1).stopped);
        let c = curve(&[3.0, 2.999, 2.998, 2.997, 2.996, 2.995, 2.994]);
        assert_eq!(
            c.schedule(Some(RULE), 1),
            Schedule {
                halvings: 1,
                stopped: true
            }
        );
    }

    #[test]
    fn a_curve_round_trips_through_its_file_and_a_broken_file_is_refused() {
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().join("m.bpk.curve.csv");
        let c = curve(&[3.5, 3.25]);
        c.write(&path).expect("write");
        let back = LearningCurve::read(&path).expect("read");
        assert_eq!(back.metrics, c.metrics);
        assert_eq!(back.rows.len(), 2);
        assert_eq!(back.rows[1].step, 20);
        assert!((back.rows[1].values[0] - 3.25).abs() < 1e-9);
        std::fs::write(&path, "step,epoch\n1,2\n").expect("write");
        let e = LearningCurve::read(&path).expect_err("refused");
        assert!(e.to_string().contains("move it aside"), "{e}");
        std::fs::write(
            &path,
            "step,epoch,lr,train_bpd,seconds,m\n1,0.1,0.001,3.0,1.0,oops\n",
        )
        .expect("write");
        let e = LearningCurve::read(&path).expect_err("refused");
        assert!(e.to_string().contains("not a number"), "{e}");
    }

    #[test]
    fn no_rule_never_stops() {
        let c = curve(&[3.0, 3.0, 3.0, 3.0, 3.0]);
        assert_eq!(c.schedule(None, 0), Schedule::default());
    }
}
