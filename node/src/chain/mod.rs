//! The on-chain layer: QuackMesh's contracts on DuckChain (or a local anvil devnet).
//!
//! # Bird's eye view
//!
//! - [`bindings`]: alloy `sol!` bindings from the committed artifacts in `contracts/abi/`.
//! - [`config`]: network settings (`testnet/networks.toml`) and deployment records
//!   (`testnet/deployments/<network>.json`) resolved into a [`Config`].
//! - [`keys`]: the node's Ethereum key (env, key file, keystore, anvil dev accounts).
//! - [`tx`]: [`TxSender`], the single owner of a key's nonce: gas, fees, retries, receipts,
//!   revert reasons, and pending transactions recorded in the store across restarts.
//! - [`watcher`]: [`Watcher`], the single reader of contract events: `eth_getLogs` from a
//!   stored cursor, decoded into [`ChainEvent`]s on a bounded channel.
//! - [`client`]: [`Client`], one typed method per contract function the node needs.
//! - [`attest`]: the EIP-712 attestation a coordinator signs for an accepted update (pure).
//! - [`deploy`]: deploying everything from the artifacts and writing the deployment record.
//!
//! ```no_run
//! # async fn demo() -> Result<(), quackmesh::chain::Error> {
//! use quackmesh::chain::{Client, Config, Networks, keys};
//! let cfg = Config::resolve(&Networks::builtin()?, "devnet", None, None)?;
//! let signer = keys::dev_signer(1)?;
//! let client = Client::connect(&cfg, Some(signer), None).await?;
//! let me = client.address().unwrap_or_default();
//! println!("{} DUCK", quackmesh::chain::config::format_duck(client.balance(me).await?));
//! # Ok(()) }
//! ```

pub mod attest;
pub mod bindings;
pub mod client;
pub mod config;
pub mod deploy;
pub mod error;
pub mod events;
pub mod keys;
pub mod retry;
pub mod tx;
pub mod watcher;

pub use client::{Client, Sent};
pub use config::{Config, Deployment, Network, Networks};
pub use error::Error;
pub use events::{ChainEvent, LogPosition, WatchedEvent};
pub use tx::{TxConfig, TxSender};
pub use watcher::{EventStream, Watcher, WatcherConfig};

use alloy::primitives::B256;

use crate::hash::Hash32;

// Blob ids and model/update hashes are `bytes32` on chain.
impl From<Hash32> for B256 {
    fn from(h: Hash32) -> Self {
        B256::from(h.0)
    }
}

impl From<B256> for Hash32 {
    fn from(b: B256) -> Self {
        Hash32(b.0)
    }
}
