//! Handlers of `train`, `eval` and `data`: load files, call `quackmesh::learn`, print results.

use anyhow::{Context, Result, bail};
use quackmesh::learn::{
    Dataset, LrSchedule, ModelSpec, Optimizer, Scheme, Split, TrainConfig, Weights, evaluate,
    train::progress_bar,
};

use crate::cli::learn::{
    DataArgs, DataCommand, EvalArgs, ModelArg, OptimizerArg, PartitionArgs, ScheduleArg, SplitArg,
    TrainArgs,
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
