//! The provider's side of the actor (`quackmesh node --provide --price P`): detects the
//! machine's specs, lists it on ComputeMarketplace with the node's PeerId and multiaddr (once:
//! the machine id is stored per deployment and reused on restart, with `updateMachine` when the
//! address or price changed), follows the rentals of its machine from the chain watcher's
//! events, withdraws accrued rent on a schedule, and unlists on shutdown when asked to.
//!
//! Decisions are [`ProviderState::handle`]'s (pure, in [`super::rental`]); this file reads the
//! chain, sends the transactions and persists the state after every change, under
//! [`PROVIDER`] keyed by the deployment ([`state_key`]).

use std::time::Duration;

use alloy::primitives::{Address, U256};
use tokio::sync::oneshot;

use crate::{
    chain::{self, ChainEvent, Deployment, WatchedEvent, client::MachineSpecs},
    roles::{
        jobs::small_id,
        machine,
        rental::{Action, ChainListing, Input, Offer, ProviderState, Startup},
        runtime::{Done, Runtime, now_ms},
    },
    store::{Db, StoreError, Tree},
};

/// The provider's state, one record per deployment ([`state_key`]).
pub const PROVIDER: Tree<ProviderState> = Tree::new("roles.provider");
/// Pause before start-up chain reads are tried again.
const LOAD_RETRY_MS: u64 = 5_000;
/// Most marketplace events held back until the start-up reads are done.
const MAX_EARLY_EVENTS: usize = 4_096;
/// Longest an unlist on shutdown may take.
pub const UNLIST_TIMEOUT: Duration = Duration::from_secs(30);

/// Settings of the provider role.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProviderConfig {
    /// Price per hour, base units of $DUCK.
    pub price_per_hour: u128,
    /// The multiaddr listed (where renters dial the node).
    pub multiaddr: String,
    /// Pause between scheduled withdrawals.
    pub withdraw_every: Duration,
    /// Unlist the machine when the node shuts down (fails while it is rented).
    pub unlist_on_exit: bool,
}

/// The store key of a deployment's provider state: `<chain id>:<marketplace address>`.
pub fn state_key(deployment: &Deployment) -> Vec<u8> {
    format!(
        "{}:{:#x}",
        deployment.chain_id, deployment.compute_marketplace
    )
    .into_bytes()
}

/// The stored provider state of `deployment`, if this node ever provided on it.
pub fn load(db: &Db, deployment: &Deployment) -> Result<Option<ProviderState>, StoreError> {
    db.get(PROVIDER, &state_key(deployment))
}

/// The clusters this node serves as a provider at chain time `now` (unix seconds), each with
/// its renter: what cluster-subnet admission and cluster work start from.
pub fn active_clusters(
    db: &Db,
    deployment: &Deployment,
    now: u64,
) -> Result<std::collections::BTreeMap<u64, Address>, StoreError> {
    Ok(load(db, deployment)?
        .map(|s| {
            s.active_clusters(now)
                .into_iter()
                .map(|(c, r)| (c, Address::from(r)))
                .collect()
        })
        .unwrap_or_default())
}

/// An amount in base units as `u128` (saturating: $DUCK's supply is far below).
pub(crate) fn amount(v: U256) -> u128 {
    u128::try_from(v).unwrap_or(u128::MAX)
}

/// A chain event as the provider's input, when it is one it follows.
pub fn input_of(event: &ChainEvent) -> Option<Input> {
    Some(match event {
        ChainEvent::MachineListed(e) => Input::MachineListed {
            machine_id: small_id(e.machineId)?,
            provider: e.provider.into_array(),
            peer_id: e.peerId.to_vec(),
            multiaddr: e.multiaddr.clone(),
            price_per_hour: amount(e.pricePerHour),
        },
        ChainEvent::MachineUpdated(e) => Input::MachineUpdated {
            machine_id: small_id(e.machineId)?,
            multiaddr: e.multiaddr.clone(),
            price_per_hour: amount(e.pricePerHour),
        },
        ChainEvent::MachineUnlisted(e) => Input::MachineUnlisted {
            machine_id: small_id(e.machineId)?,
        },
        ChainEvent::MachineRented(e) => Input::MachineRented {
            machine_id: small_id(e.machineId)?,
            rental_id: small_id(e.rentalId)?,
            renter: e.renter.into_array(),
            cluster_id: small_id(e.clusterId)?,
            start: e.start,
            end: e.end,
            amount: amount(e.amount),
        },
        ChainEvent::RentalEnded(e) => Input::RentalEnded {
            rental_id: small_id(e.rentalId)?,
            ended_at: e.endedAt,
            refund: amount(e.refund),
        },
        ChainEvent::RentWithdrawn(e) => Input::RentWithdrawn {
            rental_id: small_id(e.rentalId)?,
            provider: e.provider.into_array(),
            amount: amount(e.amount),
        },
        _ => return None,
    })
}

