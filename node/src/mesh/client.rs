//! [`Client`]: the cloneable handle through which the rest of the node drives the mesh. Every
//! call becomes a [`Command`] to the event loop carrying a `oneshot` for the reply; blob
//! fetches run as their own tasks and only use the loop for network requests.

use std::{
    collections::{HashMap, HashSet},
    sync::{Arc, Mutex, PoisonError},
};

use libp2p::{
    Multiaddr, PeerId,
    gossipsub::{MessageId, TopicHash},
};
use serde::Serialize;
use tokio::{
    sync::{mpsc, oneshot, watch},
    task::AbortHandle,
};

use crate::mesh::{
    MeshConfig, MeshError, MeshMetrics, ReplyChannel, Verdict,
    blob::{
        BlobId, BlobRequest, BlobResponse, BlobStore, FetchOptions, FetchReport, FetchState,
        Manifest, fetch,
    },
    message::{GossipBody, RpcRequest, RpcResponse},
    topics::Topic,
};

/// Finished fetches remembered for status queries.
const MAX_REMEMBERED_FETCHES: usize = 1024;

/// What the event loop can be asked to do.
#[derive(Debug)]
pub(crate) enum Command {
    Listen {
        addr: Multiaddr,
        reply: oneshot::Sender<Result<Multiaddr, MeshError>>,
    },
    Dial {
        addr: Multiaddr,
        reply: oneshot::Sender<Result<PeerId, MeshError>>,
    },
    AddAddress {
        peer: PeerId,
        addr: Multiaddr,
    },
    Subscribe {
        topic: Topic,
        reply: oneshot::Sender<Result<bool, MeshError>>,
    },
    Unsubscribe {
        topic: Topic,
        reply: oneshot::Sender<bool>,
    },
    Publish {
        topic: Topic,
        data: Vec<u8>,
        reply: oneshot::Sender<Result<MessageId, MeshError>>,
    },
    ReportValidation {
        message_id: MessageId,
        propagation_source: PeerId,
        verdict: Verdict,
    },
    SetTopicMembers {
        topic: TopicHash,
        members: Option<HashSet<PeerId>>,
    },
    Request {
        peer: PeerId,
        request: RpcRequest,
        reply: oneshot::Sender<Result<RpcResponse, MeshError>>,
    },
    Respond {
        channel: ReplyChannel,
        response: RpcResponse,
        reply: oneshot::Sender<Result<(), MeshError>>,
    },
    BlobRequest {
        peer: PeerId,
        request: BlobRequest,
        reply: oneshot::Sender<Result<BlobResponse, MeshError>>,
    },
    Provide {
        id: BlobId,
    },
    GetProviders {
        id: BlobId,
        reply: oneshot::Sender<HashSet<PeerId>>,
    },
    Info {
        reply: oneshot::Sender<MeshInfo>,
    },
    PeerScore {
        peer: PeerId,
        reply: oneshot::Sender<Option<f64>>,
    },
    Shutdown {
        reply: oneshot::Sender<()>,
    },
}

/// A snapshot of the mesh for status pages.
#[derive(Debug, Clone, Serialize)]
pub struct MeshInfo {
    /// This node.
    pub peer_id: PeerId,
    /// Where it listens.
    pub listen_addrs: Vec<Multiaddr>,
    /// Peers with an open connection.
    pub connected: Vec<PeerId>,
    /// Peers in the Kademlia routing table.
    pub routing_table: Vec<PeerId>,
    /// Gossip topics subscribed.
    pub topics: Vec<String>,
}

#[derive(Debug, Default)]
struct Fetches {
    states: HashMap<BlobId, watch::Receiver<FetchState>>,
    tasks: HashMap<BlobId, AbortHandle>,
}

/// The handle to the mesh (cheap to clone).
#[derive(Debug, Clone)]
pub struct Client {
    commands: mpsc::Sender<Command>,
    local_peer_id: PeerId,
    blobs: Arc<BlobStore>,
    metrics: MeshMetrics,
    cfg: Arc<MeshConfig>,
    fetches: Arc<Mutex<Fetches>>,
    streams: StreamControl,
}

/// Opens raw streams to peers (chunk transfer); `libp2p_stream::Control` is not `Debug`.
#[derive(Clone)]
struct StreamControl(libp2p_stream::Control);

impl std::fmt::Debug for StreamControl {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("StreamControl")
    }
}

impl Client {
    pub(crate) fn new(
        commands: mpsc::Sender<Command>,
        local_peer_id: PeerId,
        blobs: Arc<BlobStore>,
        metrics: MeshMetrics,
        cfg: Arc<MeshConfig>,
        streams: libp2p_stream::Control,
    ) -> Self {
        Self {
            streams: StreamControl(streams),
            commands,
            local_peer_id,
            blobs,
            metrics,
            cfg,
            fetches: Arc::default(),
        }
    }

    async fn send(&self, cmd: Command) -> Result<(), MeshError> {
        self.commands
            .send(cmd)
            .await
            .map_err(|_| MeshError::Shutdown)
    }

