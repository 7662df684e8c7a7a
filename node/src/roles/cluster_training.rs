//! Cluster training in the actor: the coordinator of a job that names a cluster and a training
//! set plans the shards ([`ShardPlan`]) for every round head it publishes, from the cluster's
//! rentals (read by [`super::subnet`]) and which rented machines are live here. A machine is
//! live until its connection to this node drops; this node then dials its listed address every
//! [`REDIAL_MS`] and counts it live again once it answers. So a machine that dies mid-round
//! has its shards moved to the others in the next head, and one that returns gets them back.

use std::collections::BTreeSet;

use libp2p::{Multiaddr, PeerId, multiaddr::Protocol};

use crate::roles::{
    runtime::{Runtime, now_ms},
    shards::ShardPlan,
};

/// How often a departed machine is dialled again.
pub const REDIAL_MS: u64 = 3_000;

impl Runtime {
    /// The shard plan of a cluster-training job, or `None` for other jobs.
    pub(crate) fn shard_plan(&mut self, job_id: u64) -> Option<ShardPlan> {
        let cluster_id = self.jobs.get(&job_id)?.cluster_id;
        if cluster_id == 0 || self.assets(job_id)?.spec.dataset.is_none() {
            return None;
        }
        let (homes, running) = self.cluster_machines(cluster_id)?;
        let mut live = BTreeSet::new();
        let now = now_ms();
        for (peer_bytes, addr) in running {
            let Ok(peer) = PeerId::from_bytes(&peer_bytes) else {
                continue;
            };
            if !self.gone.contains(&peer) {
                live.insert(peer_bytes);
                continue;
            }
            let due = self
                .redial_ms
                .get(&peer)
                .is_none_or(|at| now.saturating_sub(*at) >= REDIAL_MS);
            if let (true, Ok(addr)) = (due, addr.parse::<Multiaddr>()) {
                self.redial_ms.insert(peer, now);
                let addr = addr.with(Protocol::P2p(peer));
                let mesh = self.ctx.mesh.clone();
                tokio::spawn(async move {
                    if let Err(e) = mesh.dial(addr).await {
                        tracing::debug!(target: "roles::cluster", peer_id = %peer, error = %e, "departed machine still unreachable");
                    }
                });
            }
        }
        Some(ShardPlan::new(&homes, &live))
    }

    /// A peer's first connection came up.
    pub(crate) fn on_peer_connected(&mut self, peer: PeerId) {
        if self.gone.remove(&peer) {
            tracing::info!(target: "roles::cluster", peer_id = %peer, "machine back");
        }
        self.redial_ms.remove(&peer);
    }

    /// A peer's last connection closed: it counts as departed until it is reached again.
    pub(crate) fn on_peer_disconnected(&mut self, peer: PeerId) {
        // Only the machines of running clusters matter; the set stays small.
        if self.gone.len() < 4_096 {
            self.gone.insert(peer);
        }
    }
}
