//! Compute rental end to end: `quackmesh node --provide` processes list their machines on an
//! anvil devnet, the `quackmesh market` CLI lists, filters, rents a cluster, ends a rental and
//! withdraws rent; balances are checked to the wei.

use std::{future::Future, path::Path, process::Command, time::Duration};

use alloy::primitives::{Address, U256};
use quackmesh::{
    api::market::{ClusterView, ProviderView},
    chain::{client::MachineSpecs, config::parse_duck},
    roles::{
        machine,
        market::{ClusterRented, MachineOffer},
    },
    test_utils::{chain::Devnet, mesh::NodeProcess, roles::Federation},
};
use serde_json::Value;

pub(crate) fn bin() -> &'static Path {
    Path::new(env!("CARGO_BIN_EXE_quackmesh"))
}

fn addr(account: usize) -> Address {
    Devnet::signer(account).address()
}

fn duck(s: &str) -> U256 {
    parse_duck(s).unwrap()
}

fn wei(s: &str) -> u128 {
    u128::try_from(duck(s)).unwrap()
}

/// Runs `quackmesh ARGS --network devnet --rpc-url .. --deployment ..` with a clean environment;
/// returns (ok, stdout, stderr).
pub(crate) async fn cli(f: &Federation, args: &[&str]) -> (bool, String, String) {
    let mut all: Vec<String> = args.iter().map(|s| (*s).to_owned()).collect();
    all.extend([
        "--network".into(),
        "devnet".into(),
        "--rpc-url".into(),
        f.devnet.rpc_url().to_owned(),
        "--deployment".into(),
        f.devnet.deployment_path().display().to_string(),
    ]);
    let dir = f.dir.path().to_path_buf();
    tokio::task::spawn_blocking(move || {
        let out = Command::new(bin())
            .args(&all)
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
    })
    .await
    .unwrap()
}

/// `cli` that must succeed, its stdout parsed as JSON.
pub(crate) async fn cli_json<T: serde::de::DeserializeOwned>(f: &Federation, args: &[&str]) -> T {
    let (ok, out, err) = cli(f, args).await;
    assert!(ok, "quackmesh {args:?} failed: {err}");
    serde_json::from_str(&out).unwrap_or_else(|e| panic!("{args:?}: {e}: {out}"))
}

