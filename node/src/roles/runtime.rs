//! The roles' actor: one task that owns every role's state (job records, the election view,
//! the round machines of the jobs this node coordinates, the contributor's participations) and
//! reacts to mesh events, chain events, a clock tick and the completions of the work it spawns.
//!
//! The pure state machines ([`super::election`], [`super::round`], [`super::participation`])
//! decide; this actor executes their actions by spawning short tasks (blob fetches, training and
//! evaluation on the blocking pool, transactions) whose results come back as [`Done`] messages.
//! Nothing here blocks the loop for long, and every state change is persisted before the next
//! message, so a killed node resumes where it was.

use std::{
    collections::{BTreeMap, HashMap, HashSet, VecDeque},
    path::PathBuf,
    sync::Arc,
    time::{Duration, SystemTime, UNIX_EPOCH},
};

use alloy::{
    primitives::{Address, U256},
    signers::local::PrivateKeySigner,
};
use libp2p::PeerId;
use tokio::{
    sync::{mpsc, oneshot},
    task::JoinHandle,
};

use crate::{
    chain::{self, ChainEvent, EventStream, WatchedEvent},
    config::Roles,
    hash::Hash32,
    learn::{Dataset, Weights},
    mesh::{
        self, Client, ReplyChannel, Verdict,
        message::{GossipBody, RpcErrorCode, RpcRequest, RpcResponse},
        topics::Topic,
    },
    roles::{
        election::{DEFAULT_LIVENESS_MS, Election, PeerKey},
        job::TrainingJobSpec,
        jobs::{self, JOBS, JobRecord, JobStatus},
        wire::{Heartbeat, JobAnnouncement, RoundHeadMsg, UpdateOffer, UpdateVerdict},
    },
    store::{Db, Tree},
};

use super::{contributor::ContributorState, coordinator::Leader, provider::ProviderRole};

/// How often the actor ticks (round deadlines, heartbeats, elections, retries).
pub const TICK_MS: u64 = 250;
/// How often a coordinator-eligible node heartbeats.
pub const HEARTBEAT_MS: u64 = 2_000;
/// Capacity of the completion channel.
const DONE_CAPACITY: usize = 1024;
/// Capacity of the command channel from the API.
const COMMAND_CAPACITY: usize = 64;

/// Chain log of what this node saw happen, newest last (for the API and the dashboard).
pub const TX_LOG: Tree<TxLogEntry> = Tree::new("roles.txlog");
/// Registered coordinators: eth address -> PeerId bytes, from CoordinatorRegistered events.
/// Stored because the watcher resumes after the events it already delivered: a restarted node
/// would otherwise not know who may publish round heads.
pub const COORDINATORS: Tree<Vec<u8>> = Tree::new("roles.coordinators");
/// Most entries kept in [`TX_LOG`].
pub const TX_LOG_MAX: u64 = 10_000;

/// A contract event as the dashboard lists it.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct TxLogEntry {
    /// Block number.
    pub block: u64,
    /// Log index in the block.
    pub log_index: u64,
    /// Transaction hash (0x-hex).
    pub tx_hash: String,
    /// The event's name (`RoundRecorded`, `RewardDistributed`, ...).
    pub kind: String,
    /// The job, rental or machine it concerns, if any.
    pub subject: Option<String>,
    /// $DUCK moved, wei decimal, if any.
    pub amount: Option<String>,
    /// The account concerned (payee, renter, provider...), 0x-hex.
    pub account: Option<String>,
}

/// Settings of the roles.
#[derive(Debug, Clone)]
pub struct RolesConfig {
    /// Which roles run.
    pub roles: Roles,
    /// The contributor's local training data (MNIST-format directory).
    pub contribute_data: Option<PathBuf>,
    /// Silence after which a coordinator counts as gone.
    pub liveness_ms: u64,
    /// How often coordinators heartbeat.
    pub heartbeat_ms: u64,
    /// The requester finishes its completed jobs (refund) when their claim window passes.
    pub auto_finish: bool,
    /// The provider's settings (with `roles.provide`).
    pub provider: Option<super::provider::ProviderConfig>,
}

impl Default for RolesConfig {
    fn default() -> Self {
        Self {
            roles: Roles::default(),
            contribute_data: None,
            liveness_ms: DEFAULT_LIVENESS_MS,
            heartbeat_ms: HEARTBEAT_MS,
            auto_finish: true,
            provider: None,
        }
    }
}

/// What the roles need from the node.
#[derive(Debug, Clone)]
pub struct RoleContext {
    /// The mesh.
    pub mesh: Client,
    /// The store.
    pub db: Db,
    /// The chain, with this node's key.
    pub chain: chain::Client,
    /// This node's key (signs attestations).
    pub signer: PrivateKeySigner,
    /// Settings.
    pub config: RolesConfig,
}

