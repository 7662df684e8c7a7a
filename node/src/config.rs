//! The node's configuration, layered. Precedence, highest first: command-line flags, the TOML
//! file given with `--config`, `QUACKMESH_*` environment variables, built-in defaults. Each
//! source becomes a [`ConfigLayer`] (every field optional); layers are merged field by field
//! (a list in a higher layer replaces the lower one) and resolved into a [`NodeConfig`].
//!
//! Defaults keep a node to itself: it listens on 127.0.0.1 (TCP and QUIC, random ports),
//! serves its API on 127.0.0.1:7720, has no bootstrap peers and no mDNS.

use std::{
    net::SocketAddr,
    path::{Path, PathBuf},
};

use libp2p::Multiaddr;
use serde::{Deserialize, Serialize};

use crate::mesh::MeshConfig;

/// Prefix of the environment variables read.
pub const ENV_PREFIX: &str = "QUACKMESH_";
/// Default API address (a fixed port so that `quackmesh blob ...` finds the local node).
pub const DEFAULT_API_ADDR: &str = "127.0.0.1:7720";
/// Default listen addresses: loopback only, TCP and QUIC, ports chosen by the OS.
pub const DEFAULT_LISTEN: [&str; 2] = ["/ip4/127.0.0.1/tcp/0", "/ip4/127.0.0.1/udp/0/quic-v1"];
/// Default cap on one blob uploaded through the API (it is held in memory while chunked).
pub const DEFAULT_MAX_BLOB_BYTES: u64 = 1024 * 1024 * 1024;

/// Errors reading configuration.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The config file could not be read.
    #[error("cannot read config file {path}: {reason}")]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        reason: String,
    },
    /// The config file is not valid TOML for our keys (unknown keys are errors too).
    #[error("invalid config file {path}: {reason}")]
    Toml {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
    /// An environment variable holds a value that does not parse.
    #[error("invalid value {value:?} in {var}: {reason}")]
    Env {
        /// The variable.
        var: String,
        /// Its value.
        value: String,
        /// What was expected.
        reason: String,
    },
}

/// Which roles the node runs. Later issues give them behaviour.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Roles {
    /// Rents out this machine (`--provide`).
    pub provide: bool,
    /// Trains on local data (`--contribute`).
    pub contribute: bool,
    /// Stands for election as a job coordinator (`--coordinator`).
    pub coordinator: bool,
}

impl Roles {
    /// The names of the roles switched on.
    pub fn names(&self) -> Vec<String> {
        [
            (self.provide, "provide"),
            (self.contribute, "contribute"),
            (self.coordinator, "coordinator"),
        ]
        .into_iter()
        .filter(|(on, _)| *on)
        .map(|(_, n)| n.to_owned())
        .collect()
    }
}

/// The resolved configuration of a node.
#[derive(Debug, Clone)]
pub struct NodeConfig {
    /// Where the identity key and the store live.
    pub data_dir: PathBuf,
    /// Multiaddrs to listen on.
    pub listen: Vec<Multiaddr>,
    /// Peers to dial at start (`/p2p/<PeerId>` suffix recommended).
    pub bootstrap: Vec<Multiaddr>,
    /// Address of the HTTP API (port 0: any free port).
    pub api_addr: SocketAddr,
    /// The file holding the API token that clients other than loopback must send
    /// (`<data_dir>/api-token` by default; created with a random token when missing).
    pub api_token_file: PathBuf,
    /// Roles switched on.
    pub roles: Roles,
    /// Largest blob accepted by `POST /api/blob`.
    pub max_blob_bytes: u64,
    /// Mesh tuning (mDNS and the upload rate come from the layers).
    pub mesh: MeshConfig,
    /// The chain the node's roles use (`None`: a mesh-only node).
    pub chain: Option<ChainSettings>,
    /// The contributor's training data.
    pub contribute_data: Option<PathBuf>,
    /// The provider's price per hour in $DUCK (decimal text).
    pub price: Option<String>,
    /// The provider's settings besides the price.
    pub provider: ProviderSettings,
}

