//! A user's own images as an [`ImageSet`]: any IDX file or any folder of PNG files, so that
//! `bnood score` can take test and reference sets that are not in the catalogue.
//!
//! Nothing here is checksummed (the files are the user's), and the sets are unlabelled.
//!
//! - IDX ([`ImageSet::from_idx_file`]), raw or gzip, element type `0x08` (unsigned byte):
//!   `[N, H, W]` (MNIST-style, loaded as `C = 1`) or `[N, C, H, W]` (channels first, as
//!   stored in memory by PyTorch). A channels-last `[N, H, W, C]` file is rejected rather
//!   than guessed at, because both readings would have a valid shape.
//! - PNG folders ([`ImageSet::from_png_dir`]): every `*.png` file directly in the folder
//!   (extension compared case-insensitively; not recursive; other files ignored), in
//!   byte order of their file names. 8-bit samples only: a 16-bit PNG is an error rather
//!   than silently truncated, because the models see 256 levels per sample and dropping the
//!   low byte can flatten low-contrast images. Alpha is dropped only where every pixel is
//!   fully opaque.

use std::ffi::OsString;
use std::fs::File;
use std::io::{BufRead, BufReader, Read};
use std::path::{Path, PathBuf};

use png::{BitDepth, ColorType, Transformations};

use crate::error::{DataError, Result};
use crate::idx::{decode_idx, gzip_failure};
use crate::image_set::ImageSet;
use crate::preprocess::Preprocess;

/// The IDX element type code for unsigned bytes, the only one images can use.
const IDX_U8: u8 = 0x08;

impl ImageSet {
    /// Loads a user's images from `path`: a directory is read as a PNG folder
    /// ([`ImageSet::from_png_dir`]), anything else as an IDX file
    /// ([`ImageSet::from_idx_file`]). The set is `[N, C, H, W]`, unlabelled, named `name`.
    ///
    /// # Errors
    /// [`DataError::Io`] if `path` does not exist or cannot be read, and every error of the
    /// two readers.
    pub fn from_path(path: &Path, name: impl Into<String>) -> Result<Self> {
        Self::from_path_expecting(path, name, None)
    }

    /// [`from_path`](Self::from_path) for a model of images `[C, H, W]` = `expected` (when
    /// given): the shape in each file's header is checked before its pixels are read, so a
    /// file of huge images is refused without decoding it.
    ///
    /// # Errors
    /// As [`from_path`](Self::from_path); [`DataError::UserImages`] for a path that is
    /// neither a folder nor a regular file (a FIFO, a device such as `/dev/zero`, a socket),
    /// and for images whose header promises another shape than `expected`.
    pub fn from_path_expecting(
        path: &Path,
        name: impl Into<String>,
        expected: Option<[usize; 3]>,
    ) -> Result<Self> {
        let meta = std::fs::metadata(path).map_err(|e| DataError::io(path, e))?;
        if meta.is_dir() {
            Self::read_png_dir(path, name.into(), expected)
        } else if meta.is_file() {
            Self::read_idx_file(path, name.into(), expected)
        } else {
            Err(not_a_regular_file(path))
        }
    }

    /// [`from_path_expecting`](Self::from_path_expecting) with every image preprocessed
    /// ([`Preprocess`], e.g. a model's recorded `--resize` / `--grayscale`) and `expected`
    /// checked after preprocessing. A folder is read image by image (each decoded,
    /// preprocessed and only then kept, so memory holds the preprocessed set); with a
    /// resize its images may have different sizes (not different channel counts, unless a
    /// channel conversion is given too).
    ///
    /// # Errors
    /// As [`from_path_expecting`](Self::from_path_expecting), and the preprocessing's
    /// errors (a crop larger than an image), naming the file.
    pub fn from_path_prepared(
        path: &Path,
        name: impl Into<String>,
        preprocess: &Preprocess,
        expected: Option<[usize; 3]>,
    ) -> Result<Self> {
        if preprocess.is_identity() {
            return Self::from_path_expecting(path, name, expected);
        }
        preprocess.check()?;
        let meta = std::fs::metadata(path).map_err(|e| DataError::io(path, e))?;
        if meta.is_dir() {
            let files = png_files(path)?;
            if files.is_empty() {
                return Err(no_images(path));
            }
            return Self::from_image_files(&files, name, preprocess, expected);
        }
        if !meta.is_file() {
            return Err(not_a_regular_file(path));
        }
        let set = preprocess
            .apply(&Self::read_idx_file(path, name.into(), None)?)
            .map_err(|e| DataError::user_images(path, e.to_string()))?;
        let [_, c, h, w] = set.shape();
        match expected {
            Some(model) if model != [c, h, w] => Err(model_shape_mismatch(path, [c, h, w], model)),
            _ => Ok(set),
        }
    }