impl RoleContext {
    /// This node's chain address.
    pub fn eth(&self) -> Address {
        self.signer.address()
    }

    /// This node's PeerId.
    pub fn peer(&self) -> PeerId {
        self.mesh.local_peer_id()
    }
}

/// Requests from the API to the actor.
#[derive(Debug)]
pub enum Command {
    /// An update offered over HTTP (or by this node's own contributor) to a job this node
    /// coordinates; answered like a mesh offer.
    Offer {
        /// The offer.
        offer: UpdateOffer,
        /// Where the verdict goes.
        reply: oneshot::Sender<UpdateVerdict>,
    },
    /// A job this node just created: load it now rather than wait for the chain watcher.
    JobCreated {
        /// The job.
        job_id: u64,
    },
    /// The node is shutting down: do what the roles do on exit (the provider unlists when
    /// configured to); `reply` answers once done.
    Shutdown {
        /// Answered when the exit work is done.
        reply: oneshot::Sender<()>,
    },
    /// This node's view of a cluster subnet (`None`: not followed).
    ClusterMesh {
        /// The cluster.
        cluster_id: u64,
        /// The view.
        reply: oneshot::Sender<Option<super::subnet::ClusterMeshView>>,
    },
    /// Shares a blob with a cluster's members: it becomes private to them on this node, and
    /// follows the member list (`true` once applied; `false`: this node is not a member).
    ShareBlob {
        /// The cluster.
        cluster_id: u64,
        /// The blob.
        blob: Hash32,
        /// Whether it was shared.
        reply: oneshot::Sender<bool>,
    },
}

/// A cloneable handle to the roles' actor.
#[derive(Debug, Clone)]
pub struct RolesHandle {
    tx: mpsc::Sender<Command>,
}

impl RolesHandle {
    /// Sends a command; `false` when the actor has stopped.
    pub async fn send(&self, command: Command) -> bool {
        self.tx.send(command).await.is_ok()
    }
}

/// Where a coordinator's verdict on an offer goes.
#[derive(Debug)]
pub(crate) enum Waiter {
    /// An RPC from a contributor.
    Mesh(ReplyChannel),
    /// An HTTP request or this node's own contributor.
    Local(oneshot::Sender<UpdateVerdict>),
}

/// Completions of spawned work.
#[derive(Debug)]
pub(crate) enum Done {
    /// A job record read from the chain.
    JobLoaded(u64, Result<JobRecord, String>),
    /// A job's spec (and, for coordinators, its validation set) fetched and decoded.
    AssetsLoaded(u64, Result<Arc<JobAssets>, String>),
    /// Coordinator completions.
    Coordinator(super::coordinator::CoordDone),
    /// Contributor completions.
    Contributor(super::contributor::ContribDone),
    /// The requester's finishJob went through (or failed).
    Finished(u64, Result<String, String>),
    /// This node's coordinator registration (on start).
    Registered(Result<(), String>),
    /// Provider completions.
    Provider(super::provider::ProvDone),
    /// Cluster subnet completions.
    Subnet(super::subnet::SubnetDone),
    /// An inference output to share with its cluster.
    InferShare(super::infer_worker::ShareRequest),
}

/// A job's decoded spec and, where needed, its validation set.
#[derive(Debug)]
pub(crate) struct JobAssets {
    pub(crate) spec: TrainingJobSpec,
    pub(crate) validation: Option<Arc<Dataset>>,
}

/// Loading state of a job's assets.
#[derive(Debug)]
pub(crate) enum AssetState {
    Loading,
    Ready(Arc<JobAssets>),
    /// Failed at this time (ms); retried later.
    Failed(u64),
}

/// The actor's state.
pub(crate) struct Runtime {
    pub(crate) ctx: Arc<RoleContext>,
    pub(crate) done_tx: mpsc::Sender<Done>,
    pub(crate) jobs: BTreeMap<u64, JobRecord>,
    pub(crate) loading_jobs: HashSet<u64>,
    pub(crate) assets: HashMap<u64, AssetState>,
    /// Registered coordinators: chain address -> PeerId (from the chain).
    pub(crate) coordinators: HashMap<Address, PeerId>,
    pub(crate) election: Election,
    /// Local time of the last chain activity seen per job (lease estimate).
    pub(crate) activity_ms: HashMap<u64, u64>,
    pub(crate) leaders: BTreeMap<u64, Leader>,
    pub(crate) claims_in_flight: HashSet<u64>,
    pub(crate) registered: bool,
    pub(crate) registering: bool,
    pub(crate) contributor: Option<ContributorState>,
    pub(crate) finishing: HashMap<u64, u64>,
    pub(crate) subscribed: HashSet<Topic>,
    pub(crate) last_heartbeat_ms: u64,
    pub(crate) pending_announce: VecDeque<u64>,
    pub(crate) provider: Option<ProviderRole>,
    pub(crate) clusters: super::subnet::Clusters,
    /// Inference parts this machine runs at once (one: the compute time billed is its own).
    pub(crate) infer_slots: Arc<tokio::sync::Semaphore>,
    /// Peers whose connections to this node dropped (cluster machines count as departed).
    pub(crate) gone: HashSet<PeerId>,
    /// When each departed machine was last dialled.
    pub(crate) redial_ms: HashMap<PeerId, u64>,
}

