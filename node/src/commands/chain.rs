//! Handlers of `quackmesh chain|wallet|market`: resolve the network and key, call the
//! library's [`quackmesh::chain`] client, print results (human-readable or `--json`).

use anyhow::{Context, bail};
use quackmesh::chain::client::{check_chain_id, connect_http};
use quackmesh::chain::config::{format_duck, parse_duck};
use quackmesh::chain::deploy::{DeployOptions, deploy};
use quackmesh::chain::keys::{self, KeyOptions};
use quackmesh::chain::{Client, Config, Networks, TxConfig, TxSender};
use quackmesh::roles::market::{self, MachineFilter, MachineOffer};

use alloy::primitives::{Address, U256};
use alloy::signers::local::PrivateKeySigner;

use crate::cli::chain::{
    BalanceArgs, ChainCommand, DeployArgs, FaucetArgs, FilterArgs, InfoArgs, KeyArgs,
    MarketCommand, MarketEndArgs, MarketListArgs, MarketRentArgs, MarketUnlistArgs,
    MarketWithdrawArgs, NetworkArgs, NewWalletArgs, WalletArgs, WalletCommand,
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
        MarketCommand::Rent(args) => market_rent(args).await,
        MarketCommand::End(args) => market_end(args).await,
        MarketCommand::Withdraw(args) => market_withdraw(args).await,
        MarketCommand::Unlist(args) => market_unlist(args).await,
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
        opts.keystore_password = Some(keys::read_password_file(path)?);
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

fn machine_filter(f: &FilterArgs) -> anyhow::Result<MachineFilter> {
    let max_price = match &f.max_price {
        Some(p) => Some(
            u128::try_from(parse_duck(p)?).with_context(|| format!("--max-price {p} too large"))?,
        ),
        None => None,
    };
    Ok(MachineFilter {
        min_cpus: f.min_cpus,
        gpu: f.gpu,
        max_price,
    })
}

fn duck(amount: u128) -> String {
    format_duck(U256::from(amount))
}

/// A client signing with the wallet args' key.
async fn signing_client(w: &WalletArgs, op: &str) -> anyhow::Result<Client> {
    let cfg = config(&w.net)?;
    let signer = require_signer(&w.key, &cfg, op)?;
    Ok(Client::connect(&cfg, Some(signer), None).await?)
}

async fn market_list(args: MarketListArgs) -> anyhow::Result<()> {
    let cfg = config(&args.net)?;
    let filter = machine_filter(&args.filter)?;
    let client = Client::connect(&cfg, None, None).await?;
    let all = market::offers(&client).await?;
    let rows: Vec<&MachineOffer> = market::filter(&all, &filter, args.available)
        .into_iter()
        .filter(|m| m.listed || args.all)
        .collect();
    if args.json {
        // Amounts in base units (decimal text), plus the price in DUCK for people.
        let mut list = Vec::with_capacity(rows.len());
        for m in &rows {
            let mut v = serde_json::to_value(m)?;
            if let Some(o) = v.as_object_mut() {
                o.insert("price_per_hour_duck".into(), duck(m.price_per_hour).into());
            }
            list.push(v);
        }
        println!("{}", serde_json::to_string_pretty(&list)?);
        return Ok(());
    }
    if rows.is_empty() {
        println!("no machines match on {}", cfg.network.name);
        return Ok(());
    }
    println!(
        "{:>4}  {:>12}  {:>5}  {:>8}  {:<24}  {:<9}  {:<42}  multiaddr / peer id",
        "id", "DUCK/hour", "cpus", "ram MiB", "gpu", "status", "provider"
    );
    for m in rows {
        let gpu = if m.gpu_count == 0 {
            "-".to_owned()
        } else {
            format!("{}x {}", m.gpu_count, m.gpu_model)
        };
        let status = match (m.listed, m.rented) {
            (_, true) => "rented",
            (true, false) => "available",
            (false, false) => "unlisted",
        };
        println!(
            "{:>4}  {:>12}  {:>5}  {:>8}  {:<24}  {:<9}  {:<42}  {} / {}",
            m.machine_id,
            duck(m.price_per_hour),
            m.cpu_cores,
            m.ram_mb,
            gpu,
            status,
            m.provider,
            m.multiaddr,
            m.peer_id
        );
    }
    Ok(())
}

async fn market_rent(args: MarketRentArgs) -> anyhow::Result<()> {
    let filter = machine_filter(&args.filter)?;
    let client = signing_client(&args.wallet, "market rent").await?;
    let rented = market::rent(&client, args.machines, args.hours, &filter).await?;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&rented)?);
        return Ok(());
    }
    println!(
        "cluster {} rented for {} hour(s): {} DUCK in escrow (tx {})",
        rented.cluster_id,
        rented.hours,
        duck(rented.cost),
        rented.tx_hash
    );
    println!(
        "{:>6}  {:>7}  {:>12}  {:<52}  multiaddr",
        "rental", "machine", "DUCK/hour", "peer id"
    );
    for m in &rented.members {
        println!(
            "{:>6}  {:>7}  {:>12}  {:<52}  {}",
            m.rental_id,
            m.machine_id,
            duck(m.price_per_hour),
            m.peer_id,
            m.multiaddr
        );
    }
    Ok(())
}

async fn market_end(args: MarketEndArgs) -> anyhow::Result<()> {
    let client = signing_client(&args.wallet, "market end").await?;
    let sent = client.end_rental(U256::from(args.rental)).await?;
    if args.json {
        let v = serde_json::json!({
            "rental_id": args.rental,
            "refund": sent.value.to_string(),
            "tx_hash": format!("{:#x}", sent.tx_hash()),
        });
        println!("{}", serde_json::to_string_pretty(&v)?);
    } else {
        println!(
            "rental {} ended; refunded {} DUCK (tx {})",
            args.rental,
            format_duck(sent.value),
            sent.tx_hash()
        );
    }
    Ok(())
}

async fn market_withdraw(args: MarketWithdrawArgs) -> anyhow::Result<()> {
    let client = signing_client(&args.wallet, "market withdraw").await?;
    let me = client.address().context("no signing address")?;
    let rentals = if args.rentals.is_empty() {
        market::withdrawable_rentals(&client, me).await?
    } else {
        args.rentals.clone()
    };
    let withdrawn = if rentals.is_empty() {
        None
    } else {
        quackmesh::roles::provider::withdraw_accrued(&client, &rentals).await?
    };
    let amount = withdrawn.unwrap_or(U256::ZERO);
    if args.json {
        let v = serde_json::json!({
            "rentals": rentals,
            "withdrawn": amount.to_string(),
        });
        println!("{}", serde_json::to_string_pretty(&v)?);
    } else if withdrawn.is_none() {
        println!("nothing to withdraw");
    } else {
        println!(
            "withdrew {} DUCK from rental(s) {:?}",
            format_duck(amount),
            rentals
        );
    }
    Ok(())
}

async fn market_unlist(args: MarketUnlistArgs) -> anyhow::Result<()> {
    let client = signing_client(&args.wallet, "market unlist").await?;
    let sent = client.unlist_machine(U256::from(args.machine)).await?;
    println!("machine {} unlisted (tx {})", args.machine, sent.tx_hash());
    Ok(())
}
