//! Federated training end to end: `quackmesh node` processes on 127.0.0.1 (coordinators,
//! contributors, a requester) over an anvil devnet, on real MNIST.

use std::{collections::HashSet, path::Path, time::Duration};

use alloy::primitives::{Address, Bytes, U256};
use quackmesh::{
    chain::{attest::Attestation, bindings::TrainingPool as P},
    hash::Hash32,
    learn::{self, ModelSpec, Weights},
    roles::{
        coordinator::AggregateRecord,
        jobs::{JobRecord, JobStatus},
        wire::UpdateVerdict,
    },
    test_utils::{
        chain::Devnet,
        learn::{load_full, load_subset},
        roles::{Federation, request, rounds_opened_after, unix_ms},
    },
};

fn bin() -> &'static Path {
    Path::new(env!("CARGO_BIN_EXE_quackmesh"))
}

fn addr(account: usize) -> Address {
    Devnet::signer(account).address()
}

fn paid_to(r: &JobRecord, who: Address) -> U256 {
    r.rewards
        .iter()
        .filter(|x| Address::from(x.contributor) == who)
        .map(|x| x.amount.parse::<U256>().unwrap())
        .fold(U256::ZERO, |a, b| a + b)
}

/// The issue's main scenario, at the reference setting (../shared/FACTS.md: MLP 784-128-10,
/// full MNIST split IID over 2 contributors, 1 local epoch, batch 32, SGD lr 0.05): 2
/// coordinator-eligible nodes, 2 contributors, a requester on a third node, 5 rounds.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn five_round_job_on_full_mnist_reaches_95_percent_and_pays() {
    let (train, test) = load_full().expect("full MNIST missing: run scripts/fetch-mnist.sh");
    let mut f = Federation::start(bin()).await;
    let _c1 = f.node("c1", 1, &["--coordinator"]);
    let _c2 = f.node("c2", 2, &["--coordinator"]);
    let parts = f.partitions(&train, 2, 42);
    let w1 = f.contributor("w1", 3, &parts[0]);
    let _w2 = f.contributor("w2", 4, &parts[1]);
    let r = f.node("r", 5, &[]);
    let chain = f.devnet.reader().await.unwrap();
    let before: Vec<U256> = futures::future::join_all((3..=5).map(|i| chain.balance(addr(i))))
        .await
        .into_iter()
        .map(Result::unwrap)
        .collect();

    let job = f.submit(&r.api_url, &test, request(5, 2)).await;
    let rec = f
        .wait_job(&r.api_url, job.job_id, Duration::from_secs(300), |r| {
            r.status == JobStatus::Finished
        })
        .await;

    // Accuracy: at least 0.95 after round 5, never dropping more than 2 points.
    let acc: Vec<u16> = rec.rounds_done.iter().map(|x| x.accuracy_bps).collect();
    eprintln!("accuracy per round (bps): {acc:?}");
    assert_eq!(acc.len(), 5);
    assert!(acc[4] >= 9_500, "final accuracy {acc:?}");
    assert!(
        acc.windows(2).all(|w| w[1] + 200 >= w[0]),
        "accuracy dropped: {acc:?}"
    );

    // Every round paid both contributors once; balances moved by exactly what was emitted.
    assert_eq!(rec.rewards.len(), 10, "{:?}", rec.rewards);
    for (i, account) in [3usize, 4].into_iter().enumerate() {
        let paid = paid_to(&rec, addr(account));
        assert!(paid > U256::ZERO);
        assert_eq!(
            chain.balance(addr(account)).await.unwrap(),
            before[i] + paid
        );
    }
    // The requester paid the rewards and got the rest of the pool back.
    let total: U256 = rec
        .rewards
        .iter()
        .map(|x| x.amount.parse::<U256>().unwrap())
        .sum();
    let pool: U256 = rec.total_pool.parse().unwrap();
    assert_eq!(
        rec.refund.as_deref().unwrap().parse::<U256>().unwrap(),
        pool - total
    );
    assert_eq!(chain.balance(addr(5)).await.unwrap(), before[2] - total);

    // Every node serves the dashboard page, which reads these same records from the API.
    let page = reqwest::get(format!("{}/", r.api_url)).await.unwrap();
    assert!(page.status().is_success());
    let html = page.text().await.unwrap();
    assert!(
        html.contains("/api/jobs") && html.contains("<svg"),
        "dashboard page"
    );

    // Raw data never left the contributor: it holds only what it fetched (spec, global models)
    // and its own updates, and it published no gossip at all.
    let mut allowed: HashSet<Hash32> = [job.spec, job.model].into_iter().collect();
    allowed.extend(rec.rounds_done.iter().map(|x| x.model));
    allowed.extend(
        rec.rewards
            .iter()
            .filter(|x| Address::from(x.contributor) == addr(3))
            .map(|x| x.update),
    );
    let held: Vec<quackmesh::mesh::blob::BlobSummary> = f.get(&w1.api_url, "/api/blobs").await;
    assert!(!held.is_empty());
    for b in &held {
        assert!(
            allowed.contains(&b.id),
            "contributor holds unexpected blob {}",
            b.id
        );
    }
    let metrics = reqwest::get(format!("{}/metrics", w1.api_url))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let gossip_out = metrics
        .lines()
        .find(|l| l.starts_with("quackmesh_mesh_gossip_messages_out_total"))
        .and_then(|l| l.split_whitespace().last())
        .expect("gossip counter");
    assert_eq!(gossip_out, "0", "a contributor publishes nothing on gossip");
}

