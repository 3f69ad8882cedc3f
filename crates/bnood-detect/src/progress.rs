//! Progress reporting for long scoring passes (the BN test runs many mixed batches).

use std::fmt;
use std::sync::Arc;

/// Receives progress of a detector's scoring passes, e.g. to drive a progress bar.
/// Implementations must be cheap: [`advance`](Self::advance) is called after every
/// forward pass.
pub trait Progress: Send + Sync {
    /// A pass of `total` forward passes (batches) begins; `label` says what is scored
    /// (e.g. `"BN test r=0.10 on KMNIST-test"`).
    fn start(&self, label: &str, total: u64);
    /// `n` more forward passes of the current pass are done.
    fn advance(&self, n: u64);
}

/// An optional, shared [`Progress`] receiver, attached to a detector with
/// [`Detector::set_progress`](crate::Detector::set_progress) (the one way to attach it). It
/// never affects scores.
#[derive(Clone, Default)]
pub struct ProgressHook(pub(crate) Option<Arc<dyn Progress>>);

impl ProgressHook {
    /// A hook that forwards to `progress`.
    pub fn new(progress: Arc<dyn Progress>) -> Self {
        Self(Some(progress))
    }

    /// A hook that reports nothing.
    pub fn none() -> Self {
        Self(None)
    }

    pub(crate) fn start(&self, label: &str, total: u64) {
        if let Some(p) = &self.0 {
            p.start(label, total);
        }
    }

    pub(crate) fn advance(&self, n: u64) {
        if let Some(p) = &self.0 {
            p.advance(n);
        }
    }
}

impl fmt::Debug for ProgressHook {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(if self.0.is_some() {
            "ProgressHook(Some)"
        } else {
            "ProgressHook(None)"
        })
    }
}
