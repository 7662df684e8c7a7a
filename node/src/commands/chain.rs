//! Handlers of `quackmesh chain|wallet|market`: resolve the network and key, call the
//! library's [`quackmesh::chain`] client, print results (human-readable or `--json`).

use anyhow::{Context, bail};
use quackmesh::chain::client::{check_chain_id, connect_http};
use quackmesh::chain::config::{format_duck, parse_duck};
use quackmesh::chain::deploy::{DeployOptions, deploy};
use quackmesh::chain::keys::{self, KeyOptions};
use quackmesh::chain::{Client, Config, Networks, TxConfig, TxSender};

use alloy::primitives::{Address, U256};
use alloy::signers::local::PrivateKeySigner;

use crate::cli::chain::{
    BalanceArgs, ChainCommand, DeployArgs, FaucetArgs, InfoArgs, KeyArgs, MarketCommand,
    MarketListArgs, NetworkArgs, NewWalletArgs, WalletCommand,
};

pub(crate) async fn run_chain(cmd: ChainCommand) -> anyhow::Result<()> {
    match cmd {
        ChainCommand::Deploy(args) => deploy_cmd(args).await,
        ChainCommand::Info(args) => info(args).await,
    }
}

pub(crate) async fn run_wallet(cmd: WalletCommand) -> anyhow::Result<()> {
    match cmd {
        WalletCommand::Address(args) => {
            let cfg = config(&args.net)?;
            let signer = require_signer(&args.key, &cfg, "wallet address")?;
            println!("{}", signer.address());
            Ok(())
        }
        WalletCommand::Balance(args) => balance(args).await,
        WalletCommand::Faucet(args) => faucet(args).await,
        WalletCommand::New(args) => new_wallet(args),
    }
}

pub(crate) async fn run_market(cmd: MarketCommand) -> anyhow::Result<()> {
    match cmd {
        MarketCommand::List(args) => market_list(args).await,
    }
}

fn config(net: &NetworkArgs) -> anyhow::Result<Config> {
    let networks = match &net.networks {
        Some(path) => Networks::load(path)?,
        None => Networks::builtin()?,
    };
    Ok(Config::resolve(
        &networks,
        &net.network,
        net.rpc_url.as_deref(),
        net.deployment.as_deref(),
    )?)
}

fn key_options(key: &KeyArgs) -> anyhow::Result<KeyOptions> {
    let mut opts = KeyOptions::from_env();
    opts.private_key_file = key.private_key_file.clone();
    opts.keystore = key.keystore.clone();
    opts.data_dir = Some(key.data_dir.clone());
    opts.dev_account = Some(key.dev_account);
    if let Some(path) = &key.password_file {
        let password = std::fs::read_to_string(path)
            .with_context(|| format!("reading password file {}", path.display()))?;
        opts.keystore_password = Some(password.trim_end_matches(['\r', '\n']).to_owned());
    }
    Ok(opts)
}

fn signer(key: &KeyArgs, cfg: &Config) -> anyhow::Result<Option<PrivateKeySigner>> {
    let resolved = keys::resolve_signer(&key_options(key)?, cfg.network.is_devnet())?;
    Ok(resolved.map(|(signer, origin)| {
        tracing::debug!(target: "chain::keys", address = %signer.address(), %origin, "using key");
        signer
    }))
}

fn require_signer(key: &KeyArgs, cfg: &Config, op: &str) -> anyhow::Result<PrivateKeySigner> {
    signer(key, cfg)?.with_context(|| {
        format!(
            "{op} needs a key: set ${}, pass --private-key-file, or create a keystore with `quackmesh wallet new`",
            keys::PRIVATE_KEY_ENV
        )
    })
}