    /// Reads an IDX images file (raw or gzip-compressed) of unsigned bytes into an
    /// unlabelled set `[N, C, H, W]`.
    ///
    /// Accepted dimensions: `[N, H, W]` (MNIST-style; `C = 1`) or `[N, C, H, W]` (channels
    /// first). No checksum is checked.
    ///
    /// # Errors
    /// [`DataError::Io`] if the file cannot be read; [`DataError::UserImages`] if it is not
    /// an IDX file, is a labels file (1 dimension), has an element type other than
    /// unsigned byte, holds no images, has 2 or more than 4 dimensions, or looks
    /// channels-last `[N, H, W, C]`.
    pub fn from_idx_file(path: &Path, name: impl Into<String>) -> Result<Self> {
        Self::read_idx_file(path, name.into(), None)
    }

    /// Reads the header first, checks it (and the image shape against `expected`), then at
    /// most the payload the header promises plus one byte: memory never exceeds what a
    /// valid file of that header needs.
    fn read_idx_file(path: &Path, name: String, expected: Option<[usize; 3]>) -> Result<Self> {
        if !std::fs::metadata(path)
            .map_err(|e| DataError::io(path, e))?
            .is_file()
        {
            return Err(not_a_regular_file(path));
        }
        let bytes = read_idx_bounded(path, expected)?;
        check_idx_header(&bytes, path)?;
        let array = decode_idx(&bytes, path).map_err(|e| as_user_error(e, path))?;
        let shape = idx_image_shape(&array.dims, path)?;
        Self::new(name, array.data, shape, None)
    }

    /// Reads every `*.png`, `*.jpg`, `*.jpeg`, `*.bmp`, `*.tif`, `*.tiff` and `*.webp` file
    /// directly inside `dir` (BMP, TIFF and WebP decoded by the `image` crate; not recursive;
    /// the extension is compared case-insensitively; other files are ignored) into an
    /// unlabelled set `[N, C, H, W]`, ordered by file name (byte order), so the order is the
    /// same on every machine. JPEG files: grayscale → `C = 1`, colour → RGB `C = 3`
    /// (decoded by `zune-jpeg`, at most 4096×4096, files of at most 64 MB).
    ///
    /// Channels: 8-bit grayscale → `C = 1`, 8-bit RGB → `C = 3`. Lower bit depths are
    /// scaled up to 8 bits. Palette images are expanded: to `C = 1` if every palette entry
    /// is gray (`R = G = B`, as image optimisers often write grayscale), else to `C = 3`.
    /// An alpha channel (or `tRNS` transparency) is dropped if every pixel is fully opaque.
    /// Interlaced PNGs are deinterlaced; of an animated PNG only the default image is read.
    ///
    /// # Errors
    /// [`DataError::Io`] if the folder or a file cannot be read;
    /// [`DataError::UserImages`] if the folder holds no PNG file, or a PNG is corrupt,
    /// 16-bit, or has a transparent pixel (each naming the file);
    /// [`DataError::ImageShapeMismatch`] naming the first image whose `[C, H, W]` differs
    /// from the first image's.
    pub fn from_png_dir(dir: &Path, name: impl Into<String>) -> Result<Self> {
        Self::read_png_dir(dir, name.into(), None)
    }

    /// [`from_png_dir`](Self::from_png_dir); every image's header is checked (against
    /// `expected`, else against the first image) before its pixels are decoded.
    fn read_png_dir(dir: &Path, name: String, expected: Option<[usize; 3]>) -> Result<Self> {
        let files = png_files(dir)?;
        if files.is_empty() {
            return Err(no_images(dir));
        }
        Self::from_png_files(&files, name, expected)
    }

    /// The PNG files `files`, in the given order, as one unlabelled set `[N, C, H, W]`, read
    /// and checked as [`from_png_dir`](Self::from_png_dir) reads a folder's files (every
    /// header is checked against `expected`, else against the first image, before its
    /// pixels are decoded). For callers that pick the files themselves, e.g. new files of a
    /// watched folder.
    ///
    /// # Errors
    /// [`DataError::InvalidArgument`] for an empty list; otherwise as
    /// [`from_png_dir`](Self::from_png_dir).
    pub fn from_png_files(
        files: &[PathBuf],
        name: impl Into<String>,
        expected: Option<[usize; 3]>,
    ) -> Result<Self> {
        Self::from_image_files(files, name, &Preprocess::default(), expected)
    }

