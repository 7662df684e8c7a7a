//! Cluster subnets, the pure part: who may speak on `quackmesh/1/cluster/<clusterId>`.
//!
//! A cluster's members at chain time `now` are
//! - the PeerIds listed on ComputeMarketplace for the machines of its rentals that run at `now`
//!   (not ended early, before their end),
//! - the renter's node, and
//! - the coordinators (current term holders) of the unfinished training jobs naming the cluster,
//!
//! the last two only while at least one rental runs, and only once their chain address maps to
//! a PeerId. That map comes from the driver ([`super::subnet`]): coordinators from the
//! TrainingPool registry (the PeerId each registered with, which their heartbeats are checked
//! against), the renter from a [`RenterClaim`](super::wire::RenterClaim) that its node gossips,
//! signed with the renter's chain key over the PeerId that sends it ([`claim_message`]).
//!
//! Nothing here reads a clock, the chain or the network: the driver passes the facts it read
//! and the chain time.

use std::collections::{BTreeSet, HashMap};

use super::wire::EthAddress;

/// A PeerId as bytes (its multihash encoding).
pub type PeerBytes = Vec<u8>;

/// One rental of a cluster, as the chain records it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClusterRental {
    /// Rental id.
    pub rental_id: u64,
    /// The rented machine's PeerId (from its listing).
    pub peer_id: PeerBytes,
    /// Scheduled end, unix seconds (chain time).
    pub end: u64,
    /// When the renter ended it early, if it did.
    pub ended_at: Option<u64>,
    /// The machine's listed multiaddr (where to dial it).
    pub multiaddr: String,
}

impl ClusterRental {
    /// Whether the rental runs at chain time `now`.
    pub fn is_active(&self, now: u64) -> bool {
        self.ended_at.is_none() && now < self.end
    }
}

/// What the chain says about one cluster.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClusterFacts {
    /// The cluster id.
    pub cluster_id: u64,
    /// Who rented it.
    pub renter: EthAddress,
    /// Its rentals.
    pub rentals: Vec<ClusterRental>,
}

impl ClusterFacts {
    /// Applies a `RentalEnded` event; `true` when the rental is one of this cluster's.
    pub fn rental_ended(&mut self, rental_id: u64, ended_at: u64) -> bool {
        match self.rentals.iter_mut().find(|r| r.rental_id == rental_id) {
            Some(r) => {
                r.ended_at = Some(ended_at);
                true
            }
            None => false,
        }
    }

    /// Whether any rental runs at `now`.
    pub fn is_active(&self, now: u64) -> bool {
        self.rentals.iter().any(|r| r.is_active(now))
    }

    /// The cluster's members at chain time `now`: the running rentals' machines, and, while
    /// one runs, the renter and the coordinators in `holders` whose PeerId `peer_of` knows.
    pub fn members(
        &self,
        now: u64,
        holders: &[EthAddress],
        peer_of: &HashMap<EthAddress, PeerBytes>,
    ) -> BTreeSet<PeerBytes> {
        let mut out: BTreeSet<PeerBytes> = self
            .rentals
            .iter()
            .filter(|r| r.is_active(now))
            .map(|r| r.peer_id.clone())
            .collect();
        if out.is_empty() {
            return out;
        }
        let people = std::iter::once(&self.renter).chain(holders);
        out.extend(people.filter_map(|a| peer_of.get(a).cloned()));
        out
    }
}

/// The bytes a renter's chain key signs (EIP-191) to bind `peer_id` as its node for
/// `cluster_id` on chain `chain_id`.
pub fn claim_message(chain_id: u64, cluster_id: u64, peer_id: &[u8]) -> Vec<u8> {
    let mut m = format!("quackmesh/1 cluster renter chain {chain_id} cluster {cluster_id} peer ")
        .into_bytes();
    m.extend_from_slice(hex_lower(peer_id).as_bytes());
    m
}

fn hex_lower(bytes: &[u8]) -> String {
    use std::fmt::Write;
    bytes.iter().fold(String::new(), |mut s, b| {
        let _ = write!(s, "{b:02x}");
        s
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const RENTER: EthAddress = [5; 20];
    const COORD_A: EthAddress = [7; 20];
    const COORD_B: EthAddress = [8; 20];

    fn peer(n: u8) -> PeerBytes {
        vec![n; 4]
    }

    fn facts() -> ClusterFacts {
        ClusterFacts {
            cluster_id: 1,
            renter: RENTER,
            rentals: vec![
                ClusterRental {
                    rental_id: 10,
                    peer_id: peer(2),
                    end: 1_000,
                    ended_at: None,
                    multiaddr: String::new(),
                },
                ClusterRental {
                    rental_id: 11,
                    peer_id: peer(3),
                    end: 2_000,
                    ended_at: None,
                    multiaddr: String::new(),
                },
            ],
        }
    }

    fn map() -> HashMap<EthAddress, PeerBytes> {
        HashMap::from([(RENTER, peer(5)), (COORD_A, peer(7)), (COORD_B, peer(8))])
    }

    fn set(ps: &[u8]) -> BTreeSet<PeerBytes> {
        ps.iter().map(|n| peer(*n)).collect()
    }

    #[test]
    fn members_running_rentals_renter_and_holder() {
        assert_eq!(facts().members(500, &[COORD_A], &map()), set(&[2, 3, 5, 7]));
    }

    #[test]
    fn members_unknown_peers_left_out() {
        let only_renter = HashMap::from([(RENTER, peer(5))]);
        assert_eq!(
            facts().members(500, &[COORD_A], &only_renter),
            set(&[2, 3, 5])
        );
        assert_eq!(
            facts().members(500, &[COORD_A], &HashMap::new()),
            set(&[2, 3])
        );
    }

    #[test]
    fn members_rental_ended_removed() {
        let mut f = facts();
        assert!(f.rental_ended(11, 600));
        assert!(!f.rental_ended(99, 600));
        assert_eq!(f.members(700, &[], &map()), set(&[2, 5]));
    }

    #[test]
    fn members_expired_by_chain_time_removed() {
        let f = facts();
        assert_eq!(f.members(999, &[], &map()), set(&[2, 3, 5]));
        assert_eq!(f.members(1_000, &[], &map()), set(&[3, 5]));
        // All rentals over: nobody, not even the renter or the coordinator.
        assert_eq!(f.members(2_000, &[COORD_A], &map()), set(&[]));
        assert!(!f.is_active(2_000));
        assert!(f.is_active(1_999));
    }

    #[test]
    fn members_coordinator_change_follows_holder() {
        let f = facts();
        assert_eq!(f.members(500, &[COORD_A], &map()), set(&[2, 3, 5, 7]));
        assert_eq!(f.members(500, &[COORD_B], &map()), set(&[2, 3, 5, 8]));
    }

    #[test]
    fn claim_message_names_chain_cluster_and_peer() {
        let m = claim_message(31337, 4, &[0xab, 0x01]);
        assert_eq!(
            m,
            b"quackmesh/1 cluster renter chain 31337 cluster 4 peer ab01".to_vec()
        );
        assert_ne!(m, claim_message(31337, 5, &[0xab, 0x01]));
    }
}
