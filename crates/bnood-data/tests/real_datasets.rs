//! The catalogue against the real files in `shared/datasets` (found through
//! `BNOOD_DATA_DIR`): every load verifies checksums, and the decoded content matches the
//! published counts, label counts and known first labels.

mod common;

use bnood_data::{DataError, Dataset, Locator, Split};

fn locator() -> Locator {
    Locator::only(common::real_data_dir())
}

#[test]
fn fashion_mnist_train_has_60000_images_and_6000_per_class() {
    let set = Dataset::FashionMnist
        .load(Split::Train, &locator())
        .expect("FMNIST train loads and verifies");
    assert_eq!(set.shape(), [60_000, 1, 28, 28]);
    let counts = set.label_counts().expect("labelled");
    assert_eq!(counts.len(), 10);
    assert!(counts.values().all(|&c| c == 6_000), "{counts:?}");
    assert!(
        (set.mean_pixel() - 72.94).abs() < 0.01,
        "mean {}",
        set.mean_pixel()
    );
}

#[test]
fn fashion_mnist_test_has_10000_images_and_1000_per_class() {
    let set = Dataset::FashionMnist
        .load(Split::Test, &locator())
        .expect("FMNIST test loads");
    assert_eq!(set.shape(), [10_000, 1, 28, 28]);
    assert!(
        set.label_counts()
            .expect("labelled")
            .values()
            .all(|&c| c == 1_000)
    );
    assert!((set.mean_pixel() - 73.15).abs() < 0.01);
    assert_eq!(set.name(), "fashion_mnist/test");
}

#[test]
fn mnist_test_starts_with_labels_7_2_1_0_4() {
    let set = Dataset::Mnist
        .load(Split::Test, &locator())
        .expect("MNIST test loads");
    assert_eq!(set.len(), 10_000);
    assert_eq!(&set.labels().expect("labelled")[..5], &[7, 2, 1, 0, 4]);
    let counts: Vec<usize> = set
        .label_counts()
        .expect("labelled")
        .into_values()
        .collect();
    assert_eq!(
        counts,
        vec![980, 1135, 1032, 1010, 982, 892, 958, 1028, 974, 1009]
    );
}

#[test]
fn mnist_train_re_gzipped_images_verify_by_content() {
    // The shared train images are re-gzipped: only the decompressed content is official.
    let set = Dataset::Mnist
        .load(Split::Train, &locator())
        .expect("MNIST train loads");
    assert_eq!(set.shape(), [60_000, 1, 28, 28]);
    let counts: Vec<usize> = set
        .label_counts()
        .expect("labelled")
        .into_values()
        .collect();
    assert_eq!(
        counts,
        vec![5923, 6742, 5958, 6131, 5842, 5421, 5918, 6265, 5851, 5949]
    );
    assert!((set.mean_pixel() - 33.32).abs() < 0.01);
}

#[test]
fn kmnist_test_has_1000_per_class() {
    let set = Dataset::Kmnist
        .load(Split::Test, &locator())
        .expect("KMNIST test loads");
    assert_eq!(set.shape(), [10_000, 1, 28, 28]);
    assert!(
        set.label_counts()
            .expect("labelled")
            .values()
            .all(|&c| c == 1_000)
    );
    assert!((set.mean_pixel() - 47.06).abs() < 0.01);
}

#[test]
fn kmnist_train_is_missing_and_the_error_lists_every_place_tried() {
    let err = Dataset::Kmnist
        .load(Split::Train, &locator())
        .expect_err("KMNIST train is not in shared/");
    let msg = err.to_string();
    assert!(matches!(err, DataError::NotFound { .. }), "{msg}");
    assert!(msg.contains("kmnist/train-images-idx3-ubyte.gz"), "{msg}");
    assert!(
        msg.contains("train-images-idx3-ubyte (given directory)"),
        "un-gzipped name is tried too: {msg}"
    );
    assert!(msg.contains("download: turned off"), "{msg}");
    assert!(msg.contains("BNOOD_DATA_DIR"), "{msg}");
}