    /// [`from_png_files`](Self::from_png_files) with every image preprocessed as it is read
    /// (see [`from_path_prepared`](Self::from_path_prepared)); `expected` is the shape
    /// after preprocessing.
    ///
    /// # Errors
    /// As [`from_png_files`](Self::from_png_files) and
    /// [`from_path_prepared`](Self::from_path_prepared).
    pub fn from_image_files(
        files: &[PathBuf],
        name: impl Into<String>,
        preprocess: &Preprocess,
        expected: Option<[usize; 3]>,
    ) -> Result<Self> {
        if !preprocess.is_identity() {
            return Self::from_image_files_prepared(files, name.into(), preprocess, expected);
        }
        let name = name.into();
        let Some(first) = files.first() else {
            return Err(DataError::InvalidArgument(format!(
                "no PNG file given for `{name}`: pass at least one"
            )));
        };
        let first_image = read_png(first, |shape| match expected {
            Some(model) if shape != model => Err(model_shape_mismatch(first, shape, model)),
            _ => Ok(()),
        })?;
        let expected = first_image.shape;
        let mut pixels = Vec::with_capacity(files.len().saturating_mul(first_image.pixels.len()));
        pixels.extend_from_slice(&first_image.pixels);
        for file in &files[1..] {
            let image = read_png(file, |shape| {
                if shape != expected {
                    return Err(DataError::ImageShapeMismatch {
                        path: file.clone(),
                        shape,
                        expected,
                        first: first.clone(),
                    });
                }
                Ok(())
            })?;
            pixels.extend_from_slice(&image.pixels);
        }
        let [c, h, w] = expected;
        Self::new(name, pixels, [files.len(), c, h, w], None)
    }
}

impl ImageSet {
    fn from_image_files_prepared(
        files: &[PathBuf],
        name: String,
        preprocess: &Preprocess,
        expected: Option<[usize; 3]>,
    ) -> Result<Self> {
        let Some(first) = files.first() else {
            return Err(DataError::InvalidArgument(format!(
                "no image file given for `{name}`: pass at least one"
            )));
        };
        let prepared = |path: &Path, shape: [usize; 3]| {
            preprocess
                .output_shape(shape)
                .map_err(|e| DataError::user_images(path, e.to_string()))
        };
        let first_image = read_png(first, |shape| {
            let out = prepared(first, shape)?;
            match expected {
                Some(model) if out != model => Err(model_shape_mismatch(first, out, model)),
                _ => Ok(()),
            }
        })?;
        let first_raw = first_image.shape;
        let (first_pixels, out) = preprocess
            .apply_image(&first_image.pixels, first_raw)
            .map_err(|e| DataError::user_images(first, e.to_string()))?;
        let mut pixels = Vec::with_capacity(files.len().saturating_mul(first_pixels.len()));
        pixels.extend_from_slice(&first_pixels);
        for file in &files[1..] {
            let image = read_png(file, |shape| {
                // Without a resize every image must have the first one's size; a channel
                // conversion still lets gray and colour images mix.
                let same_size = shape[1..] == first_raw[1..];
                let same_channels = shape[0] == first_raw[0] || preprocess.channels.is_some();
                if (preprocess.resize.is_none() && !same_size) || !same_channels {
                    return Err(DataError::ImageShapeMismatch {
                        path: file.clone(),
                        shape,
                        expected: first_raw,
                        first: first.clone(),
                    });
                }
                prepared(file, shape).map(|_| ())
            })?;
            let (prepared_pixels, _) = preprocess
                .apply_image(&image.pixels, image.shape)
                .map_err(|e| DataError::user_images(file, e.to_string()))?;
            pixels.extend_from_slice(&prepared_pixels);
        }
        let [c, h, w] = out;
        Self::new(name, pixels, [files.len(), c, h, w], None)
    }
}

fn no_images(dir: &Path) -> DataError {
    DataError::user_images(
        dir,
        "the folder holds no image files (.png, .jpg, .jpeg, .bmp, .tif, .tiff, .webp); put the images there, or pass an IDX file instead",
    )
}

/// The largest image accepted, in pixels (4096 × 4096): bnood's models take small images
/// (28×28, 32×32), and a larger PNG is refused from its header, before it is decoded.
pub const MAX_IMAGE_PIXELS: usize = 4096 * 4096;

fn not_a_regular_file(path: &Path) -> DataError {
    DataError::user_images(
        path,
        "it is neither a regular file nor a folder (a FIFO, a device such as /dev/zero, or a socket); pass an IDX file or a folder of PNG images",
    )
}

fn model_shape_mismatch(path: &Path, shape: [usize; 3], model: [usize; 3]) -> DataError {
    DataError::user_images(
        path,
        format!(
            "its images are {shape:?} ([C, H, W], from the file's header) but the model expects {model:?}: resize or convert the images, or pick a model trained on images of this shape"
        ),
    )
}

