//! Cluster subnets in the actor: follows the clusters the chain watcher reports
//! (`ClusterFormed`, `MachineRented`, `RentalEnded`), reads each cluster's rentals and the
//! chain time ([`load_cluster`]), computes the members with [`ClusterFacts::members`], and, when
//! this node is one of them, subscribes to `quackmesh/1/cluster/<clusterId>` and hands the
//! member list to the mesh ([`Client::set_topic_members`]), which then rejects gossip authored
//! or relayed by anyone else and refuses to publish for a node that left. Blobs shared with a
//! cluster (the training set of a cluster-training job, or one shared through the API) get
//! the same list as their access list ([`Client::set_blob_access`]). Clusters are read again
//! every [`CLUSTER_REFRESH_MS`] by their members while they run, so a rental that expires by chain
//! time drops out.
//!
//! The renter's PeerId: the chain records only its address. Its own node knows both, so it
//! adds itself, and gossips a [`RenterClaim`] (its chain key's signature over the PeerId that
//! sends the claim) every [`CLAIM_EVERY_MS`] on `quackmesh/1/coordinators`, a topic every node
//! follows. Members check the signature against the gossip source and the cluster's renter on
//! chain before they admit that PeerId; a claim that fails is rejected. Coordinators' PeerIds
//! come from the TrainingPool registry (what their heartbeats are checked against).
//!
//! Mesh commands go through one bounded queue served by one task ([`apply_ops`]), in order, so
//! a later member list never lands before an earlier one.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet, VecDeque};

use alloy::{
    primitives::{Signature, U256},
    signers::SignerSync,
};
use libp2p::PeerId;
use serde::{Deserialize, Serialize};
use tokio::sync::{mpsc, oneshot};

use crate::{
    chain::{self, ChainEvent, WatchedEvent},
    mesh::{Client, Verdict, blob::BlobId, message::GossipBody, topics::Topic},
    roles::{
        cluster::{ClusterFacts, ClusterRental, PeerBytes, claim_message},
        jobs::{JobStatus, small_id},
        runtime::{Done, Runtime, now_ms},
        wire::{EthAddress, RenterClaim},
    },
};

/// How often a running cluster is read again from the chain (expiry by chain time).
pub const CLUSTER_REFRESH_MS: u64 = 5_000;
/// How often a renter's node gossips its claim.
pub const CLAIM_EVERY_MS: u64 = 2_000;
/// Capacity of the queue of mesh commands.
const OPS_CAPACITY: usize = 256;
/// Notes kept per cluster for the API.
const MAX_NOTES: usize = 64;
/// Most clusters followed.
const MAX_CLUSTERS: usize = 4_096;
/// Most blobs shared with one cluster.
const MAX_CLUSTER_BLOBS: usize = 1_024;

/// A mesh command of the subnets, applied in order by [`apply_ops`].
#[derive(Debug)]
pub(crate) enum MeshOp {
    Members(Topic, HashSet<PeerId>),
    Subscribe(Topic),
    Unsubscribe(Topic),
    BlobAccess(BlobId, HashSet<PeerId>),
    /// Answered once every earlier command is applied.
    Ack(oneshot::Sender<bool>),
}

/// Applies the subnets' mesh commands in order until the queue closes.
pub(crate) async fn apply_ops(mesh: Client, mut ops: mpsc::Receiver<MeshOp>) {
    while let Some(op) = ops.recv().await {
        let r = match op {
            MeshOp::Members(topic, peers) => mesh.set_topic_members(&topic, Some(peers)).await,
            MeshOp::Subscribe(topic) => mesh.subscribe(&topic).await.map(drop),
            MeshOp::Unsubscribe(topic) => mesh.unsubscribe(&topic).await.map(drop),
            MeshOp::BlobAccess(blob, peers) => mesh.set_blob_access(blob, Some(peers)).await,
            MeshOp::Ack(reply) => {
                let _ = reply.send(true);
                Ok(())
            }
        };
        if let Err(e) = r {
            tracing::warn!(target: "roles::cluster", error = %e, "cannot apply cluster subnet change");
        }
    }
}

