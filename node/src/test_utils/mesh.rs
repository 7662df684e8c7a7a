//! Test helpers of the mesh area: in-process nodes on 127.0.0.1 with temp data dirs, `quackmesh
//! node` child processes, a raw libp2p peer that speaks our protocol ids with arbitrary bytes
//! (for bad-input tests), chunk corruption, bounded polling and deterministic test data.

use std::{
    io::{BufRead, BufReader},
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use futures::{AsyncRead, AsyncWrite, AsyncWriteExt, StreamExt};
use libp2p::{
    Multiaddr, PeerId, StreamProtocol, Swarm, SwarmBuilder, gossipsub, noise,
    request_response::{self, ProtocolSupport},
    swarm::{NetworkBehaviour, SwarmEvent},
    tcp, yamux,
};

use crate::{
    config::NodeConfig,
    mesh::{
        blob::BlobId,
        codec::read_capped,
        topics::{BLOB_PROTOCOL, RPC_PROTOCOL},
    },
    node::{Node, NodeHandle},
    store::Db,
};

/// A directory under the system temp dir, removed on drop (the `tempfile` crate is only a
/// dev-dependency, and these helpers are library code).
#[derive(Debug)]
pub struct TempDir(PathBuf);

impl TempDir {
    /// Creates a fresh, empty directory.
    pub fn new() -> Self {
        static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
        let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.subsec_nanos())
            .unwrap_or(0);
        let path =
            std::env::temp_dir().join(format!("quackmesh-test-{}-{n}-{nanos}", std::process::id()));
        std::fs::create_dir_all(&path).expect("create temp dir");
        Self(path)
    }

    /// Its path.
    pub fn path(&self) -> &Path {
        &self.0
    }
}