/// Reads an IDX file (raw or gzip) header first: a bad magic number, an element type other
/// than unsigned bytes, a shape other than `expected` or a raw file shorter than its header
/// promises is refused before the payload is read; then at most the promised payload plus
/// one byte (to detect trailing bytes) is read. The bytes returned are checked by
/// [`decode_idx`].
fn read_idx_bounded(path: &Path, expected: Option<[usize; 3]>) -> Result<Vec<u8>> {
    let file = File::open(path).map_err(|e| DataError::io(path, e))?;
    let file_len = file.metadata().map_err(|e| DataError::io(path, e))?.len();
    let mut input = BufReader::new(file);
    let gzip = input
        .fill_buf()
        .map_err(|e| DataError::io(path, e))?
        .starts_with(&[0x1f, 0x8b]);
    let mut reader: Box<dyn Read> = if gzip {
        Box::new(flate2::bufread::GzDecoder::new(input))
    } else {
        Box::new(input)
    };
    let read_err = |e: std::io::Error| {
        if gzip {
            DataError::user_images(path, gzip_failure(&e))
        } else {
            DataError::io(path, e)
        }
    };
    let mut bytes = Vec::with_capacity(4);
    (&mut reader)
        .take(4)
        .read_to_end(&mut bytes)
        .map_err(read_err)?;
    let [0, 0, _, ndim] = bytes[..] else {
        // Too short or no IDX magic: decode_idx words it.
        return Ok(bytes);
    };
    check_idx_header(&bytes, path)?;
    let header_len = 4 + 4 * usize::from(ndim);
    (&mut reader)
        .take(4 * u64::from(ndim))
        .read_to_end(&mut bytes)
        .map_err(read_err)?;
    if bytes.len() < header_len || ndim == 0 {
        return Ok(bytes);
    }
    let dims: Vec<usize> = bytes[4..header_len]
        .chunks_exact(4)
        .map(|c| u32::from_be_bytes([c[0], c[1], c[2], c[3]]) as usize)
        .collect();
    if let (Some(model), Ok([_, c, h, w])) = (expected, idx_image_shape(&dims, path))
        && [c, h, w] != model
    {
        return Err(model_shape_mismatch(path, [c, h, w], model));
    }
    let Some(payload) = dims
        .iter()
        .try_fold(1u64, |acc, &d| acc.checked_mul(d as u64))
    else {
        return Ok(bytes);
    };
    if !gzip && file_len < header_len as u64 + payload {
        // decode_idx reports the truncation from what is there, without reading a promise.
        let mut rest = Vec::new();
        reader.read_to_end(&mut rest).map_err(read_err)?;
        bytes.extend(rest);
        return Ok(bytes);
    }
    reader
        .take(payload.saturating_add(1))
        .read_to_end(&mut bytes)
        .map_err(read_err)?;
    Ok(bytes)
}

/// Re-words a [`DataError::Corrupt`] from the catalogue readers, whose advice is to fetch
/// the file again, into advice for a user's own file.
fn as_user_error(err: DataError, path: &Path) -> DataError {
    match err {
        DataError::Corrupt { reason, .. } => {
            let hint = if has_extension(path, "png") {
                "; for PNG images pass the folder that holds them"
            } else {
                "; pass an IDX images file (e.g. MNIST's t10k-images-idx3-ubyte.gz) or a folder of PNG files"
            };
            DataError::user_images(path, format!("not a readable IDX file: {reason}{hint}"))
        }
        other => other,
    }
}

/// Checks what [`decode_idx`] would reject with catalogue wording: the element type and an
/// empty first dimension. Anything else malformed is left to [`decode_idx`].
fn check_idx_header(bytes: &[u8], path: &Path) -> Result<()> {
    let [0, 0, elem_type, ndim, ..] = *bytes else {
        return Ok(());
    };
    if elem_type != IDX_U8 {
        return Err(DataError::user_images(
            path,
            format!(
                "its IDX element type is {} ({elem_type:#04x}) but images must be unsigned bytes (0x08); convert the pixels to integers 0–255 (e.g. numpy `x.astype(np.uint8)`) and write the file again",
                idx_type_name(elem_type)
            ),
        ));
    }
    let first_dim = bytes.get(4..8).filter(|_| ndim > 0);
    if let Some(&[a, b, c, d]) = first_dim
        && u32::from_be_bytes([a, b, c, d]) == 0
    {
        return Err(DataError::user_images(
            path,
            "it holds 0 images (its first IDX dimension is 0); pass a file with at least one image",
        ));
    }
    Ok(())
}

/// The name of an IDX element type code.
fn idx_type_name(code: u8) -> &'static str {
    match code {
        0x08 => "unsigned byte",
        0x09 => "signed byte",
        0x0B => "i16",
        0x0C => "i32",
        0x0D => "f32",
        0x0E => "f64",
        _ => "unknown",
    }
}

/// The `[N, C, H, W]` shape of IDX image dims `[N, H, W]` or `[N, C, H, W]`.
fn idx_image_shape(dims: &[usize], path: &Path) -> Result<[usize; 4]> {
    match *dims {
        [n, h, w] => Ok([n, 1, h, w]),
        [n, c, h, w] if looks_channels_last(c, w) => Err(DataError::user_images(
            path,
            format!(
                "its dims {dims:?} look channels-last [N, H, W, C], but bnood reads 4-D IDX files as channels-first [N, C, H, W]; transpose the array (numpy `x.transpose(0, 3, 1, 2)`) and write the file again (if it really is [N, C, H, W] = [{n}, {c}, {h}, {w}], save it as a PNG folder instead)"
            ),
        )),
        [n, c, h, w] => Ok([n, c, h, w]),
        [n] => Err(DataError::user_images(
            path,
            format!(
                "this looks like a labels file (1 IDX dimension: {n} values); pass the matching images file (dims [N, H, W], e.g. t10k-images-idx3-ubyte.gz instead of t10k-labels-idx1-ubyte.gz)"
            ),
        )),
        _ => Err(DataError::user_images(
            path,
            format!(
                "its IDX dims are {dims:?}; images must be [N, H, W] or [N, C, H, W] (flattened [N, H·W] images must be reshaped first)"
            ),
        )),
    }
}

