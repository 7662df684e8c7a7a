//! Arguments of the chain area's subcommands: `chain`, `wallet` and `market`.

use std::path::PathBuf;

use clap::{Args, Subcommand};

/// Which network to talk to, and where its deployment is.
#[derive(Debug, Clone, Args)]
pub(crate) struct NetworkArgs {
    /// Network name from networks.toml: devnet, duckchain-testnet or duckchain-mainnet.
    #[arg(long, env = "QUACKMESH_NETWORK", default_value = "devnet")]
    pub(crate) network: String,
    /// RPC endpoint (default: the network's rpc_url).
    #[arg(long, env = "QUACKMESH_RPC_URL")]
    pub(crate) rpc_url: Option<String>,
    /// Deployment record (default: testnet/deployments/<network>.json).
    #[arg(long, env = "QUACKMESH_DEPLOYMENT")]
    pub(crate) deployment: Option<PathBuf>,
    /// Networks file to use instead of the built-in testnet/networks.toml.
    #[arg(long, env = "QUACKMESH_NETWORKS")]
    pub(crate) networks: Option<PathBuf>,
}

/// Where the signing key comes from: --private-key-file, else $QUACKMESH_PRIVATE_KEY, else the
/// keystore (--keystore or <data-dir>/keystore.json, password in
/// $QUACKMESH_KEYSTORE_PASSWORD), else on devnet anvil's account --dev-account.
#[derive(Debug, Clone, Args)]
pub(crate) struct KeyArgs {
    /// File holding a hex private key.
    #[arg(long)]
    pub(crate) private_key_file: Option<PathBuf>,
    /// Encrypted keystore file (default: <data-dir>/keystore.json when it exists).
    #[arg(long)]
    pub(crate) keystore: Option<PathBuf>,
    /// File holding the keystore password (instead of $QUACKMESH_KEYSTORE_PASSWORD).
    #[arg(long)]
    pub(crate) password_file: Option<PathBuf>,
    /// The node's data directory (searched for keystore.json).
    #[arg(long, env = "QUACKMESH_DATA_DIR", default_value = "data")]
    pub(crate) data_dir: PathBuf,
    /// On devnet only, which of anvil's ten funded accounts to use when no key is given.
    #[arg(long, default_value_t = 0)]
    pub(crate) dev_account: usize,
}

/// `quackmesh chain ...`
#[derive(Debug, Subcommand)]
pub(crate) enum ChainCommand {
    /// Deploy DuckToken (unless the network has a $DUCK address), ComputeMarketplace,
    /// TrainingPool and InferencePool from the committed artifacts, and write the deployment
    /// record. Refuses an endpoint whose chain id is not the network's.
    Deploy(DeployArgs),
    /// Show the network, chain id, endpoint and contract addresses, and check they have code.
    Info(InfoArgs),
}

/// `quackmesh chain deploy`
#[derive(Debug, Args)]
pub(crate) struct DeployArgs {
    #[command(flatten)]
    pub(crate) net: NetworkArgs,
    #[command(flatten)]
    pub(crate) key: KeyArgs,
    /// Use this existing $DUCK token instead of deploying DuckToken.
    #[arg(long)]
    pub(crate) duck_token: Option<String>,
    /// Coordinator stake in DUCK (default: the network's min_stake).
    #[arg(long)]
    pub(crate) min_stake: Option<String>,
    /// On devnet, mint this many DUCK to each of anvil's ten accounts after deploying.
    #[arg(long)]
    pub(crate) fund_dev_accounts: Option<String>,
    /// Overwrite an existing deployment record.
    #[arg(long)]
    pub(crate) force: bool,
    /// Print the deployment record as JSON.
    #[arg(long)]
    pub(crate) json: bool,
}

/// `quackmesh chain info`
#[derive(Debug, Args)]
pub(crate) struct InfoArgs {
    #[command(flatten)]
    pub(crate) net: NetworkArgs,
    /// Print as JSON.
    #[arg(long)]
    pub(crate) json: bool,
}

/// `quackmesh wallet ...`
#[derive(Debug, Subcommand)]
pub(crate) enum WalletCommand {
    /// Print the account's address.
    Address(WalletArgs),
    /// Print $DUCK and gas-token balances (of the account, or of ADDRESS).
    Balance(BalanceArgs),
    /// Draw DUCK from DuckToken's capped faucet (devnet and testnet deployments).
    Faucet(FaucetArgs),
    /// Create an encrypted keystore with a fresh key in the data dir.
    New(NewWalletArgs),
}