    async fn call<T>(
        &self,
        make: impl FnOnce(oneshot::Sender<T>) -> Command,
    ) -> Result<T, MeshError> {
        let (tx, rx) = oneshot::channel();
        self.send(make(tx)).await?;
        rx.await.map_err(|_| MeshError::Shutdown)
    }

    /// A handle that opens raw streams to peers (the chunk stream protocol).
    pub(crate) fn stream_control(&self) -> libp2p_stream::Control {
        self.streams.0.clone()
    }

    /// This node's PeerId.
    pub fn local_peer_id(&self) -> PeerId {
        self.local_peer_id
    }

    /// The blob store.
    pub fn blobs(&self) -> &Arc<BlobStore> {
        &self.blobs
    }

    /// The mesh's metric handles.
    pub fn metrics(&self) -> &MeshMetrics {
        &self.metrics
    }

    /// The mesh's settings.
    pub fn config(&self) -> &MeshConfig {
        &self.cfg
    }

    /// Starts listening on `addr`; returns the actual address (port 0 resolved).
    pub async fn listen_on(&self, addr: Multiaddr) -> Result<Multiaddr, MeshError> {
        self.call(|reply| Command::Listen { addr, reply }).await?
    }

    /// Dials `addr` and waits for the connection; returns the remote PeerId.
    pub async fn dial(&self, addr: Multiaddr) -> Result<PeerId, MeshError> {
        self.call(|reply| Command::Dial { addr, reply }).await?
    }

    /// Tells Kademlia (and so every protocol) where `peer` can be reached.
    pub async fn add_peer_address(&self, peer: PeerId, addr: Multiaddr) -> Result<(), MeshError> {
        self.send(Command::AddAddress { peer, addr }).await
    }

    /// Subscribes to `topic`; returns false if already subscribed.
    pub async fn subscribe(&self, topic: &Topic) -> Result<bool, MeshError> {
        let topic = topic.clone();
        self.call(|reply| Command::Subscribe { topic, reply })
            .await?
    }

    /// Unsubscribes from `topic`; returns false if not subscribed.
    pub async fn unsubscribe(&self, topic: &Topic) -> Result<bool, MeshError> {
        let topic = topic.clone();
        self.call(|reply| Command::Unsubscribe { topic, reply })
            .await
    }

    /// Publishes `body` on `topic` (refused on an access-controlled topic we are not a member
    /// of, and while no subscribed peer is connected).
    pub async fn publish(&self, topic: &Topic, body: &GossipBody) -> Result<MessageId, MeshError> {
        let data = body.encode()?;
        let topic = topic.clone();
        self.call(|reply| Command::Publish { topic, data, reply })
            .await?
    }

    /// The verdict on an [`Event::Gossip`](crate::mesh::Event::Gossip): only accepted messages
    /// are forwarded; rejected ones lower the relaying peer's score.
    pub async fn report_validation(
        &self,
        message_id: MessageId,
        propagation_source: PeerId,
        verdict: Verdict,
    ) -> Result<(), MeshError> {
        self.send(Command::ReportValidation {
            message_id,
            propagation_source,
            verdict,
        })
        .await
    }

    /// Restricts gossip on `topic` to `members` (`None` lifts the restriction): messages
    /// authored or relayed by others are rejected, and this node may publish only if it is a
    /// member. Refusals are logged and counted.
    pub async fn set_topic_members(
        &self,
        topic: &Topic,
        members: Option<HashSet<PeerId>>,
    ) -> Result<(), MeshError> {
        self.send(Command::SetTopicMembers {
            topic: topic.hash(),
            members,
        })
        .await
    }

    /// Sends an application RPC request and waits for the answer.
    pub async fn request(
        &self,
        peer: PeerId,
        request: RpcRequest,
    ) -> Result<RpcResponse, MeshError> {
        self.call(|reply| Command::Request {
            peer,
            request,
            reply,
        })
        .await?
    }

    /// Answers an inbound RPC request.
    pub async fn respond(
        &self,
        channel: ReplyChannel,
        response: RpcResponse,
    ) -> Result<(), MeshError> {
        self.call(|reply| Command::Respond {
            channel,
            response,
            reply,
        })
        .await?
    }

    /// Sends one blob-protocol request (fetches use this; exposed for diagnostics and tests).
    pub async fn blob_request(
        &self,
        peer: PeerId,
        request: BlobRequest,
    ) -> Result<BlobResponse, MeshError> {
        self.call(|reply| Command::BlobRequest {
            peer,
            request,
            reply,
        })
        .await?
    }

    /// Announces in the DHT that this node provides blob `id` (returns once the local record
    /// is stored; the network announcement continues in the background).
    pub async fn provide(&self, id: BlobId) -> Result<(), MeshError> {
        self.send(Command::Provide { id }).await
    }

    /// Asks the DHT who provides blob `id`.
    pub async fn get_providers(&self, id: BlobId) -> Result<HashSet<PeerId>, MeshError> {
        self.call(|reply| Command::GetProviders { id, reply }).await
    }

