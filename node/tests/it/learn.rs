//! Integration tests of the learn area, on the committed real MNIST subset (10k training and
//! 2k test images): training reaches the accuracy the issue asks for, robust aggregation
//! resists a poisoned update, the IDX reader refuses corrupted real files, and Python's
//! `safetensors` reads our weights bit for bit.

use std::{io::Write, path::Path, process::Command};

use indicatif::ProgressBar;
use quackmesh::{
    learn::{
        AggregationConfig, Aggregator, Dataset, LrSchedule, ModelSpec, Scheme, ServerState, Split,
        TrainConfig, Weights, aggregate::AggregateError, data::DataError, evaluate,
        validate_update,
    },
    test_utils::learn::{load_subset, mnist_subset_dir},
};

fn repo_root() -> &'static Path {
    Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/.."))
}

/// Issue 4: the MLP trained on 10k real training images for 1 epoch reaches >= 90% on 2k real
/// test images. With a constant learning rate the end of a single epoch is noisy (85-91% over
/// seeds, also in an independent NumPy implementation); SGD batch 16, lr 0.2 decaying linearly
/// to 0 lands at 91.8-93.1% for every seed tried, so the bound has a margin.
#[test]
fn mlp_one_epoch_on_10k_reaches_90_percent() {
    let (train_set, test_set) = load_subset();
    assert_eq!((train_set.len(), test_set.len()), (10_000, 2_000));
    let spec = ModelSpec::mlp();
    let init = Weights::init(&spec, 42);
    let before = evaluate(&spec, &init, &test_set).unwrap();
    let cfg = TrainConfig {
        lr: 0.2,
        batch_size: 16,
        schedule: LrSchedule::Linear,
        ..TrainConfig::default()
    };
    let (trained, report) =
        quackmesh::learn::train(&spec, &init, &train_set, &cfg, &ProgressBar::hidden()).unwrap();
    let after = evaluate(&spec, &trained, &test_set).unwrap();
    eprintln!(
        "mlp 1 epoch on 10k: accuracy {:.4} -> {:.4}, loss {:.4}, {:.0} samples/s (dev profile)",
        before.accuracy, after.accuracy, report.loss, report.samples_per_sec
    );
    assert!(
        before.accuracy < 0.3,
        "untrained model already good? {before:?}"
    );
    assert!(after.accuracy >= 0.90, "accuracy {} < 0.90", after.accuracy);
    assert_eq!(report.samples, 10_000);
    assert_eq!(after.samples, 2_000);
}

/// The CNN learns too (fewer images to keep the suite fast on 2 cores).
#[test]
fn cnn_learns_on_real_mnist() {
    let (train_set, test_set) = load_subset();
    let spec = ModelSpec::cnn();
    let cfg = TrainConfig {
        lr: 0.1,
        schedule: LrSchedule::Linear,
        ..TrainConfig::default()
    };
    let (trained, _) = quackmesh::learn::train(
        &spec,
        &Weights::init(&spec, 1),
        &train_set.take(3_000),
        &cfg,
        &ProgressBar::hidden(),
    )
    .unwrap();
    let acc = evaluate(&spec, &trained, &test_set).unwrap().accuracy;
    eprintln!("cnn on 3k images: accuracy {acc:.4}");
    assert!(acc >= 0.88, "cnn accuracy {acc}"); // measured 0.917
}

