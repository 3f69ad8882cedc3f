//! Property tests of the readers on arbitrary bytes: random strings, random strings behind a
//! valid magic number, and valid files with bytes flipped, cut or appended. Every reader
//! returns `Ok` or an error, never panics, and what it returns is consistent with the
//! input's length (no image set larger than the bytes that encode it).
//!
//! Inputs come from a fixed-seed ChaCha8 stream, so a failure names a case that reproduces.

use std::io::Write;
use std::path::Path;

use bnood_data::ImageSet;
use bnood_data::idx::decode_idx;
use bnood_data::svhn::decode_mat;
use rand::{RngExt, SeedableRng};
use rand_chacha::ChaCha8Rng;

const CASES: usize = 400;

fn random_bytes(rng: &mut ChaCha8Rng, max: usize) -> Vec<u8> {
    let n = rng.random_range(0..max);
    (0..n).map(|_| rng.random()).collect()
}

/// Flips, cuts or extends `valid` at random places.
fn mutate(rng: &mut ChaCha8Rng, valid: &[u8]) -> Vec<u8> {
    let mut bytes = valid.to_vec();
    match rng.random_range(0..3) {
        0 => {
            for _ in 0..rng.random_range(1..8) {
                if bytes.is_empty() {
                    break;
                }
                let at = rng.random_range(0..bytes.len());
                bytes[at] = rng.random();
            }
        }
        1 => bytes.truncate(rng.random_range(0..=bytes.len())),
        _ => bytes.extend(random_bytes(rng, 64)),
    }
    bytes
}

fn idx_file(rng: &mut ChaCha8Rng) -> Vec<u8> {
    let ndim = rng.random_range(0..6u8);
    let mut bytes = vec![0, 0, 0x08, ndim];
    for _ in 0..ndim {
        let d: u32 = if rng.random_bool(0.7) {
            rng.random_range(0..6)
        } else {
            rng.random()
        };
        bytes.extend(d.to_be_bytes());
    }
    bytes.extend(random_bytes(rng, 200));
    bytes
}

fn gzip(bytes: &[u8]) -> Vec<u8> {
    let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    enc.write_all(bytes).expect("compressed");
    enc.finish().expect("finished")
}

fn valid_png(rng: &mut ChaCha8Rng) -> Vec<u8> {
    let (w, h) = (rng.random_range(1..9u32), rng.random_range(1..9u32));
    let mut out = Vec::new();
    {
        let mut enc = png::Encoder::new(&mut out, w, h);
        enc.set_color(png::ColorType::Grayscale);
        enc.set_depth(png::BitDepth::Eight);
        let pixels: Vec<u8> = (0..w * h).map(|_| rng.random()).collect();
        enc.write_header()
            .expect("header")
            .write_image_data(&pixels)
            .expect("pixels");
    }
    out
}

/// Runs `read` on `bytes`, naming the case if it panics.
fn no_panic<T>(what: &str, case: usize, bytes: &[u8], read: impl FnOnce() -> T) -> T {
    std::panic::catch_unwind(std::panic::AssertUnwindSafe(read)).unwrap_or_else(|_| {
        panic!(
            "{what} panicked on case {case}: {} bytes {bytes:02x?}",
            bytes.len()
        )
    })
}

#[test]
fn the_idx_decoder_never_panics_and_never_returns_more_than_its_input() {
    let mut rng = ChaCha8Rng::seed_from_u64(1);
    for case in 0..CASES * 5 {
        let bytes = match case % 3 {
            0 => random_bytes(&mut rng, 300),
            1 => idx_file(&mut rng),
            _ => {
                let valid = {
                    let mut b = vec![0, 0, 8, 3, 0, 0, 0, 2, 0, 0, 0, 3, 0, 0, 0, 3];
                    b.extend([7u8; 18]);
                    b
                };
                mutate(&mut rng, &valid)
            }
        };
        let result = no_panic("decode_idx", case, &bytes, || {
            decode_idx(&bytes, Path::new("case"))
        });
        if let Ok(array) = result {
            assert_eq!(array.data.len(), array.dims.iter().product::<usize>());
            assert!(array.data.len() <= bytes.len(), "case {case}");
        }
    }
}

