//! Sampling (`bnood_models::sample`): the logistic-mixture sampler draws each pixel value
//! with the probability the PixelCNN++ likelihood gives it, temperature sharpens or
//! flattens it, and every model draws seeded images of its own shape.

use bnood_models::pixelcnn::mixture::LogisticMixture;
use bnood_models::sample::{SampleParams, sample, sample_logistic_mixture};
use bnood_models::{AnyModel, PixelCnnConfig, RealNvpConfig, VaeConfig};
use burn::tensor::{Device, Tensor, TensorData};
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;

/// Two components on the `[−1, 1]` scale: weights 0.3 / 0.7 (logits ln 0.3, ln 0.7),
/// means −0.5 / 0.4, scales e^−3 ≈ 0.05 (about 6 bins).
const LOGITS: [f64; 2] = [-1.203_972_804_325_936, -0.356_674_943_938_732_4];
const MEANS: [f64; 2] = [-0.5, 0.4];
const LOG_SCALES: [f64; 2] = [-3.0, -3.0];

/// P(pixel = v) for v in 0..=255 from the likelihood's own code.
fn probabilities() -> Vec<f64> {
    let device = Device::flex();
    let t = |v: [f64; 2]| {
        Tensor::<4>::from_data(
            TensorData::new(
                (0..256)
                    .flat_map(|_| v.map(|x| x as f32))
                    .collect::<Vec<_>>(),
                [256, 1, 1, 2],
            ),
            &device,
        )
        .permute([0, 3, 1, 2])
    };
    let mixture = LogisticMixture {
        logit_weights: t(LOGITS),
        means: t(MEANS),
        log_scales: t(LOG_SCALES),
    };
    let pixels: Vec<f32> = (0..256).map(|k| k as f32 / 127.5 - 1.0).collect();
    let pixels = Tensor::<4>::from_data(TensorData::new(pixels, [256, 1, 1, 1]), &device);
    mixture
        .log_prob(pixels)
        .into_data()
        .iter::<f64>()
        .map(f64::exp)
        .collect()
}

#[test]
fn the_mixture_sampler_draws_each_value_with_the_likelihoods_probability() {
    let p = probabilities();
    assert!((p.iter().sum::<f64>() - 1.0).abs() < 1e-4);
    let n = 50_000;
    let mut rng = ChaCha8Rng::seed_from_u64(1);
    let mut counts = vec![0usize; 256];
    for _ in 0..n {
        counts[sample_logistic_mixture(&LOGITS, &MEANS, &LOG_SCALES, 1.0, &mut rng) as usize] += 1;
    }
    let tv: f64 = counts
        .iter()
        .zip(&p)
        .map(|(&c, &q)| (c as f64 / n as f64 - q).abs())
        .sum::<f64>()
        / 2.0;
    // The mass sits in about 2 × 25 bins: the total variation of 50,000 exact draws from
    // their distribution is about Σ √(p/n)·0.4 ≈ 0.013; a wrong sampler is far above.
    println!("total variation to the likelihood: {tv:.4}");
    assert!(tv < 0.03, "{tv}");
    // The weight of the first component, within 4 binomial standard deviations (0.0082).
    let low = counts[..128].iter().sum::<usize>() as f64 / n as f64;
    assert!((low - 0.3).abs() < 0.0082, "{low}");
}

#[test]
fn a_low_temperature_picks_the_heaviest_component_near_its_mean() {
    let mut rng = ChaCha8Rng::seed_from_u64(2);
    for _ in 0..200 {
        let v = sample_logistic_mixture(&LOGITS, &MEANS, &LOG_SCALES, 0.01, &mut rng);
        // Component 2's mean 0.4 is pixel 178.5.
        assert!((177..=180).contains(&v), "{v}");
    }
}

fn models() -> Vec<AnyModel> {
    let device = Device::flex();
    vec![
        AnyModel::PixelCnn(
            PixelCnnConfig {
                image_shape: [1, 8, 8],
                filters: 4,
                blocks_per_stage: 1,
                mixtures: 2,
                dropout: 0.0,
                ..PixelCnnConfig::paper_fmnist()
            }
            .init(&device)
            .expect("valid"),
        ),
        AnyModel::RealNvp(
            RealNvpConfig {
                image_shape: [1, 8, 8],
                mid_channels: 4,
                num_blocks: 1,
                zero_init_last: false,
                ..RealNvpConfig::paper_fmnist()
            }
            .init(&device)
            .expect("valid"),
        ),
        AnyModel::Vae(
            VaeConfig {
                image_shape: [1, 8, 8],
                encoder_channels: [4, 4, 4, 6, 6, 8],
                decoder_channels: [6, 6, 6, 4, 4, 4, 8],
                latent_dim: 3,
                iw_samples: 2,
                ..VaeConfig::paper_fmnist()
            }
            .init(&device)
            .expect("valid"),
        ),
    ]
}

#[test]
fn every_model_draws_seeded_images_of_its_shape() {
    let device = Device::flex();
    let params = |seed| SampleParams {
        n: 20,
        temperature: 1.0,
        seed,
    };
    for model in models() {
        let a = sample(&model, &params(3), "a", &device).expect("samples");
        assert_eq!(a.shape(), [20, 1, 8, 8], "{}", model.display_name());
        let b = sample(&model, &params(3), "b", &device).expect("samples");
        assert_eq!(
            a.pixels(),
            b.pixels(),
            "{}: same seed",
            model.display_name()
        );
        let c = sample(&model, &params(4), "c", &device).expect("samples");
        assert_ne!(
            a.pixels(),
            c.pixels(),
            "{}: another seed",
            model.display_name()
        );
        // 20 images are drawn as a batch of 16 and one of 4: the second batch's images are
        // not copies of the first's.
        assert_ne!(a.image(0), a.image(16), "{}", model.display_name());
    }
    let bad = SampleParams {
        n: 1,
        temperature: 0.0,
        seed: 0,
    };
    assert!(sample(&models()[0], &bad, "x", &device).is_err());
}
