//! A provider's state on the compute marketplace: its one listing and the rentals of that
//! listing, with what has been withdrawn from each.
//!
//! Pure logic: [`ProviderState::handle`] takes an [`Input`] (the node started, a marketplace
//! event, a transaction's outcome, a clock tick) and the local time, changes the state and
//! returns the [`Action`]s the driver in `roles::provider` executes (list, update, withdraw,
//! unlist, persist). It reads no clock, does no I/O, and holds no chain types: addresses are
//! 20-byte arrays and amounts are base units (wei of $DUCK) in `u128`.
//!
//! The state is what later roles ask "which rentals am I serving, for whom, in which cluster":
//! see [`ProviderState::active_rentals`].

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::roles::wire::EthAddress;

/// Seconds in an hour (rent is priced per hour and accrues per second).
pub const SECS_PER_HOUR: u64 = 3_600;
/// Default pause between scheduled withdrawals.
pub const DEFAULT_WITHDRAW_EVERY_MS: u64 = 10 * 60 * 1_000;
/// Pause before a failed listing or update is tried again.
pub const RETRY_AFTER_MS: u64 = 5_000;
/// Most finished-and-settled rentals kept as history (the oldest are dropped first).
pub const MAX_SETTLED_KEPT: usize = 1_000;

/// What the provider wants on the marketplace (from its config and the machine).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Offer {
    /// CPU cores.
    pub cpu_cores: u32,
    /// Memory, MiB.
    pub ram_mb: u32,
    /// GPU model ("" when none).
    pub gpu_model: String,
    /// GPUs.
    pub gpu_count: u32,
    /// The node's PeerId bytes.
    #[serde(with = "serde_bytes")]
    pub peer_id: Vec<u8>,
    /// Where the node can be dialled.
    pub multiaddr: String,
    /// Price per hour, base units.
    pub price_per_hour: u128,
}

/// A listing as the chain has it (read at start).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChainListing {
    /// The machine id.
    pub machine_id: u64,
    /// Who listed it.
    pub provider: EthAddress,
    /// Still listed.
    pub listed: bool,
    /// Its PeerId bytes.
    pub peer_id: Vec<u8>,
    /// Its multiaddr.
    pub multiaddr: String,
    /// Its price per hour, base units.
    pub price_per_hour: u128,
}

/// This provider's listing.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Listing {
    /// The machine id on ComputeMarketplace.
    pub machine_id: u64,
    /// Listed multiaddr.
    pub multiaddr: String,
    /// Listed price per hour, base units.
    pub price_per_hour: u128,
    /// Still listed (false once `MachineUnlisted` was seen).
    pub listed: bool,
}

/// One rental of this provider's machine.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RentalRecord {
    /// The rental id.
    pub rental_id: u64,
    /// The machine rented.
    pub machine_id: u64,
    /// Who rents it.
    pub renter: EthAddress,
    /// Its cluster (0: rented alone).
    pub cluster_id: u64,
    /// Start, unix seconds (chain time).
    pub start: u64,
    /// Scheduled end, unix seconds (chain time).
    pub end: u64,
    /// Early end, unix seconds (chain time), if the renter ended it.
    pub ended_at: Option<u64>,
    /// Paid into escrow, base units.
    pub amount: u128,
    /// Refunded to the renter on an early end, base units.
    pub refund: u128,
    /// Withdrawn by this provider so far, base units.
    pub withdrawn: u128,
}

impl RentalRecord {
    /// The price per hour implied by the escrow (`amount / hours`).
    pub fn price_per_hour(&self) -> u128 {
        let hours = u128::from(self.end.saturating_sub(self.start) / SECS_PER_HOUR);
        self.amount.checked_div(hours).unwrap_or(0)
    }

    /// Whether the rental runs at chain time `now` (not ended early, before its end).
    pub fn is_active(&self, now: u64) -> bool {
        self.ended_at.is_none() && now < self.end
    }

    /// What the provider earns in total: the whole amount, less an early end's refund.
    pub fn earnings(&self) -> u128 {
        self.amount.saturating_sub(self.refund)
    }

