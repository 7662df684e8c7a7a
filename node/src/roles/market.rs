//! The requester's view of the compute marketplace: machine offers read from the chain,
//! filtered (`--min-cpus`, `--gpu`, `--max-price`) and the cheapest picked for a cluster.
//!
//! [`filter`] and [`pick_cheapest`] are pure and unit-tested; [`offers`], [`rent`] and
//! [`withdrawable_rentals`] and [`cluster_members`] read and write the chain through
//! [`chain::Client`].

use alloy::primitives::{Address, U256};
use serde::{Deserialize, Serialize};

use crate::{
    chain::{self, client::Machine},
    roles::{jobs::small_id, provider::amount},
};

/// One machine on the marketplace, as the CLI and the API show it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MachineOffer {
    /// Machine id.
    pub machine_id: u64,
    /// Provider's chain address (0x-hex).
    pub provider: String,
    /// Price per hour, base units (wei decimal in JSON).
    #[serde(with = "u128_text")]
    pub price_per_hour: u128,
    /// Listed.
    pub listed: bool,
    /// Rented now.
    pub rented: bool,
    /// CPU cores.
    pub cpu_cores: u32,
    /// Memory, MiB.
    pub ram_mb: u32,
    /// GPU model ("" when none).
    pub gpu_model: String,
    /// GPUs.
    pub gpu_count: u32,
    /// The provider node's PeerId (base58, or 0x-hex when the bytes are not one).
    pub peer_id: String,
    /// Where to dial it.
    pub multiaddr: String,
}

impl MachineOffer {
    /// Listed and not rented.
    pub fn available(&self) -> bool {
        self.listed && !self.rented
    }
}

/// What a renter asks for.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct MachineFilter {
    /// At least this many CPU cores.
    pub min_cpus: Option<u32>,
    /// At least one GPU.
    pub gpu: bool,
    /// At most this price per hour, base units.
    pub max_price: Option<u128>,
}

impl MachineFilter {
    /// Whether `m` matches (availability is not checked here).
    pub fn matches(&self, m: &MachineOffer) -> bool {
        self.min_cpus.is_none_or(|n| m.cpu_cores >= n)
            && (!self.gpu || m.gpu_count > 0)
            && self.max_price.is_none_or(|p| m.price_per_hour <= p)
    }
}

/// Errors of the requester's marketplace calls.
#[derive(Debug, thiserror::Error)]
pub enum MarketError {
    /// Fewer available machines match than asked for.
    #[error("only {available} available machine(s) match, {wanted} wanted")]
    NotEnoughMachines {
        /// Asked for.
        wanted: usize,
        /// Matching and available.
        available: usize,
    },
    /// A bad argument.
    #[error("{0}")]
    Invalid(String),
    /// The chain failed.
    #[error(transparent)]
    Chain(#[from] chain::Error),
}

/// The offers matching `filter`, `available_only` dropping rented and unlisted ones.
pub fn filter<'a>(
    offers: &'a [MachineOffer],
    filter: &MachineFilter,
    available_only: bool,
) -> Vec<&'a MachineOffer> {
    offers
        .iter()
        .filter(|m| filter.matches(m) && (!available_only || m.available()))
        .collect()
}

/// The `n` cheapest available offers matching `filter` (ties: lower machine id first).
pub fn pick_cheapest(
    offers: &[MachineOffer],
    f: &MachineFilter,
    n: usize,
) -> Result<Vec<MachineOffer>, MarketError> {
    if n == 0 {
        return Err(MarketError::Invalid("rent at least one machine".into()));
    }
    let mut matching: Vec<MachineOffer> = filter(offers, f, true).into_iter().cloned().collect();
    if matching.len() < n {
        return Err(MarketError::NotEnoughMachines {
            wanted: n,
            available: matching.len(),
        });
    }
    matching.sort_by_key(|m| (m.price_per_hour, m.machine_id));
    matching.truncate(n);
    Ok(matching)
}

/// A PeerId in its usual base58 form, or 0x-hex when the bytes are not a PeerId.
pub fn peer_id_text(bytes: &[u8]) -> String {
    libp2p::PeerId::from_bytes(bytes)
        .map(|p| p.to_string())
        .unwrap_or_else(|_| format!("0x{}", hex::encode(bytes)))
}

