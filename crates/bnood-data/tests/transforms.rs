//! Transforms: rotation, dequantisation, the logit transform and bits per dimension.

use bnood_data::transform::{
    PAPER_ROTATION_DEGREES, bits_per_dim_tensor, log_prob_nats_from_bits_per_dim, rotate_image,
};
use bnood_data::{Dequantizer, ImageSet, LogitTransform, bits_per_dim, rotate_randomly};
use burn::tensor::{Device, Tensor, TensorData};

fn vec_of(t: Tensor<4>) -> Vec<f32> {
    t.into_data().try_to_vec::<f32>().expect("f32 data")
}

#[test]
fn rotation_by_180_degrees_flips_both_axes_exactly() {
    let image: Vec<u8> = (0..15).collect();
    let rotated = rotate_image(&image, [1, 3, 5], 180.0);
    let expected: Vec<u8> = (0..15).rev().collect();
    assert_eq!(rotated, expected);
}

#[test]
fn rotation_by_90_degrees_is_anticlockwise() {
    // A bright pixel on the right edge's middle goes to the top edge's middle.
    let mut image = vec![0u8; 9];
    image[5] = 200; // (y=1, x=2)
    let rotated = rotate_image(&image, [1, 3, 3], 90.0);
    assert_eq!(rotated[1], 200, "{rotated:?}"); // (y=0, x=1)
    assert_eq!(rotated.iter().map(|&v| u32::from(v)).sum::<u32>(), 200);
}

#[test]
fn rotation_by_zero_is_identity_and_keeps_channels_apart() {
    let image: Vec<u8> = (0..2 * 4 * 4).map(|v| (v * 7 % 256) as u8).collect();
    assert_eq!(rotate_image(&image, [2, 4, 4], 0.0), image);
}

#[test]
fn random_rotation_is_seeded_keeps_labels_and_changes_images() {
    let pixels: Vec<u8> = (0..4 * 28 * 28).map(|v| (v % 251) as u8).collect();
    let set = ImageSet::new("s", pixels, [4, 1, 28, 28], Some(vec![1, 2, 3, 4])).expect("valid");
    let a = rotate_randomly(&set, PAPER_ROTATION_DEGREES, 9).expect("rotate");
    let b = rotate_randomly(&set, PAPER_ROTATION_DEGREES, 9).expect("rotate");
    let c = rotate_randomly(&set, PAPER_ROTATION_DEGREES, 10).expect("rotate");
    assert_eq!(a, b);
    assert_ne!(a.pixels(), c.pixels());
    assert_ne!(a.pixels(), set.pixels());
    assert_eq!(a.labels(), set.labels());
    assert_eq!(a.name(), "s+rotated");
    let e = rotate_randomly(&set, (270.0, 90.0), 0).expect_err("reversed");
    assert!(e.to_string().contains("low < high"), "{e}");
}

#[test]
fn dequantised_values_lie_in_pixel_plus_unit_interval_and_are_seeded() {
    let device = Device::flex();
    let x = Tensor::<4>::from_data(
        TensorData::new(vec![0.0f32, 10.0, 255.0, 128.0], [1, 1, 2, 2]),
        &device,
    );
    let a = vec_of(Dequantizer::new(3).apply(x.clone()));
    let b = vec_of(Dequantizer::new(3).apply(x.clone()));
    let c = vec_of(Dequantizer::new(4).apply(x));
    assert_eq!(a, b);
    assert_ne!(a, c);
    for (v, base) in a.iter().zip([0.0f32, 10.0, 255.0, 128.0]) {
        assert!(*v >= base && *v < base + 1.0, "{v} vs {base}");
    }
}

#[test]
fn logit_inverse_undoes_forward() {
    let device = Device::flex();
    let values: Vec<f32> = (0..16).map(|i| i as f32 * 15.9 + 0.3).collect();
    let x = Tensor::<4>::from_data(TensorData::new(values.clone(), [2, 2, 2, 2]), &device);
    let t = LogitTransform::default();
    let (z, _) = t.forward(x);
    for (a, b) in vec_of(t.inverse(z)).iter().zip(&values) {
        assert!((a - b).abs() < 1e-3, "{a} vs {b}");
    }
}