/// Milliseconds since the epoch.
pub(crate) fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// The election key of a peer.
pub(crate) fn key_of(peer: &PeerId) -> PeerKey {
    PeerKey(peer.to_bytes())
}

/// Starts the roles' actor over the node's mesh events and a chain watcher; returns the
/// handle for the API and the task.
pub fn spawn(
    ctx: RoleContext,
    events: mpsc::Receiver<mesh::Event>,
    chain_events: EventStream,
) -> Result<(RolesHandle, JoinHandle<()>), RolesError> {
    let (cmd_tx, cmd_rx) = mpsc::channel(COMMAND_CAPACITY);
    let (done_tx, done_rx) = mpsc::channel(DONE_CAPACITY);
    let ctx = Arc::new(ctx);
    let contributor = match &ctx.config.contribute_data {
        Some(dir) if ctx.config.roles.contribute => Some(ContributorState::open(dir, &ctx.db)?),
        None if ctx.config.roles.contribute => {
            return Err(RolesError::Config("--contribute needs --data DIR".into()));
        }
        // A provider's machine trains cluster jobs on the shards it is assigned.
        _ if ctx.config.roles.provide => Some(ContributorState::worker(&ctx.db)?),
        _ => None,
    };
    let provider = match &ctx.config.provider {
        Some(cfg) if ctx.config.roles.provide => Some(ProviderRole::open(
            &ctx.db,
            ctx.chain.deployment(),
            ctx.eth(),
            cfg.clone(),
        )?),
        None if ctx.config.roles.provide => {
            return Err(RolesError::Config("--provide needs --price".into()));
        }
        _ => None,
    };
    let jobs: BTreeMap<u64, JobRecord> = ctx
        .db
        .scan(JOBS, b"")?
        .into_iter()
        .map(|(_, r)| (r.job_id, r))
        .collect();
    let coordinators: HashMap<Address, PeerId> = ctx
        .db
        .scan(COORDINATORS, b"")?
        .into_iter()
        .filter_map(|(k, peer)| {
            let eth = Address::try_from(k.as_slice()).ok()?;
            Some((eth, PeerId::from_bytes(&peer).ok()?))
        })
        .collect();
    let (ops_tx, ops_rx) = super::subnet::ops_channel();
    let mut rt = Runtime {
        election: Election::new(key_of(&ctx.peer()), ctx.config.liveness_ms),
        ctx,
        done_tx,
        jobs,
        loading_jobs: HashSet::new(),
        assets: HashMap::new(),
        coordinators,
        activity_ms: HashMap::new(),
        leaders: BTreeMap::new(),
        claims_in_flight: HashSet::new(),
        registered: false,
        registering: false,
        contributor,
        finishing: HashMap::new(),
        subscribed: HashSet::new(),
        last_heartbeat_ms: 0,
        pending_announce: VecDeque::new(),
        provider,
        clusters: super::subnet::Clusters::new(ops_tx),
        infer_slots: Arc::new(tokio::sync::Semaphore::new(1)),
        gone: HashSet::new(),
        redial_ms: HashMap::new(),
    };
    tokio::spawn(super::subnet::apply_ops(rt.ctx.mesh.clone(), ops_rx));
    let task = tokio::spawn(async move { rt.run(events, chain_events, cmd_rx, done_rx).await });
    Ok((RolesHandle { tx: cmd_tx }, task))
}

