//! A user's own IDX file or PNG folder loads as an unlabelled `[N, C, H, W]` set with exactly
//! the stored pixels, in file-name order; anything unusable is an error that names the file
//! and says what to do. Fixtures are written into a fresh temporary folder by each test.

mod common;

use std::path::{Path, PathBuf};

use bnood_data::{DataError, ImageSet};
use png::{BitDepth, ColorType};
use tempfile::TempDir;

fn tmp() -> TempDir {
    tempfile::tempdir().expect("a temporary folder can be created")
}

fn write(path: &Path, bytes: &[u8]) -> PathBuf {
    std::fs::write(path, bytes).expect("fixture can be written");
    path.to_path_buf()
}

/// Encodes interleaved `[H, W, samples]` pixels as a PNG.
fn png_bytes(width: u32, height: u32, color: ColorType, depth: BitDepth, data: &[u8]) -> Vec<u8> {
    png_bytes_with(width, height, color, depth, data, |_| {})
}

fn png_bytes_with(
    width: u32,
    height: u32,
    color: ColorType,
    depth: BitDepth,
    data: &[u8],
    configure: impl FnOnce(&mut png::Encoder<'_, &mut Vec<u8>>),
) -> Vec<u8> {
    let mut out = Vec::new();
    {
        let mut encoder = png::Encoder::new(&mut out, width, height);
        encoder.set_color(color);
        encoder.set_depth(depth);
        configure(&mut encoder);
        let mut writer = encoder.write_header().expect("header encodes");
        writer.write_image_data(data).expect("pixels encode");
    }
    out
}

fn gray(width: u32, height: u32, data: &[u8]) -> Vec<u8> {
    png_bytes(width, height, ColorType::Grayscale, BitDepth::Eight, data)
}

fn user_error(result: Result<ImageSet, DataError>, path: &Path) -> String {
    let err = result.expect_err("must be rejected");
    assert!(matches!(err, DataError::UserImages { .. }), "{err:?}");
    let msg = err.to_string();
    assert!(
        msg.contains(&path.display().to_string()),
        "names {}: {msg}",
        path.display()
    );
    assert!(
        !msg.contains("fetch it again"),
        "no catalogue advice: {msg}"
    );
    msg
}

// ---- IDX ----

#[test]
fn raw_idx3_loads_as_one_channel_images_with_the_stored_pixels() {
    let dir = tmp();
    let payload: Vec<u8> = (1..=12).collect();
    let path = write(
        &dir.path().join("images.idx"),
        &common::idx_bytes(&[2, 2, 3], &payload),
    );
    let set = ImageSet::from_idx_file(&path, "mine").expect("valid IDX");
    assert_eq!(set.shape(), [2, 1, 2, 3]);
    assert_eq!(set.pixels(), payload.as_slice());
    assert_eq!(set.labels(), None);
    assert_eq!(set.name(), "mine");
}

#[test]
fn gzipped_idx3_loads_the_same_as_raw() {
    let dir = tmp();
    let payload: Vec<u8> = (0..18).map(|v| v * 13).collect();
    let raw = common::idx_bytes(&[2, 3, 3], &payload);
    let raw_path = write(&dir.path().join("a-idx3-ubyte"), &raw);
    let gz_path = write(&dir.path().join("a-idx3-ubyte.gz"), &common::gzip(&raw));
    let from_raw = ImageSet::from_idx_file(&raw_path, "x").expect("raw");
    let from_gz = ImageSet::from_idx_file(&gz_path, "x").expect("gzip");
    assert_eq!(from_gz, from_raw);
    assert_eq!(from_gz.pixels(), payload.as_slice());
}

#[test]
fn idx4_is_read_channels_first() {
    let dir = tmp();
    let payload: Vec<u8> = (0..24).collect();
    let path = write(
        &dir.path().join("rgb.idx"),
        &common::idx_bytes(&[2, 3, 2, 2], &payload),
    );
    let set = ImageSet::from_idx_file(&path, "rgb").expect("valid [N, C, H, W]");
    assert_eq!(set.shape(), [2, 3, 2, 2]);
    assert_eq!(set.image(1), Some(&payload[12..]));
}

#[test]
fn channels_last_idx4_is_rejected_with_the_transpose_to_apply() {
    let dir = tmp();
    let path = write(
        &dir.path().join("hwc.idx"),
        &common::idx_bytes(&[1, 5, 5, 3], &[0; 75]),
    );
    let msg = user_error(ImageSet::from_idx_file(&path, "x"), &path);
    assert!(msg.contains("channels-last"), "{msg}");
    assert!(msg.contains("transpose(0, 3, 1, 2)"), "{msg}");
}

#[test]
fn a_labels_file_is_rejected_saying_it_looks_like_labels() {
    let dir = tmp();
    let path = write(
        &dir.path().join("t10k-labels-idx1-ubyte"),
        &common::idx_bytes(&[4], &[0, 1, 2, 3]),
    );
    let msg = user_error(ImageSet::from_idx_file(&path, "x"), &path);
    assert!(msg.contains("this looks like a labels file"), "{msg}");
}

#[test]
fn a_non_u8_idx_is_rejected_naming_its_element_type() {
    let dir = tmp();
    let mut bytes = common::idx_bytes(&[1, 1, 1], &[0, 0, 0, 0]);
    bytes[2] = 0x0D; // f32
    let path = write(&dir.path().join("float.idx"), &bytes);
    let msg = user_error(ImageSet::from_idx_file(&path, "x"), &path);
    assert!(msg.contains("f32"), "{msg}");
    assert!(msg.contains("unsigned bytes"), "{msg}");
}

#[test]
fn an_idx_with_zero_images_is_rejected() {
    let dir = tmp();
    let path = write(
        &dir.path().join("empty.idx"),
        &common::idx_bytes(&[0, 28, 28], &[]),
    );
    let msg = user_error(ImageSet::from_idx_file(&path, "x"), &path);
    assert!(msg.contains("0 images"), "{msg}");
}

#[test]
fn idx_with_two_or_five_dims_is_rejected_with_the_accepted_layouts() {
    let dir = tmp();
    for dims in [&[2u32, 4][..], &[1, 1, 1, 1, 1]] {
        let n = dims.iter().product::<u32>() as usize;
        let path = write(
            &dir.path().join(format!("{}d.idx", dims.len())),
            &common::idx_bytes(dims, &vec![0; n]),
        );
        let msg = user_error(ImageSet::from_idx_file(&path, "x"), &path);
        assert!(msg.contains("[N, H, W] or [N, C, H, W]"), "{msg}");
    }
}

#[test]
fn a_file_that_is_not_idx_is_rejected_without_catalogue_advice() {
    let dir = tmp();
    let path = write(&dir.path().join("notes.txt"), b"hello, world");
    let msg = user_error(ImageSet::from_idx_file(&path, "x"), &path);
    assert!(msg.contains("not a readable IDX file"), "{msg}");
}

#[test]
fn a_single_png_file_passed_as_idx_points_to_its_folder() {
    let dir = tmp();
    let path = write(&dir.path().join("one.png"), &gray(1, 1, &[7]));
    let msg = user_error(ImageSet::from_path(&path, "x"), &path);
    assert!(msg.contains("pass the folder"), "{msg}");
}

// ---- PNG folders ----

#[test]
fn gray_png_folder_loads_exact_pixels_in_file_name_byte_order() {
    let dir = tmp();
    write(&dir.path().join("b.png"), &gray(2, 1, &[20, 21]));
    write(&dir.path().join("a.png"), &gray(2, 1, &[10, 11]));
    write(&dir.path().join("B.png"), &gray(2, 1, &[30, 31])); // 'B' < 'a' < 'b'
    write(&dir.path().join("10.png"), &gray(2, 1, &[0, 1])); // '1' < 'B'
    let set = ImageSet::from_png_dir(dir.path(), "folder").expect("valid folder");
    assert_eq!(set.shape(), [4, 1, 1, 2]);
    assert_eq!(set.pixels(), &[0, 1, 30, 31, 10, 11, 20, 21]);
    assert_eq!(set.labels(), None);
    assert_eq!(set.name(), "folder");
}

#[test]
fn rgb_png_is_stored_channels_first() {
    let dir = tmp();
    // 2×1 RGB: pixel 0 = (1, 2, 3), pixel 1 = (4, 5, 6).
    let rgb = png_bytes(2, 1, ColorType::Rgb, BitDepth::Eight, &[1, 2, 3, 4, 5, 6]);
    write(&dir.path().join("x.png"), &rgb);
    let set = ImageSet::from_png_dir(dir.path(), "rgb").expect("valid");
    assert_eq!(set.shape(), [1, 3, 1, 2]);
    assert_eq!(set.pixels(), &[1, 4, 2, 5, 3, 6]);
}

#[test]
fn a_png_of_another_size_is_rejected_naming_it_and_both_shapes() {
    let dir = tmp();
    write(&dir.path().join("a.png"), &gray(2, 2, &[0; 4]));
    write(&dir.path().join("b.png"), &gray(2, 2, &[0; 4]));
    let odd = write(&dir.path().join("c.png"), &gray(3, 2, &[0; 6]));
    write(&dir.path().join("d.png"), &gray(1, 1, &[0]));
    let err = ImageSet::from_png_dir(dir.path(), "x").expect_err("sizes differ");
    match &err {
        DataError::ImageShapeMismatch {
            path,
            shape,
            expected,
            first,
        } => {
            assert_eq!(path, &odd);
            assert_eq!(*shape, [1, 2, 3]);
            assert_eq!(*expected, [1, 2, 2]);
            assert_eq!(first, &dir.path().join("a.png"));
        }
        other => panic!("wrong error: {other:?}"),
    }
    let msg = err.to_string();
    assert!(msg.contains("c.png") && msg.contains("[1, 2, 3]") && msg.contains("[1, 2, 2]"));
}

#[test]
fn gray_and_rgb_pngs_cannot_be_mixed() {
    let dir = tmp();
    write(&dir.path().join("a.png"), &gray(1, 1, &[0]));
    write(
        &dir.path().join("b.png"),
        &png_bytes(1, 1, ColorType::Rgb, BitDepth::Eight, &[0, 0, 0]),
    );
    let err = ImageSet::from_png_dir(dir.path(), "x").expect_err("channels differ");
    assert!(
        matches!(
            &err,
            DataError::ImageShapeMismatch {
                shape: [3, 1, 1],
                expected: [1, 1, 1],
                ..
            }
        ),
        "{err:?}"
    );
}

#[test]
fn an_empty_folder_is_rejected_naming_it() {
    let dir = tmp();
    let msg = user_error(ImageSet::from_png_dir(dir.path(), "x"), dir.path());
    assert!(msg.contains("no image files (.png, .jpg"), "{msg}");
}

#[test]
fn a_folder_without_image_files_is_rejected_like_an_empty_one() {
    let dir = tmp();
    write(&dir.path().join("readme.txt"), b"not an image");
    write(&dir.path().join("photo.gif"), b"GIF89a");
    let msg = user_error(ImageSet::from_png_dir(dir.path(), "x"), dir.path());
    assert!(msg.contains("no image files (.png, .jpg"), "{msg}");
}

#[test]
fn a_corrupt_png_is_rejected_naming_the_file() {
    let dir = tmp();
    write(&dir.path().join("a.png"), &gray(1, 1, &[0]));
    let mut truncated = gray(4, 4, &[9; 16]);
    truncated.truncate(truncated.len() / 2);
    let bad = write(&dir.path().join("b.png"), &truncated);
    let msg = user_error(ImageSet::from_png_dir(dir.path(), "x"), &bad);
    assert!(msg.contains("not a readable PNG"), "{msg}");

    let garbage = write(&dir.path().join("b.png"), b"definitely not a PNG");
    user_error(ImageSet::from_png_dir(dir.path(), "x"), &garbage);
}

#[test]
fn non_png_files_and_subfolders_are_ignored_and_the_extension_is_case_insensitive() {
    let dir = tmp();
    write(&dir.path().join("a.png"), &gray(1, 1, &[1]));
    write(&dir.path().join("b.PNG"), &gray(1, 1, &[2]));
    write(&dir.path().join("c.txt"), b"ignored");
    write(&dir.path().join("png"), b"no extension: ignored");
    let sub = dir.path().join("sub.png");
    std::fs::create_dir(&sub).expect("subfolder");
    write(&sub.join("z.png"), &gray(1, 1, &[3]));
    let set = ImageSet::from_png_dir(dir.path(), "x").expect("valid");
    assert_eq!(set.pixels(), &[1, 2]);
}

#[test]
fn fully_opaque_alpha_is_dropped() {
    let dir = tmp();
    let rgba = png_bytes(
        2,
        1,
        ColorType::Rgba,
        BitDepth::Eight,
        &[1, 2, 3, 255, 4, 5, 6, 255],
    );
    write(&dir.path().join("rgba.png"), &rgba);
    let set = ImageSet::from_png_dir(dir.path(), "x").expect("opaque RGBA");
    assert_eq!(set.shape(), [1, 3, 1, 2]);
    assert_eq!(set.pixels(), &[1, 4, 2, 5, 3, 6]);

    let dir = tmp();
    let ga = png_bytes(
        2,
        1,
        ColorType::GrayscaleAlpha,
        BitDepth::Eight,
        &[7, 255, 8, 255],
    );
    write(&dir.path().join("ga.png"), &ga);
    let set = ImageSet::from_png_dir(dir.path(), "x").expect("opaque gray+alpha");
    assert_eq!(set.shape(), [1, 1, 1, 2]);
    assert_eq!(set.pixels(), &[7, 8]);
}

#[test]
fn a_transparent_pixel_is_rejected_with_its_position() {
    let dir = tmp();
    let rgba = png_bytes(
        2,
        2,
        ColorType::Rgba,
        BitDepth::Eight,
        &[0, 0, 0, 255, 0, 0, 0, 255, 0, 0, 0, 255, 0, 0, 0, 128],
    );
    let path = write(&dir.path().join("see-through.png"), &rgba);
    let msg = user_error(ImageSet::from_png_dir(dir.path(), "x"), &path);
    assert!(msg.contains("transparent"), "{msg}");
    assert!(msg.contains("x = 1, y = 1"), "{msg}");
}

#[test]
fn a_trns_transparent_gray_png_is_rejected() {
    let dir = tmp();
    let with_trns = png_bytes_with(2, 1, ColorType::Grayscale, BitDepth::Eight, &[0, 9], |e| {
        e.set_trns(vec![0, 0]) // gray value 0 is transparent
    });
    let path = write(&dir.path().join("t.png"), &with_trns);
    let msg = user_error(ImageSet::from_png_dir(dir.path(), "x"), &path);
    assert!(msg.contains("x = 0, y = 0"), "{msg}");
}

#[test]
fn a_16_bit_png_is_rejected_asking_for_8_bits() {
    let dir = tmp();
    let deep = png_bytes(1, 1, ColorType::Grayscale, BitDepth::Sixteen, &[0x12, 0x34]);
    let path = write(&dir.path().join("deep.png"), &deep);
    let msg = user_error(ImageSet::from_png_dir(dir.path(), "x"), &path);
    assert!(msg.contains("16 bits per sample"), "{msg}");
    assert!(msg.contains("convert it to 8 bits"), "{msg}");
}

#[test]
fn low_bit_depth_gray_is_scaled_to_8_bits() {
    let dir = tmp();
    // 1-bit, 8 pixels in one byte: 1010_0000.
    let bits = png_bytes(8, 1, ColorType::Grayscale, BitDepth::One, &[0b1010_0000]);
    write(&dir.path().join("bits.png"), &bits);
    let set = ImageSet::from_png_dir(dir.path(), "x").expect("1-bit gray");
    assert_eq!(set.pixels(), &[255, 0, 255, 0, 0, 0, 0, 0]);
}

#[test]
fn palette_images_expand_to_gray_or_rgb_by_their_palette() {
    let dir = tmp();
    let gray_palette = png_bytes_with(3, 1, ColorType::Indexed, BitDepth::Eight, &[2, 0, 1], |e| {
        e.set_palette(vec![0, 0, 0, 128, 128, 128, 255, 255, 255])
    });
    write(&dir.path().join("g.png"), &gray_palette);
    let set = ImageSet::from_png_dir(dir.path(), "x").expect("gray palette");
    assert_eq!(set.shape(), [1, 1, 1, 3]);
    assert_eq!(set.pixels(), &[255, 0, 128]);

    let dir = tmp();
    let colour_palette = png_bytes_with(2, 1, ColorType::Indexed, BitDepth::Eight, &[1, 0], |e| {
        e.set_palette(vec![10, 20, 30, 40, 50, 60])
    });
    write(&dir.path().join("c.png"), &colour_palette);
    let set = ImageSet::from_png_dir(dir.path(), "x").expect("colour palette");
    assert_eq!(set.shape(), [1, 3, 1, 2]);
    assert_eq!(set.pixels(), &[40, 10, 50, 20, 60, 30]);
}

// ---- from_path ----

#[test]
fn from_path_reads_a_folder_as_pngs_and_a_file_as_idx() {
    let dir = tmp();
    write(&dir.path().join("a.png"), &gray(1, 1, &[5]));
    let idx = write(
        &dir.path().join("images.idx"),
        &common::idx_bytes(&[1, 1, 1], &[6]),
    );
    let folder = ImageSet::from_path(dir.path(), "folder").expect("folder");
    assert_eq!(folder.pixels(), &[5]);
    let file = ImageSet::from_path(&idx, "file").expect("file");
    assert_eq!(file.pixels(), &[6]);
}

#[test]
fn from_path_on_a_missing_path_is_an_io_error_naming_it() {
    let dir = tmp();
    let missing = dir.path().join("nope");
    let err = ImageSet::from_path(&missing, "x").expect_err("missing");
    assert!(matches!(err, DataError::Io { .. }), "{err:?}");
    assert!(err.to_string().contains("nope"), "{err}");
}

/// The JPEG fixtures (`tests/fixtures/jpeg`, written by Pillow at quality 95) and the pixels
/// Pillow (libjpeg) decodes from them, interleaved `[H, W, C]`.
fn jpeg_fixture(name: &str) -> (Vec<u8>, Vec<u8>) {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/jpeg");
    let decoded = std::fs::read_to_string(dir.join("pillow-decoded.json")).expect("fixture");
    // {"<file>": {"mode", "size", "pixels": [..]}, ...}: pick the file's pixel list.
    let start = decoded.find(&format!("\"{name}\"")).expect("fixture entry");
    let list = &decoded[start..];
    let open = list.find("\"pixels\": [").expect("pixels") + "\"pixels\": [".len();
    let close = list[open..].find(']').expect("end of pixels") + open;
    let pixels = list[open..close]
        .split(',')
        .map(|v| v.trim().parse::<u8>().expect("a pixel"))
        .collect();
    (std::fs::read(dir.join(name)).expect("fixture"), pixels)
}

/// Issue 31: a folder of JPEG files (`.jpg`, `.jpeg`, any case) loads like a PNG folder:
/// grayscale JPEGs as one channel, colour ones as RGB `[3, H, W]`, pixels within JPEG
/// decoders' rounding of libjpeg's (±3: the IDCT and the chroma upsampling round
/// differently; measured 3 at most on the RGB fixture), files in name order; a broken JPEG
/// names itself.
#[test]
fn a_folder_of_jpeg_files_loads_gray_as_one_channel_and_colour_as_rgb() {
    let dir = tmp();
    let (a, a_pixels) = jpeg_fixture("gray-a.jpg");
    let (b, b_pixels) = jpeg_fixture("gray-b.JPEG");
    write(&dir.path().join("1.jpg"), &a);
    write(&dir.path().join("2.JPEG"), &b);
    let set = ImageSet::from_png_dir(dir.path(), "mine").expect("a JPEG folder");
    assert_eq!(set.shape(), [2, 1, 10, 12]);
    let close = |got: &[u8], want: &[u8]| {
        got.len() == want.len()
            && got
                .iter()
                .zip(want)
                .all(|(&g, &w)| (i16::from(g) - i16::from(w)).abs() <= 3)
    };
    assert!(close(set.image(0).expect("image"), &a_pixels));
    assert!(close(set.image(1).expect("image"), &b_pixels));

    let colour = tmp();
    let (rgb, rgb_pixels) = jpeg_fixture("rgb.jpg");
    write(&colour.path().join("c.jpeg"), &rgb);
    let set = ImageSet::from_png_dir(colour.path(), "colour").expect("an RGB JPEG");
    assert_eq!(set.shape(), [1, 3, 10, 12]);
    let planar: Vec<u8> = (0..3)
        .flat_map(|c| {
            rgb_pixels
                .iter()
                .skip(c)
                .step_by(3)
                .copied()
                .collect::<Vec<_>>()
        })
        .collect();
    let max_diff = set
        .image(0)
        .expect("image")
        .iter()
        .zip(&planar)
        .map(|(&g, &w)| (i16::from(g) - i16::from(w)).abs())
        .max();
    println!("RGB: largest difference to libjpeg {max_diff:?}");
    assert!(close(set.image(0).expect("image"), &planar));

    // A colour JPEG among gray ones is refused naming both files.
    write(&dir.path().join("3.jpg"), &rgb);
    let e = ImageSet::from_png_dir(dir.path(), "mixed").expect_err("mixed shapes");
    assert!(matches!(e, DataError::ImageShapeMismatch { .. }), "{e}");
    // A broken JPEG is an error naming it, not a panic.
    std::fs::remove_file(dir.path().join("3.jpg")).expect("removed");
    write(&dir.path().join("0.jpg"), &a[..a.len() / 2]);
    let e = ImageSet::from_png_dir(dir.path(), "broken").expect_err("truncated");
    assert!(e.to_string().contains("0.jpg"), "{e}");
}

/// Issue 31: BMP, TIFF and WebP files load like PNG and JPEG (colour → RGB, gray → one
/// channel, the exact pixels for the lossless formats), and a transparent pixel is refused.
#[test]
fn bmp_tiff_and_webp_files_load_with_their_pixels_and_channels() {
    let dir = std::env::temp_dir().join(format!("bnood-other-formats-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("dir");
    let rgb: Vec<u8> = (0..8 * 8 * 3).map(|i| (i * 5 % 256) as u8).collect();
    let planar: Vec<u8> = (0..3)
        .flat_map(|c| (0..64).map(move |p| ((p * 3 + c) * 5 % 256) as u8))
        .collect();
    let rgb_image = image::RgbImage::from_raw(8, 8, rgb).expect("rgb");
    for name in ["a.bmp", "b.tiff", "c.webp"] {
        rgb_image.save(dir.join(name)).expect("encode");
    }
    let set = bnood_data::ImageSet::from_path(&dir, "other").expect("three colour images");
    assert_eq!(set.shape(), [3, 3, 8, 8]);
    for i in 0..3 {
        assert_eq!(
            set.image(i),
            Some(&planar[..]),
            "image {i}: lossless, planar RGB"
        );
    }
    let gray_dir = dir.join("gray");
    std::fs::create_dir_all(&gray_dir).expect("dir");
    let gray: Vec<u8> = (0..64).map(|i| (i * 4) as u8).collect();
    image::GrayImage::from_raw(8, 8, gray.clone())
        .expect("gray")
        .save(gray_dir.join("g.tif"))
        .expect("encode");
    let set = bnood_data::ImageSet::from_path(&gray_dir, "gray").expect("a gray TIFF");
    assert_eq!((set.shape(), set.image(0)), ([1, 1, 8, 8], Some(&gray[..])));
    let alpha_dir = dir.join("alpha");
    std::fs::create_dir_all(&alpha_dir).expect("dir");
    let mut rgba = image::RgbaImage::from_pixel(8, 8, image::Rgba([9, 9, 9, 255]));
    rgba.put_pixel(3, 3, image::Rgba([9, 9, 9, 10]));
    rgba.save(alpha_dir.join("t.webp")).expect("encode");
    let err = bnood_data::ImageSet::from_path(&alpha_dir, "alpha").expect_err("transparent");
    assert!(err.to_string().contains("transparent"), "{err}");
    let _ = std::fs::remove_dir_all(&dir);
}
