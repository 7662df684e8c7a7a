//! `chain::Watcher`: the one place that reads contract events.
//!
//! A poller task asks for `eth_getLogs` of the deployment's contracts over bounded block ranges,
//! up to `head - confirmations`, decodes each log into a [`ChainEvent`] and sends it, in chain
//! order, on a bounded channel (a slow consumer slows the poller, nothing is dropped). The
//! consumer reads through an [`EventStream`], which owns the cursor stored in `store::Db`:
//! an event counts as processed once the consumer asks for the next one (or calls `commit`),
//! so a restarted node resumes right after the last processed event, neither missing nor
//! replaying any. For exactly-once effects, [`EventStream::commit_with`] stores the consumer's
//! own writes and the cursor in one transaction.

use std::time::{Duration, Instant};

use alloy::eips::BlockNumberOrTag;
use alloy::providers::{DynProvider, Provider};
use alloy::rpc::types::Filter;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

use super::events::{ChainEvent, LogPosition, WatchedEvent};
use super::retry::RetryPolicy;
use super::{Deployment, Error};
use crate::store::{Batch, Db, StoreError, Tree};

/// Cursors of named watchers: the position of the next event to deliver.
pub const CURSORS: Tree<LogPosition> = Tree::new("chain.cursors");

/// Most often an idle scan position is written to the store.
const SCANNED_PERSIST_EVERY: Duration = Duration::from_secs(1);

/// Tuning of a watcher.
#[derive(Debug, Clone)]
pub struct WatcherConfig {
    /// Name of the cursor in the store (one per consumer).
    pub name: String,
    /// Where to start when no cursor is stored (normally the deployment block).
    pub from_block: u64,
    /// Blocks to wait behind the head before reporting (0 on a devnet).
    pub confirmations: u64,
    /// Pause between polls when caught up.
    pub poll_interval: Duration,
    /// Most blocks per `eth_getLogs` request.
    pub max_range: u64,
    /// Events buffered between the poller and the consumer.
    pub capacity: usize,
    /// Retries of transient RPC failures within one poll.
    pub retry: RetryPolicy,
}

impl WatcherConfig {
    /// A config for `deployment` with the network's settings (`networks.toml`).
    pub fn for_network(name: &str, deployment: &Deployment, network: &super::Network) -> Self {
        Self {
            name: name.to_owned(),
            from_block: deployment.deploy_block,
            confirmations: network.confirmations,
            poll_interval: network.poll_interval(),
            max_range: network.log_range.max(1),
            capacity: 256,
            retry: RetryPolicy::default(),
        }
    }
}

enum Item {
    Event(Box<WatchedEvent>),
    /// Every event up to and including this block has been sent.
    Scanned(u64),
}

/// Starts watchers.
#[derive(Debug)]
pub struct Watcher;

impl Watcher {
    /// Starts a poller for `deployment`'s contracts; returns the consumer's stream and the
    /// poller's task (it ends when the stream is dropped).
    pub fn spawn(
        provider: DynProvider,
        deployment: Deployment,
        db: Db,
        config: WatcherConfig,
    ) -> Result<(EventStream, JoinHandle<()>), Error> {
        let key = config.name.as_bytes().to_vec();
        let start = db.get(CURSORS, &key)?.unwrap_or(LogPosition {
            block: config.from_block,
            log_index: 0,
        });
        let (tx, rx) = mpsc::channel(config.capacity.max(1));
        let poller = Poller {
            provider,
            deployment,
            config,
            next: start,
            tx,
        };
        let handle = tokio::spawn(poller.run());
        Ok((
            EventStream {
                rx,
                db,
                key,
                committed: start,
                uncommitted: None,
                pending_scan: None,
                last_scanned_persist: Instant::now(),
            },
            handle,
        ))
    }
}

struct Poller {
    provider: DynProvider,
    deployment: Deployment,
    config: WatcherConfig,
    /// The next position to deliver.
    next: LogPosition,
    tx: mpsc::Sender<Item>,
}

impl Poller {
    async fn run(mut self) {
        tracing::debug!(target: "chain::watch", name = %self.config.name, from = self.next.block, "watching");
        loop {
            let caught_up = match self.poll().await {
                Ok(caught_up) => caught_up,
                Err(PollError::Closed) => return,
                Err(PollError::Chain(e)) => {
                    tracing::warn!(target: "chain::watch", name = %self.config.name, error = %e, "poll failed, will retry");
                    true
                }
            };
            if caught_up {
                tokio::select! {
                    () = tokio::time::sleep(self.config.poll_interval) => {}
                    () = self.tx.closed() => return,
                }
            }
        }
    }