/// The queue of [`MeshOp`]s and its serving task.
pub(crate) fn ops_channel() -> (mpsc::Sender<MeshOp>, mpsc::Receiver<MeshOp>) {
    mpsc::channel(OPS_CAPACITY)
}

/// A cluster's machines: every rental's PeerId in chain order, and the running ones with
/// their listed multiaddr.
pub(crate) type ClusterMachines = (Vec<PeerBytes>, Vec<(PeerBytes, String)>);

/// A note seen on a cluster topic.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClusterNote {
    /// Its author (PeerId).
    pub from: String,
    /// The text.
    pub text: String,
}

/// This node's view of a cluster subnet (`GET /api/clusters/{id}/mesh`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClusterMeshView {
    /// The cluster.
    pub cluster_id: u64,
    /// Whether this node is a member (and subscribed).
    pub member: bool,
    /// The chain time the members were computed at.
    pub chain_time: u64,
    /// The members (PeerIds) the mesh enforces here; empty when this node never was one.
    pub members: Vec<String>,
    /// Notes received on the cluster topic, oldest first.
    pub notes: Vec<ClusterNote>,
}

/// One followed cluster.
#[derive(Debug, Default)]
pub(crate) struct ClusterEntry {
    facts: Option<ClusterFacts>,
    chain_now: u64,
    loading: bool,
    loaded_ms: u64,
    stale: bool,
    /// This node is or was a member: the mesh enforces the list.
    enforcing: bool,
    /// The list last handed to the mesh.
    pushed: Option<BTreeSet<PeerBytes>>,
    member: bool,
    blobs: BTreeSet<BlobId>,
    notes: VecDeque<ClusterNote>,
}

/// The clusters this node follows.
#[derive(Debug)]
pub(crate) struct Clusters {
    entries: BTreeMap<u64, ClusterEntry>,
    /// Renter address -> PeerId, from verified claims.
    renters: HashMap<EthAddress, PeerBytes>,
    last_claim_ms: u64,
    ops: mpsc::Sender<MeshOp>,
}

impl Clusters {
    pub(crate) fn new(ops: mpsc::Sender<MeshOp>) -> Self {
        Self {
            entries: BTreeMap::new(),
            renters: HashMap::new(),
            last_claim_ms: 0,
            ops,
        }
    }
}

/// Completions of the subnets' chain reads.
#[derive(Debug)]
pub(crate) enum SubnetDone {
    /// A cluster's facts and the chain time.
    Loaded(u64, Result<(ClusterFacts, u64), String>),
}

impl Runtime {
    /// Marketplace events that concern clusters.
    pub(crate) fn cluster_on_event(&mut self, ev: &WatchedEvent) {
        match &ev.event {
            ChainEvent::ClusterFormed(e) => {
                if let Some(id) = small_id(e.clusterId) {
                    self.cluster_seen(id);
                }
            }
            ChainEvent::MachineRented(e) => {
                if let Some(id) = small_id(e.clusterId).filter(|id| *id != 0) {
                    self.cluster_seen(id);
                }
            }
            ChainEvent::RentalEnded(e) => {
                let Some(rental_id) = small_id(e.rentalId) else {
                    return;
                };
                let mut hit = Vec::new();
                for (id, entry) in &mut self.clusters.entries {
                    if let Some(f) = entry.facts.as_mut()
                        && f.rental_ended(rental_id, e.endedAt)
                    {
                        entry.stale = true;
                        hit.push(*id);
                    }
                }
                for id in hit {
                    self.cluster_recompute(id);
                }
            }
            _ => {}
        }
    }

    /// A cluster was named on chain: follow it (read it again if followed).
    fn cluster_seen(&mut self, cluster_id: u64) {
        if cluster_id == 0 {
            return;
        }
        if !self.clusters.entries.contains_key(&cluster_id)
            && self.clusters.entries.len() >= MAX_CLUSTERS
        {
            tracing::warn!(target: "roles::cluster", cluster_id, "too many clusters followed; ignored");
            return;
        }
        self.clusters.entries.entry(cluster_id).or_default().stale = true;
        self.cluster_load(cluster_id);
    }

