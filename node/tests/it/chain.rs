//! Integration tests of the chain area: the whole story through the Rust client against
//! a real anvil, plus the sender's and watcher's restart guarantees, revert decoding, deploy
//! safety, the committed artifacts, and the CLI.

// Tests may unwrap (COMMON.md); clippy only exempts #[test] fns, not their helpers.
#![allow(clippy::unwrap_used)]

use std::time::Duration;

use alloy::network::{EthereumWallet, NetworkTransactionBuilder, TransactionBuilder};
use alloy::primitives::{Address, B256, U256, keccak256};
use alloy::providers::Provider;
use alloy::rpc::types::TransactionRequest;
use alloy::sol_types::SolCall;
use quackmesh::chain::attest::Attestation;
use quackmesh::chain::bindings::{ComputeMarketplace, DuckToken, InferencePool, TrainingPool};
use quackmesh::chain::client::{JobSpec, MachineSpecs, REWARD_PER_UPDATE};
use quackmesh::chain::config::parse_duck;
use quackmesh::chain::deploy::{DeployOptions, deploy};
use quackmesh::chain::tx::{PENDING_TXS, PendingTx, pending_transactions};
use quackmesh::chain::{ChainEvent, Client, Error, EventStream, Networks, WatcherConfig};
use quackmesh::store::{Db, Tree};
use quackmesh::test_utils::chain::Devnet;

fn duck(s: &str) -> U256 {
    parse_duck(s).unwrap()
}

fn specs(i: u8) -> MachineSpecs {
    MachineSpecs {
        cpuCores: 8,
        ramMb: 32_768,
        gpuModel: "RTX 4090".into(),
        gpuCount: 1,
        // An Ed25519 PeerId: multihash identity (0x00, 0x24) + protobuf key header + 32 bytes.
        peerId: [&[0x00, 0x24, 0x08, 0x01, 0x12, 0x20][..], &[i; 32]]
            .concat()
            .into(),
        multiaddr: format!("/ip4/127.0.0.1/tcp/{}", 4000 + u16::from(i)),
    }
}

fn watcher_config(name: &str, from_block: u64) -> WatcherConfig {
    WatcherConfig {
        name: name.into(),
        from_block,
        confirmations: 0,
        poll_interval: Duration::from_millis(20),
        max_range: 5,
        capacity: 16,
        retry: quackmesh::chain::retry::RetryPolicy::default(),
    }
}

/// Reads events until none arrives for `quiet`.
async fn drain(stream: &mut EventStream, quiet: Duration) -> Vec<ChainEvent> {
    let mut out = Vec::new();
    for _ in 0..1000 {
        match stream.next_timeout(quiet).await.unwrap() {
            Some(ev) => out.push(ev.event),
            None => break,
        }
    }
    out
}

async fn block_time(client: &Client, block: Option<u64>) -> u64 {
    client
        .provider()
        .get_block_by_number(block.unwrap().into())
        .await
        .unwrap()
        .unwrap()
        .header
        .timestamp
}