/// Errors starting the roles.
#[derive(Debug, thiserror::Error)]
pub enum RolesError {
    /// A setting is missing or wrong.
    #[error("{0}")]
    Config(String),
    /// The contributor's data could not be loaded.
    #[error("cannot load training data from {dir}: {reason}")]
    Data {
        /// The directory.
        dir: PathBuf,
        /// Why.
        reason: String,
    },
    /// The store failed.
    #[error(transparent)]
    Store(#[from] crate::store::StoreError),
}

impl Runtime {
    async fn run(
        &mut self,
        mut events: mpsc::Receiver<mesh::Event>,
        mut chain_events: EventStream,
        mut commands: mpsc::Receiver<Command>,
        mut done: mpsc::Receiver<Done>,
    ) {
        let now = now_ms();
        for job_id in self.jobs.keys().copied().collect::<Vec<_>>() {
            self.activity_ms.insert(job_id, now);
            self.job_known(job_id);
        }
        if let Some(c) = self.contributor.as_mut() {
            c.resume_all();
        }
        self.contributor_resume();
        if self.ctx.config.roles.coordinator {
            self.ensure_registered();
        }
        self.provider_start();
        let mut tick = tokio::time::interval(Duration::from_millis(TICK_MS));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut chain_open = true;
        loop {
            tokio::select! {
                ev = events.recv() => match ev {
                    Some(ev) => self.on_mesh(ev).await,
                    None => break,
                },
                ev = chain_events.next(), if chain_open => match ev {
                    Ok(Some(ev)) => self.on_chain(ev),
                    Ok(None) => {
                        tracing::warn!(target: "roles", "chain watcher stopped");
                        chain_open = false;
                    }
                    Err(e) => tracing::warn!(target: "roles", error = %e, "chain watcher failed"),
                },
                cmd = commands.recv() => if let Some(cmd) = cmd { self.on_command(cmd) },
                d = done.recv() => if let Some(d) = d { self.on_done(d) },
                _ = tick.tick() => self.on_tick(now_ms()),
            }
        }
        tracing::info!(target: "roles", "roles stopped");
    }

    // ------------------------------------------------------------------ mesh

    async fn on_mesh(&mut self, event: mesh::Event) {
        match event {
            mesh::Event::Gossip {
                topic,
                source,
                propagation_source,
                message_id,
                body,
            } => {
                let verdict = self.judge_gossip(&topic, source, body);
                let mesh = self.ctx.mesh.clone();
                if let Err(e) = mesh
                    .report_validation(message_id, propagation_source, verdict)
                    .await
                {
                    tracing::debug!(target: "roles", error = %e, "cannot report gossip verdict");
                }
            }
            mesh::Event::Request {
                peer,
                request,
                channel,
            } => match request {
                RpcRequest::Status => {
                    let mesh = self.ctx.mesh.clone();
                    let roles = self.ctx.config.roles;
                    tokio::spawn(async move {
                        let response = match crate::node::handler::status(&mesh, &roles).await {
                            Ok(s) => RpcResponse::Status(s),
                            Err(e) => RpcResponse::error(RpcErrorCode::Internal, e.to_string()),
                        };
                        let _ = mesh.respond(channel, response).await;
                    });
                }
                RpcRequest::OfferUpdate(offer) => {
                    self.on_offer(Some(peer), offer, Waiter::Mesh(channel))
                }
                RpcRequest::InferTask(task) => self.on_infer_task(peer, task, channel),
            },
            mesh::Event::PeerConnected { peer } => self.on_peer_connected(peer),
            mesh::Event::PeerDisconnected { peer } => self.on_peer_disconnected(peer),
        }
    }

    /// Decides whether a gossip message is valid; role state updates happen here too.
    fn judge_gossip(&mut self, topic: &Topic, source: PeerId, body: GossipBody) -> Verdict {
        match (topic, body) {
            (Topic::Cluster(id), GossipBody::Note { text }) => {
                self.on_cluster_note(id.as_str(), source, text);
                Verdict::Accept
            }
            (_, GossipBody::Note { .. }) => Verdict::Accept,
            (Topic::Coordinators, GossipBody::RenterClaim(c)) => self.on_renter_claim(source, &c),
            (Topic::Coordinators, GossipBody::Heartbeat(hb)) => self.on_heartbeat(source, &hb),
            (Topic::Jobs, GossipBody::JobAnnounced(a)) => self.on_job_announced(&a),
            (Topic::Job(id), GossipBody::RoundHead(msg)) => {
                if id.as_str() != msg.job_id.to_string() {
                    return Verdict::Reject;
                }
                self.on_round_head(source, msg)
            }
            // A message on the wrong topic is malformed traffic.
            _ => Verdict::Reject,
        }
    }

    fn on_heartbeat(&mut self, source: PeerId, hb: &Heartbeat) -> Verdict {
        match self.coordinators.get(&Address::from(hb.eth)) {
            Some(peer) if *peer == source => {
                self.election.observe(key_of(&source), now_ms());
                Verdict::Accept
            }
            // Registered under another PeerId: someone speaks for an address it does not own.
            Some(_) => Verdict::Reject,
            // Not registered (yet, as far as our watcher knows): don't count it, don't punish.
            None => Verdict::Ignore,
        }
    }

