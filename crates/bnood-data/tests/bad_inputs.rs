//! Inputs a user can get wrong — a FIFO or a device instead of a file, images whose header
//! promises a huge or another shape, symlinks that lead nowhere, damaged gzip streams — are
//! refused with an error that names the file, without reading more than a valid file of
//! that header would hold.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use bnood_data::{DataError, ImageSet, Locator, load_named_expecting, load_named_indexed};
use tempfile::TempDir;

fn tmp() -> TempDir {
    tempfile::tempdir().expect("a temporary folder can be created")
}

fn idx_bytes(dims: &[u32], payload: &[u8]) -> Vec<u8> {
    let mut bytes = vec![0, 0, 0x08, dims.len() as u8];
    for d in dims {
        bytes.extend(d.to_be_bytes());
    }
    bytes.extend(payload);
    bytes
}

fn gzip(bytes: &[u8]) -> Vec<u8> {
    let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    enc.write_all(bytes).expect("compressed");
    enc.finish().expect("finished")
}

fn png_chunk(out: &mut Vec<u8>, kind: &[u8; 4], data: &[u8]) {
    out.extend((data.len() as u32).to_be_bytes());
    out.extend(kind);
    out.extend(data);
    let mut crc = flate2::Crc::new();
    crc.update(kind);
    crc.update(data);
    out.extend(crc.sum().to_be_bytes());
}

/// A PNG whose header says `width × height` gray pixels but which holds no pixel data.
fn png_header_only(width: u32, height: u32) -> Vec<u8> {
    let mut out = b"\x89PNG\r\n\x1a\n".to_vec();
    let mut ihdr = Vec::new();
    ihdr.extend(width.to_be_bytes());
    ihdr.extend(height.to_be_bytes());
    ihdr.extend([8, 0, 0, 0, 0]); // 8-bit gray, deflate, adaptive filter, no interlace
    png_chunk(&mut out, b"IHDR", &ihdr);
    png_chunk(
        &mut out,
        b"IDAT",
        &[0x78, 0x9c, 0x03, 0x00, 0x00, 0x00, 0x00, 0x01],
    );
    png_chunk(&mut out, b"IEND", &[]);
    out
}

fn small_png(path: &Path, side: u32) {
    let file = std::fs::File::create(path).expect("png file");
    let mut enc = png::Encoder::new(std::io::BufWriter::new(file), side, side);
    enc.set_color(png::ColorType::Grayscale);
    enc.set_depth(png::BitDepth::Eight);
    let pixels = vec![7u8; (side * side) as usize];
    enc.write_header()
        .expect("header")
        .write_image_data(&pixels)
        .expect("pixels");
}

fn user_error(e: DataError) -> String {
    assert!(
        matches!(e, DataError::UserImages { .. } | DataError::Io { .. }),
        "{e:?}"
    );
    e.to_string()
}

#[test]
fn dev_zero_is_refused_without_reading_it() {
    let started = Instant::now();
    let e = ImageSet::from_path(Path::new("/dev/zero"), "zero").expect_err("refused");
    assert!(user_error(e).contains("neither a regular file nor a folder"));
    assert!(started.elapsed() < Duration::from_secs(2));
}

#[test]
fn a_fifo_is_refused_without_waiting_for_a_writer() {
    let dir = tmp();
    let fifo = dir.path().join("pipe");
    let made = std::process::Command::new("mkfifo")
        .arg(&fifo)
        .status()
        .expect("mkfifo runs");
    assert!(made.success());
    let e = ImageSet::from_path(&fifo, "pipe").expect_err("refused");
    assert!(user_error(e).contains("a FIFO"));
}

#[test]
fn png_headers_promising_huge_images_are_refused_before_decoding() {
    let dir = tmp();
    for i in 0..8 {
        std::fs::write(
            dir.path().join(format!("{i}.png")),
            png_header_only(20_000, 20_000),
        )
        .expect("written");
    }
    let e = ImageSet::from_path(dir.path(), "huge").expect_err("refused");
    let e = user_error(e);
    assert!(e.contains("20000×20000") && e.contains("4096×4096"), "{e}");
}

#[test]
fn a_png_of_another_shape_than_the_model_is_refused_from_its_header() {
    let dir = tmp();
    std::fs::write(dir.path().join("a.png"), png_header_only(300, 200)).expect("written");
    let e = load_named_expecting(
        dir.path().to_str().expect("utf8"),
        &Locator::only(dir.path()),
        None,
        0,
        Some([1, 28, 28]),
    )
    .expect_err("refused");
    let e = user_error(e);
    assert!(
        e.contains("[1, 200, 300]") && e.contains("[1, 28, 28]"),
        "{e}"
    );
}