    fn cluster_load(&mut self, cluster_id: u64) {
        let Some(entry) = self.clusters.entries.get_mut(&cluster_id) else {
            return;
        };
        if entry.loading {
            return;
        }
        entry.loading = true;
        entry.stale = false;
        let chain = self.ctx.chain.clone();
        let done = self.done_tx.clone();
        tokio::spawn(async move {
            let r = load_cluster(&chain, cluster_id).await;
            let _ = done
                .send(Done::Subnet(SubnetDone::Loaded(cluster_id, r)))
                .await;
        });
    }

    pub(crate) fn on_subnet_done(&mut self, done: SubnetDone) {
        match done {
            SubnetDone::Loaded(cluster_id, r) => {
                let Some(entry) = self.clusters.entries.get_mut(&cluster_id) else {
                    return;
                };
                entry.loading = false;
                entry.loaded_ms = now_ms();
                match r {
                    Ok((facts, now)) => {
                        entry.facts = Some(facts);
                        entry.chain_now = now;
                        self.cluster_recompute(cluster_id);
                    }
                    Err(e) => {
                        tracing::warn!(target: "roles::cluster", cluster_id, error = %e, "cannot read cluster; will retry");
                        entry.stale = true;
                    }
                }
            }
        }
    }

    /// Reads running (or changed) clusters again and gossips this node's renter claims.
    pub(crate) fn cluster_tick(&mut self, now: u64) {
        let due: Vec<u64> = self
            .clusters
            .entries
            .iter()
            .filter(|(_, e)| !e.loading)
            .filter(|(_, e)| {
                // Members follow expiry by chain time; others read a cluster again only when
                // the watcher reports a change.
                let running = e.facts.as_ref().is_some_and(|f| f.is_active(e.chain_now));
                let old = now.saturating_sub(e.loaded_ms) >= CLUSTER_REFRESH_MS;
                old && (e.stale || (running && e.enforcing))
            })
            .map(|(id, _)| *id)
            .collect();
        for id in due {
            self.cluster_load(id);
        }
        if now.saturating_sub(self.clusters.last_claim_ms) >= CLAIM_EVERY_MS {
            self.clusters.last_claim_ms = now;
            self.publish_renter_claims(now);
        }
    }

    fn publish_renter_claims(&self, now: u64) {
        let me = self.ctx.eth().into_array();
        let chain_id = self.ctx.chain.deployment().chain_id;
        let peer = self.ctx.peer().to_bytes();
        for (id, entry) in &self.clusters.entries {
            let Some(f) = entry.facts.as_ref() else {
                continue;
            };
            if f.renter != me || !f.is_active(entry.chain_now) {
                continue;
            }
            let body = match sign_claim(&self.ctx.signer, me, chain_id, *id, &peer, now) {
                Ok(c) => GossipBody::RenterClaim(c),
                Err(e) => {
                    tracing::warn!(target: "roles::cluster", cluster_id = id, error = %e, "cannot sign renter claim");
                    continue;
                }
            };
            let mesh = self.ctx.mesh.clone();
            let cluster_id = *id;
            tokio::spawn(async move {
                if let Err(e) = mesh.publish(&Topic::Coordinators, &body).await {
                    tracing::debug!(target: "roles::cluster", cluster_id, error = %e, "cannot gossip renter claim");
                }
            });
        }
    }

