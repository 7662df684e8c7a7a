//! The requester's side of distributed inference (`POST /api/infer`, `quackmesh infer`): checks
//! the request, shares the input with the cluster, creates the `InferencePool` job (the
//! deposit goes into escrow), then drives it: hands parts to the cluster's rented machines
//! ([`Plan`]), checks every answer against the chain (the part was posted by that machine's
//! provider with that output hash) and against the part asked for, moves a failed part to
//! another machine, joins the predictions in order and finishes the job, which refunds what
//! was not paid. The record, with every finished part, is stored after each change, so a
//! restarted node resumes the job where it was.

use std::{collections::HashMap, time::Duration};

use alloy::primitives::{Address, U256};
use libp2p::{Multiaddr, PeerId};
use serde::{Deserialize, Serialize};
use tokio::sync::mpsc;

use crate::{
    chain::{
        self,
        config::{format_duck, parse_duck},
    },
    hash::Hash32,
    learn::{Dataset, ModelSpec},
    mesh::{
        Client,
        message::{RpcRequest, RpcResponse},
    },
    roles::{
        blobs::get_blob,
        cluster::PeerBytes,
        inference::{
            MAX_INPUT_BYTES, MAX_OUTPUT_BYTES, MAX_PARTS, PartOutput, PartState, Plan,
            default_parts, default_price_per_second,
        },
        job::{MAX_WEIGHTS_BYTES, decode_weights},
        runtime::{RolesHandle, now_ms},
        wire::InferTask,
    },
    store::{Db, Tree},
};

/// Inference jobs this node requested, by id (big-endian).
pub const INFER_JOBS: Tree<InferRecord> = Tree::new("roles.inference");
/// How often the cluster's machines are read again from the chain.
const WORKERS_REFRESH_MS: u64 = 5_000;
/// Longest an answer to one part may take (the mesh's own request timeout comes first).
const PART_TIMEOUT: Duration = Duration::from_secs(180);
/// Longest the driver waits for an output blob.
const OUTPUT_TIMEOUT: Duration = Duration::from_secs(60);

/// What a requester asks for (the JSON body of `POST /api/infer`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct InferRequest {
    /// The model blob (safetensors weights of the MLP or the CNN, e.g. a job's global model).
    pub model: Hash32,
    /// The input blob: an IDX file of 28x28 images (plain or gzip), uploaded to this node.
    pub input_blob: Hash32,
    /// The cluster to run on (rented by this node's account).
    pub cluster_id: u64,
    /// The most $DUCK the job may pay (deposited now; the rest is refunded at the end).
    pub max_payment: String,
    /// $DUCK per compute second [default: the dearest machine's hourly price / 3600].
    #[serde(default)]
    pub price_per_second: Option<String>,
    /// Parts the batch is cut into [default: one per machine, at most 5,000 images each].
    #[serde(default)]
    pub parts: Option<u32>,
    /// Seconds after which an unfinished job is given up [default: 600].
    #[serde(default)]
    pub timeout_secs: Option<u64>,
}

/// What `POST /api/infer` answers.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct InferSubmitted {
    /// The InferencePool job id.
    pub job_id: u64,
    /// The createInferenceJob transaction.
    pub tx_hash: String,
    /// Images in the input.
    pub images: u64,
    /// Parts the batch was cut into.
    pub parts: u32,
    /// Price per compute second ($DUCK).
    pub price_per_second: String,
    /// The deposit ($DUCK).
    pub max_payment: String,
}

/// Where an inference job stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum InferStatus {
    /// Parts are running.
    Running,
    /// Every part is in, the job is finished on chain.
    Finished,
    /// Given up (timeout, or the cluster ended).
    Failed,
}