/// Name of the API token file in the data dir.
pub const API_TOKEN_FILE: &str = "api-token";

/// Default pause between a provider's withdrawals of accrued rent, seconds.
pub const DEFAULT_WITHDRAW_EVERY_SECS: u64 = 600;

/// How a provider runs (with `--provide`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProviderSettings {
    /// Pause between withdrawals of accrued rent, seconds.
    pub withdraw_every_secs: u64,
    /// Unlist the machine when the node shuts down.
    pub unlist_on_exit: bool,
    /// The multiaddr listed on the marketplace (default: the first listen address that is
    /// not unspecified).
    pub announce: Option<Multiaddr>,
}

impl Default for ProviderSettings {
    fn default() -> Self {
        Self {
            withdraw_every_secs: DEFAULT_WITHDRAW_EVERY_SECS,
            unlist_on_exit: false,
            announce: None,
        }
    }
}

/// Where the node's chain is and which key it signs with. The private key itself is never part
/// of the configuration: it comes from `QUACKMESH_PRIVATE_KEY`, a key file or a keystore.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChainSettings {
    /// Network name in networks.toml.
    pub network: String,
    /// RPC endpoint override.
    pub rpc_url: Option<String>,
    /// Deployment record override.
    pub deployment: Option<PathBuf>,
    /// Networks file override.
    pub networks: Option<PathBuf>,
    /// Key file.
    pub private_key_file: Option<PathBuf>,
    /// Keystore file.
    pub keystore: Option<PathBuf>,
    /// File holding the keystore's password (instead of `QUACKMESH_KEYSTORE_PASSWORD`).
    pub keystore_password_file: Option<PathBuf>,
    /// Devnet account index.
    pub dev_account: Option<usize>,
}

impl NodeConfig {
    /// Defaults with `data_dir` (what `ConfigLayer::default().resolve()` gives, but with the
    /// data dir set).
    pub fn new(data_dir: impl Into<PathBuf>) -> Self {
        ConfigLayer {
            data_dir: Some(data_dir.into()),
            ..ConfigLayer::default()
        }
        .resolve()
    }
}

/// One source of configuration; `None` means "not set here".
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ConfigLayer {
    /// Data directory.
    pub data_dir: Option<PathBuf>,
    /// Listen multiaddrs.
    pub listen: Option<Vec<Multiaddr>>,
    /// Bootstrap multiaddrs.
    pub bootstrap: Option<Vec<Multiaddr>>,
    /// API socket address.
    pub api: Option<SocketAddr>,
    /// File holding the API token (default: `<data_dir>/api-token`).
    pub api_token_file: Option<PathBuf>,
    /// Provider role.
    pub provide: Option<bool>,
    /// Contributor role.
    pub contribute: Option<bool>,
    /// Coordinator-eligible role.
    pub coordinator: Option<bool>,
    /// mDNS discovery.
    pub mdns: Option<bool>,
    /// Upload rate limit for blob chunks, bytes per second.
    pub upload_rate: Option<u64>,
    /// Largest blob accepted by the API, bytes.
    pub max_blob_bytes: Option<u64>,
    /// Chain network name (devnet, duckchain-testnet, duckchain-mainnet); setting any chain
    /// field connects the node to the chain.
    pub network: Option<String>,
    /// Chain RPC endpoint (default: the network's).
    pub rpc_url: Option<String>,
    /// Deployment record (default: testnet/deployments/<network>.json).
    pub deployment: Option<PathBuf>,
    /// A networks file instead of the built-in one.
    pub networks: Option<PathBuf>,
    /// A file holding the node's hex private key.
    pub private_key_file: Option<PathBuf>,
    /// An encrypted keystore (password in QUACKMESH_KEYSTORE_PASSWORD or the file below).
    pub keystore: Option<PathBuf>,
    /// File holding the keystore password.
    pub keystore_password_file: Option<PathBuf>,
    /// On devnet, which of anvil's funded accounts to use when no key is given.
    pub dev_account: Option<usize>,
    /// The contributor's training data (MNIST-format directory).
    pub data: Option<PathBuf>,
    /// Provider: price per hour in $DUCK.
    pub price: Option<String>,
    /// Provider: seconds between withdrawals of accrued rent.
    pub withdraw_every: Option<u64>,
    /// Provider: unlist the machine on shutdown.
    pub unlist_on_exit: Option<bool>,
    /// The public multiaddr this node is reached at (advertised to peers; a provider lists it).
    pub announce: Option<Multiaddr>,
}

