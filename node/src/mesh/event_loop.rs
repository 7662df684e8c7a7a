//! [`EventLoop`]: owns the `Swarm`, and `select!`s over swarm events, client commands, finished
//! blob-serving tasks, the Kademlia warm-up timer and, while connect or disconnect events wait
//! ([`super::lifecycle`]), room in the runtime's channel; it spawns the chunk stream server
//! ([`ChunkServer`]), which runs beside it. Every handler is short and never blocks:
//! store reads for serving run in `spawn_blocking` tasks that report back through a channel.

use std::{
    collections::{HashMap, HashSet},
    sync::{Arc, Mutex, PoisonError},
    time::Instant,
};

use futures::StreamExt;
use libp2p::{
    Multiaddr, PeerId, Swarm, gossipsub, identify, kad, mdns,
    request_response::{self, InboundRequestId, OutboundRequestId, ResponseChannel},
    swarm::{ConnectionId, SwarmEvent, dial_opts::DialOpts},
};
use tokio::sync::{mpsc, oneshot};

use crate::mesh::{
    Event, MeshConfig, MeshError, MeshInfo, MeshMetrics, Verdict,
    behaviour::{Behaviour, BehaviourEvent, speaks_kad, topic_score_params},
    blob::{
        BlobRequest, BlobResponse, BlobStore, serve,
        stream::ChunkServer,
        uploads::{ChunkSpread, TokenBucket, UploadQueue},
    },
    client::Command,
    codec::Decoded,
    inbound, lifecycle,
    message::{GossipBody, RpcErrorCode, RpcResponse},
    peers,
    topics::Topic,
    warmup::Warmup,
};

/// Capacity of the channel from serving tasks back to the loop (bounded by the tasks alive:
/// upload slots plus small requests in flight).
const SERVED_BUFFER: usize = 256;
/// Burst allowed by the upload rate limiter.
pub(crate) const UPLOAD_BURST_BYTES: u64 = 2 * 1024 * 1024;

type Pending<T> = HashMap<OutboundRequestId, oneshot::Sender<Result<T, MeshError>>>;

/// A blob response computed by a serving task.
struct Served {
    peer: PeerId,
    request_id: InboundRequestId,
    channel: ResponseChannel<BlobResponse>,
    response: BlobResponse,
    slot: bool,
}

/// The owner of the swarm. Run it with `tokio::spawn(event_loop.run())`.
pub struct EventLoop {
    swarm: Swarm<Behaviour>,
    commands: mpsc::Receiver<Command>,
    events: mpsc::Sender<Event>,
    blobs: Arc<BlobStore>,
    metrics: MeshMetrics,
    served_tx: mpsc::Sender<Served>,
    served_rx: mpsc::Receiver<Served>,
    uploads: UploadQueue<InboundRequestId, (BlobRequest, ResponseChannel<BlobResponse>)>,
    spread: ChunkSpread,
    limiter: Option<Arc<Mutex<TokenBucket>>>,
    pending_rpc: Pending<RpcResponse>,
    pending_blob: Pending<BlobResponse>,
    pending_listen: HashMap<
        libp2p::core::transport::ListenerId,
        (Multiaddr, oneshot::Sender<Result<Multiaddr, MeshError>>),
    >,
    pending_dial: HashMap<ConnectionId, (Multiaddr, oneshot::Sender<Result<PeerId, MeshError>>)>,
    pending_providers: HashMap<kad::QueryId, (HashSet<PeerId>, oneshot::Sender<HashSet<PeerId>>)>,
    topic_members: HashMap<gossipsub::TopicHash, HashSet<PeerId>>,
    chunk_server: Option<(Arc<ChunkServer>, inbound::Incoming)>,
    connected: HashSet<PeerId>,
    /// Connect and disconnect events waiting for room in `events`.
    lifecycle: lifecycle::Backlog,
    warmup: Warmup,
}

