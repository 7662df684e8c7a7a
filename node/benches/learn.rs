//! Learn-area benchmarks (run by `scripts/bench-learn.sh`, which compares them with PyTorch and
//! NumPy measured in the same run). Prints one JSON object per measurement on stdout.
//!
//! - `train`: samples/s of one epoch of the MLP and the CNN at batch 32 and 128 (SGD).
//! - `federated`: the lead's hot path, MLP batch 32 SGD lr 0.05, one epoch on 30k images:
//!   wall and CPU seconds.
//! - `eval`: forward passes over 10k test images.
//! - `fedavg`: streaming FedAvg of 100 updates of 1M parameters, with the peak heap growth
//!   measured by a counting allocator (and the same for 10 updates, to show it does not grow).
//!
//! Env: `RAYON_NUM_THREADS` (threads for candle's matmuls), `QUACKMESH_MNIST_DIR` (full MNIST,
//! default `data/mnist`; falls back to the committed 10k subset), `BENCH_QUICK=1` (fewer images).

use std::{
    alloc::{GlobalAlloc, Layout},
    sync::atomic::{AtomicUsize, Ordering},
    time::Instant,
};

use indicatif::ProgressBar;
use quackmesh::{
    learn::{AggregationConfig, Dataset, ModelSpec, ServerState, TrainConfig, Weights, evaluate},
    test_utils::learn::{load_full, load_subset},
};

/// mimalloc (as in the node binary) with a count of live and peak heap bytes.
struct Counting;

static LIVE: AtomicUsize = AtomicUsize::new(0);
static PEAK: AtomicUsize = AtomicUsize::new(0);

unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        let p = unsafe { mimalloc::MiMalloc.alloc(layout) };
        if !p.is_null() {
            let live = LIVE.fetch_add(layout.size(), Ordering::Relaxed) + layout.size();
            PEAK.fetch_max(live, Ordering::Relaxed);
        }
        p
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        unsafe { mimalloc::MiMalloc.dealloc(ptr, layout) };
        LIVE.fetch_sub(layout.size(), Ordering::Relaxed);
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        let p = unsafe { mimalloc::MiMalloc.realloc(ptr, layout, new_size) };
        if !p.is_null() {
            if new_size > layout.size() {
                let live = LIVE.fetch_add(new_size - layout.size(), Ordering::Relaxed)
                    + (new_size - layout.size());
                PEAK.fetch_max(live, Ordering::Relaxed);
            } else {
                LIVE.fetch_sub(layout.size() - new_size, Ordering::Relaxed);
            }
        }
        p
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

/// CPU seconds (user + system) of this process so far, from /proc (10 ms resolution).
fn cpu_secs() -> f64 {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    // Fields after the parenthesised command name; utime and stime are the 12th and 13th.
    let rest = stat.rsplit_once(')').map_or("", |(_, r)| r);
    let f: Vec<&str> = rest.split_whitespace().collect();
    let ticks = |i: usize| f.get(i).and_then(|v| v.parse::<f64>().ok()).unwrap_or(0.0);
    (ticks(11) + ticks(12)) / 100.0
}

