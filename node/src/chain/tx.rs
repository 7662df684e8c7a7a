//! `chain::TxSender`: the one place that sends transactions for a key.
//!
//! A single owner task holds the nonce. For each request it estimates gas (a revert here is
//! returned at once, decoded, and costs nothing), prices it (EIP-1559, legacy fallback), signs
//! it, records the signed transaction in the store *before* broadcasting, broadcasts with
//! retries on transient RPC errors, and hands the wait for the receipt to a task of its own so
//! that later requests are not held up. The receipt's status is checked; a failed transaction
//! is replayed as a call to recover its revert reason. The record is cleared once a receipt
//! exists; on restart, recorded transactions are looked up and rebroadcast if still pending,
//! so a crash between signing and confirmation loses nothing.

use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use alloy::eips::BlockId;
use alloy::eips::eip2718::Encodable2718;
use alloy::network::{EthereumWallet, NetworkTransactionBuilder, TransactionBuilder};
use alloy::primitives::{Address, B256};
use alloy::providers::{DynProvider, Provider};
use alloy::rpc::types::{TransactionReceipt, TransactionRequest};
use alloy::signers::local::PrivateKeySigner;
use serde::{Deserialize, Serialize};
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;

use super::Error;
use super::retry::RetryPolicy;
use crate::store::{Db, Tree};

/// Signed transactions not yet confirmed, keyed by sender address (20 bytes) || nonce (8, BE).
pub const PENDING_TXS: Tree<PendingTx> = Tree::new("chain.pending_txs");

/// Requests queued for the owner task before `send` waits for room.
const COMMAND_CAPACITY: usize = 64;

/// A signed transaction recorded before broadcast.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PendingTx {
    /// Its nonce.
    pub nonce: u64,
    /// Its hash (32 bytes).
    #[serde(with = "serde_bytes")]
    pub hash: Vec<u8>,
    /// What it does (`listMachine`, ...), for logs.
    pub label: String,
    /// The EIP-2718 encoded signed transaction.
    #[serde(with = "serde_bytes")]
    pub raw: Vec<u8>,
    /// Unix time it was first sent.
    pub sent_at: u64,
}

impl PendingTx {
    /// The transaction hash.
    pub fn tx_hash(&self) -> B256 {
        B256::try_from(self.hash.as_slice()).unwrap_or_default()
    }
}

/// Tuning of the sender.
#[derive(Debug, Clone)]
pub struct TxConfig {
    /// How often to look for a receipt.
    pub poll_interval: Duration,
    /// How long to wait for a receipt before reporting [`Error::ReceiptTimeout`].
    pub receipt_timeout: Duration,
    /// Retries of transient RPC failures.
    pub retry: RetryPolicy,
    /// Extra gas over the estimate, in percent.
    pub gas_margin_pct: u64,
}

impl Default for TxConfig {
    fn default() -> Self {
        Self {
            poll_interval: Duration::from_millis(500),
            receipt_timeout: Duration::from_secs(180),
            retry: RetryPolicy::default(),
            gas_margin_pct: 20,
        }
    }
}

enum Command {
    Send {
        label: String,
        request: Box<TransactionRequest>,
        reply: oneshot::Sender<Result<TransactionReceipt, Error>>,
    },
}

/// A cloneable handle to the task that owns one key's nonce.
#[derive(Debug, Clone)]
pub struct TxSender {
    commands: mpsc::Sender<Command>,
    address: Address,
    chain_id: u64,
}

impl TxSender {
    /// Starts the owner task for `signer` on `provider`'s chain. With a `db`, unconfirmed
    /// transactions recorded by an earlier run are settled first (rebroadcast or cleared).
    pub async fn spawn(
        provider: DynProvider,
        signer: PrivateKeySigner,
        db: Option<Db>,
        config: TxConfig,
    ) -> Result<(Self, JoinHandle<()>), Error> {
        let address = signer.address();
        let chain_id = config
            .retry
            .run("eth_chainId", || provider.get_chain_id())
            .await?;
        let mut owner = Owner {
            provider,
            wallet: EthereumWallet::from(signer),
            address,
            chain_id,
            db,
            config,
            next_nonce: 0,
        };
        owner.recover().await?;
        let (tx, rx) = mpsc::channel(COMMAND_CAPACITY);
        let handle = tokio::spawn(owner.run(rx));
        Ok((
            Self {
                commands: tx,
                address,
                chain_id,
            },
            handle,
        ))
    }