/// Polls `check` every 250 ms until it returns `Some`, at most `timeout` (and 400 tries).
pub(crate) async fn wait_for<T, F, Fut>(what: &str, timeout: Duration, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let deadline = tokio::time::Instant::now() + timeout;
    for _ in 0..400 {
        if let Some(v) = check().await {
            return v;
        }
        if tokio::time::Instant::now() >= deadline {
            break;
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    panic!("{what}: not within {timeout:?}");
}

pub(crate) async fn provider(f: &Federation, p: &NodeProcess) -> ProviderView {
    f.get(&p.api_url, "/api/provider").await
}

/// Waits until the provider node has listed its machine; returns the machine id.
pub(crate) async fn listed(f: &Federation, p: &NodeProcess) -> u64 {
    wait_for("listing", Duration::from_secs(60), || async {
        provider(f, p)
            .await
            .listing
            .filter(|l| l.listed)
            .map(|l| l.machine_id)
    })
    .await
}

/// The listen address without its `/p2p` suffix (what a provider lists).
fn listed_addr(p: &NodeProcess) -> String {
    let mut a = p.listen[0].clone();
    a.pop();
    a.to_string()
}

fn ids(list: &[MachineOffer]) -> Vec<u64> {
    let mut v: Vec<u64> = list.iter().map(|m| m.machine_id).collect();
    v.sort_unstable();
    v
}

/// The scenario: three providers at different prices list themselves with their real
/// specs; `market list` shows and filters them; `market rent --machines 2 --hours 2` rents the
/// two cheapest as one cluster, which the providers see; one rental is ended early (the renter
/// gets exactly the unused part back), the other runs its term and its provider's scheduled
/// withdrawal collects exactly price x hours; the third provider withdraws with the CLI.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn providers_list_rent_a_cluster_and_get_paid_exactly() {
    let mut f = Federation::start(bin()).await;
    let chain = f.devnet.reader().await.unwrap();
    let start_balance = duck("1000000");
    let p1 = f.node(
        "p1",
        1,
        &["--provide", "--price", "3", "--withdraw-every", "3600"],
    );
    let p2 = f.node(
        "p2",
        2,
        &["--provide", "--price", "1.5", "--withdraw-every", "1"],
    );
    let p3 = f.node(
        "p3",
        3,
        &["--provide", "--price", "2", "--withdraw-every", "3600"],
    );
    let m1 = listed(&f, &p1).await;
    let m2 = listed(&f, &p2).await;
    let m3 = listed(&f, &p3).await;
    // A machine with GPUs, listed directly, for the filters.
    let gpu_peer = libp2p::identity::Keypair::generate_ed25519()
        .public()
        .to_peer_id();
    let m4 = devnet_list_gpu(&f, gpu_peer.to_bytes()).await;
    assert_eq!(chain.machine_count().await.unwrap(), U256::from(4));

    // `market list` shows the providers with this machine's specs and their prices.
    let specs = machine::detect().await;
    let list: Vec<Value> = cli_json(&f, &["market", "list", "--json"]).await;
    assert_eq!(list.len(), 4, "{list:?}");
    for (p, m, price) in [(&p1, m1, "3"), (&p2, m2, "1.5"), (&p3, m3, "2")] {
        let row = list
            .iter()
            .find(|r| r["machine_id"] == m)
            .unwrap_or_else(|| panic!("machine {m} missing: {list:?}"));
        assert_eq!(row["price_per_hour_duck"], price);
        assert_eq!(row["price_per_hour"], wei(price).to_string());
        assert_eq!(row["cpu_cores"], specs.cpu_cores);
        assert_eq!(row["ram_mb"], specs.ram_mb);
        assert_eq!(row["gpu_count"], specs.gpu_count);
        assert_eq!(row["gpu_model"], specs.gpu_model.as_str());
        assert_eq!(row["peer_id"], p.peer_id.to_string());
        assert_eq!(row["multiaddr"], listed_addr(p));
        assert_eq!(row["listed"], true);
        assert_eq!(row["rented"], false);
    }
    let (ok, table, err) = cli(&f, &["market", "list"]).await;
    assert!(ok, "{err}");
    assert!(
        table.contains("DUCK/hour") && table.contains("8x NVIDIA H100"),
        "{table}"
    );
    assert_eq!(table.matches("available").count(), 4, "{table}");

    // Filters.
    let gpu: Vec<MachineOffer> = cli_json(&f, &["market", "list", "--gpu", "--json"]).await;
    let expect_gpu: Vec<u64> = if specs.gpu_count > 0 {
        vec![m1, m2, m3, m4]
    } else {
        vec![m4]
    };
    assert_eq!(ids(&gpu), expect_gpu);
    let big: Vec<MachineOffer> =
        cli_json(&f, &["market", "list", "--min-cpus", "4096", "--json"]).await;
    assert_eq!(ids(&big), vec![m4]);
    let cheap: Vec<MachineOffer> =
        cli_json(&f, &["market", "list", "--max-price", "2", "--json"]).await;
    assert_eq!(ids(&cheap), vec![m2, m3]);
    let none: Vec<MachineOffer> = cli_json(
        &f,
        &["market", "list", "--max-price", "2", "--gpu", "--json"],
    )
    .await;
    assert_eq!(none.len(), usize::from(specs.gpu_count > 0) * 2);

    // Rent the two cheapest as one cluster.
    let renter_before = chain.balance(addr(5)).await.unwrap();
    assert_eq!(renter_before, start_balance);
    let rented: ClusterRented = cli_json(
        &f,
        &[
            "market",
            "rent",
            "--machines",
            "2",
            "--hours",
            "2",
            "--dev-account",
            "5",
            "--json",
        ],
    )
    .await;
    let mut machines: Vec<u64> = rented.members.iter().map(|m| m.machine_id).collect();
    machines.sort_unstable();
    assert_eq!(machines, vec![m2, m3]);
    assert_eq!(rented.cost, wei("7"));
    assert_eq!(
        chain.balance(addr(5)).await.unwrap(),
        renter_before - duck("7")
    );
    let member = |m: u64| {
        rented
            .members
            .iter()
            .find(|x| x.machine_id == m)
            .unwrap()
            .clone()
    };
    let (r2, r3) = (member(m2), member(m3));
    assert_eq!(r2.peer_id, p2.peer_id.to_string());
    assert_eq!(r2.multiaddr, listed_addr(&p2));
    assert_eq!(r3.peer_id, p3.peer_id.to_string());
    assert!(r2.active && r3.active);
    // Nothing that cheap is left.
    let (ok, _, err) = cli(
        &f,
        &[
            "market",
            "rent",
            "--machines",
            "2",
            "--hours",
            "1",
            "--max-price",
            "2",
            "--dev-account",
            "5",
        ],
    )
    .await;
    assert!(!ok && err.contains("only 0 available"), "{err}");

    // The providers see their rental, with the renter and the cluster; p1 sees none.
    for (p, r) in [(&p2, &r2), (&p3, &r3)] {
        let view = wait_for("rental seen", Duration::from_secs(30), || async {
            let v = provider(&f, p).await;
            v.rentals
                .iter()
                .any(|x| x.rental_id == r.rental_id)
                .then_some(v)
        })
        .await;
        let x = &view.rentals[0];
        assert_eq!(view.rentals.len(), 1);
        assert_eq!(x.cluster_id, rented.cluster_id);
        assert_eq!(x.renter, format!("{:#x}", addr(5)));
        assert!(x.active);
    }
    assert!(provider(&f, &p1).await.rentals.is_empty());

    // Any node reads the cluster from the chain.
    let cluster: ClusterView = f
        .get(&p1.api_url, &format!("/api/clusters/{}", rented.cluster_id))
        .await;
    assert_eq!(cluster.renter, format!("{:#x}", addr(5)));
    assert_eq!(cluster.members, rented.members);
    assert!(cluster.active);
    let rented_now: Vec<MachineOffer> =
        cli_json(&f, &["market", "list", "--available", "--json"]).await;
    assert_eq!(ids(&rented_now), vec![m1, m4]);

    // Half an hour later the renter ends p3's rental: the unused part comes back, to the wei.
    f.devnet.increase_time(1_800).await.unwrap();
    let before_end = chain.balance(addr(5)).await.unwrap();
    let end = r3.rental_id.to_string();
    let ended: Value = cli_json(&f, &["market", "end", &end, "--dev-account", "5", "--json"]).await;
    let refund: U256 = ended["refund"].as_str().unwrap().parse().unwrap();
    let on_chain = chain.rental(U256::from(r3.rental_id)).await.unwrap();
    let elapsed = on_chain.endedAt - on_chain.start;
    assert!(elapsed >= 1_800, "{elapsed}");
    let accrued = duck("2") * U256::from(elapsed) / U256::from(3_600);
    assert_eq!(refund, duck("4") - accrued);
    assert_eq!(chain.balance(addr(5)).await.unwrap(), before_end + refund);
    let view = wait_for("early end seen", Duration::from_secs(30), || async {
        let v = provider(&f, &p3).await;
        v.rentals[0].ended_at.is_some().then_some(v)
    })
    .await;
    assert_eq!(view.rentals[0].refund, u128::try_from(refund).unwrap());
    assert!(!view.rentals[0].active);

    // Past the end: p2's scheduled withdrawal collects exactly 1.5 x 2 DUCK.
    f.devnet.increase_time(2 * 3_600).await.unwrap();
    let view = wait_for("p2 withdrew", Duration::from_secs(60), || async {
        let v = provider(&f, &p2).await;
        (v.withdrawn_total == wei("3")).then_some(v)
    })
    .await;
    assert!(!view.rentals[0].active);
    assert_eq!(view.rentals[0].withdrawn, wei("3"));
    assert_eq!(
        chain.balance(addr(2)).await.unwrap(),
        start_balance + duck("3")
    );

    // p3 withdraws with the CLI: what accrued until the early end.
    let w: Value = cli_json(&f, &["market", "withdraw", "--dev-account", "3", "--json"]).await;
    assert_eq!(w["withdrawn"], accrued.to_string());
    assert_eq!(w["rentals"], serde_json::json!([r3.rental_id]));
    assert_eq!(
        chain.balance(addr(3)).await.unwrap(),
        start_balance + accrued
    );
    let (ok, out, err) = cli(&f, &["market", "withdraw", "--dev-account", "3"]).await;
    assert!(ok && out.contains("nothing to withdraw"), "{out} {err}");
    wait_for("p3 saw its withdrawal", Duration::from_secs(30), || async {
        let v = provider(&f, &p3).await;
        (v.withdrawn_total == u128::try_from(accrued).unwrap()).then_some(())
    })
    .await;

    // Tokens are conserved: the renter paid exactly what the providers got.
    assert_eq!(
        chain.balance(addr(5)).await.unwrap(),
        start_balance - duck("3") - accrued
    );
    assert_eq!(
        chain
            .balance(f.devnet.deployment().compute_marketplace)
            .await
            .unwrap(),
        U256::ZERO
    );
    // p1 was never rented and never withdrew.
    assert_eq!(chain.balance(addr(1)).await.unwrap(), start_balance);
}

/// Lists a machine with 8 GPUs and 4096 cores from anvil account 6; returns its id.
async fn devnet_list_gpu(f: &Federation, peer_id: Vec<u8>) -> u64 {
    let client = f.devnet.client(6).await.unwrap();
    let sent = client
        .list_machine(
            MachineSpecs {
                cpuCores: 4096,
                ramMb: 1 << 20,
                gpuModel: "NVIDIA H100".into(),
                gpuCount: 8,
                peerId: peer_id.into(),
                multiaddr: "/ip4/127.0.0.1/tcp/9".into(),
            },
            duck("10"),
        )
        .await
        .unwrap();
    u64::try_from(sent.value).unwrap()
}

fn sigterm(p: &mut NodeProcess) {
    let pid = p.child.id().to_string();
    let ok = Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .unwrap()
        .success();
    assert!(ok);
    for _ in 0..600 {
        if p.child.try_wait().unwrap().is_some() {
            return;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    panic!("node did not exit within 60 s of SIGTERM");
}

/// Runs `quackmesh node ARGS` expecting it to exit with an error within 60 s; its stderr.
fn node_fails(f: &Federation, args: &[&str]) -> String {
    let mut child = Command::new(bin())
        .arg("node")
        .args([
            "--data-dir",
            &f.dir.path().join("bad").display().to_string(),
        ])
        .args(["--listen", "/ip4/127.0.0.1/tcp/0", "--api", "127.0.0.1:0"])
        .args(args)
        .env_clear()
        .env("QUACKMESH_LOG", "warn")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    for _ in 0..600 {
        if let Some(status) = child.try_wait().unwrap() {
            assert!(!status.success());
            let mut err = String::new();
            std::io::Read::read_to_string(child.stderr.as_mut().unwrap(), &mut err).unwrap();
            return err;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    let _ = child.kill();
    let _ = child.wait();
    panic!("quackmesh node {args:?} kept running");
}

/// A restarted provider keeps its machine id (no second listing) and updates its price; with
/// --unlist-on-exit it unlists on SIGTERM; the next start lists anew, and `market unlist`
/// takes that listing off while the node runs.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restarted_provider_keeps_its_machine_and_unlists_on_exit() {
    let mut f = Federation::start(bin()).await;
    let chain = f.devnet.reader().await.unwrap();
    let mut p = f.node("p", 1, &["--provide", "--price", "1"]);
    let id = listed(&f, &p).await;
    // A rental, seen and ended, before the store is lost.
    let rented: ClusterRented = cli_json(
        &f,
        &[
            "market",
            "rent",
            "--hours",
            "1",
            "--dev-account",
            "8",
            "--json",
        ],
    )
    .await;
    let first = rented.members[0].rental_id;
    wait_for("rental seen", Duration::from_secs(30), || async {
        (provider(&f, &p).await.rentals.len() == 1).then_some(())
    })
    .await;
    let (ok, _, err) = cli(
        &f,
        &["market", "end", &first.to_string(), "--dev-account", "8"],
    )
    .await;
    assert!(ok, "{err}");
    p.kill();

    // Restarted with its store lost (the identity kept): the listing is found on chain, not
    // made twice, and the rental history comes back from the chain's events.
    std::fs::remove_file(f.dir.path().join("p").join("node.redb")).unwrap();
    let mut p = f.node("p", 1, &["--provide", "--price", "2.5", "--unlist-on-exit"]);
    assert_eq!(listed(&f, &p).await, id);
    let view = wait_for("rental replayed", Duration::from_secs(30), || async {
        let v = provider(&f, &p).await;
        v.rentals
            .first()
            .is_some_and(|r| r.rental_id == first && r.ended_at.is_some())
            .then_some(v)
    })
    .await;
    assert_eq!(view.rentals.len(), 1);
    wait_for("price updated", Duration::from_secs(30), || async {
        let m = chain.machine(U256::from(id)).await.unwrap();
        (m.pricePerHour == duck("2.5")).then_some(())
    })
    .await;
    assert_eq!(chain.machine_count().await.unwrap(), U256::from(1));
    let view = wait_for("update stored", Duration::from_secs(30), || async {
        let v = provider(&f, &p).await;
        v.listing
            .as_ref()
            .is_some_and(|l| l.price_per_hour == wei("2.5"))
            .then_some(v)
    })
    .await;
    assert!(view.providing);

    // The human forms of `market rent` and `market end` (the rental ends before the exit: a
    // rented machine cannot be unlisted).
    let (ok, out, err) = cli(
        &f,
        &["market", "rent", "--hours", "3", "--dev-account", "7"],
    )
    .await;
    assert!(ok, "{err}");
    assert!(
        out.contains("rented for 3 hour(s): 7.5 DUCK in escrow")
            && out.contains(&p.peer_id.to_string()),
        "{out}"
    );
    let rental = chain.machine(U256::from(id)).await.unwrap().lastRentalId;
    let (ok, out, err) = cli(
        &f,
        &["market", "end", &rental.to_string(), "--dev-account", "7"],
    )
    .await;
    assert!(ok, "{err}");
    assert!(
        out.contains(&format!("rental {rental} ended; refunded ")),
        "{out}"
    );

    sigterm(&mut p);
    let m = chain.machine(U256::from(id)).await.unwrap();
    assert!(!m.listed, "unlisted on exit");

    // Unlisted machines cannot come back: the next start lists a new one.
    let p = f.node("p", 1, &["--provide", "--price", "2.5"]);
    let id2 = wait_for("listed anew", Duration::from_secs(60), || async {
        provider(&f, &p)
            .await
            .listing
            .filter(|l| l.listed && l.machine_id != id)
            .map(|l| l.machine_id)
    })
    .await;
    assert_eq!(chain.machine_count().await.unwrap(), U256::from(2));

    let (ok, out, err) = cli(
        &f,
        &["market", "unlist", &id2.to_string(), "--dev-account", "1"],
    )
    .await;
    assert!(ok && out.contains("unlisted"), "{err}");
    assert!(!chain.machine(U256::from(id2)).await.unwrap().listed);
    wait_for("unlisting seen", Duration::from_secs(30), || async {
        let v = provider(&f, &p).await;
        v.listing.filter(|l| !l.listed).map(|_| ())
    })
    .await;
    // A provider needs a price and a chain.
    let err = node_fails(&f, &["--provide"]);
    assert!(err.contains("--provide needs the chain"), "{err}");
    let rpc = f.devnet.rpc_url().to_owned();
    let dep = f.devnet.deployment_path().display().to_string();
    let chain_args = [
        "--rpc-url",
        &rpc,
        "--deployment",
        &dep,
        "--dev-account",
        "4",
    ];
    let err = node_fails(&f, &[&["--provide"][..], &chain_args].concat());
    assert!(err.contains("--provide needs --price"), "{err}");
    let err = node_fails(
        &f,
        &[&["--provide", "--price", "0"][..], &chain_args].concat(),
    );
    assert!(err.contains("must be above 0"), "{err}");

    // Another provider's key cannot unlist it.
    let (ok, _, err) = cli(&f, &["market", "unlist", "1", "--dev-account", "2"]).await;
    assert!(!ok && err.contains("ComputeMarketplace"), "{err}");
}
