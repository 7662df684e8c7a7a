//! `quackmesh job submit|status|model|list`: talk to a running node's HTTP API.

use std::path::Path;

use anyhow::{Context, bail};
use quackmesh::{
    api::blob::PutResponse,
    learn::{Dataset, data::Split},
    roles::{
        jobs::JobRecord,
        requester::{JobRequest, JobSubmitted},
    },
};

use crate::cli::job::{JobArgs, JobCommand, SubmitArgs};

pub(crate) async fn run(args: JobArgs) -> anyhow::Result<()> {
    let http = super::http::api_client()?;
    let node = args.node.trim_end_matches('/').to_owned();
    match args.command {
        JobCommand::Submit(s) => submit(&http, &node, *s).await,
        JobCommand::Status { id, json } => status(&http, &node, id, json).await,
        JobCommand::Model { id, output } => model(&http, &node, id, &output).await,
        JobCommand::List => list(&http, &node).await,
    }
}

pub(crate) async fn check(
    resp: reqwest::Response,
    what: &str,
) -> anyhow::Result<reqwest::Response> {
    if resp.status().is_success() {
        return Ok(resp);
    }
    let status = resp.status();
    let body = resp.text().await.unwrap_or_default();
    let msg = serde_json::from_str::<serde_json::Value>(&body)
        .ok()
        .and_then(|v| v.get("error").and_then(|e| e.as_str()).map(str::to_owned))
        .unwrap_or(body);
    bail!("{what} failed: {status}: {msg}")
}

/// The validation split of a directory: the test files when present, else the training files.
fn load_validation(dir: &Path, limit: Option<usize>) -> anyhow::Result<Dataset> {
    let data = Dataset::load_dir(dir, Split::Test)
        .or_else(|_| Dataset::load_dir(dir, Split::Train))
        .with_context(|| format!("no MNIST-format images and labels in {}", dir.display()))?;
    Ok(match limit {
        Some(n) => data.take(n),
        None => data,
    })
}

async fn submit(http: &reqwest::Client, node: &str, a: SubmitArgs) -> anyhow::Result<()> {
    let data = load_validation(&a.validation, a.validation_limit)?;
    let bytes = data.to_bytes()?;
    let resp = http
        .post(format!("{node}/api/blob"))
        .body(bytes)
        .send()
        .await
        .with_context(|| format!("cannot reach the node at {node}"))?;
    let put: PutResponse = check(resp, "validation upload").await?.json().await?;
    let dataset_blob = match &a.dataset {
        Some(dir) => {
            let data = Dataset::load_dir(dir, Split::Train)
                .with_context(|| format!("no MNIST-format training files in {}", dir.display()))?;
            let data = match a.dataset_limit {
                Some(n) => data.take(n),
                None => data,
            };
            // Private from the upload on: the node shares it with the cluster when the job
            // is accepted.
            let resp = http
                .post(format!("{node}/api/blob?private=true"))
                .body(data.to_bytes()?)
                .send()
                .await?;
            let put: PutResponse = check(resp, "training set upload").await?.json().await?;
            println!("training set: {} ({} images)", put.id, data.len());
            Some(put.id)
        }
        None => None,
    };
    let req = JobRequest {
        model: a.model,
        rounds: a.rounds,
        reward: a.reward,
        min_accuracy: a.min_accuracy,
        validation_blob: put.id,
        min_contributors: a.min_contributors,
        quorum: Some(a.quorum),
        round_timeout_secs: a.round_timeout,
        aggregator: a.aggregator,
        epochs: a.epochs,
        batch_size: a.batch_size,
        lr: a.lr,
        optimizer: a.optimizer,
        lr_schedule: a.lr_schedule,
        seed: a.seed,
        lease_secs: a.lease,
        claim_window_secs: a.claim_window,
        deadline_secs: 24 * 3600,
        max_update_norm: a.max_update_norm,
        cluster_id: a.cluster,
        dataset_blob,
    };
    let resp = http
        .post(format!("{node}/api/job"))
        .json(&req)
        .send()
        .await?;
    let job: JobSubmitted = check(resp, "job submission").await?.json().await?;
    println!("job_id: {}", job.job_id);
    println!("tx: {}", job.tx_hash);
    println!("model: {}", job.model);
    println!("validation: {} ({} images)", job.validation, data.len());
    println!(
        "reward: {} DUCK deposited, {} DUCK per accepted update",
        job.total_reward_pool, job.reward_per_update
    );
    Ok(())
}

async fn status(http: &reqwest::Client, node: &str, id: u64, json: bool) -> anyhow::Result<()> {
    let resp = http.get(format!("{node}/api/job/{id}")).send().await?;
    let r: JobRecord = check(resp, "job status").await?.json().await?;
    if json {
        println!("{}", serde_json::to_string_pretty(&r)?);
        return Ok(());
    }
    println!(
        "job {}: {:?}, {}/{} rounds, term {} held by 0x{}",
        r.job_id,
        r.status,
        r.rounds_done.len(),
        r.rounds,
        r.term,
        hex::encode(r.holder)
    );
    println!("{:>5}  {:>8}  {:>4}  model", "round", "accuracy", "term");
    for round in &r.rounds_done {
        println!(
            "{:>5}  {:>7.2}%  {:>4}  {}",
            round.round,
            f64::from(round.accuracy_bps) / 100.0,
            round.term,
            round.model
        );
    }
    for reward in &r.rewards {
        let amount = reward
            .amount
            .parse()
            .map(quackmesh::chain::config::format_duck)
            .unwrap_or_else(|_| reward.amount.clone());
        println!(
            "reward: round {} 0x{} {} DUCK",
            reward.round,
            hex::encode(reward.contributor),
            amount
        );
    }
    if let Some(refund) = &r.refund {
        let amount = refund
            .parse()
            .map(quackmesh::chain::config::format_duck)
            .unwrap_or_else(|_| refund.clone());
        println!("refunded: {amount} DUCK");
    }
    Ok(())
}

async fn model(http: &reqwest::Client, node: &str, id: u64, output: &Path) -> anyhow::Result<()> {
    let resp = http
        .get(format!("{node}/api/job/{id}/model"))
        .send()
        .await?;
    let resp = check(resp, "model download").await?;
    let round = resp
        .headers()
        .get("x-quackmesh-round")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("?")
        .to_owned();
    let bytes = resp.bytes().await?;
    quackmesh::roles::job::decode_weights(&bytes)
        .context("the node sent something that is not model weights")?;
    tokio::fs::write(output, &bytes)
        .await
        .with_context(|| format!("cannot write {}", output.display()))?;
    println!(
        "wrote the global model after round {round} to {} ({} bytes)",
        output.display(),
        bytes.len()
    );
    Ok(())
}

async fn list(http: &reqwest::Client, node: &str) -> anyhow::Result<()> {
    let resp = http.get(format!("{node}/api/jobs")).send().await?;
    let jobs: Vec<JobRecord> = check(resp, "job list").await?.json().await?;
    for r in jobs {
        let acc = r.rounds_done.last().map_or("-".to_owned(), |x| {
            format!("{:.2}%", f64::from(x.accuracy_bps) / 100.0)
        });
        println!(
            "{:>4}  {:?}  {}/{} rounds  accuracy {acc}",
            r.job_id,
            r.status,
            r.rounds_done.len(),
            r.rounds
        );
    }
    Ok(())
}