/// The provider in the actor.
pub(crate) struct ProviderRole {
    pub(crate) config: ProviderConfig,
    pub(crate) state: ProviderState,
    key: Vec<u8>,
    /// `Started` has been fed (chain reads done).
    started: bool,
    /// Marketplace events seen before `Started`, fed right after it (a listing adopted from
    /// the chain then sees its rentals).
    early: std::collections::VecDeque<Input>,
    loading: bool,
    load_failed_at: Option<u64>,
}

impl ProviderRole {
    /// The role with its stored state.
    pub(crate) fn open(
        db: &Db,
        deployment: &Deployment,
        me: Address,
        config: ProviderConfig,
    ) -> Result<Self, StoreError> {
        let key = state_key(deployment);
        let mut state = db
            .get(PROVIDER, &key)?
            .unwrap_or_else(|| ProviderState::new(me.into_array()));
        state.provider = me.into_array();
        Ok(Self {
            config,
            state,
            key,
            started: false,
            early: std::collections::VecDeque::new(),
            loading: false,
            load_failed_at: None,
        })
    }

    fn withdraw_every_ms(&self) -> u64 {
        u64::try_from(self.config.withdraw_every.as_millis()).unwrap_or(u64::MAX)
    }
}

/// Completions of the provider's spawned work.
#[derive(Debug)]
pub(crate) enum ProvDone {
    /// Start-up reads: the offer, the stored listing and a listing found on chain.
    Loaded(Result<Box<Startup>, String>),
    /// `listMachine` answered.
    Listed(Result<u64, String>),
    /// `updateMachine` answered.
    Updated(Result<(), String>),
    /// A withdrawal finished (amount withdrawn, wei decimal).
    Withdrawn(Result<Option<String>, String>),
}

impl Runtime {
    /// Starts the provider's start-up reads.
    pub(crate) fn provider_start(&mut self) {
        let Some(p) = self.provider.as_mut() else {
            return;
        };
        if p.loading || p.started {
            return;
        }
        p.loading = true;
        let stored = p.state.listing.as_ref().map(|l| l.machine_id);
        let price = p.config.price_per_hour;
        let multiaddr = p.config.multiaddr.clone();
        let chain = self.ctx.chain.clone();
        let me = self.ctx.eth();
        let peer_id = self.ctx.peer().to_bytes();
        let done = self.done_tx.clone();
        tokio::spawn(async move {
            let r = load_listing(&chain, me, peer_id, multiaddr, price, stored).await;
            let _ = done.send(Done::Provider(ProvDone::Loaded(r))).await;
        });
    }

    /// A marketplace event (held back until the start-up reads are done).
    pub(crate) fn provider_on_event(&mut self, ev: &WatchedEvent) {
        let Some(p) = self.provider.as_mut() else {
            return;
        };
        let Some(input) = input_of(&ev.event) else {
            return;
        };
        if !p.started {
            if p.early.len() >= MAX_EARLY_EVENTS {
                tracing::warn!(target: "roles::provider", "too many marketplace events before start-up; dropping the oldest");
                p.early.pop_front();
            }
            p.early.push_back(input);
            return;
        }
        self.provider_feed(input);
    }

    /// The clock.
    pub(crate) fn provider_tick(&mut self, now: u64) {
        let Some(p) = self.provider.as_mut() else {
            return;
        };
        if !p.started {
            if !p.loading
                && p.load_failed_at
                    .is_none_or(|at| now.saturating_sub(at) >= LOAD_RETRY_MS)
            {
                self.provider_start();
            }
            return;
        }
        self.provider_feed(Input::Tick);
    }