impl EventLoop {
    pub(crate) fn new(
        swarm: Swarm<Behaviour>,
        commands: mpsc::Receiver<Command>,
        events: mpsc::Sender<Event>,
        blobs: Arc<BlobStore>,
        metrics: MeshMetrics,
        cfg: Arc<MeshConfig>,
        chunk_streams: inbound::Incoming,
    ) -> Self {
        let chunk_server = Arc::new(ChunkServer::new(blobs.clone(), metrics.clone(), &cfg));
        let (served_tx, served_rx) = mpsc::channel(SERVED_BUFFER);
        let limiter = cfg.upload_bytes_per_sec.map(|rate| {
            Arc::new(Mutex::new(TokenBucket::new(
                rate,
                UPLOAD_BURST_BYTES.min(rate),
                Instant::now(),
            )))
        });
        Self {
            swarm,
            commands,
            events,
            blobs,
            metrics,
            spread: ChunkSpread::default(),
            uploads: UploadQueue::new(
                cfg.upload_slots,
                cfg.upload_queue_per_peer,
                cfg.upload_queue,
            ),
            served_tx,
            served_rx,
            limiter,
            pending_rpc: HashMap::new(),
            pending_blob: HashMap::new(),
            pending_listen: HashMap::new(),
            pending_dial: HashMap::new(),
            pending_providers: HashMap::new(),
            topic_members: HashMap::new(),
            chunk_server: Some((chunk_server, chunk_streams)),
            connected: HashSet::new(),
            lifecycle: lifecycle::Backlog::default(),
            warmup: Warmup::new(Instant::now()),
        }
    }

