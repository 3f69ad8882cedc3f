//! [`ImageSet`]: an in-memory, non-empty set of 8-bit images with optional labels.

use std::collections::BTreeMap;
use std::ops::Range;

use burn::tensor::{Device, Tensor, TensorData};
use rand::SeedableRng;
use rand::seq::SliceRandom;
use rand_chacha::ChaCha8Rng;

use crate::error::{DataError, Result};

/// A non-empty set of images stored as raw `u8` pixels (0–255), laid out row-major as
/// `[N, C, H, W]`, with an optional label per image.
///
/// All reordering and subsetting is seeded: the same seed gives the same images in the same
/// order on every machine (ChaCha8 stream, independent of thread count).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImageSet {
    name: String,
    pixels: Vec<u8>,
    shape: [usize; 4],
    labels: Option<Vec<u32>>,
}

impl ImageSet {
    /// Builds a set from pixels laid out as `[N, C, H, W]`.
    ///
    /// # Errors
    /// [`DataError::InvalidArgument`] if any dimension is zero, if `pixels.len()` is not
    /// `N·C·H·W`, or if `labels` is given with a length other than `N`.
    pub fn new(
        name: impl Into<String>,
        pixels: Vec<u8>,
        shape: [usize; 4],
        labels: Option<Vec<u32>>,
    ) -> Result<Self> {
        let name = name.into();
        if shape.contains(&0) {
            return Err(DataError::InvalidArgument(format!(
                "image set `{name}` would have shape {shape:?}: every dimension of [N, C, H, W] must be at least 1"
            )));
        }
        let expected = shape.iter().product::<usize>();
        if pixels.len() != expected {
            return Err(DataError::InvalidArgument(format!(
                "image set `{name}`: shape {shape:?} needs {expected} pixels but {} were given",
                pixels.len()
            )));
        }
        if let Some(labels) = labels.as_ref().filter(|l| l.len() != shape[0]) {
            return Err(DataError::InvalidArgument(format!(
                "image set `{name}`: {} images but {} labels; pass one label per image or none",
                shape[0],
                labels.len()
            )));
        }
        Ok(Self {
            name,
            pixels,
            shape,
            labels,
        })
    }

    /// The set's name as shown in reports (e.g. `"fashion-mnist/test"`).
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Returns the same set under another name.
    pub fn with_name(mut self, name: impl Into<String>) -> Self {
        self.name = name.into();
        self
    }

    /// Number of images `N` (always at least 1).
    pub fn len(&self) -> usize {
        self.shape[0]
    }

    /// Always `false`: an image set holds at least one image. Present for API symmetry.
    pub fn is_empty(&self) -> bool {
        false
    }

    /// Shape `[N, C, H, W]`.
    pub fn shape(&self) -> [usize; 4] {
        self.shape
    }

    /// Shape of one image, `[C, H, W]`.
    pub fn image_shape(&self) -> [usize; 3] {
        [self.shape[1], self.shape[2], self.shape[3]]
    }

    /// Number of values in one image, `C·H·W` (the "dimensions" of bits per dimension).
    pub fn dims_per_image(&self) -> usize {
        self.shape[1] * self.shape[2] * self.shape[3]
    }

    /// All pixels, row-major `[N, C, H, W]`.
    pub fn pixels(&self) -> &[u8] {
        &self.pixels
    }

    /// Pixels of image `index`, row-major `[C, H, W]`, or `None` past the end.
    pub fn image(&self, index: usize) -> Option<&[u8]> {
        let d = self.dims_per_image();
        self.pixels.get(index * d..(index + 1) * d)
    }

    /// Labels, one per image, if the set has them.
    pub fn labels(&self) -> Option<&[u32]> {
        self.labels.as_deref()
    }

    /// Number of images per label, or `None` for an unlabelled set.
    pub fn label_counts(&self) -> Option<BTreeMap<u32, usize>> {
        let labels = self.labels.as_ref()?;
        let mut counts = BTreeMap::new();
        for &l in labels {
            *counts.entry(l).or_insert(0) += 1;
        }
        Some(counts)
    }