/// The elected coordinator is SIGKILLed in the middle of round 2, after it accepted (and the
/// contributors were paid for) both round-2 updates. The other coordinator takes over at a
/// higher term within 15 s, round 2 is aggregated again with the same updates, and no update
/// is paid twice.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn coordinator_killed_mid_round_is_replaced_and_nothing_is_lost() {
    let (train, test) = load_subset();
    let mut f = Federation::start(bin()).await;
    let mut c1 = f.node("c1", 1, &["--coordinator"]);
    let mut c2 = f.node("c2", 2, &["--coordinator"]);
    let parts = f.partitions(&train.take(4_000), 2, 1);
    let _w1 = f.contributor("w1", 3, &parts[0]);
    let _w2 = f.contributor("w2", 4, &parts[1]);
    let r = f.node("r", 5, &[]);
    // Three update slots for two contributors: every round closes at its 6 s deadline on a
    // quorum of 2, so round 2 is still open when its coordinator dies.
    let mut req = request(4, 3);
    req.quorum = Some(2);
    req.round_timeout_secs = 6;
    req.lease_secs = 5;
    req.min_accuracy = 0.5;
    let job = f.submit(&r.api_url, &test.take(500), req).await;
    let id = job.job_id;

    let rec = f
        .wait_job(&r.api_url, id, Duration::from_secs(120), |r| {
            r.rewards.iter().filter(|x| x.round == 2).count() == 2
        })
        .await;
    let round2_updates: HashSet<Hash32> = rec
        .rewards
        .iter()
        .filter(|x| x.round == 2)
        .map(|x| x.update)
        .collect();
    let term1 = rec.term;
    let (dead, alive, alive_account) = if Address::from(rec.holder) == addr(1) {
        (&mut c1, &c2, 2)
    } else {
        (&mut c2, &c1, 1)
    };
    dead.kill();
    let killed = std::time::Instant::now();

    let rec = f
        .wait_job(&r.api_url, id, Duration::from_secs(30), |r| r.term > term1)
        .await;
    let took = killed.elapsed();
    eprintln!("takeover after {took:?}: term {term1} -> {}", rec.term);
    assert!(took <= Duration::from_secs(15), "takeover took {took:?}");
    assert_eq!(Address::from(rec.holder), addr(alive_account));

    let rec = f
        .wait_job(&r.api_url, id, Duration::from_secs(120), |r| {
            r.status == JobStatus::Finished
        })
        .await;
    assert_eq!(rec.rounds_done.len(), 4);
    assert!(
        rec.rounds_done.iter().skip(1).all(|x| x.term > term1),
        "{:?}",
        rec.rounds_done
    );
    // None paid twice: one reward per contributor per round, 2 contributors x 4 rounds.
    let pairs: HashSet<([u8; 20], u64)> = rec
        .rewards
        .iter()
        .map(|x| (x.contributor, x.round))
        .collect();
    assert_eq!(pairs.len(), rec.rewards.len());
    assert_eq!(rec.rewards.len(), 8);
    // No accepted update lost: the new coordinator's round 2 holds the updates paid under the
    // old term.
    let aggs: Vec<AggregateRecord> = f
        .get(&alive.api_url, &format!("/api/job/{id}/aggregates"))
        .await;
    let r2 = aggs
        .iter()
        .find(|a| a.round == 2)
        .expect("round 2 aggregated by the new coordinator");
    assert!(r2.term > term1);
    let included: HashSet<Hash32> = r2.updates.iter().copied().collect();
    assert_eq!(included, round2_updates, "round 2 lost an accepted update");
}