    /// Rent accrued at chain time `now`: price x elapsed / 3600, floored, elapsed capped at
    /// the (possibly early) end; the contract's formula.
    pub fn accrued(&self, now: u64) -> u128 {
        accrued(self.price_per_hour(), self.start, self.stop(), now)
    }

    /// When the rental stops accruing (its early end or its scheduled end).
    pub fn stop(&self) -> u64 {
        self.ended_at.unwrap_or(self.end)
    }

    /// Everything it will ever pay has been withdrawn.
    pub fn settled(&self) -> bool {
        self.withdrawn >= self.earnings()
    }
}

/// The contract's accrual: `price x (min(now, stop) - start) / 3600`, floored.
pub fn accrued(price_per_hour: u128, start: u64, stop: u64, now: u64) -> u128 {
    let elapsed = u128::from(now.min(stop).saturating_sub(start));
    price_per_hour.saturating_mul(elapsed) / u128::from(SECS_PER_HOUR)
}

/// The renter's refund when ending at `now`: the amount less what has accrued.
pub fn refund(amount: u128, price_per_hour: u128, start: u64, end: u64, now: u64) -> u128 {
    amount.saturating_sub(accrued(price_per_hour, start, end, now))
}

/// Where the listing transaction stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub enum TxState {
    /// Nothing to send.
    #[default]
    Idle,
    /// Sent, waiting for the outcome.
    InFlight,
    /// Failed at this local time (ms); retried after [`RETRY_AFTER_MS`].
    Failed(u64),
}

/// The provider's durable state.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct ProviderState {
    /// Our chain address.
    pub provider: EthAddress,
    /// The listing, once known.
    pub listing: Option<Listing>,
    /// Rentals of our machine(s), by rental id.
    pub rentals: BTreeMap<u64, RentalRecord>,
    /// Sum of every `RentWithdrawn` to us, base units.
    pub withdrawn_total: u128,
    /// What we want listed (set at start; not persisted meaningfully across configs).
    #[serde(skip)]
    pub want: Option<Offer>,
    /// The listing/update transaction.
    #[serde(skip)]
    pub list_tx: TxState,
    /// A withdrawal is running.
    #[serde(skip)]
    pub withdrawing: bool,
    /// Local time (ms) of the last scheduled withdrawal (or of the start).
    #[serde(skip)]
    pub last_withdraw_ms: u64,
}

/// What the provider starts from: the offer it wants listed, how the chain has the stored
/// listing (`None` if there is none or the chain does not know it), and a listed machine of
/// ours with our PeerId found on chain when nothing was stored (a lost store).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Startup {
    /// What to list.
    pub offer: Offer,
    /// The stored listing as the chain has it.
    pub stored: Option<ChainListing>,
    /// A listed machine of ours found on chain.
    pub found: Option<ChainListing>,
}

/// Inputs to [`ProviderState::handle`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Input {
    /// The node started (start-up reads done).
    Started(Box<Startup>),
    /// `listMachine` went through.
    Listed {
        /// The new machine id.
        machine_id: u64,
    },
    /// `updateMachine` went through.
    Updated,
    /// The listing or update transaction failed.
    ListFailed,
    /// A scheduled withdrawal finished (what it moved arrives as [`Input::RentWithdrawn`]).
    WithdrawDone,
    /// Event `MachineListed`.
    MachineListed {
        /// Machine.
        machine_id: u64,
        /// Lister.
        provider: EthAddress,
        /// Listed PeerId.
        peer_id: Vec<u8>,
        /// Listed multiaddr.
        multiaddr: String,
        /// Price per hour.
        price_per_hour: u128,
    },
    /// Event `MachineUpdated`.
    MachineUpdated {
        /// Machine.
        machine_id: u64,
        /// New multiaddr.
        multiaddr: String,
        /// New price.
        price_per_hour: u128,
    },
    /// Event `MachineUnlisted`.
    MachineUnlisted {
        /// Machine.
        machine_id: u64,
    },
    /// Event `MachineRented`.
    MachineRented {
        /// Machine.
        machine_id: u64,
        /// Rental.
        rental_id: u64,
        /// Renter.
        renter: EthAddress,
        /// Cluster (0: none).
        cluster_id: u64,
        /// Start (chain time).
        start: u64,
        /// End (chain time).
        end: u64,
        /// Escrowed amount.
        amount: u128,
    },
    /// Event `RentalEnded` (an early end by the renter).
    RentalEnded {
        /// Rental.
        rental_id: u64,
        /// When (chain time).
        ended_at: u64,
        /// Refunded.
        refund: u128,
    },
    /// Event `RentWithdrawn`.
    RentWithdrawn {
        /// Rental.
        rental_id: u64,
        /// Who withdrew.
        provider: EthAddress,
        /// How much.
        amount: u128,
    },
    /// The clock.
    Tick,
}

