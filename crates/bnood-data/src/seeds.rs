//! Derived seeds: the one home of every random stream that a run derives from the user's
//! seed. A stream is `derive(seed, STREAM)`; the constants only have to differ, and they
//! never change, so that the same seed draws the same subsets in every version.
//! [`splitmix64`] is the one mixing function the crates use to derive stream keys.

/// Reference images drawn from the training split (mixed into the BN test's batches).
pub const REFERENCE_SUBSET: u64 = 0x2EF;
/// The in-distribution test pool drawn from the test split.
pub const TEST_SUBSET: u64 = 0x7E57;
/// Each OoD test pool (and the OoD part of a contamination pool).
pub const OOD_SUBSET: u64 = 0x00D;
/// The Fashion-MNIST test images that the "Rotation" set rotates.
pub const ROTATION_BASE: u64 = 0x0A7E;
/// The pools of the ratio sweep (Figure 3).
pub const SWEEP_POOL: u64 = 0x5EE9;
/// The in-distribution part of a contamination pool.
pub const CONTAMINATION_INLIERS: u64 = 0x1D;
/// The windows of the window test's power study (`bnood monitor --study`).
pub const WINDOW_POWER: u64 = 0x3A7D;
/// Stream of the split of a training set into the part trained on and the part held out
/// (`bnood train --hold-out`).
pub const HOLD_OUT: u64 = 0x401D;

/// The seed of stream `stream` (one of the constants above) for the user's `seed`.
pub const fn derive(seed: u64, stream: u64) -> u64 {
    seed ^ stream
}

/// The training loop's streams. Their formulas predate [`derive`] and are pinned as they
/// are: every checkpoint trained by bnood depends on them.
pub mod training {
    /// Seed of the shuffle that orders the training set in epoch `epoch`.
    pub const fn epoch_order(seed: u64, epoch: u64) -> u64 {
        seed ^ epoch.wrapping_mul(0x9E37_79B9_7F4A_7C15)
    }

    /// Seed of the dequantisation noise added to the batch of step `step`.
    pub const fn dequantisation(seed: u64, step: u64) -> u64 {
        seed.wrapping_add(1).wrapping_mul(0x2545_F491_4F6C_DD1D) ^ step
    }

    /// Seed of the pixel mutation of a background model's batch at step `step`.
    pub const fn background_mutation(seed: u64, step: u64) -> u64 {
        seed.wrapping_add(3).wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ step
    }
}

/// The SplitMix64 finaliser: spreads a 64-bit value over all bits, so that nearby seeds and
/// tags give unrelated stream keys. Pinned: models' weights and detectors' draws depend on
/// it.
pub const fn splitmix64(mut z: u64) -> u64 {
    z = z.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

#[cfg(test)]
mod tests {
    #[test]
    fn training_streams_keep_the_values_every_checkpoint_was_trained_with() {
        use super::training::*;
        assert_eq!(epoch_order(0, 0), 0);
        assert_eq!(epoch_order(5, 2), 5 ^ 0x3C6E_F372_FE94_F82A);
        assert_eq!(dequantisation(0, 7), 0x2545_F491_4F6C_DD1D ^ 7);
        assert_eq!(background_mutation(0, 1), 0xDAA6_6D2C_7DDF_743F ^ 1);
    }

    #[test]
    fn splitmix64_gives_the_reference_values() {
        // Vigna's reference splitmix64 stream from state 0: its first outputs.
        assert_eq!(super::splitmix64(0), 0xE220_A839_7B1D_CDAF);
        assert_eq!(
            super::splitmix64(0x9E37_79B9_7F4A_7C15),
            0x6E78_9E6A_A1B9_65F4
        );
    }
}
