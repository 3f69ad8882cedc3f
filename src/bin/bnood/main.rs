//! `bnood`: datasets, training, fitting, scoring and the paper's evaluation from the command
//! line. A thin front end: every step is a library function of the `bnood-*` crates.
//!
//! ```text
//! bnood datasets list|verify|download
//! bnood models list
//! bnood train --model realnvp --preset cpu --minutes 20 --out runs/realnvp-cpu-seed0.bpk
//! bnood fit   --model realnvp-fmnist --detector bn --out detector.json
//! bnood score --detector-file detector.json --test my_images/ --format csv --out scores.csv
//! bnood monitor --model realnvp-fmnist --input incoming/ --follow --window 64
//! bnood eval  --model runs/realnvp-cpu-seed0.bpk,runs/realnvp-cpu-seed1.bpk --out runs/eval
//! ```
//! Every subcommand has `--help`. Errors are one sentence on stderr and exit status 1.
//! Each subcommand's flags and run live in [`bnood::commands`]; this file parses, calls
//! them and prints their results, notices and errors.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::{CommandFactory, FromArgMatches, Parser, Subcommand, ValueEnum};

use bnood::backend::{Backend, resolve};
use bnood::commands::eval::EvalArgs;
use bnood::commands::fit::{FitCmd, ScoreArgs};
use bnood::commands::monitor::MonitorArgs;
use bnood::commands::report::{Rendered, rerender};
use bnood::commands::sample::SampleArgs;
use bnood::commands::train::{TrainArgs, Trained};
use bnood::commands::{Notice, RunContext};
use bnood::data::{Dataset, Locator, Survey, survey};
use bnood::error::{Error, Result};
use bnood::models::zoo::{self, Availability, ModelsDir};

#[derive(Parser)]
#[command(
    name = "bnood",
    version,
    about = "Unsupervised out-of-distribution detection with generative models and batch normalization (Song, Song & Ermon)."
)]
struct Cli {
    /// Compute backend: flex (CPU), ndarray (CPU) or wgpu (GPU) [default: $BNOOD_DEVICE, else flex].
    #[arg(long, global = true, value_enum, ignore_case = true)]
    backend: Option<Backend>,
    /// Folder searched first for datasets (then $BNOOD_DATA_DIR, ./datasets, Debian's folder).
    #[arg(long, global = true)]
    data_dir: Option<PathBuf>,
    /// Folder searched first for shipped checkpoints (then $BNOOD_MODELS_DIR, ./models, the source tree's models/).
    #[arg(long, global = true)]
    models_dir: Option<PathBuf>,
    /// No progress bars.
    #[arg(long, short, global = true)]
    quiet: bool,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// List, locate, verify (checksums) or download the catalogue's datasets.
    Datasets {
        #[arg(value_enum, default_value_t = DatasetsAction::List)]
        action: DatasetsAction,
        /// Only these datasets (e.g. fmnist,kmnist); default: all.
        #[arg(long, value_delimiter = ',')]
        only: Vec<String>,
    },
    /// The trained checkpoints shipped in models/: names for --model, how each was trained, whether it verifies here.
    Models {
        #[arg(value_enum, default_value_t = ModelsAction::List)]
        action: ModelsAction,
    },
    /// Train a RealNVP, VAE or PixelCNN++ with BatchNorm and save it (checkpoint + JSON sidecar).
    Train(Box<TrainArgs>),
    /// Fit a detector on a reference set and save it, to score new data without refitting.
    Fit(FitCmd),
    /// Score a test set with one detector; one row per image: index, score, p-value, decision.
    Score(ScoreArgs),
    /// Cut a stream of inputs into windows of M and give each window a p-value for "contains OoD inputs" (BN window test; KS and MMD baselines); --study measures its power.
    Monitor(MonitorArgs),
    /// Draw images from a trained model (PixelCNN++ ancestrally, RealNVP from its latent, the VAE from its prior) with a temperature, as an IDX file and a PNG grid.
    Sample(SampleArgs),
    /// The paper's protocol (Table 2, optionally Table 5, Figure 3, contamination) for several OoD sets.
    Eval(Box<EvalArgs>),
    /// Re-render a JSON report of `bnood eval` (Markdown tables and PNG plots), or draw a learning curve (`<checkpoint>.curve.csv` of `bnood train`), without recomputing.
    Report {
        /// The JSON report, or a `.curve.csv` learning curve.
        json: PathBuf,
        /// Output folder (default: the report's folder).
        #[arg(long)]
        out: Option<PathBuf>,
    },
}

