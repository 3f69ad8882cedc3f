//! The paper's published numbers (Song, Song & Ermon), to print beside ours.

/// One line of a published table: model, OoD set and four `(AUROC, AP)` cells.
pub type PaperLine = (&'static str, &'static str, [(f64, f64); 4]);

/// Table 2, Fashion-MNIST rows: `(model, OoD set, [(AUROC, AP); 4])` with the detectors in
/// the order log p, T_perm, WAIC, BN test ("Ours").
pub const TABLE2_FMNIST: [PaperLine; 8] = [
    (
        "RealNVP",
        "Rotation",
        [(0.76, 0.78), (0.64, 0.68), (0.99, 0.99), (0.99, 0.99)],
    ),
    (
        "RealNVP",
        "MNIST",
        [(0.10, 0.32), (0.78, 0.71), (0.24, 0.38), (1.00, 1.00)],
    ),
    (
        "RealNVP",
        "Omniglot",
        [(0.05, 0.06), (0.86, 0.80), (0.97, 0.95), (1.00, 1.00)],
    ),
    (
        "RealNVP",
        "KMNIST",
        [(0.47, 0.46), (0.45, 0.45), (0.63, 0.65), (1.00, 1.00)],
    ),
    (
        "VAE",
        "Rotation",
        [(0.73, 0.72), (0.61, 0.64), (0.94, 0.95), (0.97, 0.98)],
    ),
    (
        "VAE",
        "MNIST",
        [(0.13, 0.33), (0.73, 0.68), (0.56, 0.64), (1.00, 1.00)],
    ),
    (
        "VAE",
        "Omniglot",
        [(0.00, 0.06), (0.99, 0.96), (0.90, 0.83), (1.00, 1.00)],
    ),
    (
        "VAE",
        "KMNIST",
        [(0.55, 0.54), (0.50, 0.50), (0.84, 0.87), (1.00, 1.00)],
    ),
];

/// Table 5, Fashion-MNIST rows: `(model, OoD set, [(AUROC, AP); 4])` for `r1 → 0` and
/// `r2 = 0.15, 0.3, 0.5, 0.9`. (The paper's VAE `r2 = 0.5` cells repeat its Table 2 WAIC
/// cells verbatim, which looks like a copy error in the paper; we print them as published.)
pub const TABLE5_FMNIST: [PaperLine; 8] = [
    (
        "RealNVP",
        "Rotation",
        [(0.93, 0.95), (0.91, 0.94), (0.98, 0.99), (0.99, 0.99)],
    ),
    (
        "RealNVP",
        "MNIST",
        [(0.92, 0.93), (1.00, 1.00), (1.00, 1.00), (1.00, 1.00)],
    ),
    (
        "RealNVP",
        "Omniglot",
        [(0.96, 0.97), (0.95, 0.96), (1.00, 1.00), (1.00, 1.00)],
    ),
    (
        "RealNVP",
        "KMNIST",
        [(0.86, 0.88), (1.00, 1.00), (1.00, 1.00), (1.00, 1.00)],
    ),
    (
        "VAE",
        "Rotation",
        [(0.88, 0.91), (0.94, 0.95), (0.94, 0.95), (0.97, 0.98)],
    ),
    (
        "VAE",
        "MNIST",
        [(0.86, 0.88), (0.99, 0.99), (0.56, 0.64), (1.00, 1.00)],
    ),
    (
        "VAE",
        "Omniglot",
        [(0.93, 0.95), (0.98, 0.99), (0.90, 0.83), (1.00, 1.00)],
    ),
    (
        "VAE",
        "KMNIST",
        [(0.85, 0.88), (0.99, 0.99), (0.84, 0.87), (1.00, 1.00)],
    ),
];

/// Table 5's `r2` columns.
pub const TABLE5_R2: [f64; 4] = [0.15, 0.3, 0.5, 0.9];

/// Table 2 detector titles in column order, as used in [`crate::Row::detector`].
const DETECTORS: [&str; 4] = ["log p(x)", "T_perm", "WAIC", "BN test"];

/// The paper's Table 2 `(AUROC, AP)` for a Fashion-MNIST model (`"RealNVP"`, `"VAE"`),
/// OoD set (`"Rotation"`, `"MNIST"`, `"Omniglot"`, `"KMNIST"`) and detector title, if the
/// paper has that cell.
pub fn table2(model: &str, ood: &str, detector: &str) -> Option<(f64, f64)> {
    let d = DETECTORS.iter().position(|t| *t == detector)?;
    TABLE2_FMNIST
        .iter()
        .find(|(m, o, _)| m.eq_ignore_ascii_case(model) && o.eq_ignore_ascii_case(ood))
        .map(|(_, _, cells)| cells[d])
}

/// The paper's Table 5 `(AUROC, AP)` for a model, OoD set and `r2` (one of
/// [`TABLE5_R2`]), if the paper has that cell.
pub fn table5(model: &str, ood: &str, r2: f64) -> Option<(f64, f64)> {
    let c = TABLE5_R2.iter().position(|r| (r - r2).abs() < 1e-9)?;
    TABLE5_FMNIST
        .iter()
        .find(|(m, o, _)| m.eq_ignore_ascii_case(model) && o.eq_ignore_ascii_case(ood))
        .map(|(_, _, cells)| cells[c])
}
