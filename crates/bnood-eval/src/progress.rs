//! A terminal progress bar (indicatif) for detectors' scoring passes.

use std::sync::Arc;

use bnood_detect::{Progress, ProgressHook};
use indicatif::{ProgressBar, ProgressStyle};

/// Shows each scoring pass of a detector as a bar of forward passes on stderr. When stderr
/// is not a terminal (a log file), the bar is hidden (indicatif's rule) and each pass is
/// announced by one line instead.
#[derive(Debug)]
pub struct BarProgress {
    bar: ProgressBar,
}

impl BarProgress {
    /// A bar on stderr.
    pub fn new() -> Self {
        let bar = ProgressBar::new(0);
        if let Ok(style) = ProgressStyle::with_template(
            "{msg:40} [{bar:30}] {pos}/{len} batches {per_sec} eta {eta}",
        ) {
            bar.set_style(style.progress_chars("=> "));
        }
        Self { bar }
    }

    /// A hook for [`bnood_detect::Detector::set_progress`]: a new bar when `show`, else none.
    pub fn hook(show: bool) -> ProgressHook {
        if show {
            ProgressHook::new(Arc::new(Self::new()))
        } else {
            ProgressHook::none()
        }
    }
}

impl Default for BarProgress {
    fn default() -> Self {
        Self::new()
    }
}

impl Progress for BarProgress {
    fn start(&self, label: &str, total: u64) {
        if self.bar.is_hidden() {
            eprintln!("scoring: {label} ({total} batches)");
        }
        self.bar.reset();
        self.bar.set_length(total);
        self.bar.set_message(label.to_string());
    }

    fn advance(&self, n: u64) {
        self.bar.inc(n);
        if self.bar.position() >= self.bar.length().unwrap_or(0) {
            self.bar.finish_and_clear();
        }
    }
}
