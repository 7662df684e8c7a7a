//! The mesh's error type.

use libp2p::{Multiaddr, PeerId};

use crate::{
    mesh::{blob::BlobError, message::MessageError, topics::TopicError},
    store::StoreError,
};

/// Errors of the mesh layer.
#[derive(Debug, thiserror::Error)]
pub enum MeshError {
    /// Building the swarm (transports, behaviours) failed.
    #[error("cannot build the libp2p swarm: {0}")]
    Build(String),
    /// Listening on an address failed.
    #[error("cannot listen on {addr}: {reason}")]
    Listen {
        /// The address.
        addr: Multiaddr,
        /// Why.
        reason: String,
    },
    /// Dialling an address failed.
    #[error("cannot dial {addr}: {reason}")]
    Dial {
        /// The address.
        addr: Multiaddr,
        /// Why.
        reason: String,
    },
    /// Subscribing to a topic failed.
    #[error("cannot subscribe to {topic}: {reason}")]
    Subscribe {
        /// The topic.
        topic: String,
        /// Why.
        reason: String,
    },
    /// Publishing failed (no subscribed peers yet, queues full...).
    #[error("cannot publish on {topic}: {reason}")]
    Publish {
        /// The topic.
        topic: String,
        /// Why.
        reason: String,
    },
    /// The topic is access-controlled and this node is not a member.
    #[error("not a member of access-controlled topic {topic}")]
    NotTopicMember {
        /// The topic.
        topic: String,
    },
    /// An outbound request failed (dial failure, timeout, closed connection, bad response).
    #[error("request to {peer} failed: {reason}")]
    Request {
        /// The peer.
        peer: PeerId,
        /// Why.
        reason: String,
    },
    /// The peer answered with something that makes no sense for the request.
    #[error("unexpected response from {peer}: {what}")]
    UnexpectedResponse {
        /// The peer.
        peer: PeerId,
        /// What arrived.
        what: String,
    },
    /// No peer could provide a blob's manifest before the deadline.
    #[error("no holder of blob {id} found")]
    NoHolders {
        /// The blob.
        id: String,
    },
    /// A fetch made no progress for too long.
    #[error("fetch of blob {id} stalled at {have}/{total} chunks")]
    FetchStalled {
        /// The blob.
        id: String,
        /// Chunks stored.
        have: u32,
        /// Chunks in the blob.
        total: u32,
    },
    /// A fetch ended abnormally (task aborted or panicked).
    #[error("fetch of blob {id} failed: {reason}")]
    FetchFailed {
        /// The blob.
        id: String,
        /// Why.
        reason: String,
    },
    /// A wire message could not be encoded or decoded.
    #[error(transparent)]
    Message(#[from] MessageError),
    /// A topic name was invalid.
    #[error(transparent)]
    Topic(#[from] TopicError),
    /// The blob layer failed.
    #[error(transparent)]
    Blob(#[from] BlobError),
    /// The store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The mesh event loop has stopped.
    #[error("the mesh has shut down")]
    Shutdown,
}

impl MeshError {
    /// Whether trying again later may succeed (no peers yet, transient network failure).
    pub fn is_retryable(&self) -> bool {
        matches!(
            self,
            Self::Publish { .. }
                | Self::Request { .. }
                | Self::Dial { .. }
                | Self::NoHolders { .. }
                | Self::FetchStalled { .. }
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retryable_classification() {
        assert!(
            MeshError::Publish {
                topic: "t".into(),
                reason: "no peers".into()
            }
            .is_retryable()
        );
        assert!(!MeshError::Shutdown.is_retryable());
        assert!(!MeshError::NotTopicMember { topic: "t".into() }.is_retryable());
    }
}