/// Whether 4-D dims `[_, c, _, w]` read as channels-first are more plausibly channels-last:
/// the last axis is a channel count and the second is not.
fn looks_channels_last(c: usize, w: usize) -> bool {
    let is_channels = |x: usize| matches!(x, 1 | 3 | 4);
    is_channels(w) && !is_channels(c)
}

/// The file names of the images [`ImageSet::from_png_dir`] reads from `dir`, in its order
/// (image `i` of the set is file `i`).
///
/// # Errors
/// [`DataError::Io`] if the folder cannot be read.
pub fn png_file_names(dir: &Path) -> Result<Vec<String>> {
    Ok(png_files(dir)?
        .iter()
        .map(|p| {
            p.file_name()
                .map_or_else(String::new, |n| n.to_string_lossy().into_owned())
        })
        .collect())
}

/// Whether `path` has an extension bnood reads images from: `png`, `jpg`, `jpeg` (any case).
pub fn is_image_file_name(path: &Path) -> bool {
    ["png", "jpg", "jpeg", "bmp", "tif", "tiff", "webp"]
        .iter()
        .any(|ext| has_extension(path, ext))
}

/// The image files (`*.png`, `*.jpg`, `*.jpeg`, `*.bmp`, `*.tif`, `*.tiff`, `*.webp`) directly inside `dir`, sorted by file name
/// (byte order).
fn png_files(dir: &Path) -> Result<Vec<PathBuf>> {
    let entries = std::fs::read_dir(dir).map_err(|e| DataError::io(dir, e))?;
    let mut files: Vec<(OsString, PathBuf)> = Vec::new();
    for entry in entries {
        let entry = entry.map_err(|e| DataError::io(dir, e))?;
        let path = entry.path();
        // A symlink counts as a file whatever its target (dangling, looping): reading it then
        // fails with an error naming it, as an unreadable real file does.
        let is_file = entry
            .file_type()
            .is_ok_and(|t| t.is_file() || t.is_symlink())
            && !path.is_dir();
        if is_image_file_name(&path) && is_file {
            let file_name = path.file_name().unwrap_or_default().to_owned();
            files.push((file_name, path));
        }
    }
    files.sort();
    Ok(files.into_iter().map(|(_, path)| path).collect())
}

fn has_extension(path: &Path, ext: &str) -> bool {
    path.extension()
        .is_some_and(|e| e.eq_ignore_ascii_case(ext))
}

/// One decoded PNG: `pixels` row-major `[C, H, W]`.
pub(crate) struct PngImage {
    shape: [usize; 3],
    pixels: Vec<u8>,
}

/// Decodes one PNG file into 8-bit `[C, H, W]` pixels, after `check` accepted the shape
/// `[C, H, W]` its header promises (and the image is at most [`MAX_IMAGE_PIXELS`]).
fn read_png(path: &Path, check: impl Fn([usize; 3]) -> Result<()>) -> Result<PngImage> {
    if has_extension(path, "jpg") || has_extension(path, "jpeg") {
        return read_jpeg(path, check);
    }
    if ["bmp", "tif", "tiff", "webp"]
        .iter()
        .any(|ext| has_extension(path, ext))
    {
        return read_other(path, check);
    }
    let file = File::open(path).map_err(|e| DataError::io(path, e))?;
    decode_png(BufReader::new(file), path, check)
}

/// Reads a BMP, TIFF or WebP image with the `image` crate's decoders (its limits: at most
/// 4096×4096 pixels, 512 MB of decoder memory): the header is checked (size, then `check`
/// with the shape) before the pixels are decoded. Colour → RGB (`C = 3`), gray → `C = 1`
/// (higher bit depths scaled to 8 bits); an alpha channel is dropped when every pixel is
/// opaque and refused otherwise, as for PNG.
fn read_other(path: &Path, check: impl Fn([usize; 3]) -> Result<()>) -> Result<PngImage> {
    let corrupt = |e: String| {
        DataError::user_images(
            path,
            format!("not a readable image ({e}); re-export it or remove it from the folder"),
        )
    };
    let open = || -> Result<image::ImageReader<BufReader<File>>> {
        let mut reader = image::ImageReader::open(path).map_err(|e| DataError::io(path, e))?;
        let mut limits = image::Limits::default();
        limits.max_image_width = Some(4096);
        limits.max_image_height = Some(4096);
        limits.max_alloc = Some(512 << 20);
        reader.limits(limits);
        Ok(reader)
    };
    let (width, height) = open()?
        .into_dimensions()
        .map_err(|e| corrupt(e.to_string()))?;
    let (width, height) = (width as usize, height as usize);
    if width.saturating_mul(height) > MAX_IMAGE_PIXELS {
        return Err(DataError::user_images(
            path,
            format!(
                "its header says {width}×{height} pixels, more than bnood reads ({MAX_IMAGE_PIXELS} pixels, 4096×4096): resize it"
            ),
        ));
    }
    let image = open()?.decode().map_err(|e| corrupt(e.to_string()))?;
    let colour = image.color().has_color();
    let channels = if colour { 3 } else { 1 };
    check([channels, height, width])?;
    if image.color().has_alpha() && image.to_rgba8().pixels().any(|p| p.0[3] != 255) {
        return Err(DataError::user_images(
            path,
            "it has transparent pixels; bnood reads opaque images (flatten it onto a background)",
        ));
    }
    let interleaved = if colour {
        image.to_rgb8().into_raw()
    } else {
        image.to_luma8().into_raw()
    };
    Ok(PngImage {
        shape: [channels, height, width],
        pixels: planar(&interleaved, channels, channels),
    })
}