#[derive(Clone, Copy, ValueEnum)]
enum DatasetsAction {
    /// Where each file is found, or that it is missing.
    List,
    /// Load every file that is found, checking its MD5 and format.
    Verify,
    /// Download missing files from the official URLs (checksum-verified).
    Download,
}

#[derive(Clone, Copy, ValueEnum)]
enum ModelsAction {
    /// Each shipped checkpoint: name, training (steps, epochs, final bits/dim), file and MD5 check.
    List,
}

/// Writes to stdout like `print!`, but a failed write (a closed pipe, a full disk) is an
/// [`Error::Io`] returned with `?`, never a panic.
macro_rules! out {
    ($($arg:tt)*) => {{
        use std::io::Write as _;
        write!(std::io::stdout().lock(), $($arg)*).map_err(stdout_error)?
    }};
}

/// [`out!`] with a newline.
macro_rules! outln {
    ($($arg:tt)*) => {{
        use std::io::Write as _;
        writeln!(std::io::stdout().lock(), $($arg)*).map_err(stdout_error)?
    }};
}

fn stdout_error(source: std::io::Error) -> Error {
    Error::Io {
        path: PathBuf::from("standard output"),
        source,
    }
}

/// Whether `e` is a write to a pipe whose reader has gone (`bnood score … | head -1`): the
/// reader asked for no more, so the run ends quietly and successfully, as `cat` would
/// under `head`.
fn is_closed_pipe(e: &Error) -> bool {
    matches!(e, Error::Io { source, .. } if source.kind() == std::io::ErrorKind::BrokenPipe)
}

fn main() -> ExitCode {
    // Before any thread starts: glibc keeps freed tensor buffers for reuse (VAE scoring
    // +50 %, docs/performance.md); elsewhere this does nothing.
    bnood::models::allocator::keep_freed_memory();
    // clap's own errors exit 1 like every other refusal (clap would exit 2); `--help` and
    // `--version` print to stdout and exit 0.
    let parsed = Cli::command()
        .try_get_matches()
        .and_then(|m| Cli::from_arg_matches(&m).map(|cli| (cli, m)));
    let cli = match parsed {
        Ok((mut cli, matches)) => {
            // `score` refuses fitting flags next to a saved detector: it needs to know
            // which flags were typed, not merely their values.
            if let (Command::Score(a), Some(("score", sub))) =
                (&mut cli.command, matches.subcommand())
            {
                a.given = sub
                    .ids()
                    .filter(|id| {
                        sub.value_source(id.as_str())
                            == Some(clap::parser::ValueSource::CommandLine)
                    })
                    .map(|id| id.as_str().to_string())
                    .collect();
            }
            cli
        }
        Err(e) => {
            let _ = e.print();
            return if e.use_stderr() {
                ExitCode::FAILURE
            } else {
                ExitCode::SUCCESS
            };
        }
    };
    match run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) if is_closed_pipe(&e) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}

/// `x` as a user typed it when it is of ordinary size (`0.05`), in scientific notation
/// otherwise (`1e-300`, not 300 digits).
fn short_number(x: f64) -> String {
    if x == 0.0 || (1e-4..1e6).contains(&x.abs()) {
        x.to_string()
    } else {
        format!("{x:e}")
    }
}

/// Writes a run's notice to stderr as it arises.
fn notify(notice: Notice) {
    eprintln!("{notice}");
}