async fn deploy_cmd(args: DeployArgs) -> anyhow::Result<()> {
    let cfg = config(&args.net)?;
    if cfg.deployment_path.exists() && !args.force {
        bail!(
            "{} already exists; pass --force to replace it with a new deployment",
            cfg.deployment_path.display()
        );
    }
    let signer = require_signer(&args.key, &cfg, "chain deploy")?;
    let provider = connect_http(&cfg.rpc_url)?;
    check_chain_id(&provider, &cfg.network.name, cfg.network.chain_id).await?;
    let mut options = DeployOptions::for_network(&cfg.network)?;
    if let Some(token) = &args.duck_token {
        options.duck_token = Some(
            token
                .parse()
                .with_context(|| format!("--duck-token {token:?} is not an address"))?,
        );
    }
    if let Some(stake) = &args.min_stake {
        options.min_stake = parse_duck(stake)?;
    }
    let tx_config = TxConfig {
        poll_interval: cfg.network.poll_interval(),
        ..TxConfig::default()
    };
    let (sender, _task) =
        TxSender::spawn(provider.clone(), signer.clone(), None, tx_config.clone()).await?;
    let deployment = deploy(&provider, &sender, &cfg.network, &options).await?;
    deployment.save(&cfg.deployment_path)?;

    if let Some(amount) = &args.fund_dev_accounts {
        if !cfg.network.is_devnet() {
            bail!("--fund-dev-accounts is for devnet only");
        }
        let amount = parse_duck(amount)?;
        let owner = Client::with_provider(
            provider.clone(),
            deployment.clone(),
            Some(signer),
            None,
            tx_config,
        )
        .await?;
        for dev in keys::dev_signers() {
            owner.mint(dev.address(), amount).await?;
        }
        println!(
            "funded anvil's {} accounts with {} DUCK each",
            keys::DEV_KEYS.len(),
            format_duck(amount)
        );
    }

    if args.json {
        println!("{}", serde_json::to_string_pretty(&deployment)?);
    } else {
        println!(
            "deployed to {} (chain id {}) at block {}",
            deployment.network, deployment.chain_id, deployment.deploy_block
        );
        for (name, address) in deployment.contracts() {
            println!("  {name:<20} {address}");
        }
        if !deployment.duck_token_deployed {
            println!("  (DuckToken not deployed: using the network's $DUCK)");
        }
        println!("wrote {}", cfg.deployment_path.display());
    }
    Ok(())
}

async fn info(args: InfoArgs) -> anyhow::Result<()> {
    let cfg = config(&args.net)?;
    let client = Client::connect(&cfg, None, None).await?;
    client.check_deployment().await?;
    let head = client.block_number().await?;
    let d = client.deployment();
    if args.json {
        let v = serde_json::json!({
            "network": cfg.network.name,
            "chain_id": cfg.network.chain_id,
            "rpc_url": cfg.rpc_url,
            "explorer": cfg.network.explorer,
            "gas_token": cfg.network.gas_token,
            "head_block": head,
            "deployment": d,
        });
        println!("{}", serde_json::to_string_pretty(&v)?);
        return Ok(());
    }
    println!("network      {}", cfg.network.name);
    println!("chain id     {}", cfg.network.chain_id);
    println!("rpc          {}", cfg.rpc_url);
    if let Some(explorer) = &cfg.network.explorer {
        println!("explorer     {explorer}");
    }
    println!("gas token    {}", cfg.network.gas_token);
    println!("head block   {head}");
    println!("deployed at  block {} by {}", d.deploy_block, d.deployer);
    for (name, address) in d.contracts() {
        println!("  {name:<20} {address}");
    }
    println!("min stake    {} DUCK", format_duck(d.min_stake));
    Ok(())
}

async fn balance(args: BalanceArgs) -> anyhow::Result<()> {
    let cfg = config(&args.wallet.net)?;
    let who: Address = match &args.address {
        Some(a) => a
            .parse()
            .with_context(|| format!("{a:?} is not an address"))?,
        None => require_signer(&args.wallet.key, &cfg, "wallet balance")?.address(),
    };
    let client = Client::connect(&cfg, None, None).await?;
    let duck = client.balance(who).await?;
    let native = client.native_balance(who).await?;
    println!("address  {who}");
    println!("DUCK     {}", format_duck(duck));
    println!("{:<8} {}", cfg.network.gas_token, format_duck(native));
    Ok(())
}