/// The largest JPEG file read, in bytes: far above any image of [`MAX_IMAGE_PIXELS`] at a
/// sane quality, far below what would exhaust memory.
const MAX_JPEG_BYTES: u64 = 64 << 20;

/// Reads an 8-bit JPEG (baseline or progressive) as `[C, H, W]`: a grayscale JPEG as
/// `C = 1`, a colour one (YCbCr, RGB, CMYK) as RGB, `C = 3`. The header is checked (size,
/// then `check` with the shape) before the pixels are decoded; the decoder refuses images
/// wider or higher than 4096 pixels itself.
fn read_jpeg(path: &Path, check: impl Fn([usize; 3]) -> Result<()>) -> Result<PngImage> {
    use zune_core::colorspace::ColorSpace;
    use zune_core::options::DecoderOptions;

    let meta = std::fs::metadata(path).map_err(|e| DataError::io(path, e))?;
    if !meta.is_file() || meta.len() > MAX_JPEG_BYTES {
        return Err(DataError::user_images(
            path,
            format!(
                "it is not a regular file of at most {MAX_JPEG_BYTES} bytes; re-export it or remove it from the folder"
            ),
        ));
    }
    let bytes = std::fs::read(path).map_err(|e| DataError::io(path, e))?;
    let corrupt = |e: String| {
        DataError::user_images(
            path,
            format!("not a readable JPEG file ({e}); re-export it or remove it from the folder"),
        )
    };
    let options = DecoderOptions::default()
        .set_max_width(4096)
        .set_max_height(4096);
    let mut decoder = zune_jpeg::JpegDecoder::new_with_options(
        zune_core::bytestream::ZCursor::new(&bytes[..]),
        options,
    );
    decoder
        .decode_headers()
        .map_err(|e| corrupt(format!("{e:?}")))?;
    let info = decoder
        .info()
        .ok_or_else(|| corrupt("no image header".into()))?;
    let (width, height) = (usize::from(info.width), usize::from(info.height));
    if width.saturating_mul(height) > MAX_IMAGE_PIXELS {
        return Err(DataError::user_images(
            path,
            format!(
                "its header says {width}×{height} pixels, more than bnood reads ({MAX_IMAGE_PIXELS} pixels, 4096×4096): resize it"
            ),
        ));
    }
    let gray = decoder.input_colorspace() == Some(ColorSpace::Luma);
    let channels = if gray { 1 } else { 3 };
    check([channels, height, width])?;
    decoder.set_options(options.jpeg_set_out_colorspace(if gray {
        ColorSpace::Luma
    } else {
        ColorSpace::RGB
    }));
    let interleaved = decoder.decode().map_err(|e| corrupt(format!("{e:?}")))?;
    if interleaved.len() != channels * width * height {
        return Err(corrupt(format!(
            "it decoded to {} samples, not {channels}×{height}×{width}",
            interleaved.len()
        )));
    }
    Ok(PngImage {
        shape: [channels, height, width],
        pixels: planar(&interleaved, channels, channels),
    })
}