    fn provider_feed(&mut self, input: Input) {
        let Some(p) = self.provider.as_mut() else {
            return;
        };
        let every = p.withdraw_every_ms();
        let actions = p.state.handle(input, now_ms(), every);
        self.provider_act(actions);
    }

    fn provider_act(&mut self, actions: Vec<Action>) {
        let Some(p) = self.provider.as_ref() else {
            return;
        };
        for action in actions {
            match action {
                Action::Persist => {
                    if let Err(e) = self.ctx.db.put(PROVIDER, &p.key, &p.state) {
                        tracing::warn!(target: "roles::provider", error = %e, "cannot store provider state");
                    }
                }
                Action::List(offer) => {
                    let chain = self.ctx.chain.clone();
                    let done = self.done_tx.clone();
                    tokio::spawn(async move {
                        let r = chain
                            .list_machine(specs_of(&offer), U256::from(offer.price_per_hour))
                            .await
                            .map_err(|e| e.to_string())
                            .and_then(|s| {
                                small_id(s.value).ok_or_else(|| "machine id too large".into())
                            });
                        let _ = done.send(Done::Provider(ProvDone::Listed(r))).await;
                    });
                }
                Action::Update {
                    machine_id,
                    multiaddr,
                    price_per_hour,
                } => {
                    let chain = self.ctx.chain.clone();
                    let done = self.done_tx.clone();
                    tokio::spawn(async move {
                        let r = chain
                            .update_machine(
                                U256::from(machine_id),
                                multiaddr,
                                U256::from(price_per_hour),
                            )
                            .await
                            .map(|_| ())
                            .map_err(|e| e.to_string());
                        let _ = done.send(Done::Provider(ProvDone::Updated(r))).await;
                    });
                }
                Action::Withdraw { rental_ids } => {
                    let chain = self.ctx.chain.clone();
                    let done = self.done_tx.clone();
                    tokio::spawn(async move {
                        let r = withdraw_accrued(&chain, &rental_ids)
                            .await
                            .map(|a| a.map(|v| v.to_string()))
                            .map_err(|e| e.to_string());
                        let _ = done.send(Done::Provider(ProvDone::Withdrawn(r))).await;
                    });
                }
            }
        }
    }

    /// A completion of the provider's work.
    pub(crate) fn on_provider_done(&mut self, d: ProvDone) {
        match d {
            ProvDone::Loaded(r) => {
                let Some(p) = self.provider.as_mut() else {
                    return;
                };
                p.loading = false;
                match r {
                    Ok(startup) => {
                        p.started = true;
                        let o = &startup.offer;
                        tracing::info!(target: "roles::provider", cpus = o.cpu_cores, ram_mb = o.ram_mb, gpus = o.gpu_count, multiaddr = %o.multiaddr, "providing this machine");
                        let early = std::mem::take(&mut p.early);
                        self.provider_feed(Input::Started(startup));
                        for input in early {
                            self.provider_feed(input);
                        }
                    }
                    Err(e) => {
                        p.load_failed_at = Some(now_ms());
                        tracing::warn!(target: "roles::provider", error = %e, "cannot read the marketplace; will retry");
                    }
                }
            }
            ProvDone::Listed(r) => match r {
                Ok(machine_id) => {
                    tracing::info!(target: "roles::provider", machine_id, "machine listed");
                    self.provider_feed(Input::Listed { machine_id });
                }
                Err(e) => {
                    tracing::warn!(target: "roles::provider", error = %e, "listMachine failed; will retry");
                    self.provider_feed(Input::ListFailed);
                }
            },
            ProvDone::Updated(r) => match r {
                Ok(()) => {
                    tracing::info!(target: "roles::provider", "listing updated");
                    self.provider_feed(Input::Updated);
                }
                Err(e) => {
                    tracing::warn!(target: "roles::provider", error = %e, "updateMachine failed; will retry");
                    self.provider_feed(Input::ListFailed);
                }
            },
            ProvDone::Withdrawn(r) => {
                match r {
                    Ok(Some(amount)) => {
                        tracing::info!(target: "roles::provider", %amount, "rent withdrawn")
                    }
                    Ok(None) => {}
                    Err(e) => {
                        tracing::warn!(target: "roles::provider", error = %e, "withdrawal failed; next period")
                    }
                }
                self.provider_feed(Input::WithdrawDone);
            }
        }
    }

