//! `GET /api/node` and `GET /metrics`.

use std::sync::Arc;

use axum::{Json, extract::State, http::header, response::IntoResponse};
use serde::Serialize;

use crate::{
    api::{ApiError, ApiState},
    metrics::CONTENT_TYPE,
    node::handler,
};

/// The body of `GET /api/node`.
#[derive(Debug, Serialize)]
pub struct NodeInfo {
    /// PeerId.
    pub peer_id: String,
    /// `quackmesh/<version>`.
    pub agent: String,
    /// Roles switched on.
    pub roles: Vec<String>,
    /// Listen addresses.
    pub listen_addrs: Vec<String>,
    /// Connected peers.
    pub connected_peers: Vec<String>,
    /// Size of the Kademlia routing table.
    pub routing_table_peers: usize,
    /// Subscribed gossip topics.
    pub topics: Vec<String>,
    /// Complete blobs stored.
    pub blobs: u32,
}

/// `GET /api/node`.
pub async fn info(State(state): State<Arc<ApiState>>) -> Result<Json<NodeInfo>, ApiError> {
    let status = handler::status(&state.client, &state.roles).await?;
    let mesh = state.client.info().await?;
    Ok(Json(NodeInfo {
        peer_id: status.peer_id,
        agent: status.agent,
        roles: status.roles,
        listen_addrs: status.listen_addrs,
        connected_peers: mesh.connected.iter().map(ToString::to_string).collect(),
        routing_table_peers: mesh.routing_table.len(),
        topics: mesh.topics,
        blobs: status.blobs,
    }))
}

/// `GET /metrics`.
pub async fn metrics(State(state): State<Arc<ApiState>>) -> impl IntoResponse {
    (
        [(header::CONTENT_TYPE, CONTENT_TYPE)],
        state.metrics.encode(),
    )
}
