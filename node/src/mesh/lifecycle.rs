//! Peer connect and disconnect events the node runtime must not miss. Other events may be
//! dropped when the runtime's channel is full (gossip is then ignored, a request answered
//! busy), but a lost `PeerDisconnected` would leave a departed machine counted live for good,
//! and a lost `PeerConnected` would keep a returned one counted gone. So these wait here, in
//! order, until the channel has room. Only a peer's latest state matters, so a newer event
//! replaces an older one of the same peer: the backlog holds at most one entry per peer.

use std::collections::VecDeque;

use libp2p::PeerId;

use crate::mesh::Event;

/// Connect and disconnect events not yet handed to the runtime, oldest first.
#[derive(Debug, Default)]
pub(crate) struct Backlog {
    queue: VecDeque<(PeerId, bool)>,
}

impl Backlog {
    /// Whether nothing waits.
    pub(crate) fn is_empty(&self) -> bool {
        self.queue.is_empty()
    }

    /// Queues `peer`'s new state (`true`: connected), replacing any older one of the peer.
    pub(crate) fn push(&mut self, peer: PeerId, connected: bool) {
        self.queue.retain(|(p, _)| *p != peer);
        self.queue.push_back((peer, connected));
    }

    /// The oldest waiting event, without taking it.
    pub(crate) fn front(&self) -> Option<Event> {
        self.queue.front().map(|(peer, up)| event(*peer, *up))
    }

    /// Takes the oldest waiting event (once it was delivered).
    pub(crate) fn pop(&mut self) {
        self.queue.pop_front();
    }

    /// Forgets everything (the runtime is gone).
    pub(crate) fn clear(&mut self) {
        self.queue.clear();
    }
}

/// The event for `peer` coming up (`true`) or going away.
pub(crate) fn event(peer: PeerId, connected: bool) -> Event {
    if connected {
        Event::PeerConnected { peer }
    } else {
        Event::PeerDisconnected { peer }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn peer_of(e: Option<Event>) -> Option<(PeerId, bool)> {
        match e? {
            Event::PeerConnected { peer } => Some((peer, true)),
            Event::PeerDisconnected { peer } => Some((peer, false)),
            _ => None,
        }
    }

    #[test]
    fn keeps_order_and_only_each_peers_latest_state() {
        let (a, b) = (PeerId::random(), PeerId::random());
        let mut q = Backlog::default();
        assert!(q.is_empty() && q.front().is_none());
        q.push(a, false);
        q.push(b, false);
        // a came back: its disconnect is superseded, and it now queues after b.
        q.push(a, true);
        assert_eq!(peer_of(q.front()), Some((b, false)));
        q.pop();
        assert_eq!(peer_of(q.front()), Some((a, true)));
        q.pop();
        assert!(q.is_empty());
        q.push(a, false);
        q.clear();
        assert!(q.is_empty());
    }
}
