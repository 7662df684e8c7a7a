//! Network settings (`testnet/networks.toml`, embedded in the binary) and deployment records
//! (`testnet/deployments/<network>.json`), resolved with command-line overrides into a
//! [`Config`].

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use alloy::primitives::utils::{format_ether, parse_ether};
use alloy::primitives::{Address, U256};
use serde::{Deserialize, Serialize};

use super::Error;

/// The committed network settings, compiled in so the binary works outside the repository.
pub const NETWORKS_TOML: &str = include_str!("../../../testnet/networks.toml");
/// Name of the local anvil network.
pub const DEVNET: &str = "devnet";
/// Chain id of anvil (and so of every devnet).
pub const DEVNET_CHAIN_ID: u64 = 31337;
/// Default folder of deployment records, relative to the working directory.
pub const DEPLOYMENTS_DIR: &str = "testnet/deployments";

/// One chain's settings; see the comments in `testnet/networks.toml`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Network {
    /// The network's name (the TOML table key).
    #[serde(skip)]
    pub name: String,
    /// The chain id the endpoint must report.
    pub chain_id: u64,
    /// Default RPC endpoint.
    pub rpc_url: String,
    /// Block explorer base URL.
    #[serde(default)]
    pub explorer: Option<String>,
    /// What gas is paid in.
    pub gas_token: String,
    /// The $DUCK token, when it exists independently of our deployment (mainnet).
    #[serde(default)]
    pub duck_token: Option<Address>,
    /// Blocks the watcher waits before reporting an event.
    #[serde(default)]
    pub confirmations: u64,
    /// Poll interval of the watcher and the transaction sender, in milliseconds.
    #[serde(default = "default_poll_ms")]
    pub poll_interval_ms: u64,
    /// Most blocks one `eth_getLogs` request covers.
    #[serde(default = "default_log_range")]
    pub log_range: u64,
    /// Coordinator stake in whole $DUCK (decimal string), used at deploy time.
    #[serde(default)]
    pub min_stake: Option<String>,
    /// DuckToken faucet cap per account, in whole $DUCK.
    #[serde(default)]
    pub faucet_per_account: Option<String>,
    /// DuckToken faucet cap in total, in whole $DUCK.
    #[serde(default)]
    pub faucet_total: Option<String>,
}

fn default_poll_ms() -> u64 {
    1000
}

fn default_log_range() -> u64 {
    2000
}

impl Network {
    /// Whether this is a local anvil chain (where the well-known dev keys may be used).
    pub fn is_devnet(&self) -> bool {
        self.chain_id == DEVNET_CHAIN_ID
    }

    /// The watcher's and sender's poll interval.
    pub fn poll_interval(&self) -> Duration {
        Duration::from_millis(self.poll_interval_ms.max(10))
    }

    /// The coordinator stake in base units (default 1000 DUCK).
    pub fn min_stake(&self) -> Result<U256, Error> {
        duck_setting(&self.name, "min_stake", self.min_stake.as_deref(), "1000")
    }

    /// Faucet caps in base units: (per account, total).
    pub fn faucet_caps(&self) -> Result<(U256, U256), Error> {
        Ok((
            duck_setting(
                &self.name,
                "faucet_per_account",
                self.faucet_per_account.as_deref(),
                "10000",
            )?,
            duck_setting(
                &self.name,
                "faucet_total",
                self.faucet_total.as_deref(),
                "100000000",
            )?,
        ))
    }

    /// Where this network's deployment record lives by default.
    pub fn default_deployment_path(&self) -> PathBuf {
        Path::new(DEPLOYMENTS_DIR).join(format!("{}.json", self.name))
    }
}

fn duck_setting(
    network: &str,
    field: &str,
    value: Option<&str>,
    default: &str,
) -> Result<U256, Error> {
    let text = value.unwrap_or(default);
    parse_duck(text).map_err(|e| Error::Config(format!("{network}.{field}: {e}")))
}

/// Parses a decimal $DUCK amount ("1.5") into base units (18 decimals).
pub fn parse_duck(text: &str) -> Result<U256, Error> {
    parse_ether(text.trim()).map_err(|e| Error::InvalidArgument {
        name: "amount",
        reason: format!("{text:?} is not a $DUCK amount: {e}"),
    })
}

/// Formats base units as a decimal $DUCK amount without trailing zeros ("1.5").
pub fn format_duck(amount: U256) -> String {
    let s = format_ether(amount);
    match s.split_once('.') {
        Some((whole, frac)) => {
            let frac = frac.trim_end_matches('0');
            if frac.is_empty() {
                whole.to_owned()
            } else {
                format!("{whole}.{frac}")
            }
        }
        None => s,
    }
}

/// All known networks, by name.
#[derive(Debug, Clone)]
pub struct Networks {
    networks: BTreeMap<String, Network>,
}