fn parse_bool(var: &str, value: &str) -> Result<bool, ConfigError> {
    match value.trim().to_ascii_lowercase().as_str() {
        "1" | "true" | "yes" | "on" => Ok(true),
        "0" | "false" | "no" | "off" | "" => Ok(false),
        _ => Err(ConfigError::Env {
            var: var.to_owned(),
            value: value.to_owned(),
            reason: "expected true/false, yes/no, on/off or 1/0".into(),
        }),
    }
}

fn parse_one<T: std::str::FromStr>(var: &str, value: &str, what: &str) -> Result<T, ConfigError>
where
    T::Err: std::fmt::Display,
{
    value.trim().parse().map_err(|e: T::Err| ConfigError::Env {
        var: var.to_owned(),
        value: value.to_owned(),
        reason: format!("expected {what}: {e}"),
    })
}

fn parse_list<T: std::str::FromStr>(
    var: &str,
    value: &str,
    what: &str,
) -> Result<Vec<T>, ConfigError>
where
    T::Err: std::fmt::Display,
{
    value
        .split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(|s| parse_one(var, s, what))
        .collect()
}

fn default_data_dir() -> PathBuf {
    std::env::var_os("HOME")
        .map(|h| PathBuf::from(h).join(".quackmesh"))
        .unwrap_or_else(|| PathBuf::from(".quackmesh"))
}

impl ConfigLayer {
    /// Parses TOML text (keys as the fields of this struct; unknown keys are errors).
    pub fn from_toml_str(text: &str, path: &Path) -> Result<Self, ConfigError> {
        toml::from_str(text).map_err(|e| ConfigError::Toml {
            path: path.to_owned(),
            reason: e.to_string(),
        })
    }

