//! Federated training benchmark (issue 5; run with `scripts/bench-federated.sh`).
//!
//! The setting of the reference run in ../shared/FACTS.md: MLP 784-128-10, the full real MNIST
//! training set split IID over N contributors (2 and 10), 1 local epoch, batch 32, SGD lr 0.05,
//! 5 rounds; accuracy of each round's global model on the 10k real test images. The job's own
//! validation set (what the coordinator measures every update and round on) is the first
//! 2,000 of them: it only gates rewards, and a smaller one costs the coordinator less CPU.
//!
//! System: a real anvil devnet, 2 coordinator-eligible nodes, N contributor processes and a
//! requester, all `quackmesh node` on 127.0.0.1 of this machine; seconds per round include the
//! chain transactions (claims, submitUpdate, recordRound) and the mesh transfers.
//! Baseline, measured in the same run: the same rounds in this one process with no mesh and no
//! chain (train the N shards on 2 threads, FedAvg, evaluate). The ratio system/baseline is the
//! cost of decentralisation. The reference (Flower + PyTorch) figures are printed for context.
//!
//! `cargo bench` passes `--bench`; without it (`cargo test --all-targets`) this runs a small
//! smoke version on the committed MNIST subset.

#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

use std::path::Path;
use std::time::{Duration, Instant};

use quackmesh::learn::{
    AggregationConfig, Dataset, ModelSpec, Scheme, ServerState, TrainConfig, Weights,
    data::partition, evaluate, train, train::progress_bar,
};
use quackmesh::roles::coordinator::AggregateRecord;
use quackmesh::roles::job::decode_weights;
use quackmesh::roles::jobs::{JobRecord, JobStatus};
use quackmesh::test_utils::learn::{load_full, load_subset};
use quackmesh::test_utils::roles::{Federation, request};

const REFERENCE_ACC: [f64; 5] = [0.941, 0.961, 0.968, 0.972, 0.975];
const REFERENCE_S_PER_ROUND: f64 = 0.5;
/// Images of the job's validation set.
const VALIDATION: usize = 2_000;

struct Run {
    accuracy: Vec<f64>,
    seconds: Vec<f64>,
}

impl Run {
    /// Mean seconds of rounds 2.. (round 1 also pays for job creation and first fetches).
    fn steady(&self) -> f64 {
        let tail = &self.seconds[1..];
        tail.iter().sum::<f64>() / tail.len() as f64
    }
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let full = std::env::args().any(|a| a == "--bench");
    let (train_set, test_set, sizes, rounds) = if full {
        let (train, test) =
            load_full().expect("full MNIST missing: run scripts/fetch-mnist.sh first");
        let sizes: Vec<usize> = std::env::var("QM_CONTRIBUTORS")
            .ok()
            .map(|v| v.split(',').filter_map(|x| x.trim().parse().ok()).collect())
            .unwrap_or_else(|| vec![2, 10]);
        (train, test, sizes, 5usize)
    } else {
        let (train, test) = load_subset();
        (train.take(2_000), test.take(500), vec![2], 2usize)
    };
    println!(
        "federated benchmark: MLP 784-128-10, {} training images split IID, 1 epoch, batch 32, \
         SGD lr 0.05, {rounds} rounds, accuracy on {} test images, {} cores",
        train_set.len(),
        test_set.len(),
        std::thread::available_parallelism().map_or(1, |n| n.get())
    );
    for n in sizes {
        let base = baseline(&train_set, &test_set, n, rounds);
        let sys = system(&train_set, &test_set, n, rounds as u64).await;
        println!("\n== {n} contributors");
        println!("round  system acc  s/round | in-process acc  s/round | reference acc");
        for r in 0..rounds {
            println!(
                "{:>5}  {:>10.4}  {:>7.2} | {:>14.4}  {:>7.2} | {:>13.3}",
                r + 1,
                sys.accuracy[r],
                sys.seconds[r],
                base.accuracy[r],
                base.seconds[r],
                REFERENCE_ACC.get(r).copied().unwrap_or(f64::NAN)
            );
        }
        println!(
            "steady state (rounds 2-{rounds}): system {:.3} s/round, in-process {:.3} s/round, \
             ratio {:.2}x; reference {REFERENCE_S_PER_ROUND} s/round (target <= 0.5 s)",
            sys.steady(),
            base.steady(),
            sys.steady() / base.steady()
        );
        println!(
            "final accuracy: system {:.4}, in-process {:.4}, reference {:.3} (target >= {})",
            sys.accuracy[rounds - 1],
            base.accuracy[rounds - 1],
            REFERENCE_ACC[4],
            if n <= 2 { "0.975" } else { "0.950" }
        );
    }
}