    fn on_job_announced(&mut self, a: &JobAnnouncement) -> Verdict {
        if a.chain_id != self.ctx.chain.deployment().chain_id {
            return Verdict::Ignore;
        }
        if !self.jobs.contains_key(&a.job_id) {
            self.load_job(a.job_id);
        }
        Verdict::Accept
    }

    fn on_round_head(&mut self, source: PeerId, msg: RoundHeadMsg) -> Verdict {
        let Some(record) = self.jobs.get(&msg.job_id) else {
            return Verdict::Ignore;
        };
        let claimed = Address::from(msg.coordinator);
        match self.coordinators.get(&claimed) {
            Some(peer) if *peer == source => {}
            Some(_) => return Verdict::Reject,
            None => return Verdict::Ignore,
        }
        if msg.head.term != record.term || record.holder != msg.coordinator {
            // Our watcher lags (newer term) or the sender was replaced (older): don't act on it.
            return Verdict::Ignore;
        }
        self.contributor_on_head(source, msg);
        Verdict::Accept
    }

    // ------------------------------------------------------------------ chain

    fn on_chain(&mut self, ev: WatchedEvent) {
        self.log_event(&ev);
        let now = now_ms();
        match &ev.event {
            ChainEvent::CoordinatorRegistered(e) => {
                if let Ok(peer) = PeerId::from_bytes(&e.peerId) {
                    self.coordinators.insert(e.coordinator, peer);
                    if let Err(err) =
                        self.ctx
                            .db
                            .put(COORDINATORS, e.coordinator.as_slice(), &peer.to_bytes())
                    {
                        tracing::warn!(target: "roles", error = %err, "cannot store a coordinator");
                    }
                }
                if e.coordinator == self.ctx.eth() {
                    self.registered = true;
                }
                self.cluster_recompute_all();
            }
            ChainEvent::CoordinatorUnregistered(e) => {
                self.coordinators.remove(&e.coordinator);
                if let Err(err) = self.ctx.db.remove(COORDINATORS, e.coordinator.as_slice()) {
                    tracing::warn!(target: "roles", error = %err, "cannot forget a coordinator");
                }
            }
            ChainEvent::TrainingJobCreated(e) => {
                if let Some(job_id) = jobs::small_id(e.jobId)
                    && !self.jobs.contains_key(&job_id)
                {
                    self.load_job(job_id);
                }
            }
            event => {
                let Some(job_id) = JobRecord::job_of(event) else {
                    self.on_market_event(&ev);
                    return;
                };
                if matches!(
                    event,
                    ChainEvent::TermClaimed(_)
                        | ChainEvent::LeaseRenewed(_)
                        | ChainEvent::RoundRecorded(_)
                ) {
                    self.activity_ms.insert(job_id, now);
                }
                let Some(record) = self.jobs.get_mut(&job_id) else {
                    return;
                };
                if record.apply(event) {
                    let record = record.clone();
                    self.save_job(&record);
                    self.on_job_changed(job_id, event);
                }
            }
        }
    }

    /// Marketplace and inference events (the compute-rental roles).
    fn on_market_event(&mut self, ev: &WatchedEvent) {
        self.provider_on_event(ev);
        self.cluster_on_event(ev);
    }

    fn log_event(&self, ev: &WatchedEvent) {
        let entry = describe(ev);
        let mut key = ev.position.block.to_be_bytes().to_vec();
        key.extend_from_slice(&ev.position.log_index.to_be_bytes());
        let db = self.ctx.db.clone();
        if let Err(e) = db.put(TX_LOG, &key, &entry) {
            tracing::warn!(target: "roles", error = %e, "cannot log chain event");
        }
    }

    fn load_job(&mut self, job_id: u64) {
        if !self.loading_jobs.insert(job_id) {
            return;
        }
        let chain = self.ctx.chain.clone();
        let done = self.done_tx.clone();
        tokio::spawn(async move {
            let r = load_job_record(&chain, job_id).await;
            let _ = done.send(Done::JobLoaded(job_id, r)).await;
        });
    }

    pub(crate) fn save_job(&self, record: &JobRecord) {
        if let Err(e) = self.ctx.db.put(JOBS, &jobs::key(record.job_id), record) {
            tracing::warn!(target: "roles", job_id = record.job_id, error = %e, "cannot save job");
        }
    }