/// Issue 4: median and trimmed mean resist an update scaled by -10 from one of five clients:
/// accuracy within 2 points of the clean aggregate, while plain FedAvg collapses.
#[test]
fn robust_aggregation_resists_a_scaled_update() {
    let (train_set, test_set) = load_subset();
    let spec = ModelSpec::mlp();
    // A mid-training round: the global model has seen the first 2k images; five clients hold
    // 1.6k of the other 8k each.
    let warmup = TrainConfig {
        lr: 0.3,
        schedule: LrSchedule::Linear,
        ..TrainConfig::default()
    };
    let (global, _) = quackmesh::learn::train(
        &spec,
        &Weights::init(&spec, 7),
        &train_set.take(2_000),
        &warmup,
        &ProgressBar::hidden(),
    )
    .unwrap();
    let rest = train_set
        .subset(&(2_000..train_set.len()).collect::<Vec<_>>())
        .unwrap();
    let parts = quackmesh::learn::data::partition(rest.labels(), 5, Scheme::Iid, 3).unwrap();
    let updates: Vec<(Weights, u64)> = parts
        .iter()
        .enumerate()
        .map(|(i, idx)| {
            let shard = rest.subset(idx).unwrap();
            let cfg = TrainConfig {
                seed: i as u64,
                ..TrainConfig::default()
            };
            let (w, r) =
                quackmesh::learn::train(&spec, &global, &shard, &cfg, &ProgressBar::hidden())
                    .unwrap();
            (w, r.samples as u64)
        })
        .collect();
    // Client 0 turns evil: its delta scaled by -10.
    let mut poisoned = updates.clone();
    let g = global.flat().to_vec();
    let evil: Vec<f32> = poisoned[0]
        .0
        .flat()
        .iter()
        .zip(&g)
        .map(|(u, g)| g - 10.0 * (u - g))
        .collect();
    poisoned[0].0 = global.with_values(evil);

    let accuracy = |rule: Aggregator, ups: &[(Weights, u64)]| {
        let cfg = AggregationConfig {
            rule,
            ..AggregationConfig::default()
        };
        let mut acc = cfg.start(&global).unwrap();
        for (u, n) in ups {
            acc.add(u, *n).unwrap();
        }
        let w = acc.finish(&mut ServerState::default()).unwrap().weights;
        evaluate(&spec, &w, &test_set).unwrap().accuracy
    };
    let clean = accuracy(Aggregator::FedAvg, &updates);
    let attacked = accuracy(Aggregator::FedAvg, &poisoned);
    let median = accuracy(Aggregator::Median, &poisoned);
    let trimmed = accuracy(Aggregator::TrimmedMean { trim_fraction: 0.2 }, &poisoned);
    eprintln!(
        "clean {clean:.4} fedavg-attacked {attacked:.4} median {median:.4} trimmed {trimmed:.4}"
    );
    assert!(clean > 0.85, "clean aggregate {clean}");
    assert!(
        attacked < clean - 0.05,
        "the attack should hurt plain FedAvg: {attacked} vs {clean}"
    );
    assert!(
        (clean - median).abs() <= 0.02,
        "median {median} vs clean {clean}"
    );
    assert!(
        (clean - trimmed).abs() <= 0.02,
        "trimmed mean {trimmed} vs clean {clean}"
    );

    // Validation with a norm bound catches the poisoned update before it counts.
    let honest_norm = validate_update(&spec, &global, &updates[1].0, f64::INFINITY).unwrap();
    let err = validate_update(&spec, &global, &poisoned[0].0, 3.0 * honest_norm).unwrap_err();
    assert_eq!(err.kind(), "norm");
}

/// FedAvg of identical real models is that model, bit for bit.
#[test]
fn fedavg_of_identical_trained_models_is_that_model() {
    let (train_set, _) = load_subset();
    let spec = ModelSpec::mlp();
    let global = Weights::init(&spec, 3);
    let (w, _) = quackmesh::learn::train(
        &spec,
        &global,
        &train_set.take(640),
        &TrainConfig::default(),
        &ProgressBar::hidden(),
    )
    .unwrap();
    let mut acc = AggregationConfig::default().start(&global).unwrap();
    for n in [100, 640, 3] {
        acc.add(&w, n).unwrap();
    }
    let out = acc.finish(&mut ServerState::default()).unwrap();
    assert!(out.weights == w, "FedAvg of identical models changed them");
    assert_eq!(out.total_samples, 743);
    assert!(matches!(
        AggregationConfig::default()
            .start(&global)
            .unwrap()
            .add(&Weights::init(&ModelSpec::cnn(), 1), 1),
        Err(AggregateError::LayoutMismatch { .. })
    ));
}

/// The IDX reader refuses corrupted versions of the real files, each with its own error.
#[test]
fn idx_reader_rejects_corrupted_real_files() {
    let dir = mnist_subset_dir();
    let gz_images = std::fs::read(dir.join("t10k-images-idx3-ubyte.gz")).unwrap();
    let gz_labels = std::fs::read(dir.join("t10k-labels-idx1-ubyte.gz")).unwrap();
    let good = Dataset::from_idx(&gz_images, &gz_labels).unwrap();
    let (images, labels) = good.to_idx().unwrap();

    let mut bad_magic = images.clone();
    bad_magic[..4].copy_from_slice(&0x0803_0000u32.to_be_bytes());
    assert!(matches!(
        Dataset::from_idx(&bad_magic, &labels),
        Err(DataError::BadMagic { .. })
    ));

    let truncated = &images[..images.len() - 100];
    assert!(matches!(
        Dataset::from_idx(truncated, &labels),
        Err(DataError::Truncated { .. })
    ));

    let mut wrong_count = labels.clone();
    wrong_count[4..8].copy_from_slice(&1999u32.to_be_bytes());
    wrong_count.pop();
    assert!(matches!(
        Dataset::from_idx(&images, &wrong_count),
        Err(DataError::CountMismatch {
            images: 2000,
            labels: 1999
        })
    ));

    let mut gz_garbage = gz_images.clone();
    for b in &mut gz_garbage[20..200] {
        *b ^= 0x5a;
    }
    let err = Dataset::from_idx(&gz_garbage, &gz_labels).unwrap_err();
    assert!(matches!(err, DataError::Gzip(_)), "{err:?}");
    assert!(err.to_string().contains("gzip"), "{err}");

    let swapped = Dataset::from_idx(&labels, &images).unwrap_err();
    assert!(matches!(
        swapped,
        DataError::WrongDims {
            expected: 3,
            found: 1
        }
    ));
}