    /// Sends `request` (its `to`, `input` and `value`; everything else is filled in) and
    /// waits for the receipt. `label` names it in logs and errors. Fails with
    /// [`Error::Reverted`] if the contract refuses, before or after mining.
    pub async fn send(
        &self,
        label: impl Into<String>,
        request: TransactionRequest,
    ) -> Result<TransactionReceipt, Error> {
        let (reply, rx) = oneshot::channel();
        self.commands
            .send(Command::Send {
                label: label.into(),
                request: Box::new(request),
                reply,
            })
            .await
            .map_err(|_| Error::Stopped("transaction sender"))?;
        rx.await.map_err(|_| Error::Stopped("transaction sender"))?
    }

    /// The sending account.
    pub fn address(&self) -> Address {
        self.address
    }

    /// The chain id the sender signs for.
    pub fn chain_id(&self) -> u64 {
        self.chain_id
    }
}

/// The unconfirmed transactions recorded for `address`.
pub fn pending_transactions(db: &Db, address: Address) -> Result<Vec<PendingTx>, Error> {
    Ok(db
        .scan(PENDING_TXS, address.as_slice())?
        .into_iter()
        .map(|(_, p)| p)
        .collect())
}

fn pending_key(address: Address, nonce: u64) -> Vec<u8> {
    let mut key = address.to_vec();
    key.extend_from_slice(&nonce.to_be_bytes());
    key
}

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

struct Owner {
    provider: DynProvider,
    wallet: EthereumWallet,
    address: Address,
    chain_id: u64,
    db: Option<Db>,
    config: TxConfig,
    next_nonce: u64,
}

/// How a transaction is priced.
enum Fees {
    Eip1559 { max_fee: u128, priority: u128 },
    Legacy(u128),
}

/// What broadcasting concluded about a signed transaction.
enum Broadcast {
    Sent,
    NonceConflict(Error),
    Failed(Error),
}

impl Owner {
    async fn run(mut self, mut commands: mpsc::Receiver<Command>) {
        while let Some(cmd) = commands.recv().await {
            match cmd {
                Command::Send {
                    label,
                    request,
                    reply,
                } => match self.submit(&label, *request).await {
                    Ok((hash, request)) => {
                        let waiter = Waiter {
                            provider: self.provider.clone(),
                            db: self.db.clone(),
                            key: pending_key(self.address, request.nonce.unwrap_or_default()),
                            config: self.config.clone(),
                        };
                        tokio::spawn(async move {
                            let result = waiter.wait(&label, hash, Some(&request)).await;
                            let _ = reply.send(result);
                        });
                    }
                    Err(e) => {
                        let _ = reply.send(Err(e));
                    }
                },
            }
        }
    }

    /// Fills, signs, records and broadcasts; returns the hash and the final request.
    async fn submit(
        &mut self,
        label: &str,
        request: TransactionRequest,
    ) -> Result<(B256, TransactionRequest), Error> {
        // One retry after re-reading the nonce, in case another process used this key.
        for attempt in 0..2 {
            let mut req = request
                .clone()
                .with_from(self.address)
                .with_chain_id(self.chain_id)
                .with_nonce(self.next_nonce);
            let retry = self.config.retry;
            // Gas and fees are independent: ask for both at once.
            let (estimate, fees) = tokio::join!(
                retry.run(label, || self.provider.estimate_gas(req.clone())),
                self.fees(label)
            );
            req.set_gas_limit(estimate?.saturating_mul(100 + self.config.gas_margin_pct) / 100);
            match fees? {
                Fees::Eip1559 { max_fee, priority } => {
                    req.set_max_fee_per_gas(max_fee);
                    req.set_max_priority_fee_per_gas(priority);
                }
                Fees::Legacy(price) => req.set_gas_price(price),
            }
            let envelope = req
                .clone()
                .build(&self.wallet)
                .await
                .map_err(|e| Error::Key(format!("cannot sign {label}: {e}")))?;
            let hash = *envelope.tx_hash();
            let raw = envelope.encoded_2718();
            let key = pending_key(self.address, self.next_nonce);
            if let Some(db) = &self.db {
                db.put(
                    PENDING_TXS,
                    &key,
                    &PendingTx {
                        nonce: self.next_nonce,
                        hash: hash.to_vec(),
                        label: label.to_owned(),
                        raw: raw.clone(),
                        sent_at: unix_now(),
                    },
                )?;
            }
            match self.broadcast(label, &raw).await {
                Broadcast::Sent => {
                    tracing::debug!(target: "chain::tx", %label, tx_hash = %hash, nonce = self.next_nonce, "sent");
                    self.next_nonce += 1;
                    return Ok((hash, req));
                }
                Broadcast::NonceConflict(e) if attempt == 0 => {
                    tracing::warn!(target: "chain::tx", %label, error = %e, "nonce conflict, resyncing");
                    self.forget(&key)?;
                    self.resync_nonce().await?;
                }
                Broadcast::NonceConflict(e) => {
                    self.forget(&key)?;
                    return Err(e);
                }
                Broadcast::Failed(e) => {
                    if e.is_retryable() {
                        // The node may have it after all: keep the record for the restart
                        // check, and take the nonce from the chain.
                        self.resync_nonce().await?;
                    } else {
                        self.forget(&key)?;
                    }
                    return Err(e);
                }
            }
        }
        Err(Error::Stopped("transaction sender"))
    }

