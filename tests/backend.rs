//! Backend selection: names parse, the default is flex, compiled backends give working
//! devices that agree on a tiny computation, and missing ones are clear errors.

#[cfg(not(feature = "ndarray"))]
use bnood::backend::BackendError;
use bnood::backend::{Backend, backend_from_setting, device_by_name};
use burn::tensor::{Tensor, TensorData};

fn tiny_sum(backend: Backend) -> f32 {
    let device = backend.device().expect("compiled backend gives a device");
    let t = Tensor::<2>::from_data(
        TensorData::new(vec![1.5f32, -2.0, 4.0, 0.25], [2, 2]),
        &device,
    );
    let out: Vec<f32> = t
        .clone()
        .matmul(t)
        .sum()
        .into_data()
        .try_to_vec::<f32>()
        .expect("f32");
    out[0]
}

#[test]
fn names_parse_case_insensitively_and_round_trip() {
    for b in Backend::ALL {
        assert_eq!(b.name().parse::<Backend>(), Ok(b));
        assert_eq!(
            format!(" {} ", b.name().to_uppercase()).parse::<Backend>(),
            Ok(b)
        );
    }
}

#[test]
fn an_unknown_name_is_an_error_listing_the_valid_ones() {
    let err = "cuda".parse::<Backend>().expect_err("not a backend");
    assert_eq!(
        err.to_string(),
        "unknown backend `cuda`: use one of flex, ndarray, wgpu"
    );
    assert!(device_by_name("tpu").is_err());
}

#[test]
fn an_unset_or_blank_setting_selects_flex() {
    assert_eq!(backend_from_setting(None), Ok(Backend::Flex));
    assert_eq!(backend_from_setting(Some("  ")), Ok(Backend::Flex));
    assert_eq!(backend_from_setting(Some("flex")), Ok(Backend::Flex));
}

#[test]
fn flex_computes_a_tiny_matmul() {
    // [[1.5,-2],[4,0.25]]² = [[-5.75,-3.5],[7,-7.9375]] → sum -10.1875
    assert!((tiny_sum(Backend::Flex) + 10.1875).abs() < 1e-6);
}

#[cfg(feature = "ndarray")]
#[test]
fn ndarray_agrees_with_flex() {
    assert!((tiny_sum(Backend::NdArray) - tiny_sum(Backend::Flex)).abs() < 1e-6);
}

/// Runs on a real GPU or, without one, on Mesa's lavapipe (`mesa-vulkan-drivers`).
#[cfg(feature = "wgpu")]
#[test]
fn wgpu_agrees_with_flex() {
    assert!((tiny_sum(Backend::Wgpu) - tiny_sum(Backend::Flex)).abs() < 1e-5);
}

#[cfg(not(feature = "ndarray"))]
#[test]
fn a_backend_left_out_of_the_build_is_an_error_saying_how_to_add_it() {
    let err = backend_from_setting(Some("ndarray")).expect_err("not compiled");
    assert!(matches!(
        err,
        BackendError::NotCompiled {
            backend: Backend::NdArray,
            ..
        }
    ));
    assert!(
        err.to_string()
            .contains("rebuild with `--features ndarray`"),
        "{err}"
    );
}

#[cfg(not(feature = "wgpu"))]
#[test]
fn wgpu_left_out_of_the_build_is_an_error_saying_how_to_add_it() {
    let err = Backend::Wgpu.device().expect_err("not compiled");
    assert!(
        err.to_string().contains("rebuild with `--features wgpu`"),
        "{err}"
    );
}
