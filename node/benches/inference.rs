//! Distributed inference throughput (issue 6; run with `scripts/bench-inference.sh`).
//!
//! The 10,000 real MNIST test images through the MLP and the CNN, split across a cluster of 1,
//! 2 and 3 rented machines (`quackmesh node --provide` processes on this machine, a real anvil
//! devnet, InferencePool jobs from the renter's node), against single-process candle inference
//! of the same model and batch measured in the same run. Images per second count from the
//! submission (`POST /api/infer`) until every part is in at the renter, so they include the
//! mesh (task, fetches of model and input, output) and the chain (a `postResult` per part).
//! The mesh's overhead per request is the wall time beyond the busiest machine's compute time,
//! per part.
//!
//! Every node computes with one thread (as in production, one part at a time per machine);
//! on a machine with fewer cores than workers the workers share them, and the scaling shows it.
//!
//! `cargo bench` passes `--bench`; without it (`cargo test --all-targets`) this runs a small
//! smoke version on the committed MNIST subset.

#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

use std::{
    collections::BTreeMap,
    path::Path,
    time::{Duration, Instant},
};

use alloy::primitives::U256;
use quackmesh::{
    api::{blob::PutResponse, market::ProviderView},
    learn::{ModelSpec, Split, TrainConfig, Weights, predict, train},
    roles::infer_requester::{InferStatus, InferView},
    test_utils::{
        learn::{load_full, load_subset},
        mesh::NodeProcess,
        roles::Federation,
    },
};