    /// Reads a TOML file.
    pub fn from_toml_file(path: &Path) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|e| ConfigError::Read {
            path: path.to_owned(),
            reason: e.to_string(),
        })?;
        Self::from_toml_str(&text, path)
    }

    /// Reads `QUACKMESH_*` variables from `vars` (pass `std::env::vars()`); other variables
    /// and unknown `QUACKMESH_*` ones (other modules' settings) are ignored. Lists are
    /// comma-separated.
    pub fn from_env(vars: impl IntoIterator<Item = (String, String)>) -> Result<Self, ConfigError> {
        let mut layer = Self::default();
        for (var, value) in vars {
            let Some(key) = var.strip_prefix(ENV_PREFIX) else {
                continue;
            };
            match key {
                "DATA_DIR" => layer.data_dir = Some(PathBuf::from(&value)),
                "LISTEN" => layer.listen = Some(parse_list(&var, &value, "multiaddrs")?),
                "BOOTSTRAP" => layer.bootstrap = Some(parse_list(&var, &value, "multiaddrs")?),
                "API" => layer.api = Some(parse_one(&var, &value, "host:port")?),
                "API_TOKEN_FILE" => layer.api_token_file = Some(PathBuf::from(&value)),
                "PROVIDE" => layer.provide = Some(parse_bool(&var, &value)?),
                "CONTRIBUTE" => layer.contribute = Some(parse_bool(&var, &value)?),
                "COORDINATOR" => layer.coordinator = Some(parse_bool(&var, &value)?),
                "MDNS" => layer.mdns = Some(parse_bool(&var, &value)?),
                "UPLOAD_RATE" => {
                    layer.upload_rate = Some(parse_one(&var, &value, "bytes per second")?)
                }
                "MAX_BLOB_BYTES" => {
                    layer.max_blob_bytes = Some(parse_one(&var, &value, "bytes")?);
                }
                "NETWORK" => layer.network = Some(value.trim().to_owned()),
                "RPC_URL" => layer.rpc_url = Some(value.trim().to_owned()),
                "DEPLOYMENT" => layer.deployment = Some(PathBuf::from(&value)),
                "NETWORKS" => layer.networks = Some(PathBuf::from(&value)),
                "PRIVATE_KEY_FILE" => layer.private_key_file = Some(PathBuf::from(&value)),
                "KEYSTORE" => layer.keystore = Some(PathBuf::from(&value)),
                "KEYSTORE_PASSWORD_FILE" => {
                    layer.keystore_password_file = Some(PathBuf::from(&value));
                }
                "DEV_ACCOUNT" => {
                    layer.dev_account = Some(parse_one(&var, &value, "an account index")?)
                }
                "DATA" => layer.data = Some(PathBuf::from(&value)),
                "PRICE" => layer.price = Some(value.trim().to_owned()),
                "WITHDRAW_EVERY" => {
                    layer.withdraw_every = Some(parse_one(&var, &value, "seconds")?)
                }
                "UNLIST_ON_EXIT" => layer.unlist_on_exit = Some(parse_bool(&var, &value)?),
                "ANNOUNCE" => layer.announce = Some(parse_one(&var, &value, "a multiaddr")?),
                _ => {}
            }
        }
        Ok(layer)
    }

    /// Merges two layers: fields set in `self` win over `lower`.
    pub fn or(self, lower: Self) -> Self {
        Self {
            data_dir: self.data_dir.or(lower.data_dir),
            listen: self.listen.or(lower.listen),
            bootstrap: self.bootstrap.or(lower.bootstrap),
            api: self.api.or(lower.api),
            api_token_file: self.api_token_file.or(lower.api_token_file),
            provide: self.provide.or(lower.provide),
            contribute: self.contribute.or(lower.contribute),
            coordinator: self.coordinator.or(lower.coordinator),
            mdns: self.mdns.or(lower.mdns),
            upload_rate: self.upload_rate.or(lower.upload_rate),
            max_blob_bytes: self.max_blob_bytes.or(lower.max_blob_bytes),
            network: self.network.or(lower.network),
            rpc_url: self.rpc_url.or(lower.rpc_url),
            deployment: self.deployment.or(lower.deployment),
            networks: self.networks.or(lower.networks),
            private_key_file: self.private_key_file.or(lower.private_key_file),
            keystore: self.keystore.or(lower.keystore),
            keystore_password_file: self.keystore_password_file.or(lower.keystore_password_file),
            dev_account: self.dev_account.or(lower.dev_account),
            data: self.data.or(lower.data),
            price: self.price.or(lower.price),
            withdraw_every: self.withdraw_every.or(lower.withdraw_every),
            unlist_on_exit: self.unlist_on_exit.or(lower.unlist_on_exit),
            announce: self.announce.or(lower.announce),
        }
    }

    /// Fills what is unset with the defaults.
    pub fn resolve(self) -> NodeConfig {
        let data_dir = self.data_dir.clone().unwrap_or_else(default_data_dir);
        // A node on a public network with no bootstrap peers of its own uses the network's.
        let default_bootstrap = self
            .network
            .as_deref()
            .map(default_bootstrap)
            .unwrap_or_default();
        let mesh = MeshConfig {
            mdns: self.mdns.unwrap_or(false),
            external_addrs: self.announce.iter().cloned().collect(),
            upload_bytes_per_sec: self.upload_rate.filter(|r| *r > 0),
            ..MeshConfig::default()
        };
        let chain_set =
            self.network.is_some() || self.rpc_url.is_some() || self.deployment.is_some();
        let chain = chain_set.then(|| ChainSettings {
            network: self.network.unwrap_or_else(|| "devnet".to_owned()),
            rpc_url: self.rpc_url,
            deployment: self.deployment,
            networks: self.networks,
            private_key_file: self.private_key_file,
            keystore: self.keystore,
            keystore_password_file: self.keystore_password_file,
            dev_account: self.dev_account,
        });
        NodeConfig {
            chain,
            contribute_data: self.data,
            price: self.price,
            provider: ProviderSettings {
                withdraw_every_secs: self
                    .withdraw_every
                    .filter(|s| *s > 0)
                    .unwrap_or(DEFAULT_WITHDRAW_EVERY_SECS),
                unlist_on_exit: self.unlist_on_exit.unwrap_or(false),
                announce: self.announce,
            },
            api_token_file: self
                .api_token_file
                .unwrap_or_else(|| data_dir.join(API_TOKEN_FILE)),
            data_dir,
            listen: self.listen.unwrap_or_else(|| {
                DEFAULT_LISTEN
                    .iter()
                    .filter_map(|a| a.parse().ok())
                    .collect()
            }),
            bootstrap: self.bootstrap.unwrap_or(default_bootstrap),
            api_addr: self
                .api
                .unwrap_or_else(|| SocketAddr::from(([127, 0, 0, 1], 7720))),
            roles: Roles {
                provide: self.provide.unwrap_or(false),
                contribute: self.contribute.unwrap_or(false),
                coordinator: self.coordinator.unwrap_or(false),
            },
            max_blob_bytes: self.max_blob_bytes.unwrap_or(DEFAULT_MAX_BLOB_BYTES),
            mesh,
        }
    }
}