/// [`read_png`] on any reader (`path` names it in errors).
pub(crate) fn decode_png<R: std::io::BufRead + std::io::Seek>(
    input: R,
    path: &Path,
    check: impl Fn([usize; 3]) -> Result<()>,
) -> Result<PngImage> {
    let corrupt = |e: png::DecodingError| {
        DataError::user_images(
            path,
            format!("not a readable PNG file ({e}); re-export it or remove it from the folder"),
        )
    };
    // Ancillary chunks (text, ICC profiles) may not claim more memory than the largest image.
    let limits = png::Limits {
        bytes: 4 * MAX_IMAGE_PIXELS,
    };
    let mut decoder = png::Decoder::new_with_limits(input, limits);
    decoder.set_transformations(Transformations::EXPAND);
    let mut reader = decoder.read_info().map_err(corrupt)?;
    let (color_type, bit_depth) = reader.output_color_type();
    let (header_w, header_h) = (reader.info().width as usize, reader.info().height as usize);
    if header_w.saturating_mul(header_h) > MAX_IMAGE_PIXELS {
        return Err(DataError::user_images(
            path,
            format!(
                "its header says {header_w}×{header_h} pixels, more than bnood reads ({MAX_IMAGE_PIXELS} pixels, 4096×4096); its models take small images such as 28×28: resize it"
            ),
        ));
    }
    if bit_depth != BitDepth::Eight {
        return Err(DataError::user_images(
            path,
            format!(
                "it has {} bits per sample but bnood uses 8-bit pixels (0–255); convert it to 8 bits (e.g. ImageMagick `magick mogrify -depth 8 *.png`)",
                bit_depth as u8
            ),
        ));
    }
    let gray_palette = reader.info().color_type == ColorType::Indexed
        && reader.info().palette.as_deref().is_some_and(|p| {
            p.chunks_exact(3)
                .all(|rgb| rgb[0] == rgb[1] && rgb[1] == rgb[2])
        });
    let header_channels = match color_type {
        _ if gray_palette => 1,
        ColorType::Grayscale | ColorType::GrayscaleAlpha => 1,
        _ => 3,
    };
    check([header_channels, header_h, header_w])?;
    let size = reader.output_buffer_size().ok_or_else(|| {
        DataError::user_images(path, "the image is too large to decode in memory")
    })?;
    let mut interleaved = vec![0u8; size];
    let frame = reader.next_frame(&mut interleaved).map_err(corrupt)?;
    interleaved.truncate(frame.buffer_size());
    let (height, width) = (frame.height as usize, frame.width as usize);

    let (stored, colour) = match color_type {
        ColorType::Grayscale => (1, 1),
        ColorType::GrayscaleAlpha => (2, 1),
        ColorType::Rgb => (3, 3),
        ColorType::Rgba => (4, 3),
        ColorType::Indexed => {
            return Err(DataError::user_images(
                path,
                "its palette could not be expanded; re-export it as grayscale or RGB",
            ));
        }
    };
    if stored > colour {
        check_opaque(&interleaved, stored, width, path)?;
    }
    // A gray palette expands to R = G = B: keep R alone.
    let channels = if gray_palette { 1 } else { colour };
    Ok(PngImage {
        shape: [channels, height, width],
        pixels: planar(&interleaved, stored, channels),
    })
}

/// Fails on the first pixel of interleaved `stride`-sample pixels whose last sample
/// (alpha) is below 255.
fn check_opaque(interleaved: &[u8], stride: usize, width: usize, path: &Path) -> Result<()> {
    let Some(index) = interleaved
        .chunks_exact(stride)
        .position(|px| px[stride - 1] != u8::MAX)
    else {
        return Ok(());
    };
    let (x, y) = (index % width, index / width);
    Err(DataError::user_images(
        path,
        format!(
            "it has transparent pixels (first at x = {x}, y = {y}) and bnood models see colour only; flatten the images onto a background first (e.g. ImageMagick `magick mogrify -background white -alpha remove -alpha off *.png`)"
        ),
    ))
}

/// The first `channels` samples of each interleaved `[H, W, stride]` pixel, as planar
/// `[channels, H, W]`.
fn planar(interleaved: &[u8], stride: usize, channels: usize) -> Vec<u8> {
    let pixel_count = interleaved.len() / stride;
    let mut out = vec![0u8; channels * pixel_count];
    for (i, px) in interleaved.chunks_exact(stride).enumerate() {
        for (c, &sample) in px[..channels].iter().enumerate() {
            out[c * pixel_count + i] = sample;
        }
    }
    out
}

