//! Chain-layer benchmark against a local anvil (run with `scripts/bench-chain.sh`).
//!
//! Each figure is printed with its ratio to a baseline measured in the same run:
//! - transactions: alloy's stock path (recommended fillers + wallet, `send_transaction` then
//!   `get_receipt`, polling every 10 ms like our sender) vs [`TxSender`] sequentially without
//!   and with the durable pending-transaction record, and with many requests in flight;
//! - events: one raw `eth_getLogs` + decode over the whole range vs the [`Watcher`] delivering
//!   the same events through its bounded channel and stored cursor;
//! - `Devnet::start` (anvil + deploy + funding), the cost every integration test pays.

#![allow(clippy::unwrap_used, missing_docs)]

use std::time::{Duration, Instant};

use alloy::network::TransactionBuilder;
use alloy::primitives::U256;
use alloy::providers::{Provider, ProviderBuilder};
use alloy::rpc::types::{Filter, TransactionRequest};
use alloy::sol_types::SolCall;
use quackmesh::chain::bindings::DuckToken;
use quackmesh::chain::config::parse_duck;
use quackmesh::chain::{ChainEvent, WatcherConfig};
use quackmesh::store::Db;
use quackmesh::test_utils::chain::Devnet;

const IN_FLIGHT: usize = 32;

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    // `cargo bench` passes --bench; `cargo test --all-targets` runs this as a quick smoke test.
    let full = std::env::args().any(|a| a == "--bench");
    let (txs, n_events, devnet_starts) = if full { (100, 200, 3) } else { (4, 5, 1) };
    let per_tx = |d: Duration| d.as_secs_f64() * 1000.0 / txs as f64;
    let devnet = Devnet::start().await.unwrap();
    let dep = devnet.deployment().clone();
    let to = Devnet::signer(9).address();
    let transfer = TransactionRequest::default()
        .with_to(dep.duck_token)
        .with_input(
            DuckToken::transferCall {
                to,
                value: U256::from(1),
            }
            .abi_encode(),
        );

    // Baseline: alloy's recommended fillers and wallet.
    let url: reqwest::Url = devnet.rpc_url().parse().unwrap();
    let stock = ProviderBuilder::new()
        .wallet(Devnet::signer(1))
        .connect_http(url);
    stock.client().set_poll_interval(Duration::from_millis(10));
    let t = Instant::now();
    for _ in 0..txs {
        let receipt = stock
            .send_transaction(transfer.clone())
            .await
            .unwrap()
            .get_receipt()
            .await
            .unwrap();
        assert!(receipt.status());
    }
    let baseline = t.elapsed();

    let plain = devnet.client(2).await.unwrap();
    let sender = plain.sender().unwrap().clone();
    let t = Instant::now();
    for _ in 0..txs {
        sender.send("transfer", transfer.clone()).await.unwrap();
    }
    let ours = t.elapsed();

    let dir = tempfile::tempdir().unwrap();
    let db = Db::open_dir(dir.path()).unwrap();
    let durable = devnet
        .client_for(Devnet::signer(3), Some(db.clone()))
        .await
        .unwrap();
    let sender = durable.sender().unwrap().clone();
    let t = Instant::now();
    for _ in 0..txs {
        sender.send("transfer", transfer.clone()).await.unwrap();
    }
    let ours_durable = t.elapsed();

    let t = Instant::now();
    let mut batch = Vec::new();
    for chunk in 0..txs / IN_FLIGHT + 1 {
        let n = IN_FLIGHT.min(txs - chunk * IN_FLIGHT);
        for _ in 0..n {
            let s = sender.clone();
            let req = transfer.clone();
            batch.push(tokio::spawn(async move { s.send("transfer", req).await }));
        }
        for h in batch.drain(..) {
            h.await.unwrap().unwrap();
        }
    }
    let ours_parallel = t.elapsed();

    println!("transactions ({txs} DUCK transfers, anvil automine, receipts awaited)");
    println!(
        "  alloy fillers + get_receipt (baseline) {:7.2} ms/tx  1.00x",
        per_tx(baseline)
    );
    for (name, d) in [
        ("TxSender, sequential", ours),
        ("TxSender + redb pending record", ours_durable),
        ("TxSender + redb, 32 in flight", ours_parallel),
    ] {
        println!(
            "  {name:<38} {:7.2} ms/tx  {:.2}x",
            per_tx(d),
            d.as_secs_f64() / baseline.as_secs_f64()
        );
    }

    // Events: the transfers above emitted no events of interest; list 200 machines.
    let provider_client = devnet.client(4).await.unwrap();
    let specs = quackmesh::chain::client::MachineSpecs {
        cpuCores: 4,
        ramMb: 8192,
        gpuModel: String::new(),
        gpuCount: 0,
        peerId: vec![1u8; 38].into(),
        multiaddr: "/ip4/127.0.0.1/tcp/4001".into(),
    };
    for _ in 0..n_events {
        provider_client
            .list_machine(specs.clone(), parse_duck("1").unwrap())
            .await
            .unwrap();
    }
    let head = devnet.provider().get_block_number().await.unwrap();
    let t = Instant::now();
    let logs = devnet
        .provider()
        .get_logs(
            &Filter::new()
                .address(dep.compute_marketplace)
                .from_block(dep.deploy_block)
                .to_block(head),
        )
        .await
        .unwrap();
    let decoded = logs
        .iter()
        .filter_map(|l| ChainEvent::decode(&dep, l).ok().flatten())
        .count();
    let raw = t.elapsed();
    assert_eq!(decoded, n_events);

    let reader = devnet.reader().await.unwrap();
    let wdir = tempfile::tempdir().unwrap();
    let wdb = Db::open_dir(wdir.path()).unwrap();
    let t = Instant::now();
    let (mut stream, _poller) = reader
        .watch(
            wdb,
            WatcherConfig {
                name: "bench".into(),
                from_block: dep.deploy_block,
                confirmations: 0,
                poll_interval: Duration::from_millis(10),
                max_range: 2000,
                capacity: 256,
                retry: Default::default(),
            },
        )
        .unwrap();
    let mut got = 0;
    while got < n_events {
        stream.next().await.unwrap().unwrap();
        got += 1;
    }
    stream.commit().unwrap();
    let watched = t.elapsed();

    let wdir2 = tempfile::tempdir().unwrap();
    let t = Instant::now();
    let (mut stream, _poller2) = reader
        .watch(
            Db::open_dir(wdir2.path()).unwrap(),
            WatcherConfig {
                name: "bench-batch".into(),
                from_block: dep.deploy_block,
                confirmations: 0,
                poll_interval: Duration::from_millis(10),
                max_range: 2000,
                capacity: 256,
                retry: Default::default(),
            },
        )
        .unwrap();
    let mut got = 0;
    while got < n_events {
        got += stream.next_batch(256).await.unwrap().len();
    }
    stream.commit().unwrap();
    let batched = t.elapsed();
    println!("events ({n_events} MachineListed over {head} blocks)");
    println!(
        "  eth_getLogs + decode, no cursor (baseline) {:7.2} ms  1.00x",
        raw.as_secs_f64() * 1000.0
    );
    println!(
        "  Watcher, committing the cursor per event   {:7.2} ms  {:.2}x  ({:.0} events/s)",
        watched.as_secs_f64() * 1000.0,
        watched.as_secs_f64() / raw.as_secs_f64(),
        n_events as f64 / watched.as_secs_f64()
    );
    println!(
        "  Watcher, next_batch(256), one commit/batch {:7.2} ms  {:.2}x  ({:.0} events/s)",
        batched.as_secs_f64() * 1000.0,
        batched.as_secs_f64() / raw.as_secs_f64(),
        n_events as f64 / batched.as_secs_f64()
    );

    drop(devnet);
    let mut starts = Vec::new();
    for _ in 0..devnet_starts {
        let t = Instant::now();
        let d = Devnet::start().await.unwrap();
        starts.push(t.elapsed());
        drop(d);
    }
    starts.sort();
    let t = Instant::now();
    drop(Devnet::start_bare().await.unwrap());
    let bare = t.elapsed();
    println!("devnet");
    println!(
        "  bare anvil start (baseline)                {:7.1} ms  1.00x",
        bare.as_secs_f64() * 1000.0
    );
    println!(
        "  Devnet::start (deploy 4 + fund 10), median {:7.1} ms  {:.2}x",
        starts[devnet_starts / 2].as_secs_f64() * 1000.0,
        starts[devnet_starts / 2].as_secs_f64() / bare.as_secs_f64()
    );
}