    /// Mean pixel value over the whole set, on the 0–255 scale.
    pub fn mean_pixel(&self) -> f64 {
        let sum: u64 = self.pixels.iter().map(|&p| u64::from(p)).sum();
        sum as f64 / self.pixels.len() as f64
    }

    /// The images at `indices`, in that order (repeats allowed).
    ///
    /// # Errors
    /// [`DataError::InvalidArgument`] if `indices` is empty or holds an index `>= N`.
    pub fn select(&self, indices: &[usize]) -> Result<Self> {
        if indices.is_empty() {
            return Err(DataError::InvalidArgument(format!(
                "selecting no images from `{}`: pass at least one index",
                self.name
            )));
        }
        if let Some(&bad) = indices.iter().find(|&&i| i >= self.len()) {
            return Err(DataError::InvalidArgument(format!(
                "index {bad} is out of range for `{}`, which has {} images",
                self.name,
                self.len()
            )));
        }
        let d = self.dims_per_image();
        let mut pixels = Vec::with_capacity(indices.len() * d);
        for &i in indices {
            pixels.extend_from_slice(&self.pixels[i * d..(i + 1) * d]);
        }
        let labels = self
            .labels
            .as_ref()
            .map(|l| indices.iter().map(|&i| l[i]).collect());
        let [_, c, h, w] = self.shape;
        Ok(Self {
            name: self.name.clone(),
            pixels,
            shape: [indices.len(), c, h, w],
            labels,
        })
    }

    /// A seeded permutation of `0..N` (ChaCha8, Fisher–Yates).
    pub fn permutation(&self, seed: u64) -> Vec<usize> {
        let mut order: Vec<usize> = (0..self.len()).collect();
        order.shuffle(&mut ChaCha8Rng::seed_from_u64(seed));
        order
    }

    /// A seeded split into `(kept, held out)`: `round(fraction · N)` images, drawn without
    /// replacement (the first of [`permutation`](Self::permutation)`(seed)`), are held out,
    /// the others kept, each part in the set's order. For training on one part and
    /// calibrating detectors on images the model never saw (`bnood train --hold-out`).
    ///
    /// # Errors
    /// [`DataError::InvalidArgument`] when `fraction` is not strictly between 0 and 1, or a
    /// part would be empty.
    pub fn split_held_out(&self, fraction: f64, seed: u64) -> Result<(Self, Self)> {
        let n = self.len();
        let held = (fraction * n as f64).round() as usize;
        if !(fraction > 0.0 && fraction < 1.0) || held == 0 || held >= n {
            return Err(DataError::InvalidArgument(format!(
                "holding out a share {fraction} of `{}` ({n} images) leaves an empty part: give a share strictly between 0 and 1 of a set with enough images (e.g. 0.2)",
                self.name
            )));
        }
        let order = self.permutation(seed);
        let mut held_rows = order[..held].to_vec();
        let mut kept_rows = order[held..].to_vec();
        held_rows.sort_unstable();
        kept_rows.sort_unstable();
        Ok((self.select(&kept_rows)?, self.select(&held_rows)?))
    }

    /// All images in a seeded random order.
    pub fn shuffled(&self, seed: u64) -> Self {
        self.select(&self.permutation(seed))
            .expect("a permutation of a non-empty set is a valid selection")
    }

    /// `n` distinct images drawn without replacement in a seeded random order.
    ///
    /// # Errors
    /// [`DataError::InvalidArgument`] if `n` is 0 or larger than the set.
    pub fn subset(&self, n: usize, seed: u64) -> Result<Self> {
        self.check_count(n, "draw")?;
        let order = self.permutation(seed);
        self.select(&order[..n])
    }

    /// The first `n` images, in order.
    ///
    /// # Errors
    /// [`DataError::InvalidArgument`] if `n` is 0 or larger than the set.
    pub fn head(&self, n: usize) -> Result<Self> {
        self.check_count(n, "take")?;
        self.select(&(0..n).collect::<Vec<_>>())
    }

