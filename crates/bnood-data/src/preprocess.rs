//! Preprocessing of a user's images to a model's shape: channel conversion, centre crop and
//! resize, applied in that order, the same way at training and at scoring (a checkpoint
//! records its [`Preprocess`], and every set scored by the model goes through it).

use std::fmt;

use image::imageops::{FilterType, resize};
use image::{ImageBuffer, Luma};
use serde::{Deserialize, Serialize};

use crate::{DataError, ImageSet, Result};

/// The channel layout images are converted to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Channels {
    /// One channel: RGB images become their ITU-R BT.601 luma
    /// `round(0.299 R + 0.587 G + 0.114 B)` (as PIL's `convert("L")`).
    Gray,
    /// Three channels: gray images are repeated into R, G and B.
    Rgb,
}

/// How images are brought to a model's shape, in this order: [`Channels`] conversion, a
/// centre crop to `crop = [H, W]`, a resize to `resize = [H, W]` (separable triangle
/// filter scaled to the ratio, i.e. bilinear when enlarging and area-like when shrinking;
/// the `image` crate's `imageops::resize`). The default does nothing.
///
/// Serialised into checkpoint sidecars as `{"crop": [H, W] | null, "resize": [H, W] |
/// null, "channels": "gray" | "rgb" | null}`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Preprocess {
    /// Centre crop to `[H, W]` (after the channel conversion).
    #[serde(default)]
    pub crop: Option<[usize; 2]>,
    /// Resize to `[H, W]` (last).
    #[serde(default)]
    pub resize: Option<[usize; 2]>,
    /// Channel conversion (first).
    #[serde(default)]
    pub channels: Option<Channels>,
}

/// The largest side [`Preprocess`] resizes or crops to, in pixels: far above the image sizes
/// bnood's models train on.
pub const MAX_SIDE: usize = 4096;

impl Preprocess {
    /// Whether it leaves every image as it is.
    pub fn is_identity(&self) -> bool {
        *self == Self::default()
    }

    /// Checks the sizes: each side of `crop` and `resize` in `1..=`[`MAX_SIDE`].
    ///
    /// # Errors
    /// [`DataError::InvalidArgument`] naming the flag.
    pub fn check(&self) -> Result<()> {
        for (flag, size) in [("--crop", self.crop), ("--resize", self.resize)] {
            if let Some([h, w]) = size
                && !((1..=MAX_SIDE).contains(&h) && (1..=MAX_SIDE).contains(&w))
            {
                return Err(DataError::InvalidArgument(format!(
                    "{flag} {h},{w}: each side must lie in 1..={MAX_SIDE} pixels"
                )));
            }
        }
        Ok(())
    }

    /// The shape `[C, H, W]` an image of shape `input` has after preprocessing.
    ///
    /// # Errors
    /// [`DataError::InvalidArgument`] when the crop is larger than the image, or the
    /// channel conversion meets an image with other than 1 or 3 channels.
    pub fn output_shape(&self, input: [usize; 3]) -> Result<[usize; 3]> {
        self.check()?;
        let [c, h, w] = input;
        let c = match self.channels {
            None => c,
            Some(target) => {
                if c != 1 && c != 3 {
                    return Err(DataError::InvalidArgument(format!(
                        "{} converts gray (1 channel) or RGB (3 channels) images, not images of {c} channels",
                        target.flag()
                    )));
                }
                target.count()
            }
        };
        let [h, w] = match self.crop {
            None => [h, w],
            Some([ch, cw]) if ch <= h && cw <= w => [ch, cw],
            Some([ch, cw]) => {
                return Err(DataError::InvalidArgument(format!(
                    "--crop {ch},{cw} is larger than an image of {h}×{w} pixels: crop at most {h},{w}, or resize instead (--resize)"
                )));
            }
        };
        Ok([
            c,
            self.resize.map_or(h, |r| r[0]),
            self.resize.map_or(w, |r| r[1]),
        ])
    }