    async fn fees(&self, label: &str) -> Result<Fees, Error> {
        match self.provider.estimate_eip1559_fees().await {
            Ok(fees) => Ok(Fees::Eip1559 {
                max_fee: fees.max_fee_per_gas,
                priority: fees.max_priority_fee_per_gas,
            }),
            Err(e) => {
                tracing::debug!(target: "chain::tx", %label, error = %e, "no eip-1559 fees, using gas price");
                let retry = self.config.retry;
                let price = retry
                    .run("eth_gasPrice", || self.provider.get_gas_price())
                    .await?;
                Ok(Fees::Legacy(price))
            }
        }
    }

    async fn broadcast(&self, label: &str, raw: &[u8]) -> Broadcast {
        let retry = self.config.retry;
        match retry
            .run(label, || self.provider.send_raw_transaction(raw))
            .await
        {
            Ok(_) => Broadcast::Sent,
            Err(e) => {
                let msg = e.to_string().to_ascii_lowercase();
                if msg.contains("already known")
                    || msg.contains("already imported")
                    || msg.contains("known transaction")
                {
                    Broadcast::Sent
                } else if msg.contains("nonce too low")
                    || msg.contains("nonce too high")
                    || msg.contains("replacement transaction underpriced")
                {
                    Broadcast::NonceConflict(e)
                } else {
                    Broadcast::Failed(e)
                }
            }
        }
    }

    fn forget(&self, key: &[u8]) -> Result<(), Error> {
        if let Some(db) = &self.db {
            db.remove(PENDING_TXS, key)?;
        }
        Ok(())
    }

    async fn resync_nonce(&mut self) -> Result<(), Error> {
        let retry = self.config.retry;
        self.next_nonce = retry
            .run("eth_getTransactionCount", || {
                self.provider.get_transaction_count(self.address).pending()
            })
            .await?;
        Ok(())
    }

    /// Settles transactions recorded by an earlier run and sets the starting nonce.
    async fn recover(&mut self) -> Result<(), Error> {
        self.resync_nonce().await?;
        let Some(db) = self.db.clone() else {
            return Ok(());
        };
        let retry = self.config.retry;
        let mined = retry
            .run("eth_getTransactionCount", || {
                self.provider.get_transaction_count(self.address).latest()
            })
            .await?;
        for p in pending_transactions(&db, self.address)? {
            let hash = p.tx_hash();
            let key = pending_key(self.address, p.nonce);
            let receipt = retry
                .run("eth_getTransactionReceipt", || {
                    self.provider.get_transaction_receipt(hash)
                })
                .await?;
            if let Some(r) = receipt {
                tracing::info!(target: "chain::tx", label = %p.label, tx_hash = %hash, success = r.status(), "confirmed while we were away");
                db.remove(PENDING_TXS, &key)?;
            } else if p.nonce < mined {
                tracing::warn!(target: "chain::tx", label = %p.label, tx_hash = %hash, nonce = p.nonce, "replaced or dropped while we were away");
                db.remove(PENDING_TXS, &key)?;
            } else {
                match self.broadcast(&p.label, &p.raw).await {
                    Broadcast::Sent => {
                        tracing::info!(target: "chain::tx", label = %p.label, tx_hash = %hash, nonce = p.nonce, "rebroadcast after restart");
                        self.next_nonce = self.next_nonce.max(p.nonce + 1);
                        let waiter = Waiter {
                            provider: self.provider.clone(),
                            db: Some(db.clone()),
                            key,
                            config: self.config.clone(),
                        };
                        let label = p.label.clone();
                        tokio::spawn(async move {
                            if let Err(e) = waiter.wait(&label, hash, None).await {
                                tracing::warn!(target: "chain::tx", %label, tx_hash = %hash, error = %e, "recovered transaction failed");
                            }
                        });
                    }
                    Broadcast::NonceConflict(e) | Broadcast::Failed(e) => {
                        tracing::warn!(target: "chain::tx", label = %p.label, tx_hash = %hash, error = %e, "dropping unsendable recorded transaction");
                        db.remove(PENDING_TXS, &key)?;
                    }
                }
            }
        }
        Ok(())
    }
}