/// The job run by real nodes over the mesh and the chain.
async fn system(train_set: &Dataset, test_set: &Dataset, n: usize, rounds: u64) -> Run {
    let bin = Path::new(env!("CARGO_BIN_EXE_quackmesh"));
    let mut f = Federation::start(bin).await;
    let c1 = f.node("c1", 1, &["--coordinator"]);
    let c2 = f.node("c2", 2, &["--coordinator"]);
    let parts = f.partitions(train_set, n, 42);
    let mut workers = Vec::new();
    for (i, part) in parts.iter().enumerate() {
        let name = format!("w{i}");
        let key = f.fresh_key(&name).await;
        let data = part.display().to_string();
        workers.push(f.node_with_key(&name, &key, &["--contribute", "--data", &data]));
    }
    let r = f.node("r", 5, &[]);
    let mut req = request(rounds, n as u32);
    req.reward = "100".into();
    req.lr_schedule = "constant".into();
    req.round_timeout_secs = 300;
    let started = unix_ms();
    let job = f
        .submit(
            &r.api_url,
            &test_set.take(VALIDATION.min(test_set.len())),
            req,
        )
        .await;
    let rec: JobRecord = f
        .wait_job(&r.api_url, job.job_id, Duration::from_secs(900), |r| {
            r.status == JobStatus::Finished
        })
        .await;
    // The coordinator that finished the job holds the aggregate records with their times.
    let holder = if alloy::primitives::Address::from(rec.holder)
        == quackmesh::test_utils::chain::Devnet::signer(1).address()
    {
        &c1
    } else {
        &c2
    };
    let mut aggs: Vec<AggregateRecord> = f
        .get(
            &holder.api_url,
            &format!("/api/job/{}/aggregates", job.job_id),
        )
        .await;
    aggs.sort_by_key(|a| a.round);
    assert_eq!(aggs.len() as u64, rounds, "{aggs:?}");
    let mut seconds = Vec::new();
    let mut prev = started;
    for a in &aggs {
        seconds.push(a.at_unix_ms.saturating_sub(prev) as f64 / 1000.0);
        prev = a.at_unix_ms;
    }
    drop(workers);
    // Each round's global model, fetched back through the API and evaluated on the full test set.
    let http = reqwest::Client::new();
    let mut accuracy = Vec::new();
    for a in &aggs {
        let bytes = http
            .get(format!("{}/api/blob/{}", holder.api_url, a.model))
            .send()
            .await
            .unwrap()
            .bytes()
            .await
            .unwrap();
        let weights = decode_weights(&bytes).unwrap();
        accuracy.push(
            evaluate(&ModelSpec::mlp(), &weights, test_set)
                .unwrap()
                .accuracy,
        );
    }
    Run { accuracy, seconds }
}

/// The same rounds in this process: no mesh, no chain, no validation of single updates.
fn baseline(train_set: &Dataset, test_set: &Dataset, n: usize, rounds: usize) -> Run {
    let spec = ModelSpec::mlp();
    let cfg = TrainConfig::default();
    let shards: Vec<Dataset> = partition(train_set.labels(), n, Scheme::Iid, 42)
        .unwrap()
        .iter()
        .map(|idx| train_set.subset(idx).unwrap())
        .collect();
    let mut global = Weights::init(&spec, 0);
    let mut server = ServerState::default();
    let (mut accuracy, mut seconds) = (Vec::new(), Vec::new());
    for _ in 0..rounds {
        let t = Instant::now();
        let updates: Vec<(Weights, u64)> = std::thread::scope(|s| {
            let handles: Vec<_> = (0..2)
                .map(|t| {
                    let (shards, global) = (&shards, &global);
                    s.spawn(move || {
                        shards
                            .iter()
                            .enumerate()
                            .filter(|(i, _)| i % 2 == t)
                            .map(|(_, d)| {
                                let bar = progress_bar(false);
                                let (w, _) = train(&spec, global, d, &cfg, &bar).unwrap();
                                (w, d.len() as u64)
                            })
                            .collect::<Vec<_>>()
                    })
                })
                .collect();
            handles
                .into_iter()
                .flat_map(|h| h.join().unwrap())
                .collect()
        });
        let mut acc = AggregationConfig::default().start(&global).unwrap();
        for (w, samples) in &updates {
            acc.add(w, *samples).unwrap();
        }
        global = acc.finish(&mut server).unwrap().weights;
        let report = evaluate(&spec, &global, test_set).unwrap();
        seconds.push(t.elapsed().as_secs_f64());
        accuracy.push(report.accuracy);
    }
    Run { accuracy, seconds }
}

fn unix_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}