/// A contributor that disappears mid-job does not hold rounds past their timeout.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn vanished_contributor_does_not_stall_rounds() {
    // Rounds of two live contributors take about 0.1 s here, so the round in flight at the
    // kill is a race. The checks below hold whichever it is: they look only at the rounds
    // whose head went out after w2 was dead (at least the last, unless the harness stalls for
    // two whole rounds).
    const ROUNDS: u64 = 4;
    const TIMEOUT_SECS: u64 = 5;
    let (train, test) = load_subset();
    let mut f = Federation::start(bin()).await;
    let c = f.node("c", 1, &["--coordinator"]);
    let parts = f.partitions(&train.take(4_000), 2, 3);
    let _w1 = f.contributor("w1", 3, &parts[0]);
    let mut w2 = f.contributor("w2", 4, &parts[1]);
    let r = f.node("r", 5, &[]);
    let mut req = request(ROUNDS, 2);
    req.round_timeout_secs = TIMEOUT_SECS;
    req.min_accuracy = 0.5;
    let job = f.submit(&r.api_url, &test.take(500), req).await;
    f.wait_aggregate(&c.api_url, job.job_id, 1, Duration::from_secs(120))
        .await;
    w2.kill();
    let killed_ms = unix_ms();
    let rec = f
        .wait_job(&r.api_url, job.job_id, Duration::from_secs(90), |r| {
            r.rounds_done.len() == ROUNDS as usize && r.rewards.iter().any(|x| x.round == ROUNDS)
        })
        .await;
    let aggs = f.aggregates(&c.api_url, job.job_id).await;
    assert_eq!(aggs.len(), ROUNDS as usize, "{aggs:?}");
    let after = rounds_opened_after(&aggs, killed_ms);
    assert!(
        after.contains(&ROUNDS),
        "the kill came after the last round opened: {aggs:?}"
    );
    for round in after {
        // w1's update alone, and no wait past the deadline (plus training and transactions).
        let took = aggs[round as usize - 1]
            .at_unix_ms
            .saturating_sub(aggs[round as usize - 2].at_unix_ms);
        assert!(
            took <= (TIMEOUT_SECS + 6) * 1_000,
            "round {round} stalled {took} ms"
        );
        let paid: Vec<Address> = rec
            .rewards
            .iter()
            .filter(|x| x.round == round)
            .map(|x| Address::from(x.contributor))
            .collect();
        assert!(
            paid.iter().all(|a| *a == addr(3)),
            "round {round}: {paid:?}"
        );
    }
}