#[test]
fn user_idx_files_raw_or_gzip_never_panic_and_hold_at_most_their_payload() {
    let dir = tempfile::tempdir().expect("temp dir");
    let mut rng = ChaCha8Rng::seed_from_u64(2);
    for case in 0..CASES {
        let raw = if case % 2 == 0 {
            idx_file(&mut rng)
        } else {
            random_bytes(&mut rng, 300)
        };
        let bytes = match case % 4 {
            0 | 1 => raw.clone(),
            2 => gzip(&raw),
            _ => mutate(&mut rng, &gzip(&raw)),
        };
        let path = dir.path().join(format!("case{case}-idx3-ubyte"));
        std::fs::write(&path, &bytes).expect("written");
        let expected = rng.random_bool(0.5).then_some([1, 2, 3]);
        let result = no_panic("ImageSet::from_path (IDX)", case, &bytes, || {
            ImageSet::from_path_expecting(&path, "case", expected)
        });
        if let Ok(set) = result {
            assert!(set.pixels().len() <= raw.len(), "case {case}");
            if let Some(shape) = expected {
                assert_eq!(set.image_shape(), shape, "case {case}");
            }
        }
    }
}

#[test]
fn png_folders_of_arbitrary_bytes_never_panic() {
    let mut rng = ChaCha8Rng::seed_from_u64(3);
    for case in 0..CASES {
        let dir = tempfile::tempdir().expect("temp dir");
        let bytes = match case % 3 {
            0 => random_bytes(&mut rng, 300),
            1 => {
                let mut b = b"\x89PNG\r\n\x1a\n".to_vec();
                b.extend(random_bytes(&mut rng, 200));
                b
            }
            _ => {
                let valid = valid_png(&mut rng);
                mutate(&mut rng, &valid)
            }
        };
        std::fs::write(dir.path().join("a.png"), &bytes).expect("written");
        let result = no_panic("ImageSet::from_png_dir", case, &bytes, || {
            ImageSet::from_png_dir(dir.path(), "case")
        });
        if let Ok(set) = result {
            // 8 × 8 RGB is the largest image these cases can encode validly; a mutated
            // header may claim more, but never more than what decodes from the bytes.
            assert!(set.len() == 1, "case {case}");
        }
    }
}

/// Issue 31: JPEG folders of random bytes, a JPEG marker then random bytes, or a mutated
/// valid JPEG (the fixtures) give a set or an error, never a panic.
#[test]
fn jpeg_folders_of_arbitrary_bytes_never_panic() {
    let fixtures = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/jpeg");
    let valid: Vec<Vec<u8>> = ["gray-a.jpg", "rgb.jpg"]
        .iter()
        .map(|f| std::fs::read(fixtures.join(f)).expect("fixture"))
        .collect();
    let mut rng = ChaCha8Rng::seed_from_u64(7);
    for case in 0..CASES {
        let dir = tempfile::tempdir().expect("temp dir");
        let bytes = match case % 4 {
            0 => random_bytes(&mut rng, 300),
            1 => {
                let mut b = vec![0xFF, 0xD8, 0xFF];
                b.extend(random_bytes(&mut rng, 200));
                b
            }
            n => mutate(&mut rng, &valid[n - 2]),
        };
        std::fs::write(dir.path().join("a.jpg"), &bytes).expect("written");
        let result = no_panic("ImageSet::from_png_dir (JPEG)", case, &bytes, || {
            ImageSet::from_png_dir(dir.path(), "case")
        });
        if let Ok(set) = result {
            assert!(set.len() == 1, "case {case}");
        }
    }
}

#[test]
fn the_mat_decoder_never_panics_on_damaged_files() {
    let fixtures = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures");
    let valid: Vec<Vec<u8>> = [
        "svhn_tiny_uncompressed.mat",
        "svhn_tiny_compressed.mat",
        "svhn_tiny_only_x.mat",
    ]
    .iter()
    .map(|f| std::fs::read(fixtures.join(f)).expect("fixture"))
    .collect();
    let mut rng = ChaCha8Rng::seed_from_u64(4);
    for case in 0..CASES * 2 {
        let bytes = match case % 4 {
            0 => random_bytes(&mut rng, 400),
            n => mutate(&mut rng, &valid[n - 1]),
        };
        let result = no_panic("decode_mat", case, &bytes, || {
            decode_mat(&bytes, Path::new("case.mat"))
        });
        if let Ok(set) = result {
            // Deflate expands at most 1032-fold: a compressed MAT variable cannot hold more.
            assert!(
                set.pixels().len() <= bytes.len().saturating_mul(1032),
                "case {case}"
            );
        }
    }
}
