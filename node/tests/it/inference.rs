//! Distributed inference end to end: three `quackmesh node --provide` processes are rented as
//! one cluster; the renter's node runs `quackmesh infer submit` over the 10,000 real MNIST test
//! images with a model trained here. The batch is split across the three machines, each posts
//! its part's output hash and compute time on InferencePool and is paid for it; the joined
//! predictions equal single-process inference exactly, the balances move by exactly what the
//! contract paid and refunded, and a peer outside the cluster is refused when it sends a task.

use std::collections::BTreeMap;

use alloy::primitives::{Address, U256};
use quackmesh::{
    learn::{ModelSpec, Split, TrainConfig, Weights, predict, train},
    mesh::message::{
        MAX_RPC_RESPONSE_BYTES, RPC_VERSION, RpcErrorCode, RpcRequest, RpcResponse,
        decode_versioned, encode_versioned,
    },
    roles::{
        infer_requester::{InferStatus, InferView},
        wire::InferTask,
    },
    test_utils::{
        chain::Devnet,
        learn::load_full,
        mesh::{RawPeer, RawProtocol},
        roles::Federation,
    },
};

use crate::rental::bin;

/// Runs `quackmesh ARGS` (a node API client: no chain flags); returns (ok, stdout, stderr).
pub(crate) async fn api_cli(args: Vec<String>) -> (bool, String, String) {
    tokio::task::spawn_blocking(move || {
        let out = std::process::Command::new(bin())
            .args(&args)
            .env_clear()
            .env("QUACKMESH_LOG", "warn")
            .output()
            .unwrap();
        (
            out.status.success(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    })
    .await
    .unwrap()
}

async fn duck_balance(chain: &quackmesh::chain::Client, who: Address) -> U256 {
    chain.balance(who).await.unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn inference_over_three_rented_machines_matches_one_machine_and_pays_compute() {
    let (train_set, test) = load_full().expect("full MNIST missing: run scripts/fetch-mnist.sh");
    let mut f = Federation::start(bin()).await;
    let renter = f.node("renter", 5, &[]);
    let provide = |price: &'static str| ["--provide", "--price", price, "--withdraw-every", "3600"];
    let p1 = f.node("p1", 1, &provide("36"));
    let p2 = f.node("p2", 2, &provide("18"));
    let p3 = f.node("p3", 3, &provide("72"));
    // The renter rents all three; every machine admits the renter's node before work is sent.
    let cid = crate::cluster::rent_all(&f, &renter, &[&p1, &p2, &p3]).await;

    // A model trained here, and the reference: this process's predictions.
    let spec = ModelSpec::mlp();
    let (weights, _) = train(
        &spec,
        &Weights::init(&spec, 1),
        &train_set.take(10_000),
        &TrainConfig::default(),
        &indicatif::ProgressBar::hidden(),
    )
    .unwrap();
    let expected = predict(&spec, &weights, &test).unwrap();
    let model_file = f.dir.path().join("model.safetensors");
    weights.save(&model_file).unwrap();
    let input_dir = f.dir.path().join("input");
    test.save_dir(&input_dir, Split::Test).unwrap();
    let input_file = input_dir.join("t10k-images-idx3-ubyte");
    let output_file = f.dir.path().join("predictions.txt");

    let chain = f.devnet.reader().await.unwrap();
    let providers: Vec<Address> = (1..=3).map(|a| Devnet::signer(a).address()).collect();
    let requester = Devnet::signer(5).address();
    let mut before = BTreeMap::new();
    for a in providers.iter().chain([&requester]) {
        before.insert(*a, duck_balance(&chain, *a).await);
    }

    let args = [
        "infer",
        "submit",
        "--node",
        &renter.api_url,
        "--model",
        &model_file.display().to_string(),
        "--input",
        &input_file.display().to_string(),
        "--cluster",
        &cid.to_string(),
        "--max-payment",
        "5",
        "--output",
        &output_file.display().to_string(),
        "--timeout",
        "240",
    ];
    let (ok, out, err) = api_cli(args.iter().map(|a| a.to_string()).collect()).await;
    assert!(ok, "infer submit failed: {err}\n{out}");
    let job_id: u64 = out
        .lines()
        .find_map(|l| l.strip_prefix("inference_job: "))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or_else(|| panic!("no job id in {out}"));

    // Exactly the single-process predictions, in order.
    let text = std::fs::read_to_string(&output_file).unwrap();
    let got: Vec<u8> = text.lines().map(|l| l.parse().unwrap()).collect();
    assert_eq!(got.len(), 10_000);
    assert!(got == expected, "distributed predictions differ");

    // The three machines each ran a part (one part each, every one idle at the start).
    let view: InferView = f
        .get(&renter.api_url, &format!("/api/infer/{job_id}"))
        .await;
    assert_eq!(view.status, InferStatus::Finished);
    assert_eq!(view.parts.len(), 3);
    let workers: std::collections::BTreeSet<_> =
        view.parts.iter().filter_map(|p| p.worker.clone()).collect();
    assert_eq!(workers.len(), 3, "{view:?}");

    // On chain: every part posted by a provider of the cluster and paid price x compute time.
    let job = chain.inference_job(U256::from(job_id)).await.unwrap();
    assert!(job.finished);
    let mut paid_to: BTreeMap<Address, U256> = BTreeMap::new();
    let mut paid = U256::ZERO;
    for part in 0..3 {
        let r = chain
            .inference_result(U256::from(job_id), part)
            .await
            .unwrap();
        assert!(providers.contains(&r.provider));
        assert!(r.computeMillis > 0);
        let due = job.pricePerComputeSecond * U256::from(r.computeMillis) / U256::from(1000u64);
        assert_eq!(r.payment, due);
        *paid_to.entry(r.provider).or_default() += r.payment;
        paid += r.payment;
    }
    assert_eq!(job.paid, paid);
    assert_eq!(job.refunded, job.maxPayment - paid);
    // Default price: the dearest machine's hourly price / 3600 (72 DUCK/h = 0.02 DUCK/s).
    assert_eq!(
        job.pricePerComputeSecond,
        U256::from(72u64) * U256::from(10u64).pow(U256::from(18u64)) / U256::from(3600u64)
    );
    for a in &providers {
        let now = duck_balance(&chain, *a).await;
        assert_eq!(now - before[a], paid_to[a], "provider {a}");
    }
    assert_eq!(
        before[&requester] - duck_balance(&chain, requester).await,
        paid
    );

    // A peer outside the cluster sends p1 a task: refused, counted, nothing posted.
    let mut outsider = RawPeer::new();
    let addr = p1.listen[0].clone();
    let peer = outsider.connect(addr).await.unwrap();
    let task = InferTask {
        chain_id: f.devnet.deployment().chain_id,
        job_id,
        cluster_id: cid,
        part: 0,
        parts: 3,
        start: 0,
        count: 3_333,
        model: view.model,
        input: view.input,
    };
    let bytes = encode_versioned(RPC_VERSION, &RpcRequest::InferTask(task), 1 << 20).unwrap();
    let raw = outsider
        .request(peer, RawProtocol::Rpc, bytes)
        .await
        .unwrap();
    let answer: RpcResponse = decode_versioned(&raw, MAX_RPC_RESPONSE_BYTES, RPC_VERSION).unwrap();
    assert!(
        matches!(&answer, RpcResponse::Error(e) if e.code == RpcErrorCode::Denied),
        "{answer:?}"
    );
    let http = reqwest::Client::new();
    let refused = crate::cluster::metric(
        &http,
        &p1,
        "quackmesh_mesh_acl_refusals_total",
        "infer_task",
    )
    .await;
    assert_eq!(refused, 1.0, "the refusal is counted once");
}