/// The public bootstrap peers of the public networks, compiled in from `bootstrap/peers/`
/// (filled in when the EC2 nodes of `bootstrap/` are deployed).
const PUBLIC_PEERS: [(&str, &str); 2] = [
    (
        "duckchain-testnet",
        include_str!("../../bootstrap/peers/duckchain-testnet.toml"),
    ),
    (
        "duckchain-mainnet",
        include_str!("../../bootstrap/peers/duckchain-mainnet.toml"),
    ),
];

/// The bootstrap peers a node of `network` uses when it names none (none for a devnet).
pub fn default_bootstrap(network: &str) -> Vec<Multiaddr> {
    #[derive(Deserialize)]
    struct Peers {
        bootstrap: Vec<Multiaddr>,
    }
    PUBLIC_PEERS
        .iter()
        .find(|(n, _)| *n == network)
        .and_then(|(_, text)| toml::from_str::<Peers>(text).ok())
        .map(|p| p.bootstrap)
        .unwrap_or_default()
}

/// Resolves the configuration from flags, an optional TOML file and environment variables, in
/// that order of precedence.
pub fn layered(
    flags: ConfigLayer,
    file: Option<&Path>,
    env: impl IntoIterator<Item = (String, String)>,
) -> Result<NodeConfig, ConfigError> {
    let file = match file {
        Some(p) => ConfigLayer::from_toml_file(p)?,
        None => ConfigLayer::default(),
    };
    let env = ConfigLayer::from_env(env)?;
    Ok(flags.or(file).or(env).resolve())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect()
    }

    fn write(dir: &Path, text: &str) -> PathBuf {
        let p = dir.join("node.toml");
        std::fs::write(&p, text).unwrap();
        p
    }

    #[test]
    fn defaults_stay_on_loopback() {
        let c = ConfigLayer::default().resolve();
        assert_eq!(c.api_addr.to_string(), DEFAULT_API_ADDR);
        assert_eq!(c.listen.len(), 2);
        assert!(
            c.listen
                .iter()
                .all(|a| a.to_string().starts_with("/ip4/127.0.0.1/"))
        );
        assert!(c.bootstrap.is_empty());
        assert!(!c.mesh.mdns);
        assert_eq!(c.roles, Roles::default());
    }

    #[test]
    fn flag_beats_file_beats_env_beats_default() {
        let dir = tempfile::tempdir().unwrap();
        let file = write(
            dir.path(),
            r#"
            data_dir = "/from/file"
            api = "127.0.0.1:9001"
            listen = ["/ip4/127.0.0.1/tcp/4001"]
            provide = true
            "#,
        );
        let vars = env(&[
            ("QUACKMESH_DATA_DIR", "/from/env"),
            ("QUACKMESH_API", "127.0.0.1:9002"),
            ("QUACKMESH_MDNS", "yes"),
            (
                "QUACKMESH_BOOTSTRAP",
                "/ip4/127.0.0.1/tcp/5001, /ip4/127.0.0.1/tcp/5002",
            ),
            ("QUACKMESH_UPLOAD_RATE", "1000"),
            ("QUACKMESH_PRIVATE_KEY", "not ours, ignored"),
            ("HOME", "/ignored"),
        ]);
        let flags = ConfigLayer {
            data_dir: Some("/from/flag".into()),
            ..Default::default()
        };
        let c = layered(flags, Some(&file), vars).unwrap();
        assert_eq!(c.data_dir, PathBuf::from("/from/flag"), "flag wins");
        assert_eq!(c.api_addr.to_string(), "127.0.0.1:9001", "file beats env");
        assert_eq!(
            c.listen,
            vec!["/ip4/127.0.0.1/tcp/4001".parse::<Multiaddr>().unwrap()]
        );
        assert!(c.mesh.mdns, "env beats default");
        assert_eq!(c.bootstrap.len(), 2);
        assert_eq!(c.mesh.upload_bytes_per_sec, Some(1000));
        assert!(c.roles.provide && !c.roles.contribute);
    }

    #[test]
    fn a_flag_list_replaces_the_file_list() {
        let file = ConfigLayer {
            bootstrap: Some(vec!["/ip4/127.0.0.1/tcp/1".parse().unwrap()]),
            ..Default::default()
        };
        let flags = ConfigLayer {
            bootstrap: Some(vec!["/ip4/127.0.0.1/tcp/2".parse().unwrap()]),
            ..Default::default()
        };
        let c = flags.or(file).resolve();
        assert_eq!(
            c.bootstrap,
            vec!["/ip4/127.0.0.1/tcp/2".parse::<Multiaddr>().unwrap()]
        );
    }

    #[test]
    fn bad_values_are_clear_errors() {
        let err = ConfigLayer::from_env(env(&[("QUACKMESH_API", "nope")])).unwrap_err();
        assert!(err.to_string().contains("QUACKMESH_API"), "{err}");
        assert!(ConfigLayer::from_env(env(&[("QUACKMESH_MDNS", "maybe")])).is_err());
        assert!(ConfigLayer::from_env(env(&[("QUACKMESH_LISTEN", "/ip4/1.2.3.4/tcp/x")])).is_err());
        let err = ConfigLayer::from_toml_str("lisen = []", Path::new("x.toml")).unwrap_err();
        assert!(err.to_string().contains("lisen"), "{err}");
        assert!(matches!(
            layered(
                ConfigLayer::default(),
                Some(Path::new("/no/such/file.toml")),
                vec![]
            ),
            Err(ConfigError::Read { .. })
        ));
    }

    #[test]
    fn roles_are_named() {
        let r = Roles {
            provide: true,
            contribute: false,
            coordinator: true,
        };
        assert_eq!(r.names(), vec!["provide", "coordinator"]);
    }

    #[test]
    fn public_networks_bring_their_bootstrap_peers_unless_given() {
        // The compiled-in lists parse (an unparsable file would silently give none).
        for (network, text) in PUBLIC_PEERS {
            assert!(
                toml::from_str::<ConfigLayer>(text).is_ok(),
                "bootstrap/peers of {network} is not a settings file"
            );
        }
        assert!(default_bootstrap("devnet").is_empty());
        let testnet = ConfigLayer {
            network: Some("duckchain-testnet".into()),
            ..ConfigLayer::default()
        };
        assert_eq!(
            testnet.clone().resolve().bootstrap,
            default_bootstrap("duckchain-testnet")
        );
        let own: Vec<Multiaddr> = vec!["/ip4/127.0.0.1/tcp/9".parse().unwrap()];
        let c = ConfigLayer {
            bootstrap: Some(own.clone()),
            ..testnet
        }
        .resolve();
        assert_eq!(c.bootstrap, own);
    }
}
