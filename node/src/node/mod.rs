//! The assembled node: data dir, identity, store, metrics, mesh, default event handling and the
//! HTTP API, started by [`Node::start`] and stopped by [`NodeHandle::shutdown`].
//!
//! Start-up: open the store, load (or create) the identity, build the mesh and spawn its event
//! loop, listen on the configured addresses, subscribe to the global topics, redial remembered
//! peers and the bootstrap peers, re-announce stored blobs, resume unfinished fetches, serve
//! the API. Restarting with the same data dir keeps the PeerId and everything stored.
//!
//! ```no_run
//! # async fn demo() -> Result<(), quackmesh::node::NodeError> {
//! use quackmesh::{config::NodeConfig, node::Node};
//! let node = Node::start(NodeConfig::new("/tmp/qm")).await?;
//! println!("{} at {:?}", node.peer_id, node.listen_addrs);
//! node.shutdown().await;
//! # Ok(()) }
//! ```

pub mod handler;
pub mod identity;

use std::{net::SocketAddr, path::PathBuf, sync::Arc, time::Duration};

use libp2p::{Multiaddr, PeerId, multiaddr::Protocol};
use tokio::{
    sync::{mpsc, oneshot},
    task::JoinHandle,
};

use crate::{
    api::{self, ApiState},
    chain,
    config::{ChainSettings, NodeConfig},
    mesh::{
        self, Client, Event, MeshError, MeshMetrics,
        blob::{BlobError, BlobStore, FetchOptions},
        topics::Topic,
    },
    metrics::Metrics,
    roles::{
        provider::{ProviderConfig, UNLIST_TIMEOUT},
        runtime::{Command, RoleContext, RolesConfig, RolesHandle},
    },
    store::{Db, StoreError},
};

/// Remembered peers redialled at start (most recently seen first).
const REDIAL_KNOWN_PEERS: usize = 16;
/// How long shutdown waits for each task.
const SHUTDOWN_WAIT: Duration = Duration::from_secs(5);

/// Errors starting or running a node.
#[derive(Debug, thiserror::Error)]
pub enum NodeError {
    /// The identity key could not be read or written.
    #[error("identity key {path}: {reason}")]
    Identity {
        /// The key file.
        path: PathBuf,
        /// Why.
        reason: String,
    },
    /// The store could not be opened.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The blob store could not be opened.
    #[error(transparent)]
    Blob(#[from] BlobError),
    /// The mesh failed to start.
    #[error(transparent)]
    Mesh(#[from] MeshError),
    /// The chain could not be reached or the key not loaded.
    #[error("chain: {0}")]
    Chain(String),
    /// The roles could not start.
    #[error("roles: {0}")]
    Roles(String),
    /// The API token file could not be read or created.
    #[error(transparent)]
    ApiToken(#[from] api::auth::AuthError),
    /// The API could not bind its address.
    #[error("cannot serve the API on {addr}: {reason}")]
    Api {
        /// The address.
        addr: SocketAddr,
        /// Why.
        reason: String,
    },
}

/// What extra API routes get to work with.
#[derive(Debug, Clone)]
pub struct NodeContext {
    /// The mesh.
    pub client: Client,
    /// The store.
    pub db: Db,
    /// The metrics registry.
    pub metrics: Metrics,
    /// The configuration.
    pub config: NodeConfig,
}

type RoutesFn = Box<dyn FnOnce(&NodeContext) -> axum::Router + Send>;

/// Starts a node; see [`Node::builder`] for options.
#[derive(Debug)]
pub struct Node;

impl Node {
    /// Starts a node with the default event handling (gossip accepted, `Status` answered).
    pub async fn start(config: NodeConfig) -> Result<NodeHandle, NodeError> {
        Self::builder(config).start().await
    }

    /// A builder for extra API routes or for taking the event stream.
    pub fn builder(config: NodeConfig) -> NodeBuilder {
        NodeBuilder {
            config,
            routes: None,
        }
    }
}

/// Options for starting a node.
pub struct NodeBuilder {
    config: NodeConfig,
    routes: Option<RoutesFn>,
}

impl std::fmt::Debug for NodeBuilder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NodeBuilder")
            .field("config", &self.config)
            .finish()
    }
}

impl NodeBuilder {
    /// Adds API routes, built once the mesh is up; they are merged into [`api::router`].
    pub fn with_routes(
        mut self,
        routes: impl FnOnce(&NodeContext) -> axum::Router + Send + 'static,
    ) -> Self {
        self.routes = Some(Box::new(routes));
        self
    }