fn offer_of(machine_id: u64, m: &Machine, rented: bool) -> MachineOffer {
    MachineOffer {
        machine_id,
        provider: format!("{:#x}", m.provider),
        price_per_hour: amount(m.pricePerHour),
        listed: m.listed,
        rented,
        cpu_cores: m.specs.cpuCores,
        ram_mb: m.specs.ramMb,
        gpu_model: m.specs.gpuModel.clone(),
        gpu_count: m.specs.gpuCount,
        peer_id: peer_id_text(&m.specs.peerId),
        multiaddr: m.specs.multiaddr.clone(),
    }
}

/// Every machine on the marketplace (unlisted ones too; see `listed`), with whether it is
/// rented now.
pub async fn offers(chain: &chain::Client) -> Result<Vec<MachineOffer>, chain::Error> {
    let mut out = Vec::new();
    for (id, m) in chain.machines().await? {
        let Some(id) = small_id(id) else { continue };
        let rented = m.lastRentalId != U256::ZERO && chain.is_rental_active(m.lastRentalId).await?;
        out.push(offer_of(id, &m, rented));
    }
    Ok(out)
}

/// One rented machine of a cluster.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RentedMachine {
    /// Rental id.
    pub rental_id: u64,
    /// Machine id.
    pub machine_id: u64,
    /// Provider's chain address (0x-hex).
    pub provider: String,
    /// Its PeerId.
    pub peer_id: String,
    /// Its multiaddr.
    pub multiaddr: String,
    /// Price per hour, base units.
    #[serde(with = "u128_text")]
    pub price_per_hour: u128,
    /// Whether the rental runs now.
    pub active: bool,
}

/// What `quackmesh market rent` did.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClusterRented {
    /// The cluster.
    pub cluster_id: u64,
    /// Hours rented.
    pub hours: u64,
    /// Paid into escrow, base units.
    #[serde(with = "u128_text")]
    pub cost: u128,
    /// The transaction (0x-hex).
    pub tx_hash: String,
    /// The machines, in rental order.
    pub members: Vec<RentedMachine>,
}

/// Rents the `n` cheapest available machines matching `f` for `hours` as one cluster (one
/// `rentCluster` transaction, the payment approved first).
pub async fn rent(
    chain: &chain::Client,
    n: usize,
    hours: u64,
    f: &MachineFilter,
) -> Result<ClusterRented, MarketError> {
    if hours == 0 {
        return Err(MarketError::Invalid("rent for at least one hour".into()));
    }
    let all = offers(chain).await?;
    let picked = pick_cheapest(&all, f, n)?;
    let ids: Vec<U256> = picked.iter().map(|m| U256::from(m.machine_id)).collect();
    let sent = chain.rent_cluster(&ids, hours).await?;
    let (cluster_id, _rental_ids) = sent.value.clone();
    let cluster_id = small_id(cluster_id)
        .ok_or_else(|| MarketError::Invalid("cluster id does not fit 64 bits".into()))?;
    let members = cluster_members(chain, cluster_id).await?;
    let cost = picked
        .iter()
        .map(|m| m.price_per_hour.saturating_mul(u128::from(hours)))
        .fold(0u128, u128::saturating_add);
    Ok(ClusterRented {
        cluster_id,
        hours,
        cost,
        tx_hash: format!("{:#x}", sent.tx_hash()),
        members,
    })
}

/// A cluster's machines, read from the chain.
pub async fn cluster_members(
    chain: &chain::Client,
    cluster_id: u64,
) -> Result<Vec<RentedMachine>, chain::Error> {
    let members = chain.cluster_members(U256::from(cluster_id)).await?;
    let mut out = Vec::with_capacity(members.len());
    for m in members {
        let rental = chain.rental(m.rentalId).await?;
        out.push(RentedMachine {
            rental_id: small_id(m.rentalId).unwrap_or(u64::MAX),
            machine_id: small_id(m.machineId).unwrap_or(u64::MAX),
            provider: format!("{:#x}", m.provider),
            peer_id: peer_id_text(&m.peerId),
            multiaddr: m.multiaddr,
            price_per_hour: amount(rental.pricePerHour),
            active: m.active,
        });
    }
    Ok(out)
}