#[derive(Deserialize)]
struct NetworksFile {
    networks: BTreeMap<String, Network>,
}

impl Networks {
    /// The networks compiled into the binary (`testnet/networks.toml`).
    pub fn builtin() -> Result<Self, Error> {
        Self::from_toml(NETWORKS_TOML)
    }

    /// Reads a networks file.
    pub fn load(path: &Path) -> Result<Self, Error> {
        let text = std::fs::read_to_string(path).map_err(|e| Error::io(path, e))?;
        Self::from_toml(&text).map_err(|e| Error::Config(format!("{}: {e}", path.display())))
    }

    /// Parses networks from TOML text.
    pub fn from_toml(text: &str) -> Result<Self, Error> {
        let file: NetworksFile =
            toml::from_str(text).map_err(|e| Error::Config(format!("networks file: {e}")))?;
        let networks = file
            .networks
            .into_iter()
            .map(|(name, mut n)| {
                n.name = name.clone();
                (name, n)
            })
            .collect();
        Ok(Self { networks })
    }

    /// The network called `name`.
    pub fn get(&self, name: &str) -> Result<&Network, Error> {
        self.networks.get(name).ok_or_else(|| {
            Error::Config(format!(
                "unknown network {name:?}; known: {}",
                self.names().join(", ")
            ))
        })
    }

    /// The known network names.
    pub fn names(&self) -> Vec<String> {
        self.networks.keys().cloned().collect()
    }
}

/// Where our contracts live on one chain; written by `quackmesh chain deploy`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Deployment {
    /// The network's name.
    pub network: String,
    /// Its chain id.
    pub chain_id: u64,
    /// The block of the first deployment transaction (the watcher's default start).
    pub deploy_block: u64,
    /// The account that deployed (and owns DuckToken, when deployed).
    pub deployer: Address,
    /// The $DUCK token.
    pub duck_token: Address,
    /// Whether `duck_token` is our DuckToken (mintable, with a faucet) rather than an
    /// existing token.
    pub duck_token_deployed: bool,
    /// ComputeMarketplace.
    pub compute_marketplace: Address,
    /// TrainingPool.
    pub training_pool: Address,
    /// InferencePool.
    pub inference_pool: Address,
    /// The coordinator stake TrainingPool was deployed with, in base units.
    pub min_stake: U256,
    /// Unix time of the deployment.
    pub deployed_at: u64,
}

impl Deployment {
    /// Reads a deployment record.
    pub fn load(path: &Path) -> Result<Self, Error> {
        let text = std::fs::read_to_string(path).map_err(|e| Error::io(path, e))?;
        serde_json::from_str(&text).map_err(|e| Error::Config(format!("{}: {e}", path.display())))
    }

    /// Writes the record atomically (temp file + rename), creating the folder if needed.
    pub fn save(&self, path: &Path) -> Result<(), Error> {
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
        }
        let mut text = serde_json::to_string_pretty(self)
            .map_err(|e| Error::Config(format!("encode deployment: {e}")))?;
        text.push('\n');
        let tmp = path.with_extension("json.tmp");
        std::fs::write(&tmp, text).map_err(|e| Error::io(&tmp, e))?;
        std::fs::rename(&tmp, path).map_err(|e| Error::io(path, e))
    }

    /// The four contract addresses with their names.
    pub fn contracts(&self) -> [(&'static str, Address); 4] {
        [
            ("DuckToken", self.duck_token),
            ("ComputeMarketplace", self.compute_marketplace),
            ("TrainingPool", self.training_pool),
            ("InferencePool", self.inference_pool),
        ]
    }
}

/// Everything needed to talk to one network: its settings, the endpoint actually used, and
/// where its deployment record is.
#[derive(Debug, Clone)]
pub struct Config {
    /// The network's settings.
    pub network: Network,
    /// The RPC endpoint (the network's default unless overridden).
    pub rpc_url: String,
    /// The deployment record's path.
    pub deployment_path: PathBuf,
}

impl Config {
    /// Resolves a network by name with optional endpoint and deployment-file overrides.
    pub fn resolve(
        networks: &Networks,
        name: &str,
        rpc_url: Option<&str>,
        deployment_path: Option<&Path>,
    ) -> Result<Self, Error> {
        let network = networks.get(name)?.clone();
        Ok(Self {
            rpc_url: rpc_url.map_or_else(|| network.rpc_url.clone(), str::to_owned),
            deployment_path: deployment_path
                .map_or_else(|| network.default_deployment_path(), Path::to_path_buf),
            network,
        })
    }

    /// A devnet config for an anvil at `rpc_url` (tests and `scripts/devnet.sh`).
    pub fn devnet(rpc_url: &str, deployment_path: PathBuf) -> Result<Self, Error> {
        let mut cfg = Self::resolve(
            &Networks::builtin()?,
            DEVNET,
            Some(rpc_url),
            Some(&deployment_path),
        )?;
        cfg.rpc_url = rpc_url.to_owned();
        Ok(cfg)
    }

