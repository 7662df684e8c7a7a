//! Test helpers for federated training: an anvil devnet with the contracts, `quackmesh node`
//! processes connected to it and to each other, MNIST partitions for contributors, and a small
//! HTTP client for the nodes' APIs.

use std::{
    path::{Path, PathBuf},
    time::Duration,
};

use serde::de::DeserializeOwned;

use crate::{
    learn::{Dataset, Split, data::Scheme, data::partition},
    roles::{
        coordinator::AggregateRecord,
        jobs::JobRecord,
        requester::{JobRequest, JobSubmitted},
    },
    test_utils::{
        chain::{Devnet, DevnetOptions},
        mesh::{NodeProcess, TempDir},
    },
};

/// A devnet, a work directory and the `quackmesh` binary to start nodes with.
#[derive(Debug)]
pub struct Federation {
    /// The chain.
    pub devnet: Devnet,
    /// Data dirs, partitions.
    pub dir: TempDir,
    /// The binary (`env!("CARGO_BIN_EXE_quackmesh")` in integration tests).
    pub bin: PathBuf,
    /// The first node's address, which later nodes bootstrap from.
    pub bootstrap: Option<String>,
    http: reqwest::Client,
}

impl Federation {
    /// Starts a devnet with the contracts deployed, anvil's accounts funded, and a block every
    /// second besides those of transactions (leases expire by the chain's clock, as on DuckChain).
    pub async fn start(bin: &Path) -> Self {
        let devnet = Devnet::start_with(DevnetOptions {
            clock_secs: Some(1),
            ..DevnetOptions::default()
        })
        .await
        .expect("devnet starts");
        Self {
            devnet,
            dir: TempDir::new(),
            bin: bin.to_path_buf(),
            bootstrap: None,
            http: reqwest::Client::builder()
                .timeout(Duration::from_secs(120))
                .build()
                .expect("http client"),
        }
    }

    /// Starts `quackmesh node` named `name` with anvil account `account` as its key, `args`
    /// (roles, --data ...) and one training thread. The first node started is the others'
    /// bootstrap peer.
    pub fn node(&mut self, name: &str, account: usize, args: &[&str]) -> NodeProcess {
        let key = ["--dev-account".to_owned(), account.to_string()];
        self.spawn(name, &key, args)
    }

    /// `quackmesh node --contribute --data DIR` named `name`, signing as anvil account `account`.
    pub fn contributor(&mut self, name: &str, account: usize, data: &Path) -> NodeProcess {
        let data = data.display().to_string();
        self.node(name, account, &["--contribute", "--data", &data])
    }

    /// A new random chain key with 100 ETH for gas (and no $DUCK), written to a file for
    /// `--private-key-file`: for more participants than anvil's ten accounts.
    pub async fn fresh_key(&self, name: &str) -> PathBuf {
        let signer = alloy::signers::local::PrivateKeySigner::random();
        self.devnet
            .set_eth_balance(
                signer.address(),
                alloy::primitives::U256::from(10u128.pow(20)),
            )
            .await
            .expect("fund the key");
        let path = self.dir.path().join(format!("{name}.key"));
        std::fs::write(&path, alloy::hex::encode(signer.to_bytes())).expect("write key");
        path
    }

    /// [`Federation::node`] signing with the key in `key_file` (see [`Federation::fresh_key`]).
    pub fn node_with_key(&mut self, name: &str, key_file: &Path, args: &[&str]) -> NodeProcess {
        let key = [
            "--private-key-file".to_owned(),
            key_file.display().to_string(),
        ];
        self.spawn(name, &key, args)
    }

    fn spawn(&mut self, name: &str, key: &[String], args: &[&str]) -> NodeProcess {
        let data_dir = self.dir.path().join(name);
        let mut all: Vec<String> = vec![
            "--network".into(),
            "devnet".into(),
            "--rpc-url".into(),
            self.devnet.rpc_url().to_owned(),
            "--deployment".into(),
            self.devnet.deployment_path().display().to_string(),
        ];
        all.extend_from_slice(key);
        if let Some(b) = &self.bootstrap {
            all.extend(["--bootstrap".into(), b.clone()]);
        }
        all.extend(args.iter().map(|s| (*s).to_owned()));
        let log = std::env::var("QUACKMESH_TEST_LOG").unwrap_or_else(|_| "warn".into());
        let p = NodeProcess::spawn_with_env(
            &self.bin,
            &data_dir,
            &all,
            &[("RAYON_NUM_THREADS", "1"), ("QUACKMESH_LOG", &log)],
        );
        if self.bootstrap.is_none() {
            self.bootstrap = p.listen.first().map(ToString::to_string);
        }
        p
    }

