//! The mesh's Prometheus metrics, registered in the node's shared registry as
//! `quackmesh_mesh_*` (counters end in `_total`).

use prometheus_client::{
    encoding::EncodeLabelSet,
    metrics::{counter::Counter, family::Family, gauge::Gauge},
};

use crate::metrics::Metrics;

/// A `reason` label.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ReasonLabel {
    /// Why.
    pub reason: String,
}

/// A `kind` label.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct KindLabel {
    /// What was refused.
    pub kind: String,
}

/// Handles to the mesh's metrics (cheap clones sharing the same values).
#[derive(Debug, Clone, Default)]
pub struct MeshMetrics {
    /// Peers with at least one connection.
    pub connected_peers: Gauge,
    /// Gossip messages received (before validation).
    pub gossip_in: Counter,
    /// Gossip messages published by this node.
    pub gossip_out: Counter,
    /// Gossip messages rejected, by reason.
    pub gossip_rejected: Family<ReasonLabel, Counter>,
    /// Application RPC requests received and handed to the node.
    pub rpc_in: Counter,
    /// Inbound RPC or blob requests refused as undecodable, by reason.
    pub requests_rejected: Family<ReasonLabel, Counter>,
    /// Chunk bytes uploaded to peers.
    pub blob_bytes_served: Counter,
    /// Chunk bytes received and verified.
    pub blob_bytes_fetched: Counter,
    /// Chunks uploaded.
    pub blob_chunks_served: Counter,
    /// Chunks received, verified and new to this node.
    pub blob_chunks_fetched: Counter,
    /// Failed chunk or bitfield requests, by reason (`bad_data`, `busy`, `transport`, ...).
    pub chunk_fetch_failures: Family<ReasonLabel, Counter>,
    /// Access-control refusals, by kind (`topic_gossip`, `topic_publish`, `blob`, and
    /// `cluster_offer` from the roles: an update offered for a cluster job by an outsider).
    pub acl_refusals: Family<KindLabel, Counter>,
    /// Events dropped because the node runtime did not keep up.
    pub events_dropped: Counter,
}

impl MeshMetrics {
    /// Creates the metrics and registers them in `metrics`.
    pub fn register(metrics: &Metrics) -> Self {
        let m = Self::default();
        metrics.register(
            "mesh_connected_peers",
            "Peers with at least one open connection",
            m.connected_peers.clone(),
        );
        metrics.register(
            "mesh_gossip_messages_in",
            "Gossip messages received, before validation",
            m.gossip_in.clone(),
        );
        metrics.register(
            "mesh_gossip_messages_out",
            "Gossip messages published by this node",
            m.gossip_out.clone(),
        );
        metrics.register(
            "mesh_gossip_messages_rejected",
            "Gossip messages rejected, by reason",
            m.gossip_rejected.clone(),
        );
        metrics.register(
            "mesh_rpc_requests_in",
            "Application RPC requests received",
            m.rpc_in.clone(),
        );
        metrics.register(
            "mesh_requests_rejected",
            "Inbound RPC and blob requests refused as undecodable, by reason",
            m.requests_rejected.clone(),
        );
        metrics.register(
            "mesh_blob_bytes_served",
            "Blob chunk bytes uploaded to peers",
            m.blob_bytes_served.clone(),
        );
        metrics.register(
            "mesh_blob_bytes_fetched",
            "Blob chunk bytes received and verified",
            m.blob_bytes_fetched.clone(),
        );
        metrics.register(
            "mesh_blob_chunks_served",
            "Blob chunks uploaded to peers",
            m.blob_chunks_served.clone(),
        );
        metrics.register(
            "mesh_blob_chunks_fetched",
            "Blob chunks received, verified and new to this node",
            m.blob_chunks_fetched.clone(),
        );
        metrics.register(
            "mesh_chunk_fetch_failures",
            "Failed blob requests to holders, by reason",
            m.chunk_fetch_failures.clone(),
        );
        metrics.register(
            "mesh_acl_refusals",
            "Access-control refusals, by kind",
            m.acl_refusals.clone(),
        );
        metrics.register(
            "mesh_events_dropped",
            "Mesh events dropped because the node runtime lagged",
            m.events_dropped.clone(),
        );
        m
    }

    /// Counts a gossip rejection.
    pub fn gossip_rejected(&self, reason: &str) {
        self.gossip_rejected
            .get_or_create(&ReasonLabel {
                reason: reason.to_owned(),
            })
            .inc();
    }

    /// Counts a refused inbound request.
    pub fn request_rejected(&self, reason: &str) {
        self.requests_rejected
            .get_or_create(&ReasonLabel {
                reason: reason.to_owned(),
            })
            .inc();
    }

    /// Counts a failed request to a holder.
    pub fn fetch_failure(&self, reason: &str) {
        self.chunk_fetch_failures
            .get_or_create(&ReasonLabel {
                reason: reason.to_owned(),
            })
            .inc();
    }

    /// Counts an access-control refusal.
    pub fn acl_refusal(&self, kind: &str) {
        self.acl_refusals
            .get_or_create(&KindLabel {
                kind: kind.to_owned(),
            })
            .inc();
    }
}
