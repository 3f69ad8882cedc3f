//! The experiments the `bnood` command and the examples run (from
//! `bnood_eval::experiment`, where they are tested). Their error type lives in
//! [`crate::error`] and is re-exported here, where earlier releases defined it.

pub use crate::error::{Error, Result};
pub use bnood_eval::experiment::{
    Checkpoints, MainJob, main_job, train_fresh, train_model, train_or_reuse,
};