#[test]
fn an_idx_file_of_another_shape_than_the_model_is_refused_before_its_payload_is_read() {
    let dir = tmp();
    // A gzip stream whose header promises 64×64 images: refused before decompressing them.
    let path = dir.path().join("big-idx3-ubyte.gz");
    std::fs::write(&path, gzip(&idx_bytes(&[3, 64, 64], &[0; 3 * 64 * 64]))).expect("written");
    let e = ImageSet::from_path_expecting(&path, "big", Some([1, 28, 28])).expect_err("refused");
    let e = user_error(e);
    assert!(
        e.contains("[1, 64, 64]") && e.contains("[1, 28, 28]"),
        "{e}"
    );
    // The same file loads without an expected shape.
    let set = ImageSet::from_path(&path, "big").expect("loads");
    assert_eq!(set.shape(), [3, 1, 64, 64]);
}

#[test]
fn an_idx_header_promising_more_than_the_file_holds_is_truncated_not_allocated() {
    let dir = tmp();
    let path = write_file(
        dir.path(),
        "liar-idx3-ubyte",
        &idx_bytes(&[u32::MAX, 28, 28], &[1, 2, 3]),
    );
    let e = ImageSet::from_path(&path, "liar").expect_err("refused");
    assert!(user_error(e).contains("truncated"));
}

fn write_file(dir: &Path, name: &str, bytes: &[u8]) -> PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, bytes).expect("written");
    path
}

#[test]
fn dangling_and_looping_png_symlinks_are_errors_like_unreadable_files() {
    let dir = tmp();
    small_png(&dir.path().join("a.png"), 4);
    std::os::unix::fs::symlink(dir.path().join("nowhere.png"), dir.path().join("b.png"))
        .expect("dangling link");
    let e = ImageSet::from_path(dir.path(), "links").expect_err("refused");
    assert!(user_error(e).contains("b.png"));

    let looping = tmp();
    small_png(&looping.path().join("a.png"), 4);
    std::os::unix::fs::symlink(looping.path().join("c.png"), looping.path().join("c.png"))
        .expect("looping link");
    let e = ImageSet::from_path(looping.path(), "loop").expect_err("refused");
    assert!(user_error(e).contains("c.png"));
}

#[test]
fn a_damaged_gzip_is_called_damaged_and_a_cut_one_truncated() {
    let dir = tmp();
    let mut bytes = gzip(&idx_bytes(&[2, 2, 2], &[1; 8]));
    let n = bytes.len();
    bytes[n - 6] ^= 0xff; // the CRC
    let damaged = write_file(dir.path(), "damaged-idx3-ubyte.gz", &bytes);
    let e = ImageSet::from_path(&damaged, "d").expect_err("refused");
    let e = user_error(e);
    assert!(
        e.contains("damaged") && !e.contains("probably truncated"),
        "{e}"
    );
    let cut = write_file(dir.path(), "cut-idx3-ubyte.gz", &bytes[..n / 2]);
    let e = user_error(ImageSet::from_path(&cut, "c").expect_err("refused"));
    assert!(e.contains("truncated"), "{e}");
}

#[test]
fn a_random_subset_keeps_the_index_of_each_image_in_its_file() {
    let dir = tmp();
    let payload: Vec<u8> = (0..20u8).flat_map(|i| [i; 4]).collect();
    let path = write_file(
        dir.path(),
        "twenty-idx3-ubyte",
        &idx_bytes(&[20, 2, 2], &payload),
    );
    let (set, indices) = load_named_indexed(
        path.to_str().expect("utf8"),
        &Locator::only(dir.path()),
        Some(5),
        7,
        None,
    )
    .expect("loads");
    assert_eq!(indices.len(), 5);
    for (k, &index) in indices.iter().enumerate() {
        assert_eq!(set.image(k).expect("image"), [index as u8; 4]);
    }
    assert_ne!(indices, [0, 1, 2, 3, 4], "a random draw, not the head");
}

#[test]
fn png_file_names_follow_the_order_images_are_read_in() {
    let dir = tmp();
    for name in ["b.png", "a.PNG", "c.png"] {
        small_png(&dir.path().join(name), 2);
    }
    std::fs::write(dir.path().join("notes.txt"), b"x").expect("written");
    assert_eq!(
        bnood_data::user_files::png_file_names(dir.path()).expect("names"),
        ["a.PNG", "b.png", "c.png"]
    );
}