    /// Shutdown: unlist when configured (and listed); `reply` answers when done.
    pub(crate) fn provider_on_exit(&mut self, reply: oneshot::Sender<()>) {
        let machine_id = self.provider.as_ref().and_then(|p| {
            p.config
                .unlist_on_exit
                .then_some(p.state.listing.as_ref())
                .flatten()
                .filter(|l| l.listed)
                .map(|l| l.machine_id)
        });
        let Some(machine_id) = machine_id else {
            let _ = reply.send(());
            return;
        };
        let chain = self.ctx.chain.clone();
        tokio::spawn(async move {
            let r =
                tokio::time::timeout(UNLIST_TIMEOUT, chain.unlist_machine(U256::from(machine_id)))
                    .await;
            match r {
                Ok(Ok(_)) => {
                    tracing::info!(target: "roles::provider", machine_id, "machine unlisted")
                }
                Ok(Err(e)) => {
                    tracing::warn!(target: "roles::provider", machine_id, error = %e, "cannot unlist")
                }
                Err(_) => {
                    tracing::warn!(target: "roles::provider", machine_id, "unlisting timed out")
                }
            }
            let _ = reply.send(());
        });
    }
}

/// The contract's specs struct of an offer.
pub fn specs_of(offer: &Offer) -> MachineSpecs {
    MachineSpecs {
        cpuCores: offer.cpu_cores,
        ramMb: offer.ram_mb,
        gpuModel: offer.gpu_model.clone(),
        gpuCount: offer.gpu_count,
        peerId: offer.peer_id.clone().into(),
        multiaddr: offer.multiaddr.clone(),
    }
}

/// A listing as the chain has it.
pub fn chain_listing(machine_id: u64, m: &chain::client::Machine) -> ChainListing {
    ChainListing {
        machine_id,
        provider: m.provider.into_array(),
        listed: m.listed,
        peer_id: m.specs.peerId.to_vec(),
        multiaddr: m.specs.multiaddr.clone(),
        price_per_hour: amount(m.pricePerHour),
    }
}

/// Start-up reads: the machine's specs, the stored listing on chain, or (nothing stored) the
/// newest listed machine of ours with our PeerId.
async fn load_listing(
    chain: &chain::Client,
    me: Address,
    peer_id: Vec<u8>,
    multiaddr: String,
    price_per_hour: u128,
    stored: Option<u64>,
) -> Result<Box<Startup>, String> {
    let specs = machine::detect().await;
    let offer = Offer {
        cpu_cores: specs.cpu_cores,
        ram_mb: specs.ram_mb,
        gpu_model: specs.gpu_model,
        gpu_count: specs.gpu_count,
        peer_id: peer_id.clone(),
        multiaddr,
        price_per_hour,
    };
    let count = chain.machine_count().await.map_err(|e| e.to_string())?;
    let stored = match stored {
        Some(id) if U256::from(id) <= count && id > 0 => {
            let m = chain
                .machine(U256::from(id))
                .await
                .map_err(|e| e.to_string())?;
            Some(chain_listing(id, &m))
        }
        _ => None,
    };
    let found = if stored.is_none() {
        chain
            .machines()
            .await
            .map_err(|e| e.to_string())?
            .into_iter()
            .rev()
            .find(|(_, m)| m.provider == me && m.listed && m.specs.peerId.as_ref() == peer_id)
            .and_then(|(id, m)| small_id(id).map(|id| chain_listing(id, &m)))
    } else {
        None
    };
    Ok(Box::new(Startup {
        offer,
        stored,
        found,
    }))
}

/// Withdraws what `rental_ids` have accrued, skipping those with nothing to withdraw (one
/// `withdrawMany`); the amount, or `None` when there was nothing.
pub async fn withdraw_accrued(
    chain: &chain::Client,
    rental_ids: &[u64],
) -> Result<Option<U256>, chain::Error> {
    let mut due = Vec::new();
    for id in rental_ids {
        if chain.withdrawable(U256::from(*id)).await? > U256::ZERO {
            due.push(U256::from(*id));
        }
    }
    if due.is_empty() {
        return Ok(None);
    }
    Ok(Some(chain.withdraw_many(&due).await?.value))
}