    /// One image's pixels `[C, H, W]` (row-major) after preprocessing, with their shape.
    ///
    /// # Errors
    /// As [`output_shape`](Self::output_shape); [`DataError::InvalidArgument`] when `pixels`
    /// does not hold `C·H·W` values.
    pub fn apply_image(&self, pixels: &[u8], shape: [usize; 3]) -> Result<(Vec<u8>, [usize; 3])> {
        let out = self.output_shape(shape)?;
        let [c, h, w] = shape;
        if pixels.len() != c * h * w {
            return Err(DataError::InvalidArgument(format!(
                "an image of shape [{c}, {h}, {w}] holds {} values, not {}",
                pixels.len(),
                c * h * w
            )));
        }
        if self.is_identity() {
            return Ok((pixels.to_vec(), shape));
        }
        let mut planes: Vec<Vec<u8>> = pixels.chunks(h * w).map(<[u8]>::to_vec).collect();
        planes = match (self.channels, c) {
            (Some(Channels::Gray), 3) => vec![luma(&planes[0], &planes[1], &planes[2])],
            (Some(Channels::Rgb), 1) => vec![planes[0].clone(); 3],
            _ => planes,
        };
        let [mut h, mut w] = [h, w];
        if let Some([ch, cw]) = self.crop {
            let (top, left) = ((h - ch) / 2, (w - cw) / 2);
            for plane in &mut planes {
                *plane = (top..top + ch)
                    .flat_map(|y| plane[y * w + left..y * w + left + cw].iter().copied())
                    .collect();
            }
            [h, w] = [ch, cw];
        }
        if let Some([rh, rw]) = self.resize
            && [rh, rw] != [h, w]
        {
            for plane in &mut planes {
                let image = ImageBuffer::<Luma<u8>, Vec<u8>>::from_raw(
                    w as u32,
                    h as u32,
                    std::mem::take(plane),
                )
                .expect("a plane holds H·W values");
                *plane = resize(&image, rw as u32, rh as u32, FilterType::Triangle).into_raw();
            }
        }
        Ok((planes.concat(), out))
    }

    /// Every image of `set`, preprocessed (the set keeps its name and labels).
    ///
    /// # Errors
    /// As [`apply_image`](Self::apply_image).
    pub fn apply(&self, set: &ImageSet) -> Result<ImageSet> {
        if self.is_identity() {
            return Ok(set.clone());
        }
        let [n, c, h, w] = set.shape();
        let [oc, oh, ow] = self.output_shape([c, h, w])?;
        let mut pixels = Vec::with_capacity(n * oc * oh * ow);
        for i in 0..n {
            let image = set.image(i).expect("i < N");
            pixels.extend(self.apply_image(image, [c, h, w])?.0);
        }
        ImageSet::new(
            set.name().to_string(),
            pixels,
            [n, oc, oh, ow],
            set.labels().map(<[u32]>::to_vec),
        )
    }
}

impl fmt::Display for Preprocess {
    /// The command-line flags that give it (`--grayscale --crop 24,24 --resize 32,32`), or
    /// `none`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut parts = Vec::new();
        if let Some(c) = self.channels {
            parts.push(c.flag().to_string());
        }
        if let Some([h, w]) = self.crop {
            parts.push(format!("--crop {h},{w}"));
        }
        if let Some([h, w]) = self.resize {
            parts.push(format!("--resize {h},{w}"));
        }
        if parts.is_empty() {
            f.write_str("none")
        } else {
            f.write_str(&parts.join(" "))
        }
    }
}

impl Channels {
    fn count(self) -> usize {
        match self {
            Self::Gray => 1,
            Self::Rgb => 3,
        }
    }

    /// The command-line flag: `--grayscale` or `--rgb`.
    pub fn flag(self) -> &'static str {
        match self {
            Self::Gray => "--grayscale",
            Self::Rgb => "--rgb",
        }
    }
}

/// ITU-R BT.601 luma of three planes.
fn luma(r: &[u8], g: &[u8], b: &[u8]) -> Vec<u8> {
    r.iter()
        .zip(g)
        .zip(b)
        .map(|((&r, &g), &b)| {
            (0.299 * f32::from(r) + 0.587 * f32::from(g) + 0.114 * f32::from(b))
                .round()
                .clamp(0.0, 255.0) as u8
        })
        .collect()
}