async fn faucet(args: FaucetArgs) -> anyhow::Result<()> {
    let cfg = config(&args.wallet.net)?;
    let signer = require_signer(&args.wallet.key, &cfg, "wallet faucet")?;
    let amount = parse_duck(&args.amount)?;
    let client = Client::connect(&cfg, Some(signer), None).await?;
    let me = client.address().unwrap_or_default();
    let sent = client.faucet(amount).await?;
    println!(
        "drew {} DUCK in {}; balance {} DUCK, faucet left for this account {} DUCK",
        format_duck(amount),
        sent.tx_hash(),
        format_duck(client.balance(me).await?),
        format_duck(client.faucet_remaining(me).await?)
    );
    Ok(())
}

fn new_wallet(args: NewWalletArgs) -> anyhow::Result<()> {
    let opts = key_options(&args.key)?;
    let password = opts.keystore_password.with_context(|| {
        format!(
            "set ${} or pass --password-file to encrypt the keystore",
            keys::KEYSTORE_PASSWORD_ENV
        )
    })?;
    let dir = args
        .key
        .keystore
        .as_ref()
        .and_then(|p| p.parent().map(std::path::Path::to_path_buf))
        .unwrap_or_else(|| args.key.data_dir.clone());
    let (signer, path) = keys::create_keystore(&dir, &password)?;
    println!("{}", signer.address());
    eprintln!("key stored encrypted in {}", path.display());
    Ok(())
}

async fn market_list(args: MarketListArgs) -> anyhow::Result<()> {
    let cfg = config(&args.net)?;
    let client = Client::connect(&cfg, None, None).await?;
    let mut rows = Vec::new();
    for (id, m) in client.machines().await? {
        if !m.listed && !args.all {
            continue;
        }
        let rented =
            m.lastRentalId != U256::ZERO && client.is_rental_active(m.lastRentalId).await?;
        rows.push((id, m, rented));
    }
    if args.json {
        let list: Vec<_> = rows
            .iter()
            .map(|(id, m, rented)| {
                serde_json::json!({
                    "machine_id": id.to_string(),
                    "provider": m.provider,
                    "price_per_hour_duck": format_duck(m.pricePerHour),
                    "listed": m.listed,
                    "rented": rented,
                    "cpu_cores": m.specs.cpuCores,
                    "ram_mb": m.specs.ramMb,
                    "gpu_model": m.specs.gpuModel,
                    "gpu_count": m.specs.gpuCount,
                    "peer_id": peer_id_text(&m.specs.peerId),
                    "multiaddr": m.specs.multiaddr,
                })
            })
            .collect();
        println!("{}", serde_json::to_string_pretty(&list)?);
        return Ok(());
    }
    if rows.is_empty() {
        println!("no machines listed on {}", cfg.network.name);
        return Ok(());
    }
    println!(
        "{:>4}  {:>12}  {:>5}  {:>8}  {:<14}  {:<9}  {:<42}  multiaddr / peer id",
        "id", "DUCK/hour", "cpus", "ram MiB", "gpu", "status", "provider"
    );
    for (id, m, rented) in rows {
        let gpu = if m.specs.gpuCount == 0 {
            "-".to_owned()
        } else {
            format!("{}x {}", m.specs.gpuCount, m.specs.gpuModel)
        };
        let status = match (m.listed, rented) {
            (_, true) => "rented",
            (true, false) => "available",
            (false, false) => "unlisted",
        };
        println!(
            "{:>4}  {:>12}  {:>5}  {:>8}  {:<14}  {:<9}  {:<42}  {} / {}",
            id.to_string(),
            format_duck(m.pricePerHour),
            m.specs.cpuCores,
            m.specs.ramMb,
            gpu,
            status,
            m.provider.to_string(),
            m.specs.multiaddr,
            peer_id_text(&m.specs.peerId)
        );
    }
    Ok(())
}

/// A PeerId in its usual base58 form, or hex when the bytes are not a PeerId.
fn peer_id_text(bytes: &[u8]) -> String {
    libp2p::PeerId::from_bytes(bytes)
        .map(|p| p.to_string())
        .unwrap_or_else(|_| format!("0x{}", hex::encode(bytes)))
}