/// Partition the real subset, write each part as IDX, read them back: nothing lost.
#[test]
fn partitions_round_trip_through_idx_dirs_and_bytes() {
    let (train_set, _) = load_subset();
    let parts =
        quackmesh::learn::data::partition(train_set.labels(), 3, Scheme::Labels { k: 4 }, 11)
            .unwrap();
    let tmp = tempfile::tempdir().unwrap();
    let mut total = 0;
    for (i, idx) in parts.iter().enumerate() {
        let part = train_set.subset(idx).unwrap();
        let dir = tmp.path().join(format!("part-{i}"));
        part.save_dir(&dir, Split::Train).unwrap();
        let back = Dataset::load_dir(&dir, Split::Train).unwrap();
        assert_eq!(back, part);
        let digits = back.label_counts().iter().filter(|&&c| c > 0).count();
        assert_eq!(digits, 4);
        let bytes = back.to_bytes().unwrap();
        assert_eq!(Dataset::from_bytes(&bytes, 16 << 20).unwrap(), part);
        total += back.len();
    }
    assert_eq!(total, train_set.len());
}

/// A model saved by the node loads in Python's `safetensors` with the same values.
/// Needs `python3` with `safetensors` and `numpy`; set QUACKMESH_SKIP_PYTHON=1 to skip.
#[test]
fn saved_model_loads_in_python_safetensors() {
    if std::env::var("QUACKMESH_SKIP_PYTHON").is_ok_and(|v| v == "1") {
        eprintln!("skipped: QUACKMESH_SKIP_PYTHON=1");
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    for spec in [ModelSpec::mlp(), ModelSpec::cnn()] {
        let w = Weights::init(&spec, 99);
        let model = tmp.path().join(format!("{spec}.safetensors"));
        w.save(&model).unwrap();
        let expected: serde_json::Map<String, serde_json::Value> = w
            .entries()
            .iter()
            .map(|e| {
                let bits: Vec<u32> = w
                    .get(&e.name)
                    .unwrap()
                    .iter()
                    .map(|v| v.to_bits())
                    .collect();
                (
                    e.name.clone(),
                    serde_json::json!({ "shape": e.shape, "bits": bits }),
                )
            })
            .collect();
        let json = tmp.path().join(format!("{spec}.json"));
        std::fs::File::create(&json)
            .unwrap()
            .write_all(serde_json::to_string(&expected).unwrap().as_bytes())
            .unwrap();
        let out = Command::new("python3")
            .arg(repo_root().join("scripts/check-safetensors.py"))
            .arg(&model)
            .arg(&json)
            .output()
            .unwrap_or_else(|e| {
                panic!("cannot run python3 ({e}): install Python 3 or set QUACKMESH_SKIP_PYTHON=1")
            });
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(
            out.status.code() != Some(2),
            "python3 lacks safetensors/numpy (pip install safetensors numpy, or set \
             QUACKMESH_SKIP_PYTHON=1): {stderr}"
        );
        assert!(out.status.success(), "{spec}: python disagrees: {stderr}");
        assert!(String::from_utf8_lossy(&out.stdout).starts_with("ok:"));
    }
}

/// The CLI end to end: partition the subset, train on one part, evaluate the saved weights.
#[test]
fn cli_partition_train_eval() {
    let bin = env!("CARGO_BIN_EXE_quackmesh");
    let tmp = tempfile::tempdir().unwrap();
    let data = mnist_subset_dir();
    let run = |args: &[&str]| {
        let out = Command::new(bin)
            .args(args)
            .env("QUACKMESH_LOG", "warn")
            .output()
            .unwrap();
        let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
        assert!(
            out.status.success(),
            "quackmesh {args:?} failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        stdout
    };
    let parts = tmp.path().join("parts");
    let out = run(&[
        "data",
        "partition",
        "--data",
        data.to_str().unwrap(),
        "--parts",
        "2",
        "--scheme",
        "dirichlet:100",
        "--seed",
        "1",
        "--out",
        parts.to_str().unwrap(),
    ]);
    assert_eq!(out.lines().count(), 2, "{out}");
    let model = tmp.path().join("m.safetensors");
    let out = run(&[
        "train",
        "--data",
        parts.join("part-0").to_str().unwrap(),
        "--test",
        data.to_str().unwrap(),
        "--epochs",
        "1",
        "--lr",
        "0.1",
        "--quiet",
        "-o",
        model.to_str().unwrap(),
    ]);
    assert!(out.contains("test accuracy"), "{out}");
    let out = run(&[
        "eval",
        "--weights",
        model.to_str().unwrap(),
        "--data",
        data.to_str().unwrap(),
    ]);
    let acc: f64 = out
        .split_whitespace()
        .nth(1)
        .and_then(|a| a.parse().ok())
        .unwrap_or_else(|| panic!("no accuracy in {out:?}"));
    assert!(acc > 0.8, "accuracy {acc} after training on 5k images");
    // Bad input fails with a clear error, not a panic.
    let bad = Command::new(bin)
        .args([
            "eval",
            "--weights",
            data.join("t10k-labels-idx1-ubyte.gz").to_str().unwrap(),
        ])
        .args(["--data", data.to_str().unwrap()])
        .output()
        .unwrap();
    assert!(!bad.status.success());
    assert!(String::from_utf8_lossy(&bad.stderr).contains("safetensors"));
}