impl Default for TempDir {
    fn default() -> Self {
        Self::new()
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Deterministic pseudo-random bytes (xorshift; fast enough for tens of MiB).
pub fn random_bytes(len: usize, seed: u64) -> Vec<u8> {
    let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    let mut out = Vec::with_capacity(len + 8);
    while out.len() < len {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        out.extend_from_slice(&x.to_le_bytes());
    }
    out.truncate(len);
    out
}

/// Polls `check` every 50 ms until it returns `Some` or `timeout` passes.
pub async fn eventually<T, F, Fut>(timeout: Duration, mut check: F) -> Option<T>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(v) = check().await {
            return Some(v);
        }
        if Instant::now() >= deadline {
            return None;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// A swarm of a fresh identity on TCP with libp2p's own Noise and Yamux (what other
/// implementations speak), running the behaviour `make` builds; idle connections last 30 s.
pub fn tcp_swarm<B: NetworkBehaviour>(
    make: impl FnOnce(&libp2p::identity::Keypair) -> B,
) -> Swarm<B> {
    SwarmBuilder::with_new_identity()
        .with_tokio()
        .with_tcp(
            tcp::Config::default(),
            noise::Config::new,
            yamux::Config::default,
        )
        .expect("tcp")
        .with_behaviour(make)
        .expect("behaviour")
        .with_swarm_config(|c| c.with_idle_connection_timeout(Duration::from_secs(30)))
        .build()
}

/// A listener on 127.0.0.1 running `behaviour` and a `libp2p-stream` dialer connected to it,
/// each driven by a task of its own; returns the listener's PeerId, the dialer's, and the
/// dialer's stream control.
pub async fn stream_dialer_to<B>(behaviour: B) -> (PeerId, PeerId, libp2p_stream::Control)
where
    B: NetworkBehaviour + Send + 'static,
    B::ToSwarm: Send,
{
    let dialer = tcp_swarm(|_| libp2p_stream::Behaviour::new());
    let dialer_id = *dialer.local_peer_id();
    let (listener_id, control) = connect_on_loopback(tcp_swarm(|_| behaviour), dialer).await;
    (listener_id, dialer_id, control)
}

/// Has `listener` listen on 127.0.0.1, connects `dialer` to it, and drives both on tasks of
/// their own; returns the listener's PeerId and the dialer's stream control.
pub async fn connect_on_loopback<B>(
    mut listener: Swarm<B>,
    mut dialer: Swarm<libp2p_stream::Behaviour>,
) -> (PeerId, libp2p_stream::Control)
where
    B: NetworkBehaviour + Send + 'static,
    B::ToSwarm: Send,
{
    const LIMIT: Duration = Duration::from_secs(20);
    listener
        .listen_on("/ip4/127.0.0.1/tcp/0".parse().expect("addr"))
        .expect("listen");
    let addr = tokio::time::timeout(LIMIT, async {
        loop {
            if let SwarmEvent::NewListenAddr { address, .. } = listener.select_next_some().await {
                break address;
            }
        }
    })
    .await
    .expect("listening in time");
    let listener_id = *listener.local_peer_id();
    tokio::spawn(async move {
        loop {
            listener.select_next_some().await;
        }
    });

    let control = dialer.behaviour().new_control();
    dialer.dial(addr).expect("dial");
    tokio::time::timeout(LIMIT, async {
        loop {
            if let SwarmEvent::ConnectionEstablished { .. } = dialer.select_next_some().await {
                break;
            }
        }
    })
    .await
    .expect("connected in time");
    tokio::spawn(async move {
        loop {
            dialer.select_next_some().await;
        }
    });
    (listener_id, control)
}

/// A node config for tests: loopback TCP on a random port, API on a random port, quick
/// fetch timeouts, no bootstrap, no mDNS.
pub fn test_config(data_dir: &Path) -> NodeConfig {
    let mut c = NodeConfig::new(data_dir);
    c.listen = vec!["/ip4/127.0.0.1/tcp/0".parse().expect("valid multiaddr")];
    c.api_addr = "127.0.0.1:0".parse().expect("valid socket address");
    c.mesh.mdns = false;
    c.mesh.provider_refresh = Duration::from_millis(300);
    c.mesh.fetch_stall_timeout = Duration::from_secs(20);
    c
}

/// An in-process node with its own temp data dir (removed on drop).
#[derive(Debug)]
pub struct TestNode {
    /// The running node.
    pub handle: NodeHandle,
    /// Its data dir.
    pub dir: TempDir,
}

impl TestNode {
    /// Starts a node bootstrapping from `bootstrap`.
    pub async fn start(bootstrap: &[Multiaddr]) -> Self {
        Self::start_with(bootstrap, |_| {}).await
    }

    /// Starts a node, letting `tweak` adjust its config first.
    pub async fn start_with(bootstrap: &[Multiaddr], tweak: impl FnOnce(&mut NodeConfig)) -> Self {
        let dir = TempDir::new();
        let mut config = test_config(dir.path());
        config.bootstrap = bootstrap.to_vec();
        tweak(&mut config);
        let handle = Node::start(config).await.expect("node starts");
        Self { handle, dir }
    }

    /// Its first listen address with `/p2p/<PeerId>`.
    pub fn addr(&self) -> Multiaddr {
        self.handle.p2p_addrs().remove(0)
    }

    /// Its PeerId.
    pub fn peer_id(&self) -> PeerId {
        self.handle.peer_id
    }
}

/// Overwrites chunk `index` of blob `id` in `db` with same-length garbage (a holder that
/// serves corrupted data).
pub fn corrupt_chunk(db: &Db, id: &BlobId, index: u32) {
    crate::mesh::blob::BlobStore::open(db.clone())
        .expect("blob store")
        .corrupt_chunk(id, index)
        .expect("corrupt chunk");
}

/// A `quackmesh node` child process (killed on drop).
#[derive(Debug)]
pub struct NodeProcess {
    /// The process.
    pub child: Child,
    /// What it printed as `peer_id:`.
    pub peer_id: PeerId,
    /// What it printed as `listen:`.
    pub listen: Vec<Multiaddr>,
    /// What it printed as `api:`.
    pub api_url: String,
}

impl NodeProcess {
    /// Runs `bin node --data-dir DIR --listen /ip4/127.0.0.1/tcp/0 --api 127.0.0.1:0 ARGS...`
    /// with a clean environment and waits (up to 60 s) for its start-up lines.
    pub fn spawn(bin: &Path, data_dir: &Path, args: &[String]) -> Self {
        Self::spawn_with_env(bin, data_dir, args, &[])
    }

    /// Like [`NodeProcess::spawn`], with extra environment variables.
    pub fn spawn_with_env(
        bin: &Path,
        data_dir: &Path,
        args: &[String],
        env: &[(&str, &str)],
    ) -> Self {
        let mut child = Command::new(bin)
            .arg("node")
            .arg("--data-dir")
            .arg(data_dir)
            .args(["--listen", "/ip4/127.0.0.1/tcp/0", "--api", "127.0.0.1:0"])
            .args(args)
            .env_clear()
            .env("QUACKMESH_LOG", "warn")
            .envs(env.iter().copied())
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("spawn quackmesh node");
        let stdout = child.stdout.take().expect("stdout");
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        let mut peer_id = None;
        let mut listen = Vec::new();
        let deadline = Instant::now() + Duration::from_secs(60);
        let api_url = loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let line = rx
                .recv_timeout(left)
                .expect("node printed its start-up lines");
            if let Some(p) = line.strip_prefix("peer_id: ") {
                peer_id = Some(p.parse().expect("peer id"));
            } else if let Some(a) = line.strip_prefix("listen: ") {
                listen.push(a.parse().expect("multiaddr"));
            } else if let Some(u) = line.strip_prefix("api: ") {
                break u.to_owned();
            }
        };
        Self {
            child,
            peer_id: peer_id.expect("peer_id line"),
            listen,
            api_url,
        }
    }

    /// SIGKILLs the process and reaps it.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for NodeProcess {
    fn drop(&mut self) {
        self.kill();
    }
}

/// A codec that moves raw bytes: what a buggy or malicious peer can send.
#[derive(Debug, Clone, Default)]
pub struct RawCodec;

/// Largest raw response read.
const RAW_RESPONSE_BYTES: usize = 8 * 1024 * 1024;

impl request_response::Codec for RawCodec {
    type Protocol = StreamProtocol;
    type Request = Vec<u8>;
    type Response = Vec<u8>;

    async fn read_request<T: AsyncRead + Unpin + Send>(
        &mut self,
        _: &StreamProtocol,
        io: &mut T,
    ) -> std::io::Result<Vec<u8>> {
        read_capped(io, RAW_RESPONSE_BYTES, 4096)
            .await?
            .map_err(std::io::Error::other)
    }

    async fn read_response<T: AsyncRead + Unpin + Send>(
        &mut self,
        _: &StreamProtocol,
        io: &mut T,
    ) -> std::io::Result<Vec<u8>> {
        read_capped(io, RAW_RESPONSE_BYTES, 4096)
            .await?
            .map_err(std::io::Error::other)
    }

    async fn write_request<T: AsyncWrite + Unpin + Send>(
        &mut self,
        _: &StreamProtocol,
        io: &mut T,
        req: Vec<u8>,
    ) -> std::io::Result<()> {
        io.write_all(&req).await
    }

    async fn write_response<T: AsyncWrite + Unpin + Send>(
        &mut self,
        _: &StreamProtocol,
        io: &mut T,
        res: Vec<u8>,
    ) -> std::io::Result<()> {
        io.write_all(&res).await
    }
}

/// The raw peer's protocols.
#[derive(NetworkBehaviour)]
pub struct RawBehaviour {
    /// Gossipsub with no validation and a 1 MiB cap, to send anything.
    pub gossipsub: gossipsub::Behaviour,
    /// Raw bytes on `/quackmesh/rpc/1`.
    pub rpc: request_response::Behaviour<RawCodec>,
    /// Raw bytes on `/quackmesh/blob/1`.
    pub blob: request_response::Behaviour<RawCodec>,
}

/// Which of our request-response protocols to abuse.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RawProtocol {
    /// `/quackmesh/rpc/1`.
    Rpc,
    /// `/quackmesh/blob/1`.
    Blob,
}

/// A libp2p peer that sends arbitrary bytes on our protocols. Its swarm is polled only inside
/// its own methods.
pub struct RawPeer {
    /// The swarm.
    pub swarm: Swarm<RawBehaviour>,
}

impl std::fmt::Debug for RawPeer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "RawPeer({})", self.swarm.local_peer_id())
    }
}

