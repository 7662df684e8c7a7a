//! The one `NetworkBehaviour` of a QuackMesh node: connection limits, gossipsub (signed,
//! validated by us before forwarding, explicit size cap, peer scoring), Kademlia (our own
//! protocol id, always in server mode), identify, ping, request-response for blobs and for
//! application RPC (explicit byte caps each), raw streams for chunk transfer (inbound ones through [`inbound`]), and mDNS behind a toggle that is off unless asked.

use std::{
    collections::HashMap,
    net::{IpAddr, Ipv4Addr, Ipv6Addr},
    num::NonZeroUsize,
    time::Duration,
};

use libp2p::{
    StreamProtocol, connection_limits, gossipsub, identify,
    identity::Keypair,
    kad, mdns, ping,
    request_response::{self, ProtocolSupport},
    swarm::{NetworkBehaviour, behaviour::toggle::Toggle},
};

use crate::mesh::{
    MeshConfig, MeshError,
    blob::{BlobRequest, BlobResponse, wire::BLOB_LIMITS},
    codec::{CborCodec, CodecLimits},
    inbound,
    message::{
        MAX_GOSSIP_BYTES, MAX_RPC_REQUEST_BYTES, MAX_RPC_RESPONSE_BYTES, RPC_VERSION, RpcRequest,
        RpcResponse,
    },
    topics::{BLOB_PROTOCOL, IDENTIFY_PROTOCOL, KAD_PROTOCOL, RPC_PROTOCOL, Topic},
};

/// Codec of the blob protocol.
pub type BlobCodec = CborCodec<BlobRequest, BlobResponse>;
/// Codec of the application RPC protocol.
pub type RpcCodec = CborCodec<RpcRequest, RpcResponse>;

/// Room for gossipsub's own framing (signature, key, topic, sequence number) around our
/// largest payload.
const GOSSIP_FRAMING_BYTES: usize = 4 * 1024;

/// Provider records kept (blobs this node announces plus records stored for others).
const MAX_PROVIDED_KEYS: usize = 65_536;

/// The limits of the RPC protocol.
pub const RPC_LIMITS: CodecLimits = CodecLimits {
    request_bytes: MAX_RPC_REQUEST_BYTES,
    response_bytes: MAX_RPC_RESPONSE_BYTES,
    version: RPC_VERSION,
    response_prealloc_bytes: 64 * 1024,
};

/// The `agent_version` announced by identify.
pub fn agent() -> String {
    format!("quackmesh/{}", env!("CARGO_PKG_VERSION"))
}

/// All protocols of a node.
#[derive(NetworkBehaviour)]
pub struct Behaviour {
    /// Caps on pending and established connections.
    pub limits: connection_limits::Behaviour,
    /// Pub/sub for small signed announcements.
    pub gossipsub: gossipsub::Behaviour,
    /// Peer routing and blob provider records.
    pub kad: kad::Behaviour<kad::store::MemoryStore>,
    /// Exchange of listen addresses and protocols.
    pub identify: identify::Behaviour,
    /// Liveness.
    pub ping: ping::Behaviour,
    /// Blob manifests, bitfields and chunks.
    pub blob: request_response::Behaviour<BlobCodec>,
    /// Application RPC.
    pub rpc: request_response::Behaviour<RpcCodec>,
    /// Raw streams: outbound chunk streams ([`crate::mesh::blob::stream`]).
    pub stream: libp2p_stream::Behaviour,
    /// Inbound chunk streams, queued for the chunk server.
    pub chunk_inbound: inbound::Behaviour,
    /// LAN discovery, only with `--mdns`.
    pub mdns: Toggle<mdns::tokio::Behaviour>,
}

/// Score parameters of one topic. Quiet topics are normal here (a job topic may see one
/// message a minute), so the mesh-delivery penalties (P3, P3b) are off; what counts is
/// invalid messages (P4): two of them put a peer below the graylist threshold.
pub fn topic_score_params() -> gossipsub::TopicScoreParams {
    gossipsub::TopicScoreParams {
        topic_weight: 1.0,
        time_in_mesh_weight: 0.01,
        time_in_mesh_quantum: Duration::from_secs(1),
        time_in_mesh_cap: 300.0,
        first_message_deliveries_weight: 0.5,
        first_message_deliveries_decay: 0.5,
        first_message_deliveries_cap: 10.0,
        mesh_message_deliveries_weight: 0.0,
        mesh_failure_penalty_weight: 0.0,
        invalid_message_deliveries_weight: -20.0,
        invalid_message_deliveries_decay: 0.9,
        ..Default::default()
    }
}