    /// Runs until [`Client::shutdown`](crate::mesh::Client::shutdown) or until every client
    /// is dropped.
    pub async fn run(mut self) {
        // Chunk streams are served by their own tasks, beside the loop.
        let chunk_server = self
            .chunk_server
            .take()
            .map(|(server, incoming)| tokio::spawn(server.run(incoming)));
        let trimmer = tokio::spawn(super::buffers::trim_chunks_periodically());
        loop {
            let next_bootstrap = self.warmup.next_at();
            // Room in the runtime's channel, wanted only while lifecycle events wait (an owned
            // sender, so that the permit borrows nothing the handlers need).
            let waiting = !self.lifecycle.is_empty();
            let tx = waiting.then(|| self.events.clone());
            let room = async move {
                match tx {
                    Some(tx) => tx.reserve_owned().await,
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                event = self.swarm.select_next_some() => self.on_swarm_event(event),
                command = self.commands.recv() => match command {
                    Some(Command::Shutdown { reply }) => {
                        let _ = reply.send(());
                        break;
                    }
                    Some(command) => self.on_command(command),
                    None => break,
                },
                Some(served) = self.served_rx.recv() => self.on_served(served),
                permit = room, if waiting => match permit {
                    Ok(permit) => {
                        if let Some(event) = self.lifecycle.front() {
                            permit.send(event);
                            self.lifecycle.pop();
                        }
                    }
                    Err(_) => self.lifecycle.clear(),
                },
                () = sleep_until(next_bootstrap) => {
                    let kad = &mut self.swarm.behaviour_mut().kad;
                    let known = kad.kbuckets().map(|b| b.num_entries()).sum();
                    if self.warmup.on_due(known) {
                        // Fails only while the routing table is empty; the next round retries.
                        let _ = kad.bootstrap();
                    } else {
                        tracing::debug!(target: "mesh", known, "routing table settled: warm-up rounds over");
                    }
                }
            }
        }
        if let Some(task) = chunk_server {
            task.abort();
        }
        trimmer.abort();
        tracing::info!(target: "mesh", "event loop stopped");
    }

    /// Hands `peer`'s connect (`true`) or disconnect to the node runtime, now if nothing older
    /// waits and the channel has room, else through the backlog (never dropped).
    fn emit_lifecycle(&mut self, peer: PeerId, connected: bool) {
        if self.lifecycle.is_empty() {
            match self.events.try_send(lifecycle::event(peer, connected)) {
                Ok(()) | Err(mpsc::error::TrySendError::Closed(_)) => return,
                Err(mpsc::error::TrySendError::Full(_)) => {}
            }
        }
        self.lifecycle.push(peer, connected);
    }

    /// Hands `event` to the node runtime without waiting; gives it back if the channel is
    /// full or closed.
    fn emit(&mut self, event: Event) -> Option<Event> {
        match self.events.try_send(event) {
            Ok(()) => None,
            Err(mpsc::error::TrySendError::Full(ev) | mpsc::error::TrySendError::Closed(ev)) => {
                self.metrics.events_dropped.inc();
                Some(ev)
            }
        }
    }

    // ---------------------------------------------------------------- commands

    fn on_command(&mut self, command: Command) {
        match command {
            Command::Listen { addr, reply } => match self.swarm.listen_on(addr.clone()) {
                Ok(id) => {
                    self.pending_listen.insert(id, (addr, reply));
                }
                Err(e) => {
                    let _ = reply.send(Err(MeshError::Listen {
                        addr,
                        reason: e.to_string(),
                    }));
                }
            },
            Command::Dial { addr, reply } => {
                let opts = DialOpts::unknown_peer_id().address(addr.clone()).build();
                let id = opts.connection_id();
                match self.swarm.dial(opts) {
                    Ok(()) => {
                        self.pending_dial.insert(id, (addr, reply));
                    }
                    Err(e) => {
                        let _ = reply.send(Err(MeshError::Dial {
                            addr,
                            reason: e.to_string(),
                        }));
                    }
                }
            }
            Command::AddAddress { peer, addr } => {
                self.swarm.behaviour_mut().kad.add_address(&peer, addr);
            }
            Command::Subscribe { topic, reply } => {
                let gs = &mut self.swarm.behaviour_mut().gossipsub;
                let result = gs
                    .subscribe(&topic.ident())
                    .map_err(|e| MeshError::Subscribe {
                        topic: topic.to_string(),
                        reason: e.to_string(),
                    });
                if result.is_ok() {
                    let _ = gs.set_topic_params(topic.ident(), topic_score_params());
                }
                let _ = reply.send(result);
            }
            Command::Unsubscribe { topic, reply } => {
                let _ = reply.send(
                    self.swarm
                        .behaviour_mut()
                        .gossipsub
                        .unsubscribe(&topic.ident()),
                );
            }
            Command::Publish { topic, data, reply } => {
                let _ = reply.send(self.publish(&topic, data));
            }
            Command::ReportValidation {
                message_id,
                propagation_source,
                verdict,
            } => {
                let acceptance = match verdict {
                    Verdict::Accept => gossipsub::MessageAcceptance::Accept,
                    Verdict::Reject => {
                        self.metrics.gossip_rejected("application");
                        gossipsub::MessageAcceptance::Reject
                    }
                    Verdict::Ignore => gossipsub::MessageAcceptance::Ignore,
                };
                self.swarm
                    .behaviour_mut()
                    .gossipsub
                    .report_message_validation_result(&message_id, &propagation_source, acceptance);
            }
            Command::SetTopicMembers { topic, members } => match members {
                Some(m) => {
                    self.topic_members.insert(topic, m);
                }
                None => {
                    self.topic_members.remove(&topic);
                }
            },
            Command::Request {
                peer,
                request,
                reply,
            } => {
                let id = self
                    .swarm
                    .behaviour_mut()
                    .rpc
                    .send_request(&peer, Decoded::Valid(request));
                self.pending_rpc.insert(id, reply);
            }
            Command::Respond {
                channel,
                response,
                reply,
            } => {
                let result = self
                    .swarm
                    .behaviour_mut()
                    .rpc
                    .send_response(channel.0, response)
                    .map_err(|_| MeshError::Request {
                        peer: *self.swarm.local_peer_id(),
                        reason: "the requester is gone".into(),
                    });
                let _ = reply.send(result);
            }
            Command::BlobRequest {
                peer,
                request,
                reply,
            } => {
                let id = self
                    .swarm
                    .behaviour_mut()
                    .blob
                    .send_request(&peer, Decoded::Valid(request));
                self.pending_blob.insert(id, reply);
            }
            Command::Provide { id } => {
                let key = kad::RecordKey::new(id.as_bytes());
                if let Err(e) = self.swarm.behaviour_mut().kad.start_providing(key) {
                    tracing::warn!(target: "mesh::blob", blob = %id.short(), error = %e, "cannot announce blob");
                }
            }
            Command::GetProviders { id, reply } => {
                let key = kad::RecordKey::new(id.as_bytes());
                let qid = self.swarm.behaviour_mut().kad.get_providers(key);
                self.pending_providers.insert(qid, (HashSet::new(), reply));
            }
            Command::Info { reply } => {
                let _ = reply.send(self.info());
            }
            Command::PeerScore { peer, reply } => {
                let _ = reply.send(self.swarm.behaviour().gossipsub.peer_score(&peer));
            }
            Command::Shutdown { reply } => {
                // Handled in `run`; kept for exhaustiveness.
                let _ = reply.send(());
            }
        }
    }

    fn publish(&mut self, topic: &Topic, data: Vec<u8>) -> Result<gossipsub::MessageId, MeshError> {
        let hash = topic.hash();
        let local = *self.swarm.local_peer_id();
        if let Some(members) = self.topic_members.get(&hash)
            && !members.contains(&local)
        {
            self.metrics.acl_refusal("topic_publish");
            tracing::warn!(target: "mesh::acl", topic = %topic, "refused to publish on a topic we are not a member of");
            return Err(MeshError::NotTopicMember {
                topic: topic.to_string(),
            });
        }
        let id = self
            .swarm
            .behaviour_mut()
            .gossipsub
            .publish(hash, data)
            .map_err(|e| MeshError::Publish {
                topic: topic.to_string(),
                reason: e.to_string(),
            })?;
        self.metrics.gossip_out.inc();
        Ok(id)
    }

    fn info(&mut self) -> MeshInfo {
        let mut routing_table = Vec::new();
        for bucket in self.swarm.behaviour_mut().kad.kbuckets() {
            for entry in bucket.iter() {
                routing_table.push(*entry.node.key.preimage());
            }
        }
        let mut connected: Vec<PeerId> = self.connected.iter().copied().collect();
        connected.sort();
        MeshInfo {
            peer_id: *self.swarm.local_peer_id(),
            listen_addrs: self.swarm.listeners().cloned().collect(),
            connected,
            routing_table,
            topics: self
                .swarm
                .behaviour()
                .gossipsub
                .topics()
                .map(|t| t.to_string())
                .collect(),
        }
    }

    // ---------------------------------------------------------------- swarm events

    fn on_swarm_event(&mut self, event: SwarmEvent<BehaviourEvent>) {
        match event {
            SwarmEvent::Behaviour(ev) => self.on_behaviour_event(ev),
            SwarmEvent::NewListenAddr {
                listener_id,
                address,
            } => {
                tracing::info!(target: "mesh", %address, "listening");
                if let Some((_, reply)) = self.pending_listen.remove(&listener_id) {
                    let _ = reply.send(Ok(address));
                }
            }
            SwarmEvent::ListenerClosed {
                listener_id,
                reason,
                ..
            } => {
                if let Some((addr, reply)) = self.pending_listen.remove(&listener_id) {
                    let _ = reply.send(Err(MeshError::Listen {
                        addr,
                        reason: format!("listener closed: {reason:?}"),
                    }));
                }
            }
            SwarmEvent::ListenerError { listener_id, error } => {
                tracing::warn!(target: "mesh", %error, "listener error");
                if let Some((addr, reply)) = self.pending_listen.remove(&listener_id) {
                    let _ = reply.send(Err(MeshError::Listen {
                        addr,
                        reason: error.to_string(),
                    }));
                }
            }
            SwarmEvent::ConnectionEstablished {
                peer_id,
                connection_id,
                num_established,
                ..
            } => {
                if let Some((_, reply)) = self.pending_dial.remove(&connection_id) {
                    let _ = reply.send(Ok(peer_id));
                }
                if num_established.get() == 1 && self.connected.insert(peer_id) {
                    self.metrics
                        .connected_peers
                        .set(self.connected.len() as i64);
                    tracing::debug!(target: "mesh", %peer_id, "peer connected");
                    self.emit_lifecycle(peer_id, true);
                }
            }
            SwarmEvent::ConnectionClosed {
                peer_id,
                num_established,
                cause,
                endpoint,
                ..
            } => {
                tracing::debug!(target: "mesh::conn", %peer_id, remaining = num_established, dialer = endpoint.is_dialer(), ?cause, "connection closed");
                if num_established == 0 {
                    self.on_disconnected(peer_id);
                }
            }
            SwarmEvent::OutgoingConnectionError {
                connection_id,
                peer_id,
                error,
            } => {
                tracing::debug!(target: "mesh", ?peer_id, %error, "outgoing connection failed");
                if let Some((addr, reply)) = self.pending_dial.remove(&connection_id) {
                    let _ = reply.send(Err(MeshError::Dial {
                        addr,
                        reason: error.to_string(),
                    }));
                }
            }
            _ => {}
        }
    }

    fn on_disconnected(&mut self, peer_id: PeerId) {
        if !self.connected.remove(&peer_id) {
            return;
        }
        self.metrics
            .connected_peers
            .set(self.connected.len() as i64);
        tracing::debug!(target: "mesh", %peer_id, "peer disconnected");
        self.emit_lifecycle(peer_id, false);
    }

    fn on_behaviour_event(&mut self, event: BehaviourEvent) {
        match event {
            BehaviourEvent::Limits(never) => match never {},
            BehaviourEvent::Gossipsub(ev) => self.on_gossip(ev),
            BehaviourEvent::Kad(ev) => self.on_kad(ev),
            BehaviourEvent::Identify(ev) => self.on_identify(ev),
            BehaviourEvent::Ping(_) => {}
            BehaviourEvent::Blob(ev) => self.on_blob(ev),
            BehaviourEvent::Rpc(ev) => self.on_rpc(ev),
            BehaviourEvent::Stream(()) => {}
            BehaviourEvent::Mdns(ev) => self.on_mdns(ev),
        }
    }

    fn on_gossip(&mut self, event: gossipsub::Event) {
        let gossipsub::Event::Message {
            propagation_source,
            message_id,
            message,
        } = event
        else {
            return;
        };
        self.metrics.gossip_in.inc();
        let source = message.source.unwrap_or(propagation_source);
        match self.check_gossip(&message, &source, &propagation_source) {
            Ok((topic, body)) => {
                let event = Event::Gossip {
                    topic,
                    source,
                    propagation_source,
                    message_id: message_id.clone(),
                    body,
                };
                if self.emit(event).is_some() {
                    // Nobody to judge it: do not forward, do not blame the sender.
                    self.swarm
                        .behaviour_mut()
                        .gossipsub
                        .report_message_validation_result(
                            &message_id,
                            &propagation_source,
                            gossipsub::MessageAcceptance::Ignore,
                        );
                }
            }
            Err(reason) => {
                self.metrics.gossip_rejected(reason);
                tracing::debug!(target: "mesh::gossip", peer_id = %propagation_source, %source, topic = %message.topic, reason, "gossip rejected");
                self.swarm
                    .behaviour_mut()
                    .gossipsub
                    .report_message_validation_result(
                        &message_id,
                        &propagation_source,
                        gossipsub::MessageAcceptance::Reject,
                    );
            }
        }
    }

    /// The mesh's own checks: a known topic, access control, a decodable message.
    fn check_gossip(
        &self,
        message: &gossipsub::Message,
        source: &PeerId,
        propagation_source: &PeerId,
    ) -> Result<(Topic, GossipBody), &'static str> {
        let topic = Topic::from_hash(&message.topic).map_err(|_| "unknown_topic")?;
        if let Some(members) = self.topic_members.get(&message.topic)
            && (!members.contains(source) || !members.contains(propagation_source))
        {
            self.metrics.acl_refusal("topic_gossip");
            tracing::warn!(target: "mesh::acl", %source, peer_id = %propagation_source, %topic, "gossip from a non-member rejected");
            return Err("acl");
        }
        let body = GossipBody::decode(&message.data).map_err(|e| e.label())?;
        Ok((topic, body))
    }