impl RawPeer {
    /// A raw peer on loopback TCP (not listening).
    pub fn new() -> Self {
        let swarm = tcp_swarm(|key| {
            let cfg = gossipsub::ConfigBuilder::default()
                .max_transmit_size(1024 * 1024)
                .validation_mode(gossipsub::ValidationMode::Permissive)
                .build()
                .expect("gossipsub config");
            let gossipsub =
                gossipsub::Behaviour::new(gossipsub::MessageAuthenticity::Signed(key.clone()), cfg)
                    .expect("gossipsub");
            let rr =
                request_response::Config::default().with_request_timeout(Duration::from_secs(10));
            RawBehaviour {
                gossipsub,
                rpc: request_response::Behaviour::with_codec(
                    RawCodec,
                    [(RPC_PROTOCOL, ProtocolSupport::Outbound)],
                    rr.clone(),
                ),
                blob: request_response::Behaviour::with_codec(
                    RawCodec,
                    [(BLOB_PROTOCOL, ProtocolSupport::Outbound)],
                    rr,
                ),
            }
        });
        Self { swarm }
    }

    /// Its PeerId.
    pub fn peer_id(&self) -> PeerId {
        *self.swarm.local_peer_id()
    }

    /// Drives the swarm for `d`.
    pub async fn run_for(&mut self, d: Duration) {
        let _ = tokio::time::timeout(d, async {
            loop {
                self.swarm.select_next_some().await;
            }
        })
        .await;
    }