/// Network and key.
#[derive(Debug, Args)]
pub(crate) struct WalletArgs {
    #[command(flatten)]
    pub(crate) net: NetworkArgs,
    #[command(flatten)]
    pub(crate) key: KeyArgs,
}

/// `quackmesh wallet balance`
#[derive(Debug, Args)]
pub(crate) struct BalanceArgs {
    #[command(flatten)]
    pub(crate) wallet: WalletArgs,
    /// Account to look at (default: the configured key's).
    pub(crate) address: Option<String>,
}

/// `quackmesh wallet faucet`
#[derive(Debug, Args)]
pub(crate) struct FaucetArgs {
    #[command(flatten)]
    pub(crate) wallet: WalletArgs,
    /// Amount in DUCK.
    #[arg(default_value = "1000")]
    pub(crate) amount: String,
}

/// `quackmesh wallet new`
#[derive(Debug, Args)]
pub(crate) struct NewWalletArgs {
    #[command(flatten)]
    pub(crate) key: KeyArgs,
}

/// `quackmesh market ...`
#[derive(Debug, Subcommand)]
pub(crate) enum MarketCommand {
    /// List the machines on ComputeMarketplace (specs, price, status), filtered.
    List(MarketListArgs),
    /// Rent the N cheapest available machines matching the filters as one cluster, in one
    /// transaction (price x hours each is approved and paid into escrow); prints the cluster
    /// id, the rental ids and each member's PeerId and multiaddr.
    Rent(MarketRentArgs),
    /// End a rental early (as its renter): the unused part is refunded; prints the refund.
    End(MarketEndArgs),
    /// Withdraw the rent accrued on your rentals (as their provider): the given ones, or every
    /// rental of yours with something to withdraw.
    Withdraw(MarketWithdrawArgs),
    /// Take a machine of yours off the market (refused while it is rented).
    Unlist(MarketUnlistArgs),
}

/// Which machines: `--min-cpus`, `--gpu`, `--max-price`.
#[derive(Debug, Clone, Args)]
pub(crate) struct FilterArgs {
    /// Only machines with at least this many CPU cores.
    #[arg(long, value_name = "N")]
    pub(crate) min_cpus: Option<u32>,
    /// Only machines with at least one GPU.
    #[arg(long)]
    pub(crate) gpu: bool,
    /// Only machines at most this price per hour, in DUCK (e.g. 2.5).
    #[arg(long, value_name = "DUCK_PER_HOUR")]
    pub(crate) max_price: Option<String>,
}

/// `quackmesh market list`
#[derive(Debug, Args)]
pub(crate) struct MarketListArgs {
    #[command(flatten)]
    pub(crate) net: NetworkArgs,
    #[command(flatten)]
    pub(crate) filter: FilterArgs,
    /// Include unlisted machines.
    #[arg(long)]
    pub(crate) all: bool,
    /// Only machines that can be rented now (listed, not rented).
    #[arg(long)]
    pub(crate) available: bool,
    /// Print as JSON (amounts in base units, as decimal text).
    #[arg(long)]
    pub(crate) json: bool,
}

/// `quackmesh market rent`
#[derive(Debug, Args)]
pub(crate) struct MarketRentArgs {
    #[command(flatten)]
    pub(crate) wallet: WalletArgs,
    #[command(flatten)]
    pub(crate) filter: FilterArgs,
    /// How many machines.
    #[arg(long, value_name = "N", default_value_t = 1)]
    pub(crate) machines: usize,
    /// For how many hours (whole hours, paid up front; end early for a refund).
    #[arg(long, value_name = "H")]
    pub(crate) hours: u64,
    /// Print as JSON.
    #[arg(long)]
    pub(crate) json: bool,
}

/// `quackmesh market end`
#[derive(Debug, Args)]
pub(crate) struct MarketEndArgs {
    #[command(flatten)]
    pub(crate) wallet: WalletArgs,
    /// The rental id.
    pub(crate) rental: u64,
    /// Print as JSON.
    #[arg(long)]
    pub(crate) json: bool,
}

/// `quackmesh market withdraw`
#[derive(Debug, Args)]
pub(crate) struct MarketWithdrawArgs {
    #[command(flatten)]
    pub(crate) wallet: WalletArgs,
    /// Rental ids [default: every rental of yours with rent to withdraw].
    pub(crate) rentals: Vec<u64>,
    /// Print as JSON.
    #[arg(long)]
    pub(crate) json: bool,
}

/// `quackmesh market unlist`
#[derive(Debug, Args)]
pub(crate) struct MarketUnlistArgs {
    #[command(flatten)]
    pub(crate) wallet: WalletArgs,
    /// The machine id.
    pub(crate) machine: u64,
}