    /// Scans one range; returns whether the watcher has caught up with the safe head.
    async fn poll(&mut self) -> Result<bool, PollError> {
        let retry = self.config.retry;
        let head = retry
            .run("eth_blockNumber", || self.provider.get_block_number())
            .await?;
        let safe = head.saturating_sub(self.config.confirmations);
        if self.next.block > safe {
            return Ok(true);
        }
        let from = self.next.block;
        let to = safe.min(from.saturating_add(self.config.max_range - 1));
        let filter = Filter::new()
            .address(vec![
                self.deployment.compute_marketplace,
                self.deployment.training_pool,
                self.deployment.inference_pool,
                self.deployment.duck_token,
            ])
            .from_block(BlockNumberOrTag::Number(from))
            .to_block(BlockNumberOrTag::Number(to));
        let mut logs = retry
            .run("eth_getLogs", || self.provider.get_logs(&filter))
            .await?;
        logs.sort_by_key(|l| (l.block_number, l.log_index));
        for log in logs {
            let (Some(block), Some(log_index)) = (log.block_number, log.log_index) else {
                continue; // pending logs have no position; they come back once mined
            };
            let position = LogPosition { block, log_index };
            if position < self.next {
                continue; // delivered before a restart
            }
            match ChainEvent::decode(&self.deployment, &log) {
                Ok(Some(event)) => {
                    let ev = WatchedEvent {
                        event,
                        position,
                        tx_hash: log.transaction_hash.unwrap_or_default(),
                        address: log.address(),
                    };
                    self.tx
                        .send(Item::Event(Box::new(ev)))
                        .await
                        .map_err(|_| PollError::Closed)?;
                }
                Ok(None) => {}
                Err(reason) => {
                    tracing::warn!(target: "chain::watch", block, log_index, address = %log.address(), %reason, "undecodable log skipped");
                }
            }
        }
        self.tx
            .send(Item::Scanned(to))
            .await
            .map_err(|_| PollError::Closed)?;
        self.next = LogPosition {
            block: to + 1,
            log_index: 0,
        };
        Ok(to >= safe)
    }
}

enum PollError {
    Closed,
    Chain(Error),
}

impl From<Error> for PollError {
    fn from(e: Error) -> Self {
        PollError::Chain(e)
    }
}

/// The consumer's end of a watcher; owns the stored cursor.
#[derive(Debug)]
pub struct EventStream {
    rx: mpsc::Receiver<Item>,
    db: Db,
    key: Vec<u8>,
    committed: LogPosition,
    uncommitted: Option<LogPosition>,
    pending_scan: Option<u64>,
    last_scanned_persist: Instant,
}

impl std::fmt::Debug for Item {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Item::Event(e) => write!(f, "Event({})", e.event.name()),
            Item::Scanned(b) => write!(f, "Scanned({b})"),
        }
    }
}

impl EventStream {
    /// The next event, in chain order. Calling it marks the previously returned event as
    /// processed (the stored cursor moves past it). `Ok(None)` once the poller has stopped.
    pub async fn next(&mut self) -> Result<Option<WatchedEvent>, Error> {
        self.commit()?;
        if let Some(block) = self.pending_scan.take() {
            self.scanned(block)?;
        }
        loop {
            match self.rx.recv().await {
                None => return Ok(None),
                Some(Item::Event(ev)) => {
                    self.uncommitted = Some(ev.position.next());
                    return Ok(Some(*ev));
                }
                Some(Item::Scanned(block)) => self.scanned(block)?,
            }
        }
    }

    /// Up to `max` events at once: waits for the first, then takes what is already buffered.
    /// Calling it marks the previous batch as processed with a single store write, which is
    /// what a consumer that keeps up with a busy chain wants. Empty once the poller stopped.
    pub async fn next_batch(&mut self, max: usize) -> Result<Vec<WatchedEvent>, Error> {
        let mut batch = Vec::new();
        let Some(first) = self.next().await? else {
            return Ok(batch);
        };
        batch.push(first);
        while batch.len() < max.max(1) {
            match self.rx.try_recv() {
                Ok(Item::Event(ev)) => {
                    self.uncommitted = Some(ev.position.next());
                    batch.push(*ev);
                }
                Ok(Item::Scanned(block)) => {
                    // Keep it for after the batch is processed: only the position matters.
                    self.pending_scan = Some(block);
                }
                Err(_) => break,
            }
        }
        Ok(batch)
    }

    /// Like [`EventStream::next`] but gives up after `timeout` (`Ok(None)` then too).
    pub async fn next_timeout(&mut self, timeout: Duration) -> Result<Option<WatchedEvent>, Error> {
        match tokio::time::timeout(timeout, self.next()).await {
            Ok(r) => r,
            Err(_) => Ok(None),
        }
    }

    /// Marks the last returned event as processed now.
    pub fn commit(&mut self) -> Result<(), Error> {
        self.commit_with(|_| Ok(()))
    }

    /// Marks the last returned event as processed in the same store transaction as the
    /// consumer's own writes in `f`: either both are stored or neither.
    pub fn commit_with<F>(&mut self, f: F) -> Result<(), Error>
    where
        F: FnOnce(&mut Batch<'_>) -> Result<(), StoreError>,
    {
        let next = self.uncommitted.unwrap_or(self.committed);
        self.db.write(|batch| {
            f(batch)?;
            batch.put(CURSORS, &self.key, &next)
        })?;
        self.committed = next;
        self.uncommitted = None;
        Ok(())
    }

    /// The position of the next event to process, as stored.
    pub fn cursor(&self) -> LogPosition {
        self.committed
    }

    fn scanned(&mut self, block: u64) -> Result<(), Error> {
        // Only when no returned event is still unprocessed: the cursor never skips one.
        let next = LogPosition {
            block: block + 1,
            log_index: 0,
        };
        if self.uncommitted.is_none()
            && next > self.committed
            && self.last_scanned_persist.elapsed() >= SCANNED_PERSIST_EVERY
        {
            self.db.put(CURSORS, &self.key, &next)?;
            self.committed = next;
            self.last_scanned_persist = Instant::now();
        }
        Ok(())
    }
}
