//! The rented worker's side of distributed inference: a provider serves
//! [`InferTask`](super::wire::InferTask)s from its cluster's renter only, checks each against
//! the job on chain, runs its part with candle, stores the [`PartOutput`] as a blob shared with
//! the cluster, posts the blob's hash and its compute time on `InferencePool` (which pays it)
//! and answers with what it posted. One part runs at a time per machine, so the compute time
//! it bills is the machine's.

use std::{
    sync::Arc,
    time::{Duration, Instant},
};

use alloy::primitives::{Address, U256};
use libp2p::PeerId;
use tokio::sync::{Semaphore, mpsc, oneshot};

use crate::{
    chain,
    hash::Hash32,
    learn::{Dataset, ModelSpec, predict},
    mesh::{
        Client, ReplyChannel,
        message::{RpcErrorCode, RpcResponse},
    },
    roles::{
        blobs::get_blob,
        inference::{MAX_INPUT_BYTES, OUTPUT_VERSION, PartOutput, part_range},
        job::{MAX_WEIGHTS_BYTES, decode_weights},
        runtime::{Done, Runtime},
        wire::{InferDone, InferTask},
    },
};

/// Longest a worker waits for the model and input blobs.
const FETCH_TIMEOUT: Duration = Duration::from_secs(120);

/// A refusal: the RPC error sent back.
type Refusal = (RpcErrorCode, String);

/// Shares a stored output with a cluster through the actor (it owns the access lists).
#[derive(Debug)]
pub(crate) struct ShareRequest {
    pub(crate) cluster_id: u64,
    pub(crate) blob: Hash32,
    pub(crate) reply: oneshot::Sender<bool>,
}

impl Runtime {
    /// An inference task from `peer`: refused unless this node provides a machine of the
    /// task's cluster and `peer` is on that cluster's member list; otherwise run in the
    /// background and answered when posted.
    pub(crate) fn on_infer_task(&mut self, peer: PeerId, task: InferTask, channel: ReplyChannel) {
        let refusal = if !self.ctx.config.roles.provide {
            Some((
                RpcErrorCode::Unsupported,
                "this node rents out no machine".to_owned(),
            ))
        } else if let Err(e) = task.validate() {
            Some((RpcErrorCode::BadRequest, e.to_string()))
        } else if task.chain_id != self.ctx.chain.deployment().chain_id {
            Some((RpcErrorCode::BadRequest, "another chain".to_owned()))
        } else if !self.cluster_is_member(task.cluster_id) {
            Some((
                RpcErrorCode::Denied,
                format!("this machine is not rented in cluster {}", task.cluster_id),
            ))
        } else if !self.cluster_admits(task.cluster_id, &peer) {
            tracing::warn!(target: "roles::infer", peer_id = %peer, cluster_id = task.cluster_id, job_id = task.job_id, "inference task from outside the cluster refused");
            self.ctx.mesh.metrics().acl_refusal("infer_task");
            Some((
                RpcErrorCode::Denied,
                format!("you are not a member of cluster {}", task.cluster_id),
            ))
        } else {
            None
        };
        let mesh = self.ctx.mesh.clone();
        if let Some((code, message)) = refusal {
            tokio::spawn(async move {
                let _ = mesh
                    .respond(channel, RpcResponse::error(code, message))
                    .await;
            });
            return;
        }
        let chain = self.ctx.chain.clone();
        let me = self.ctx.eth();
        let slots = self.infer_slots.clone();
        let done = self.done_tx.clone();
        tokio::spawn(async move {
            let (job_id, part) = (task.job_id, task.part);
            let response = match serve(&mesh, &chain, me, &slots, &done, peer, task).await {
                Ok(d) => {
                    tracing::info!(target: "roles::infer", job_id, part, compute_ms = d.compute_ms, payment = %d.payment, "inference part posted");
                    RpcResponse::InferDone(d)
                }
                Err((code, message)) => {
                    tracing::warn!(target: "roles::infer", job_id, part, error = %message, "inference part failed");
                    RpcResponse::error(code, message)
                }
            };
            if let Err(e) = mesh.respond(channel, response).await {
                tracing::debug!(target: "roles::infer", error = %e, "cannot answer inference task");
            }
        });
    }

    /// Puts an output blob on the cluster's access list; answers once the mesh applied it.
    pub(crate) fn on_infer_share(&mut self, r: ShareRequest) {
        self.cluster_share_blob(r.cluster_id, r.blob, r.reply);
    }
}