#[test]
fn omniglot_evaluation_set_has_13180_images_of_659_characters_white_on_black() {
    let set = Dataset::Omniglot
        .load(Split::Test, &locator())
        .expect("Omniglot loads");
    assert_eq!(set.shape(), [13_180, 1, 28, 28]);
    let counts = set.label_counts().expect("labelled by character id");
    assert_eq!(counts.len(), 659);
    assert!(
        counts.values().all(|&c| c == 20),
        "20 drawers per character"
    );
    assert_eq!(counts.keys().next(), Some(&965));
    assert_eq!(counts.keys().last(), Some(&1623));
    assert_eq!(set.labels().expect("labelled")[0], 1205);
    assert!(
        (set.mean_pixel() - 21.52).abs() < 0.01,
        "strokes white on black"
    );
}

#[test]
fn omniglot_has_no_train_split() {
    let err = Dataset::Omniglot
        .load(Split::Train, &locator())
        .expect_err("no train split");
    assert!(
        err.to_string().contains("Omniglot has no train split"),
        "{err}"
    );
}

#[test]
fn a_file_with_one_changed_byte_fails_its_checksum_and_names_the_file() {
    let dir = tempfile::tempdir().expect("temp dir");
    let src = common::real_data_dir().join("mnist");
    let dst = dir.path().join("mnist");
    std::fs::create_dir_all(&dst).expect("mkdir");
    // Decompress the images and change one pixel: structure stays valid, content does not.
    let mut raw =
        bnood_data::idx::read_maybe_gzip(&src.join("t10k-images-idx3-ubyte.gz")).expect("read");
    raw[1000] ^= 0xff;
    std::fs::write(dst.join("t10k-images-idx3-ubyte"), raw).expect("write");
    std::fs::copy(
        src.join("t10k-labels-idx1-ubyte.gz"),
        dst.join("t10k-labels-idx1-ubyte.gz"),
    )
    .expect("copy");
    let err = Dataset::Mnist
        .load(Split::Test, &Locator::only(dir.path()))
        .expect_err("checksum must fail");
    let msg = err.to_string();
    assert!(matches!(err, DataError::ChecksumMismatch { .. }), "{msg}");
    assert!(msg.contains("t10k-images-idx3-ubyte"), "{msg}");
    assert!(
        msg.contains("2646ac647ad5339dbf082846283269ea"),
        "expected digest shown: {msg}"
    );
}

#[test]
fn uncompressed_copies_load_like_the_gzip_originals() {
    let dir = tempfile::tempdir().expect("temp dir");
    let src = common::real_data_dir().join("kmnist");
    for name in ["t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz"] {
        let raw = bnood_data::idx::read_maybe_gzip(&src.join(name)).expect("read");
        std::fs::write(dir.path().join(name.trim_end_matches(".gz")), raw).expect("write");
    }
    let plain = Dataset::Kmnist
        .load(Split::Test, &Locator::only(dir.path()))
        .expect("raw IDX loads");
    let gz = Dataset::Kmnist
        .load(Split::Test, &locator())
        .expect("gz loads");
    assert_eq!(plain.pixels(), gz.pixels());
    assert_eq!(plain.labels(), gz.labels());
}

/// `mnist-train` names MNIST's training split (the paper's Appendix B trains a PixelCNN++
/// on it): 60,000 images, named `MNIST-train` in tables, a catalogue name even when a file
/// of that name exists.
#[test]
fn mnist_train_is_a_named_set_of_60000_images() {
    let set = bnood_data::load_named("mnist-train", &locator(), None, 0).expect("MNIST train");
    assert_eq!(set.shape(), [60_000, 1, 28, 28]);
    assert_eq!(set.name(), "MNIST-train");
    assert!(bnood_data::is_catalogue_name("mnist-train"));
    let subset = bnood_data::load_named("mnist-train", &locator(), Some(10), 3).expect("subset");
    assert_eq!(subset.len(), 10);
}