/// Every rental whose provider is `who` with something to withdraw now, scanning all rentals
/// (ids 1..=rentalCount).
pub async fn withdrawable_rentals(
    chain: &chain::Client,
    who: Address,
) -> Result<Vec<u64>, chain::Error> {
    let count = chain.rental_count().await?;
    let count = small_id(count).unwrap_or(u64::MAX);
    let mut out = Vec::new();
    for id in 1..=count {
        let r = chain.rental(U256::from(id)).await?;
        if r.provider == who && chain.withdrawable(U256::from(id)).await? > U256::ZERO {
            out.push(id);
        }
    }
    Ok(out)
}

/// `u128` amounts as decimal text in JSON (JavaScript numbers lose precision past 2^53).
pub mod u128_text {
    use serde::{Deserialize, Deserializer, Serializer, de::Error};

    /// Writes the decimal text.
    pub fn serialize<S: Serializer>(v: &u128, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&v.to_string())
    }

    /// Reads decimal text.
    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<u128, D::Error> {
        let text = String::deserialize(d)?;
        text.parse().map_err(D::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn m(id: u64, price: u128, cpus: u32, gpus: u32, listed: bool, rented: bool) -> MachineOffer {
        MachineOffer {
            machine_id: id,
            provider: "0x01".into(),
            price_per_hour: price,
            listed,
            rented,
            cpu_cores: cpus,
            ram_mb: 1024,
            gpu_model: if gpus > 0 {
                "H100".into()
            } else {
                String::new()
            },
            gpu_count: gpus,
            peer_id: String::new(),
            multiaddr: String::new(),
        }
    }

    fn ids(v: &[MachineOffer]) -> Vec<u64> {
        v.iter().map(|m| m.machine_id).collect()
    }

    fn market() -> Vec<MachineOffer> {
        vec![
            m(1, 30, 8, 0, true, false),
            m(2, 15, 4, 0, true, false),
            m(3, 20, 16, 0, true, false),
            m(4, 100, 64, 2, true, false),
            m(5, 1, 8, 0, true, true),   // rented
            m(6, 1, 8, 0, false, false), // unlisted
            m(7, 15, 2, 0, true, false), // same price as 2, higher id
        ]
    }

    #[test]
    fn filters_combine() {
        let all = market();
        let f = |min_cpus, gpu, max_price| MachineFilter {
            min_cpus,
            gpu,
            max_price,
        };
        let got = |x: MachineFilter, avail| {
            filter(&all, &x, avail)
                .iter()
                .map(|m| m.machine_id)
                .collect::<Vec<_>>()
        };
        assert_eq!(got(f(None, false, None), false), vec![1, 2, 3, 4, 5, 6, 7]);
        assert_eq!(got(f(None, false, None), true), vec![1, 2, 3, 4, 7]);
        assert_eq!(got(f(Some(16), false, None), true), vec![3, 4]);
        assert_eq!(got(f(None, true, None), true), vec![4]);
        assert_eq!(got(f(None, false, Some(20)), true), vec![2, 3, 7]);
        assert_eq!(got(f(Some(8), false, Some(20)), true), vec![3]);
    }

    #[test]
    fn cheapest_available_are_picked_ties_by_id() {
        let all = market();
        let picked = pick_cheapest(&all, &MachineFilter::default(), 2).unwrap();
        assert_eq!(ids(&picked), vec![2, 7]);
        let picked = pick_cheapest(&all, &MachineFilter::default(), 3).unwrap();
        assert_eq!(ids(&picked), vec![2, 7, 3]);
        let gpu = MachineFilter {
            gpu: true,
            ..MachineFilter::default()
        };
        assert_eq!(ids(&pick_cheapest(&all, &gpu, 1).unwrap()), vec![4]);
    }

    #[test]
    fn too_few_matches_is_an_error() {
        let all = market();
        let cheap = MachineFilter {
            max_price: Some(15),
            ..MachineFilter::default()
        };
        match pick_cheapest(&all, &cheap, 3) {
            Err(MarketError::NotEnoughMachines { wanted, available }) => {
                assert_eq!((wanted, available), (3, 2));
            }
            other => panic!("{other:?}"),
        }
        assert!(matches!(
            pick_cheapest(&all, &cheap, 0),
            Err(MarketError::Invalid(_))
        ));
    }

    #[test]
    fn amounts_are_text_in_json() {
        let o = m(1, u128::MAX, 1, 0, true, false);
        let v = serde_json::to_value(&o).unwrap();
        assert_eq!(v["price_per_hour"], u128::MAX.to_string());
        let back: MachineOffer = serde_json::from_value(v).unwrap();
        assert_eq!(back, o);
    }
}