/// What the driver must do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    /// Call `listMachine(offer)`; feed back [`Input::Listed`] or [`Input::ListFailed`].
    List(Offer),
    /// Call `updateMachine`; feed back [`Input::Updated`] or [`Input::ListFailed`].
    Update {
        /// Machine.
        machine_id: u64,
        /// New multiaddr.
        multiaddr: String,
        /// New price.
        price_per_hour: u128,
    },
    /// Withdraw what these rentals have accrued (those with nothing withdrawable skipped);
    /// feed back [`Input::WithdrawDone`].
    Withdraw {
        /// Rentals not yet settled.
        rental_ids: Vec<u64>,
    },
    /// Store the state.
    Persist,
}

impl ProviderState {
    /// A fresh state for `provider`.
    pub fn new(provider: EthAddress) -> Self {
        Self {
            provider,
            ..Self::default()
        }
    }

    /// The rentals running at chain time `now`, each with its renter and cluster.
    pub fn active_rentals(&self, now: u64) -> impl Iterator<Item = &RentalRecord> {
        self.rentals.values().filter(move |r| r.is_active(now))
    }

    /// The clusters this provider serves at chain time `now`, with their renters.
    pub fn active_clusters(&self, now: u64) -> BTreeMap<u64, EthAddress> {
        self.active_rentals(now)
            .filter(|r| r.cluster_id != 0)
            .map(|r| (r.cluster_id, r.renter))
            .collect()
    }

    /// Rentals with rent still to withdraw (or to be accrued).
    pub fn unsettled(&self) -> Vec<u64> {
        self.rentals
            .values()
            .filter(|r| !r.settled())
            .map(|r| r.rental_id)
            .collect()
    }

    fn is_ours(&self, machine_id: u64) -> bool {
        self.listing
            .as_ref()
            .is_some_and(|l| l.machine_id == machine_id)
    }