fn run(cli: Cli) -> Result<()> {
    // A folder named in the environment must exist, as one named by a flag must.
    for var in ["BNOOD_DATA_DIR", "BNOOD_MODELS_DIR"] {
        if let Some(dir) = std::env::var_os(var).filter(|v| !v.is_empty())
            && !Path::new(&dir).is_dir()
        {
            return Err(Error::Invalid(format!(
                "{var}={} is not a folder: point it at an existing folder, or unset it",
                Path::new(&dir).display()
            )));
        }
    }
    let mut locator = Locator::from_env();
    if let Some(d) = &cli.data_dir {
        // A folder the user names must exist: no silent fall-back to the other places.
        if !d.is_dir() {
            return Err(Error::Invalid(format!(
                "--data-dir {} is not a folder: give the folder that holds the datasets (e.g. fashion_mnist/ inside it)",
                d.display()
            )));
        }
        locator = locator.with_dir(d);
    }
    let mut models_dir = ModelsDir::from_env();
    if let Some(d) = &cli.models_dir {
        models_dir = models_dir.with_dir(d);
    }
    let backend = resolve(cli.backend);
    let device = || backend.clone()?.device();
    let progress = !cli.quiet;
    let ctx = |device| RunContext {
        device,
        locator: &locator,
        models_dir: &models_dir,
        progress,
    };
    let n = &mut notify;
    match &cli.command {
        Command::Datasets { action, only } => datasets(*action, only, locator.clone()),
        Command::Models {
            action: ModelsAction::List,
        } => models_list(&models_dir),
        Command::Train(a) => {
            let trained = a.run(&device()?, &locator, progress, n)?;
            print_trained(a, &trained)
        }
        Command::Fit(a) => {
            let fitted = a.run(ctx(&device()?), n)?;
            let (name, out) = (fitted.detector.name(), a.out.display());
            if progress {
                outln!("fitted {name} on `{}`; saved {out}", a.fit.reference);
            }
            Ok(())
        }
        Command::Score(a) => {
            let scored = a.run(ctx(&device()?), n)?;
            match &scored.out {
                None => out!("{}", scored.text),
                Some(path) => eprintln!(
                    "{} of {} images flagged OoD at target FPR {}; wrote {}",
                    scored.flagged,
                    scored.images,
                    short_number(a.fpr),
                    path.display()
                ),
            }
            if let Some(line) = scored.verdict_line() {
                eprintln!("{line}");
            }
            Ok(())
        }
        Command::Monitor(a) => a.run(ctx(&device()?), &mut std::io::stdout(), n),
        Command::Sample(a) => {
            let s = a.run(ctx(&device()?))?;
            let grid = s
                .grid
                .map(|g| format!(" and {}", g.display()))
                .unwrap_or_default();
            outln!("drew {} images; wrote {}{grid}", s.n, s.out.display());
            Ok(())
        }
        Command::Eval(a) => eval(a, backend?, &locator, &models_dir, progress),
        Command::Report { json, out } => report(json, out.as_deref()),
    }
}

fn print_trained(a: &TrainArgs, t: &Trained) -> Result<()> {
    let r = &t.report;
    outln!(
        "trained {} on {} ({} images): {} steps, {:.0} s, {:.1} samples/s, final loss {:.3} bits/dim\nsaved {}",
        a.model.model,
        t.data_name,
        t.data_len,
        r.steps,
        r.seconds,
        r.samples_per_second,
        r.final_loss_bits_per_dim,
        a.out.display()
    );
    if let Some(last) = r.curve.as_ref().and_then(|c| c.rows.last().map(|l| (c, l))) {
        let (curve, last) = last;
        let cols: Vec<String> = curve
            .metrics
            .iter()
            .zip(&last.values)
            .map(|(n, v)| format!("{n} {v:.4}"))
            .collect();
        outln!(
            "held-out at step {} (epoch {:.2}): {}",
            last.step,
            last.epoch,
            cols.join(", ")
        );
    }
    if let Some((csv, png)) = &t.curve_files {
        outln!("learning curve: {} and {}", csv.display(), png.display());
    }
    if r.budget_spent {
        outln!(
            "budget spent: {} steps = {:.2} epochs ({})",
            r.steps,
            r.steps as f64 / t.steps_per_epoch as f64,
            a.budget.describe()
        );
    }
    if r.stopped_flat {
        outln!(
            "stopped: the held-out curve is flat (less than {} bits/dim per epoch over {} epochs, after {} learning-rate halving(s))",
            a.stop_when_flat.unwrap_or(f64::NAN),
            a.flat_epochs,
            a.lr_halvings
        );
    }
    Ok(())
}