    fn on_kad(&mut self, event: kad::Event) {
        let kad::Event::OutboundQueryProgressed {
            id, result, step, ..
        } = event
        else {
            return;
        };
        match result {
            kad::QueryResult::GetProviders(res) => {
                let done = step.last
                    || matches!(
                        res,
                        Ok(kad::GetProvidersOk::FinishedWithNoAdditionalRecord { .. }) | Err(_)
                    );
                let local = *self.swarm.local_peer_id();
                let mut answered = false;
                if let Some((found, _)) = self.pending_providers.get_mut(&id)
                    && let Ok(kad::GetProvidersOk::FoundProviders { providers, .. }) = res
                {
                    found.extend(providers);
                    found.remove(&local);
                    answered = !found.is_empty();
                }
                // The first holders are enough to start from (fetches ask again for more);
                // waiting for the whole query can take its 30 s timeout when one of the
                // closest peers is slow to answer, and the fetch would sit idle all that time.
                if (done || answered)
                    && let Some((found, reply)) = self.pending_providers.remove(&id)
                {
                    let _ = reply.send(found);
                    if !done && let Some(mut query) = self.swarm.behaviour_mut().kad.query_mut(&id)
                    {
                        query.finish();
                    }
                }
            }
            kad::QueryResult::StartProviding(Err(e)) => {
                tracing::debug!(target: "mesh::blob", error = %e, "provider announcement incomplete");
            }
            kad::QueryResult::Bootstrap(Err(e)) => {
                tracing::debug!(target: "mesh", error = %e, "kademlia bootstrap failed");
            }
            _ => {}
        }
    }