    /// Starts the node: with a chain configured, the roles (coordinator, contributor,
    /// requester) handle the mesh's events; without one, the default handling does.
    pub async fn start(self) -> Result<NodeHandle, NodeError> {
        let (mut handle, events) = self.start_inner(true).await?;
        if let Some(events) = events {
            let client = handle.client.clone();
            let roles = handle.config.roles;
            handle
                .tasks
                .push(tokio::spawn(handler::run_default(client, roles, events)));
        }
        Ok(handle)
    }

    /// Starts the node without roles and hands the mesh's event stream to the caller, who must
    /// answer gossip verdicts and requests ([`handler::handle_default`] does the default).
    pub async fn start_with_events(self) -> Result<(NodeHandle, mpsc::Receiver<Event>), NodeError> {
        let (handle, events) = self.start_inner(false).await?;
        match events {
            Some(events) => Ok((handle, events)),
            None => Err(NodeError::Roles("event stream already taken".into())),
        }
    }

    async fn start_inner(
        self,
        with_roles: bool,
    ) -> Result<(NodeHandle, Option<mpsc::Receiver<Event>>), NodeError> {
        let config = self.config;
        if with_roles && config.roles.provide && config.chain.is_none() {
            return Err(NodeError::Roles(
                "--provide needs the chain: set --network, --rpc-url or --deployment".into(),
            ));
        }
        let db = Db::open_dir(&config.data_dir)?;
        let keypair = identity::load_or_create(&config.data_dir)?;
        let peer_id = keypair.public().to_peer_id();
        let metrics = Metrics::new();
        let mesh_metrics = MeshMetrics::register(&metrics);
        let blobs = Arc::new(BlobStore::open(db.clone())?);

        let (client, events, event_loop) =
            mesh::new(keypair, blobs.clone(), mesh_metrics, config.mesh.clone())?;
        let mut tasks = vec![tokio::spawn(event_loop.run())];

        let mut listen_addrs = Vec::new();
        for addr in &config.listen {
            listen_addrs.push(client.listen_on(addr.clone()).await?);
        }
        for topic in [Topic::Jobs, Topic::Coordinators] {
            client.subscribe(&topic).await?;
        }
        let dials = register_peers(&client, &db, &config.bootstrap).await?;
        tasks.push(tokio::spawn(dial_all(client.clone(), dials)));
        reannounce_and_resume(&client, &blobs).await;

        let ctx = NodeContext {
            client: client.clone(),
            db: db.clone(),
            metrics: metrics.clone(),
            config: config.clone(),
        };
        let mut router = api::router(ApiState::new(&ctx));
        if let Some(routes) = self.routes {
            router = router.merge(routes(&ctx));
        }
        let mut events = Some(events);
        let mut chain_client = None;
        let mut roles_handle = None;
        if let (true, Some(settings)) = (with_roles, config.chain.clone()) {
            let Some(ev) = events.take() else {
                return Err(NodeError::Roles("event stream already taken".into()));
            };
            let started = start_roles(&config, &settings, &client, &db, &listen_addrs, ev).await?;
            router = router.merge(api::jobs::router(api::jobs::JobsState {
                mesh: client.clone(),
                db: db.clone(),
                chain: started.chain.clone(),
                roles: started.roles.clone(),
            }));
            router = router.merge(api::market::router(api::market::MarketState {
                db: db.clone(),
                chain: started.chain.clone(),
                providing: config.roles.provide,
                mesh: client.clone(),
                roles: started.roles.clone(),
            }));
            let infer = crate::roles::infer_requester::InferContext {
                mesh: client.clone(),
                chain: started.chain.clone(),
                db: db.clone(),
                roles: started.roles.clone(),
            };
            match crate::roles::infer_requester::resume(&infer) {
                Ok(0) => {}
                Ok(n) => tracing::info!(target: "node", jobs = n, "inference jobs resumed"),
                Err(e) => {
                    tracing::warn!(target: "node", error = %e, "cannot resume inference jobs")
                }
            }
            router = router.merge(api::infer::router(infer));
            tasks.extend(started.tasks);
            chain_client = Some(started.chain);
            roles_handle = Some(started.roles);
        }
        // Clients beyond loopback need the token to change anything (see `api::auth`).
        let token = api::auth::ApiToken::load_or_create(&config.api_token_file)?;
        let router = router.layer(axum::middleware::from_fn_with_state(
            token,
            api::auth::require_token,
        ));
        let listener = tokio::net::TcpListener::bind(config.api_addr)
            .await
            .map_err(|e| NodeError::Api {
                addr: config.api_addr,
                reason: e.to_string(),
            })?;
        let api_addr = listener.local_addr().map_err(|e| NodeError::Api {
            addr: config.api_addr,
            reason: e.to_string(),
        })?;
        let (api_stop, api_stopped) = oneshot::channel::<()>();
        tasks.push(tokio::spawn(async move {
            let service = router.into_make_service_with_connect_info::<std::net::SocketAddr>();
            let server = axum::serve(listener, service).with_graceful_shutdown(async move {
                let _ = api_stopped.await;
            });
            if let Err(e) = server.await {
                tracing::error!(target: "api", error = %e, "api server failed");
            }
        }));
        tracing::info!(target: "node", %peer_id, api = %api_addr, "node started");

        Ok((
            NodeHandle {
                peer_id,
                listen_addrs,
                api_addr,
                client,
                db,
                metrics,
                config,
                api_stop: Some(api_stop),
                tasks,
                chain: chain_client,
                roles: roles_handle,
            },
            events,
        ))
    }
}

/// What [`start_roles`] started.
struct StartedRoles {
    chain: chain::Client,
    roles: RolesHandle,
    tasks: Vec<JoinHandle<()>>,
}

/// Connects to the chain with the node's key and starts the roles' actor over the mesh events.
async fn start_roles(
    config: &NodeConfig,
    settings: &ChainSettings,
    client: &Client,
    db: &Db,
    listen_addrs: &[Multiaddr],
    events: mpsc::Receiver<Event>,
) -> Result<StartedRoles, NodeError> {
    let provider = if config.roles.provide {
        Some(provider_config(config, listen_addrs)?)
    } else {
        None
    };
    let chain_err = |e: chain::Error| NodeError::Chain(e.to_string());
    let networks = match &settings.networks {
        Some(path) => chain::Networks::load(path).map_err(chain_err)?,
        None => chain::Networks::builtin().map_err(chain_err)?,
    };
    let cfg = chain::Config::resolve(
        &networks,
        &settings.network,
        settings.rpc_url.as_deref(),
        settings.deployment.as_deref(),
    )
    .map_err(chain_err)?;
    let mut keys = chain::keys::KeyOptions {
        private_key_file: settings.private_key_file.clone(),
        keystore: settings.keystore.clone(),
        data_dir: Some(config.data_dir.clone()),
        dev_account: settings.dev_account,
        ..chain::keys::KeyOptions::from_env()
    };
    if let Some(path) = &settings.keystore_password_file {
        keys.keystore_password = Some(chain::keys::read_password_file(path).map_err(chain_err)?);
    }
    let devnet = cfg.network.name == "devnet";
    let (signer, origin) = chain::keys::resolve_signer(&keys, devnet)
        .map_err(chain_err)?
        .ok_or_else(|| {
            NodeError::Chain(
                "the node needs a chain key: set QUACKMESH_PRIVATE_KEY, --private-key-file or \
                 --keystore with --keystore-password-file (or --dev-account on devnet)"
                    .into(),
            )
        })?;
    let chain = chain::Client::connect(&cfg, Some(signer.clone()), Some(db.clone()))
        .await
        .map_err(chain_err)?;
    tracing::info!(target: "node", network = %cfg.network.name, eth = %signer.address(), key = ?origin, "chain connected");
    let watch_cfg = chain::WatcherConfig::for_network("roles", chain.deployment(), &cfg.network);
    let (stream, watcher) = chain.watch(db.clone(), watch_cfg).map_err(chain_err)?;
    let role_ctx = RoleContext {
        mesh: client.clone(),
        db: db.clone(),
        chain: chain.clone(),
        signer,
        config: RolesConfig {
            roles: config.roles,
            contribute_data: config.contribute_data.clone(),
            provider,
            ..RolesConfig::default()
        },
    };
    let (roles, actor) = crate::roles::runtime::spawn(role_ctx, events, stream)
        .map_err(|e| NodeError::Roles(e.to_string()))?;
    Ok(StartedRoles {
        chain,
        roles,
        tasks: vec![watcher, actor],
    })
}

/// The provider's settings: the price parsed, the multiaddr to list chosen.
fn provider_config(
    config: &NodeConfig,
    listen_addrs: &[Multiaddr],
) -> Result<ProviderConfig, NodeError> {
    let roles_err = |m: String| NodeError::Roles(m);
    let price = config
        .price
        .as_deref()
        .ok_or_else(|| roles_err("--provide needs --price DUCK_PER_HOUR".into()))?;
    let wei = chain::config::parse_duck(price).map_err(|e| roles_err(e.to_string()))?;
    let price_per_hour = u128::try_from(wei)
        .ok()
        .filter(|p| *p > 0)
        .ok_or_else(|| roles_err(format!("--price {price}: must be above 0")))?;
    let multiaddr = match &config.provider.announce {
        Some(a) => a.clone(),
        None => listed_addr(listen_addrs).ok_or_else(|| {
            roles_err(
                "no listen address to list on the marketplace: listen on a concrete address \
                 or pass --announce MULTIADDR"
                    .into(),
            )
        })?,
    };
    Ok(ProviderConfig {
        price_per_hour,
        multiaddr: multiaddr.to_string(),
        withdraw_every: Duration::from_secs(config.provider.withdraw_every_secs),
        unlist_on_exit: config.provider.unlist_on_exit,
    })
}

/// The listen address a provider lists: the first that is not unspecified (0.0.0.0, ::),
/// TCP preferred; without a `/p2p` suffix (the PeerId is listed beside it).
fn listed_addr(listen_addrs: &[Multiaddr]) -> Option<Multiaddr> {
    let concrete = |a: &&Multiaddr| {
        !a.iter().any(|p| match p {
            Protocol::Ip4(ip) => ip.is_unspecified(),
            Protocol::Ip6(ip) => ip.is_unspecified(),
            _ => false,
        })
    };
    let is_tcp = |a: &&Multiaddr| a.iter().any(|p| matches!(p, Protocol::Tcp(_)));
    let pick = listen_addrs
        .iter()
        .filter(concrete)
        .find(is_tcp)
        .or_else(|| listen_addrs.iter().find(concrete))?;
    let mut addr = pick.clone();
    if matches!(addr.iter().last(), Some(Protocol::P2p(_))) {
        addr.pop();
    }
    Some(addr)
}

/// Tells the mesh where remembered and bootstrap peers are (before `start` returns, so that a
/// request sent right after start can dial them) and returns the addresses to dial.
async fn register_peers(
    client: &Client,
    db: &Db,
    bootstrap: &[Multiaddr],
) -> Result<Vec<Multiaddr>, NodeError> {
    let store = db.clone();
    let mut known = tokio::task::spawn_blocking(move || mesh::peers::load(&store))
        .await
        .ok()
        .and_then(Result::ok)
        .unwrap_or_default();
    known.sort_by_key(|(_, p)| std::cmp::Reverse(p.last_seen_unix));
    let mut dials = Vec::new();
    for (i, (peer, rec)) in known.into_iter().enumerate() {
        for addr in &rec.addrs {
            client.add_peer_address(peer, addr.clone()).await?;
        }
        if i < REDIAL_KNOWN_PEERS
            && let Some(addr) = rec.addrs.into_iter().next()
        {
            dials.push(addr.with_p2p(peer).unwrap_or_else(|a| a));
        }
    }
    for addr in bootstrap {
        if let Some(Protocol::P2p(peer)) = addr.iter().last() {
            let mut bare = addr.clone();
            bare.pop();
            client.add_peer_address(peer, bare).await?;
        }
        dials.push(addr.clone());
    }
    Ok(dials)
}

/// Dials `addrs` (failures are logged, not fatal: Kademlia keeps the addresses for later).
async fn dial_all(client: Client, addrs: Vec<Multiaddr>) {
    let results = futures::future::join_all(addrs.into_iter().map(|addr| {
        let client = client.clone();
        async move { (addr.clone(), client.dial(addr).await) }
    }))
    .await;
    for (addr, result) in results {
        match result {
            Ok(peer) => tracing::info!(target: "node", %peer, %addr, "connected"),
            Err(e) => tracing::warn!(target: "node", %addr, error = %e, "could not connect"),
        }
    }
}

/// Announces every stored blob again (provider records live in memory) and resumes fetches
/// that were running when the node stopped.
async fn reannounce_and_resume(client: &Client, blobs: &Arc<BlobStore>) {
    let store = blobs.clone();
    let listed =
        tokio::task::spawn_blocking(move || Ok::<_, BlobError>((store.list()?, store.wanted()?)))
            .await
            .ok()
            .and_then(Result::ok);
    let Some((list, wanted)) = listed else {
        tracing::warn!(target: "node", "cannot list stored blobs");
        return;
    };
    for blob in list.iter().filter(|b| b.have > 0 || b.chunks == 0) {
        let _ = client.provide(blob.id).await;
    }
    for id in wanted {
        tracing::info!(target: "node", blob = %id.short(), "resuming fetch");
        drop(client.start_fetch(id, FetchOptions::default()));
    }
}

/// A running node.
#[derive(Debug)]
pub struct NodeHandle {
    /// Its PeerId.
    pub peer_id: PeerId,
    /// Its listen addresses (ports resolved).
    pub listen_addrs: Vec<Multiaddr>,
    /// Where its HTTP API listens.
    pub api_addr: SocketAddr,
    /// The mesh.
    pub client: Client,
    /// The store.
    pub db: Db,
    /// The metrics registry (register more metrics here).
    pub metrics: Metrics,
    /// Its configuration.
    pub config: NodeConfig,
    api_stop: Option<oneshot::Sender<()>>,
    tasks: Vec<JoinHandle<()>>,
    /// The chain client, when the node has a chain.
    pub chain: Option<chain::Client>,
    /// The roles' actor, when the node has a chain.
    pub roles: Option<RolesHandle>,
}

impl NodeHandle {
    /// The listen addresses with `/p2p/<PeerId>` appended (what others bootstrap from).
    pub fn p2p_addrs(&self) -> Vec<Multiaddr> {
        self.listen_addrs
            .iter()
            .map(|a| a.clone().with_p2p(self.peer_id).unwrap_or_else(|a| a))
            .collect()
    }