#[test]
fn logit_log_det_is_the_sum_of_log_derivatives_per_sample() {
    let device = Device::flex();
    let alpha = 0.05f64;
    let values = [0.5f32, 100.0, 200.0, 255.5, 3.0, 77.7, 128.0, 250.0];
    let x = Tensor::<4>::from_data(TensorData::new(values.to_vec(), [2, 1, 2, 2]), &device);
    let (_, log_det) = LogitTransform::new(alpha).expect("valid").forward(x);
    let got: Vec<f32> = log_det.into_data().try_to_vec::<f32>().expect("f32");
    for (s, chunk) in values.chunks(4).enumerate() {
        // dz/dx = (1-2α)/256 · 1/(y(1-y)), computed independently in f64.
        let expected: f64 = chunk
            .iter()
            .map(|&v| {
                let y = alpha + (1.0 - 2.0 * alpha) * f64::from(v) / 256.0;
                ((1.0 - 2.0 * alpha) / 256.0 / (y * (1.0 - y))).ln()
            })
            .sum();
        assert!(
            (f64::from(got[s]) - expected).abs() < 1e-3,
            "sample {s}: {} vs {expected}",
            got[s]
        );
    }
    assert!(LogitTransform::new(0.5).is_err());
}

#[test]
fn bits_per_dim_converts_nats_on_the_pixel_scale() {
    // A uniform density over [0, 256)^784 is exactly 8 bits per dimension.
    let log_prob = -784.0 * 256f64.ln();
    assert!((bits_per_dim(log_prob, 784) - 8.0).abs() < 1e-12);
    assert!((log_prob_nats_from_bits_per_dim(8.0, 784) - log_prob).abs() < 1e-9);
    let device = Device::flex();
    let t = Tensor::<1>::from_data(TensorData::new(vec![log_prob as f32], [1]), &device);
    let bpd: Vec<f32> = bits_per_dim_tensor(t, 784)
        .into_data()
        .try_to_vec::<f32>()
        .expect("f32");
    assert!((bpd[0] - 8.0).abs() < 1e-5);
}

#[test]
fn mutation_replaces_about_rate_of_the_pixels_with_uniform_values_and_is_seeded() {
    use bnood_data::mutate_pixels;
    let n = 200;
    let set = ImageSet::new("grey", vec![7u8; n * 28 * 28], [n, 1, 28, 28], None).expect("set");
    let mutated = mutate_pixels(&set, 0.2, 11).expect("valid rate");
    assert_eq!(mutated.shape(), set.shape());
    assert!(mutated.name().contains("mutated(0.2)"));
    // A replaced pixel equals 7 with probability 1/256, so the changed share is 0.2·255/256.
    let total = (n * 28 * 28) as f64;
    let changed = mutated.pixels().iter().filter(|&&p| p != 7).count() as f64 / total;
    let expected = 0.2 * 255.0 / 256.0;
    let sd = (expected * (1.0 - expected) / total).sqrt();
    assert!(
        (changed - expected).abs() < 5.0 * sd,
        "changed {changed}, expected {expected}"
    );
    // The replacements are uniform on 0..=255: their mean is about 127.5.
    let replaced: Vec<f64> = mutated
        .pixels()
        .iter()
        .filter(|&&p| p != 7)
        .map(|&p| f64::from(p))
        .collect();
    let mean = replaced.iter().sum::<f64>() / replaced.len() as f64;
    assert!((mean - 127.5).abs() < 2.0, "mean of replaced pixels {mean}");
    assert_eq!(
        mutate_pixels(&set, 0.2, 11).expect("valid").pixels(),
        mutated.pixels()
    );
    assert_ne!(
        mutate_pixels(&set, 0.2, 12).expect("valid").pixels(),
        mutated.pixels()
    );
    assert_eq!(
        mutate_pixels(&set, 0.0, 11).expect("valid").pixels(),
        set.pixels()
    );
}

#[test]
fn mutation_rate_outside_zero_one_or_nan_is_an_error() {
    use bnood_data::mutate_pixels;
    let set = ImageSet::new("grey", vec![7u8; 16], [1, 1, 4, 4], None).expect("set");
    for rate in [-0.1, 1.5, f64::NAN, f64::INFINITY] {
        let err = mutate_pixels(&set, rate, 0)
            .expect_err("refused")
            .to_string();
        assert!(err.contains("[0, 1]"), "{err}");
    }
}