/// A requested inference job, as stored.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct InferRecord {
    /// The job.
    pub job_id: u64,
    /// Its cluster.
    pub cluster_id: u64,
    /// The model blob.
    pub model: Hash32,
    /// The input blob.
    pub input: Hash32,
    /// Images in the input.
    pub images: u64,
    /// Wei per compute second.
    pub price_per_second: String,
    /// Deposit, wei.
    pub max_payment: String,
    /// Where it stands.
    pub status: InferStatus,
    /// The parts.
    pub plan: Plan,
    /// When it was submitted (unix ms).
    pub created_ms: u64,
    /// Given up after this (unix ms).
    pub deadline_ms: u64,
    /// When every part was in (unix ms).
    pub completed_ms: Option<u64>,
    /// Paid to the machines, wei (once finished).
    pub paid: Option<String>,
    /// Refunded, wei (once finished).
    pub refund: Option<String>,
    /// Why it failed, or the last problem seen.
    pub error: Option<String>,
}

/// One part as `GET /api/infer/{id}` shows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PartView {
    /// The part.
    pub part: u32,
    /// First image.
    pub start: u64,
    /// Images.
    pub count: u64,
    /// `pending`, `running` or `done`.
    pub state: String,
    /// The machine (PeerId) running or done with it.
    pub worker: Option<String>,
    /// Output blob.
    pub result: Option<Hash32>,
    /// Compute time posted.
    pub compute_ms: Option<u64>,
    /// $DUCK paid for it.
    pub payment: Option<String>,
    /// Failed tries.
    pub failures: u32,
}

/// `GET /api/infer/{id}`: a job without its predictions.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct InferView {
    /// The job.
    pub job_id: u64,
    /// Its cluster.
    pub cluster_id: u64,
    /// The model blob.
    pub model: Hash32,
    /// The input blob.
    pub input: Hash32,
    /// Images.
    pub images: u64,
    /// Where it stands.
    pub status: InferStatus,
    /// Parts done.
    pub parts_done: usize,
    /// The parts.
    pub parts: Vec<PartView>,
    /// Compute time posted, all parts.
    pub compute_ms: u64,
    /// $DUCK per compute second.
    pub price_per_second: String,
    /// Deposit ($DUCK).
    pub max_payment: String,
    /// Paid ($DUCK), once finished.
    pub paid: Option<String>,
    /// Refunded ($DUCK), once finished.
    pub refund: Option<String>,
    /// Milliseconds from submission until every part was in.
    pub elapsed_ms: Option<u64>,
    /// Why it failed, or the last problem seen.
    pub error: Option<String>,
}

impl InferRecord {
    /// The API's view.
    pub fn view(&self) -> InferView {
        let duck = |wei: &str| {
            wei.parse::<U256>()
                .map(format_duck)
                .unwrap_or_else(|_| wei.to_owned())
        };
        let peer =
            |p: &PeerBytes| PeerId::from_bytes(p).map_or_else(|_| "?".into(), |p| p.to_string());
        let parts = self
            .plan
            .parts
            .iter()
            .enumerate()
            .map(|(i, p)| {
                let (state, worker, result, compute_ms, payment) = match &p.state {
                    PartState::Pending { .. } => ("pending", None, None, None, None),
                    PartState::Running { worker } => {
                        ("running", Some(peer(worker)), None, None, None)
                    }
                    PartState::Done {
                        worker,
                        result,
                        compute_ms,
                        payment,
                    } => (
                        "done",
                        Some(peer(worker)),
                        Some(*result),
                        Some(*compute_ms),
                        Some(duck(payment)),
                    ),
                };
                PartView {
                    part: i as u32,
                    start: p.start,
                    count: p.count,
                    state: state.into(),
                    worker,
                    result,
                    compute_ms,
                    payment,
                    failures: p.failures,
                }
            })
            .collect();
        InferView {
            job_id: self.job_id,
            cluster_id: self.cluster_id,
            model: self.model,
            input: self.input,
            images: self.images,
            status: self.status,
            parts_done: self.plan.done_count(),
            parts,
            compute_ms: self.plan.compute_ms_total(),
            price_per_second: duck(&self.price_per_second),
            max_payment: duck(&self.max_payment),
            paid: self.paid.as_deref().map(duck),
            refund: self.refund.as_deref().map(duck),
            elapsed_ms: self.completed_ms.map(|c| c.saturating_sub(self.created_ms)),
            error: self.error.clone(),
        }
    }

