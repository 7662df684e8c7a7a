//! `quackmesh infer submit|status|output|list`: talk to the renter's node's HTTP API.

use std::{path::Path, time::Duration};

use anyhow::{Context, bail};
use indicatif::{ProgressBar, ProgressStyle};
use quackmesh::{
    api::blob::PutResponse,
    hash::Hash32,
    roles::infer_requester::{InferRequest, InferStatus, InferSubmitted, InferView},
};

use crate::{
    cli::infer::{InferArgs, InferCommand, SubmitArgs},
    commands::job::check,
};

pub(crate) async fn run(args: InferArgs) -> anyhow::Result<()> {
    let http = super::http::api_client()?;
    let node = args.node.trim_end_matches('/').to_owned();
    match args.command {
        InferCommand::Submit(s) => submit(&http, &node, *s).await,
        InferCommand::Status { id, json } => status(&http, &node, id, json).await,
        InferCommand::Output { id, output } => write_output(&http, &node, id, &output).await,
        InferCommand::List => list(&http, &node).await,
    }
}

/// Uploads a file to the node; a `private` blob is fetchable by nobody until the node shares
/// it (with the cluster, when the request is accepted).
async fn upload(
    http: &reqwest::Client,
    node: &str,
    path: &Path,
    what: &str,
    private: bool,
) -> anyhow::Result<Hash32> {
    let bytes = tokio::fs::read(path)
        .await
        .with_context(|| format!("cannot read the {what} {}", path.display()))?;
    let query = if private { "?private=true" } else { "" };
    let resp = http
        .post(format!("{node}/api/blob{query}"))
        .body(bytes)
        .send()
        .await
        .with_context(|| format!("cannot reach the node at {node}"))?;
    let put: PutResponse = check(resp, &format!("{what} upload")).await?.json().await?;
    Ok(put.id)
}

async fn submit(http: &reqwest::Client, node: &str, a: SubmitArgs) -> anyhow::Result<()> {
    let model = match a.model.parse::<Hash32>() {
        Ok(h) if !Path::new(&a.model).exists() => h,
        _ => upload(http, node, Path::new(&a.model), "model", false).await?,
    };
    let input = upload(http, node, &a.input, "input", true).await?;
    let req = InferRequest {
        model,
        input_blob: input,
        cluster_id: a.cluster,
        max_payment: a.max_payment,
        price_per_second: a.price_per_second,
        parts: a.parts,
        timeout_secs: Some(a.timeout),
    };
    let resp = http
        .post(format!("{node}/api/infer"))
        .json(&req)
        .send()
        .await
        .with_context(|| format!("cannot reach the node at {node}"))?;
    let job: InferSubmitted = check(resp, "inference submission").await?.json().await?;
    if a.json {
        println!("{}", serde_json::to_string(&job)?);
    } else {
        println!("inference_job: {}", job.job_id);
        println!("tx: {}", job.tx_hash);
        println!(
            "{} images in {} parts, {} DUCK per compute second, {} DUCK deposited",
            job.images, job.parts, job.price_per_second, job.max_payment
        );
    }
    let Some(output) = a.output else {
        return Ok(());
    };
    let bar = if a.json {
        ProgressBar::hidden()
    } else {
        ProgressBar::new(u64::from(job.parts))
    };
    bar.set_style(
        ProgressStyle::with_template("{spinner} parts {pos}/{len} {wide_bar} {elapsed} {msg}")
            .unwrap_or_else(|_| ProgressStyle::default_bar()),
    );
    // Bounded by the job's own timeout plus the time to finish on chain.
    let until = tokio::time::Instant::now() + Duration::from_secs(a.timeout + 60);
    let view = loop {
        let resp = http
            .get(format!("{node}/api/infer/{}", job.job_id))
            .send()
            .await?;
        let v: InferView = check(resp, "inference status").await?.json().await?;
        bar.set_position(v.parts_done as u64);
        if v.status != InferStatus::Running {
            break v;
        }
        if tokio::time::Instant::now() > until {
            bar.abandon();
            bail!(
                "inference job {} still runs after {} s",
                job.job_id,
                a.timeout + 60
            );
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    bar.finish_and_clear();
    if view.status == InferStatus::Failed {
        bail!(
            "inference job {} failed: {}",
            view.job_id,
            view.error.as_deref().unwrap_or("unknown")
        );
    }
    write_output(http, node, job.job_id, &output).await?;
    if !a.json {
        summary(&view);
    }
    Ok(())
}

fn summary(v: &InferView) {
    println!(
        "inference job {}: {:?}, {}/{} parts, {} images, {} ms of compute",
        v.job_id,
        v.status,
        v.parts_done,
        v.parts.len(),
        v.images,
        v.compute_ms
    );
    for p in &v.parts {
        println!(
            "  part {:>4}  images {:>7}+{:<6} {:<8} {:>7} ms  {:>12} DUCK  {}",
            p.part,
            p.start,
            p.count,
            p.state,
            p.compute_ms.map_or("-".into(), |m| m.to_string()),
            p.payment.as_deref().unwrap_or("-"),
            p.worker.as_deref().unwrap_or("-"),
        );
    }
    if let (Some(paid), Some(refund)) = (&v.paid, &v.refund) {
        println!(
            "paid {paid} DUCK, refunded {refund} DUCK of {}",
            v.max_payment
        );
    }
    if let Some(ms) = v.elapsed_ms {
        println!("took {:.2} s", ms as f64 / 1000.0);
    }
    if let Some(e) = &v.error {
        println!("last problem: {e}");
    }
}

async fn status(http: &reqwest::Client, node: &str, id: u64, json: bool) -> anyhow::Result<()> {
    let resp = http.get(format!("{node}/api/infer/{id}")).send().await?;
    let v: InferView = check(resp, "inference status").await?.json().await?;
    if json {
        println!("{}", serde_json::to_string_pretty(&v)?);
    } else {
        summary(&v);
    }
    Ok(())
}

async fn write_output(
    http: &reqwest::Client,
    node: &str,
    id: u64,
    output: &Path,
) -> anyhow::Result<()> {
    let resp = http
        .get(format!("{node}/api/infer/{id}/output"))
        .send()
        .await?;
    let text = check(resp, "inference output").await?.text().await?;
    tokio::fs::write(output, &text)
        .await
        .with_context(|| format!("cannot write {}", output.display()))?;
    println!(
        "wrote {} predictions to {}",
        text.lines().count(),
        output.display()
    );
    Ok(())
}

async fn list(http: &reqwest::Client, node: &str) -> anyhow::Result<()> {
    let resp = http.get(format!("{node}/api/infers")).send().await?;
    let all: Vec<InferView> = check(resp, "inference list").await?.json().await?;
    for v in all {
        println!(
            "{:>4}  {:?}  cluster {}  {}/{} parts  {} images",
            v.job_id,
            v.status,
            v.cluster_id,
            v.parts_done,
            v.parts.len(),
            v.images
        );
    }
    Ok(())
}