    /// Judges a renter's claim; a valid one binds its address to the sender's PeerId.
    pub(crate) fn on_renter_claim(&mut self, source: PeerId, c: &RenterClaim) -> Verdict {
        if c.chain_id != self.ctx.chain.deployment().chain_id {
            return Verdict::Ignore;
        }
        if claim_signer(c, &source.to_bytes()) != Some(c.eth) {
            tracing::warn!(target: "roles::cluster", peer_id = %source, cluster_id = c.cluster_id, "renter claim with a bad signature rejected");
            return Verdict::Reject;
        }
        let Some(facts) = self
            .clusters
            .entries
            .get(&c.cluster_id)
            .and_then(|e| e.facts.as_ref())
        else {
            // Not (yet) known here: our watcher will tell.
            return Verdict::Ignore;
        };
        if facts.renter != c.eth {
            tracing::warn!(target: "roles::cluster", peer_id = %source, cluster_id = c.cluster_id, "claim by an address that did not rent the cluster rejected");
            return Verdict::Reject;
        }
        let peer = source.to_bytes();
        if self.clusters.renters.get(&c.eth) != Some(&peer) {
            tracing::info!(target: "roles::cluster", peer_id = %source, cluster_id = c.cluster_id, "renter's node known");
            self.clusters.renters.insert(c.eth, peer);
            let ids: Vec<u64> = self
                .clusters
                .entries
                .iter()
                .filter(|(_, e)| e.facts.as_ref().is_some_and(|f| f.renter == c.eth))
                .map(|(id, _)| *id)
                .collect();
            for id in ids {
                self.cluster_recompute(id);
            }
        }
        Verdict::Accept
    }

    /// A note on a cluster topic (only members' reach the roles: the mesh rejects the rest).
    pub(crate) fn on_cluster_note(&mut self, cluster_id: &str, source: PeerId, text: String) {
        let Some(entry) = cluster_id
            .parse::<u64>()
            .ok()
            .and_then(|id| self.clusters.entries.get_mut(&id))
        else {
            return;
        };
        if entry.notes.len() >= MAX_NOTES {
            entry.notes.pop_front();
        }
        entry.notes.push_back(ClusterNote {
            from: source.to_string(),
            text,
        });
    }

    /// Recomputes every followed cluster (a job's holder or a coordinator changed).
    pub(crate) fn cluster_recompute_all(&mut self) {
        let ids: Vec<u64> = self.clusters.entries.keys().copied().collect();
        for id in ids {
            self.cluster_recompute(id);
        }
    }

    /// Shares `blob` with the members of `cluster_id` (it becomes private to them here);
    /// `reply` answers `true` once the access list is applied, `false` when this node is not a
    /// member (or the cluster holds too many blobs).
    pub(crate) fn cluster_share_blob(
        &mut self,
        cluster_id: u64,
        blob: BlobId,
        reply: oneshot::Sender<bool>,
    ) {
        let Some(entry) = self.clusters.entries.get_mut(&cluster_id) else {
            let _ = reply.send(false);
            return;
        };
        if !entry.member || (entry.blobs.len() >= MAX_CLUSTER_BLOBS && !entry.blobs.contains(&blob))
        {
            let _ = reply.send(false);
            return;
        }
        entry.blobs.insert(blob);
        entry.pushed = None;
        self.cluster_recompute(cluster_id);
        let applied = self
            .clusters
            .entries
            .get(&cluster_id)
            .is_some_and(|e| e.pushed.is_some());
        if !applied {
            let _ = reply.send(false);
            return;
        }
        if let Err(e) = self.clusters.ops.try_send(MeshOp::Ack(reply))
            && let mpsc::error::TrySendError::Full(MeshOp::Ack(reply))
            | mpsc::error::TrySendError::Closed(MeshOp::Ack(reply)) = e
        {
            let _ = reply.send(false);
        }
    }

    /// Whether this node is a member of `cluster_id` now.
    pub(crate) fn cluster_is_member(&self, cluster_id: u64) -> bool {
        self.clusters
            .entries
            .get(&cluster_id)
            .is_some_and(|e| e.member)
    }

    /// Whether `peer` is on this member's list of `cluster_id` (`false` when this node keeps
    /// no list: it is not a member, or has not read the cluster yet).
    pub(crate) fn cluster_admits(&self, cluster_id: u64, peer: &PeerId) -> bool {
        self.clusters
            .entries
            .get(&cluster_id)
            .and_then(|e| e.pushed.as_ref())
            .is_some_and(|m| m.contains(&peer.to_bytes()))
    }

