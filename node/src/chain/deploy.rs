//! Deploying the contracts from the committed artifacts through the [`TxSender`]: DuckToken
//! (unless the network names an existing $DUCK), ComputeMarketplace, TrainingPool and
//! InferencePool, then the [`Deployment`] record. Refuses an endpoint whose chain id is not
//! the network's.

use std::time::{SystemTime, UNIX_EPOCH};

use alloy::network::TransactionBuilder;
use alloy::primitives::{Address, Bytes, U256};
use alloy::providers::DynProvider;
use alloy::rpc::types::{TransactionReceipt, TransactionRequest};
use alloy::sol_types::SolConstructor;

use super::bindings::{ComputeMarketplace, DuckToken, InferencePool, TrainingPool};
use super::client::check_chain_id;
use super::{Deployment, Error, Network, TxSender};

/// What to deploy with; defaults come from the network's settings.
#[derive(Debug, Clone)]
pub struct DeployOptions {
    /// An existing $DUCK token to use instead of deploying DuckToken.
    pub duck_token: Option<Address>,
    /// Coordinator stake for TrainingPool.
    pub min_stake: U256,
    /// DuckToken faucet caps (per account, total).
    pub faucet_caps: (U256, U256),
}

impl DeployOptions {
    /// Options from `networks.toml`.
    pub fn for_network(network: &Network) -> Result<Self, Error> {
        Ok(Self {
            duck_token: network.duck_token,
            min_stake: network.min_stake()?,
            faucet_caps: network.faucet_caps()?,
        })
    }
}

/// Deploys everything for `network` with `sender`'s key and returns the record (not yet
/// saved; see [`Deployment::save`]).
pub async fn deploy(
    provider: &DynProvider,
    sender: &TxSender,
    network: &Network,
    options: &DeployOptions,
) -> Result<Deployment, Error> {
    check_chain_id(provider, &network.name, network.chain_id).await?;
    let deployer = sender.address();
    let mut first_block = None;

    let (duck_token, duck_token_deployed) = match options.duck_token {
        Some(token) => (token, false),
        None => {
            let args = DuckToken::constructorCall {
                initialOwner: deployer,
                capPerAccount: options.faucet_caps.0,
                capTotal: options.faucet_caps.1,
            };
            let (addr, receipt) =
                create(sender, "deploy DuckToken", &DuckToken::BYTECODE, &args).await?;
            first_block.get_or_insert(receipt.block_number.unwrap_or_default());
            (addr, true)
        }
    };
    let (compute_marketplace, receipt) = create(
        sender,
        "deploy ComputeMarketplace",
        &ComputeMarketplace::BYTECODE,
        &ComputeMarketplace::constructorCall { token_: duck_token },
    )
    .await?;
    first_block.get_or_insert(receipt.block_number.unwrap_or_default());
    let (training_pool, _) = create(
        sender,
        "deploy TrainingPool",
        &TrainingPool::BYTECODE,
        &TrainingPool::constructorCall {
            token_: duck_token,
            marketplace_: compute_marketplace,
            minStake_: options.min_stake,
        },
    )
    .await?;
    let (inference_pool, _) = create(
        sender,
        "deploy InferencePool",
        &InferencePool::BYTECODE,
        &InferencePool::constructorCall {
            token_: duck_token,
            marketplace_: compute_marketplace,
        },
    )
    .await?;
    let deployment = Deployment {
        network: network.name.clone(),
        chain_id: network.chain_id,
        deploy_block: first_block.unwrap_or_default(),
        deployer,
        duck_token,
        duck_token_deployed,
        compute_marketplace,
        training_pool,
        inference_pool,
        min_stake: options.min_stake,
        deployed_at: SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_secs()),
    };
    tracing::info!(
        target: "chain::deploy",
        network = %network.name,
        token = %duck_token,
        marketplace = %compute_marketplace,
        training_pool = %training_pool,
        inference_pool = %inference_pool,
        "deployed"
    );
    Ok(deployment)
}

async fn create<C: SolConstructor>(
    sender: &TxSender,
    label: &str,
    bytecode: &Bytes,
    args: &C,
) -> Result<(Address, TransactionReceipt), Error> {
    let mut code = bytecode.to_vec();
    code.extend_from_slice(&args.abi_encode());
    let receipt = sender
        .send(label, TransactionRequest::default().with_deploy_code(code))
        .await?;
    let address = receipt.contract_address.ok_or_else(|| Error::Decode {
        what: label.to_owned(),
        reason: "receipt has no contract address".into(),
    })?;
    Ok((address, receipt))
}