    /// The predictions, one class per line, once every part is in.
    pub fn output_text(&self) -> Option<String> {
        let labels = self.plan.joined()?;
        let mut out = String::with_capacity(labels.len() * 2);
        for l in labels {
            out.push(char::from(b'0' + l));
            out.push('\n');
        }
        Some(out)
    }
}

/// Why an inference job could not be submitted.
#[derive(Debug, thiserror::Error)]
pub enum InferError {
    /// The request is invalid.
    #[error("invalid inference request: {0}")]
    Invalid(String),
    /// A blob is missing or not what it should be.
    #[error("{0}")]
    Blob(String),
    /// The chain refused or failed.
    #[error(transparent)]
    Chain(#[from] chain::Error),
    /// The store failed.
    #[error(transparent)]
    Store(#[from] crate::store::StoreError),
}

/// What the driver needs.
#[derive(Debug, Clone)]
pub struct InferContext {
    /// The mesh.
    pub mesh: Client,
    /// The chain, with the renter's key.
    pub chain: chain::Client,
    /// The store.
    pub db: Db,
    /// The roles' actor (shares the input with the cluster).
    pub roles: RolesHandle,
}

/// A machine of the cluster that runs now.
#[derive(Debug, Clone)]
struct Worker {
    peer: PeerId,
    provider: Address,
    price_per_hour: U256,
    addr: Option<Multiaddr>,
}

/// The cluster's running machines, read from the chain.
async fn workers(chain: &chain::Client, cluster_id: u64) -> Result<Vec<Worker>, chain::Error> {
    let now = chain.block_timestamp().await?;
    let mut out = Vec::new();
    for m in chain.cluster_members(U256::from(cluster_id)).await? {
        if !m.active {
            continue;
        }
        let r = chain.rental(m.rentalId).await?;
        if r.endedAt != 0 || r.end <= now {
            continue;
        }
        let Ok(peer) = PeerId::from_bytes(&m.peerId) else {
            continue;
        };
        out.push(Worker {
            peer,
            provider: m.provider,
            price_per_hour: r.pricePerHour,
            addr: m.multiaddr.parse().ok(),
        });
    }
    Ok(out)
}

fn key(job_id: u64) -> [u8; 8] {
    job_id.to_be_bytes()
}

/// Submits an inference job and starts driving it.
pub async fn submit_inference(
    ctx: &InferContext,
    req: &InferRequest,
) -> Result<InferSubmitted, InferError> {
    let bad = |m: String| InferError::Invalid(m);
    let max_payment = parse_duck(&req.max_payment).map_err(|e| bad(format!("max_payment: {e}")))?;
    if max_payment.is_zero() {
        return Err(bad("max_payment must be above 0".into()));
    }
    let me = ctx
        .chain
        .address()
        .ok_or_else(|| bad("this node has no chain key".into()))?;
    let cluster = U256::from(req.cluster_id);
    let renter = ctx.chain.cluster_renter(cluster).await?;
    if renter.is_zero() {
        return Err(bad(format!("there is no cluster {}", req.cluster_id)));
    }
    if renter != me {
        return Err(bad(format!(
            "cluster {} was rented by {renter:#x}, not by this node's account {me:#x}",
            req.cluster_id
        )));
    }
    let machines = workers(&ctx.chain, req.cluster_id).await?;
    if machines.is_empty() {
        return Err(bad(format!(
            "cluster {} has no running rental",
            req.cluster_id
        )));
    }

    // The model must be one a worker can run, the input a batch of images: fail here, not on
    // every machine.
    let model = get_blob(
        &ctx.mesh,
        req.model,
        Vec::new(),
        MAX_WEIGHTS_BYTES,
        OUTPUT_TIMEOUT,
    )
    .await
    .map_err(|e| InferError::Blob(format!("model: {e}")))?;
    let input = get_blob(
        &ctx.mesh,
        req.input_blob,
        Vec::new(),
        MAX_INPUT_BYTES,
        OUTPUT_TIMEOUT,
    )
    .await
    .map_err(|e| InferError::Blob(format!("input: {e}")))?;
    let images = tokio::task::spawn_blocking(move || -> Result<u64, String> {
        let w = decode_weights(&model).map_err(|e| format!("model: {e}"))?;
        ModelSpec::of_weights(&w).ok_or_else(|| "model: neither the MLP nor the CNN".to_owned())?;
        let data = Dataset::unlabelled_from_idx(&input, MAX_INPUT_BYTES)
            .map_err(|e| format!("input: {e}"))?;
        Ok(data.len() as u64)
    })
    .await
    .map_err(|e| InferError::Blob(e.to_string()))?
    .map_err(InferError::Blob)?;
    if images == 0 {
        return Err(bad("the input holds no image".into()));
    }
    let parts = match req.parts {
        Some(p) if p == 0 || p > MAX_PARTS || u64::from(p) > images => {
            return Err(bad(format!(
                "parts must be 1 to {}",
                images.min(u64::from(MAX_PARTS))
            )));
        }
        Some(p) => p,
        None => default_parts(images, machines.len()),
    };
    let price = match &req.price_per_second {
        Some(p) => parse_duck(p).map_err(|e| bad(format!("price_per_second: {e}")))?,
        None => default_price_per_second(
            machines
                .iter()
                .map(|m| m.price_per_hour)
                .max()
                .unwrap_or_default(),
        ),
    };
    if price.is_zero() {
        return Err(bad("price_per_second must be above 0".into()));
    }
    let timeout_secs = req.timeout_secs.unwrap_or(600);
    if !(1..=86_400).contains(&timeout_secs) {
        return Err(bad("timeout_secs must be 1 to 86400".into()));
    }

    // The input is private to the cluster from before the job exists.
    super::requester::share_with_cluster(&ctx.roles, req.cluster_id, req.input_blob)
        .await
        .map_err(|e| match e {
            super::requester::RequesterError::Invalid(m) => bad(m),
            e => bad(e.to_string()),
        })?;

    let sent = ctx
        .chain
        .create_inference_job(
            req.model.into(),
            req.input_blob.into(),
            cluster,
            parts,
            price,
            max_payment,
        )
        .await?;
    let job_id = crate::roles::jobs::small_id(sent.value)
        .ok_or_else(|| bad("job id out of range".into()))?;
    let now = now_ms();
    let record = InferRecord {
        job_id,
        cluster_id: req.cluster_id,
        model: req.model,
        input: req.input_blob,
        images,
        price_per_second: price.to_string(),
        max_payment: max_payment.to_string(),
        status: InferStatus::Running,
        plan: Plan::new(images, parts),
        created_ms: now,
        deadline_ms: now.saturating_add(timeout_secs * 1000),
        completed_ms: None,
        paid: None,
        refund: None,
        error: None,
    };
    ctx.db.put(INFER_JOBS, &key(job_id), &record)?;
    tracing::info!(target: "roles::infer", job_id, images, parts, cluster_id = req.cluster_id, "inference job created");
    tokio::spawn(drive(ctx.clone(), record));
    Ok(InferSubmitted {
        job_id,
        tx_hash: format!("{:#x}", sent.tx_hash()),
        images,
        parts,
        price_per_second: format_duck(price),
        max_payment: format_duck(max_payment),
    })
}

/// Resumes the unfinished inference jobs of this node (at start).
pub fn resume(ctx: &InferContext) -> Result<usize, crate::store::StoreError> {
    let mut n = 0;
    for (_, mut record) in ctx.db.scan(INFER_JOBS, b"")? {
        if record.status != InferStatus::Running {
            continue;
        }
        record.plan.reset_running();
        tracing::info!(target: "roles::infer", job_id = record.job_id, done = record.plan.done_count(), "resuming inference job");
        tokio::spawn(drive(ctx.clone(), record));
        n += 1;
    }
    Ok(n)
}

/// The stored record of job `job_id`.
pub fn record(db: &Db, job_id: u64) -> Result<Option<InferRecord>, crate::store::StoreError> {
    db.get(INFER_JOBS, &key(job_id))
}

/// Every stored job, newest first.
pub fn records(db: &Db) -> Result<Vec<InferRecord>, crate::store::StoreError> {
    let mut all: Vec<InferRecord> = db
        .scan(INFER_JOBS, b"")?
        .into_iter()
        .map(|(_, r)| r)
        .collect();
    all.reverse();
    Ok(all)
}

/// An answer from a machine, checked.
type PartAnswer = (
    u32,
    PeerBytes,
    Result<(Hash32, u64, String, Vec<u8>), String>,
);

/// Drives a job until every part is in and the job is finished on chain, or it times out.
async fn drive(ctx: InferContext, mut record: InferRecord) {
    let (tx, mut rx) = mpsc::channel::<PartAnswer>(64);
    let mut machines: HashMap<PeerBytes, Worker> = HashMap::new();
    let mut read_at = 0u64;
    let chain_id = ctx.chain.deployment().chain_id;
    let save = |r: &InferRecord| {
        if let Err(e) = ctx.db.put(INFER_JOBS, &key(r.job_id), r) {
            tracing::warn!(target: "roles::infer", job_id = r.job_id, error = %e, "cannot save inference job");
        }
    };
    while record.status == InferStatus::Running {
        let now = now_ms();
        if record.plan.is_complete() {
            if record.completed_ms.is_none() {
                record.completed_ms = Some(now);
                save(&record);
            }
            match finish(&ctx.chain, record.job_id).await {
                Ok((paid, refund)) => {
                    record.paid = Some(paid.to_string());
                    record.refund = Some(refund.to_string());
                    record.status = InferStatus::Finished;
                    record.error = None;
                    tracing::info!(target: "roles::infer", job_id = record.job_id, paid = %format_duck(paid), refund = %format_duck(refund), "inference job finished");
                }
                Err(e) => {
                    record.error = Some(format!("finishInferenceJob: {e}"));
                    tracing::warn!(target: "roles::infer", job_id = record.job_id, error = %e, "cannot finish inference job; will retry");
                    tokio::time::sleep(Duration::from_secs(2)).await;
                }
            }
            save(&record);
            continue;
        }
        if now > record.deadline_ms {
            record.status = InferStatus::Failed;
            record.error = Some(format!(
                "timed out with {} of {} parts",
                record.plan.done_count(),
                record.plan.parts.len()
            ));
            save(&record);
            break;
        }
        if now.saturating_sub(read_at) >= WORKERS_REFRESH_MS || machines.is_empty() {
            read_at = now;
            match workers(&ctx.chain, record.cluster_id).await {
                Ok(ws) => {
                    for w in &ws {
                        if let Some(addr) = w.addr.clone() {
                            let _ = ctx.mesh.add_peer_address(w.peer, addr).await;
                        }
                    }
                    machines = ws.into_iter().map(|w| (w.peer.to_bytes(), w)).collect();
                }
                Err(e) => {
                    tracing::warn!(target: "roles::infer", job_id = record.job_id, error = %e, "cannot read the cluster")
                }
            }
        }
        let mut ids: Vec<PeerBytes> = machines.keys().cloned().collect();
        ids.sort();
        let assigned = record.plan.assign(now, &ids);
        for (part, worker) in &assigned {
            let Some(m) = machines.get(worker).cloned() else {
                continue;
            };
            let slot = &record.plan.parts[*part as usize];
            let task = InferTask {
                chain_id,
                job_id: record.job_id,
                cluster_id: record.cluster_id,
                part: *part,
                parts: record.plan.parts.len() as u32,
                start: slot.start,
                count: slot.count,
                model: record.model,
                input: record.input,
            };
            tracing::debug!(target: "roles::infer", job_id = record.job_id, part, peer_id = %m.peer, "part sent");
            let (mesh, chain, tx) = (ctx.mesh.clone(), ctx.chain.clone(), tx.clone());
            let worker = worker.clone();
            tokio::spawn(async move {
                let (job_id, part, start, count) = (task.job_id, task.part, task.start, task.count);
                let r = run_part(&mesh, &chain, &m, task).await;
                let r = match r {
                    Ok((result, compute_ms, payment, bytes)) => {
                        PartOutput::decode_checked(&bytes, job_id, part, start, count)
                            .map(|o| (result, compute_ms, payment, o.labels))
                            .map_err(|e| e.to_string())
                    }
                    Err(e) => Err(e),
                };
                let _ = tx.send((part, worker, r)).await;
            });
        }
        if !assigned.is_empty() {
            save(&record);
        }
        let answer = tokio::time::timeout(Duration::from_millis(250), rx.recv()).await;
        if let Ok(Some((part, worker, r))) = answer {
            match r {
                Ok((result, compute_ms, payment, labels)) => {
                    record
                        .plan
                        .done(part, worker, result, compute_ms, payment, labels);
                    tracing::info!(target: "roles::infer", job_id = record.job_id, part, done = record.plan.done_count(), parts = record.plan.parts.len(), "part in");
                }
                Err(e) => {
                    tracing::warn!(target: "roles::infer", job_id = record.job_id, part, error = %e, "part failed; will move it");
                    record.plan.failed(part, &worker, now_ms());
                    record.error = Some(format!("part {part}: {e}"));
                }
            }
            save(&record);
        }
    }
}

/// Sends one part and checks the answer against the chain; returns the output's bytes.
async fn run_part(
    mesh: &Client,
    chain: &chain::Client,
    m: &Worker,
    task: InferTask,
) -> Result<(Hash32, u64, String, Vec<u8>), String> {
    let (job_id, part) = (task.job_id, task.part);
    let answer = tokio::time::timeout(
        PART_TIMEOUT,
        mesh.request(m.peer, RpcRequest::InferTask(task)),
    )
    .await
    .map_err(|_| "no answer in time".to_owned())?
    .map_err(|e| e.to_string())?;
    let done = match answer {
        RpcResponse::InferDone(d) if d.job_id == job_id && d.part == part => d,
        RpcResponse::Error(e) => return Err(format!("{:?}: {}", e.code, e.message)),
        other => return Err(format!("unexpected answer {other:?}")),
    };
    let posted = chain
        .inference_result(U256::from(job_id), part)
        .await
        .map_err(|e| e.to_string())?;
    if posted.provider != m.provider || Hash32::from(posted.resultHash) != done.result {
        return Err(format!(
            "the chain does not show part {part} posted by {:#x} with output {}",
            m.provider, done.result
        ));
    }
    let bytes = get_blob(
        mesh,
        done.result,
        vec![m.peer],
        MAX_OUTPUT_BYTES,
        OUTPUT_TIMEOUT,
    )
    .await
    .map_err(|e| e.to_string())?;
    // What the chain says was paid and billed, not what the machine says.
    Ok((
        done.result,
        posted.computeMillis,
        posted.payment.to_string(),
        bytes,
    ))
}

/// Finishes the job on chain (refund); returns (paid, refund).
async fn finish(chain: &chain::Client, job_id: u64) -> Result<(U256, U256), chain::Error> {
    let id = U256::from(job_id);
    let job = chain.inference_job(id).await?;
    if job.finished {
        return Ok((job.paid, job.refunded));
    }
    let refund = chain.finish_inference_job(id).await?.value;
    Ok((job.paid, refund))
}
