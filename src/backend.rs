//! The one place that turns a backend name into a burn [`Device`].
//!
//! burn 0.22 picks the backend at run time from the `Device`. `Device::default()` is never
//! used here: with `wgpu` compiled in it silently picks whatever adapter wgpu prefers,
//! including a software rasteriser. Names are `flex` (pure-Rust CPU, the default),
//! `ndarray` (CPU, deprecated upstream, kept because users ask for it) and `wgpu` (GPU via
//! Vulkan/Metal/DX12; on a machine without a GPU, Mesa's lavapipe CPU driver). The
//! environment variable `BNOOD_DEVICE` chooses one for programs that read it.
//!
//! `wgpu` is checked when its device is made: on a machine where wgpu finds no adapter the
//! caller gets [`BackendError::NoDevice`] (what was looked for, and how to pick another
//! backend) instead of a panic at the first tensor. (A `cuda` backend is not offered: burn
//! 0.22.1's needs an LLVM 23 bundle downloaded from GitHub at build time; see
//! `docs/performance.md`, "GPU".)

use std::fmt;
use std::str::FromStr;

use burn::tensor::Device;

/// Environment variable naming the backend (`flex`, `ndarray` or `wgpu`).
pub const DEVICE_ENV: &str = "BNOOD_DEVICE";

/// A compute backend bnood can run on. A clap `ValueEnum`, so every front end takes
/// `--backend flex|ndarray|wgpu` (and `BNOOD_DEVICE`) the same way.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, clap::ValueEnum)]
pub enum Backend {
    /// burn-flex: pure-Rust CPU, SIMD and multi-threaded (cargo feature `flex`, default).
    Flex,
    /// burn-ndarray: CPU (cargo feature `ndarray`; deprecated upstream).
    #[value(name = "ndarray")]
    NdArray,
    /// burn-wgpu: GPU through wgpu's default adapter (cargo feature `wgpu`).
    Wgpu,
}

/// Why a backend could not be selected.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BackendError {
    /// The name is not a backend.
    #[error("unknown backend `{name}`: use one of flex, ndarray, wgpu")]
    Unknown {
        /// What the user wrote.
        name: String,
    },
    /// The backend exists but this build does not include it.
    #[error(
        "backend `{backend}` was not compiled into this build: rebuild with `--features {backend}` (compiled in: {compiled})"
    )]
    NotCompiled {
        /// The requested backend.
        backend: Backend,
        /// Comma-separated list of the backends this build has.
        compiled: String,
    },
    /// The backend is compiled in but this machine has no usable device for it.
    #[error(
        "backend `{backend}` found no device: {looked_for}; choose another backend with `--backend flex` or BNOOD_DEVICE=flex (compiled in: {compiled})"
    )]
    NoDevice {
        /// The requested backend.
        backend: Backend,
        /// What was looked for and what was missing, in one clause.
        looked_for: String,
        /// Comma-separated list of the backends this build has.
        compiled: String,
    },
}

impl Backend {
    /// Every backend, compiled in or not, in order of preference for the default.
    pub const ALL: [Backend; 3] = [Backend::Flex, Backend::NdArray, Backend::Wgpu];

    /// The name used on the command line, in `BNOOD_DEVICE` and as the cargo feature.
    pub fn name(self) -> &'static str {
        match self {
            Backend::Flex => "flex",
            Backend::NdArray => "ndarray",
            Backend::Wgpu => "wgpu",
        }
    }

    /// Whether this build includes the backend.
    pub fn is_compiled(self) -> bool {
        match self {
            Backend::Flex => cfg!(feature = "flex"),
            Backend::NdArray => cfg!(feature = "ndarray"),
            Backend::Wgpu => cfg!(feature = "wgpu"),
        }
    }

    /// The backends this build includes, in order of preference.
    pub fn compiled() -> Vec<Backend> {
        Self::ALL.into_iter().filter(|b| b.is_compiled()).collect()
    }

    /// The default backend: `flex` when compiled in, else the first compiled backend.
    pub fn default_compiled() -> Option<Backend> {
        Self::compiled().first().copied()
    }

    /// A device of this backend (no autodiff; call `.autodiff()` on it for training).
    ///
    /// # Errors
    /// [`BackendError::NotCompiled`] when the backend's cargo feature is off;
    /// [`BackendError::NoDevice`] when wgpu finds no adapter.
    pub fn device(self) -> Result<Device, BackendError> {
        match self {
            #[cfg(feature = "flex")]
            Backend::Flex => Ok(Device::flex()),
            #[cfg(feature = "ndarray")]
            #[allow(deprecated)]
            // ndarray is deprecated upstream; users asked to keep it.
            Backend::NdArray => Ok(Device::ndarray()),
            #[cfg(feature = "wgpu")]
            Backend::Wgpu => {
                if Device::enumerate(burn::tensor::DeviceType::Wgpu)
                    .into_vec()
                    .is_empty()
                {
                    return Err(no_device(
                        self,
                        "wgpu found no adapter (it looks for Vulkan, Metal, DX12 or GL drivers; an NVIDIA GPU needs the driver's Vulkan ICD; on Linux without a GPU, Mesa's `mesa-vulkan-drivers` gives a CPU one)",
                    ));
                }
                Ok(Device::wgpu(burn::tensor::DeviceKind::DefaultDevice))
            }
            #[allow(unreachable_patterns)]
            other => Err(BackendError::NotCompiled {
                backend: other,
                compiled: compiled_list(),
            }),
        }
    }
}