/// Waits for one transaction's receipt, then clears its record.
struct Waiter {
    provider: DynProvider,
    db: Option<Db>,
    key: Vec<u8>,
    config: TxConfig,
}

impl Waiter {
    async fn wait(
        &self,
        label: &str,
        hash: B256,
        request: Option<&TransactionRequest>,
    ) -> Result<TransactionReceipt, Error> {
        let started = Instant::now();
        // Most receipts exist within milliseconds on a devnet and within a block elsewhere:
        // poll every millisecond a few times, then back off to the configured interval.
        let mut polls: u32 = 0;
        let receipt = loop {
            match self.provider.get_transaction_receipt(hash).await {
                Ok(Some(r)) => break r,
                Ok(None) => {}
                Err(e) => {
                    let err = Error::from_rpc("eth_getTransactionReceipt", e);
                    if !err.is_retryable() {
                        return Err(err);
                    }
                }
            }
            if started.elapsed() >= self.config.receipt_timeout {
                return Err(Error::ReceiptTimeout {
                    op: label.to_owned(),
                    tx_hash: hash,
                    waited: started.elapsed(),
                });
            }
            let backoff = Duration::from_millis(1u64 << polls.saturating_sub(5).min(16));
            tokio::time::sleep(backoff.min(self.config.poll_interval)).await;
            polls += 1;
        };
        if let Some(db) = &self.db {
            db.remove(PENDING_TXS, &self.key)?;
        }
        if receipt.status() {
            tracing::debug!(target: "chain::tx", %label, tx_hash = %hash, gas_used = receipt.gas_used, "confirmed");
            return Ok(receipt);
        }
        let (reason, data) = match request {
            Some(req) => self.replay(req, receipt.block_number).await,
            None => ("reverted on chain".to_owned(), None),
        };
        tracing::warn!(target: "chain::tx", %label, tx_hash = %hash, %reason, "reverted on chain");
        Err(Error::Reverted {
            op: label.to_owned(),
            reason,
            data,
            tx_hash: Some(hash),
        })
    }

    /// Re-runs a failed transaction as a call on the state before its block, for the reason.
    async fn replay(
        &self,
        req: &TransactionRequest,
        block: Option<u64>,
    ) -> (String, Option<alloy::primitives::Bytes>) {
        let at = block.map_or(BlockId::latest(), |b| BlockId::number(b.saturating_sub(1)));
        match self.provider.call(req.clone()).block(at).await {
            Err(e) => match Error::from_rpc("replay", e) {
                Error::Reverted { reason, data, .. } => (reason, data),
                other => (format!("reverted on chain ({other})"), None),
            },
            Ok(_) => ("reverted on chain (replay succeeded)".to_owned(), None),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pending_keys_sort_by_nonce_within_an_address() {
        let a = Address::repeat_byte(1);
        let k1 = pending_key(a, 2);
        let k2 = pending_key(a, 256);
        assert!(k1 < k2);
        assert!(k1.starts_with(a.as_slice()));
        assert_eq!(k1.len(), 28);
    }

    #[test]
    fn pending_tx_survives_the_store() {
        let dir = tempfile::tempdir().unwrap();
        let db = Db::open_dir(dir.path()).unwrap();
        let a = Address::repeat_byte(9);
        let p = PendingTx {
            nonce: 3,
            hash: vec![7; 32],
            label: "listMachine".into(),
            raw: vec![1, 2, 3],
            sent_at: 5,
        };
        db.put(PENDING_TXS, &pending_key(a, 3), &p).unwrap();
        db.put(PENDING_TXS, &pending_key(Address::repeat_byte(8), 1), &p)
            .unwrap();
        let mine = pending_transactions(&db, a).unwrap();
        assert_eq!(mine, vec![p.clone()]);
        assert_eq!(mine[0].tx_hash(), B256::repeat_byte(7));
    }
}