/// Parses `H,W` (or one number `S` for `S,S`) as a size for `--resize` / `--crop`.
///
/// # Errors
/// [`DataError::InvalidArgument`] for anything else.
pub fn parse_size(text: &str) -> Result<[usize; 2]> {
    let parts: Vec<&str> = text.split([',', 'x', '×']).map(str::trim).collect();
    let numbers: Option<Vec<usize>> = parts.iter().map(|p| p.parse().ok()).collect();
    match numbers.as_deref() {
        Some(&[s]) => Ok([s, s]),
        Some(&[h, w]) => Ok([h, w]),
        _ => Err(DataError::InvalidArgument(format!(
            "`{text}` is not a size: give H,W in pixels (e.g. 32,32) or one number for a square"
        ))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_default_preprocessing_leaves_images_untouched() {
        let pixels: Vec<u8> = (0..12).collect();
        let p = Preprocess::default();
        assert!(p.is_identity());
        assert_eq!(p.to_string(), "none");
        assert_eq!(
            p.apply_image(&pixels, [1, 3, 4]).expect("apply"),
            (pixels, [1, 3, 4])
        );
    }

    #[test]
    fn rgb_becomes_bt601_luma_and_gray_is_repeated_into_rgb() {
        let rgb = [255, 0, 0, 0, 255, 0, 0, 0, 255]; // 1×3: red, green, blue pixels per plane
        let gray = Preprocess {
            channels: Some(Channels::Gray),
            ..Preprocess::default()
        };
        // Planes R = [255, 0, 0], G = [0, 255, 0], B = [0, 0, 255].
        let (out, shape) = gray.apply_image(&rgb, [3, 1, 3]).expect("apply");
        assert_eq!(shape, [1, 1, 3]);
        assert_eq!(out, vec![76, 150, 29]);
        let to_rgb = Preprocess {
            channels: Some(Channels::Rgb),
            ..Preprocess::default()
        };
        let (out, shape) = to_rgb.apply_image(&[7, 8], [1, 1, 2]).expect("apply");
        assert_eq!((out, shape), (vec![7, 8, 7, 8, 7, 8], [3, 1, 2]));
    }

    #[test]
    fn a_centre_crop_keeps_the_middle_and_refuses_a_crop_larger_than_the_image() {
        let pixels: Vec<u8> = (0..16).collect(); // 4×4
        let crop = Preprocess {
            crop: Some([2, 2]),
            ..Preprocess::default()
        };
        let (out, shape) = crop.apply_image(&pixels, [1, 4, 4]).expect("apply");
        assert_eq!((out, shape), (vec![5, 6, 9, 10], [1, 2, 2]));
        let too_big = Preprocess {
            crop: Some([5, 2]),
            ..Preprocess::default()
        };
        let err = too_big.apply_image(&pixels, [1, 4, 4]).expect_err("5 > 4");
        assert!(err.to_string().contains("--crop 5,2"), "{err}");
    }

    #[test]
    fn resizing_a_constant_image_keeps_it_constant_and_halving_averages() {
        let resize = |from: [usize; 2], to: [usize; 2], pixels: &[u8]| {
            Preprocess {
                resize: Some(to),
                ..Preprocess::default()
            }
            .apply_image(pixels, [1, from[0], from[1]])
            .expect("apply")
        };
        let (out, shape) = resize([4, 6], [8, 3], &[90; 24]);
        assert_eq!(shape, [1, 8, 3]);
        assert!(out.iter().all(|&v| v == 90), "{out:?}");
        // A 2×2 checkerboard of 0 and 200 halved to one pixel is its mean.
        let (out, _) = resize([2, 2], [1, 1], &[0, 200, 200, 0]);
        assert_eq!(out, vec![100]);
    }

    #[test]
    fn sizes_parse_as_h_comma_w_or_one_side_and_bad_ones_are_refused() {
        assert_eq!(parse_size("32,24").expect("size"), [32, 24]);
        assert_eq!(parse_size("8").expect("size"), [8, 8]);
        assert_eq!(parse_size("64x48").expect("size"), [64, 48]);
        assert!(parse_size("a,b").is_err());
        assert!(parse_size("1,2,3").is_err());
        let zero = Preprocess {
            resize: Some([0, 4]),
            ..Preprocess::default()
        };
        assert!(
            zero.check()
                .expect_err("0")
                .to_string()
                .contains("--resize")
        );
    }

    #[test]
    fn the_flags_are_shown_in_the_order_they_apply() {
        let p = Preprocess {
            crop: Some([24, 24]),
            resize: Some([32, 32]),
            channels: Some(Channels::Gray),
        };
        assert_eq!(p.to_string(), "--grayscale --crop 24,24 --resize 32,32");
    }
}