#[cfg(feature = "wgpu")]
fn no_device(backend: Backend, looked_for: &str) -> BackendError {
    BackendError::NoDevice {
        backend,
        looked_for: looked_for.to_string(),
        compiled: compiled_list(),
    }
}

fn compiled_list() -> String {
    let names: Vec<_> = Backend::compiled().iter().map(|b| b.name()).collect();
    if names.is_empty() {
        "none".into()
    } else {
        names.join(", ")
    }
}

impl fmt::Display for Backend {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for Backend {
    type Err = BackendError;

    /// Parses `flex`, `ndarray` or `wgpu` (case-insensitive, surrounding blanks ignored).
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.trim().to_ascii_lowercase().as_str() {
            "flex" => Ok(Backend::Flex),
            "ndarray" => Ok(Backend::NdArray),
            "wgpu" => Ok(Backend::Wgpu),
            _ => Err(BackendError::Unknown {
                name: s.to_string(),
            }),
        }
    }
}

/// The backend `choice` of a command line when given, else the one `BNOOD_DEVICE` names
/// (blank or unset: the default compiled backend); checked to be compiled in.
///
/// # Errors
/// [`BackendError::Unknown`] for a bad `BNOOD_DEVICE`, [`BackendError::NotCompiled`] for a
/// backend this build lacks.
pub fn resolve(choice: Option<Backend>) -> Result<Backend, BackendError> {
    match choice {
        Some(backend) => backend_from_setting(Some(backend.name())),
        None => backend_from_env(),
    }
}

/// `--backend` as a clap `Args` group: what every example flattens into its options (the
/// `bnood` command has the same flag, global).
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::Args)]
pub struct BackendArg {
    /// Compute backend: flex (CPU), ndarray (CPU) or wgpu (GPU) [default: $BNOOD_DEVICE, else flex].
    #[arg(long, value_enum, ignore_case = true)]
    pub backend: Option<Backend>,
}

impl BackendArg {
    /// The chosen backend, see [`resolve`].
    ///
    /// # Errors
    /// As [`resolve`].
    pub fn resolve(self) -> Result<Backend, BackendError> {
        resolve(self.backend)
    }
}

/// Parses a backend name and returns its device.
///
/// # Errors
/// [`BackendError::Unknown`] or [`BackendError::NotCompiled`].
pub fn device_by_name(name: &str) -> Result<Device, BackendError> {
    name.parse::<Backend>()?.device()
}

/// The backend named by `BNOOD_DEVICE`, or the default one ([`Backend::default_compiled`])
/// when the variable is unset or empty.
///
/// # Errors
/// As [`backend_from_setting`].
pub fn backend_from_env() -> Result<Backend, BackendError> {
    backend_from_setting(std::env::var(DEVICE_ENV).ok().as_deref())
}

/// Resolves a backend setting such as the value of `BNOOD_DEVICE`: `None` or blank means
/// the default compiled backend; anything else must name a compiled backend.
///
/// # Errors
/// [`BackendError::Unknown`] for a bad name, [`BackendError::NotCompiled`] for a backend
/// this build lacks (a build with no backend at all reports `flex`).
pub fn backend_from_setting(setting: Option<&str>) -> Result<Backend, BackendError> {
    match setting.map(str::trim).filter(|s| !s.is_empty()) {
        Some(name) => {
            let backend: Backend = name.parse()?;
            if backend.is_compiled() {
                Ok(backend)
            } else {
                Err(BackendError::NotCompiled {
                    backend,
                    compiled: compiled_list(),
                })
            }
        }
        None => Backend::default_compiled().ok_or(BackendError::NotCompiled {
            backend: Backend::Flex,
            compiled: compiled_list(),
        }),
    }
}

/// The device of [`backend_from_env`].
///
/// # Errors
/// As [`backend_from_env`].
pub fn device_from_env() -> Result<Device, BackendError> {
    backend_from_env()?.device()
}