    /// The base URL of the API, `http://host:port`.
    pub fn api_url(&self) -> String {
        format!("http://{}", self.api_addr)
    }

    /// Stops the API, the fetches and the mesh (closing all connections), then waits for the
    /// tasks to end. Everything acknowledged is already on disk.
    pub async fn shutdown(mut self) {
        if let Some(roles) = &self.roles {
            // The roles' exit work first (a provider's unlisting), while the chain is reachable.
            let (reply, done) = oneshot::channel();
            let exit = async {
                if roles.send(Command::Shutdown { reply }).await {
                    let _ = done.await;
                }
            };
            if tokio::time::timeout(UNLIST_TIMEOUT + SHUTDOWN_WAIT, exit)
                .await
                .is_err()
            {
                tracing::warn!(target: "node", "the roles' exit work timed out");
            }
        }
        if let Some(stop) = self.api_stop.take() {
            let _ = stop.send(());
        }
        let _ = self.client.shutdown().await;
        for task in self.tasks.drain(..) {
            let abort = task.abort_handle();
            if tokio::time::timeout(SHUTDOWN_WAIT, task).await.is_err() {
                abort.abort();
            }
        }
        // What fetches wrote since their last checkpoint, durable now rather than re-hashed at
        // the next start.
        let blobs = self.client.blobs().clone();
        match tokio::task::spawn_blocking(move || blobs.checkpoint_all()).await {
            Ok(Ok(_)) => {}
            Ok(Err(e)) => {
                tracing::warn!(target: "node", error = %e, "blob checkpoint at shutdown failed")
            }
            Err(e) => {
                tracing::warn!(target: "node", error = %e, "blob checkpoint at shutdown failed")
            }
        }
        tracing::info!(target: "node", peer_id = %self.peer_id, "node stopped");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn addrs(list: &[&str]) -> Vec<Multiaddr> {
        list.iter().map(|a| a.parse().unwrap()).collect()
    }

    #[test]
    fn listed_addr_prefers_a_concrete_tcp_address_without_p2p() {
        let peer = PeerId::random();
        let list = addrs(&[
            "/ip4/0.0.0.0/tcp/4001",
            "/ip4/127.0.0.1/udp/4002/quic-v1",
            &format!("/ip4/127.0.0.1/tcp/4001/p2p/{peer}"),
        ]);
        assert_eq!(
            listed_addr(&list),
            Some("/ip4/127.0.0.1/tcp/4001".parse().unwrap())
        );
        let quic_only = addrs(&["/ip6/::/tcp/1", "/ip4/10.0.0.2/udp/4002/quic-v1"]);
        assert_eq!(
            listed_addr(&quic_only),
            Some("/ip4/10.0.0.2/udp/4002/quic-v1".parse().unwrap())
        );
        assert_eq!(listed_addr(&addrs(&["/ip4/0.0.0.0/tcp/1"])), None);
    }
}
