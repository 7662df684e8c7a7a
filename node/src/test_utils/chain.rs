//! Test helpers of the chain area: [`Devnet`] starts anvil on 127.0.0.1 (port 0, so tests run
//! in parallel), deploys the contracts through the real [`TxSender`], funds anvil's ten
//! accounts with $DUCK, and kills anvil when dropped.
//!
//! anvil is found at `$QUACKMESH_ANVIL`, else under the repository's
//! `node_modules/@foundry-rs/anvil-linux-amd64/bin/anvil` (installed by `npm ci`), else on
//! `PATH`.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use alloy::primitives::{Address, U256};
use alloy::providers::{DynProvider, Provider};
use alloy::signers::local::PrivateKeySigner;

use crate::chain::client::connect_http;
use crate::chain::config::{Config, DEVNET, Networks, parse_duck};
use crate::chain::deploy::{DeployOptions, deploy};
use crate::chain::retry::RetryPolicy;
use crate::chain::{Client, Deployment, Error, TxConfig, TxSender, keys};
use crate::store::Db;

/// Environment variable naming the anvil binary.
pub const ANVIL_ENV: &str = "QUACKMESH_ANVIL";
/// How long anvil may take to start listening.
const START_TIMEOUT: Duration = Duration::from_secs(20);

/// Where the anvil binary is.
pub fn anvil_path() -> Result<PathBuf, Error> {
    if let Some(p) = std::env::var_os(ANVIL_ENV) {
        return Ok(PathBuf::from(p));
    }
    let repo = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let native = repo.join("node_modules/@foundry-rs/anvil-linux-amd64/bin/anvil");
    if native.exists() {
        return Ok(native);
    }
    let from_path = std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|d| d.join("anvil"))
            .find(|p| p.exists())
    });
    from_path.ok_or_else(|| {
        Error::Config(format!(
            "anvil not found: run `npm ci` at the repository root or set {ANVIL_ENV}"
        ))
    })
}

/// How to start a devnet.
#[derive(Debug, Clone)]
pub struct DevnetOptions {
    /// Deploy the contracts (otherwise a bare anvil).
    pub deploy: bool,
    /// $DUCK minted to each of anvil's ten accounts (0 = none).
    pub fund_each: U256,
    /// Mine a block every this many seconds instead of on every transaction.
    pub block_time: Option<u64>,
    /// Mine every transaction at once and also an empty block every this many seconds (anvil's
    /// mixed mining), so `block.timestamp` moves as on a live chain even without traffic:
    /// coordinator leases then expire without anyone sending a transaction.
    pub clock_secs: Option<u64>,
}

impl Default for DevnetOptions {
    fn default() -> Self {
        Self {
            deploy: true,
            fund_each: parse_duck("1000000").unwrap_or_default(),
            block_time: None,
            clock_secs: None,
        }
    }
}

/// A running anvil with the contracts deployed (see the module docs).
#[derive(Debug)]
pub struct Devnet {
    child: Child,
    dir: PathBuf,
    rpc_url: String,
    port: u16,
    provider: DynProvider,
    deployment: Option<Deployment>,
}

impl Devnet {
    /// anvil with everything deployed and every dev account holding 1,000,000 DUCK.
    pub async fn start() -> Result<Self, Error> {
        Self::start_with(DevnetOptions::default()).await
    }

    /// anvil without contracts (to test deployment itself).
    pub async fn start_bare() -> Result<Self, Error> {
        Self::start_with(DevnetOptions {
            deploy: false,
            fund_each: U256::ZERO,
            block_time: None,
            clock_secs: None,
        })
        .await
    }

    /// anvil started and prepared as `options` say.
    pub async fn start_with(options: DevnetOptions) -> Result<Self, Error> {
        let dir = unique_temp_dir()?;
        let log_path = dir.join("anvil.log");
        let log = std::fs::File::create(&log_path).map_err(|e| Error::io(&log_path, e))?;
        let log_err = log.try_clone().map_err(|e| Error::io(&log_path, e))?;
        let mut cmd = Command::new(anvil_path()?);
        cmd.args(["--host", "127.0.0.1", "--port", "0", "--chain-id", "31337"])
            .stdin(Stdio::null())
            .stdout(Stdio::from(log))
            .stderr(Stdio::from(log_err));
        if let Some(secs) = options.block_time {
            cmd.args(["--block-time", &secs.to_string()]);
        } else if let Some(secs) = options.clock_secs {
            cmd.args(["--block-time", &secs.to_string(), "--mixed-mining"]);
        }
        let child = cmd
            .spawn()
            .map_err(|e| Error::Config(format!("cannot start anvil: {e}")))?;
        let mut devnet = Self {
            child,
            rpc_url: String::new(),
            port: 0,
            provider: connect_http("http://127.0.0.1:1")?,
            deployment: None,
            dir,
        };
        devnet.port = devnet.wait_for_port(&log_path).await?;
        devnet.rpc_url = format!("http://127.0.0.1:{}", devnet.port);
        devnet.provider = connect_http(&devnet.rpc_url)?;
        if options.deploy {
            devnet.deploy_and_fund(options.fund_each).await?;
        }
        Ok(devnet)
    }