    /// A job became known (loaded from chain, or from the store at start).
    fn job_known(&mut self, job_id: u64) {
        let Some(record) = self.jobs.get(&job_id) else {
            return;
        };
        if record.status == JobStatus::Finished {
            return;
        }
        // Providers follow cluster jobs: their machines may be the ones that train.
        let wants = self.ctx.config.roles.coordinator
            || self.ctx.config.roles.contribute
            || (self.ctx.config.roles.provide && record.cluster_id != 0)
            || record.requester == self.ctx.eth().into_array();
        if !wants {
            return;
        }
        if let Ok(topic) = Topic::job(job_id)
            && self.subscribed.insert(topic.clone())
        {
            let mesh = self.ctx.mesh.clone();
            tokio::spawn(async move {
                if let Err(e) = mesh.subscribe(&topic).await {
                    tracing::warn!(target: "roles", %topic, error = %e, "cannot subscribe");
                }
            });
        }
        self.ensure_assets(job_id);
    }

    fn on_job_changed(&mut self, job_id: u64, event: &ChainEvent) {
        if let ChainEvent::TermClaimed(e) = event
            && e.coordinator != self.ctx.eth()
        {
            // Someone else holds the job now: a leader we still run is fenced off.
            if self.leaders.remove(&job_id).is_some() {
                tracing::warn!(target: "roles::coordinator", job_id, term = e.term, "term lost to another coordinator");
            }
        }
        if let ChainEvent::TrainingJobFinished(_) = event {
            self.leaders.remove(&job_id);
        }
        self.contributor_on_job_changed(job_id);
        if self.jobs.get(&job_id).is_some_and(|j| j.cluster_id != 0) {
            self.cluster_recompute_all();
        }
    }

    /// Starts loading a job's spec (and validation set for coordinators) if not done yet.
    pub(crate) fn ensure_assets(&mut self, job_id: u64) {
        let now = now_ms();
        match self.assets.get(&job_id) {
            Some(AssetState::Ready(_) | AssetState::Loading) => return,
            Some(AssetState::Failed(at)) if now.saturating_sub(*at) < 5_000 => return,
            _ => {}
        }
        let Some(record) = self.jobs.get(&job_id).cloned() else {
            return;
        };
        self.assets.insert(job_id, AssetState::Loading);
        let mesh = self.ctx.mesh.clone();
        let done = self.done_tx.clone();
        let with_validation = self.ctx.config.roles.coordinator;
        tokio::spawn(async move {
            let r = load_assets(&mesh, &record, with_validation).await;
            let _ = done.send(Done::AssetsLoaded(job_id, r.map(Arc::new))).await;
        });
    }

    pub(crate) fn assets(&self, job_id: u64) -> Option<Arc<JobAssets>> {
        match self.assets.get(&job_id) {
            Some(AssetState::Ready(a)) => Some(a.clone()),
            _ => None,
        }
    }

    // ------------------------------------------------------------------ commands, completions

    fn on_command(&mut self, cmd: Command) {
        match cmd {
            Command::Offer { offer, reply } => self.on_offer(None, offer, Waiter::Local(reply)),
            Command::JobCreated { job_id } => {
                if !self.jobs.contains_key(&job_id) {
                    self.load_job(job_id);
                }
                self.pending_announce.push_back(job_id);
            }
            Command::Shutdown { reply } => self.provider_on_exit(reply),
            Command::ClusterMesh { cluster_id, reply } => {
                let _ = reply.send(self.cluster_view(cluster_id));
            }
            Command::ShareBlob {
                cluster_id,
                blob,
                reply,
            } => {
                self.cluster_share_blob(cluster_id, blob, reply);
            }
        }
    }

    fn on_done(&mut self, done: Done) {
        match done {
            Done::JobLoaded(job_id, result) => {
                self.loading_jobs.remove(&job_id);
                match result {
                    Ok(record) => {
                        if !self.jobs.contains_key(&job_id) {
                            tracing::info!(target: "roles", job_id, rounds = record.rounds, "training job found");
                            self.save_job(&record);
                            self.activity_ms.insert(job_id, now_ms());
                            let cluster_id = record.cluster_id;
                            self.jobs.insert(job_id, record);
                            self.job_known(job_id);
                            if cluster_id != 0 {
                                self.cluster_recompute_all();
                            }
                        }
                    }
                    Err(e) => {
                        tracing::warn!(target: "roles", job_id, error = %e, "cannot load job")
                    }
                }
            }
            Done::AssetsLoaded(job_id, result) => match result {
                Ok(a) => {
                    self.assets.insert(job_id, AssetState::Ready(a));
                    self.contributor_on_job_changed(job_id);
                }
                Err(e) => {
                    tracing::warn!(target: "roles", job_id, error = %e, "cannot load job assets; will retry");
                    self.assets.insert(job_id, AssetState::Failed(now_ms()));
                }
            },
            Done::Coordinator(d) => self.on_coordinator_done(d),
            Done::Contributor(d) => self.on_contributor_done(d),
            Done::Finished(job_id, r) => match r {
                Ok(refund) => {
                    tracing::info!(target: "roles::requester", job_id, %refund, "job finished, pool refunded")
                }
                Err(e) => {
                    tracing::warn!(target: "roles::requester", job_id, error = %e, "finishJob failed; will retry")
                }
            },
            Done::Provider(d) => self.on_provider_done(d),
            Done::Subnet(d) => self.on_subnet_done(d),
            Done::InferShare(r) => self.on_infer_share(r),
            Done::Registered(r) => {
                self.registering = false;
                match r {
                    Ok(()) => self.registered = true,
                    Err(e) => {
                        tracing::error!(target: "roles::coordinator", error = %e, "cannot register as coordinator")
                    }
                }
            }
        }
    }