    /// A cluster's rented machines as last read: every rental's machine in chain order (the
    /// shards' homes), and those whose rental runs now with their listed multiaddr.
    pub(crate) fn cluster_machines(&self, cluster_id: u64) -> Option<ClusterMachines> {
        let e = self.clusters.entries.get(&cluster_id)?;
        let f = e.facts.as_ref()?;
        let homes = f.rentals.iter().map(|r| r.peer_id.clone()).collect();
        let running = f
            .rentals
            .iter()
            .filter(|r| r.is_active(e.chain_now))
            .map(|r| (r.peer_id.clone(), r.multiaddr.clone()))
            .collect();
        Some((homes, running))
    }

    /// This node's view of a cluster subnet.
    pub(crate) fn cluster_view(&self, cluster_id: u64) -> Option<ClusterMeshView> {
        let e = self.clusters.entries.get(&cluster_id)?;
        let members = e
            .pushed
            .iter()
            .flatten()
            .filter_map(|p| PeerId::from_bytes(p).ok())
            .map(|p| p.to_string())
            .collect();
        Some(ClusterMeshView {
            cluster_id,
            member: e.member,
            chain_time: e.chain_now,
            members,
            notes: e.notes.iter().cloned().collect(),
        })
    }

    /// Computes a cluster's members and, where this node is or was one, updates the mesh.
    fn cluster_recompute(&mut self, cluster_id: u64) {
        let me_peer = self.ctx.peer().to_bytes();
        let me_eth = self.ctx.eth().into_array();
        let mut holders = Vec::new();
        let mut job_blobs = Vec::new();
        for j in self.jobs.values() {
            if j.cluster_id == cluster_id && j.status != JobStatus::Finished {
                if j.holder != [0; 20] {
                    holders.push(j.holder);
                }
                // A cluster-training job's training set is the cluster's only. Its spec and
                // validation set stay public: coordinator-eligible nodes need them before one
                // of them holds the term (and so becomes a member).
                if let Some(set) = self.assets(j.job_id).and_then(|a| a.spec.dataset) {
                    job_blobs.push(set);
                }
            }
        }
        let Some(entry) = self.clusters.entries.get_mut(&cluster_id) else {
            return;
        };
        let Some(facts) = entry.facts.as_ref() else {
            return;
        };
        let mut peer_of: HashMap<EthAddress, PeerBytes> = HashMap::new();
        for h in &holders {
            if let Some(p) = self.coordinators.get(&alloy::primitives::Address::from(*h)) {
                peer_of.insert(*h, p.to_bytes());
            }
        }
        if let Some(p) = self.clusters.renters.get(&facts.renter) {
            peer_of.insert(facts.renter, p.clone());
        }
        if facts.renter == me_eth {
            peer_of.insert(me_eth, me_peer.clone());
        }
        let members = facts.members(entry.chain_now, &holders, &peer_of);
        let is_member = members.contains(&me_peer);
        entry.blobs.extend(job_blobs);
        if !(is_member || entry.enforcing) {
            return;
        }
        let Ok(topic) = Topic::cluster(cluster_id) else {
            return;
        };
        let mut ops = Vec::new();
        if entry.pushed.as_ref() != Some(&members) {
            let peers: HashSet<PeerId> = members
                .iter()
                .filter_map(|p| PeerId::from_bytes(p).ok())
                .collect();
            tracing::info!(target: "roles::cluster", cluster_id, members = peers.len(), member = is_member, "cluster members updated");
            ops.push(MeshOp::Members(topic.clone(), peers.clone()));
            ops.extend(
                entry
                    .blobs
                    .iter()
                    .map(|b| MeshOp::BlobAccess(*b, peers.clone())),
            );
        }
        if is_member && !entry.member {
            tracing::info!(target: "roles::cluster", cluster_id, "joined cluster subnet");
            ops.push(MeshOp::Subscribe(topic.clone()));
        } else if !is_member && entry.member {
            tracing::info!(target: "roles::cluster", cluster_id, "left cluster subnet");
            ops.push(MeshOp::Unsubscribe(topic));
        }
        let was_member = entry.member;
        entry.enforcing = true;
        entry.member = is_member;
        entry.pushed = Some(members);
        for op in ops {
            if self.clusters.ops.try_send(op).is_err() {
                tracing::warn!(target: "roles::cluster", cluster_id, "cluster subnet queue full; will redo");
                entry.pushed = None;
                entry.member = was_member;
                entry.stale = true;
                break;
            }
        }
    }
}