    async fn wait_for_port(&mut self, log_path: &Path) -> Result<u16, Error> {
        let started = Instant::now();
        loop {
            let text = std::fs::read_to_string(log_path).unwrap_or_default();
            if let Some(port) = text
                .lines()
                .find_map(|l| l.strip_prefix("Listening on 127.0.0.1:"))
                .and_then(|p| p.trim().parse().ok())
            {
                return Ok(port);
            }
            if let Ok(Some(status)) = self.child.try_wait() {
                return Err(Error::Config(format!("anvil exited ({status}): {text}")));
            }
            if started.elapsed() > START_TIMEOUT {
                return Err(Error::Config(format!(
                    "anvil did not start within {START_TIMEOUT:?}: {text}"
                )));
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    async fn deploy_and_fund(&mut self, fund_each: U256) -> Result<(), Error> {
        let network = Networks::builtin()?.get(DEVNET)?.clone();
        let sender = self.sender(keys::dev_signer(0)?, None).await?;
        let deployment = deploy(
            &self.provider,
            &sender,
            &network,
            &DeployOptions::for_network(&network)?,
        )
        .await?;
        deployment.save(&self.deployment_path())?;
        self.deployment = Some(deployment.clone());
        if !fund_each.is_zero() {
            let owner = Client::with_provider(
                self.provider.clone(),
                deployment,
                Some(keys::dev_signer(0)?),
                None,
                Self::tx_config(),
            )
            .await?;
            for signer in keys::dev_signers() {
                owner.mint(signer.address(), fund_each).await?;
            }
        }
        Ok(())
    }

    /// Sender settings suited to anvil's instant mining.
    pub fn tx_config() -> TxConfig {
        TxConfig {
            poll_interval: Duration::from_millis(10),
            receipt_timeout: Duration::from_secs(30),
            retry: RetryPolicy {
                attempts: 3,
                first_backoff: Duration::from_millis(50),
                max_backoff: Duration::from_millis(500),
            },
            gas_margin_pct: 20,
        }
    }

    /// The endpoint, `http://127.0.0.1:PORT`.
    pub fn rpc_url(&self) -> &str {
        &self.rpc_url
    }

    /// anvil's port.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// An RPC provider (no signer).
    pub fn provider(&self) -> DynProvider {
        self.provider.clone()
    }

    /// The deployment. Panics on a bare devnet (a test bug).
    pub fn deployment(&self) -> &Deployment {
        self.deployment
            .as_ref()
            .unwrap_or_else(|| panic!("devnet started without deploying"))
    }

    /// Where the deployment record is written (inside the devnet's temp dir).
    pub fn deployment_path(&self) -> PathBuf {
        self.dir.join("devnet.json")
    }

    /// anvil's output.
    pub fn log_path(&self) -> PathBuf {
        self.dir.join("anvil.log")
    }

    /// A devnet [`Config`] pointing at this anvil and its deployment record.
    pub fn config(&self) -> Result<Config, Error> {
        Config::devnet(&self.rpc_url, self.deployment_path())
    }

    /// anvil's well-known account `index` (0 deployed the contracts and owns DuckToken).
    pub fn signer(index: usize) -> PrivateKeySigner {
        keys::dev_signer(index).unwrap_or_else(|e| panic!("{e}"))
    }

    /// A transaction sender for `signer`, recording pending transactions in `db` if given.
    pub async fn sender(
        &self,
        signer: PrivateKeySigner,
        db: Option<Db>,
    ) -> Result<TxSender, Error> {
        Ok(
            TxSender::spawn(self.provider.clone(), signer, db, Self::tx_config())
                .await?
                .0,
        )
    }

    /// A client signing as anvil account `index`.
    pub async fn client(&self, index: usize) -> Result<Client, Error> {
        self.client_for(keys::dev_signer(index)?, None).await
    }

    /// A client signing as `signer`, recording pending transactions in `db` if given.
    pub async fn client_for(
        &self,
        signer: PrivateKeySigner,
        db: Option<Db>,
    ) -> Result<Client, Error> {
        Client::with_provider(
            self.provider.clone(),
            self.deployment().clone(),
            Some(signer),
            db,
            Self::tx_config(),
        )
        .await
    }

    /// A read-only client.
    pub async fn reader(&self) -> Result<Client, Error> {
        Client::with_provider(
            self.provider.clone(),
            self.deployment().clone(),
            None,
            None,
            Self::tx_config(),
        )
        .await
    }

    /// Gives `address` `wei` of the chain's native coin (anvil_setBalance), for keys beyond
    /// anvil's ten accounts.
    pub async fn set_eth_balance(&self, address: Address, wei: U256) -> Result<(), Error> {
        self.provider
            .raw_request::<_, serde_json::Value>("anvil_setBalance".into(), (address, wei))
            .await
            .map(|_| ())
            .map_err(|e| Error::Config(format!("anvil_setBalance: {e}")))
    }

    /// Moves the chain's clock forward by `seconds` and mines a block.
    pub async fn increase_time(&self, seconds: u64) -> Result<(), Error> {
        self.reader().await?.increase_time(seconds).await
    }
}

impl Drop for Devnet {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// A fresh folder under the system temp dir (removed by `Devnet`'s drop).
fn unique_temp_dir() -> Result<PathBuf, Error> {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.subsec_nanos());
    let dir = std::env::temp_dir().join(format!(
        "quackmesh-devnet-{}-{}-{nanos}",
        std::process::id(),
        COUNTER.fetch_add(1, Ordering::Relaxed)
    ));
    std::fs::create_dir_all(&dir).map_err(|e| Error::io(&dir, e))?;
    Ok(dir)
}