    /// Applies `input` at local time `now_ms`; returns what to do.
    pub fn handle(&mut self, input: Input, now_ms: u64, withdraw_every_ms: u64) -> Vec<Action> {
        match input {
            Input::Started(s) => {
                let Startup {
                    offer,
                    stored,
                    found,
                } = *s;
                self.on_started(offer, stored, found, now_ms)
            }
            Input::Listed { machine_id } => {
                self.list_tx = TxState::Idle;
                self.adopt(machine_id)
            }
            Input::Updated => {
                self.list_tx = TxState::Idle;
                match (self.listing.as_mut(), self.want.as_ref()) {
                    (Some(l), Some(w)) => {
                        l.multiaddr = w.multiaddr.clone();
                        l.price_per_hour = w.price_per_hour;
                        vec![Action::Persist]
                    }
                    _ => Vec::new(),
                }
            }
            Input::ListFailed => {
                self.list_tx = TxState::Failed(now_ms);
                Vec::new()
            }
            Input::WithdrawDone => {
                self.withdrawing = false;
                Vec::new()
            }
            Input::MachineListed {
                machine_id,
                provider,
                peer_id,
                multiaddr,
                price_per_hour,
            } => {
                // Our own listing seen on chain before the transaction's outcome came back (or
                // after a crash between the two): adopt it rather than list a second time.
                let ours = provider == self.provider
                    && self.want.as_ref().is_some_and(|w| w.peer_id == peer_id);
                let need = self.listing.as_ref().is_none_or(|l| !l.listed);
                if ours && need {
                    self.listing = Some(Listing {
                        machine_id,
                        multiaddr,
                        price_per_hour,
                        listed: true,
                    });
                    return vec![Action::Persist];
                }
                Vec::new()
            }
            Input::MachineUpdated {
                machine_id,
                multiaddr,
                price_per_hour,
            } => match self.listing.as_mut() {
                Some(l) if l.machine_id == machine_id => {
                    l.multiaddr = multiaddr;
                    l.price_per_hour = price_per_hour;
                    vec![Action::Persist]
                }
                _ => Vec::new(),
            },
            Input::MachineUnlisted { machine_id } => match self.listing.as_mut() {
                Some(l) if l.machine_id == machine_id && l.listed => {
                    l.listed = false;
                    vec![Action::Persist]
                }
                _ => Vec::new(),
            },
            Input::MachineRented {
                machine_id,
                rental_id,
                renter,
                cluster_id,
                start,
                end,
                amount,
            } => {
                if !self.is_ours(machine_id) || self.rentals.contains_key(&rental_id) {
                    return Vec::new();
                }
                self.rentals.insert(
                    rental_id,
                    RentalRecord {
                        rental_id,
                        machine_id,
                        renter,
                        cluster_id,
                        start,
                        end,
                        ended_at: None,
                        amount,
                        refund: 0,
                        withdrawn: 0,
                    },
                );
                self.prune();
                vec![Action::Persist]
            }
            Input::RentalEnded {
                rental_id,
                ended_at,
                refund,
            } => match self.rentals.get_mut(&rental_id) {
                Some(r) if r.ended_at.is_none() => {
                    r.ended_at = Some(ended_at);
                    r.refund = refund;
                    vec![Action::Persist]
                }
                _ => Vec::new(),
            },
            Input::RentWithdrawn {
                rental_id,
                provider,
                amount,
            } => {
                if provider != self.provider {
                    return Vec::new();
                }
                let Some(r) = self.rentals.get_mut(&rental_id) else {
                    return Vec::new();
                };
                r.withdrawn = r.withdrawn.saturating_add(amount);
                self.withdrawn_total = self.withdrawn_total.saturating_add(amount);
                self.prune();
                vec![Action::Persist]
            }
            Input::Tick => self.on_tick(now_ms, withdraw_every_ms),
        }
    }

    fn on_started(
        &mut self,
        offer: Offer,
        stored: Option<ChainListing>,
        found: Option<ChainListing>,
        now_ms: u64,
    ) -> Vec<Action> {
        self.last_withdraw_ms = now_ms;
        self.list_tx = TxState::Idle;
        self.withdrawing = false;
        let usable = |c: &ChainListing| {
            c.provider == self.provider && c.listed && c.peer_id == offer.peer_id
        };
        let chain = match (stored, found) {
            (Some(s), _) if usable(&s) => Some(s),
            (_, Some(f)) if usable(&f) => Some(f),
            _ => None,
        };
        let mut actions = Vec::new();
        match chain {
            Some(c) => {
                let new = Listing {
                    machine_id: c.machine_id,
                    multiaddr: c.multiaddr,
                    price_per_hour: c.price_per_hour,
                    listed: true,
                };
                if self.listing.as_ref() != Some(&new) {
                    self.listing = Some(new);
                    actions.push(Action::Persist);
                }
            }
            None => {
                // Nothing usable on chain: the stored machine was unlisted, belongs to another
                // key or PeerId, or never existed. Keep its rentals (history), list anew.
                if let Some(l) = self.listing.as_mut()
                    && l.listed
                {
                    l.listed = false;
                    actions.push(Action::Persist);
                }
            }
        }
        self.want = Some(offer);
        actions.extend(self.send_listing());
        actions
    }