/// A contributor SIGKILLed during a job and restarted on the same data dir picks up where its
/// store says it was: it trains the later rounds, is paid for them, and is never paid twice.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restarted_contributor_continues_and_is_paid_once() {
    // Rounds of two live contributors are quick (about 0.1 s), so the round in flight at the
    // kill is a race; while w2 is away a round waits for its deadline, so with six rounds some
    // open after the restart whichever round that is (at least the last two).
    const ROUNDS: u64 = 6;
    let (train, test) = load_subset();
    let mut f = Federation::start(bin()).await;
    let c = f.node("c", 1, &["--coordinator"]);
    let parts = f.partitions(&train.take(4_000), 2, 9);
    let _w1 = f.contributor("w1", 3, &parts[0]);
    let mut w2 = f.contributor("w2", 4, &parts[1]);
    let r = f.node("r", 5, &[]);
    let chain = f.devnet.reader().await.unwrap();
    let before = chain.balance(addr(4)).await.unwrap();
    let mut req = request(ROUNDS, 2);
    req.round_timeout_secs = 5;
    req.min_accuracy = 0.5;
    let job = f.submit(&r.api_url, &test.take(500), req).await;
    f.wait_job(&r.api_url, job.job_id, Duration::from_secs(120), |r| {
        r.rewards
            .iter()
            .any(|x| x.round == 1 && Address::from(x.contributor) == addr(4))
    })
    .await;
    w2.kill();
    let _w2 = f.contributor("w2", 4, &parts[1]);
    let restarted_ms = unix_ms();
    f.wait_job(&r.api_url, job.job_id, Duration::from_secs(180), |r| {
        r.status == JobStatus::Finished
    })
    .await;
    let aggs = f.aggregates(&c.api_url, job.job_id).await;
    let after = rounds_opened_after(&aggs, restarted_ms);
    assert!(
        after.len() >= 2,
        "too few rounds opened after the restart: {aggs:?}"
    );
    let rec = f
        .wait_job(&r.api_url, job.job_id, Duration::from_secs(30), |r| {
            r.rewards
                .iter()
                .any(|x| after.contains(&x.round) && Address::from(x.contributor) == addr(4))
        })
        .await;
    assert_eq!(rec.rounds_done.len(), ROUNDS as usize);
    let pairs: HashSet<([u8; 20], u64)> = rec
        .rewards
        .iter()
        .map(|x| (x.contributor, x.round))
        .collect();
    assert_eq!(pairs.len(), rec.rewards.len(), "an update was paid twice");
    assert_eq!(
        chain.balance(addr(4)).await.unwrap(),
        before + paid_to(&rec, addr(4))
    );
}