    fn on_identify(&mut self, event: identify::Event) {
        let identify::Event::Received { peer_id, info, .. } = event else {
            return;
        };
        if !speaks_kad(&info.protocols) {
            return;
        }
        let addrs: Vec<Multiaddr> = info
            .listen_addrs
            .into_iter()
            .filter(peers::is_dialable)
            .collect();
        for addr in &addrs {
            self.swarm
                .behaviour_mut()
                .kad
                .add_address(&peer_id, addr.clone());
        }
        let db = self.blobs.db().clone();
        tokio::task::spawn_blocking(move || {
            if let Err(e) = peers::remember(&db, &peer_id, &addrs) {
                tracing::warn!(target: "mesh", error = %e, "cannot persist known peer");
            }
        });
    }

    fn on_mdns(&mut self, event: mdns::Event) {
        if let mdns::Event::Discovered(found) = event {
            for (peer, addr) in found {
                tracing::debug!(target: "mesh", %peer, %addr, "mdns discovered peer");
                self.swarm
                    .behaviour_mut()
                    .kad
                    .add_address(&peer, addr.clone());
                let _ = self.swarm.dial(addr);
            }
        }
    }

    fn on_rpc(
        &mut self,
        event: request_response::Event<Decoded<crate::mesh::message::RpcRequest>, RpcResponse>,
    ) {
        match event {
            request_response::Event::Message { peer, message, .. } => match message {
                request_response::Message::Request {
                    request, channel, ..
                } => match request {
                    Decoded::Valid(request) => {
                        self.metrics.rpc_in.inc();
                        let event = Event::Request {
                            peer,
                            request,
                            channel: crate::mesh::ReplyChannel(channel),
                        };
                        if let Some(Event::Request { channel, .. }) = self.emit(event) {
                            let busy = RpcResponse::error(RpcErrorCode::Busy, "node overloaded");
                            let _ = self
                                .swarm
                                .behaviour_mut()
                                .rpc
                                .send_response(channel.0, busy);
                        }
                    }
                    Decoded::Invalid(e) => {
                        self.metrics.request_rejected(e.label());
                        tracing::debug!(target: "mesh::rpc", peer_id = %peer, error = %e, "bad rpc request");
                        let reply = RpcResponse::error(RpcErrorCode::BadRequest, e.to_string());
                        let _ = self.swarm.behaviour_mut().rpc.send_response(channel, reply);
                    }
                },
                request_response::Message::Response {
                    request_id,
                    response,
                } => {
                    if let Some(reply) = self.pending_rpc.remove(&request_id) {
                        let _ = reply.send(Ok(response));
                    }
                }
            },
            request_response::Event::OutboundFailure {
                peer,
                request_id,
                error,
                ..
            } => {
                if let Some(reply) = self.pending_rpc.remove(&request_id) {
                    let _ = reply.send(Err(MeshError::Request {
                        peer,
                        reason: error.to_string(),
                    }));
                }
            }
            request_response::Event::InboundFailure { peer, error, .. } => {
                tracing::debug!(target: "mesh::rpc", peer_id = %peer, %error, "inbound rpc failed");
            }
            request_response::Event::ResponseSent { .. } => {}
        }
    }