/// Runs one task to its posted result.
async fn serve(
    mesh: &Client,
    chain: &chain::Client,
    me: Address,
    slots: &Arc<Semaphore>,
    done: &mpsc::Sender<Done>,
    requester: PeerId,
    task: InferTask,
) -> Result<InferDone, Refusal> {
    let internal = |e: String| (RpcErrorCode::Internal, e);
    let denied = |e: String| (RpcErrorCode::Denied, e);
    let id = U256::from(task.job_id);
    let job = chain
        .inference_job(id)
        .await
        .map_err(|e| internal(e.to_string()))?;
    let matches = job.clusterId == U256::from(task.cluster_id)
        && job.parts == task.parts
        && Hash32::from(job.modelHash) == task.model
        && Hash32::from(job.inputHash) == task.input;
    if job.requester.is_zero() || !matches {
        return Err(denied(format!(
            "the task does not match inference job {} on chain",
            task.job_id
        )));
    }
    if job.finished {
        return Err(denied(format!("inference job {} is finished", task.job_id)));
    }
    // Asked again (the answer was lost): what is on chain is the answer.
    let posted = chain
        .inference_result(id, task.part)
        .await
        .map_err(|e| internal(e.to_string()))?;
    if !posted.provider.is_zero() {
        if posted.provider != me {
            return Err(denied(format!("part {} was posted by another", task.part)));
        }
        return Ok(InferDone {
            job_id: task.job_id,
            part: task.part,
            result: Hash32::from(posted.resultHash),
            compute_ms: posted.computeMillis,
            payment: posted.payment.to_string(),
        });
    }

    let model = get_blob(
        mesh,
        task.model,
        vec![requester],
        MAX_WEIGHTS_BYTES,
        FETCH_TIMEOUT,
    )
    .await
    .map_err(|e| internal(e.to_string()))?;
    let input = get_blob(
        mesh,
        task.input,
        vec![requester],
        MAX_INPUT_BYTES,
        FETCH_TIMEOUT,
    )
    .await
    .map_err(|e| internal(e.to_string()))?;
    // One part at a time on this machine: the compute time billed is its own.
    let _slot = slots.acquire().await.map_err(|e| internal(e.to_string()))?;
    let (start, count, parts, part) = (task.start, task.count, task.parts, task.part);
    let (labels, compute_ms) = tokio::task::spawn_blocking(move || {
        let weights =
            decode_weights(&model).map_err(|e| (RpcErrorCode::BadRequest, e.to_string()))?;
        let spec = ModelSpec::of_weights(&weights).ok_or_else(|| {
            (
                RpcErrorCode::BadRequest,
                "the model is neither the MLP nor the CNN".to_owned(),
            )
        })?;
        let data = Dataset::unlabelled_from_idx(&input, MAX_INPUT_BYTES)
            .map_err(|e| (RpcErrorCode::BadRequest, format!("bad input: {e}")))?;
        if part_range(data.len() as u64, parts, part) != (start, count) {
            return Err((
                RpcErrorCode::BadRequest,
                format!(
                    "part {part} of {parts} over {} images is not images {start}+{count}",
                    data.len()
                ),
            ));
        }
        let slice = data.range(start as usize, count as usize).ok_or_else(|| {
            (
                RpcErrorCode::BadRequest,
                "range out of the input".to_owned(),
            )
        })?;
        let t0 = Instant::now();
        let labels = predict(&spec, &weights, &slice)
            .map_err(|e| (RpcErrorCode::Internal, e.to_string()))?;
        // Billed in whole milliseconds, at least one.
        let ms = t0.elapsed().as_micros().div_ceil(1_000).max(1) as u64;
        Ok((labels, ms))
    })
    .await
    .map_err(|e| internal(e.to_string()))??;

    let output = PartOutput {
        v: OUTPUT_VERSION,
        job_id: task.job_id,
        part: task.part,
        start: task.start,
        labels,
    }
    .to_bytes()
    .map_err(|e| internal(e.to_string()))?;
    // Private from the start; the share below opens it to the cluster.
    let manifest = mesh
        .put_private_blob(output)
        .await
        .map_err(|e| internal(e.to_string()))?;
    let result = manifest.id().map_err(|e| internal(e.to_string()))?;
    let (reply, shared) = oneshot::channel();
    done.send(Done::InferShare(ShareRequest {
        cluster_id: task.cluster_id,
        blob: result,
        reply,
    }))
    .await
    .map_err(|_| internal("the node is stopping".into()))?;
    if !shared.await.unwrap_or(false) {
        return Err(denied(format!(
            "cannot share the output with cluster {}",
            task.cluster_id
        )));
    }
    let sent = chain
        .post_result(id, task.part, result.into(), compute_ms)
        .await
        .map_err(|e| internal(e.to_string()))?;
    Ok(InferDone {
        job_id: task.job_id,
        part: task.part,
        result,
        compute_ms,
        payment: sent.value.to_string(),
    })
}
