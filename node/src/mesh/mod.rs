//! The peer-to-peer layer: a libp2p swarm over TCP and QUIC (Noise, Yamux) with gossipsub,
//! Kademlia, identify, ping, request-response for blobs and application RPC, and mDNS on demand.
//!
//! # Bird's eye view
//!
//! [`new`] builds three things: a cloneable [`Client`] (commands with `oneshot` replies), a
//! bounded stream of [`Event`]s for the node runtime, and the [`EventLoop`] that owns the
//! `Swarm` and must be spawned. Nothing else touches the swarm.
//!
//! - Gossip: [`topics`] names the versioned topics, [`message`] the typed messages. The event
//!   loop rejects undecodable gossip itself (lowering the sender's gossipsub score) and hands
//!   the rest up as [`Event::Gossip`]; the consumer answers with
//!   [`Client::report_validation`], and only accepted messages are forwarded.
//! - RPC: inbound requests come up as [`Event::Request`] and are answered with
//!   [`Client::respond`]; undecodable ones are answered with an error by the loop itself.
//! - Blobs ([`blob`]): [`Client::put_blob`], [`Client::fetch_blob`]; served from the store by
//!   short tasks, chunk uploads through a few upload slots.
//! - Access control: [`Client::set_topic_members`] (per-topic allow-list for gossip) and
//!   [`Client::set_blob_access`] (per-blob allow-list for serving).

pub mod behaviour;
pub mod blob;
pub mod buffers;
mod client;
pub mod codec;
mod config;
mod error;
mod event_loop;
pub mod inbound;
mod lifecycle;
pub mod message;
pub mod metrics;
pub mod mux;
pub mod noise;
pub mod peers;
pub mod topics;
mod warmup;

use std::sync::Arc;

use libp2p::{
    PeerId, SwarmBuilder, gossipsub::MessageId, identity::Keypair, request_response, tcp,
};
use tokio::sync::mpsc;

pub use client::{Client, MeshInfo};
pub use config::MeshConfig;
pub use error::MeshError;
pub use event_loop::EventLoop;
pub use metrics::MeshMetrics;

use crate::mesh::{
    behaviour::Behaviour,
    blob::BlobStore,
    message::{GossipBody, RpcRequest, RpcResponse},
    topics::{CHUNK_PROTOCOL, Topic},
};

/// Inbound chunk streams waiting for the chunk server at most. Every fetcher opens two per
/// holder at the start of a fetch, so a node among 16 fetchers takes about 32 at once.
const CHUNK_STREAM_QUEUE: usize = 256;
/// Largest QUIC stream window: one chunk response fits without waiting for credit.
const QUIC_STREAM_WINDOW_BYTES: u32 = 16 * 1024 * 1024;
/// Largest QUIC connection window (several chunk streams in parallel).
const QUIC_CONNECTION_WINDOW_BYTES: u32 = 64 * 1024 * 1024;

/// Something the mesh reports to the node runtime.
#[derive(Debug)]
pub enum Event {
    /// A decoded gossip message waiting for a verdict ([`Client::report_validation`]); it is
    /// forwarded to other peers only if accepted.
    Gossip {
        /// Its topic.
        topic: Topic,
        /// The author (signed).
        source: PeerId,
        /// The peer that relayed it to us.
        propagation_source: PeerId,
        /// Its id, for the verdict.
        message_id: MessageId,
        /// The message.
        body: GossipBody,
    },
    /// An application RPC request; answer with [`Client::respond`].
    Request {
        /// Who asks.
        peer: PeerId,
        /// What it asks.
        request: RpcRequest,
        /// Where the answer goes.
        channel: ReplyChannel,
    },
    /// First connection to a peer opened.
    PeerConnected {
        /// The peer.
        peer: PeerId,
    },
    /// Last connection to a peer closed.
    PeerDisconnected {
        /// The peer.
        peer: PeerId,
    },
}

/// The consumer's verdict on a gossip message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// Valid: deliver and forward.
    Accept,
    /// Invalid: drop and penalise the peer that relayed it.
    Reject,
    /// Not for us (stale, duplicate of something newer): drop without penalty.
    Ignore,
}

/// Where the answer to an inbound RPC request goes (use once, with [`Client::respond`]).
#[derive(Debug)]
pub struct ReplyChannel(pub(crate) request_response::ResponseChannel<RpcResponse>);

/// Builds the mesh for `keypair`: the client, the event stream and the event loop (spawn it
/// with `tokio::spawn(event_loop.run())`). Blobs live in `blobs`; metrics go to `metrics`.
pub fn new(
    keypair: Keypair,
    blobs: Arc<BlobStore>,
    metrics: MeshMetrics,
    cfg: MeshConfig,
) -> Result<(Client, mpsc::Receiver<Event>, EventLoop), MeshError> {
    let swarm_cfg = cfg.clone();
    let (chunk_inbound, chunk_streams) = inbound::Behaviour::new(
        inbound::Config {
            protocol: CHUNK_PROTOCOL,
            queue: CHUNK_STREAM_QUEUE,
        },
        metrics.clone(),
    );
    let mut swarm = SwarmBuilder::with_existing_identity(keypair)
        .with_tokio()
        .with_tcp(
            tcp::Config::default().nodelay(true),
            noise::Config::new,
            mux::Config::default,
        )
        .map_err(|e| MeshError::Build(format!("tcp/noise: {e}")))?
        .with_quic_config(|mut q| {
            q.max_stream_data = QUIC_STREAM_WINDOW_BYTES;
            q.max_connection_data = QUIC_CONNECTION_WINDOW_BYTES;
            q
        })
        .with_behaviour(|key| {
            Behaviour::new(key, &swarm_cfg, chunk_inbound)
                .map_err(|e| -> Box<dyn std::error::Error + Send + Sync> { Box::new(e) })
        })
        .map_err(|e| MeshError::Build(e.to_string()))?
        .with_swarm_config(|c| c.with_idle_connection_timeout(swarm_cfg.idle_connection_timeout))
        .build();
    for addr in &cfg.external_addrs {
        swarm.add_external_address(addr.clone());
    }

    let streams = swarm.behaviour().stream.new_control();
    let (cmd_tx, cmd_rx) = mpsc::channel(cfg.command_buffer);
    let (event_tx, event_rx) = mpsc::channel(cfg.event_buffer);
    let local_peer_id = *swarm.local_peer_id();
    let cfg = Arc::new(cfg);
    let client = Client::new(
        cmd_tx,
        local_peer_id,
        blobs.clone(),
        metrics.clone(),
        cfg.clone(),
        streams,
    );
    let event_loop = EventLoop::new(swarm, cmd_rx, event_tx, blobs, metrics, cfg, chunk_streams);
    Ok((client, event_rx, event_loop))
}
