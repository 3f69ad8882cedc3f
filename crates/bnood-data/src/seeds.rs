//! Derived seeds: the one home of every random stream that a run derives from the user's
//! seed. A stream is `derive(seed, STREAM)`; the constants only have to differ, and they
//! never change, so that the same seed draws the same subsets in every version.

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

/// The seed of stream `stream` (one of the constants above) for the user's `seed`.
pub const fn derive(seed: u64, stream: u64) -> u64 {
    seed ^ stream
}
