//! Known peers, persisted (`mesh.peers`) so that a restarted node redials the peers it knew
//! even when its bootstrap peers are gone. Bounded: the least recently seen are forgotten.

use std::time::{SystemTime, UNIX_EPOCH};

use libp2p::{Multiaddr, PeerId, multiaddr::Protocol};
use serde::{Deserialize, Serialize};

use crate::store::{Db, StoreError, Tree};

const PEERS: Tree<KnownPeer> = Tree::new("mesh.peers");

/// Most peers remembered.
pub const MAX_KNOWN_PEERS: usize = 512;
/// Most addresses remembered per peer.
pub const MAX_ADDRS_PER_PEER: usize = 8;

/// A peer we have talked to.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct KnownPeer {
    /// Where it listens.
    pub addrs: Vec<Multiaddr>,
    /// When we last heard from it (Unix seconds).
    pub last_seen_unix: u64,
}

/// Whether an address is worth remembering and advertising to Kademlia: not unspecified
/// (`0.0.0.0`), not a memory or circuit address.
pub fn is_dialable(addr: &Multiaddr) -> bool {
    addr.iter().all(|p| match p {
        Protocol::Ip4(ip) => !ip.is_unspecified(),
        Protocol::Ip6(ip) => !ip.is_unspecified(),
        Protocol::Memory(_) | Protocol::P2pCircuit => false,
        _ => true,
    })
}

/// Records `peer` at `addrs` (dialable ones only), evicting the stalest entry beyond the cap.
pub fn remember(db: &Db, peer: &PeerId, addrs: &[Multiaddr]) -> Result<(), StoreError> {
    let mut addrs: Vec<Multiaddr> = addrs.iter().filter(|a| is_dialable(a)).cloned().collect();
    addrs.truncate(MAX_ADDRS_PER_PEER);
    if addrs.is_empty() {
        return Ok(());
    }
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    let key = peer.to_bytes();
    let evict = if db.contains(PEERS, &key)? || db.len(PEERS)? < MAX_KNOWN_PEERS as u64 {
        None
    } else {
        db.scan(PEERS, b"")?
            .into_iter()
            .min_by_key(|(_, p)| p.last_seen_unix)
            .map(|(k, _)| k)
    };
    db.write(|b| {
        if let Some(k) = &evict {
            b.remove(PEERS, k)?;
        }
        b.put(
            PEERS,
            &key,
            &KnownPeer {
                addrs,
                last_seen_unix: now,
            },
        )
    })
}

/// Every remembered peer (entries that fail to decode are skipped).
pub fn load(db: &Db) -> Result<Vec<(PeerId, KnownPeer)>, StoreError> {
    Ok(db
        .scan(PEERS, b"")?
        .into_iter()
        .filter_map(|(k, v)| PeerId::from_bytes(&k).ok().map(|p| (p, v)))
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn remembered_peers_survive_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let peer = PeerId::random();
        let addr: Multiaddr = "/ip4/127.0.0.1/tcp/4001".parse().unwrap();
        let wild: Multiaddr = "/ip4/0.0.0.0/tcp/4001".parse().unwrap();
        {
            let db = Db::open_dir(dir.path()).unwrap();
            remember(&db, &peer, &[addr.clone(), wild]).unwrap();
        }
        let db = Db::open_dir(dir.path()).unwrap();
        let peers = load(&db).unwrap();
        assert_eq!(peers.len(), 1);
        assert_eq!(peers[0].0, peer);
        assert_eq!(peers[0].1.addrs, vec![addr]);
    }

    #[test]
    fn undialable_addresses_are_not_kept() {
        assert!(is_dialable(&"/ip4/10.0.0.1/udp/9/quic-v1".parse().unwrap()));
        assert!(!is_dialable(&"/ip4/0.0.0.0/tcp/1".parse().unwrap()));
        assert!(!is_dialable(&"/memory/5".parse().unwrap()));
        let dir = tempfile::tempdir().unwrap();
        let db = Db::open_dir(dir.path()).unwrap();
        remember(
            &db,
            &PeerId::random(),
            &["/ip4/0.0.0.0/tcp/1".parse().unwrap()],
        )
        .unwrap();
        assert!(load(&db).unwrap().is_empty());
    }
}
