//! Blob endpoints, what `quackmesh blob put/get` talk to:
//!
//! - `POST /api/blob` (raw body) stores and announces a blob, answers its id.
//! - `GET /api/blob/{id}[?from=PEER,...]` streams the blob, fetching it from the mesh first
//!   if needed (only from the listed peers with `from`).
//! - `GET /api/blob/{id}/status`: chunks stored, fetch progress and the last fetch report.
//! - `POST /api/blob/{id}/fetch[?from=...]` starts a background fetch (202); with `wait=true`
//!   it answers when the fetch is done (200, with the fetch report) or failed.
//! - `PUT /api/blob/{id}/access` with `{"peers": [...]}` or `{"peers": null}` sets the
//!   allow-list of a private blob.
//! - `GET /api/blobs` lists stored blobs.

use std::{collections::HashSet, sync::Arc};

use axum::{
    Json,
    body::{Body, Bytes},
    extract::{Path, Query, State},
    http::{StatusCode, header},
    response::{IntoResponse, Response},
};
use libp2p::PeerId;
use serde::{Deserialize, Serialize};

use crate::{
    api::{ApiError, ApiState, blocking},
    hash::Hash32,
    mesh::blob::{BlobError, BlobId, BlobSummary, FetchOptions, FetchReport, FetchState},
};

/// Response header of `GET /api/blob/{id}` carrying the manifest's chunk size, so that a
/// client can recompute the id from the bytes.
pub const CHUNK_BYTES_HEADER: &str = "x-quackmesh-chunk-bytes";

/// Answer to `POST /api/blob`.
#[derive(Debug, Serialize, Deserialize)]
pub struct PutResponse {
    /// Blob id.
    pub id: BlobId,
    /// Length.
    pub len: u64,
    /// Chunks.
    pub chunks: u32,
}

/// Answer to `GET /api/blob/{id}/status`.
#[derive(Debug, Serialize, Deserialize)]
pub struct BlobStatus {
    /// Blob id.
    pub id: BlobId,
    /// Whether the manifest is known here.
    pub known: bool,
    /// Length (0 while unknown).
    pub len: u64,
    /// Chunks in the blob (0 while unknown).
    pub chunks: u32,
    /// Chunks stored.
    pub have: u32,
    /// Whether every chunk is stored.
    pub complete: bool,
    /// `running`, `done`, `failed` or `none` (no fetch in this process).
    pub fetch: String,
    /// The error of a failed fetch.
    pub error: Option<String>,
    /// The report of the last finished fetch.
    pub report: Option<FetchReport>,
}

/// Query of the fetching endpoints.
#[derive(Debug, Default, Deserialize)]
pub struct FetchQuery {
    /// Comma-separated PeerIds to fetch from exclusively.
    pub from: Option<String>,
    /// `POST .../fetch` only: wait for the fetch to finish.
    #[serde(default)]
    pub wait: bool,
}

/// Body of `PUT /api/blob/{id}/access`.
#[derive(Debug, Deserialize)]
pub struct AccessBody {
    /// Allowed PeerIds, or `null` to make the blob public.
    pub peers: Option<Vec<String>>,
}

fn parse_id(s: &str) -> Result<BlobId, ApiError> {
    s.parse::<Hash32>()
        .map_err(|e| ApiError::BadRequest(e.to_string()))
}

fn parse_peers(list: &[&str]) -> Result<Vec<PeerId>, ApiError> {
    list.iter()
        .map(|p| {
            p.trim()
                .parse::<PeerId>()
                .map_err(|e| ApiError::BadRequest(format!("bad PeerId {p:?}: {e}")))
        })
        .collect()
}

fn options(q: &FetchQuery) -> Result<FetchOptions, ApiError> {
    let mut opts = FetchOptions::default();
    if let Some(from) = q.from.as_deref().filter(|s| !s.trim().is_empty()) {
        let peers: Vec<&str> = from.split(',').collect();
        opts.only_from = Some(parse_peers(&peers)?);
    }
    Ok(opts)
}

/// Query of `POST /api/blob`.
#[derive(Debug, Default, Deserialize)]
pub struct PutQuery {
    /// Store the blob so that no peer may fetch it until `PUT /api/blob/{id}/access` (or a
    /// job or inference request that names a cluster) says who may.
    #[serde(default)]
    pub private: bool,
}

/// `POST /api/blob[?private=true]`.
pub async fn put(
    State(state): State<Arc<ApiState>>,
    Query(q): Query<PutQuery>,
    body: Bytes,
) -> Result<Json<PutResponse>, ApiError> {
    if body.len() as u64 > state.max_blob_bytes {
        return Err(BlobError::TooLarge {
            len: body.len() as u64,
            limit: state.max_blob_bytes,
        }
        .into());
    }
    let manifest = if q.private {
        state.client.put_private_blob(body.to_vec()).await?
    } else {
        state.client.put_blob(body.to_vec()).await?
    };
    Ok(Json(PutResponse {
        id: manifest.id().map_err(ApiError::from)?,
        len: manifest.len,
        chunks: manifest.chunk_count(),
    }))
}