    /// Writes `data` split IID into `parts` directories of IDX files; returns them.
    pub fn partitions(&self, data: &Dataset, parts: usize, seed: u64) -> Vec<PathBuf> {
        let lists = partition(data.labels(), parts, Scheme::Iid, seed).expect("partition");
        lists
            .iter()
            .enumerate()
            .map(|(i, idx)| {
                let dir = self.dir.path().join(format!("part-{i}"));
                data.subset(idx)
                    .expect("subset")
                    .save_dir(&dir, Split::Train)
                    .expect("write partition");
                dir
            })
            .collect()
    }

    /// GETs JSON from a node's API.
    pub async fn get<T: DeserializeOwned>(&self, api: &str, path: &str) -> T {
        let resp = self
            .http
            .get(format!("{api}{path}"))
            .send()
            .await
            .expect("GET");
        assert!(resp.status().is_success(), "GET {path}: {}", resp.status());
        resp.json().await.expect("JSON")
    }

    /// Uploads `data` as a validation set and submits `req` (its `validation_blob` replaced).
    pub async fn submit(&self, api: &str, data: &Dataset, mut req: JobRequest) -> JobSubmitted {
        let resp = self
            .http
            .post(format!("{api}/api/blob"))
            .body(data.to_bytes().expect("dataset bytes"))
            .send()
            .await
            .expect("upload");
        assert!(resp.status().is_success(), "upload: {}", resp.status());
        let put: crate::api::blob::PutResponse = resp.json().await.expect("JSON");
        req.validation_blob = put.id;
        let resp = self
            .http
            .post(format!("{api}/api/job"))
            .json(&req)
            .send()
            .await
            .expect("POST");
        let status = resp.status();
        let body = resp.text().await.unwrap_or_default();
        assert!(status.is_success(), "job submission: {status}: {body}");
        serde_json::from_str(&body).expect("JobSubmitted")
    }

    /// The rounds of `job_id` that the node at `api` aggregated as coordinator, by round.
    pub async fn aggregates(&self, api: &str, job_id: u64) -> Vec<AggregateRecord> {
        let mut all: Vec<AggregateRecord> = self
            .get(api, &format!("/api/job/{job_id}/aggregates"))
            .await;
        all.sort_by_key(|a| a.round);
        all
    }

    /// Polls the coordinator at `api` every 20 ms, for at most `timeout`, until it has
    /// aggregated `round` of `job_id`. The coordinator knows at once; the requester learns of
    /// the round from the chain, hundreds of milliseconds (several quick rounds) later.
    pub async fn wait_aggregate(
        &self,
        api: &str,
        job_id: u64,
        round: u64,
        timeout: Duration,
    ) -> AggregateRecord {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            if let Some(a) = self
                .aggregates(api, job_id)
                .await
                .into_iter()
                .find(|a| a.round == round)
            {
                return a;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "round {round} of job {job_id} not aggregated after {timeout:?}"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Polls `GET /api/job/{id}` until `done` holds, for at most `timeout`.
    pub async fn wait_job(
        &self,
        api: &str,
        job_id: u64,
        timeout: Duration,
        done: impl Fn(&JobRecord) -> bool,
    ) -> JobRecord {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let r: JobRecord = self.get(api, &format!("/api/job/{job_id}")).await;
            if done(&r) {
                return r;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "job {job_id} not there after {timeout:?}: {r:?}"
            );
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
    }
}

/// A job request with the test defaults: `rounds` rounds, `k` updates per round, a 60 DUCK pool.
pub fn request(rounds: u64, k: u32) -> JobRequest {
    serde_json::from_value(serde_json::json!({
        "reward": "60",
        "rounds": rounds,
        "min_contributors": k,
        "validation_blob": crate::hash::Hash32::default(),
        "claim_window_secs": 2,
    }))
    .expect("valid request")
}

/// Now, in milliseconds since the Unix epoch (the clock of [`AggregateRecord::at_unix_ms`]).
pub fn unix_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// The rounds whose head went out after `ms` (unix): a round's head is sent as the round
/// before it is aggregated, so these are the rounds after the first whose predecessor's
/// aggregate is stamped later than `ms`. A node dead since `ms` cannot have trained them.
pub fn rounds_opened_after(aggs: &[AggregateRecord], ms: u64) -> Vec<u64> {
    aggs.windows(2)
        .filter(|w| w[0].at_unix_ms > ms && w[1].round == w[0].round + 1)
        .map(|w| w[1].round)
        .collect()
}