    /// The transaction that brings the chain to the wanted listing, if any is needed.
    fn send_listing(&mut self) -> Vec<Action> {
        let Some(want) = self.want.clone() else {
            return Vec::new();
        };
        match &self.listing {
            Some(l) if l.listed => {
                if l.multiaddr == want.multiaddr && l.price_per_hour == want.price_per_hour {
                    // Already as wanted (a failed transaction that went through after all).
                    self.list_tx = TxState::Idle;
                    return Vec::new();
                }
                self.list_tx = TxState::InFlight;
                vec![Action::Update {
                    machine_id: l.machine_id,
                    multiaddr: want.multiaddr,
                    price_per_hour: want.price_per_hour,
                }]
            }
            _ => {
                self.list_tx = TxState::InFlight;
                vec![Action::List(want)]
            }
        }
    }

    fn adopt(&mut self, machine_id: u64) -> Vec<Action> {
        let Some(want) = self.want.as_ref() else {
            return Vec::new();
        };
        if self.is_ours(machine_id) && self.listing.as_ref().is_some_and(|l| l.listed) {
            return Vec::new();
        }
        self.listing = Some(Listing {
            machine_id,
            multiaddr: want.multiaddr.clone(),
            price_per_hour: want.price_per_hour,
            listed: true,
        });
        vec![Action::Persist]
    }

    fn on_tick(&mut self, now_ms: u64, withdraw_every_ms: u64) -> Vec<Action> {
        let mut actions = Vec::new();
        // Retry a listing (or an update) that failed.
        actions.extend(self.retry_listing(now_ms));
        if !self.withdrawing && now_ms.saturating_sub(self.last_withdraw_ms) >= withdraw_every_ms {
            let rental_ids = self.unsettled();
            if !rental_ids.is_empty() {
                self.withdrawing = true;
                self.last_withdraw_ms = now_ms;
                actions.push(Action::Withdraw { rental_ids });
            }
        }
        actions
    }

    fn retry_listing(&mut self, now_ms: u64) -> Vec<Action> {
        match self.list_tx {
            TxState::Failed(at) if now_ms.saturating_sub(at) >= RETRY_AFTER_MS => {
                self.send_listing()
            }
            _ => Vec::new(),
        }
    }

