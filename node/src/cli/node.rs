//! Arguments of `quackmesh node`.

use std::{net::SocketAddr, path::PathBuf};

use clap::Args;
use libp2p::Multiaddr;
use quackmesh::config::ConfigLayer;

/// Run a QuackMesh node: join the mesh, serve the HTTP API, until Ctrl-C or SIGTERM.
///
/// Prints `peer_id: ...`, one `listen: ...` line per address (with /p2p/ suffix, ready to be
/// another node's --bootstrap) and `api: http://...` on stdout. Settings come from these flags,
/// then the --config TOML file, then QUACKMESH_* environment variables (QUACKMESH_DATA_DIR,
/// QUACKMESH_LISTEN, QUACKMESH_BOOTSTRAP (comma-separated), QUACKMESH_API, QUACKMESH_PROVIDE,
/// QUACKMESH_CONTRIBUTE, QUACKMESH_COORDINATOR, QUACKMESH_MDNS, QUACKMESH_UPLOAD_RATE,
/// QUACKMESH_MAX_BLOB_BYTES, QUACKMESH_DATA, QUACKMESH_PRICE, QUACKMESH_WITHDRAW_EVERY,
/// QUACKMESH_UNLIST_ON_EXIT, QUACKMESH_ANNOUNCE, QUACKMESH_NETWORK,
/// QUACKMESH_RPC_URL, QUACKMESH_DEPLOYMENT, QUACKMESH_NETWORKS, QUACKMESH_PRIVATE_KEY_FILE,
/// QUACKMESH_KEYSTORE, QUACKMESH_DEV_ACCOUNT), then defaults. The chain key itself comes only
/// from $QUACKMESH_PRIVATE_KEY, a key file or a keystore, never from flags.
#[derive(Debug, Args)]
pub(crate) struct NodeArgs {
    /// Offer this machine on the compute marketplace: list its CPUs, memory and GPUs
    /// (nvidia-smi) with this node's PeerId and address at --price DUCK an hour (once; a
    /// restart reuses the listing and updates its address or price), follow its rentals and
    /// withdraw the rent they accrue every --withdraw-every seconds. Needs the chain settings.
    #[arg(long)]
    pub(crate) provide: bool,
    /// Contribute: train announced jobs on the local --data and earn $DUCK for accepted updates
    /// (needs the chain settings).
    #[arg(long)]
    pub(crate) contribute: bool,
    /// Stand for election as a job coordinator: registers on chain, heartbeats, and runs the
    /// rounds of the jobs it is elected for (needs the chain settings).
    #[arg(long)]
    pub(crate) coordinator: bool,
    /// Directory for the identity key and the store [default: ~/.quackmesh].
    #[arg(long, value_name = "DIR")]
    pub(crate) data_dir: Option<PathBuf>,
    /// Multiaddr to listen on; repeat for several [default: /ip4/127.0.0.1/tcp/0 and
    /// /ip4/127.0.0.1/udp/0/quic-v1].
    #[arg(long, value_name = "MULTIADDR")]
    pub(crate) listen: Vec<Multiaddr>,
    /// Peer to dial at start, e.g. /ip4/1.2.3.4/tcp/4001/p2p/12D3...; repeat for several.
    #[arg(long, value_name = "MULTIADDR")]
    pub(crate) bootstrap: Vec<Multiaddr>,
    /// Address of the HTTP API; port 0 picks a free one [default: 127.0.0.1:7720].
    #[arg(long, value_name = "ADDR")]
    pub(crate) api: Option<SocketAddr>,
    /// File with the API token that clients not on loopback must send as `Authorization:
    /// Bearer TOKEN` to change anything or read private data; created with a random token if
    /// missing [default: DATA_DIR/api-token].
    #[arg(long, value_name = "FILE")]
    pub(crate) api_token_file: Option<PathBuf>,
    /// Discover peers on the local network with mDNS (multicast; off by default).
    #[arg(long)]
    pub(crate) mdns: bool,
    /// Limit blob uploads to this many bytes per second [default: unlimited].
    #[arg(long, value_name = "BYTES_PER_SEC")]
    pub(crate) upload_rate: Option<u64>,
    /// Largest blob accepted by POST /api/blob, in bytes [default: 1 GiB].
    #[arg(long, value_name = "BYTES")]
    pub(crate) max_blob_bytes: Option<u64>,
    /// Training data of a contributor: a directory of MNIST-format IDX files
    /// (train-images-idx3-ubyte[.gz], train-labels-idx1-ubyte[.gz]). It never leaves the node.
    #[arg(long, value_name = "DIR")]
    pub(crate) data: Option<PathBuf>,
    /// Provider's price per hour, in $DUCK (e.g. 2.5).
    #[arg(long, value_name = "DUCK_PER_HOUR")]
    pub(crate) price: Option<String>,
    /// Provider: withdraw accrued rent every this many seconds [default: 600].
    #[arg(long, value_name = "SECS")]
    pub(crate) withdraw_every: Option<u64>,
    /// Provider: unlist the machine when the node shuts down (Ctrl-C or SIGTERM); refused by
    /// the contract while the machine is rented.
    #[arg(long)]
    pub(crate) unlist_on_exit: bool,
    /// The public multiaddr this node is reached at, e.g. /ip4/203.0.113.7/tcp/4001 (an EC2
    /// Elastic IP): advertised to peers, and listed on chain by a provider [default: the
    /// listen addresses; a provider lists the first that is not 0.0.0.0].
    #[arg(long, value_name = "MULTIADDR")]
    pub(crate) announce: Option<Multiaddr>,
    /// Chain network: devnet, duckchain-testnet or duckchain-mainnet. Setting --network,
    /// --rpc-url or --deployment connects the node's roles to the chain.
    #[arg(long, value_name = "NAME")]
    pub(crate) network: Option<String>,
    /// Chain RPC endpoint [default: the network's].
    #[arg(long, value_name = "URL")]
    pub(crate) rpc_url: Option<String>,
    /// Deployment record [default: testnet/deployments/<network>.json].
    #[arg(long, value_name = "FILE")]
    pub(crate) deployment: Option<PathBuf>,
    /// A networks file instead of the built-in testnet/networks.toml.
    #[arg(long, value_name = "FILE")]
    pub(crate) networks: Option<PathBuf>,
    /// The node's chain key: a file with a hex private key. Otherwise $QUACKMESH_PRIVATE_KEY,
    /// then --keystore (password in $QUACKMESH_KEYSTORE_PASSWORD), then on devnet
    /// --dev-account.
    #[arg(long, value_name = "FILE")]
    pub(crate) private_key_file: Option<PathBuf>,
    /// An encrypted keystore [default: <data-dir>/keystore.json when it exists].
    #[arg(long, value_name = "FILE")]
    pub(crate) keystore: Option<PathBuf>,
    /// File holding the keystore's password (instead of $QUACKMESH_KEYSTORE_PASSWORD; for
    /// services, where an environment is easier to leak than a 0600 file).
    #[arg(long, value_name = "FILE")]
    pub(crate) keystore_password_file: Option<PathBuf>,
    /// On devnet only: which of anvil's ten funded accounts is this node's key.
    #[arg(long, value_name = "INDEX")]
    pub(crate) dev_account: Option<usize>,
    /// TOML file with the same settings (keys: data_dir, listen, bootstrap, api, provide,
    /// contribute, coordinator, mdns, upload_rate, max_blob_bytes, data, price, withdraw_every,
    /// unlist_on_exit, announce, network, rpc_url, deployment, networks, private_key_file,
    /// keystore, keystore_password_file, api_token_file, dev_account).
    #[arg(long, value_name = "FILE", env = "QUACKMESH_CONFIG")]
    pub(crate) config: Option<PathBuf>,
}

