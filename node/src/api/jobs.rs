//! Training-job endpoints, served by every node connected to a chain:
//!
//! - `POST /api/job` (JSON [`JobRequest`]): submit a job; answers [`JobSubmitted`].
//! - `GET /api/jobs`: every job this node knows, newest first.
//! - `GET /api/job/{id}`: one job with its rounds, accuracies and rewards.
//! - `GET /api/job/{id}/model`: the latest global model (safetensors), fetched from the mesh
//!   if needed; headers `x-quackmesh-round` and `x-quackmesh-model`.
//! - `POST /api/job/{id}/update?round=R&samples=N&contributor=0x..` (safetensors body): an
//!   update submitted over HTTP, stored as a blob and offered to the job's coordinator exactly
//!   like one from the mesh; answers the coordinator's verdict (with the attestation).
//! - `GET /api/job/{id}/aggregates`: the rounds this node aggregated as coordinator, with the
//!   updates that went into each.
//! - `GET /api/cluster/{id}` (a job id, as DESIGN.md names it): the cluster a job trains on (`cluster_id` 0: open to all),
//!   with its machines read from the chain (see `GET /api/clusters/{id}` in [`super::market`]).
//! - `GET /api/transactions?limit=N`: contract events this node saw, newest first.
//! - `GET /api/wallet`: this node's chain address and $DUCK balance.

use std::{sync::Arc, time::Duration};

use alloy::primitives::Address;
use axum::{
    Json, Router,
    body::Bytes,
    extract::{DefaultBodyLimit, Path, Query, State},
    http::header,
    response::{IntoResponse, Response},
    routing::{get, post},
};
use serde::{Deserialize, Serialize};
use tokio::sync::oneshot;

use crate::{
    api::{
        ApiError, SMALL_BODY_BYTES, blocking,
        market::{ClusterView, cluster_view},
    },
    chain,
    mesh::Client,
    roles::{
        blobs::get_blob,
        coordinator::{AGGREGATES, AggregateRecord},
        job::{MAX_WEIGHTS_BYTES, decode_weights},
        jobs::{self, JOBS, JobRecord},
        requester::{JobRequest, JobSubmitted, RequesterError, submit_job},
        runtime::{Command, RolesHandle, TxLogEntry, recent_events},
        wire::{UpdateOffer, UpdateVerdict},
    },
    store::Db,
};

/// What the job routes share.
#[derive(Debug, Clone)]
pub struct JobsState {
    /// The mesh.
    pub mesh: Client,
    /// The store.
    pub db: Db,
    /// The chain, with this node's key.
    pub chain: chain::Client,
    /// The roles' actor.
    pub roles: RolesHandle,
}

/// The job routes.
pub fn router(state: JobsState) -> Router {
    let state = Arc::new(state);
    let updates = Router::new()
        .route("/api/job/{id}/update", post(post_update))
        .layer(DefaultBodyLimit::max(MAX_WEIGHTS_BYTES));
    let rest = Router::new()
        .route("/api/job", post(post_job))
        .route("/api/jobs", get(list_jobs))
        .route("/api/job/{id}", get(get_job))
        .route("/api/job/{id}/model", get(get_model))
        .route("/api/job/{id}/aggregates", get(get_aggregates))
        .route("/api/cluster/{id}", get(get_cluster))
        .route("/api/transactions", get(transactions))
        .route("/api/wallet", get(wallet))
        .layer(DefaultBodyLimit::max(SMALL_BODY_BYTES));
    updates.merge(rest).with_state(state)
}

impl From<RequesterError> for ApiError {
    fn from(e: RequesterError) -> Self {
        match e {
            RequesterError::Invalid(_) | RequesterError::Validation { .. } => {
                Self::BadRequest(e.to_string())
            }
            RequesterError::Chain(c) if c.revert_data().is_some() => {
                Self::BadRequest(c.to_string())
            }
            e => Self::Upstream(e.to_string()),
        }
    }
}

async fn post_job(
    State(s): State<Arc<JobsState>>,
    Json(req): Json<JobRequest>,
) -> Result<Json<JobSubmitted>, ApiError> {
    Ok(Json(
        submit_job(&s.mesh, &s.chain, Some(&s.roles), &req).await?,
    ))
}

async fn list_jobs(State(s): State<Arc<JobsState>>) -> Result<Json<Vec<JobRecord>>, ApiError> {
    let db = s.db.clone();
    let mut jobs: Vec<JobRecord> = blocking(move || db.scan(JOBS, b""))
        .await?
        .into_iter()
        .map(|(_, r)| r)
        .collect();
    jobs.reverse();
    Ok(Json(jobs))
}

fn parse_id(text: &str) -> Result<u64, ApiError> {
    text.parse()
        .map_err(|_| ApiError::BadRequest(format!("{text:?} is not a job id")))
}

async fn record(s: &JobsState, job_id: u64) -> Result<JobRecord, ApiError> {
    let db = s.db.clone();
    if let Some(r) = blocking(move || db.get(JOBS, &jobs::key(job_id))).await? {
        return Ok(r);
    }
    // Not seen by this node's watcher yet: ask the chain.
    crate::roles::runtime::load_job_record(&s.chain, job_id)
        .await
        .map_err(ApiError::NotFound)
}

