//! Inbound streams of one protocol, handed to their consumer through a bounded queue.
//!
//! `libp2p-stream` (which still opens our outbound chunk streams) hands inbound streams to
//! their acceptor through a channel with room for one: a stream that arrives while the
//! previous one has not been taken yet is dropped, which resets it. The connection tasks that
//! deliver streams run beside the acceptor on other threads, so when 16 fetchers open their
//! chunk streams at once, streams were dropped in every swarm benchmark run (about 50 per
//! run, each a reset the fetcher had to notice and retry). This behaviour does the same job
//! with a queue of [`Config::queue`] streams; a stream that finds it full is still dropped
//! (the consumer is not keeping up), and counted in `mesh_requests_rejected` with reason
//! `stream_queue_full`.

use std::{
    convert::Infallible,
    task::{Context, Poll},
};

use libp2p::{
    Multiaddr, PeerId, Stream, StreamProtocol,
    core::{
        Endpoint,
        transport::PortUse,
        upgrade::{DeniedUpgrade, ReadyUpgrade},
    },
    swarm::{
        ConnectionDenied, ConnectionHandler, ConnectionHandlerEvent, ConnectionId, FromSwarm,
        NetworkBehaviour, SubstreamProtocol, THandler, THandlerInEvent, THandlerOutEvent, ToSwarm,
        handler::{ConnectionEvent, FullyNegotiatedInbound},
    },
};
use tokio::sync::mpsc;

use crate::mesh::MeshMetrics;

/// What the consumer receives: the remote peer and its stream.
pub type Incoming = mpsc::Receiver<(PeerId, Stream)>;

/// Settings of [`Behaviour`].
#[derive(Debug, Clone)]
pub struct Config {
    /// The protocol accepted.
    pub protocol: StreamProtocol,
    /// Streams waiting for the consumer at most; more are dropped.
    pub queue: usize,
}

/// Accepts inbound streams of one protocol on every connection (see the module docs).
pub struct Behaviour {
    protocol: StreamProtocol,
    tx: mpsc::Sender<(PeerId, Stream)>,
    metrics: MeshMetrics,
}

impl Behaviour {
    /// The behaviour and the queue its streams arrive on; dropped streams are counted in
    /// `metrics`.
    pub fn new(cfg: Config, metrics: MeshMetrics) -> (Self, Incoming) {
        let (tx, rx) = mpsc::channel(cfg.queue.max(1));
        let behaviour = Self {
            protocol: cfg.protocol,
            tx,
            metrics,
        };
        (behaviour, rx)
    }

    fn handler(&self, peer: PeerId) -> Handler {
        Handler {
            peer,
            protocol: self.protocol.clone(),
            tx: self.tx.clone(),
            metrics: self.metrics.clone(),
        }
    }
}

impl NetworkBehaviour for Behaviour {
    type ConnectionHandler = Handler;
    type ToSwarm = Infallible;

    fn handle_established_inbound_connection(
        &mut self,
        _: ConnectionId,
        peer: PeerId,
        _: &Multiaddr,
        _: &Multiaddr,
    ) -> Result<THandler<Self>, ConnectionDenied> {
        Ok(self.handler(peer))
    }

    fn handle_established_outbound_connection(
        &mut self,
        _: ConnectionId,
        peer: PeerId,
        _: &Multiaddr,
        _: Endpoint,
        _: PortUse,
    ) -> Result<THandler<Self>, ConnectionDenied> {
        Ok(self.handler(peer))
    }

    fn on_swarm_event(&mut self, _: FromSwarm<'_>) {}

    fn on_connection_handler_event(
        &mut self,
        _: PeerId,
        _: ConnectionId,
        event: THandlerOutEvent<Self>,
    ) {
        match event {}
    }

    fn poll(&mut self, _: &mut Context<'_>) -> Poll<ToSwarm<Self::ToSwarm, THandlerInEvent<Self>>> {
        Poll::Pending
    }
}

/// One connection's end: listens for the protocol and queues each negotiated stream.
pub struct Handler {
    peer: PeerId,
    protocol: StreamProtocol,
    tx: mpsc::Sender<(PeerId, Stream)>,
    metrics: MeshMetrics,
}

impl ConnectionHandler for Handler {
    type FromBehaviour = Infallible;
    type ToBehaviour = Infallible;
    type InboundProtocol = ReadyUpgrade<StreamProtocol>;
    type OutboundProtocol = DeniedUpgrade;
    type InboundOpenInfo = ();
    type OutboundOpenInfo = Infallible;

    fn listen_protocol(&self) -> SubstreamProtocol<Self::InboundProtocol> {
        SubstreamProtocol::new(ReadyUpgrade::new(self.protocol.clone()), ())
    }

    fn poll(
        &mut self,
        _: &mut Context<'_>,
    ) -> Poll<ConnectionHandlerEvent<Self::OutboundProtocol, Infallible, Self::ToBehaviour>> {
        Poll::Pending
    }

    fn on_behaviour_event(&mut self, event: Self::FromBehaviour) {
        match event {}
    }

    fn on_connection_event(
        &mut self,
        event: ConnectionEvent<'_, Self::InboundProtocol, Self::OutboundProtocol, (), Infallible>,
    ) {
        if let ConnectionEvent::FullyNegotiatedInbound(FullyNegotiatedInbound {
            protocol: stream,
            ..
        }) = event
        {
            // Dropping the stream resets it: the remote learns at once and can retry.
            if let Err(e) = self.tx.try_send((self.peer, stream)) {
                let why = match e {
                    mpsc::error::TrySendError::Full(_) => "stream_queue_full",
                    mpsc::error::TrySendError::Closed(_) => "stream_no_consumer",
                };
                self.metrics.request_rejected(why);
                tracing::debug!(target: "mesh", protocol = %self.protocol, peer_id = %self.peer, why, "inbound stream dropped");
            }
        }
    }
}

#[cfg(test)]
mod tests;