/// Size in bytes of `image` (`[C, H, W]` `u8` pixels, C = 1 grey or 3 RGB) encoded as a PNG
/// file at zlib level 9 with no row filter — the compressor of Serrà et al.'s input
/// complexity (ICLR 2020, PNG at its highest level). The file includes PNG's fixed
/// overhead (signature, IHDR, IEND: 57 bytes), the same for every image of one shape.
///
/// Why no row filter: on 28×28 images the adaptive filters (Sub, Up, Paeth per row) turn
/// sharp strokes into high-entropy residuals. Measured with the shipped Fashion-MNIST
/// RealNVP (500 test images per set), input-complexity AUROC against KMNIST was 0.42 with
/// adaptive filters and 0.88 without; against MNIST 0.90 and 0.99 (`docs/results.md`).
///
/// # Errors
/// [`DataError::InvalidArgument`] if the pixel count is not `C·H·W` or C is not 1 or 3.
pub fn png_size(image: &[u8], [c, h, w]: [usize; 3]) -> Result<usize> {
    if image.len() != c * h * w || h == 0 || w == 0 {
        return Err(DataError::InvalidArgument(format!(
            "an image of shape [{c}, {h}, {w}] has {} pixels, but {} were given",
            c * h * w,
            image.len()
        )));
    }
    let (color, interleaved) = match c {
        1 => (ColorType::Grayscale, image.to_vec()),
        3 => {
            let plane = h * w;
            let rgb = (0..plane)
                .flat_map(|p| [image[p], image[plane + p], image[2 * plane + p]])
                .collect();
            (ColorType::Rgb, rgb)
        }
        _ => {
            return Err(DataError::InvalidArgument(format!(
                "PNG compression takes grey (1 channel) or RGB (3 channel) images, not {c} channels"
            )));
        }
    };
    let too_big = |what: &str| {
        DataError::InvalidArgument(format!("cannot encode a {h}×{w} image as PNG: {what}"))
    };
    let width = u32::try_from(w).map_err(|_| too_big("too wide"))?;
    let height = u32::try_from(h).map_err(|_| too_big("too high"))?;
    let mut out = Vec::new();
    let mut encoder = png::Encoder::new(&mut out, width, height);
    encoder.set_color(color);
    encoder.set_depth(BitDepth::Eight);
    encoder.set_deflate_compression(png::DeflateCompression::Level(9));
    encoder.set_filter(png::Filter::NoFilter);
    let mut writer = encoder
        .write_header()
        .map_err(|e| too_big(&e.to_string()))?;
    writer
        .write_image_data(&interleaved)
        .map_err(|e| too_big(&e.to_string()))?;
    writer.finish().map_err(|e| too_big(&e.to_string()))?;
    Ok(out.len())
}

impl ImageSet {
    /// Writes the set as an uncompressed IDX file (what [`from_idx_file`](Self::from_idx_file)
    /// and `bnood score --test FILE` read): type `ubyte`, dims `[N, H, W]` for one channel,
    /// `[N, C, H, W]` otherwise. Written under a temporary name and renamed into place.
    ///
    /// # Errors
    /// [`DataError::Io`] when the file cannot be written.
    pub fn write_idx(&self, path: &Path) -> Result<()> {
        let [n, c, h, w] = self.shape();
        let dims: Vec<usize> = if c == 1 {
            vec![n, h, w]
        } else {
            vec![n, c, h, w]
        };
        let mut bytes = vec![0, 0, 0x08, dims.len() as u8];
        for d in &dims {
            let d = u32::try_from(*d).map_err(|_| {
                DataError::InvalidArgument(format!("dimension {d} does not fit an IDX header"))
            })?;
            bytes.extend(d.to_be_bytes());
        }
        bytes.extend_from_slice(self.pixels());
        crate::atomic::write_atomically(path, |f| std::io::Write::write_all(f, &bytes))
            .map_err(|e| DataError::io(path, e))
    }

    /// Writes the images as one PNG grid of `columns` columns (row-major, one pixel of
    /// background between images), gray or RGB like the images.
    ///
    /// # Errors
    /// [`DataError::InvalidArgument`] for images PNG cannot hold (not 1 or 3 channels) or
    /// `columns = 0`; [`DataError::Io`] when the file cannot be written.
    pub fn write_png_grid(&self, path: &Path, columns: usize) -> Result<()> {
        let [n, c, h, w] = self.shape();
        if columns == 0 || !(c == 1 || c == 3) {
            return Err(DataError::InvalidArgument(format!(
                "a PNG grid needs 1 or 3 channels and at least one column (got {c} channels, {columns} columns)"
            )));
        }
        let cols = columns.min(n);
        let rows = n.div_ceil(cols);
        let (gh, gw) = (rows * (h + 1) + 1, cols * (w + 1) + 1);
        let mut grid = vec![128u8; gh * gw * c];
        for i in 0..n {
            let image = self.image(i).unwrap_or_default();
            let (top, left) = (1 + (i / cols) * (h + 1), 1 + (i % cols) * (w + 1));
            for y in 0..h {
                for x in 0..w {
                    for ch in 0..c {
                        grid[((top + y) * gw + left + x) * c + ch] = image[ch * h * w + y * w + x];
                    }
                }
            }
        }
        let too_big = |e: String| DataError::InvalidArgument(format!("cannot write the grid: {e}"));
        let width = u32::try_from(gw).map_err(|_| too_big("too wide".into()))?;
        let height = u32::try_from(gh).map_err(|_| too_big("too high".into()))?;
        let mut out = Vec::new();
        let mut encoder = png::Encoder::new(&mut out, width, height);
        encoder.set_color(if c == 1 {
            ColorType::Grayscale
        } else {
            ColorType::Rgb
        });
        encoder.set_depth(BitDepth::Eight);
        let mut writer = encoder.write_header().map_err(|e| too_big(e.to_string()))?;
        writer
            .write_image_data(&grid)
            .map_err(|e| too_big(e.to_string()))?;
        writer.finish().map_err(|e| too_big(e.to_string()))?;
        crate::atomic::write_atomically(path, |f| std::io::Write::write_all(f, &out))
            .map_err(|e| DataError::io(path, e))
    }
}