/// The address whose key signed `c` for the sending PeerId `source` (`None`: malformed).
pub(crate) fn claim_signer(c: &RenterClaim, source: &[u8]) -> Option<EthAddress> {
    let msg = claim_message(c.chain_id, c.cluster_id, source);
    Signature::try_from(c.signature.as_slice())
        .ok()
        .and_then(|s| s.recover_address_from_msg(&msg).ok())
        .map(|a| a.into_array())
}

/// Signs a renter claim for `cluster_id` sent by `peer`.
pub(crate) fn sign_claim(
    signer: &impl SignerSync,
    eth: EthAddress,
    chain_id: u64,
    cluster_id: u64,
    peer: &[u8],
    sent_ms: u64,
) -> Result<RenterClaim, alloy::signers::Error> {
    let signature = signer
        .sign_message_sync(&claim_message(chain_id, cluster_id, peer))?
        .as_bytes()
        .to_vec();
    Ok(RenterClaim {
        chain_id,
        cluster_id,
        eth,
        signature,
        sent_ms,
    })
}

/// Reads a cluster's renter and rentals (with their machines' PeerIds) and the chain time.
pub(crate) async fn load_cluster(
    chain: &chain::Client,
    cluster_id: u64,
) -> Result<(ClusterFacts, u64), String> {
    let id = U256::from(cluster_id);
    let renter = chain.cluster_renter(id).await.map_err(|e| e.to_string())?;
    if renter.is_zero() {
        return Err(format!("no cluster {cluster_id} on chain"));
    }
    let members = chain.cluster_members(id).await.map_err(|e| e.to_string())?;
    let mut rentals = Vec::with_capacity(members.len());
    for m in members {
        let r = chain.rental(m.rentalId).await.map_err(|e| e.to_string())?;
        rentals.push(ClusterRental {
            rental_id: small_id(m.rentalId).unwrap_or(u64::MAX),
            peer_id: m.peerId.to_vec(),
            end: r.end,
            ended_at: (r.endedAt != 0).then_some(r.endedAt),
            multiaddr: m.multiaddr,
        });
    }
    let now = chain.block_timestamp().await.map_err(|e| e.to_string())?;
    Ok((
        ClusterFacts {
            cluster_id,
            renter: renter.into_array(),
            rentals,
        },
        now,
    ))
}

#[cfg(test)]
mod tests {
    use alloy::signers::local::PrivateKeySigner;

    use super::*;

    #[test]
    fn claim_signer_binds_address_to_sending_peer() {
        let key = PrivateKeySigner::random();
        let eth = key.address().into_array();
        let c = sign_claim(&key, eth, 31337, 4, b"peer-a", 1).unwrap();
        assert_eq!(claim_signer(&c, b"peer-a"), Some(eth));
        // Relayed under another PeerId, or for another cluster: not the renter's.
        assert_ne!(claim_signer(&c, b"peer-b"), Some(eth));
        let other_cluster = RenterClaim {
            cluster_id: 5,
            ..c.clone()
        };
        assert_ne!(claim_signer(&other_cluster, b"peer-a"), Some(eth));
        let garbage = RenterClaim {
            signature: vec![0; 65],
            ..c
        };
        assert_ne!(claim_signer(&garbage, b"peer-a"), Some(eth));
    }
}