    // ------------------------------------------------------------------ clock

    fn on_tick(&mut self, now: u64) {
        while let Some(job_id) = self.pending_announce.pop_front() {
            self.announce_job(job_id);
        }
        for job_id in self.jobs.keys().copied().collect::<Vec<_>>() {
            if matches!(self.assets.get(&job_id), Some(AssetState::Failed(_))) {
                self.ensure_assets(job_id);
            }
        }
        if self.ctx.config.roles.coordinator {
            self.coordinator_tick(now);
        }
        self.contributor_tick();
        if self.ctx.config.auto_finish {
            self.requester_tick(now);
        }
        self.provider_tick(now);
        self.cluster_tick(now);
    }

    fn announce_job(&self, job_id: u64) {
        let body = GossipBody::JobAnnounced(JobAnnouncement {
            job_id,
            chain_id: self.ctx.chain.deployment().chain_id,
        });
        let mesh = self.ctx.mesh.clone();
        tokio::spawn(async move {
            if let Err(e) = mesh.publish(&Topic::Jobs, &body).await {
                tracing::debug!(target: "roles", job_id, error = %e, "cannot announce job");
            }
        });
    }

    /// The requester finishes its completed jobs once their claim window has passed.
    fn requester_tick(&mut self, now: u64) {
        let me = self.ctx.eth().into_array();
        let due: Vec<u64> = self
            .jobs
            .values()
            .filter(|r| r.requester == me && r.status == JobStatus::Completed)
            .filter(|r| now / 1000 > r.completed_at + r.claim_window_secs)
            .map(|r| r.job_id)
            .collect();
        for job_id in due {
            if self
                .finishing
                .get(&job_id)
                .is_some_and(|at| now.saturating_sub(*at) < 10_000)
            {
                continue;
            }
            self.finishing.insert(job_id, now);
            let chain = self.ctx.chain.clone();
            let done = self.done_tx.clone();
            tokio::spawn(async move {
                let r = chain
                    .finish_job(U256::from(job_id))
                    .await
                    .map(|s| chain::config::format_duck(s.value))
                    .map_err(|e| e.to_string());
                let _ = done.send(Done::Finished(job_id, r)).await;
            });
        }
    }
}

/// Reads a job's record from the chain: `getJob`, then its recorded rounds.
pub(crate) async fn load_job_record(
    chain: &chain::Client,
    job_id: u64,
) -> Result<JobRecord, String> {
    let job = chain
        .job(U256::from(job_id))
        .await
        .map_err(|e| e.to_string())?;
    if job.requester == Address::ZERO {
        return Err(format!("job {job_id} does not exist on chain"));
    }
    let mut record = JobRecord::from_chain(job_id, &job);
    for round in 1..=job.lastRound {
        let r = chain
            .round(U256::from(job_id), round)
            .await
            .map_err(|e| e.to_string())?;
        record.rounds_done.push(jobs::RoundSummary {
            round,
            model: r.globalModelHash.into(),
            accuracy_bps: r.accuracyBps,
            term: r.term,
        });
    }
    Ok(record)
}

/// Fetches and decodes a job's spec, and its validation set when asked.
async fn load_assets(
    mesh: &Client,
    record: &JobRecord,
    with_validation: bool,
) -> Result<JobAssets, String> {
    let timeout = Duration::from_secs(60);
    let bytes = super::blobs::get_blob(
        mesh,
        record.spec,
        Vec::new(),
        super::job::MAX_SPEC_BYTES,
        timeout,
    )
    .await
    .map_err(|e| e.to_string())?;
    let spec = TrainingJobSpec::from_bytes(&bytes).map_err(|e| e.to_string())?;
    let validation = if with_validation {
        let bytes = super::blobs::get_blob(
            mesh,
            record.validation,
            Vec::new(),
            super::job::MAX_DATASET_BYTES,
            timeout,
        )
        .await
        .map_err(|e| e.to_string())?;
        let data = tokio::task::spawn_blocking(move || super::job::decode_dataset(&bytes))
            .await
            .map_err(|e| e.to_string())?
            .map_err(|e| e.to_string())?;
        if data.is_empty() {
            return Err("the validation set is empty".into());
        }
        Some(Arc::new(data))
    } else {
        None
    };
    Ok(JobAssets { spec, validation })
}

/// A dashboard line for a chain event.
fn describe(ev: &WatchedEvent) -> TxLogEntry {
    let hexa = |a: &Address| format!("{a:#x}");
    let (subject, amount, account): (Option<String>, Option<U256>, Option<String>) = match &ev.event
    {
        ChainEvent::MachineListed(e) => (
            Some(format!("machine {}", e.machineId)),
            None,
            Some(hexa(&e.provider)),
        ),
        ChainEvent::MachineRented(e) => (
            Some(format!("rental {}", e.rentalId)),
            Some(e.amount),
            Some(hexa(&e.renter)),
        ),
        ChainEvent::RentalEnded(e) => {
            (Some(format!("rental {}", e.rentalId)), Some(e.refund), None)
        }
        ChainEvent::ClusterFormed(e) => (
            Some(format!("cluster {}", e.clusterId)),
            None,
            Some(hexa(&e.renter)),
        ),
        ChainEvent::RentWithdrawn(e) => (
            Some(format!("rental {}", e.rentalId)),
            Some(e.amount),
            Some(hexa(&e.provider)),
        ),
        ChainEvent::CoordinatorRegistered(e) => (None, Some(e.stake), Some(hexa(&e.coordinator))),
        ChainEvent::TrainingJobCreated(e) => (
            Some(format!("job {}", e.jobId)),
            Some(e.totalRewardPool),
            Some(hexa(&e.requester)),
        ),
        ChainEvent::TermClaimed(e) => (
            Some(format!("job {} term {}", e.jobId, e.term)),
            None,
            Some(hexa(&e.coordinator)),
        ),
        ChainEvent::RoundRecorded(e) => (
            Some(format!(
                "job {} round {} acc {:.2}%",
                e.jobId,
                e.round,
                f64::from(e.accuracyBps) / 100.0
            )),
            None,
            None,
        ),
        ChainEvent::RewardDistributed(e) => (
            Some(format!("job {} round {}", e.jobId, e.round)),
            Some(e.amount),
            Some(hexa(&e.contributor)),
        ),
        ChainEvent::TrainingJobFinished(e) => {
            (Some(format!("job {}", e.jobId)), Some(e.refund), None)
        }
        ChainEvent::InferenceJobCreated(e) => (
            Some(format!("inference {}", e.jobId)),
            Some(e.maxPayment),
            Some(hexa(&e.requester)),
        ),
        ChainEvent::ComputePaid(e) => (
            Some(format!("inference {}", e.jobId)),
            Some(e.amount),
            Some(hexa(&e.provider)),
        ),
        ChainEvent::InferenceJobFinished(e) => {
            (Some(format!("inference {}", e.jobId)), Some(e.refund), None)
        }
        _ => (None, None, None),
    };
    TxLogEntry {
        block: ev.position.block,
        log_index: ev.position.log_index,
        tx_hash: format!("{:#x}", ev.tx_hash),
        kind: ev.event.name().to_owned(),
        subject,
        amount: amount.map(|a| a.to_string()),
        account,
    }
}

/// The stored chain log, newest first, at most `limit` entries.
pub fn recent_events(db: &Db, limit: usize) -> Result<Vec<TxLogEntry>, crate::store::StoreError> {
    let mut all = db.scan(TX_LOG, b"")?;
    all.reverse();
    all.truncate(limit);
    Ok(all.into_iter().map(|(_, e)| e).collect())
}

/// The verdict to send back to a waiter.
pub(crate) fn reply(mesh: &Client, waiter: Waiter, verdict: UpdateVerdict) {
    match waiter {
        Waiter::Local(tx) => {
            let _ = tx.send(verdict);
        }
        Waiter::Mesh(channel) => {
            let mesh = mesh.clone();
            tokio::spawn(async move {
                if let Err(e) = mesh
                    .respond(channel, RpcResponse::UpdateVerdict(verdict))
                    .await
                {
                    tracing::debug!(target: "roles", error = %e, "cannot answer offer");
                }
            });
        }
    }
}

/// Keeps the weights of an accepted update by id (helper type for the coordinator).
pub(crate) type WeightsById = HashMap<Hash32, Arc<Weights>>;