    /// Dials `addr` (with `/p2p/`) and waits up to 10 s for the connection.
    pub async fn connect(&mut self, addr: Multiaddr) -> Result<PeerId, String> {
        self.swarm.dial(addr).map_err(|e| e.to_string())?;
        tokio::time::timeout(Duration::from_secs(10), async {
            loop {
                match self.swarm.select_next_some().await {
                    SwarmEvent::ConnectionEstablished { peer_id, .. } => return Ok(peer_id),
                    SwarmEvent::OutgoingConnectionError { error, .. } => {
                        return Err(error.to_string());
                    }
                    _ => {}
                }
            }
        })
        .await
        .map_err(|_| "connect timed out".to_owned())?
    }

    /// Subscribes to `topic`, waits (up to 10 s) until `peer` is known to be subscribed to it,
    /// publishes `data` and keeps the swarm running for a second so it goes out.
    pub async fn publish(
        &mut self,
        peer: PeerId,
        topic: &str,
        data: Vec<u8>,
    ) -> Result<(), String> {
        let topic = gossipsub::IdentTopic::new(topic);
        let _ = self.swarm.behaviour_mut().gossipsub.subscribe(&topic);
        let hash = topic.hash();
        let deadline = Instant::now() + Duration::from_secs(10);
        while !self
            .swarm
            .behaviour()
            .gossipsub
            .all_peers()
            .any(|(p, topics)| *p == peer && topics.contains(&&hash))
        {
            if Instant::now() >= deadline {
                return Err("peer never subscribed".into());
            }
            self.run_for(Duration::from_millis(50)).await;
        }
        self.swarm
            .behaviour_mut()
            .gossipsub
            .publish(hash, data)
            .map_err(|e| e.to_string())?;
        self.run_for(Duration::from_secs(1)).await;
        Ok(())
    }

    /// Sends `bytes` as a request on `protocol` to `peer`; returns the raw response.
    pub async fn request(
        &mut self,
        peer: PeerId,
        protocol: RawProtocol,
        bytes: Vec<u8>,
    ) -> Result<Vec<u8>, String> {
        let b = self.swarm.behaviour_mut();
        let id = match protocol {
            RawProtocol::Rpc => b.rpc.send_request(&peer, bytes),
            RawProtocol::Blob => b.blob.send_request(&peer, bytes),
        };
        tokio::time::timeout(Duration::from_secs(15), async {
            loop {
                let ev = self.swarm.select_next_some().await;
                let rr = match ev {
                    SwarmEvent::Behaviour(
                        RawBehaviourEvent::Rpc(e) | RawBehaviourEvent::Blob(e),
                    ) => e,
                    _ => continue,
                };
                match rr {
                    request_response::Event::Message {
                        message:
                            request_response::Message::Response {
                                request_id,
                                response,
                            },
                        ..
                    } if request_id == id => return Ok(response),
                    request_response::Event::OutboundFailure {
                        request_id, error, ..
                    } if request_id == id => {
                        return Err(error.to_string());
                    }
                    _ => {}
                }
            }
        })
        .await
        .map_err(|_| "request timed out".to_owned())?
    }
}

impl Default for RawPeer {
    fn default() -> Self {
        Self::new()
    }
}

/// The path of a fresh file under a temp dir, for CLI tests.
pub fn temp_file(dir: &TempDir, name: &str, data: &[u8]) -> PathBuf {
    let p = dir.path().join(name);
    std::fs::write(&p, data).expect("write temp file");
    p
}
