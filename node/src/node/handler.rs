//! What a node does with mesh events when no role logic claims them: accept every gossip
//! message the mesh already validated, answer `Status` requests, refuse the rest as
//! unsupported. Roles (later issues) take the event stream instead and call
//! [`handle_default`] for what they do not handle.

use tokio::sync::mpsc;

use crate::{
    config::Roles,
    mesh::{
        Client, Event, MeshError, Verdict,
        behaviour::agent,
        message::{NodeStatus, RpcErrorCode, RpcRequest, RpcResponse},
    },
};

/// This node's [`NodeStatus`].
pub async fn status(client: &Client, roles: &Roles) -> Result<NodeStatus, MeshError> {
    let info = client.info().await?;
    let blobs = client.blobs().clone();
    let complete = tokio::task::spawn_blocking(move || blobs.complete_count())
        .await
        .ok()
        .and_then(Result::ok)
        .unwrap_or(0);
    Ok(NodeStatus {
        peer_id: info.peer_id.to_string(),
        agent: agent(),
        roles: roles.names(),
        listen_addrs: info.listen_addrs.iter().map(ToString::to_string).collect(),
        connected_peers: info.connected.len() as u32,
        blobs: complete as u32,
    })
}

/// The default treatment of one event.
pub async fn handle_default(client: &Client, roles: &Roles, event: Event) -> Result<(), MeshError> {
    match event {
        Event::Gossip {
            message_id,
            propagation_source,
            ..
        } => {
            client
                .report_validation(message_id, propagation_source, Verdict::Accept)
                .await
        }
        Event::Request {
            request, channel, ..
        } => {
            let response = match request {
                RpcRequest::Status => match status(client, roles).await {
                    Ok(s) => RpcResponse::Status(s),
                    Err(e) => RpcResponse::error(RpcErrorCode::Internal, e.to_string()),
                },
                RpcRequest::OfferUpdate(_) => {
                    RpcResponse::error(RpcErrorCode::Unsupported, "this node coordinates no jobs")
                }
                RpcRequest::InferTask(_) => {
                    RpcResponse::error(RpcErrorCode::Unsupported, "this node serves no cluster")
                }
            };
            client.respond(channel, response).await
        }
        Event::PeerConnected { .. } | Event::PeerDisconnected { .. } => Ok(()),
    }
}

/// Runs [`handle_default`] over the whole event stream until it ends.
pub async fn run_default(client: Client, roles: Roles, mut events: mpsc::Receiver<Event>) {
    while let Some(event) = events.recv().await {
        if let Err(e) = handle_default(&client, &roles, event).await {
            tracing::debug!(target: "node", error = %e, "default event handling failed");
        }
    }
}