impl NodeArgs {
    /// The flags as the highest configuration layer (absent flags leave the field unset).
    pub(crate) fn layer(&self) -> ConfigLayer {
        let flag = |on: bool| on.then_some(true);
        let list = |v: &Vec<Multiaddr>| (!v.is_empty()).then(|| v.clone());
        ConfigLayer {
            data_dir: self.data_dir.clone(),
            listen: list(&self.listen),
            bootstrap: list(&self.bootstrap),
            api: self.api,
            api_token_file: self.api_token_file.clone(),
            provide: flag(self.provide),
            contribute: flag(self.contribute),
            coordinator: flag(self.coordinator),
            mdns: flag(self.mdns),
            upload_rate: self.upload_rate,
            max_blob_bytes: self.max_blob_bytes,
            network: self.network.clone(),
            rpc_url: self.rpc_url.clone(),
            deployment: self.deployment.clone(),
            networks: self.networks.clone(),
            private_key_file: self.private_key_file.clone(),
            keystore: self.keystore.clone(),
            keystore_password_file: self.keystore_password_file.clone(),
            dev_account: self.dev_account,
            data: self.data.clone(),
            price: self.price.clone(),
            withdraw_every: self.withdraw_every,
            unlist_on_exit: flag(self.unlist_on_exit),
            announce: self.announce.clone(),
        }
    }
}