fn job_spec(deadline: u64) -> JobSpec {
    JobSpec {
        modelHash: B256::from(quackmesh::hash::Hash32::of(b"initial weights")),
        validationHash: keccak256("validation set"),
        specHash: keccak256("job spec"),
        specUri: String::new(),
        totalRewardPool: duck("1000"),
        rewardPerUpdate: duck("10"),
        rewardPerRound: U256::ZERO,
        rounds: 3,
        maxUpdatesPerRound: 4,
        minAccuracyBps: 7_000,
        rewardMode: REWARD_PER_UPDATE,
        leaseSeconds: 10,
        claimWindow: 86_400,
        deadline,
        clusterId: U256::ZERO,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn story_rent_train_and_infer_through_the_client() {
    let devnet = Devnet::start().await.unwrap();
    let dep = devnet.deployment().clone();
    let dir = tempfile::tempdir().unwrap();
    let db = Db::open_dir(dir.path()).unwrap();
    let reader = devnet.reader().await.unwrap();
    let (mut events, _poller) = reader
        .watch(db.clone(), watcher_config("story", dep.deploy_block))
        .unwrap();
    // Events before this point: the devnet's funding (FaucetDripped is not used there).
    let price = duck("36"); // 0.01 DUCK per second
    let providers = [
        devnet.client(1).await.unwrap(),
        devnet.client(2).await.unwrap(),
        devnet.client(3).await.unwrap(),
    ];
    let renter = devnet.client(4).await.unwrap();
    let coord_a = devnet.client(5).await.unwrap();
    let coord_b = devnet.client(6).await.unwrap();
    let contributor = devnet.client(7).await.unwrap();
    let addr = |c: &Client| c.address().unwrap();
    let mut gas = Vec::new();

    // 1. Three providers list their machines.
    let mut machine_ids = Vec::new();
    for (i, p) in providers.iter().enumerate() {
        let sent = p.list_machine(specs(i as u8 + 1), price).await.unwrap();
        gas.push(("listMachine", sent.gas_used()));
        machine_ids.push(sent.value);
    }
    assert_eq!(
        machine_ids,
        vec![U256::from(1), U256::from(2), U256::from(3)]
    );
    let listed = reader.machines().await.unwrap();
    assert_eq!(listed.len(), 3);
    assert!(listed.iter().all(|(_, m)| m.listed));
    assert_eq!(listed[1].1.provider, addr(&providers[1]));
    assert_eq!(listed[1].1.specs.peerId, specs(2).peerId);

    // 2. The renter rents all three as one cluster for 2 hours.
    let renter_before = reader.balance(addr(&renter)).await.unwrap();
    let sent = renter.rent_cluster(&machine_ids, 2).await.unwrap();
    gas.push(("rentCluster(3)", sent.gas_used()));
    let (cluster_id, rental_ids) = sent.value;
    assert_eq!(cluster_id, U256::from(1));
    assert_eq!(rental_ids.len(), 3);
    let escrow = price * U256::from(2 * 3);
    assert_eq!(
        reader.balance(addr(&renter)).await.unwrap(),
        renter_before - escrow
    );
    assert_eq!(
        reader.balance(dep.compute_marketplace).await.unwrap(),
        escrow
    );
    let members = reader.cluster_members(cluster_id).await.unwrap();
    assert!(members.iter().all(|m| m.active));
    assert_eq!(members[2].peerId, specs(3).peerId);
    let cluster = reader.cluster(cluster_id).await.unwrap();
    assert_eq!(cluster.renter, addr(&renter));
    assert_eq!(cluster.machine_ids, machine_ids);
    // A rented machine cannot be rented again.
    let err = renter.rent_machine(machine_ids[0], 1).await.unwrap_err();
    assert!(
        err.decode_revert::<ComputeMarketplace::ComputeMarketplaceMachineRented>()
            .is_some(),
        "{err}"
    );

    // 3. Half an hour later provider 1 withdraws exactly what accrued per second.
    devnet.increase_time(1800).await.unwrap();
    let p1_before = reader.balance(addr(&providers[0])).await.unwrap();
    let sent = providers[0].withdraw(rental_ids[0]).await.unwrap();
    gas.push(("withdraw", sent.gas_used()));
    let rental = reader.rental(rental_ids[0]).await.unwrap();
    let now = block_time(&reader, sent.receipt.block_number).await;
    let expected = price * U256::from(now - rental.start) / U256::from(3600);
    assert_eq!(sent.value, expected);
    assert!(
        sent.value >= duck("18"),
        "at least half an hour: {}",
        sent.value
    );
    assert_eq!(
        reader.balance(addr(&providers[0])).await.unwrap(),
        p1_before + expected
    );

    // A single rental of a fourth machine, ended early: the renter gets the unused part back.
    let m4 = providers[0]
        .list_machine(specs(4), price)
        .await
        .unwrap()
        .value;
    let sent = renter.rent_machine(m4, 1).await.unwrap();
    gas.push(("rentMachine", sent.gas_used()));
    let r4 = sent.value;
    devnet.increase_time(900).await.unwrap();
    let before = reader.balance(addr(&renter)).await.unwrap();
    let ended = renter.end_rental(r4).await.unwrap();
    let rental4 = reader.rental(r4).await.unwrap();
    let used = price * U256::from(rental4.endedAt - rental4.start) / U256::from(3600);
    assert_eq!(ended.value, price - used);
    assert_eq!(
        reader.balance(addr(&renter)).await.unwrap(),
        before + ended.value
    );
    assert!(!reader.is_rental_active(r4).await.unwrap());
    assert_eq!(providers[0].withdraw(r4).await.unwrap().value, used);

    // 4. The requester creates a training job and deposits its pool.
    let deadline = reader.block_timestamp().await.unwrap() + 7 * 86_400;
    let requester_before = reader.balance(addr(&renter)).await.unwrap();
    let sent = renter
        .create_training_job(job_spec(deadline))
        .await
        .unwrap();
    gas.push(("createTrainingJob", sent.gas_used()));
    let job_id = sent.value;
    assert_eq!(
        reader.balance(addr(&renter)).await.unwrap(),
        requester_before - duck("1000")
    );
    let job = reader.job(job_id).await.unwrap();
    assert_eq!(job.requester, addr(&renter));
    assert_eq!(job.spec.rounds, 3);

    // 5. Coordinator A registers with its stake and claims term 1.
    let a_before = reader.balance(addr(&coord_a)).await.unwrap();
    coord_a
        .register_coordinator(specs(5).peerId.to_vec())
        .await
        .unwrap();
    assert_eq!(
        reader.balance(addr(&coord_a)).await.unwrap(),
        a_before - dep.min_stake
    );
    let sent = coord_a.claim_term(job_id).await.unwrap();
    gas.push(("claimTerm", sent.gas_used()));
    assert_eq!(sent.value, 1);
    let term = reader.current_term(job_id).await.unwrap();
    assert_eq!(
        (term.term, term.holder, term.live),
        (1, addr(&coord_a), true)
    );

    // 6. A attests a contributor's update; the contributor submits it and is paid.
    let domain = reader.attestation_domain();
    let update1 = B256::from(quackmesh::hash::Hash32::of(
        b"update from contributor, round 1",
    ));
    let att = Attestation::new(job_id, 1, update1, addr(&contributor), 8_100, 1);
    assert_eq!(
        reader.attestation_digest(&att).await.unwrap(),
        att.digest(&domain),
        "local EIP-712 digest equals the contract's"
    );
    let sig = att.sign(&devnet_key(5), &domain).unwrap();
    assert!(att.verify(&domain, &sig, addr(&coord_a)));
    assert!(
        reader
            .verify_proof(
                job_id,
                1,
                update1,
                addr(&contributor),
                8_100,
                1,
                sig.clone()
            )
            .await
            .unwrap()
    );
    let c_before = reader.balance(addr(&contributor)).await.unwrap();
    let sent = contributor
        .submit_update(job_id, 1, update1, 8_100, 1, sig.clone())
        .await
        .unwrap();
    gas.push(("submitUpdate", sent.gas_used()));
    assert_eq!(sent.value, duck("10"));
    assert_eq!(
        reader.balance(addr(&contributor)).await.unwrap(),
        c_before + duck("10")
    );
    // A replay is refused.
    let err = contributor
        .submit_update(job_id, 1, update1, 8_100, 1, sig)
        .await
        .unwrap_err();
    assert!(
        err.decode_revert::<TrainingPool::TrainingPoolUpdateAlreadyRewarded>()
            .is_some(),
        "{err}"
    );
    // Accuracy under the threshold is refused even when signed.
    let low = Attestation::new(job_id, 1, keccak256("low"), addr(&contributor), 6_000, 1);
    let low_sig = low.sign(&devnet_key(5), &domain).unwrap();
    let err = contributor
        .submit_update(job_id, 1, keccak256("low"), 6_000, 1, low_sig)
        .await
        .unwrap_err();
    assert!(
        err.decode_revert::<TrainingPool::TrainingPoolAccuracyBelowMinimum>()
            .is_some(),
        "{err}"
    );

    // 7. A records round 1.
    let sent = coord_a
        .record_round(job_id, 1, keccak256("global model 1"), 8_300)
        .await
        .unwrap();
    gas.push(("recordRound", sent.gas_used()));
    assert_eq!(reader.round(job_id, 1).await.unwrap().accuracyBps, 8_300);

    // 8. A goes silent; after the lease runs out B claims term 2 and A is fenced off.
    let b = coord_b;
    b.register_coordinator(specs(6).peerId.to_vec())
        .await
        .unwrap();
    let err = b.claim_term(job_id).await.unwrap_err();
    assert!(
        err.decode_revert::<TrainingPool::TrainingPoolLeaseActive>()
            .is_some(),
        "{err}"
    );
    devnet.increase_time(11).await.unwrap();
    assert_eq!(b.claim_term(job_id).await.unwrap().value, 2);
    let err = coord_a
        .record_round(job_id, 2, keccak256("stale"), 9_000)
        .await
        .unwrap_err();
    assert!(
        err.decode_revert::<TrainingPool::TrainingPoolNotTermHolder>()
            .is_some(),
        "{err}"
    );
    let update2 = keccak256("update round 2");
    let stale = Attestation::new(job_id, 2, update2, addr(&contributor), 8_800, 1);
    let stale_sig = stale.sign(&devnet_key(5), &domain).unwrap();
    let err = contributor
        .submit_update(job_id, 2, update2, 8_800, 1, stale_sig)
        .await
        .unwrap_err();
    let stale_err = err
        .decode_revert::<TrainingPool::TrainingPoolStaleTerm>()
        .unwrap_or_else(|| panic!("{err}"));
    assert_eq!((stale_err.term, stale_err.currentTerm), (1, 2));
    // The contributor asks B to re-attest for term 2.
    let fresh = Attestation::new(job_id, 2, update2, addr(&contributor), 8_800, 2);
    let fresh_sig = fresh.sign(&devnet_key(6), &domain).unwrap();
    assert_eq!(
        contributor
            .submit_update(job_id, 2, update2, 8_800, 2, fresh_sig)
            .await
            .unwrap()
            .value,
        duck("10")
    );

    // 9. B records rounds 2 and 3; the job completes.
    b.record_round(job_id, 2, keccak256("global model 2"), 8_900)
        .await
        .unwrap();
    b.record_round(job_id, 3, keccak256("global model 3"), 9_200)
        .await
        .unwrap();
    let job = reader.job(job_id).await.unwrap();
    assert!(job.completedAt > 0);
    assert_eq!(job.paid, duck("20"));

    // 10. Finishing waits for the claim window, then refunds the unspent pool.
    let err = renter.finish_job(job_id).await.unwrap_err();
    assert!(
        err.decode_revert::<TrainingPool::TrainingPoolCannotFinish>()
            .is_some(),
        "{err}"
    );
    devnet.increase_time(86_401).await.unwrap();
    let before = reader.balance(addr(&renter)).await.unwrap();
    let sent = renter.finish_job(job_id).await.unwrap();
    assert_eq!(sent.value, duck("980"));
    assert_eq!(
        reader.balance(addr(&renter)).await.unwrap(),
        before + duck("980")
    );

    // 11. A, replaced, takes its stake back.
    let a_before = reader.balance(addr(&coord_a)).await.unwrap();
    assert_eq!(
        coord_a.unregister_coordinator().await.unwrap().value,
        dep.min_stake
    );
    assert_eq!(
        reader.balance(addr(&coord_a)).await.unwrap(),
        a_before + dep.min_stake
    );

    // 12. Inference on the cluster: providers are paid per compute second, the rest refunded.
    // The rentals ran out during the claim window: rent the cluster again for an hour.
    let (cluster2, _) = renter.rent_cluster(&machine_ids, 1).await.unwrap().value;
    let before = reader.balance(addr(&renter)).await.unwrap();
    let inf = renter
        .create_inference_job(
            keccak256("model"),
            keccak256("batch"),
            cluster2,
            2,
            duck("1"),
            duck("100"),
        )
        .await
        .unwrap()
        .value;
    assert_eq!(
        reader.balance(addr(&renter)).await.unwrap(),
        before - duck("100")
    );
    let outsider = contributor
        .post_result(inf, 0, keccak256("forged"), 1_000)
        .await
        .unwrap_err();
    assert!(
        outsider
            .decode_revert::<InferencePool::InferencePoolNotClusterProvider>()
            .is_some(),
        "{outsider}"
    );
    let p2_before = reader.balance(addr(&providers[1])).await.unwrap();
    let sent = providers[1]
        .post_result(inf, 0, keccak256("result 0"), 1_500)
        .await
        .unwrap();
    gas.push(("postResult", sent.gas_used()));
    assert_eq!(sent.value, duck("1.5"));
    assert_eq!(
        reader.balance(addr(&providers[1])).await.unwrap(),
        p2_before + duck("1.5")
    );
    assert_eq!(
        providers[2]
            .post_result(inf, 1, keccak256("result 1"), 2_500)
            .await
            .unwrap()
            .value,
        duck("2.5")
    );
    let before = reader.balance(addr(&renter)).await.unwrap();
    assert_eq!(
        renter.finish_inference_job(inf).await.unwrap().value,
        duck("96")
    );
    assert_eq!(
        reader.balance(addr(&renter)).await.unwrap(),
        before + duck("96")
    );
    assert_eq!(
        reader.balance(dep.inference_pool).await.unwrap(),
        U256::ZERO
    );
    assert_eq!(
        reader.balance(dep.training_pool).await.unwrap(),
        dep.min_stake,
        "only B's stake remains in the training pool"
    );

    // 13. The watcher saw every step, in order.
    let seen: Vec<&str> = drain(&mut events, Duration::from_millis(500))
        .await
        .iter()
        .map(ChainEvent::name)
        .collect::<Vec<_>>();
    let expected = [
        "MachineListed",
        "MachineListed",
        "MachineListed",
        "MachineRented",
        "MachineRented",
        "MachineRented",
        "ClusterFormed",
        "RentWithdrawn",
        "MachineListed",
        "MachineRented",
        "RentalEnded",
        "RentWithdrawn",
        "TrainingJobCreated",
        "CoordinatorRegistered",
        "TermClaimed",
        "RewardDistributed",
        "RoundRecorded",
        "CoordinatorRegistered",
        "TermClaimed",
        "RewardDistributed",
        "RoundRecorded",
        "RoundRecorded",
        "TrainingJobCompleted",
        "TrainingJobFinished",
        "CoordinatorUnregistered",
        "MachineRented",
        "MachineRented",
        "MachineRented",
        "ClusterFormed",
        "InferenceJobCreated",
        "ResultPosted",
        "ComputePaid",
        "ResultPosted",
        "ComputePaid",
        "InferenceJobFinished",
    ];
    assert_eq!(seen, expected);

    for (name, used) in gas {
        eprintln!("gas (anvil receipt) {name}: {used}");
    }
}

fn devnet_key(i: usize) -> alloy::signers::local::PrivateKeySigner {
    Devnet::signer(i)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn watcher_resumes_from_its_stored_cursor_after_a_restart() {
    let devnet = Devnet::start().await.unwrap();
    let provider = devnet.client(1).await.unwrap();
    let reader = devnet.reader().await.unwrap();
    let from = devnet.deployment().deploy_block;
    let dir = tempfile::tempdir().unwrap();
    let db = Db::open_dir(dir.path()).unwrap();
    let listed = |ev: &ChainEvent| match ev {
        ChainEvent::MachineListed(e) => e.machineId.to::<u64>(),
        other => panic!("unexpected {}", other.name()),
    };
    for i in 1..=3 {
        provider.list_machine(specs(i), duck("1")).await.unwrap();
    }

    // First run: process two events, commit, stop.
    {
        let (mut stream, poller) = reader.watch(db.clone(), watcher_config("w", from)).unwrap();
        let a = stream.next().await.unwrap().unwrap();
        let b = stream.next().await.unwrap().unwrap();
        assert_eq!((listed(&a.event), listed(&b.event)), (1, 2));
        stream.commit().unwrap();
        drop(stream);
        tokio::time::timeout(Duration::from_secs(5), poller)
            .await
            .unwrap()
            .unwrap();
    }
    // While the node is down, two more machines are listed.
    for i in 4..=5 {
        provider.list_machine(specs(i), duck("1")).await.unwrap();
    }
    // Second run: machine 3 (listed before the stop but never processed), then 4 and 5.
    let third;
    {
        let (mut stream, _poller) = reader.watch(db.clone(), watcher_config("w", from)).unwrap();
        let mut got = Vec::new();
        for _ in 0..3 {
            let ev = stream
                .next_timeout(Duration::from_secs(5))
                .await
                .unwrap()
                .unwrap();
            got.push(listed(&ev.event));
        }
        assert_eq!(got, vec![3, 4, 5], "no event missed, none replayed");
        third = stream.cursor();
        // Crash while processing machine 5: it was returned but never marked processed.
    }
    let (mut stream, _poller) = reader.watch(db.clone(), watcher_config("w", from)).unwrap();
    assert!(stream.cursor() >= third);
    let again: Vec<u64> = drain(&mut stream, Duration::from_millis(400))
        .await
        .iter()
        .map(listed)
        .collect();
    assert_eq!(again, vec![5], "only the unprocessed event comes back");

    // commit_with stores the consumer's write and the cursor atomically.
    const SEEN: Tree<u64> = Tree::new("test.seen");
    provider.list_machine(specs(6), duck("1")).await.unwrap();
    let ev = stream
        .next_timeout(Duration::from_secs(5))
        .await
        .unwrap()
        .unwrap();
    let id = listed(&ev.event);
    stream
        .commit_with(|batch| batch.put(SEEN, b"last", &id))
        .unwrap();
    assert_eq!(db.get(SEEN, b"last").unwrap(), Some(6));
    drop(stream);
    let (mut stream, _poller) = reader.watch(db.clone(), watcher_config("w", from)).unwrap();
    assert!(
        stream
            .next_timeout(Duration::from_millis(400))
            .await
            .unwrap()
            .is_none()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn watcher_waits_for_confirmations() {
    let devnet = Devnet::start().await.unwrap();
    let reader = devnet.reader().await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let db = Db::open_dir(dir.path()).unwrap();
    let mut cfg = watcher_config("confirmed", devnet.deployment().deploy_block);
    cfg.confirmations = 2;
    let (mut stream, _poller) = reader.watch(db, cfg).unwrap();
    devnet
        .client(1)
        .await
        .unwrap()
        .list_machine(specs(1), duck("1"))
        .await
        .unwrap();
    assert!(
        stream
            .next_timeout(Duration::from_millis(300))
            .await
            .unwrap()
            .is_none(),
        "not reported at 0 confirmations"
    );
    reader.mine().await.unwrap();
    reader.mine().await.unwrap();
    let ev = stream
        .next_timeout(Duration::from_secs(5))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(ev.event.name(), "MachineListed");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tx_sender_rebroadcasts_a_recorded_transaction_after_a_crash() {
    let devnet = Devnet::start().await.unwrap();
    let dep = devnet.deployment().clone();
    let dir = tempfile::tempdir().unwrap();
    let db = Db::open_dir(dir.path()).unwrap();
    let signer = Devnet::signer(8);
    let me = signer.address();
    let to = Devnet::signer(9).address();
    let provider = devnet.provider();
    let reader = devnet.reader().await.unwrap();
    let before = reader.balance(to).await.unwrap();

    // Simulate a crash after recording a signed transaction but before broadcasting it.
    let nonce = provider.get_transaction_count(me).await.unwrap();
    let data = DuckToken::transferCall {
        to,
        value: duck("5"),
    }
    .abi_encode();
    let fees = provider.estimate_eip1559_fees().await.unwrap();
    let envelope = TransactionRequest::default()
        .with_from(me)
        .with_to(dep.duck_token)
        .with_input(data)
        .with_nonce(nonce)
        .with_chain_id(31337)
        .with_gas_limit(100_000)
        .with_max_fee_per_gas(fees.max_fee_per_gas)
        .with_max_priority_fee_per_gas(fees.max_priority_fee_per_gas)
        .build(&EthereumWallet::from(signer.clone()))
        .await
        .unwrap();
    use alloy::eips::eip2718::Encodable2718;
    let mut key = me.to_vec();
    key.extend_from_slice(&nonce.to_be_bytes());
    db.put(
        PENDING_TXS,
        &key,
        &PendingTx {
            nonce,
            hash: envelope.tx_hash().to_vec(),
            label: "transfer".into(),
            raw: envelope.encoded_2718(),
            sent_at: 0,
        },
    )
    .unwrap();

    // Restart: the sender rebroadcasts it, then continues with the next nonce.
    let client = devnet.client_for(signer, Some(db.clone())).await.unwrap();
    let mut receipt = None;
    for _ in 0..200 {
        receipt = provider
            .get_transaction_receipt(*envelope.tx_hash())
            .await
            .unwrap();
        if receipt.is_some() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(receipt.unwrap().status());
    assert_eq!(reader.balance(to).await.unwrap(), before + duck("5"));
    let next = client.transfer(to, duck("1")).await.unwrap();
    assert_eq!(reader.balance(to).await.unwrap(), before + duck("6"));
    let tx = provider
        .get_transaction_by_hash(next.tx_hash())
        .await
        .unwrap()
        .unwrap();
    use alloy::consensus::Transaction as _;
    assert_eq!(tx.nonce(), nonce + 1);
    for _ in 0..100 {
        if pending_transactions(&db, me).unwrap().is_empty() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(pending_transactions(&db, me).unwrap().is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tx_sender_clears_records_already_mined_and_orders_concurrent_sends() {
    let devnet = Devnet::start().await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let db = Db::open_dir(dir.path()).unwrap();
    let signer = Devnet::signer(8);
    let me = signer.address();
    let to = Devnet::signer(9).address();
    let reader = devnet.reader().await.unwrap();
    let before = reader.balance(to).await.unwrap();

    let client = devnet
        .client_for(signer.clone(), Some(db.clone()))
        .await
        .unwrap();
    // Twenty transfers at once through clones of one client: nonces never collide.
    let mut tasks = Vec::new();
    for _ in 0..20 {
        let c = client.clone();
        tasks.push(tokio::spawn(async move { c.transfer(to, duck("1")).await }));
    }
    for t in tasks {
        t.await.unwrap().unwrap();
    }
    assert_eq!(reader.balance(to).await.unwrap(), before + duck("20"));
    assert!(pending_transactions(&db, me).unwrap().is_empty());

    // A record whose transaction was mined (the crash hit after broadcast): cleared on start.
    let mined = client.transfer(to, duck("1")).await.unwrap();
    let mut key = me.to_vec();
    key.extend_from_slice(&0u64.to_be_bytes());
    db.put(
        PENDING_TXS,
        &key,
        &PendingTx {
            nonce: 0,
            hash: mined.tx_hash().to_vec(),
            label: "transfer".into(),
            raw: vec![],
            sent_at: 0,
        },
    )
    .unwrap();
    let _restarted = devnet.client_for(signer, Some(db.clone())).await.unwrap();
    assert!(pending_transactions(&db, me).unwrap().is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reverts_are_decoded_before_sending_and_cost_no_nonce() {
    let devnet = Devnet::start().await.unwrap();
    let client = devnet.client(3).await.unwrap();
    let me = client.address().unwrap();
    let nonce = devnet.provider().get_transaction_count(me).await.unwrap();
    let err = client.unlist_machine(U256::from(42)).await.unwrap_err();
    match &err {
        Error::Reverted {
            reason, tx_hash, ..
        } => {
            assert!(
                reason.contains("ComputeMarketplaceUnknownMachine"),
                "{reason}"
            );
            assert!(tx_hash.is_none(), "refused at estimation, nothing sent");
        }
        other => panic!("expected a revert, got {other}"),
    }
    let unknown = err
        .decode_revert::<ComputeMarketplace::ComputeMarketplaceUnknownMachine>()
        .unwrap();
    assert_eq!(unknown.machineId, U256::from(42));
    assert!(!err.is_retryable());
    // Insufficient allowance is an OpenZeppelin custom error, decoded too.
    let raw = DuckToken::transferFromCall {
        from: Devnet::signer(1).address(),
        to: me,
        value: U256::from(1),
    }
    .abi_encode();
    let err = client
        .sender()
        .unwrap()
        .send(
            "transferFrom",
            TransactionRequest::default()
                .to(devnet.deployment().duck_token)
                .input(raw.into()),
        )
        .await
        .unwrap_err();
    assert!(
        err.to_string().contains("ERC20InsufficientAllowance"),
        "{err}"
    );
    // Nothing was sent, so the nonce is unchanged and the next transaction goes through.
    assert_eq!(
        devnet.provider().get_transaction_count(me).await.unwrap(),
        nonce
    );
    client.list_machine(specs(1), duck("1")).await.unwrap();
    // Reads without a key work; writes say a key is needed.
    let reader = devnet.reader().await.unwrap();
    assert!(matches!(
        reader.list_machine(specs(2), duck("1")).await,
        Err(Error::NoSigner(_))
    ));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deploy_refuses_a_chain_id_other_than_the_networks() {
    let devnet = Devnet::start_bare().await.unwrap();
    let networks = Networks::builtin().unwrap();
    let testnet = networks.get("duckchain-testnet").unwrap().clone();
    let sender = devnet.sender(Devnet::signer(0), None).await.unwrap();
    let err = deploy(
        &devnet.provider(),
        &sender,
        &testnet,
        &DeployOptions::for_network(&testnet).unwrap(),
    )
    .await
    .unwrap_err();
    assert!(
        matches!(
            err,
            Error::ChainIdMismatch {
                expected: 202105,
                actual: 31337,
                ..
            }
        ),
        "{err}"
    );
    // The devnet network deploys, and an existing token is used as is (mainnet's path).
    let devnet_net = networks.get("devnet").unwrap().clone();
    let first = deploy(
        &devnet.provider(),
        &sender,
        &devnet_net,
        &DeployOptions::for_network(&devnet_net).unwrap(),
    )
    .await
    .unwrap();
    assert!(first.duck_token_deployed);
    let mut options = DeployOptions::for_network(&devnet_net).unwrap();
    options.duck_token = Some(first.duck_token);
    let second = deploy(&devnet.provider(), &sender, &devnet_net, &options)
        .await
        .unwrap();
    assert_eq!(second.duck_token, first.duck_token);
    assert!(!second.duck_token_deployed);
    assert_ne!(second.training_pool, first.training_pool);
}

#[test]
fn artifacts_match_a_fresh_forge_build() {
    let repo = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let out = std::process::Command::new("node")
        .arg(repo.join("scripts/export-abi.js"))
        .arg("--check")
        .output()
        .expect("node is installed (npm ci needs it)");
    assert!(
        out.status.success(),
        "contracts/abi drifted from `forge build`: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn dev_keys_are_anvils_accounts() {
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let devnet = Devnet::start_bare().await.unwrap();
        let accounts = devnet.provider().get_accounts().await.unwrap();
        let ours: Vec<Address> = quackmesh::chain::keys::dev_signers()
            .iter()
            .map(|s| s.address())
            .collect();
        assert_eq!(accounts, ours);
    });
}

/// Runs the `quackmesh` binary in `dir` with a clean environment; returns (ok, stdout, stderr).
fn quackmesh(dir: &std::path::Path, args: &[&str]) -> (bool, String, String) {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_quackmesh"))
        .args(args)
        .current_dir(dir)
        .env_clear()
        .env("QUACKMESH_LOG", "warn")
        .output()
        .unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cli_deploys_and_reads_a_devnet() {
    let devnet = Devnet::start_bare().await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().to_path_buf();
    let url = devnet.rpc_url().to_owned();
    let dep = path.join("devnet.json");
    let dep_s = dep.to_str().unwrap().to_owned();
    let run = move |args: Vec<String>| {
        let path = path.clone();
        async move {
            tokio::task::spawn_blocking(move || {
                let refs: Vec<&str> = args.iter().map(String::as_str).collect();
                quackmesh(&path, &refs)
            })
            .await
            .unwrap()
        }
    };
    let net = |extra: &[&str]| -> Vec<String> {
        let mut v: Vec<String> = extra.iter().map(|s| (*s).to_owned()).collect();
        v.extend(
            [
                "--network",
                "devnet",
                "--rpc-url",
                &url,
                "--deployment",
                &dep_s,
            ]
            .iter()
            .map(|s| (*s).to_owned()),
        );
        v
    };

    let (ok, help, _) = run(vec!["--help".into()]).await;
    assert!(ok && help.contains("chain") && help.contains("wallet") && help.contains("market"));

    let (ok, out, err) = run(net(&[
        "chain",
        "deploy",
        "--fund-dev-accounts",
        "5000",
        "--json",
    ]))
    .await;
    assert!(ok, "{err}");
    let json_start = out.find('{').unwrap();
    let deployment: quackmesh::chain::Deployment =
        serde_json::from_str(&out[json_start..]).unwrap();
    assert_eq!(deployment.chain_id, 31337);
    assert_eq!(
        quackmesh::chain::Deployment::load(&dep).unwrap(),
        deployment
    );

    let (ok, _, err) = run(net(&["chain", "deploy"])).await;
    assert!(!ok && err.contains("--force"), "{err}");

    let (ok, out, err) = run(net(&["chain", "info"])).await;
    assert!(ok, "{err}");
    assert!(out.contains(&deployment.training_pool.to_string()), "{out}");

    let (ok, out, err) = run(net(&["wallet", "balance", "--dev-account", "3"])).await;
    assert!(ok, "{err}");
    assert!(out.contains("DUCK     5000\n"), "{out}");
    let (ok, _, err) = run(net(&["wallet", "faucet", "250", "--dev-account", "3"])).await;
    assert!(ok, "{err}");
    let (_, out, _) = run(net(&["wallet", "balance", "--dev-account", "3"])).await;
    assert!(out.contains("DUCK     5250\n"), "{out}");
    let (ok, _, err) = run(net(&["wallet", "faucet", "20000", "--dev-account", "3"])).await;
    assert!(
        !ok && err.contains("DuckTokenFaucetAccountCapExceeded"),
        "{err}"
    );

    // A machine listed through the library shows up in `market list`.
    let cfg = quackmesh::chain::Config::devnet(&url, dep.clone()).unwrap();
    let provider = Client::connect(&cfg, Some(Devnet::signer(2)), None)
        .await
        .unwrap();
    let peer = libp2p::identity::Keypair::generate_ed25519()
        .public()
        .to_peer_id();
    let mut s = specs(1);
    s.peerId = peer.to_bytes().into();
    provider.list_machine(s, duck("2.5")).await.unwrap();
    let (ok, out, err) = run(net(&["market", "list", "--json"])).await;
    assert!(ok, "{err}");
    let list: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(list[0]["price_per_hour_duck"], "2.5");
    assert_eq!(list[0]["peer_id"], peer.to_string());
    assert_eq!(list[0]["rented"], false);
    let (ok, out, _) = run(net(&["market", "list"])).await;
    assert!(ok && out.contains("available"), "{out}");

    // The wrong network for this endpoint is refused.
    let (ok, _, err) = run(vec![
        "chain".into(),
        "info".into(),
        "--network".into(),
        "duckchain-testnet".into(),
        "--rpc-url".into(),
        url.clone(),
        "--deployment".into(),
        dep_s.clone(),
    ])
    .await;
    assert!(!ok && err.contains("chain id 202105"), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn watcher_batches_resume_after_the_last_processed_batch() {
    let devnet = Devnet::start().await.unwrap();
    let provider = devnet.client(1).await.unwrap();
    let reader = devnet.reader().await.unwrap();
    let from = devnet.deployment().deploy_block;
    let dir = tempfile::tempdir().unwrap();
    let db = Db::open_dir(dir.path()).unwrap();
    for i in 1..=6 {
        provider.list_machine(specs(i), duck("1")).await.unwrap();
    }
    let (mut stream, _poller) = reader.watch(db.clone(), watcher_config("b", from)).unwrap();
    let mut seen = 0;
    while seen < 6 {
        let batch = stream.next_batch(4).await.unwrap();
        assert!(!batch.is_empty() && batch.len() <= 4);
        seen += batch.len();
    }
    assert_eq!(seen, 6);
    stream.commit().unwrap();
    drop(stream);
    let (mut stream, _poller) = reader.watch(db, watcher_config("b", from)).unwrap();
    assert!(
        stream
            .next_timeout(Duration::from_millis(400))
            .await
            .unwrap()
            .is_none(),
        "a committed batch is not replayed"
    );
}