async fn get_job(
    State(s): State<Arc<JobsState>>,
    Path(id): Path<String>,
) -> Result<Json<JobRecord>, ApiError> {
    Ok(Json(record(&s, parse_id(&id)?).await?))
}

async fn get_model(
    State(s): State<Arc<JobsState>>,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    let r = record(&s, parse_id(&id)?).await?;
    let (round, model, _) = r.latest_model();
    let bytes = get_blob(
        &s.mesh,
        model,
        Vec::new(),
        MAX_WEIGHTS_BYTES,
        Duration::from_secs(60),
    )
    .await
    .map_err(|e| ApiError::Upstream(e.to_string()))?;
    Ok((
        [
            (header::CONTENT_TYPE, "application/octet-stream".to_owned()),
            (
                header::HeaderName::from_static("x-quackmesh-round"),
                round.to_string(),
            ),
            (
                header::HeaderName::from_static("x-quackmesh-model"),
                model.to_string(),
            ),
        ],
        bytes,
    )
        .into_response())
}

async fn get_aggregates(
    State(s): State<Arc<JobsState>>,
    Path(id): Path<String>,
) -> Result<Json<Vec<AggregateRecord>>, ApiError> {
    let job_id = parse_id(&id)?;
    let db = s.db.clone();
    let all = blocking(move || db.scan(AGGREGATES, &job_id.to_be_bytes())).await?;
    Ok(Json(all.into_iter().map(|(_, r)| r).collect()))
}

/// Query of `POST /api/job/{id}/update`.
#[derive(Debug, Deserialize)]
struct UpdateQuery {
    round: u64,
    samples: u64,
    contributor: Address,
}

async fn post_update(
    State(s): State<Arc<JobsState>>,
    Path(id): Path<String>,
    Query(q): Query<UpdateQuery>,
    body: Bytes,
) -> Result<Json<UpdateVerdict>, ApiError> {
    let job_id = parse_id(&id)?;
    // Refuse what is not even weights before storing anything.
    let bytes = body.to_vec();
    let check = bytes.clone();
    blocking(move || {
        decode_weights(&check)
            .map(|_| ())
            .map_err(|e| ApiError::BadRequest(e.to_string()))
    })
    .await?;
    let update = s.mesh.put_blob(bytes).await?.id()?;
    let offer = UpdateOffer {
        job_id,
        round: q.round,
        update,
        samples: q.samples,
        contributor: q.contributor.into_array(),
    };
    let (tx, rx) = oneshot::channel();
    if !s.roles.send(Command::Offer { offer, reply: tx }).await {
        return Err(ApiError::Internal("roles stopped".into()));
    }
    match tokio::time::timeout(Duration::from_secs(60), rx).await {
        Ok(Ok(v)) => Ok(Json(v)),
        Ok(Err(_)) => Err(ApiError::Internal("no verdict".into())),
        Err(_) => Err(ApiError::Upstream(
            "the coordinator did not answer in time".into(),
        )),
    }
}

/// Answer of `GET /api/cluster/{job id}`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ClusterInfo {
    /// The job.
    pub job_id: u64,
    /// Its cluster (0: none, the job is open to everyone).
    pub cluster_id: u64,
    /// The cluster as the chain has it (`None` when there is none).
    pub cluster: Option<ClusterView>,
}

async fn get_cluster(
    State(s): State<Arc<JobsState>>,
    Path(id): Path<String>,
) -> Result<Json<ClusterInfo>, ApiError> {
    let job_id = parse_id(&id)?;
    let r = record(&s, job_id).await?;
    Ok(Json(ClusterInfo {
        job_id,
        cluster_id: r.cluster_id,
        cluster: cluster_view(&s.chain, r.cluster_id).await?,
    }))
}

/// Query of `GET /api/transactions`.
#[derive(Debug, Deserialize)]
struct Limit {
    limit: Option<usize>,
}

async fn transactions(
    State(s): State<Arc<JobsState>>,
    Query(q): Query<Limit>,
) -> Result<Json<Vec<TxLogEntry>>, ApiError> {
    let db = s.db.clone();
    let limit = q.limit.unwrap_or(200).min(2_000);
    Ok(Json(blocking(move || recent_events(&db, limit)).await?))
}

/// Answer of `GET /api/wallet`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Wallet {
    /// The node's chain address.
    pub address: String,
    /// Its $DUCK balance.
    pub duck: String,
    /// The chain id.
    pub chain_id: u64,
}

async fn wallet(State(s): State<Arc<JobsState>>) -> Result<Json<Wallet>, ApiError> {
    let address = s
        .chain
        .address()
        .ok_or_else(|| ApiError::Internal("no chain key".into()))?;
    let balance = s
        .chain
        .balance(address)
        .await
        .map_err(|e| ApiError::Upstream(e.to_string()))?;
    Ok(Json(Wallet {
        address: format!("{address:#x}"),
        duck: chain::config::format_duck(balance),
        chain_id: s.chain.deployment().chain_id,
    }))
}
