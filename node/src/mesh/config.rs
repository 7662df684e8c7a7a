//! Tuning of the mesh: connection limits, timeouts, upload slots, fetch parallelism. Defaults
//! suit a node on a home or cloud link; tests and benchmarks override single fields.

use std::time::Duration;

use crate::mesh::blob::scheduler::SchedulerConfig;

/// Mesh settings (built from the node's config; not read from files directly).
#[derive(Debug, Clone)]
pub struct MeshConfig {
    /// Discover peers on the LAN with mDNS (multicast: never in tests or CI).
    pub mdns: bool,
    /// Addresses this node is reached at from outside (an EC2 Elastic IP, a NAT's port
    /// forward): advertised to peers (identify, Kademlia) besides the listen addresses.
    pub external_addrs: Vec<libp2p::Multiaddr>,
    /// Close connections idle this long.
    pub idle_connection_timeout: Duration,
    /// Timeout of one request-response exchange (a chunk waits in the holder's queue too).
    pub request_timeout: Duration,
    /// Established connections accepted in total.
    pub max_connections: u32,
    /// Established connections per peer (TCP and QUIC may both connect).
    pub max_connections_per_peer: u32,
    /// Concurrent request-response streams per connection and protocol (inbound + outbound).
    pub max_streams_per_connection: usize,
    /// Concurrent chunk uploads.
    pub upload_slots: usize,
    /// Chunk requests queued or being served per requesting peer; more are answered Busy.
    pub upload_queue_per_peer: usize,
    /// Chunk requests queued in total.
    pub upload_queue: usize,
    /// Upload rate limit for blob chunks, bytes per second (`None`: unlimited).
    pub upload_bytes_per_sec: Option<u64>,
    /// A chunk answer the fetcher has not taken in this time ends its stream, so that a peer
    /// that stops reading cannot hold an upload slot for good.
    pub chunk_send_timeout: Duration,
    /// Chunk streams a fetch opens to each holder (requests are pipelined on each; a holder
    /// accepts at most `blob::stream::MAX_STREAMS_PER_PEER` from one peer). Several streams
    /// beat one: each Yamux stream has its own flow-control window.
    pub chunk_streams_per_peer: usize,
    /// How chunk requests are spread over holders.
    pub fetch: SchedulerConfig,
    /// A fetch fails after this long without a new chunk.
    pub fetch_stall_timeout: Duration,
    /// How often a running fetch asks the DHT for new holders.
    pub provider_refresh: Duration,
    /// Kademlia's periodic bootstrap (after the quick warm-up rounds at start).
    pub bootstrap_interval: Duration,
    /// Capacity of the event channel to the node runtime.
    pub event_buffer: usize,
    /// Capacity of the command channel from clients.
    pub command_buffer: usize,
}

impl Default for MeshConfig {
    fn default() -> Self {
        Self {
            mdns: false,
            external_addrs: Vec::new(),
            idle_connection_timeout: Duration::from_secs(60),
            request_timeout: Duration::from_secs(30),
            max_connections: 256,
            max_connections_per_peer: 4,
            max_streams_per_connection: 64,
            upload_slots: 4,
            upload_queue_per_peer: 8,
            upload_queue: 256,
            upload_bytes_per_sec: None,
            chunk_send_timeout: Duration::from_secs(60),
            chunk_streams_per_peer: 2,
            fetch: SchedulerConfig {
                per_peer: 4,
                total: 16,
                ..SchedulerConfig::default()
            },
            fetch_stall_timeout: Duration::from_secs(60),
            provider_refresh: Duration::from_secs(1),
            bootstrap_interval: Duration::from_secs(300),
            event_buffer: 1024,
            command_buffer: 1024,
        }
    }
}