    // ---------------------------------------------------------------- blobs

    fn on_blob(&mut self, event: request_response::Event<Decoded<BlobRequest>, BlobResponse>) {
        match event {
            request_response::Event::Message { peer, message, .. } => match message {
                request_response::Message::Request {
                    request_id,
                    request,
                    channel,
                } => self.on_blob_request(peer, request_id, request, channel),
                request_response::Message::Response {
                    request_id,
                    response,
                } => {
                    if let Some(reply) = self.pending_blob.remove(&request_id) {
                        let _ = reply.send(Ok(response));
                    }
                }
            },
            request_response::Event::OutboundFailure {
                peer,
                request_id,
                error,
                ..
            } => {
                if let Some(reply) = self.pending_blob.remove(&request_id) {
                    let _ = reply.send(Err(MeshError::Request {
                        peer,
                        reason: error.to_string(),
                    }));
                }
            }
            request_response::Event::InboundFailure {
                peer,
                request_id,
                error,
                ..
            } => {
                tracing::debug!(target: "mesh::blob", peer_id = %peer, %error, "inbound blob request failed");
                if self.uploads.finish(&request_id) {
                    self.pump_uploads();
                }
            }
            request_response::Event::ResponseSent { request_id, .. } => {
                if self.uploads.finish(&request_id) {
                    self.pump_uploads();
                }
            }
        }
    }