fn eval(
    a: &EvalArgs,
    backend: Backend,
    l: &Locator,
    dirs: &ModelsDir,
    progress: bool,
) -> Result<()> {
    let device = backend.device()?;
    let ctx = RunContext {
        device: &device,
        locator: l,
        models_dir: dirs,
        progress,
    };
    let command = Some(std::env::args().collect::<Vec<_>>().join(" "));
    let job = a.job(backend, ctx, command, &mut notify)?;
    let w = bnood::eval::run(&job, &device, false)?;
    let plots: Vec<String> = w.plots.iter().map(|p| p.display().to_string()).collect();
    outln!(
        "\nreport: {}\ntables: {}\nplots:  {}\ntotal {:.0} s",
        w.json.display(),
        w.markdown.display(),
        plots.join(", "),
        w.report.total_seconds
    );
    Ok(())
}

fn report(json: &Path, out: Option<&Path>) -> Result<()> {
    match rerender(json, out)? {
        Rendered::Curve(png) => outln!("plot:   {}", png.display()),
        Rendered::Report {
            report,
            markdown,
            plots,
        } => {
            out!("{}", bnood::eval::report::text_table(&report.table2));
            outln!("tables: {}", markdown.display());
            for p in plots {
                outln!("plot:   {}", p.display());
            }
        }
    }
    Ok(())
}
/// `bnood models list`: one block per shipped checkpoint; an error when any is missing or
/// damaged (the lines say which).
fn models_list(dirs: &ModelsDir) -> Result<()> {
    let mut failures = 0;
    for (s, status) in zoo::survey(dirs) {
        let state = match status {
            Availability::Verified(path) => format!("ok ({}, MD5 verified)", path.display()),
            Availability::Unavailable(reason) => {
                failures += 1;
                format!("FAILED: {reason}")
            }
        };
        outln!(
            "{:<22} {} `{}` preset, seed {}: {}\n{:<22} {} steps of 64 = {:.2} epochs in {:.0} min, final training loss {:.3} bits/dim; {}\n{:<22} made by: {}\n{:<22} {state}",
            s.name,
            s.kind.display_name(),
            s.preset,
            s.seed,
            s.role,
            "",
            s.steps,
            s.epochs(),
            s.train_seconds / 60.0,
            s.final_bits_per_dim,
            s.machine,
            "",
            s.command,
            "",
        );
    }
    for t in dirs.in_training() {
        let progress = match (&t.last, t.metrics.first()) {
            (Some(row), Some(metric)) => format!(
                "; at epoch {:.2}: {metric} {:.3}",
                row.epoch,
                row.values.first().copied().unwrap_or(f64::NAN)
            ),
            _ => String::new(),
        };
        let state = match &t.finished {
            Some(why) => format!("finished ({})", why.lines().next().unwrap_or("").trim()),
            None => "still training".to_string(),
        };
        outln!(
            "{:<22} in training, not shipped: {} steps{progress}; {state}\n{:<22} {}",
            t.name,
            t.step,
            "",
            t.path.display()
        );
    }
    match failures {
        0 => Ok(()),
        n => Err(Error::Invalid(format!(
            "{n} shipped checkpoint(s) unavailable; see the lines marked FAILED above"
        ))),
    }
}

fn datasets(action: DatasetsAction, only: &[String], locator: Locator) -> Result<()> {
    let chosen = match only {
        [] => Dataset::ALL.to_vec(),
        names => names
            .iter()
            .map(|n| Dataset::from_name(n))
            .collect::<std::result::Result<_, _>>()?,
    };
    let action = match action {
        DatasetsAction::List => Survey::List,
        DatasetsAction::Verify => Survey::Verify,
        DatasetsAction::Download => Survey::Download,
    };
    let (lines, failures) = survey(&chosen, &locator, action)?;
    outln!("{}", lines.join("\n"));
    match failures {
        0 => Ok(()),
        n => Err(Error::Invalid(format!(
            "{n} dataset file(s) failed; see the lines marked FAILED above"
        ))),
    }
}