async fn machine_id(f: &Federation, p: &NodeProcess) -> u64 {
    for _ in 0..240 {
        let v: ProviderView = f.get(&p.api_url, "/api/provider").await;
        if let Some(l) = v.listing.filter(|l| l.listed) {
            return l.machine_id;
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    panic!("provider never listed");
}

async fn put(http: &reqwest::Client, api: &str, bytes: Vec<u8>) -> PutResponse {
    http.post(format!("{api}/api/blob"))
        .body(bytes)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap()
}

struct Run {
    /// Single-process inference of the same batch, measured just before (best of 2).
    baseline: f64,
    seconds: f64,
    overhead_ms_per_part: f64,
    parts: usize,
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let full = std::env::args().any(|a| a == "--bench");
    let (train_set, test) = if full {
        load_full().expect("full MNIST missing: run scripts/fetch-mnist.sh first")
    } else {
        let (t, v) = load_subset();
        (t, v.take(500))
    };
    let models: Vec<(&str, ModelSpec)> = vec![("mlp", ModelSpec::mlp()), ("cnn", ModelSpec::cnn())];
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(120))
        .build()
        .unwrap();

    // Models trained briefly here (throughput does not depend on the values).
    let mut weights = BTreeMap::new();
    for (name, spec) in &models {
        let (w, _) = train(
            spec,
            &Weights::init(spec, 1),
            &train_set.take(2_000),
            &TrainConfig::default(),
            &indicatif::ProgressBar::hidden(),
        )
        .unwrap();
        weights.insert(*name, w);
    }

    let bin = Path::new(env!("CARGO_BIN_EXE_quackmesh"));
    let mut f = Federation::start(bin).await;
    let renter = f.node("renter", 5, &[]);
    let provide = ["--provide", "--price", "36", "--withdraw-every", "3600"];
    let providers: Vec<NodeProcess> = (1..=3)
        .map(|a| f.node(&format!("p{a}"), a, &provide))
        .collect();
    let mut ids = Vec::new();
    for p in &providers {
        ids.push(U256::from(machine_id(&f, p).await));
    }
    let chain = f.devnet.client(5).await.unwrap();

    let input_dir = f.dir.path().join("input");
    test.save_dir(&input_dir, Split::Test).unwrap();
    let input = std::fs::read(input_dir.join("t10k-images-idx3-ubyte")).unwrap();
    let input_blob = put(&http, &renter.api_url, input).await.id;
    let mut model_blobs = BTreeMap::new();
    for (name, w) in &weights {
        model_blobs.insert(
            *name,
            put(&http, &renter.api_url, w.to_safetensors_bytes().unwrap())
                .await
                .id,
        );
    }

    let mut runs: BTreeMap<(&str, usize), Run> = BTreeMap::new();
    for workers in 1..=3usize {
        let sent = chain.rent_cluster(&ids[..workers], 2).await.unwrap();
        let (cluster, rentals) = sent.value;
        let cid: u64 = cluster.try_into().unwrap();
        // The machines admit the renter's node once its claim is in.
        for p in &providers[..workers] {
            for _ in 0..240 {
                let r = http
                    .get(format!("{}/api/clusters/{cid}/mesh", p.api_url))
                    .send()
                    .await
                    .unwrap();
                let ok = r.status().is_success()
                    && r.json::<serde_json::Value>().await.unwrap()["members"]
                        .as_array()
                        .is_some_and(|m| m.iter().any(|x| x == &renter.peer_id.to_string()));
                if ok {
                    break;
                }
                tokio::time::sleep(Duration::from_millis(250)).await;
            }
        }
        for (name, spec) in &models {
            // The baseline right before each run, so both see the same machine load.
            let mut baseline = f64::MAX;
            for _ in 0..2 {
                let t0 = Instant::now();
                let p = predict(spec, &weights[name], &test).unwrap();
                baseline = baseline.min(t0.elapsed().as_secs_f64());
                assert_eq!(p.len(), test.len());
            }
            let body = serde_json::json!({
                "model": model_blobs[name],
                "input_blob": input_blob,
                "cluster_id": cid,
                "max_payment": "100",
            });
            let t0 = Instant::now();
            let resp = http
                .post(format!("{}/api/infer", renter.api_url))
                .json(&body)
                .send()
                .await
                .unwrap();
            assert!(resp.status().is_success(), "{}", resp.text().await.unwrap());
            let job: serde_json::Value = resp.json().await.unwrap();
            let job_id = job["job_id"].as_u64().unwrap();
            let view = loop {
                let v: InferView = f
                    .get(&renter.api_url, &format!("/api/infer/{job_id}"))
                    .await;
                if v.status != InferStatus::Running {
                    break v;
                }
                assert!(t0.elapsed() < Duration::from_secs(600), "inference stuck");
                tokio::time::sleep(Duration::from_millis(20)).await;
            };
            assert_eq!(view.status, InferStatus::Finished, "{view:?}");
            let elapsed_ms = view.elapsed_ms.unwrap() as f64;
            let mut busy: BTreeMap<String, u64> = BTreeMap::new();
            for p in &view.parts {
                *busy.entry(p.worker.clone().unwrap()).or_default() += p.compute_ms.unwrap();
            }
            let critical = *busy.values().max().unwrap() as f64;
            // The parts a machine ran one after another each paid the overhead.
            let serial_parts = view.parts.len().div_ceil(busy.len()) as f64;
            runs.insert(
                (*name, workers),
                Run {
                    baseline,
                    seconds: elapsed_ms / 1000.0,
                    overhead_ms_per_part: (elapsed_ms - critical).max(0.0) / serial_parts,
                    parts: view.parts.len(),
                },
            );
            let out: String = http
                .get(format!("{}/api/infer/{job_id}/output", renter.api_url))
                .send()
                .await
                .unwrap()
                .text()
                .await
                .unwrap();
            let expected = predict(spec, &weights[name], &test).unwrap();
            let got: Vec<u8> = out.lines().map(|l| l.parse().unwrap()).collect();
            assert!(got == expected, "{name}: predictions differ");
        }
        for r in rentals {
            chain.end_rental(r).await.unwrap();
        }
    }

    let n = test.len() as f64;
    println!();
    println!(
        "distributed inference, {} real MNIST test images, 1 compute thread per process ({} cores here)",
        test.len(),
        std::thread::available_parallelism().map_or(0, |c| c.get())
    );
    println!(
        "{:<5} {:>8} {:>6} {:>10} {:>10} {:>12} {:>16}",
        "model", "machines", "parts", "seconds", "images/s", "vs 1 process", "mesh ms / part"
    );
    for (name, _) in &models {
        for workers in 1..=3 {
            let r = &runs[&(*name, workers)];
            let b = r.baseline;
            println!(
                "{:<5} {:>8} {:>6} {:>10.3} {:>10.0} {:>12} {:>16}",
                name,
                "1 proc",
                "-",
                b,
                n / b,
                "1.00x",
                "-"
            );
            println!(
                "{:<5} {:>8} {:>6} {:>10.3} {:>10.0} {:>11.2}x {:>16.0}",
                name,
                workers,
                r.parts,
                r.seconds,
                n / r.seconds,
                b / r.seconds,
                r.overhead_ms_per_part
            );
        }
    }
}