    /// Splits into the first `n` images and the rest (e.g. a held-out reference set).
    ///
    /// # Errors
    /// [`DataError::InvalidArgument`] unless `0 < n < N` (both parts must be non-empty).
    pub fn split_at(&self, n: usize) -> Result<(Self, Self)> {
        if n == 0 || n >= self.len() {
            return Err(DataError::InvalidArgument(format!(
                "cannot split `{}` ({} images) at {n}: both parts must hold at least one image",
                self.name,
                self.len()
            )));
        }
        let first = self.select(&(0..n).collect::<Vec<_>>())?;
        let rest = self.select(&(n..self.len()).collect::<Vec<_>>())?;
        Ok((first, rest))
    }

    /// Concatenates sets with the same image shape; labels are kept only if every set has them.
    ///
    /// # Errors
    /// [`DataError::InvalidArgument`] if `sets` is empty or the image shapes differ.
    pub fn concat(name: impl Into<String>, sets: &[&Self]) -> Result<Self> {
        let name = name.into();
        let first = sets.first().ok_or_else(|| {
            DataError::InvalidArgument(format!(
                "concatenating no image sets into `{name}`: pass at least one"
            ))
        })?;
        if let Some(other) = sets.iter().find(|s| s.image_shape() != first.image_shape()) {
            return Err(DataError::InvalidArgument(format!(
                "cannot concatenate `{}` (images {:?}) with `{}` (images {:?}): image shapes must match",
                first.name,
                first.image_shape(),
                other.name,
                other.image_shape()
            )));
        }
        let n = sets.iter().map(|s| s.len()).sum();
        let pixels = sets.iter().flat_map(|s| s.pixels.iter().copied()).collect();
        let labels = if sets.iter().all(|s| s.labels.is_some()) {
            Some(
                sets.iter()
                    .flat_map(|s| s.labels.iter().flatten().copied())
                    .collect(),
            )
        } else {
            None
        };
        let [_, c, h, w] = first.shape;
        Self::new(name, pixels, [n, c, h, w], labels)
    }

    /// Images `range` as a float tensor `[len, C, H, W]` on `device`, values 0.0–255.0.
    ///
    /// # Errors
    /// [`DataError::InvalidArgument`] if the range is empty or extends past `N`.
    pub fn tensor(&self, range: Range<usize>, device: &Device) -> Result<Tensor<4>> {
        if range.is_empty() || range.end > self.len() {
            return Err(DataError::InvalidArgument(format!(
                "image range {range:?} is empty or outside `{}` (0..{})",
                self.name,
                self.len()
            )));
        }
        let d = self.dims_per_image();
        let values: Vec<f32> = self.pixels[range.start * d..range.end * d]
            .iter()
            .map(|&p| f32::from(p))
            .collect();
        let [_, c, h, w] = self.shape;
        Ok(Tensor::from_data(
            TensorData::new(values, [range.len(), c, h, w]),
            device,
        ))
    }

    /// Iterates over consecutive batches of at most `batch_size` images as tensors
    /// `[B, C, H, W]` (0.0–255.0); the last batch may be smaller.
    ///
    /// # Errors
    /// [`DataError::InvalidArgument`] if `batch_size` is 0.
    pub fn batches<'a>(
        &'a self,
        batch_size: usize,
        device: &'a Device,
    ) -> Result<impl ExactSizeIterator<Item = Tensor<4>> + 'a> {
        if batch_size == 0 {
            return Err(DataError::InvalidArgument(
                "batch size is 0: pass at least 1".into(),
            ));
        }
        let n = self.len();
        Ok((0..n.div_ceil(batch_size)).map(move |b| {
            let range = b * batch_size..((b + 1) * batch_size).min(n);
            self.tensor(range, device)
                .expect("batch ranges are non-empty and inside the set")
        }))
    }

    fn check_count(&self, n: usize, verb: &str) -> Result<()> {
        if n == 0 || n > self.len() {
            return Err(DataError::InvalidArgument(format!(
                "cannot {verb} {n} images from `{}`, which has {}: pass a count between 1 and {}",
                self.name,
                self.len(),
                self.len()
            )));
        }
        Ok(())
    }
}