fn threads() -> usize {
    std::env::var("RAYON_NUM_THREADS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()))
}

/// Whether `BENCH_ONLY` (comma-separated bench names) selects `name`; unset selects all.
fn selected(name: &str) -> bool {
    std::env::var("BENCH_ONLY").map_or(true, |only| only.split(',').any(|o| o == name))
}

fn main() {
    // `cargo test --all-targets` runs this binary without `--bench` (and unoptimised): do a
    // seconds-long smoke run there instead of the benchmark, as criterion does.
    if !std::env::args().any(|a| a == "--bench") {
        smoke();
        return;
    }
    if selected("fedavg") && !selected("train") && !selected("federated") && !selected("eval") {
        fedavg(threads());
        return;
    }
    let quick = std::env::var("BENCH_QUICK").is_ok_and(|v| v == "1");
    let (train_set, test_set, source) = match load_full() {
        Some((tr, te)) => (tr, te, "full"),
        None => {
            let (tr, te) = load_subset();
            (tr, te, "subset")
        }
    };
    let threads = threads();
    eprintln!(
        "learn bench: {} training / {} test images ({source}), {threads} thread(s)",
        train_set.len(),
        test_set.len()
    );
    let hidden = ProgressBar::hidden();

    // Warm up allocator, thread pool and caches.
    let mlp = ModelSpec::mlp();
    let _ = quackmesh::learn::train(
        &mlp,
        &Weights::init(&mlp, 0),
        &train_set.take(2_000),
        &TrainConfig::default(),
        &hidden,
    );

    let train_models = if selected("train") { 2 } else { 0 };
    for (name, spec, n) in [
        ("mlp", ModelSpec::mlp(), if quick { 10_000 } else { 60_000 }),
        ("cnn", ModelSpec::cnn(), if quick { 2_000 } else { 10_000 }),
    ]
    .into_iter()
    .take(train_models)
    {
        let data = train_set.take(n);
        for batch in [32, 128] {
            let cfg = TrainConfig {
                batch_size: batch,
                lr: 0.05,
                ..TrainConfig::default()
            };
            let init = Weights::init(&spec, 1);
            let (c0, t0) = (cpu_secs(), Instant::now());
            let (_, report) = quackmesh::learn::train(&spec, &init, &data, &cfg, &hidden)
                .expect("training failed");
            let secs = t0.elapsed().as_secs_f64();
            println!(
                r#"{{"bench":"train","model":"{name}","batch":{batch},"threads":{threads},"samples":{},"secs":{secs:.4},"cpu_secs":{:.3},"samples_per_sec":{:.1},"loss":{:.4}}}"#,
                data.len(),
                cpu_secs() - c0,
                data.len() as f64 / secs,
                report.loss
            );
        }
    }

    if selected("federated") {
        federated(&train_set, &test_set, quick, threads);
    }
    if selected("eval") {
        eval(&test_set, threads);
    }
    if selected("fedavg") {
        fedavg(threads);
    }
}

/// The federated hot path: 1 epoch, 30k images, batch 32, SGD lr 0.05.
fn federated(train_set: &Dataset, test_set: &Dataset, quick: bool, threads: usize) {
    let mlp = ModelSpec::mlp();
    let hidden = ProgressBar::hidden();
    let data = train_set.take(if quick { 10_000 } else { 30_000 });
    let init = Weights::init(&mlp, 2);
    let (c0, t0) = (cpu_secs(), Instant::now());
    let (trained, _) =
        quackmesh::learn::train(&mlp, &init, &data, &TrainConfig::default(), &hidden)
            .expect("training failed");
    let secs = t0.elapsed().as_secs_f64();
    let cpu = cpu_secs() - c0;
    let acc = evaluate(&mlp, &trained, test_set).expect("eval").accuracy;
    println!(
        r#"{{"bench":"federated","model":"mlp","batch":32,"threads":{threads},"samples":{},"secs":{secs:.4},"cpu_secs":{cpu:.3},"samples_per_sec":{:.1},"test_accuracy":{acc:.4}}}"#,
        data.len(),
        data.len() as f64 / secs
    );
}

/// Evaluation speed on the test set.
fn eval(test_set: &Dataset, threads: usize) {
    for (name, spec) in [("mlp", ModelSpec::mlp()), ("cnn", ModelSpec::cnn())] {
        let w = Weights::init(&spec, 3);
        let t0 = Instant::now();
        let e = evaluate(&spec, &w, test_set).expect("eval");
        let secs = t0.elapsed().as_secs_f64();
        println!(
            r#"{{"bench":"eval","model":"{name}","threads":{threads},"samples":{},"secs":{secs:.4},"samples_per_sec":{:.1}}}"#,
            e.samples,
            e.samples as f64 / secs
        );
    }
}

/// Every code path of the benchmark on tiny inputs.
fn smoke() {
    let (train_set, test_set) = load_subset();
    let hidden = ProgressBar::hidden();
    for spec in [ModelSpec::mlp(), ModelSpec::cnn()] {
        let (w, _) = quackmesh::learn::train(
            &spec,
            &Weights::init(&spec, 0),
            &train_set.take(256),
            &TrainConfig::default(),
            &hidden,
        )
        .expect("training failed");
        evaluate(&spec, &w, &test_set.take(256)).expect("eval");
    }
    let global = Weights::init(&ModelSpec::mlp(), 1);
    let mut acc = AggregationConfig::default().start(&global).expect("start");
    acc.add_batch(&[(&global, 1), (&global, 2)]).expect("add");
    let out = acc.finish(&mut ServerState::default()).expect("finish");
    assert!(out.weights == global);
    println!("learn bench smoke run ok (run it with `cargo bench` or scripts/bench-learn.sh)");
}

/// Streaming FedAvg of 100 updates of 1M parameters.
fn fedavg(threads: usize) {
    const PARAMS: usize = 1_000_000;
    let global = Weights::from_tensors(vec![("w".into(), vec![PARAMS], vec![0.0; PARAMS])])
        .expect("weights");
    let mut x = 0x2545_f491_4f6c_dd1du64;
    let mut update = || {
        let v: Vec<f32> = (0..PARAMS)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                (x >> 40) as f32 / (1u64 << 24) as f32 - 0.5
            })
            .collect();
        global.with_values(v)
    };
    // Warm-up: allocator, page cache of the accumulator's size, thread start-up.
    {
        let u = update();
        let mut acc = AggregationConfig::default().start(&global).expect("start");
        acc.add_batch(&[(&u, 1), (&u, 2)]).expect("add");
        std::hint::black_box(acc.finish(&mut ServerState::default()).expect("finish"));
    }
    for count in [10usize, 100] {
        let updates: Vec<Weights> = (0..count).map(|_| update()).collect();
        // One at a time (pure streaming), then in batches of 10 (one pass over the sums each).
        for batch in [1usize, 10] {
            let cfg = AggregationConfig::default();
            let base = LIVE.load(Ordering::Relaxed);
            PEAK.store(base, Ordering::Relaxed);
            let t0 = Instant::now();
            let mut acc = cfg.start(&global).expect("start");
            let weighted: Vec<(&Weights, u64)> = updates
                .iter()
                .enumerate()
                .map(|(i, u)| (u, 100 + i as u64))
                .collect();
            for chunk in weighted.chunks(batch) {
                acc.add_batch(chunk).expect("add");
            }
            let out = acc.finish(&mut ServerState::default()).expect("finish");
            let secs = t0.elapsed().as_secs_f64();
            let peak = PEAK.load(Ordering::Relaxed) - base;
            std::hint::black_box(&out);
            println!(
                r#"{{"bench":"fedavg","updates":{count},"batch":{batch},"params":{PARAMS},"threads":{threads},"secs":{secs:.4},"updates_per_sec":{:.1},"peak_extra_bytes":{peak}}}"#,
                count as f64 / secs
            );
        }
    }
}