fn score_params() -> gossipsub::PeerScoreParams {
    let topics: HashMap<_, _> = [Topic::Jobs, Topic::Coordinators]
        .iter()
        .map(|t| (t.hash(), topic_score_params()))
        .collect();
    gossipsub::PeerScoreParams {
        topics,
        // Several nodes of one operator (and every test) share an address: do not punish
        // loopback for colocation.
        ip_colocation_factor_whitelist: [
            IpAddr::V4(Ipv4Addr::LOCALHOST),
            IpAddr::V6(Ipv6Addr::LOCALHOST),
        ]
        .into_iter()
        .collect(),
        ..Default::default()
    }
}

fn build_err(what: &str, e: impl std::fmt::Display) -> MeshError {
    MeshError::Build(format!("{what}: {e}"))
}

impl Behaviour {
    /// Builds the behaviour for the node with key `key`; inbound chunk streams are accepted
    /// by `chunk_inbound`.
    pub fn new(
        key: &Keypair,
        cfg: &MeshConfig,
        chunk_inbound: inbound::Behaviour,
    ) -> Result<Self, MeshError> {
        let peer_id = key.public().to_peer_id();

        let limits = connection_limits::Behaviour::new(
            connection_limits::ConnectionLimits::default()
                .with_max_pending_incoming(Some(64))
                .with_max_pending_outgoing(Some(128))
                .with_max_established(Some(cfg.max_connections))
                .with_max_established_per_peer(Some(cfg.max_connections_per_peer)),
        );

        let gs_config = gossipsub::ConfigBuilder::default()
            .max_transmit_size(MAX_GOSSIP_BYTES + GOSSIP_FRAMING_BYTES)
            .validate_messages()
            .validation_mode(gossipsub::ValidationMode::Strict)
            .heartbeat_interval(Duration::from_secs(1))
            .build()
            .map_err(|e| build_err("gossipsub config", e))?;
        let mut gossipsub = gossipsub::Behaviour::new(
            gossipsub::MessageAuthenticity::Signed(key.clone()),
            gs_config,
        )
        .map_err(|e| build_err("gossipsub", e))?;
        gossipsub
            .with_peer_score(score_params(), gossipsub::PeerScoreThresholds::default())
            .map_err(|e| build_err("gossipsub scoring", e))?;

        let mut kad_config = kad::Config::new(KAD_PROTOCOL);
        kad_config
            .set_query_timeout(Duration::from_secs(30))
            .set_periodic_bootstrap_interval(Some(cfg.bootstrap_interval))
            .set_replication_factor(NonZeroUsize::new(20).unwrap_or(NonZeroUsize::MIN));
        let store = kad::store::MemoryStore::with_config(
            peer_id,
            kad::store::MemoryStoreConfig {
                max_provided_keys: MAX_PROVIDED_KEYS,
                ..Default::default()
            },
        );
        let mut kad = kad::Behaviour::with_config(peer_id, store, kad_config);
        // Automatic mode waits for a confirmed external address, which a node on loopback or
        // behind NAT never gets; then nobody would add it to their routing table.
        kad.set_mode(Some(kad::Mode::Server));

        let identify = identify::Behaviour::new(
            identify::Config::new(IDENTIFY_PROTOCOL.to_owned(), key.public())
                .with_agent_version(agent()),
        );

        let rr_config = request_response::Config::default()
            .with_request_timeout(cfg.request_timeout)
            .with_max_concurrent_streams(cfg.max_streams_per_connection);
        let blob = request_response::Behaviour::with_codec(
            CborCodec::new(BLOB_LIMITS),
            [(BLOB_PROTOCOL, ProtocolSupport::Full)],
            rr_config.clone(),
        );
        let rpc = request_response::Behaviour::with_codec(
            CborCodec::new(RPC_LIMITS),
            [(RPC_PROTOCOL, ProtocolSupport::Full)],
            rr_config,
        );

        let mdns = if cfg.mdns {
            Some(
                mdns::tokio::Behaviour::new(mdns::Config::default(), peer_id)
                    .map_err(|e| build_err("mdns", e))?,
            )
        } else {
            None
        };

        Ok(Self {
            limits,
            gossipsub,
            kad,
            identify,
            ping: ping::Behaviour::default(),
            blob,
            rpc,
            stream: libp2p_stream::Behaviour::new(),
            chunk_inbound,
            mdns: Toggle::from(mdns),
        })
    }
}

/// Whether identify's protocol list shows a peer that speaks our DHT.
pub fn speaks_kad(protocols: &[StreamProtocol]) -> bool {
    protocols.contains(&KAD_PROTOCOL)
}