    /// Reads the deployment record, checking it belongs to this network.
    pub fn load_deployment(&self) -> Result<Deployment, Error> {
        let d = Deployment::load(&self.deployment_path).map_err(|e| match e {
            Error::Io { path, reason } => Error::Config(format!(
                "no deployment for {} at {path} ({reason}); run `quackmesh chain deploy --network {}` or pass --deployment",
                self.network.name, self.network.name
            )),
            other => other,
        })?;
        if d.chain_id != self.network.chain_id {
            return Err(Error::ChainIdMismatch {
                network: format!("{} (deployment file)", self.network.name),
                expected: self.network.chain_id,
                actual: d.chain_id,
            });
        }
        Ok(d)
    }

    /// The endpoint as a URL.
    pub fn rpc_url(&self) -> Result<reqwest::Url, Error> {
        self.rpc_url
            .parse()
            .map_err(|e| Error::Config(format!("rpc url {:?}: {e}", self.rpc_url)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn builtin_networks_parse_with_expected_ids() {
        let nets = Networks::builtin().unwrap();
        assert_eq!(nets.get("devnet").unwrap().chain_id, 31337);
        assert!(nets.get("devnet").unwrap().is_devnet());
        let testnet = nets.get("duckchain-testnet").unwrap();
        assert_eq!(testnet.chain_id, 202105);
        assert_eq!(testnet.rpc_url, "https://testnet-rpc.duckchain.io");
        assert_eq!(
            testnet.explorer.as_deref(),
            Some("https://testnet-scan.duckchain.io")
        );
        assert_eq!(testnet.duck_token, None);
        let mainnet = nets.get("duckchain-mainnet").unwrap();
        assert_eq!(mainnet.chain_id, 5545);
        assert_eq!(mainnet.gas_token, "TON");
        assert_eq!(
            mainnet.duck_token.unwrap().to_string().to_lowercase(),
            "0xda65892ea771d3268610337e9964d916028b7dad"
        );
        assert_eq!(mainnet.name, "duckchain-mainnet");
    }

    #[test]
    fn unknown_network_names_the_known_ones() {
        let err = Networks::builtin().unwrap().get("moon").unwrap_err();
        assert!(err.to_string().contains("devnet"), "{err}");
    }

    #[test]
    fn duck_amounts_round_trip() {
        assert_eq!(
            parse_duck("1.5").unwrap(),
            U256::from(1_500_000_000_000_000_000u64)
        );
        assert_eq!(format_duck(parse_duck("1.5").unwrap()), "1.5");
        assert_eq!(format_duck(parse_duck("100").unwrap()), "100");
        assert_eq!(format_duck(U256::from(1)), "0.000000000000000001");
        assert!(parse_duck("ten").is_err());
        let devnet = Networks::builtin().unwrap().get("devnet").unwrap().clone();
        assert_eq!(devnet.min_stake().unwrap(), parse_duck("100").unwrap());
    }

    #[test]
    fn deployment_saves_and_loads_atomically() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("sub/devnet.json");
        let d = Deployment {
            network: "devnet".into(),
            chain_id: 31337,
            deploy_block: 1,
            deployer: Address::repeat_byte(1),
            duck_token: Address::repeat_byte(2),
            duck_token_deployed: true,
            compute_marketplace: Address::repeat_byte(3),
            training_pool: Address::repeat_byte(4),
            inference_pool: Address::repeat_byte(5),
            min_stake: U256::from(7),
            deployed_at: 1_700_000_000,
        };
        d.save(&path).unwrap();
        assert_eq!(Deployment::load(&path).unwrap(), d);
        assert!(!path.with_extension("json.tmp").exists());
    }

    #[test]
    fn deployment_of_another_chain_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("d.json");
        let mut d = Deployment {
            network: "devnet".into(),
            chain_id: 202105,
            deploy_block: 0,
            deployer: Address::ZERO,
            duck_token: Address::ZERO,
            duck_token_deployed: false,
            compute_marketplace: Address::ZERO,
            training_pool: Address::ZERO,
            inference_pool: Address::ZERO,
            min_stake: U256::ZERO,
            deployed_at: 0,
        };
        d.save(&path).unwrap();
        let cfg =
            Config::resolve(&Networks::builtin().unwrap(), "devnet", None, Some(&path)).unwrap();
        assert!(matches!(
            cfg.load_deployment(),
            Err(Error::ChainIdMismatch { .. })
        ));
        d.chain_id = 31337;
        d.save(&path).unwrap();
        assert_eq!(cfg.load_deployment().unwrap(), d);
    }
}