    /// Drops the oldest settled, finished rentals beyond [`MAX_SETTLED_KEPT`].
    fn prune(&mut self) {
        let settled: Vec<u64> = self
            .rentals
            .values()
            .filter(|r| r.settled())
            .map(|r| r.rental_id)
            .collect();
        let excess = settled.len().saturating_sub(MAX_SETTLED_KEPT);
        for id in settled.into_iter().take(excess) {
            self.rentals.remove(&id);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const ME: EthAddress = [1; 20];
    const OTHER: EthAddress = [2; 20];
    const RENTER: EthAddress = [3; 20];
    const EVERY: u64 = 60_000;
    const DUCK: u128 = 1_000_000_000_000_000_000;

    fn offer(addr: &str, price: u128) -> Offer {
        Offer {
            cpu_cores: 8,
            ram_mb: 16_000,
            gpu_model: String::new(),
            gpu_count: 0,
            peer_id: vec![9, 9, 9],
            multiaddr: addr.into(),
            price_per_hour: price,
        }
    }

    fn chain_listing(id: u64, addr: &str, price: u128) -> ChainListing {
        ChainListing {
            machine_id: id,
            provider: ME,
            listed: true,
            peer_id: vec![9, 9, 9],
            multiaddr: addr.into(),
            price_per_hour: price,
        }
    }

    fn started(s: &mut ProviderState, o: Offer, stored: Option<ChainListing>) -> Vec<Action> {
        s.handle(
            Input::Started(Box::new(Startup {
                offer: o,
                stored,
                found: None,
            })),
            1_000,
            EVERY,
        )
    }

    fn rented(rental_id: u64, machine_id: u64, cluster_id: u64) -> Input {
        Input::MachineRented {
            machine_id,
            rental_id,
            renter: RENTER,
            cluster_id,
            start: 10_000,
            end: 10_000 + 2 * SECS_PER_HOUR,
            amount: 4 * DUCK,
        }
    }

    fn listed_state() -> ProviderState {
        let mut s = ProviderState::new(ME);
        started(&mut s, offer("/ip4/127.0.0.1/tcp/1", 2 * DUCK), None);
        s.handle(Input::Listed { machine_id: 7 }, 2_000, EVERY);
        s
    }

    #[test]
    fn start_without_listing_lists_once() {
        let mut s = ProviderState::new(ME);
        let a = started(&mut s, offer("/ip4/127.0.0.1/tcp/1", DUCK), None);
        assert_eq!(a, vec![Action::List(offer("/ip4/127.0.0.1/tcp/1", DUCK))]);
        // Ticks while the transaction is in flight send nothing more.
        assert!(s.handle(Input::Tick, 100_000, EVERY).is_empty());
        assert_eq!(
            s.handle(Input::Listed { machine_id: 4 }, 2_000, EVERY),
            vec![Action::Persist]
        );
        assert_eq!(s.listing.as_ref().map(|l| l.machine_id), Some(4));
    }

    #[test]
    fn restart_with_same_listing_sends_nothing() {
        let mut s = listed_state();
        let a = started(
            &mut s,
            offer("/ip4/127.0.0.1/tcp/1", 2 * DUCK),
            Some(chain_listing(7, "/ip4/127.0.0.1/tcp/1", 2 * DUCK)),
        );
        assert!(a.is_empty(), "{a:?}");
        assert_eq!(s.listing.as_ref().map(|l| l.machine_id), Some(7));
    }

    #[test]
    fn restart_with_new_price_or_address_updates() {
        let mut s = listed_state();
        let a = started(
            &mut s,
            offer("/ip4/127.0.0.1/tcp/2", 3 * DUCK),
            Some(chain_listing(7, "/ip4/127.0.0.1/tcp/1", 2 * DUCK)),
        );
        assert_eq!(
            a,
            vec![Action::Update {
                machine_id: 7,
                multiaddr: "/ip4/127.0.0.1/tcp/2".into(),
                price_per_hour: 3 * DUCK
            }]
        );
        assert_eq!(
            s.handle(Input::Updated, 2_000, EVERY),
            vec![Action::Persist]
        );
        let l = s.listing.clone().unwrap();
        assert_eq!(
            (l.multiaddr.as_str(), l.price_per_hour),
            ("/ip4/127.0.0.1/tcp/2", 3 * DUCK)
        );
    }

    #[test]
    fn restart_after_unlisting_lists_anew() {
        let mut s = listed_state();
        let mut gone = chain_listing(7, "/ip4/127.0.0.1/tcp/1", 2 * DUCK);
        gone.listed = false;
        let a = started(&mut s, offer("/ip4/127.0.0.1/tcp/1", 2 * DUCK), Some(gone));
        assert_eq!(
            a,
            vec![
                Action::Persist,
                Action::List(offer("/ip4/127.0.0.1/tcp/1", 2 * DUCK))
            ]
        );
    }

    #[test]
    fn start_with_lost_store_adopts_the_listing_found_on_chain() {
        let mut s = ProviderState::new(ME);
        let a = s.handle(
            Input::Started(Box::new(Startup {
                offer: offer("/ip4/127.0.0.1/tcp/1", DUCK),
                stored: None,
                found: Some(chain_listing(3, "/ip4/127.0.0.1/tcp/1", DUCK)),
            })),
            0,
            EVERY,
        );
        assert_eq!(a, vec![Action::Persist]);
        assert_eq!(s.listing.as_ref().map(|l| l.machine_id), Some(3));
    }

    #[test]
    fn start_ignores_a_listing_of_another_provider() {
        let mut s = ProviderState::new(ME);
        let mut theirs = chain_listing(3, "/ip4/127.0.0.1/tcp/1", DUCK);
        theirs.provider = OTHER;
        let a = started(&mut s, offer("/ip4/127.0.0.1/tcp/1", DUCK), Some(theirs));
        assert!(matches!(a.as_slice(), [Action::List(_)]), "{a:?}");
    }

    #[test]
    fn own_listing_event_is_adopted_before_the_receipt() {
        let mut s = ProviderState::new(ME);
        started(&mut s, offer("/ip4/127.0.0.1/tcp/1", DUCK), None);
        let ev = Input::MachineListed {
            machine_id: 5,
            provider: ME,
            peer_id: vec![9, 9, 9],
            multiaddr: "/ip4/127.0.0.1/tcp/1".into(),
            price_per_hour: DUCK,
        };
        assert_eq!(s.handle(ev, 1_500, EVERY), vec![Action::Persist]);
        // The rental right after is recognised; the late receipt changes nothing.
        assert_eq!(
            s.handle(rented(1, 5, 0), 1_600, EVERY),
            vec![Action::Persist]
        );
        assert!(
            s.handle(Input::Listed { machine_id: 5 }, 1_700, EVERY)
                .is_empty()
        );
        assert_eq!(s.rentals.len(), 1);
    }

    #[test]
    fn listing_event_of_others_is_ignored() {
        let mut s = listed_state();
        let ev = Input::MachineListed {
            machine_id: 8,
            provider: OTHER,
            peer_id: vec![9, 9, 9],
            multiaddr: "x".into(),
            price_per_hour: DUCK,
        };
        assert!(s.handle(ev, 3_000, EVERY).is_empty());
        assert_eq!(s.listing.as_ref().map(|l| l.machine_id), Some(7));
    }

    #[test]
    fn failed_listing_is_retried_after_a_pause() {
        let mut s = ProviderState::new(ME);
        started(&mut s, offer("a", DUCK), None);
        assert!(s.handle(Input::ListFailed, 2_000, EVERY).is_empty());
        assert!(
            s.handle(Input::Tick, 2_000 + RETRY_AFTER_MS - 1, EVERY)
                .is_empty()
        );
        assert_eq!(
            s.handle(Input::Tick, 2_000 + RETRY_AFTER_MS, EVERY),
            vec![Action::List(offer("a", DUCK))]
        );
    }

    #[test]
    fn failed_listing_that_went_through_is_not_sent_again() {
        let mut s = ProviderState::new(ME);
        started(&mut s, offer("a", DUCK), None);
        // The receipt timed out, but the watcher saw the listing.
        s.handle(Input::ListFailed, 2_000, EVERY);
        let ev = Input::MachineListed {
            machine_id: 2,
            provider: ME,
            peer_id: vec![9, 9, 9],
            multiaddr: "a".into(),
            price_per_hour: DUCK,
        };
        assert_eq!(s.handle(ev, 2_500, EVERY), vec![Action::Persist]);
        assert!(
            s.handle(Input::Tick, 2_000 + RETRY_AFTER_MS, EVERY)
                .is_empty()
        );
        assert_eq!(s.list_tx, TxState::Idle);
    }

    #[test]
    fn rentals_of_other_machines_are_ignored() {
        let mut s = listed_state();
        assert!(s.handle(rented(1, 8, 0), 3_000, EVERY).is_empty());
        assert!(s.rentals.is_empty());
    }

    #[test]
    fn rental_lifecycle_tracks_cluster_refund_and_withdrawals() {
        let mut s = listed_state();
        assert_eq!(
            s.handle(rented(3, 7, 2), 3_000, EVERY),
            vec![Action::Persist]
        );
        // A replayed event is not counted twice.
        assert!(s.handle(rented(3, 7, 2), 3_000, EVERY).is_empty());
        let r = &s.rentals[&3];
        assert_eq!(
            (r.renter, r.cluster_id, r.price_per_hour()),
            (RENTER, 2, 2 * DUCK)
        );
        assert_eq!(s.active_rentals(10_001).count(), 1);
        assert_eq!(s.active_clusters(10_001), BTreeMap::from([(2, RENTER)]));
        assert_eq!(s.active_rentals(10_000 + 2 * SECS_PER_HOUR).count(), 0);

        // Ended after half an hour: 1 DUCK accrued, 3 refunded.
        let ended_at = 10_000 + SECS_PER_HOUR / 2;
        let refund = refund(4 * DUCK, 2 * DUCK, 10_000, 10_000 + 7_200, ended_at);
        assert_eq!(refund, 3 * DUCK);
        s.handle(
            Input::RentalEnded {
                rental_id: 3,
                ended_at,
                refund,
            },
            4_000,
            EVERY,
        );
        let r = &s.rentals[&3];
        assert_eq!(r.earnings(), DUCK);
        assert_eq!(r.accrued(u64::MAX), DUCK);
        assert_eq!(s.active_rentals(ended_at).count(), 0);
        assert_eq!(s.unsettled(), vec![3]);

        // Someone else's withdrawal is not ours; ours settles the rental.
        let w = |provider| Input::RentWithdrawn {
            rental_id: 3,
            provider,
            amount: DUCK,
        };
        assert!(s.handle(w(OTHER), 5_000, EVERY).is_empty());
        assert_eq!(s.handle(w(ME), 5_000, EVERY), vec![Action::Persist]);
        assert_eq!(s.withdrawn_total, DUCK);
        assert!(s.unsettled().is_empty());
    }

    #[test]
    fn withdrawals_follow_the_schedule() {
        let mut s = listed_state();
        // Nothing rented: nothing to withdraw, however late.
        assert!(s.handle(Input::Tick, 1_000 + 10 * EVERY, EVERY).is_empty());
        s.handle(rented(1, 7, 0), 2_000, EVERY);
        // The schedule counts from the start (1 s here).
        assert!(s.handle(Input::Tick, 1_000 + EVERY - 1, EVERY).is_empty());
        assert_eq!(
            s.handle(Input::Tick, 1_000 + EVERY, EVERY),
            vec![Action::Withdraw {
                rental_ids: vec![1]
            }]
        );
        // One at a time, and not again before the next period.
        assert!(s.handle(Input::Tick, 1_000 + 3 * EVERY, EVERY).is_empty());
        s.handle(Input::WithdrawDone, 1_000 + 3 * EVERY, EVERY);
        assert!(s.handle(Input::Tick, 1_000 + EVERY + 1, EVERY).is_empty());
        assert_eq!(s.handle(Input::Tick, 1_000 + 3 * EVERY, EVERY).len(), 1);
    }

    #[test]
    fn unlisting_event_takes_the_machine_off_without_relisting() {
        let mut s = listed_state();
        assert_eq!(
            s.handle(Input::MachineUnlisted { machine_id: 7 }, 3_000, EVERY),
            vec![Action::Persist]
        );
        assert!(s.handle(Input::Tick, 100_000, EVERY).is_empty());
        assert_eq!(s.listing.as_ref().map(|l| l.listed), Some(false));
    }

    #[test]
    fn accrual_matches_the_contract_formula() {
        // 1.5 DUCK/hour for 2 hours, full term: exactly 3 DUCK.
        let p = 3 * DUCK / 2;
        assert_eq!(accrued(p, 100, 100 + 7_200, 100 + 9_999), 3 * DUCK);
        // Floored: 1 wei/hour for 1799 s accrues nothing.
        assert_eq!(accrued(1, 0, 3_600, 1_799), 0);
        assert_eq!(refund(2, 1, 0, 7_200, 1_799), 2);
        // Before the start (clock skew): nothing.
        assert_eq!(accrued(p, 100, 200, 50), 0);
    }

    #[test]
    fn state_round_trips_through_cbor() {
        let mut s = listed_state();
        s.handle(rented(1, 7, 0), 2_000, EVERY);
        // Amounts past u64 (a million DUCK) survive too.
        s.withdrawn_total = 1_000_000 * DUCK;
        if let Some(r) = s.rentals.get_mut(&1) {
            r.amount = u128::MAX;
        }
        let bytes = crate::cbor::to_vec(&s).unwrap();
        let back: ProviderState = crate::cbor::from_slice(&bytes, 1 << 20).unwrap();
        assert_eq!(back.listing, s.listing);
        assert_eq!(back.rentals, s.rentals);
        assert_eq!(back.withdrawn_total, s.withdrawn_total);
    }
}
