//! The HTTP API every node serves (axum). [`router`] returns a `Router` that other modules
//! extend with `.merge()` (see [`crate::node::NodeBuilder::with_routes`]):
//!
//! - `GET /api/node`: PeerId, addresses, roles, connected peers ([`node`]).
//! - `GET /metrics`: the Prometheus registry in OpenMetrics text.
//! - `POST /api/blob`, `GET /api/blobs`, `GET /api/blob/{id}`, `GET /api/blob/{id}/status`,
//!   `POST /api/blob/{id}/fetch`, `PUT /api/blob/{id}/access` ([`blob`]).
//!
//! Clients not on loopback need the node's API token for writes and private bytes ([`auth`]).
//!
//! Request bodies are capped (`max_blob_bytes` for blob uploads, a small default elsewhere).
//! Errors are JSON `{"error": "..."}` with a status code that says whose fault it is.

pub mod auth;
pub mod blob;
pub mod infer;
pub mod jobs;
pub mod market;
pub mod node;

use std::sync::Arc;

use axum::{
    Json, Router,
    extract::DefaultBodyLimit,
    http::StatusCode,
    response::{IntoResponse, Response},
    routing::{get, post, put},
};
use serde::Serialize;

use crate::{
    config::Roles,
    mesh::{Client, MeshError, blob::BlobError},
    metrics::Metrics,
    node::NodeContext,
};

/// Body limit of the routes that take small JSON bodies.
pub const SMALL_BODY_BYTES: usize = 64 * 1024;

/// What the handlers share.
#[derive(Debug, Clone)]
pub struct ApiState {
    /// The mesh.
    pub client: Client,
    /// The metrics registry.
    pub metrics: Metrics,
    /// The node's roles.
    pub roles: Roles,
    /// Largest accepted blob upload.
    pub max_blob_bytes: u64,
}

impl ApiState {
    /// The state of a started node.
    pub fn new(ctx: &NodeContext) -> Self {
        Self {
            client: ctx.client.clone(),
            metrics: ctx.metrics.clone(),
            roles: ctx.config.roles,
            max_blob_bytes: ctx.config.max_blob_bytes,
        }
    }
}

/// The API's routes with `state` applied.
pub fn router(state: ApiState) -> Router {
    let upload_limit = usize::try_from(state.max_blob_bytes).unwrap_or(usize::MAX);
    let state = Arc::new(state);
    let uploads = Router::new()
        .route("/api/blob", post(blob::put))
        .layer(DefaultBodyLimit::max(upload_limit));
    let rest = Router::new()
        .route("/", get(dashboard))
        .route("/api/node", get(node::info))
        .route("/metrics", get(node::metrics))
        .route("/api/blobs", get(blob::list))
        .route("/api/blob/{id}", get(blob::get))
        .route("/api/blob/{id}/status", get(blob::status))
        .route("/api/blob/{id}/fetch", post(blob::fetch))
        .route("/api/blob/{id}/access", put(blob::set_access))
        .layer(DefaultBodyLimit::max(SMALL_BODY_BYTES));
    uploads.merge(rest).with_state(state)
}

/// The dashboard page (`GET /`): one self-contained HTML file that polls this node's API (no
/// external scripts or fonts, so it works offline and leaks nothing to third parties).
const DASHBOARD_HTML: &str = include_str!("dashboard.html");

async fn dashboard() -> axum::response::Html<&'static str> {
    axum::response::Html(DASHBOARD_HTML)
}

/// Why a request failed.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// The request is malformed (bad id, bad query).
    #[error("{0}")]
    BadRequest(String),
    /// The thing asked for does not exist here or on the mesh.
    #[error("{0}")]
    NotFound(String),
    /// The mesh could not deliver (no holders, stalled fetch, peer failure).
    #[error("{0}")]
    Upstream(String),
    /// Something failed inside the node.
    #[error("{0}")]
    Internal(String),
}

impl From<MeshError> for ApiError {
    fn from(e: MeshError) -> Self {
        match e {
            MeshError::NoHolders { .. } => Self::NotFound(e.to_string()),
            MeshError::Blob(b) => b.into(),
            e if e.is_retryable() => Self::Upstream(e.to_string()),
            MeshError::FetchFailed { .. } => Self::Upstream(e.to_string()),
            e => Self::Internal(e.to_string()),
        }
    }
}

impl From<crate::store::StoreError> for ApiError {
    fn from(e: crate::store::StoreError) -> Self {
        Self::Internal(e.to_string())
    }
}

impl From<BlobError> for ApiError {
    fn from(e: BlobError) -> Self {
        match e {
            BlobError::UnknownBlob(_) => Self::NotFound(e.to_string()),
            BlobError::TooLarge { .. } => Self::BadRequest(e.to_string()),
            e => Self::Internal(e.to_string()),
        }
    }
}

#[derive(Serialize)]
struct ErrorBody {
    error: String,
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let status = match self {
            Self::BadRequest(_) => StatusCode::BAD_REQUEST,
            Self::NotFound(_) => StatusCode::NOT_FOUND,
            Self::Upstream(_) => StatusCode::BAD_GATEWAY,
            Self::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        };
        (
            status,
            Json(ErrorBody {
                error: self.to_string(),
            }),
        )
            .into_response()
    }
}

/// Runs blocking store work off the async threads.
pub(crate) async fn blocking<T: Send + 'static, E: Into<ApiError> + Send + 'static>(
    f: impl FnOnce() -> Result<T, E> + Send + 'static,
) -> Result<T, ApiError> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| ApiError::Internal(e.to_string()))?
        .map_err(Into::into)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dashboard_is_self_contained_and_uses_the_api() {
        // Nothing loaded from elsewhere (the SVG namespace is a name, not a fetch).
        let page = DASHBOARD_HTML.replace("http://www.w3.org/2000/svg", "");
        for needle in ["http://", "https://", "<link", "src="] {
            assert!(!page.contains(needle), "dashboard references {needle}");
        }
        for route in ["/api/node", "/api/jobs", "/api/market", "/api/transactions"] {
            assert!(
                DASHBOARD_HTML.contains(route),
                "dashboard does not poll {route}"
            );
        }
    }

    #[test]
    fn errors_map_to_status_codes() {
        let r = ApiError::from(MeshError::NoHolders { id: "x".into() }).into_response();
        assert_eq!(r.status(), StatusCode::NOT_FOUND);
        let r = ApiError::from(MeshError::FetchStalled {
            id: "x".into(),
            have: 1,
            total: 2,
        })
        .into_response();
        assert_eq!(r.status(), StatusCode::BAD_GATEWAY);
        let r = ApiError::from(MeshError::Shutdown).into_response();
        assert_eq!(r.status(), StatusCode::INTERNAL_SERVER_ERROR);
    }
}