    fn on_blob_request(
        &mut self,
        peer: PeerId,
        request_id: InboundRequestId,
        request: Decoded<BlobRequest>,
        channel: ResponseChannel<BlobResponse>,
    ) {
        match request {
            Decoded::Invalid(e) => {
                self.metrics.request_rejected(e.label());
                tracing::debug!(target: "mesh::blob", peer_id = %peer, error = %e, "bad blob request");
                let reply = BlobResponse::Error {
                    message: e.to_string(),
                };
                let _ = self
                    .swarm
                    .behaviour_mut()
                    .blob
                    .send_response(channel, reply);
            }
            Decoded::Valid(request @ BlobRequest::Chunk { .. }) => {
                // Spread uploads over every chunk first (see `ChunkSpread`).
                let mut upload = None;
                if let BlobRequest::Chunk { id, index } = &request
                    && let Some(state) = self.blobs.cached_state(id)
                {
                    if self.spread.should_defer(&peer, id, *index, &state.have()) {
                        let _ = self
                            .swarm
                            .behaviour_mut()
                            .blob
                            .send_response(channel, BlobResponse::NotNow);
                        return;
                    }
                    upload = Some((*id, *index, state.manifest.chunk_count()));
                }
                match self.uploads.offer(peer, request_id, (request, channel)) {
                    Ok(()) => {
                        if let Some((id, index, chunks)) = upload {
                            self.spread.record(&id, index, chunks);
                        }
                        self.pump_uploads();
                    }
                    Err((_, channel)) => {
                        let _ = self
                            .swarm
                            .behaviour_mut()
                            .blob
                            .send_response(channel, BlobResponse::Busy);
                    }
                }
            }
            // Manifests and bitfields are small: answer at once, no slot.
            Decoded::Valid(request) => self.spawn_serve(peer, request_id, request, channel, false),
        }
    }