/// Bad updates over the HTTP path (wrong shapes, NaN, enormous norm, garbage) are rejected with
/// reasons; a replayed update and a forged coordinator signature are refused by the contract;
/// none is paid, and the job completes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_updates_are_rejected_and_paid_nothing() {
    let (train, test) = load_subset();
    let mut f = Federation::start(bin()).await;
    let c = f.node("c", 1, &["--coordinator"]);
    let parts = f.partitions(&train.take(3_000), 1, 5);
    let _w = f.contributor("w", 3, &parts[0]);
    let r = f.node("r", 5, &[]);
    let mut req = request(2, 2);
    req.round_timeout_secs = 8;
    req.min_accuracy = 0.5;
    let job = f.submit(&r.api_url, &test.take(500), req).await;
    let id = job.job_id;
    f.wait_job(&r.api_url, id, Duration::from_secs(60), |r| r.term == 1)
        .await;
    // The coordinator needs a moment after claiming to open round 1.
    tokio::time::sleep(Duration::from_millis(1500)).await;

    let http = reqwest::Client::new();
    let rogue = addr(6);
    let post = |bytes: Vec<u8>| {
        let http = http.clone();
        let url = format!(
            "{}/api/job/{id}/update?round=1&samples=100&contributor={rogue:#x}",
            c.api_url
        );
        async move { http.post(url).body(bytes).send().await.unwrap() }
    };
    let verdict = |resp: reqwest::Response| async move {
        assert!(resp.status().is_success(), "{}", resp.status());
        resp.json::<UpdateVerdict>().await.unwrap()
    };
    let global = Weights::from_safetensors_bytes(
        &http
            .get(format!("{}/api/job/{id}/model", c.api_url))
            .send()
            .await
            .unwrap()
            .bytes()
            .await
            .unwrap(),
        1 << 26,
    )
    .unwrap();
    let rejected = |v: UpdateVerdict, what: &str| match v {
        UpdateVerdict::Rejected { reason } => assert!(reason.contains(what), "{what}: {reason}"),
        other => panic!("{what}: accepted {other:?}"),
    };
    // Wrong shapes: CNN weights for an MLP job.
    let cnn = Weights::init(&ModelSpec::cnn(), 1)
        .to_safetensors_bytes()
        .unwrap();
    rejected(verdict(post(cnn).await).await, "tensor");
    // NaN.
    let mut nan = global.clone();
    nan.flat_mut()[10] = f32::NAN;
    rejected(
        verdict(post(nan.to_safetensors_bytes().unwrap()).await).await,
        "non-finite",
    );
    // Enormous norm.
    let big = global.with_values(global.flat().iter().map(|v| v * 1e4).collect());
    rejected(
        verdict(post(big.to_safetensors_bytes().unwrap()).await).await,
        "norm",
    );
    // Not weights at all: refused before anything is stored.
    assert_eq!(
        post(b"garbage".to_vec()).await.status(),
        reqwest::StatusCode::BAD_REQUEST
    );

    // A good update over HTTP is attested for the rogue account ...
    let (trained, _) = learn::train(
        &ModelSpec::mlp(),
        &global,
        &train.take(2_000),
        &learn::TrainConfig::default(),
        &learn::train::progress_bar(false),
    )
    .unwrap();
    let bytes = trained.to_safetensors_bytes().unwrap();
    let UpdateVerdict::Attested {
        round,
        update,
        accuracy_bps,
        term,
        signature,
    } = verdict(post(bytes).await).await
    else {
        panic!("good update rejected");
    };
    let rogue_chain = f.devnet.client(6).await.unwrap();
    let submit = |sig: Vec<u8>, update: Hash32| {
        let c = rogue_chain.clone();
        async move {
            c.submit_update(
                U256::from(id),
                round,
                update.into(),
                accuracy_bps,
                term,
                Bytes::from(sig),
            )
            .await
        }
    };
    // ... a forged signature (signed by a key that is not the coordinator) is refused ...
    let other_update = Hash32::of(b"another update");
    let forged = Attestation::new(
        U256::from(id),
        round,
        other_update.into(),
        rogue,
        accuracy_bps,
        term,
    )
    .sign(&Devnet::signer(7), &rogue_chain.attestation_domain())
    .unwrap();
    let err = submit(forged.to_vec(), other_update).await.unwrap_err();
    assert!(
        err.decode_revert::<P::TrainingPoolInvalidSignature>()
            .is_some(),
        "{err}"
    );
    // ... the genuine one pays once, and replaying it is refused.
    submit(signature.clone(), update).await.unwrap();
    let err = submit(signature, update).await.unwrap_err();
    assert!(
        err.decode_revert::<P::TrainingPoolUpdateAlreadyRewarded>()
            .is_some(),
        "{err}"
    );

    let rec = f
        .wait_job(&r.api_url, id, Duration::from_secs(90), |r| {
            r.status == JobStatus::Finished
        })
        .await;
    assert_eq!(rec.rounds_done.len(), 2, "the job went on");
    let rogue_rewards: Vec<_> = rec
        .rewards
        .iter()
        .filter(|x| Address::from(x.contributor) == rogue)
        .collect();
    assert_eq!(
        rogue_rewards.len(),
        1,
        "only the genuine update was paid, once"
    );
    assert_eq!(rogue_rewards[0].update, update);
}
