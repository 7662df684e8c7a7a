//! Distributed-inference endpoints (the requester's side, on the renter's node):
//!
//! - `POST /api/infer` (JSON [`InferRequest`]): create an InferencePool job on a cluster this
//!   node's account rented; answers [`InferSubmitted`] and runs the job in the background.
//! - `GET /api/infers`: the inference jobs this node requested, newest first.
//! - `GET /api/infer/{id}`: one job: parts, machines, compute time, payments, refund.
//! - `GET /api/infer/{id}/output`: the predictions, one class per line in input order (409
//!   while parts are missing).

use std::sync::Arc;

use axum::{
    Json, Router,
    extract::{Path, State},
    http::{StatusCode, header},
    response::{IntoResponse, Response},
    routing::{get, post},
};

use crate::{
    api::{ApiError, blocking},
    roles::infer_requester::{
        self, InferContext, InferError, InferRequest, InferSubmitted, InferView,
    },
};

/// The inference routes.
pub fn router(ctx: InferContext) -> Router {
    Router::new()
        .route("/api/infer", post(submit))
        .route("/api/infers", get(list))
        .route("/api/infer/{id}", get(status))
        .route("/api/infer/{id}/output", get(output))
        .with_state(Arc::new(ctx))
}

impl From<InferError> for ApiError {
    fn from(e: InferError) -> Self {
        match e {
            InferError::Invalid(_) | InferError::Blob(_) => Self::BadRequest(e.to_string()),
            InferError::Chain(c) if c.revert_data().is_some() => Self::BadRequest(c.to_string()),
            InferError::Chain(c) => Self::Upstream(c.to_string()),
            InferError::Store(s) => Self::Internal(s.to_string()),
        }
    }
}

async fn submit(
    State(ctx): State<Arc<InferContext>>,
    Json(req): Json<InferRequest>,
) -> Result<Json<InferSubmitted>, ApiError> {
    Ok(Json(infer_requester::submit_inference(&ctx, &req).await?))
}

async fn list(State(ctx): State<Arc<InferContext>>) -> Result<Json<Vec<InferView>>, ApiError> {
    let db = ctx.db.clone();
    let all = blocking(move || infer_requester::records(&db)).await?;
    Ok(Json(all.iter().map(|r| r.view()).collect()))
}

fn parse_id(text: &str) -> Result<u64, ApiError> {
    text.parse()
        .map_err(|_| ApiError::BadRequest(format!("{text:?} is not an inference job id")))
}

async fn load(ctx: &InferContext, id: &str) -> Result<infer_requester::InferRecord, ApiError> {
    let id = parse_id(id)?;
    let db = ctx.db.clone();
    blocking(move || infer_requester::record(&db, id))
        .await?
        .ok_or_else(|| ApiError::NotFound(format!("this node requested no inference job {id}")))
}

async fn status(
    State(ctx): State<Arc<InferContext>>,
    Path(id): Path<String>,
) -> Result<Json<InferView>, ApiError> {
    Ok(Json(load(&ctx, &id).await?.view()))
}

async fn output(
    State(ctx): State<Arc<InferContext>>,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    let record = load(&ctx, &id).await?;
    match record.output_text() {
        Some(text) => Ok(([(header::CONTENT_TYPE, "text/plain")], text).into_response()),
        None => Ok((
            StatusCode::CONFLICT,
            Json(serde_json::json!({
                "error": format!(
                    "{} of {} parts are in",
                    record.plan.done_count(),
                    record.plan.parts.len()
                )
            })),
        )
            .into_response()),
    }
}