    /// Stores `data` as a blob, announces it and returns its manifest (whose id names it).
    pub async fn put_blob(&self, data: Vec<u8>) -> Result<Manifest, MeshError> {
        let blobs = self.blobs.clone();
        let manifest = tokio::task::spawn_blocking(move || blobs.put(&data))
            .await
            .map_err(|e| MeshError::Build(format!("blob store task: {e}")))??;
        self.provide(manifest.id()?).await?;
        Ok(manifest)
    }

    /// Stores `data` as a blob no peer may fetch until [`Self::set_blob_access`] names who
    /// may (cluster-private inputs and outputs), then announces it.
    pub async fn put_private_blob(&self, data: Vec<u8>) -> Result<Manifest, MeshError> {
        let blobs = self.blobs.clone();
        let manifest = tokio::task::spawn_blocking(move || blobs.put_private(&data))
            .await
            .map_err(|e| MeshError::Build(format!("blob store task: {e}")))??;
        self.provide(manifest.id()?).await?;
        Ok(manifest)
    }

    /// Makes blob `id` private to `peers` (`None`: public). Persisted; strangers get `Denied`.
    pub async fn set_blob_access(
        &self,
        id: BlobId,
        peers: Option<HashSet<PeerId>>,
    ) -> Result<(), MeshError> {
        let blobs = self.blobs.clone();
        tokio::task::spawn_blocking(move || blobs.set_acl(&id, peers))
            .await
            .map_err(|e| MeshError::Build(format!("blob store task: {e}")))??;
        Ok(())
    }

    /// Starts fetching blob `id` in the background (or joins the fetch already running) and
    /// returns a watch on its state. The fetch survives the caller; it is recorded as wanted,
    /// so it also resumes after a restart.
    pub fn start_fetch(&self, id: BlobId, opts: FetchOptions) -> watch::Receiver<FetchState> {
        let mut fetches = self.fetches.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(rx) = fetches.states.get(&id)
            && rx.borrow().is_running()
        {
            return rx.clone();
        }
        if fetches.states.len() >= MAX_REMEMBERED_FETCHES {
            fetches.states.retain(|_, rx| rx.borrow().is_running());
        }
        let (tx, rx) = watch::channel(FetchState::Running { have: 0, total: 0 });
        fetches.states.insert(id, rx.clone());
        let client = self.clone();
        let task = tokio::spawn(async move {
            let state = match fetch::run(&client, id, opts, &tx).await {
                Ok(report) => FetchState::Done(Arc::new(report)),
                Err(e) => {
                    tracing::warn!(target: "mesh::blob", blob = %id.short(), error = %e, "fetch failed");
                    FetchState::Failed(e.to_string())
                }
            };
            tx.send_replace(state);
            client
                .fetches
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .tasks
                .remove(&id);
        });
        fetches.tasks.insert(id, task.abort_handle());
        rx
    }

    /// Fetches blob `id` (joining a running fetch) and waits for the result.
    pub async fn fetch_blob(
        &self,
        id: BlobId,
        opts: FetchOptions,
    ) -> Result<Arc<FetchReport>, MeshError> {
        let mut rx = self.start_fetch(id, opts);
        let state = rx
            .wait_for(|s| !s.is_running())
            .await
            .map_err(|_| MeshError::FetchFailed {
                id: id.to_string(),
                reason: "fetch task ended".into(),
            })?
            .clone();
        match state {
            FetchState::Done(report) => Ok(report),
            FetchState::Failed(reason) => Err(MeshError::FetchFailed {
                id: id.to_string(),
                reason,
            }),
            FetchState::Running { .. } => Err(MeshError::Shutdown),
        }
    }

    /// The state of the latest fetch of `id` started in this process, if any.
    pub fn fetch_state(&self, id: &BlobId) -> Option<FetchState> {
        self.fetches
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .states
            .get(id)
            .map(|rx| rx.borrow().clone())
    }

    /// Aborts every running fetch (they resume on the next start).
    pub fn abort_fetches(&self) {
        let mut fetches = self.fetches.lock().unwrap_or_else(PoisonError::into_inner);
        for (_, task) in fetches.tasks.drain() {
            task.abort();
        }
    }

    /// A snapshot of connections, routing table and subscriptions.
    pub async fn info(&self) -> Result<MeshInfo, MeshError> {
        self.call(|reply| Command::Info { reply }).await
    }

    /// Connected peers.
    pub async fn connected_peers(&self) -> Result<Vec<PeerId>, MeshError> {
        Ok(self.info().await?.connected)
    }

    /// Gossipsub's score of `peer` (`None` if unknown).
    pub async fn peer_score(&self, peer: PeerId) -> Result<Option<f64>, MeshError> {
        self.call(|reply| Command::PeerScore { peer, reply }).await
    }

    /// Stops the event loop (closing every connection) and aborts running fetches.
    pub async fn shutdown(&self) -> Result<(), MeshError> {
        self.abort_fetches();
        self.call(|reply| Command::Shutdown { reply }).await
    }
}
