//! Shared helpers for bnood-data's integration tests.
#![allow(dead_code)]

use std::path::PathBuf;

/// The directory holding the real datasets: `BNOOD_DATA_DIR` (set by `.ci/run`), else the
/// project's sibling `shared/datasets`. Fails loudly when neither exists, because these
/// tests pin down real files and must not pass vacuously.
pub fn real_data_dir() -> PathBuf {
    if let Some(dir) = std::env::var_os("BNOOD_DATA_DIR").filter(|d| !d.is_empty()) {
        return PathBuf::from(dir);
    }
    let sibling = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../../shared/datasets");
    assert!(
        sibling.is_dir(),
        "real-data tests need the datasets: set BNOOD_DATA_DIR to a directory with fashion_mnist/, mnist/, kmnist/, omniglot/ (see README.md)"
    );
    sibling
}

/// Builds an IDX byte buffer with element type 0x08.
pub fn idx_bytes(dims: &[u32], payload: &[u8]) -> Vec<u8> {
    let mut out = vec![0, 0, 0x08, dims.len() as u8];
    for d in dims {
        out.extend_from_slice(&d.to_be_bytes());
    }
    out.extend_from_slice(payload);
    out
}

/// Gzip-compresses bytes.
pub fn gzip(bytes: &[u8]) -> Vec<u8> {
    use std::io::Write;
    let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    enc.write_all(bytes).expect("writing to a Vec cannot fail");
    enc.finish().expect("finishing a Vec encoder cannot fail")
}