    fn pump_uploads(&mut self) {
        while let Some((peer, request_id, (request, channel))) = self.uploads.next_ready() {
            self.spawn_serve(peer, request_id, request, channel, true);
        }
    }

    fn spawn_serve(
        &self,
        peer: PeerId,
        request_id: InboundRequestId,
        request: BlobRequest,
        channel: ResponseChannel<BlobResponse>,
        slot: bool,
    ) {
        let blobs = self.blobs.clone();
        let limiter = self.limiter.clone();
        let tx = self.served_tx.clone();
        tokio::spawn(async move {
            let response =
                tokio::task::spawn_blocking(move || serve::respond(&blobs, &peer, &request))
                    .await
                    .map_err(|e| e.to_string())
                    .and_then(|r| r.map_err(|e| e.to_string()))
                    .unwrap_or_else(|e| {
                        tracing::warn!(target: "mesh::blob", error = %e, "serving failed");
                        BlobResponse::Error {
                            message: "internal error".into(),
                        }
                    });
            if let (Some(limiter), BlobResponse::Chunk { data, .. }) = (&limiter, &response) {
                let delay = limiter
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner)
                    .take(data.len(), Instant::now());
                tokio::time::sleep(delay).await;
            }
            let _ = tx
                .send(Served {
                    peer,
                    request_id,
                    channel,
                    response,
                    slot,
                })
                .await;
        });
    }

    fn on_served(&mut self, served: Served) {
        let chunk_bytes = match &served.response {
            BlobResponse::Chunk { data, .. } => Some(data.len() as u64),
            BlobResponse::Denied => {
                self.metrics.acl_refusal("blob");
                tracing::warn!(target: "mesh::acl", peer_id = %served.peer, "blob request from a peer not on the allow-list");
                None
            }
            _ => None,
        };
        let sent = self
            .swarm
            .behaviour_mut()
            .blob
            .send_response(served.channel, served.response);
        match (sent, chunk_bytes) {
            (Ok(()), Some(bytes)) => {
                self.metrics.blob_chunks_served.inc();
                self.metrics.blob_bytes_served.inc_by(bytes);
            }
            (Ok(()), None) => {}
            (Err(_), _) => {
                // The requester gave up (timeout, disconnect): free its slot now.
                if served.slot && self.uploads.finish(&served.request_id) {
                    self.pump_uploads();
                }
            }
        }
    }
}

async fn sleep_until(deadline: Option<Instant>) {
    match deadline {
        Some(d) => tokio::time::sleep_until(d.into()).await,
        None => futures::future::pending().await,
    }
}