/// `GET /api/blobs`.
pub async fn list(State(state): State<Arc<ApiState>>) -> Result<Json<Vec<BlobSummary>>, ApiError> {
    let blobs = state.client.blobs().clone();
    Ok(Json(blocking(move || blobs.list()).await?))
}

/// `GET /api/blob/{id}`: the bytes, streamed chunk by chunk.
pub async fn get(
    State(state): State<Arc<ApiState>>,
    Path(id): Path<String>,
    Query(q): Query<FetchQuery>,
) -> Result<Response, ApiError> {
    let id = parse_id(&id)?;
    let blobs = state.client.blobs().clone();
    let complete = {
        let blobs = blobs.clone();
        blocking(move || blobs.is_complete(&id)).await?
    };
    if !complete {
        state.client.fetch_blob(id, options(&q)?).await?;
    }
    let st = {
        let blobs = blobs.clone();
        blocking(move || blobs.state(&id)).await?
    }
    .ok_or(ApiError::NotFound(format!("unknown blob {id}")))?;
    let len = st.manifest.len;
    let chunks = st.manifest.chunk_count();
    let chunk_bytes = st.manifest.chunk_bytes;
    let stream = futures::stream::unfold(0u32, move |i| {
        let blobs = blobs.clone();
        async move {
            if i >= chunks {
                return None;
            }
            let read = tokio::task::spawn_blocking(move || blobs.read_chunk(&id, i))
                .await
                .map_err(|e| std::io::Error::other(e.to_string()))
                .and_then(|r| r.map_err(|e| std::io::Error::other(e.to_string())))
                .and_then(|c| c.ok_or_else(|| std::io::Error::other(format!("chunk {i} missing"))));
            Some((read.map(Bytes::from), i + 1))
        }
    });
    Ok((
        [
            (header::CONTENT_TYPE, "application/octet-stream".to_owned()),
            (header::CONTENT_LENGTH, len.to_string()),
            (
                header::HeaderName::from_static(CHUNK_BYTES_HEADER),
                chunk_bytes.to_string(),
            ),
        ],
        Body::from_stream(stream),
    )
        .into_response())
}

async fn status_of(state: &ApiState, id: BlobId) -> Result<BlobStatus, ApiError> {
    let blobs = state.client.blobs().clone();
    let st = blocking(move || blobs.state(&id)).await?;
    let (fetch, error, report) = match state.client.fetch_state(&id) {
        None => ("none", None, None),
        Some(FetchState::Running { .. }) => ("running", None, None),
        Some(FetchState::Done(r)) => ("done", None, Some((*r).clone())),
        Some(FetchState::Failed(e)) => ("failed", Some(e), None),
    };
    Ok(match st {
        Some(s) => {
            let have = s.have();
            BlobStatus {
                id,
                known: true,
                len: s.manifest.len,
                chunks: s.manifest.chunk_count(),
                have: have.count(),
                complete: have.is_full(),
                fetch: fetch.into(),
                error,
                report,
            }
        }
        None => BlobStatus {
            id,
            known: false,
            len: 0,
            chunks: 0,
            have: 0,
            complete: false,
            fetch: fetch.into(),
            error,
            report,
        },
    })
}

/// `GET /api/blob/{id}/status`.
pub async fn status(
    State(state): State<Arc<ApiState>>,
    Path(id): Path<String>,
) -> Result<Json<BlobStatus>, ApiError> {
    Ok(Json(status_of(&state, parse_id(&id)?).await?))
}

/// `POST /api/blob/{id}/fetch`.
pub async fn fetch(
    State(state): State<Arc<ApiState>>,
    Path(id): Path<String>,
    Query(q): Query<FetchQuery>,
) -> Result<(StatusCode, Json<BlobStatus>), ApiError> {
    let id = parse_id(&id)?;
    if q.wait {
        state.client.fetch_blob(id, options(&q)?).await?;
        return Ok((StatusCode::OK, Json(status_of(&state, id).await?)));
    }
    drop(state.client.start_fetch(id, options(&q)?));
    Ok((StatusCode::ACCEPTED, Json(status_of(&state, id).await?)))
}

/// `PUT /api/blob/{id}/access`.
pub async fn set_access(
    State(state): State<Arc<ApiState>>,
    Path(id): Path<String>,
    Json(body): Json<AccessBody>,
) -> Result<StatusCode, ApiError> {
    let id = parse_id(&id)?;
    let peers = match body.peers {
        Some(list) => {
            let refs: Vec<&str> = list.iter().map(String::as_str).collect();
            Some(parse_peers(&refs)?.into_iter().collect::<HashSet<_>>())
        }
        None => None,
    };
    state.client.set_blob_access(id, peers).await?;
    Ok(StatusCode::NO_CONTENT)
}
